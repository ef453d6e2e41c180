//! Operating `roster serve`: stopping, the CLI through its API, its HTTP answers.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Recorder, TestHome, http, serve};

/// A workflow that locks each of a person's cards, one `for_each` item per card, with a
/// retry policy whose backoff (5 minutes) outlasts any test.
const LOCK_CARDS: &str = r#"{"name": "lock", "begin": {"next": "lock"},
    "blocks": {"lock": {"type": "api", "credential": "api", "for_each": "<<cards>>",
        "request": {"method": "GET", "url": "/cards/<<item>>/lock"},
        "retry": {"max_attempts": 10, "initial": "5m", "max_delay": "5m"}}}}"#;

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn home_with_cards(server: &Recorder, cards: usize) -> TestHome {
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), "lock-secret-token");
    let cards: Vec<String> = (0..cards).map(|i| format!("c{i}")).collect();
    home.import(&json!([{"email": "ann@acme.test", "cards": cards}]));
    std::fs::write(home.path().join("workflows/lock.json"), LOCK_CARDS).unwrap();
    home
}

fn start_lock(serving: &support::Serving) -> String {
    let (status, body) = http(
        "POST",
        &format!("{}/v1/workflows/lock/runs", serving.url),
        Some(&serving.token),
        Some(json!({"user": "ann@acme.test"})),
    );
    assert_eq!(status, 202, "{body}");
    body["run_id"].as_str().unwrap().to_string()
}

/// A manual workflow `stamp` in HOME/workflows that only sets a field.
fn home_with_stamp(home: &TestHome) {
    let stamp = r#"{"name": "stamp", "begin": {"next": "s"}, "blocks": {"s": {"type": "update", "set": {"x": 1}}}}"#;
    std::fs::write(home.path().join("workflows/stamp.json"), stamp).unwrap();
}

fn run_state(home: &TestHome, id: &str) -> Value {
    home.roster(&["runs", "show", id, "--json"]).ok().json()
}

#[test]
fn sigterm_during_a_retry_backoff_stops_at_once_and_the_next_start_finishes_without_repeats() {
    let failing = Arc::new(AtomicBool::new(true));
    let hits = Arc::new(AtomicUsize::new(0));
    let (fail, count) = (failing.clone(), hits.clone());
    let server = Recorder::start(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        if fail.load(Ordering::SeqCst) { (500, json!({"error": "down"})) } else { (200, json!({"ok": true})) }
    });
    let home = home_with_cards(&server, 3);
    let mut serving = serve(&home);
    let id = start_lock(&serving);
    wait_until("the first attempt", || hits.load(Ordering::SeqCst) == 1);
    std::thread::sleep(Duration::from_millis(200)); // now in its 5-minute backoff
    let (clean, took) = serving.terminate();
    assert!(clean, "serve exits 0:\n{}", serving.output());
    assert!(took < Duration::from_secs(3), "the stop took {took:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "nothing is sent after the stop");
    let parked = run_state(&home, &id);
    assert_eq!(parked["state"], "queued", "{parked}");
    let steps = parked["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["phase"] == "finished"), "no half-finished call: {parked}");

    failing.store(false, Ordering::SeqCst);
    let _serving = serve(&home);
    wait_until("the resumed run", || hits.load(Ordering::SeqCst) >= 4);
    std::thread::sleep(Duration::from_millis(300));
    let seen: Vec<String> = server.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(seen, ["/cards/c0/lock", "/cards/c0/lock", "/cards/c1/lock", "/cards/c2/lock"], "one retry, no repeats");
    drop(_serving);
    assert_eq!(run_state(&home, &id)["state"], "succeeded");
}

#[test]
fn sigterm_stops_between_for_each_items_and_the_next_start_sends_only_the_rest() {
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    let server = Recorder::start(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        (200, json!({"ok": true}))
    });
    let home = home_with_cards(&server, 20);
    let mut serving = serve(&home);
    let id = start_lock(&serving);
    wait_until("two calls", || hits.load(Ordering::SeqCst) >= 2);
    let (clean, took) = serving.terminate();
    assert!(clean, "{}", serving.output());
    assert!(took < Duration::from_secs(3), "the stop took {took:?}");
    let sent = hits.load(Ordering::SeqCst);
    assert!(sent < 20, "the run stopped between items, {sent} sent");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(hits.load(Ordering::SeqCst), sent, "nothing is sent after serve exited");
    assert_eq!(run_state(&home, &id)["state"], "queued");

    let restarted = serve(&home);
    wait_until("the rest of the items", || hits.load(Ordering::SeqCst) >= 20);
    std::thread::sleep(Duration::from_millis(700));
    drop(restarted);
    let mut uris: Vec<String> = server.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(uris.len(), 20, "each card locked once: {uris:?}");
    uris.dedup();
    assert_eq!(uris.len(), 20, "{uris:?}");
    assert_eq!(run_state(&home, &id)["state"], "succeeded");
}

