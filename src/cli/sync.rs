//! `roster sync FILE [--test]`, `roster sync sessions`, `roster sync show`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use roster_engine::model::{SyncCounts, SyncSession};
use roster_engine::sync::{self, Integration, SyncObserver};

use super::{Context, Outcome, output, runs, workflows};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SyncArgs {
    /// An integration file (or the name of one in HOME/integrations).
    file: Option<String>,
    /// Fetch and show what would be created and updated; write nothing.
    #[arg(long)]
    test: bool,
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Past sync sessions, newest first.
    Sessions {
        #[arg(long)]
        integration: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One session: times, counts, failures and sample payloads.
    Show {
        session_id: String,
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
    match (args.command, args.file) {
        (Some(Command::Sessions { integration, limit, json }), _) => {
            let store = cx.home.open_store()?;
            let sessions = store.sync_sessions(integration.as_deref(), limit)?;
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
            let store = cx.home.open_store()?;
            let id = uuid::Uuid::parse_str(&session_id)
                .map_err(|_| anyhow::anyhow!("`{session_id}` is not a session id"))?;
            let session = store.sync_session(id)?.ok_or_else(|| anyhow::anyhow!("no sync session {session_id}"))?;
            if json {
                return output::json(&session).map(|_| Outcome::Ok);
            }
            print_session(&session, true);
            Ok(Outcome::Ok)
        }
        (None, Some(file)) => {
            let engine = runs::engine(cx)?;
            let path = resolve(cx, &file)?;
            let creds = workflows::known_credentials(Some(engine.store.as_ref()));
            let integration = Integration::load(&path, creds.as_ref())?;
            let credential = engine.credential(&integration.credential)?;
            let mut progress = Progress { terminal: !args.json && std::io::stderr().is_terminal() };
            let session =
                sync::run(engine.store.as_ref(), &integration, &credential, &engine.clock, args.test, &mut progress)
                    .await?;
            if progress.terminal {
                eprintln!();
            }
            if args.json {
                output::json(&session)?;
                for note in &session.notes {
                    eprintln!("warning: sync {}: {note}", integration.name);
                }
            } else {
                print_session(&session, args.test);
            }
            Ok(if session.state == "succeeded" { Outcome::Ok } else { Outcome::Failed })
        }
        (None, None) => anyhow::bail!("name an integration file: `roster sync FILE`, or `roster sync sessions`"),
    }
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
