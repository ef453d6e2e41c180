//! The store on PostgreSQL: one database schema that several nodes share.
//!
//! Every unit of work is one transaction, durable when its call returns (PostgreSQL's own
//! commit). What the embedded store serialises with a mutex or a sled transaction is
//! serialised here by row locks and advisory locks:
//!
//! - a claim takes its run with `FOR UPDATE SKIP LOCKED` (a run another claimer is taking
//!   is passed over, not waited for), and a claim of a workflow with a concurrency limit
//!   counts that workflow's live leases under the workflow's own advisory lock, so two
//!   nodes never both take its last slot;
//! - a step locks its run's row and refuses (`Conflict`) to write over another claim's lease;
//! - record writes lock their records' rows in id order, so two batches never wait on each
//!   other in a circle;
//! - change events carry their transaction's id and are read only once every older
//!   transaction has ended ([`append_events`]), so readers never pass one that commits later.
//!
//! Locks are taken in one order — run rows, the index lock, record rows —
//! so units of work do not deadlock one another; should PostgreSQL still abort one for a
//! deadlock or a serialization failure, it is tried again a few times before the call
//! fails with `Conflict`.
//!
//! Stored things are kept whole as `json`, the text the engine wrote, beside the columns
//! queries select and order by (`engine/migrations/0001_store.sql`). Times in those columns
//! are kept to the millisecond, as the embedded store compares them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::ops::Bound;
use std::str::FromStr;
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Executor, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::transfer::check_cursor;
use super::{
    ClaimRequest, CredentialStore, EventStore, ItemKind, KeyMove, Mark, NodeBeat, QueueStore, RecordStore, RecordWrite,
    RecordWritten, RunFilter, RunStore, SchedulerStore, StoreCounts, StoreError, StoreErrorKind, StoreResult,
    StoredItem, SyncStore, TransferStore, WorkflowStore, key_text, merge_write,
};
use super::{KeyQuery, KeyRead, KeyReads, prefix_end, records_by_scan};
use crate::clock::rfc3339_millis;
use crate::model::{ChangeEvent, JournalEntry, Record, Run, RunState, StoredCredential, SyncSession};

/// Connections one store keeps open at most.
const POOL_SIZE: u32 = 10;
/// How long a call waits for a connection, and so for a database that went away to return.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a unit of work is tried when PostgreSQL aborts it for a deadlock or a
/// serialization failure.
const ATTEMPTS: u32 = 5;
/// Records read per query while scanning them all.
const SCAN_PAGE: i64 = 500;
/// Due timers released per transaction.
const RELEASE_PAGE: i64 = 500;
/// Key values longer than this are kept hashed ([`stored_key`]).
const MAX_KEY_BYTES: usize = 512;

// Advisory lock names, per schema (see TAKE_LOCK).
/// Shared by record writes, exclusive for `index_field`.
const INDEXING: &str = "record-index";

fn claim_lock(workflow: &str) -> String {
    format!("claim:{workflow}")
}

// --- statements -----------------------------------------------------------------------

const TAKE_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended(coalesce(current_schema(), '') || ':' || $1, 0))";
const TAKE_SHARED_LOCK: &str =
    "SELECT pg_advisory_xact_lock_shared(hashtextextended(coalesce(current_schema(), '') || ':' || $1, 0))";
/// A session lock: it outlives the migrations' own transactions.
const TAKE_MIGRATION_LOCK: &str =
    "SELECT pg_advisory_lock(hashtextextended('migrate:' || coalesce($1, current_schema(), ''), 0))";
const BEAT: &str = "INSERT INTO nodes (node, last_heartbeat) VALUES ($1, $2::timestamptz)
    ON CONFLICT (node) DO UPDATE SET last_heartbeat = greatest(nodes.last_heartbeat, excluded.last_heartbeat)";
const NODES: &str = "SELECT n.node, (extract(epoch FROM n.last_heartbeat) * 1000)::bigint,
    (SELECT count(*) FROM runs r WHERE r.lease_owner = n.node AND r.lease_token IS NOT NULL)
    FROM nodes n ORDER BY n.node";
/// The channel a schema's nodes hear about queued runs on (one per schema, so stores in
/// other schemas of the database do not wake each other).
const NOTIFY_WORK: &str = "SELECT pg_notify('roster_work_' || current_schema(), '')";
const CURRENT_SCHEMA: &str = "SELECT current_schema()::text";
const SIZE_BYTES: &str = "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind = 'r'";
const HAS_MIGRATIONS_TABLE: &str = "SELECT to_regclass('_sqlx_migrations') IS NOT NULL";
const NEWEST_APPLIED_MIGRATION: &str = "SELECT max(version) FROM _sqlx_migrations";

const RECORD: &str = "SELECT record::text FROM records WHERE id = $1";
/// No record has the nil id (new records get UUID v7 ids), so a scan starts after it.
const RECORDS_AFTER: &str = "SELECT id, record::text FROM records WHERE id > $1 ORDER BY id LIMIT $2";
const COUNT_RECORDS: &str = "SELECT count(*) FROM records";
const LOCK_RECORDS: &str = "SELECT record::text FROM records WHERE id = ANY($1) ORDER BY id FOR UPDATE";
const PUT_RECORDS: &str = "INSERT INTO records (id, record)
    SELECT id, record::json FROM unnest($1::uuid[], $2::text[]) AS w (id, record)
    ON CONFLICT (id) DO UPDATE SET record = excluded.record";
const INDEXED_FIELDS: &str = "SELECT field FROM indexed_fields";
const IS_INDEXED: &str = "SELECT EXISTS (SELECT 1 FROM indexed_fields WHERE field = $1)";
const ADD_INDEXED_FIELD: &str = "INSERT INTO indexed_fields (field) VALUES ($1) ON CONFLICT DO NOTHING";
/// Followed by one `SELECT` of record ids per query ([`key_reads`]), joined by `UNION`.
const RECORDS_BY_KEYS: &str = "SELECT r.record::text FROM records r WHERE r.id IN (";
const ADD_RECORD_KEYS: &str = "INSERT INTO record_keys (field, value, record_id)
    SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[]) ON CONFLICT DO NOTHING";
const REMOVE_RECORD_KEYS: &str = "DELETE FROM record_keys k
    USING unnest($1::text[], $2::text[], $3::uuid[]) AS gone (field, value, record_id)
    WHERE (k.field, k.value, k.record_id) = (gone.field, gone.value, gone.record_id)";

const APPEND_EVENTS: &str = "INSERT INTO events (id, event)
    SELECT id, event::json FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS e (id, event, n) ORDER BY n";
const EVENT_POSITION: &str = "SELECT xid, seq FROM events WHERE id = $1";
// Readers see only events of transactions older than every one still running (the
// migration says why); `settled` is that horizon.
const FIRST_EVENTS: &str = "SELECT event::text FROM events
    WHERE xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint ORDER BY xid, seq LIMIT $1";
const EVENTS_AFTER_POSITION: &str = "SELECT event::text FROM events
    WHERE (xid, seq) > ($1, $2) AND xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    ORDER BY xid, seq LIMIT $3";
const EVENTS_HELD_BACK: &str = "SELECT EXISTS (SELECT 1 FROM events
    WHERE xid >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint)";
/// How long a reader waits, at most, for events held back by a running transaction.
const SETTLE_TRIES: u32 = 50;
const SETTLE_WAIT: Duration = Duration::from_millis(10);
/// For a cursor that names no stored event: the ids' order, as the embedded store reads.
const EVENTS_AFTER_ID: &str = "SELECT event::text FROM events
    WHERE id > $1 AND xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint ORDER BY xid, seq LIMIT $2";

const RUN: &str = "SELECT run::text FROM runs WHERE id = $1";
const LIST_RUNS: &str = "SELECT run::text FROM runs WHERE true";
const PUT_RUN: &str = "INSERT INTO runs (id, workflow, record_id, state, trigger, created_at, finished, finished_at,
        lease_owner, lease_token, lease_until, wake_at, run)
    VALUES ($1, $2, $3, $4, $5, $6::timestamptz, $7, $8::timestamptz, $9, $10, $11::timestamptz, $12::timestamptz,
        $13::json)
    ON CONFLICT (id) DO UPDATE SET workflow = excluded.workflow, record_id = excluded.record_id,
        state = excluded.state, trigger = excluded.trigger, created_at = excluded.created_at,
        finished = excluded.finished, finished_at = excluded.finished_at, lease_owner = excluded.lease_owner,
        lease_token = excluded.lease_token, lease_until = excluded.lease_until, wake_at = excluded.wake_at,
        run = excluded.run";
const LOCK_RUN_LEASE: &str = "SELECT lease_owner, lease_token FROM runs WHERE id = $1 FOR UPDATE";
/// A step of a stored run in one statement (one round trip, its own transaction unless
/// inside one): the new head unless another claim holds the run (the row lock the UPDATE
/// takes makes that check and the write one), the journal entry ($14, $15; none when
/// null), and the wake-up of idle nodes when the run is queued. `saved` is 0 when the run
/// is not stored yet or another claim holds it; `put_run` and `check_lease` tell which.
const SAVE_HEAD: &str = "WITH head AS (
        UPDATE runs SET workflow = $2, record_id = $3, state = $4, trigger = $5, created_at = $6::timestamptz,
            finished = $7, finished_at = $8::timestamptz, lease_owner = $9, lease_token = $10,
            lease_until = $11::timestamptz, wake_at = $12::timestamptz, run = $13::json
        WHERE id = $1 AND (lease_token IS NULL OR lease_token = '00000000-0000-0000-0000-000000000000'::uuid
            OR lease_token = $16)
        RETURNING id
    ), step AS (
        INSERT INTO journal (run_id, seq, entry)
        SELECT head.id, e.seq, e.entry::json FROM head, unnest($14::bigint[], $15::text[]) AS e(seq, entry)
        ON CONFLICT (run_id, seq) DO UPDATE SET entry = excluded.entry
    ), woken AS MATERIALIZED (
        SELECT pg_notify('roster_work_' || current_schema(), '') FROM head WHERE $4 = 'queued'
    )
    SELECT (SELECT count(*) FROM head) AS saved, (SELECT count(*) FROM woken) AS woken";
