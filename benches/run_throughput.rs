//! Benchmark 1: run throughput.
//!
//! N per-user runs of a workflow with three API blocks (get user → condition → create card
//! → deactivate) against the Brex sandbox on loopback, 64 at a time, through the production
//! path: runs queued with `Engine::create_run` in a durable sled store, executed by
//! `Service::work(64, true)`. The raw baseline sends the same requests (same bodies and
//! headers) for other users of the same sandbox with bare reqwest, 64 at a time, in the
//! same process.
//!
//! Two durable floors run beside them (`floor-sled`, `floor-log`): the baseline's runs,
//! each also making the fewest durable writes the workflow needs (its creation, then the
//! head and a journal entry holding the answer after each call) on bare sled and on a
//! plain append-only file. They show the most any engine on that store could reach.
//!
//! The sandbox runs in the parent process on its own threads; the measured phases run in
//! one child process so that its CPU time is the client's alone.
//!
//!     cargo bench --bench run_throughput [-- --runs=10000 --concurrency=64 --scaling-concurrency=8 --full]

mod common;
#[path = "common/floor.rs"]
mod floor;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use floor::{DurableFloor, FLOORS, FloorKind, floor_rows};
use roster_blocks::kinds::{ApiBlock, CompileContext};
use roster_engine::model::{RunState, RunTrigger};
use roster_engine::service::{Catalog, Service};
use roster_engine::store::{RunFilter, Store};
use roster_engine::workflow::Workflow;
use roster_sandbox::{Faults, Vendor};
use serde_json::{Value, json};

/// Blocks a run executes: get_user, is_active, card, deactivate, done.
const BLOCKS_PER_RUN: f64 = 5.0;
const API_CALLS_PER_RUN: f64 = 3.0;

fn main() {
    let opts = Opts::parse();
    match opts.phase.as_deref() {
        Some("runs") => runtime().block_on(child_runs(&opts)),
        Some(other) => panic!("unknown phase {other}"),
        None => parent(&opts),
    }
}

