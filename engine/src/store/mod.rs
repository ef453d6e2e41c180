//! The store: a contract split by concern, and the backends that keep it.
//!
//! Each concern is one small async trait (records, runs and their journals, the run
//! queue, scheduler marks, change events, sync sessions, credentials, workflow versions).
//! A [`Store`] bundles one implementation of each; a backend implements them all on one
//! value ([`Store::new`]), and wrappers such as [`Redacting`] replace just the concerns they
//! change. Units of work are named by intent (`save_step`, `create_once`, `claim`) so each is
//! atomic in the backend, whatever it is. Every write is durable when its call returns.
//!
//! [`conformance`] is the contract's test suite: every backend runs it against a fresh store.
//! `sled` ([`SledStore`]) is the embedded default; [`PostgresStore`] keeps the same contract in a
//! PostgreSQL database that several nodes share. [`copy_store`] moves everything one store
//! holds into another, empty one, whatever their backends ([`TransferStore`]).

pub mod conformance;
mod copy;
mod error;
mod observed;
mod packed;
mod postgres;
mod redacting;
mod sled_store;
mod transfer;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::{ChangeEvent, JournalEntry, Record, Run, RunState, StoredCredential, SyncSession};

pub use copy::{CopyReport, copy_store};
pub use error::{StoreError, StoreErrorKind};
pub use observed::{Observed, StoreCall, StoreObserver};
pub use postgres::PostgresStore;
pub use redacting::Redacting;
pub use sled_store::SledStore;
pub use transfer::{ItemKind, StoreCounts, StoredItem, TransferStore};

/// A store call's result.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

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

/// Records whose `field` has a key text ([`key_text`]) that `matches` accepts: what
/// [`RecordStore::records_by_keys`] looks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyQuery {
    pub field: String,
    pub matches: KeyMatch,
}

/// Which key texts a [`KeyQuery`] accepts. `Equals` and `OneOf` take values as a lookup by
/// value does ([`normalize_key`]: emails ignore case and surrounding space); `StartsWith`
/// and `Range` compare key texts as they are, in byte (code point) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMatch {
    Equals(String),
    OneOf(Vec<String>),
    StartsWith(String),
    Range { lower: Bound<String>, upper: Bound<String> },
}

impl KeyQuery {
    pub fn equals(field: &str, value: &str) -> KeyQuery {
        KeyQuery { field: field.to_string(), matches: KeyMatch::Equals(value.to_string()) }
    }

    /// Whether `record` is one the query asks for.
    pub fn accepts(&self, record: &Record) -> bool {
        record.fields.get(&self.field).and_then(key_text).is_some_and(|key| self.matches.accepts(&key))
    }
}

impl KeyMatch {
    pub fn accepts(&self, key: &str) -> bool {
        self.read().accepts(key)
    }

    /// What a backend reads from its index for this match.
    pub(crate) fn read(&self) -> KeyRead {
        match self {
            KeyMatch::Equals(value) => KeyRead::Exact(vec![normalize_key(value)]),
            KeyMatch::OneOf(values) => {
                let keys: std::collections::BTreeSet<String> = values.iter().map(|v| normalize_key(v)).collect();
                KeyRead::Exact(keys.into_iter().collect())
            }
            KeyMatch::StartsWith(prefix) => KeyRead::Range(
                Bound::Included(prefix.clone()),
                prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded),
            ),
            KeyMatch::Range { lower, upper } => KeyRead::Range(lower.clone(), upper.clone()),
        }
    }
}

/// A [`KeyMatch`] as an index read: these exact keys, or the keys in a range.
pub(crate) enum KeyRead {
    Exact(Vec<String>),
    Range(Bound<String>, Bound<String>),
}

impl KeyRead {
    fn accepts(&self, key: &str) -> bool {
        match self {
            KeyRead::Exact(keys) => keys.iter().any(|k| k == key),
            KeyRead::Range(lower, upper) => {
                let above = match lower {
                    Bound::Included(l) => key >= l.as_str(),
                    Bound::Excluded(l) => key > l.as_str(),
                    Bound::Unbounded => true,
                };
                let below = match upper {
                    Bound::Included(u) => key <= u.as_str(),
                    Bound::Excluded(u) => key < u.as_str(),
                    Bound::Unbounded => true,
                };
                above && below
            }
        }
    }
}

/// Queries as their index reads, made once per lookup: what a backend reads, and what it
/// checks each record it found against (so an index entry that maps several values alike,
/// or sorts a value oddly, never lets a record through that the query does not accept).
pub(crate) struct KeyReads(pub Vec<(String, KeyRead)>);

