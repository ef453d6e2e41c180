//! What every Roster benchmark shares: options, child processes (one per measured phase,
//! so each has its own peak RSS), memory and CPU readings from /proc, the sandbox host,
//! engine set-up, a timing store wrapper and the summary table.
//!
//! Each bench binary is its own crate and uses only part of this module.
#![allow(dead_code)]

/// The allocator the `roster` binary uses, so the benches measure what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roster_engine::clock::{Clock, rfc3339};
use roster_engine::credentials::{self, NewCredential};
use roster_engine::model::{Record, StoredCredential};
use roster_engine::run::Engine;
use roster_engine::store::{
    Observed, PostgresStore, RecordWrite, Redacting, SledStore, Store, StoreCall, StoreObserver,
};
use roster_engine::vault::Vault;
use roster_sandbox::{RateLimit, Sandbox, SandboxConfig};
use serde_json::{Value, json};
use uuid::Uuid;

/// The sandbox (like Brex) refuses a card for a DISABLED user, so the card comes before
/// the deactivation; the three requests are those the issue names.
pub const BENCH_WORKFLOW: &str = r#"{
  "name": "bench-card-and-deactivate",
  "description": "Benchmark: look the person up in Brex; if active, give them a virtual card, then deactivate them.",
  "begin": { "trigger": { "manual": true },
             "rules": [ { "field": "brex_user_id", "op": "is_not_empty" } ],
             "next": "get_user" },
  "blocks": {
    "get_user":   { "type": "api", "credential": "brex", "preset": "brex.get_user",
                    "next": "is_active", "on_error": "done" },
    "is_active":  { "type": "condition",
                    "when": { "field": "brex_status", "op": "equals", "value": "ACTIVE" },
                    "then": "card", "else": "done" },
    "card":       { "type": "api", "credential": "brex", "preset": "brex.create_user_card",
                    "with": { "card_name": "<<first_name>> <<last_name>> expenses",
                              "card_type": "VIRTUAL", "limit_type": "CARD",
                              "spend_controls": { "spend_limit": { "amount": 50000, "currency": "USD" },
                                                  "spend_duration": "MONTHLY" } },
                    "next": "deactivate" },
    "deactivate": { "type": "api", "credential": "brex", "preset": "brex.deactivate_user", "next": "done" },
    "done":       { "type": "end" }
  }
}"#;

// --- options --------------------------------------------------------------------------

/// Command-line and environment options. `cargo bench` passes `--bench`; anything after
/// `--` reaches here too (`cargo bench --bench runs -- --full --runs=20000`).
#[derive(Debug, Clone, Default)]
pub struct Opts {
    pub full: bool,
    /// Run without `--bench` (as `cargo test --benches` does) and not as a child: a
    /// seconds-long run at tiny sizes that only checks the bench still works.
    pub smoke: bool,
    /// Set in a child process: which phase to run.
    pub phase: Option<String>,
    kv: HashMap<String, String>,
}

