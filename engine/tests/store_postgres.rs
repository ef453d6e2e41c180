//! The store contract's conformance suite on PostgreSQL, each case in a fresh schema of the
//! database at `ROSTER_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! A server must be running: these tests fail, not skip, without one.

mod postgres_schema;

use std::sync::Arc;

use postgres_schema::{Schema, url};
use roster_engine::model::RunState;
use roster_engine::store::{PostgresStore, RecordWrite, Store, StoreErrorKind};
use serde_json::{Map, Value, json};

async fn fresh() -> (Store, Schema) {
    let schema = Schema::new();
    let store = schema.store().await;
    (Store::new(Arc::new(store)), schema)
}

roster_engine::conformance_suite!(fresh());

/// How many migrations this build carries (engine/migrations, numbered from 1).
fn migrations_carried() -> i64 {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap().count() as i64
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_roster_is_refused() {
    let schema = Schema::new();
    drop(schema.store().await);
    let mut conn = schema.connection().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let err = PostgresStore::connect_in_schema(&url(), &schema.name).await.expect_err("opening is refused");
    assert_eq!(err.kind, StoreErrorKind::Conflict, "{err}");
    let text = err.to_string();
    assert!(text.contains("was migrated by a newer roster (version 9999); upgrade this binary"), "{text}");
    assert!(text.contains(&format!("(schema {})", schema.name)), "says which database: {text}");

    // Migrating is refused as well, and leaves the database as it was.
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 9999").execute(&mut conn).await.unwrap();
    let store = PostgresStore::connect_in_schema(&url(), &schema.name).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let err = store.migrate().await.expect_err("migrating is refused");
    assert!(err.to_string().contains("newer roster (version 9999)"), "{err}");
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version").fetch_all(&mut conn).await.unwrap();
    let carried = (1..=migrations_carried()).chain([9999]).collect::<Vec<i64>>();
    assert_eq!(versions, carried);
}

#[tokio::test]
async fn nodes_migrating_at_once_all_succeed_and_share_one_store() {
    let schema = Schema::new();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(PostgresStore::connect_in_schema(&url(), &schema.name).await.expect("connect"));
    }
    let migrations = nodes.iter().map(|node| node.migrate());
    for outcome in futures_util::future::join_all(migrations).await {
        outcome.expect("every node's migration succeeds");
    }
    nodes[0].migrate().await.expect("migrating again finds nothing to do");

    let mut conn = schema.connection().await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations").fetch_one(&mut conn).await.unwrap();
    assert_eq!(applied, migrations_carried(), "each migration was applied once");

    let (a, b) = (Store::new(Arc::new(nodes.remove(0))), Store::new(Arc::new(nodes.remove(0))));
    let written = a.records.write_record(write(None, json!({"email": "ann@acme.test"}))).await.unwrap();
    let found = b.records.records_by_field("email", "ANN@acme.test").await.unwrap();
    assert_eq!(found.iter().map(|r| r.id).collect::<Vec<_>>(), [written.record.id]);
}

#[tokio::test]
async fn the_password_is_never_shown() {
    // Port 1 on loopback: nothing listens there.
    let err = PostgresStore::connect("postgres://roster:hunter2-secret@127.0.0.1:1/test").await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Unavailable, "{err}");
    let text = err.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("postgres://roster@127.0.0.1:1/test"), "says where it tried: {text}");

    let schema = Schema::new();
    let store = schema.store().await;
    assert!(!format!("{store:?}").contains("hunter2"));
}

#[tokio::test]
async fn a_record_comes_back_exactly_as_written() {
    let (store, _schema) = fresh().await;
    // Field order as written (not sorted), numbers as written, and a NUL from a vendor.
    let fields = json!({"zeta": 1, "alpha": 1.0, "email": "Nul\u{0}@acme.test", "big": 12345678901234567890u64});
    let written = store.records.write_record(write(None, fields.clone())).await.unwrap();
    let read = store.records.record(written.record.id).await.unwrap().unwrap();
    assert_eq!(Value::Object(read.fields.clone()), fields);
    let order: Vec<&String> = read.fields.keys().collect();
    assert_eq!(order, ["zeta", "alpha", "email", "big"]);
    let found = store.records.records_by_field("email", "nul\u{0}@ACME.test").await.unwrap();
    assert_eq!(found.len(), 1, "a key value with a NUL is found by its index");
    assert!(store.records.records_by_field("email", "nul\u{fffd}@acme.test").await.unwrap().is_empty());
}