const PUT_JOURNAL_ENTRY: &str = "INSERT INTO journal (run_id, seq, entry) VALUES ($1, $2, $3::json)
    ON CONFLICT (run_id, seq) DO UPDATE SET entry = excluded.entry";
const JOURNAL: &str = "SELECT entry::text FROM journal WHERE run_id = $1 ORDER BY seq";
const TAKE_DEDUPE_KEY: &str = "INSERT INTO run_dedupe_keys (key, run_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const UNFINISHED_RUNS: &str = "SELECT run::text FROM runs WHERE NOT finished ORDER BY id";
const PRUNE_RUNS: &str = "DELETE FROM runs WHERE id IN (
        SELECT id FROM runs WHERE finished_at < $1::timestamptz ORDER BY finished_at, id LIMIT $2
        FOR UPDATE SKIP LOCKED)
    RETURNING id";
const PRUNE_JOURNALS: &str = "DELETE FROM journal WHERE run_id = ANY($1)";

const LIVE_LEASES_BY_WORKFLOW: &str = "SELECT workflow, count(*) FROM runs
    WHERE lease_token IS NOT NULL AND lease_until > $1::timestamptz AND workflow = ANY($2)
    GROUP BY workflow";
const LIVE_LEASES_OF_WORKFLOW: &str =
    "SELECT count(*) FROM runs WHERE workflow = $1 AND lease_token IS NOT NULL AND lease_until > $2::timestamptz";
/// Waiting runs whose timer is due, soonest first, for claims to put on the queue.
const DUE_TIMERS: &str = "SELECT run::text FROM runs WHERE wake_at <= $1::timestamptz AND state = 'waiting'
    ORDER BY wake_at, id LIMIT $2 FOR UPDATE SKIP LOCKED";
const ANY_TIMER_DUE: &str = "SELECT EXISTS (SELECT 1 FROM runs WHERE wake_at <= $1::timestamptz AND state = 'waiting')";
/// The next claimable run, locked: a run whose claimer stopped renewing its lease, else the
/// oldest queued run (ids are UUID v7; due timers count once released). Takes $1 (now), $2
/// (the trigger asked for, if any) and $3 (workflows passed over). The second branch runs
/// only when the first finds nothing (a query reads a `WITH` part only as far as it needs),
/// so it locks one row.
const NEXT_CLAIMABLE: &str = "WITH expired AS (SELECT run::text FROM runs
        WHERE lease_token IS NOT NULL AND (lease_until IS NULL OR lease_until <= $1::timestamptz)
            AND ($2::text IS NULL OR trigger = $2) AND workflow <> ALL($3)
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
    ), queued AS (SELECT run::text FROM runs
        WHERE state = 'queued' AND ($2::text IS NULL OR trigger = $2) AND workflow <> ALL($3)
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
    )
    SELECT * FROM expired UNION ALL SELECT * FROM queued LIMIT 1";
const LEASES_OF_OWNER: &str =
    "SELECT run::text FROM runs WHERE lease_owner = $1 AND lease_token IS NOT NULL ORDER BY id FOR UPDATE";
const QUEUED_COUNT: &str = "SELECT count(*) FROM runs WHERE state = 'queued'";
const NEXT_TIMER: &str = "SELECT (extract(epoch FROM min(wake_at)) * 1000)::bigint FROM runs WHERE wake_at IS NOT NULL";

const MARK: &str = "SELECT value FROM marks WHERE key = $1";
const CREATE_MARK: &str = "INSERT INTO marks (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const MARK_IS_UNSET: &str = "SELECT NOT EXISTS (SELECT 1 FROM marks WHERE key = $1)";
const MOVE_MARK: &str = "UPDATE marks SET value = $3 WHERE key = $1 AND value = $2";
const CLEAR_MARK: &str = "DELETE FROM marks WHERE key = $1 AND value = $2";

const PUT_SESSION: &str = "INSERT INTO sync_sessions (id, integration, session) VALUES ($1, $2, $3::json)
    ON CONFLICT (id) DO UPDATE SET integration = excluded.integration, session = excluded.session";
const SESSION: &str = "SELECT session::text FROM sync_sessions WHERE id = $1";
const NEWEST_SESSIONS: &str = "SELECT session::text FROM sync_sessions ORDER BY id DESC LIMIT $1";
const NEWEST_SESSIONS_OF: &str =
    "SELECT session::text FROM sync_sessions WHERE integration = $1 ORDER BY id DESC LIMIT $2";

const PUT_CREDENTIAL: &str = "INSERT INTO credentials (name, credential) VALUES ($1, $2::json)
    ON CONFLICT (name) DO UPDATE SET credential = excluded.credential";
const CREDENTIAL: &str = "SELECT credential::text FROM credentials WHERE name = $1";
/// In byte order, as the embedded store lists them.
const CREDENTIALS: &str = "SELECT credential::text FROM credentials ORDER BY name COLLATE \"C\"";
const DELETE_CREDENTIAL: &str = "DELETE FROM credentials WHERE name = $1";

const PUT_SOURCE: &str = "INSERT INTO workflow_sources (hash, source) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const SOURCE: &str = "SELECT source FROM workflow_sources WHERE hash = $1";

// Moving whole stores (`TransferStore`): raw writes, in bulk.
const IMPORT_INDEXED_FIELDS: &str =
    "INSERT INTO indexed_fields (field) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING field";
/// A lease copied from another store counts as expired: no time, so claims take it at once.
const EXPIRE_IMPORTED_LEASES: &str =
    "UPDATE runs SET lease_until = NULL WHERE id = ANY($1) AND lease_token IS NOT NULL";
const IMPORT_JOURNAL: &str = "INSERT INTO journal (run_id, seq, entry)
    SELECT run_id, seq, entry::json FROM unnest($1::uuid[], $2::bigint[], $3::text[]) AS j (run_id, seq, entry)
    ON CONFLICT (run_id, seq) DO UPDATE SET entry = excluded.entry";
const IMPORT_DEDUPE_KEYS: &str =
    "INSERT INTO run_dedupe_keys (key, run_id) SELECT * FROM unnest($1::text[], $2::uuid[])
    ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id";
const IMPORT_MARKS: &str = "INSERT INTO marks (key, value) SELECT * FROM unnest($1::text[], $2::text[])
    ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const IMPORT_SESSIONS: &str = "INSERT INTO sync_sessions (id, integration, session)
    SELECT id, integration, session::json FROM unnest($1::uuid[], $2::text[], $3::text[]) AS s (id, integration, session)
    ON CONFLICT (id) DO UPDATE SET integration = excluded.integration, session = excluded.session";
const IMPORT_CREDENTIALS: &str = "INSERT INTO credentials (name, credential)
    SELECT name, credential::json FROM unnest($1::text[], $2::text[]) AS c (name, credential)
    ON CONFLICT (name) DO UPDATE SET credential = excluded.credential";
const IMPORT_SOURCES: &str = "INSERT INTO workflow_sources (hash, source) SELECT * FROM unnest($1::text[], $2::text[])
    ON CONFLICT (hash) DO UPDATE SET source = excluded.source";
const COUNT_EVERYTHING: &str = "SELECT (SELECT count(*) FROM records), (SELECT count(*) FROM events),
    (SELECT count(*) FROM runs), (SELECT count(*) FROM journal), (SELECT count(*) FROM run_dedupe_keys),
    (SELECT count(*) FROM marks), (SELECT count(*) FROM sync_sessions), (SELECT count(*) FROM credentials),
    (SELECT count(*) FROM workflow_sources)";

/// What an export of a kind selects, and the columns it is ordered (and paged) by.
fn listing(kind: ItemKind) -> (&'static str, &'static str) {
    match kind {
        ItemKind::IndexedFields => ("SELECT field FROM indexed_fields", "field"),
        ItemKind::Records => ("SELECT record::text FROM records", "id"),
        ItemKind::Events => ("SELECT event::text FROM events", "xid, seq"),
        ItemKind::Runs => ("SELECT run::text FROM runs", "id"),
        ItemKind::JournalEntries => ("SELECT run_id, entry::text FROM journal", "run_id, seq"),
        ItemKind::DedupeKeys => ("SELECT key, run_id FROM run_dedupe_keys", "key"),
        ItemKind::Marks => ("SELECT key, value FROM marks", "key"),
        ItemKind::Sessions => ("SELECT session::text FROM sync_sessions", "id"),
        ItemKind::Credentials => ("SELECT credential::text FROM credentials", "name"),
        ItemKind::WorkflowSources => ("SELECT hash, source FROM workflow_sources", "hash"),
    }
}

/// Where an export page starts: after the row whose ordering columns hold this.
enum Cursor {
    Start,
    Text(String),
    Id(Uuid),
    /// An event's (xid, seq).
    Position(i64, i64),
    Step(Uuid, i64),
}

// --- the store ------------------------------------------------------------------------

