//! Integrations end to end: the `roster sync` command (and, where a command cannot reach the
//! situation, the engine's sync directly) against the sandbox's fake Brex, Expensify and
//! Sage People on loopback.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use roster_sandbox::{Lifecycle, RateLimit, SandboxConfig, Vendor};
use serde_json::{Value, json};
use support::{Recorder, SandboxHandle, TestHome, block, files_containing};

const BREX_USERS: &str = "GET /v2/users";
const SAGE_EMPLOYEES: &str = "GET /services/apexrest/spapi/v4/employees";

/// Writes an integration file into the home and returns its path.
fn integration(home: &TestHome, file: &str, spec: Value) -> String {
    home.file(file, &spec.to_string()).display().to_string()
}

/// `roster sync FILE --json` that must succeed: the session.
fn sync(home: &TestHome, file: &str) -> Value {
    let session = home.roster(&["sync", file, "--json"]).ok().json();
    assert_eq!(session["state"], "succeeded", "{session:#}");
    session
}

/// `roster sync FILE --json` that must fail (exit 1): the session.
fn sync_fails(home: &TestHome, file: &str) -> Value {
    let session = home.roster(&["sync", file, "--json"]).code(1).json();
    assert_eq!(session["state"], "failed", "{session:#}");
    session
}

fn counts(session: &Value) -> BTreeMap<String, u64> {
    session["counts"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect()
}

/// The counts that are not zero.
fn nonzero(session: &Value) -> BTreeMap<String, u64> {
    counts(session).into_iter().filter(|(_, n)| *n > 0).collect()
}

fn map<const N: usize>(pairs: [(&str, u64); N]) -> BTreeMap<String, u64> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Records by email: their fields.
fn by_email(home: &TestHome) -> BTreeMap<String, Value> {
    home.records()
        .into_iter()
        .map(|r| (r["fields"]["email"].as_str().unwrap().to_string(), r["fields"].clone()))
        .collect()
}

/// Brex users by email, as the sandbox holds them.
fn brex_users(sb: &SandboxHandle) -> BTreeMap<String, Value> {
    sb.brex_users().into_iter().map(|u| (u["email"].as_str().unwrap().to_string(), u)).collect()
}

fn brex_home(sb: &SandboxHandle) -> TestHome {
    let home = TestHome::new();
    home.add_sandbox_brex(sb);
    home
}

fn started(sb: &SandboxHandle) -> Vec<roster_sandbox::Person> {
    sb.sandbox.people().into_iter().filter(|p| p.lifecycle != Lifecycle::Starter).collect()
}

#[test]
fn brex_users_are_paged_to_the_end_with_the_default_mapping() {
    let sb = SandboxHandle::start(SandboxHandle::config(25));
    let home = brex_home(&sb);
    let users = brex_users(&sb);
    let n = users.len() as u64;
    assert_eq!(n, started(&sb).len() as u64, "everyone who has started is in Brex");
    sb.sandbox.reset_stats();

    let file = integration(
        &home,
        "brex.json",
        json!({"name": "brex", "connector": "brex", "credential": "brex",
        "options": {"page_size": 7}}),
    );
    let session = sync(&home, &file);
    assert_eq!(nonzero(&session), map([("fetched", n), ("created", n)]));
    assert_eq!(sb.stats().route(Vendor::Brex, BREX_USERS), n.div_ceil(7), "one request a page, to the last");

    let records = by_email(&home);
    assert_eq!(records.keys().collect::<Vec<_>>(), users.keys().collect::<Vec<_>>());
    for (email, user) in &users {
        let r = &records[email];
        assert_eq!(r["brex_user_id"], user["id"], "{email}");
        assert_eq!(r["username"], user["id"], "{email}");
        assert_eq!(r["brex_status"], user["status"], "{email}");
        assert_eq!(r["first_name"], user["first_name"], "{email}");
        assert_eq!(r["last_name"], user["last_name"], "{email}");
        assert_eq!(r["brex_department_id"], user["department_id"], "{email}");
        assert_eq!(r["brex_manager_id"], user["manager_id"], "{email}");
        assert_eq!(r["brex_present"], true, "{email}");
    }
    let one = users.keys().next().unwrap();
    let shown = home.roster(&["records", "show", one, "--json"]).ok().json();
    assert_eq!(shown["provenance"]["brex_status"]["source"], "sync:brex");

    // Nothing changed at the source: nothing changes in the store.
    let again = sync(&home, &file);
    assert_eq!(nonzero(&again), map([("fetched", n), ("unchanged", n)]));
}

#[test]
fn sage_people_display_fields_become_snake_case_fields() {
    let sb = SandboxHandle::start(SandboxConfig { page_size_sage: 10, ..SandboxHandle::config(25) });
    let home = TestHome::new();
    home.add_sandbox_sage(&sb);
    let file =
        integration(&home, "sage.json", json!({"name": "sage", "connector": "sage_people", "credential": "sage"}));
    let session = sync(&home, &file);
    assert_eq!(nonzero(&session), map([("fetched", 25), ("created", 25)]), "starters included");
    let stats = sb.stats();
    assert_eq!(stats.route(Vendor::Sage, SAGE_EMPLOYEES), 4, "three pages, then the 204 that ends the list");
    assert_eq!(stats.sage_tokens_issued, 1);

    let records = by_email(&home);
    assert_eq!(records.len(), 25);
    for p in sb.sandbox.people() {
        let r = &records[&p.email];
        let w = &p.work_location;
        let expected = json!({
            "sage_people_id": p.sage_id,
            "first_name": p.first_name,
            "last_name": p.last_name,
            "full_name": p.full_name,
            "start_date": p.start_date.to_string(),
            "end_date": p.end_date.map(|d| d.to_string()),
            "employment_active": p.active,
            "job_title": p.job_title,
            "hr_department": p.department,
            "work_location": w.name,
            "address_line_1": w.line1,
            "address_line_2": w.line2,
            "address_line_3": w.line3,
            "city": w.city,
            "region": w.region,
            "postal_code": w.postal_code,
            "country": w.country,
            "sage_present": true,
        });
        for (field, value) in expected.as_object().unwrap() {
            assert_eq!(&r[field], value, "{} {field}", p.email);
        }
        assert!(r["employment_name"].as_str().is_some_and(|s| !s.is_empty()), "{r:#}");
    }
    let leaver = sb.sandbox.people().into_iter().find(|p| p.lifecycle == Lifecycle::Leaver).unwrap();
    assert_eq!(records[&leaver.email]["employment_active"], false);
    assert!(records[&leaver.email]["end_date"].is_string());
}

#[test]
fn expensify_employees_are_mapped_once_each_across_policies() {
    let sb = SandboxHandle::start(SandboxHandle::config(25));
    let home = TestHome::new();
    home.add_sandbox_expensify(&sb, &sb.sandbox.config().expensify_partner_user_secret);
    let file = integration(
        &home,
        "expensify.json",
        json!({"name": "expensify", "connector": "expensify", "credential": "expensify"}),
    );
    let session = sync(&home, &file);
    let people = started(&sb);
    let n = people.len() as u64;
    assert_eq!(nonzero(&session), map([("fetched", n), ("created", n)]));
    assert_eq!(sb.stats().expensify.requests, 3, "policyList, then each of the two policies");

    let records = by_email(&home);
    assert_eq!(records.len(), people.len());
    let mut roles = BTreeSet::new();
    for p in &people {
        let r = &records[&p.email];
        assert_eq!(r["username"], p.email.as_str());
        let approver = p.manager_email.clone().unwrap_or_else(|| p.email.clone());
        assert_eq!(r["expensify_approver"], approver.as_str(), "{}", p.email);
        assert!(r["expensify_policy_id"].as_str().is_some_and(|id| id.len() == 16), "{r:#}");
        assert_eq!(r["expensify_present"], true);
        roles.insert(r["expensify_role"].as_str().unwrap().to_string());
    }
    assert!(roles.contains("admin") && roles.contains("user"), "{roles:?}");
}

#[test]
fn a_mapping_file_adds_replaces_and_removes_default_entries() {
    let sb = SandboxHandle::start(SandboxHandle::config(25));
    let home = brex_home(&sb);
    let users = brex_users(&sb);
    let file = integration(
        &home,
        "brex.json",
        json!({"name": "brex", "connector": "brex", "credential": "brex",
               "mapping": {"display_name": "<<first_name>> <<last_name>>", "username": "<<email>>",
                           "brex_title_id": null, "source_system": "brex"}}),
    );
    sync(&home, &file);
    let records = by_email(&home);
    assert_eq!(records.len(), users.len());
    for (email, user) in &users {
        let r = &records[email];
        let name = format!("{} {}", user["first_name"].as_str().unwrap(), user["last_name"].as_str().unwrap());
        assert_eq!(r["display_name"], name.as_str(), "added");
        assert_eq!(r["username"], email.as_str(), "replaced");
        assert!(r.get("brex_title_id").is_none(), "removed: {r:#}");
        assert_eq!(r["source_system"], "brex", "a literal");
        assert_eq!(r["brex_user_id"], user["id"], "defaults not named are kept");
    }
}

#[test]
fn each_preference_creates_and_updates_only_what_it_may() {
    let sb = SandboxHandle::start(SandboxHandle::config(25));
    let home = brex_home(&sb);
    let users = brex_users(&sb);
    let n = users.len() as u64;
    let known = users.keys().next().unwrap().clone();
    let stale = json!([{"email": known, "brex_status": "STALE"}, {"email": "nobody@acme.test", "first_name": "No"}]);
    home.import(&stale);
    let file = |preference: &str| {
        integration(
            &home,
            &format!("{preference}.json"),
            json!({"name": "brex", "connector": "brex", "credential": "brex", "preference": preference}),
        )
    };

    // update_only: the one known person is updated; nobody new is created.
    let session = sync(&home, &file("update_only"));
    assert_eq!(nonzero(&session), map([("fetched", n), ("updated", 1), ("skipped", n - 1)]));
    let records = by_email(&home);
    assert_eq!(records.len(), 2);
    assert_eq!(records[&known]["brex_status"], users[&known]["status"]);
    assert!(records["nobody@acme.test"].get("brex_status").is_none(), "not in Brex, not touched");

    // create_only: everyone new is created; the known person is left as they are.
    home.import(&stale);
    let session = sync(&home, &file("create_only"));
    assert_eq!(nonzero(&session), map([("fetched", n), ("created", n - 1), ("skipped", 1)]));
    let records = by_email(&home);
    assert_eq!(records.len() as u64, n + 1);
    assert_eq!(records[&known]["brex_status"], "STALE");

    // create_update: both.
    home.import(&stale);
    let other = users.keys().nth(1).unwrap();
    let id = users[other]["id"].as_str().unwrap();
    let status = if users[other]["status"] == "ACTIVE" { "DISABLED" } else { "ACTIVE" };
    assert_eq!(sb.brex("PUT", &format!("/v2/users/{id}"), Some(json!({"status": status}))).0, 200);
    let session = sync(&home, &file("create_update"));
    assert_eq!(nonzero(&session), map([("fetched", n), ("updated", 2), ("unchanged", n - 2)]));
    let records = by_email(&home);
    assert_eq!(records[&known]["brex_status"], users[&known]["status"]);
    assert_eq!(records[other]["brex_status"], status);
}

#[test]
fn filters_leave_out_people_who_do_not_match() {
    let sb = SandboxHandle::start(SandboxHandle::config(25));
    let home = brex_home(&sb);
    let users = brex_users(&sb);
    let disabled: BTreeSet<&String> = users.iter().filter(|(_, u)| u["status"] == "DISABLED").map(|(e, _)| e).collect();
    assert!(!disabled.is_empty());
    let file = integration(
        &home,
        "brex.json",
        json!({"name": "brex", "connector": "brex", "credential": "brex",
               "filters": [{"field": "status", "op": "not_equals", "value": "DISABLED"}]}),
    );
    let session = sync(&home, &file);
    let (n, d) = (users.len() as u64, disabled.len() as u64);
    assert_eq!(nonzero(&session), map([("fetched", n), ("created", n - d), ("filtered", d)]));
    let records = by_email(&home);
    assert_eq!(records.len() as u64, n - d);
    assert!(disabled.iter().all(|e| !records.contains_key(*e)), "{disabled:?}");
    assert!(records.values().all(|r| r["brex_status"] == "ACTIVE"));
}

#[test]
fn people_gone_from_a_complete_sync_are_marked_not_present_and_a_failed_sync_marks_nobody() {
    // Two sandboxes of the same company: the second lets one request through in five
    // minutes, so a sync there dies after its first page.
    let sb = SandboxHandle::start(SandboxHandle::config(25));
    let limited = SandboxHandle::start(SandboxConfig {
        brex_rate_limit: RateLimit { requests: 1, per: Duration::from_secs(300) },
        ..SandboxHandle::config(25)
    });
    let home = brex_home(&sb);
    let users = brex_users(&sb);
    assert_eq!(sb.sandbox.people(), limited.sandbox.people(), "the same company");
    let n = users.len();
    let disabled: BTreeSet<String> =
        users.iter().filter(|(_, u)| u["status"] == "DISABLED").map(|(e, _)| e.clone()).collect();
    let spec = |filtered: bool| {
        let mut spec = json!({"name": "brex", "connector": "brex", "credential": "brex", "options": {"page_size": 5}});
        if filtered {
            spec["filters"] = json!([{"field": "status", "op": "not_equals", "value": "DISABLED"}]);
        }
        spec
    };
    let everyone = integration(&home, "everyone.json", spec(false));
    let active_only = integration(&home, "active-only.json", spec(true));
    let present = |home: &TestHome| -> BTreeMap<String, Value> {
        by_email(home).into_iter().map(|(e, r)| (e, r["brex_present"].clone())).collect()
    };

    sync(&home, &everyone);
    assert!(present(&home).values().all(|p| *p == true));

    // Part-way: page one arrives, page two is refused. Nobody is marked missing.
    home.add_bearer("brex", &limited.brex_url(), &limited.brex_token());
    let failed = sync_fails(&home, &active_only);
    assert!(failed["error"].as_str().unwrap().contains("Rate limit exceeded"), "{failed:#}");
    assert_eq!(counts(&failed)["missing"], 0);
    assert_eq!(counts(&failed)["fetched"], 5);
    assert_eq!(limited.stats().brex.rate_limited, 1);
    assert!(present(&home).values().all(|p| *p == true), "a failed sync marks nobody missing");

    // Complete, but filtered: people the filter leaves out are still in the source, so
    // they are not marked missing.
    home.add_sandbox_brex(&sb);
    let session = sync(&home, &active_only);
    assert_eq!(counts(&session)["missing"], 0);
    assert_eq!(counts(&session)["filtered"], disabled.len() as u64);
    assert_eq!(present(&home).len(), n);
    assert!(present(&home).values().all(|p| *p == true));
}

#[test]
fn someone_who_leaves_the_source_is_marked_not_present_and_comes_back_when_listed_again() {
    // A Brex that lists whoever the test says, in one page.
    let listed = std::sync::Arc::new(std::sync::Mutex::new(vec!["ann", "bob", "cid"]));
    let who = listed.clone();
    let fake = Recorder::start(move |_| {
        let items: Vec<Value> = who
            .lock()
            .unwrap()
            .iter()
            .map(|n| json!({"id": format!("cuuser_{n}"), "first_name": n, "last_name": "X", "email": format!("{n}@acme.test"), "status": "ACTIVE"}))
            .collect();
        (200, json!({"items": items, "next_cursor": null}))
    });
    let home = TestHome::new();
    home.add_bearer("brex", &fake.url(), "fake-brex-token");
    let file = integration(&home, "brex.json", json!({"name": "brex", "connector": "brex", "credential": "brex"}));
    let present = |home: &TestHome| -> BTreeMap<String, Value> {
        by_email(home).into_iter().map(|(e, r)| (e, r["brex_present"].clone())).collect()
    };
    sync(&home, &file);
    assert!(present(&home).values().all(|p| *p == true));

    listed.lock().unwrap().retain(|n| *n != "cid");
    let session = sync(&home, &file);
    assert_eq!(counts(&session)["missing"], 1);
    let now = present(&home);
    assert_eq!(now.len(), 3, "nobody is deleted");
    assert_eq!(now["cid@acme.test"], false);
    assert_eq!(now["ann@acme.test"], true);
    let events = block(home.store().events.events(None, 100)).unwrap();
    let gone = events.iter().rev().find(|e| e.changes.contains_key("brex_present")).unwrap();
    assert_eq!(gone.changes["brex_present"].after, json!(false), "a change event says so, for triggers");

    listed.lock().unwrap().push("cid");
    let session = sync(&home, &file);
    assert_eq!(counts(&session)["missing"], 0);
    assert!(present(&home).values().all(|p| *p == true), "back when listed again");
}

#[test]
fn a_refused_credential_fails_the_session_with_the_vendors_words_and_writes_nothing() {
    // Brex: a wrong token.
    let sb = SandboxHandle::start(SandboxHandle::config(25));
    let home = TestHome::new();
    home.add_bearer("brex", &sb.brex_url(), "not-the-token");
    let file = integration(&home, "brex.json", json!({"name": "brex", "connector": "brex", "credential": "brex"}));
    let session = sync_fails(&home, &file);
    assert!(session["error"].as_str().unwrap().contains("Invalid or Revoked Token"), "{session:#}");
    assert!(home.records().is_empty());

    // Sage People: the access token is dead on arrival, so every call is a 401, even after
    // the one fresh token the connector asks for.
    let sb = SandboxHandle::start(SandboxConfig { sage_token_ttl: Duration::ZERO, ..SandboxHandle::config(25) });
    let home = TestHome::new();
    home.add_sandbox_sage(&sb);
    let file =
        integration(&home, "sage.json", json!({"name": "sage", "connector": "sage_people", "credential": "sage"}));
    let out = home.roster(&["sync", &file]).code(1);
    assert!(out.stdout.contains("Session expired or invalid"), "{}", out.all());
    assert!(out.stdout.contains(": failed"), "{}", out.all());
    let stats = sb.stats();
    assert_eq!(stats.status(Vendor::Sage, 401), 2, "one refresh, then give up");
    assert_eq!(stats.sage_tokens_issued, 2);
    assert!(home.records().is_empty());
    let sessions = home.roster(&["sync", "sessions", "--json"]).ok().json();
    assert_eq!(sessions[0]["state"], "failed");
    assert_eq!(sessions[0]["counts"]["created"], 0);
}

#[test]
fn an_expensify_error_inside_a_200_fails_the_sync_with_expensifys_message() {
    let sb = SandboxHandle::start(SandboxHandle::config(25));
    let home = TestHome::new();
    home.add_sandbox_expensify(&sb, "wrong-partner-secret");
    let file = integration(
        &home,
        "expensify.json",
        json!({"name": "expensify", "connector": "expensify", "credential": "expensify"}),
    );
    let session = sync_fails(&home, &file);
    let error = session["error"].as_str().unwrap();
    assert!(error.contains("Not authorized to authenticate as user sandbox_partner_user"), "{error}");
    let stats = sb.stats();
    assert!(stats.expensify.requests >= 1);
    assert_eq!(stats.status(Vendor::Expensify, 200), stats.expensify.requests, "every answer was an HTTP 200");
    assert!(home.records().is_empty());
}

#[test]
fn an_expensify_rate_limit_is_hit_and_waited_out() {
    let sb = SandboxHandle::start(SandboxConfig {
        expensify_rate_limit: RateLimit { requests: 1, per: Duration::from_secs(1) },
        ..SandboxHandle::config(8)
    });
    let home = TestHome::new();
    home.add_sandbox_expensify(&sb, &sb.sandbox.config().expensify_partner_user_secret);
    let file = integration(
        &home,
        "expensify.json",
        json!({"name": "expensify", "connector": "expensify", "credential": "expensify"}),
    );
    let session = sync(&home, &file);
    let n = started(&sb).len() as u64;
    assert_eq!(nonzero(&session), map([("fetched", n), ("created", n)]));
    let stats = sb.stats();
    assert!(stats.expensify.rate_limited >= 1, "the limit was hit: {:#?}", stats.expensify);
    assert_eq!(stats.status(Vendor::Expensify, 429), stats.expensify.rate_limited);
    assert_eq!(by_email(&home).len() as u64, n);
}

/// The Integration Server job a connector's request carries (`requestJobDescription`).
fn expensify_job(seen: &support::Seen) -> Value {
    let form = String::from_utf8_lossy(&seen.body).replace('+', " ");
    let encoded = form.split('&').find_map(|pair| pair.strip_prefix("requestJobDescription=")).unwrap_or("null");
    serde_json::from_str(&percent_encoding::percent_decode_str(encoded).decode_utf8_lossy()).unwrap_or(Value::Null)
}

#[test]
fn a_sync_and_runs_on_one_credential_share_its_rate_limit() {
    // A loopback Expensify that notes when each request arrives: the sync's jobs
    // (policyList, then one policy job per policy) and the runs' calls all reach it.
    let policies: Vec<String> = (1..=12).map(|i| format!("POLICY{i:02}")).collect();
    let listed = policies.clone();
    let vendor = Recorder::start(move |seen| {
        if seen.uri.starts_with("/call/") {
            return (200, json!({"ok": true}));
        }
        let job = expensify_job(seen);
        match job["inputSettings"]["type"].as_str() {
            Some("policyList") => {
                let list: Vec<Value> = listed.iter().map(|id| json!({"id": id, "name": id})).collect();
                (200, json!({"responseCode": 200, "policyList": list}))
            }
            Some("policy") => {
                let id = job["inputSettings"]["policyIDList"][0].as_str().unwrap_or_default().to_string();
                let email = format!("{}@expensify.test", id.to_lowercase());
                let employee = json!({"email": email, "role": "user", "submitsTo": "boss@expensify.test"});
                (200, json!({"responseCode": 200, "policyInfo": {id: {"employees": [employee]}}}))
            }
            _ => (200, json!({"responseCode": 410, "responseMessage": "Argument 'type' is missing or malformed"})),
        }
    });
    let home = TestHome::new();
    let add = ["credentials", "add", "expensify", "--kind", "expensify", "--base-url", &vendor.url()];
    home.roster_stdin(&[&add[..], &["--username", "partner", "--rate-limit", "3/1s"]].concat(), "partner-secret-5e6f")
        .ok();
    let file = integration(
        &home,
        "expensify.json",
        json!({"name": "expensify", "connector": "expensify", "credential": "expensify"}),
    );
    let people: Vec<Value> = (1..=6).map(|i| json!({"email": format!("p{i}@acme.test")})).collect();
    home.import(&Value::Array(people));
    let wf = home.file(
        "call.json",
        r#"{"name": "call", "begin": {"next": "call",
              "rules": [{"field": "email", "op": "ends_with", "value": "@acme.test"}]}, "blocks": {
              "call": {"type": "api", "credential": "expensify", "retry": {"max_attempts": 1},
                       "request": {"method": "GET", "url": "/call/<<email>>"}}}}"#,
    );
    let wf = wf.to_str().unwrap();

    // Both through serve, so one engine runs them side by side: the sync first (13 jobs,
    // at least 4 s at 3 per second), and the runs once its first job has arrived.
    let _serving = support::serve(&home);
    let (synced, ran) = std::thread::scope(|s| {
        let sync = s.spawn(|| home.roster(&["sync", &file, "--json"]));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while vendor.seen().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the sync sent nothing");
            std::thread::sleep(Duration::from_millis(10));
        }
        let runs = home.roster(&["run", wf, "--all", "--json"]);
        (sync.join().unwrap(), runs)
    });
    let session = synced.ok().json();
    assert_eq!(session["state"], "succeeded", "{session:#}");
    assert_eq!(counts(&session)["fetched"], 12);
    ran.ok();

    let seen = vendor.seen();
    let (calls, jobs): (Vec<_>, Vec<_>) = seen.iter().partition(|s| s.uri.starts_with("/call/"));
    assert_eq!((jobs.len(), calls.len()), (13, 6), "policyList + twelve policy jobs, and one call per run");
    // They ran at the same time: each began before the other ended.
    let span =
        |list: &[&support::Seen]| (list.iter().map(|s| s.at).min().unwrap(), list.iter().map(|s| s.at).max().unwrap());
    let ((job_first, job_last), (call_first, call_last)) = (span(&jobs), span(&calls));
    assert!(call_first < job_last && job_first < call_last, "the sync and the runs overlapped");
    // Together they kept to the one limit: at most 3 arrivals in any 1 s.
    let mut at: Vec<_> = seen.iter().map(|s| s.at).collect();
    at.sort();
    let busiest = (0..at.len())
        .map(|i| at[i..].iter().take_while(|t| t.duration_since(at[i]) < Duration::from_secs(1)).count())
        .max()
        .unwrap();
    assert!(busiest <= 3, "{busiest} requests within one second: the sync and the runs did not share the limiter");
}

