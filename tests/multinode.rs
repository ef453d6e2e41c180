//! Several `roster serve` nodes on one PostgreSQL store, any of which dies: a batch of runs
//! that create cards and deactivate users, and a schedule that fires every minute, against
//! a sandbox that fails, throttles, stalls and drops connections, while nodes are killed
//! with SIGKILL at random moments and started again (same home, new process).
//!
//! Needs a PostgreSQL server (ROSTER_TEST_DATABASE_URL, default
//! postgres://postgres@127.0.0.1:5432/test); each run creates a database of its own and
//! drops it at the end. CI runs a small size. By hand, larger:
//!     ROSTER_MULTINODE_RUNS=2000 ROSTER_MULTINODE_KILLS=10 cargo test --release --test multinode -- --nocapture

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Child;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use roster_engine::model::{Run, RunState, RunTrigger};
use roster_sandbox::{Faults, RateLimit, SandboxConfig};
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use support::{Lcg, SandboxHandle, TestHome, env_number, http};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const NODES: usize = 3;
const LEASE: Duration = Duration::from_secs(3);
/// How long past its lease a dead node's run may stay its own.
const TAKEOVER_GRACE: Duration = Duration::from_secs(10);

/// Every minute, for the people whose email starts with `a`: read their Brex user, stamp.
const TICK: &str = r#"{
  "name": "tick",
  "begin": { "trigger": { "schedule": "* * * * *" },
             "rules": [ { "field": "email", "op": "starts_with", "value": "a" } ], "next": "look" },
  "blocks": {
    "look": { "type": "api", "credential": "brex", "request": { "method": "GET", "url": "/v2/users/<<brex_user_id>>" },
              "retry": { "initial": "50ms", "max_delay": "1s", "max_attempts": 10 }, "next": "stamp" },
    "stamp": { "type": "update", "set": { "ticked_at": "<<now>>" } }
  }
}"#;

/// One step, no vendor: how long a queued run waits before a node starts it.
const STAMP: &str = r#"{"name": "stamp", "begin": {"next": "s"}, "blocks": {"s": {"type": "update", "set": {"stamped_at": "<<now>>"}}}}"#;

/// A database of its own on the test server, dropped (with whatever is still connected)
/// at the end.
struct Database {
    server: String,
    name: String,
    url: String,
    runtime: Arc<tokio::runtime::Runtime>,
    pool: PgPool,
}

impl Database {
    fn create(runtime: Arc<tokio::runtime::Runtime>) -> Database {
        let server = std::env::var("ROSTER_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let name = format!("roster_multinode_{}", uuid::Uuid::new_v4().simple());
        let options = PgConnectOptions::from_str(&server).expect("ROSTER_TEST_DATABASE_URL is a postgres:// URL");
        runtime.block_on(async {
            let mut admin = PgConnection::connect_with(&options).await.unwrap_or_else(|e| {
                panic!(
                    "cannot reach PostgreSQL at {server} ({e}). This test needs a server: start one with \
                     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or set \
                     ROSTER_TEST_DATABASE_URL to a server whose user may create databases."
                )
            });
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .expect("create the test database");
            let _ = admin.close().await;
        });
        let url = format!("postgres://{}@{}:{}/{name}", options.get_username(), options.get_host(), options.get_port());
        let pool = runtime.block_on(async {
            sqlx::postgres::PgPoolOptions::new().max_connections(2).connect_lazy_with(options.clone().database(&name))
        });
        Database { server, name, url, runtime, pool }
    }

    fn count_all(&self, sql: &str) -> i64 {
        self.runtime.block_on(sqlx::query_scalar(sql).fetch_one(&self.pool)).expect(sql)
    }

    fn count(&self, sql: &str, bind: &str) -> i64 {
        self.runtime.block_on(sqlx::query_scalar(sql).bind(bind).fetch_one(&self.pool)).expect(sql)
    }

    fn texts(&self, sql: &str, bind: &str) -> Vec<String> {
        self.runtime.block_on(sqlx::query_scalar(sql).bind(bind).fetch_all(&self.pool)).expect(sql)
    }

    /// Every run of `workflow`.
    fn runs(&self, workflow: &str) -> Vec<Run> {
        let texts = self.texts("SELECT run::text FROM runs WHERE workflow = $1 ORDER BY id", workflow);
        texts.iter().map(|t| serde_json::from_str(t).expect("a stored run")).collect()
    }

    fn journal(&self, run: uuid::Uuid) -> Vec<Value> {
        self.runtime.block_on(self.journal_async(run))
    }

    async fn journal_async(&self, run: uuid::Uuid) -> Vec<Value> {
        let texts: Vec<String> = sqlx::query_scalar("SELECT entry::text FROM journal WHERE run_id = $1 ORDER BY seq")
            .bind(run)
            .fetch_all(&self.pool)
            .await
            .expect("read a journal");
        texts.iter().map(|t| serde_json::from_str(t).unwrap()).collect()
    }

    /// Every record's fields, by record id.
    fn records(&self) -> HashMap<uuid::Uuid, Value> {
        let rows: Vec<(uuid::Uuid, String)> = self
            .runtime
            .block_on(sqlx::query_as("SELECT id, record::text FROM records").fetch_all(&self.pool))
            .expect("read the records");
        rows.into_iter()
            .map(|(id, text)| (id, serde_json::from_str::<Value>(&text).unwrap()["fields"].clone()))
            .collect()
    }

    /// Runs whose lease names `node`.
    fn held_by(&self, node: &str) -> i64 {
        self.count("SELECT count(*) FROM runs WHERE lease_owner = $1 AND lease_token IS NOT NULL", node)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let pool = self.pool.clone();
        self.runtime.block_on(async move {
            pool.close().await;
            let Ok(options) = PgConnectOptions::from_str(&server) else { return };
            if let Ok(mut admin) = PgConnection::connect_with(&options).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
                let _ = admin.close().await;
            }
        });
    }
}

