//! Triggers, schedules, versions and `roster serve` (issue: runs that start themselves).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use roster_blocks::kinds::CompileContext;
use roster_engine::clock::Clock;
use roster_engine::model::RunState;
use roster_engine::run::Engine;
use roster_engine::service::{Catalog, Service};
use roster_engine::store::{RecordWrite, RunFilter, Store};
use roster_engine::workflow::Workflow;
use serde_json::{Map, Value, json};
use support::{Serving, TestHome, TestStore, http, serve};

fn workflow(text: &str) -> Arc<Workflow> {
    let presets = roster_engine::presets::built_in();
    Arc::new(Workflow::compile(text, "test.json", &CompileContext { presets: &presets, credentials: None }).unwrap())
}

fn service(store: Store, clock: Clock, workflows: &[&Arc<Workflow>]) -> Arc<Service> {
    let engine = Arc::new(Engine::new(store, None, clock));
    let mut catalog = Catalog::default();
    for wf in workflows {
        catalog.workflows.insert(wf.name.clone(), (*wf).clone());
    }
    Service::new(engine, catalog, roster_engine::presets::built_in())
}

async fn put(store: &Store, id: Option<uuid::Uuid>, fields: Value) -> uuid::Uuid {
    let changes: Map<String, Value> = fields.as_object().unwrap().clone();
    store
        .records
        .write_record(RecordWrite { id, changes, source: "import".into(), at: "2027-03-01T00:00:00Z".into() })
        .await
        .unwrap()
        .record
        .id
}

async fn runs_of(store: &Store, workflow: &str) -> Vec<roster_engine::model::Run> {
    store.runs.runs(&RunFilter { workflow: Some(workflow.into()), ..Default::default() }).await.unwrap()
}

const ON_CREATED: &str = r#"{"name": "welcome", "begin": {"trigger": {"on": "created"}, "next": "stamp"},
  "blocks": {"stamp": {"type": "update", "set": {"welcomed_at": "<<now>>"}}}}"#;
const ON_END_DATE: &str = r#"{"name": "leaver", "begin": {"trigger": {"on": "updated", "fields": ["end_date"]},
  "rules": [{"field": "end_date", "op": "is_not_empty"}], "next": "stamp"},
  "blocks": {"stamp": {"type": "update", "set": {"leaver_seen": true}}}}"#;
const ON_ANY_UPDATE: &str = r#"{"name": "audit", "begin": {"trigger": {"on": "updated"}, "next": "stamp"},
  "blocks": {"stamp": {"type": "update", "set": {"audited": true}}}}"#;

#[tokio::test]
async fn record_events_start_the_workflows_listening_for_them() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    let (welcome, leaver, audit) = (workflow(ON_CREATED), workflow(ON_END_DATE), workflow(ON_ANY_UPDATE));
    put(&store, None, json!({"email": "old@acme.test"})).await;
    let svc = service(store.clone(), Clock::parse("2027-03-01").unwrap(), &[&welcome, &leaver, &audit]);
    // History does not trigger: the first dispatch only sets the cursor.
    assert_eq!(svc.dispatch_events().await.unwrap(), 0);

    let ann = put(&store, None, json!({"email": "ann@acme.test", "title": "Engineer"})).await;
    assert_eq!(svc.dispatch_events().await.unwrap(), 1, "created → welcome");
    put(&store, Some(ann), json!({"title": "Staff Engineer"})).await;
    assert_eq!(svc.dispatch_events().await.unwrap(), 1, "a title change → audit only (leaver listens to end_date)");
    put(&store, Some(ann), json!({"end_date": "2027-03-31"})).await;
    assert_eq!(svc.dispatch_events().await.unwrap(), 2, "an end_date change → leaver and audit");
    assert_eq!(svc.dispatch_events().await.unwrap(), 0, "each event starts its runs once");
    svc.work(2, true).await.unwrap();

    assert_eq!(runs_of(&store, "welcome").await.len(), 1);
    assert_eq!(runs_of(&store, "leaver").await.len(), 1);
    assert_eq!(runs_of(&store, "audit").await.len(), 2);
    let record = store.records.record(ann).await.unwrap().unwrap();
    assert_eq!(record.fields["leaver_seen"], true);
    assert!(record.fields.contains_key("welcomed_at"));
    // The workflows' own writes are events too: welcome's and leaver's stamps are updates
    // that audit hears; audit never hears its own writes, and writing a value a field
    // already has is no change and no event.
    assert_eq!(svc.dispatch_events().await.unwrap(), 2);
    svc.work(2, true).await.unwrap();
    assert_eq!(svc.dispatch_events().await.unwrap(), 0);
    let audits = runs_of(&store, "audit").await;
    assert_eq!(audits.len(), 4);
    assert!(audits.iter().all(|r| r.state == RunState::Succeeded));
}

