//! A full disk during a step: the run pauses with a clear error and resumes when space
//! returns. The disk is simulated by a store whose writes fail while a switch is on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use roster_blocks::kinds::CompileContext;
use roster_engine::model::*;
use roster_engine::service::{Catalog, Service};
use roster_engine::store::{
    ClaimRequest, Observed, RecordWrite, SledStore, Store, StoreCall, StoreError, StoreObserver, StoreResult,
};
use serde_json::json;

/// Makes every write fail with ENOSPC while `full` is set; `fills_after` counts claims and
/// steps down to the one at which the disk fills by itself (negative: never). The node's
/// heartbeat writes too, at times of its own, so it is not counted.
struct FullDisk {
    full: Arc<AtomicBool>,
    fills_after: std::sync::atomic::AtomicIsize,
    /// Claims get through while the disk is full (another node's claim, on its own disk).
    claims_pass: AtomicBool,
    /// Calls that only read, counted.
    reads: std::sync::atomic::AtomicUsize,
}

impl StoreObserver for FullDisk {
    fn before(&self, call: StoreCall) -> StoreResult<()> {
        if !call.writes() {
            self.reads.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        if call == StoreCall::Claim && self.claims_pass.load(Ordering::SeqCst) {
            return Ok(());
        }
        let counted = matches!(call, StoreCall::Claim | StoreCall::SaveStep { .. });
        if counted && self.fills_after.fetch_sub(1, Ordering::SeqCst) == 0 {
            self.full.store(true, Ordering::SeqCst);
        }
        if self.full.load(Ordering::SeqCst) {
            let enospc = std::io::Error::from_raw_os_error(28);
            return Err(StoreError::from_io("the store could not write its files", enospc));
        }
        Ok(())
    }
}

/// A store over a temp folder that fills on demand, one record, one compiled workflow,
/// and a service with that workflow loaded.
struct Setup {
    _dir: tempfile::TempDir,
    disk: Arc<FullDisk>,
    store: Store,
    record: Record,
    wf: Arc<roster_engine::workflow::Workflow>,
    engine: Arc<roster_engine::run::Engine>,
    service: Arc<Service>,
}

async fn setup(workflow: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FullDisk {
        full: Arc::new(AtomicBool::new(false)),
        fills_after: (-1).into(),
        claims_pass: AtomicBool::new(false),
        reads: Default::default(),
    });
    let store = Observed::wrap(Store::new(Arc::new(SledStore::open(dir.path()).unwrap())), disk.clone());
    let presets = roster_engine::presets::built_in();
    let cx = CompileContext { presets: &presets, credentials: None };
    let wf = Arc::new(roster_engine::workflow::Workflow::compile(workflow, "test.json", &cx).unwrap());
    let changes = json!({"email": "ann@acme.test"}).as_object().unwrap().clone();
    let record = store
        .records
        .write_record(RecordWrite { id: None, changes, source: "t".into(), at: "t".into() })
        .await
        .unwrap()
        .record;
    let engine = Arc::new(roster_engine::run::Engine::new(store.clone(), None, roster_engine::clock::Clock::system()));
    let mut catalog = Catalog::default();
    catalog.workflows.insert(wf.name.clone(), wf.clone());
    let service = Service::new(engine.clone(), catalog, presets.clone());
    Setup { _dir: dir, disk, store, record, wf, engine, service }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_pauses_while_the_disk_is_full_and_resumes_when_space_returns() {
    let Setup { disk, store, record, wf, engine, service, _dir } = setup(
        r#"{"name": "two", "begin": {"next": "a"}, "blocks": {
            "a": {"type": "update", "set": {"a": 1}, "next": "b"},
            "b": {"type": "update", "set": {"b": 2}}}}"#,
    )
    .await;
    let full = disk.full.clone();
    let run = engine.create_run(&wf, &record, roster_engine::model::RunTrigger::Manual).await.unwrap();

    // The disk fills as a worker picks the run up: its first step cannot be written. (The
    // claim's lease is over already, as if that worker had died with the disk full; it
    // ended a second ago, so the later claim finds it expired even if the clock steps back.)
    let request = ClaimRequest {
        owner: "worker".into(),
        now: jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1),
        lease: std::time::Duration::ZERO,
        limits: Default::default(),
        trigger: None,
    };
    let claimed = store.queue.claim(&request).await.unwrap().unwrap();
    full.store(true, Ordering::SeqCst);
    let err = engine.drive(&wf, claimed, &mut roster_engine::run::Quiet).await.unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    let stored = store.runs.run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.state, RunState::Running, "nothing after the last durable write is claimed");
    assert!(store.records.record(record.id).await.unwrap().unwrap().fields.get("a").is_none());

    // While writes fail, no worker can take the run up again (taking it is a write).
    assert!(service.work(1, true).await.is_err(), "nothing can be claimed while the disk is full");
    assert_eq!(store.runs.run(run.id).await.unwrap().unwrap().state, RunState::Running);
    // Space returns: the run is taken up again at the step it was on.
    full.store(false, Ordering::SeqCst);
    service.work(1, true).await.unwrap();
    let done = store.runs.run(run.id).await.unwrap().unwrap();
    assert_eq!(done.state, RunState::Succeeded);
    let fields = store.records.record(record.id).await.unwrap().unwrap().fields;
    assert_eq!((fields["a"].clone(), fields["b"].clone()), (json!(1), json!(2)));
    assert_eq!(store.runs.journal(run.id).await.unwrap().len(), 2, "each step journaled once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_write_fails_pauses_the_run_and_picks_it_up_again() {
    let Setup { disk, store, record, wf, engine, service, _dir } = setup(
        r#"{"name": "three", "begin": {"next": "a"}, "blocks": {
            "a": {"type": "update", "set": {"a": 1}, "next": "b"},
            "b": {"type": "update", "set": {"b": 2}, "next": "c"},
            "c": {"type": "update", "set": {"c": 3}}}}"#,
    )
    .await;
    let full = disk.full.clone();
    let run = engine.create_run(&wf, &record, roster_engine::model::RunTrigger::Manual).await.unwrap();
    // The claim succeeds, then the disk fills at the run's first write, which carries the
    // updates a and b (they wait for a write, see `journal_policy`) and c, which ends the
    // run. Space returns 300 ms later.
    disk.fills_after.store(1, Ordering::SeqCst);
    let freer = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        full.store(false, Ordering::SeqCst);
    });
    service.work(1, true).await.unwrap();
    freer.await.unwrap();
    let done = store.runs.run(run.id).await.unwrap().unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{done:?}");
    let fields = store.records.record(record.id).await.unwrap().unwrap().fields;
    assert_eq!((fields["a"].clone(), fields["b"].clone(), fields["c"].clone()), (json!(1), json!(2), json!(3)));
    let blocks: Vec<String> = store.runs.journal(run.id).await.unwrap().into_iter().map(|e| e.block).collect();
    assert_eq!(blocks, ["a", "b", "c"], "the steps lost with the failed write were done again, once");
}