/// Expires every Sage token after each page, so each next page meets a 401.
struct ExpireAfterEachPage<'a> {
    sandbox: &'a roster_sandbox::Sandbox,
    pages: usize,
}

impl roster_engine::sync::SyncObserver for ExpireAfterEachPage<'_> {
    fn page(&mut self, _counts: &roster_engine::model::SyncCounts) {
        self.pages += 1;
        self.sandbox.expire_sage_tokens();
    }
}

#[test]
fn sage_tokens_that_expire_between_pages_are_refreshed() {
    use roster_blocks::credential::{Auth, Credential, Secret};

    let sb = SandboxHandle::start(SandboxConfig { page_size_sage: 10, ..SandboxHandle::config(25) });
    let test_store = support::TestStore::new();
    let store = sb.block_on(test_store.open());
    let c = sb.sandbox.config();
    let credential = Credential {
        name: "sage".into(),
        base_url: String::new(),
        auth: Auth::OAuth2 {
            token_url: sb.sandbox.sage_token_url(),
            client_id: c.sage_client_id.clone(),
            client_secret: Secret::new(&c.sage_client_secret),
            username: None,
            password: None,
        },
    };
    let integration = roster_engine::sync::Integration::compile(
        r#"{"name": "sage", "connector": "sage_people", "credential": "sage"}"#,
        "sage.json",
        None,
    )
    .unwrap();
    let mut observer = ExpireAfterEachPage { sandbox: &sb.sandbox, pages: 0 };
    let clock = roster_engine::clock::Clock::system();
    let session = sb
        .block_on(roster_engine::sync::run(&store, &integration, &credential, None, &clock, false, &mut observer))
        .unwrap();
    assert_eq!(session.state, roster_engine::model::SyncState::Succeeded, "{session:#?}");
    assert_eq!((session.counts.fetched, session.counts.created), (25, 25));
    assert_eq!(observer.pages, 3);
    let stats = sb.stats();
    assert_eq!(stats.status(Vendor::Sage, 401), 3, "each page after an expiry met a 401 once");
    assert_eq!(stats.sage_tokens_issued, 4, "the first token and one per expiry");
    assert_eq!(block(store.records.count_records()).unwrap(), 25);
}