const ONBOARD: &str = r#"{"name": "onboard", "begin": {"trigger": {"schedule": {"daily": "09:00"}},
  "rules": [{"field": "start_date", "op": "on_or_before", "value": "<<today>>"},
            {"field": "onboarded_at", "op": "is_empty"}], "next": "stamp"},
  "blocks": {"stamp": {"type": "update", "set": {"onboarded_at": "<<now>>"}}}}"#;

/// Sets a schedule's last-fired mark as a scheduler that last fired at `at` would have.
async fn force_fire_mark(store: &Store, workflow: &str, at: &str) {
    let mark = roster_engine::store::Mark::ScheduleFired { workflow: workflow.into() };
    let read = store.scheduler.mark(&mark).await.unwrap();
    assert!(store.scheduler.set_mark(&mark, read.as_deref(), Some(at)).await.unwrap());
}

async fn company(store: &Store) {
    for (email, start) in [
        ("past@acme.test", "2027-02-01"),
        ("today@acme.test", "2027-03-01"),
        ("soon@acme.test", "2027-03-05"),
        ("nodate@acme.test", ""),
    ] {
        let mut fields = json!({"email": email});
        if !start.is_empty() {
            fields["start_date"] = json!(start);
        }
        put(store, None, fields).await;
    }
}

#[tokio::test]
async fn a_schedule_fires_at_its_time_for_exactly_the_matching_records_and_once() {
    let test_store = TestStore::new();
    let wf = workflow(ONBOARD);
    {
        let store = test_store.open().await;
        company(&store).await;
        // 08:59: today's 09:00 has not come; yesterday's did and fires (a first start catches up once).
        let early = service(store.clone(), Clock::parse("2027-03-01T08:59:00Z").unwrap(), &[&wf]);
        let fired = early.fire_schedules().await.unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].at.to_string(), "2027-02-28T09:00:00Z");
        // `today` is the fire's date, the 28th: only who started by then matches.
        assert_eq!(fired[0].local_date.to_string(), "2027-02-28");
        assert_eq!(fired[0].queued, 1);
        assert!(early.fire_schedules().await.unwrap().is_empty(), "nothing more is due before 09:00");

        let nine = service(store.clone(), Clock::parse("2027-03-01T09:00:00Z").unwrap(), &[&wf]);
        let fired = nine.fire_schedules().await.unwrap();
        assert_eq!(fired[0].at.to_string(), "2027-03-01T09:00:00Z");
        // past@ still has a queued, unexecuted run for the 28th and is not onboarded yet, so
        // this day's fire selects them again, with today@; soon@ and nodate@ never match.
        assert_eq!(fired[0].queued, 2);
        nine.work(1, true).await.unwrap();
        let runs = runs_of(&store, "onboard").await;
        let done: BTreeSet<String> =
            runs.iter().filter(|r| r.state == RunState::Succeeded).map(|r| r.record_label.clone()).collect();
        assert_eq!(done, BTreeSet::from(["past@acme.test".to_string(), "today@acme.test".to_string()]));
        // The later run looks at the rules again when its turn comes: already onboarded.
        let skipped: Vec<_> = runs.iter().filter(|r| r.state == RunState::Skipped).collect();
        assert_eq!(skipped.len(), 1, "{runs:#?}");
        assert!(skipped[0].error.as_deref().unwrap().contains("onboarded_at is_empty"));
    }
    // A restart at the same moment fires nothing again.
    let store = test_store.open().await;
    let again = service(store.clone(), Clock::parse("2027-03-01T09:00:30Z").unwrap(), &[&wf]);
    assert!(again.fire_schedules().await.unwrap().is_empty());
    assert_eq!(runs_of(&store, "onboard").await.len(), 3);
}

/// Four dispatchers (four nodes' services) sharing one store, racing while records keep
/// changing: every event starts each listening workflow exactly once.
#[tokio::test]
async fn racing_dispatchers_start_one_run_per_event_and_workflow() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    let (welcome, audit) = (workflow(ON_CREATED), workflow(ON_ANY_UPDATE));
    let clock = Clock::parse("2027-03-01").unwrap();
    let services: Vec<_> = (0..4).map(|_| service(store.clone(), clock, &[&welcome, &audit])).collect();
    // The first dispatch only sets the cursor; from then on every event counts.
    services[0].dispatch_events().await.unwrap();
    let dispatchers: Vec<_> = services
        .into_iter()
        .map(|s| {
            tokio::spawn(async move {
                let mut started = 0;
                for _ in 0..40 {
                    started += s.dispatch_events().await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                started
            })
        })
        .collect();
    let people = 12;
    for n in 0..people {
        let id = put(&store, None, json!({"email": format!("p{n}@acme.test")})).await;
        put(&store, Some(id), json!({"title": "Engineer"})).await;
    }
    let mut started = 0;
    for dispatcher in dispatchers {
        started += dispatcher.await.unwrap();
    }
    let check = service(store.clone(), clock, &[&welcome, &audit]);
    started += check.dispatch_events().await.unwrap();
    assert_eq!(started, 2 * people, "each creation starts welcome once and each update audit once");
    assert_eq!(runs_of(&store, "welcome").await.len(), people);
    assert_eq!(runs_of(&store, "audit").await.len(), people);
}

