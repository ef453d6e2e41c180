//! Shared helpers for the end-to-end tests: a temporary home, a way to run the real
//! `roster` binary in it, and a recording HTTP server on loopback.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A fresh Roster home in a temporary folder, initialised.
pub struct TestHome {
    pub dir: tempfile::TempDir,
    pub now: Option<String>,
    /// The database the home's store is in, when it is on PostgreSQL; dropped with the home.
    pub database: Option<FreshDatabase>,
}

/// The store the end-to-end tests give their homes: sled unless `ROSTER_TEST_BACKEND` says
/// `postgres` (each home then gets a fresh database of its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres,
}

impl Backend {
    pub fn chosen() -> Backend {
        match std::env::var_os("ROSTER_TEST_BACKEND") {
            None => Backend::Sled,
            Some(v) if v.is_empty() || v == "sled" => Backend::Sled,
            Some(v) if v == "postgres" => Backend::Postgres,
            Some(v) => panic!("ROSTER_TEST_BACKEND is {v:?}; it reads `sled` (the default) or `postgres`"),
        }
    }
}

/// A fresh PostgreSQL database on the test server (`ROSTER_TEST_SERVER_URL`, default
/// `postgres://postgres@127.0.0.1:5432`), dropped when this is dropped.
pub struct FreshDatabase {
    server: String,
    pub name: String,
}

