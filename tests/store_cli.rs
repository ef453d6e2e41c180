//! The store commands on a real PostgreSQL server: `init --store`, `store migrate`,
//! `store copy` from an embedded home, and `nodes`.

mod support;

use serde_json::json;
use support::{FreshDatabase, TestHome};

const STAMP: &str = r#"{"name": "stamp", "begin": {"next": "s"},
  "blocks": {"s": {"type": "update", "set": {"stamped": "<<today>>"}}}}"#;

#[test]
fn an_embedded_home_moves_to_postgresql_whole_and_a_second_copy_is_refused() {
    let old = TestHome::sled();
    old.import(&json!([{"email": "ann@acme.test"}, {"email": "bob@acme.test"}]));
    let wf = old.file("stamp.json", STAMP);
    let ran = old.roster(&["--now", "2027-01-04", "run", wf.to_str().unwrap(), "--user", "ann@acme.test", "--json"]);
    let run_id = ran.ok().json()["run_id"].as_str().unwrap().to_string();

    let database = FreshDatabase::new();
    let url = database.url();
    let copied = old.roster(&["store", "copy", "--from", old.path().to_str().unwrap(), "--to", &url]).ok();
    assert!(copied.stdout.contains("copied 2 records"), "{}", copied.all());
    assert!(copied.stdout.contains("both hold the same"), "{}", copied.all());

    // A node's home on the database sees the people, their provenance and the run.
    let node = TestHome::sled();
    let master_key = std::fs::read(old.path().join("master.key")).unwrap();
    std::fs::write(node.path().join("master.key"), master_key).unwrap();
    node.roster(&["--store", &url, "init"]).ok();
    assert!(node.path().join("store.url").exists());
    let ann = node.roster(&["records", "show", "ann@acme.test", "--json"]).ok().json();
    assert_eq!(ann["fields"]["stamped"], "2027-01-04", "{ann}");
    let shown = node.roster(&["runs", "show", &run_id, "--json"]).ok().json();
    assert_eq!(shown["state"], "succeeded", "{shown}");
    assert_eq!(shown["steps"].as_array().unwrap().len(), 1);
    assert!(node.roster(&["nodes"]).ok().stdout.contains("no node has run `roster serve`"));
    assert!(node.roster(&["store", "migrate"]).ok().stdout.contains("migrated"));

    let again = old.roster(&["store", "copy", "--from", old.path().to_str().unwrap(), "--to", &url]);
    assert_ne!(again.code, 0);
    assert!(again.all().contains("copy only into an empty store"), "{}", again.all());
}

#[test]
fn a_store_url_that_is_not_postgres_or_cannot_be_reached_says_what_to_do() {
    let home = TestHome::new();
    let wrong = home.roster(&["--store", "mysql://root@127.0.0.1/x", "records", "list"]);
    assert_eq!(wrong.code, 2);
    assert!(wrong.all().contains("postgres://USER@HOST:PORT/DATABASE"), "{}", wrong.all());
    let unreachable = home.roster(&["--store", "postgres://roster:s3cret-pass@127.0.0.1:1/roster", "records", "list"]);
    assert_eq!(unreachable.code, 2);
    assert!(unreachable.all().contains("127.0.0.1:1"), "{}", unreachable.all());
    assert!(!unreachable.all().contains("s3cret-pass"), "the password never shows: {}", unreachable.all());
}

/// `roster run --user` from one home while another home's `serve` works on the same
/// database: the run is this process's from its creation, so no serve worker takes it, and
/// every person gets exactly one card.
#[test]
fn a_run_by_hand_beside_a_serve_node_on_the_same_database_is_not_taken_by_it() {
    let db = FreshDatabase::new();
    let [node, admin]: [TestHome; 2] = TestHome::sharing(&db, 2).try_into().ok().unwrap();
    let sandbox = support::SandboxHandle::start(support::SandboxHandle::config(8));
    admin.add_sandbox_brex(&sandbox);
    let integration =
        admin.file("brex.json", r#"{"name": "brex", "connector": "brex", "credential": "brex", "sync_key": "email"}"#);
    admin.roster(&["sync", integration.to_str().unwrap()]).ok();
    let workflow = support::cards_workflow("cards", "By hand");
    std::fs::write(node.path().join("workflows/cards.json"), &workflow).unwrap();
    let file = admin.file("cards.json", &workflow);
    let mut serving = support::serve(&node);

    let people: Vec<String> = admin
        .records()
        .iter()
        .filter(|r| r["fields"]["brex_status"] == "ACTIVE")
        .filter_map(|r| r["fields"]["email"].as_str().map(str::to_string))
        .collect();
    assert!(people.len() >= 4, "the sandbox has active people: {people:?}");
    let (held, others) = people.split_first().unwrap();
    for email in others {
        let ran = admin.roster(&["run", file.to_str().unwrap(), "--user", email, "--json"]);
        assert_eq!(ran.code, 0, "the run for {email} is this process's to the end\n{}", ran.all());
        assert_eq!(ran.json()["state"], "succeeded", "{}", ran.stdout);
        assert!(ran.json()["trigger"].as_str().is_some_and(|t| t == "manual"), "{}", ran.stdout);
    }

    // While one process drives a person's run (Brex answers slowly now), a second
    // `run --user` for that person is refused, naming the holder, and sends nothing.
    sandbox.sandbox.set_faults(roster_sandbox::Faults {
        slow: 1.0,
        slow_for: std::time::Duration::from_millis(1500),
        ..Default::default()
    });
    let driving = admin
        .command(&["run", file.to_str().unwrap(), "--user", held])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let driving = std::thread::spawn(move || driving.wait_with_output());
    loop {
        let runs = admin.roster(&["runs", "list", "--json"]).ok().json();
        if runs.as_array().unwrap().iter().any(|r| r["state"] == "running") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the first run never started: {runs}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let again = admin.roster(&["run", file.to_str().unwrap(), "--user", held]).code(2);
    assert!(again.stderr.contains("is being run by"), "{}", again.all());
    let first = driving.join().unwrap().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    sandbox.sandbox.set_faults(roster_sandbox::Faults::default());
    serving.terminate();
    for user in sandbox.brex_users().iter().filter(|u| people.contains(&u["email"].as_str().unwrap().to_string())) {
        let email = user["email"].as_str().unwrap();
        let cards = sandbox.brex_cards(user["id"].as_str().unwrap());
        let ours = cards.iter().filter(|c| c["card_name"] == format!("By hand {email}")).count();
        assert_eq!(ours, 1, "one card from the runs for {email}: {cards:?}");
    }
}