#[tokio::test]
async fn racing_triggers_start_one_run_per_record_and_fire_time() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    company(&store).await;
    let wf = workflow(ONBOARD);
    let clock = Clock::parse("2027-03-01T09:00:00Z").unwrap();
    let services: Vec<_> = (0..4).map(|_| service(store.clone(), clock, &[&wf])).collect();
    let handles: Vec<_> = services
        .into_iter()
        .map(|s| tokio::spawn(async move { s.fire_schedules().await.unwrap().iter().map(|f| f.queued).sum::<usize>() }))
        .collect();
    let mut queued = 0;
    for handle in handles {
        queued += handle.await.unwrap();
    }
    assert_eq!(queued, 2, "four racing schedulers queue each (record, fire time) once");
    assert_eq!(runs_of(&store, "onboard").await.len(), 2);
}

#[tokio::test]
async fn after_downtime_a_schedule_fires_once_not_once_per_missed_time() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    company(&store).await;
    let wf = workflow(ONBOARD);
    force_fire_mark(&store, "onboard", "2027-02-25T09:00:00Z").await;
    let svc = service(store.clone(), Clock::parse("2027-03-01T10:00:00Z").unwrap(), &[&wf]);
    let fired = svc.fire_schedules().await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].missed, 3, "the 26th, 27th and 28th were missed");
    assert_eq!(fired[0].at.to_string(), "2027-03-01T09:00:00Z");
    assert_eq!(fired[0].queued, 2);
    assert!(svc.fire_schedules().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_run_finishes_on_the_workflow_version_it_started_with() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    let id = put(&store, None, json!({"email": "ann@acme.test"})).await;
    let v1 = workflow(
        r#"{"name": "w", "begin": {"next": "s"}, "blocks": {"s": {"type": "update", "set": {"version": "one"}}}}"#,
    );
    let v2 = workflow(
        r#"{"name": "w", "begin": {"next": "s"}, "blocks": {"s": {"type": "update", "set": {"version": "two"}}}}"#,
    );
    let svc = service(store.clone(), Clock::system(), &[&v1]);
    let record = store.records.record(id).await.unwrap().unwrap();
    let queued = svc.engine.create_run(&v1, &record, roster_engine::model::RunTrigger::Manual).await.unwrap();
    // The file is edited (and reloaded) while the run waits in the queue.
    let mut catalog = Catalog::default();
    catalog.workflows.insert("w".into(), v2.clone());
    svc.replace_catalog(catalog);
    svc.work(1, true).await.unwrap();
    assert_eq!(store.runs.run(queued.id).await.unwrap().unwrap().workflow_hash, v1.hash);
    assert_eq!(store.records.record(id).await.unwrap().unwrap().fields["version"], "one");
    // A new run takes the new version.
    let record = store.records.record(id).await.unwrap().unwrap();
    let run = svc.engine.create_run(&v2, &record, roster_engine::model::RunTrigger::Manual).await.unwrap();
    svc.work(1, true).await.unwrap();
    assert_eq!(store.runs.run(run.id).await.unwrap().unwrap().state, RunState::Succeeded);
    assert_eq!(store.records.record(id).await.unwrap().unwrap().fields["version"], "two");
}

#[tokio::test]
async fn stopping_leaves_queued_runs_queued_for_the_next_start() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    company(&store).await;
    let wf = workflow(ONBOARD);
    let svc = service(store.clone(), Clock::parse("2027-03-01T09:00:00Z").unwrap(), &[&wf]);
    svc.fire_schedules().await.unwrap();
    svc.engine.stop();
    svc.work(2, false).await.unwrap();
    assert_eq!(store.queue.queued_count().await.unwrap(), 2);
    assert!(runs_of(&store, "onboard").await.iter().all(|r| r.state == RunState::Queued));
    // The next start runs them.
    let next = service(store.clone(), Clock::parse("2027-03-01T09:00:00Z").unwrap(), &[&wf]);
    next.recover().await.unwrap();
    next.work(2, true).await.unwrap();
    assert!(runs_of(&store, "onboard").await.iter().all(|r| r.state == RunState::Succeeded));
}

