//! Benchmark 3: schedule selection.
//!
//! A store holding N people (100,000 and 1,000,000 by default), loaded with
//! `Store::write_records` in batches of 5,000, on sled and on PostgreSQL; the time
//! `Service::select` takes to find the people each of three rules matches, which is what the
//! scheduler does every time a schedule fires:
//!
//! - a daily onboarding rule, `start_date equals <<today>>` and `onboarded_at is_empty`
//!   (looked up in the `start_date` index);
//! - an offboarding rule, `end_date on_or_before <<today>>`, which few people match (a range
//!   of the `end_date` index);
//! - `employee_id ends_with 0042`, which no index answers (every record is read).
//!
//! The raw baseline walks the same store with `Store::scan_records` and a hand-written test
//! of the onboarding rule's two fields, so the ratio shows what reading every record costs.
//! Each size and backend runs in its own child process with its own store (a temp folder, or
//! a schema of its own in the database at `ROSTER_BENCH_DATABASE_URL`).
//!
//!     cargo bench --bench schedule_select [-- --records=100000,1000000 --backends=sled,postgres --full]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use roster_blocks::kinds::CompileContext;
use roster_engine::clock::Clock;
use roster_engine::service::{Catalog, Service};
use roster_engine::store::Store;
use roster_engine::workflow::Workflow;
use serde_json::{Value, json};

/// One workflow per rule measured: (name, rules).
const RULES: [(&str, &str); 3] = [
    (
        "onboarding",
        r#"[{ "field": "start_date", "op": "equals", "value": "<<today>>" }, { "field": "onboarded_at", "op": "is_empty" }]"#,
    ),
    ("offboarding", r#"[{ "field": "end_date", "op": "on_or_before", "value": "<<today>>" }]"#),
    ("no-index", r#"[{ "field": "employee_id", "op": "ends_with", "value": "0042" }]"#),
];

fn workflow(name: &str, rules: &str) -> String {
    format!(
        r#"{{
  "name": "{name}",
  "description": "Benchmark: every day at 09:00, stamp the people the rules match.",
  "begin": {{ "trigger": {{ "schedule": {{ "daily": "09:00", "timezone": "UTC" }} }}, "rules": {rules}, "next": "stamp" }},
  "blocks": {{
    "stamp": {{ "type": "update", "set": {{ "stamped_at": "<<now>>" }}, "next": "done" }},
    "done": {{ "type": "end" }}
  }}
}}"#
    )
}

const TARGET_S: f64 = 1.0;
const BATCH: usize = 5_000;

fn main() {
    let opts = Opts::parse();
    match opts.phase.as_deref() {
        Some("select") => runtime().block_on(child_select(&opts)),
        Some(other) => panic!("unknown phase {other}"),
        None => parent(&opts),
    }
}

fn parent(opts: &Opts) {
    let sizes = opts.sizes("records", opts.or_smoke(&[100_000, 1_000_000], &[2_000]), &[100_000, 1_000_000, 2_000_000]);
    let backends = opts.get("backends").unwrap_or_else(|| "sled,postgres".into());
    let mut rows = Vec::new();
    for &n in &sizes {
        for backend in backends.split(',').map(str::trim) {
            println!("schedule_select: {n} records on {backend}");
            let Some(r) = child("select", &[format!("--records={n}"), format!("--backend={backend}")]).pop() else {
                continue; // no PostgreSQL answered: the child said so
            };
            rows.extend(result_rows(n, backend, &r));
        }
    }
    let list: Vec<String> = sizes.iter().map(|n| n.to_string()).collect();
    print_table(
        "Schedule selection",
        &format!("cargo bench --bench schedule_select -- --records={} --backends={backends}", list.join(",")),
        &rows,
    );
}