#[test]
fn every_create_and_update_writes_a_change_event_with_before_and_after() {
    let sb = SandboxHandle::start(SandboxHandle::config(25));
    let home = brex_home(&sb);
    let users = brex_users(&sb);
    let file = integration(&home, "brex.json", json!({"name": "brex", "connector": "brex", "credential": "brex"}));
    sync(&home, &file);
    let (email, user) = users.iter().find(|(_, u)| u["status"] == "ACTIVE").unwrap();
    let id = user["id"].as_str().unwrap();
    assert_eq!(sb.brex("PUT", &format!("/v2/users/{id}"), Some(json!({"status": "DISABLED"}))).0, 200);
    let session = sync(&home, &file);
    assert_eq!(counts(&session)["updated"], 1);

    let store = home.store();
    let events = block(store.events.events(None, 100_000)).unwrap();
    assert_eq!(events.len(), users.len() + 1, "one per create, one for the update, none for the unchanged");
    assert!(events.iter().all(|e| e.source == "sync:brex"));
    let record = block(store.records.records_by_field("email", email)).unwrap().remove(0);
    let mine: Vec<_> = events.iter().filter(|e| e.record_id == record.id).collect();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0].kind, roster_engine::model::EventKind::Created);
    assert_eq!(mine[0].changes["brex_status"].before, Value::Null);
    assert_eq!(mine[0].changes["brex_status"].after, "ACTIVE");
    assert_eq!(mine[0].changes["email"].after, email.as_str());
    assert_eq!(mine[1].kind, roster_engine::model::EventKind::Updated);
    let changed: Vec<&String> = mine[1].changes.keys().collect();
    assert_eq!(changed, ["brex_status"], "only what changed");
    assert_eq!(mine[1].changes["brex_status"].before, "ACTIVE");
    assert_eq!(mine[1].changes["brex_status"].after, "DISABLED");
    // Oldest first, and reading after the first event skips it.
    let after = block(store.events.events(Some(events[0].id), 100_000)).unwrap();
    assert_eq!(after.len(), events.len() - 1);
}