#[test]
fn serve_runs_the_api_behind_its_token_and_the_cli_goes_through_it() {
    let home = TestHome::new();
    std::fs::write(
        home.path().join("workflows/stamp.json"),
        r#"{"name": "stamp", "begin": {"rules": [{"field": "email", "op": "ends_with", "value": "@acme.test"}], "next": "s"},
            "blocks": {"s": {"type": "update", "set": {"stamped": "<<run.id>>"}}}}"#,
    )
    .unwrap();
    home.import(&json!([{"email": "ann@acme.test"}, {"email": "bob@other.test"}]));
    let serving = serve(&home);

    let status = format!("{}/v1/status", serving.url);
    assert_eq!(http("GET", &status, None, None).0, 401, "no token");
    assert_eq!(http("GET", &status, Some("wrong-token"), None).0, 401, "wrong token");
    let (status, body) = http("GET", &format!("{}/v1/status", serving.url), Some(&serving.token), None);
    assert_eq!(status, 200);
    assert_eq!(body["workflows"], 1);

    // The CLI cannot open the store serve holds, so it goes through the API.
    let out = home.roster(&["run", "stamp", "--user", "ann@acme.test", "--json"]).ok();
    assert_eq!(out.json()["state"], "succeeded");
    let refused = home.roster(&["run", "stamp", "--user", "bob@other.test"]);
    assert_eq!(refused.code, 1, "a refusal exits 1 as it does without serve");
    assert!(refused.stderr.contains("refused: ") && refused.stderr.contains("ends_with"), "{}", refused.stderr);
    let runs = home.roster(&["runs", "list", "--json"]).ok().json();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    // Runs are listed by their trigger as stored; a trigger of no known kind is a 400.
    let by_trigger = |t: &str| http("GET", &format!("{}/v1/runs?trigger={t}", serving.url), Some(&serving.token), None);
    let (status, started_here) = by_trigger("manual:api");
    assert_eq!(status, 200);
    assert_eq!(started_here, runs, "the run the CLI started through serve");
    assert_eq!(by_trigger("manual").1, json!([]));
    let (status, unknown) = by_trigger("sometimes");
    assert_eq!(status, 400);
    assert!(unknown["error"].as_str().unwrap().contains("unknown run trigger `sometimes`"), "{unknown}");
    // A credential of no known kind is refused with the kinds there are, and nothing is stored.
    let credential = json!({"name": "odd", "kind": "token", "secrets": {"secret": "s3cret-value"}});
    let (status, refused) =
        http("POST", &format!("{}/v1/credentials", serving.url), Some(&serving.token), Some(credential));
    assert_eq!(status, 422);
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("unknown credential kind `token` (known: bearer, api-key, basic, expensify, oauth2)"),
        "{error}"
    );
    let (_, stored) = http("GET", &format!("{}/v1/credentials", serving.url), Some(&serving.token), None);
    assert_eq!(stored, json!([]));
    let ann = home.roster(&["records", "show", "ann@acme.test", "--json"]).ok().json();
    assert_eq!(ann["fields"]["stamped"], runs[0]["run_id"]);
    let imported = home.file("more.json", r#"[{"email": "cid@acme.test"}]"#);
    home.roster(&["records", "import", imported.to_str().unwrap()]).ok();
    // A killed serve holds nothing any more: the CLI runs on the store itself again.
    drop(serving);
    home.roster(&["run", "stamp", "--user", "ann@acme.test"]).ok();
    let runs = home.roster(&["runs", "list", "--json"]).ok().json();
    assert_eq!(runs[0]["trigger"], "manual", "{runs}");
}

#[test]
fn serve_refuses_to_start_on_invalid_files_and_stops_cleanly_on_sigterm() {
    let home = TestHome::new();
    std::fs::write(
        home.path().join("workflows/bad.json"),
        r#"{"name": "bad", "begin": {"next": "nowhere"}, "blocks": {}}"#,
    )
    .unwrap();
    let out = home.roster(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("bad.json") && out.stderr.contains("nowhere"), "{}", out.stderr);
    // Whatever is wrong with the file, the refusal is an error naming it, never a crash.
    for text in bad_workflows() {
        std::fs::write(home.path().join("workflows/bad.json"), &text).unwrap();
        let out = home.roster(&["serve", "--listen", "127.0.0.1:0"]);
        assert_eq!(out.code, 1, "{text}\n{}", out.stderr);
        assert!(out.stderr.contains("bad.json") && !out.stderr.contains("panicked"), "{}", out.stderr);
    }
    std::fs::remove_file(home.path().join("workflows/bad.json")).unwrap();

    let mut serving = serve(&home);
    let pid = serving.child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = serving.child.wait().unwrap();
    assert!(status.success(), "serve exits 0 on SIGTERM");
    assert!(!home.path().join("serve.json").exists());
    home.roster(&["runs", "list"]).ok();
}

