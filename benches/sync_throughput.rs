//! Benchmark 2: sync throughput and memory.
//!
//! 100,000 Brex users (1,000 per page) synced by `roster_engine::sync::run` into an empty
//! durable store (sled, then PostgreSQL), then again with nothing changed, then again after 10 % of the users
//! changed in the sandbox (their status flipped with `PUT /v2/users/{id}`, as an admin
//! would). The raw baseline fetches and parses the same pages with bare reqwest and
//! serde_json, in the same process. Two durable floors follow it on sled's child: the
//! baseline again, each page's people (a record, a sync-key index entry and a change
//! event each) written atomically and durably on bare sled, then on a plain append-only
//! file: the most a sync on that store could reach.
//!
//! The sandbox lives in the parent process; the phases of each backend run in a child
//! process of their own, the first sync first so that its peak RSS (VmHWM) is its own; before each later phase the peak is
//! reset (`5` > /proc/self/clear_refs).
//!
//!     cargo bench --bench sync_throughput [-- --users=100000 --backends=sled,postgres --full]

mod common;
#[path = "common/floor.rs"]
mod floor;

use std::time::Instant;

use common::*;
use floor::{DurableFloor, FLOORS, FloorKind, floor_rows};
use roster_engine::clock::Clock;
use roster_engine::credentials;
use roster_engine::store::Store;
use roster_engine::sync::{self, Integration, NoProgress};
use serde_json::{Value, json};

/// The integration synced, allowed to list `users` people (past 100,000 a listing is
/// stopped unless `max_items` says more).
fn integration(users: usize) -> String {
    json!({"name": "brex", "connector": "brex", "credential": "brex", "sync_key": "email",
           "options": {"max_items": users.max(100_000)}})
    .to_string()
}
/// The target for a sync's peak RSS, set for a store of 1M people.
const PEAK_RSS_TARGET_MIB: f64 = 500.0;
const PEAK_RSS_TARGET_PEOPLE: f64 = 1_000_000.0;

fn main() {
    let opts = Opts::parse();
    match opts.phase.as_deref() {
        Some("sync") => runtime().block_on(child_sync(&opts)),
        Some(other) => panic!("unknown phase {other}"),
        None => parent(&opts),
    }
}

fn parent(opts: &Opts) {
    let users = opts.usize("users", opts.or_smoke(100_000, 2_000), 300_000);
    let backends = opts.get("backends").unwrap_or_else(|| "sled,postgres".into());
    println!("sync_throughput: {users} Brex users, 1,000 per page, on {backends}");
    let host = SandboxHost::start(people_for_brex_users(users));
    let mut rows = Vec::new();
    for backend in backends.split(',') {
        let mut args = host.args();
        args.extend([format!("--users={users}"), format!("--backend={backend}")]);
        let results = child("sync", &args);
        if results.is_empty() {
            continue;
        }
        rows.extend(backend_rows(backend, &results));
    }
    host.stop();
    print_table(
        "Sync throughput",
        &format!("cargo bench --bench sync_throughput -- --users={users} --backends={backends}"),
        &rows,
    );
}