impl Opts {
    pub fn parse() -> Opts {
        let mut opts = Opts::default();
        let mut args = std::env::args().skip(1);
        let mut bench = false;
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                bench = true;
            } else if arg == "--full" {
                opts.full = true;
            } else if arg == "--phase" {
                opts.phase = args.next();
            } else if let Some(kv) = arg.strip_prefix("--")
                && let Some((k, v)) = kv.split_once('=')
            {
                opts.kv.insert(k.to_string(), v.to_string());
            }
            // Anything else (`--bench`, a filter word) is ignored.
        }
        if std::env::var("ROSTER_BENCH_FULL").is_ok_and(|v| !v.is_empty() && v != "0") {
            opts.full = true;
        }
        opts.smoke = !bench && !opts.full && opts.phase.is_none();
        if opts.smoke {
            println!("(no --bench argument: a smoke run at tiny sizes; `cargo bench` runs the real thing)");
        }
        opts
    }

    /// `--key=value`, else `ROSTER_BENCH_<KEY>`, else None.
    pub fn get(&self, key: &str) -> Option<String> {
        if let Some(v) = self.kv.get(key) {
            return Some(v.clone());
        }
        let env = format!("ROSTER_BENCH_{}", key.to_ascii_uppercase().replace('-', "_"));
        std::env::var(env).ok().filter(|v| !v.is_empty())
    }

    pub fn usize(&self, key: &str, default: usize, full: usize) -> usize {
        match self.get(key) {
            Some(v) => v.replace('_', "").parse().unwrap_or_else(|_| panic!("--{key}={v} is not a whole number")),
            None if self.full => full,
            None => default,
        }
    }

    pub fn f64(&self, key: &str, default: f64, full: f64) -> f64 {
        match self.get(key) {
            Some(v) => v.parse().unwrap_or_else(|_| panic!("--{key}={v} is not a number")),
            None if self.full => full,
            None => default,
        }
    }

    /// `normal`, or `smoke` in a smoke run.
    pub fn or_smoke<T>(&self, normal: T, smoke: T) -> T {
        if self.smoke { smoke } else { normal }
    }

    /// A comma-separated list of sizes.
    pub fn sizes(&self, key: &str, default: &[usize], full: &[usize]) -> Vec<usize> {
        match self.get(key) {
            Some(v) => v
                .split(',')
                .map(|s| s.trim().replace('_', "").parse().unwrap_or_else(|_| panic!("--{key}: bad size `{s}`")))
                .collect(),
            None if self.full => full.to_vec(),
            None => default.to_vec(),
        }
    }

    pub fn string(&self, key: &str) -> String {
        self.get(key).unwrap_or_else(|| panic!("missing --{key}=..."))
    }
}

// --- child processes -------------------------------------------------------------------

/// Runs this bench binary again as `--phase PHASE ARGS...` and returns the JSON lines it
/// printed as `RESULT {...}`. Its stderr (progress) passes through.
pub fn child(phase: &str, args: &[String]) -> Vec<Value> {
    let exe = std::env::current_exe().expect("the bench binary knows its path");
    let mut cmd = Command::new(exe);
    cmd.arg("--phase").arg(phase).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut proc = cmd.spawn().expect("start a child bench process");
    let out = proc.stdout.take().expect("piped stdout");
    let mut results = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.expect("read child output");
        match line.strip_prefix("RESULT ") {
            Some(json) => results.push(serde_json::from_str(json).expect("child result is JSON")),
            None => println!("{line}"),
        }
    }
    let status = proc.wait().expect("wait for the child bench process");
    assert!(status.success(), "bench phase `{phase}` failed: {status}");
    results
}

/// A child's answer to its parent.
pub fn emit(value: Value) {
    println!("RESULT {value}");
}

pub fn progress(text: impl AsRef<str>) {
    eprintln!("  [{}] {}", std::process::id(), text.as_ref());
}

// --- memory and CPU --------------------------------------------------------------------

fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.trim_start_matches(':').split_whitespace().next()))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Resident set size now, in MiB.
pub fn rss_mib() -> f64 {
    status_kb("VmRSS") as f64 / 1024.0
}

/// Peak resident set size of this process (since start or the last reset), in MiB.
pub fn peak_rss_mib() -> f64 {
    status_kb("VmHWM") as f64 / 1024.0
}

/// Resets the peak RSS to the current RSS (Linux ≥ 4.0: `5` > /proc/self/clear_refs).
/// Returns false where that is not allowed; phases then run in their own process.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// User + system CPU time of this whole process, in seconds.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command name start at field 3 (state); utime is 14, stime 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(14) + ticks(15)) / 100.0
}

/// Bytes under `dir`, recursively.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

// --- statistics ------------------------------------------------------------------------

/// The `p`th percentile (0–100) of `samples` (sorted here), nearest-rank.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

pub fn median(samples: &mut [f64]) -> f64 {
    percentile(samples, 50.0)
}

// --- the machine -----------------------------------------------------------------------

/// One line about the machine and the tree the figures come from.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("MemTotal:").and_then(|r| r.split_whitespace().next()?.parse().ok()))
        })
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{cores} cores ({cpu}), {:.1} GiB RAM, load average {} at start; tree {}",
        mem_kb as f64 / 1024.0 / 1024.0,
        load.join(" "),
        tree_version()
    )
}

