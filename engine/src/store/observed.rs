//! A store with an observer around every call: to time calls (benchmarks) or to make
//! writes fail on purpose (a full disk in tests). Every call still goes to the inner store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{RecordWrite, RecordWritten, RunFilter, Store};
use crate::error::Result;
use crate::model::{ChangeEvent, JournalEntry, Record, Run, StoredCredential, SyncSession};

/// What kind of store call is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCall {
    /// Reading one record (`Store::record`).
    RecordRead,
    /// A run's step (`Store::save_step`); `finished` when the run is settled by it.
    SaveStep { run: Uuid, finished: bool },
    /// Taking a queued run (`Store::claim_next`).
    Claim,
    /// Any other call that writes.
    Write,
    /// Any other call that only reads.
    Read,
}

impl StoreCall {
    pub fn writes(self) -> bool {
        matches!(self, StoreCall::SaveStep { .. } | StoreCall::Claim | StoreCall::Write)
    }
}

/// Sees every call of an [`Observed`] store.
pub trait StoreObserver: Send + Sync {
    /// Before the call; an error is returned in place of the call's own result.
    fn before(&self, _call: StoreCall) -> Result<()> {
        Ok(())
    }
    /// After the call: how long it took and, for a claim, the run claimed.
    fn after(&self, _call: StoreCall, _took: Duration, _claimed: Option<Uuid>) {}
}

pub struct Observed<O> {
    pub inner: Arc<dyn Store>,
    pub observer: O,
}

impl<O: StoreObserver> Observed<O> {
    pub fn new(inner: Arc<dyn Store>, observer: O) -> Self {
        Self { inner, observer }
    }

    fn around<T>(&self, call: StoreCall, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.observer.before(call)?;
        let started = Instant::now();
        let out = f();
        self.observer.after(call, started.elapsed(), None);
        out
    }
}

impl<O: StoreObserver> Store for Observed<O> {
    fn record(&self, id: Uuid) -> Result<Option<Record>> {
        self.around(StoreCall::RecordRead, || self.inner.record(id))
    }
    fn records_by_field(&self, field: &str, value: &str) -> Result<Vec<Record>> {
        self.around(StoreCall::Read, || self.inner.records_by_field(field, value))
    }
    fn ensure_index(&self, field: &str) -> Result<()> {
        self.around(StoreCall::Write, || self.inner.ensure_index(field))
    }
    fn scan_records(&self, visit: &mut dyn FnMut(Record) -> bool) -> Result<()> {
        self.around(StoreCall::Read, || self.inner.scan_records(visit))
    }
    fn count_records(&self) -> Result<usize> {
        self.around(StoreCall::Read, || self.inner.count_records())
    }
    fn write_record(&self, write: RecordWrite) -> Result<RecordWritten> {
        self.around(StoreCall::Write, || self.inner.write_record(write))
    }
    fn write_records(&self, writes: Vec<RecordWrite>) -> Result<Vec<RecordWritten>> {
        self.around(StoreCall::Write, || self.inner.write_records(writes))
    }
    fn run(&self, id: Uuid) -> Result<Option<Run>> {
        self.around(StoreCall::Read, || self.inner.run(id))
    }
    fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        self.around(StoreCall::Read, || self.inner.runs(filter))
    }
    fn journal(&self, run: Uuid) -> Result<Vec<JournalEntry>> {
        self.around(StoreCall::Read, || self.inner.journal(run))
    }
    fn save_step(
        &self,
        run: &Run,
        entry: Option<&JournalEntry>,
        record: Option<RecordWrite>,
    ) -> Result<Option<RecordWritten>> {
        let call = StoreCall::SaveStep { run: run.id, finished: run.state.is_finished() };
        self.around(call, || self.inner.save_step(run, entry, record))
    }
    fn unfinished_runs(&self) -> Result<Vec<Run>> {
        self.around(StoreCall::Read, || self.inner.unfinished_runs())
    }
    fn create_run_once(&self, run: &Run, dedupe: &str) -> Result<bool> {
        self.around(StoreCall::Write, || self.inner.create_run_once(run, dedupe))
    }
    fn claim_next(&self, eligible: &mut dyn FnMut(&Run) -> bool) -> Result<Option<Run>> {
        self.observer.before(StoreCall::Claim)?;
        let started = Instant::now();
        let out = self.inner.claim_next(eligible);
        let claimed = out.as_ref().ok().and_then(|r| r.as_ref()).map(|r| r.id);
        self.observer.after(StoreCall::Claim, started.elapsed(), claimed);
        out
    }
    fn queued_count(&self) -> Result<usize> {
        self.around(StoreCall::Read, || self.inner.queued_count())
    }
    fn get_meta(&self, key: &str) -> Result<Option<String>> {
        self.around(StoreCall::Read, || self.inner.get_meta(key))
    }
    fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        self.around(StoreCall::Write, || self.inner.put_meta(key, value))
    }
    fn put_workflow_source(&self, hash: &str, source: &str) -> Result<()> {
        self.around(StoreCall::Write, || self.inner.put_workflow_source(hash, source))
    }
    fn workflow_source(&self, hash: &str) -> Result<Option<String>> {
        self.around(StoreCall::Read, || self.inner.workflow_source(hash))
    }
    fn events(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<ChangeEvent>> {
        self.around(StoreCall::Read, || self.inner.events(after, limit))
    }
    fn put_sync_session(&self, session: &SyncSession) -> Result<()> {
        self.around(StoreCall::Write, || self.inner.put_sync_session(session))
    }
    fn sync_session(&self, id: Uuid) -> Result<Option<SyncSession>> {
        self.around(StoreCall::Read, || self.inner.sync_session(id))
    }
    fn sync_sessions(&self, integration: Option<&str>, limit: usize) -> Result<Vec<SyncSession>> {
        self.around(StoreCall::Read, || self.inner.sync_sessions(integration, limit))
    }
    fn put_credential(&self, credential: &StoredCredential) -> Result<()> {
        self.around(StoreCall::Write, || self.inner.put_credential(credential))
    }
    fn credential(&self, name: &str) -> Result<Option<StoredCredential>> {
        self.around(StoreCall::Read, || self.inner.credential(name))
    }
    fn credentials(&self) -> Result<Vec<StoredCredential>> {
        self.around(StoreCall::Read, || self.inner.credentials())
    }
    fn delete_credential(&self, name: &str) -> Result<bool> {
        self.around(StoreCall::Write, || self.inner.delete_credential(name))
    }
    fn flush(&self) -> Result<()> {
        self.around(StoreCall::Write, || self.inner.flush())
    }
}
