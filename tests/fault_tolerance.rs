//! Fault tolerance beyond the chaos test: unsafe requests lost in a crash, retries by
//! hand, a damaged store, a full disk, garbage from vendors, a wrong master key,
//! per-workflow concurrency.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use roster_engine::model::RunState;
use serde_json::{Value, json};
use support::{Recorder, TestHome, block};

const SECRET: &str = "fault-test-secret-token";

fn single(url_path: &str, method: &str) -> String {
    format!(
        r#"{{"name": "single", "begin": {{"next": "call"}}, "blocks": {{
            "call": {{"type": "api", "credential": "api", "request": {{"method": "{method}", "url": "{url_path}"}},
                      "retry": {{"initial": "10ms", "max_attempts": 2}}, "next": "stamp"}},
            "stamp": {{"type": "update", "set": {{"called": true}}}}}}}}"#
    )
}

/// Leaves a run as a crash would: its POST journaled as started, no answer recorded.
fn crash_mid_request(home: &TestHome, workflow: &str) -> String {
    let store = home.store();
    let presets = roster_engine::presets::built_in();
    let cx = roster_blocks::kinds::CompileContext { presets: &presets, credentials: None };
    let wf = roster_engine::workflow::Workflow::compile(workflow, "single.json", &cx).unwrap();
    let engine = roster_engine::run::Engine::new(store.clone(), None, roster_engine::clock::Clock::system());
    let record = block(roster_engine::records::find(&store, "email", "ann@acme.test")).unwrap();
    let mut run = block(engine.create_run(&wf, &record, roster_engine::model::RunTrigger::Manual)).unwrap();
    run.state = RunState::Running;
    run.next_seq = 1;
    run.pending = Some(roster_engine::model::Pending {
        seq: 0,
        block: "call".into(),
        item: None,
        attempt: 1,
        request: roster_blocks::kinds::api::RenderedRequest {
            method: "POST".into(),
            url: "/charge".into(),
            headers: vec![],
            body: None,
        },
        started_at: "2027-03-01T00:00:00Z".into(),
    });
    block(store.runs.save_step(&run, None, None)).unwrap();
    run.id.to_string()
}

#[test]
fn a_lost_unsafe_request_waits_for_a_person_and_resume_or_cancel_settle_it() {
    let server = Recorder::start(|_| (200, json!({"ok": true})));
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), SECRET);
    home.import(&json!([{"email": "ann@acme.test"}]));
    let wf = single("/charge", "POST");
    let path = home.file("single.json", &wf);
    let id = crash_mid_request(&home, &wf);

    // Running the same workflow for the same person resumes the leftover instead of
    // starting a second run; a POST without an idempotency key is not sent again on its own.
    let out = home.roster(&["run", path.to_str().unwrap(), "--user", "ann@acme.test"]).code(1);
    assert!(
        out.stdout.contains(&format!("resuming run {id}")) && out.stdout.contains("needs_attention"),
        "{}",
        out.stdout
    );
    let shown = home.roster(&["runs", "show", &id, "--json"]).ok().json();
    assert_eq!(shown["state"], "needs_attention");
    let why = shown["error"].as_str().unwrap();
    assert!(why.contains("POST /charge") && why.contains("not safe to repeat") && why.contains("runs resume"), "{why}");
    let charges = server.seen().iter().filter(|s| s.uri == "/charge").count();
    assert_eq!(charges, 0, "neither the lost charge again nor a second run's charge");

    // A person checked the vendor and decides to send it.
    home.roster(&["runs", "resume", &id]).ok();
    assert_eq!(home.roster(&["runs", "show", &id, "--json"]).ok().json()["state"], "succeeded");

    // Or to cancel another one.
    let other = crash_mid_request(&home, &wf);
    home.roster(&["runs", "list"]).ok();
    let _ = home.roster(&["run", path.to_str().unwrap(), "--user", "ann@acme.test"]);
    home.roster(&["runs", "cancel", &other]).ok();
    assert_eq!(home.roster(&["runs", "show", &other, "--json"]).ok().json()["state"], "cancelled");
}

