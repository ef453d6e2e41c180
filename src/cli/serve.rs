//! `roster serve`: the scheduler, the event dispatcher, run workers and the HTTP API in
//! one long-running process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use roster_engine::service::{Catalog, Service};

use super::{Context, Outcome, workflows};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Workflow files to load (default HOME/workflows).
    #[arg(long)]
    workflows: Option<PathBuf>,
    /// Integration files to load (default HOME/integrations).
    #[arg(long)]
    integrations: Option<PathBuf>,
    /// Where the HTTP API listens.
    #[arg(long, default_value = "127.0.0.1:7420")]
    listen: String,
    /// Runs executed at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Delete finished runs older than this (`90d`, `12w`, `36h`), checked at start and
    /// every hour. Without it every run is kept.
    #[arg(long, value_name = "AGE", env = "ROSTER_RETENTION", value_parser = parse_retention)]
    retention: Option<jiff::SignedDuration>,
    /// How long a claimed run stays this node's without a heartbeat (renewed every third of
    /// it). When a node dies, other nodes on the same PostgreSQL store take its runs over
    /// this long after its last heartbeat.
    #[arg(long, value_name = "DURATION", env = "ROSTER_LEASE", default_value = "30s", value_parser = super::store::parse_lease)]
    lease: Duration,
    /// How often schedules and events are checked, in milliseconds.
    #[arg(long, default_value_t = 1000, hide = true)]
    tick_ms: u64,
}

/// What `serve` writes into the home so the CLI can find it while it holds the store.
pub const SERVE_FILE: &str = "serve.json";

fn parse_retention(text: &str) -> Result<jiff::SignedDuration, String> {
    roster_engine::retention::parse_age(text).map_err(|e| e.to_string())
}