fn parent(opts: &Opts) {
    let runs = opts.usize("runs", opts.or_smoke(10_000, 200), 50_000);
    let concurrency = opts.usize("concurrency", 64, 64);
    let latency_ms = opts.usize("latency-ms", opts.or_smoke(50, 5), 50);
    let latency_runs = opts.usize("latency-runs", opts.or_smoke(2_000, 100), 10_000);
    let warmup = (runs / 10).clamp(64, 500);
    let latency_warmup = (latency_runs / 10).clamp(64, 500);
    // Workers per node for the node-scaling pass: few enough that one node is bound by its
    // workers waiting on the vendor, not by the two cores all the nodes here share.
    let scaling_concurrency = opts.usize("scaling-concurrency", 8, 8);
    // Distinct active users for every pass: baseline before and after, the two durable
    // floors, the engine on disk, on tmpfs, on PostgreSQL with one node and with three; then
    // baseline and engine again (sled, PostgreSQL with one and three nodes) with vendor
    // latency. The node-scaling pass adds PostgreSQL with one node and with three, again
    // with latency.
    let wanted = (8 * (runs + warmup) + 6 * (latency_runs + latency_warmup)) * 102 / 100 + 100;
    println!("run_throughput: {runs} runs per variant, concurrency {concurrency}, {warmup} warm-up runs each");
    let host = SandboxHost::start(people_for_brex_users(wanted));
    let mut args = host.args();
    args.extend([format!("--runs={runs}"), format!("--concurrency={concurrency}"), format!("--warmup={warmup}")]);
    // `--variants=baseline,engine,baseline-after` measures sled alone (the loopback pass);
    // `--latency-variants=baseline,engine` the same with latency, skipping the node-scaling pass.
    if let Some(variants) = opts.get("variants") {
        args.push(format!("--variants={variants}"));
    }
    let results = child("runs", &args);
    let (mut latency_results, mut scaling_results) = (Vec::new(), Vec::new());
    if latency_ms > 0 && latency_runs > 0 {
        // Every Brex request now takes `latency_ms` longer, as a vendor across the internet does.
        host.sandbox.set_vendor_faults(
            Vendor::Brex,
            Faults { slow: 1.0, slow_for: Duration::from_millis(latency_ms as u64), ..Faults::default() },
        );
        let mut args = host.args();
        args.extend([
            format!("--runs={latency_runs}"),
            format!("--concurrency={concurrency}"),
            format!("--warmup={latency_warmup}"),
            format!(
                "--variants={}",
                opts.get("latency-variants")
                    .unwrap_or_else(|| "baseline,engine,engine-postgres,engine-postgres-3".into())
            ),
        ]);
        latency_results = child("runs", &args);
        let mut args = host.args();
        args.extend([
            format!("--runs={latency_runs}"),
            format!("--concurrency={scaling_concurrency}"),
            format!("--warmup={latency_warmup}"),
            "--variants=engine-postgres,engine-postgres-3".into(),
        ]);
        if opts.get("latency-variants").is_none() {
            scaling_results = child("runs", &args);
        }
    }
    host.stop();

    // The report compares the engine with the baseline; a profile of one variant alone
    // (`--variants=engine`) has its timings above and nothing to compare.
    let left_out: Vec<&str> = ["baseline", "baseline-after", "engine"]
        .into_iter()
        .filter(|name| !results.iter().any(|r| r["variant"] == *name))
        .collect();
    if !left_out.is_empty() {
        eprintln!("run_throughput: no report, --variants left out {} (the timings above stand)", left_out.join(", "));
        return;
    }
    let get = |name: &str| results.iter().find(|r| r["variant"] == name).unwrap_or_else(|| panic!("no {name}"));
    // The faster of the two baseline passes (before and after the engine), so the ratio
    // is not flattered by a slow baseline.
    let (b1, b2, e) = (get("baseline"), get("baseline-after"), get("engine"));
    let b = if f(b1, "elapsed_s") <= f(b2, "elapsed_s") { b1 } else { b2 };
    let n = f(b, "runs");
    let tmpfs = results.iter().find(|r| r["variant"] == "engine-tmpfs");

    let b_rps = n / f(b, "elapsed_s");
    let e_rps = f(e, "runs") / f(e, "elapsed_s");
    let ratio = e_rps / b_rps;
    let ms = |v: f64| format!("{:.1} ms", v * 1000.0);
    let overhead_wall = (f(e, "elapsed_s") / f(e, "runs") - f(b, "elapsed_s") / n) / BLOCKS_PER_RUN * 1e6;
    let overhead_cpu = (f(e, "cpu_s") / f(e, "runs") - f(b, "cpu_s") / n) / BLOCKS_PER_RUN * 1e6;
    let mut rows = vec![
        Row::new("runs/s (3 API blocks, concurrency 64, durable journal)", fmt_rate(e_rps))
            .baseline(fmt_rate(b_rps))
            .ratio(ratio)
            .target("≥ 0.25 of baseline (goal 0.6)", ratio >= 0.25),
        Row::new("requests/s", fmt_rate(f(e, "requests") / f(e, "elapsed_s")))
            .baseline(fmt_rate(f(b, "requests") / f(b, "elapsed_s")))
            .ratio((f(e, "requests") / f(e, "elapsed_s")) / (f(b, "requests") / f(b, "elapsed_s"))),
        Row::new("p50 run latency", ms(f(e, "p50_s"))).baseline(ms(f(b, "p50_s"))),
        Row::new("p99 run latency", ms(f(e, "p99_s"))).baseline(ms(f(b, "p99_s"))),
        Row::new("engine overhead per block, wall clock at saturation", format!("{overhead_wall:.0} µs")),
        Row::new("engine overhead per block, client CPU", format!("{overhead_cpu:.0} µs")),
        Row::new(
            "client CPU per run (all threads of the measured process)",
            format!("{:.0} µs", f(e, "cpu_s") / f(e, "runs") * 1e6),
        )
        .baseline(format!("{:.0} µs", f(b, "cpu_s") / n * 1e6)),
        Row::new("journal writes (save_step) per run", format!("{:.1}", f(e, "save_steps") / f(e, "runs"))),
        Row::new(
            "mean save_step time (transaction + group flush)",
            format!("{:.0} µs", f(e, "save_step_s") / f(e, "save_steps") * 1e6),
        ),
        Row::new(
            "mean claim_next time (lock wait + save + flush)",
            format!("{:.0} µs", f(e, "claim_s") / f(e, "claims") * 1e6),
        ),
        Row::new("runs queued/s (create_run, one flush each, one thread)", fmt_rate(f(e, "runs") / f(e, "create_s"))),
    ];
    if let Some(t) = tmpfs {
        let t_rps = f(t, "runs") / f(t, "elapsed_s");
        rows.push(
            Row::new("runs/s with the journal on tmpfs (fsync costs nothing)", fmt_rate(t_rps))
                .baseline(fmt_rate(b_rps))
                .ratio(t_rps / b_rps),
        );
        rows.push(Row::new(
            "mean save_step time on tmpfs",
            format!("{:.0} µs", f(t, "save_step_s") / f(t, "save_steps") * 1e6),
        ));
    }
    let store_kb = |r: &Value| f(r, "store_bytes") / f(r, "runs").max(1.0) / 1024.0;
    rows.push(Row::new("store per finished run (whole store ÷ runs, sled)", format!("{:.2} KB", store_kb(e))));
    rows.push(
        Row::new(
            "a finished run's head and journal as stored values (sled, before its own overhead)",
            format!("{:.2} KB", f(e, "stored_bytes") / f(e, "runs").max(1.0) / 1024.0),
        )
        .baseline(format!("{:.2} KB as JSON", f(e, "logical_bytes") / f(e, "runs").max(1.0) / 1024.0))
        .target("≤ 1.5 KB", f(e, "stored_bytes") / f(e, "runs").max(1.0) <= 1.5 * 1024.0),
    );
    for (variant, what) in FLOORS {
        if let Some(fl) = results.iter().find(|r| r["variant"] == variant) {
            rows.extend(floor_rows(what, "bare reqwest + 4 durable writes per run", "runs", fl, b));
        }
    }
    for (variant, what) in [("engine-postgres", "PostgreSQL, 1 node"), ("engine-postgres-3", "PostgreSQL, 3 nodes")] {
        if let Some(p) = results.iter().find(|r| r["variant"] == variant) {
            let p_rps = f(p, "runs") / f(p, "elapsed_s");
            rows.push(
                Row::new(format!("runs/s on {what}"), fmt_rate(p_rps)).baseline(fmt_rate(b_rps)).ratio(p_rps / b_rps),
            );
            rows.push(Row::new(
                format!("client CPU per run on {what} (the database server's CPU not included)"),
                format!("{:.0} µs", f(p, "cpu_s") / f(p, "runs") * 1e6),
            ));
            rows.push(Row::new(format!("database size per finished run ({what})"), format!("{:.2} KB", store_kb(p))));
        }
    }
    for (variant, what) in [("engine-postgres", "PostgreSQL, 1 node"), ("engine-postgres-3", "PostgreSQL, 3 nodes")] {
        if let (Some(lb), Some(lp)) = (
            latency_results.iter().find(|r| r["variant"] == "baseline"),
            latency_results.iter().find(|r| r["variant"] == variant),
        ) {
            let (lb_rps, lp_rps) = (f(lb, "runs") / f(lb, "elapsed_s"), f(lp, "runs") / f(lp, "elapsed_s"));
            rows.push(
                Row::new(format!("runs/s with {latency_ms} ms vendor latency on {what}"), fmt_rate(lp_rps))
                    .baseline(fmt_rate(lb_rps))
                    .ratio(lp_rps / lb_rps),
            );
        }
    }
    for (results, workers) in [(&latency_results, concurrency), (&scaling_results, scaling_concurrency)] {
        let (Some(one), Some(three)) = (
            results.iter().find(|r| r["variant"] == "engine-postgres"),
            results.iter().find(|r| r["variant"] == "engine-postgres-3"),
        ) else {
            continue;
        };
        let (one_rps, three_rps) = (f(one, "runs") / f(one, "elapsed_s"), f(three, "runs") / f(three, "elapsed_s"));
        rows.push(
            Row::new(
                format!(
                    "3 nodes ÷ 1 node with {latency_ms} ms vendor latency, {workers} workers per node (PostgreSQL)"
                ),
                format!("{three_rps:.0} ÷ {one_rps:.0} runs/s = {:.2} ×", three_rps / one_rps),
            )
            .target("≥ 2.5 ×", three_rps / one_rps >= 2.5),
        );
    }
    if let (Some(lb), Some(le)) = (
        latency_results.iter().find(|r| r["variant"] == "baseline"),
        latency_results.iter().find(|r| r["variant"] == "engine"),
    ) {
        let (lb_rps, le_rps) = (f(lb, "runs") / f(lb, "elapsed_s"), f(le, "runs") / f(le, "elapsed_s"));
        rows.push(
            Row::new(format!("runs/s with {latency_ms} ms vendor latency per request"), fmt_rate(le_rps))
                .baseline(fmt_rate(lb_rps))
                .ratio(le_rps / lb_rps)
                .target("≥ 0.95 of baseline", le_rps / lb_rps >= 0.95),
        );
        rows.push(
            Row::new(
                format!("p50 / p99 run latency with {latency_ms} ms vendor latency"),
                format!("{} / {}", ms(f(le, "p50_s")), ms(f(le, "p99_s"))),
            )
            .baseline(format!("{} / {}", ms(f(lb, "p50_s")), ms(f(lb, "p99_s")))),
        );
        rows.push(Row::new(
            format!("mean save_step time with {latency_ms} ms vendor latency"),
            format!("{:.0} µs", f(le, "save_step_s") / f(le, "save_steps") * 1e6),
        ));
        rows.push(Row::new(
            format!("added latency per block with {latency_ms} ms vendor latency (p50 difference / 5 blocks)"),
            format!("{:.0} µs", (f(le, "p50_s") - f(lb, "p50_s")) / BLOCKS_PER_RUN * 1e6),
        ));
    }
    print_table(
        "Run throughput",
        &format!(
            "cargo bench --bench run_throughput -- --runs={runs} --concurrency={concurrency} --latency-ms={latency_ms} --latency-runs={latency_runs} --scaling-concurrency={scaling_concurrency}"
        ),
        &rows,
    );
}