const ECHO_TOKEN: &str = "echoed-secret-token-4f1b";

/// A Brex look-alike with a bad page: the same email twice, a person without an email, and a
/// vendor that echoes the caller's token back in a field.
fn odd_brex() -> Recorder {
    Recorder::start(|seen| {
        let auth = seen.headers.get("authorization").cloned().unwrap_or_default();
        if seen.uri.contains("cursor=") {
            return (
                200,
                json!({"next_cursor": null, "items": [
                    {"id": "cuuser_bob", "email": "bob@acme.test", "first_name": "Bob", "last_name": "B", "status": "ACTIVE"}
                ]}),
            );
        }
        (
            200,
            json!({"next_cursor": "page-2", "items": [
                {"id": "cuuser_ann", "email": "ann@acme.test", "first_name": "Ann", "last_name": "A", "status": "ACTIVE",
                 "note": format!("called with {auth}")},
                {"id": "cuuser_sam1", "email": "sam@acme.test", "first_name": "Sam", "last_name": "S", "status": "ACTIVE"},
                {"id": "cuuser_sam2", "email": "Sam@Acme.test", "first_name": "Samuel", "last_name": "S", "status": "ACTIVE"},
                {"id": "cuuser_nomail", "email": null, "first_name": "No", "last_name": "Mail", "status": "ACTIVE"}
            ]}),
        )
    })
}

