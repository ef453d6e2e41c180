//! End-to-end: the real `roster` binary, a temporary home, a recording server on loopback.

mod support;

use serde_json::{Value, json};
use support::{Recorder, TestHome, example, files_containing};

const SECRET: &str = "bxt_super-secret-token-9f8e7d";

/// A fake Brex answering GET /v2/users/{id} with the status the id names and PUT with the body.
fn brexish() -> Recorder {
    Recorder::start(|seen| {
        let id = seen.uri.trim_start_matches("/v2/users/").to_string();
        match seen.method.as_str() {
            "GET" if id.starts_with("missing") => {
                (404, json!({"type": "NOT_FOUND", "message": "Not Found", "code": "USER_NOT_FOUND"}))
            }
            "GET" => {
                let status = if id.ends_with("active") { "ACTIVE" } else { "DISABLED" };
                (200, json!({"id": id, "first_name": "A", "last_name": "B", "email": "a@b.test", "status": status}))
            }
            "PUT" => {
                let body = seen.json();
                (
                    200,
                    json!({"id": id, "first_name": "A", "last_name": "B", "email": "a@b.test", "status": body["status"]}),
                )
            }
            _ => (405, json!({"message": "method not allowed"})),
        }
    })
}

fn people() -> Value {
    json!([
        {"email": "ann@acme.test", "first_name": "Ann", "brex_user_id": "cuuser_ann_active"},
        {"email": "bob@acme.test", "first_name": "Bob", "brex_user_id": "cuuser_bob_disabled"},
        {"email": "cid@acme.test", "first_name": "Cid", "brex_user_id": "missing_cid"},
        {"email": "dee@acme.test", "first_name": "Dee"}
    ])
}

#[test]
fn a_workflow_branches_both_ways_and_writes_back() {
    let server = brexish();
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), SECRET);
    home.import(&people());
    let wf = example("deactivate-leavers.json");

    // Active in Brex: the `then` branch deactivates and stamps the record.
    let out = home.roster(&["run", &wf, "--user", "ann@acme.test", "--json"]).ok().json();
    assert_eq!(out["state"], "succeeded");
    let blocks: Vec<&str> = out["steps"].as_array().unwrap().iter().map(|s| s["block"].as_str().unwrap()).collect();
    assert_eq!(blocks, ["get_user", "is_active", "deactivate", "stamp", "done"]);
    assert_eq!(out["steps"][1]["branch"], "then");
    let put = server.seen().into_iter().find(|s| s.method == "PUT").expect("a PUT was sent");
    assert_eq!(put.uri, "/v2/users/cuuser_ann_active");
    assert_eq!(put.json(), json!({"status": "DISABLED"}));
    assert_eq!(put.headers["authorization"], format!("Bearer {SECRET}"));
    let ann = home.roster(&["records", "show", "ann@acme.test", "--json"]).ok().json();
    assert_eq!(ann["fields"]["brex_status"], "DISABLED");
    assert!(ann["fields"]["brex_deactivated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ann["provenance"]["brex_status"]["source"], "workflow:deactivate-leavers");

    // Already disabled: the `else` branch, and no PUT for Bob.
    let out = home.roster(&["run", &wf, "--user", "bob@acme.test", "--json"]).ok().json();
    assert_eq!(out["steps"][1]["branch"], "else");
    let puts = server.seen().iter().filter(|s| s.method == "PUT").count();
    assert_eq!(puts, 1, "Bob must not be deactivated again");
}

#[test]
fn a_vendor_4xx_is_shown_with_the_vendors_message() {
    let server = brexish();
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), SECRET);
    home.import(&people());
    let wf = home.file(
        "get.json",
        r#"{"name": "get", "begin": {"next": "get"}, "blocks": {
            "get": {"type": "api", "credential": "brex", "request": {"method": "GET", "url": "/v2/users/<<brex_user_id>>"}}}}"#,
    );
    let out = home.roster(&["run", wf.to_str().unwrap(), "--user", "cid@acme.test"]).code(1);
    assert!(out.stdout.contains("brex answered 404: Not Found (USER_NOT_FOUND)"), "{}", out.stdout);
    assert!(out.stdout.contains("failed"), "{}", out.stdout);
    let runs = home.roster(&["runs", "list", "--json"]).ok().json();
    assert_eq!(runs[0]["state"], "failed");
    assert!(runs[0]["error"].as_str().unwrap().contains("USER_NOT_FOUND"));
}

