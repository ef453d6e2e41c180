//! The store: one trait, backends behind it.
//!
//! `sled` is the embedded default (one folder, one process). Nothing above this trait
//! knows which backend it talks to, so a PostgreSQL backend can slot in for teams that
//! outgrow one machine.

mod observed;
mod redacting;
mod sled_store;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::Result;
use crate::model::{ChangeEvent, JournalEntry, Record, Run, RunState, StoredCredential, SyncSession};

pub use observed::{Observed, StoreCall, StoreObserver};
pub use redacting::Redacting;
pub use sled_store::SledStore;

/// Field changes to apply to one record, atomically with whatever else the caller writes.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    /// `None` creates a new record.
    pub id: Option<Uuid>,
    /// Fields to set (a null value stores null; it does not remove the field).
    pub changes: Map<String, Value>,
    /// Who writes: `import`, `workflow:NAME`, `sync:NAME`.
    pub source: String,
    pub at: String,
}

/// What a record write did.
#[derive(Debug, Clone)]
pub struct RecordWritten {
    pub record: Record,
    /// `None` when nothing changed (no event is written then).
    pub event: Option<ChangeEvent>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub record_id: Option<Uuid>,
    pub state: Option<RunState>,
    /// Only runs started by this trigger (e.g. `batch:<id>`).
    pub trigger: Option<crate::model::RunTrigger>,
    /// Newest first, at most this many.
    pub limit: Option<usize>,
}

impl RunFilter {
    pub fn matches(&self, run: &Run) -> bool {
        self.workflow.as_ref().is_none_or(|w| *w == run.workflow)
            && self.record_id.is_none_or(|r| r == run.record_id)
            && self.state.is_none_or(|s| s == run.state)
            && self.trigger.as_ref().is_none_or(|t| *t == run.trigger)
    }
}

pub trait Store: Send + Sync {
    // --- records -----------------------------------------------------------------
    fn record(&self, id: Uuid) -> Result<Option<Record>>;
    /// Records whose `field` equals `value` (email matching ignores case).
    fn records_by_field(&self, field: &str, value: &str) -> Result<Vec<Record>>;
    /// Makes `field` searchable with [`Store::records_by_field`] (indexes existing records).
    fn ensure_index(&self, field: &str) -> Result<()>;
    /// Visits every record in id order until `visit` returns `false`.
    fn scan_records(&self, visit: &mut dyn FnMut(Record) -> bool) -> Result<()>;
    fn count_records(&self) -> Result<usize>;
    /// Applies a record write and its change event atomically, flushed before returning.
    fn write_record(&self, write: RecordWrite) -> Result<RecordWritten>;
    /// Many writes in one atomic batch, flushed once.
    fn write_records(&self, writes: Vec<RecordWrite>) -> Result<Vec<RecordWritten>>;

    // --- runs and their journals -------------------------------------------------
    fn run(&self, id: Uuid) -> Result<Option<Run>>;
    fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>>;
    fn journal(&self, run: Uuid) -> Result<Vec<JournalEntry>>;
    /// Writes the run, one journal entry and (optionally) a record change in one atomic,
    /// durable write. Returns the record as written.
    fn save_step(
        &self,
        run: &Run,
        entry: Option<&JournalEntry>,
        record: Option<RecordWrite>,
    ) -> Result<Option<RecordWritten>>;
    /// Runs not yet finished (queued, running, waiting, needs_attention), oldest first.
    fn unfinished_runs(&self) -> Result<Vec<Run>>;
    /// Creates a queued run unless a run with the same `dedupe` key was ever created;
    /// returns whether it did. This is what makes "at most once per (workflow, record,
    /// event)" hold across restarts and racing triggers.
    fn create_run_once(&self, run: &Run, dedupe: &str) -> Result<bool>;
    /// Takes the oldest queued run that `eligible` accepts off the queue, marking it
    /// running. Queued runs live in the store (a run saved as `queued` is queued), not in
    /// memory. Claims are serialised, so `eligible` may count what it accepts.
    fn claim_next(&self, eligible: &mut dyn FnMut(&Run) -> bool) -> Result<Option<Run>>;
    fn queued_count(&self) -> Result<usize>;

    // --- small bits of engine state (schedule marks, event cursor, batches) ----------
    fn get_meta(&self, key: &str) -> Result<Option<String>>;
    fn put_meta(&self, key: &str, value: &str) -> Result<()>;

    // --- workflow versions ---------------------------------------------------------
    fn put_workflow_source(&self, hash: &str, source: &str) -> Result<()>;
    fn workflow_source(&self, hash: &str) -> Result<Option<String>>;

    // --- change events -----------------------------------------------------------
    /// Events after `after` (exclusive), oldest first, at most `limit`.
    fn events(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<ChangeEvent>>;

    // --- sync sessions ---------------------------------------------------------------
    fn put_sync_session(&self, session: &SyncSession) -> Result<()>;
    fn sync_session(&self, id: Uuid) -> Result<Option<SyncSession>>;
    /// Newest first, at most `limit`.
    fn sync_sessions(&self, integration: Option<&str>, limit: usize) -> Result<Vec<SyncSession>>;

    // --- credentials ---------------------------------------------------------------
    fn put_credential(&self, credential: &StoredCredential) -> Result<()>;
    fn credential(&self, name: &str) -> Result<Option<StoredCredential>>;
    fn credentials(&self) -> Result<Vec<StoredCredential>>;
    fn delete_credential(&self, name: &str) -> Result<bool>;

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<()>;
}

/// How a key value is compared: emails ignore case and surrounding space.
pub fn normalize_key(value: &str) -> String {
    let v = value.trim();
    if v.contains('@') { v.to_lowercase() } else { v.to_string() }
}

/// Text form of a field value for indexing (`None` for null, objects and arrays).
pub fn key_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(normalize_key(s)),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