impl KeyReads {
    pub fn new(queries: &[KeyQuery]) -> KeyReads {
        KeyReads(queries.iter().map(|q| (q.field.clone(), q.matches.read())).collect())
    }

    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(field, _)| field.as_str())
    }

    pub fn accepts(&self, record: &Record) -> bool {
        self.0.iter().any(|(field, read)| record.fields.get(field).and_then(key_text).is_some_and(|k| read.accepts(&k)))
    }
}

/// The least text above every text that starts with `prefix` (its last character that can
/// grow, grown by one), or `None` when there is none.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The records any of `queries` accepts, by reading every record: what a backend answers
/// [`RecordStore::records_by_keys`] with when a field is not indexed.
pub(crate) async fn records_by_scan(store: &dyn RecordStore, reads: &KeyReads) -> StoreResult<Vec<Record>> {
    let mut out = Vec::new();
    store
        .scan_records(&mut |record| {
            if reads.accepts(&record) {
                out.push(record);
            }
            true
        })
        .await?;
    Ok(out)
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

/// How many runs of each workflow may hold a live lease at once, across every claimer.
#[derive(Debug, Clone, Default)]
pub struct ConcurrencyLimits {
    pub per_workflow: BTreeMap<String, usize>,
}

/// One claimer's request for the next run to work on.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Who claims (a node's id); leases name it, and `renew_leases` renews by it.
    pub owner: String,
    /// The claimer's clock: due timers and expired leases are judged against it.
    pub now: Timestamp,
    /// How long the lease lasts unless renewed.
    pub lease: Duration,
    pub limits: ConcurrencyLimits,
    /// Only runs started by this trigger (`run --all`'s batch), when set.
    pub trigger: Option<crate::model::RunTrigger>,
}

/// A node as its heartbeats left it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeBeat {
    /// The node's name, as its leases carry it.
    pub node: String,
    pub last_heartbeat: Timestamp,
    /// Runs leased to it (live or expired and not yet reclaimed).
    pub runs_held: usize,
}

/// How every [`Mark::SyncLease`] key starts (a store one process owns drops them at open).
pub(crate) const SYNC_LEASE_PREFIX: &str = "sync-lease:";

/// A piece of scheduler state, changed only by compare-and-set so two schedulers (or two
/// nodes) never both act on one fire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Mark {
    /// The last fire time a workflow's schedule handled (RFC 3339).
    ScheduleFired { workflow: String },
    /// The last fire time an integration's scheduled sync handled (RFC 3339).
    SyncFired { integration: String },
    /// A failed scheduled sync's retry plan (`<attempt> <time>`).
    SyncRetry { integration: String },
    /// Who syncs an integration now (`<until> <session> <node>`, see `sync_lease`): one
    /// sync of it at a time, across every node.
    SyncLease { integration: String },
    /// The id of the last change event the dispatcher handed to triggers.
    EventCursor,
    /// The open `run --all` batch of a workflow (its id), until it is settled.
    Batch { workflow: String },
}

impl Mark {
    /// The mark's stable name (what backends key it by).
    pub fn key(&self) -> String {
        match self {
            Mark::ScheduleFired { workflow } => format!("schedule:{workflow}"),
            Mark::SyncFired { integration } => format!("sync:{integration}"),
            Mark::SyncRetry { integration } => format!("sync-retry:{integration}"),
            Mark::SyncLease { integration } => format!("{SYNC_LEASE_PREFIX}{integration}"),
            Mark::EventCursor => "dispatch_cursor".into(),
            Mark::Batch { workflow } => format!("batch:{workflow}"),
        }
    }
}

// --- the contract, one trait per concern --------------------------------------------

#[async_trait]
pub trait RecordStore: Send + Sync {
    async fn record(&self, id: Uuid) -> StoreResult<Option<Record>>;
    /// The records any of `queries` matches, each once, in id order: read from the field
    /// index when every queried field is indexed, by one scan of every record otherwise.
    async fn records_by_keys(&self, queries: &[KeyQuery]) -> StoreResult<Vec<Record>>;
    /// Records whose `field` equals `value` (emails ignore case and surrounding space).
    async fn records_by_field(&self, field: &str, value: &str) -> StoreResult<Vec<Record>> {
        self.records_by_keys(&[KeyQuery::equals(field, value)]).await
    }
    /// Says that `field` is looked up by value often (a sync key, a rule's field), so the
    /// backend should answer [`RecordStore::records_by_keys`] on it without a scan. Results
    /// never depend on it.
    async fn index_field(&self, field: &str) -> StoreResult<()>;
    /// Visits every record in id order until `visit` returns `false`.
    async fn scan_records(&self, visit: &mut (dyn FnMut(Record) -> bool + Send)) -> StoreResult<()>;
    async fn count_records(&self) -> StoreResult<usize>;
    /// Applies the writes and their change events atomically: all or none.
    async fn write_records(&self, writes: Vec<RecordWrite>) -> StoreResult<Vec<RecordWritten>>;