#[test]
fn a_leftover_run_waiting_on_a_dead_vendor_does_not_hold_up_an_unrelated_run() {
    let server = Recorder::start(|seen| {
        if seen.uri == "/slow" {
            std::thread::sleep(std::time::Duration::from_secs(20));
        }
        (200, json!({"ok": true}))
    });
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), SECRET);
    home.import(&json!([{"email": "ann@acme.test"}]));
    let id = crash_mid_request(&home, &single("/slow", "GET"));
    let other = home.file(
        "stamp.json",
        r#"{"name": "stamp", "begin": {"next": "s"}, "blocks": {"s": {"type": "update", "set": {"stamped": true}}}}"#,
    );
    let started = std::time::Instant::now();
    let out = home.roster(&["run", other.to_str().unwrap(), "--user", "ann@acme.test"]).ok();
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(out.stdout.contains("succeeded"), "{}", out.stdout);
    for expected in [id.as_str(), "single", "ann@acme.test", "running", "roster runs resume", "roster runs cancel"] {
        assert!(out.stderr.contains(expected), "missing {expected:?} in:\n{}", out.stderr);
    }
    assert!(server.seen().iter().all(|s| s.uri != "/slow"), "the leftover was not resumed on the way");
    assert_eq!(home.roster(&["runs", "show", &id, "--json"]).ok().json()["state"], "running");

    // A batch does not take it on either.
    let started = std::time::Instant::now();
    let out = home.roster(&["run", other.to_str().unwrap(), "--all"]).ok();
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(out.stdout.contains("1 succeeded") && out.stderr.contains(&id), "{}", out.all());
    assert!(server.seen().iter().all(|s| s.uri != "/slow"));
}

#[test]
fn runs_retry_reruns_the_failed_step_with_a_fresh_idempotency_key() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = Recorder::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            (400, json!({"type": "BAD_REQUEST", "message": "manager_id is invalid"}))
        } else {
            (200, json!({"id": "ok"}))
        }
    });
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), SECRET);
    home.import(&json!([{"email": "ann@acme.test"}]));
    let wf = home.file(
        "keyed.json",
        r#"{"name": "keyed", "begin": {"next": "call"}, "blocks": {
            "call": {"type": "api", "credential": "api", "idempotency_key": "k-<<run.id>>",
                     "request": {"method": "POST", "url": "/things", "body": {"a": 1}}}}}"#,
    );
    let out = home.roster(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test", "--json"]).code(1).json();
    assert!(out["error"].as_str().unwrap().contains("manager_id is invalid"));
    let id = out["run_id"].as_str().unwrap().to_string();
    home.roster(&["runs", "retry", &id]).ok();
    assert_eq!(home.roster(&["runs", "show", &id, "--json"]).ok().json()["state"], "succeeded");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Derived keys (no `idempotency_key` in the block) change on a retry by hand.
    let calls2 = Arc::new(AtomicUsize::new(0));
    let c2 = calls2.clone();
    let server2 = Recorder::start(move |_| {
        if c2.fetch_add(1, Ordering::SeqCst) == 0 {
            (500, json!({"message": "boom"}))
        } else {
            (200, json!({"status": "DISABLED"}))
        }
    });
    home.roster_stdin(&["credentials", "add", "api2", "--kind", "bearer", "--base-url", &server2.url()], SECRET).ok();
    let wf2 = home.file(
        "derived.json",
        r#"{"name": "derived", "begin": {"next": "call"}, "blocks": {
            "call": {"type": "api", "credential": "api2", "preset": "brex.deactivate_user", "retry": {"max_attempts": 1},
                     "with": {"brex_user_id": "cuuser_x"}}}}"#,
    );
    let out = home.roster(&["run", wf2.to_str().unwrap(), "--user", "ann@acme.test", "--json"]).code(1).json();
    let id = out["run_id"].as_str().unwrap().to_string();
    home.roster(&["runs", "retry", &id]).ok();
    let keys: Vec<String> = server2.seen().iter().map(|s| s.headers["idempotency-key"].clone()).collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1], "a retry by hand is a new request");
    assert!(keys[1].ends_with("-r1"), "{keys:?}");
}

#[test]
fn a_damaged_store_is_a_clear_error_naming_the_folder() {
    // Damages sled's files.
    let home = TestHome::sled();
    home.import(&json!([{"email": "ann@acme.test"}]));
    let store = home.path().join("store");
    for entry in std::fs::read_dir(&store).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.file_name().unwrap() != "db" {
            continue;
        }
        if path.is_file() {
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            std::fs::write(&path, vec![0xA5u8; len.max(4096)]).unwrap();
        }
    }
    let out = home.roster(&["records", "list"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains(&store.display().to_string()), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn garbage_from_a_vendor_fails_the_step_with_a_bounded_readable_error() {
    let server = Recorder::start_raw(|seen| match seen.uri.as_str() {
        "/html" => {
            (StatusCode::BAD_GATEWAY, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>".repeat(200))
        }
        "/notjson" => (StatusCode::OK, "application/json", "{\"id\": 12, oops".to_string()),
        _ => (StatusCode::OK, "application/json", format!("{{\"blob\": \"{}\"}}", "x".repeat(20 * 1024 * 1024))),
    });
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), SECRET);
    home.import(&json!([{"email": "ann@acme.test"}]));
    for (path, expect) in [("/html", "502"), ("/huge", "larger than 16 MiB")] {
        let wf = home.file("g.json", &single(path, "GET"));
        let out = home.roster(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test", "--json"]).code(1).json();
        let error = out["error"].as_str().unwrap();
        assert!(error.contains(expect), "{error}");
        assert!(error.len() < 1000, "the error is bounded: {} bytes", error.len());
        let journal = serde_json::to_string(&out["steps"]).unwrap();
        assert!(journal.len() < 200_000, "the journal keeps a bounded excerpt: {} bytes", journal.len());
    }
    // A 200 whose body is not JSON is kept as text; a mapping that needs a field fails clearly.
    let wf = home.file(
        "m.json",
        r#"{"name": "m", "begin": {"next": "call"}, "blocks": {"call": {"type": "api", "credential": "api",
            "request": {"method": "GET", "url": "/notjson"}, "response": {"vendor_id": "<<response.id>>"}}}}"#,
    );
    let out = home.roster(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test", "--json"]).code(1).json();
    assert!(out["error"].as_str().unwrap().contains("response.id"), "{out}");
}