#[test]
fn one_key_twice_and_a_malformed_person_fail_alone_while_the_rest_sync() {
    let server = odd_brex();
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), ECHO_TOKEN);
    let file = integration(&home, "brex.json", json!({"name": "brex", "connector": "brex", "credential": "brex"}));

    // A test sync first: it says what would happen and keeps the raw pages, secret redacted.
    // Items failed, so both exit 1 and say that nobody was marked missing.
    let preview = home.roster(&["sync", &file, "--test", "--json"]).code(1).json();
    assert_eq!(preview["test"], true);
    assert_eq!(nonzero(&preview), map([("fetched", 5), ("created", 3), ("failed", 2)]));
    let samples = preview["samples"].to_string();
    assert!(samples.contains("cuuser_ann") && samples.contains("[redacted]"), "{samples}");
    assert!(!samples.contains(ECHO_TOKEN), "{samples}");
    assert!(home.records().is_empty(), "a test sync writes no records");

    let out = home.roster(&["sync", &file]).code(1);
    assert!(out.stdout.contains("5 fetched, 3 created"), "{}", out.stdout);
    assert!(out.stdout.contains("note: nobody was marked missing"), "{}", out.stdout);
    assert!(out.stdout.contains("failed: sam@acme.test: a second person with email sam@acme.test"), "{}", out.stdout);
    assert!(out.stdout.contains("no `email` value (the sync key)"), "{}", out.stdout);
    assert!(out.stdout.contains("cuuser_nomail"), "the malformed person is named by their id: {}", out.stdout);
    let records = by_email(&home);
    assert_eq!(records.keys().collect::<Vec<_>>(), ["ann@acme.test", "bob@acme.test", "sam@acme.test"]);
    assert_eq!(records["sam@acme.test"]["first_name"], "Sam", "the first one is kept");

    let sessions = home.roster(&["sync", "sessions", "--json"]).ok().json();
    let failures = &sessions[0]["failures"];
    assert_eq!(failures.as_array().unwrap().len(), 2, "{failures:#}");
    assert_eq!(failures[0]["who"], "sam@acme.test");
    assert!(failures[0]["reason"].as_str().unwrap().contains("the first one was kept"));
    let hits = files_containing(home.path(), ECHO_TOKEN.as_bytes());
    assert!(hits.is_empty(), "the echoed secret is stored in {hits:?}");
    let stored = home.store_contents();
    assert!(!support::contains(&stored, ECHO_TOKEN.as_bytes()), "the echoed secret is in the store");
}

