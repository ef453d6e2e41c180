//! Secrets never leave: vendors that echo the credential back (in 401 bodies, in headers, in
//! fields of a successful answer) for every credential kind, with secrets full of characters
//! that JSON, URLs and forms escape, and then every byte the program printed or logged and
//! every file of the home is searched for every form the secrets can take. Redirects: a
//! vendor call never follows one to another origin, so no credential goes there.

mod support;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use roster_sandbox::{Echo, Faults, RateLimit, SandboxConfig, Vendor};
use serde_json::{Value, json};
use support::{Backend, Ran, Recorder, SandboxHandle, TestHome, contains, files_containing};

// Header-borne secrets stay visible ASCII (a header cannot carry more); the others also
// carry non-ASCII. All carry `"`, `\`, `+`, `/`, `=`, `%` and spaces.
const BEARER: &str = r#"brex"to\ken +/=% 42 end"#;
const API_KEY: &str = r#"key"\ +/=%2F x9"#;
const BASIC_USER: &str = "ann-admin";
const BASIC_PASSWORD: &str = r#"pa"ss\ +/=% wörd€"#;
const EXPENSIFY_SECRET: &str = r#"exp"en\sify +/=% é1"#;
const SAGE_CLIENT_SECRET: &str = r#"sage"cl\ient +/=% ü2"#;
const SAGE_PASSWORD: &str = r#"sage"pw\ +/=% ø3"#;

/// A value that is not secret and is stored: finding it proves the store files are
/// searchable as they are (sled keeps values uncompressed).
const MARKER: &str = "plain-marker-5150";

fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Every form a secret takes on its way out: raw, JSON-escaped (as serde writes it and
/// ASCII-only), percent-encoded (upper and lower hex, `+` for spaces), and percent-encoded
/// JSON (Expensify's form body).
fn forms(label: &str, secret: &str) -> Vec<(String, String)> {
    let json = serde_json::to_string(secret).unwrap();
    let json = json[1..json.len() - 1].to_string();
    let ascii_json: String = json
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                let mut units = [0u16; 2];
                c.encode_utf16(&mut units).iter().map(|u| format!("\\u{u:04x}")).collect()
            }
        })
        .collect();
    let upper = percent(secret);
    let lower = {
        let mut out = String::new();
        let mut rest = upper.as_str();
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            out.push('%');
            out.push_str(&rest[i + 1..i + 3].to_lowercase());
            rest = &rest[i + 3..];
        }
        out + rest
    };
    let plus = upper.replace("%20", "+");
    let json_in_form = percent(&json);
    let mut out = vec![
        ("raw", secret.to_string()),
        ("json", json),
        ("ascii-json", ascii_json),
        ("percent", upper),
        ("percent-lower", lower),
        ("form", plus),
        ("json-in-form", json_in_form),
    ];
    out.dedup_by(|a, b| a.1 == b.1);
    out.into_iter().map(|(k, v)| (format!("{label} ({k})"), v)).collect()
}

/// The Basic header's forms of `user:pass`.
fn basic_forms(user: &str, password: &str) -> Vec<(String, String)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let pair = format!("{user}:{password}");
    let mut out = forms("basic user:pass", &pair);
    for (name, engine) in
        [("b64", STANDARD), ("b64-nopad", STANDARD_NO_PAD), ("b64url", URL_SAFE), ("b64url-nopad", URL_SAFE_NO_PAD)]
    {
        out.push((format!("basic {name}"), engine.encode(&pair)));
    }
    out.push(("basic header".into(), format!("Basic {}", STANDARD.encode(&pair))));
    out
}

/// Everything a test captured, searched at the end.
#[derive(Default)]
struct Captured {
    outputs: Vec<(String, String)>,
}

impl Captured {
    fn roster(&mut self, home: &TestHome, args: &[&str]) -> Ran {
        let out = home.roster(args);
        self.outputs.push((args.join(" "), out.all()));
        out
    }

