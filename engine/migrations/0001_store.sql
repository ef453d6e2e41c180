-- Roster's store on PostgreSQL (engine/src/store/postgres.rs), first version.
--
-- Each stored thing (a record, a run, a journal entry, an event, a session, a credential)
-- is kept whole as `json`, the text the engine wrote: unlike `jsonb` it keeps the order of
-- a record's fields and of a vendor's payload, numbers as they were written, and a
-- `\u0000` in a vendor's value, so what comes back is exactly what the embedded store would
-- give. The columns beside it are what queries select and order by, written from the same
-- value in the same statement.

CREATE TABLE records (
    id uuid PRIMARY KEY,
    record json NOT NULL
);

-- Fields looked up by value (`RecordStore::index_field`); email always is.
CREATE TABLE indexed_fields (
    field text PRIMARY KEY
);

INSERT INTO indexed_fields (field) VALUES ('email');

-- An indexed field's value per record, as `key_text` gives it (emails lowercased and
-- trimmed), so a lookup is one index read. Several records may share a value.
CREATE TABLE record_keys (
    field text NOT NULL,
    value text NOT NULL,
    record_id uuid NOT NULL REFERENCES records (id) ON DELETE CASCADE,
    PRIMARY KEY (field, value, record_id)
);

-- Change events, append-only. A transaction's events carry its transaction id (`xid`)
-- and their numbers (`seq`) in the order it inserted them. Readers take events in
-- (xid, seq) order, and only those of transactions older than every transaction still
-- running: that set never grows below what a reader has seen, so a cursor never passes an
-- event that commits later, and writers need no lock to keep it so.
CREATE TABLE events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    id uuid NOT NULL UNIQUE,
    event json NOT NULL
);
CREATE INDEX events_in_order ON events (xid, seq);

CREATE TABLE runs (
    id uuid PRIMARY KEY,
    workflow text NOT NULL,
    record_id uuid NOT NULL,
    state text NOT NULL,
    trigger text NOT NULL,
    created_at timestamptz,
    finished boolean NOT NULL,
    -- Set while the run is finished: what pruning reads.
    finished_at timestamptz,
    -- Set while the run is running under a claim. A lease whose time cannot be read has
    -- no `lease_until` and counts as expired.
    lease_owner text,
    lease_token uuid,
    lease_until timestamptz,
    -- Set while the run is waiting on a timer.
    wake_at timestamptz,
    run json NOT NULL
);

-- Claims: queued runs oldest first (run ids are UUID v7), leases (expired ones first, live
-- ones counted per workflow, renewed per owner), and due timers.
CREATE INDEX runs_queued ON runs (id) WHERE state = 'queued';
CREATE INDEX runs_leased ON runs (id) WHERE lease_token IS NOT NULL;
CREATE INDEX runs_leased_by_workflow ON runs (workflow, lease_until) WHERE lease_token IS NOT NULL;
CREATE INDEX runs_leased_by_owner ON runs (lease_owner) WHERE lease_token IS NOT NULL;
CREATE INDEX runs_timers ON runs (wake_at, id) WHERE wake_at IS NOT NULL;
-- Pruning, oldest finish first; runs not yet finished, oldest first.
CREATE INDEX runs_finished ON runs (finished_at, id) WHERE finished_at IS NOT NULL;
CREATE INDEX runs_unfinished ON runs (id) WHERE NOT finished;
-- Listings by filter, newest first.
CREATE INDEX runs_by_workflow ON runs (workflow, id);
CREATE INDEX runs_by_record ON runs (record_id, id);
CREATE INDEX runs_by_trigger ON runs (trigger, id);
CREATE INDEX runs_by_state ON runs (state, id);

-- One row per step, by its sequence number. A step journaled as started before an unsafe
-- request is replaced by its finished entry (same run, same seq); nothing else changes it.
CREATE TABLE journal (
    run_id uuid NOT NULL,
    seq bigint NOT NULL,
    entry json NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- The dedupe key of every run a trigger ever created. Kept when the run is pruned, so a
-- pruned run never fires again.
CREATE TABLE run_dedupe_keys (
    key text PRIMARY KEY,
    run_id uuid NOT NULL
);

-- Scheduler marks (`Mark::key`), changed only by compare-and-set.
CREATE TABLE marks (
    key text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE sync_sessions (
    id uuid PRIMARY KEY,
    integration text NOT NULL,
    session json NOT NULL
);

CREATE INDEX sync_sessions_by_integration ON sync_sessions (integration, id);

CREATE TABLE credentials (
    name text PRIMARY KEY,
    credential json NOT NULL
);

-- Workflow file texts by content hash, written once.
CREATE TABLE workflow_sources (
    hash text PRIMARY KEY,
    source text NOT NULL
);

-- The serve nodes sharing this database: each records its heartbeat here beside renewing
-- its leases, so `roster nodes` can say which are alive and what each holds.
CREATE TABLE nodes (
    node text PRIMARY KEY,
    last_heartbeat timestamptz NOT NULL
);
