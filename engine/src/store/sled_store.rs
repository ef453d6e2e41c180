//! The embedded store on sled 0.34.7.
//!
//! One tree per concern. A step's journal entry, its run head and its record change are one
//! sled transaction across trees. Writes are made durable by group commit: a flusher thread
//! flushes everything written since its last flush, and each writer awaits the first flush
//! that started after its write, so concurrent writers share one fsync and no async worker
//! ever blocks on the disk.
//!
//! sled allows one process per folder (it holds a lock file), so every lease found at
//! open belonged to a process that is gone: they are all expired then, and the runs they
//! held are reclaimed at once instead of after their lease time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use async_trait::async_trait;
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use uuid::Uuid;

use super::packed;
use super::transfer::check_cursor;
use super::{
    ClaimRequest, CredentialStore, EventStore, ItemKind, KeyMove, Mark, NodeBeat, QueueStore, RecordStore, RecordWrite,
    RecordWritten, RunFilter, RunStore, SYNC_LEASE_PREFIX, SchedulerStore, StoreCounts, StoreError, StoreResult,
    StoredItem, SyncStore, TransferStore, WorkflowStore, key_text, merge_write,
};
use super::{KeyQuery, KeyRead, KeyReads, records_by_scan};
use crate::clock::rfc3339_millis;
use crate::error::Error;
use crate::model::{ChangeEvent, JournalEntry, Record, Run, RunState, StoredCredential, SyncSession};

// The store's own entries in the `meta` tree, beside the scheduler marks.
const INDEX_FIELDS_KEY: &[u8] = b"index_fields";
const ACTIVE_BACKFILLED: &[u8] = b"active_backfilled";
const FINISHED_BACKFILLED: &[u8] = b"finished_backfilled";
/// The `until` of a lease whose process is gone.
const EXPIRED_LEASE: &str = "1970-01-01T00:00:00.000Z";
const OWN_META_KEYS: [&[u8]; 3] = [INDEX_FIELDS_KEY, ACTIVE_BACKFILLED, FINISHED_BACKFILLED];

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
    /// Leased run id → [`LeaseRow`]: what claims count and reclaim without reading runs.
    leases: sled::Tree,
    /// Node name → its last heartbeat (ms, i64 BE).
    nodes: sled::Tree,
    /// `wake time (ms, i64 BE, offset) ++ run id` → empty, for waiting runs.
    timers: sled::Tree,
    /// `finish time (ms, as timers) ++ run id` → empty, for finished runs: what pruning reads.
    finished: sled::Tree,
    /// Scheduler marks, by [`Mark::key`].
    meta: sled::Tree,
    /// Serialises claims so two claimers never take one run.
    claim: Mutex<()>,
    durability: Arc<Durability>,
    flusher: Option<std::thread::JoinHandle<()>>,
    index_fields: RwLock<BTreeSet<String>>,
}

/// What the `leases` tree keeps per leased run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseRow {
    workflow: String,
    owner: String,
    token: Uuid,
    until_ms: i64,
}

impl LeaseRow {
    /// Whether the claimer may still be working on the run at `now_ms`.
    fn is_live(&self, now_ms: i64) -> bool {
        self.until_ms > now_ms
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> crate::Result<Self> {
        Self::open_as(dir, compressed(dir))
    }

    /// Creates (or opens) a store in `dir` whose pages are compressed.
    pub fn open_compressed(dir: &Path) -> crate::Result<Self> {
        Self::open_as(dir, true)
    }

    fn open_as(dir: &Path, compress: bool) -> crate::Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            // sled's default cache is 1 GiB and it overshoots it; runs and records are read
            // from disk when needed, so a small cache keeps memory flat.
            .cache_capacity(cache_bytes())
            .use_compression(compress)
            .compression_factor(3)
            // Writers wait for the group flush; the timer is only a backstop.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| open_error(dir, e))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_error(dir, e));
        let durability = Arc::new(Durability::default());
        let flusher = {
            let (db, durability) = (db.clone(), durability.clone());
            std::thread::Builder::new()
                .name("store-flush".into())
                .spawn(move || durability.flush_loop(&db))
                .map_err(|e| Error::Io(format!("cannot start the store's flush thread: {e}")))?
        };
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
            leases: tree("leases")?,
            nodes: tree("nodes")?,
            timers: tree("timers")?,
            finished: tree("finished")?,
            meta: tree("meta")?,
            claim: Mutex::new(()),
            durability,
            flusher: Some(flusher),
            db,
            index_fields: RwLock::new(BTreeSet::new()),
        };
        store.load_index_fields()?;
        store.backfill_active()?;
        store.backfill_finished()?;
        store.expire_leases_of_earlier_processes()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn load_index_fields(&self) -> StoreResult<()> {
        let mut fields: BTreeSet<String> = match self.meta.get(INDEX_FIELDS_KEY).map_err(sled_error)? {
            Some(bytes) => decode(&bytes)?,
            None => BTreeSet::new(),
        };
        if fields.insert("email".into()) {
            self.meta.insert(INDEX_FIELDS_KEY, encode(&fields)?).map_err(sled_error)?;
        }
        *self.index_fields.write().expect("index field lock") = fields;
        Ok(())
    }

    /// Stores written before the unfinished-run set existed get it built once; runs left
    /// running by a process that had no leases yet get one that has expired.
    fn backfill_active(&self) -> StoreResult<()> {
        if self.meta.contains_key(ACTIVE_BACKFILLED).map_err(sled_error)? {
            return Ok(());
        }
        for entry in self.runs.iter() {
            let (key, bytes) = entry.map_err(sled_error)?;
            let run: Run = decode(&bytes)?;
            if !run.state.is_finished() {
                self.active.insert(key, &[]).map_err(sled_error)?;
            }
        }
        self.meta.insert(ACTIVE_BACKFILLED, &[]).map_err(sled_error)?;
        self.db.flush().map_err(sled_error)?;
        Ok(())
    }