/// The table rows of one backend's child: its phases beside the baseline it measured.
fn backend_rows(backend: &str, results: &[Value]) -> Vec<Row> {
    let get = |name: &str| results.iter().find(|r| r["phase"] == name).unwrap_or_else(|| panic!("no {name}"));
    let base = get("baseline");
    let b_rps = f(base, "records") / f(base, "elapsed_s");
    let mut rows = Vec::new();
    for (phase, label, target) in [
        ("first", "first sync into an empty store", Some(0.3)),
        ("unchanged", "second sync, nothing changed", None),
        ("changed", "third sync, 10 % changed", None),
    ] {
        let p = get(phase);
        let rps = f(p, "records") / f(p, "elapsed_s");
        let mut row = Row::new(format!("{backend}, {label}: records/s"), fmt_rate(rps))
            .baseline(fmt_rate(b_rps))
            .ratio(rps / b_rps);
        if let Some(t) = target {
            row = row.target(format!("≥ {t} of baseline"), rps / b_rps >= t);
        }
        rows.push(row);
    }
    for (phase, label) in [("first", "first sync"), ("unchanged", "unchanged sync"), ("changed", "10 % changed sync")] {
        let p = get(phase);
        let peak = f(p, "peak_rss_mib");
        let mut row = Row::new(
            format!("{backend}, {label}: peak RSS of the process (growth during the phase)"),
            format!("{peak:.0} MiB (+{:.0})", peak - f(p, "rss_before_mib")),
        )
        .baseline(format!("(+{:.0})", f(base, "peak_rss_mib") - f(base, "rss_before_mib")));
        if f(p, "records") >= PEAK_RSS_TARGET_PEOPLE {
            row = row.target(format!("≤ {PEAK_RSS_TARGET_MIB:.0} MiB at 1M people"), peak <= PEAK_RSS_TARGET_MIB);
        }
        rows.push(row);
    }
    let first = get("first");
    rows.push(
        Row::new(
            format!("{backend}, first sync: client CPU per record"),
            format!("{:.1} µs", f(first, "cpu_s") / f(first, "records") * 1e6),
        )
        .baseline(format!("{:.1} µs", f(base, "cpu_s") / f(base, "records") * 1e6)),
    );
    let per_person = f(first, "store_mib") * 1048576.0 / f(first, "records") / 1024.0;
    rows.push(
        Row::new(format!("{backend}, first sync: store per synced person"), format!("{per_person:.2} KB"))
            .target("≤ 1.5 KB", per_person <= 1.5),
    );
    rows.push(Row::new(
        format!("{backend}, store after the three syncs"),
        format!("{:.0} MiB", f(get("changed"), "store_mib")),
    ));
    for phase in ["first", "unchanged", "changed"] {
        let p = get(phase);
        rows.push(Row::new(
            format!("{backend}, {phase}: created / updated / unchanged"),
            format!("{} / {} / {}", p["created"], p["updated"], p["unchanged"]),
        ));
    }
    for (phase, what) in FLOORS {
        if let Some(p) = results.iter().find(|r| r["phase"] == phase) {
            let work = "fetch + parse + each page's people (record, key, event) durable";
            rows.extend(floor_rows(what, work, "records", p, base));
        }
    }
    rows
}

// --- the measured phases (child process) -------------------------------------------------

async fn child_sync(opts: &Opts) {
    let base = opts.string("brex-url");
    let token = opts.string("token");
    let users = opts.usize("users", 100_000, 100_000);
    let dir = tempfile::Builder::new().prefix("roster-bench-sync-").tempdir().expect("temp dir");
    let backend = opts.get("backend").unwrap_or_else(|| "sled".into());
    let schema = format!("bench_sync_{}", std::process::id());
    let (store, postgres) = match backend.as_str() {
        "sled" => (open_store(dir.path()), None),
        "postgres" => match postgres_store(&schema).await {
            Some((store, pg)) => (store, Some(pg)),
            None => return,
        },
        other => panic!("--backend={other}: use sled or postgres"),
    };
    // What the store takes on disk: the sled folder, or the PostgreSQL schema's tables.
    let store_mib = async || match &postgres {
        Some(pg) => pg.size_bytes().await.expect("the schema's size") as f64 / 1048576.0,
        None => dir_bytes(dir.path()) as f64 / 1048576.0,
    };
    let (vault, _) = vaults();
    let stored = brex_credential(&store, &vault, &base, &token).await;
    let credential = credentials::open(&vault, &stored).expect("open the credential");
    let integration =
        Integration::compile(&integration(users), "bench brex.json", None).expect("the integration compiles");
    let clock = Clock::system();

    let phase = async |name: &str| {
        let rss_before = rss_mib();
        let cpu0 = cpu_seconds();
        let t = Instant::now();
        let session = sync::run(&store as &Store, &integration, &credential, None, &clock, false, &mut NoProgress)
            .await
            .expect("sync");
        let elapsed = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        assert_eq!(session.error, None, "the sync failed");
        let c = &session.counts;
        assert_eq!(c.fetched as usize, users, "every user fetched");
        progress(format!(
            "sync {name}: {} records in {elapsed:.2} s ({:.0}/s), {} created, {} updated, {} unchanged, peak RSS {:.0} MiB",
            c.fetched,
            c.fetched as f64 / elapsed,
            c.created,
            c.updated,
            c.unchanged,
            peak_rss_mib()
        ));
        json!({
            "phase": name, "records": c.fetched, "elapsed_s": elapsed, "cpu_s": cpu,
            "created": c.created, "updated": c.updated, "unchanged": c.unchanged, "failed": c.failed,
            "peak_rss_mib": peak_rss_mib(), "rss_before_mib": rss_before, "rss_after_mib": rss_mib(),
            "store_mib": store_mib().await,
        })
    };

    // 1. First sync, in a fresh process: its peak RSS is the process's.
    let first = phase("first").await;
    assert_eq!(first["created"], users, "the first sync creates everyone");
    emit(first);

    // 2. Nothing changed.
    reset_peak_rss();
    let unchanged = phase("unchanged").await;
    assert_eq!(unchanged["unchanged"], users, "nothing changed");
    emit(unchanged);

    // 3. 10 % of the users change in Brex (status flipped), then sync.
    let client = bare_client();
    let changed = change_tenth(&client, &base, &token).await;
    reset_peak_rss();
    let third = phase("changed").await;
    assert_eq!(third["updated"], changed, "the changed users are updated");
    emit(third);
    drop(store);
    drop(postgres);
    if backend == "postgres" {
        drop_postgres_schema(&schema);
    }

    // 4. The raw baseline: the same pages with bare reqwest + serde_json.
    reset_peak_rss();
    emit(baseline(&client, &base, &token, None).await);

    // 5. The durable floors: the baseline, and each page's people written under their sync
    // key in one atomic write, durable before the next page is read.
    if backend == "sled" {
        for (name, kind) in [("floor-sled", FloorKind::Sled), ("floor-log", FloorKind::Log)] {
            let dir = tempfile::Builder::new().prefix("roster-bench-floor-").tempdir().expect("temp dir");
            let floor = DurableFloor::open(kind, dir.path());
            reset_peak_rss();
            let mut out = baseline(&client, &base, &token, Some(&floor)).await;
            drop(floor);
            out["phase"] = json!(name);
            out["store_bytes"] = json!(dir_bytes(dir.path()));
            emit(out);
        }
    }
}