/// Waits (up to 10 s) until `done` says yes.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_worker_whose_claims_fail_claims_again_once_the_store_is_back() {
    let Setup { disk, store, record, wf, engine, service, _dir } =
        setup(r#"{"name": "one", "begin": {"next": "a"}, "blocks": {"a": {"type": "update", "set": {"a": 1}}}}"#).await;
    let run = engine.create_run(&wf, &record, roster_engine::model::RunTrigger::Manual).await.unwrap();
    disk.full.store(true, Ordering::SeqCst);
    let workers = {
        let service = service.clone();
        tokio::spawn(async move { service.work(1, false).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!workers.is_finished(), "a serve worker does not end when a claim fails");
    disk.full.store(false, Ordering::SeqCst);
    eventually("the run", async || store.runs.run(run.id).await.unwrap().unwrap().state == RunState::Succeeded).await;
    engine.stop();
    service.wake();
    workers.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_that_another_node_took_over_meanwhile_is_left_to_it() {
    let Setup { disk, store, record, wf, engine, service, _dir } = setup(
        r#"{"name": "two", "begin": {"next": "a"}, "blocks": {
            "a": {"type": "update", "set": {"a": 1}, "next": "b"},
            "b": {"type": "update", "set": {"b": 2}}}}"#,
    )
    .await;
    let run = engine.create_run(&wf, &record, roster_engine::model::RunTrigger::Manual).await.unwrap();
    // This node's disk is full from its claim on: step a cannot be written, nor can the
    // heartbeat renew the lease, so the run pauses and its one-second lease runs out.
    service.set_lease(std::time::Duration::from_secs(1));
    disk.claims_pass.store(true, Ordering::SeqCst);
    disk.full.store(true, Ordering::SeqCst);
    let workers = {
        let service = service.clone();
        tokio::spawn(async move { service.work(1, false).await })
    };
    eventually("the claim", async || store.runs.run(run.id).await.unwrap().unwrap().state == RunState::Running).await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    // Another node takes the run over, and this node's store comes back.
    let other = ClaimRequest {
        owner: "other-node".into(),
        now: jiff::Timestamp::now(),
        lease: std::time::Duration::from_secs(60),
        limits: Default::default(),
        trigger: None,
    };
    let taken = store.queue.claim(&other).await.unwrap().expect("the expired lease is taken over");
    assert_eq!(taken.id, run.id);
    disk.full.store(false, Ordering::SeqCst);
    // The paused worker looks at the run again (a read) and leaves it to the other node.
    let reads = disk.reads.load(Ordering::SeqCst);
    eventually("the paused worker's next look", async || disk.reads.load(Ordering::SeqCst) > reads).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stored = store.runs.run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.state, RunState::Running, "not put back on the queue under the other node: {stored:?}");
    assert_eq!(stored.lease.map(|l| l.owner).as_deref(), Some("other-node"));
    assert!(store.runs.journal(run.id).await.unwrap().is_empty(), "this node wrote no step of it");
    engine.stop();
    service.wake();
    workers.await.unwrap().unwrap();
}
