//! A store with an observer around the calls that matter for speed and failure: to time
//! them (benchmarks) or to make writes fail on purpose (a full disk in tests). Every call
//! still goes to the inner store.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use uuid::Uuid;

use super::{
    ClaimRequest, KeyQuery, Mark, NodeBeat, QueueStore, RecordStore, RecordWrite, RecordWritten, RunFilter, RunStore,
    SchedulerStore, Store, StoreResult, SyncStore,
};
use crate::model::{JournalEntry, Record, Run, SyncSession};

/// What kind of store call is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCall {
    /// Reading one record.
    RecordRead,
    /// A run's steps (`RunStore::save_steps`); `finished` when the run is settled by them.
    SaveStep { run: Uuid, finished: bool },
    /// Taking a run off the queue (`QueueStore::claim`).
    Claim,
    /// A node's heartbeat (`beat`, `renew_leases`): it writes, but no run's state.
    Heartbeat,
    /// Any other call that writes.
    Write,
    /// Any other call that only reads.
    Read,
}

impl StoreCall {
    pub fn writes(self) -> bool {
        matches!(self, StoreCall::SaveStep { .. } | StoreCall::Claim | StoreCall::Heartbeat | StoreCall::Write)
    }
}

/// Sees every call of an observed store.
pub trait StoreObserver: Send + Sync + 'static {
    /// Before the call; an error is returned in place of the call's own result.
    fn before(&self, _call: StoreCall) -> StoreResult<()> {
        Ok(())
    }
    /// After the call: how long it took and, for a claim, the run claimed.
    fn after(&self, _call: StoreCall, _took: Duration, _claimed: Option<Uuid>) {}
}

pub struct Observed;

impl Observed {
    /// `store` with `observer` around its records, runs, queue, scheduler and sync calls.
    pub fn wrap<O: StoreObserver>(store: Store, observer: Arc<O>) -> Store {
        Store {
            records: Arc::new(Watched { inner: store.records, observer: observer.clone() }),
            runs: Arc::new(Watched { inner: store.runs, observer: observer.clone() }),
            queue: Arc::new(Watched { inner: store.queue, observer: observer.clone() }),
            scheduler: Arc::new(Watched { inner: store.scheduler, observer: observer.clone() }),
            syncs: Arc::new(Watched { inner: store.syncs, observer: observer.clone() }),
            ..store
        }
    }
}

struct Watched<T: ?Sized, O> {
    inner: Arc<T>,
    observer: Arc<O>,
}

impl<T: ?Sized, O: StoreObserver> Watched<T, O> {
    async fn around<R>(&self, call: StoreCall, f: impl Future<Output = StoreResult<R>>) -> StoreResult<R> {
        self.observer.before(call)?;
        let started = Instant::now();
        let out = f.await;
        self.observer.after(call, started.elapsed(), None);
        out
    }
}

#[async_trait]
impl<O: StoreObserver> RecordStore for Watched<dyn RecordStore, O> {
    async fn record(&self, id: Uuid) -> StoreResult<Option<Record>> {
        self.around(StoreCall::RecordRead, self.inner.record(id)).await
    }
    async fn records_by_keys(&self, queries: &[KeyQuery]) -> StoreResult<Vec<Record>> {
        self.around(StoreCall::Read, self.inner.records_by_keys(queries)).await
    }
    async fn index_field(&self, field: &str) -> StoreResult<()> {
        self.around(StoreCall::Write, self.inner.index_field(field)).await
    }
    async fn scan_records(&self, visit: &mut (dyn FnMut(Record) -> bool + Send)) -> StoreResult<()> {
        self.around(StoreCall::Read, self.inner.scan_records(visit)).await
    }
    async fn count_records(&self) -> StoreResult<usize> {
        self.around(StoreCall::Read, self.inner.count_records()).await
    }
    async fn write_records(&self, writes: Vec<RecordWrite>) -> StoreResult<Vec<RecordWritten>> {
        self.around(StoreCall::Write, self.inner.write_records(writes)).await
    }
}

