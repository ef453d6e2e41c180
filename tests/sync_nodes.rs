//! Integration syncs with several nodes on one store: one node syncs an integration at a
//! time and the others see its session; a node starting up or sweeping never fails a sync
//! a live node is running; a node that dies mid-sync does not block syncing for longer than
//! its lease. Two services (two nodes) on one PostgreSQL database, and a sled home that
//! restarts after a crash. The sandbox's Brex answers slowly to keep a sync running.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_engine::clock::Clock;
use roster_engine::home::Home;
use roster_engine::model::{SyncSession, SyncState};
use roster_engine::run::Engine;
use roster_engine::service::{Catalog, Service};
use roster_engine::store::{Mark, Store};
use roster_engine::sync::Integration;
use roster_sandbox::Faults;
use support::{FreshDatabase, SandboxHandle, TestHome};

const INTEGRATION: &str = r#"{"name": "brex", "connector": "brex", "credential": "brex", "sync_key": "email"}"#;

/// A node on `home`'s store: its own connection, the home's vault, the one integration.
async fn node(home: &TestHome, integration: &Arc<Integration>, lease: Duration) -> Arc<Service> {
    let home = Home::new(home.path());
    let store = home.open_store().await.expect("open the store");
    let engine = Arc::new(Engine::new(store, Some(home.vault().expect("the vault")), Clock::system()));
    let mut catalog = Catalog::default();
    catalog.integrations.insert(integration.name.clone(), integration.clone());
    let service = Service::new(engine, catalog, roster_engine::presets::built_in());
    service.set_lease(lease);
    service
}

fn store(node: &Service) -> &Store {
    &node.engine.store
}

/// Every Brex answer waits `by` first (or none does).
fn slow(sandbox: &SandboxHandle, by: Option<Duration>) {
    let faults = match by {
        Some(by) => Faults { slow: 1.0, slow_for: by, ..Faults::default() },
        None => Faults::default(),
    };
    sandbox.sandbox.set_faults(faults);
}

/// Waits up to `within` until `probe` finds something.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, within: Duration, mut probe: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The running session of the integration, once there is one.
async fn running(store: &Store) -> SyncSession {
    eventually("a running sync session", Duration::from_secs(10), || async {
        let sessions = store.syncs.sessions(Some("brex"), 10).await.unwrap();
        sessions.into_iter().find(|s| s.state == SyncState::Running)
    })
    .await
}

