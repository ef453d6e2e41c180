//! Benchmark 5: memory over time.
//!
//! Finished runs live in the store, not in memory, so the process's RSS must not grow with
//! the number of runs the journal holds. A cheap workflow (one update block, then end) runs
//! over 1,000 people through the production path (`Engine::create_run`, then
//! `Service::work(64, true)`) until the journal holds 10,000, 50,000 and 100,000 finished
//! runs; RSS is read after each. At the end, the store scans that grow with the journal
//! are timed (`unfinished_runs`, which `Service::recover` calls at every start, and a
//! filtered `runs` listing).
//!
//! A second child makes the same writes per run on bare sled (the durable floor), so the
//! growth sled itself brings is measured beside Roster's.
//!
//! Runs in a child process of its own.
//!
//!     cargo bench --bench memory_runs [-- --checkpoints=10000,50000,100000 --full]

mod common;
#[path = "common/floor.rs"]
mod floor;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use floor::{DurableFloor, FloorKind};
use roster_blocks::kinds::CompileContext;
use roster_engine::model::RunState;
use roster_engine::service::{Catalog, Service};
use roster_engine::store::RunFilter;
use roster_engine::workflow::Workflow;
use serde_json::json;

const WORKFLOW: &str = r#"{
  "name": "bench-stamp",
  "description": "Benchmark: stamp the record with the run's id, then end.",
  "begin": { "trigger": { "manual": true }, "next": "stamp" },
  "blocks": {
    "stamp": { "type": "update", "set": { "last_run": "<<run.id>>" }, "next": "done" },
    "done": { "type": "end" }
  }
}"#;

const PEOPLE: usize = 1_000;
/// RSS may grow this much (relative to the first checkpoint) and still count as flat.
const GROWTH_LIMIT: f64 = 0.15;

fn main() {
    let opts = Opts::parse();
    match opts.phase.as_deref() {
        Some("memory") => runtime().block_on(child_memory(&opts)),
        Some("floor") => runtime().block_on(child_floor(&opts)),
        Some(other) => panic!("unknown phase {other}"),
        None => parent(&opts),
    }
}

fn parent(opts: &Opts) {
    let checkpoints = opts.sizes(
        "checkpoints",
        opts.or_smoke(&[10_000, 50_000, 100_000], &[300, 600]),
        &[10_000, 50_000, 100_000, 250_000, 500_000],
    );
    let list: Vec<String> = checkpoints.iter().map(|n| n.to_string()).collect();
    println!("memory_runs: checkpoints {}", list.join(", "));
    let results = child("memory", &[format!("--checkpoints={}", list.join(","))]);
    let points: Vec<_> = results.iter().filter(|r| r["kind"] == "checkpoint").collect();
    let floor = child("floor", &[format!("--checkpoints={}", list.join(","))]);
    let scans = results.iter().find(|r| r["kind"] == "scans").expect("scan timings");
    let first = f(points[0], "rss_mib");
    let mut rows = vec![Row::new("RSS before any run", format!("{:.0} MiB", f(scans, "rss_start_mib")))];
    for p in &points {
        let rss = f(p, "rss_mib");
        let growth = rss / first - 1.0;
        let mut row = Row::new(
            format!("RSS after {} finished runs", group(f(p, "runs") as u64)),
            format!("{rss:.0} MiB ({:+.0} %)", growth * 100.0),
        );
        if p["runs"] != points[0]["runs"] {
            row = row.target(
                format!("within {:.0} % of the first checkpoint", GROWTH_LIMIT * 100.0),
                growth <= GROWTH_LIMIT,
            );
        }
        rows.push(row);
        rows.push(Row::new(
            "… runs/s for that batch / store on disk",
            format!("{} / {:.0} MiB", fmt_rate(f(p, "batch_runs") / f(p, "batch_s")), f(p, "store_mib")),
        ));
    }
    let floor_first = f(&floor[0], "rss_mib");
    for p in &floor {
        let rss = f(p, "rss_mib");
        rows.push(Row::new(
            format!("floor: the same writes on bare sled, RSS after {} runs", group(f(p, "runs") as u64)),
            format!("{rss:.0} MiB ({:+.0} %), store {:.0} MiB", (rss / floor_first - 1.0) * 100.0, f(p, "store_mib")),
        ));
    }
    let n = group(f(scans, "runs") as u64);
    rows.push(Row::new(
        format!("unfinished_runs() with {n} runs in the journal (Service::recover at start)"),
        format!("{:.0} ms", f(scans, "unfinished_s") * 1e3),
    ));
    rows.push(Row::new(
        format!("runs list filtered by state, no match, {n} runs"),
        format!("{:.0} ms", f(scans, "filtered_list_s") * 1e3),
    ));
    rows.push(Row::new(
        format!("runs list, newest 20, {n} runs"),
        format!("{:.1} ms", f(scans, "newest_list_s") * 1e3),
    ));
    print_table(
        "Memory over time",
        &format!("cargo bench --bench memory_runs -- --checkpoints={}", list.join(",")),
        &rows,
    );
}