/// The store contract on a PostgreSQL database. Open it with [`PostgresStore::connect`],
/// then [`PostgresStore::migrate`] before first use.
pub struct PostgresStore {
    pool: PgPool,
    /// Kept for the migration's own connection; it holds the password, so it is never shown.
    options: PgConnectOptions,
    /// Where the database is, without its password: what messages name.
    location: String,
    /// The schema given to [`PostgresStore::connect_in_schema`].
    schema: Option<String>,
    /// Fields known to be indexed. A field stays indexed once it is, so this only grows;
    /// a field not in it is looked up in the database (another node may have indexed it).
    indexed: RwLock<BTreeSet<String>>,
    /// Woken by a NOTIFY of a queued run, one waiter per notification (the listener starts
    /// on first wait).
    work: std::sync::Arc<tokio::sync::Notify>,
    listener: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.abort();
        }
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore").field("location", &self.location).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`),
    /// its tables in the schema the connection's `search_path` picks (`public` unless the URL
    /// says otherwise). Fails when the database cannot be reached, or was migrated by a
    /// newer roster.
    pub async fn connect(url: &str) -> StoreResult<PostgresStore> {
        Self::open(url, None).await
    }

    /// Like [`PostgresStore::connect`], with the tables in `schema` (lower-case letters,
    /// digits and `_`). [`PostgresStore::migrate`] creates the schema if it is missing.
    pub async fn connect_in_schema(url: &str, schema: &str) -> StoreResult<PostgresStore> {
        Self::open(url, Some(schema)).await
    }

    async fn open(url: &str, schema: Option<&str>) -> StoreResult<PostgresStore> {
        // The parser's errors never quote the URL, so they cannot show its password.
        let mut options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::unavailable(format!(
                "the database URL cannot be read ({e}); it reads postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            ))
        })?;
        if let Some(schema) = schema {
            check_schema_name(schema)?;
            options = options.options([("search_path", schema)]);
        }
        let location = location(&options, schema);
        // One connection first, so an unreachable database says why at once (the pool
        // would only say it timed out).
        let mut first = PgConnection::connect_with(&options)
            .await
            .map_err(|e| database_error(&format!("connecting to the database at {location}"), e))?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        let store = PostgresStore {
            pool,
            options,
            location,
            schema: schema.map(str::to_string),
            indexed: RwLock::new(BTreeSet::new()),
            work: Default::default(),
            listener: std::sync::OnceLock::new(),
        };
        let checked = store.refuse_newer(&mut first).await;
        let _ = first.close().await;
        checked.map(|()| store)
    }

    /// Listens for queued-run notifications on a connection of its own until the store is
    /// dropped; a lost connection is made again (the workers' short poll covers the gap).
    fn listen(&self) -> tokio::task::JoinHandle<()> {
        let (pool, work, location) = (self.pool.clone(), self.work.clone(), self.location.clone());
        tokio::spawn(async move {
            loop {
                let listened = async {
                    let schema: String = sqlx::query_scalar(CURRENT_SCHEMA).fetch_one(&pool).await?;
                    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener.listen(&format!("roster_work_{schema}")).await?;
                    loop {
                        listener.recv().await?;
                        // One idle worker per queued run (each run's commit notifies once):
                        // waking them all would have every worker of every node race to
                        // claim the one run. A worker that claims wakes the next
                        // (`Service::worker`), so a burst still reaches every idle worker.
                        work.notify_one();
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                if let Err(e) = listened.await {
                    tracing::debug!("listening for queued runs at {location}: {e}; listening again in 1 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// What the store's tables take on disk, with their indexes and TOAST.
    pub async fn size_bytes(&self) -> StoreResult<u64> {
        let bytes: i64 =
            sqlx::query_scalar(SIZE_BYTES).fetch_one(&self.pool).await.map_err(failed("measuring the store's size"))?;
        Ok(bytes.max(0) as u64)
    }

    /// Where the database is (user, host, port, database, schema), never with a password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Brings the database's tables up to this roster's version. Nodes starting together
    /// may all call it: one migrates while the others wait, then finds nothing to do. A
    /// database migrated by a newer roster is refused, and left as it is.
    pub async fn migrate(&self) -> StoreResult<()> {
        // A connection of its own: the lock is the session's, and closing the connection
        // releases it even if this call is abandoned half-way.
        let mut conn = PgConnection::connect_with(&self.options)
            .await
            .map_err(|e| database_error(&format!("connecting to the database at {}", self.location), e))?;
        let outcome = self.migrate_locked(&mut conn).await;
        let _ = conn.close().await;
        outcome
    }

    async fn migrate_locked(&self, conn: &mut PgConnection) -> StoreResult<()> {
        let failed = |e| database_error(&format!("migrating the database at {}", self.location), e);
        sqlx::query(TAKE_MIGRATION_LOCK).bind(self.schema.as_deref()).execute(&mut *conn).await.map_err(failed)?;
        if let Some(schema) = &self.schema {
            // The name was checked to be a plain identifier.
            conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str()).await.map_err(failed)?;
        }
        self.refuse_newer(conn).await?;
        let mut migrator = migrator();
        // This call holds the lock, per schema; sqlx's own would be per database.
        migrator.set_locking(false);
        migrator.run(&mut *conn).await.map_err(|e| self.migrate_error(e))
    }

    /// Fails unless the database is at exactly this roster's version: commands other than
    /// `serve` and `store migrate` do not change the schema, and say what would.
    pub async fn require_current(&self) -> StoreResult<()> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| database_error(&format!("connecting to the database at {}", self.location), e))?;
        let failed = |e| database_error(&format!("reading the schema version of the database at {}", self.location), e);
        let tracked: bool = sqlx::query_scalar(HAS_MIGRATIONS_TABLE).fetch_one(&mut *conn).await.map_err(failed)?;
        let newest: Option<i64> = if tracked {
            sqlx::query_scalar(NEWEST_APPLIED_MIGRATION).fetch_one(&mut *conn).await.map_err(failed)?
        } else {
            None
        };
        if newest.unwrap_or(0) < known_version() {
            return Err(StoreError::unavailable(format!(
                "the database at {} is not migrated to this roster's version {} (it is at {}): run `roster store \
                 migrate` (or start `roster serve`, which migrates)",
                self.location,
                known_version(),
                newest.map_or_else(|| "none".to_string(), |v| v.to_string())
            )));
        }
        Ok(())
    }

    /// Refuses a database that a newer roster migrated: this binary would misread it.
    async fn refuse_newer(&self, conn: &mut PgConnection) -> StoreResult<()> {
        let failed = |e| database_error(&format!("reading the schema version of the database at {}", self.location), e);
        let tracked: bool = sqlx::query_scalar(HAS_MIGRATIONS_TABLE).fetch_one(&mut *conn).await.map_err(failed)?;
        if !tracked {
            return Ok(());
        }
        let newest: Option<i64> =
            sqlx::query_scalar(NEWEST_APPLIED_MIGRATION).fetch_one(&mut *conn).await.map_err(failed)?;
        match newest {
            Some(version) if version > known_version() => Err(StoreError::conflict(format!(
                "the database at {} was migrated by a newer roster (version {version}); upgrade this binary",
                self.location
            ))),
            _ => Ok(()),
        }
    }

    fn migrate_error(&self, e: MigrateError) -> StoreError {
        let at = &self.location;
        match e {
            MigrateError::Execute(e) => database_error(&format!("migrating the database at {at}"), e),
            MigrateError::ExecuteMigration(e, version) => {
                database_error(&format!("applying migration {version} to the database at {at}"), e)
            }
            MigrateError::VersionMismatch(version) => StoreError::conflict(format!(
                "migration {version} of the database at {at} is not this roster's migration {version}: a different \
                 build of roster migrated it"
            )),
            MigrateError::VersionMissing(version) => StoreError::conflict(format!(
                "the database at {at} has migration {version}, which this roster does not know: a different build \
                 of roster migrated it"
            )),
            MigrateError::Dirty(version) => {
                StoreError::corrupt(format!("migration {version} of the database at {at} did not finish"))
            }
            other => StoreError::unavailable(format!("migrating the database at {at} failed")).with_source(other),
        }
    }

    /// Runs one unit of work, again when PostgreSQL aborted it for a deadlock or a
    /// serialization failure (nothing of it was written then).
    async fn retrying<T, F, Fut>(&self, doing: &str, mut attempt: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Fault>>,
    {
        let mut tries = 1;
        loop {
            match attempt().await {
                Err(fault) if fault.is_transient() && tries < ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(5 << tries) + jitter()).await;
                    tries += 1;
                }
                outcome => return outcome.map_err(|fault| fault.into_store(doing)),
            }
        }
    }
}

/// The migrations this binary carries (`engine/migrations`).
fn migrator() -> Migrator {
    sqlx::migrate!("./migrations")
}

fn known_version() -> i64 {
    migrator().iter().map(|m| m.version).max().unwrap_or(0)
}

fn check_schema_name(schema: &str) -> StoreResult<()> {
    let plain = schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        return Ok(());
    }
    Err(StoreError::unavailable(format!(
        "`{schema}` cannot be the store's schema: use lower-case letters, digits and `_`, starting with a letter"
    )))
}

fn location(options: &PgConnectOptions, schema: Option<&str>) -> String {
    let user = options.get_username();
    let database = options.get_database().unwrap_or(user);
    let mut at = format!("postgres://{user}@{}:{}/{database}", options.get_host(), options.get_port());
    if let Some(schema) = schema {
        at.push_str(&format!(" (schema {schema})"));
    }
    at
}

fn jitter() -> Duration {
    Duration::from_millis(rand::random_range(0..10))
}

// --- errors ---------------------------------------------------------------------------

/// Why one attempt at a unit of work failed: the database's error (perhaps worth another
/// attempt), or the contract's own refusal.
enum Fault {
    Database(sqlx::Error),
    Refused(StoreError),
}

impl From<sqlx::Error> for Fault {
    fn from(e: sqlx::Error) -> Self {
        Fault::Database(e)
    }
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        Fault::Refused(e)
    }
}

impl Fault {
    fn is_transient(&self) -> bool {
        matches!(self, Fault::Database(e) if sqlstate(e).is_some_and(|code| code == "40001" || code == "40P01"))
    }

    fn into_store(self, doing: &str) -> StoreError {
        match self {
            Fault::Database(e) => database_error(doing, e),
            Fault::Refused(e) => e,
        }
    }
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The database's errors as the contract's kinds.
fn database_error(doing: &str, e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    let (kind, hint) = match &e {
        E::Database(_) => {
            let code = sqlstate(&e).unwrap_or_default();
            match code.as_str() {
                // Serialization failure, deadlock: another transaction got there first.
                "40001" | "40P01" | "23505" => (StoreErrorKind::Conflict, ""),
                "53100" => (StoreErrorKind::Full, " (the database's disk is full)"),
                "42P01" | "3F000" => {
                    (StoreErrorKind::NotFound, " (the database has no roster tables: migrate it first)")
                }
                "3D000" => (StoreErrorKind::NotFound, ""),
                // Connection, authentication, resources, shutdown, read-only, lock wait, I/O.
                c if ["08", "28", "53", "57", "58"].iter().any(|class| c.starts_with(class)) => {
                    (StoreErrorKind::Unavailable, "")
                }
                "25006" | "55P03" => (StoreErrorKind::Unavailable, ""),
                // The statement itself cannot succeed as it is: retrying will not help.
                _ => (StoreErrorKind::Corrupt, ""),
            }
        }
        E::Io(_) | E::Tls(_) | E::Protocol(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
            (StoreErrorKind::Unavailable, "")
        }
        E::RowNotFound => (StoreErrorKind::NotFound, ""),
        E::ColumnDecode { .. } | E::Decode(_) | E::ColumnNotFound(_) | E::ColumnIndexOutOfBounds { .. } => {
            (StoreErrorKind::Corrupt, "")
        }
        _ => (StoreErrorKind::Unavailable, ""),
    };
    StoreError::new(kind, format!("{doing} failed{hint}")).with_source(e)
}

/// A read's error.
fn failed(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| database_error(doing, e)
}

fn encode<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::corrupt("a value cannot be encoded").with_source(e))
}

