//! The store contract's test suite. Every backend runs all of it, each case on a fresh
//! store: `roster_engine::conformance_suite!(async { (store, guard) })` expands to one test per
//! case (see `engine/tests/store_sled.rs`). A case panics with what the backend got wrong.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{ClaimRequest, ConcurrencyLimits, Mark, RecordWrite, RunFilter, Store, StoreErrorKind};
use crate::clock::rfc3339_millis;
use crate::model::{JournalEntry, Record, Run, RunState};

/// Expands to one `#[tokio::test]` per conformance case. `$fresh` is an expression that
/// evaluates to a future of `(Store, guard)`; the guard (e.g. a temp folder) lives as long as
/// the test.
#[macro_export]
macro_rules! conformance_suite {
    ($fresh:expr) => {
        $crate::conformance_suite!(@cases $fresh;
            a_step_is_written_whole_or_not_at_all,
            a_failing_step_among_concurrent_ones_fails_alone,
            create_once_lets_one_of_many_racing_creators_win,
            sixteen_claimers_never_take_one_run_twice,
            an_expired_lease_is_reclaimed_and_the_old_claimer_refused,
            a_renewed_lease_is_not_reclaimed,
            workflow_concurrency_limits_hold_across_claimers,
            scheduler_marks_change_only_by_compare_and_set,
            events_come_in_order_after_a_cursor,
            a_waiting_run_is_claimable_once_its_timer_is_due,
            pruning_removes_old_finished_runs_and_their_journals_only,
            records_are_found_by_field_with_or_without_an_index,
            runs_are_listed_by_filter_newest_first,
            nodes_are_listed_with_their_last_heartbeat_and_the_runs_they_hold,
        );
    };
    (@cases $fresh:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $fresh.await;
                $crate::store::conformance::$case(store).await;
            }
        )+
    };
}

// --- helpers ------------------------------------------------------------------------

async fn person(store: &Store, email: &str) -> Record {
    let mut changes = Map::new();
    changes.insert("email".into(), Value::String(email.into()));
    let write = RecordWrite { id: None, changes, source: "import".into(), at: rfc3339_millis(Timestamp::now()) };
    store.records.write_record(write).await.expect("create a record").record
}

/// A queued run of `workflow` for `record`, not yet stored.
fn queued(workflow: &str, record: &Record) -> Run {
    queued_at(workflow, record, Timestamp::now())
}

/// A queued run created at `created` (its id's time and its `created_at`).
fn queued_at(workflow: &str, record: &Record, created: Timestamp) -> Run {
    let now = rfc3339_millis(created);
    let id = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        created.as_second() as u64,
        created.subsec_nanosecond() as u32,
    ));
    serde_json::from_value(json!({
        "id": id,
        "workflow": workflow,
        "workflow_hash": "hash",
        "record_id": record.id,
        "record_label": record.label(),
        "trigger": "manual",
        "state": "queued",
        "current": "first",
        "next_seq": 0,
        "created_at": now,
        "updated_at": now,
    }))
    .expect("a run")
}

fn entry(seq: u32, block: &str) -> JournalEntry {
    serde_json::from_value(json!({
        "seq": seq, "block": block, "kind": "update", "phase": "finished", "attempt": 1,
        "started_at": rfc3339_millis(Timestamp::now()),
    }))
    .expect("a journal entry")
}

fn claim_request(owner: &str, now: Timestamp, lease_secs: u64) -> ClaimRequest {
    ClaimRequest {
        owner: owner.into(),
        now,
        lease: Duration::from_secs(lease_secs),
        limits: ConcurrencyLimits::default(),
        trigger: None,
    }
}

fn at(now: Timestamp, secs: i64) -> Timestamp {
    now + jiff::SignedDuration::from_secs(secs)
}

// --- cases --------------------------------------------------------------------------