#[test]
fn rules_that_do_not_match_refuse_the_run_with_the_failing_rule() {
    let home = TestHome::new();
    home.add_bearer("brex", "http://127.0.0.1:9", SECRET);
    home.import(&people());
    let out = home.roster(&["run", &example("deactivate-leavers.json"), "--user", "dee@acme.test"]).code(1);
    assert!(out.stderr.contains("brex_user_id is_not_empty"), "{}", out.stderr);
    assert_eq!(home.roster(&["runs", "list", "--json"]).ok().json(), json!([]));
}

#[test]
fn an_unknown_variable_fails_the_step_naming_workflow_block_variable_and_record() {
    let server = brexish();
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), SECRET);
    home.import(&people());
    let wf = home.file(
        "typo.json",
        r#"{"name": "typo", "begin": {"next": "get"}, "blocks": {
            "get": {"type": "api", "credential": "brex", "request": {"method": "GET", "url": "/v2/users/<<brex_user_idd>>"}}}}"#,
    );
    let out = home.roster(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test"]).code(1);
    for part in ["workflow typo", "block get", "brex_user_idd", "ann@acme.test"] {
        assert!(out.stdout.contains(part), "missing {part:?} in:\n{}", out.stdout);
    }
    assert!(server.seen().is_empty(), "nothing may be sent when a template fails");
}

#[test]
fn validation_reports_every_error_with_its_path_and_a_fix() {
    let home = TestHome::new();
    home.add_bearer("brex", "http://127.0.0.1:9", SECRET);
    let bad = home.file(
        "bad.json",
        r#"{
          "name": "bad",
          "begin": {"trigger": {"manual": true}, "rules": [{"field": "x", "op": "equls", "value": 1}], "next": "a"},
          "blocks": {
            "a": {"type": "api", "credential": "brx", "request": {"method": "GET", "url": "/u/<<id>>"}, "next": "b"},
            "b": {"type": "condition", "when": {"field": "y", "op": "is_empty"}, "then": "c", "else": "nowhere"},
            "c": {"type": "update", "set": {"z": "<<now>>"}, "next": "a"},
            "lonely": {"type": "end"},
            "odd": {"type": "ennd"},
            "tpl": {"type": "update", "set": {"q": "{{#if x}}unclosed"}}
          }
        }"#,
    );
    let out = home.roster(&["validate", bad.to_str().unwrap()]).code(1);
    let text = out.all();
    for expected in [
        "begin.rules[0].op",
        "did you mean `equals`?",
        "blocks.a.credential",
        "unknown credential `brx`",
        "did you mean `brex`?",
        "blocks.b.else",
        "no block named `nowhere`",
        "cycle",
        "a → b → c → a",
        "blocks.odd.type",
        "did you mean `end`?",
        "blocks.tpl.set.q",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(text.contains("bad.json"), "errors name the file:\n{text}");

    // Unreachable blocks are reported once the graph is otherwise sound.
    let unreachable = home.file(
        "unreachable.json",
        r#"{"name": "u", "begin": {"next": "a"}, "blocks": {"a": {"type": "end"}, "b": {"type": "end"}}}"#,
    );
    let out = home.roster(&["validate", unreachable.to_str().unwrap()]).code(1);
    assert!(out.stderr.contains("blocks.b: block `b` is never reached from begin"), "{}", out.stderr);

    // Broken JSON names the line and column.
    let broken = home.file("broken.json", "{\n  \"name\": \"x\",\n  \"begin\": {\n}");
    let out = home.roster(&["validate", broken.to_str().unwrap()]).code(1);
    assert!(out.stderr.contains("line 4"), "{}", out.stderr);

    // And the shipped examples are all valid.
    let mut files = vec![example("deactivate-leavers.json")];
    for entry in std::fs::read_dir(example("brex")).unwrap() {
        files.push(entry.unwrap().path().display().to_string());
    }
    let args: Vec<&str> = std::iter::once("validate").chain(files.iter().map(String::as_str)).collect();
    home.roster(&args).ok();
}