fn decode<T: DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::corrupt(format!("{what} in the database cannot be read")).with_source(e))
}

fn decode_all<T: DeserializeOwned>(what: &str, texts: Vec<String>) -> StoreResult<Vec<T>> {
    texts.iter().map(|t| decode(what, t)).collect()
}

fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

// --- times ----------------------------------------------------------------------------

/// A time to the millisecond, as the embedded store compares times.
fn at_millis(ts: Timestamp) -> String {
    rfc3339_millis(Timestamp::from_millisecond(ts.as_millisecond()).unwrap_or(ts))
}

/// A stored time's text to the millisecond; `None` when the text is not a time.
fn millis(text: &str) -> Option<String> {
    text.parse::<Timestamp>().ok().map(at_millis)
}

// --- locks ----------------------------------------------------------------------------

async fn take_lock(tx: &mut PgConnection, name: &str) -> Result<(), Fault> {
    sqlx::query(TAKE_LOCK).bind(name).execute(tx).await?;
    Ok(())
}

async fn take_shared_lock(tx: &mut PgConnection, name: &str) -> Result<(), Fault> {
    sqlx::query(TAKE_SHARED_LOCK).bind(name).execute(tx).await?;
    Ok(())
}

// --- runs -----------------------------------------------------------------------------

/// Writes a run with the columns its state implies, as the embedded store keeps its queue,
/// lease, timer and finished indexes: a lease only while running, a timer only while
/// waiting, a finish time only once finished.
async fn put_run(tx: &mut PgConnection, run: &Run) -> Result<(), Fault> {
    bind_run(sqlx::query(PUT_RUN), run)?.execute(&mut *tx).await?;
    if run.state == RunState::Queued {
        // Delivered at commit to every node listening, so an idle one claims at once.
        sqlx::query(NOTIFY_WORK).execute(&mut *tx).await?;
    }
    Ok(())
}

/// Writes a step of a stored run with [`SAVE_HEAD`]; `false` when the run is not stored
/// yet or another claim holds it (nothing is written then).
async fn save_head(conn: &mut PgConnection, run: &Run, entries: &[JournalEntry]) -> Result<bool, Fault> {
    let seqs: Vec<i64> = entries.iter().map(|e| i64::from(e.seq)).collect();
    let texts = entries.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
    let row = bind_run(sqlx::query(SAVE_HEAD), run)?
        .bind(seqs)
        .bind(texts)
        .bind(run.lease.as_ref().map(|l| l.token))
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get::<i64, _>("saved")? == 1)
}