/// Journal entry, record change and run position land together, or none of them does.
pub async fn a_step_is_written_whole_or_not_at_all(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    let mut run = queued("w", &ann);
    store.runs.save_step(&run, None, None).await.unwrap();

    run.state = RunState::Running;
    run.current = Some("second".into());
    run.next_seq = 1;
    let mut changes = Map::new();
    changes.insert("title".into(), json!("Engineer"));
    let write = RecordWrite { id: Some(ann.id), changes: changes.clone(), source: "workflow:w".into(), at: "t".into() };
    let written = store.runs.save_step(&run, Some(&entry(0, "first")), Some(write)).await.unwrap();
    assert_eq!(written.expect("the record write's outcome").record.fields["title"], "Engineer");
    let stored = store.runs.run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.current.as_deref(), Some("second"));
    assert_eq!(store.runs.journal(run.id).await.unwrap().len(), 1);

    // A step whose record change cannot apply (the record is gone) writes nothing at all.
    let mut failing = stored.clone();
    failing.current = Some("third".into());
    failing.next_seq = 2;
    let missing = Uuid::now_v7();
    let write = RecordWrite { id: Some(missing), changes, source: "workflow:w".into(), at: "t".into() };
    let err = store.runs.save_step(&failing, Some(&entry(1, "second")), Some(write)).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::NotFound, "{err}");
    let after = store.runs.run(run.id).await.unwrap().unwrap();
    assert_eq!(after.current.as_deref(), Some("second"), "the run did not move");
    assert_eq!(store.runs.journal(run.id).await.unwrap().len(), 1, "no journal entry was added");
    assert!(store.records.record(missing).await.unwrap().is_none());
}

/// Steps written at the same moment (a backend may apply them together) stand or fall each
/// on its own: one that cannot apply fails, and the others land.
pub async fn a_failing_step_among_concurrent_ones_fails_alone(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    let mut writers = Vec::new();
    for n in 0..32 {
        let (store, run) = (store.clone(), queued("w", &ann));
        writers.push(tokio::spawn(async move {
            let mut changes = Map::new();
            changes.insert(format!("field_{n}"), json!(n));
            // Every eighth step writes to a record that does not exist.
            let id = if n % 8 == 7 { Uuid::now_v7() } else { ann.id };
            let write = RecordWrite { id: Some(id), changes, source: "workflow:w".into(), at: "t".into() };
            let saved = store.runs.save_step(&run, Some(&entry(0, "first")), Some(write)).await;
            (n, run.id, saved.map(|_| ()).map_err(|e| e.kind))
        }));
    }
    for writer in writers {
        let (n, id, saved) = writer.await.unwrap();
        if n % 8 == 7 {
            assert_eq!(saved, Err(StoreErrorKind::NotFound), "step {n}");
            assert!(store.runs.run(id).await.unwrap().is_none(), "step {n} left nothing behind");
        } else {
            assert_eq!(saved, Ok(()), "step {n}");
            assert_eq!(store.runs.journal(id).await.unwrap().len(), 1, "step {n}");
        }
    }
    let fields = store.records.record(ann.id).await.unwrap().unwrap().fields;
    assert_eq!(fields.len(), 1 + 28, "the email and the 28 steps that could apply");
}

pub async fn create_once_lets_one_of_many_racing_creators_win(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    let mut racers = Vec::new();
    for _ in 0..16 {
        let (store, run) = (store.clone(), queued("w", &ann));
        racers.push(tokio::spawn(async move { store.runs.create_once(&run, "w:ann:2027-03-01").await.unwrap() }));
    }
    let mut created = 0;
    for racer in racers {
        created += usize::from(racer.await.unwrap());
    }
    assert_eq!(created, 1, "exactly one creator wins");
    assert_eq!(store.runs.runs(&RunFilter::default()).await.unwrap().len(), 1);
    assert_eq!(store.queue.queued_count().await.unwrap(), 1);
}

pub async fn sixteen_claimers_never_take_one_run_twice(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    let mut ids = BTreeSet::new();
    for _ in 0..64 {
        let run = queued("w", &ann);
        ids.insert(run.id);
        store.runs.save_step(&run, None, None).await.unwrap();
    }
    let mut claimers = Vec::new();
    for n in 0..16 {
        let store = store.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(run) =
                store.queue.claim(&claim_request(&format!("node-{n}"), Timestamp::now(), 60)).await.unwrap()
            {
                assert_eq!(run.state, RunState::Running);
                assert_eq!(run.lease.as_ref().map(|l| l.owner.clone()), Some(format!("node-{n}")));
                mine.push(run.id);
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.unwrap());
    }
    let unique: BTreeSet<Uuid> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), unique.len(), "a run was claimed twice");
    assert_eq!(unique, ids, "every run was claimed");
    assert_eq!(store.queue.queued_count().await.unwrap(), 0);
}

