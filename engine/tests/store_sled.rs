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

/// A finished run is kept compact: its journal becomes one packed value and its head is
/// packed, each far smaller than the JSON it holds, and both read back as they were.
#[tokio::test]
async fn a_finished_runs_journal_and_head_are_packed_and_read_back_whole() {
    use roster_engine::model::{JournalEntry, RunState};
    let dir = tempfile::tempdir().unwrap();
    let (run, entries) = {
        let store = Store::new(Arc::new(SledStore::open(dir.path()).unwrap()));
        let mut run = roster_engine::store::conformance::queued_for_tests(&store).await;
        let mut entries = Vec::new();
        for seq in 0..3u32 {
            let entry: JournalEntry = serde_json::from_value(serde_json::json!({
                "seq": seq, "block": format!("call{seq}"), "kind": "api", "phase": "finished", "attempt": 1,
                "request": {"method": "GET", "url": format!("/v2/users/cuuser_{seq:026}")},
                "status": 200,
                "response": {"status": 200, "body": {"id": format!("cuuser_{seq:026}"), "first_name": "Ann",
                    "last_name": "Lee", "email": "ann@acme.test", "status": "ACTIVE",
                    "manager_id": "cuuser_k5zm0m0746u5ua0fcx6j6m76i", "department_id": "cudept_aq5c1f62whm4gdm7lft6tkw0p"},
                    "trace_id": "9569c78207d4a2b9920e625335c2f768", "elapsed_ms": 2, "pages": 1},
                "started_at": "2026-12-02T15:29:08.212Z", "finished_at": "2026-12-02T15:29:08.214Z", "duration_ms": 2,
            }))
            .unwrap();
            run.next_seq = seq + 1;
            if seq == 2 {
                run.state = RunState::Succeeded;
                run.current = None;
                run.finished_at = Some("2026-12-02T15:29:08.214Z".into());
            }
            store.runs.save_step(&run, Some(&entry), None).await.unwrap();
            entries.push(entry);
        }
        assert_eq!(store.runs.journal(run.id).await.unwrap(), entries);
        (store.runs.run(run.id).await.unwrap().expect("stored"), entries)
    };
    let db = sled::open(dir.path()).unwrap();
    let journal: Vec<_> = db.open_tree("journal").unwrap().scan_prefix(run.id.as_bytes()).collect();
    assert_eq!(journal.len(), 1, "one value for the finished run's journal");
    let plain: usize = entries.iter().map(|e| serde_json::to_vec(e).unwrap().len()).sum();
    let packed = journal[0].as_ref().unwrap().1.len();
    assert!(packed * 2 < plain, "packed journal {packed} bytes against {plain} bytes of entries");
    let head = db.open_tree("runs").unwrap().get(run.id.as_bytes()).unwrap().expect("the head");
    assert!(head.len() < serde_json::to_vec(&run).unwrap().len(), "the finished head is packed");
    drop(db);
    let store = Store::new(Arc::new(SledStore::open(dir.path()).unwrap()));
    assert_eq!(store.runs.run(run.id).await.unwrap().as_ref(), Some(&run));
    assert_eq!(store.runs.journal(run.id).await.unwrap(), entries);
}