/// A query with a run's columns and its text bound as `$1`–`$13`, in `runs`' order.
fn bind_run<'q>(query: PgQuery<'q>, run: &'q Run) -> Result<PgQuery<'q>, Fault> {
    let lease = run.lease.as_ref().filter(|_| run.state == RunState::Running);
    let finished_at = run.finished_at.as_deref().filter(|_| run.state.is_finished()).and_then(millis);
    let wake_at = run.wake_at.as_deref().filter(|_| run.state == RunState::Waiting).and_then(millis);
    Ok(query
        .bind(run.id)
        .bind(run.workflow.as_str())
        .bind(run.record_id)
        .bind(run.state.as_str())
        .bind(run.trigger.to_string())
        .bind(millis(&run.created_at))
        .bind(run.state.is_finished())
        .bind(finished_at)
        .bind(lease.map(|l| l.owner.as_str()))
        .bind(lease.map(|l| l.token))
        .bind(lease.and_then(|l| millis(&l.until)))
        .bind(wake_at)
        .bind(encode(run)?))
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Locks the stored run and refuses a write from a claimer whose lease was taken over.
async fn check_lease(tx: &mut PgConnection, run: &Run) -> Result<(), Fault> {
    let held: Option<(Option<String>, Option<Uuid>)> =
        sqlx::query_as(LOCK_RUN_LEASE).bind(run.id).fetch_optional(tx).await?;
    let Some((owner, Some(token))) = held else { return Ok(()) };
    if token.is_nil() || run.lease.as_ref().map(|l| l.token) == Some(token) {
        return Ok(());
    }
    let owner = owner.filter(|o| !o.is_empty()).unwrap_or_else(|| "another claimer".into());
    Err(StoreError::conflict(format!(
        "run {} is now held by {owner} (this claim's lease expired and the run was claimed again)",
        run.id
    ))
    .into())
}

/// The first claimable run, locked ([`NEXT_CLAIMABLE`]).
async fn next_claimable(
    tx: &mut PgConnection,
    now: &str,
    trigger: Option<&str>,
    passed_over: &[String],
) -> Result<Option<Run>, Fault> {
    let found: Option<String> =
        sqlx::query_scalar(NEXT_CLAIMABLE).bind(now).bind(trigger).bind(passed_over).fetch_optional(&mut *tx).await?;
    Ok(found.map(|text| decode("a run", &text)).transpose()?)
}

// --- records --------------------------------------------------------------------------

/// How a key value is kept in `record_keys`. PostgreSQL text cannot hold NUL and an index
/// entry must stay small, so such values are kept as their hash; a lookup maps its value
/// the same way and checks every record it finds against the value itself, so two values
/// that map alike never mix.
fn stored_key(value: &str) -> String {
    if value.len() <= MAX_KEY_BYTES && !value.contains('\0') {
        return value.to_string();
    }
    format!("{HASHED_KEY}{}", hex::encode(Sha256::digest(value.as_bytes())))
}

/// How a hashed key begins: a range read takes these too, since a hash keeps no order.
const HASHED_KEY: &str = "\u{1}sha256:";

/// The record ids (one `SELECT` per query, joined by `UNION`) of every key `reads` wants.
/// Ranges compare by the `value` column's collation "C", byte order, which the primary
/// key's index is in. A bound that holds `\0` (which PostgreSQL text cannot) is left
/// open: the records found are checked against the queries anyway.
fn key_reads(query: &mut QueryBuilder<'_, Postgres>, reads: &KeyReads) {
    let open_if_nul = |b: &Bound<String>| match b {
        Bound::Included(t) | Bound::Excluded(t) if t.contains('\0') => Bound::Unbounded,
        other => other.clone(),
    };
    let mut hashed_fields = BTreeSet::new();
    for (n, (field, read)) in reads.0.iter().enumerate() {
        if n > 0 {
            query.push(" UNION ");
        }
        match read {
            KeyRead::Exact(keys) => {
                // One index probe per value, whatever plan a prepared statement keeps: a
                // filter `value = ANY($n)` would compare every key of the field with
                // every value.
                query.push("SELECT k.record_id FROM unnest(");
                query.push_bind(keys.iter().map(|k| stored_key(k)).collect::<Vec<_>>());
                query.push("::text[]) AS wanted (value) JOIN record_keys k ON k.field = ").push_bind(field.clone());
                query.push(" AND k.value = wanted.value COLLATE \"C\"");
            }
            KeyRead::Range(lower, upper) => {
                query.push("SELECT k.record_id FROM record_keys k WHERE k.field = ").push_bind(field.clone());
                match open_if_nul(lower) {
                    Bound::Included(t) => query.push(" AND k.value >= ").push_bind(t),
                    Bound::Excluded(t) => query.push(" AND k.value > ").push_bind(t),
                    Bound::Unbounded => query,
                };
                match open_if_nul(upper) {
                    Bound::Included(t) => query.push(" AND k.value <= ").push_bind(t),
                    Bound::Excluded(t) => query.push(" AND k.value < ").push_bind(t),
                    Bound::Unbounded => query,
                };
                hashed_fields.insert(field.clone());
            }
        }
    }
    for field in hashed_fields {
        query.push(" UNION SELECT k.record_id FROM record_keys k WHERE k.field = ").push_bind(field);
        query.push(" AND k.value >= ").push_bind(HASHED_KEY);
        query.push(" AND k.value < ").push_bind(prefix_end(HASHED_KEY).expect("the prefix can grow"));
    }
}

/// Changes to `record_keys` within one unit of work. The last change to a key wins, so a
/// value written and replaced in one batch leaves only what it became.
#[derive(Default)]
struct KeyChanges(BTreeMap<(String, String, Uuid), bool>);

impl KeyChanges {
    fn add(&mut self, field: &str, value: &str, record: Uuid) {
        self.0.insert((field.to_string(), stored_key(value), record), true);
    }

    fn remove(&mut self, field: &str, value: &str, record: Uuid) {
        self.0.insert((field.to_string(), stored_key(value), record), false);
    }

    async fn apply(self, tx: &mut PgConnection) -> Result<(), Fault> {
        let (mut added, mut removed) = ((vec![], vec![], vec![]), (vec![], vec![], vec![]));
        for ((field, value, record), present) in self.0 {
            let side = if present { &mut added } else { &mut removed };
            side.0.push(field);
            side.1.push(value);
            side.2.push(record);
        }
        for (statement, (fields, values, records)) in [(REMOVE_RECORD_KEYS, removed), (ADD_RECORD_KEYS, added)] {
            if !fields.is_empty() {
                sqlx::query(statement).bind(fields).bind(values).bind(records).execute(&mut *tx).await?;
            }
        }
        Ok(())
    }
}

/// One record write ([`merge_write`]), its key moves noted for `record_keys`; the event's id
/// is given when the event is appended.
fn apply_write(
    existing: Option<Record>,
    write: &RecordWrite,
    indexed: &BTreeSet<String>,
    keys: &mut KeyChanges,
) -> RecordWritten {
    let (written, moves) = merge_write(existing, write, Uuid::now_v7(), Uuid::nil(), indexed);
    for KeyMove { field, record, old, new } in moves {
        if let Some(old) = old {
            keys.remove(&field, &old, record);
        }
        if let Some(new) = new {
            keys.add(&field, &new, record);
        }
    }
    written
}

/// Applies record writes and appends their change events, inside the caller's transaction.
/// A write to a record that does not exist fails the whole unit of work with `NotFound`.
async fn apply_writes(tx: &mut PgConnection, writes: &[RecordWrite]) -> Result<Vec<RecordWritten>, Fault> {
    // Shared with other writers; `index_field` takes it alone, so it sees each write whole.
    take_shared_lock(tx, INDEXING).await?;
    let indexed: BTreeSet<String> = sqlx::query_scalar(INDEXED_FIELDS).fetch_all(&mut *tx).await?.into_iter().collect();
    let mut ids: Vec<Uuid> = writes.iter().filter_map(|w| w.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut records = BTreeMap::new();
    for text in sqlx::query_scalar::<_, String>(LOCK_RECORDS).bind(&ids).fetch_all(&mut *tx).await? {
        let record: Record = decode("a record", &text)?;
        records.insert(record.id, record);
    }
    let mut changed = BTreeSet::new();
    let mut keys = KeyChanges::default();
    let mut out = Vec::with_capacity(writes.len());
    for write in writes {
        let existing = match write.id {
            Some(id) => Some(
                records
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| StoreError::not_found(format!("record {id} does not exist")))?,
            ),
            None => None,
        };
        let written = apply_write(existing, write, &indexed, &mut keys);
        if written.event.is_some() {
            changed.insert(written.record.id);
            records.insert(written.record.id, written.record.clone());
        }
        out.push(written);
    }
    if !changed.is_empty() {
        let texts = changed.iter().map(|id| encode(&records[id])).collect::<StoreResult<Vec<_>>>()?;
        let ids: Vec<Uuid> = changed.into_iter().collect();
        sqlx::query(PUT_RECORDS).bind(ids).bind(texts).execute(&mut *tx).await?;
    }
    keys.apply(tx).await?;
    append_events(tx, out.iter_mut().filter_map(|w| w.event.as_mut()).collect()).await?;
    Ok(out)
}

/// Appends change events, in the order given, under the transaction's own id: readers
/// take them in (xid, seq) order once every older transaction has ended (see the events
/// table in the migration), so no lock is needed to keep a cursor from passing one.
async fn append_events(tx: &mut PgConnection, mut events: Vec<&mut ChangeEvent>) -> Result<(), Fault> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut texts = Vec::with_capacity(events.len());
    for event in &mut events {
        event.id = Uuid::now_v7();
        ids.push(event.id);
        texts.push(encode(&**event)?);
    }
    sqlx::query(APPEND_EVENTS).bind(ids).bind(texts).execute(tx).await?;
    Ok(())
}

/// Fills `record_keys` for a field just indexed, from every record there is.
async fn add_keys_of_every_record(tx: &mut PgConnection, field: &str) -> Result<(), Fault> {
    let mut after = Uuid::nil();
    loop {
        let page: Vec<(Uuid, String)> =
            sqlx::query_as(RECORDS_AFTER).bind(after).bind(SCAN_PAGE).fetch_all(&mut *tx).await?;
        let Some((last, _)) = page.last() else { return Ok(()) };
        after = *last;
        let mut keys = KeyChanges::default();
        for (id, text) in &page {
            let record: Record = decode("a record", text)?;
            if let Some(value) = record.fields.get(field).and_then(key_text) {
                keys.add(field, &value, *id);
            }
        }
        keys.apply(tx).await?;
    }
}

// --- units of work --------------------------------------------------------------------