#[tokio::test]
async fn an_indexed_field_written_and_replaced_in_one_batch_is_found_by_its_last_value() {
    let (store, _schema) = fresh().await;
    store.records.index_field("badge").await.unwrap();
    let ann = store.records.write_record(write(None, json!({"badge": "A-1"}))).await.unwrap().record;
    let writes = vec![write(Some(ann.id), json!({"badge": "A-2"})), write(Some(ann.id), json!({"badge": "A-3"}))];
    let written = store.records.write_records(writes).await.unwrap();
    assert_eq!(written[1].record.version, 3, "the second write saw the first");
    for (value, hits) in [("A-1", 0), ("A-2", 0), ("A-3", 1)] {
        assert_eq!(store.records.records_by_field("badge", value).await.unwrap().len(), hits, "{value}");
    }
    let events = store.events.events(None, 10).await.unwrap();
    assert_eq!(events.len(), 3, "one event per write that changed something");
    assert_eq!(events[2].changes["badge"].before, json!("A-2"));
}

/// Two nodes, eight claimers, a workflow limited to three at once: never a fourth.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_limit_holds_across_nodes_claiming_at_once() {
    let schema = Schema::new();
    let nodes = [Store::new(Arc::new(schema.store().await)), Store::new(Arc::new(schema.store().await))];
    let run = roster_engine::store::conformance::queued_for_tests(&nodes[0]).await;
    for _ in 0..20 {
        let mut next = run.clone();
        next.id = uuid::Uuid::now_v7();
        next.workflow = "limited".into();
        nodes[0].runs.save_step(&next, None, None).await.unwrap();
    }
    let mut claimers = Vec::new();
    for n in 0..8 {
        let store = nodes[n % 2].clone();
        claimers.push(tokio::spawn(async move {
            let mut request = roster_engine::store::conformance::claim_for_tests(&format!("node-{n}"), 600);
            request.limits.per_workflow.insert("limited".into(), 3);
            let mut mine = 0;
            for _ in 0..5 {
                if store.queue.claim(&request).await.unwrap().is_some() {
                    mine += 1;
                }
            }
            mine
        }));
    }
    let mut claimed = 0;
    for claimer in claimers {
        claimed += claimer.await.unwrap();
    }
    assert_eq!(claimed, 3, "three runs of `limited` at once, however many claim");
    assert_eq!(nodes[1].queue.queued_count().await.unwrap(), 17);
}

/// A reader that follows the events while two nodes write sees each one once: none is
/// skipped because a write that started earlier committed later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_events_during_concurrent_writes_misses_none() {
    let schema = Schema::new();
    let nodes = [Store::new(Arc::new(schema.store().await)), Store::new(Arc::new(schema.store().await))];
    let mut writers = Vec::new();
    for n in 0..8 {
        let store = nodes[n % 2].clone();
        writers.push(tokio::spawn(async move {
            for i in 0..40 {
                let fields = json!({"email": format!("p{n}-{i}@acme.test")});
                store.records.write_record(write(None, fields)).await.unwrap();
            }
        }));
    }
    let reader = nodes[1].clone();
    let mut seen = Vec::new();
    let mut cursor = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !writers.iter().all(|w| w.is_finished()) && std::time::Instant::now() < deadline {
        let batch = reader.events.events(cursor, 7).await.unwrap();
        if let Some(last) = batch.last() {
            cursor = Some(last.id);
        }
        seen.extend(batch.into_iter().map(|e| e.id));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    seen.extend(reader.events.events(cursor, 1000).await.unwrap().into_iter().map(|e| e.id));
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no event was read twice");
    assert_eq!(seen.len(), 8 * 40, "every event was read");
}

/// As in the embedded store, a claim puts every waiting run whose timer is due on the
/// queue; it takes the oldest, and the others are queued from then on.
#[tokio::test]
async fn a_claim_puts_every_due_timer_on_the_queue() {
    let (store, _schema) = fresh().await;
    let run = roster_engine::store::conformance::queued_for_tests(&store).await;
    let now = jiff::Timestamp::now();
    let mut ids = Vec::new();
    for minutes_ago in [10, 20, 30] {
        let mut waiting = run.clone();
        waiting.id = uuid::Uuid::now_v7();
        waiting.state = RunState::Waiting;
        waiting.wake_at =
            Some(roster_engine::clock::rfc3339_millis(now - jiff::SignedDuration::from_mins(minutes_ago)));
        store.runs.save_step(&waiting, None, None).await.unwrap();
        ids.push(waiting.id);
    }
    let claimed = store.queue.claim(&roster_engine::store::conformance::claim_for_tests("a", 60)).await.unwrap();
    assert_eq!(claimed.map(|r| r.id), Some(ids[0]), "the oldest run first");
    assert_eq!(store.queue.queued_count().await.unwrap(), 2);
    assert_eq!(store.queue.next_timer().await.unwrap(), None);
    for id in &ids[1..] {
        let stored = store.runs.run(*id).await.unwrap().unwrap();
        assert_eq!((stored.state, stored.wake_at), (RunState::Queued, None));
    }
}

fn write(id: Option<uuid::Uuid>, fields: Value) -> RecordWrite {
    let changes: Map<String, Value> = fields.as_object().cloned().unwrap();
    RecordWrite { id, changes, source: "import".into(), at: "2027-03-01T09:00:00.000Z".into() }
}