pub async fn an_expired_lease_is_reclaimed_and_the_old_claimer_refused(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    let run = queued("w", &ann);
    store.runs.save_step(&run, None, None).await.unwrap();
    let t0 = Timestamp::now();
    let first = store.queue.claim(&claim_request("a", t0, 30)).await.unwrap().expect("a claims");
    assert!(store.queue.claim(&claim_request("b", at(t0, 10), 30)).await.unwrap().is_none(), "a's lease is live");

    let second = store.queue.claim(&claim_request("b", at(t0, 31), 30)).await.unwrap().expect("b reclaims");
    assert_eq!(second.id, run.id);
    assert_eq!(second.lease.as_ref().unwrap().owner, "b");
    assert_ne!(second.lease.as_ref().unwrap().token, first.lease.as_ref().unwrap().token);

    // a wakes up and tries to write its step: refused, and nothing of it lands.
    let mut stale = first.clone();
    stale.current = Some("from-a".into());
    let err = store.runs.save_step(&stale, Some(&entry(0, "first")), None).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Conflict, "{err}");
    assert!(store.runs.journal(run.id).await.unwrap().is_empty());

    // b resumes at the same step and finishes.
    let mut done = second.clone();
    done.current = None;
    done.state = RunState::Succeeded;
    done.finished_at = Some(rfc3339_millis(Timestamp::now()));
    store.runs.save_step(&done, Some(&entry(0, "first")), None).await.unwrap();
    let stored = store.runs.run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.state, RunState::Succeeded);
    assert!(store.queue.claim(&claim_request("c", at(t0, 120), 30)).await.unwrap().is_none(), "nothing left");
}

pub async fn a_renewed_lease_is_not_reclaimed(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    for _ in 0..3 {
        store.runs.save_step(&queued("w", &ann), None, None).await.unwrap();
    }
    let t0 = Timestamp::now();
    for _ in 0..3 {
        store.queue.claim(&claim_request("a", t0, 30)).await.unwrap().expect("a claims");
    }
    assert_eq!(store.queue.renew_leases("a", at(t0, 90)).await.unwrap(), 3);
    assert_eq!(store.queue.renew_leases("nobody", at(t0, 90)).await.unwrap(), 0);
    assert!(store.queue.claim(&claim_request("b", at(t0, 60), 30)).await.unwrap().is_none(), "renewed leases hold");
    assert!(store.queue.claim(&claim_request("b", at(t0, 91), 30)).await.unwrap().is_some(), "until they expire");
}

pub async fn workflow_concurrency_limits_hold_across_claimers(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    for _ in 0..5 {
        store.runs.save_step(&queued("limited", &ann), None, None).await.unwrap();
    }
    store.runs.save_step(&queued("free", &ann), None, None).await.unwrap();
    let t0 = Timestamp::now();
    let limited = |owner: &str| {
        let mut request = claim_request(owner, t0, 60);
        request.limits.per_workflow.insert("limited".into(), 2);
        request
    };
    let mut held = Vec::new();
    for owner in ["a", "b", "a", "b", "a"] {
        if let Some(run) = store.queue.claim(&limited(owner)).await.unwrap() {
            held.push(run);
        }
    }
    let of = |w: &str| held.iter().filter(|r| r.workflow == w).count();
    assert_eq!(of("limited"), 2, "two runs of `limited` at once, across both claimers");
    assert_eq!(of("free"), 1, "the limit does not hold back other workflows");
    assert!(store.queue.claim(&limited("c")).await.unwrap().is_none());

    // One finishes: one more may start.
    let mut done = held.into_iter().find(|r| r.workflow == "limited").unwrap();
    done.state = RunState::Succeeded;
    done.current = None;
    store.runs.save_step(&done, None, None).await.unwrap();
    let next = store.queue.claim(&limited("c")).await.unwrap().expect("a slot opened");
    assert_eq!(next.workflow, "limited");
    assert!(store.queue.claim(&limited("c")).await.unwrap().is_none());
}

pub async fn scheduler_marks_change_only_by_compare_and_set(store: Store) {
    let fire = Mark::ScheduleFired { workflow: "onboard".into() };
    assert_eq!(store.scheduler.mark(&fire).await.unwrap(), None);
    assert!(store.scheduler.set_mark(&fire, None, Some("2027-03-01T09:00:00Z")).await.unwrap());
    assert!(!store.scheduler.set_mark(&fire, None, Some("2027-03-02T09:00:00Z")).await.unwrap(), "stale expectation");
    assert_eq!(store.scheduler.mark(&fire).await.unwrap().as_deref(), Some("2027-03-01T09:00:00Z"));

    // Sixteen schedulers see the same fire; one moves the mark on.
    let mut racers = Vec::new();
    for n in 0..16 {
        let (store, fire) = (store.clone(), fire.clone());
        racers.push(tokio::spawn(async move {
            let next = format!("2027-03-02T09:00:{n:02}Z");
            store.scheduler.set_mark(&fire, Some("2027-03-01T09:00:00Z"), Some(&next)).await.unwrap()
        }));
    }
    let mut won = 0;
    for racer in racers {
        won += usize::from(racer.await.unwrap());
    }
    assert_eq!(won, 1);

    let other = Mark::EventCursor;
    assert_eq!(store.scheduler.mark(&other).await.unwrap(), None, "marks are separate");
    let now = store.scheduler.mark(&fire).await.unwrap();
    assert!(store.scheduler.set_mark(&fire, now.as_deref(), None).await.unwrap(), "a mark can be cleared");
    assert_eq!(store.scheduler.mark(&fire).await.unwrap(), None);
}