async fn child_memory(opts: &Opts) {
    let checkpoints = opts.sizes("checkpoints", &[10_000], &[10_000]);
    let dir = tempfile::Builder::new().prefix("roster-bench-memory-").tempdir().expect("temp dir");
    let sled = open_store(dir.path());
    let times = Arc::new(StoreTimes::default());
    let store = timed_store(sled, times.clone());
    let (vault, _) = vaults();
    let engine = engine(store.clone(), vault);
    let presets = roster_engine::presets::built_in();
    let cx = CompileContext { presets: &presets, credentials: None };
    let wf = Arc::new(Workflow::compile(WORKFLOW, "bench-stamp.json", &cx).expect("the workflow compiles"));
    let catalog = Catalog { workflows: BTreeMap::from([(wf.name.clone(), wf.clone())]), integrations: BTreeMap::new() };
    let service = Service::new(engine.clone(), catalog, roster_engine::presets::built_in());
    let people = write_in_batches(
        &store,
        (0..PEOPLE)
            .map(|i| record_write(json!({"email": format!("person{i}@acme.test"), "first_name": format!("P{i}")})))
            .collect(),
        PEOPLE,
    )
    .await;
    let rss_start = rss_mib();

    let mut done = 0;
    for &target in &checkpoints {
        let batch = target - done;
        let t = Instant::now();
        // Queue the batch from a few threads at once (each create_run is one durable write).
        std::thread::scope(|s| {
            let threads = 8;
            for k in 0..threads {
                let (engine, wf, people) = (&engine, &wf, &people);
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                    for i in (done + k..target).step_by(threads) {
                        rt.block_on(engine.create_run(
                            wf,
                            &people[i % PEOPLE],
                            roster_engine::model::RunTrigger::Manual,
                        ))
                        .expect("queue a run");
                    }
                });
            }
        });
        let queued_s = t.elapsed().as_secs_f64();
        service.work(64, true).await.expect("runs");
        let elapsed = t.elapsed().as_secs_f64();
        done = target;
        let rss = rss_mib();
        let t = times.snapshot();
        progress(format!("store calls for the batch: {t}"));
        times.reset();
        progress(format!(
            "{done} runs finished; batch of {batch}: queued in {queued_s:.1} s, {:.0} runs/s in all; RSS {rss:.0} MiB",
            batch as f64 / elapsed
        ));
        emit(json!({
            "kind": "checkpoint", "runs": done, "rss_mib": rss, "batch_runs": batch, "batch_s": elapsed, "queued_s": queued_s,
            "store_mib": dir_bytes(dir.path()) as f64 / 1048576.0,
        }));
    }

    let t = Instant::now();
    let unfinished = store.runs.unfinished_runs().await.expect("unfinished runs");
    let unfinished_s = t.elapsed().as_secs_f64();
    assert!(unfinished.is_empty(), "every run finished");
    let t = Instant::now();
    let failed = store
        .runs
        .runs(&RunFilter { state: Some(RunState::Failed), limit: Some(20), ..RunFilter::default() })
        .await
        .expect("runs");
    let filtered_list_s = t.elapsed().as_secs_f64();
    assert!(failed.is_empty(), "no run failed");
    let t = Instant::now();
    let newest = store.runs.runs(&RunFilter { limit: Some(20), ..RunFilter::default() }).await.expect("runs");
    let newest_list_s = t.elapsed().as_secs_f64();
    assert_eq!(newest.len(), 20);
    emit(json!({
        "kind": "scans", "runs": done, "rss_start_mib": rss_start, "unfinished_s": unfinished_s,
        "filtered_list_s": filtered_list_s, "newest_list_s": newest_list_s,
    }));
}

/// The durable floor: what each run of the workflow writes, on bare sled (the run's
/// creation; the update step: head, journal entry, the record and its change event; the
/// end step: head and journal entry), 64 runs at a time, RSS read at each checkpoint.
async fn child_floor(opts: &Opts) {
    let checkpoints = opts.sizes("checkpoints", &[10_000], &[10_000]);
    let dir = tempfile::Builder::new().prefix("roster-bench-floor-").tempdir().expect("temp dir");
    let floor = Arc::new(DurableFloor::open(FloorKind::Sled, dir.path()));
    let (head, entry, record, event) = ([b'h'; 650], [b'j'; 300], [b'r'; 300], [b'e'; 250]);
    let mut done = 0;
    for &target in &checkpoints {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(done));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let (floor, next) = (floor.clone(), next.clone());
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= target {
                        break;
                    }
                    let run = (i as u64).to_be_bytes();
                    let person = ((i % PEOPLE) as u64).to_be_bytes();
                    let key = |tag: &[u8], id: &[u8], seq: u8| [tag, id, &[seq]].concat();
                    floor.write(&[(&key(b"h", &run, 0), &head)]).await;
                    floor
                        .write(&[
                            (&key(b"h", &run, 0), &head),
                            (&key(b"j", &run, 0), &entry),
                            (&key(b"r", &person, 0), &record),
                            (&key(b"e", &run, 0), &event),
                        ])
                        .await;
                    floor.write(&[(&key(b"h", &run, 0), &head), (&key(b"j", &run, 1), &entry)]).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a floor task");
        }
        done = target;
        let rss = rss_mib();
        progress(format!("floor: {done} runs written; RSS {rss:.0} MiB"));
        emit(json!({
            "kind": "floor", "runs": done, "rss_mib": rss, "store_mib": dir_bytes(dir.path()) as f64 / 1048576.0,
        }));
    }
}