impl FreshDatabase {
    pub fn new() -> FreshDatabase {
        let server =
            std::env::var("ROSTER_TEST_SERVER_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("roster_test_{}", uuid::Uuid::new_v4().simple());
        let db = FreshDatabase { server, name };
        db.psql(&format!("CREATE DATABASE {}", db.name));
        db
    }

    /// The URL a store uses.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// Every value of every row of every table, as the database holds it (psql's unaligned
    /// output prints text and json unescaped, and reads compressed values whole), so a
    /// search of it sees what a search of the raw store would.
    pub fn contents(&self) -> Vec<u8> {
        use std::io::Write;
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url(), "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("psql cannot be started ({e}); install the PostgreSQL client"));
        let every_table = "SELECT format('SELECT * FROM %I.%I', schemaname, tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') \\gexec\n";
        child.stdin.take().unwrap().write_all(every_table.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "reading {} failed: {}", self.name, String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn psql(&self, sql: &str) {
        let out = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &format!("{}/postgres", self.server), "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("psql cannot be started ({e}); install the PostgreSQL client"));
        assert!(
            out.status.success(),
            "`{sql}` failed on the PostgreSQL test server {}: {}\nStart one with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            self.server,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-d",
                &format!("{}/postgres", self.server),
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// What one `roster` command printed and how it exited.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    pub fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "expected exit {code}\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl TestHome {
    /// A home on the store `ROSTER_TEST_BACKEND` chooses.
    pub fn new() -> Self {
        Self::on(Backend::chosen())
    }

    /// A home on the embedded store whatever `ROSTER_TEST_BACKEND` says, for tests about
    /// sled itself (its folder, its lock, its files).
    pub fn sled() -> Self {
        Self::on(Backend::Sled)
    }

    pub fn on(backend: Backend) -> Self {
        let mut home = Self::uninitialised();
        match backend {
            Backend::Sled => home.roster(&["init"]).ok(),
            Backend::Postgres => {
                let database = FreshDatabase::new();
                let ran = home.roster(&["init", "--store", &database.url()]).ok();
                home.database = Some(database);
                ran
            }
        };
        home
    }

    /// An empty temporary folder for a home that the test initialises itself.
    pub fn uninitialised() -> Self {
        TestHome { dir: tempfile::tempdir().expect("temp dir"), now: None, database: None }
    }

    /// `n` homes of one deployment on `db`: one master key, each its own API token.
    pub fn sharing(db: &FreshDatabase, n: usize) -> Vec<TestHome> {
        let homes: Vec<TestHome> = (0..n).map(|_| TestHome::uninitialised()).collect();
        for (i, home) in homes.iter().enumerate() {
            if i > 0 {
                std::fs::copy(homes[0].path().join("master.key"), home.path().join("master.key")).unwrap();
            }
            home.roster(&["init", "--store", &db.url()]).ok();
        }
        homes
    }

    /// A sled home whose store keeps its pages compressed (`ROSTER_STORE_COMPRESSION=zstd`
    /// when it is created).
    pub fn new_compressed() -> Self {
        let home = Self::uninitialised();
        ran(home.command(&["init"]).env("ROSTER_STORE_COMPRESSION", "zstd").output().expect("run roster")).ok();
        home
    }

    /// Every key and value the home's store holds, whichever backend it is on.
    pub fn store_contents(&self) -> Vec<u8> {
        match &self.database {
            None => sled_contents(&self.path().join("store")),
            Some(database) => database.contents(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
        cmd.args(args)
            .env("ROSTER_HOME", self.path())
            .env_remove("ROSTER_MASTER_KEY")
            .env_remove("ROSTER_STORE_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        match &self.now {
            Some(now) => cmd.env("ROSTER_NOW", now),
            None => cmd.env_remove("ROSTER_NOW"),
        };
        cmd
    }

    pub fn roster(&self, args: &[&str]) -> Ran {
        let out = self.command(args).output().expect("run roster");
        ran(out)
    }

    /// Runs roster with `input` on stdin.
    pub fn roster_stdin(&self, args: &[&str], input: &str) -> Ran {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn roster");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        ran(child.wait_with_output().expect("wait roster"))
    }

    /// Writes a file into the home's scratch area and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    pub fn add_bearer(&self, name: &str, base_url: &str, secret: &str) {
        self.roster_stdin(&["credentials", "add", name, "--kind", "bearer", "--base-url", base_url], secret).ok();
    }

    pub fn import(&self, records: &Value) {
        let path = self.file("people.json", &records.to_string());
        self.roster(&["records", "import", path.to_str().unwrap()]).ok();
    }
}

fn ran(out: Output) -> Ran {
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A request as the recording server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query exactly as sent (still percent-encoded).
    pub uri: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

type Responder = Arc<dyn Fn(&Seen) -> (StatusCode, &'static str, String) + Send + Sync>;

#[derive(Clone)]
struct ServerState {
    seen: Arc<Mutex<Vec<Seen>>>,
    respond: Responder,
}

/// An HTTP server on 127.0.0.1 that records every request and answers with `respond`.
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Recorder {
    pub fn start(respond: impl Fn(&Seen) -> (u16, Value) + Send + Sync + 'static) -> Recorder {
        Self::start_raw(move |seen| {
            let (status, body) = respond(seen);
            (StatusCode::from_u16(status).unwrap(), "application/json", body.to_string())
        })
    }

    /// Answers with any status, content type and body text (HTML pages, broken JSON…).
    pub fn start_raw(
        respond: impl Fn(&Seen) -> (StatusCode, &'static str, String) + Send + Sync + 'static,
    ) -> Recorder {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = ServerState { seen: seen.clone(), respond: Arc::new(respond) };
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(state);
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder { addr, seen, _runtime: runtime }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(
    State(state): State<ServerState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect(),
        body: body.to_vec(),
        at: std::time::Instant::now(),
    };
    let (status, content_type, reply) = (state.respond)(&seen);
    state.seen.lock().unwrap().push(seen);
    (status, [("content-type", content_type)], reply).into_response()
}

/// Every key and value of every tree of the sled store in `dir`, decompressed (a store made
/// with `ROSTER_STORE_COMPRESSION=zstd` holds compressed pages, which a search of the raw
/// bytes could not see into).
fn sled_contents(dir: &Path) -> Vec<u8> {
    let conf = std::fs::read(dir.join("conf")).unwrap_or_default();
    let compressed = contains(&conf, b"use_compression: true");
    let db = sled::Config::new().path(dir).use_compression(compressed).open().expect("open the store to read it");
    let mut all = Vec::new();
    for name in db.tree_names() {
        for entry in db.open_tree(&name).unwrap().iter() {
            let (key, value) = entry.unwrap();
            all.extend_from_slice(&key);
            all.push(b'\n');
            all.extend_from_slice(&value);
            all.push(b'\n');
        }
    }
    all
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file below `dir`, read as bytes, searched for `needle`; returns the paths that hold it.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(path);
            }
        }
    }
    hits
}

/// The path of an example file in the repository.
pub fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The sandbox (fake Brex, Expensify and Sage People on loopback) with the tokio runtime that
/// serves it, for plain `#[test]`s that also run the `roster` binary.
pub struct SandboxHandle {
    // Declared before the runtime so the servers stop before their runtime goes away.
    pub sandbox: roster_sandbox::Sandbox,
    runtime: tokio::runtime::Runtime,
}

impl SandboxHandle {
    pub fn start(config: roster_sandbox::SandboxConfig) -> SandboxHandle {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let sandbox = runtime.block_on(roster_sandbox::Sandbox::start(config)).expect("the sandbox starts");
        SandboxHandle { sandbox, runtime }
    }

    /// A fixed company: the same people, ids and fault draws on every run.
    pub fn config(people: usize) -> roster_sandbox::SandboxConfig {
        roster_sandbox::SandboxConfig {
            seed: 11,
            people,
            today: jiff::civil::date(2026, 11, 22),
            ..roster_sandbox::SandboxConfig::default()
        }
    }

    pub fn stats(&self) -> roster_sandbox::Stats {
        self.sandbox.stats()
    }

    pub fn brex_url(&self) -> String {
        self.sandbox.brex_url()
    }

    pub fn brex_token(&self) -> String {
        self.sandbox.config().brex_token.clone()
    }

    /// Runs a future on the sandbox's runtime (engine-level tests, direct API calls).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Calls the sandbox's Brex API directly, as the test's own eyes: `(status, body)`.
    /// These calls count in `stats()` like any other request.
    pub fn brex(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.brex_url());
        let token = self.brex_token();
        self.block_on(async move {
            let client = roster_blocks::http::client(Duration::from_secs(30), Duration::from_secs(5));
            let mut req = client
                .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
                .bearer_auth(token)
                .header("Idempotency-Key", format!("test-{}", uuid::Uuid::now_v7()));
            if let Some(b) = body {
                req = req.header("Content-Type", "application/json").body(b.to_string());
            }
            let resp = req.send().await.expect("the sandbox answers");
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap();
            (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        })
    }

    /// `GET` on the Brex API that must succeed.
    pub fn brex_get(&self, path: &str) -> Value {
        let (status, body) = self.brex("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Every Brex user, following the cursor.
    pub fn brex_users(&self) -> Vec<Value> {
        self.brex_list("/v2/users?limit=1000")
    }

    /// Every card of one Brex user.
    pub fn brex_cards(&self, user_id: &str) -> Vec<Value> {
        self.brex_list(&format!("/v2/cards?user_id={user_id}&limit=1000"))
    }

    fn brex_list(&self, first: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = first.to_string();
        loop {
            let page = self.brex_get(&path);
            out.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => path = format!("{first}&cursor={c}"),
                None => return out,
            }
        }
    }
}

impl TestHome {
    /// Adds the sandbox's Brex as the credential `brex`.
    pub fn add_sandbox_brex(&self, sb: &SandboxHandle) {
        self.add_bearer("brex", &sb.brex_url(), &sb.brex_token());
    }

    /// The sandbox's Expensify as credential `expensify`, with `secret` as partnerUserSecret.
    pub fn add_sandbox_expensify(&self, sb: &SandboxHandle, secret: &str) {
        let user = sb.sandbox.config().expensify_partner_user_id.clone();
        let url = sb.sandbox.expensify_url();
        let args = ["credentials", "add", "expensify", "--kind", "expensify", "--base-url", &url, "--username", &user];
        self.roster_stdin(&args, secret).ok();
    }

    /// The sandbox's Sage People as credential `sage`, with the password grant: the client
    /// secret on stdin, the password from the environment (as a user would give them).
    pub fn add_sandbox_sage(&self, sb: &SandboxHandle) {
        use std::io::Write;
        let c = sb.sandbox.config();
        let token_url = sb.sandbox.sage_token_url();
        let args = ["credentials", "add", "sage", "--kind", "oauth2", "--token-url", &token_url];
        let mut child = self
            .command(&args)
            .args(["--client-id", &c.sage_client_id, "--username", &c.sage_username])
            .args(["--password-env", "TEST_SAGE_PASSWORD"])
            .env("TEST_SAGE_PASSWORD", &c.sage_password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(c.sage_client_secret.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Opens the home's store, sled or PostgreSQL, from the test process (on sled no
    /// `roster` command may run meanwhile). Call it outside any runtime; use it with [`block`].
    pub fn store(&self) -> roster_engine::store::Store {
        let location = roster_engine::home::Home::new(self.path()).store_location().expect("the home's store");
        block(roster_engine::home::open_location(&location, false)).expect("open the store")
    }

    /// `records list --json`, as a list of records.
    pub fn records(&self) -> Vec<Value> {
        self.roster(&["records", "list", "--json"]).ok().json().as_array().cloned().unwrap()
    }

    /// One record's fields, by email.
    pub fn fields(&self, email: &str) -> Value {
        self.roster(&["records", "show", email, "--json"]).ok().json()["fields"].clone()
    }
}

/// `roster serve` in the background for one test, its output in HOME/serve.log; killed
/// on drop.
pub struct Serving {
    pub child: std::process::Child,
    pub url: String,
    pub token: String,
    log: PathBuf,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serving {
    /// Everything serve printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit: whether it exited 0, and how long it took.
    pub fn terminate(&mut self) -> (bool, Duration) {
        let started = std::time::Instant::now();
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let status = self.child.wait().unwrap();
        (status.success(), started.elapsed())
    }
}

/// Starts `roster serve` on a free loopback port and waits until it answers.
pub fn serve(home: &TestHome) -> Serving {
    serve_with(home, &[])
}

/// [`serve`] with extra arguments (`-v`, `--workflows DIR`…).
pub fn serve_with(home: &TestHome, extra: &[&str]) -> Serving {
    let file = home.path().join("serve.json");
    let _ = std::fs::remove_file(&file);
    let log = home.path().join("serve.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--tick-ms", "100"];
    args.extend_from_slice(extra);
    let child = home.command(&args).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let info: Value = loop {
        if let Some(info) = std::fs::read_to_string(&file).ok().and_then(|t| serde_json::from_str(&t).ok()) {
            break info;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not start:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let token = std::fs::read_to_string(home.path().join("api.token")).unwrap().trim().to_string();
    Serving { child, url: info["url"].as_str().unwrap().to_string(), token, log }
}

/// One HTTP request with an optional bearer token and JSON body: the status and the JSON
/// answer (`Null` when the answer is not JSON).
pub fn http(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    http_raw(method, url, token, None, body.map(|b| b.to_string())).map_or_else(|e| panic!("{e}"), |(s, v, _)| (s, v))
}

/// Like [`http`] but with any content type and body text; also returns the answer's
/// content type.
pub fn http_raw(
    method: &str,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Option<String>,
) -> Result<(u16, Value, String), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        roster_blocks::http::install_crypto_provider();
        let client = reqwest::Client::new();
        let mut req = client.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", content_type.unwrap_or("application/json")).body(b);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let kind = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        Ok((status, resp.json().await.unwrap_or(Value::Null), kind))
    })
}

/// A listing that never ends by itself: page n (1-based) holds `item(n)` under `items` and
/// points on to `cursor(n)` as `next_cursor`. Also returns how many pages were asked for.
pub fn paged_listing(
    item: impl Fn(u64) -> Value + Send + Sync + 'static,
    cursor: impl Fn(u64) -> String + Send + Sync + 'static,
) -> (Recorder, Arc<std::sync::atomic::AtomicU64>) {
    let pages = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = pages.clone();
    let server = Recorder::start(move |_| {
        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        (200, serde_json::json!({"items": [item(n)], "next_cursor": cursor(n)}))
    });
    (server, pages)
}

/// Waits for a store call from a test that is not async (the sandbox and recorders run on
/// runtimes of their own, which an async test could not hold). One runtime for the whole
/// test binary: a PostgreSQL store's connections belong to the runtime that opened them.
pub fn block<F: std::future::Future>(future: F) -> F::Output {
    static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime")
    });
    RUNTIME.block_on(future)
}

/// A store for tests that drive the engine without a home: sled in a temporary folder, or a
/// fresh PostgreSQL database under `ROSTER_TEST_BACKEND=postgres`.
pub struct TestStore {
    location: roster_engine::home::StoreLocation,
    _dir: tempfile::TempDir,
    _database: Option<FreshDatabase>,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let (location, database) = match Backend::chosen() {
            Backend::Sled => (roster_engine::home::StoreLocation::Embedded(dir.path().to_path_buf()), None),
            Backend::Postgres => {
                let database = FreshDatabase::new();
                (roster_engine::home::StoreLocation::Postgres(database.url()), Some(database))
            }
        };
        TestStore { location, _dir: dir, _database: database }
    }

    /// Opens it (again, after a simulated restart: on sled the last one must be dropped).
    pub async fn open(&self) -> roster_engine::store::Store {
        roster_engine::home::open_location(&self.location, true).await.expect("open the test store")
    }
}

/// The chaos workflows' batch (`name`): a card named `<card> <email>` for each active
/// person, then their deactivation, then `<name>_done_at` stamped on the record.
pub fn cards_workflow(name: &str, card: &str) -> String {
    format!(
        r#"{{
  "name": "{name}",
  "description": "Give each active person a card, then deactivate them.",
  "begin": {{ "rules": [ {{ "field": "brex_status", "op": "equals", "value": "ACTIVE" }} ], "next": "card" }},
  "blocks": {{
    "card": {{ "type": "api", "credential": "brex", "preset": "brex.create_user_card",
              "with": {{ "card_name": "{card} <<email>>", "card_type": "VIRTUAL", "limit_type": "CARD",
                        "spend_controls": {{ "spend_limit": {{ "amount": 5000, "currency": "USD" }}, "spend_duration": "ONE_TIME" }} }},
              "retry": {{ "initial": "50ms", "max_delay": "1s", "max_attempts": 10 }},
              "next": "deactivate" }},
    "deactivate": {{ "type": "api", "credential": "brex", "preset": "brex.deactivate_user",
                    "retry": {{ "initial": "50ms", "max_delay": "1s", "max_attempts": 10 }},
                    "next": "stamp" }},
    "stamp": {{ "type": "update", "set": {{ "{name}_done_at": "<<now>>" }} }}
  }}
}}"#
    )
}

/// A number from the environment (a test's size, its seed), or `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small, seedable generator, so a failing chaos run can be repeated with its seed.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below.max(1)
    }
}
