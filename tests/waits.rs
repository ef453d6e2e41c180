//! The `wait` block: a run rests until its timer, holding no worker and no lease, and
//! goes on at the next block once the timer is due: by a claim, by serve's workers, by a
//! person's `runs resume`, or cancelled by a person's `runs cancel`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use roster_blocks::kinds::CompileContext;
use roster_engine::clock::Clock;
use roster_engine::model::{Record, RunState, RunTrigger};
use roster_engine::run::{Engine, Quiet};
use roster_engine::service::{Catalog, Service};
use roster_engine::store::{ClaimRequest, RecordWrite, Store};
use roster_engine::workflow::Workflow;
use serde_json::{Value, json};
use support::{Recorder, TestHome, TestStore};

fn workflow(text: &str) -> Arc<Workflow> {
    let presets = roster_engine::presets::built_in();
    Arc::new(Workflow::compile(text, "test.json", &CompileContext { presets: &presets, credentials: None }).unwrap())
}

async fn person(store: &Store, fields: Value) -> Record {
    let changes = fields.as_object().unwrap().clone();
    store
        .records
        .write_record(RecordWrite { id: None, changes, source: "t".into(), at: "t".into() })
        .await
        .unwrap()
        .record
}

fn claim_at(now: Timestamp) -> ClaimRequest {
    ClaimRequest {
        owner: "node-a".into(),
        now,
        lease: Duration::from_secs(60),
        limits: Default::default(),
        trigger: None,
    }
}

fn instant(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// Look the person up, wait an hour, then stamp when the wait ended and end.
const LOOK_WAIT_STAMP: &str = r#"{"name": "cooldown", "begin": {"next": "pause"}, "blocks": {
    "pause": {"type": "wait", "for": "1h", "next": "stamp"},
    "stamp": {"type": "update", "set": {"waited_until": "<<steps.pause.until>>", "stamped_at": "<<now>>"}}}}"#;

#[tokio::test]
async fn a_waiting_run_is_not_claimable_before_its_timer_and_finishes_after_it() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    let engine = Engine::new(store.clone(), None, Clock::system());
    let wf = workflow(LOOK_WAIT_STAMP);
    let ann = person(&store, json!({"email": "ann@acme.test"})).await;
    let run = engine.create_run(&wf, &ann, RunTrigger::Manual).await.unwrap();
    let started = Timestamp::now();

    let waiting = engine.drive(&wf, run, &mut Quiet).await.unwrap();
    assert_eq!(waiting.state, RunState::Waiting, "{:?}", waiting.error);
    assert_eq!(waiting.current.as_deref(), Some("stamp"), "it goes on at the block after the wait");
    let wake: Timestamp = waiting.wakes_at().expect("a timer").parse().unwrap();
    let hour = jiff::SignedDuration::from_hours(1);
    let ms = jiff::SignedDuration::from_millis(1);
    assert!(wake >= started + hour - ms && wake <= Timestamp::now() + hour, "{wake} is an hour from the wait");

    let stored = store.runs.run(waiting.id).await.unwrap().unwrap();
    assert_eq!((stored.state, stored.wakes_at()), (RunState::Waiting, waiting.wakes_at()), "the wait is durable");
    let journal = store.runs.journal(waiting.id).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!((journal[0].block.as_str(), journal[0].wake_at.as_deref()), ("pause", waiting.wakes_at()));
    assert!(store.records.record(ann.id).await.unwrap().unwrap().fields.get("stamped_at").is_none());

    // Driving a waiting run does nothing: its timer carries it on.
    let again = engine.drive(&wf, stored.clone(), &mut Quiet).await.unwrap();
    assert_eq!(again.state, RunState::Waiting);
    assert_eq!(store.runs.journal(waiting.id).await.unwrap().len(), 1);

    let before = wake - jiff::SignedDuration::from_secs(1);
    assert!(store.queue.claim(&claim_at(Timestamp::now())).await.unwrap().is_none(), "not claimable now");
    assert!(store.queue.claim(&claim_at(before)).await.unwrap().is_none(), "not claimable a second early");
    assert_eq!(store.queue.next_timer().await.unwrap().map(|t| t.as_millisecond()), Some(wake.as_millisecond()));

    let woke = store.queue.claim(&claim_at(wake)).await.unwrap().expect("claimable once due");
    assert_eq!((woke.id, woke.state, woke.current.as_deref()), (waiting.id, RunState::Running, Some("stamp")));
    let done = engine.drive(&wf, woke, &mut Quiet).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.error);
    let fields = store.records.record(ann.id).await.unwrap().unwrap().fields;
    assert_eq!(fields["waited_until"].as_str(), waiting.wakes_at(), "later steps see `steps.pause.until`");
    let journal = store.runs.journal(done.id).await.unwrap();
    assert_eq!(journal.iter().map(|e| e.block.as_str()).collect::<Vec<_>>(), ["pause", "stamp"], "the wait ran once");
    assert!(store.queue.next_timer().await.unwrap().is_none(), "the timer is gone");
}