fn result_rows(n: usize, backend: &str, r: &Value) -> Vec<Row> {
    let ms = |s: f64| if s < 0.01 { format!("{:.2} ms", s * 1e3) } else { format!("{:.0} ms", s * 1e3) };
    let at = format!("{} records, {backend}", group(n as u64));
    let best_of = if n > 100_000 { 2 } else { 3 };
    let scan = f(r, "scan_s");
    let mut rows = Vec::new();
    for (name, rule) in [
        ("onboarding", "`start_date equals <<today>>` + `onboarded_at is_empty` (index)"),
        ("offboarding", "`end_date on_or_before <<today>>` (index range)"),
        ("no-index", "`employee_id ends_with 0042` (reads every record)"),
    ] {
        let sel = f(r, &format!("{name}_s"));
        let mut row =
            Row::new(format!("{at}: select, {rule}, best of {best_of}"), ms(sel)).baseline(ms(scan)).ratio(scan / sel);
        if n >= 1_000_000 && name != "no-index" {
            row = row.target(format!("< {TARGET_S} s at 1,000,000"), sel < TARGET_S);
        }
        rows.push(row);
    }
    rows.push(Row::new(
        format!("{at}: onboarding select right after the load / in a process that just opened the store"),
        format!("{} / {}", ms(f(r, "onboarding_first_s")), ms(f(r, "onboarding_reopened_s"))),
    ));
    rows.push(Row::new(
        format!(
            "{at}: matched, onboarding / offboarding / no-index (candidates read: {} / {})",
            r["onboarding_candidates"], r["offboarding_candidates"]
        ),
        format!("{} / {} / {}", r["onboarding_matched"], r["offboarding_matched"], r["no-index_matched"]),
    ));
    rows.push(Row::new(
        format!("{at}: building the start_date and end_date indexes once (prepare_indexes)"),
        ms(f(r, "index_build_s")),
    ));
    rows.push(Row::new(
        format!("{at}: load rate / store size (per person) / RSS after select"),
        format!(
            "{} records/s / {:.0} MiB ({:.1} KiB) / {:.0} MiB",
            fmt_rate(n as f64 / f(r, "load_s")),
            f(r, "store_mib"),
            f(r, "store_mib") * 1024.0 / n as f64,
            f(r, "rss_mib")
        ),
    ));
    rows
}

/// A person as a Sage People sync leaves them: about 20 fields, each with provenance; and
/// whether each of [`RULES`] matches them.
fn person(i: usize, today: jiff::civil::Date) -> (Value, [bool; 3]) {
    const DEPTS: &[&str] =
        &["Engineering", "Sales", "Customer Success", "Product", "Marketing", "Finance", "People", "IT"];
    const SITES: &[&str] = &["San Francisco HQ", "New York Office", "Austin Office", "London Office"];
    let days = |d: i64| today.checked_add(jiff::Span::new().days(d)).expect("a date");
    // Start dates spread over ~9 years, a few in the near future; 1 in 3,200 is today.
    let offset = ((i * 7919) % 3200) as i64 - 100;
    let start = days(-offset);
    let started = offset >= 0;
    let onboarded = started && !i.is_multiple_of(3);
    // 1 in 1,000 has left (in the last ~300 days, today included), 1 in 1,000 has given
    // notice (leaves in 1 to 60 days); the rest have no end date.
    let end = match i % 1000 {
        7 => Some(days(-(((i / 1000) % 300) as i64))),
        8 => Some(days(1 + ((i / 1000) % 60) as i64)),
        _ => None,
    };
    let mut fields = json!({
        "email": format!("person{i}@acme.test"),
        "first_name": format!("First{i}"),
        "last_name": format!("Last{}", i % 9973),
        "full_name": format!("First{i} Last{}", i % 9973),
        "employee_id": format!("E{i:07}"),
        "sage_id": format!("a0B{i:015}"),
        "department": DEPTS[i % DEPTS.len()],
        "job_title": "Software Engineer",
        "work_location": SITES[i % SITES.len()],
        "manager_email": format!("person{}@acme.test", i / 7),
        "start_date": start.to_string(),
        "end_date": end.map(|d| d.to_string()),
        "employment_active": end.is_none(),
        "on_leave": false,
        "sage_people_present": true,
        "sage_synced_at": "2026-01-01T06:00:00Z",
    });
    if onboarded {
        fields["onboarded_at"] = json!(format!("{}T09:00:00Z", start));
        fields["brex_user_id"] = json!(format!("cuuser_{i:025}"));
        fields["brex_status"] = json!("ACTIVE");
    }
    let matches = [offset == 0 && !onboarded, end.is_some_and(|d| d <= today), i % 10_000 == 42];
    (fields, matches)
}