#[test]
fn hostile_values_arrive_intact_in_bodies_and_encoded_in_paths() {
    let server = Recorder::start(|seen| (200, json!({"echo": seen.uri})));
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), SECRET);
    let nasty = "Ann \"the\" O'Neil\n{braces} <<email>> {{email}} ünïcødé ../../etc/passwd \\ back";
    home.import(&json!([{"email": "ann@acme.test", "nickname": nasty, "age": 42, "tags": ["a", "b"]}]));
    let wf = home.file(
        "echo.json",
        r#"{"name": "echo", "begin": {"next": "send"}, "blocks": {
            "send": {"type": "api", "credential": "api",
                     "request": {"method": "POST", "url": "/people/<<nickname>>",
                                 "body": {"nickname": "<<nickname>>", "greeting": "hi <<nickname>>!",
                                          "age": "<<age>>", "tags": "<<tags>>", "literal": "\\<<not a var"}},
                     "response": {"echoed_path": "<<response.echo>>"}}}}"#,
    );
    home.roster(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test"]).ok();
    let seen = &server.seen()[0];
    let body = seen.json();
    assert_eq!(body["nickname"], nasty);
    assert_eq!(body["greeting"], format!("hi {nasty}!"));
    assert_eq!(body["age"], 42, "a lone variable keeps its JSON type");
    assert_eq!(body["tags"], json!(["a", "b"]));
    assert_eq!(body["literal"], "<<not a var");
    assert!(seen.uri.starts_with("/people/Ann%20%22the%22"), "{}", seen.uri);
    assert!(seen.uri.contains("..%2F..%2Fetc%2Fpasswd"), "path values are percent-encoded: {}", seen.uri);
    assert!(!seen.uri.contains("../"), "{}", seen.uri);
}

#[test]
fn a_header_value_with_a_line_break_is_refused() {
    let server = Recorder::start(|_| (200, json!({})));
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), SECRET);
    home.import(&json!([{"email": "ann@acme.test", "note": "x\r\nX-Injected: 1"}]));
    let wf = home.file(
        "hdr.json",
        r#"{"name": "hdr", "begin": {"next": "send"}, "blocks": {
            "send": {"type": "api", "credential": "api",
                     "request": {"method": "GET", "url": "/x", "headers": {"X-Note": "<<note>>"}}}}}"#,
    );
    let out = home.roster(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test"]).code(1);
    assert!(out.stdout.contains("line break"), "{}", out.stdout);
    assert!(server.seen().is_empty());
}

#[test]
fn dry_run_renders_requests_and_sends_and_writes_nothing() {
    let server = brexish();
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), SECRET);
    home.import(&people());
    let out = home.roster(&["run", &example("deactivate-leavers.json"), "--user", "ann@acme.test", "--dry-run"]).ok();
    assert!(out.stdout.contains("would send GET /v2/users/cuuser_ann_active via brex"), "{}", out.stdout);
    assert!(server.seen().is_empty(), "a dry run sends nothing");
    assert_eq!(home.roster(&["runs", "list", "--json"]).ok().json(), json!([]));
    let ann = home.roster(&["records", "show", "ann@acme.test", "--json"]).ok().json();
    assert!(ann["fields"].get("brex_deactivated_at").is_none(), "a dry run writes nothing");
}

#[test]
fn the_secret_never_appears_in_the_home_folder_or_any_output() {
    let server = brexish();
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), SECRET);
    home.import(&people());
    let wf = example("deactivate-leavers.json");
    let mut outputs = vec![
        home.roster(&["run", &wf, "--user", "ann@acme.test", "--json"]),
        home.roster(&["run", &wf, "--user", "ann@acme.test", "--dry-run", "--json"]),
        home.roster(&["run", &wf, "--user", "cid@acme.test", "-vv"]),
        home.roster(&["credentials", "list"]),
        home.roster(&["credentials", "list", "--json"]),
        home.roster(&["runs", "list", "--json"]),
    ];
    let runs = home.roster(&["runs", "list", "--json"]).json();
    for run in runs.as_array().unwrap() {
        outputs.push(home.roster(&["runs", "show", run["run_id"].as_str().unwrap(), "--json"]));
        outputs.push(home.roster(&["runs", "show", run["run_id"].as_str().unwrap()]));
    }
    // The secret did reach the vendor, so the checks below are not vacuous.
    assert!(server.seen().iter().any(|s| s.headers.get("authorization").is_some_and(|a| a.contains(SECRET))));
    for out in &outputs {
        assert!(!out.all().contains(SECRET), "secret in output:\n{}", out.all());
    }
    let hits = files_containing(home.path(), SECRET.as_bytes());
    assert!(hits.is_empty(), "secret in plaintext in {hits:?}");
    let stored = home.store_contents();
    assert!(!support::contains(&stored, SECRET.as_bytes()), "secret in a key or value of the store");
}

