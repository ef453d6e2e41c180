//! `roster credentials add|list|update`: rate limits and timeouts are checked, stored, shown
//! and used; `update` changes them and rotates the secret without removing the credential.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Recorder, TestHome};

const SECRET: &str = "first-secret-token-1a2b";
const ROTATED: &str = "rotated-secret-token-3c4d";

fn add(home: &TestHome, extra: &[&str]) -> support::Ran {
    let args: Vec<&str> = ["credentials", "add", "api", "--kind", "bearer", "--base-url", "http://127.0.0.1:9"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    home.roster_stdin(&args, SECRET)
}

#[test]
fn nonsense_rate_limits_and_timeouts_are_refused_when_added_and_updated() {
    let home = TestHome::new();
    for (flags, message) in [
        (["--rate-limit", "abc"], "is not REQUESTS/PERIOD"),
        (["--rate-limit", "0/1s"], "is not REQUESTS/PERIOD"),
        (["--rate-limit", "10/0s"], "is not REQUESTS/PERIOD"),
        (["--timeout", "banana"], "is not a duration"),
        (["--timeout", "0s"], "must be above zero"),
        (["--timeout", "99999999999999999999999s"], "is not a duration"),
        (["--timeout", "11m"], "longer than the most allowed, 600s"),
    ] {
        let out = add(&home, &flags).code(2);
        assert!(out.stderr.contains(message), "{flags:?}: {}", out.stderr);
    }
    assert_eq!(home.roster(&["credentials", "list", "--json"]).ok().json(), json!([]), "nothing was stored");

    add(&home, &["--rate-limit", "10/1s"]).ok();
    let out = home.roster(&["credentials", "update", "api", "--timeout", "banana"]).code(2);
    assert!(out.stderr.contains("is not a duration"), "{}", out.stderr);
    let out = home.roster(&["credentials", "update", "api"]).code(2);
    assert!(out.stderr.contains("nothing to update"), "{}", out.stderr);
    let out = home.roster(&["credentials", "update", "nope", "--timeout", "5s"]).code(2);
    assert!(out.stderr.contains("no credential named `nope`"), "{}", out.stderr);
    let listed = home.roster(&["credentials", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["rate_limit"], "10/1s");
    assert_eq!(listed[0]["timeout"], "30s", "the refused update changed nothing");
}

#[test]
fn the_timeout_and_rate_limit_are_stored_shown_used_and_updated_with_the_secret() {
    let server = Recorder::start(|seen| {
        if seen.uri.starts_with("/slow") {
            std::thread::sleep(Duration::from_millis(800));
        }
        (200, json!({"ok": true}))
    });
    let home = TestHome::new();
    let url = server.url();
    home.roster_stdin(
        &["credentials", "add", "api", "--kind", "bearer", "--base-url", &url, "--timeout", "200ms"],
        SECRET,
    )
    .ok();
    home.import(&json!([{"email": "ann@acme.test"}, {"email": "bob@acme.test"}, {"email": "cid@acme.test"}]));
    let call = |name: &str, path: &str| {
        let text = format!(
            r#"{{"name": "{name}", "begin": {{"next": "call"}}, "blocks": {{
                "call": {{"type": "api", "credential": "api", "retry": {{"max_attempts": 1}},
                          "request": {{"method": "GET", "url": "{path}"}}}}}}}}"#
        );
        home.file(&format!("{name}.json"), &text).display().to_string()
    };
    let slow = call("slow", "/slow/<<email>>");
    let fast = call("fast", "/fast/<<email>>");

    let table = home.roster(&["credentials", "list"]).ok().stdout;
    assert!(table.contains("RATE LIMIT") && table.contains("200ms"), "{table}");
    let out = home.roster(&["run", &slow, "--user", "ann@acme.test"]).code(1);
    assert!(out.stdout.contains("timed out"), "the 200ms timeout applies: {}", out.stdout);

    // Longer timeout, a rate limit and a new secret; the credential stays (no remove/add).
    let out = home
        .roster_stdin(
            &["credentials", "update", "api", "--timeout", "5s", "--rate-limit", "1/400ms", "--secret-stdin"],
            ROTATED,
        )
        .ok();
    assert!(out.stdout.contains("rate-limit, timeout, secret (rotated)"), "{}", out.stdout);
    let listed = home.roster(&["credentials", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["timeout"], "5s");
    assert_eq!(listed[0]["rate_limit"], "1/400ms");
    assert_eq!(listed[0]["base_url"], url.as_str(), "what was not named is kept");
    assert!(listed[0]["updated_at"].is_string());

    home.roster(&["run", &slow, "--user", "ann@acme.test"]).ok();
    let last = server.seen().last().unwrap().clone();
    assert_eq!(last.headers["authorization"], format!("Bearer {ROTATED}"), "the secret was rotated");

    // One request per 400 ms: three runs take at least 800 ms, however many run at once.
    let started = Instant::now();
    home.roster(&["run", &fast, "--all", "--concurrency", "3"]).ok();
    assert!(started.elapsed() >= Duration::from_millis(800), "paced: {:?}", started.elapsed());
    assert_eq!(server.seen().iter().filter(|s| s.uri.starts_with("/fast")).count(), 3);
}