#[test]
fn the_demo_runs_end_to_end() {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_roster")).args(["demo", "--people", "20"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in ["invited to Brex", "card terminated", "0 duplicate side effects", "onboarding", "offboarding"] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(!stdout.contains(" failed "), "{stdout}");
}

#[test]
fn an_interrupted_batch_resumes_instead_of_starting_over() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let server = support::Recorder::start(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(150));
        (200, json!({"ok": true}))
    });
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), "batch-secret-token");
    let people: Vec<Value> = (0..12).map(|i| json!({"email": format!("p{i}@acme.test")})).collect();
    home.import(&Value::Array(people));
    let wf = home.file(
        "ping.json",
        r#"{"name": "ping", "begin": {"rules": [{"field": "pinged_at", "op": "is_empty"}], "next": "call"},
            "blocks": {"call": {"type": "api", "credential": "api", "request": {"method": "GET", "url": "/ping/<<email>>"}, "next": "stamp"},
                       "stamp": {"type": "update", "set": {"pinged_at": "<<now>>"}}}}"#,
    );
    let wf = wf.to_str().unwrap();
    // A short lease: on PostgreSQL the run the killed process held is resumed once it expires.
    let mut child = home
        .command(&["run", wf, "--all", "--concurrency", "1"])
        .env("ROSTER_LEASE", "2s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while hits.load(Ordering::SeqCst) < 4 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();

    let out = home.roster(&["run", wf, "--all", "--json"]).ok().json();
    assert_eq!(out["runs"], 12, "the resumed batch has one run per person, not a second set: {out}");
    assert_eq!(out["states"]["succeeded"], 12, "{out}");
    // Each person was called once, plus at most one resend of the call in flight at the kill.
    let calls = hits.load(Ordering::SeqCst);
    assert!((12..=13).contains(&calls), "{calls} calls");
    // Finished batches are not resumed: a new one finds nobody left to ping.
    let again = home.roster(&["run", wf, "--all", "--json"]).ok().json();
    assert_eq!(again["runs"], 0, "{again}");
}

#[test]
fn a_batch_on_a_shared_store_waits_for_the_runs_a_serve_node_took() {
    // The first people's calls fail twice before they succeed, so their runs sit in retry
    // backoff for a second; the serve node claims those as the batch queues them, and the
    // CLI is through the rest long before.
    fn slow(uri: &str) -> bool {
        ["/ping/p0%40acme.test", "/ping/p1%40acme.test", "/ping/p2%40acme.test", "/ping/p3%40acme.test"].contains(&uri)
    }
    let calls = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new()));
    let seen = calls.clone();
    let server = support::Recorder::start(move |s| {
        let mut calls = seen.lock().unwrap();
        let n = calls.entry(s.uri.clone()).or_default();
        *n += 1;
        if slow(&s.uri) && *n <= 2 { (500, json!({"error": "busy"})) } else { (200, json!({"ok": true})) }
    });
    // Two homes on one database with one master key: the CLI's, and a serve node's.
    let database = support::FreshDatabase::new();
    let (cli, node) = (TestHome::uninitialised(), TestHome::uninitialised());
    cli.roster(&["init", "--store", &database.url()]).ok();
    std::fs::copy(cli.path().join("master.key"), node.path().join("master.key")).unwrap();
    node.roster(&["init", "--store", &database.url()]).ok();
    cli.add_bearer("api", &server.url(), "shared-batch-secret");
    let people: Vec<Value> = (0..12).map(|i| json!({"email": format!("p{i}@acme.test")})).collect();
    cli.import(&Value::Array(people));
    let wf = cli.file(
        "ping.json",
        r#"{"name": "ping", "begin": {"next": "call"},
            "blocks": {"call": {"type": "api", "credential": "api", "request": {"method": "GET", "url": "/ping/<<email>>"},
                                "retry": {"initial": "500ms", "max_attempts": 3}}}}"#,
    );
    let serving = support::serve_with(&node, &["-v"]);
    let out = cli.roster(&["run", wf.to_str().unwrap(), "--all", "--concurrency", "1", "--json"]).ok().json();
    assert_eq!(out["states"], json!({"succeeded": 12}), "every run of the batch, wherever it ran: {out}");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 12);
    assert!(calls.iter().all(|(uri, n)| *n == if slow(uri) { 3 } else { 1 }), "{calls:?}");
    let taken = serving.output().matches("run started (batch:").count();
    assert!(taken > 0, "the serve node took some of the batch:\n{}", serving.output());
}