/// Output with what differs between two homes and two runs blanked: ids, times,
/// durations and the home's path.
fn normalized(text: &str, home: &TestHome) -> String {
    let mut out = text.replace(home.path().to_str().unwrap(), "<home>");
    let patterns = [
        (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>"),
        (r"\d{4}-\d{2}-\d{2}T[0-9:.]+(Z|[+-]\d{2}:\d{2})", "<time>"),
        (r"\d+ ms", "<n> ms"),
        (r"\d+\.\d s", "<n> s"),
        (r#""(elapsed_ms|duration_ms)": \d+"#, "\"$1\": <n>"),
        // The process that ran a sync: each process is a node of its own.
        (r#""node": "[^"]*""#, "\"node\": \"<node>\""),
        // A run started through the API says so in its trigger.
        (r"manual:api", "manual"),
    ];
    for (pattern, with) in patterns {
        out = regex::Regex::new(pattern).unwrap().replace_all(&out, with).into_owned();
    }
    // Tables are aligned to their widest cell, which the blanking changed.
    out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n")
}

/// The same set-up in a new home: a credential, two people, a loaded workflow, a workflow
/// file serve does not load, and one that fails.
fn cli_home(server: &Recorder) -> TestHome {
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), "cli-secret-token");
    home.import(&json!([{"email": "ann@acme.test", "first_name": "Ann"}, {"email": "bob@other.test"}]));
    std::fs::write(
        home.path().join("workflows/stamp.json"),
        r#"{"name": "stamp", "begin": {"rules": [{"field": "email", "op": "ends_with", "value": "@acme.test"}], "next": "call"},
            "blocks": {"call": {"type": "api", "credential": "api", "request": {"method": "POST", "url": "/users/<<email>>", "body": {"name": "<<first_name>>"}}, "next": "s"},
                       "s": {"type": "update", "set": {"stamped": "yes"}}}}"#,
    )
    .unwrap();
    home.file(
        "fail.json",
        r#"{"name": "fail", "begin": {"next": "call"},
            "blocks": {"call": {"type": "api", "credential": "api", "request": {"method": "GET", "url": "/fail/<<email>>"},
                                "retry": {"max_attempts": 1}}}}"#,
    );
    home.file("more.json", r#"[{"email": "cid@acme.test"}, {"first_name": "no key"}]"#);
    // Not in HOME/integrations, so serve has not loaded it: the CLI sends it along.
    home.file(
        "cards.json",
        r#"{"name": "cards", "connector": "brex", "credential": "api", "preference": "update_only"}"#,
    );
    home
}