    /// Stores written before the finished-run index existed get it built once.
    fn backfill_finished(&self) -> StoreResult<()> {
        if self.meta.contains_key(FINISHED_BACKFILLED).map_err(sled_error)? {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for entry in self.runs.iter() {
            let (_, bytes) = entry.map_err(sled_error)?;
            let run: Run = decode(&bytes)?;
            if let Some(key) = finished_key(&run) {
                batch.insert(key, &[]);
            }
        }
        self.finished.apply_batch(batch).map_err(sled_error)?;
        self.meta.insert(FINISHED_BACKFILLED, &[]).map_err(sled_error)?;
        self.db.flush().map_err(sled_error)?;
        Ok(())
    }

    /// sled has one owner at a time, so the leases in the folder are all dead: expire them,
    /// and give runs left `running` without a lease (older stores) an expired one too. Sync
    /// leases go: the syncs they named stopped with their process.
    fn expire_leases_of_earlier_processes(&self) -> StoreResult<()> {
        let mut syncs = sled::Batch::default();
        for entry in self.meta.scan_prefix(SYNC_LEASE_PREFIX) {
            syncs.remove(entry.map_err(sled_error)?.0);
        }
        self.meta.apply_batch(syncs).map_err(sled_error)?;
        let (mut batch, mut runs) = (sled::Batch::default(), sled::Batch::default());
        for entry in self.leases.iter() {
            let (key, bytes) = entry.map_err(sled_error)?;
            let mut row: LeaseRow = decode(&bytes)?;
            row.until_ms = i64::MIN;
            batch.insert(key.clone(), encode(&row)?);
            // The run as read says so too, so nobody takes it for one a live process holds.
            if let Some(bytes) = self.runs.get(&key).map_err(sled_error)? {
                let mut run: Run = decode(&bytes)?;
                if let Some(lease) = run.lease.as_mut() {
                    lease.until = EXPIRED_LEASE.into();
                    runs.insert(key, encode(&run)?);
                }
            }
        }
        self.runs.apply_batch(runs).map_err(sled_error)?;
        for entry in self.active.iter() {
            let (key, _) = entry.map_err(sled_error)?;
            if self.leases.contains_key(&key).map_err(sled_error)? {
                continue;
            }
            let Some(bytes) = self.runs.get(&key).map_err(sled_error)? else { continue };
            let run: Run = decode(&bytes)?;
            if run.state == RunState::Running {
                let row =
                    LeaseRow { workflow: run.workflow, owner: String::new(), token: Uuid::nil(), until_ms: i64::MIN };
                batch.insert(key, encode(&row)?);
            }
        }
        self.leases.apply_batch(batch).map_err(sled_error)?;
        Ok(())
    }

    fn fields(&self) -> BTreeSet<String> {
        self.index_fields.read().expect("index field lock").clone()
    }

    /// A transaction's outcome, made durable before it is returned.
    async fn commit<T>(&self, result: std::result::Result<T, TransactionError<StoreError>>) -> StoreResult<T> {
        let value = settled(result)?;
        self.durable().await?;
        Ok(value)
    }

    /// Waits until everything written so far is on disk.
    async fn durable(&self) -> StoreResult<()> {
        self.durability.wait(self.durability.request()).await
    }

    /// The bytes a run's head and journal take as stored values (before sled's own
    /// overhead), for benchmarks and diagnostics.
    pub fn stored_bytes_of_run(&self, run: Uuid) -> crate::Result<u64> {
        let head = self.runs.get(run.as_bytes()).map_err(sled_error)?.map_or(0, |v| v.len());
        let mut total = head as u64;
        for item in self.journal.scan_prefix(run.as_bytes()) {
            total += item.map_err(sled_error)?.1.len() as u64;
        }
        Ok(total)
    }

    /// The run's journal so far and its last `entries`, packed into one value.
    fn pack_journal(&self, run: Uuid, entries: &[JournalEntry]) -> StoreResult<JournalPacking> {
        let (mut loose, mut before, mut texts) = (Vec::new(), None, Vec::new());
        // An entry written again (a call journaled as started, now finished) replaces the
        // stored one.
        let replaced = |seq: u32| entries.iter().any(|e| e.seq == seq);
        for item in self.journal.scan_prefix(run.as_bytes()) {
            let (key, value) = item.map_err(sled_error)?;
            if packed::is_journal(&value) {
                for earlier in journal_values(&value)?.into_iter().filter(|e| !replaced(e.seq)) {
                    texts.push(encode(&earlier)?);
                }
                before = Some(value);
            } else {
                // A loose entry is its JSON text as it is.
                if !journal_seq(&key).is_some_and(replaced) {
                    texts.push(value.to_vec());
                }
                loose.push((key, value));
            }
        }
        for entry in entries {
            texts.push(encode(entry)?);
        }
        let packed = packed::pack_journal(&texts.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
        Ok(JournalPacking { loose, before, packed })
    }

    fn get_run(&self, id: Uuid) -> StoreResult<Option<Run>> {
        self.runs.get(id.as_bytes()).map_err(sled_error)?.map(|b| decode(&b)).transpose()
    }

    /// Moves waiting runs whose timer is due onto the queue.
    fn release_due_timers(&self, now_ms: i64) -> StoreResult<()> {
        let end = timer_key(now_ms.saturating_add(1), Uuid::nil());
        for entry in self.timers.range(..end) {
            let (key, _) = entry.map_err(sled_error)?;
            let id = Uuid::from_slice(&key[8..]).map_err(|e| StoreError::corrupt(format!("a timer key: {e}")))?;
            let result = (&self.runs, &self.queue, &self.active, &self.leases, &self.timers, &self.finished)
                .transaction(|(runs, queue, active, leases, timers, finished)| {
                    timers.remove(&*key)?;
                    let Some(bytes) = runs.get(id.as_bytes())? else { return Ok(()) };
                    let mut run: Run = tx_decode(&bytes)?;
                    if run.state != RunState::Waiting {
                        return Ok(());
                    }
                    run.state = RunState::Queued;
                    run.wake_at = None;
                    put_run(&Trees { runs, queue, active, leases, timers, finished }, &run)
                });
            settled(result)?;
        }
        Ok(())
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.durability.close();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        let _ = self.db.flush();
    }
}

/// A transaction's outcome as a store error, not yet durable.
fn settled<T>(result: std::result::Result<T, TransactionError<StoreError>>) -> StoreResult<T> {
    result.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => sled_error(e),
    })
}

/// Group commit: writers ask for durability and await it; one thread flushes for all.
#[derive(Default)]
struct Durability {
    state: Mutex<FlushState>,
    asked: Condvar,
    done: tokio::sync::Notify,
}

#[derive(Default)]
struct FlushState {
    /// Writes that asked for durability so far.
    requested: u64,
    /// Every write up to this number is durable (or its flush failed).
    durable: u64,
    /// The last flush's failure, for the writers it covered.
    failed: Option<String>,
    closing: bool,
}