pub async fn events_come_in_order_after_a_cursor(store: Store) {
    let mut made = Vec::new();
    for n in 0..25 {
        made.push(person(&store, &format!("p{n}@acme.test")).await.id);
    }
    let first = store.events.events(None, 10).await.unwrap();
    assert_eq!(first.len(), 10);
    let rest = store.events.events(Some(first.last().unwrap().id), 100).await.unwrap();
    assert_eq!(rest.len(), 15);
    let all: Vec<_> = first.iter().chain(&rest).collect();
    let ids: Vec<Uuid> = all.iter().map(|e| e.record_id).collect();
    assert_eq!(ids, made, "events come in the order the writes happened");
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "event ids grow");
    assert!(all.iter().all(|e| e.kind == crate::model::EventKind::Created));
    assert!(store.events.events(Some(rest.last().unwrap().id), 10).await.unwrap().is_empty());
}

pub async fn a_waiting_run_is_claimable_once_its_timer_is_due(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    let t0 = Timestamp::now();
    let mut run = queued("w", &ann);
    run.state = RunState::Waiting;
    run.wake_at = Some(rfc3339_millis(at(t0, 3600)));
    store.runs.save_step(&run, None, None).await.unwrap();
    let mut later = queued("w", &ann);
    later.state = RunState::Waiting;
    later.wake_at = Some(rfc3339_millis(at(t0, 7200)));
    store.runs.save_step(&later, None, None).await.unwrap();

    let due = store.queue.next_timer().await.unwrap().expect("a timer");
    assert_eq!(due.as_millisecond(), at(t0, 3600).as_millisecond());
    assert!(store.queue.claim(&claim_request("a", at(t0, 3599), 60)).await.unwrap().is_none(), "not yet due");
    let woke = store.queue.claim(&claim_request("a", at(t0, 3601), 60)).await.unwrap().expect("due");
    assert_eq!(woke.id, run.id);
    assert_eq!(woke.state, RunState::Running);
    assert!(store.queue.claim(&claim_request("a", at(t0, 3602), 60)).await.unwrap().is_none(), "the other waits on");
    assert_eq!(
        store.queue.next_timer().await.unwrap().map(|t| t.as_millisecond()),
        Some(at(t0, 7200).as_millisecond())
    );
}

pub async fn pruning_removes_old_finished_runs_and_their_journals_only(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    let t0 = Timestamp::now();
    let finished = |run: &mut Run, when: Timestamp| {
        run.state = RunState::Succeeded;
        run.current = None;
        run.finished_at = Some(rfc3339_millis(when));
    };
    let mut old = queued_at("w", &ann, at(t0, -101 * 86400));
    store.runs.create_once(&old, "w:ann:old").await.unwrap();
    finished(&mut old, at(t0, -100 * 86400));
    store.runs.save_step(&old, Some(&entry(0, "first")), None).await.unwrap();
    // Started before the cutoff, finished after it: kept.
    let mut recent = queued_at("w", &ann, at(t0, -95 * 86400));
    finished(&mut recent, at(t0, -86400));
    store.runs.save_step(&recent, Some(&entry(0, "first")), None).await.unwrap();
    let open = queued("w", &ann);
    store.runs.save_step(&open, None, None).await.unwrap();

    let cutoff = at(t0, -90 * 86400);
    assert_eq!(store.runs.prune_finished(cutoff, 100).await.unwrap(), 1);
    assert!(store.runs.run(old.id).await.unwrap().is_none());
    assert!(store.runs.journal(old.id).await.unwrap().is_empty(), "its journal went with it");
    assert!(store.runs.run(recent.id).await.unwrap().is_some());
    assert_eq!(store.runs.journal(recent.id).await.unwrap().len(), 1);
    assert!(store.runs.run(open.id).await.unwrap().is_some());
    assert_eq!(store.runs.prune_finished(cutoff, 100).await.unwrap(), 0, "nothing more to prune");
    assert!(!store.runs.create_once(&queued("w", &ann), "w:ann:old").await.unwrap(), "a pruned run never fires again");
}