#[test]
fn a_wrong_master_key_is_a_clear_error_that_prints_no_secret() {
    let server = Recorder::start(|_| (200, json!({})));
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), SECRET);
    home.import(&json!([{"email": "ann@acme.test"}]));
    let wf = home.file("w.json", &single("/x", "GET"));
    let wrong = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let out = home
        .command(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test"])
        .env("ROSTER_MASTER_KEY", wrong)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("cannot decrypt credential `api`") && text.contains("master key"), "{text}");
    assert!(!text.contains(SECRET));
    assert!(server.seen().is_empty());
}

#[test]
fn a_workflow_concurrency_limit_holds_under_a_wider_pool() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (f, p) = (in_flight.clone(), peak.clone());
    let server = Recorder::start(move |_| {
        let now = f.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(40));
        f.fetch_sub(1, Ordering::SeqCst);
        (200, json!({}))
    });
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), SECRET);
    let people: Vec<Value> = (0..8).map(|i| json!({"email": format!("p{i}@acme.test")})).collect();
    home.import(&Value::Array(people));
    let wf = home.file(
        "one.json",
        r#"{"name": "one-at-a-time", "concurrency": 1, "begin": {"next": "call"}, "blocks": {
            "call": {"type": "api", "credential": "api", "request": {"method": "GET", "url": "/slow/<<email>>"}}}}"#,
    );
    let out = home.roster(&["run", wf.to_str().unwrap(), "--all", "--concurrency", "8", "--json"]).ok().json();
    assert_eq!(out["states"]["succeeded"], 8);
    assert_eq!(peak.load(Ordering::SeqCst), 1, "never two runs of the workflow at once");
}

#[test]
fn a_call_whose_answer_was_saved_is_not_sent_again_after_a_crash() {
    let server = Recorder::start(|_| (200, json!({"ok": true})));
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), SECRET);
    home.import(&json!([{"email": "ann@acme.test"}]));
    let wf = single("/charge", "POST");
    // The crash came after the answer was journaled, before the run moved on (a store
    // written before run heads were small kept the answer in the head's `steps` too).
    let id = {
        let store = home.store();
        let presets = roster_engine::presets::built_in();
        let cx = roster_blocks::kinds::CompileContext { presets: &presets, credentials: None };
        let compiled = roster_engine::workflow::Workflow::compile(&wf, "single.json", &cx).unwrap();
        let engine = roster_engine::run::Engine::new(store.clone(), None, roster_engine::clock::Clock::system());
        let record = block(roster_engine::records::find(&store, "email", "ann@acme.test")).unwrap();
        let mut run = block(engine.create_run(&compiled, &record, roster_engine::model::RunTrigger::Manual)).unwrap();
        run.state = RunState::Running;
        run.next_seq = 1;
        let answered: roster_engine::model::JournalEntry = serde_json::from_value(json!({
            "seq": 0, "block": "call", "kind": "api", "phase": "finished", "attempt": 1,
            "request": {"method": "POST", "url": "/charge"}, "status": 200,
            "response": {"status": 200, "body": {"ok": true}, "elapsed_ms": 1, "pages": 1},
            "started_at": "2027-03-01T00:00:00Z"}))
        .unwrap();
        block(store.runs.save_step(&run, Some(&answered), None)).unwrap();
        run.id.to_string()
    };
    home.roster(&["runs", "resume", &id]).ok();
    let shown = home.roster(&["runs", "show", &id, "--json"]).ok().json();
    assert_eq!(shown["state"], "succeeded");
    assert!(server.seen().is_empty(), "the charge was not sent a second time");
    let ann = home.roster(&["records", "show", "ann@acme.test", "--json"]).ok().json();
    assert_eq!(ann["fields"]["called"], true, "the run went on to its next block");
}