/// `git describe`-like text for the working tree, read-only.
fn tree_version() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else { return "(not a git checkout)".into() };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).unwrap_or_default();
    let changed: Vec<&str> = dirty.lines().filter_map(|l| l.get(3..)).filter(|p| !p.starts_with("benches/")).collect();
    if changed.is_empty() { head } else { format!("{head} + uncommitted changes in {}", changed.join(", ")) }
}

// --- the summary table -----------------------------------------------------------------

/// One line of the summary table.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    pub roster: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    /// "yes", "no", or "" when there is no target.
    pub met: String,
}

impl Row {
    pub fn new(figure: impl Into<String>, roster: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            roster: roster.into(),
            baseline: String::new(),
            ratio: String::new(),
            target: String::new(),
            met: String::new(),
        }
    }

    pub fn baseline(mut self, b: impl Into<String>) -> Row {
        self.baseline = b.into();
        self
    }

    pub fn ratio(mut self, r: f64) -> Row {
        self.ratio = format!("{r:.2}");
        self
    }

    pub fn target(mut self, t: impl Into<String>, met: bool) -> Row {
        self.target = t.into();
        self.met = if met { "yes" } else { "**no**" }.into();
        self
    }
}

/// Prints the table as Markdown, so it can go straight into docs/benchmarks.md.
pub fn print_table(title: &str, command: &str, rows: &[Row]) {
    println!();
    println!("## {title}");
    println!();
    println!("Command: `{command}`  ");
    println!("Machine: {}", machine());
    println!();
    println!("| figure | Roster | raw baseline | ratio | target | met |");
    println!("|---|---:|---:|---:|---|---|");
    for r in rows {
        println!("| {} | {} | {} | {} | {} | {} |", r.figure, r.roster, r.baseline, r.ratio, r.target, r.met);
    }
    println!();
}

pub fn fmt_rate(per_s: f64) -> String {
    if per_s >= 100.0 { group(per_s.round() as u64) } else { format!("{per_s:.1}") }
}

/// 1234567 → "1,234,567".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or_else(|| panic!("result has no number `{key}`: {v}"))
}

// --- the sandbox -----------------------------------------------------------------------

/// The sandbox on its own runtime and threads (as a remote vendor would be), so the
/// measured process has only Roster (or the baseline) in it.
pub struct SandboxHost {
    pub sandbox: Sandbox,
    runtime: tokio::runtime::Runtime,
}

impl SandboxHost {
    /// `people` generated people; Brex holds everyone but the few starters.
    /// The Brex rate limit is off, so the limiter is not what gets measured.
    pub fn start(people: usize) -> SandboxHost {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sandbox")
            .enable_all()
            .build()
            .expect("sandbox runtime");
        let config = SandboxConfig {
            people,
            brex_rate_limit: RateLimit { requests: 0, per: Duration::from_secs(60) },
            ..SandboxConfig::default()
        };
        let started = Instant::now();
        let sandbox = runtime.block_on(Sandbox::start(config)).expect("start the sandbox on loopback");
        progress(format!(
            "sandbox: {} people generated in {:.1} s, Brex at {}",
            group(people as u64),
            started.elapsed().as_secs_f64(),
            sandbox.brex_url()
        ));
        SandboxHost { sandbox, runtime }
    }

    /// `--brex-url=... --token=...` for a child.
    pub fn args(&self) -> Vec<String> {
        vec![format!("--brex-url={}", self.sandbox.brex_url()), format!("--token={}", self.sandbox.config().brex_token)]
    }

    pub fn stop(self) {
        let SandboxHost { sandbox, runtime } = self;
        runtime.block_on(sandbox.shutdown());
    }
}

/// People to generate so that Brex holds exactly `users` users: everyone but the
/// starters (about 2 % of the company, see `roster_sandbox::generate_people`).
pub fn people_for_brex_users(users: usize) -> usize {
    let starters = |n: usize| {
        let heads = 10.min((n / 8).max(1)).min(n.saturating_sub(1));
        let pool = n.saturating_sub(1 + heads);
        (pool / 3).min((n / 50).max(3))
    };
    let mut n = users;
    while n - starters(n) < users {
        n += 1;
    }
    n
}