    async fn write_record(&self, write: RecordWrite) -> StoreResult<RecordWritten> {
        let mut written = self.write_records(vec![write]).await?;
        Ok(written.remove(0))
    }
}

#[async_trait]
pub trait RunStore: Send + Sync {
    async fn run(&self, id: Uuid) -> StoreResult<Option<Run>>;
    async fn runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>>;
    async fn journal(&self, run: Uuid) -> StoreResult<Vec<JournalEntry>>;
    /// Steps, atomically: the run's new head, its journal entries (in `seq` order; an entry
    /// whose `seq` is stored already replaces it) and (optionally) a record change. A run that
    /// is queued goes on the queue; one that is no longer running gives up its lease. If the
    /// stored run is leased to another claim (its lease expired and someone reclaimed it),
    /// nothing is written and the call fails with `Conflict`.
    async fn save_steps(
        &self,
        run: &Run,
        entries: &[JournalEntry],
        record: Option<RecordWrite>,
    ) -> StoreResult<Option<RecordWritten>>;
    /// [`RunStore::save_steps`] with at most one entry.
    async fn save_step(
        &self,
        run: &Run,
        entry: Option<&JournalEntry>,
        record: Option<RecordWrite>,
    ) -> StoreResult<Option<RecordWritten>> {
        self.save_steps(run, entry.map_or(&[], std::slice::from_ref), record).await
    }
    /// Creates the run unless a run with the same `dedupe` key was ever created, and says
    /// whether it did: "at most once per (workflow, record, event or fire)" rests on this.
    async fn create_once(&self, run: &Run, dedupe: &str) -> StoreResult<bool>;
    /// Runs not yet finished (queued, running, waiting, needs_attention), oldest first.
    async fn unfinished_runs(&self) -> StoreResult<Vec<Run>>;
    /// Deletes up to `limit` finished runs that finished before `before`, with their
    /// journals, oldest first; returns how many. Dedupe keys stay, so nothing fires again.
    async fn prune_finished(&self, before: Timestamp, limit: usize) -> StoreResult<usize>;
}

#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Takes the oldest claimable run and leases it to the claimer, marking it running:
    /// a run whose lease expired (its claimer died) first, then a queued run, then a waiting
    /// run whose timer is due. Runs of a workflow at its limit are left for later.
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Run>>;
    /// Extends every lease `owner` holds to `until` (its heartbeat); returns how many.
    async fn renew_leases(&self, owner: &str, until: Timestamp) -> StoreResult<usize>;
    /// Waits until another process may have queued a run, or `within` passes. A backend that
    /// one process owns (sled) has nobody else to hear from and just waits.
    async fn wait_for_work(&self, within: Duration) {
        tokio::time::sleep(within).await;
    }
    /// Records that `node` is alive at `at` (its heartbeat, beside [`QueueStore::renew_leases`]).
    async fn beat(&self, node: &str, at: Timestamp) -> StoreResult<()>;
    /// Every node that ever beat, with its last heartbeat and the runs leased to it.
    async fn nodes(&self) -> StoreResult<Vec<NodeBeat>>;
    async fn queued_count(&self) -> StoreResult<usize>;
    /// The earliest time a waiting run's timer is due, if any run waits.
    async fn next_timer(&self) -> StoreResult<Option<Timestamp>>;
}

#[async_trait]
pub trait SchedulerStore: Send + Sync {
    async fn mark(&self, mark: &Mark) -> StoreResult<Option<String>>;
    /// Sets `mark` to `value` (`None` clears it) only if it still holds `expected`; says
    /// whether it did. A `false` means another scheduler moved it first.
    async fn set_mark(&self, mark: &Mark, expected: Option<&str>, value: Option<&str>) -> StoreResult<bool>;
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Events after `after` (exclusive), oldest first, at most `limit`.
    async fn events(&self, after: Option<Uuid>, limit: usize) -> StoreResult<Vec<ChangeEvent>>;
}

#[async_trait]
pub trait SyncStore: Send + Sync {
    async fn put_session(&self, session: &SyncSession) -> StoreResult<()>;
    async fn session(&self, id: Uuid) -> StoreResult<Option<SyncSession>>;
    /// Newest first, at most `limit`.
    async fn sessions(&self, integration: Option<&str>, limit: usize) -> StoreResult<Vec<SyncSession>>;
}

#[async_trait]
pub trait CredentialStore: Send + Sync {
    async fn put_credential(&self, credential: &StoredCredential) -> StoreResult<()>;
    async fn credential(&self, name: &str) -> StoreResult<Option<StoredCredential>>;
    async fn credentials(&self) -> StoreResult<Vec<StoredCredential>>;
    async fn delete_credential(&self, name: &str) -> StoreResult<bool>;
}

