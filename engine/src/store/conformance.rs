//! The store contract's test suite. Every backend runs all of it, each case on a fresh
//! store: `roster_engine::conformance_suite!(async { (store, guard) })` expands to one test per
//! case (see `engine/tests/store_sled.rs`). A case panics with what the backend got wrong.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{
    ClaimRequest, ConcurrencyLimits, ItemKind, KeyMatch, KeyQuery, Mark, RecordWrite, RunFilter, Store, StoreCounts,
    StoreErrorKind, StoredItem, copy_store,
};
use crate::clock::rfc3339_millis;
use crate::model::{CredentialKind, JournalEntry, Record, Run, RunState, StoredCredential, SyncSession};

/// Expands to one `#[tokio::test]` per conformance case. `$fresh` is an expression that
/// evaluates to a future of `(Store, guard)`, evaluated once per store a case needs (a copy
/// needs two); each guard (e.g. a temp folder) lives as long as the test.
#[macro_export]
macro_rules! conformance_suite {
    ($fresh:expr) => {
        $crate::conformance_suite!(@pairs $fresh;
            a_store_copied_into_an_empty_one_holds_the_same_of_everything,
            copying_into_a_store_that_holds_anything_is_refused,
        );
        $crate::conformance_suite!(@cases $fresh;
            an_export_in_small_pages_visits_every_item_once,
            a_step_is_written_whole_or_not_at_all,
            several_steps_are_written_whole_or_not_at_all,
            a_step_written_again_replaces_its_entry_when_the_run_finishes,
            a_failing_step_among_concurrent_ones_fails_alone,
            create_once_lets_one_of_many_racing_creators_win,
            sixteen_claimers_never_take_one_run_twice,
            an_expired_lease_is_reclaimed_and_the_old_claimer_refused,
            a_renewed_lease_is_not_reclaimed,
            renewing_leases_never_undoes_a_step_saved_meanwhile,
            a_reclaim_never_undoes_a_step_the_old_claimer_saved_meanwhile,
            workflow_concurrency_limits_hold_across_claimers,
            scheduler_marks_change_only_by_compare_and_set,
            events_come_in_order_after_a_cursor,
            a_waiting_run_is_claimable_once_its_timer_is_due,
            pruning_removes_old_finished_runs_and_their_journals_only,
            a_finished_runs_journal_reads_back_whole_after_a_retry_and_in_pages,
            records_are_found_by_field_with_or_without_an_index,
            records_are_found_by_key_queries_alike_with_or_without_an_index,
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
    (@pairs $fresh:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (first, _first_guard) = $fresh.await;
                let (second, _second_guard) = $fresh.await;
                $crate::store::conformance::$case(first, second).await;
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

/// Several journal entries in one write (steps that waited for the next durable write)
/// land with the head and the record change, in order, or none of them does.
pub async fn several_steps_are_written_whole_or_not_at_all(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    let mut run = queued("w", &ann);
    store.runs.save_step(&run, None, None).await.unwrap();
    run.state = RunState::Running;
    let changes = |v: &str| Map::from_iter([("title".to_string(), json!(v))]);
    let write = |id, v| RecordWrite { id: Some(id), changes: changes(v), source: "workflow:w".into(), at: "t".into() };

    // A write whose record change cannot apply (the record is gone) leaves nothing of it.
    let mut failing = run.clone();
    (failing.current, failing.next_seq) = (Some("fourth".into()), 3);
    let entries = [entry(0, "first"), entry(1, "second"), entry(2, "third")];
    let err = store.runs.save_steps(&failing, &entries, Some(write(Uuid::now_v7(), "x"))).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::NotFound, "{err}");
    assert_eq!(
        store.runs.run(run.id).await.unwrap().unwrap().current.as_deref(),
        Some("first"),
        "the run did not move"
    );
    assert!(store.runs.journal(run.id).await.unwrap().is_empty(), "no entry of the three was added");

    (run.current, run.next_seq) = (Some("fourth".into()), 3);
    store.runs.save_steps(&run, &entries, Some(write(ann.id, "Engineer"))).await.unwrap();
    let blocks: Vec<String> = store.runs.journal(run.id).await.unwrap().into_iter().map(|e| e.block).collect();
    assert_eq!(blocks, ["first", "second", "third"]);
    assert_eq!(store.records.record(ann.id).await.unwrap().unwrap().fields["title"], "Engineer");

    // Finishing with several entries keeps every one, the earlier ones first.
    (run.current, run.next_seq, run.state) = (None, 5, RunState::Succeeded);
    run.finished_at = Some(rfc3339_millis(Timestamp::now()));
    store.runs.save_steps(&run, &[entry(3, "fourth"), entry(4, "fifth")], None).await.unwrap();
    let seqs: Vec<u32> = store.runs.journal(run.id).await.unwrap().into_iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    assert_eq!(store.runs.run(run.id).await.unwrap().unwrap().state, RunState::Succeeded);
}

/// A call unsafe to resend is journaled as started, then written again when answered; when
/// that answer also ends the run, the journal holds the answer alone.
pub async fn a_step_written_again_replaces_its_entry_when_the_run_finishes(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    let mut run = queued("w", &ann);
    run.state = RunState::Running;
    run.next_seq = 1;
    let mut started = entry(0, "charge");
    started.phase = crate::model::StepPhase::Started;
    store.runs.save_step(&run, Some(&started), None).await.unwrap();
    (run.current, run.state) = (None, RunState::Succeeded);
    run.finished_at = Some(rfc3339_millis(Timestamp::now()));
    store.runs.save_step(&run, Some(&entry(0, "charge")), None).await.unwrap();
    let journal = store.runs.journal(run.id).await.unwrap();
    let phases: Vec<_> = journal.iter().map(|e| (e.seq, e.phase)).collect();
    assert_eq!(phases, [(0, crate::model::StepPhase::Finished)], "{journal:?}");
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

/// A heartbeat renewing leases while the claimer saves steps: every step and every finish
/// stays as the claimer wrote it (a renewal from a copy read before a step would put the
/// run back at that step, and a finished run back to running).
pub async fn renewing_leases_never_undoes_a_step_saved_meanwhile(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    let mut runs = Vec::new();
    for _ in 0..24 {
        store.runs.save_step(&queued("w", &ann), None, None).await.unwrap();
        runs.push(store.queue.claim(&claim_request("a", Timestamp::now(), 60)).await.unwrap().expect("a claims"));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                store.queue.renew_leases("a", at(Timestamp::now(), 60)).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut steppers = Vec::new();
    for run in runs.clone() {
        let store = store.clone();
        steppers.push(tokio::spawn(async move {
            let mut run = run;
            for seq in 0..4 {
                run.current = Some(format!("step-{}", seq + 1));
                run.next_seq = seq + 1;
                if seq == 3 {
                    (run.current, run.state) = (None, RunState::Succeeded);
                    run.finished_at = Some(rfc3339_millis(Timestamp::now()));
                }
                store.runs.save_step(&run, Some(&entry(seq, &format!("step-{seq}"))), None).await.unwrap();
            }
        }));
    }
    for stepper in steppers {
        stepper.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    renewer.await.unwrap();
    for run in &runs {
        let stored = store.runs.run(run.id).await.unwrap().unwrap();
        assert_eq!((stored.state, stored.next_seq), (RunState::Succeeded, 4), "run {} was put back", run.id);
    }
    assert_eq!(
        store.queue.renew_leases("a", at(Timestamp::now(), 60)).await.unwrap(),
        0,
        "finished runs hold no lease"
    );
    assert!(store.queue.claim(&claim_request("b", at(Timestamp::now(), 120), 30)).await.unwrap().is_none());
}

/// A claimer whose lease ran out keeps saving steps while another takes the run over: the
/// new claimer gets the run at the last step the old one saved, never an older copy.
pub async fn a_reclaim_never_undoes_a_step_the_old_claimer_saved_meanwhile(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    for _ in 0..12 {
        let run = queued("w", &ann);
        store.runs.save_step(&run, None, None).await.unwrap();
        let past = at(Timestamp::now(), -1);
        let request = ClaimRequest { lease: Duration::ZERO, ..claim_request("a", past, 0) };
        let mut held = store.queue.claim(&request).await.unwrap().expect("a claims");
        let old_claimer = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut saved = 0;
                for seq in 0..10_000 {
                    held.current = Some(format!("step-{}", seq + 1));
                    held.next_seq = seq + 1;
                    match store.runs.save_step(&held, Some(&entry(seq, &format!("step-{seq}"))), None).await {
                        Ok(_) => saved = seq + 1,
                        Err(e) if e.kind == StoreErrorKind::Conflict => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                saved
            })
        };
        let taken = loop {
            if let Some(run) = store.queue.claim(&claim_request("b", Timestamp::now(), 60)).await.unwrap() {
                break run;
            }
        };
        let saved = old_claimer.await.unwrap();
        assert_eq!(taken.next_seq, saved, "b got run {} at an older step than a saved", run.id);
        assert_eq!(store.runs.journal(run.id).await.unwrap().len() as u32, saved);
    }
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

/// A backend may keep a finished run's journal differently (sled packs it into one value):
/// it still reads back whole and in order, also after the run is retried and finishes
/// again, is exported in pages of any size once per entry, counted, and pruned.
pub async fn a_finished_runs_journal_reads_back_whole_after_a_retry_and_in_pages(store: Store) {
    let ann = person(&store, "ann@acme.test").await;
    let mut run = queued("w", &ann);
    store.runs.create_once(&run, "w:ann:journal").await.unwrap();
    let step = async |run: &mut Run, seq: u32, state: RunState| {
        run.state = state;
        run.next_seq = seq + 1;
        run.finished_at = state.is_finished().then(|| rfc3339_millis(Timestamp::now()));
        store.runs.save_step(run, Some(&entry(seq, &format!("b{seq}"))), None).await.unwrap();
    };
    let seqs = async |run: Uuid| store.runs.journal(run).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>();
    step(&mut run, 0, RunState::Running).await;
    step(&mut run, 1, RunState::Running).await;
    step(&mut run, 2, RunState::Failed).await;
    assert_eq!(seqs(run.id).await, [0, 1, 2]);
    // `runs retry`: the run goes on from its failed block, and fails again.
    step(&mut run, 3, RunState::Running).await;
    assert_eq!(seqs(run.id).await, [0, 1, 2, 3], "a retried run's new entries come after its finished journal");
    step(&mut run, 4, RunState::Failed).await;
    let journal = store.runs.journal(run.id).await.unwrap();
    assert_eq!(journal.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(journal[3].block, "b3");
    let mut other = queued("w", &ann);
    step(&mut other, 0, RunState::Running).await;
    step(&mut other, 1, RunState::Succeeded).await;

    let whole = store.transfer.export(ItemKind::JournalEntries, None, 100).await.unwrap();
    assert_eq!(whole.len(), 7, "{whole:#?}");
    for page in 1..=4 {
        assert_eq!(everything(&store, ItemKind::JournalEntries, page).await, whole, "in pages of {page}");
    }
    assert_eq!(store.transfer.counts().await.unwrap().journal_entries, 7);
    let later = at(Timestamp::now(), 60);
    assert_eq!(store.runs.prune_finished(later, 100).await.unwrap(), 2);
    assert!(store.runs.journal(run.id).await.unwrap().is_empty());
    assert_eq!(store.transfer.counts().await.unwrap().journal_entries, 0);
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

pub async fn records_are_found_by_key_queries_alike_with_or_without_an_index(store: Store) {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let long = "L".repeat(600);
    let values: Vec<(&str, Value)> = vec![
        ("d1", json!("2027-03-01")),
        ("d2", json!("2027-03-02")),
        ("d3", json!("2027-03-03")),
        ("basic", json!("20270302")),
        ("stamp", json!("2027-03-02T10:00:00Z")),
        ("pct", json!("100%")),
        ("under", json!("100_")),
        ("pct-under-slash", json!("100%_off\\")),
        ("slash", json!("100\\")),
        ("x", json!("100x")),
        ("digits", json!("1000")),
        ("E-acute", json!("École")),
        ("e-acute", json!("école")),
        ("nihon", json!("日本")),
        ("nihongo", json!("日本語")),
        ("last-char", json!("\u{10FFFF}x")),
        ("ann", json!("Ann@Acme.test")),
        ("padded", json!("  padded ")),
        ("long", json!(long)),
        ("long-email", json!(format!("{long}@X.test"))),
        ("nul", json!("nul\u{0}byte")),
        ("number", json!(42)),
        ("bool", json!(true)),
        ("null", json!(null)),
        ("list", json!(["2027-03-01"])),
        ("blank", json!("   ")),
    ];
    let mut ids = HashMap::new();
    for (name, value) in &values {
        let mut changes = Map::new();
        changes.insert("name".into(), json!(name));
        changes.insert("code".into(), value.clone());
        changes.insert("team".into(), json!(if ["d1", "d2", "nihon"].contains(name) { "eng" } else { "ops" }));
        let write = RecordWrite { id: None, changes, source: "import".into(), at: "t".into() };
        ids.insert(store.records.write_record(write).await.unwrap().record.id, *name);
    }
    let mut unnamed = Map::new();
    unnamed.insert("name".into(), json!("missing"));
    store
        .records
        .write_record(RecordWrite { id: None, changes: unnamed, source: "i".into(), at: "t".into() })
        .await
        .unwrap();

    let code = |matches: KeyMatch| KeyQuery { field: "code".into(), matches };
    let range = |lower, upper| code(KeyMatch::Range { lower, upper });
    let s = |t: &str| t.to_string();
    let cases: Vec<(Vec<KeyQuery>, Vec<&str>)> = vec![
        (vec![code(KeyMatch::Equals(s(" ANN@acme.TEST ")))], vec!["ann"]),
        (vec![code(KeyMatch::Equals(s("padded")))], vec!["padded"]),
        (vec![code(KeyMatch::Equals(s("42")))], vec!["number"]),
        (vec![code(KeyMatch::Equals(s("true")))], vec!["bool"]),
        (vec![code(KeyMatch::Equals(long.clone()))], vec!["long"]),
        (vec![code(KeyMatch::OneOf(vec![s("100%"), s("日本"), s("nope"), s("100%")]))], vec!["pct", "nihon"]),
        (vec![code(KeyMatch::OneOf(vec![]))], vec![]),
        // LIKE's metacharacters are plain text in a prefix.
        (vec![code(KeyMatch::StartsWith(s("100%")))], vec!["pct", "pct-under-slash"]),
        (vec![code(KeyMatch::StartsWith(s("100_")))], vec!["under"]),
        (vec![code(KeyMatch::StartsWith(s("100\\")))], vec!["slash"]),
        (vec![code(KeyMatch::StartsWith(s("日本")))], vec!["nihon", "nihongo"]),
        (vec![code(KeyMatch::StartsWith(s("\u{10FFFF}")))], vec!["last-char"]),
        // Long values and values with NUL, which a backend may keep hashed, are found too.
        (vec![code(KeyMatch::StartsWith(s("LLLL")))], vec!["long"]),
        (vec![code(KeyMatch::StartsWith(format!("{}@x", long.to_lowercase())))], vec!["long-email"]),
        (vec![code(KeyMatch::StartsWith(s("nul")))], vec!["nul"]),
        (vec![range(Included(s("nul\u{0}")), Excluded(s("nul\u{1}")))], vec!["nul"]),
        (vec![range(Included(s("2027-03-01")), Included(s("2027-03-02")))], vec!["d1", "d2"]),
        (vec![range(Excluded(s("2027-03-01")), Excluded(s("2027-03-03")))], vec!["d2", "stamp"]),
        // Below "1000" only what has a byte below '0' after "100" ('%'; not '_', '\\', 'x').
        (
            vec![range(Excluded(s("2027-03-02")), Unbounded), range(Unbounded, Excluded(s("1000")))],
            vec![
                "d3",
                "basic",
                "stamp",
                "pct",
                "pct-under-slash",
                "E-acute",
                "e-acute",
                "nihon",
                "nihongo",
                "last-char",
                "ann",
                "padded",
                "long",
                "long-email",
                "nul",
                "number",
                "bool",
            ],
        ),
        // Byte order: `É` (U+00C9) sorts before `é` (U+00E9), both after ASCII.
        (vec![range(Included(s("é")), Unbounded)], vec!["e-acute", "nihon", "nihongo", "last-char"]),
        (vec![range(Included(s("2027-03-03")), Excluded(s("2027-03-01")))], vec![]),
        // A union finds each record once, whichever fields it is found by.
        (
            vec![
                code(KeyMatch::StartsWith(s("2027-03"))),
                KeyQuery { field: "team".into(), matches: KeyMatch::Equals(s("eng")) },
            ],
            vec!["d1", "d2", "d3", "stamp", "nihon"],
        ),
        (vec![], vec![]),
    ];
    let check = |found: Vec<Record>, queries: &[KeyQuery], expected: &[&str], how: &str| {
        let names: BTreeSet<&str> = found.iter().map(|r| ids[&r.id]).collect();
        assert_eq!(names, expected.iter().copied().collect(), "{how}: {queries:?}");
        assert_eq!(found.len(), names.len(), "{how}: each record once: {queries:?}");
        assert!(found.windows(2).all(|w| w[0].id < w[1].id), "{how}: in id order: {queries:?}");
    };
    for (queries, expected) in &cases {
        check(store.records.records_by_keys(queries).await.unwrap(), queries, expected, "scanned");
    }
    store.records.index_field("code").await.unwrap();
    store.records.index_field("team").await.unwrap();
    for (queries, expected) in &cases {
        check(store.records.records_by_keys(queries).await.unwrap(), queries, expected, "indexed");
    }

    // A write moves a record from one range to another.
    let d1 = *ids.iter().find(|(_, n)| **n == "d1").unwrap().0;
    let mut changes = Map::new();
    changes.insert("code".into(), json!("2027-04-01"));
    store
        .records
        .write_record(RecordWrite { id: Some(d1), changes, source: "i".into(), at: "t".into() })
        .await
        .unwrap();
    let march = [range(Included(s("2027-03-01")), Excluded(s("2027-03-04")))];
    check(store.records.records_by_keys(&march).await.unwrap(), &march, &["d2", "d3", "stamp"], "after a write");
    let april = [code(KeyMatch::StartsWith(s("2027-04")))];
    check(store.records.records_by_keys(&april).await.unwrap(), &april, &["d1"], "after a write");
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

pub async fn a_store_copied_into_an_empty_one_holds_the_same_of_everything(original: Store, copy: Store) {
    let fixture = fill_for_copy(&original).await;
    let mut reported = HashMap::new();
    let report = copy_store(&original, &copy, |kind, copied| {
        reported.insert(kind, copied);
    })
    .await
    .expect("the copy succeeds");
    assert_eq!(report.source, FILLED_FOR_COPY, "what the source holds");
    assert_eq!(report.target, report.source, "the copy holds as much of everything");
    assert_eq!(reported.len(), ItemKind::ALL.len(), "progress names every kind: {reported:?}");
    for (kind, count) in report.source.by_kind() {
        assert_eq!(reported[&kind], count, "progress of {kind}");
    }
    assert_copied(&original, &copy, &fixture).await;
}

pub async fn copying_into_a_store_that_holds_anything_is_refused(from: Store, to: Store) {
    person(&from, "ann@acme.test").await;
    to.scheduler.set_mark(&Mark::EventCursor, None, Some(&Uuid::now_v7().to_string())).await.unwrap();
    let err = copy_store(&from, &to, |_, _| {}).await.expect_err("a target holding a mark is refused");
    assert_eq!(err.kind, StoreErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("the target store already holds 1 mark; copy only into an empty store"), "{err}");
    person(&to, "bob@acme.test").await;
    let err = copy_store(&from, &to, |_, _| {}).await.expect_err("a target holding a record is refused");
    assert!(err.to_string().contains("already holds 1 record, 1 event, 1 mark;"), "{err}");
    assert_eq!(to.records.count_records().await.unwrap(), 1, "nothing was copied");
}

pub async fn an_export_in_small_pages_visits_every_item_once(store: Store) {
    fill_for_copy(&store).await;
    let counts = store.transfer.counts().await.unwrap();
    for kind in ItemKind::ALL {
        let whole = store.transfer.export(kind, None, 10_000).await.unwrap();
        assert!(whole.iter().all(|item| item.kind() == kind), "only {kind}");
        assert_eq!(everything(&store, kind, 2).await, whole, "{kind} in pages of two");
        if let Some((_, n)) = counts.by_kind().into_iter().find(|(k, _)| *k == kind) {
            assert_eq!(whole.len() as u64, n, "counted {kind}");
        }
    }
    let events: Vec<StoredItem> =
        store.events.events(None, 1000).await.unwrap().into_iter().map(StoredItem::Event).collect();
    assert_eq!(everything(&store, ItemKind::Events, 3).await, events, "events come in the order readers get them");
    let record = store.transfer.export(ItemKind::Records, None, 1).await.unwrap();
    let err = store.transfer.export(ItemKind::Runs, record.first(), 10).await.expect_err("a cursor of another kind");
    assert_eq!(err.kind, StoreErrorKind::Conflict, "{err}");
}

/// What [`fill_for_copy`] stores.
pub const FILLED_FOR_COPY: StoreCounts = StoreCounts {
    records: 7,
    events: 8,
    runs: 4,
    journal_entries: 3,
    dedupe_keys: 1,
    marks: 4,
    sessions: 2,
    credentials: 1,
    workflow_sources: 1,
};

const COPIED_SOURCE_HASH: &str = "5e1f0c0a7d3b9e2f";

/// What [`fill_for_copy`] stored that must keep working in a copy, not only be there.
pub struct CopyFixture {
    /// Written by two sources, with an indexed field.
    pub ann: Uuid,
    /// A run leased to a claimer that is gone, two steps in.
    pub leased_run: Uuid,
    /// The key its trigger created it under.
    pub dedupe_key: String,
}

/// Stores some of everything ([`FILLED_FOR_COPY`]): records with provenance from two sources
/// and an indexed field, their events, a leased run with its journal and dedupe key, a
/// waiting, a finished and a queued run, scheduler marks with the event cursor mid-way, sync
/// sessions, a sealed credential and a workflow source.
pub async fn fill_for_copy(store: &Store) -> CopyFixture {
    store.records.index_field("badge").await.unwrap();
    let write = |id, fields: Value, source: &str, at: &str| RecordWrite {
        id,
        changes: fields.as_object().cloned().unwrap_or_default(),
        source: source.into(),
        at: at.into(),
    };
    let fields = json!({"email": "ann@acme.test", "badge": "A-1"});
    let ann =
        store.records.write_record(write(None, fields, "import", "2027-03-01T09:00:00.000Z")).await.unwrap().record;
    let title = write(Some(ann.id), json!({"title": "Engineer"}), "sync:hr", "2027-03-02T09:00:00.000Z");
    store.records.write_record(title).await.unwrap();
    for n in 0..6 {
        person(store, &format!("p{n}@acme.test")).await;
    }

    let dedupe_key = format!("onboard:{}:2027-03-01", ann.id);
    assert!(store.runs.create_once(&queued("onboard", &ann), &dedupe_key).await.unwrap());
    let now = Timestamp::now();
    let mut leased = store.queue.claim(&claim_request("gone-node", now, 3600)).await.unwrap().expect("claims the run");
    for seq in 0..2 {
        leased.next_seq = seq + 1;
        store.runs.save_step(&leased, Some(&entry(seq, "first")), None).await.unwrap();
    }
    let mut waiting = queued("remind", &ann);
    waiting.state = RunState::Waiting;
    waiting.wake_at = Some(rfc3339_millis(at(now, 3600)));
    store.runs.save_step(&waiting, None, None).await.unwrap();
    let mut done = queued("w", &ann);
    done.state = RunState::Succeeded;
    done.current = None;
    done.finished_at = Some(rfc3339_millis(now));
    store.runs.save_step(&done, Some(&entry(0, "first")), None).await.unwrap();
    store.runs.save_step(&queued("w", &ann), None, None).await.unwrap();

    let events = store.events.events(None, 3).await.unwrap();
    let marks = [
        (Mark::EventCursor, events[2].id.to_string()),
        (Mark::ScheduleFired { workflow: "onboard".into() }, "2027-03-01T09:00:00Z".into()),
        (Mark::SyncFired { integration: "hr".into() }, "2027-03-01T06:00:00Z".into()),
        (Mark::Batch { workflow: "w".into() }, Uuid::now_v7().to_string()),
    ];
    for (mark, value) in marks {
        assert!(store.scheduler.set_mark(&mark, None, Some(&value)).await.unwrap());
    }
    for (integration, state) in [("hr", "succeeded"), ("brex", "failed")] {
        let session: SyncSession = serde_json::from_value(json!({
            "id": Uuid::now_v7(), "integration": integration, "connector": integration, "state": state,
            "test": false, "started_at": "2027-03-01T06:00:00.000Z", "counts": {"fetched": 2, "created": 1,
            "updated": 1, "unchanged": 0, "filtered": 0, "skipped": 0, "failed": 0, "missing": 0},
            "failures": [{"who": "p9", "reason": "no email"}], "samples": [{"id": 9}],
        }))
        .expect("a sync session");
        store.syncs.put_session(&session).await.unwrap();
    }
    let credential = StoredCredential {
        name: "hr".into(),
        kind: CredentialKind::Bearer,
        base_url: "https://hr.example.test".into(),
        settings: [("header".to_string(), "Authorization".to_string())].into(),
        sealed: "bm9uY2Utbm9uY2Utbm9uY2UtbgpjaXBoZXJ0ZXh0".into(),
        created_at: "2027-02-01T09:00:00.000Z".into(),
        updated_at: None,
    };
    store.credentials.put_credential(&credential).await.unwrap();
    store.workflows.put_source(COPIED_SOURCE_HASH, "name: onboard\nsteps: []\n").await.unwrap();
    CopyFixture { ann: ann.id, leased_run: leased.id, dedupe_key }
}

/// Asserts that `copy` holds what `original` holds, item by item, and that it works on
/// from there: lookups by an indexed field, the event cursor, dedupe keys, timers, the queue,
/// and the run `original` had leased, which `copy` hands to its next claim. Claims from `copy`.
pub async fn assert_copied(original: &Store, copy: &Store, fixture: &CopyFixture) {
    for kind in ItemKind::ALL {
        let (expected, copied) = (everything(original, kind, 100).await, everything(copy, kind, 100).await);
        if kind == ItemKind::Events {
            assert_eq!(copied, expected, "the events, in order");
        } else {
            // Backends may order names differently (byte order or the database's collation).
            assert_eq!(copied.len(), expected.len(), "{kind}");
            assert!(expected.iter().all(|item| copied.contains(item)), "{kind}: {copied:#?}\nis not\n{expected:#?}");
        }
    }
    assert_eq!(copy.transfer.counts().await.unwrap(), original.transfer.counts().await.unwrap());

    let ann = copy.records.record(fixture.ann).await.unwrap().expect("the record is copied under its id");
    assert_eq!(Some(&ann), original.records.record(fixture.ann).await.unwrap().as_ref());
    assert_eq!(ann.provenance["email"].source, "import");
    assert_eq!(ann.provenance["title"].source, "sync:hr");
    assert_eq!(ann.provenance["title"].at, "2027-03-02T09:00:00.000Z");
    let by_badge = copy.records.records_by_field("badge", "A-1").await.unwrap();
    assert_eq!(by_badge.iter().map(|r| r.id).collect::<Vec<_>>(), [fixture.ann], "the indexed field is found");
    let by_email = copy.records.records_by_field("email", "ANN@acme.test").await.unwrap();
    assert_eq!(by_email.len(), 1);

    let cursor = original.scheduler.mark(&Mark::EventCursor).await.unwrap().expect("the event cursor");
    assert_eq!(copy.scheduler.mark(&Mark::EventCursor).await.unwrap().as_deref(), Some(cursor.as_str()));
    let after: Uuid = cursor.parse().expect("the cursor names an event");
    let next = copy.events.events(Some(after), 100).await.unwrap();
    assert_eq!(next, original.events.events(Some(after), 100).await.unwrap(), "dispatch goes on where it was");
    assert_eq!(next.len(), 5);
    let fired = Mark::ScheduleFired { workflow: "onboard".into() };
    assert_eq!(copy.scheduler.mark(&fired).await.unwrap(), original.scheduler.mark(&fired).await.unwrap());

    let all = RunFilter::default();
    let runs = copy.runs.runs(&all).await.unwrap();
    assert_eq!(runs, original.runs.runs(&all).await.unwrap());
    for run in &runs {
        assert_eq!(copy.runs.journal(run.id).await.unwrap(), original.runs.journal(run.id).await.unwrap());
    }
    let ann_record = copy.records.record(fixture.ann).await.unwrap().unwrap();
    assert!(
        !copy.runs.create_once(&queued("onboard", &ann_record), &fixture.dedupe_key).await.unwrap(),
        "what a trigger fired before the copy does not fire again after it"
    );
    assert_eq!(copy.queue.queued_count().await.unwrap(), original.queue.queued_count().await.unwrap());
    assert_eq!(copy.queue.next_timer().await.unwrap(), original.queue.next_timer().await.unwrap());
    assert_eq!(copy.syncs.sessions(None, 100).await.unwrap(), original.syncs.sessions(None, 100).await.unwrap());
    assert_eq!(copy.credentials.credentials().await.unwrap(), original.credentials.credentials().await.unwrap());
    assert_eq!(copy.workflows.source(COPIED_SOURCE_HASH).await.unwrap().as_deref(), Some("name: onboard\nsteps: []\n"));

    // Whoever held the lease claimed from the original store: the copy's next claim takes it.
    let claimed = copy.queue.claim(&claim_request("new-node", Timestamp::now(), 60)).await.unwrap();
    let claimed = claimed.expect("the leased run is claimable in the copy");
    assert_eq!(claimed.id, fixture.leased_run);
    assert_eq!(claimed.next_seq, 2, "it carries on after its journaled steps");
    assert_eq!(claimed.lease.as_ref().map(|l| l.owner.as_str()), Some("new-node"));
}

/// Every item of `kind` in `store`, read in pages of `page`.
async fn everything(store: &Store, kind: ItemKind, page: usize) -> Vec<StoredItem> {
    let mut items: Vec<StoredItem> = Vec::new();
    loop {
        let next = store.transfer.export(kind, items.last(), page).await.unwrap();
        assert!(next.len() <= page, "a page of {kind} holds at most what was asked");
        if next.is_empty() {
            return items;
        }
        items.extend(next);
    }
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