#[test]
fn a_second_process_gets_a_plain_message_when_the_store_is_in_use() {
    // sled's folder lock; a PostgreSQL store is shared by design.
    let home = TestHome::sled();
    let _held = roster_engine::store::SledStore::open(&home.path().join("store")).expect("open store");
    let out = home.roster(&["records", "list"]).code(2);
    assert!(out.stderr.contains("is in use by another roster process"), "{}", out.stderr);
    assert!(!out.stderr.contains("WouldBlock"), "{}", out.stderr);
}

#[test]
fn records_import_from_json_ndjson_and_csv_updates_by_key() {
    let home = TestHome::new();
    let csv = home.file("people.csv", "email,first_name,department\nAnn@Acme.test,Ann,Sales\nbob@acme.test,Bob,\n");
    let out = home.roster(&["records", "import", csv.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("2 created"), "{}", out.stdout);
    let nd = home.file(
        "more.ndjson",
        "{\"email\": \"ann@acme.test\", \"department\": \"Finance\"}\n{\"email\": \"cid@acme.test\"}\n",
    );
    let out = home.roster(&["records", "import", nd.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("1 created, 1 updated"), "{}", out.stdout);
    let ann = home.roster(&["records", "show", "ANN@acme.test", "--json"]).ok().json();
    assert_eq!(ann["fields"]["department"], "Finance");
    assert_eq!(ann["fields"]["first_name"], "Ann");
    assert_eq!(ann["version"], 2);
    let dup = home.file("dup.json", r#"[{"email": "x@acme.test"}, {"email": "X@acme.test"}, {"name": "no key"}]"#);
    let out = home.roster(&["records", "import", dup.to_str().unwrap()]).code(1);
    assert!(out.stdout.contains("row 2") && out.stdout.contains("appears twice"), "{}", out.stdout);
    assert!(out.stdout.contains("row 3") && out.stdout.contains("no `email` value"), "{}", out.stdout);
    let by_id = home.file("ids.json", r#"[{"employee_id": "E1", "email": "ann@acme.test"}]"#);
    home.roster(&["records", "import", by_id.to_str().unwrap(), "--key", "employee_id"]).ok();
    home.roster(&["records", "show", "E1", "--key", "employee_id"]).ok();
}

#[test]
fn graph_draws_dot_and_mermaid() {
    let home = TestHome::new();
    let wf = example("deactivate-leavers.json");
    let dot = home.roster(&["graph", &wf]).ok().stdout;
    assert!(dot.starts_with("digraph"));
    assert!(dot.contains("\"is_active\" -> \"deactivate\" [label=\"then\"]"), "{dot}");
    let mermaid = home.roster(&["graph", &wf, "--format", "mermaid"]).ok().stdout;
    assert!(mermaid.contains("b1_is_active -->|else| b4_done"), "{mermaid}");
}

#[test]
fn run_flags_the_chosen_mode_would_ignore_are_refused_with_a_usage_error() {
    let server = brexish();
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), SECRET);
    home.import(&people());
    let wf = example("deactivate-leavers.json");
    let refused = [
        (vec!["--all", "--concurrency", "0"], "at least 1"),
        (vec!["--all", "--concurrency", "many"], "not a whole number"),
        (vec!["--user", "ann@acme.test", "--all"], "cannot be used with"),
        (vec!["--user", "ann@acme.test", "--concurrency", "4"], "--concurrency only applies to --all"),
        (vec!["--all", "--dry-run", "--concurrency", "4"], "a dry run starts no runs"),
        (vec!["--all", "--key", "id"], "--key only applies to --user"),
    ];
    for (flags, message) in refused {
        let args: Vec<&str> = ["run", wf.as_str()].into_iter().chain(flags.iter().copied()).collect();
        let out = home.roster(&args).code(2);
        assert!(out.stderr.contains(message), "{flags:?}: {}", out.stderr);
    }
    assert!(server.seen().is_empty(), "a refused command sends nothing");
    assert_eq!(home.roster(&["runs", "list", "--json"]).ok().json(), json!([]));
    let out = home.roster(&["runs", "list", "--key", "id"]).code(2);
    assert!(out.stderr.contains("--user"), "runs list --key needs --user: {}", out.stderr);
}

#[test]
fn a_path_value_of_dot_or_dot_dot_is_refused_and_never_reaches_another_resource() {
    let server = Recorder::start(|_| (200, json!({"ok": true})));
    let home = TestHome::new();
    home.add_bearer("api", &server.url(), SECRET);
    home.import(&json!([
        {"email": "up@acme.test", "card": ".."},
        {"email": "here@acme.test", "card": "."},
        {"email": "dots@acme.test", "card": "..."},
        {"email": "hidden@acme.test", "card": ".card"}
    ]));
    let wf = home.file(
        "lock.json",
        r#"{"name": "lock", "begin": {"next": "lock"}, "blocks": {
            "lock": {"type": "api", "credential": "api",
                     "request": {"method": "POST", "url": "/v2/cards/<<card>>/lock", "query": {"why": "<<card>>"}}}}}"#,
    );
    let wf = wf.to_str().unwrap();
    for (email, value) in [("up@acme.test", ".."), ("here@acme.test", ".")] {
        let dry = home.roster(&["run", wf, "--user", email, "--dry-run"]).code(1);
        assert!(dry.stdout.contains(&format!("has a `{value}` path segment")), "{}", dry.stdout);
        let out = home.roster(&["run", wf, "--user", email]).code(1);
        assert!(out.stdout.contains(&format!("has a `{value}` path segment")), "{}", out.stdout);
    }
    assert!(server.seen().is_empty(), "nothing was sent: {:?}", server.seen());

    // Dots that are not whole segments are data, and the dry run shows the URL that is sent.
    for (email, value) in [("dots@acme.test", "..."), ("hidden@acme.test", ".card")] {
        let dry = home.roster(&["run", wf, "--user", email, "--dry-run"]).ok();
        let expected = format!("/v2/cards/{value}/lock?why={value}");
        assert!(dry.stdout.contains(&format!("would send POST {expected} via api")), "{}", dry.stdout);
        home.roster(&["run", wf, "--user", email]).ok();
        assert_eq!(server.seen().last().unwrap().uri, expected);
    }
}