/// A plain reqwest client, as a hand-written integration would have (no Roster code).
pub fn bare_client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; plain HTTP needs none, but the
    // builder wants one installed.
    roster_blocks::http::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// Every Brex user (id, email, first and last name, status), with bare reqwest.
pub async fn brex_users(client: &reqwest::Client, base: &str, token: &str) -> Vec<Value> {
    let mut users = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut req = client.get(format!("{base}/v2/users")).bearer_auth(token).query(&[("limit", "1000")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let mut page: Value = req.send().await.expect("list users").json().await.expect("users page");
        if let Some(Value::Array(items)) = page.get_mut("items").map(Value::take) {
            users.extend(items);
        }
        cursor = page.get("next_cursor").and_then(Value::as_str).map(str::to_string);
        if cursor.is_none() {
            return users;
        }
    }
}

/// Brex requests the sandbox has answered so far.
pub async fn brex_requests(client: &reqwest::Client, base: &str) -> u64 {
    let stats: Value = client
        .get(format!("{base}/_sandbox/stats"))
        .send()
        .await
        .expect("sandbox stats")
        .json()
        .await
        .expect("stats JSON");
    stats["brex"]["requests"].as_u64().unwrap_or(0)
}

// --- Roster set-up ---------------------------------------------------------------------

/// A durable sled store in `dir`, with the Brex credential sealed in it, and an engine
/// over `store` (which may be a wrapper around the sled store).
pub async fn brex_credential(store: &Store, vault: &Vault, base_url: &str, token: &str) -> StoredCredential {
    let new = NewCredential {
        name: "brex".into(),
        kind: roster_engine::model::CredentialKind::Bearer,
        base_url: base_url.to_string(),
        settings: BTreeMap::new(),
        secrets: BTreeMap::from([("secret".to_string(), token.to_string())]),
    };
    let sealed = credentials::seal(vault, new, &rfc3339(Clock::system().now())).expect("seal the credential");
    store.credentials.put_credential(&sealed).await.expect("store the credential");
    sealed
}

/// A fresh vault key and two vaults opened from it (the engine takes one by value).
/// `n` vaults with one key, as the nodes of one deployment share it.
pub fn vault_copies(n: usize) -> Vec<Vault> {
    let key = Vault::generate_key();
    (0..n).map(|_| Vault::from_base64(&key, "bench").expect("vault")).collect()
}

pub fn vaults() -> (Vault, Vault) {
    let key = Vault::generate_key();
    (Vault::from_base64(&key, "bench").expect("vault"), Vault::from_base64(&key, "bench").expect("vault"))
}

/// A fresh PostgreSQL store for a bench, in a schema of its own in the database at
/// `ROSTER_BENCH_DATABASE_URL` (default the machine's `test` database); `None` (with a
/// note) when no server answers. Dropped with [`drop_postgres_schema`].
pub async fn postgres_store(schema: &str) -> Option<(Store, Arc<PostgresStore>)> {
    let url = postgres_url();
    let pg = match PostgresStore::connect_in_schema(&url, schema).await {
        Ok(pg) => pg,
        Err(e) => {
            progress(format!("no PostgreSQL for the bench ({e}); skipping its variants"));
            return None;
        }
    };
    pg.migrate().await.expect("migrate the bench schema");
    let pg = Arc::new(pg);
    Some((Redacting::wrap(Store::new(pg.clone())), pg))
}

/// Another connection pool on the same schema: what a second node would have.
pub async fn postgres_node(schema: &str) -> Store {
    let pg = PostgresStore::connect_in_schema(&postgres_url(), schema).await.expect("connect a second node");
    Redacting::wrap(Store::new(Arc::new(pg)))
}

pub fn postgres_url() -> String {
    std::env::var("ROSTER_BENCH_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn drop_postgres_schema(schema: &str) {
    let _ = Command::new("psql")
        .args(["-X", "-q", "-d", &postgres_url(), "-c", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
        .output();
}

/// The store as `roster` opens it: sled behind the wrapper that scrubs secrets from writes.
pub fn open_store(dir: &Path) -> Store {
    open_sled(dir).0
}

/// [`open_store`], with the sled backend itself for what only it can tell.
pub fn open_sled(dir: &Path) -> (Store, Arc<SledStore>) {
    let sled = Arc::new(SledStore::open(dir).expect("open the sled store"));
    (Redacting::wrap(Store::new(sled.clone())), sled)
}

pub fn engine(store: Store, vault: Vault) -> Arc<Engine> {
    Arc::new(Engine::new(store, Some(vault), Clock::system()))
}

pub fn now() -> String {
    rfc3339(Clock::system().now())
}

/// Writes `writes` in batches of `batch`, returning the records as written.
pub async fn write_in_batches(store: &Store, writes: Vec<RecordWrite>, batch: usize) -> Vec<Record> {
    let mut out = Vec::with_capacity(writes.len());
    let mut writes = writes.into_iter().peekable();
    while writes.peek().is_some() {
        let chunk: Vec<RecordWrite> = writes.by_ref().take(batch).collect();
        out.extend(store.records.write_records(chunk).await.expect("write records").into_iter().map(|w| w.record));
    }
    out
}

pub fn record_write(fields: Value) -> RecordWrite {
    let Value::Object(changes) = fields else { panic!("fields must be an object") };
    RecordWrite { id: None, changes, source: "import".into(), at: now() }
}

// --- a store that times itself -----------------------------------------------------------

/// Counters a [`TimedStore`] keeps.
#[derive(Default)]
pub struct StoreTimes {
    pub save_steps: AtomicU64,
    pub save_step_ns: AtomicU64,
    pub claims: AtomicU64,
    pub claim_ns: AtomicU64,
    pub record_reads: AtomicU64,
    pub record_read_ns: AtomicU64,
    /// Run id → when a worker claimed it.
    pub claimed_at: Mutex<HashMap<Uuid, Instant>>,
    /// Claim-to-finish time of each finished run, in seconds.
    pub latencies: Mutex<Vec<f64>>,
}

impl StoreTimes {
    pub fn reset(&self) {
        for a in [
            &self.save_steps,
            &self.save_step_ns,
            &self.claims,
            &self.claim_ns,
            &self.record_reads,
            &self.record_read_ns,
        ] {
            a.store(0, Ordering::SeqCst);
        }
        self.claimed_at.lock().unwrap().clear();
        self.latencies.lock().unwrap().clear();
    }

    pub fn snapshot(&self) -> Value {
        let n = |a: &AtomicU64| a.load(Ordering::SeqCst);
        json!({
            "save_steps": n(&self.save_steps), "save_step_s": n(&self.save_step_ns) as f64 / 1e9,
            "claims": n(&self.claims), "claim_s": n(&self.claim_ns) as f64 / 1e9,
            "record_reads": n(&self.record_reads), "record_read_s": n(&self.record_read_ns) as f64 / 1e9,
        })
    }
}

/// Times the calls the engine makes on the store (and when each run is claimed and
/// finished, for per-run latency). Every call goes to the real store; observing adds two
/// clock reads per call.
pub struct Timing(pub Arc<StoreTimes>);

impl StoreObserver for Timing {
    fn after(&self, call: StoreCall, took: std::time::Duration, claimed: Option<Uuid>) {
        let t = &self.0;
        let add = |count: &AtomicU64, total: &AtomicU64| {
            count.fetch_add(1, Ordering::Relaxed);
            total.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        };
        match call {
            StoreCall::RecordRead => add(&t.record_reads, &t.record_read_ns),
            StoreCall::SaveStep { run, finished } => {
                add(&t.save_steps, &t.save_step_ns);
                if finished && let Some(at) = t.claimed_at.lock().unwrap().remove(&run) {
                    t.latencies.lock().unwrap().push(at.elapsed().as_secs_f64());
                }
            }
            StoreCall::Claim => {
                add(&t.claims, &t.claim_ns);
                if let Some(id) = claimed {
                    t.claimed_at.lock().unwrap().insert(id, Instant::now() - took);
                }
            }
            _ => {}
        }
    }
}

/// The sled store with [`Timing`] around it.
pub fn timed_store(sled: Store, times: Arc<StoreTimes>) -> Store {
    Observed::wrap(sled, Arc::new(Timing(times)))
}

/// A multi-threaded runtime like the `roster` binary's (one worker per core).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}