/// Wait until the record's `leave_at`, then mark the person as gone.
const WAIT_UNTIL_LEAVE_AT: &str = r#"{"name": "leave", "begin": {"next": "pause"}, "blocks": {
    "pause": {"type": "wait", "until": "<<leave_at>>", "next": "stamp"},
    "stamp": {"type": "update", "set": {"left": true}}}}"#;

#[tokio::test]
async fn under_a_fixed_clock_a_wait_keeps_its_length_and_one_already_past_does_not_wait() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    let engine = Engine::new(store.clone(), None, Clock::fixed(instant("2027-03-01T09:00:00Z")));
    let ann = person(&store, json!({"email": "ann@acme.test", "leave_at": "2027-03-01T11:00:00Z"})).await;
    let wf = workflow(WAIT_UNTIL_LEAVE_AT);
    let run = engine.create_run(&wf, &ann, RunTrigger::Manual).await.unwrap();
    let before = Timestamp::now();
    let waiting = engine.drive(&wf, run, &mut Quiet).await.unwrap();
    assert_eq!(waiting.state, RunState::Waiting);
    // Roster's clock says 09:00 and the wait ends at 11:00: two real hours from now.
    let wake: Timestamp = waiting.wakes_at().unwrap().parse().unwrap();
    let two_hours = jiff::SignedDuration::from_hours(2);
    let ms = jiff::SignedDuration::from_millis(1);
    assert!(wake >= before + two_hours - ms && wake <= Timestamp::now() + two_hours, "{wake}");

    let bob = person(&store, json!({"email": "bob@acme.test", "leave_at": "2027-02-27"})).await;
    let run = engine.create_run(&wf, &bob, RunTrigger::Manual).await.unwrap();
    let done = engine.drive(&wf, run, &mut Quiet).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "a time already past does not wait: {:?}", done.error);
    assert_eq!(store.records.record(bob.id).await.unwrap().unwrap().fields["left"], json!(true));
}

/// Wait three days, then stamp the day.
const WAIT_THEN_STAMP_THE_DAY: &str = r#"{"name": "later", "begin": {"next": "pause"}, "blocks": {
    "pause": {"type": "wait", "for": "3d", "next": "stamp"},
    "stamp": {"type": "update", "set": {"stamped_on": "<<today>>"}}}}"#;

#[tokio::test]
async fn after_a_wait_today_is_the_day_it_ended_or_the_day_a_person_ended_it() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    let engine = Engine::new(store.clone(), None, Clock::fixed(instant("2027-03-01T09:00:00Z")));
    let wf = workflow(WAIT_THEN_STAMP_THE_DAY);
    let day_of = |at: &str| instant(at).to_zoned(jiff::tz::TimeZone::system()).date().to_string();

    // A dry run shows the steps after the wait as they would go on the day it ends.
    let ann = person(&store, json!({"email": "ann@acme.test"})).await;
    let dry = engine.dry_run(&wf, &ann).unwrap();
    assert_eq!(dry[1].changes["stamped_on"], json!(day_of("2027-03-04T09:00:00Z")), "{dry:?}");

    // Its timer ends it: the day it was to end.
    let run = engine.create_run(&wf, &ann, RunTrigger::Manual).await.unwrap();
    assert_eq!(run.today.as_deref(), Some(day_of("2027-03-01T09:00:00Z").as_str()));
    let waiting = engine.drive(&wf, run, &mut Quiet).await.unwrap();
    assert_eq!(waiting.state, RunState::Waiting);
    let wake: Timestamp = waiting.wakes_at().unwrap().parse().unwrap();
    let woke = store.queue.claim(&claim_at(wake)).await.unwrap().expect("due");
    let done = engine.drive(&wf, woke, &mut Quiet).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.error);
    let fields = store.records.record(ann.id).await.unwrap().unwrap().fields;
    assert_eq!(fields["stamped_on"], json!(day_of("2027-03-04T09:00:00Z")));

    // A person ends it early: the day it went on.
    let bob = person(&store, json!({"email": "bob@acme.test"})).await;
    let run = engine.create_run(&wf, &bob, RunTrigger::Manual).await.unwrap();
    let waiting = engine.drive(&wf, run, &mut Quiet).await.unwrap();
    let woken = engine.wake_now(&wf, waiting).await.unwrap();
    let done = engine.drive(&wf, woken, &mut Quiet).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.error);
    let fields = store.records.record(bob.id).await.unwrap().unwrap().fields;
    assert_eq!(fields["stamped_on"], json!(day_of("2027-03-01T09:00:00Z")));
}