/// Flips the status of every tenth user (ACTIVE ⇄ DISABLED) with `PUT /v2/users/{id}`,
/// a page at a time, so this set-up step holds little memory (the next phase's peak RSS
/// starts from here).
async fn change_tenth(client: &reqwest::Client, base: &str, token: &str) -> usize {
    let mut n = 0;
    let mut index = 0usize;
    let mut cursor: Option<String> = None;
    loop {
        let mut req = client.get(format!("{base}/v2/users")).bearer_auth(token).query(&[("limit", "1000")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let page: Value = req.send().await.expect("list users").json().await.expect("users page");
        let mut chosen = Vec::new();
        for u in page["items"].as_array().expect("items") {
            if index % 10 == 5 {
                let to = if u["status"] == "ACTIVE" { "DISABLED" } else { "ACTIVE" };
                chosen.push((u["id"].as_str().unwrap_or_default().to_string(), to));
            }
            index += 1;
        }
        n += chosen.len();
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in chosen.chunks(chosen.len().div_ceil(32).max(1)) {
            let (client, base, token, chunk) = (client.clone(), base.to_string(), token.to_string(), chunk.to_vec());
            tasks.spawn(async move {
                for (id, to) in chunk {
                    let resp = client
                        .put(format!("{base}/v2/users/{id}"))
                        .bearer_auth(&token)
                        .json(&json!({"status": to}))
                        .send()
                        .await
                        .expect("PUT user");
                    assert_eq!(resp.status().as_u16(), 200, "change a user");
                }
            });
        }
        while let Some(t) = tasks.join_next().await {
            t.expect("change task");
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    progress(format!("changed the status of {n} Brex users"));
    n
}

async fn baseline(client: &reqwest::Client, base: &str, token: &str, floor: Option<&DurableFloor>) -> Value {
    let rss_before = rss_mib();
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let mut records = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let mut req = client.get(format!("{base}/v2/users")).bearer_auth(token).query(&[("limit", "1000")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let resp = req.send().await.expect("list users");
        assert!(resp.status().is_success());
        let page: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("JSON page");
        let people: Vec<&Value> = page["items"]
            .as_array()
            .map_or(Vec::new(), |items| items.iter().filter(|u| u["email"].is_string()).collect());
        records += people.len() as u64;
        if let Some(floor) = floor {
            // What a first sync must keep per person, at the least: the record, its sync key
            // in an index, and a change event for triggers (its fields, as they became).
            let mut owned = Vec::with_capacity(people.len() * 3);
            for (i, u) in people.iter().enumerate() {
                let id = (records as usize - people.len() + i) as u64;
                let value = serde_json::to_vec(u).expect("a person");
                let email = u["email"].as_str().unwrap_or("");
                owned.push(([b"r/", &id.to_be_bytes()[..]].concat(), value.clone()));
                owned.push(([b"k/", email.as_bytes(), b"/", &id.to_be_bytes()[..]].concat(), Vec::new()));
                owned.push(([b"e/", &id.to_be_bytes()[..]].concat(), value));
            }
            let writes: Vec<(&[u8], &[u8])> = owned.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
            floor.write(&writes).await;
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    progress(format!("baseline: {records} records in {elapsed:.2} s ({:.0}/s)", records as f64 / elapsed));
    json!({
        "phase": "baseline", "records": records, "elapsed_s": elapsed, "cpu_s": cpu, "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": rss_before,
    })
}
