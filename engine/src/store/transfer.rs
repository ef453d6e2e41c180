//! Moving a whole store between backends: every stored item read out kind by kind, and
//! written into another store exactly as it was (see [`super::copy_store`]).
//!
//! The other concerns write by intent (a record write makes provenance and an event, a
//! claim makes a lease); this one writes raw, so a copy keeps ids, provenance, event order
//! and dedupe keys as they were.

use std::fmt;

use async_trait::async_trait;
use uuid::Uuid;

use super::{StoreError, StoreResult};
use crate::model::{ChangeEvent, JournalEntry, Record, Run, StoredCredential, SyncSession};

/// One kind of stored item, in the order a copy moves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// The fields looked up by value ([`super::RecordStore::index_field`]).
    IndexedFields,
    Records,
    /// Change events, in the order readers get them.
    Events,
    Runs,
    JournalEntries,
    DedupeKeys,
    Marks,
    Sessions,
    Credentials,
    WorkflowSources,
}

impl ItemKind {
    pub const ALL: [ItemKind; 10] = [
        ItemKind::IndexedFields,
        ItemKind::Records,
        ItemKind::Events,
        ItemKind::Runs,
        ItemKind::JournalEntries,
        ItemKind::DedupeKeys,
        ItemKind::Marks,
        ItemKind::Sessions,
        ItemKind::Credentials,
        ItemKind::WorkflowSources,
    ];

    pub fn name(self) -> &'static str {
        self.noun(2)
    }

    /// What `n` items of the kind are called: `1 run`, `2 runs`.
    pub fn noun(self, n: u64) -> &'static str {
        let (one, many) = match self {
            ItemKind::IndexedFields => ("indexed field", "indexed fields"),
            ItemKind::Records => ("record", "records"),
            ItemKind::Events => ("event", "events"),
            ItemKind::Runs => ("run", "runs"),
            ItemKind::JournalEntries => ("journal entry", "journal entries"),
            ItemKind::DedupeKeys => ("dedupe key", "dedupe keys"),
            ItemKind::Marks => ("mark", "marks"),
            ItemKind::Sessions => ("sync session", "sync sessions"),
            ItemKind::Credentials => ("credential", "credentials"),
            ItemKind::WorkflowSources => ("workflow source", "workflow sources"),
        };
        if n == 1 { one } else { many }
    }
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One stored item, as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredItem {
    IndexedField(String),
    /// With its id, version and per-field provenance.
    Record(Record),
    Event(ChangeEvent),
    /// The run's head, lease included.
    Run(Run),
    Journal {
        run: Uuid,
        entry: JournalEntry,
    },
    /// A trigger's key for the run it created ([`super::RunStore::create_once`]).
    DedupeKey {
        key: String,
        run: Uuid,
    },
    /// A scheduler mark by its stored name ([`super::Mark::key`]).
    Mark {
        key: String,
        value: String,
    },
    Session(SyncSession),
    /// Its secrets still sealed: a copy never opens them.
    Credential(StoredCredential),
    WorkflowSource {
        hash: String,
        source: String,
    },
}

impl StoredItem {
    pub fn kind(&self) -> ItemKind {
        match self {
            StoredItem::IndexedField(_) => ItemKind::IndexedFields,
            StoredItem::Record(_) => ItemKind::Records,
            StoredItem::Event(_) => ItemKind::Events,
            StoredItem::Run(_) => ItemKind::Runs,
            StoredItem::Journal { .. } => ItemKind::JournalEntries,
            StoredItem::DedupeKey { .. } => ItemKind::DedupeKeys,
            StoredItem::Mark { .. } => ItemKind::Marks,
            StoredItem::Session(_) => ItemKind::Sessions,
            StoredItem::Credential(_) => ItemKind::Credentials,
            StoredItem::WorkflowSource { .. } => ItemKind::WorkflowSources,
        }
    }
}

/// How many items of each kind a store holds. The indexed fields are a setting, not held
/// items, so they are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub records: u64,
    pub events: u64,
    pub runs: u64,
    pub journal_entries: u64,
    pub dedupe_keys: u64,
    pub marks: u64,
    pub sessions: u64,
    pub credentials: u64,
    pub workflow_sources: u64,
}

impl StoreCounts {
    /// Each count with its kind, in copy order.
    pub fn by_kind(&self) -> [(ItemKind, u64); 9] {
        [
            (ItemKind::Records, self.records),
            (ItemKind::Events, self.events),
            (ItemKind::Runs, self.runs),
            (ItemKind::JournalEntries, self.journal_entries),
            (ItemKind::DedupeKeys, self.dedupe_keys),
            (ItemKind::Marks, self.marks),
            (ItemKind::Sessions, self.sessions),
            (ItemKind::Credentials, self.credentials),
            (ItemKind::WorkflowSources, self.workflow_sources),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.by_kind().iter().all(|(_, n)| *n == 0)
    }
}

/// The kinds it holds any of, e.g. `3 records, 1 run` (`nothing` when empty).
impl fmt::Display for StoreCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held: Vec<String> =
            self.by_kind().iter().filter(|(_, n)| *n > 0).map(|(kind, n)| format!("{n} {}", kind.noun(*n))).collect();
        if held.is_empty() { f.write_str("nothing") } else { f.write_str(&held.join(", ")) }
    }
}

/// Reading every stored item out and writing items in exactly as given.
#[async_trait]
pub trait TransferStore: Send + Sync {
    /// Up to `limit` items of `kind` in the store's order, starting after `after` (the
    /// last item of the page before; `None` for the first page). An empty page is the end.
    async fn export(&self, kind: ItemKind, after: Option<&StoredItem>, limit: usize) -> StoreResult<Vec<StoredItem>>;

    /// Writes the items as they are, durable when the call returns: no new provenance,
    /// version or event, no claim. An item stored under the same id or name is replaced, but
    /// events are only appended, in the order given (a backend that keeps them in id order
    /// refuses one that would not come last). A running run's lease is kept in its head but
    /// counts as expired, so the run is claimable at once: whoever held it was claiming from
    /// another store. A field named by an [`StoredItem::IndexedField`] is indexed, records
    /// already stored included.
    async fn import(&self, items: Vec<StoredItem>) -> StoreResult<()>;

    async fn counts(&self) -> StoreResult<StoreCounts>;
}

/// Refuses a page cursor of another kind than the page asked for.
pub(super) fn check_cursor(kind: ItemKind, after: Option<&StoredItem>) -> StoreResult<()> {
    match after {
        Some(item) if item.kind() != kind => Err(StoreError::conflict(format!(
            "an export of {kind} cannot start after one of {}: pass the last item of the page before",
            item.kind()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_say_which_kinds_are_held() {
        let counts = StoreCounts { records: 3, runs: 1, ..Default::default() };
        assert_eq!(counts.to_string(), "3 records, 1 run");
        assert!(!counts.is_empty());
        assert_eq!(StoreCounts::default().to_string(), "nothing");
        assert!(StoreCounts::default().is_empty());
    }
}