    fn keep(&mut self, what: &str, text: String) {
        self.outputs.push((what.to_string(), text));
    }

    /// No form of any secret in any output or any file of the home; the marker is in both.
    fn assert_clean(&self, home: &TestHome, secrets: &[(String, String)]) {
        let stored = home.store_contents();
        let mut leaks = Vec::new();
        for (label, form) in secrets {
            for (what, text) in &self.outputs {
                if text.contains(form.as_str()) {
                    leaks.push(format!("{label} `{form}` in the output of `{what}`"));
                }
            }
            for path in files_containing(home.path(), form.as_bytes()) {
                leaks.push(format!("{label} `{form}` in {}", path.display()));
            }
            if contains(&stored, form.as_bytes()) {
                leaks.push(format!("{label} `{form}` in a key or value of the store"));
            }
        }
        assert!(leaks.is_empty(), "secrets escaped:\n{}", leaks.join("\n"));
        assert!(contains(&stored, MARKER.as_bytes()), "the store's contents are searchable: the marker is in them");
        let all: String = self.outputs.iter().map(|(_, t)| t.as_str()).collect();
        assert!(all.contains("[redacted]"), "the echoes were there and were redacted");
    }
}

fn sandbox() -> SandboxHandle {
    SandboxHandle::start(SandboxConfig {
        brex_token: BEARER.into(),
        expensify_partner_user_secret: EXPENSIFY_SECRET.into(),
        sage_client_secret: SAGE_CLIENT_SECRET.into(),
        sage_password: SAGE_PASSWORD.into(),
        // Many syncs in a row: Expensify's 5 requests per 10 s would only make the test slow.
        expensify_rate_limit: RateLimit { requests: 0, per: Duration::from_secs(1) },
        ..SandboxHandle::config(6)
    })
}

fn add(home: &TestHome, args: &[&str], secret: &str) {
    home.roster_stdin(args, secret).ok();
}

fn workflow(home: &TestHome, name: &str, spec: Value) -> String {
    home.file(&format!("{name}.json"), &spec.to_string()).display().to_string()
}