/// Runs the command list in `home`, returning each command's normalized output.
fn transcript(home: &TestHome) -> Vec<(String, i32, String)> {
    let file = |name: &str| home.path().join(name).to_str().unwrap().to_string();
    let (fail, more, cards) = (file("fail.json"), file("more.json"), file("cards.json"));
    let mut out = Vec::new();
    let mut step = |args: Vec<String>, stdin: Option<&str>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = match stdin {
            Some(input) => home.roster_stdin(&refs, input),
            None => home.roster(&refs),
        };
        let text = normalized(&ran.all(), home);
        out.push((args.join(" "), ran.code, text));
        ran
    };
    let s = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    step(s(&["credentials", "list"]), None);
    // Credentials are checked through serve too: `api` is known, `apii` is not.
    step(s(&["validate", "stamp", &fail]), None);
    let misspelled = std::fs::read_to_string(&fail).unwrap().replace("\"api\"", "\"apii\"");
    step(s(&["validate", home.file("misspelled.json", &misspelled).to_str().unwrap()]), None);
    step(s(&["workflows", "list"]), None);
    step(
        s(&["credentials", "add", "extra", "--kind", "bearer", "--base-url", "http://127.0.0.1:9"]),
        Some("extra-secret"),
    );
    step(s(&["credentials", "update", "extra", "--timeout", "5s", "--secret-stdin"]), Some("rotated-secret"));
    step(s(&["credentials", "list", "--json"]), None);
    step(s(&["credentials", "remove", "extra"]), None);
    step(s(&["credentials", "remove", "extra"]), None);
    step(s(&["records", "import", &more]), None);
    step(s(&["records", "show", "ann@acme.test"]), None);
    step(s(&["records", "show", "nobody@acme.test"]), None);
    step(s(&["records", "list"]), None);
    step(s(&["run", "stamp", "--user", "ann@acme.test", "--dry-run"]), None);
    step(s(&["run", "stamp", "--user", "bob@other.test", "--dry-run"]), None);
    step(s(&["run", &fail, "--user", "ann@acme.test", "--dry-run"]), None);
    step(s(&["run", "stamp", "--all", "--dry-run"]), None);
    step(s(&["run", "stamp", "--user", "bob@other.test"]), None);
    step(s(&["run", "stamp", "--user", "ann@acme.test"]), None);
    step(s(&["run", "stamp", "--all"]), None);
    step(s(&["run", "stamp", "--all", "--json"]), None);
    let failed = step(s(&["run", &fail, "--user", "ann@acme.test", "--json"]), None);
    let id = failed.json()["run_id"].as_str().unwrap().to_string();
    step(s(&["runs", "show", &id]), None);
    step(s(&["runs", "list"]), None);
    step(s(&["runs", "retry", &id]), None);
    step(s(&["runs", "show", &id]), None);
    step(s(&["runs", "cancel", &id]), None);
    step(s(&["runs", "resume", "not-a-run"]), None);
    step(s(&["runs", "show", "not-a-run"]), None);
    step(s(&["runs", "cancel", "0190a1b2-0000-7000-8000-000000000000"]), None);
    step(s(&["sync", &cards, "--test"]), None);
    step(s(&["sync", &cards]), None);
    step(s(&["sync", "sessions"]), None);
    let sessions = step(s(&["sync", "sessions", "--json"]), None);
    let session = sessions.json()[0]["id"].as_str().unwrap().to_string();
    step(s(&["sync", "show", &session]), None);
    out
}

#[test]
fn every_command_prints_the_same_through_serve_as_without_it() {
    let server = Recorder::start(|seen| {
        if seen.uri.starts_with("/fail/") {
            (500, json!({"message": "down"}))
        } else if seen.uri.starts_with("/v2/users") {
            let user = |id: &str, email: &str| json!({"id": id, "email": email, "first_name": "A", "last_name": "B", "status": "ACTIVE"});
            (200, json!({"items": [user("u1", "ann@acme.test"), user("u2", "dan@acme.test")], "next_cursor": null}))
        } else {
            (200, json!({"ok": true}))
        }
    });
    let alone = cli_home(&server);
    let expected = transcript(&alone);

    let served = cli_home(&server);
    let serving = serve(&served);
    let got = transcript(&served);
    for ((cmd, code, text), (_, served_code, served_text)) in expected.iter().zip(&got) {
        assert_eq!(
            (code, text),
            (served_code, served_text),
            "`roster {cmd}` differs through serve\n--- alone:\n{text}\n--- through serve:\n{served_text}\n--- serve log:\n{}",
            serving.output()
        );
    }
    // It really went through serve, and no secret came back out of it.
    assert!(serving.output().contains("HTTP API"), "{}", serving.output());
    for secret in ["extra-secret", "rotated-secret", "cli-secret-token"] {
        for (cmd, _, text) in &got {
            assert!(!text.contains(secret), "`{cmd}` echoed a secret:\n{text}");
        }
        assert!(!serving.output().contains(secret), "{}", serving.output());
    }
}

#[test]
fn health_needs_no_token_and_says_nothing_private_while_status_needs_it() {
    let home = TestHome::new();
    home_with_stamp(&home);
    let serving = serve(&home);
    let (status, body) = http("GET", &format!("{}/v1/health", serving.url), None, None);
    assert_eq!((status, &body), (200, &json!({"status": "ok"})), "liveness only, nothing private");
    let url = format!("{}/v1/status", serving.url);
    assert_eq!(http("GET", &url, None, None).0, 401);
    let (status, body) = http("GET", &url, Some(&serving.token), None);
    assert_eq!(status, 200);
    assert_eq!((body["workflows"].as_u64(), body["queued"].as_u64()), (Some(1), Some(0)), "{body}");
}

