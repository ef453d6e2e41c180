//! The store contract's conformance suite on the embedded sled backend.

use std::sync::Arc;

use roster_engine::store::{SledStore, Store};

async fn fresh() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temp folder");
    let store = Store::new(Arc::new(SledStore::open(dir.path()).expect("open sled")));
    (store, dir)
}

roster_engine::conformance_suite!(fresh());

/// The same contract on a store whose pages are compressed (`ROSTER_STORE_COMPRESSION=zstd`).
mod compressed {
    use super::*;

    async fn fresh() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temp folder");
        let store = Store::new(Arc::new(SledStore::open_compressed(dir.path()).expect("open sled")));
        (store, dir)
    }

    roster_engine::conformance_suite!(fresh());

    #[tokio::test]
    async fn a_compressed_store_opens_again_compressed_without_being_asked() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledStore::open_compressed(dir.path()).unwrap());
        let conf = std::fs::read(dir.path().join("conf")).unwrap();
        assert!(conf.windows(21).any(|w| w == b"use_compression: true"), "{}", String::from_utf8_lossy(&conf));
        let store = Store::new(Arc::new(SledStore::open(dir.path()).expect("reopens as it was made")));
        assert_eq!(store.records.count_records().await.unwrap(), 0);
    }
}

/// sled has one owner at a time: leases left by a process that died end when the store
/// opens again, so its runs are reclaimed at once rather than after the lease time.
#[tokio::test]
async fn leases_of_a_process_that_died_end_when_the_store_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (store, _) = (Store::new(Arc::new(SledStore::open(dir.path()).unwrap())), ());
        let run = roster_engine::store::conformance::queued_for_tests(&store).await;
        store.runs.save_step(&run, None, None).await.unwrap();
        let request = roster_engine::store::conformance::claim_for_tests("dead", 3600);
        store.queue.claim(&request).await.unwrap().expect("claimed").id
    };
    let store = Store::new(Arc::new(SledStore::open(dir.path()).unwrap()));
    let request = roster_engine::store::conformance::claim_for_tests("alive", 3600);
    let reclaimed = store.queue.claim(&request).await.unwrap().expect("reclaimed at once");
    assert_eq!(reclaimed.id, id);
}

/// The embedded store reads events in id order, so it refuses to take them in another
/// (a copy from a database whose nodes' clocks disagreed) rather than reorder them.
#[tokio::test]
async fn events_imported_out_of_id_order_are_refused() {
    use roster_engine::store::{StoreErrorKind, StoredItem};

    let (from, _from_dir) = fresh().await;
    for email in ["ann@acme.test", "bob@acme.test"] {
        let mut changes = serde_json::Map::new();
        changes.insert("email".into(), email.into());
        let write = roster_engine::store::RecordWrite { id: None, changes, source: "import".into(), at: "t".into() };
        from.records.write_record(write).await.unwrap();
    }
    let mut events: Vec<StoredItem> =
        from.events.events(None, 10).await.unwrap().into_iter().map(StoredItem::Event).collect();
    events.reverse();
    let (to, _to_dir) = fresh().await;
    let err = to.transfer.import(events).await.expect_err("out of order");
    assert_eq!(err.kind, StoreErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("keeps events in id order"), "{err}");
    assert!(to.events.events(None, 10).await.unwrap().is_empty(), "none was taken");
}