// --- the measured phases (child process) -------------------------------------------------

async fn child_runs(opts: &Opts) {
    let base = opts.string("brex-url");
    let token = opts.string("token");
    let runs = opts.usize("runs", 10_000, 10_000);
    let concurrency = opts.usize("concurrency", 64, 64);
    let warmup = opts.usize("warmup", 500, 500);
    let variants = opts.get("variants").unwrap_or_else(|| {
        "baseline,floor-sled,floor-log,engine,engine-tmpfs,engine-postgres,engine-postgres-3,baseline-after".into()
    });
    let variants: Vec<&str> = variants.split(',').collect();
    let client = bare_client();
    // Users a previous pass deactivated are DISABLED now, so each pass gets fresh ones.
    let users: Vec<Value> =
        brex_users(&client, &base, &token).await.into_iter().filter(|u| u["status"] == "ACTIVE").skip(1).collect();
    let per = runs + warmup;
    let needed = variants.len() * per;
    assert!(users.len() >= needed, "the sandbox has {} active users; {needed} are needed", users.len());
    progress(format!("{} active Brex users; {per} per variant", users.len()));

    for (i, variant) in variants.iter().enumerate() {
        let users = &users[i * per..(i + 1) * per];
        let result = match *variant {
            "baseline" | "baseline-after" => {
                baseline(variant, &client, &base, &token, users, Pass { warmup, concurrency, floor: None }).await
            }
            "floor-sled" | "floor-log" => {
                let dir = tempfile::Builder::new().prefix("roster-bench-floor-").tempdir().expect("temp dir");
                let kind = if *variant == "floor-sled" { FloorKind::Sled } else { FloorKind::Log };
                let floor = Arc::new(DurableFloor::open(kind, dir.path()));
                let pass = Pass { warmup, concurrency, floor: Some(floor) };
                let mut out = baseline(variant, &client, &base, &token, users, pass).await;
                out["store_bytes"] = json!(dir_bytes(dir.path()));
                out
            }
            "engine" => {
                let dir = tempfile::Builder::new().prefix("roster-bench-runs-").tempdir().expect("temp dir");
                let (store, sled) = open_sled(dir.path());
                let mut out = engine_phase(variant, vec![store], users, warmup, concurrency, &base, &token).await;
                out["store_bytes"] = json!(dir_bytes(dir.path()));
                let ids = out["run_ids"].as_array().cloned().unwrap_or_default();
                let stored: u64 = ids
                    .iter()
                    .filter_map(|id| id.as_str()?.parse().ok())
                    .map(|id| sled.stored_bytes_of_run(id).expect("a run's stored bytes"))
                    .sum();
                out["stored_bytes"] = json!(stored);
                out
            }
            "engine-postgres" | "engine-postgres-3" => {
                let nodes = if *variant == "engine-postgres" { 1 } else { 3 };
                let schema = format!("bench_runs_{}", uuid::Uuid::new_v4().simple());
                let Some((store, pg)) = postgres_store(&schema).await else { continue };
                let mut stores = vec![store];
                for _ in 1..nodes {
                    stores.push(postgres_node(&schema).await);
                }
                let mut out = engine_phase(variant, stores, users, warmup, concurrency, &base, &token).await;
                out["store_bytes"] = json!(pg.size_bytes().await.expect("the schema's size"));
                out["nodes"] = json!(nodes);
                drop(pg);
                drop_postgres_schema(&schema);
                out
            }
            "engine-tmpfs" => {
                let Ok(dir) = tempfile::Builder::new().prefix("roster-bench-runs-").tempdir_in("/dev/shm") else {
                    progress("no /dev/shm: skipping the tmpfs variant");
                    continue;
                };
                let store = open_store(dir.path());
                let mut out = engine_phase(variant, vec![store], users, warmup, concurrency, &base, &token).await;
                out["store_bytes"] = json!(dir_bytes(dir.path()));
                out
            }
            other => panic!("unknown variant {other}"),
        };
        let mut result = result;
        if let Some(o) = result.as_object_mut() {
            o.remove("run_ids");
        }
        emit(result);
    }
}

