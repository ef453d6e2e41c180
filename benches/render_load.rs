//! Benchmark 4: template rendering and workflow loading.
//!
//! - Renders/s of the create-card request (preset `brex.create_user_card` with `with`
//!   templates, exactly as the run benchmark sends it) through `ApiBlock::render`, alone and
//!   with the scope a step builds first (`Engine::scope`). Raw baseline: the same body built
//!   by hand with `serde_json::json!`.
//! - Time to load and validate a generated 50-block workflow with `Workflow::compile`.
//!   Raw baseline: parsing the same text with `serde_json::from_str`.
//!
//! In-process; no network.
//!
//!     cargo bench --bench render_load [-- --seconds=1 --full]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::*;
use roster_blocks::kinds::{ApiBlock, CompileContext};
use roster_engine::workflow::Workflow;
use serde_json::{Value, json};

fn main() {
    let opts = Opts::parse();
    let seconds = opts.f64("seconds", opts.or_smoke(1.0, 0.02), 5.0);
    let rt = runtime();
    let _guard = rt.enter();
    let presets = roster_engine::presets::built_in();
    let cx = CompileContext { presets: &presets, credentials: None };
    let mut rows = Vec::new();

    // --- rendering -------------------------------------------------------------------
    let dir = tempfile::Builder::new().prefix("roster-bench-render-").tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let (vault, _) = vaults();
    let engine = engine(store.clone(), vault);
    let wf = Workflow::compile(BENCH_WORKFLOW, "bench", &cx).expect("the bench workflow compiles");
    let Some(card) = wf.block("card").and_then(|b| b.downcast_ref::<ApiBlock>()) else { panic!("no card block") };
    // A record as a Sage People + Brex sync leaves it: ~20 fields.
    let record = rt
        .block_on(write_in_batches(
            &store,
            vec![record_write(json!({
                "email": "karen.page@acme.test", "first_name": "Karen", "last_name": "Page",
                "full_name": "Karen Page", "employee_id": "E000042", "sage_id": "a0B000000000000042",
                "department": "Finance", "job_title": "Controller", "work_location": "New York Office",
                "manager_email": "matt.murdock@acme.test", "start_date": "2024-03-04", "end_date": null,
                "employment_active": true, "on_leave": false, "sage_people_present": true,
                "brex_user_id": "cuuser_ckze72soa117f01pkmf1wcpl3", "brex_status": "ACTIVE",
                "brex_department_id": "cudept_abc", "brex_location_id": "culoc_def", "brex_present": true,
            }))],
            1,
        ))
        .remove(0);
    let run = rt.block_on(engine.create_run(&wf, &record, roster_engine::model::RunTrigger::Manual)).expect("a run");
    let scope = engine.scope(&run, &record);
    let key = format!("roster-{}-card-0", run.id);
    let expected = card.render(&scope, &key).expect("render").body.expect("a body");

    let roster_render = per_second(seconds, || black_box(card.render(black_box(&scope), &key).expect("render")));
    let roster_scoped = per_second(seconds, || {
        let scope = engine.scope(black_box(&run), black_box(&record));
        black_box(card.render(&scope, &key).expect("render"))
    });
    let by_hand = || {
        let f = &record.fields;
        let text = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or_default();
        json!({
            "owner": {"type": "USER", "user_id": f["brex_user_id"]},
            "card_name": format!("{} {} expenses", text("first_name"), text("last_name")),
            "card_type": "VIRTUAL",
            "limit_type": "CARD",
            "spend_controls": {"spend_limit": {"amount": 50000, "currency": "USD"}, "spend_duration": "MONTHLY"},
        })
    };
    assert_eq!(by_hand(), expected, "the baseline builds the same body");
    let baseline_render = per_second(seconds, || black_box(by_hand()));
    rows.push(
        Row::new("create-card request: renders/s (ApiBlock::render)", fmt_rate(roster_render))
            .baseline(fmt_rate(baseline_render))
            .ratio(roster_render / baseline_render),
    );
    rows.push(
        Row::new(
            "create-card request with the step's scope (Engine::scope + render): renders/s",
            fmt_rate(roster_scoped),
        )
        .baseline(fmt_rate(baseline_render))
        .ratio(roster_scoped / baseline_render),
    );
    rows.push(Row::new(
        "time per render / per scope + render",
        format!("{:.1} µs / {:.1} µs", 1e6 / roster_render, 1e6 / roster_scoped),
    ));
    // Where the time goes: building the scope (Engine::scope copies the record's fields
    // twice, plus every earlier step's output), and the full copy of that scope that
    // ApiBlock::bind makes before binding the preset's parameters.
    let build_scope = per_second(seconds, || black_box(engine.scope(black_box(&run), black_box(&record))));
    let clone_scope = per_second(seconds, || black_box(black_box(&scope).clone()));
    rows.push(Row::new(
        "of which: Engine::scope / one copy of the scope (as ApiBlock::bind makes)",
        format!("{:.1} µs / {:.1} µs", 1e6 / build_scope, 1e6 / clone_scope),
    ));

    // --- loading -----------------------------------------------------------------------
    let text = fifty_blocks();
    let loaded = Workflow::compile(&text, "fifty.json", &cx).expect("the 50-block workflow compiles");
    assert_eq!(loaded.blocks.len(), 50);
    let iterations = ((seconds * 200.0) as usize).max(50);
    let mut compile = Vec::with_capacity(iterations);
    let mut parse = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        black_box(Workflow::compile(black_box(&text), "fifty.json", &cx).expect("compile"));
        compile.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        black_box(serde_json::from_str::<Value>(black_box(&text)).expect("parse"));
        parse.push(t.elapsed().as_secs_f64());
    }
    let (c50, p50) = (median(&mut compile), median(&mut parse));
    rows.push(
        Row::new(
            format!("load + validate a 50-block workflow ({} KiB), median", text.len() / 1024),
            format!("{:.2} ms", c50 * 1e3),
        )
        .baseline(format!("{:.3} ms", p50 * 1e3))
        .ratio(p50 / c50),
    );
    rows.push(
        Row::new("… p99", format!("{:.2} ms", percentile(&mut compile, 99.0) * 1e3))
            .baseline(format!("{:.3} ms", percentile(&mut parse, 99.0) * 1e3)),
    );
    let presets_t = Instant::now();
    black_box(roster_engine::presets::built_in());
    rows.push(Row::new(
        "load the built-in preset catalog (once per process)",
        format!("{:.2} ms", presets_t.elapsed().as_secs_f64() * 1e3),
    ));

    print_table(
        "Template rendering and workflow loading",
        &format!("cargo bench --bench render_load -- --seconds={seconds}"),
        &rows,
    );
}