#[tokio::test]
async fn a_wait_that_cannot_read_its_instant_fails_the_run_naming_the_block() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    let engine = Engine::new(store.clone(), None, Clock::system());
    let ann = person(&store, json!({"email": "ann@acme.test", "leave_at": "soon"})).await;
    let wf = workflow(WAIT_UNTIL_LEAVE_AT);
    let run = engine.create_run(&wf, &ann, RunTrigger::Manual).await.unwrap();
    let failed = engine.drive(&wf, run, &mut Quiet).await.unwrap();
    assert_eq!(failed.state, RunState::Failed);
    let error = failed.error.unwrap();
    assert!(error.contains("block pause") && error.contains("`soon` is not an instant to wait until"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_workers_carry_a_waiting_run_on_when_its_timer_is_due() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    let wf = workflow(
        r#"{"name": "short", "begin": {"next": "pause"}, "blocks": {
        "pause": {"type": "wait", "for": "1500ms", "next": "stamp"},
        "stamp": {"type": "update", "set": {"stamped": true}}}}"#,
    );
    let engine = Arc::new(Engine::new(store.clone(), None, Clock::system()));
    let mut catalog = Catalog::default();
    catalog.workflows.insert(wf.name.clone(), wf.clone());
    let service = Service::new(engine.clone(), catalog, roster_engine::presets::built_in());
    let ann = person(&store, json!({"email": "ann@acme.test"})).await;
    let run = engine.create_run(&wf, &ann, RunTrigger::Manual).await.unwrap();
    let workers = {
        let service = service.clone();
        tokio::spawn(async move { service.work(1, false).await })
    };
    let state = async || store.runs.run(run.id).await.unwrap().unwrap().state;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut saw_waiting = false;
    loop {
        match state().await {
            RunState::Succeeded => break,
            RunState::Waiting => saw_waiting = true,
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "the run never finished: {:?}", state().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_waiting, "the run rested between its steps");
    let journal = store.runs.journal(run.id).await.unwrap();
    let waited = journal[1].started_at.as_str() >= journal[0].wake_at.as_deref().unwrap();
    assert!(waited, "the step after the wait began once it was due: {journal:?}");
    engine.stop();
    service.wake();
    workers.await.unwrap().unwrap();
}

const OFFBOARD_AFTER_NOTICE: &str = r#"{"name": "notice", "begin": {"next": "look"}, "blocks": {
    "look": {"type": "api", "credential": "brex", "request": {"method": "GET", "url": "/users/<<email>>"}, "next": "pause"},
    "pause": {"type": "wait", "for": "2d", "next": "lock"},
    "lock": {"type": "api", "credential": "brex", "preset": "brex.lock_card",
             "with": {"brex_user_card_id": "c1", "reason": "OTHER"}}}}"#;

fn notice_home() -> (TestHome, Recorder, String) {
    let server = Recorder::start(|_| (200, json!({"id": "u1", "status": "ACTIVE"})));
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), "wait-test-secret");
    home.import(&json!([{"email": "ann@acme.test"}]));
    let wf = home.file("notice.json", OFFBOARD_AFTER_NOTICE).to_str().unwrap().to_string();
    (home, server, wf)
}

fn run_id_in(out: &str) -> String {
    out.split_whitespace().skip_while(|w| *w != "run").nth(1).expect("a run id").to_string()
}

