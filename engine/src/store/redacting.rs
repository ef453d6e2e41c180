//! A store that never holds a secret: every write is scrubbed of every secret the process
//! knows ([`roster_blocks::redact::process`]) before it reaches the backend. Runs (error,
//! step outputs, pending request), journal entries, record writes from workflows, syncs and
//! imports, sync sessions and engine metadata all pass through here, whoever wrote them.

use std::sync::Arc;

use roster_blocks::redact::{self, SecretSet};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::{RecordWrite, RecordWritten, RunFilter, Store};
use crate::error::{Error, Result};
use crate::model::{ChangeEvent, JournalEntry, Record, Run, StoredCredential, SyncSession};

pub struct Redacting {
    pub inner: Arc<dyn Store>,
}

impl Redacting {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner }
    }
}

fn secrets() -> &'static SecretSet {
    redact::process()
}

fn clean<T: Serialize + DeserializeOwned + Clone>(thing: &T) -> Result<T> {
    secrets().scrub_serde(thing).map_err(Error::Refused)
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

impl Store for Redacting {
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
        self.inner.write_record(clean_write(write))
    }
    fn write_records(&self, writes: Vec<RecordWrite>) -> Result<Vec<RecordWritten>> {
        self.inner.write_records(writes.into_iter().map(clean_write).collect())
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
        let entry = entry.map(clean).transpose()?;
        self.inner.save_step(&clean(run)?, entry.as_ref(), record.map(clean_write))
    }
    fn unfinished_runs(&self) -> Result<Vec<Run>> {
        self.inner.unfinished_runs()
    }
    fn create_run_once(&self, run: &Run, dedupe: &str) -> Result<bool> {
        self.inner.create_run_once(&clean(run)?, dedupe)
    }
    fn claim_next(&self, eligible: &mut dyn FnMut(&Run) -> bool) -> Result<Option<Run>> {
        self.inner.claim_next(eligible)
    }
    fn queued_count(&self) -> Result<usize> {
        self.inner.queued_count()
    }
    fn get_meta(&self, key: &str) -> Result<Option<String>> {
        self.inner.get_meta(key)
    }
    fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        self.inner.put_meta(key, &secrets().scrub(value))
    }
    fn put_workflow_source(&self, hash: &str, source: &str) -> Result<()> {
        // The file as its author wrote it: a run must be able to reload exactly that.
        self.inner.put_workflow_source(hash, source)
    }
    fn workflow_source(&self, hash: &str) -> Result<Option<String>> {
        self.inner.workflow_source(hash)
    }
    fn events(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<ChangeEvent>> {
        self.inner.events(after, limit)
    }
    fn put_sync_session(&self, session: &SyncSession) -> Result<()> {
        self.inner.put_sync_session(&clean(session)?)
    }
    fn sync_session(&self, id: Uuid) -> Result<Option<SyncSession>> {
        self.inner.sync_session(id)
    }
    fn sync_sessions(&self, integration: Option<&str>, limit: usize) -> Result<Vec<SyncSession>> {
        self.inner.sync_sessions(integration, limit)
    }
    fn put_credential(&self, credential: &StoredCredential) -> Result<()> {
        // Sealed already; its settings are not secret.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[test]
    fn record_writes_and_sync_sessions_are_stored_scrubbed() {
        let dir = tempfile::tempdir().unwrap();
        let sled: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let store = Redacting::new(sled);
        redact::process().add("store-test-secret-\"\\%");
        let mut changes = serde_json::Map::new();
        changes.insert("email".into(), Value::String("a@example.com".into()));
        changes.insert("note".into(), Value::String("echo store-test-secret-\"\\% back".into()));
        let written = store
            .write_record(RecordWrite { id: None, changes, source: "import".into(), at: "2027-01-01T00:00:00Z".into() })
            .unwrap();
        assert_eq!(written.record.fields["note"], "echo [redacted] back");
        let session = SyncSession {
            id: Uuid::now_v7(),
            integration: "i".into(),
            connector: "brex".into(),
            state: crate::model::SyncState::Failed,
            test: false,
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
        store.put_sync_session(&session).unwrap();
        let stored = store.sync_session(session.id).unwrap().unwrap();
        assert_eq!(stored.error.as_deref(), Some("Brex said 401: [redacted] is revoked"));
        assert_eq!(stored.notes, ["nobody was marked missing ([redacted] failed)"]);
        assert_eq!(stored.samples[0]["token"], "[redacted]");
    }
}
