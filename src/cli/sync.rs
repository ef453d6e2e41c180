//! `roster sync FILE [--test]`, `roster sync sessions`, `roster sync show`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use roster_engine::model::{SyncCounts, SyncSession, SyncState};
use roster_engine::service::{Catalog, Service};
use roster_engine::sync::{Integration, SyncObserver};

use super::remote::{self, Remote};
use super::{Context, Outcome, output, workflows};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SyncArgs {
    /// An integration file (or the name of one in HOME/integrations).
    file: Option<String>,
    /// Fetch and show what would be created and updated; write nothing.
    #[arg(long)]
    test: bool,
    /// Print the session as JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Past sync sessions, newest first.
    Sessions {
        /// Only sessions of this integration (its name).
        #[arg(long)]
        integration: Option<String>,
        /// Show at most this many sessions.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the sessions as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One session: times, counts, failures and sample payloads.
    Show {
        /// The session's id (from `roster sync sessions`).
        session_id: String,
        /// Print the session as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A one-line progress display on a terminal; nothing otherwise (the summary follows).
struct Progress {
    terminal: bool,
}

impl SyncObserver for Progress {
    fn page(&mut self, c: &SyncCounts) {
        if self.terminal {
            eprint!(
                "\r  {} fetched, {} created, {} updated, {} unchanged, {} failed   ",
                c.fetched, c.created, c.updated, c.unchanged, c.failed
            );
        }
    }
}

fn resolve(cx: &Context, arg: &str) -> anyhow::Result<PathBuf> {
    let direct = PathBuf::from(arg);
    if direct.exists() {
        return Ok(direct);
    }
    let named = cx.home.integrations_dir().join(format!("{arg}.json"));
    if named.exists() {
        return Ok(named);
    }
    anyhow::bail!("no integration file `{arg}` (nor {})", named.display())
}

pub async fn run(args: SyncArgs, cx: &Context) -> anyhow::Result<Outcome> {
    // While `roster serve` holds the store, the same commands go through its API.
    let store = match cx.home.open_store().await {
        Ok(store) => Ok(store),
        Err(e) if remote::is_locked(&e) => Err(Remote::find(cx)?),
        Err(e) => return Err(e.into()),
    };
    match (args.command, args.file) {
        (Some(Command::Sessions { integration, limit, json }), _) => {
            let sessions: Vec<SyncSession> = match &store {
                Ok(store) => store.syncs.sessions(integration.as_deref(), limit).await?,
                Err(remote) => {
                    let query = roster_api::wire::SessionQuery { integration, limit: Some(limit) };
                    remote.get("/v1/sync/sessions", &query).await?
                }
            };
            if json {
                return output::json(&sessions).map(|_| Outcome::Ok);
            }
            let rows: Vec<Vec<String>> = sessions
                .iter()
                .map(|s| {
                    vec![
                        s.id.to_string(),
                        s.integration.clone(),
                        format!("{}{}", s.state, if s.test { " (test)" } else { "" }),
                        s.started_at.clone(),
                        counts_line(&s.counts),
                    ]
                })
                .collect();
            output::table(&["SESSION", "INTEGRATION", "STATE", "STARTED", "COUNTS"], &rows);
            Ok(Outcome::Ok)
        }
        (Some(Command::Show { session_id, json }), _) => {
            let id = uuid::Uuid::parse_str(&session_id)
                .map_err(|_| anyhow::anyhow!("`{session_id}` is not a session id"))?;
            let session: SyncSession = match &store {
                Ok(store) => {
                    store.syncs.session(id).await?.ok_or_else(|| anyhow::anyhow!("no sync session {session_id}"))?
                }
                Err(remote) => remote.get(&format!("/v1/sync/sessions/{id}"), remote::NO_QUERY).await?,
            };
            if json {
                return output::json(&session).map(|_| Outcome::Ok);
            }
            print_session(&session, true);
            Ok(Outcome::Ok)
        }
        (None, Some(file)) => {
            let store = match store {
                Ok(store) => store,
                Err(remote) => return sync_remote(&remote, cx, &file, args.test, args.json).await,
            };
            let engine = roster_engine::run::Engine::new(store, cx.home.vault().ok(), cx.clock);
            let path = resolve(cx, &file)?;
            let creds = workflows::known_credentials(Some(&engine.store)).await;
            let integration = Integration::load(&path, creds.as_ref())?;
            // Through a service of its own, so it takes the integration's sync lease as
            // `serve` does: on a shared store, a sync another node runs refuses this one.
            let service = Service::new(Arc::new(engine), Catalog::default(), roster_engine::presets::built_in());
            service.set_lease(super::store::lease_from_env()?);
            let mut progress = Progress { terminal: !args.json && std::io::stderr().is_terminal() };
            let session = service.sync_observed(&integration, args.test, &mut progress).await?;
            if progress.terminal {
                eprintln!();
            }
            print_synced(&session, args.test, args.json)
        }
        (None, None) => anyhow::bail!("name an integration file: `roster sync FILE`, or `roster sync sessions`"),
    }
}

/// `sync FILE` through serve: it syncs (the file sent along, so it need not be loaded).
async fn sync_remote(remote: &Remote, cx: &Context, file: &str, test: bool, json: bool) -> anyhow::Result<Outcome> {
    let (name, sent) = remote::sent_file(resolve(cx, file).ok(), file)?;
    let body = roster_api::wire::SyncRequest { test, sent };
    let session: SyncSession = remote.post(&format!("/v1/integrations/{name}/sync"), &body).await?;
    print_synced(&session, test, json)
}

/// `sync FILE`'s session, from this process or from serve (exit 1 unless it succeeded).
fn print_synced(session: &SyncSession, test: bool, json: bool) -> anyhow::Result<Outcome> {
    if json {
        output::json(session)?;
        for note in &session.notes {
            eprintln!("warning: sync {}: {note}", session.integration);
        }
    } else {
        print_session(session, test);
    }
    Ok(if session.state == SyncState::Succeeded { Outcome::Ok } else { Outcome::Failed })
}

fn counts_line(c: &SyncCounts) -> String {
    format!(
        "{} fetched, {} created, {} updated, {} unchanged, {} filtered out, {} skipped, {} failed, {} missing",
        c.fetched, c.created, c.updated, c.unchanged, c.filtered, c.skipped, c.failed, c.missing
    )
}

fn print_session(s: &SyncSession, details: bool) {
    let verb = if s.test { "test sync" } else { "sync" };
    println!("{verb} {} of {} ({}): {}", s.id, s.integration, s.connector, s.state);
    println!("  {}", counts_line(&s.counts));
    if s.test {
        println!("  nothing was written");
    }
    if let Some(e) = &s.error {
        println!("  error: {e}");
    }
    for note in &s.notes {
        println!("  note: {note}");
    }
    for f in s.failures.iter().take(if details { usize::MAX } else { 20 }) {
        println!("  failed: {}: {}", f.who, f.reason);
    }
    if s.failures.len() > 20 && !details {
        println!("  … {} more (roster sync show {})", s.failures.len() - 20, s.id);
    }
    for skip in s.skips.iter().take(if details { usize::MAX } else { 20 }) {
        println!("  skipped: {}: {}", skip.who, skip.reason);
    }
    if s.skips.len() > 20 && !details {
        println!("  … {} more skipped (roster sync show {})", s.skips.len() - 20, s.id);
    }
    if details {
        for p in &s.preview {
            println!(
                "  would {} {}: {}",
                p["action"].as_str().unwrap_or("?"),
                p["key"].as_str().unwrap_or("?"),
                p["fields"]
            );
        }
        for (i, sample) in s.samples.iter().enumerate() {
            let text = serde_json::to_string(sample).unwrap_or_default();
            println!("  sample payload {}: {}", i + 1, roster_blocks::http::excerpt(&text, 2000));
        }
    }
}