/// How often a serve with `--retention` prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub async fn run(args: ServeArgs, cx: &Context) -> anyhow::Result<Outcome> {
    // Nodes starting together migrate one at a time (an advisory lock); the rest find
    // nothing to do.
    let store = cx.home.open_store_migrated().await?;
    // Held until serve exits: the home's other commands go through its API meanwhile.
    let _serving = cx.home.hold_for_serve()?;
    let engine = Arc::new(roster_engine::run::Engine::new(store, cx.home.vault().ok(), cx.clock));
    let workflows_dir = args.workflows.clone().unwrap_or_else(|| cx.home.workflows_dir());
    let integrations_dir = args.integrations.clone().unwrap_or_else(|| cx.home.integrations_dir());
    let presets = cx.presets()?;
    let files = Files {
        store: engine.store.clone(),
        presets: presets.clone(),
        workflows: workflows_dir.clone(),
        integrations: integrations_dir.clone(),
    };
    let catalog = match files.load().await {
        Ok(catalog) => catalog,
        Err(e) => {
            eprintln!("refusing to start; fix these first:\n{e}");
            return Ok(Outcome::Failed);
        }
    };
    println!(
        "loaded {} workflow(s) from {} and {} integration(s) from {}",
        catalog.workflows.len(),
        workflows_dir.display(),
        catalog.integrations.len(),
        integrations_dir.display()
    );
    print_plan(&catalog, cx.clock.now());
    let service = Service::new(engine.clone(), catalog, presets);
    service.set_lease(args.lease);
    let indexed = service.prepare_indexes().await?;
    if !indexed.is_empty() {
        println!("indexed {} for rule lookups", indexed.join(", "));
    }
    let resumed = service.recover().await?;
    if resumed > 0 {
        println!("resuming {resumed} run(s) a previous process left unfinished");
    }

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let token =
        cx.home.api_token().map_err(|e| anyhow::anyhow!("cannot read the API token ({e}); run `roster init`"))?;
    // Written whole, then renamed into place: a command never reads half of it.
    let partial = cx.home.dir.join(format!("{SERVE_FILE}.partial"));
    std::fs::write(
        &partial,
        serde_json::to_string(&serde_json::json!({"url": format!("http://{addr}"), "pid": std::process::id()}))?,
    )?;
    std::fs::rename(&partial, cx.home.dir.join(SERVE_FILE))?;
    println!("HTTP API on http://{addr} (bearer token in {}/api.token)", cx.home.dir.display());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let router = roster_api::router(roster_api::ApiState::new(service.clone(), token));
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await
    });
    let workers = {
        let service = service.clone();
        let n = args.concurrency;
        tokio::spawn(async move { service.work(n, false).await })
    };
    let pruner = args.retention.map(|age| {
        let (engine, mut stop) = (engine.clone(), stop_rx.clone());
        println!("pruning finished runs older than {age:#} every hour");
        tokio::spawn(async move {
            loop {
                match roster_engine::retention::prune(&engine.store, engine.clock.now(), age).await {
                    Ok(pruned) if pruned.runs == 0 => {}
                    Ok(pruned) => {
                        tracing::info!("retention: pruned {} finished run(s) older than {age:#}", pruned.runs)
                    }
                    Err(e) => tracing::warn!("retention: pruning failed: {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(PRUNE_EVERY) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    });
    let ticker = {
        let service = service.clone();
        let mut stop = stop_rx.clone();
        let tick = Duration::from_millis(args.tick_ms);
        tokio::spawn(async move {
            loop {
                if let Err(e) = service.fire_schedules().await {
                    tracing::error!("scheduler: {e}");
                }
                if let Err(e) = service.dispatch_events().await {
                    tracing::error!("event dispatcher: {e}");
                }
                // A stop does not wait for a long sync: the session is marked interrupted
                // once its sync lease is gone (at the next start of a sled store), and
                // every record it wrote so far stays written.
                tokio::select! {
                    synced = service.sync_due() => if let Err(e) = synced {
                        tracing::error!("sync: {e}");
                    },
                    _ = stop.wait_for(|s| *s) => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    };

    wait_for_shutdown(&service, &files).await;
    println!("shutting down: no new steps start; queued runs stay queued for the next start");
    engine.stop();
    service.wake();
    let _ = stop_tx.send(true);
    let _ = ticker.await;
    if let Some(pruner) = pruner {
        let _ = pruner.await;
    }
    if let Ok(Err(e)) = workers.await {
        tracing::error!("workers: {e}");
    }
    // Open requests get a moment to finish; a long one (a sync through the API) does not
    // hold the stop.
    if tokio::time::timeout(Duration::from_secs(2), http).await.is_err() {
        tracing::warn!("stopped with HTTP requests still open");
    }
    let _ = std::fs::remove_file(cx.home.dir.join(SERVE_FILE));
    println!("stopped");
    Ok(Outcome::Ok)
}

/// What serve will do: each workflow's trigger and next fire time, each integration's
/// sync schedule and next sync.
fn print_plan(catalog: &Catalog, now: jiff::Timestamp) {
    for wf in catalog.workflows.values() {
        let w = roster_api::answers::workflow(wf, now);
        let next = w.next_fire_at.map(|t| format!(", next at {t}")).unwrap_or_default();
        println!("  workflow {}: {}{next}", wf.name, w.trigger);
    }
    for integration in catalog.integrations.values() {
        let i = roster_api::answers::integration(integration, now);
        let next = i.next_sync_at.map(|t| format!(", next at {t}")).unwrap_or_default();
        println!("  integration {}: syncs on schedule {}{next}", integration.name, i.schedule);
    }
}

/// The workflow and integration files serve runs, checked against the stored credentials.
struct Files {
    store: roster_engine::store::Store,
    presets: roster_blocks::preset::PresetCatalog,
    workflows: std::path::PathBuf,
    integrations: std::path::PathBuf,
}

impl Files {
    async fn load(&self) -> roster_engine::Result<Catalog> {
        let creds = workflows::known_credentials(Some(&self.store)).await;
        Catalog::load(&self.workflows, &self.integrations, &self.presets, creds.as_ref())
    }
}

/// Waits for SIGTERM or Ctrl-C; on SIGHUP reloads the files, keeping the old ones if the
/// new ones do not validate.
async fn wait_for_shutdown(service: &Arc<Service>, files: &Files) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => match files.load().await {
                Ok(catalog) => {
                    println!("reloaded {} workflow(s) and {} integration(s)", catalog.workflows.len(), catalog.integrations.len());
                    service.replace_catalog(catalog);
                    if let Err(e) = service.prepare_indexes().await {
                        println!("indexing the new rules' fields failed: {e}");
                    }
                }
                Err(e) => println!("reload refused, keeping the files already loaded:\n{e}"),
            },
        }
    }
}