#[test]
fn a_test_sync_reports_what_would_change_and_writes_nothing() {
    let sb = SandboxHandle::start(SandboxHandle::config(25));
    let home = brex_home(&sb);
    let users = brex_users(&sb);
    let n = users.len() as u64;
    let file = integration(&home, "brex.json", json!({"name": "brex", "connector": "brex", "credential": "brex"}));

    let preview = home.roster(&["sync", &file, "--test", "--json"]).ok().json();
    assert_eq!(nonzero(&preview), map([("fetched", n), ("created", n)]));
    let planned = preview["preview"].as_array().unwrap();
    assert_eq!(planned.len() as u64, n);
    assert!(planned.iter().all(|p| p["action"] == "create" && p["fields"]["brex_user_id"].is_string()));
    assert!(preview["samples"][0]["items"].is_array(), "the raw first page is kept: {:#}", preview["samples"]);
    assert!(!preview.to_string().contains(&sb.brex_token()));
    assert!(home.records().is_empty());
    assert!(block(home.store().events.events(None, 10)).unwrap().is_empty(), "no change events either");

    sync(&home, &file);
    let (email, user) = users.iter().find(|(_, u)| u["status"] == "ACTIVE").unwrap();
    let id = user["id"].as_str().unwrap();
    assert_eq!(sb.brex("PUT", &format!("/v2/users/{id}"), Some(json!({"status": "DISABLED"}))).0, 200);
    let out = home.roster(&["sync", &file, "--test"]).ok();
    assert!(out.stdout.contains(&format!("1 updated, {} unchanged", n - 1)), "{}", out.stdout);
    assert!(out.stdout.contains("nothing was written"), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("would update {email}: {{\"brex_status\":\"DISABLED\"}}")), "{}", out.stdout);
    assert_eq!(home.fields(email)["brex_status"], "ACTIVE", "still as it was");

    // Who would be marked missing is counted, and not marked.
    let active_only = integration(
        &home,
        "active-only.json",
        json!({"name": "brex", "connector": "brex", "credential": "brex",
               "filters": [{"field": "status", "op": "equals", "value": "ACTIVE"}]}),
    );
    let disabled = users.values().filter(|u| u["status"] != "ACTIVE").count() as u64 + 1;
    let preview = home.roster(&["sync", &active_only, "--test", "--json"]).ok().json();
    assert_eq!(counts(&preview)["filtered"], disabled);
    assert_eq!(counts(&preview)["missing"], 0, "filtered out is not gone from the source");
    assert!(by_email(&home).values().all(|r| r["brex_present"] == true), "nobody was marked");
}

