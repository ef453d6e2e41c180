//! The embedded store on sled 0.34.7.
//!
//! One tree per concern. A step's journal entry, its run and its record change are one
//! sled transaction across trees, flushed before the call returns, so a kill -9 leaves
//! either all of a step or none of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use uuid::Uuid;

use super::{RecordWrite, RecordWritten, RunFilter, Store, key_text, normalize_key};
use crate::error::{Error, Result};
use crate::model::{ChangeEvent, FieldChange, JournalEntry, Provenance, Record, Run, StoredCredential, SyncSession};

const INDEX_FIELDS_KEY: &[u8] = b"index_fields";

pub struct SledStore {
    dir: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    /// `field \0 value \0 record-id` → empty: several records may share a value.
    index: sled::Tree,
    events: sled::Tree,
    runs: sled::Tree,
    /// `run-id ++ seq (u32 BE)` → entry.
    journal: sled::Tree,
    workflows: sled::Tree,
    credentials: sled::Tree,
    sync_sessions: sled::Tree,
    /// Queued run ids (UUID v7, so oldest first) → empty.
    queue: sled::Tree,
    /// Ids of runs not finished yet, so a start need not read every run ever made.
    active: sled::Tree,
    /// Dedupe keys of every run ever created by a trigger → run id.
    run_keys: sled::Tree,
    /// Serialises claims so two workers never take one run.
    claim: std::sync::Mutex<()>,
    group: GroupFlush,
    meta: sled::Tree,
    index_fields: RwLock<BTreeSet<String>>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            // sled's default cache is 1 GiB and it overshoots it; runs and records are read
            // from disk when needed, so a small cache keeps memory flat.
            .cache_capacity(cache_bytes())
            // We flush explicitly after every step; the timer is only a backstop.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| open_error(dir, e))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_error(dir, e));
        let store = SledStore {
            dir: dir.to_path_buf(),
            records: tree("records")?,
            index: tree("index")?,
            events: tree("events")?,
            runs: tree("runs")?,
            journal: tree("journal")?,
            workflows: tree("workflows")?,
            credentials: tree("credentials")?,
            sync_sessions: tree("sync_sessions")?,
            queue: tree("queue")?,
            active: tree("active")?,
            run_keys: tree("run_keys")?,
            claim: std::sync::Mutex::new(()),
            group: GroupFlush::default(),
            meta: tree("meta")?,
            db,
            index_fields: RwLock::new(BTreeSet::new()),
        };
        let mut fields: BTreeSet<String> = match store.meta.get(INDEX_FIELDS_KEY)? {
            Some(bytes) => decode(&bytes)?,
            None => BTreeSet::new(),
        };
        if fields.insert("email".into()) {
            store.meta.insert(INDEX_FIELDS_KEY, encode(&fields)?)?;
        }
        *store.index_fields.write().expect("index field lock") = fields;
        store.backfill_active()?;
        Ok(store)
    }

    /// Stores written before the unfinished-run set existed get it built once.
    fn backfill_active(&self) -> Result<()> {
        const DONE: &[u8] = b"active_backfilled";
        if self.meta.contains_key(DONE)? {
            return Ok(());
        }
        for entry in self.runs.iter() {
            let (key, bytes) = entry?;
            let run: Run = decode(&bytes)?;
            if !run.state.is_finished() {
                self.active.insert(key, &[])?;
            }
        }
        self.meta.insert(DONE, &[])?;
        self.db.flush()?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn fields(&self) -> BTreeSet<String> {
        self.index_fields.read().expect("index field lock").clone()
    }

    /// A transaction's outcome, made durable (shared flush) before it is returned.
    fn commit<T>(&self, result: std::result::Result<T, TransactionError<Error>>) -> Result<T> {
        let value = settled(result)?;
        self.group.flush(&self.db)?;
        Ok(value)
    }
}

/// A transaction's outcome as our error type, not yet flushed.
fn settled<T>(result: std::result::Result<T, TransactionError<Error>>) -> Result<T> {
    result.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => Error::from(e),
    })
}

