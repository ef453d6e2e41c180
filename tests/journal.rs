//! What the journal says about time: when each step happened, to the millisecond, and how
//! long it took on a clock that cannot jump.

mod support;

use serde_json::json;
use support::TestHome;

const QUICK: &str = r#"{
  "name": "quick",
  "begin": { "trigger": { "manual": true }, "next": "check" },
  "blocks": {
    "check": { "type": "condition", "when": { "field": "email", "op": "is_not_empty" }, "then": "stamp", "else": "done" },
    "stamp": { "type": "update", "set": { "checked_at": "<<now>>" }, "next": "done" },
    "done": { "type": "end" }
  }
}"#;

#[test]
fn steps_keep_sub_second_times_and_measure_durations_monotonically() {
    let home = TestHome::new();
    home.import(&json!([{"email": "ann@acme.test"}]));
    let wf = home.file("quick.json", QUICK);
    let run = home.roster(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test", "--json"]).ok().json();
    let journal = run["steps"].as_array().expect("the run's journal");
    assert_eq!(journal.len(), 3, "{run:#}");
    for step in journal {
        for field in ["started_at", "finished_at"] {
            let at = step[field].as_str().unwrap();
            // 2026-12-01T21:57:37.123Z
            assert_eq!(at.len(), 24, "{field} {at} is not to the millisecond");
            assert!(at.parse::<jiff::Timestamp>().is_ok(), "{at}");
        }
        // Deciding a condition or setting a field takes microseconds, not the time to
        // the next whole second.
        let ms = step["duration_ms"].as_u64().expect("a duration");
        assert!(ms < 200, "{} took {ms} ms: {step:#}", step["block"]);
    }
    assert!(run["created_at"].as_str().unwrap().contains('.'), "{run:#}");
}