pub async fn records_are_found_by_field_with_or_without_an_index(store: Store) {
    let ann = person(&store, "Ann@Acme.test").await;
    let mut changes = Map::new();
    changes.insert("start_date".into(), json!("2027-03-01"));
    let write = RecordWrite { id: Some(ann.id), changes, source: "import".into(), at: "t".into() };
    store.records.write_record(write).await.unwrap();
    person(&store, "bob@acme.test").await;

    let by_email = store.records.records_by_field("email", " ann@ACME.test ").await.unwrap();
    assert_eq!(by_email.iter().map(|r| r.id).collect::<Vec<_>>(), [ann.id], "emails ignore case and space");
    let scanned = store.records.records_by_field("start_date", "2027-03-01").await.unwrap();
    store.records.index_field("start_date").await.unwrap();
    let indexed = store.records.records_by_field("start_date", "2027-03-01").await.unwrap();
    assert_eq!(scanned, indexed, "an index changes nothing but speed");
    assert_eq!(indexed.len(), 1);
    assert_eq!(store.records.count_records().await.unwrap(), 2);
}

pub async fn runs_are_listed_by_filter_newest_first(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    let bob = person(&store, "bob@acme.test").await;
    let mut ids = Vec::new();
    let t0 = Timestamp::now();
    for (n, (workflow, record)) in [("a", &ann), ("b", &ann), ("a", &bob)].into_iter().enumerate() {
        let run = queued_at(workflow, record, at(t0, n as i64));
        ids.push(run.id);
        store.runs.save_step(&run, None, None).await.unwrap();
    }
    let of_a = store.runs.runs(&RunFilter { workflow: Some("a".into()), ..Default::default() }).await.unwrap();
    assert_eq!(of_a.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[2], ids[0]]);
    let of_ann =
        store.runs.runs(&RunFilter { record_id: Some(ann.id), limit: Some(1), ..Default::default() }).await.unwrap();
    assert_eq!(of_ann.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[1]]);
    assert_eq!(store.runs.unfinished_runs().await.unwrap().len(), 3);
    let unfinished: Arc<[Uuid]> = store.runs.unfinished_runs().await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(&*unfinished, &ids[..], "oldest first");
}

pub async fn nodes_are_listed_with_their_last_heartbeat_and_the_runs_they_hold(store: Store) {
    assert!(store.queue.nodes().await.unwrap().is_empty());
    let ann = person(&store, "ann@acme.test").await;
    for _ in 0..3 {
        store.runs.save_step(&queued("w", &ann), None, None).await.unwrap();
    }
    let t0 = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
    store.queue.beat("a", t0).await.unwrap();
    store.queue.beat("b", t0).await.unwrap();
    store.queue.beat("a", at(t0, 5)).await.unwrap();
    store.queue.beat("a", t0).await.unwrap(); // a late beat never moves time back
    for owner in ["a", "a", "b"] {
        store.queue.claim(&claim_request(owner, t0, 30)).await.unwrap().expect("a run to claim");
    }
    let mut nodes = store.queue.nodes().await.unwrap();
    nodes.sort_by(|x, y| x.node.cmp(&y.node));
    let seen: Vec<_> = nodes.iter().map(|n| (n.node.as_str(), n.last_heartbeat, n.runs_held)).collect();
    assert_eq!(seen, [("a", at(t0, 5), 2), ("b", t0, 1)]);

    // A run that ends gives its lease up, and the node holds one run fewer.
    let mut held = store.runs.runs(&RunFilter::default()).await.unwrap();
    held.retain(|r| r.lease.as_ref().is_some_and(|l| l.owner == "b"));
    let mut done = held.remove(0);
    done.state = RunState::Succeeded;
    done.current = None;
    done.finished_at = Some(rfc3339_millis(Timestamp::now()));
    store.runs.save_step(&done, None, None).await.unwrap();
    let b = store.queue.nodes().await.unwrap().into_iter().find(|n| n.node == "b").unwrap();
    assert_eq!(b.runs_held, 0);
}

/// A stored record and a queued run for it (unstored), for a backend's own tests.
pub async fn queued_for_tests(store: &Store) -> Run {
    let ann = person(store, "ann@acme.test").await;
    queued("w", &ann)
}

/// A claim request made now, for a backend's own tests.
pub fn claim_for_tests(owner: &str, lease_secs: u64) -> ClaimRequest {
    claim_request(owner, Timestamp::now(), lease_secs)
}