impl Durability {
    /// A ticket for everything written so far.
    fn request(&self) -> u64 {
        let mut st = self.state.lock().expect("flush lock");
        st.requested += 1;
        self.asked.notify_one();
        st.requested
    }

    async fn wait(&self, ticket: u64) -> StoreResult<()> {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            {
                let st = self.state.lock().expect("flush lock");
                if st.durable >= ticket {
                    return match &st.failed {
                        Some(e) => Err(StoreError::from_io(
                            "could not make the write durable",
                            std::io::Error::other(e.clone()),
                        )),
                        None => Ok(()),
                    };
                }
                if st.closing {
                    return Err(StoreError::unavailable("the store was closed before the write was durable"));
                }
            }
            done.await;
        }
    }

    fn flush_loop(&self, db: &sled::Db) {
        let mut st = self.state.lock().expect("flush lock");
        loop {
            while st.requested == st.durable && !st.closing {
                st = self.asked.wait(st).expect("flush lock");
            }
            if st.requested == st.durable && st.closing {
                return;
            }
            let upto = st.requested;
            drop(st);
            let outcome = db.flush();
            st = self.state.lock().expect("flush lock");
            st.durable = upto;
            st.failed = outcome.err().map(|e| e.to_string());
            self.done.notify_waiters();
        }
    }

    fn close(&self) {
        self.state.lock().expect("flush lock").closing = true;
        self.asked.notify_all();
        self.done.notify_waiters();
    }
}

/// Whether the store keeps its pages zstd-compressed. It is chosen when the store is
/// created (`ROSTER_STORE_COMPRESSION=zstd`) and kept from then on, since sled cannot change
/// it. Compressed, a synced person takes about a quarter of the disk, but every write costs
/// more CPU (measured in `docs/benchmarks.md`), so it is off unless asked for.
fn compressed(dir: &Path) -> bool {
    // sled's `conf` is text with a binary checksum after it.
    match std::fs::read(dir.join("conf")) {
        Ok(conf) => conf.windows(21).any(|w| w == b"use_compression: true"),
        Err(_) => std::env::var("ROSTER_STORE_COMPRESSION").is_ok_and(|v| v.eq_ignore_ascii_case("zstd")),
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
        let reason = match e {
            sled::Error::Io(io) => io.to_string(),
            other => other.to_string(),
        };
        Error::StoreCorrupt { dir: dir.to_path_buf(), reason }
    }
}

/// sled's errors as the contract's kinds.
fn sled_error(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => StoreError::from_io("the store could not read or write its files", io),
        sled::Error::Corruption { .. } => StoreError::corrupt("the store's files are damaged").with_source(e),
        sled::Error::CollectionNotFound(_) => StoreError::not_found("a store tree is missing").with_source(e),
        other => StoreError::unavailable("the store failed").with_source(other),
    }
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::corrupt("a value cannot be encoded").with_source(e))
}

/// A stored value, plain JSON or packed (a finished run's head).
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(&packed::unpack(bytes)?)
        .map_err(|e| StoreError::corrupt("a stored value cannot be read").with_source(e))
}

/// A run head as stored: packed once the run is finished, since it is then written once
/// and rarely read.
fn encode_head(run: &Run) -> StoreResult<Vec<u8>> {
    let json = encode(run)?;
    if run.state.is_finished() { packed::pack(&json) } else { Ok(json) }
}

/// A finished run's journal is kept as one packed value under the run's id alone, which
/// sorts before the run's loose entries (`journal_key`): a run retried after it finished
/// adds loose entries after it, and finishing again packs them all.
fn packed_journal_key(run: Uuid) -> Vec<u8> {
    run.as_bytes().to_vec()
}

/// What a step write does to a run's journal: adds loose entries (keys and values), or,
/// when it finishes the run, packs the whole journal.
enum JournalWrite {
    Loose(Vec<(Vec<u8>, Vec<u8>)>),
    Packed(JournalPacking),
}

/// A finished run's journal packed, and what it replaces.
struct JournalPacking {
    /// The keys of the loose entries read, with their values.
    loose: Vec<(sled::IVec, sled::IVec)>,
    /// The packed journal read (a run finished before and retried), if any.
    before: Option<sled::IVec>,
    packed: Vec<u8>,
}

impl JournalPacking {
    /// Replaces what was read with the packed value, or refuses if it changed since.
    fn apply(&self, journal: &TransactionalTree, run: Uuid) -> Abortable<()> {
        let key = packed_journal_key(run);
        let moved = journal.get(&key)? != self.before;
        for (k, v) in &self.loose {
            if moved || journal.get(k)?.as_ref() != Some(v) {
                return abort(StoreError::conflict(format!(
                    "run {run}'s journal changed while its last step was written; write the step again"
                )));
            }
            journal.remove(k)?;
        }
        journal.insert(key, self.packed.as_slice())?;
        Ok(())
    }
}

/// The entries one stored journal value holds: a loose entry, or a packed journal.
fn journal_values(value: &[u8]) -> StoreResult<Vec<JournalEntry>> {
    if packed::is_journal(value) {
        serde_json::from_slice(&packed::unpack_journal(value)?)
            .map_err(|e| StoreError::corrupt("a packed journal cannot be read").with_source(e))
    } else {
        Ok(vec![decode(value)?])
    }
}

fn id_of(key: &[u8]) -> StoreResult<Uuid> {
    Uuid::from_slice(key).map_err(|e| StoreError::corrupt("a stored id cannot be read").with_source(e))
}