/// A fresh store on `backend`, and what removes it. `None` when PostgreSQL does not answer.
async fn fresh_store(backend: &str) -> Option<(Store, Backend)> {
    match backend {
        "sled" => {
            let dir = tempfile::Builder::new().prefix("roster-bench-select-").tempdir().expect("temp dir");
            Some((open_store(dir.path()), Backend::Sled(dir)))
        }
        "postgres" => {
            let schema = format!("roster_bench_select_{}", std::process::id());
            drop_postgres_schema(&schema);
            let (store, pg) = postgres_store(&schema).await?;
            Some((store, Backend::Postgres { schema, pg }))
        }
        other => panic!("unknown backend {other} (sled or postgres)"),
    }
}

enum Backend {
    Sled(tempfile::TempDir),
    Postgres { schema: String, pg: Arc<roster_engine::store::PostgresStore> },
}

impl Backend {
    /// The store as a process that has just started opens it.
    async fn reopen(&self) -> Store {
        match self {
            Backend::Sled(dir) => open_store(dir.path()),
            Backend::Postgres { schema, .. } => postgres_node(schema).await,
        }
    }

    async fn size_mib(&self) -> f64 {
        let bytes = match self {
            Backend::Sled(dir) => dir_bytes(dir.path()),
            Backend::Postgres { pg, .. } => pg.size_bytes().await.expect("the schema's size"),
        };
        bytes as f64 / 1048576.0
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Postgres { schema, .. } = self {
            drop_postgres_schema(schema);
        }
    }
}

fn service_on(store: Store, workflows: &[Arc<Workflow>]) -> Arc<Service> {
    let (vault, _) = vaults();
    let catalog = Catalog {
        workflows: workflows.iter().map(|wf| (wf.name.clone(), wf.clone())).collect::<BTreeMap<_, _>>(),
        integrations: BTreeMap::new(),
    };
    Service::new(engine(store, vault), catalog, roster_engine::presets::built_in())
}

