//! `--help` explains every command, argument and option: a flag shown without a word on
//! what it does is a question a user has to ask someone.

use std::process::Command;

fn help(path: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_roster")).args(path).arg("--help").output().unwrap();
    assert!(out.status.success(), "roster {} --help failed", path.join(" "));
    String::from_utf8(out.stdout).unwrap()
}

/// The entries of one section (`Commands:`, `Arguments:`, `Options:`) as (name, description).
fn section(text: &str, title: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            inside = line == title;
            continue;
        }
        if !inside || line.trim().is_empty() {
            continue;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent <= 6 && (trimmed.starts_with('-') || trimmed.starts_with('<') || indent == 2) {
            // `  -v, --verbose...   More log output` or `  <FILE>...  Workflow files`
            let (name, rest) = match trimmed.find("  ") {
                Some(i) => (&trimmed[..i], trimmed[i..].trim()),
                None => (trimmed, ""),
            };
            out.push((name.to_string(), rest.to_string()));
        } else if let Some(last) = out.last_mut() {
            // A description wrapped onto the next line.
            if last.1.is_empty() {
                last.1 = trimmed.to_string();
            }
        }
    }
    out
}

fn check(path: &mut Vec<String>, missing: &mut Vec<String>) {
    let args: Vec<&str> = path.iter().map(String::as_str).collect();
    let text = help(&args);
    for title in ["Arguments:", "Options:"] {
        for (name, description) in section(&text, title) {
            // `[default: 50]` alone says what the value is, not what it is for.
            if description.is_empty() || description.starts_with('[') {
                missing.push(format!("roster {} {name}", path.join(" ")));
            }
        }
    }
    for (name, description) in section(&text, "Commands:") {
        if name == "help" {
            continue;
        }
        if description.is_empty() {
            missing.push(format!("roster {} {name} (command)", path.join(" ")));
        }
        path.push(name);
        check(path, missing);
        path.pop();
    }
}

#[test]
fn every_command_argument_and_option_has_a_description() {
    let mut missing = Vec::new();
    check(&mut Vec::new(), &mut missing);
    assert!(missing.is_empty(), "--help shows these without a description:\n{}", missing.join("\n"));
}
