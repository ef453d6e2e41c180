//! `roster store …` (the store itself) and `roster nodes` (the serve nodes sharing it).

use std::time::Duration;

use clap::{Args, Subcommand};
use roster_engine::home::{Home, StoreLocation, open_location};
use roster_engine::service::{NodeStatus, node_statuses};
use roster_engine::store::{ItemKind, copy_store};

use super::remote::{self, Remote};
use super::{Context, Outcome, output};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Bring a PostgreSQL store's tables up to this roster's version (safe to run again, and
    /// from several nodes at once). `serve` does it too when it starts.
    Migrate,
    /// Copy everything one store holds (records with provenance, runs and journals,
    /// credentials still sealed, workflow versions, sync sessions, scheduler state, events)
    /// into a new, empty one, and check both hold the same. Stop roster on the source first.
    Copy(CopyArgs),
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The store to copy: a home folder (its store, embedded or the URL it recorded) or a
    /// postgres:// URL.
    #[arg(long, value_name = "HOME_OR_URL")]
    from: String,
    /// The new store: a postgres:// URL (its tables are created), or a home folder whose
    /// embedded store is new.
    #[arg(long, value_name = "URL_OR_HOME")]
    to: String,
}

#[derive(Args, Debug)]
pub struct NodesArgs {
    /// The lease the nodes run with (`serve --lease`): a node whose last heartbeat is older
    /// is shown as gone.
    #[arg(long, value_name = "DURATION", env = "ROSTER_LEASE", default_value = "30s", value_parser = parse_lease)]
    lease: Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The lease this process's claims take: `ROSTER_LEASE`, as `serve` reads it, or the default.
pub fn lease_from_env() -> anyhow::Result<std::time::Duration> {
    match std::env::var("ROSTER_LEASE") {
        Ok(lease) => parse_lease(&lease).map_err(|e| anyhow::anyhow!("ROSTER_LEASE: {e}")),
        Err(_) => Ok(roster_engine::service::LEASE),
    }
}

/// A lease length: `30s`, `2m`, or plain seconds.
pub fn parse_lease(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number.parse().map_err(|_| format!("`{text}` is not a lease length (write it like 30s or 2m)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        _ => return Err(format!("`{text}` is not a lease length: use s or m (30s, 2m)")),
    };
    if secs == 0 {
        return Err("a lease of 0 s would hand every run over at once; use at least 1s".into());
    }
    Ok(Duration::from_secs(secs))
}

pub async fn run(command: Command, cx: &Context) -> anyhow::Result<Outcome> {
    match command {
        Command::Migrate => {
            let StoreLocation::Postgres(_) = cx.home.store_location()? else {
                println!("the store is embedded (sled in {}): it needs no migration", cx.home.store_dir().display());
                return Ok(Outcome::Ok);
            };
            cx.home.open_store_migrated().await?;
            println!("the PostgreSQL store is migrated to this roster's version");
            Ok(Outcome::Ok)
        }
        Command::Copy(args) => copy(args).await,
    }
}

/// A `--from`/`--to` argument: a URL, or a home folder and the store it uses.
fn location_of(arg: &str) -> anyhow::Result<StoreLocation> {
    if arg.contains("://") {
        return Ok(Home::new(".").with_store_url(Some(arg.to_string())).store_location()?);
    }
    Ok(Home::new(arg).store_location()?)
}

async fn copy(args: CopyArgs) -> anyhow::Result<Outcome> {
    let (from, to) = (location_of(&args.from)?, location_of(&args.to)?);
    if from == to {
        anyhow::bail!("--from and --to name the same store");
    }
    if let StoreLocation::Embedded(dir) = &from
        && !dir.exists()
    {
        anyhow::bail!("there is no store in {} to copy (is --from the right home?)", dir.display());
    }
    let source = open_location(&from, false).await?;
    let target = open_location(&to, true).await?;
    let report = copy_store(&source, &target, |kind: ItemKind, copied| {
        if copied > 0 {
            eprint!("\r  {kind}: {copied} copied");
        } else {
            eprint!("\n  {kind}: …");
        }
    })
    .await;
    eprintln!();
    let report = report?;
    println!("copied {} into the new store; both hold the same:", report.source);
    let rows: Vec<Vec<String>> = report
        .source
        .by_kind()
        .into_iter()
        .zip(report.target.by_kind())
        .map(|((kind, source), (_, target))| vec![kind.to_string(), source.to_string(), target.to_string()])
        .collect();
    output::table(&["KIND", "SOURCE", "TARGET"], &rows);
    Ok(Outcome::Ok)
}

pub async fn nodes(args: NodesArgs, cx: &Context) -> anyhow::Result<Outcome> {
    let nodes: Vec<NodeStatus> = match cx.home.open_store().await {
        Ok(store) => node_statuses(&store, args.lease, None).await?,
        Err(e) if remote::is_locked(&e) => Remote::find(cx)?.get("/v1/nodes", remote::NO_QUERY).await?,
        Err(e) => return Err(e.into()),
    };
    if args.json {
        output::json(&nodes)?;
        return Ok(Outcome::Ok);
    }
    if nodes.is_empty() {
        println!("no node has run `roster serve` on this store yet");
        return Ok(Outcome::Ok);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                if n.alive { "alive".into() } else { "gone".into() },
                n.last_heartbeat.to_string(),
                n.runs_held.to_string(),
            ]
        })
        .collect();
    output::table(&["NODE", "STATE", "LAST HEARTBEAT", "RUNS HELD"], &rows);
    Ok(Outcome::Ok)
}