#[tokio::test]
async fn an_equality_rule_selects_through_the_field_index_with_the_same_result() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    company(&store).await;
    put(&store, None, json!({"email": "done@acme.test", "start_date": "2027-03-01", "onboarded_at": "x"})).await;
    let wf = workflow(
        r#"{"name": "today", "begin": {"trigger": {"schedule": "daily"},
            "rules": [{"field": "start_date", "op": "equals", "value": "<<today>>"}, {"field": "onboarded_at", "op": "is_empty"}],
            "next": "s"}, "blocks": {"s": {"type": "update", "set": {"onboarded_at": "<<now>>"}}}}"#,
    );
    let svc = service(store.clone(), Clock::parse("2027-03-01T10:00:00Z").unwrap(), &[&wf]);
    let scanned: Vec<String> = svc.select(&wf).await.unwrap().into_iter().map(|r| r.label()).collect();
    assert_eq!(svc.prepare_indexes().await.unwrap(), ["start_date"]);
    let indexed: Vec<String> = svc.select(&wf).await.unwrap().into_iter().map(|r| r.label()).collect();
    assert_eq!(scanned, ["today@acme.test"]);
    assert_eq!(indexed, scanned);
    // Writes after the index exists keep it current.
    put(&store, None, json!({"email": "late@acme.test", "start_date": "2027-03-01"})).await;
    assert_eq!(svc.select(&wf).await.unwrap().len(), 2);
}

/// Invites whoever starts `<<today>>` (no "already invited" guard: the schedule's dedupe
/// alone must keep it to one run per person and local day) and notes which day it saw.
fn invite_starters(schedule: &str) -> Arc<Workflow> {
    workflow(&format!(
        r#"{{"name": "invite", "begin": {{"trigger": {{"schedule": {schedule}}},
            "rules": [{{"field": "start_date", "op": "equals", "value": "<<today>>"}}], "next": "stamp"}},
          "blocks": {{"stamp": {{"type": "update", "set": {{"invited_for": "<<today>>"}}}}}}}}"#
    ))
}

async fn starters(store: &Store) -> (uuid::Uuid, uuid::Uuid) {
    let feb = put(store, None, json!({"email": "feb28@acme.test", "start_date": "2027-02-28"})).await;
    let mar = put(store, None, json!({"email": "mar1@acme.test", "start_date": "2027-03-01"})).await;
    (feb, mar)
}

#[tokio::test]
async fn a_los_angeles_schedule_sees_its_local_date_as_today_from_selection_to_the_last_step() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    let (feb, mar) = starters(&store).await;
    let wf = invite_starters(r#"{"daily": "17:00", "timezone": "America/Los_Angeles"}"#);
    // 01:00 UTC on the 1st is 17:00 on the 28th in Los Angeles.
    let fire = service(store.clone(), Clock::parse("2027-03-01T01:00:00Z").unwrap(), &[&wf]);
    let fired = fire.fire_schedules().await.unwrap();
    assert_eq!(fired[0].at.to_string(), "2027-03-01T01:00:00Z");
    assert_eq!(fired[0].local_date.to_string(), "2027-02-28");
    assert_eq!(fired[0].queued, 1, "the 28th's starter, not tomorrow's");
    let queued = runs_of(&store, "invite").await;
    assert_eq!(queued[0].record_id, feb);
    assert_eq!(queued[0].today.as_deref(), Some("2027-02-28"), "the run keeps the fire's local date");

    // The run's turn comes the next (UTC and local) morning: its re-check and its steps
    // still see the 28th, so it runs instead of being skipped.
    let later = service(store.clone(), Clock::parse("2027-03-01T16:00:00Z").unwrap(), &[&wf]);
    later.work(1, true).await.unwrap();
    let run = &runs_of(&store, "invite").await[0];
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    assert_eq!(store.records.record(feb).await.unwrap().unwrap().fields["invited_for"], "2027-02-28");
    assert!(store.records.record(mar).await.unwrap().unwrap().fields.get("invited_for").is_none());
}