fn index_key(field: &str, value: &str, id: Uuid) -> Vec<u8> {
    let mut k = index_prefix(field, value);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The `[start, end)` spans of the index that hold every entry `read` wants on `field`
/// (and perhaps a few more, checked against the records). Entries sort by value, since
/// the `\0` after it sorts below any byte a value without `\0` continues with; a bound that
/// itself holds `\0` reads the whole field.
fn index_ranges(field: &str, read: &KeyRead) -> Vec<(Vec<u8>, Vec<u8>)> {
    // `field \0 text` and then `last`: `\0` starts a value's entries, `\1` ends them.
    let at = |text: &str, last: u8| {
        let mut k = index_prefix(field, text);
        *k.last_mut().expect("a separator") = last;
        k
    };
    let field_only = |last: u8| {
        let mut k = field.as_bytes().to_vec();
        k.push(last);
        k
    };
    let spans = match read {
        KeyRead::Exact(keys) => keys.iter().map(|k| (at(k, 0), at(k, 1))).collect(),
        KeyRead::Range(lower, upper) => {
            let nul = |b: &Bound<String>| matches!(b, Bound::Included(t) | Bound::Excluded(t) if t.contains('\0'));
            if nul(lower) || nul(upper) {
                vec![(field_only(0), field_only(1))]
            } else {
                let start = match lower {
                    Bound::Included(t) | Bound::Excluded(t) => at(t, 0),
                    Bound::Unbounded => field_only(0),
                };
                let end = match upper {
                    Bound::Included(t) => at(t, 1),
                    Bound::Excluded(t) => at(t, 0),
                    Bound::Unbounded => field_only(1),
                };
                vec![(start, end)]
            }
        }
    };
    spans.into_iter().filter(|(start, end)| start < end).collect()
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

/// The seq a loose entry's key ends in (`None` for a packed journal's key).
fn journal_seq(key: &[u8]) -> Option<u32> {
    key.get(16..20).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes)
}

/// Milliseconds, offset so byte order is time order.
fn timer_key(ms: i64, run: Uuid) -> Vec<u8> {
    let mut k = ((ms as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    k.extend_from_slice(run.as_bytes());
    k
}

/// Where a finished run sits in the `finished` index (`None` while it is not finished).
fn finished_key(run: &Run) -> Option<Vec<u8>> {
    let at = run.finished_at.as_deref().and_then(parse_ms)?;
    run.state.is_finished().then(|| timer_key(at, run.id))
}

fn parse_ms(text: &str) -> Option<i64> {
    text.parse::<Timestamp>().ok().map(|t| t.as_millisecond())
}

type Abortable<T> = std::result::Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(e: StoreError) -> Abortable<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn tx_decode<T: DeserializeOwned>(bytes: &[u8]) -> Abortable<T> {
    decode(bytes).or_else(abort)
}

fn tx_encode<T: Serialize>(value: &T) -> Abortable<Vec<u8>> {
    encode(value).or_else(abort)
}

/// The trees a run head touches, inside one transaction.
struct Trees<'a> {
    runs: &'a TransactionalTree,
    queue: &'a TransactionalTree,
    active: &'a TransactionalTree,
    leases: &'a TransactionalTree,
    timers: &'a TransactionalTree,
    finished: &'a TransactionalTree,
}

/// Writes a run head and keeps the queue, the unfinished set, the leases and the timers in
/// step with its state.
fn put_run(t: &Trees, run: &Run) -> Abortable<()> {
    let key = run.id.as_bytes();
    let previous: Option<Run> = match t.runs.get(key)? {
        Some(bytes) => Some(tx_decode(&bytes)?),
        None => None,
    };
    if let Some(wake) = previous.as_ref().and_then(|p| p.wake_at.as_deref()).and_then(parse_ms) {
        t.timers.remove(timer_key(wake, run.id))?;
    }
    if let Some(key) = previous.as_ref().and_then(finished_key) {
        t.finished.remove(key)?;
    }
    if let Some(key) = finished_key(run) {
        t.finished.insert(key, &[])?;
    }
    t.runs.insert(key, encode_head(run).or_else(abort)?)?;
    if run.state == RunState::Queued {
        t.queue.insert(key, &[])?;
    } else {
        t.queue.remove(key)?;
    }
    if run.state.is_finished() {
        t.active.remove(key)?;
    } else {
        t.active.insert(key, &[])?;
    }
    match lease_row(run) {
        Some(row) => t.leases.insert(key, tx_encode(&row)?)?,
        None => t.leases.remove(key)?,
    };
    if run.state == RunState::Waiting
        && let Some(wake) = run.wake_at.as_deref().and_then(parse_ms)
    {
        t.timers.insert(timer_key(wake, run.id), &[])?;
    }
    Ok(())
}

/// What the `leases` tree keeps for a run: a row while it is running under a claim.
fn lease_row(run: &Run) -> Option<LeaseRow> {
    let lease = run.lease.as_ref().filter(|_| run.state == RunState::Running)?;
    Some(LeaseRow {
        workflow: run.workflow.clone(),
        owner: lease.owner.clone(),
        token: lease.token,
        until_ms: parse_ms(&lease.until).unwrap_or(i64::MIN),
    })
}

/// Refuses a write from a claimer whose lease was taken over.
fn check_lease(leases: &TransactionalTree, run: &Run) -> Abortable<()> {
    let Some(bytes) = leases.get(run.id.as_bytes())? else { return Ok(()) };
    let row: LeaseRow = tx_decode(&bytes)?;
    let mine = run.lease.as_ref().map(|l| l.token);
    if row.token.is_nil() || mine == Some(row.token) {
        return Ok(());
    }
    abort(StoreError::conflict(format!(
        "run {} is now held by {} (this claim's lease expired and the run was claimed again)",
        run.id,
        if row.owner.is_empty() { "another claimer" } else { &row.owner }
    )))
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
            None => return abort(StoreError::not_found(format!("record {id} does not exist"))),
        },
        None => None,
    };
    let (written, moves) = merge_write(existing, write, new_id, event_id, fields);
    for KeyMove { field, record, old, new } in moves {
        if let Some(old) = old {
            index.remove(index_key(&field, &old, record))?;
        }
        if let Some(new) = new {
            index.insert(index_key(&field, &new, record), &[])?;
        }
    }
    if let Some(event) = &written.event {
        records.insert(written.record.id.as_bytes(), tx_encode(&written.record)?)?;
        events.insert(event.id.as_bytes(), tx_encode(event)?)?;
    }
    Ok(written)
}

#[async_trait]
impl RecordStore for SledStore {
    async fn record(&self, id: Uuid) -> StoreResult<Option<Record>> {
        self.records.get(id.as_bytes()).map_err(sled_error)?.map(|b| decode(&b)).transpose()
    }