#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Keeps a workflow file's text under its content hash (written once).
    async fn put_source(&self, hash: &str, source: &str) -> StoreResult<()>;
    async fn source(&self, hash: &str) -> StoreResult<Option<String>>;
}

/// Everything a backend implements.
pub trait Backend:
    RecordStore
    + RunStore
    + QueueStore
    + SchedulerStore
    + EventStore
    + SyncStore
    + CredentialStore
    + WorkflowStore
    + TransferStore
    + 'static
{
}

impl<T> Backend for T where
    T: RecordStore
        + RunStore
        + QueueStore
        + SchedulerStore
        + EventStore
        + SyncStore
        + CredentialStore
        + WorkflowStore
        + TransferStore
        + 'static
{
}

/// One implementation of each concern. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub records: Arc<dyn RecordStore>,
    pub runs: Arc<dyn RunStore>,
    pub queue: Arc<dyn QueueStore>,
    pub scheduler: Arc<dyn SchedulerStore>,
    pub events: Arc<dyn EventStore>,
    pub syncs: Arc<dyn SyncStore>,
    pub credentials: Arc<dyn CredentialStore>,
    pub workflows: Arc<dyn WorkflowStore>,
    pub transfer: Arc<dyn TransferStore>,
}

impl Store {
    /// Every concern served by one backend.
    pub fn new<B: Backend>(backend: Arc<B>) -> Self {
        Store {
            records: backend.clone(),
            runs: backend.clone(),
            queue: backend.clone(),
            scheduler: backend.clone(),
            events: backend.clone(),
            syncs: backend.clone(),
            credentials: backend.clone(),
            workflows: backend.clone(),
            transfer: backend,
        }
    }
}

/// An indexed field's key of one record, moved by a write: the backend's index drops `old`
/// and adds `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyMove {
    pub field: String,
    pub record: Uuid,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// What a record write does to a record, the same in every backend: each changed field
/// gets its provenance, the record a new version, and the write a change event with
/// `event_id`. A write that changes nothing leaves the record as it was and makes no event.
/// A new record (`existing` is `None`) gets `new_id`. The keys of `indexed` fields it moves
/// come back for the backend's index.
pub(crate) fn merge_write(
    existing: Option<Record>,
    write: &RecordWrite,
    new_id: Uuid,
    event_id: Uuid,
    indexed: &std::collections::BTreeSet<String>,
) -> (RecordWritten, Vec<KeyMove>) {
    use crate::model::{EventKind, FieldChange, Provenance};
    let created = existing.is_none();
    let mut record = existing.unwrap_or_else(|| Record {
        id: new_id,
        fields: Default::default(),
        provenance: BTreeMap::new(),
        version: 0,
        created_at: write.at.clone(),
        updated_at: write.at.clone(),
    });
    let mut changes = BTreeMap::new();
    let mut moves = Vec::new();
    for (field, after) in &write.changes {
        let before = record.fields.get(field).cloned().unwrap_or(Value::Null);
        if record.fields.contains_key(field) && before == *after {
            continue;
        }
        if indexed.contains(field) {
            let (old, new) = (key_text(&before), key_text(after));
            moves.push(KeyMove { field: field.clone(), record: record.id, old, new });
        }
        record.fields.insert(field.clone(), after.clone());
        record.provenance.insert(field.clone(), Provenance { source: write.source.clone(), at: write.at.clone() });
        changes.insert(field.clone(), FieldChange { before, after: after.clone() });
    }
    if changes.is_empty() && !created {
        return (RecordWritten { record, event: None }, moves);
    }
    record.version += 1;
    record.updated_at = write.at.clone();
    let event = ChangeEvent {
        id: event_id,
        record_id: record.id,
        kind: if created { EventKind::Created } else { EventKind::Updated },
        source: write.source.clone(),
        changes,
        at: write.at.clone(),
    };
    (RecordWritten { record, event: Some(event) }, moves)
}

/// How a key value is compared: emails ignore case and surrounding space.
pub fn normalize_key(value: &str) -> String {
    let v = value.trim();
    if v.contains('@') { v.to_lowercase() } else { v.to_string() }
}

/// Prefixes, one of which starts the key text of every text that starts with `prefix`;
/// `None` when no such list is known. [`normalize_key`] trims, which could cut into a
/// prefix that begins or ends with space, and lowercases emails, which maps each character
/// alone except `Σ` (its lowercase depends on what follows).
pub fn key_prefixes(prefix: &str) -> Option<Vec<String>> {
    if prefix.is_empty() || prefix.trim() != prefix || prefix.contains('Σ') {
        return None;
    }
    let lower = prefix.to_lowercase();
    Some(if lower == prefix { vec![lower] } else { vec![prefix.to_string(), lower] })
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