#[test]
fn the_cli_shows_a_wait_and_a_person_can_end_it_now_or_cancel_it() {
    let (home, server, wf) = notice_home();
    let dry = home.roster(&["run", &wf, "--user", "ann@acme.test", "--dry-run"]).ok().all();
    assert!(dry.contains("pause (wait)  would wait until "), "{dry}");
    assert!(dry.contains("lock (api)  would send POST"), "a dry run follows the wait: {dry}");
    assert_eq!(server.seen().len(), 0);

    let ran = home.roster(&["run", &wf, "--user", "ann@acme.test"]).ok().all();
    assert!(ran.lines().any(|l| l.contains("✓ pause") && l.contains("waits until ")), "{ran}");
    assert!(ran.contains("waiting in ") && ran.contains("`roster runs resume "), "{ran}");
    assert_eq!(server.seen().len(), 1, "only the look-up went out");
    let id = run_id_in(&ran);

    let list = home.roster(&["runs", "list"]).ok().all();
    assert!(list.contains("waiting until "), "{list}");
    let again = home.roster(&["run", &wf, "--user", "ann@acme.test"]).ok().all();
    assert!(again.contains("already under way and waits until"), "{again}");
    assert_eq!(server.seen().len(), 1, "no second run for the same person");
    let shown = home.roster(&["runs", "show", &id]).ok().all();
    assert!(shown.contains("state     waiting") && shown.contains("wakes at  "), "{shown}");

    let resumed = home.roster(&["runs", "resume", &id]).ok().all();
    assert!(resumed.contains("✓ lock") && resumed.trim_end().ends_with("succeeded"), "{resumed}");
    let sent = server.seen();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].method, "POST");

    // A second person's wait, cancelled: nothing more goes out, and the timer is gone.
    home.import(&json!([{"email": "bob@acme.test"}]));
    let ran = home.roster(&["run", &wf, "--user", "bob@acme.test", "--json"]).ok().json();
    assert_eq!(ran["state"], "waiting");
    assert!(ran["wake_at"].is_string(), "{ran}");
    let id = ran["run_id"].as_str().unwrap().to_string();
    home.roster(&["runs", "cancel", &id]).ok();
    let shown = home.roster(&["runs", "show", &id, "--json"]).ok().json();
    assert_eq!(shown["state"], "cancelled");
    assert!(shown.get("wake_at").is_none(), "{shown}");
    assert_eq!(server.seen().len(), 3, "bob's look-up only");
}

#[test]
fn a_batch_counts_waiting_runs_as_under_way_not_failed() {
    let (home, server, wf) = notice_home();
    home.import(&json!([{"email": "bob@acme.test"}]));
    let out = home.roster(&["run", &wf, "--all"]).ok().all();
    assert!(out.contains("2 waiting"), "{out}");
    assert!(out.contains("2 run(s) wait, the first until "), "{out}");
    assert_eq!(server.seen().len(), 2);
    // The same batch goes on; nobody gets a second run.
    let again = home.roster(&["run", &wf, "--all"]).ok().all();
    assert!(again.contains("resuming batch") && again.contains("0 new run(s)"), "{again}");
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn the_shipped_example_waits_until_the_evening_of_the_last_day_in_new_york() {
    let server = Recorder::start(|_| (200, json!({"id": "u1", "status": "DISABLED"})));
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), "wait-test-secret");
    let leaver =
        json!({"email": "ann@acme.test", "end_date": "2027-01-15", "brex_status": "ACTIVE", "brex_user_id": "u1"});
    home.import(&json!([leaver]));
    let wf = support::example("offboard-at-end-of-last-day.json");
    let dry = home.roster(&["run", &wf, "--user", "ann@acme.test", "--dry-run"]).ok().all();
    // 18:00 in New York in January (UTC-5).
    assert!(dry.contains("last_day (wait)  would wait until 2027-01-15T23:00:00Z"), "{dry}");
    assert!(dry.contains("deactivate (api)  would send PUT"), "{dry}");

    // On the evening of the last day the wait is over: the run goes straight on.
    let late =
        home.command(&["run", &wf, "--user", "ann@acme.test"]).env("ROSTER_NOW", "2027-01-15T23:30:00Z").output();
    let out = String::from_utf8_lossy(&late.unwrap().stdout).to_string();
    assert!(out.contains("✓ deactivate") && out.trim_end().contains("succeeded in"), "{out}");
    assert_eq!(server.seen().iter().map(|r| r.method.as_str()).collect::<Vec<_>>(), ["PUT"]);
}

#[test]
fn through_serve_a_run_by_hand_returns_at_its_wait_and_resume_carries_it_on() {
    let (home, server, wf) = notice_home();
    let _serving = support::serve(&home);
    let ran = home.roster(&["run", &wf, "--user", "ann@acme.test"]).ok().all();
    assert!(ran.contains("waiting in ") && ran.contains("waits until "), "{ran}");
    assert_eq!(server.seen().len(), 1);
    let id = run_id_in(&ran);
    let list = home.roster(&["runs", "list", "--json"]).ok().json();
    assert_eq!(list[0]["state"], "waiting");
    assert!(list[0]["wake_at"].is_string(), "{list}");
    let resumed = home.roster(&["runs", "resume", &id]).ok().all();
    assert!(resumed.trim_end().ends_with("succeeded"), "{resumed}");
    assert_eq!(server.seen().iter().map(|r| r.method.as_str()).collect::<Vec<_>>(), ["GET", "POST"]);
}