    async fn records_by_keys(&self, queries: &[KeyQuery]) -> StoreResult<Vec<Record>> {
        let reads = KeyReads::new(queries);
        let indexed = self.fields();
        if !reads.fields().all(|f| indexed.contains(f)) {
            return records_by_scan(self, &reads).await;
        }
        let mut ids = BTreeSet::new();
        for (field, read) in &reads.0 {
            for (start, end) in index_ranges(field, read) {
                for entry in self.index.range(start..end) {
                    let (key, _) = entry.map_err(sled_error)?;
                    // The id is the key's last 16 bytes, whatever the value holds.
                    let id = key.len().checked_sub(16).map(|at| &key[at..]).unwrap_or_default();
                    ids.insert(id_of(id)?);
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = self.record(id).await?
                && reads.accepts(&record)
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn index_field(&self, field: &str) -> StoreResult<()> {
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
        })
        .await?;
        self.index.apply_batch(batch).map_err(sled_error)?;
        self.meta.insert(INDEX_FIELDS_KEY, encode(&fields)?).map_err(sled_error)?;
        self.durable().await?;
        *self.index_fields.write().expect("index field lock") = fields;
        Ok(())
    }

    async fn scan_records(&self, visit: &mut (dyn FnMut(Record) -> bool + Send)) -> StoreResult<()> {
        for entry in self.records.iter() {
            let (_, bytes) = entry.map_err(sled_error)?;
            if !visit(decode(&bytes)?) {
                break;
            }
        }
        Ok(())
    }

    async fn count_records(&self) -> StoreResult<usize> {
        Ok(self.records.len())
    }

    async fn write_records(&self, writes: Vec<RecordWrite>) -> StoreResult<Vec<RecordWritten>> {
        let fields = self.fields();
        let ids: Vec<(Uuid, Uuid)> = writes.iter().map(|_| (Uuid::now_v7(), Uuid::now_v7())).collect();
        let result = (&self.records, &self.index, &self.events).transaction(|(records, index, events)| {
            let mut out = Vec::with_capacity(writes.len());
            for (write, (new_id, event_id)) in writes.iter().zip(&ids) {
                out.push(apply_write(records, index, events, &fields, write, *new_id, *event_id)?);
            }
            Ok(out)
        });
        self.commit(result).await
    }
}

#[async_trait]
impl RunStore for SledStore {
    async fn run(&self, id: Uuid) -> StoreResult<Option<Run>> {
        self.get_run(id)
    }

    async fn runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let mut out = Vec::new();
        // Run ids are UUID v7, so reverse key order is newest first.
        for entry in self.runs.iter().rev() {
            let (_, bytes) = entry.map_err(sled_error)?;
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

    async fn journal(&self, run: Uuid) -> StoreResult<Vec<JournalEntry>> {
        let mut entries = Vec::new();
        for entry in self.journal.scan_prefix(run.as_bytes()) {
            entries.extend(journal_values(&entry.map_err(sled_error)?.1)?);
        }
        Ok(entries)
    }

    async fn save_steps(
        &self,
        run: &Run,
        entries: &[JournalEntry],
        record: Option<RecordWrite>,
    ) -> StoreResult<Option<RecordWritten>> {
        let fields = self.fields();
        let (new_id, event_id) = (Uuid::now_v7(), Uuid::now_v7());
        // The write that finishes a run packs its whole journal into one value. Only the
        // run's claimer writes its journal; the transaction checks nothing moved meanwhile.
        let journal_write = if run.state.is_finished() && !entries.is_empty() {
            JournalWrite::Packed(self.pack_journal(run.id, entries)?)
        } else {
            let loose = entries.iter().map(|e| Ok((journal_key(run.id, e.seq), encode(e)?)));
            JournalWrite::Loose(loose.collect::<StoreResult<_>>()?)
        };
        let trees = (
            &self.runs,
            &self.journal,
            &self.records,
            &self.index,
            &self.events,
            &self.queue,
            &self.active,
            &self.leases,
            &self.timers,
            &self.finished,
        );
        let result =
            trees.transaction(|(runs, journal, records, index, events, queue, active, leases, timers, finished)| {
                check_lease(leases, run)?;
                put_run(&Trees { runs, queue, active, leases, timers, finished }, run)?;
                match &journal_write {
                    JournalWrite::Packed(packing) => packing.apply(journal, run.id)?,
                    JournalWrite::Loose(loose) => {
                        for (key, value) in loose {
                            journal.insert(key.as_slice(), value.as_slice())?;
                        }
                    }
                }
                match &record {
                    Some(w) => Ok(Some(apply_write(records, index, events, &fields, w, new_id, event_id)?)),
                    None => Ok(None),
                }
            });
        self.commit(result).await
    }

    async fn create_once(&self, run: &Run, dedupe: &str) -> StoreResult<bool> {
        let trees = (&self.runs, &self.run_keys, &self.queue, &self.active, &self.leases, &self.timers, &self.finished);
        let result = trees.transaction(|(runs, keys, queue, active, leases, timers, finished)| {
            if keys.get(dedupe.as_bytes())?.is_some() {
                return Ok(false);
            }
            keys.insert(dedupe.as_bytes(), run.id.as_bytes().to_vec())?;
            put_run(&Trees { runs, queue, active, leases, timers, finished }, run)?;
            Ok(true)
        });
        self.commit(result).await
    }

    async fn unfinished_runs(&self) -> StoreResult<Vec<Run>> {
        let mut out = Vec::new();
        for entry in self.active.iter() {
            let (key, _) = entry.map_err(sled_error)?;
            if let Some(run) = self.get_run(id_of(&key)?)?
                && !run.state.is_finished()
            {
                out.push(run);
            }
        }
        Ok(out)
    }

    async fn prune_finished(&self, before: Timestamp, limit: usize) -> StoreResult<usize> {
        let end = timer_key(before.as_millisecond(), Uuid::nil());
        let mut pruned = 0;
        // The finished index is in finish-time order, so this reads only what goes.
        for entry in self.finished.range(..end).keys().take(limit) {
            let key = entry.map_err(sled_error)?;
            let id = id_of(&key[8..])?;
            let mut journal = sled::Batch::default();
            for e in self.journal.scan_prefix(id.as_bytes()).keys() {
                journal.remove(e.map_err(sled_error)?);
            }
            let trees = (&self.runs, &self.journal, &self.active, &self.finished);
            let result = trees.transaction(|(runs, journal_tree, active, finished)| {
                runs.remove(id.as_bytes())?;
                active.remove(id.as_bytes())?;
                finished.remove(&*key)?;
                journal_tree.apply_batch(&journal)?;
                Ok(())
            });
            settled(result)?;
            pruned += 1;
        }
        if pruned > 0 {
            self.durable().await?;
        }
        Ok(pruned)
    }
}

#[async_trait]
impl QueueStore for SledStore {
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Run>> {
        let now_ms = request.now.as_millisecond();
        let claimed = {
            let _guard = self.claim.lock().expect("claim lock");
            self.release_due_timers(now_ms)?;
            // Live leases per workflow, and runs whose claimer stopped renewing.
            let mut live: HashMap<String, usize> = HashMap::new();
            let mut expired = Vec::new();
            for entry in self.leases.iter() {
                let (key, bytes) = entry.map_err(sled_error)?;
                let row: LeaseRow = decode(&bytes)?;
                if row.is_live(now_ms) {
                    *live.entry(row.workflow).or_default() += 1;
                } else {
                    expired.push(id_of(&key)?);
                }
            }
            let queued = self.queue.iter().keys().map(|k| id_of(&k.map_err(sled_error)?));
            let mut found = None;
            // A run's workflow and trigger never change, so the scan's copy can tell them.
            let wanted = |run: &Run| {
                request.trigger.as_ref().is_none_or(|t| *t == run.trigger)
                    && request
                        .limits
                        .per_workflow
                        .get(&run.workflow)
                        .is_none_or(|l| live.get(&run.workflow).copied().unwrap_or(0) < *l)
            };
            for id in expired.into_iter().map(Ok).chain(queued) {
                let id = id?;
                let Some(scanned) = self.get_run(id)? else {
                    self.queue.remove(id.as_bytes()).map_err(sled_error)?;
                    continue;
                };
                if !matches!(scanned.state, RunState::Queued | RunState::Running) || !wanted(&scanned) {
                    continue;
                }
                // Its state is read again inside the transaction: its claimer may have saved
                // a step (or finished it) since the scan, and a claim from a stale copy would
                // put the run back where it was.
                let trees = (&self.runs, &self.queue, &self.active, &self.leases, &self.timers, &self.finished);
                let result = trees.transaction(|(runs, queue, active, leases, timers, finished)| {
                    let Some(bytes) = runs.get(id.as_bytes())? else { return Ok(None) };
                    let mut run: Run = tx_decode(&bytes)?;
                    let claimable = match run.state {
                        RunState::Queued => true,
                        RunState::Running => match leases.get(id.as_bytes())? {
                            Some(row) => !tx_decode::<LeaseRow>(&row)?.is_live(now_ms),
                            None => true,
                        },
                        _ => false,
                    };
                    if !claimable {
                        return Ok(None);
                    }
                    run.claim(&request.owner, request.now + request.lease);
                    put_run(&Trees { runs, queue, active, leases, timers, finished }, &run)?;
                    Ok(Some(run))
                });
                if let Some(run) = settled(result)? {
                    found = Some(run);
                    break;
                }
            }
            found
        };
        // Not waited on: one process owns a sled folder and every lease expires when it
        // opens again, so a claim lost in a crash only leaves the run where it was.
        Ok(claimed)
    }

    async fn renew_leases(&self, owner: &str, until: Timestamp) -> StoreResult<usize> {
        let until_text = rfc3339_millis(until);
        let mut renewed = 0;
        {
            let _guard = self.claim.lock().expect("claim lock");
            for entry in self.leases.iter() {
                let (key, bytes) = entry.map_err(sled_error)?;
                if decode::<LeaseRow>(&bytes)?.owner != owner {
                    continue;
                }
                // Read again inside the transaction: a step saved (or the run finished)
                // since the scan must not be overwritten by the copy the scan saw.
                let result = (&self.runs, &self.leases).transaction(|(runs, leases)| {
                    let Some(row) = leases.get(&*key)? else { return Ok(false) };
                    let mut row: LeaseRow = tx_decode(&row)?;
                    let Some(run) = runs.get(&*key)? else { return Ok(false) };
                    let mut run: Run = tx_decode(&run)?;
                    let Some(lease) = run.lease.as_mut().filter(|l| row.owner == owner && l.token == row.token) else {
                        return Ok(false);
                    };
                    lease.until = until_text.clone();
                    row.until_ms = until.as_millisecond();
                    leases.insert(&*key, tx_encode(&row)?)?;
                    runs.insert(&*key, encode_head(&run).or_else(abort)?)?;
                    Ok(true)
                });
                renewed += usize::from(settled(result)?);
            }
        }
        // Not waited on, like claims: leases in a sled folder die with its process.
        Ok(renewed)
    }

    async fn beat(&self, node: &str, at: Timestamp) -> StoreResult<()> {
        // A beat that arrives late never moves a node's heartbeat back.
        let ms = at.as_millisecond();
        self.nodes
            .fetch_and_update(node.as_bytes(), |old| {
                let old = old.and_then(|b| b.try_into().ok()).map(i64::from_be_bytes);
                Some(old.map_or(ms, |o| o.max(ms)).to_be_bytes().to_vec())
            })
            .map_err(sled_error)?;
        Ok(())
    }

    async fn nodes(&self) -> StoreResult<Vec<NodeBeat>> {
        let mut held: BTreeMap<String, usize> = BTreeMap::new();
        for entry in self.leases.iter() {
            let (_, bytes) = entry.map_err(sled_error)?;
            let row: LeaseRow = decode(&bytes)?;
            *held.entry(row.owner).or_default() += 1;
        }
        let mut out = Vec::new();
        for entry in self.nodes.iter() {
            let (key, bytes) = entry.map_err(sled_error)?;
            let node = String::from_utf8_lossy(&key).into_owned();
            let ms = i64::from_be_bytes(
                bytes.as_ref().try_into().map_err(|_| StoreError::corrupt("a node's heartbeat is not a time"))?,
            );
            let last_heartbeat = Timestamp::from_millisecond(ms)
                .map_err(|e| StoreError::corrupt(format!("a node's heartbeat is not a time: {e}")))?;
            out.push(NodeBeat { runs_held: held.remove(&node).unwrap_or(0), node, last_heartbeat });
        }
        Ok(out)
    }

    async fn queued_count(&self) -> StoreResult<usize> {
        Ok(self.queue.len())
    }

    async fn next_timer(&self) -> StoreResult<Option<Timestamp>> {
        let Some((key, _)) = self.timers.first().map_err(sled_error)? else { return Ok(None) };
        let ms = (u64::from_be_bytes(key[..8].try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
        Ok(Timestamp::from_millisecond(ms).ok())
    }
}

#[async_trait]
impl SchedulerStore for SledStore {
    async fn mark(&self, mark: &Mark) -> StoreResult<Option<String>> {
        Ok(self.meta.get(mark.key()).map_err(sled_error)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    async fn set_mark(&self, mark: &Mark, expected: Option<&str>, value: Option<&str>) -> StoreResult<bool> {
        let swapped = self
            .meta
            .compare_and_swap(mark.key(), expected.map(str::as_bytes), value.map(str::as_bytes))
            .map_err(sled_error)?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.durable().await?;
        Ok(true)
    }
}

#[async_trait]
impl EventStore for SledStore {
    async fn events(&self, after: Option<Uuid>, limit: usize) -> StoreResult<Vec<ChangeEvent>> {
        let iter = match after {
            Some(id) => {
                self.events.range((std::ops::Bound::Excluded(id.as_bytes().to_vec()), std::ops::Bound::Unbounded))
            }
            None => self.events.iter(),
        };
        iter.take(limit).map(|e| decode(&e.map_err(sled_error)?.1)).collect()
    }
}

#[async_trait]
impl SyncStore for SledStore {
    async fn put_session(&self, session: &SyncSession) -> StoreResult<()> {
        self.sync_sessions.insert(session.id.as_bytes(), encode(session)?).map_err(sled_error)?;
        self.durable().await
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<SyncSession>> {
        self.sync_sessions.get(id.as_bytes()).map_err(sled_error)?.map(|b| decode(&b)).transpose()
    }

    async fn sessions(&self, integration: Option<&str>, limit: usize) -> StoreResult<Vec<SyncSession>> {
        let mut out = Vec::new();
        for entry in self.sync_sessions.iter().rev() {
            let session: SyncSession = decode(&entry.map_err(sled_error)?.1)?;
            if integration.is_none_or(|i| i == session.integration) {
                out.push(session);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl CredentialStore for SledStore {
    async fn put_credential(&self, credential: &StoredCredential) -> StoreResult<()> {
        self.credentials.insert(credential.name.as_bytes(), encode(credential)?).map_err(sled_error)?;
        self.durable().await
    }

    async fn credential(&self, name: &str) -> StoreResult<Option<StoredCredential>> {
        self.credentials.get(name.as_bytes()).map_err(sled_error)?.map(|b| decode(&b)).transpose()
    }

    async fn credentials(&self) -> StoreResult<Vec<StoredCredential>> {
        self.credentials.iter().map(|e| decode(&e.map_err(sled_error)?.1)).collect()
    }

    async fn delete_credential(&self, name: &str) -> StoreResult<bool> {
        let existed = self.credentials.remove(name.as_bytes()).map_err(sled_error)?.is_some();
        self.durable().await?;
        Ok(existed)
    }
}

#[async_trait]
impl WorkflowStore for SledStore {
    async fn put_source(&self, hash: &str, source: &str) -> StoreResult<()> {
        if !self.workflows.contains_key(hash).map_err(sled_error)? {
            self.workflows.insert(hash, source.as_bytes()).map_err(sled_error)?;
            self.durable().await?;
        }
        Ok(())
    }

    async fn source(&self, hash: &str) -> StoreResult<Option<String>> {
        Ok(self.workflows.get(hash).map_err(sled_error)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

impl SledStore {
    /// The tree a kind of item is kept in; the indexed fields are one entry of `meta`.
    fn tree_of(&self, kind: ItemKind) -> Option<&sled::Tree> {
        Some(match kind {
            ItemKind::IndexedFields => return None,
            ItemKind::Records => &self.records,
            ItemKind::Events => &self.events,
            ItemKind::Runs => &self.runs,
            ItemKind::JournalEntries => &self.journal,
            ItemKind::DedupeKeys => &self.run_keys,
            ItemKind::Marks => &self.meta,
            ItemKind::Sessions => &self.sync_sessions,
            ItemKind::Credentials => &self.credentials,
            ItemKind::WorkflowSources => &self.workflows,
        })
    }

    /// Journal entries, counting those inside packed journals.
    fn journal_len(&self) -> StoreResult<u64> {
        let mut n = 0;
        for value in self.journal.iter().values() {
            let value = value.map_err(sled_error)?;
            n += if packed::is_journal(&value) { u64::from(packed::journal_len(&value)?) } else { 1 };
        }
        Ok(n)
    }

    fn marks_len(&self) -> StoreResult<usize> {
        let mut n = 0;
        for key in self.meta.iter().keys() {
            n += usize::from(!OWN_META_KEYS.contains(&&*key.map_err(sled_error)?));
        }
        Ok(n)
    }

    /// Records with the index entries of their indexed fields, replacing what was there.
    fn import_records(&self, records: &[&Record]) -> StoreResult<()> {
        let fields = self.fields();
        let entries = |record: &Record| -> Vec<Vec<u8>> {
            fields
                .iter()
                .filter_map(|f| record.fields.get(f).and_then(key_text).map(|v| index_key(f, &v, record.id)))
                .collect()
        };
        let result = (&self.records, &self.index).transaction(|(records_tree, index)| {
            for record in records {
                if let Some(bytes) = records_tree.get(record.id.as_bytes())? {
                    for key in entries(&tx_decode(&bytes)?) {
                        index.remove(key)?;
                    }
                }
                records_tree.insert(record.id.as_bytes(), tx_encode(record)?)?;
                for key in entries(record) {
                    index.insert(key, &[])?;
                }
            }
            Ok(())
        });
        settled(result)
    }

    /// Run heads with the queue, timers and finished index their states imply; a lease is
    /// kept as expired (see [`TransferStore::import`]).
    fn import_runs(&self, runs: &[&Run]) -> StoreResult<()> {
        let trees = (&self.runs, &self.queue, &self.active, &self.leases, &self.timers, &self.finished);
        let result = trees.transaction(|(runs_tree, queue, active, leases, timers, finished)| {
            let t = Trees { runs: runs_tree, queue, active, leases, timers, finished };
            for run in runs {
                put_run(&t, run)?;
                if let Some(mut row) = lease_row(run) {
                    row.until_ms = i64::MIN;
                    leases.insert(run.id.as_bytes(), tx_encode(&row)?)?;
                }
            }
            Ok(())
        });
        settled(result)
    }

    /// Events keep their ids, and this store reads them in id order: one that would not
    /// come after every event already stored is refused rather than put out of order.
    fn check_event_order(&self, events: &[&ChangeEvent]) -> StoreResult<()> {
        let mut last = match self.events.last().map_err(sled_error)? {
            Some((key, _)) => Some(id_of(&key)?),
            None => None,
        };
        for event in events {
            if last.is_some_and(|l| event.id <= l) {
                return Err(StoreError::conflict(format!(
                    "event {} does not come after the events before it; the embedded store keeps events in id \
                     order, so it can only take them in that order",
                    event.id
                )));
            }
            last = Some(event.id);
        }
        Ok(())
    }
}

/// An item's key in its tree: what an export page starts after, and what an import writes.
fn item_key(item: &StoredItem) -> Vec<u8> {
    match item {
        StoredItem::IndexedField(field) => field.as_bytes().to_vec(),
        StoredItem::Record(record) => record.id.as_bytes().to_vec(),
        StoredItem::Event(event) => event.id.as_bytes().to_vec(),
        StoredItem::Run(run) => run.id.as_bytes().to_vec(),
        StoredItem::Journal { run, entry } => journal_key(*run, entry.seq),
        StoredItem::DedupeKey { key, .. } | StoredItem::Mark { key, .. } => key.as_bytes().to_vec(),
        StoredItem::Session(session) => session.id.as_bytes().to_vec(),
        StoredItem::Credential(credential) => credential.name.as_bytes().to_vec(),
        StoredItem::WorkflowSource { hash, .. } => hash.as_bytes().to_vec(),
    }
}

/// A tree's entry as items of `kind`: one, several for a packed journal, none for the
/// store's own entries in `meta`.
fn stored_items(kind: ItemKind, key: &[u8], value: &[u8]) -> StoreResult<Vec<StoredItem>> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Ok(vec![match kind {
        ItemKind::IndexedFields => StoredItem::IndexedField(text(key)),
        ItemKind::Records => StoredItem::Record(decode(value)?),
        ItemKind::Events => StoredItem::Event(decode(value)?),
        ItemKind::Runs => StoredItem::Run(decode(value)?),
        ItemKind::JournalEntries => {
            let run = id_of(key.get(..16).ok_or_else(|| StoreError::corrupt("a journal key is too short"))?)?;
            return Ok(journal_values(value)?.into_iter().map(|entry| StoredItem::Journal { run, entry }).collect());
        }
        ItemKind::DedupeKeys => StoredItem::DedupeKey { key: text(key), run: id_of(value)? },
        ItemKind::Marks if OWN_META_KEYS.contains(&key) => return Ok(Vec::new()),
        ItemKind::Marks => StoredItem::Mark { key: text(key), value: text(value) },
        ItemKind::Sessions => StoredItem::Session(decode(value)?),
        ItemKind::Credentials => StoredItem::Credential(decode(value)?),
        ItemKind::WorkflowSources => StoredItem::WorkflowSource { hash: text(key), source: text(value) },
    }])
}

#[async_trait]
impl TransferStore for SledStore {
    async fn export(&self, kind: ItemKind, after: Option<&StoredItem>, limit: usize) -> StoreResult<Vec<StoredItem>> {
        check_cursor(kind, after)?;
        let start = after.map(item_key);
        let Some(tree) = self.tree_of(kind) else {
            let fields = self.fields().into_iter().filter(|f| start.as_ref().is_none_or(|s| f.as_bytes() > &s[..]));
            return Ok(fields.take(limit).map(StoredItem::IndexedField).collect());
        };
        let mut page = Vec::new();
        // A page that ended inside a packed journal goes on with its later entries: the
        // packed value's key sorts before the entry the page ended at.
        if let Some(StoredItem::Journal { run, entry }) = after
            && let Some(value) = self.journal.get(packed_journal_key(*run)).map_err(sled_error)?
        {
            let rest = journal_values(&value)?.into_iter().filter(|e| e.seq > entry.seq);
            page.extend(rest.map(|entry| StoredItem::Journal { run: *run, entry }).take(limit));
        }
        let entries = match start {
            Some(key) => tree.range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded)),
            None => tree.iter(),
        };
        for entry in entries {
            if page.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(sled_error)?;
            let items = stored_items(kind, &key, &value)?;
            let room = limit - page.len();
            page.extend(items.into_iter().take(room));
        }
        Ok(page)
    }

    async fn import(&self, items: Vec<StoredItem>) -> StoreResult<()> {
        let (mut fields, mut records, mut runs, mut events) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut entries: HashMap<ItemKind, sled::Batch> = HashMap::new();
        for item in &items {
            let value = match item {
                StoredItem::IndexedField(field) => {
                    fields.push(field);
                    continue;
                }
                StoredItem::Record(record) => {
                    records.push(record);
                    continue;
                }
                StoredItem::Run(run) => {
                    runs.push(run);
                    continue;
                }
                StoredItem::Event(event) => {
                    events.push(event);
                    encode(event)?
                }
                StoredItem::Mark { key, .. } if OWN_META_KEYS.contains(&key.as_bytes()) => {
                    return Err(StoreError::conflict(format!(
                        "`{key}` is the embedded store's own entry and cannot be imported as a mark"
                    )));
                }
                StoredItem::Mark { value, .. } => value.as_bytes().to_vec(),
                StoredItem::Journal { entry, .. } => encode(entry)?,
                StoredItem::DedupeKey { run, .. } => run.as_bytes().to_vec(),
                StoredItem::Session(session) => encode(session)?,
                StoredItem::Credential(credential) => encode(credential)?,
                StoredItem::WorkflowSource { source, .. } => source.as_bytes().to_vec(),
            };
            entries.entry(item.kind()).or_default().insert(item_key(item), value);
        }
        self.check_event_order(&events)?;
        self.import_records(&records)?;
        self.import_runs(&runs)?;
        for (kind, batch) in entries {
            if let Some(tree) = self.tree_of(kind) {
                tree.apply_batch(batch).map_err(sled_error)?;
            }
        }
        // After the records: indexing a field covers every record stored by then.
        for field in fields {
            self.index_field(field).await?;
        }
        self.durable().await
    }

    async fn counts(&self) -> StoreResult<StoreCounts> {
        let n = |len: usize| len as u64;
        Ok(StoreCounts {
            records: n(self.records.len()),
            events: n(self.events.len()),
            runs: n(self.runs.len()),
            journal_entries: self.journal_len()?,
            dedupe_keys: n(self.run_keys.len()),
            marks: n(self.marks_len()?),
            sessions: n(self.sync_sessions.len()),
            credentials: n(self.credentials.len()),
            workflow_sources: n(self.workflows.len()),
        })
    }
}
