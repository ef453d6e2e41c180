//! The executor's write policy, watched at the store: a call that is safe to resend costs
//! one durable write, steps that change nothing outside the run wait for the next write
//! that must be durable, the run head stays small however long the run, and a run killed
//! after such a call went out sends it again, with the same key, when it resumes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use roster_blocks::kinds::CompileContext;
use roster_engine::Result;
use roster_engine::model::{Record, Run, RunState, RunTrigger};
use roster_engine::run::{Engine, Quiet};
use roster_engine::store::{Observed, RecordWrite, Store, StoreCall, StoreError, StoreObserver, StoreResult};
use roster_engine::workflow::Workflow;
use serde_json::{Value, json};
use support::{Recorder, TestHome, block};

const SECRET: &str = "executor-test-secret";

/// Counts the store's durable writes; can make step writes fail, as a process killed
/// before its write would leave the store.
#[derive(Default)]
struct Counting {
    steps: AtomicUsize,
    other_writes: AtomicUsize,
    kill_steps: AtomicBool,
}

impl StoreObserver for Counting {
    fn before(&self, call: StoreCall) -> StoreResult<()> {
        match call {
            StoreCall::SaveStep { .. } if self.kill_steps.load(Ordering::SeqCst) => {
                return Err(StoreError::unavailable("the process was killed"));
            }
            StoreCall::SaveStep { .. } => self.steps.fetch_add(1, Ordering::SeqCst),
            c if c.writes() => self.other_writes.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        Ok(())
    }
}

struct Setup {
    home: TestHome,
    server: Recorder,
    counts: Arc<Counting>,
    store: Store,
    engine: Engine,
    record: Record,
}

/// A home with a bearer credential `brex` on a recording server and one record; its
/// store opened here with a counting observer around it.
fn setup(respond: impl Fn(&support::Seen) -> (u16, Value) + Send + Sync + 'static, fields: Value) -> Setup {
    let server = Recorder::start(respond);
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), SECRET);
    let counts = Arc::new(Counting::default());
    let store = Observed::wrap(home.store(), counts.clone());
    let vault = roster_engine::home::Home::new(home.path()).vault().unwrap();
    let engine = Engine::new(store.clone(), Some(vault), roster_engine::clock::Clock::system());
    let changes = fields.as_object().unwrap().clone();
    let write = RecordWrite { id: None, changes, source: "t".into(), at: "t".into() };
    let record = block(store.records.write_record(write)).unwrap().record;
    Setup { home, server, counts, store, engine, record }
}

fn compile(source: &str) -> Workflow {
    let presets = roster_engine::presets::built_in();
    let cx = CompileContext { presets: &presets, credentials: None };
    Workflow::compile(source, "test.json", &cx).unwrap()
}

fn drive(engine: &Engine, wf: &Workflow, run: Run) -> Result<Run> {
    block(engine.drive(wf, run, &mut Quiet))
}

/// A new engine on the same store and vault, as the next process after a crash.
fn restart(s: &Setup) -> Engine {
    let vault = roster_engine::home::Home::new(s.home.path()).vault().unwrap();
    Engine::new(s.store.clone(), Some(vault), roster_engine::clock::Clock::system())
}

fn create(s: &Setup, wf: &Workflow) -> Run {
    block(s.engine.create_run(wf, &s.record, RunTrigger::Manual)).unwrap()
}

/// A GET, a PUT and a POST carrying the idempotency key the engine derives (a preset's).
const THREE_SAFE_CALLS: &str = r#"{"name": "three", "begin": {"next": "get"}, "blocks": {
    "get": {"type": "api", "credential": "brex", "request": {"method": "GET", "url": "/users/<<email>>"}, "next": "put"},
    "put": {"type": "api", "credential": "brex", "request": {"method": "PUT", "url": "/users/u1", "body": {"a": 1}},
            "next": "lock"},
    "lock": {"type": "api", "credential": "brex", "preset": "brex.lock_card",
             "with": {"brex_user_card_id": "c1", "reason": "OTHER"}}}}"#;

