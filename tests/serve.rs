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