/// A Brex card list whose `next_cursor` is `cursor(n)` on page n (1-based), counting pages.
fn endless_cards(
    cursor: impl Fn(u64) -> String + Send + Sync + 'static,
) -> (Recorder, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    support::paged_listing(|n| json!({"id": format!("card_{n}"), "status": "ACTIVE"}), cursor)
}

fn list_cards(home: &TestHome, server: &Recorder) -> support::Ran {
    home.add_bearer("brex", &server.url(), SECRET);
    home.import(&json!([{"email": "ann@acme.test", "brex_user_id": "cuuser_ann"}]));
    home.roster(&["run", &example("brex/brex-list-user-cards.json"), "--user", "ann@acme.test"])
}

#[test]
fn a_preset_listing_whose_cursor_comes_back_fails_instead_of_looping() {
    // Pages 1 and 2 point on to `a` and `b`; page 3 points back to `a`.
    let (server, pages) = endless_cards(|n| ["a", "b", "a"][(n as usize - 1).min(2)].to_string());
    let home = TestHome::new();
    let out = list_cards(&home, &server).code(1);
    assert!(out.stdout.contains("sent the cursor `a` again after 3 page(s)"), "{}", out.stdout);
    assert_eq!(pages.load(std::sync::atomic::Ordering::SeqCst), 3, "not one request more, and no retry");
}

#[test]
fn a_preset_listing_that_never_ends_stops_at_max_pages_and_says_how_to_raise_it() {
    let (server, pages) = endless_cards(|n| format!("fresh-{n}"));
    let home = TestHome::new();
    let out = list_cards(&home, &server).code(1);
    assert!(out.stdout.contains("did not end within 1000 pages (max_pages)"), "{}", out.stdout);
    assert!(out.stdout.contains("raise max_pages in the preset's `paginate`"), "{}", out.stdout);
    assert_eq!(pages.load(std::sync::atomic::Ordering::SeqCst), 1000);

    // The caps are the preset's to set: a copy in HOME/presets overrides the built-in one.
    let mut preset: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}/presets/brex/list_user_cards.json", env!("CARGO_MANIFEST_DIR"))).unwrap(),
    )
    .unwrap();
    preset["paginate"]["max_items"] = json!(4);
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(home.path().join("presets/list_user_cards.json"), preset.to_string()).unwrap();
    pages.store(0, std::sync::atomic::Ordering::SeqCst);
    let out = home.roster(&["run", &example("brex/brex-list-user-cards.json"), "--user", "ann@acme.test"]).code(1);
    assert!(out.stdout.contains("more than 4 items (max_items)"), "{}", out.stdout);
    assert_eq!(pages.load(std::sync::atomic::Ordering::SeqCst), 5);

    preset["paginate"]["max_pages"] = json!(0);
    std::fs::write(home.path().join("presets/list_user_cards.json"), preset.to_string()).unwrap();
    let out = home.roster(&["validate", &example("brex/brex-list-user-cards.json")]);
    assert_ne!(out.code, 0);
    assert!(out.all().contains("paginate.max_pages: max_pages must be a whole number from 1"), "{}", out.all());
}