#[test]
fn three_api_blocks_of_safe_calls_cost_three_durable_writes() {
    let s = setup(|_| (200, json!({"ok": true})), json!({"email": "ann@acme.test"}));
    let wf = compile(THREE_SAFE_CALLS);
    let run = create(&s, &wf);
    let before = (s.counts.steps.load(Ordering::SeqCst), s.counts.other_writes.load(Ordering::SeqCst));
    let done = drive(&s.engine, &wf, run).unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.error);
    let steps = s.counts.steps.load(Ordering::SeqCst) - before.0;
    let others = s.counts.other_writes.load(Ordering::SeqCst) - before.1;
    assert_eq!((steps, others), (3, 0), "one step write per call, the last one settling the run");
    assert_eq!(s.server.seen().len(), 3);
    assert_eq!(journal(&s, done.id).len(), 3);

    // A POST that is unsafe to resend is written as started before it goes out.
    let wf = compile(
        r#"{"name": "charge", "begin": {"next": "charge"}, "blocks": {
            "charge": {"type": "api", "credential": "brex", "request": {"method": "POST", "url": "/charge"}}}}"#,
    );
    let run = create(&s, &wf);
    let before = s.counts.steps.load(Ordering::SeqCst);
    assert_eq!(drive(&s.engine, &wf, run).unwrap().state, RunState::Succeeded);
    assert_eq!(s.counts.steps.load(Ordering::SeqCst) - before, 2, "started, then finished");
}

#[test]
fn the_run_head_stays_small_over_a_long_for_each_and_the_journal_holds_the_answers() {
    let cards: Vec<Value> = (0..200).map(|i| json!({"id": format!("c{i}")})).collect();
    let pad = "x".repeat(1024);
    let s = setup(
        move |seen| (200, json!({"card": seen.uri.clone(), "pad": pad.clone()})),
        json!({"email": "ann@acme.test", "cards": cards}),
    );
    let wf = compile(
        r#"{"name": "cards", "begin": {"next": "card"}, "blocks": {
            "card": {"type": "api", "credential": "brex", "for_each": "<<cards>>",
                     "request": {"method": "GET", "url": "/cards/<<item.id>>"}, "next": "count"},
            "count": {"type": "update", "set": {"last_card": "<<steps.card.items.199.response.card>>"}}}}"#,
    );
    let run = create(&s, &wf);
    let before = s.counts.steps.load(Ordering::SeqCst);
    let done = drive(&s.engine, &wf, run).unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.error);
    // The reads wait for a write 16 at a time (12 writes for 192 of them); the last 8 and
    // the update that ends the run make the 13th.
    assert_eq!(s.counts.steps.load(Ordering::SeqCst) - before, 13);
    let head = serde_json::to_vec(&block(s.store.runs.run(done.id)).unwrap().unwrap()).unwrap();
    assert!(head.len() < 1024, "the stored head is {} bytes", head.len());
    let entries = journal(&s, done.id);
    let answers: Vec<&Value> =
        entries.iter().filter(|e| e.block == "card").map(|e| &e.response.as_ref().unwrap().body).collect();
    assert_eq!(answers.len(), 200);
    assert!(answers.iter().all(|b| b["pad"].as_str().is_some_and(|p| p.len() == 1024)));
    assert_eq!(answers[7]["card"], "/cards/c7");
    let fields = block(s.store.records.record(s.record.id)).unwrap().unwrap().fields;
    assert_eq!(fields["last_card"], "/cards/c199", "later steps see every item's answer");
}