/// `roster serve` for a moment: the API's answers to `paths`, and what it logged at -vv.
fn serve_answers(home: &TestHome, paths: &[String]) -> Vec<(String, String)> {
    let mut child = home
        .command(&["serve", "--listen", "127.0.0.1:0", "-vv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let file = home.path().join("serve.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !file.exists() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let info: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let url = info["url"].as_str().unwrap().to_string();
    let token = std::fs::read_to_string(home.path().join("api.token")).unwrap().trim().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut out = Vec::new();
    for path in paths {
        let body = rt.block_on(async {
            roster_blocks::http::install_crypto_provider();
            let resp = reqwest::Client::new().get(format!("{url}{path}")).bearer_auth(&token).send().await.unwrap();
            assert_eq!(resp.status(), 200, "GET {path}");
            resp.text().await.unwrap()
        });
        out.push((format!("GET {path}"), body));
    }
    child.kill().unwrap();
    let mut logs = String::new();
    child.stdout.take().unwrap().read_to_string(&mut logs).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    child.wait().unwrap();
    out.push(("serve -vv".into(), logs));
    out
}

#[test]
fn workflows_never_print_log_or_store_a_vendors_echo_of_a_bearer_api_key_or_basic_credential() {
    let sb = sandbox();
    let brex = sb.brex_url();
    // On sled a compressed store: the search below reads its keys and values, not its raw
    // pages. On PostgreSQL it reads every row of the database.
    let home = match Backend::chosen() {
        Backend::Sled => TestHome::new_compressed(),
        Backend::Postgres => TestHome::new(),
    };
    add(&home, &["credentials", "add", "brex", "--kind", "bearer", "--base-url", &brex], BEARER);
    let key_args = ["credentials", "add", "key", "--kind", "api-key", "--header", "X-Api-Key", "--base-url", &brex];
    add(&home, &key_args, API_KEY);
    let basic_args = ["credentials", "add", "basic", "--kind", "basic", "--username", BASIC_USER, "--base-url", &brex];
    add(&home, &basic_args, BASIC_PASSWORD);
    let user = &sb.brex_users()[0];
    home.import(&json!([{"email": "ann@example.com", "marker": MARKER, "brex_user_id": user["id"]}]));

    // Success: each kind's echo comes back in a 200 body that a response mapping writes into
    // the record, and a later step copies it.
    let ok = workflow(
        &home,
        "echo-ok",
        json!({"name": "echo-ok", "begin": {"next": "bearer"}, "blocks": {
            "bearer": {"type": "api", "credential": "brex",
                       "request": {"method": "POST", "url": "/_sandbox/echo", "body": {"note": "hello"}},
                       "response": {"bearer_echo": "<<response.echo>>"}, "next": "key"},
            "key": {"type": "api", "credential": "key", "request": {"method": "GET", "url": "/_sandbox/echo"},
                    "response": {"key_echo": "<<response.echo>>"}, "next": "basic"},
            "basic": {"type": "api", "credential": "basic", "request": {"method": "GET", "url": "/_sandbox/echo"},
                      "response": {"basic_echo": "<<response.message>>"}, "next": "preset"},
            "preset": {"type": "api", "credential": "brex", "preset": "brex.get_user",
                       "response": {"preset_echo": "<<response.echo>>"}, "next": "copy"},
            "copy": {"type": "update", "set": {"copied": "<<steps.bearer.response.echo>>"}, "next": "done"},
            "done": {"type": "end"}}}),
    );
    // Failure: 401/403 answers with the credential in the message and in the trace header,
    // mapped by `error_response`, ending with a failed run whose error quotes the vendor.
    let fail = workflow(
        &home,
        "echo-fail",
        json!({"name": "echo-fail", "begin": {"next": "bearer"}, "blocks": {
            "bearer": {"type": "api", "credential": "brex", "request": {"method": "GET", "url": "/_sandbox/echo?status=401"},
                       "error_response": {"bearer_error": "<<response.message>>"}, "on_error": "key"},
            "key": {"type": "api", "credential": "key", "request": {"method": "GET", "url": "/_sandbox/echo?status=401"},
                    "error_response": {"key_error": "<<response.message>>"}, "on_error": "preset"},
            "preset": {"type": "api", "credential": "brex", "preset": "brex.get_user",
                       "error_response": {"preset_error": "<<response.message>>"}, "on_error": "basic"},
            "basic": {"type": "api", "credential": "basic", "request": {"method": "GET", "url": "/_sandbox/echo?status=403"}}}}),
    );

    let mut cap = Captured::default();
    sb.sandbox.set_vendor_faults(Vendor::Brex, Faults { echo_credentials: Echo::Accept, ..Faults::default() });
    let ran = cap.roster(&home, &["run", &ok, "--user", "ann@example.com", "-vv"]).ok();
    assert!(ran.stdout.contains("succeeded"), "{}", ran.all());
    cap.roster(&home, &["run", &ok, "--user", "ann@example.com", "--json", "-vv"]).ok();
    cap.roster(&home, &["run", &ok, "--user", "ann@example.com", "--dry-run", "-vv"]).ok();
    cap.roster(&home, &["run", &ok, "--user", "ann@example.com", "--dry-run", "--json"]).ok();

    sb.sandbox.set_vendor_faults(Vendor::Brex, Faults { echo_credentials: Echo::Reject, ..Faults::default() });
    let failed = cap.roster(&home, &["run", &fail, "--user", "ann@example.com", "-vv"]).code(1);
    assert!(failed.stdout.contains("failed"), "{}", failed.all());
    let failed = cap
        .roster(&home, &["run", &fail, "--user", "ann@example.com", "--json", "-vv", "--log-format", "json"])
        .code(1);
    let run_id = failed.json()["run_id"].as_str().unwrap().to_string();
    assert!(failed.json()["error"].as_str().unwrap().contains("[redacted]"), "{}", failed.stdout);

    let record = cap.roster(&home, &["records", "show", "ann@example.com", "--json"]).ok().json();
    let fields = &record["fields"];
    for field in
        ["bearer_echo", "key_echo", "basic_echo", "preset_echo", "copied", "bearer_error", "key_error", "preset_error"]
    {
        let value = fields[field].as_str().unwrap_or_else(|| panic!("{field} was written: {fields:#}"));
        assert!(value.contains("[redacted]"), "{field} = {value}");
    }
    cap.roster(&home, &["records", "show", "ann@example.com"]).ok();
    cap.roster(&home, &["records", "list", "--json"]).ok();
    cap.roster(&home, &["runs", "list", "--json"]).ok();
    cap.roster(&home, &["runs", "list"]).ok();
    cap.roster(&home, &["runs", "show", &run_id, "--json"]).ok();
    cap.roster(&home, &["runs", "show", &run_id]).ok();

    let paths = [
        "/v1/runs".to_string(),
        format!("/v1/runs/{run_id}"),
        "/v1/records/ann@example.com".into(),
        "/v1/records".into(),
    ];
    for (what, text) in serve_answers(&home, &paths) {
        cap.keep(&what, text);
    }

    let mut secrets = forms("bearer", BEARER);
    secrets.extend(forms("api key", API_KEY));
    secrets.extend(forms("basic password", BASIC_PASSWORD));
    secrets.extend(basic_forms(BASIC_USER, BASIC_PASSWORD));
    cap.assert_clean(&home, &secrets);
}

#[test]
fn syncs_never_print_log_or_store_a_vendors_echo_of_brex_expensify_or_oauth2_credentials() {
    let sb = sandbox();
    let home = TestHome::new();
    add(&home, &["credentials", "add", "brex", "--kind", "bearer", "--base-url", &sb.brex_url()], BEARER);
    home.add_sandbox_expensify(&sb, EXPENSIFY_SECRET);
    home.add_sandbox_sage(&sb);
    let file = |name: &str, spec: Value| home.file(&format!("{name}.json"), &spec.to_string()).display().to_string();
    let sage = file(
        "sage",
        json!({"name": "sage", "connector": "sage_people", "credential": "sage",
               "mapping": {"sage_echo": "<<echo>>", "marker": MARKER}}),
    );
    let brex = file(
        "brex",
        json!({"name": "brex", "connector": "brex", "credential": "brex", "preference": "update_only",
               "mapping": {"brex_echo": "<<echo>>"}}),
    );
    let expensify = file(
        "expensify",
        json!({"name": "expensify", "connector": "expensify", "credential": "expensify", "preference": "update_only",
               "mapping": {"expensify_echo": "<<echo>>", "username": null}}),
    );

    let mut cap = Captured::default();
    // Accepting vendors put the credentials they were sent (the Sage access token too) in
    // every object of their answers: samples and mapped fields.
    sb.sandbox.set_faults(Faults { echo_credentials: Echo::Accept, ..Faults::default() });
    for f in [&sage, &brex, &expensify] {
        cap.roster(&home, &["sync", f, "--test", "-vv"]).ok();
        cap.roster(&home, &["sync", f, "--json", "-vv"]).ok();
    }
    let tokens = sb.sandbox.sage_access_tokens();
    assert!(!tokens.is_empty(), "Sage issued access tokens");
    let records = cap.roster(&home, &["records", "list", "--json"]).ok().json();
    let people = records.as_array().unwrap();
    assert!(!people.is_empty());
    for field in ["sage_echo", "brex_echo", "expensify_echo"] {
        let with: Vec<&str> = people.iter().filter_map(|r| r["fields"][field].as_str()).collect();
        assert!(!with.is_empty(), "someone has {field}");
        assert!(with.iter().all(|v| v.contains("[redacted]")), "{field}: {with:?}");
    }
    // Refusing vendors put them in their error messages and headers.
    sb.sandbox.set_faults(Faults { echo_credentials: Echo::Reject, ..Faults::default() });
    for f in [&sage, &brex, &expensify] {
        let out = cap.roster(&home, &["sync", f, "-vv"]);
        assert_ne!(out.code, 0, "{}", out.all());
    }
    cap.roster(&home, &["sync", &sage, "-vv", "--log-format", "json"]);
    let sessions = cap.roster(&home, &["sync", "sessions", "--json"]).ok().json();
    cap.roster(&home, &["sync", "sessions"]).ok();
    // The newest (a refused Expensify sync) and the first real Sage sync, with its samples.
    let list = sessions.as_array().unwrap();
    let first_sage = list.iter().rev().find(|s| s["integration"] == "sage" && s["test"] == false).unwrap();
    for id in [list[0]["id"].as_str().unwrap(), first_sage["id"].as_str().unwrap()] {
        cap.roster(&home, &["sync", "show", id, "--json"]).ok();
        cap.roster(&home, &["sync", "show", id]).ok();
    }
    let failed: Vec<&Value> = sessions.as_array().unwrap().iter().filter(|s| s["state"] == "failed").collect();
    assert!(failed.len() >= 3, "every rejected sync failed: {sessions:#}");
    assert!(failed.iter().all(|s| s["error"].as_str().is_some_and(|e| e.contains("[redacted]"))), "{sessions:#}");

    let mut secrets = forms("bearer", BEARER);
    secrets.extend(forms("expensify", EXPENSIFY_SECRET));
    secrets.extend(forms("sage client secret", SAGE_CLIENT_SECRET));
    secrets.extend(forms("sage password", SAGE_PASSWORD));
    for t in &tokens {
        secrets.extend(forms("sage access token", t));
    }
    cap.assert_clean(&home, &secrets);
}

#[test]
fn log_lines_are_scrubbed_when_a_retried_vendor_error_echoes_the_token() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A Brex that answers 503 quoting the Authorization header it got, then (asked again) an
    // empty list.
    let calls = AtomicUsize::new(0);
    let brex = Recorder::start(move |seen| {
        if calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            let said = seen.headers.get("authorization").cloned().unwrap_or_default();
            (503, json!({"message": format!("overloaded while checking {said}")}))
        } else {
            (200, json!({"items": [], "next_cursor": null}))
        }
    });
    let home = TestHome::new();
    add(&home, &["credentials", "add", "brex", "--kind", "bearer", "--base-url", &brex.url()], BEARER);
    home.import(&json!([{"email": "ann@example.com", "marker": MARKER}]));
    let file = home.file(
        "brex.json",
        &json!({"name": "brex", "connector": "brex", "credential": "brex", "preference": "update_only"}).to_string(),
    );
    let mut cap = Captured::default();
    for format in ["text", "json"] {
        let out = cap.roster(&home, &["sync", file.to_str().unwrap(), "-vv", "--log-format", format]).ok();
        let retry = out.stderr.lines().find(|l| l.contains("retrying")).unwrap_or_else(|| panic!("{}", out.stderr));
        assert!(retry.contains("overloaded while checking Bearer [redacted]"), "{retry}");
    }
    assert!(brex.seen().len() >= 2, "the vendor was asked again");
    cap.assert_clean(&home, &forms("bearer", BEARER));
}