/// The card body Roster renders for `user` (checked against the engine once).
fn card_body(user: &Value) -> Value {
    json!({
        "owner": {"type": "USER", "user_id": user["id"]},
        "card_name": format!("{} {} expenses", user["first_name"].as_str().unwrap_or(""), user["last_name"].as_str().unwrap_or("")),
        "card_type": "VIRTUAL",
        "limit_type": "CARD",
        "spend_controls": {"spend_limit": {"amount": 50000, "currency": "USD"}, "spend_duration": "MONTHLY"},
    })
}

/// One run by hand: GET the user; if ACTIVE, POST a card and PUT the status. Returns the
/// number of requests.
async fn bare_run(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    user: &Value,
    floor: Option<&DurableFloor>,
) -> u32 {
    let id = user["id"].as_str().expect("user id");
    let step = Step { floor, run: id };
    step.save(0, b"").await;
    let resp = client.get(format!("{base}/v2/users/{id}")).bearer_auth(token).send().await.expect("GET user");
    assert_eq!(resp.status().as_u16(), 200);
    let answer = resp.bytes().await.expect("body");
    step.save(1, &answer).await;
    let got: Value = serde_json::from_slice(&answer).expect("JSON");
    if got["status"] != "ACTIVE" {
        return 1;
    }
    let body = serde_json::to_vec(&card_body(user)).expect("body");
    let resp = client
        .post(format!("{base}/v2/cards"))
        .bearer_auth(token)
        .header("Idempotency-Key", format!("bare-{id}-card"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST card");
    assert_eq!(resp.status().as_u16(), 200, "create card");
    let answer = resp.bytes().await.expect("body");
    step.save(2, &answer).await;
    let _: Value = serde_json::from_slice(&answer).expect("JSON");
    let resp = client
        .put(format!("{base}/v2/users/{id}"))
        .bearer_auth(token)
        .header("Idempotency-Key", format!("bare-{id}-deactivate"))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&json!({"status": "DISABLED"})).expect("body"))
        .send()
        .await
        .expect("PUT user");
    assert_eq!(resp.status().as_u16(), 200, "deactivate");
    let answer = resp.bytes().await.expect("body");
    step.save(3, &answer).await;
    let _: Value = serde_json::from_slice(&answer).expect("JSON");
    3
}