#[test]
fn validation_reports_every_problem_of_a_file_in_one_pass() {
    let home = TestHome::new();
    home.add_bearer("brex", "http://127.0.0.1:9", SECRET);
    // A newcomer's first file: each block is wrong in its own way, and the broken ones
    // still take part in the graph checks.
    let file = home.file(
        "newcomer.json",
        r#"{
          "name": "..",
          "begin": {"trigger": {"schedule": "0 25 * * *"}, "next": "check"},
          "blocks": {
            "check": {"type": "condition", "when": {"field": "status", "op": "equalz", "value": "x"}, "then": "invite", "else": "nowehre"},
            "invite": {"type": "api", "credential": "brex", "request": {"method": "POST", "url": "/v2/users", "body": {"name": "<<first_name"}},
                       "accept": [200, "2xy"], "retry": {"max_delay": "20000000000000000000s"}, "next": "stamp"},
            "stamp": {"type": "update", "set": {"greeting": "Bonjour {{prénom}}", "x": "{{#if a}}"}, "next": "invite"},
            "": {"type": "end"},
            "orphan": {"type": "end"}
          }
        }"#,
    );
    let out = home.roster(&["validate", file.to_str().unwrap()]).code(1);
    let text = out.stderr;
    for expected in [
        "name: workflow name `..` must start with a letter or digit",
        "begin.trigger.schedule: `0 25 * * *` is not a valid cron expression",
        "blocks.check.when.op: unknown op \"equalz\" (did you mean `equals`?)",
        "blocks.check.else: no block named `nowehre`",
        "blocks.invite.request.body.name: invalid template: `<<first_name` is never closed",
        "write `\\<<` for a literal `<<`",
        "blocks.invite.accept[1]: `\"2xy\"` is not an HTTP status",
        "blocks.invite.retry.max_delay: `20000000000000000000s` is longer than the maximum of 30 days",
        "blocks.stamp.set.x: invalid template: `{{#if}}` is never closed",
        "the blocks form a cycle: invite → stamp → invite",
        "blocks.: `` cannot name a block",
        "blocks.orphan: block `orphan` is never reached from begin",
        "blocks.: block `` is never reached from begin",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains("greeting"), "a non-ASCII field name is fine:\n{text}");
    assert!(!text.contains("block `check` is never reached"), "{text}");
    assert!(text.contains("12 problems"), "{text}");
}

#[test]
fn validate_checks_integration_files_and_says_what_it_could_not_check() {
    let home = TestHome::new();
    home.add_bearer("brex", "http://127.0.0.1:9", SECRET);
    let out = home.roster(&["validate", &example("integrations/brex.json"), &example("onboarding.json")]).ok();
    assert!(out.stdout.contains("brex.json: ok (integration brex, connector brex)"), "{}", out.stdout);
    let bad = home.file(
        "sage.json",
        r#"{"name": "hr", "connector": "sage_peple", "credential": "sage", "mapping": {"email": "Email"}}"#,
    );
    let out = home.roster(&["validate", bad.to_str().unwrap()]).code(1);
    assert!(
        out.stderr.contains("connector: unknown connector `sage_peple` (did you mean `sage_people`?)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("credential: unknown credential `sage`"), "{}", out.stderr);

    // Without a home, credentials cannot be checked, and validate says so.
    let nowhere = home.path().join("no-home-here");
    let out =
        home.command(&["validate", &example("deactivate-leavers.json")]).env("ROSTER_HOME", &nowhere).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("credentials not checked: no Roster home at {}", nowhere.display())), "{stderr}");
}

