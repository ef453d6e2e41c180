//! `roster validate`, `roster graph` and `roster workflows list`, and finding a workflow
//! file by path or name.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Args;
use roster_api::wire::{CredentialView, WorkflowView};
use roster_blocks::kinds::CompileContext;
use roster_engine::Error;
use roster_engine::store::Store;
use roster_engine::sync::Integration;
use roster_engine::workflow::Workflow;

use super::{Context, Outcome};

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Workflow or integration files (or names of workflow files in HOME/workflows).
    #[arg(required = true)]
    files: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// The workflows in HOME/workflows (or those `roster serve` loaded, while it runs):
    /// what starts each and when a schedule fires next.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: Command, cx: &Context) -> anyhow::Result<Outcome> {
    let Command::List { json } = command;
    let list = match cx.home.open_store().await {
        Ok(store) => {
            let presets = cx.presets()?;
            let creds = known_credentials(Some(&store)).await;
            let compile_cx = CompileContext { presets: &presets, credentials: creds.as_ref() };
            let now = cx.clock.now();
            let mut list = Vec::new();
            let mut failed = false;
            for path in roster_engine::service::json_files(&cx.home.workflows_dir())? {
                match Workflow::load(&path, &compile_cx) {
                    Ok(wf) => list.push(roster_api::answers::workflow(&wf, now)),
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            if failed {
                print_list(&list, json)?;
                return Ok(Outcome::Failed);
            }
            list
        }
        Err(e) if super::remote::is_locked(&e) => {
            super::remote::Remote::find(cx)?.get("/v1/workflows", super::remote::NO_QUERY).await?
        }
        Err(e) => return Err(e.into()),
    };
    print_list(&list, json)?;
    Ok(Outcome::Ok)
}

/// Workflows as [`roster_api::answers::workflow`] describes them: a table or JSON.
fn print_list(list: &[WorkflowView], json: bool) -> anyhow::Result<()> {
    if json {
        return super::output::json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| vec![w.name.clone(), w.trigger.clone(), w.next_fire_at.clone().unwrap_or_default(), w.file.clone()])
        .collect();
    super::output::table(&["NAME", "TRIGGER", "NEXT FIRE", "FILE"], &rows);
    Ok(())
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// A workflow file, or the name of one in HOME/workflows.
    workflow: String,
    /// `dot` for graphviz (`roster graph F | dot -Tsvg > f.svg`), `mermaid` for Markdown.
    #[arg(long, value_enum, default_value = "dot")]
    format: GraphFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

/// A path as given, or `HOME/workflows/NAME.json`.
pub fn resolve(cx: &Context, arg: &str) -> anyhow::Result<PathBuf> {
    let direct = PathBuf::from(arg);
    if direct.exists() {
        return Ok(direct);
    }
    let named = cx.home.workflows_dir().join(format!("{arg}.json"));
    if named.exists() {
        return Ok(named);
    }
    anyhow::bail!("no workflow file `{arg}` (nor {})", named.display())
}

/// Credential names from a running `roster serve`'s API.
async fn remote_credentials(cx: &Context) -> anyhow::Result<BTreeSet<String>> {
    let list: Vec<CredentialView> =
        super::remote::Remote::find(cx)?.get("/v1/credentials", super::remote::NO_QUERY).await?;
    Ok(list.into_iter().map(|c| c.name).collect())
}

/// Credential names from the store, when a home is there to ask.
pub async fn known_credentials(store: Option<&Store>) -> Option<BTreeSet<String>> {
    let store = store?;
    store.credentials.credentials().await.ok().map(|list| list.into_iter().map(|c| c.name).collect())
}

/// Loads one workflow file against the presets and (when known) the credentials.
pub async fn load(cx: &Context, arg: &str, store: Option<&Store>) -> anyhow::Result<Workflow> {
    let path = resolve(cx, arg)?;
    let presets = cx.presets()?;
    let creds = known_credentials(store).await;
    let compile_cx = CompileContext { presets: &presets, credentials: creds.as_ref() };
    Ok(Workflow::load(&path, &compile_cx)?)
}

pub async fn validate(args: ValidateArgs, cx: &Context) -> anyhow::Result<Outcome> {
    let creds = match cx.home.open_store().await {
        Ok(s) => known_credentials(Some(&s)).await,
        Err(Error::NoHome { dir }) => {
            eprintln!("note: credentials not checked: no Roster home at {}", dir.display());
            None
        }
        // `serve` holds the store: it knows the credential names.
        Err(Error::StoreLocked { .. }) => match remote_credentials(cx).await {
            Ok(names) => Some(names),
            Err(e) => {
                eprintln!("note: credentials not checked: `roster serve` holds the store and did not say ({e:#})");
                None
            }
        },
        Err(e) => return Err(e.into()),
    };
    let presets = cx.presets()?;
    let compile_cx = CompileContext { presets: &presets, credentials: creds.as_ref() };
    let mut failed = 0;
    for arg in &args.files {
        let path = match resolve(cx, arg) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
                continue;
            }
        };
        let checked = if is_integration(&path) {
            Integration::load(&path, creds.as_ref())
                .map(|i| format!("integration {}, connector {}", i.name, i.connector))
        } else {
            Workflow::load(&path, &compile_cx).map(|wf| format!("{}, {} blocks", wf.name, wf.blocks.len()))
        };
        match checked {
            Ok(summary) => println!("{}: ok ({summary})", path.display()),
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { Outcome::Ok } else { Outcome::Failed })
}

/// An integration file rather than a workflow: it sits in an `integrations` folder, or
/// names a `connector` and has no `blocks`.
fn is_integration(path: &std::path::Path) -> bool {
    if path.parent().and_then(|p| p.file_name()).is_some_and(|n| n == "integrations") {
        return true;
    }
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .is_some_and(|v| v.get("connector").is_some() && v.get("blocks").is_none())
}

pub async fn graph(args: GraphArgs, cx: &Context) -> anyhow::Result<Outcome> {
    let wf = load(cx, &args.workflow, None).await?;
    match args.format {
        GraphFormat::Dot => print!("{}", wf.to_dot()),
        GraphFormat::Mermaid => print!("{}", wf.to_mermaid()),
    }
    Ok(Outcome::Ok)
}