/// What a run by hand writes to a durable floor: the run's creation, then after each
/// call one atomic write of the run's head and a journal entry holding the answer — the
/// fewest durable writes the issue allows (one per resend-safe call).
struct Step<'a> {
    floor: Option<&'a DurableFloor>,
    run: &'a str,
}

/// About what Roster's run head and a journal entry's own fields take as JSON.
const HEAD: [u8; 700] = [b'h'; 700];
const ENTRY_FIELDS: [u8; 250] = [b'j'; 250];

impl Step<'_> {
    async fn save(&self, seq: u8, answer: &[u8]) {
        let Some(floor) = self.floor else { return };
        let head_key = [self.run.as_bytes(), b"/h"].concat();
        if seq == 0 {
            floor.write(&[(&head_key, &HEAD)]).await;
            return;
        }
        let entry = [&ENTRY_FIELDS[..], answer].concat();
        let entry_key = [self.run.as_bytes(), b"/j", &[seq]].concat();
        floor.write(&[(&head_key, &HEAD), (&entry_key, &entry)]).await;
    }
}

/// How a baseline pass runs: `concurrency` runs at a time after `warmup` of them, each
/// writing to `floor` when one is given.
struct Pass {
    warmup: usize,
    concurrency: usize,
    floor: Option<Arc<DurableFloor>>,
}