/// Polls `runs list` until `want` runs wait, and returns them, the first started first.
fn waiting_runs(home: &TestHome, want: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let runs = home.roster(&["runs", "list", "--json"]).ok().json();
        let mut waiting: Vec<Value> =
            runs.as_array().unwrap().iter().filter(|r| r["state"] == "waiting").cloned().collect();
        if waiting.len() >= want {
            // Run ids are time-ordered (UUIDv7).
            waiting.sort_by(|a, b| a["run_id"].as_str().cmp(&b["run_id"].as_str()));
            return waiting;
        }
        assert!(std::time::Instant::now() < deadline, "{want} waiting run(s) expected: {runs}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn when_hr_moves_an_end_date_later_the_run_waiting_for_the_old_day_does_not_offboard() {
    let server = Recorder::start(|_| (200, json!({"id": "u1", "status": "DISABLED"})));
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), "wait-test-secret");
    std::fs::copy(support::example("offboard-at-end-of-last-day.json"), home.path().join("workflows/leave.json"))
        .unwrap();
    home.import(&json!([{"email": "ann@acme.test", "brex_status": "ACTIVE", "brex_user_id": "u1"}]));
    let _serving = support::serve(&home);

    // HR sets the end date: an update, so a run starts and waits for that evening.
    home.import(&json!([{"email": "ann@acme.test", "end_date": "2027-01-15"}]));
    let first = waiting_runs(&home, 1).remove(0);
    assert_eq!(first["wake_at"], "2027-01-15T23:00:00.000Z", "{first}");
    // HR moves it five days on: a second run waits for the new evening.
    home.import(&json!([{"email": "ann@acme.test", "end_date": "2027-01-20"}]));
    let runs = waiting_runs(&home, 2);
    assert_eq!(runs[1]["wake_at"], "2027-01-20T23:00:00.000Z", "{runs:?}");

    // The old evening comes (its timer, ended early here): the first run sees the moved
    // date and ends without touching Brex.
    let id = first["run_id"].as_str().unwrap();
    let woke = home.roster(&["runs", "resume", id]).ok().all();
    assert!(woke.contains("still_leaving") && woke.trim_end().ends_with("succeeded"), "{woke}");
    assert!(!woke.contains("✓ deactivate"), "{woke}");
    assert!(server.seen().is_empty(), "nothing went to Brex on the old day");

    // The new evening comes: the second run offboards.
    let id = runs[1]["run_id"].as_str().unwrap();
    let woke = home.roster(&["runs", "resume", id]).ok().all();
    assert!(woke.contains("✓ deactivate") && woke.trim_end().ends_with("succeeded"), "{woke}");
    assert_eq!(server.seen().iter().map(|r| r.method.as_str()).collect::<Vec<_>>(), ["PUT"]);
    let ann = home.roster(&["records", "show", "ann@acme.test", "--json"]).ok().json();
    assert_eq!(ann["fields"]["brex_status"], "DISABLED");
    assert_eq!(ann["fields"]["waited_until"], "2027-01-20T23:00:00.000Z");
}

#[test]
fn without_serve_running_the_person_again_carries_a_due_wait_on_instead_of_starting_a_second_run() {
    let server = Recorder::start(|_| (200, json!({"id": "u1", "status": "ACTIVE"})));
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), "wait-test-secret");
    home.import(&json!([{"email": "ann@acme.test"}]));
    let wf = home.file(
        "short.json",
        r#"{"name": "short", "begin": {"next": "pause"}, "blocks": {
            "pause": {"type": "wait", "for": "300ms", "next": "lock"},
            "lock": {"type": "api", "credential": "brex", "preset": "brex.lock_card",
                     "with": {"brex_user_card_id": "c1", "reason": "OTHER"}}}}"#,
    );
    let wf = wf.to_str().unwrap();
    let ran = home.roster(&["run", wf, "--user", "ann@acme.test"]).ok().all();
    assert!(ran.contains("waits until ") && ran.contains("`roster run` for this person"), "{ran}");
    let id = run_id_in(&ran);
    std::thread::sleep(Duration::from_millis(400));

    let again = home.roster(&["run", wf, "--user", "ann@acme.test"]).ok().all();
    assert!(again.contains(&format!("run {id} of short for ann@acme.test waited until ")), "{again}");
    assert!(again.contains("✓ lock") && again.trim_end().contains("succeeded in"), "{again}");
    assert_eq!(server.seen().iter().map(|r| r.method.as_str()).collect::<Vec<_>>(), ["POST"]);
    let runs = home.roster(&["runs", "list", "--json"]).ok().json();
    assert_eq!(runs.as_array().unwrap().len(), 1, "no second run: {runs}");
}
