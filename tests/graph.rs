//! `roster graph` draws what the file says, as text graphviz and Mermaid accept.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{TestHome, example};

/// A workflow whose labels hold every character DOT treats specially.
const AWKWARD: &str = r#"{
  "name": "say-hi",
  "begin": {
    "trigger": { "schedule": { "daily": "09:00", "timezone": "Europe/Paris" } },
    "rules": [ { "field": "status", "op": "equals", "value": "active \"now\"" } ],
    "next": "is \"vip\""
  },
  "blocks": {
    "is \"vip\"": { "type": "condition", "when": [ { "field": "tier", "op": "equals", "value": "gold\\silver" } ],
                    "then": "lock", "else": "end" },
    "lock": { "type": "api", "request": { "method": "POST", "url": "https://vendor.test/cards/<<item.id>>/lock" },
              "for_each": "<<cards>>", "where": [ { "field": "item.status", "op": "equals", "value": "ACTIVE" } ],
              "next": "end" },
    "end": { "type": "end" }
  }
}"#;

/// Renders `text` with graphviz; panics with its complaint when it refuses.
fn render_dot(text: &str) -> String {
    let mut dot = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("graphviz `dot` is installed (.ci/run installs it: apt-get install graphviz)");
    dot.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to dot");
    let out = dot.wait_with_output().expect("dot finishes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "graphviz refused the graph: {stderr}\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dot_output_renders_with_graphviz_and_shows_rules_and_for_each() {
    let home = TestHome::new();
    let file = home.file("awkward.json", AWKWARD);
    let dot = home.roster(&["graph", file.to_str().unwrap()]).ok().stdout;
    let svg = render_dot(&dot);
    // Labels survive as the user wrote them (graphviz writes them into the SVG as text).
    for shown in ["status equals", "for each", "item.status", "cron", "Europe/Paris"] {
        assert!(dot.contains(shown), "`{shown}` is missing from the graph:\n{dot}");
    }
    assert!(svg.contains("vip"), "{svg}");
    assert!(svg.contains("lock"), "{svg}");

    let shipped = [
        "onboarding.json",
        "offboarding.json",
        "on-leave-change.json",
        "deactivate-leavers.json",
        "offboard-at-end-of-last-day.json",
    ];
    for shipped in shipped {
        let dot = home.roster(&["graph", &example(shipped)]).ok().stdout;
        render_dot(&dot);
    }
}

#[test]
fn mermaid_output_keeps_quotes_inside_labels_and_avoids_keywords() {
    let home = TestHome::new();
    let file = home.file("awkward.json", AWKWARD);
    let mermaid = home.roster(&["graph", file.to_str().unwrap(), "--format", "mermaid"]).ok().stdout;
    for line in mermaid.lines().skip(1) {
        // A label is one quoted string: the only `"` characters are its two delimiters.
        assert!(line.matches('"').count() <= 2, "a quote escapes its label: {line}");
        let id = line.trim().split(|c: char| !c.is_ascii_alphanumeric() && c != '_').next().unwrap_or("");
        assert_ne!(id, "end", "`end` is a Mermaid keyword and cannot be a node id: {line}");
    }
    assert!(mermaid.contains("#quot;vip#quot;"), "{mermaid}");
    assert!(mermaid.contains("for each"), "{mermaid}");
}