#[test]
fn vendor_calls_never_follow_a_redirect_to_another_origin() {
    let sb = sandbox();
    // The other origin: a second listener that must never see a request.
    let elsewhere = Recorder::start(|_| (200, json!({"ok": true})));
    let home = TestHome::new();
    let brex = sb.brex_url();
    let key_args = ["credentials", "add", "key", "--kind", "api-key", "--header", "X-Api-Key", "--base-url", &brex];
    add(&home, &key_args, API_KEY);
    home.add_sandbox_expensify(&sb, EXPENSIFY_SECRET);
    home.add_sandbox_sage(&sb);
    home.import(&json!([{"email": "ann@example.com"}]));
    sb.sandbox.set_faults(Faults { redirect_to: Some(elsewhere.url()), ..Faults::default() });

    let wf = workflow(
        &home,
        "moved",
        json!({"name": "moved", "begin": {"next": "call"}, "blocks": {
            "call": {"type": "api", "credential": "key",
                     "request": {"method": "POST", "url": "/v2/users", "body": {"email": "ann@example.com"}}}}}),
    );
    let out = home.roster(&["run", &wf, "--user", "ann@example.com"]).code(1);
    let text = out.all();
    assert!(text.contains(&brex) && text.contains(&elsewhere.url()), "the error names both origins:\n{text}");
    assert!(text.contains("redirect"), "{text}");
    let journal_attempts = text.matches("attempt").count();
    assert_eq!(journal_attempts, 0, "a refused redirect is not retried:\n{text}");

    let file = |name: &str, spec: Value| home.file(&format!("{name}.json"), &spec.to_string()).display().to_string();
    let expensify =
        file("expensify", json!({"name": "expensify", "connector": "expensify", "credential": "expensify"}));
    let sage = file("sage", json!({"name": "sage", "connector": "sage_people", "credential": "sage"}));
    for f in [&expensify, &sage] {
        let out = home.roster(&["sync", f, "--json"]);
        assert_ne!(out.code, 0, "{}", out.all());
        let error = out.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(&elsewhere.url()) && error.contains("another origin"), "{error}");
    }
    assert!(elsewhere.seen().is_empty(), "nothing reached the other origin: {:?}", elsewhere.seen());
}