#[test]
fn deep_nesting_is_refused_with_a_clear_error() {
    let home = TestHome::new();
    let subs = format!("{{{{#if {}a{}}}}}y{{{{/if}}}}", "(not ".repeat(4_000), ")".repeat(4_000));
    let wf = json!({"name": "deep", "begin": {"next": "s"}, "blocks": {"s": {"type": "update", "set": {"x": subs}}}});
    let file = home.file("deep.json", &wf.to_string());
    let out = home.roster(&["validate", file.to_str().unwrap()]).code(1);
    assert!(out.stderr.contains("sub-expressions nest more than 32 deep"), "{}", out.stderr);

    let body = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let text = format!(
        r#"{{"name": "json", "begin": {{"next": "s"}}, "blocks": {{"s": {{"type": "update", "set": {{"x": {body}}}}}}}}}"#
    );
    let file = home.file("json.json", &text);
    let out = home.roster(&["validate", file.to_str().unwrap()]).code(1);
    assert!(out.stderr.contains("nests more than 128 levels deep"), "{}", out.stderr);
}

#[test]
fn validation_stays_fast_with_ten_thousand_blocks() {
    let home = TestHome::new();
    // Every edge misspelled: each one is an error with a path, and none takes long.
    let blocks: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| {
            (format!("b{i}"), json!({"type": "update", "set": {"x": "<<email>>"}, "next": format!("bx{}", i + 1)}))
        })
        .collect();
    let wf = json!({"name": "big", "begin": {"next": "b0"}, "blocks": blocks});
    let file = home.file("big.json", &wf.to_string());
    let started = std::time::Instant::now();
    let out = home.roster(&["validate", file.to_str().unwrap()]).code(1);
    let took = started.elapsed();
    assert!(out.stderr.contains("10001 problems"), "{}", &out.stderr[..500.min(out.stderr.len())]);
    assert!(out.stderr.contains(" blocks are never reached from begin: b1, b10, b100, "), "one line for them all");
    assert!(out.stderr.contains("blocks.b9999.next: no block named `bx10000`"));
    assert!(took < std::time::Duration::from_secs(10), "validate took {took:?}");

    // One loop through all of them is one short error.
    let blocks: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| {
            (format!("b{i}"), json!({"type": "update", "set": {"x": "1"}, "next": format!("b{}", (i + 1) % 10_000)}))
        })
        .collect();
    let wf = json!({"name": "loop", "begin": {"next": "b0"}, "blocks": blocks});
    let file = home.file("loop.json", &wf.to_string());
    let started = std::time::Instant::now();
    let out = home.roster(&["validate", file.to_str().unwrap()]).code(1);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(out.stderr.contains("b18 → b19 → … → b0 (10000 blocks)"), "{}", &out.stderr[..500.min(out.stderr.len())]);

    // Twenty thousand `{{#if}}`s, in a row and nested.
    let in_a_row = "{{#if email}}y{{/if}}".repeat(20_000);
    let nested = format!("{}y{}", "{{#if email}}".repeat(20_000), "{{/if}}".repeat(20_000));
    for (name, text) in [("row", in_a_row), ("nested", nested)] {
        let wf = json!({"name": name, "begin": {"next": "s"}, "blocks": {"s": {"type": "update", "set": {"x": text}}}});
        let file = home.file(&format!("{name}.json"), &wf.to_string());
        let started = std::time::Instant::now();
        let out = home.roster(&["validate", file.to_str().unwrap()]).code(1);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{name}: {:?}", started.elapsed());
        assert!(out.stderr.contains("more than"), "{name}: {}", out.stderr);
    }
}

#[test]
fn a_closed_stdout_ends_the_listing_quietly() {
    use std::io::Read;
    let home = TestHome::new();
    let people: Vec<Value> =
        (0..3_000).map(|i| json!({"email": format!("p{i}@acme.test"), "first_name": "P"})).collect();
    home.import(&Value::Array(people));
    for args in [&["records", "list"][..], &["records", "list", "--json"][..]] {
        let mut child = home
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 64];
        child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
        drop(child.stdout.take()); // `| head -c 64`
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

#[test]
fn unicode_field_names_render_in_runs() {
    let home = TestHome::new();
    home.import(&json!([{"email": "zoe@acme.test", "prénom": "Zoé", "名前": "花子"}]));
    let wf = home.file(
        "greet.json",
        r#"{"name": "greet", "begin": {"next": "s"}, "blocks": {"s": {"type": "update",
            "set": {"greeting": "Bonjour {{prénom}}, <<名前>>{{#if prénom}}!{{/if}}"}}}}"#,
    );
    home.roster(&["run", wf.to_str().unwrap(), "--user", "zoe@acme.test"]).ok();
    let zoe = home.roster(&["records", "show", "zoe@acme.test", "--json"]).ok().json();
    assert_eq!(zoe["fields"]["greeting"], "Bonjour Zoé, 花子!");
}

