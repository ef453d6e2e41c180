//! A store that never holds a secret: every write is scrubbed of every secret the process
//! knows ([`roster_blocks::redact::process`]) before it reaches the backend. Runs (error,
//! step outputs, pending request), journal entries, record writes from workflows, syncs and
//! imports, sync sessions and engine metadata all pass through here, whoever wrote them.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use roster_blocks::redact::{self, SecretSet};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::{
    KeyQuery, Mark, RecordStore, RecordWrite, RecordWritten, RunFilter, RunStore, SchedulerStore, Store, StoreError,
    StoreResult, SyncStore,
};
use crate::model::{JournalEntry, Record, Run, SyncSession};

/// Wraps the concerns of `store` that take free text (records, runs and journals, scheduler
/// marks, sync sessions) so every write is scrubbed. Credentials are sealed already, and a
/// workflow's source is kept as its author wrote it: a run must be able to reload exactly it.
pub struct Redacting;

impl Redacting {
    pub fn wrap(store: Store) -> Store {
        Store {
            records: Arc::new(Scrubbed(store.records)),
            runs: Arc::new(Scrubbed(store.runs)),
            scheduler: Arc::new(Scrubbed(store.scheduler)),
            syncs: Arc::new(Scrubbed(store.syncs)),
            ..store
        }
    }
}

struct Scrubbed<T: ?Sized>(Arc<T>);

fn secrets() -> &'static SecretSet {
    redact::process()
}

fn clean<T: Serialize + DeserializeOwned + Clone>(thing: &T) -> StoreResult<Cow<'_, T>> {
    secrets().scrub_serde(thing).map_err(|e| StoreError::corrupt(format!("a value cannot be scrubbed of secrets: {e}")))
}

fn clean_write(mut write: RecordWrite) -> RecordWrite {
    let mut changes = Value::Object(std::mem::take(&mut write.changes));
    secrets().scrub_value(&mut changes);
    if let Value::Object(m) = changes {
        write.changes = m;
    }
    write.source = secrets().scrub(&write.source).into_owned();
    write
}

#[async_trait]
impl RecordStore for Scrubbed<dyn RecordStore> {
    async fn record(&self, id: Uuid) -> StoreResult<Option<Record>> {
        self.0.record(id).await
    }
    async fn records_by_keys(&self, queries: &[KeyQuery]) -> StoreResult<Vec<Record>> {
        self.0.records_by_keys(queries).await
    }
    async fn index_field(&self, field: &str) -> StoreResult<()> {
        self.0.index_field(field).await
    }
    async fn scan_records(&self, visit: &mut (dyn FnMut(Record) -> bool + Send)) -> StoreResult<()> {
        self.0.scan_records(visit).await
    }
    async fn count_records(&self) -> StoreResult<usize> {
        self.0.count_records().await
    }
    async fn write_records(&self, writes: Vec<RecordWrite>) -> StoreResult<Vec<RecordWritten>> {
        self.0.write_records(writes.into_iter().map(clean_write).collect()).await
    }
}

#[async_trait]
impl RunStore for Scrubbed<dyn RunStore> {
    async fn run(&self, id: Uuid) -> StoreResult<Option<Run>> {
        self.0.run(id).await
    }
    async fn runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        self.0.runs(filter).await
    }
    async fn journal(&self, run: Uuid) -> StoreResult<Vec<JournalEntry>> {
        self.0.journal(run).await
    }
    async fn save_steps(
        &self,
        run: &Run,
        entries: &[JournalEntry],
        record: Option<RecordWrite>,
    ) -> StoreResult<Option<RecordWritten>> {
        let entries = entries.iter().map(|e| clean(e).map(Cow::into_owned)).collect::<StoreResult<Vec<_>>>()?;
        self.0.save_steps(&*clean(run)?, &entries, record.map(clean_write)).await
    }
    async fn create_once(&self, run: &Run, dedupe: &str) -> StoreResult<bool> {
        self.0.create_once(&*clean(run)?, dedupe).await
    }
    async fn unfinished_runs(&self) -> StoreResult<Vec<Run>> {
        self.0.unfinished_runs().await
    }
    async fn prune_finished(&self, before: Timestamp, limit: usize) -> StoreResult<usize> {
        self.0.prune_finished(before, limit).await
    }
}

#[async_trait]
impl SchedulerStore for Scrubbed<dyn SchedulerStore> {
    async fn mark(&self, mark: &Mark) -> StoreResult<Option<String>> {
        self.0.mark(mark).await
    }
    async fn set_mark(&self, mark: &Mark, expected: Option<&str>, value: Option<&str>) -> StoreResult<bool> {
        let value = value.map(|v| secrets().scrub(v).into_owned());
        self.0.set_mark(mark, expected, value.as_deref()).await
    }
}

#[async_trait]
impl SyncStore for Scrubbed<dyn SyncStore> {
    async fn put_session(&self, session: &SyncSession) -> StoreResult<()> {
        self.0.put_session(&*clean(session)?).await
    }
    async fn session(&self, id: Uuid) -> StoreResult<Option<SyncSession>> {
        self.0.session(id).await
    }
    async fn sessions(&self, integration: Option<&str>, limit: usize) -> StoreResult<Vec<SyncSession>> {
        self.0.sessions(integration, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[tokio::test]
    async fn record_writes_and_sync_sessions_are_stored_scrubbed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Redacting::wrap(Store::new(Arc::new(SledStore::open(dir.path()).unwrap())));
        redact::process().add("store-test-secret-\"\\%");
        let mut changes = serde_json::Map::new();
        changes.insert("email".into(), Value::String("a@example.com".into()));
        changes.insert("note".into(), Value::String("echo store-test-secret-\"\\% back".into()));
        let written = store
            .records
            .write_record(RecordWrite { id: None, changes, source: "import".into(), at: "2027-01-01T00:00:00Z".into() })
            .await
            .unwrap();
        assert_eq!(written.record.fields["note"], "echo [redacted] back");
        let session = SyncSession {
            id: Uuid::now_v7(),
            integration: "i".into(),
            connector: "brex".into(),
            state: crate::model::SyncState::Failed,
            test: false,
            node: None,
            started_at: "2027-01-01T00:00:00Z".into(),
            finished_at: None,
            counts: Default::default(),
            failures: Vec::new(),
            error: Some("Brex said 401: store-test-secret-\"\\% is revoked".into()),
            samples: vec![serde_json::json!({"token": "store-test-secret-\"\\%"})],
            preview: Vec::new(),
            skips: Vec::new(),
            notes: vec!["nobody was marked missing (store-test-secret-\"\\% failed)".into()],
        };
        store.syncs.put_session(&session).await.unwrap();
        let stored = store.syncs.session(session.id).await.unwrap().unwrap();
        assert_eq!(stored.error.as_deref(), Some("Brex said 401: [redacted] is revoked"));
        assert_eq!(stored.notes, ["nobody was marked missing ([redacted] failed)"]);
        assert_eq!(stored.samples[0]["token"], "[redacted]");
    }
}