#[async_trait]
impl<O: StoreObserver> RunStore for Watched<dyn RunStore, O> {
    async fn run(&self, id: Uuid) -> StoreResult<Option<Run>> {
        self.around(StoreCall::Read, self.inner.run(id)).await
    }
    async fn runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        self.around(StoreCall::Read, self.inner.runs(filter)).await
    }
    async fn journal(&self, run: Uuid) -> StoreResult<Vec<JournalEntry>> {
        self.around(StoreCall::Read, self.inner.journal(run)).await
    }
    async fn save_steps(
        &self,
        run: &Run,
        entries: &[JournalEntry],
        record: Option<RecordWrite>,
    ) -> StoreResult<Option<RecordWritten>> {
        let call = StoreCall::SaveStep { run: run.id, finished: run.state.is_finished() };
        self.around(call, self.inner.save_steps(run, entries, record)).await
    }
    async fn create_once(&self, run: &Run, dedupe: &str) -> StoreResult<bool> {
        self.around(StoreCall::Write, self.inner.create_once(run, dedupe)).await
    }
    async fn unfinished_runs(&self) -> StoreResult<Vec<Run>> {
        self.around(StoreCall::Read, self.inner.unfinished_runs()).await
    }
    async fn prune_finished(&self, before: Timestamp, limit: usize) -> StoreResult<usize> {
        self.around(StoreCall::Write, self.inner.prune_finished(before, limit)).await
    }
}

#[async_trait]
impl<O: StoreObserver> QueueStore for Watched<dyn QueueStore, O> {
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Run>> {
        self.observer.before(StoreCall::Claim)?;
        let started = Instant::now();
        let out = self.inner.claim(request).await;
        let claimed = out.as_ref().ok().and_then(|r| r.as_ref()).map(|r| r.id);
        self.observer.after(StoreCall::Claim, started.elapsed(), claimed);
        out
    }
    async fn renew_leases(&self, owner: &str, until: Timestamp) -> StoreResult<usize> {
        self.around(StoreCall::Heartbeat, self.inner.renew_leases(owner, until)).await
    }
    async fn wait_for_work(&self, within: std::time::Duration) {
        self.inner.wait_for_work(within).await
    }
    async fn beat(&self, node: &str, at: Timestamp) -> StoreResult<()> {
        self.around(StoreCall::Heartbeat, self.inner.beat(node, at)).await
    }
    async fn nodes(&self) -> StoreResult<Vec<NodeBeat>> {
        self.around(StoreCall::Read, self.inner.nodes()).await
    }
    async fn queued_count(&self) -> StoreResult<usize> {
        self.around(StoreCall::Read, self.inner.queued_count()).await
    }
    async fn next_timer(&self) -> StoreResult<Option<Timestamp>> {
        self.around(StoreCall::Read, self.inner.next_timer()).await
    }
}

#[async_trait]
impl<O: StoreObserver> SchedulerStore for Watched<dyn SchedulerStore, O> {
    async fn mark(&self, mark: &Mark) -> StoreResult<Option<String>> {
        self.around(StoreCall::Read, self.inner.mark(mark)).await
    }
    async fn set_mark(&self, mark: &Mark, expected: Option<&str>, value: Option<&str>) -> StoreResult<bool> {
        self.around(StoreCall::Write, self.inner.set_mark(mark, expected, value)).await
    }
}

#[async_trait]
impl<O: StoreObserver> SyncStore for Watched<dyn SyncStore, O> {
    async fn put_session(&self, session: &SyncSession) -> StoreResult<()> {
        self.around(StoreCall::Write, self.inner.put_session(session)).await
    }
    async fn session(&self, id: Uuid) -> StoreResult<Option<SyncSession>> {
        self.around(StoreCall::Read, self.inner.session(id)).await
    }
    async fn sessions(&self, integration: Option<&str>, limit: usize) -> StoreResult<Vec<SyncSession>> {
        self.around(StoreCall::Read, self.inner.sessions(integration, limit)).await
    }
}
