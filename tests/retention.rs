//! `roster runs prune` and `serve --retention`: old finished runs go with their journals;
//! unfinished runs, newer runs and what keeps triggers from firing twice stay.

mod support;

use serde_json::{Value, json};
use support::{TestHome, serve_with};

const STAMP: &str = r#"{"name": "stamp", "begin": {"next": "s"},
  "blocks": {"s": {"type": "update", "set": {"stamped": "<<today>>"}}}}"#;

/// Runs the stamp workflow for `who` on the day `on`; returns the run's id.
fn stamp_on(home: &TestHome, wf: &str, who: &str, on: &str) -> String {
    let out = home.roster(&["--now", on, "run", wf, "--user", who, "--json"]).ok().json();
    out["run_id"].as_str().unwrap_or_else(|| panic!("{out}")).to_string()
}

fn run_ids(home: &TestHome) -> Vec<String> {
    let list = home.roster(&["runs", "list", "--json"]).ok().json();
    list.as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn prune_deletes_only_finished_runs_older_than_the_age_with_their_journals() {
    let home = TestHome::new();
    home.import(&json!([{"email": "ann@acme.test"}, {"email": "bob@acme.test"}]));
    let wf = home.file("stamp.json", STAMP);
    let old = stamp_on(&home, &wf.display().to_string(), "ann@acme.test", "2027-01-04");
    let recent = stamp_on(&home, &wf.display().to_string(), "bob@acme.test", "2027-05-20");

    let pruned = home.roster(&["--now", "2027-06-01", "runs", "prune", "--older-than", "90d", "--json"]).ok().json();
    assert_eq!(pruned["pruned"], 1, "{pruned}");
    assert_eq!(pruned["before"], "2027-03-03T00:00:00Z");
    assert_eq!(run_ids(&home), std::slice::from_ref(&recent));
    let gone = home.roster(&["runs", "show", &old]);
    assert_ne!(gone.code, 0, "the pruned run and its journal are gone");
    assert_eq!(home.roster(&["runs", "show", &recent, "--json"]).ok().json()["steps"].as_array().unwrap().len(), 1);
    // What the pruned run wrote to the record stays.
    assert_eq!(home.fields("ann@acme.test")["stamped"], "2027-01-04");

    // Again: nothing left that old. A typo is refused before anything is deleted.
    let again = home.roster(&["--now", "2027-06-01", "runs", "prune", "--older-than", "90d"]).ok();
    assert!(again.stdout.contains("pruned 0 finished run(s)"), "{}", again.stdout);
    let typo = home.roster(&["runs", "prune", "--older-than", "90"]);
    assert_eq!(typo.code, 2, "a usage error");
    assert!(typo.stderr.contains("write it like 90d"), "{}", typo.stderr);
    assert_eq!(run_ids(&home), [recent]);
}

#[test]
fn serve_prunes_by_its_retention_setting_and_prune_goes_through_serve() {
    let mut home = TestHome::new();
    // Serve and the CLI believe it is this day (the stamps say which day each run was).
    home.now = Some("2026-12-10".into());
    home.import(&json!([{"email": "ann@acme.test"}, {"email": "bob@acme.test"}, {"email": "cy@acme.test"}]));
    let wf = home.file("stamp.json", STAMP).display().to_string();
    stamp_on(&home, &wf, "ann@acme.test", "2025-06-02");
    stamp_on(&home, &wf, "bob@acme.test", "2026-06-01");
    let kept = stamp_on(&home, &wf, "cy@acme.test", "2026-11-30");

    // serve prunes what is older than a year at start: ann's run.
    let serving = serve_with(&home, &["--retention", "52w"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while run_ids(&home).len() != 2 {
        assert!(std::time::Instant::now() < deadline, "serve did not prune: {:?}", run_ids(&home));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // `runs prune` while serve holds the store goes through its API.
    let out = home.roster(&["runs", "prune", "--older-than", "90d", "--json"]).ok().json();
    assert_eq!(out["pruned"], 1, "{out}");
    assert_eq!(run_ids(&home), [kept]);
    let listed: Value = home.roster(&["runs", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["state"], "succeeded");
    drop(serving);
}
