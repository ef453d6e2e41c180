//! A full disk during a step: the run pauses with a clear error and resumes when space
//! returns. The disk is simulated by a store whose writes fail while a switch is on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use roster_blocks::kinds::CompileContext;
use roster_engine::model::*;
use roster_engine::service::{Catalog, Service};
use roster_engine::store::{RecordWrite, RecordWritten, RunFilter, SledStore, Store};
use roster_engine::{Error, Result};
use serde_json::json;
use uuid::Uuid;

/// SledStore whose step writes fail with ENOSPC while `full` is set.
struct FullDisk {
    inner: SledStore,
    full: Arc<AtomicBool>,
    /// Step writes left before the disk fills by itself (negative: never).
    fills_after: std::sync::atomic::AtomicIsize,
}

impl FullDisk {
    fn check(&self) -> Result<()> {
        if self.fills_after.fetch_sub(1, Ordering::SeqCst) == 0 {
            self.full.store(true, Ordering::SeqCst);
        }
        if self.full.load(Ordering::SeqCst) {
            return Err(Error::Io("No space left on device (os error 28)".into()));
        }
        Ok(())
    }
}

impl Store for FullDisk {
    fn record(&self, id: Uuid) -> Result<Option<Record>> {
        self.inner.record(id)
    }
    fn records_by_field(&self, field: &str, value: &str) -> Result<Vec<Record>> {
        self.inner.records_by_field(field, value)
    }
    fn ensure_index(&self, field: &str) -> Result<()> {
        self.inner.ensure_index(field)
    }
    fn scan_records(&self, visit: &mut dyn FnMut(Record) -> bool) -> Result<()> {
        self.inner.scan_records(visit)
    }
    fn count_records(&self) -> Result<usize> {
        self.inner.count_records()
    }
    fn write_record(&self, write: RecordWrite) -> Result<RecordWritten> {
        self.check()?;
        self.inner.write_record(write)
    }
    fn write_records(&self, writes: Vec<RecordWrite>) -> Result<Vec<RecordWritten>> {
        self.check()?;
        self.inner.write_records(writes)
    }
    fn run(&self, id: Uuid) -> Result<Option<Run>> {
        self.inner.run(id)
    }
    fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        self.inner.runs(filter)
    }
    fn journal(&self, run: Uuid) -> Result<Vec<JournalEntry>> {
        self.inner.journal(run)
    }
    fn save_step(
        &self,
        run: &Run,
        entry: Option<&JournalEntry>,
        record: Option<RecordWrite>,
    ) -> Result<Option<RecordWritten>> {
        self.check()?;
        self.inner.save_step(run, entry, record)
    }
    fn unfinished_runs(&self) -> Result<Vec<Run>> {
        self.inner.unfinished_runs()
    }
    fn create_run_once(&self, run: &Run, dedupe: &str) -> Result<bool> {
        self.check()?;
        self.inner.create_run_once(run, dedupe)
    }
    fn claim_next(&self, eligible: &mut dyn FnMut(&Run) -> bool) -> Result<Option<Run>> {
        self.check()?;
        self.inner.claim_next(eligible)
    }
    fn queued_count(&self) -> Result<usize> {
        self.inner.queued_count()
    }
    fn get_meta(&self, key: &str) -> Result<Option<String>> {
        self.inner.get_meta(key)
    }
    fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        self.inner.put_meta(key, value)
    }
    fn put_workflow_source(&self, hash: &str, source: &str) -> Result<()> {
        self.inner.put_workflow_source(hash, source)
    }
    fn workflow_source(&self, hash: &str) -> Result<Option<String>> {
        self.inner.workflow_source(hash)
    }
    fn events(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<ChangeEvent>> {
        self.inner.events(after, limit)
    }
    fn put_sync_session(&self, session: &SyncSession) -> Result<()> {
        self.inner.put_sync_session(session)
    }
    fn sync_session(&self, id: Uuid) -> Result<Option<SyncSession>> {
        self.inner.sync_session(id)
    }
    fn sync_sessions(&self, integration: Option<&str>, limit: usize) -> Result<Vec<SyncSession>> {
        self.inner.sync_sessions(integration, limit)
    }
    fn put_credential(&self, credential: &StoredCredential) -> Result<()> {
        self.inner.put_credential(credential)
    }
    fn credential(&self, name: &str) -> Result<Option<StoredCredential>> {
        self.inner.credential(name)
    }
    fn credentials(&self) -> Result<Vec<StoredCredential>> {
        self.inner.credentials()
    }
    fn delete_credential(&self, name: &str) -> Result<bool> {
        self.inner.delete_credential(name)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
}

/// A store over a temp folder that fills on demand, one record, one compiled workflow,
/// and a service with that workflow loaded.
struct Setup {
    _dir: tempfile::TempDir,
    disk: Arc<FullDisk>,
    store: Arc<dyn Store>,
    record: Record,
    wf: Arc<roster_engine::workflow::Workflow>,
    engine: Arc<roster_engine::run::Engine>,
    service: Arc<Service>,
}

fn setup(workflow: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FullDisk {
        inner: SledStore::open(dir.path()).unwrap(),
        full: Arc::new(AtomicBool::new(false)),
        fills_after: (-1).into(),
    });
    let store: Arc<dyn Store> = disk.clone();
    let presets = roster_engine::presets::built_in();
    let cx = CompileContext { presets: &presets, credentials: None };
    let wf = Arc::new(roster_engine::workflow::Workflow::compile(workflow, "test.json", &cx).unwrap());
    let changes = json!({"email": "ann@acme.test"}).as_object().unwrap().clone();
    let record =
        store.write_record(RecordWrite { id: None, changes, source: "t".into(), at: "t".into() }).unwrap().record;
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
    );
    let full = disk.full.clone();
    let run = engine.create_run(&wf, &record, "manual").unwrap();

    // The disk fills as the worker picks the run up: its first step cannot be written.
    let claimed = store.claim_next(&mut |_| true).unwrap().unwrap();
    full.store(true, Ordering::SeqCst);
    let err = engine.drive(&wf, claimed, &mut roster_engine::run::Quiet).await.unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    let stored = store.run(run.id).unwrap().unwrap();
    assert_eq!(stored.state, RunState::Running, "nothing after the last durable write is claimed");
    assert!(store.record(record.id).unwrap().unwrap().fields.get("a").is_none());

    // The service keeps the run paused while writes fail, then queues it again.
    let pausing = {
        let service = service.clone();
        tokio::spawn(async move { service.recover() })
    };
    assert!(pausing.await.unwrap().is_err(), "recovery cannot write either while the disk is full");
    full.store(false, Ordering::SeqCst);
    service.recover().unwrap();
    service.work(1, true).await.unwrap();
    let done = store.run(run.id).unwrap().unwrap();
    assert_eq!(done.state, RunState::Succeeded);
    let fields = store.record(record.id).unwrap().unwrap().fields;
    assert_eq!((fields["a"].clone(), fields["b"].clone()), (json!(1), json!(2)));
    assert_eq!(store.journal(run.id).unwrap().len(), 2, "each step journaled once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_write_fails_pauses_the_run_and_picks_it_up_again() {
    let Setup { disk, store, record, wf, engine, service, _dir } = setup(
        r#"{"name": "three", "begin": {"next": "a"}, "blocks": {
            "a": {"type": "update", "set": {"a": 1}, "next": "b"},
            "b": {"type": "update", "set": {"b": 2}, "next": "c"},
            "c": {"type": "update", "set": {"c": 3}}}}"#,
    );
    let full = disk.full.clone();
    let run = engine.create_run(&wf, &record, "manual").unwrap();
    // Claim + step a succeed, then the disk fills at step b; space returns 300 ms later.
    disk.fills_after.store(2, Ordering::SeqCst);
    let freer = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        full.store(false, Ordering::SeqCst);
    });
    service.work(1, true).await.unwrap();
    freer.await.unwrap();
    let done = store.run(run.id).unwrap().unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{done:?}");
    let fields = store.record(record.id).unwrap().unwrap().fields;
    assert_eq!((fields["a"].clone(), fields["b"].clone(), fields["c"].clone()), (json!(1), json!(2), json!(3)));
    let blocks: Vec<String> = store.journal(run.id).unwrap().into_iter().map(|e| e.block).collect();
    assert_eq!(blocks, ["a", "b", "c"], "step a was not repeated after the pause");
}