#[tokio::test]
async fn a_catch_up_fire_and_the_days_regular_fire_invite_each_person_once() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    let (feb, mar) = starters(&store).await;
    let daily = invite_starters(r#"{"daily": "09:00"}"#);
    // Down since the 26th; started at 08:00 on the 1st: the 28th's fire is caught up.
    force_fire_mark(&store, "invite", "2027-02-26T09:00:00Z").await;
    let early = service(store.clone(), Clock::parse("2027-03-01T08:00:00Z").unwrap(), &[&daily]);
    let fired = early.fire_schedules().await.unwrap();
    assert_eq!((fired[0].local_date.to_string().as_str(), fired[0].queued), ("2027-02-28", 1));
    let nine = service(store.clone(), Clock::parse("2027-03-01T09:00:00Z").unwrap(), &[&daily]);
    let fired = nine.fire_schedules().await.unwrap();
    assert_eq!((fired[0].local_date.to_string().as_str(), fired[0].queued), ("2027-03-01", 1));

    // The schedule is edited to 17:00 the same day: a second fire of the 1st, no second run.
    let evening = invite_starters(r#"{"daily": "17:00"}"#);
    let five = service(store.clone(), Clock::parse("2027-03-01T17:00:00Z").unwrap(), &[&evening]);
    let fired = five.fire_schedules().await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].queued, 0, "one person, one workflow, one local day, one run");
    five.work(1, true).await.unwrap();
    let runs = runs_of(&store, "invite").await;
    let per_person: Vec<uuid::Uuid> = runs.iter().map(|r| r.record_id).collect();
    assert_eq!(per_person.len(), 2, "{runs:#?}");
    assert!(per_person.contains(&feb) && per_person.contains(&mar));
    assert!(runs.iter().all(|r| r.state == RunState::Succeeded));
    assert_eq!(store.records.record(feb).await.unwrap().unwrap().fields["invited_for"], "2027-02-28");
    assert_eq!(store.records.record(mar).await.unwrap().unwrap().fields["invited_for"], "2027-03-01");
}

#[tokio::test]
async fn an_hourly_schedule_runs_once_per_fire_not_once_per_day() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    let (_, mar) = starters(&store).await;
    let hourly = invite_starters(r#""hourly""#);
    for (now, fires) in [("2027-03-01T09:00:00Z", 1), ("2027-03-01T09:30:00Z", 0), ("2027-03-01T10:00:00Z", 1)] {
        let svc = service(store.clone(), Clock::parse(now).unwrap(), &[&hourly]);
        let fired = svc.fire_schedules().await.unwrap();
        assert_eq!(fired.len(), fires, "{now}");
        assert!(fired.iter().all(|f| f.queued == 1), "{now}: {fired:?}");
        // The same fire again (a restart, a racing scheduler) queues nothing.
        force_fire_mark(&store, "invite", "2027-02-01T00:00:00Z").await;
        let again = service(store.clone(), Clock::parse(now).unwrap(), &[&hourly]);
        assert!(again.fire_schedules().await.unwrap().iter().all(|f| f.queued == 0), "{now}");
    }
    let runs = runs_of(&store, "invite").await;
    assert_eq!(runs.len(), 2, "one run per hourly fire: {runs:#?}");
    assert!(runs.iter().all(|r| r.record_id == mar && r.today.as_deref() == Some("2027-03-01")));
}