#[test]
fn a_redirect_within_the_same_origin_is_followed_with_the_credential() {
    let sb = sandbox();
    let home = TestHome::new();
    let brex = sb.brex_url();
    let key_args = ["credentials", "add", "key", "--kind", "api-key", "--header", "X-Api-Key", "--base-url", &brex];
    add(&home, &key_args, API_KEY);
    home.import(&json!([{"email": "ann@example.com"}]));
    // Brex "moved" the API to another path of the same server, which echoes what it gets.
    let same = format!("{brex}/_sandbox/echo?from=");
    sb.sandbox.set_vendor_faults(Vendor::Brex, Faults { redirect_to: Some(same), ..Faults::default() });
    let wf = workflow(
        &home,
        "same",
        json!({"name": "same", "begin": {"next": "call"}, "blocks": {
            "call": {"type": "api", "credential": "key", "request": {"method": "GET", "url": "/v2/users/me"},
                     "response": {"echoed": "<<response.echo>>"}}}}),
    );
    home.roster(&["run", &wf, "--user", "ann@example.com"]).ok();
    let record = home.roster(&["records", "show", "ann@example.com", "--json"]).ok().json();
    // The key went along to the same origin (and came back redacted).
    assert_eq!(record["fields"]["echoed"], "[redacted]", "{record:#}");
}

#[test]
fn a_password_too_short_to_scrub_is_refused() {
    let home = TestHome::new();
    let args = [
        "credentials",
        "add",
        "sage",
        "--kind",
        "oauth2",
        "--token-url",
        "http://127.0.0.1:9/token",
        "--client-id",
        "id",
        "--username",
        "u",
        "--password-env",
        "TEST_SHORT_PASSWORD",
        "--secret-env",
        "TEST_CLIENT_SECRET",
    ];
    let out = home.command(&args).env("TEST_SHORT_PASSWORD", "abc").env("TEST_CLIENT_SECRET", "long-enough").output();
    let out = out.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password is shorter than 4 characters"));
}