async fn child_select(opts: &Opts) {
    let n = opts.usize("records", 100_000, 100_000);
    let backend_name = opts.string("backend");
    // Best of 3 (of 2 above 100,000 records, where a full scan takes seconds).
    let repeats = if n > 100_000 { 2 } else { 3 };
    let clock = Clock::system();
    let today = clock.today();
    let presets = roster_engine::presets::built_in();
    let cx = CompileContext { presets: &presets, credentials: None };
    let workflows: Vec<Arc<Workflow>> = RULES
        .iter()
        .map(|(name, rules)| {
            let wf = Workflow::compile(&workflow(name, rules), &format!("{name}.json"), &cx);
            Arc::new(wf.expect("the workflow compiles"))
        })
        .collect();
    let Some((store, backend)) = fresh_store(&backend_name).await else { return };

    let t = Instant::now();
    let mut expected = [0usize; 3];
    let mut i = 0;
    while i < n {
        let end = (i + BATCH).min(n);
        let writes = (i..end)
            .map(|k| {
                let (fields, matches) = person(k, today);
                for (count, hit) in expected.iter_mut().zip(matches) {
                    *count += usize::from(hit);
                }
                record_write(fields)
            })
            .collect();
        store.records.write_records(writes).await.expect("write records");
        i = end;
        if i % 100_000 == 0 {
            progress(format!("loaded {i} records ({:.0}/s)", i as f64 / t.elapsed().as_secs_f64()));
        }
    }
    let load_s = t.elapsed().as_secs_f64();

    // The scheduler's path: Service::select over the store just loaded.
    let service = service_on(store.clone(), &workflows);
    // What `roster serve` and `run --all` do at start: index the fields the rules look up.
    let t = Instant::now();
    let indexed = service.prepare_indexes().await.expect("index the rule fields");
    let index_build_s = t.elapsed().as_secs_f64();
    assert_eq!(indexed, ["end_date", "start_date"], "the fields the rules look up");
    let mut result = serde_json::Map::new();
    reset_peak_rss();
    for ((wf, (name, _)), want) in workflows.iter().zip(RULES).zip(expected) {
        let mut times = Vec::new();
        let mut matched = 0;
        for _ in 0..repeats {
            let t = Instant::now();
            let selected = service.select(wf).await.expect("select");
            times.push(t.elapsed().as_secs_f64());
            matched = selected.len();
        }
        assert_eq!(matched, want, "{name}: select finds exactly the people the rules match");
        let best = times.iter().copied().fold(f64::INFINITY, f64::min);
        progress(format!("{n} records on {backend_name}: {name} select {:.1} ms, {matched} matched", best * 1e3));
        result.insert(format!("{name}_s"), json!(best));
        result.insert(format!("{name}_matched"), json!(matched));
        if name == "onboarding" {
            result.insert("onboarding_first_s".into(), json!(times[0]));
        }
    }
    // How many records each lookup reads before the rules are checked.
    let time = json!({"now": roster_engine::clock::rfc3339(clock.now()), "today": today.to_string()});
    for (wf, (name, _)) in workflows.iter().zip(RULES).take(2) {
        let queries = roster_engine::select::candidates(wf.begin.rules.as_ref().expect("rules"), &time)
            .expect("the rule is looked up");
        let read = store.records.records_by_keys(&queries).await.expect("look up").len();
        result.insert(format!("{name}_candidates"), json!(read));
    }
    let peak = peak_rss_mib();

    // The raw baseline: every record, with a hand-written test of the onboarding rule.
    let today_text = today.to_string();
    let mut scans = Vec::new();
    for _ in 0..repeats {
        let mut hits = 0;
        let t = Instant::now();
        store
            .records
            .scan_records(&mut |r| {
                let starts = r.fields.get("start_date").and_then(Value::as_str) == Some(today_text.as_str());
                let onboarded = r.fields.get("onboarded_at").is_some_and(|v| !v.is_null() && v != "");
                hits += usize::from(starts && !onboarded);
                true
            })
            .await
            .expect("scan");
        scans.push(t.elapsed().as_secs_f64());
        assert_eq!(hits, expected[0]);
    }
    drop(service);
    drop(store);

    // A process that has just opened the store (roster run --all, a restart).
    let service = service_on(backend.reopen().await, &workflows);
    let t = Instant::now();
    let again = service.select(&workflows[0]).await.expect("select").len();
    let reopened = t.elapsed().as_secs_f64();
    assert_eq!(again, expected[0]);
    drop(service);

    let scan = scans.iter().copied().fold(f64::INFINITY, f64::min);
    progress(format!("{n} records on {backend_name}: scan {:.0} ms, load {load_s:.0} s", scan * 1e3));
    result.extend([
        ("records".to_string(), json!(n)),
        ("load_s".into(), json!(load_s)),
        ("scan_s".into(), json!(scan)),
        ("onboarding_reopened_s".into(), json!(reopened)),
        ("index_build_s".into(), json!(index_build_s)),
        ("peak_rss_mib".into(), json!(peak)),
        ("rss_mib".into(), json!(rss_mib())),
        ("store_mib".into(), json!(backend.size_mib().await)),
    ]);
    emit(Value::Object(result));
}
