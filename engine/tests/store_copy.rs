//! `roster store copy` from the embedded store up to PostgreSQL (and back): everything
//! comes across as it was, and a target that holds anything is refused. Needs the PostgreSQL server the
//! PostgreSQL suite needs (`engine/tests/store_postgres.rs`).

mod postgres_schema;

use std::sync::Arc;

use postgres_schema::Schema;
use roster_engine::store::conformance::{FILLED_FOR_COPY, assert_copied, fill_for_copy};
use roster_engine::store::{SledStore, Store, StoreErrorKind, copy_store};

fn sled(dir: &tempfile::TempDir) -> Store {
    Store::new(Arc::new(SledStore::open(dir.path()).expect("open sled")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sled_store_copied_to_postgresql_holds_the_same_of_everything() {
    let dir = tempfile::tempdir().unwrap();
    let original = sled(&dir);
    let fixture = fill_for_copy(&original).await;
    let schema = Schema::new();
    let copy = Store::new(Arc::new(schema.store().await));

    let report = copy_store(&original, &copy, |_, _| {}).await.expect("the copy succeeds");
    assert_eq!(report.source, FILLED_FOR_COPY);
    assert_eq!(report.target, FILLED_FOR_COPY);
    assert_copied(&original, &copy, &fixture).await;
}

/// A sled store opened again (its leases expired then, as they do at every open) copies as
/// one that was not: the runs a dead process held come out claimable either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reopened_sled_store_copies_to_postgresql_with_its_runs_claimable() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fill_for_copy(&sled(&dir)).await;
    let original = sled(&dir);
    let schema = Schema::new();
    let copy = Store::new(Arc::new(schema.store().await));
    copy_store(&original, &copy, |_, _| {}).await.expect("the copy succeeds");
    assert_copied(&original, &copy, &fixture).await;
}

/// And back down, should a move need undoing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgresql_store_copied_to_sled_holds_the_same_of_everything() {
    let schema = Schema::new();
    let original = Store::new(Arc::new(schema.store().await));
    let fixture = fill_for_copy(&original).await;
    let dir = tempfile::tempdir().unwrap();
    let copy = sled(&dir);
    let report = copy_store(&original, &copy, |_, _| {}).await.expect("the copy succeeds");
    assert_eq!(report.target, FILLED_FOR_COPY);
    assert_copied(&original, &copy, &fixture).await;
}

#[tokio::test]
async fn copying_into_a_postgresql_store_that_holds_anything_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let original = sled(&dir);
    fill_for_copy(&original).await;
    let schema = Schema::new();
    let target = Store::new(Arc::new(schema.store().await));
    let first = copy_store(&original, &target, |_, _| {}).await.expect("the first copy succeeds");

    let err = copy_store(&original, &target, |_, _| {}).await.expect_err("a second copy is refused");
    assert_eq!(err.kind, StoreErrorKind::Conflict, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("the target store already holds 7 records, 8 events, 4 runs, 3 journal entries"),
        "{text}"
    );
    assert!(text.ends_with("copy only into an empty store"), "{text}");
    assert_eq!(target.transfer.counts().await.unwrap(), first.target, "nothing more was written");
}