impl PostgresStore {
    async fn write_records_once(&self, writes: &[RecordWrite]) -> Result<Vec<RecordWritten>, Fault> {
        let mut tx = self.pool.begin().await?;
        let written = apply_writes(&mut tx, writes).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// Whether `field` is indexed, from memory once it is known to be.
    async fn is_indexed(&self, field: &str) -> StoreResult<bool> {
        if self.indexed.read().expect("index lock").contains(field) {
            return Ok(true);
        }
        let indexed: bool = sqlx::query_scalar(IS_INDEXED)
            .bind(field)
            .fetch_one(&self.pool)
            .await
            .map_err(failed("looking up a field's index"))?;
        if indexed {
            self.indexed.write().expect("index lock").insert(field.to_string());
        }
        Ok(indexed)
    }

    async fn index_field_once(&self, field: &str) -> Result<(), Fault> {
        let mut tx = self.pool.begin().await?;
        // Alone: record writes under way finish first, and those after it see the field.
        take_lock(&mut tx, INDEXING).await?;
        let added = sqlx::query(ADD_INDEXED_FIELD).bind(field).execute(&mut *tx).await?.rows_affected() == 1;
        if added {
            add_keys_of_every_record(&mut tx, field).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn save_steps_once(
        &self,
        run: &Run,
        entries: &[JournalEntry],
        record: Option<&RecordWrite>,
    ) -> Result<Option<RecordWritten>, Fault> {
        if record.is_none() {
            // The usual step: one statement, one round trip.
            let mut conn = self.pool.acquire().await?;
            if save_head(&mut conn, run, entries).await? {
                return Ok(None);
            }
        }
        let mut tx = self.pool.begin().await?;
        if !save_head(&mut tx, run, entries).await? {
            // Not stored yet, or held by another claim (which `check_lease` refuses).
            check_lease(&mut tx, run).await?;
            put_run(&mut tx, run).await?;
            for entry in entries {
                sqlx::query(PUT_JOURNAL_ENTRY)
                    .bind(run.id)
                    .bind(i64::from(entry.seq))
                    .bind(encode(entry)?)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let written = match record {
            Some(write) => apply_writes(&mut tx, std::slice::from_ref(write)).await?.into_iter().next(),
            None => None,
        };
        tx.commit().await?;
        Ok(written)
    }

    async fn create_once_once(&self, run: &Run, dedupe: &str) -> Result<bool, Fault> {
        let mut tx = self.pool.begin().await?;
        // A racer with the same key waits here for the first to commit, then finds it taken.
        let taken = sqlx::query(TAKE_DEDUPE_KEY).bind(dedupe).bind(run.id).execute(&mut *tx).await?.rows_affected();
        if taken == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        put_run(&mut tx, run).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn prune_once(&self, before: &str, limit: usize) -> Result<usize, Fault> {
        let mut tx = self.pool.begin().await?;
        let pruned: Vec<Uuid> =
            sqlx::query_scalar(PRUNE_RUNS).bind(before).bind(sql_limit(limit)).fetch_all(&mut *tx).await?;
        if !pruned.is_empty() {
            sqlx::query(PRUNE_JOURNALS).bind(&pruned).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(pruned.len())
    }

    async fn claim_once(&self, request: &ClaimRequest) -> Result<Option<Run>, Fault> {
        let now = at_millis(request.now);
        let trigger = request.trigger.as_ref().map(ToString::to_string);
        let limits = &request.limits.per_workflow;
        self.release_due_timers(&now).await?;
        let mut passed_over = self.workflows_at_limit(&now, limits).await?;
        loop {
            let mut tx = self.pool.begin().await?;
            let Some(mut run) = next_claimable(&mut tx, &now, trigger.as_deref(), &passed_over).await? else {
                tx.rollback().await?;
                return Ok(None);
            };
            if let Some(&limit) = limits.get(&run.workflow) {
                // Claims of this workflow take turns from here to commit, so each counts
                // the leases the one before it took.
                take_lock(&mut tx, &claim_lock(&run.workflow)).await?;
                let live: i64 = sqlx::query_scalar(LIVE_LEASES_OF_WORKFLOW)
                    .bind(&run.workflow)
                    .bind(&now)
                    .fetch_one(&mut *tx)
                    .await?;
                if count(live) >= limit {
                    // One workflow lock per transaction at most, so claims never wait on
                    // each other in a circle: start over without this workflow.
                    tx.rollback().await?;
                    passed_over.push(run.workflow);
                    continue;
                }
            }
            run.claim(&request.owner, request.now + request.lease);
            put_run(&mut tx, &run).await?;
            tx.commit().await?;
            return Ok(Some(run));
        }
    }

    /// Puts waiting runs whose timer is due on the queue, as the embedded store does at
    /// every claim: from then on they are queued runs like any other, taken oldest first.
    async fn release_due_timers(&self, now: &str) -> Result<(), Fault> {
        // Mostly none is due: one read says so without opening a transaction.
        if !sqlx::query_scalar::<_, bool>(ANY_TIMER_DUE).bind(now).fetch_one(&self.pool).await? {
            return Ok(());
        }
        loop {
            let mut tx = self.pool.begin().await?;
            let due: Vec<String> =
                sqlx::query_scalar(DUE_TIMERS).bind(now).bind(RELEASE_PAGE).fetch_all(&mut *tx).await?;
            for text in &due {
                let mut run: Run = decode("a run", text)?;
                run.state = RunState::Queued;
                run.wake_at = None;
                put_run(&mut tx, &run).await?;
            }
            tx.commit().await?;
            if due.len() < count(RELEASE_PAGE) {
                return Ok(());
            }
        }
    }

    /// Limited workflows whose live leases fill their limit now.
    async fn workflows_at_limit(&self, now: &str, limits: &BTreeMap<String, usize>) -> Result<Vec<String>, Fault> {
        if limits.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = limits.keys().map(String::as_str).collect();
        let live: BTreeMap<String, i64> = sqlx::query_as(LIVE_LEASES_BY_WORKFLOW)
            .bind(now)
            .bind(names)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect();
        Ok(limits
            .iter()
            .filter(|(workflow, limit)| count(live.get(*workflow).copied().unwrap_or(0)) >= **limit)
            .map(|(workflow, _)| workflow.clone())
            .collect())
    }

    async fn renew_once(&self, owner: &str, until: &str) -> Result<usize, Fault> {
        let mut tx = self.pool.begin().await?;
        let held: Vec<String> = sqlx::query_scalar(LEASES_OF_OWNER).bind(owner).fetch_all(&mut *tx).await?;
        for text in &held {
            let mut run: Run = decode("a run", text)?;
            if let Some(lease) = run.lease.as_mut() {
                lease.until = until.to_string();
            }
            put_run(&mut tx, &run).await?;
        }
        tx.commit().await?;
        Ok(held.len())
    }

    async fn set_mark_once(&self, key: &str, expected: Option<&str>, value: Option<&str>) -> Result<bool, Fault> {
        let done = match (expected, value) {
            (None, Some(value)) => {
                sqlx::query(CREATE_MARK).bind(key).bind(value).execute(&self.pool).await?.rows_affected() == 1
            }
            (None, None) => sqlx::query_scalar(MARK_IS_UNSET).bind(key).fetch_one(&self.pool).await?,
            (Some(expected), Some(value)) => {
                let moved = sqlx::query(MOVE_MARK).bind(key).bind(expected).bind(value).execute(&self.pool).await?;
                moved.rows_affected() == 1
            }
            (Some(expected), None) => {
                sqlx::query(CLEAR_MARK).bind(key).bind(expected).execute(&self.pool).await?.rows_affected() == 1
            }
        };
        Ok(done)
    }
}

// --- the contract ---------------------------------------------------------------------

#[async_trait]
impl RecordStore for PostgresStore {
    async fn record(&self, id: Uuid) -> StoreResult<Option<Record>> {
        let text: Option<String> =
            sqlx::query_scalar(RECORD).bind(id).fetch_optional(&self.pool).await.map_err(failed("reading a record"))?;
        text.map(|t| decode("a record", &t)).transpose()
    }

    async fn records_by_keys(&self, queries: &[KeyQuery]) -> StoreResult<Vec<Record>> {
        let reads = KeyReads::new(queries);
        if reads.0.is_empty() {
            return Ok(Vec::new());
        }
        for field in reads.fields() {
            if !self.is_indexed(field).await? {
                return records_by_scan(self, &reads).await;
            }
        }
        let mut query = QueryBuilder::<Postgres>::new(RECORDS_BY_KEYS);
        key_reads(&mut query, &reads);
        query.push(") ORDER BY r.id");
        let texts: Vec<String> =
            query.build_query_scalar().fetch_all(&self.pool).await.map_err(failed("looking records up by a field"))?;
        let found: Vec<Record> = decode_all("a record", texts)?;
        Ok(found.into_iter().filter(|r| reads.accepts(r)).collect())
    }

    async fn index_field(&self, field: &str) -> StoreResult<()> {
        // Asked at every sync and catalog load; only a new field needs the lock that
        // holds record writes back.
        if self.is_indexed(field).await? {
            return Ok(());
        }
        self.retrying("indexing a field", || self.index_field_once(field)).await?;
        self.indexed.write().expect("index lock").insert(field.to_string());
        Ok(())
    }

    async fn scan_records(&self, visit: &mut (dyn FnMut(Record) -> bool + Send)) -> StoreResult<()> {
        let mut after = Uuid::nil();
        loop {
            let page: Vec<(Uuid, String)> = sqlx::query_as(RECORDS_AFTER)
                .bind(after)
                .bind(SCAN_PAGE)
                .fetch_all(&self.pool)
                .await
                .map_err(failed("reading records"))?;
            let Some((last, _)) = page.last() else { return Ok(()) };
            after = *last;
            for (_, text) in &page {
                if !visit(decode("a record", text)?) {
                    return Ok(());
                }
            }
        }
    }

    async fn count_records(&self) -> StoreResult<usize> {
        let n: i64 =
            sqlx::query_scalar(COUNT_RECORDS).fetch_one(&self.pool).await.map_err(failed("counting records"))?;
        Ok(count(n))
    }

    async fn write_records(&self, writes: Vec<RecordWrite>) -> StoreResult<Vec<RecordWritten>> {
        self.retrying("writing records", || self.write_records_once(&writes)).await
    }
}

#[async_trait]
impl RunStore for PostgresStore {
    async fn run(&self, id: Uuid) -> StoreResult<Option<Run>> {
        let text: Option<String> =
            sqlx::query_scalar(RUN).bind(id).fetch_optional(&self.pool).await.map_err(failed("reading a run"))?;
        text.map(|t| decode("a run", &t)).transpose()
    }

    async fn runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let mut query = QueryBuilder::<Postgres>::new(LIST_RUNS);
        if let Some(workflow) = &filter.workflow {
            query.push(" AND workflow = ").push_bind(workflow.clone());
        }
        if let Some(record) = filter.record_id {
            query.push(" AND record_id = ").push_bind(record);
        }
        if let Some(state) = filter.state {
            query.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(trigger) = &filter.trigger {
            query.push(" AND trigger = ").push_bind(trigger.to_string());
        }
        // Newest first: run ids are UUID v7.
        query.push(" ORDER BY id DESC");
        if let Some(limit) = filter.limit {
            query.push(" LIMIT ").push_bind(sql_limit(limit));
        }
        let texts: Vec<String> =
            query.build_query_scalar().fetch_all(&self.pool).await.map_err(failed("listing runs"))?;
        decode_all("a run", texts)
    }

    async fn journal(&self, run: Uuid) -> StoreResult<Vec<JournalEntry>> {
        let texts: Vec<String> =
            sqlx::query_scalar(JOURNAL).bind(run).fetch_all(&self.pool).await.map_err(failed("reading a journal"))?;
        decode_all("a journal entry", texts)
    }

    async fn save_steps(
        &self,
        run: &Run,
        entries: &[JournalEntry],
        record: Option<RecordWrite>,
    ) -> StoreResult<Option<RecordWritten>> {
        self.retrying("saving a run's step", || self.save_steps_once(run, entries, record.as_ref())).await
    }

    async fn create_once(&self, run: &Run, dedupe: &str) -> StoreResult<bool> {
        self.retrying("creating a run", || self.create_once_once(run, dedupe)).await
    }

    async fn unfinished_runs(&self) -> StoreResult<Vec<Run>> {
        let texts: Vec<String> = sqlx::query_scalar(UNFINISHED_RUNS)
            .fetch_all(&self.pool)
            .await
            .map_err(failed("listing unfinished runs"))?;
        decode_all("a run", texts)
    }

    async fn prune_finished(&self, before: Timestamp, limit: usize) -> StoreResult<usize> {
        let before = at_millis(before);
        self.retrying("pruning finished runs", || self.prune_once(&before, limit)).await
    }
}

#[async_trait]
impl QueueStore for PostgresStore {
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Option<Run>> {
        self.retrying("claiming a run", || self.claim_once(request)).await
    }

    async fn renew_leases(&self, owner: &str, until: Timestamp) -> StoreResult<usize> {
        let until = rfc3339_millis(until);
        self.retrying("renewing leases", || self.renew_once(owner, &until)).await
    }

    async fn wait_for_work(&self, within: Duration) {
        let notified = self.work.notified();
        self.listener.get_or_init(|| self.listen());
        let _ = tokio::time::timeout(within, notified).await;
    }

    async fn beat(&self, node: &str, at: Timestamp) -> StoreResult<()> {
        sqlx::query(BEAT)
            .bind(node)
            .bind(rfc3339_millis(at))
            .execute(&self.pool)
            .await
            .map_err(failed("recording a heartbeat"))?;
        Ok(())
    }

    async fn nodes(&self) -> StoreResult<Vec<NodeBeat>> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as(NODES).fetch_all(&self.pool).await.map_err(failed("listing nodes"))?;
        rows.into_iter()
            .map(|(node, ms, held)| {
                let last_heartbeat = Timestamp::from_millisecond(ms)
                    .map_err(|e| StoreError::corrupt(format!("node {node}'s heartbeat is not a time: {e}")))?;
                Ok(NodeBeat { node, last_heartbeat, runs_held: count(held) })
            })
            .collect()
    }

    async fn queued_count(&self) -> StoreResult<usize> {
        let n: i64 =
            sqlx::query_scalar(QUEUED_COUNT).fetch_one(&self.pool).await.map_err(failed("counting queued runs"))?;
        Ok(count(n))
    }

    async fn next_timer(&self) -> StoreResult<Option<Timestamp>> {
        let ms: Option<i64> =
            sqlx::query_scalar(NEXT_TIMER).fetch_one(&self.pool).await.map_err(failed("reading the next timer"))?;
        Ok(ms.and_then(|ms| Timestamp::from_millisecond(ms).ok()))
    }
}

#[async_trait]
impl SchedulerStore for PostgresStore {
    async fn mark(&self, mark: &Mark) -> StoreResult<Option<String>> {
        sqlx::query_scalar(MARK).bind(mark.key()).fetch_optional(&self.pool).await.map_err(failed("reading a mark"))
    }

    async fn set_mark(&self, mark: &Mark, expected: Option<&str>, value: Option<&str>) -> StoreResult<bool> {
        let key = mark.key();
        self.retrying("setting a mark", || self.set_mark_once(&key, expected, value)).await
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn events(&self, after: Option<Uuid>, limit: usize) -> StoreResult<Vec<ChangeEvent>> {
        // Events already committed but behind a transaction still running (on any node)
        // are held back until it ends; a short wait usually sees them through, so a reader
        // gets what was written before it asked. After the wait they come on a later read.
        for _ in 0..SETTLE_TRIES {
            let held: bool = sqlx::query_scalar(EVENTS_HELD_BACK)
                .fetch_one(&self.pool)
                .await
                .map_err(failed("reading change events"))?;
            if !held {
                break;
            }
            tokio::time::sleep(SETTLE_WAIT).await;
        }
        let limit = sql_limit(limit);
        let read = failed("reading change events");
        let texts: Vec<String> = match after {
            None => sqlx::query_scalar(FIRST_EVENTS).bind(limit).fetch_all(&self.pool).await,
            Some(id) => {
                let position: Option<(i64, i64)> = sqlx::query_as(EVENT_POSITION)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(failed("reading change events"))?;
                match position {
                    Some((xid, seq)) => {
                        sqlx::query_scalar(EVENTS_AFTER_POSITION).bind(xid).bind(seq).bind(limit).fetch_all(&self.pool)
                    }
                    None => sqlx::query_scalar(EVENTS_AFTER_ID).bind(id).bind(limit).fetch_all(&self.pool),
                }
                .await
            }
        }
        .map_err(read)?;
        decode_all("a change event", texts)
    }
}

#[async_trait]
impl SyncStore for PostgresStore {
    async fn put_session(&self, session: &SyncSession) -> StoreResult<()> {
        sqlx::query(PUT_SESSION)
            .bind(session.id)
            .bind(&session.integration)
            .bind(encode(session)?)
            .execute(&self.pool)
            .await
            .map_err(failed("saving a sync session"))?;
        Ok(())
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<SyncSession>> {
        let text: Option<String> = sqlx::query_scalar(SESSION)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed("reading a sync session"))?;
        text.map(|t| decode("a sync session", &t)).transpose()
    }

    async fn sessions(&self, integration: Option<&str>, limit: usize) -> StoreResult<Vec<SyncSession>> {
        let limit = sql_limit(limit);
        let texts: Vec<String> = match integration {
            Some(name) => sqlx::query_scalar(NEWEST_SESSIONS_OF).bind(name).bind(limit).fetch_all(&self.pool).await,
            None => sqlx::query_scalar(NEWEST_SESSIONS).bind(limit).fetch_all(&self.pool).await,
        }
        .map_err(failed("listing sync sessions"))?;
        decode_all("a sync session", texts)
    }
}

#[async_trait]
impl CredentialStore for PostgresStore {
    async fn put_credential(&self, credential: &StoredCredential) -> StoreResult<()> {
        sqlx::query(PUT_CREDENTIAL)
            .bind(&credential.name)
            .bind(encode(credential)?)
            .execute(&self.pool)
            .await
            .map_err(failed("saving a credential"))?;
        Ok(())
    }

    async fn credential(&self, name: &str) -> StoreResult<Option<StoredCredential>> {
        let text: Option<String> = sqlx::query_scalar(CREDENTIAL)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed("reading a credential"))?;
        text.map(|t| decode("a credential", &t)).transpose()
    }

    async fn credentials(&self) -> StoreResult<Vec<StoredCredential>> {
        let texts: Vec<String> =
            sqlx::query_scalar(CREDENTIALS).fetch_all(&self.pool).await.map_err(failed("listing credentials"))?;
        decode_all("a credential", texts)
    }

    async fn delete_credential(&self, name: &str) -> StoreResult<bool> {
        let deleted = sqlx::query(DELETE_CREDENTIAL)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(failed("deleting a credential"))?;
        Ok(deleted.rows_affected() > 0)
    }
}

#[async_trait]
impl WorkflowStore for PostgresStore {
    async fn put_source(&self, hash: &str, source: &str) -> StoreResult<()> {
        sqlx::query(PUT_SOURCE)
            .bind(hash)
            .bind(source)
            .execute(&self.pool)
            .await
            .map_err(failed("saving a workflow's source"))?;
        Ok(())
    }

    async fn source(&self, hash: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar(SOURCE)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed("reading a workflow's source"))
    }
}

// --- moving whole stores ----------------------------------------------------------------

impl PostgresStore {
    /// Where an export page starts when it starts after `after`.
    async fn cursor(&self, after: Option<&StoredItem>) -> StoreResult<Cursor> {
        let Some(item) = after else { return Ok(Cursor::Start) };
        Ok(match item {
            StoredItem::Event(event) => {
                let position: Option<(i64, i64)> = sqlx::query_as(EVENT_POSITION)
                    .bind(event.id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(failed("reading change events"))?;
                let (xid, seq) = position.ok_or_else(|| {
                    StoreError::not_found(format!(
                        "event {} is not stored, so no export page can start after it",
                        event.id
                    ))
                })?;
                Cursor::Position(xid, seq)
            }
            StoredItem::Record(record) => Cursor::Id(record.id),
            StoredItem::Run(run) => Cursor::Id(run.id),
            StoredItem::Session(session) => Cursor::Id(session.id),
            StoredItem::Journal { run, entry } => Cursor::Step(*run, i64::from(entry.seq)),
            StoredItem::IndexedField(text)
            | StoredItem::DedupeKey { key: text, .. }
            | StoredItem::Mark { key: text, .. }
            | StoredItem::Credential(StoredCredential { name: text, .. })
            | StoredItem::WorkflowSource { hash: text, .. } => Cursor::Text(text.clone()),
        })
    }

    /// The rows of one export page of `kind`.
    async fn page<T>(&self, mut query: QueryBuilder<'_, Postgres>, kind: ItemKind) -> StoreResult<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        query.build_query_as().fetch_all(&self.pool).await.map_err(|e| database_error(&format!("exporting {kind}"), e))
    }

    async fn import_once(&self, items: &[StoredItem]) -> Result<(), Fault> {
        let mut fields = Vec::new();
        let (mut records, mut events, mut runs) = (Vec::new(), Vec::new(), Vec::new());
        let mut journal = (Vec::new(), Vec::new(), Vec::new());
        let (mut dedupe, mut marks, mut sources) = ((vec![], vec![]), (vec![], vec![]), (vec![], vec![]));
        let mut sessions = (Vec::new(), Vec::new(), Vec::new());
        let mut credentials = (Vec::new(), Vec::new());
        for item in items {
            match item {
                StoredItem::IndexedField(field) => fields.push(field.clone()),
                StoredItem::Record(record) => records.push(record),
                StoredItem::Event(event) => events.push(event),
                StoredItem::Run(run) => runs.push(run),
                StoredItem::Journal { run, entry } => {
                    journal.0.push(*run);
                    journal.1.push(i64::from(entry.seq));
                    journal.2.push(encode(entry)?);
                }
                StoredItem::DedupeKey { key, run } => {
                    dedupe.0.push(key.clone());
                    dedupe.1.push(*run);
                }
                StoredItem::Mark { key, value } => {
                    marks.0.push(key.clone());
                    marks.1.push(value.clone());
                }
                StoredItem::Session(session) => {
                    sessions.0.push(session.id);
                    sessions.1.push(session.integration.clone());
                    sessions.2.push(encode(session)?);
                }
                StoredItem::Credential(credential) => {
                    credentials.0.push(credential.name.clone());
                    credentials.1.push(encode(credential)?);
                }
                StoredItem::WorkflowSource { hash, source } => {
                    sources.0.push(hash.clone());
                    sources.1.push(source.clone());
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        // Locks in the order every unit of work takes them: run rows, the index lock, record rows.
        if !runs.is_empty() {
            for run in &runs {
                put_run(&mut tx, run).await?;
            }
            let ids: Vec<Uuid> = runs.iter().map(|run| run.id).collect();
            sqlx::query(EXPIRE_IMPORTED_LEASES).bind(ids).execute(&mut *tx).await?;
        }
        if !fields.is_empty() || !records.is_empty() {
            take_lock(&mut tx, INDEXING).await?;
        }
        if !fields.is_empty() {
            let added: Vec<String> =
                sqlx::query_scalar(IMPORT_INDEXED_FIELDS).bind(&fields).fetch_all(&mut *tx).await?;
            for field in &added {
                add_keys_of_every_record(&mut tx, field).await?;
            }
        }
        if !records.is_empty() {
            let indexed: BTreeSet<String> =
                sqlx::query_scalar(INDEXED_FIELDS).fetch_all(&mut *tx).await?.into_iter().collect();
            let key_values = |record: &Record| -> Vec<(&String, String)> {
                indexed.iter().filter_map(|f| record.fields.get(f).and_then(key_text).map(|v| (f, v))).collect()
            };
            let ids: Vec<Uuid> = records.iter().map(|record| record.id).collect();
            let mut keys = KeyChanges::default();
            // A record imported over one stored under its id replaces it, index entries too.
            for text in sqlx::query_scalar::<_, String>(LOCK_RECORDS).bind(&ids).fetch_all(&mut *tx).await? {
                let replaced: Record = decode("a record", &text)?;
                for (field, value) in key_values(&replaced) {
                    keys.remove(field, &value, replaced.id);
                }
            }
            for record in &records {
                for (field, value) in key_values(record) {
                    keys.add(field, &value, record.id);
                }
            }
            let texts = records.iter().map(encode).collect::<StoreResult<Vec<_>>>()?;
            sqlx::query(PUT_RECORDS).bind(ids).bind(texts).execute(&mut *tx).await?;
            keys.apply(&mut tx).await?;
        }
        for (statement, texts, values) in [(IMPORT_MARKS, marks.0, marks.1), (IMPORT_SOURCES, sources.0, sources.1)] {
            if !texts.is_empty() {
                sqlx::query(statement).bind(texts).bind(values).execute(&mut *tx).await?;
            }
        }
        if !credentials.0.is_empty() {
            sqlx::query(IMPORT_CREDENTIALS).bind(credentials.0).bind(credentials.1).execute(&mut *tx).await?;
        }
        if !dedupe.0.is_empty() {
            sqlx::query(IMPORT_DEDUPE_KEYS).bind(dedupe.0).bind(dedupe.1).execute(&mut *tx).await?;
        }
        if !journal.0.is_empty() {
            sqlx::query(IMPORT_JOURNAL).bind(journal.0).bind(journal.1).bind(journal.2).execute(&mut *tx).await?;
        }
        if !sessions.0.is_empty() {
            sqlx::query(IMPORT_SESSIONS).bind(sessions.0).bind(sessions.1).bind(sessions.2).execute(&mut *tx).await?;
        }
        if !events.is_empty() {
            let ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
            let texts = events.iter().map(encode).collect::<StoreResult<Vec<_>>>()?;
            sqlx::query(APPEND_EVENTS).bind(ids).bind(texts).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl TransferStore for PostgresStore {
    async fn export(&self, kind: ItemKind, after: Option<&StoredItem>, limit: usize) -> StoreResult<Vec<StoredItem>> {
        check_cursor(kind, after)?;
        let (select, order) = listing(kind);
        let mut query = QueryBuilder::<Postgres>::new(select);
        match self.cursor(after).await? {
            Cursor::Start => {}
            Cursor::Text(text) => {
                query.push(format!(" WHERE {order} > ")).push_bind(text);
            }
            Cursor::Id(id) => {
                query.push(format!(" WHERE {order} > ")).push_bind(id);
            }
            Cursor::Position(xid, seq) => {
                query.push(format!(" WHERE ({order}) > (")).push_bind(xid).push(", ").push_bind(seq).push(")");
            }
            Cursor::Step(run, seq) => {
                query.push(format!(" WHERE ({order}) > (")).push_bind(run).push(", ").push_bind(seq).push(")");
            }
        }
        query.push(format!(" ORDER BY {order} LIMIT ")).push_bind(sql_limit(limit));
        Ok(match kind {
            ItemKind::IndexedFields => {
                self.page(query, kind).await?.into_iter().map(|(f,)| StoredItem::IndexedField(f)).collect()
            }
            ItemKind::Records => decode_page("a record", self.page(query, kind).await?, StoredItem::Record)?,
            ItemKind::Events => decode_page("a change event", self.page(query, kind).await?, StoredItem::Event)?,
            ItemKind::Runs => decode_page("a run", self.page(query, kind).await?, StoredItem::Run)?,
            ItemKind::Sessions => decode_page("a sync session", self.page(query, kind).await?, StoredItem::Session)?,
            ItemKind::Credentials => {
                decode_page("a credential", self.page(query, kind).await?, StoredItem::Credential)?
            }
            ItemKind::JournalEntries => {
                let rows: Vec<(Uuid, String)> = self.page(query, kind).await?;
                rows.into_iter()
                    .map(|(run, text)| Ok(StoredItem::Journal { run, entry: decode("a journal entry", &text)? }))
                    .collect::<StoreResult<_>>()?
            }
            ItemKind::DedupeKeys => {
                let rows: Vec<(String, Uuid)> = self.page(query, kind).await?;
                rows.into_iter().map(|(key, run)| StoredItem::DedupeKey { key, run }).collect()
            }
            ItemKind::Marks => {
                let rows: Vec<(String, String)> = self.page(query, kind).await?;
                rows.into_iter().map(|(key, value)| StoredItem::Mark { key, value }).collect()
            }
            ItemKind::WorkflowSources => {
                let rows: Vec<(String, String)> = self.page(query, kind).await?;
                rows.into_iter().map(|(hash, source)| StoredItem::WorkflowSource { hash, source }).collect()
            }
        })
    }

    async fn import(&self, items: Vec<StoredItem>) -> StoreResult<()> {
        self.retrying("importing stored items", || self.import_once(&items)).await
    }

    async fn counts(&self) -> StoreResult<StoreCounts> {
        type Counts = (i64, i64, i64, i64, i64, i64, i64, i64, i64);
        let (records, events, runs, journal_entries, dedupe_keys, marks, sessions, credentials, workflow_sources): Counts =
            sqlx::query_as(COUNT_EVERYTHING).fetch_one(&self.pool).await.map_err(failed("counting the stored items"))?;
        let n = |count: i64| u64::try_from(count).unwrap_or(0);
        Ok(StoreCounts {
            records: n(records),
            events: n(events),
            runs: n(runs),
            journal_entries: n(journal_entries),
            dedupe_keys: n(dedupe_keys),
            marks: n(marks),
            sessions: n(sessions),
            credentials: n(credentials),
            workflow_sources: n(workflow_sources),
        })
    }
}

/// A page of stored texts as items.
fn decode_page<T: DeserializeOwned>(
    what: &str,
    rows: Vec<(String,)>,
    item: impl Fn(T) -> StoredItem,
) -> StoreResult<Vec<StoredItem>> {
    rows.iter().map(|(text,)| decode(what, text).map(&item)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_or_nul_key_values_are_kept_hashed_and_others_as_they_are() {
        assert_eq!(stored_key("ann@acme.test"), "ann@acme.test");
        let nul = stored_key("a\0b");
        assert!(nul.starts_with("\u{1}sha256:") && !nul.contains('\0'), "{nul:?}");
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        assert_ne!(stored_key(&long), stored_key(&"x".repeat(MAX_KEY_BYTES + 2)));
        assert!(stored_key(&long).len() < 80);
    }

    #[test]
    fn times_are_compared_to_the_millisecond() {
        assert_eq!(millis("2027-03-01T09:00:00.123456Z").as_deref(), Some("2027-03-01T09:00:00.123Z"));
        assert_eq!(millis("2027-03-01T10:00:00+01:00").as_deref(), Some("2027-03-01T09:00:00.000Z"));
        assert_eq!(millis("not a time"), None);
    }

    #[test]
    fn a_schema_name_is_a_plain_identifier() {
        assert!(check_schema_name("roster_test_1").is_ok());
        for bad in ["", "1abc", "Roster", "a b", "a;drop", "a\"b", &"a".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_location_never_holds_the_password() {
        let options = PgConnectOptions::from_str("postgres://roster:hunter2@db.internal:6543/people").unwrap();
        let at = location(&options, Some("tenant_a"));
        assert_eq!(at, "postgres://roster@db.internal:6543/people (schema tenant_a)");
    }
}