/// Calls `f` for about `seconds` (after a short warm-up); returns calls per second.
fn per_second<T>(seconds: f64, mut f: impl FnMut() -> T) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(100) {
        f();
    }
    let mut n = 0u64;
    let t = Instant::now();
    let budget = Duration::from_secs_f64(seconds);
    loop {
        for _ in 0..64 {
            f();
        }
        n += 64;
        if t.elapsed() >= budget {
            return n as f64 / t.elapsed().as_secs_f64();
        }
    }
}

/// A valid 50-block workflow: 12 rounds of (get user → condition → update → card or
/// deactivate), then two ends. Every block is reachable and there is no cycle.
fn fifty_blocks() -> String {
    let mut blocks = serde_json::Map::new();
    let rounds = 12;
    for r in 0..rounds {
        let next_round = if r + 1 < rounds { format!("get_{}", r + 1) } else { "done".to_string() };
        blocks.insert(
            format!("get_{r}"),
            json!({"type": "api", "credential": "brex", "preset": "brex.get_user",
                   "next": format!("check_{r}"), "on_error": "failed"}),
        );
        blocks.insert(
            format!("check_{r}"),
            json!({"type": "condition",
                   "when": {"any": [{"field": "brex_status", "op": "equals", "value": "ACTIVE"},
                                    {"all": [{"field": "department", "op": "in", "value": ["Sales", "Finance"]},
                                             {"field": "start_date", "op": "on_or_before", "value": "<<today>>"}]}]},
                   "then": format!("stamp_{r}"), "else": format!("off_{r}")}),
        );
        blocks.insert(
            format!("stamp_{r}"),
            json!({"type": "update", "set": {format!("round_{r}_at"): "<<now>>",
                   format!("round_{r}_note"): "{{#if manager_email}}reports to {{manager_email}}{{else}}no manager{{/if}}"},
                   "next": format!("card_{r}")}),
        );
        if r % 2 == 0 {
            blocks.insert(
                format!("card_{r}"),
                json!({"type": "api", "credential": "brex", "preset": "brex.create_user_card",
                       "with": {"card_name": format!("<<first_name>> <<last_name>> round {r}"), "card_type": "VIRTUAL",
                                "limit_type": "CARD",
                                "spend_controls": {"spend_limit": {"amount": 10000 * (r + 1), "currency": "USD"},
                                                   "spend_duration": "MONTHLY"}},
                       "next": next_round.clone(), "on_error": "failed"}),
            );
        } else {
            blocks.insert(
                format!("card_{r}"),
                json!({"type": "api", "credential": "brex", "preset": "brex.lock_card",
                       "with": {"brex_user_card_id": "<<steps.get_0.response.id>>", "reason": "OTHER"},
                       "next": next_round.clone()}),
            );
        }
        blocks.insert(
            format!("off_{r}"),
            json!({"type": "api", "credential": "brex", "preset": "brex.deactivate_user", "next": next_round}),
        );
    }
    blocks.insert("done".into(), json!({"type": "end"}));
    blocks.insert("failed".into(), json!({"type": "end", "fail": true, "message": "a Brex call failed"}));
    assert_eq!(blocks.len(), 62);
    // Trim to 50: drop the last rounds' blocks and point round 9 at `done`.
    let mut wf = json!({
        "name": "fifty-blocks",
        "description": "Benchmark: a generated workflow with 50 blocks.",
        "begin": {"trigger": {"manual": true}, "rules": [{"field": "email", "op": "is_not_empty"}], "next": "get_0"},
        "blocks": blocks,
    });
    let blocks = wf["blocks"].as_object_mut().expect("blocks");
    for r in 10..rounds {
        for kind in ["get", "check", "stamp", "card", "off"] {
            blocks.remove(&format!("{kind}_{r}"));
        }
    }
    blocks["card_9"]["next"] = json!("done");
    blocks["off_9"]["next"] = json!("done");
    assert_eq!(blocks.len(), 52);
    blocks.remove("off_9");
    blocks["check_9"]["else"] = json!("done");
    blocks.remove("card_9");
    blocks["stamp_9"]["next"] = json!("done");
    assert_eq!(blocks.len(), 50);
    serde_json::to_string_pretty(&wf).expect("JSON text")
}