#[test]
fn a_run_killed_after_a_safe_call_went_out_sends_it_again_with_the_same_key() {
    let s = setup(|_| (200, json!({"locked": true})), json!({"email": "ann@acme.test"}));
    let wf = compile(
        r#"{"name": "lock", "begin": {"next": "lock"}, "blocks": {
            "lock": {"type": "api", "credential": "brex", "preset": "brex.lock_card",
                     "with": {"brex_user_card_id": "c1", "reason": "OTHER"}, "next": "stamp"},
            "stamp": {"type": "update", "set": {"locked": true}}}}"#,
    );
    let run = create(&s, &wf);

    // The call goes out; the process dies before its answer is written.
    s.counts.kill_steps.store(true, Ordering::SeqCst);
    assert!(drive(&s.engine, &wf, run.clone()).is_err());
    s.counts.kill_steps.store(false, Ordering::SeqCst);
    let stored = block(s.store.runs.run(run.id)).unwrap().unwrap();
    assert_eq!((stored.current.as_deref(), stored.pending.is_none()), (Some("lock"), true), "{stored:?}");
    assert!(journal(&s, run.id).is_empty(), "nothing was written before the call");

    // A head written before step outputs moved to the journal still loads; its `steps`
    // are ignored, the journal (empty here) says what was done.
    let mut old_format = serde_json::to_value(&stored).unwrap();
    old_format["steps"] = json!({"lock": {"index": null, "status": 200, "response": {"locked": true}}});
    let stored: Run = serde_json::from_value(old_format).unwrap();

    // The next start (a new process) sends it again, with the same key, and finishes.
    let restarted = restart(&s);
    let done = drive(&restarted, &wf, stored).unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.error);
    let keys: Vec<String> = s.server.seen().iter().map(|r| r.headers["idempotency-key"].clone()).collect();
    assert_eq!(keys.len(), 2, "sent once before the crash, once after");
    assert_eq!(keys[0], keys[1]);
    assert!(keys[0].starts_with(&format!("roster-{}-lock-", run.id)), "{keys:?}");
    let entries = journal(&s, run.id);
    assert_eq!(entries.iter().map(|e| e.block.as_str()).collect::<Vec<_>>(), ["lock", "stamp"]);
    assert_eq!(block(s.store.records.record(s.record.id)).unwrap().unwrap().fields["locked"], true);
}

#[test]
fn later_steps_see_the_changes_of_steps_not_yet_written() {
    let s = setup(|_| (200, json!({"ok": true})), json!({"email": "ann@acme.test", "level": 0}));
    let wf = compile(
        r#"{"name": "levels", "begin": {"next": "one"}, "blocks": {
            "one": {"type": "update", "set": {"level": 1}, "next": "two"},
            "two": {"type": "update", "set": {"level": 2, "was": "<<level>>"}, "next": "high"},
            "high": {"type": "condition", "when": {"field": "level", "op": "equals", "value": 2},
                     "then": "mark", "else": "done"},
            "mark": {"type": "update", "set": {"high": true}, "next": "done"},
            "done": {"type": "end"}}}"#,
    );
    let run = create(&s, &wf);
    let before = s.counts.steps.load(Ordering::SeqCst);
    let done = drive(&s.engine, &wf, run).unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.error);
    assert_eq!(s.counts.steps.load(Ordering::SeqCst) - before, 1, "five steps, one write");
    let fields = block(s.store.records.record(s.record.id)).unwrap().unwrap().fields;
    assert_eq!(
        (fields["level"].clone(), fields["was"].clone(), fields["high"].clone()),
        (json!(2), json!(1), json!(true))
    );
    let entries = journal(&s, done.id);
    let two = &entries.iter().find(|e| e.block == "two").unwrap().changes["level"];
    assert_eq!((two.before.clone(), two.after.clone()), (json!(1), json!(2)), "step two saw step one's change");
}

/// A read, a condition on what it mapped, an update, then a change at the vendor.
const READ_DECIDE_CHANGE: &str = r#"{"name": "decide", "begin": {"next": "get"}, "blocks": {
    "get": {"type": "api", "credential": "brex", "preset": "brex.get_user", "next": "active"},
    "active": {"type": "condition", "when": {"field": "brex_status", "op": "equals", "value": "ACTIVE"},
               "then": "stamp", "else": "done"},
    "stamp": {"type": "update", "set": {"seen_active": true}, "next": "lock"},
    "lock": {"type": "api", "credential": "brex", "preset": "brex.lock_card",
             "with": {"brex_user_card_id": "c1", "reason": "OTHER"}, "next": "done"},
    "done": {"type": "end"}}}"#;

fn read_decide_change() -> Setup {
    setup(
        |seen| if seen.method == "GET" { (200, json!({"status": "ACTIVE"})) } else { (200, json!({"ok": true})) },
        json!({"email": "ann@acme.test", "brex_user_id": "u1"}),
    )
}

#[test]
fn steps_that_change_nothing_outside_the_run_go_with_the_next_write_that_must_be_durable() {
    let s = read_decide_change();
    let wf = compile(READ_DECIDE_CHANGE);
    let run = create(&s, &wf);
    let before = s.counts.steps.load(Ordering::SeqCst);
    let done = drive(&s.engine, &wf, run).unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.error);
    // The read, the condition and the update are written before the lock goes out; the
    // lock's answer goes with the end.
    assert_eq!(s.counts.steps.load(Ordering::SeqCst) - before, 2);
    let blocks: Vec<String> = journal(&s, done.id).into_iter().map(|e| e.block).collect();
    assert_eq!(blocks, ["get", "active", "stamp", "lock", "done"]);
    let fields = block(s.store.records.record(s.record.id)).unwrap().unwrap().fields;
    assert_eq!((fields["brex_status"].clone(), fields["seen_active"].clone()), (json!("ACTIVE"), json!(true)));
}