#[test]
fn sessions_are_listed_newest_first_and_shown() {
    let sb = SandboxHandle::start(SandboxHandle::config(25));
    let home = brex_home(&sb);
    home.add_bearer("brex-bad", &sb.brex_url(), "not-the-token");
    let n = brex_users(&sb).len();
    let good = integration(&home, "brex.json", json!({"name": "brex", "connector": "brex", "credential": "brex"}));
    let bad =
        integration(&home, "bad.json", json!({"name": "brex-bad", "connector": "brex", "credential": "brex-bad"}));
    let first = sync(&home, &good);
    home.roster(&["sync", &bad]).code(1);
    let third = sync(&home, &good);

    let all = home.roster(&["sync", "sessions", "--json"]).ok().json();
    let listed: Vec<(&str, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["integration"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("brex", "succeeded"), ("brex-bad", "failed"), ("brex", "succeeded")]);
    assert_eq!(all[0]["id"], third["id"]);
    let only = home.roster(&["sync", "sessions", "--integration", "brex", "--json"]).ok().json();
    let ids: Vec<&Value> = only.as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, [&third["id"], &first["id"]]);
    let table = home.roster(&["sync", "sessions"]).ok().stdout;
    assert!(table.contains("brex-bad") && table.contains("failed"), "{table}");

    let id = first["id"].as_str().unwrap();
    let shown = home.roster(&["sync", "show", id, "--json"]).ok().json();
    assert_eq!(shown, first);
    let text = home.roster(&["sync", "show", id]).ok().stdout;
    assert!(text.contains(&format!("{n} fetched, {n} created")), "{text}");
    assert!(text.contains("sample payload 1"), "{text}");
    let out = home.roster(&["sync", "show", "not-a-session"]).code(2);
    assert!(out.stderr.contains("not a session id"), "{}", out.stderr);
}

#[test]
fn a_sync_that_cannot_start_is_listed_as_failed_not_running() {
    let home = TestHome::new();
    home.add_bearer("brex", "http://127.0.0.1:9", "sandbox-brex-token");
    let file =
        integration(&home, "sage.json", json!({"name": "sage", "connector": "sage_people", "credential": "brex"}));
    let out = home.roster(&["sync", &file]).code(2);
    assert!(out.stderr.contains("needs a `oauth2` credential"), "{}", out.stderr);
    let sessions = home.roster(&["sync", "sessions", "--json"]).ok().json();
    assert_eq!(sessions[0]["state"], "failed", "{sessions:#}");
    assert!(sessions[0]["error"].as_str().unwrap().contains("`oauth2`"), "{sessions:#}");
    assert!(sessions[0]["finished_at"].is_string());
}

#[test]
fn ten_thousand_brex_people_sync() {
    let sb = SandboxHandle::start(SandboxHandle::config(10_000));
    let n = started(&sb).len() as u64;
    assert!(n > 9_000, "{n}");
    let home = brex_home(&sb);
    let file = integration(
        &home,
        "brex.json",
        json!({"name": "brex", "connector": "brex", "credential": "brex",
        "options": {"page_size": 1000}}),
    );
    let session = sync(&home, &file);
    assert_eq!(nonzero(&session), map([("fetched", n), ("created", n)]));
    assert_eq!(sb.stats().route(Vendor::Brex, BREX_USERS), n.div_ceil(1000));
    assert_eq!(block(home.store().records.count_records()).unwrap() as u64, n);
}

#[test]
fn a_source_item_that_is_not_a_person_fails_alone() {
    let fake = Recorder::start(|_| {
        let person = |n: &str| json!({"id": format!("cuuser_{n}"), "first_name": n, "last_name": "X", "email": format!("{n}@acme.test"), "status": "ACTIVE"});
        (200, json!({"items": [person("ann"), "not a person", 42, person("bob")], "next_cursor": null}))
    });
    let home = TestHome::new();
    home.add_bearer("brex", &fake.url(), "fake-brex-token");
    let file = integration(&home, "brex.json", json!({"name": "brex", "connector": "brex", "credential": "brex"}));
    let session = home.roster(&["sync", &file, "--json"]).code(1).json();
    assert_eq!(session["state"], "failed");
    assert_eq!(counts(&session)["created"], 2);
    assert_eq!(counts(&session)["failed"], 2);
    assert!(session["failures"][0]["reason"].as_str().unwrap().contains("not a JSON object"), "{session:#}");
    assert_eq!(by_email(&home).len(), 2);
}

#[test]
fn a_sync_with_an_item_that_fails_to_read_marks_nobody_missing_and_exits_1() {
    // A Brex whose listing of cid breaks: an email that is an object, and an item that is
    // not an object at all.
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let breaks = broken.clone();
    let fake = Recorder::start(move |_| {
        let person = |n: &str| json!({"id": format!("cuuser_{n}"), "first_name": n, "last_name": "X", "email": format!("{n}@acme.test"), "status": "ACTIVE"});
        let mut items = vec![person("ann"), person("bob")];
        if breaks.load(std::sync::atomic::Ordering::SeqCst) {
            let mut cid = person("cid");
            cid["email"] = json!({"address": "cid@acme.test"});
            items.push(cid);
            items.push(json!(["not", "a", "person"]));
        } else {
            items.push(person("cid"));
        }
        (200, json!({"items": items, "next_cursor": null}))
    });
    let home = TestHome::new();
    home.add_bearer("brex", &fake.url(), "fake-brex-token");
    let file = integration(&home, "brex.json", json!({"name": "brex", "connector": "brex", "credential": "brex"}));
    sync(&home, &file);

    broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let out = home.roster(&["sync", &file]).code(1);
    assert!(out.stdout.contains("2 of 4 item(s) from the source failed"), "{}", out.stdout);
    assert!(out.stdout.contains("note: nobody was marked missing: 2 item(s) failed"), "{}", out.stdout);
    let json = home.roster(&["sync", &file, "--json"]).code(1);
    assert!(json.stderr.contains("warning: sync brex: nobody was marked missing"), "{}", json.stderr);
    let session = json.json();
    assert_eq!(session["state"], "failed");
    assert_eq!(counts(&session)["missing"], 0);
    assert_eq!(counts(&session)["failed"], 2);
    assert!(session["notes"][0].as_str().unwrap().contains("nobody was marked missing"), "{session:#}");
    let present: BTreeMap<String, Value> =
        by_email(&home).into_iter().map(|(e, r)| (e, r["brex_present"].clone())).collect();
    assert_eq!(present["cid@acme.test"], true, "a person whose item failed is not gone: {present:?}");
    assert!(present.values().all(|p| *p == true), "{present:?}");
}

