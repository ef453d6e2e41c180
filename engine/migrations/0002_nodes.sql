-- The serve nodes sharing this database: each records its heartbeat here beside renewing
-- its leases, so `roster nodes` can say which are alive and what each holds.
CREATE TABLE nodes (
    node text PRIMARY KEY,
    last_heartbeat timestamptz NOT NULL
);