/// One `roster serve` node: its home, and the process now running in it, if any.
struct Node {
    home: TestHome,
    process: Option<Child>,
    /// Where the process listens, once it wrote it.
    url: Option<String>,
    /// The process's node id, once it answers and its heartbeat is in the store.
    id: Option<String>,
    started_at: Instant,
    restart_at: Option<Instant>,
    /// Every process's output, one after another.
    log: PathBuf,
}

impl Node {
    fn token(&self) -> String {
        std::fs::read_to_string(self.home.path().join("api.token")).unwrap().trim().to_string()
    }

    /// Starts a new process in this home; [`Node::poll_started`] says when it is up.
    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.home.path().join("serve.json"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let lease = format!("{}s", LEASE.as_secs());
        let args = ["serve", "--listen", "127.0.0.1:0", "--tick-ms", "100", "--concurrency", "8", "--lease", &lease];
        let child = self.home.command(&args).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        self.process = Some(child);
        self.url = None;
        self.id = None;
        self.started_at = Instant::now();
        self.restart_at = None;
    }

    /// Whether the process is up: it wrote its address and lists itself among the nodes.
    fn poll_started(&mut self) -> bool {
        if self.id.is_some() {
            return true;
        }
        let Some(child) = self.process.as_mut() else { return false };
        if let Some(status) = child.try_wait().unwrap() {
            panic!("serve exited ({status}) while starting:\n{}", self.output());
        }
        assert!(self.started_at.elapsed() < Duration::from_secs(30), "serve did not start:\n{}", self.output());
        if self.url.is_none() {
            let info: Option<Value> = std::fs::read_to_string(self.home.path().join("serve.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            self.url = info.and_then(|i| i["url"].as_str().map(str::to_string));
        }
        let Some(url) = &self.url else { return false };
        let (status, nodes) = http("GET", &format!("{url}/v1/nodes"), Some(&self.token()), None);
        if status != 200 {
            return false;
        }
        self.id = nodes.as_array().unwrap().iter().find(|n| n["this_process"] == true).map(|n| {
            assert_eq!(n["alive"], true, "{n}");
            n["node"].as_str().unwrap().to_string()
        });
        self.id.is_some()
    }

    fn wait_started(&mut self) {
        while !self.poll_started() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&self) -> bool {
        self.id.is_some()
    }

    /// SIGKILL; returns the node id the process had.
    fn kill(&mut self) -> String {
        let mut child = self.process.take().expect("a running node");
        child.kill().unwrap();
        child.wait().unwrap();
        self.url = None;
        self.id.take().expect("a started node")
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A node killed, and when its runs were all held by others.
struct Kill {
    node: String,
    at: Instant,
    /// Runs it held the moment it died.
    held: i64,
    /// The kill just after the schedule's fire.
    at_fire: bool,
    released: Option<Duration>,
}

/// Makes homes 1.. from home 0: the same store (recorded by `init --store`), the same
/// master key, each with its own API token; every home loads the same workflow files.
fn homes(db: &Database) -> Vec<TestHome> {
    let homes: Vec<TestHome> = (0..NODES).map(|_| TestHome::uninitialised()).collect();
    for (i, home) in homes.iter().enumerate() {
        if i > 0 {
            std::fs::copy(homes[0].path().join("master.key"), home.path().join("master.key")).unwrap();
        }
        home.roster(&["init", "--store", &db.url]).ok();
        for (name, text) in
            [("cards", support::cards_workflow("cards", "Multinode card").as_str()), ("tick", TICK), ("stamp", STAMP)]
        {
            std::fs::write(home.path().join(format!("workflows/{name}.json")), text).unwrap();
        }
    }
    homes
}

#[test]
fn serve_nodes_sharing_a_postgres_store_survive_kill_9_without_losing_or_repeating_work() {
    let runs_wanted = env_number("ROSTER_MULTINODE_RUNS", 300);
    let kills_wanted = env_number("ROSTER_MULTINODE_KILLS", 4).max(2);
    let mut rng = Lcg(env_number("ROSTER_MULTINODE_SEED", 5) as u64);
    let started = Instant::now();

    let runtime = Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap());
    let db = Database::create(runtime.clone());
    let sandbox = SandboxHandle::start(SandboxConfig {
        people: runs_wanted + runs_wanted / 5,
        brex_rate_limit: RateLimit { requests: 0, per: Duration::from_secs(60) },
        ..Default::default()
    });
    let homes = homes(&db);
    homes[0].add_sandbox_brex(&sandbox);
    let integration = homes[0]
        .file("brex.json", r#"{"name": "brex", "connector": "brex", "credential": "brex", "sync_key": "email"}"#);
    homes[0].roster(&["sync", integration.to_str().unwrap()]).ok();
    let records = db.records();
    let tick_people: BTreeSet<uuid::Uuid> = records
        .iter()
        .filter(|(_, f)| f["email"].as_str().is_some_and(|e| e.starts_with('a')))
        .map(|(id, _)| *id)
        .collect();
    assert!(!tick_people.is_empty(), "the schedule must select someone");

    let mut nodes: Vec<Node> = homes
        .into_iter()
        .map(|home| {
            let log = home.path().join("serve.log");
            Node { home, process: None, url: None, id: None, started_at: Instant::now(), restart_at: None, log }
        })
        .collect();
    for node in &mut nodes {
        node.spawn();
    }
    for node in &mut nodes {
        node.wait_started();
    }
    let setup = started.elapsed();

    sandbox.sandbox.set_faults(Faults {
        error_500: 0.05,
        rate_limit_429: 0.03,
        slow: 0.05,
        slow_for: Duration::from_millis(300),
        drop_connection: 0.06,
        drop_after_effect: 0.5,
        seed: 11,
        ..Faults::default()
    });

    // The serve nodes do the batch: queued through one node's API, which answers once every
    // run is queued while all three nodes already work on them. That node is spared until it
    // has answered (a batch cut off half-way is resumed by asking again, not tested here).
    let active = records.values().filter(|f| f["brex_status"] == "ACTIVE").count() as i64;
    assert!(active as usize >= runs_wanted / 2, "only {active} active people");
    let mut queueing = Some({
        let url = format!("{}/v1/workflows/cards/batches", nodes[0].url.as_ref().unwrap());
        let token = nodes[0].token();
        std::thread::spawn(move || http("POST", &url, Some(&token), Some(json!({}))))
    });
    let mut batch: Option<Value> = None;
    let mut queued_in = Duration::ZERO;

    let unsettled = |trigger_like: &str| {
        db.count(
            "SELECT count(*) FROM runs WHERE trigger LIKE $1 AND state IN ('queued', 'running', 'waiting')",
            trigger_like,
        )
    };
    let deadline = started + Duration::from_secs(120) + Duration::from_millis(60 * runs_wanted as u64);
    let mut kills: Vec<Kill> = Vec::new();
    let queued_at = Instant::now();
    let mut next_kill = queued_at + Duration::from_millis(300 + rng.next(900));
    // The last kill comes just after the schedule's next fire (at least 3 s away, so the
    // nodes are busy with the batch by then): a node dies while the nodes fire.
    let fire = {
        let now = Timestamp::now();
        Timestamp::from_second((now.as_second() + 3).div_euclid(60) * 60 + 60).unwrap()
    };
    let fire_kill_at = Instant::now()
        + Duration::from_millis(
            (fire.as_millisecond() - Timestamp::now().as_millisecond()) as u64 + 50 + rng.next(600),
        );
    let mut fire_killed = false;
    let mut fire_kill_ms = 0;
    let mut batch_settled: Option<Duration> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "nothing settled in time: {} batch and {} schedule runs unfinished\n{}",
            unsettled("batch:%"),
            unsettled("schedule:%"),
            nodes.iter().map(Node::output).collect::<Vec<_>>().join("\n---\n")
        );
        let now = Instant::now();
        for node in &mut nodes {
            if node.restart_at.is_some_and(|at| at <= now) {
                node.spawn();
            }
            if node.process.is_some() {
                node.poll_started();
            }
        }
        for kill in kills.iter_mut().filter(|k| k.released.is_none()) {
            if db.held_by(&kill.node) == 0 {
                kill.released = Some(kill.at.elapsed());
            } else {
                assert!(
                    kill.at.elapsed() <= LEASE + TAKEOVER_GRACE,
                    "node {} has been dead for {:?} and still holds {} run(s)",
                    kill.node,
                    kill.at.elapsed(),
                    db.held_by(&kill.node)
                );
            }
        }

        if queueing.as_ref().is_some_and(|q| q.is_finished()) {
            let (status, answer) = queueing.take().unwrap().join().expect("the batch request");
            assert_eq!(status, 202, "{answer}");
            queued_in = queued_at.elapsed();
            batch = Some(answer);
        }

        let running: Vec<usize> =
            (0..nodes.len()).filter(|&i| nodes[i].running() && (i > 0 || queueing.is_none())).collect();
        let random_kill = kills.len() + usize::from(!fire_killed) < kills_wanted && now >= next_kill;
        let fire_kill = !fire_killed && now >= fire_kill_at;
        // Never the last node alive: someone has to carry on.
        if (random_kill || fire_kill) && running.len() >= 2 {
            let victim = running[rng.next(running.len() as u64) as usize];
            let at = Instant::now();
            let node = nodes[victim].kill();
            let held = db.held_by(&node);
            nodes[victim].restart_at = Some(at + Duration::from_millis(200 + rng.next(1800)));
            if fire_kill {
                fire_kill_ms = Timestamp::now().duration_since(fire).as_millis();
            }
            kills.push(Kill { node, at, held, at_fire: fire_kill, released: None });
            fire_killed |= fire_kill;
            let kills_left = kills_wanted.saturating_sub(kills.len() + usize::from(!fire_killed));
            next_kill = Instant::now() + kill_gap(&db, active, queued_at.elapsed(), kills_left, &mut rng);
        }
        if batch_settled.is_none() && batch.is_some() && unsettled("batch:%") == 0 {
            batch_settled = Some(started.elapsed());
        }

        let kills_done = kills.len() >= kills_wanted;
        let fired = db.count("SELECT count(*) FROM runs WHERE trigger = $1", &format!("schedule:{}", fire_stamp(fire)))
            == tick_people.len() as i64;
        let settled = kills_done
            && batch_settled.is_some()
            && fired
            && nodes.iter().all(Node::running)
            && kills.iter().all(|k| k.released.is_some())
            && unsettled("batch:%") == 0
            && unsettled("schedule:%") == 0;
        if settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let settled_after = started.elapsed();
    sandbox.sandbox.set_faults(Faults::default());

    let batch = batch.unwrap();
    let batch_trigger = batch["trigger"].as_str().unwrap().to_string();
    let queued = batch["queued"].as_u64().unwrap() as i64;
    assert_eq!((queued, batch["selected"].as_i64().unwrap()), (active, active), "{batch}");

    // Every queued run of the batch finished, once per person, each failure with a reason.
    let batch_runs = db.runs("cards");
    assert_eq!(batch_runs.len() as i64, queued, "runs lost or added");
    assert!(batch_runs.iter().all(|r| r.trigger.to_string() == batch_trigger), "a run from elsewhere");
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_person: HashMap<uuid::Uuid, usize> = HashMap::new();
    for run in &batch_runs {
        *states.entry(run.state.as_str()).or_default() += 1;
        *per_person.entry(run.record_id).or_default() += 1;
        settled_with_reason(run);
    }
    assert!(per_person.values().all(|n| *n == 1), "someone got two runs in one batch");

    // No side effect twice, none lost: one card per key and per person, and every
    // succeeded run's card is the one its journal saw created and its record holds.
    let stats = sandbox.stats();
    let doubled_keys: Vec<_> = stats.cards_created_by_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled_keys.is_empty(), "keys that created two cards: {doubled_keys:?}");
    let doubled_people: Vec<_> = stats.cards_created_by_owner_and_name.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled_people.is_empty(), "people with two cards: {doubled_people:?}");
    assert_eq!(stats.duplicate_side_effects, 0);
    assert_eq!(stats.idempotency_key_conflicts, 0);
    let records = db.records();
    let mut retried = 0;
    for run in batch_runs.iter().filter(|r| r.state == RunState::Succeeded) {
        let fields = &records[&run.record_id];
        let card_key = format!(
            "{}/Multinode card {}",
            fields["brex_user_id"].as_str().unwrap(),
            fields["email"].as_str().unwrap()
        );
        assert_eq!(stats.cards_created_by_owner_and_name.get(&card_key), Some(&1), "no card for {card_key}");
        let journal = db.journal(run.id);
        retried += journal.iter().filter(|s| s["attempt"].as_u64().unwrap_or(1) > 1).count();
        let card = journal
            .iter()
            .rev()
            .find(|s| s["block"] == "card" && s["status"] == 200)
            .unwrap_or_else(|| panic!("no successful card step in run {}: {journal:?}", run.id));
        assert_eq!(fields["brex_user_card_id"], card["response"]["body"]["id"], "record and journal disagree");
        assert_eq!(fields["brex_status"], "DISABLED");
        assert!(fields["cards_done_at"].is_string());
    }
    let succeeded = states.get("succeeded").copied().unwrap_or(0);
    assert!(succeeded > 0);

    // The schedule: one run per person and fire time, a fire every minute from the first
    // to the last (a node was always alive), each for everyone the rules pick.
    let tick_runs = db.runs("tick");
    let mut per_fire: BTreeMap<String, BTreeMap<uuid::Uuid, usize>> = BTreeMap::new();
    for run in &tick_runs {
        let RunTrigger::Schedule(at) = &run.trigger else { panic!("a tick run not started by the schedule: {run:?}") };
        *per_fire.entry(at.clone()).or_default().entry(run.record_id).or_default() += 1;
        settled_with_reason(run);
    }
    let doubled_fires: Vec<_> = per_fire
        .iter()
        .flat_map(|(at, people)| people.iter().filter(|(_, n)| **n > 1).map(move |(p, _)| (at, p)))
        .collect();
    assert!(doubled_fires.is_empty(), "a fire ran twice for the same person: {doubled_fires:?}");
    for (at, people) in &per_fire {
        let got: BTreeSet<uuid::Uuid> = people.keys().copied().collect();
        assert_eq!(got, tick_people, "the fire of {at} missed people or ran for others");
    }
    let of_fire: Vec<&Run> = tick_runs.iter().filter(|r| r.trigger == RunTrigger::Schedule(fire_stamp(fire))).collect();
    let since_fire = |t: &str| t.parse::<Timestamp>().unwrap().duration_since(fire).as_millis();
    let fire_span = (
        of_fire.iter().map(|r| since_fire(&r.created_at)).min().unwrap(),
        of_fire.iter().map(|r| since_fire(&r.created_at)).max().unwrap(),
        of_fire.iter().map(|r| since_fire(r.finished_at.as_deref().unwrap())).max().unwrap(),
    );
    let fires: Vec<Timestamp> = per_fire.keys().map(|t| t.parse().unwrap()).collect();
    assert!(fires.len() >= 2, "the schedule fired only at {fires:?}");
    for pair in fires.windows(2) {
        assert_eq!(pair[1].as_second() - pair[0].as_second(), 60, "a minute without its fire: {fires:?}");
    }
    assert!(fires.contains(&fire), "no fire at {fire} (the minute a node died at)");

    // Dead nodes: gone, holding nothing; live ones alive. From the CLI and from the API.
    let mut dead: BTreeSet<String> = kills.iter().map(|k| k.node.clone()).collect();
    let live: BTreeSet<String> = nodes.iter().map(|n| n.id.clone().unwrap()).collect();
    let lease = format!("{}s", LEASE.as_secs());
    let gone_by = Instant::now() + LEASE + Duration::from_secs(2);
    let listed = loop {
        let listed = nodes[1].home.roster(&["nodes", "--json", "--lease", &lease]).ok().json();
        let all_gone = listed
            .as_array()
            .unwrap()
            .iter()
            .all(|n| live.contains(n["node"].as_str().unwrap()) == (n["alive"] == true));
        if all_gone || Instant::now() > gone_by {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for n in listed.as_array().unwrap() {
        let id = n["node"].as_str().unwrap();
        if live.contains(id) {
            assert_eq!(n["alive"], true, "{listed}");
        } else {
            assert!(dead.remove(id), "a node nobody started: {n}");
            assert_eq!((&n["alive"], &n["runs_held"]), (&json!(false), &json!(0)), "{listed}");
        }
    }
    assert!(dead.is_empty(), "killed nodes missing from `roster nodes`: {dead:?}");
    let url = nodes[2].url.clone().unwrap();
    let (_, from_api) = http("GET", &format!("{url}/v1/nodes"), Some(&nodes[2].token()), None);
    let this: Vec<&Value> = from_api.as_array().unwrap().iter().filter(|n| n["this_process"] == true).collect();
    assert_eq!(this.len(), 1);
    assert_eq!(this[0]["node"].as_str(), nodes[2].id.as_deref());
    assert_eq!(db.count_all("SELECT count(*) FROM runs WHERE lease_token IS NOT NULL"), 0);

    // Takeover: every dead node's runs held by others within lease + grace.
    assert!(kills.len() >= kills_wanted);
    let kill_list: Vec<String> = kills
        .iter()
        .map(|k| format!("{} at {:.1} s holding {}", k.node, (k.at - started).as_secs_f64(), k.held))
        .collect();
    assert!(kills.iter().any(|k| k.held > 0), "no node died holding runs: {kill_list:?}");
    let takeovers: Vec<Duration> = kills.iter().filter(|k| k.held > 0).map(|k| k.released.unwrap()).collect();
    let max_takeover = takeovers.iter().max().copied().unwrap_or_default();
    assert!(max_takeover <= LEASE + TAKEOVER_GRACE);

    // Queue to start, nodes idle: a run queued from outside any node (this process), which
    // only NOTIFY (or the workers' 200 ms poll) tells them about.
    std::thread::sleep(Duration::from_millis(500));
    let transactions = || {
        db.count_all(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
        )
    };
    let before = transactions();
    std::thread::sleep(Duration::from_secs(2));
    let idle_rate = (transactions() - before) / 2;
    let latencies = runtime.block_on(queue_to_start(&db, &records, 10));
    let worst = latencies.iter().map(|(d, _)| *d).max().unwrap();
    let mut sorted: Vec<Duration> = latencies.iter().map(|(d, _)| *d).collect();
    sorted.sort();
    let by: BTreeSet<&str> = latencies.iter().map(|(_, n)| n.as_str()).collect();

    let faults = &stats.brex.faults;
    println!("multinode kills: {kill_list:?}");
    println!(
        "multinode: {NODES} nodes, lease {LEASE:?}; {} batch runs ({states:?}), {} schedule fires x {} people, \
         {} kills (runs held at death: {:?}; the kill {} ms after the fire of {fire} held {}; that fire's runs were queued {}-{} ms after it and done {} ms after it), max takeover {:.2} s (lease {} s), {} faults injected \
         (500: {}, 429: {}, slow: {}, dropped: {} of which {} after the side effect), {retried} retried attempts, \
         {} idempotent replays, 0 duplicates, 0 lost; setup {:.1} s, batch queued in {:.1} s (run meanwhile) and settled at {:.1} s, all at {:.1} s, wall {:.1} s; \
         idle nodes: ~{idle_rate} store transactions/s; queue to start (idle nodes, {} samples, started by {} node(s)): \
         median {} ms, max {} ms",
        batch_runs.len(),
        per_fire.len(),
        tick_people.len(),
        kills.len(),
        kills.iter().map(|k| k.held).collect::<Vec<_>>(),
        fire_kill_ms,
        kills.iter().find(|k| k.at_fire).map_or(0, |k| k.held),
        fire_span.0,
        fire_span.1,
        fire_span.2,
        max_takeover.as_secs_f64(),
        LEASE.as_secs(),
        faults.total(),
        faults.error_500,
        faults.rate_limit_429,
        faults.slow,
        faults.drop_connection,
        faults.drop_after_side_effect,
        stats.idempotent_replays,
        setup.as_secs_f64(),
        queued_in.as_secs_f64(),
        batch_settled.unwrap().as_secs_f64(),
        settled_after.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        latencies.len(),
        by.len(),
        sorted[sorted.len() / 2].as_millis(),
        worst.as_millis(),
    );
    assert!(faults.total() > 0, "the test must actually inject faults");
    assert!(worst < Duration::from_secs(1), "a queued run waited {worst:?} for an idle node");
}

/// How long until the next random kill: the batch's expected remaining time (its `runs`
/// at the pace so far) shared among the kills left, give or take half, so kills spread over the
/// whole batch at any size.
fn kill_gap(db: &Database, runs: i64, elapsed: Duration, kills_left: usize, rng: &mut Lcg) -> Duration {
    let finished = db.count("SELECT count(*) FROM runs WHERE trigger LIKE $1 AND finished", "batch:%");
    let left = (runs - finished).max(0);
    let remaining = if finished == 0 { Duration::from_secs(10) } else { elapsed * left as u32 / finished as u32 };
    let share = (remaining / (kills_left as u32 + 1)).clamp(Duration::from_millis(300), Duration::from_secs(10));
    share / 2 + share * rng.next(1000) as u32 / 1000
}

/// A run that is over: succeeded, or failed with a reason.
fn settled_with_reason(run: &Run) {
    match run.state {
        RunState::Succeeded => {}
        RunState::Failed => {
            assert!(run.error.as_deref().is_some_and(|e| !e.is_empty()), "a failure without a reason: {run:?}")
        }
        other => panic!("run {} was left {other:?}: {run:?}", run.id),
    }
}

/// A fire time as the scheduler writes it into triggers and marks.
fn fire_stamp(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Queues `samples` runs of `stamp` one after another from this process, each once the one
/// before has started: how long each waited from the queueing call to its first step, and
/// which node took it.
async fn queue_to_start(
    db: &Database,
    records: &HashMap<uuid::Uuid, Value>,
    samples: usize,
) -> Vec<(Duration, String)> {
    let pg = roster_engine::store::PostgresStore::connect(&db.url).await.expect("open the store");
    let store = roster_engine::store::Store::new(Arc::new(pg));
    let engine = roster_engine::run::Engine::new(store.clone(), None, roster_engine::clock::Clock::system());
    let presets = roster_engine::presets::built_in();
    let cx = roster_blocks::kinds::CompileContext { presets: &presets, credentials: None };
    let wf = roster_engine::workflow::Workflow::compile(STAMP, "stamp.json", &cx).unwrap();
    let mut out = Vec::new();
    for id in records.keys().take(samples) {
        let record = store.records.record(*id).await.unwrap().unwrap();
        let queued_at = Timestamp::now();
        let run = engine.create_run(&wf, &record, RunTrigger::ManualApi).await.unwrap();
        let waited = Instant::now();
        let started = loop {
            if let Some(first) = db.journal_async(run.id).await.first() {
                break first["started_at"].as_str().unwrap().parse::<Timestamp>().unwrap();
            }
            assert!(waited.elapsed() < Duration::from_secs(10), "run {} never started", run.id);
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let stored = store.runs.run(run.id).await.unwrap().unwrap();
        let by = stored.lease.map(|l| l.owner).unwrap_or_default();
        let latency = started.duration_since(queued_at);
        out.push((Duration::try_from(latency).unwrap_or_default(), by));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    out
}