#[test]
fn a_change_is_not_sent_until_the_steps_that_led_to_it_are_written() {
    let s = read_decide_change();
    let wf = compile(READ_DECIDE_CHANGE);
    let run = create(&s, &wf);

    // The process dies at the write before the lock: the lock never went out, and nothing
    // of the read, the condition or the update is stored.
    s.counts.kill_steps.store(true, Ordering::SeqCst);
    assert!(drive(&s.engine, &wf, run.clone()).is_err());
    s.counts.kill_steps.store(false, Ordering::SeqCst);
    let methods: Vec<String> = s.server.seen().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["GET"], "the lock was not sent");
    let stored = block(s.store.runs.run(run.id)).unwrap().unwrap();
    assert_eq!(stored.current.as_deref(), Some("get"), "{stored:?}");
    assert!(journal(&s, run.id).is_empty());
    assert!(block(s.store.records.record(s.record.id)).unwrap().unwrap().fields.get("seen_active").is_none());

    // The next start reads again, decides again, and sends the lock once.
    let restarted = restart(&s);
    let done = drive(&restarted, &wf, stored).unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.error);
    let methods: Vec<String> = s.server.seen().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["GET", "GET", "POST"]);
    let blocks: Vec<String> = journal(&s, run.id).into_iter().map(|e| e.block).collect();
    assert_eq!(blocks, ["get", "active", "stamp", "lock", "done"], "each step journaled once");
    assert_eq!(block(s.store.records.record(s.record.id)).unwrap().unwrap().fields["seen_active"], true);
}

#[test]
fn a_wait_is_one_durable_write_that_takes_the_steps_before_it_along_or_is_done_again() {
    let s = setup(|_| (200, json!({"status": "ACTIVE"})), json!({"email": "ann@acme.test"}));
    let wf = compile(
        r#"{"name": "notice", "begin": {"next": "get"}, "blocks": {
            "get": {"type": "api", "credential": "brex", "request": {"method": "GET", "url": "/users/<<email>>"},
                    "next": "active"},
            "active": {"type": "condition", "when": {"field": "steps.get.response.status", "op": "equals", "value": "ACTIVE"},
                       "then": "pause"},
            "pause": {"type": "wait", "for": "2d", "next": "lock"},
            "lock": {"type": "api", "credential": "brex", "preset": "brex.lock_card",
                     "with": {"brex_user_card_id": "c1", "reason": "OTHER"}}}}"#,
    );
    let run = create(&s, &wf);

    // Killed at the wait's write: nothing of the read or the decision is stored, and the
    // run still stands where it began.
    s.counts.kill_steps.store(true, Ordering::SeqCst);
    assert!(drive(&s.engine, &wf, run.clone()).is_err());
    s.counts.kill_steps.store(false, Ordering::SeqCst);
    let stored = block(s.store.runs.run(run.id)).unwrap().unwrap();
    assert_eq!((stored.state, stored.current.as_deref()), (RunState::Queued, Some("get")));
    assert!(journal(&s, run.id).is_empty());

    // The next start reads and decides again; the wait is its one write.
    let before = s.counts.steps.load(Ordering::SeqCst);
    let waiting = drive(&restart(&s), &wf, stored).unwrap();
    assert_eq!(waiting.state, RunState::Waiting, "{:?}", waiting.error);
    assert_eq!(s.counts.steps.load(Ordering::SeqCst) - before, 1, "the read and the decision go with the wait");
    let blocks: Vec<String> = journal(&s, run.id).into_iter().map(|e| e.block).collect();
    assert_eq!(blocks, ["get", "active", "pause"]);
    let methods: Vec<String> = s.server.seen().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["GET", "GET"], "only the read was made again; the lock waits");
}

fn journal(s: &Setup, run: uuid::Uuid) -> Vec<roster_engine::model::JournalEntry> {
    block(s.store.runs.journal(run)).unwrap()
}
