//! The README's Quickstart, line by line, as a new user would type it: against `roster
//! sandbox` on its well-known ports, in an empty folder next to the examples. It runs on
//! the embedded store, then again with `ROSTER_STORE_URL` naming a fresh PostgreSQL database.

mod support;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shell lines of the README's Quickstart block.
fn quickstart_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("## Quickstart").nth(1).expect("README has a Quickstart");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("a sh block");
    block.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// The command without its trailing `# comment`.
fn without_comment(line: &str) -> &str {
    match line.find("   #").or_else(|| line.find("  #")) {
        Some(i) => line[..i].trim_end(),
        None => line,
    }
}

struct Sandbox(Child);

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_quickstart_works_as_written_on_both_stores() {
    // One after the other: the sandbox's ports are fixed.
    quickstart(None);
    let database = support::FreshDatabase::new();
    quickstart(Some(&database.url()));
}

fn quickstart(store_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_roster"));
    std::os::unix::fs::symlink(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"), dir.path().join("examples"))
        .unwrap();
    let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let shell = |line: &str| {
        let out = Command::new("bash")
            .args(["-c", line])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("ROSTER_HOME")
            .env_remove("ROSTER_NOW")
            .envs(store_url.map(|url| ("ROSTER_STORE_URL", url)))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "`{line}` failed:\n{text}");
        text
    };
    let mut sandbox = None;
    let mut outputs = Vec::new();
    for line in quickstart_lines() {
        let command = without_comment(&line);
        if command.starts_with("cargo build") || command.starts_with("alias ") || command.starts_with("kill %") {
            continue;
        }
        if let Some(background) = command.strip_suffix('&') {
            let args: Vec<&str> = background.split_whitespace().skip(1).collect();
            let child = Command::new(bin).args(&args).current_dir(dir.path()).stdout(Stdio::null()).spawn().unwrap();
            sandbox = Some(Sandbox(child));
            let started = Instant::now();
            while TcpStream::connect("127.0.0.1:7403").is_err() {
                assert!(started.elapsed() < Duration::from_secs(10), "the sandbox did not start on 7401-7403");
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        }
        let command = if command.contains("RUN_ID") {
            let list = shell("roster runs list --json");
            let runs: serde_json::Value = serde_json::from_str(&list).unwrap();
            let id = runs[0]["run_id"].as_str().expect("runs list shows a run").to_string();
            command.replace("RUN_ID", &id)
        } else {
            command.to_string()
        };
        outputs.push((command.clone(), shell(&command)));
    }
    assert!(sandbox.is_some(), "the Quickstart starts the sandbox");
    let home = dir.path().join(".roster");
    assert_eq!(home.join("store").exists(), store_url.is_none(), "the embedded store only when no URL is given");
    assert_eq!(home.join("store.url").exists(), store_url.is_some(), "init records the URL it was given");
    let said = |prefix: &str| -> String {
        outputs.iter().find(|(c, _)| c.starts_with(prefix)).map(|(_, o)| o.clone()).unwrap_or_default()
    };
    assert!(said("roster sync examples/integrations/sage-people.json").contains("25 created"));
    assert!(said("roster records show").contains("employment_active"));
    let dry = said("roster run examples/brex/offboard-brex.json --user lily.larsen@acme.test --dry-run");
    assert!(dry.contains("/v2/users/"), "{dry}");
    let ran = outputs
        .iter()
        .find(|(c, _)| c.starts_with("roster run ") && !c.contains("--dry-run"))
        .map(|(_, o)| o.clone())
        .unwrap();
    assert!(ran.contains("succeeded"), "{ran}");
    assert!(said("roster runs show").contains("deactivate"));
}

#[test]
fn demo_and_sandbox_believe_now() {
    let bin = env!("CARGO_BIN_EXE_roster");
    let demo = Command::new(bin).args(["--now", "2027-03-01T10:00:00Z", "demo", "--people", "12"]).output().unwrap();
    let text = String::from_utf8_lossy(&demo.stdout);
    assert!(demo.status.success(), "{text}{}", String::from_utf8_lossy(&demo.stderr));
    assert!(text.contains("today is 2027-03-01"), "{text}");

    let mut child = Command::new(bin)
        .args(["--now", "2027-03-01", "sandbox", "--brex-port", "0", "--expensify-port", "0", "--sage-port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("today 2027-03-01"), "{first}");
}