/// A Brex user list whose page n (1-based) holds one new person and points on to `cursor(n)`.
fn endless_users(
    cursor: impl Fn(u64) -> String + Send + Sync + 'static,
) -> (Recorder, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let person = |n: u64| {
        json!({"id": format!("cuuser_{n}"), "first_name": "P", "last_name": "X",
               "email": format!("p{n}@acme.test"), "status": "ACTIVE"})
    };
    support::paged_listing(person, cursor)
}

#[test]
fn a_sync_whose_cursor_comes_back_fails_and_marks_nobody_missing() {
    let (server, pages) = endless_users(|n| if n < 3 { format!("c{n}") } else { "c1".into() });
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), "fake-brex-token");
    home.import(&json!([{"email": "old@acme.test", "brex_present": true}]));
    let file = integration(&home, "brex.json", json!({"name": "brex", "connector": "brex", "credential": "brex"}));
    let session = sync_fails(&home, &file);
    assert!(session["error"].as_str().unwrap().contains("sent the cursor `c1` again after 3 page(s)"), "{session:#}");
    assert_eq!(pages.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(counts(&session)["created"], 2, "the looping page is not written");
    assert_eq!(by_email(&home)["old@acme.test"]["brex_present"], true, "an incomplete listing marks nobody missing");
}

#[test]
fn a_sync_that_never_ends_stops_at_its_caps_and_says_how_to_raise_them() {
    let (server, pages) = endless_users(|n| format!("fresh-{n}"));
    let home = TestHome::new();
    home.add_bearer("brex", &server.url(), "fake-brex-token");
    let spec = |options: Value| json!({"name": "brex", "connector": "brex", "credential": "brex", "options": options});
    let file = integration(&home, "brex.json", spec(json!({"max_pages": 40})));
    let session = sync_fails(&home, &file);
    let error = session["error"].as_str().unwrap();
    assert!(error.contains("did not end within 40 pages (max_pages)"), "{error}");
    assert!(error.contains(&format!("raise max_pages in `options` of {file}")), "{error}");
    assert_eq!(pages.load(std::sync::atomic::Ordering::SeqCst), 40);
    // The page that points past the cap is not written: the listing is already known broken.
    assert_eq!(block(home.store().records.count_records()).unwrap(), 39);

    pages.store(0, std::sync::atomic::Ordering::SeqCst);
    let file = integration(&home, "brex.json", spec(json!({"max_items": 10})));
    let session = sync_fails(&home, &file);
    assert!(session["error"].as_str().unwrap().contains("more than 10 items (max_items)"), "{session:#}");
    assert_eq!(pages.load(std::sync::atomic::Ordering::SeqCst), 11);

    let file = integration(&home, "bad.json", spec(json!({"max_pages": 0})));
    let out = home.roster(&["sync", &file]).code(1);
    assert!(out.stderr.contains("options.max_pages: max_pages must be a whole number from 1"), "{}", out.stderr);
}

#[test]
fn an_update_only_sync_names_the_people_it_skipped_and_why() {
    let sb = SandboxHandle::start(SandboxHandle::config(5));
    let home = brex_home(&sb);
    let users = brex_users(&sb);
    let known = users.keys().next().unwrap().clone();
    home.import(&json!([{"email": known}]));
    let file = integration(
        &home,
        "brex.json",
        json!({"name": "brex", "connector": "brex", "credential": "brex", "preference": "update_only"}),
    );
    let session = sync(&home, &file);
    let skips = session["skips"].as_array().unwrap();
    assert_eq!(skips.len(), users.len() - 1, "{session:#}");
    assert!(skips.iter().all(|s| s["reason"] == "no record with this email" && s["who"] != known.as_str()));
    assert!(session["notes"].to_string().contains("skipped: no record with this email"), "{session:#}");
    let human = home.roster(&["sync", &file]).ok().stdout;
    let other = users.keys().nth(1).unwrap();
    assert!(human.contains(&format!("skipped: {other}: no record with this email")), "{human}");
}

#[test]
fn on_a_first_start_serve_syncs_the_hr_source_before_update_only_integrations() {
    let sb = SandboxHandle::start(SandboxHandle::config(5));
    let home = brex_home(&sb);
    let n = brex_users(&sb).len() as u64;
    // By name the update-only one would go first.
    let dir = home.path().join("integrations");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = |name: &str, preference: &str| {
        json!({"name": name, "connector": "brex", "credential": "brex", "preference": preference}).to_string()
    };
    std::fs::write(dir.join("a-cards.json"), spec("a-cards", "update_only")).unwrap();
    std::fs::write(dir.join("z-hr.json"), spec("z-hr", "create_update")).unwrap();
    let serving = support::serve(&home);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let sessions = loop {
        let (_, list) = support::http("GET", &format!("{}/v1/sync/sessions", serving.url), Some(&serving.token), None);
        let list = list.as_array().cloned().unwrap_or_default();
        if list.len() == 2 && list.iter().all(|s| s["state"] != "running") {
            break list;
        }
        assert!(std::time::Instant::now() < deadline, "{list:?}\n{}", serving.output());
        std::thread::sleep(Duration::from_millis(100));
    };
    let of = |name: &str| sessions.iter().find(|s| s["integration"] == name).unwrap().clone();
    let (hr, cards) = (of("z-hr"), of("a-cards"));
    assert!(hr["started_at"].as_str() < cards["started_at"].as_str(), "HR first: {hr:#} {cards:#}");
    assert_eq!(hr["counts"]["created"], n, "{hr:#}");
    assert_eq!(cards["counts"]["skipped"], 0, "everyone was there to update: {cards:#}");
}