#[test]
fn every_error_of_the_api_is_json_with_a_helpful_message() {
    let home = TestHome::new();
    home_with_stamp(&home);
    let serving = serve(&home);
    let token = Some(serving.token.as_str());
    let at = |path: &str| format!("{}{path}", serving.url);
    // method, URL, content type, body, expected status, part of the expected message
    type Case<'a> = (&'a str, String, Option<&'a str>, Option<String>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("GET", at("/v1/nothing-here"), None, None, 404, "no route GET /v1/nothing-here"),
        ("DELETE", at("/v1/runs"), None, None, 405, "/v1/runs does not take DELETE"),
        (
            "POST",
            at("/v1/workflows/stamp/runs"),
            Some("text/plain"),
            Some("user=ann".into()),
            415,
            "Content-Type: application/json",
        ),
        ("POST", at("/v1/workflows/stamp/runs"), None, Some("{not json".into()), 400, "request body"),
        ("POST", at("/v1/workflows/stamp/runs"), None, Some("{}".into()), 422, "missing field `user`"),
        ("GET", at("/v1/runs?limit=many"), None, None, 400, "query"),
        ("GET", at("/v1/runs/not-an-id"), None, None, 400, "not a run id"),
        ("POST", at("/v1/workflows/nope/runs"), None, Some(r#"{"user": "a"}"#.into()), 404, "no workflow named `nope`"),
    ];
    for (method, url, content_type, body, status, message) in cases {
        let (got, answer, kind) = support::http_raw(method, &url, token, content_type, body).unwrap();
        assert_eq!(got, status, "{method} {url}: {answer}");
        assert!(kind.starts_with("application/json"), "{method} {url} answered {kind}");
        let error = answer["error"].as_str().unwrap_or_else(|| panic!("{method} {url}: no error in {answer}"));
        assert!(error.contains(message), "{method} {url}: {error}");
    }
    // Without the token, an unknown route is still a JSON 401.
    let (got, answer, _) = support::http_raw("GET", &at("/v1/nothing-here"), None, None, None).unwrap();
    assert_eq!(got, 401);
    assert!(answer["error"].is_string());
}

#[test]
fn serve_and_workflows_list_say_what_starts_each_workflow_and_when_it_fires_next() {
    let mut home = TestHome::new();
    home.now = Some("2027-03-01T10:00:00Z".into());
    home.import(&json!([{"email": "ann@acme.test"}]));
    std::fs::write(
        home.path().join("workflows/daily.json"),
        r#"{"name": "daily", "begin": {"trigger": {"schedule": {"cron": "0 9 * * *", "timezone": "America/Los_Angeles"}},
            "rules": [{"field": "email", "op": "equals", "value": "nobody"}], "next": "s"},
            "blocks": {"s": {"type": "update", "set": {"x": 1}}}}"#,
    )
    .unwrap();
    home_with_stamp(&home);
    // 09:00 in Los Angeles (UTC-8 on 1 March) is 17:00 UTC.
    let alone = home.roster(&["workflows", "list"]).ok().stdout;
    for expected in ["daily", "schedule 0 9 * * * (America/Los_Angeles)", "2027-03-01T17:00:00Z", "stamp", "manual"] {
        assert!(alone.contains(expected), "missing {expected:?} in:\n{alone}");
    }

    let serving = support::serve_with(&home, &["-v"]);
    let log = serving.output();
    assert!(
        log.contains("workflow daily: schedule 0 9 * * * (America/Los_Angeles), next at 2027-03-01T17:00:00Z"),
        "{log}"
    );
    assert!(log.contains("workflow stamp: manual"), "{log}");
    assert_eq!(home.roster(&["workflows", "list"]).ok().stdout, alone, "the same list through serve");
    let (_, list) = http("GET", &format!("{}/v1/workflows", serving.url), Some(&serving.token), None);
    let daily = list.as_array().unwrap().iter().find(|w| w["name"] == "daily").unwrap().clone();
    assert_eq!(daily["next_fire_at"], "2027-03-01T17:00:00Z", "{daily}");
    assert_eq!(daily["trigger"], "schedule 0 9 * * * (America/Los_Angeles)");

    // At -v, one line when a run starts and one when it ends.
    let id = {
        let (status, body) = http(
            "POST",
            &format!("{}/v1/workflows/stamp/runs", serving.url),
            Some(&serving.token),
            Some(json!({"user": "ann@acme.test"})),
        );
        assert_eq!(status, 202, "{body}");
        body["run_id"].as_str().unwrap().to_string()
    };
    wait_until("the run's log lines", || serving.output().contains("run succeeded in"));
    let lines: Vec<String> = serving.output().lines().filter(|l| l.contains(&id)).map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("run started") && lines[0].contains("ann@acme.test") && lines[0].contains("stamp"));
    assert!(lines[1].contains("run succeeded in") && lines[1].contains("duration_ms"), "{lines:?}");
}