#[test]
fn a_run_by_hand_sees_the_machines_date_as_today() {
    let home = TestHome::new();
    home.import(&json!([{"email": "ann@acme.test"}]));
    let wf = home.file(
        "stamp.json",
        r#"{"name": "stamp", "begin": {"next": "stamp"},
            "blocks": {"stamp": {"type": "update", "set": {"stamped_for": "<<today>>"}}}}"#,
    );
    let run = |tz: &str| {
        let out = home
            .command(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test", "--dry-run", "--json"])
            .env("ROSTER_NOW", "2027-03-01T01:00:00Z")
            .env("TZ", tz)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        json["steps"][0]["changes"]["stamped_for"].as_str().unwrap().to_string()
    };
    assert_eq!(run("America/Los_Angeles"), "2027-02-28");
    assert_eq!(run("UTC"), "2027-03-01");

    // A real run keeps the date it ran for; `runs show` says which.
    let out = home
        .command(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test", "--json"])
        .env("ROSTER_NOW", "2027-03-01T01:00:00Z")
        .env("TZ", "America/Los_Angeles")
        .output()
        .unwrap();
    let detail: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(detail["today"], "2027-02-28", "{detail:#}");
    assert_eq!(home.fields("ann@acme.test")["stamped_for"], "2027-02-28");
}

/// Workflow files that must be refused, each for a different reason.
fn bad_workflows() -> Vec<String> {
    let wf = |template: &str| {
        json!({"name": "bad", "begin": {"next": "s"}, "blocks": {"s": {"type": "update", "set": {"x": template}}}})
            .to_string()
    };
    vec![
        wf(&format!("{{{{#if {}a{}}}}}y{{{{/if}}}}", "(not ".repeat(4_000), ")".repeat(4_000))),
        wf("Hallo <<prénom"),
        wf("{{prénom"),
        wf("{{#if é}}"),
        r#"{"name": "bad", "begin": {"trigger": {"schedule": "0 25 * * *"}, "next": "s"}, "blocks": {"s": {"type": "end"}}}"#
            .to_string(),
        format!(r#"{{"name": "bad", "begin": {{"next": "s"}}, "blocks": {}}}"#, "[".repeat(300)),
        "{\"name\": \"bad\", \"begin\": {".to_string(),
    ]
}

fn workflow_names(serving: &Serving) -> Vec<String> {
    let (status, list) = http("GET", &format!("{}/v1/workflows", serving.url), Some(&serving.token), None);
    assert_eq!(status, 200);
    list.as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap().to_string()).collect()
}

fn hang_up(serving: &Serving) {
    let pid = serving.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
}

#[test]
fn serve_reloads_unicode_templates_and_refuses_bad_files_without_stopping() {
    let home = TestHome::new();
    let stamp = r#"{"name": "stamp", "begin": {"next": "s"}, "blocks": {"s": {"type": "update", "set": {"x": "1"}}}}"#;
    std::fs::write(home.path().join("workflows/stamp.json"), stamp).unwrap();
    let mut serving = serve(&home);
    assert_eq!(workflow_names(&serving), ["stamp"]);

    let wait_for = |serving: &Serving, names: &[&str]| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while workflow_names(serving) != names {
            assert!(std::time::Instant::now() < deadline, "reload did not happen: {:?}", workflow_names(serving));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let greet = r#"{"name": "greet", "begin": {"next": "s"}, "blocks": {"s": {"type": "update",
        "set": {"greeting": "Bonjour {{prénom}} {{#if 名前}}<<名前>>{{/if}} {{Straße}} 😀"}}}}"#;
    std::fs::write(home.path().join("workflows/greet.json"), greet).unwrap();
    hang_up(&serving);
    wait_for(&serving, &["greet", "stamp"]);

    for text in bad_workflows() {
        std::fs::write(home.path().join("workflows/bad.json"), &text).unwrap();
        hang_up(&serving);
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(serving.child.try_wait().unwrap().is_none(), "serve stopped on a reload of:\n{text}");
        assert_eq!(workflow_names(&serving), ["greet", "stamp"], "the loaded files stay");
    }
    std::fs::remove_file(home.path().join("workflows/bad.json")).unwrap();
    std::fs::write(home.path().join("workflows/third.json"), stamp.replace("stamp", "third")).unwrap();
    hang_up(&serving);
    wait_for(&serving, &["greet", "stamp", "third"]);
}

#[tokio::test]
async fn a_workflow_that_cannot_start_never_keeps_the_others_from_starting() {
    let test_store = TestStore::new();
    let store = test_store.open().await;
    // Its rules read a variable no record has, so they cannot be evaluated at all.
    let broken = |trigger: &str| {
        workflow(&format!(
            r#"{{"name": "a-broken", "begin": {{"trigger": {trigger},
                "rules": [{{"field": "start_date", "op": "equals", "value": "<<manager.start_date>>"}}], "next": "s"}},
                "blocks": {{"s": {{"type": "update", "set": {{"x": 1}}}}}}}}"#
        ))
    };
    let fine = |trigger: &str| {
        workflow(&format!(
            r#"{{"name": "b-fine", "begin": {{"trigger": {trigger}, "next": "s"}},
                "blocks": {{"s": {{"type": "update", "set": {{"y": 1}}}}}}}}"#
        ))
    };
    let (a, b) = (broken(r#"{"schedule": "hourly"}"#), fine(r#"{"schedule": "hourly"}"#));
    put(&store, None, json!({"email": "ann@acme.test", "start_date": "2027-03-01"})).await;
    let svc = service(store.clone(), Clock::parse("2027-03-01T09:30:00Z").unwrap(), &[&a, &b]);
    let fired = svc.fire_schedules().await.unwrap();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!((fired[0].workflow.as_str(), fired[0].queued), ("b-fine", 1));

    let test_store = TestStore::new();
    let store = test_store.open().await;
    let (a, b) = (broken(r#"{"on": "created"}"#), fine(r#"{"on": "created"}"#));
    let svc = service(store.clone(), Clock::parse("2027-03-01").unwrap(), &[&a, &b]);
    assert_eq!(svc.dispatch_events().await.unwrap(), 0);
    put(&store, None, json!({"email": "bob@acme.test"})).await;
    assert_eq!(svc.dispatch_events().await.unwrap(), 1, "b-fine still hears the event");
    assert_eq!(svc.dispatch_events().await.unwrap(), 0, "and the cursor moved past it");
    svc.work(2, true).await.unwrap();
    assert_eq!(runs_of(&store, "b-fine").await.len(), 1);
}