async fn baseline(
    variant: &str,
    client: &reqwest::Client,
    base: &str,
    token: &str,
    users: &[Value],
    Pass { warmup, concurrency, floor }: Pass,
) -> Value {
    let pass = |users: Vec<Value>| {
        let (client, base, token, floor) = (client.clone(), base.to_string(), token.to_string(), floor.clone());
        async move {
            let users = Arc::new(users);
            let next = Arc::new(AtomicUsize::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..concurrency {
                let (client, base, token, users, next, floor) =
                    (client.clone(), base.clone(), token.clone(), users.clone(), next.clone(), floor.clone());
                tasks.spawn(async move {
                    let mut lat = Vec::new();
                    let mut requests = 0u64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(user) = users.get(i) else { break };
                        let t = Instant::now();
                        requests += u64::from(bare_run(&client, &base, &token, user, floor.as_deref()).await);
                        lat.push(t.elapsed().as_secs_f64());
                    }
                    (lat, requests)
                });
            }
            let mut lat = Vec::new();
            let mut requests = 0;
            while let Some(done) = tasks.join_next().await {
                let (l, r) = done.expect("baseline task");
                lat.extend(l);
                requests += r;
            }
            (lat, requests)
        }
    };
    pass(users[..warmup].to_vec()).await;
    let measured = users[warmup..].to_vec();
    let n = measured.len();
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let (mut lat, requests) = pass(measured).await;
    let elapsed = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    progress(format!("{variant}: {n} runs in {elapsed:.2} s ({:.0} runs/s)", n as f64 / elapsed));
    json!({
        "variant": variant, "runs": n, "elapsed_s": elapsed, "requests": requests, "cpu_s": cpu,
        "p50_s": percentile(&mut lat, 50.0), "p99_s": percentile(&mut lat, 99.0),
    })
}