/// The service at `now` over `store` with one integration whose credential is missing,
/// so each of its syncs fails at once.
fn failing_sync_service(store: roster_engine::store::Store, now: &str) -> Arc<roster_engine::service::Service> {
    let integration = roster_engine::sync::Integration::compile(
        r#"{"name": "hr", "connector": "brex", "credential": "missing", "schedule": {"daily": "06:00"}}"#,
        "hr.json",
        None,
    )
    .unwrap();
    let mut catalog = roster_engine::service::Catalog::default();
    catalog.integrations.insert("hr".into(), Arc::new(integration));
    let clock = roster_engine::clock::Clock::parse(now).unwrap();
    let engine = Arc::new(roster_engine::run::Engine::new(store, None, clock));
    roster_engine::service::Service::new(engine, catalog, roster_engine::presets::built_in())
}

#[tokio::test]
async fn a_failed_scheduled_sync_is_retried_with_backoff_before_the_next_day_even_across_restarts() {
    let test_store = support::TestStore::new();
    let store = test_store.open().await;
    let retry = roster_engine::store::Mark::SyncRetry { integration: "hr".into() };
    let mark = async || store.scheduler.mark(&retry).await.unwrap().unwrap_or_default();
    failing_sync_service(store.clone(), "2027-03-01T06:30:00Z").sync_due().await.unwrap();
    assert_eq!(mark().await, "1 2027-03-01T06:35:00Z", "the first retry 5 minutes after the failure");
    // A restart keeps the mark; nothing runs before it is due.
    failing_sync_service(store.clone(), "2027-03-01T06:33:00Z").sync_due().await.unwrap();
    assert_eq!(mark().await, "1 2027-03-01T06:35:00Z");
    failing_sync_service(store.clone(), "2027-03-01T06:36:00Z").sync_due().await.unwrap();
    assert_eq!(mark().await, "2 2027-03-01T06:51:00Z", "then 15 minutes");
    for (now, next) in [
        ("2027-03-01T06:52:00Z", "3 2027-03-01T07:52:00Z"),
        ("2027-03-01T07:52:00Z", "4 2027-03-01T10:52:00Z"),
        ("2027-03-01T10:52:00Z", "5 2027-03-01T16:52:00Z"),
    ] {
        failing_sync_service(store.clone(), now).sync_due().await.unwrap();
        assert_eq!(mark().await, next);
    }
    // The last retry fails too: none is left before the next scheduled time.
    failing_sync_service(store.clone(), "2027-03-01T16:52:00Z").sync_due().await.unwrap();
    assert_eq!(mark().await, "");
    let fired = store.scheduler.mark(&roster_engine::store::Mark::SyncFired { integration: "hr".into() }).await;
    assert_eq!(fired.unwrap().as_deref(), Some("2027-03-01T06:00:00Z"), "the fire is marked");
}

#[test]
fn runs_cancel_through_serve_ends_a_running_run_before_its_next_step() {
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    let server = Recorder::start(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        (500, json!({"error": "down"}))
    });
    let home = home_with_cards(&server, 3);
    let serving = serve(&home);
    let id = start_lock(&serving);
    wait_until("the first attempt", || hits.load(Ordering::SeqCst) == 1);
    std::thread::sleep(Duration::from_millis(200)); // in its 5-minute backoff, running
    assert_eq!(run_state(&home, &id)["state"], "running");
    let started = Instant::now();
    let out = home.roster(&["runs", "cancel", &id]).ok();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(out.stdout.trim(), format!("run {id} cancelled"));
    assert_eq!(run_state(&home, &id)["state"], "cancelled");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "nothing is sent after the cancel");
    drop(serving);
}