async fn session(store: &Store, id: uuid::Uuid) -> SyncSession {
    store.syncs.session(id).await.unwrap().expect("the session is kept")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn two_nodes_on_one_postgres_database_sync_an_integration_one_at_a_time_and_take_over_from_a_dead_one() {
    let db = FreshDatabase::new();
    let [home_a, home_b]: [TestHome; 2] = TestHome::sharing(&db, 2).try_into().ok().unwrap();
    let sandbox = SandboxHandle::start(SandboxHandle::config(12));
    let people = sandbox.brex_users().len() as u64;
    home_a.add_sandbox_brex(&sandbox);
    std::fs::write(home_b.path().join("integrations/brex.json"), INTEGRATION).unwrap();
    let integration = Arc::new(Integration::compile(INTEGRATION, "brex.json", None).unwrap());
    let lease = Duration::from_secs(2);

    runtime().block_on(async {
        let a = node(&home_a, &integration, lease).await;
        let b = node(&home_b, &integration, lease).await;

        // A's sync outlasts its lease several times over: only its renewals keep it A's.
        slow(&sandbox, Some(Duration::from_secs(7)));
        let syncing = tokio::spawn({
            let (a, integration) = (a.clone(), integration.clone());
            async move { a.sync(&integration).await }
        });
        let theirs = running(store(&b)).await;
        assert_eq!(theirs.node.as_deref(), Some(a.node()), "the session names the node that runs it");

        // B starts: its recovery and its heartbeat's sweeps leave A's sync alone.
        b.recover().await.unwrap();
        let b_working = tokio::spawn({
            let b = b.clone();
            async move { b.work(1, false).await }
        });
        assert_eq!(session(store(&b), theirs.id).await.state, SyncState::Running, "a live node's sync is not failed");

        // B may not sync it meanwhile: by hand it is refused, naming A and A's session ...
        let refused = b.sync(&integration).await.expect_err("a second sync of the integration is refused");
        let text = refused.to_string();
        assert!(text.contains(a.node()) && text.contains(&theirs.id.to_string()), "{text}");
        let cli = home_b.roster(&["sync", "brex", "--json"]).code(2);
        assert!(cli.stderr.contains(a.node()) && cli.stderr.contains(&theirs.id.to_string()), "{}", cli.stderr);
        // ... and its due scheduled sync is left due (not consumed), nothing run.
        assert!(b.sync_due().await.unwrap().is_empty(), "the scheduled sync waits for A's to end");
        let fired = Mark::SyncFired { integration: "brex".into() };
        assert_eq!(store(&b).scheduler.mark(&fired).await.unwrap(), None, "the fire is still due");
        let seen = store(&b).syncs.sessions(Some("brex"), 10).await.unwrap();
        assert_eq!(seen.len(), 1, "B started no session of its own: {seen:?}");
        assert_eq!((seen[0].id, seen[0].state), (theirs.id, SyncState::Running), "B sees A's session");

        // However long it takes, no sweep of B's fails it meanwhile.
        while !syncing.is_finished() {
            let now = session(store(&b), theirs.id).await;
            assert_ne!(now.state, SyncState::Failed, "A's running sync was failed: {:?}", now.error);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let done = syncing.await.unwrap().expect("A's sync ends");
        assert_eq!((done.id, done.state), (theirs.id, SyncState::Succeeded), "{done:?}");
        assert_eq!(done.counts.fetched, people);
        assert_eq!(session(store(&b), theirs.id).await.state, SyncState::Succeeded, "as stored, after B's sweeps");

        // Its lease given up, B runs the scheduled sync it left due.
        slow(&sandbox, None);
        let synced = b.sync_due().await.unwrap();
        assert_eq!(synced.len(), 1, "{synced:?}");
        assert_eq!((synced[0].state, synced[0].node.as_deref()), (SyncState::Succeeded, Some(b.node())));

        // A dies mid-sync: its renewals stop with it; the session stays running until the
        // lease it last renewed runs out, then B marks it interrupted and may sync again.
        slow(&sandbox, Some(Duration::from_secs(30)));
        let dying = tokio::spawn({
            let (a, integration) = (a.clone(), integration.clone());
            async move { a.sync(&integration).await }
        });
        let cut = running(store(&b)).await;
        let a_node = a.node().to_string();
        dying.abort();
        let _ = dying.await;
        drop(a);
        let died = Instant::now();
        assert_eq!(session(store(&b), cut.id).await.state, SyncState::Running, "not before its lease ran out");
        let interrupted =
            eventually("the dead node's session to be marked interrupted", Duration::from_secs(10), || {
                let store = store(&b).clone();
                async move { Some(session(&store, cut.id).await).filter(|s| s.state != SyncState::Running) }
            })
            .await;
        assert!(died.elapsed() <= lease + Duration::from_secs(3), "took {:?}", died.elapsed());
        assert_eq!(interrupted.state, SyncState::Failed);
        let why = interrupted.error.unwrap_or_default();
        assert!(why.starts_with("interrupted: ") && why.contains(&a_node), "{why}");
        slow(&sandbox, None);
        let again = b.sync(&integration).await.expect("B syncs once the dead node's lease ran out");
        assert_eq!(again.state, SyncState::Succeeded, "{again:?}");

        b.engine.stop();
        b.wake();
        b_working.await.unwrap().unwrap();
    });
}

#[test]
fn a_sled_home_that_restarts_after_a_crash_marks_its_own_unfinished_sync_interrupted_and_syncs_at_once() {
    let home = TestHome::new();
    let sandbox = SandboxHandle::start(SandboxHandle::config(6));
    home.add_sandbox_brex(&sandbox);
    let integration = Arc::new(Integration::compile(INTEGRATION, "brex.json", None).unwrap());
    let first = runtime();

    // The process stops mid-sync (its task is dropped with the store, as a crash would).
    slow(&sandbox, Some(Duration::from_secs(30)));
    let (cut, crashed_node) = first.block_on(async {
        let crashed = node(&home, &integration, Duration::from_secs(30)).await;
        let syncing = tokio::spawn({
            let (crashed, integration) = (crashed.clone(), integration.clone());
            async move { crashed.sync(&integration).await }
        });
        let cut = running(store(&crashed)).await;
        syncing.abort();
        let _ = syncing.await;
        (cut, crashed.node().to_string())
    });
    drop(first);
    slow(&sandbox, None);

    // The next start owns the folder alone: that sync is over, though its 30 s lease is not.
    runtime().block_on(async {
        let restarted = node(&home, &integration, Duration::from_secs(30)).await;
        assert_eq!(session(store(&restarted), cut.id).await.state, SyncState::Running, "as the crash left it");
        restarted.recover().await.unwrap();
        let after = session(store(&restarted), cut.id).await;
        assert_eq!(after.state, SyncState::Failed);
        let why = after.error.unwrap_or_default();
        assert_eq!(why, format!("interrupted: node {crashed_node} stopped before the sync finished"));
        let synced = restarted.sync(&integration).await.expect("nothing holds the integration any more");
        assert_eq!(synced.state, SyncState::Succeeded, "{synced:?}");
    });
}