/// Runs on `stores` (one per node: the first is timed and holds the credential; each
/// further one is another connection to the same database, as another node's would be).
async fn engine_phase(
    variant: &str,
    stores: Vec<Store>,
    users: &[Value],
    warmup: usize,
    concurrency: usize,
    base: &str,
    token: &str,
) -> Value {
    let times = Arc::new(StoreTimes::default());
    let store = timed_store(stores[0].clone(), times.clone());
    let mut vaults = vault_copies(stores.len() + 1);
    let v1 = vaults.pop().expect("a vault");
    brex_credential(&store, &v1, base, token).await;
    let engine = engine(store.clone(), vaults.pop().expect("a vault"));
    let presets = roster_engine::presets::built_in();
    let cx = CompileContext { presets: &presets, credentials: None };
    let wf = Arc::new(Workflow::compile(BENCH_WORKFLOW, "bench", &cx).expect("the bench workflow compiles"));
    let catalog = Catalog { workflows: BTreeMap::from([(wf.name.clone(), wf.clone())]), integrations: BTreeMap::new() };
    let service = Service::new(engine.clone(), catalog.clone(), roster_engine::presets::built_in());
    let mut others = Vec::new();
    for (other, vault) in stores[1..].iter().zip(vaults) {
        let engine = roster_engine::run::Engine::new(other.clone(), Some(vault), roster_engine::clock::Clock::system());
        others.push(Service::new(Arc::new(engine), catalog.clone(), roster_engine::presets::built_in()));
    }

    let writes = users
        .iter()
        .map(|u| {
            record_write(json!({
                "email": u["email"], "first_name": u["first_name"], "last_name": u["last_name"],
                "brex_user_id": u["id"],
            }))
        })
        .collect();
    let records = write_in_batches(&store, writes, 1000).await;

    // The baseline sends exactly what the engine renders.
    let Some(card) = wf.block("card").and_then(|b| b.downcast_ref::<ApiBlock>()) else { panic!("no card block") };
    let probe = engine.create_run(&wf, &records[0], RunTrigger::Manual).await.expect("probe run");
    let rendered = card.render(&engine.scope(&probe, &records[0]), "k").expect("render the card body");
    assert_eq!(rendered.body.as_ref(), Some(&card_body(&users[0])), "baseline body differs from Roster's");
    engine.cancel(probe).await.expect("cancel the probe run");

    // Warm-up and measured runs are two batches, so the measured ones are listed apart.
    let (warmup_batch, measured_batch) =
        (RunTrigger::Batch(uuid::Uuid::now_v7()), RunTrigger::Batch(uuid::Uuid::now_v7()));
    for r in &records[..warmup] {
        engine.create_run(&wf, r, warmup_batch.clone()).await.expect("queue a run");
    }
    service.work(concurrency, true).await.expect("warm-up runs");
    times.reset();

    let measured = &records[warmup..];
    let t = Instant::now();
    for r in measured {
        engine.create_run(&wf, r, measured_batch.clone()).await.expect("queue a run");
    }
    let create_s = t.elapsed().as_secs_f64();
    let client = bare_client();
    let req0 = brex_requests(&client, base).await;
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let work = others.iter().map(|s| s.work(concurrency, true)).chain([service.work(concurrency, true)]);
    for done in futures_util::future::join_all(work).await {
        done.expect("runs");
    }
    let elapsed = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let requests = brex_requests(&client, base).await - req0;

    let runs =
        store.runs.runs(&RunFilter { trigger: Some(measured_batch), ..RunFilter::default() }).await.expect("list runs");
    let succeeded = runs.iter().filter(|r| r.state == RunState::Succeeded).count();
    assert_eq!(
        succeeded,
        measured.len(),
        "every run should succeed: {:?}",
        runs.iter().find(|r| r.state != RunState::Succeeded)
    );
    assert_eq!(requests as f64, measured.len() as f64 * API_CALLS_PER_RUN, "three requests per run");
    // What the finished runs hold in the store as values, before the backend's own overhead.
    let mut logical_bytes = 0;
    for run in &runs {
        logical_bytes += serde_json::to_vec(run).expect("a run head").len();
        for entry in store.runs.journal(run.id).await.expect("a run's journal") {
            logical_bytes += serde_json::to_vec(&entry).expect("a journal entry").len();
        }
    }
    let mut lat = times.latencies.lock().unwrap().clone();
    progress(format!(
        "{variant}: {} runs in {elapsed:.2} s ({:.0} runs/s)",
        measured.len(),
        measured.len() as f64 / elapsed
    ));
    let mut out = json!({
        "variant": variant, "runs": measured.len(), "elapsed_s": elapsed, "requests": requests, "cpu_s": cpu,
        "create_s": create_s, "p50_s": percentile(&mut lat, 50.0), "p99_s": percentile(&mut lat, 99.0),
        "latencies": lat.len(), "logical_bytes": logical_bytes,
        "run_ids": runs.iter().map(|r| r.id.to_string()).collect::<Vec<_>>(),
    });
    if let (Value::Object(o), Value::Object(t)) = (&mut out, times.snapshot()) {
        o.extend(t);
    }
    out
}