/// Group commit: a writer returns only once a flush that started after its write has
/// finished, but concurrent writers share one flush instead of queueing one each.
#[derive(Default)]
struct GroupFlush {
    state: std::sync::Mutex<FlushState>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct FlushState {
    /// Writes that asked for durability so far.
    requested: u64,
    /// Every write up to this number is durable.
    durable: u64,
    flushing: bool,
    failed: Option<String>,
}

impl GroupFlush {
    fn flush(&self, db: &sled::Db) -> Result<()> {
        let mut st = self.state.lock().expect("flush lock");
        st.requested += 1;
        let mine = st.requested;
        loop {
            if st.durable >= mine {
                return match &st.failed {
                    Some(e) => Err(Error::Store(format!("could not make the write durable: {e}"))),
                    None => Ok(()),
                };
            }
            if st.flushing {
                st = self.done.wait(st).expect("flush lock");
                continue;
            }
            // Become the flusher for everything requested so far.
            st.flushing = true;
            let upto = st.requested;
            drop(st);
            let outcome = db.flush();
            st = self.state.lock().expect("flush lock");
            st.flushing = false;
            st.durable = upto;
            st.failed = outcome.err().map(|e| e.to_string());
            self.done.notify_all();
        }
    }
}

/// The page cache size: `ROSTER_STORE_CACHE_MB`, default 32 MiB.
fn cache_bytes() -> u64 {
    let mb = std::env::var("ROSTER_STORE_CACHE_MB").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(32);
    mb.max(4) * 1024 * 1024
}

fn open_error(dir: &Path, e: sled::Error) -> Error {
    let text = e.to_string();
    if text.contains("could not acquire lock") || text.contains("WouldBlock") {
        Error::StoreLocked { dir: dir.to_path_buf() }
    } else {
        match e {
            sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => {
                Error::StoreCorrupt { dir: dir.to_path_buf(), reason: text }
            }
            sled::Error::Io(io) => Error::StoreCorrupt { dir: dir.to_path_buf(), reason: io.to_string() },
            other => Error::StoreCorrupt { dir: dir.to_path_buf(), reason: other.to_string() },
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Store(format!("cannot encode: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Store(format!("a stored value cannot be read ({e}); the store may be damaged")))
}

fn index_key(field: &str, value: &str, id: Uuid) -> Vec<u8> {
    let mut k = index_prefix(field, value);
    k.extend_from_slice(id.as_bytes());
    k
}

fn index_prefix(field: &str, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(field.len() + value.len() + 18);
    k.extend_from_slice(field.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

fn journal_key(run: Uuid, seq: u32) -> Vec<u8> {
    let mut k = run.as_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

type Abortable<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

fn abort<T>(e: Error) -> Abortable<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn tx_decode<T: DeserializeOwned>(bytes: &[u8]) -> Abortable<T> {
    decode(bytes).or_else(abort)
}

fn tx_encode<T: Serialize>(value: &T) -> Abortable<Vec<u8>> {
    encode(value).or_else(abort)
}

/// Writes a run and keeps the queue and the unfinished-run set in step with its state.
fn put_run(
    runs: &TransactionalTree,
    queue: &TransactionalTree,
    active: &TransactionalTree,
    run: &Run,
) -> Abortable<()> {
    runs.insert(run.id.as_bytes(), tx_encode(run)?)?;
    if run.state == crate::model::RunState::Queued {
        queue.insert(run.id.as_bytes(), &[])?;
    } else {
        queue.remove(run.id.as_bytes())?;
    }
    if run.state.is_finished() {
        active.remove(run.id.as_bytes())?;
    } else {
        active.insert(run.id.as_bytes(), &[])?;
    }
    Ok(())
}

/// Applies one record write inside a transaction. Must stay free of side effects: sled
/// may run the closure again on conflict.
fn apply_write(
    records: &TransactionalTree,
    index: &TransactionalTree,
    events: &TransactionalTree,
    fields: &BTreeSet<String>,
    write: &RecordWrite,
    new_id: Uuid,
    event_id: Uuid,
) -> Abortable<RecordWritten> {
    let existing: Option<Record> = match write.id {
        Some(id) => match records.get(id.as_bytes())? {
            Some(bytes) => Some(tx_decode(&bytes)?),
            None => return abort(Error::NotFound(format!("record {id} does not exist"))),
        },
        None => None,
    };
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
    for (field, after) in &write.changes {
        let before = record.fields.get(field).cloned().unwrap_or(serde_json::Value::Null);
        let unchanged = record.fields.contains_key(field) && before == *after;
        if unchanged {
            continue;
        }
        if fields.contains(field) {
            if let Some(old) = key_text(&before) {
                index.remove(index_key(field, &old, record.id))?;
            }
            if let Some(new) = key_text(after) {
                index.insert(index_key(field, &new, record.id), &[])?;
            }
        }
        record.fields.insert(field.clone(), after.clone());
        record.provenance.insert(field.clone(), Provenance { source: write.source.clone(), at: write.at.clone() });
        changes.insert(field.clone(), FieldChange { before, after: after.clone() });
    }
    if changes.is_empty() && !created {
        return Ok(RecordWritten { record, event: None });
    }
    record.version += 1;
    record.updated_at = write.at.clone();
    records.insert(record.id.as_bytes(), tx_encode(&record)?)?;
    let event = ChangeEvent {
        id: event_id,
        record_id: record.id,
        kind: if created { crate::model::EventKind::Created } else { crate::model::EventKind::Updated },
        source: write.source.clone(),
        changes,
        at: write.at.clone(),
    };
    events.insert(event.id.as_bytes(), tx_encode(&event)?)?;
    Ok(RecordWritten { record, event: Some(event) })
}

impl Store for SledStore {
    fn record(&self, id: Uuid) -> Result<Option<Record>> {
        self.records.get(id.as_bytes())?.map(|b| decode(&b)).transpose()
    }

    fn records_by_field(&self, field: &str, value: &str) -> Result<Vec<Record>> {
        if self.fields().contains(field) {
            let prefix = index_prefix(field, &normalize_key(value));
            let mut out = Vec::new();
            for entry in self.index.scan_prefix(&prefix) {
                let (key, _) = entry?;
                let id = Uuid::from_slice(&key[prefix.len()..]).map_err(|e| Error::Store(e.to_string()))?;
                if let Some(r) = self.record(id)? {
                    out.push(r);
                }
            }
            return Ok(out);
        }
        let wanted = normalize_key(value);
        let mut out = Vec::new();
        self.scan_records(&mut |r| {
            if r.fields.get(field).and_then(key_text).is_some_and(|v| v == wanted) {
                out.push(r);
            }
            true
        })?;
        Ok(out)
    }

    fn ensure_index(&self, field: &str) -> Result<()> {
        let mut fields = self.fields();
        if !fields.insert(field.to_string()) {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        self.scan_records(&mut |r| {
            if let Some(v) = r.fields.get(field).and_then(key_text) {
                batch.insert(index_key(field, &v, r.id), &[]);
            }
            true
        })?;
        self.index.apply_batch(batch)?;
        self.meta.insert(INDEX_FIELDS_KEY, encode(&fields)?)?;
        self.db.flush()?;
        *self.index_fields.write().expect("index field lock") = fields;
        Ok(())
    }

    fn scan_records(&self, visit: &mut dyn FnMut(Record) -> bool) -> Result<()> {
        for entry in self.records.iter() {
            let (_, bytes) = entry?;
            if !visit(decode(&bytes)?) {
                break;
            }
        }
        Ok(())
    }

    fn count_records(&self) -> Result<usize> {
        Ok(self.records.len())
    }

    fn write_record(&self, write: RecordWrite) -> Result<RecordWritten> {
        let mut out = self.write_records(vec![write])?;
        Ok(out.remove(0))
    }

    fn write_records(&self, writes: Vec<RecordWrite>) -> Result<Vec<RecordWritten>> {
        let fields = self.fields();
        let ids: Vec<(Uuid, Uuid)> = writes.iter().map(|_| (Uuid::now_v7(), Uuid::now_v7())).collect();
        let result = (&self.records, &self.index, &self.events).transaction(|(records, index, events)| {
            let mut out = Vec::with_capacity(writes.len());
            for (write, (new_id, event_id)) in writes.iter().zip(&ids) {
                out.push(apply_write(records, index, events, &fields, write, *new_id, *event_id)?);
            }
            Ok(out)
        });
        self.commit(result)
    }

    fn run(&self, id: Uuid) -> Result<Option<Run>> {
        self.runs.get(id.as_bytes())?.map(|b| decode(&b)).transpose()
    }

    fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        let mut out = Vec::new();
        // Run ids are UUID v7, so reverse key order is newest first.
        for entry in self.runs.iter().rev() {
            let (_, bytes) = entry?;
            let run: Run = decode(&bytes)?;
            if filter.matches(&run) {
                out.push(run);
                if filter.limit.is_some_and(|l| out.len() >= l) {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn journal(&self, run: Uuid) -> Result<Vec<JournalEntry>> {
        self.journal.scan_prefix(run.as_bytes()).map(|e| decode(&e?.1)).collect()
    }

    fn save_step(
        &self,
        run: &Run,
        entry: Option<&JournalEntry>,
        record: Option<RecordWrite>,
    ) -> Result<Option<RecordWritten>> {
        let fields = self.fields();
        let (new_id, event_id) = (Uuid::now_v7(), Uuid::now_v7());
        let trees = (&self.runs, &self.journal, &self.records, &self.index, &self.events, &self.queue, &self.active);
        let result = trees.transaction(|(runs, journal, records, index, events, queue, active)| {
            put_run(runs, queue, active, run)?;
            if let Some(entry) = entry {
                journal.insert(journal_key(run.id, entry.seq), tx_encode(entry)?)?;
            }
            match &record {
                Some(w) => Ok(Some(apply_write(records, index, events, &fields, w, new_id, event_id)?)),
                None => Ok(None),
            }
        });
        self.commit(result)
    }

    fn unfinished_runs(&self) -> Result<Vec<Run>> {
        let mut out = Vec::new();
        for entry in self.active.iter() {
            let (key, _) = entry?;
            let id = Uuid::from_slice(&key).map_err(|e| Error::Store(e.to_string()))?;
            if let Some(run) = self.run(id)?
                && !run.state.is_finished()
            {
                out.push(run);
            }
        }
        Ok(out)
    }

    fn create_run_once(&self, run: &Run, dedupe: &str) -> Result<bool> {
        let result =
            (&self.runs, &self.run_keys, &self.queue, &self.active).transaction(|(runs, keys, queue, active)| {
                if keys.get(dedupe.as_bytes())?.is_some() {
                    return Ok(false);
                }
                keys.insert(dedupe.as_bytes(), run.id.as_bytes().to_vec())?;
                put_run(runs, queue, active, run)?;
                Ok(true)
            });
        self.commit(result)
    }

    fn claim_next(&self, eligible: &mut dyn FnMut(&Run) -> bool) -> Result<Option<Run>> {
        let _guard = self.claim.lock().expect("claim lock");
        for entry in self.queue.iter() {
            let (key, _) = entry?;
            let id = Uuid::from_slice(&key).map_err(|e| Error::Store(e.to_string()))?;
            let Some(mut run) = self.run(id)? else {
                self.queue.remove(&key)?;
                continue;
            };
            if run.state != crate::model::RunState::Queued {
                self.queue.remove(&key)?;
                continue;
            }
            if !eligible(&run) {
                continue;
            }
            run.state = crate::model::RunState::Running;
            // Not flushed on its own: a claim lost in a crash leaves the run queued, and a
            // run left running is queued again on start. The run's first step flushes it.
            let result = (&self.runs, &self.queue, &self.active)
                .transaction(|(runs, queue, active)| put_run(runs, queue, active, &run));
            settled(result)?;
            return Ok(Some(run));
        }
        Ok(None)
    }

    fn queued_count(&self) -> Result<usize> {
        Ok(self.queue.len())
    }

    fn get_meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self.meta.get(key.as_bytes())?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        self.meta.insert(key.as_bytes(), value.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    fn put_workflow_source(&self, hash: &str, source: &str) -> Result<()> {
        if !self.workflows.contains_key(hash)? {
            self.workflows.insert(hash, source.as_bytes())?;
            self.db.flush()?;
        }
        Ok(())
    }

    fn workflow_source(&self, hash: &str) -> Result<Option<String>> {
        Ok(self.workflows.get(hash)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    fn events(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<ChangeEvent>> {
        let iter = match after {
            Some(id) => {
                self.events.range((std::ops::Bound::Excluded(id.as_bytes().to_vec()), std::ops::Bound::Unbounded))
            }
            None => self.events.iter(),
        };
        iter.take(limit).map(|e| decode(&e?.1)).collect()
    }

    fn put_sync_session(&self, session: &SyncSession) -> Result<()> {
        self.sync_sessions.insert(session.id.as_bytes(), encode(session)?)?;
        self.db.flush()?;
        Ok(())
    }

    fn sync_session(&self, id: Uuid) -> Result<Option<SyncSession>> {
        self.sync_sessions.get(id.as_bytes())?.map(|b| decode(&b)).transpose()
    }

    fn sync_sessions(&self, integration: Option<&str>, limit: usize) -> Result<Vec<SyncSession>> {
        let mut out = Vec::new();
        for entry in self.sync_sessions.iter().rev() {
            let session: SyncSession = decode(&entry?.1)?;
            if integration.is_none_or(|i| i == session.integration) {
                out.push(session);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn put_credential(&self, credential: &StoredCredential) -> Result<()> {
        self.credentials.insert(credential.name.as_bytes(), encode(credential)?)?;
        self.db.flush()?;
        Ok(())
    }

    fn credential(&self, name: &str) -> Result<Option<StoredCredential>> {
        self.credentials.get(name.as_bytes())?.map(|b| decode(&b)).transpose()
    }

    fn credentials(&self) -> Result<Vec<StoredCredential>> {
        self.credentials.iter().map(|e| decode(&e?.1)).collect()
    }

    fn delete_credential(&self, name: &str) -> Result<bool> {
        let existed = self.credentials.remove(name.as_bytes())?.is_some();
        self.db.flush()?;
        Ok(existed)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}