#[test]
fn a_dry_run_fails_when_a_step_would_and_waits_on_earlier_responses() {
    let server = brexish();
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), SECRET);
    home.import(&people());
    let wf = home.file(
        "invite.json",
        r#"{"name": "invite", "begin": {"next": "invite"}, "blocks": {
            "invite": {"type": "api", "credential": "brex", "request": {"method": "POST", "url": "/v2/users", "body": {"email": "<<email>>"}}, "next": "card"},
            "card": {"type": "api", "credential": "brex", "request": {"method": "POST", "url": "/v2/users/<<steps.invite.response.id>>/cards"}, "next": "lock"},
            "lock": {"type": "api", "credential": "brex", "for_each": "<<steps.card.response.items>>", "request": {"method": "POST", "url": "/v2/cards/<<item.id>>/lock"}, "next": "stamp"},
            "stamp": {"type": "update", "set": {"invited_as": "<<nw>>"}}}}"#,
    );
    let out = home.roster(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test", "--dry-run"]).code(1);
    assert!(out.stdout.contains("would send POST /v2/users via brex"), "{}", out.stdout);
    assert!(out.stdout.contains("card (api)  (depends on the response of `invite`)"), "{}", out.stdout);
    assert!(!out.stdout.contains("card (api)  (would fail"), "{}", out.stdout);
    assert!(out.stdout.contains("lock (api)  (depends on the response of `card`)"), "{}", out.stdout);
    assert!(out.stdout.contains("variable `nw` does not exist (did you mean `now`?)"), "{}", out.stdout);
    let json =
        home.roster(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test", "--dry-run", "--json"]).code(1).json();
    assert_eq!(json["steps"][1]["depends_on"], "invite");
    assert_eq!(json["steps"][2]["depends_on"], "card");
    assert_eq!(json["steps"][3]["would_fail"], true);
    assert!(server.seen().is_empty(), "a dry run sends nothing");

    // Without the typo, the same preview succeeds.
    let fixed = std::fs::read_to_string(&wf).unwrap().replace("<<nw>>", "<<now>>");
    std::fs::write(&wf, fixed).unwrap();
    home.roster(&["run", wf.to_str().unwrap(), "--user", "ann@acme.test", "--dry-run"]).ok();
}

#[test]
fn every_page_of_a_listing_keeps_to_the_credentials_rate_limit() {
    // Five pages, then the end.
    let (server, pages) = endless_cards(|n| if n < 5 { format!("p{n}") } else { String::new() });
    let home = TestHome::new();
    home.roster_stdin(
        &["credentials", "add", "brex", "--kind", "bearer", "--base-url", &server.url(), "--rate-limit", "2/1s"],
        SECRET,
    )
    .ok();
    home.import(&json!([{"email": "ann@acme.test", "brex_user_id": "cuuser_ann"}]));
    let started = std::time::Instant::now();
    home.roster(&["run", &example("brex/brex-list-user-cards.json"), "--user", "ann@acme.test"]).ok();
    assert_eq!(pages.load(std::sync::atomic::Ordering::SeqCst), 5);
    // Two at once, then one every 500 ms: the fifth page goes out 1.5 s after the first.
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(1400), "five pages in {took:?}: the limit was not kept");
}

#[test]
fn a_batch_selects_with_the_same_rule_scope_a_run_is_checked_with() {
    let home = TestHome::new();
    home.import(&json!([{"email": "ann@acme.test"}, {"email": "bob@other.test"}]));
    let wf = home.file(
        "scoped.json",
        r#"{"name": "scoped", "begin": {"next": "s", "rules": [
              {"field": "record.email", "op": "ends_with", "value": "@acme.test"},
              {"field": "run.workflow", "op": "equals", "value": "scoped"}]},
            "blocks": {"s": {"type": "update", "set": {"seen": "<<today>>"}}}}"#,
    );
    let wf = wf.to_str().unwrap();
    home.roster(&["run", wf, "--user", "ann@acme.test", "--dry-run"]).ok();
    home.roster(&["run", wf, "--user", "bob@other.test", "--dry-run"]).code(1);
    let batch = home.roster(&["run", wf, "--all", "--dry-run", "--json"]).ok().json();
    assert_eq!(batch["runs"], 1, "the rules select whom they accept at run time: {batch:#}");
    assert_eq!(batch["people"][0]["record"], "ann@acme.test");
}
