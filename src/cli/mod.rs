//! Command definitions (clap derive) and dispatch.

// Every `print!`/`println!` (and `eprint!`/`eprintln!`) in the CLI goes through
// `output::write` with the process's secret set scrubbed out of it: no line on stdout or
// stderr can carry a credential, whichever command printed it, and a closed pipe
// (`roster records list | head -1`) silences the rest of the output instead of panicking.
// Defined before the modules so they all see these.
macro_rules! print {
    ($($arg:tt)*) => { $crate::cli::output::write(false, format_args!($($arg)*), false) };
}
macro_rules! println {
    () => { $crate::cli::output::write(false, format_args!(""), true) };
    ($($arg:tt)*) => { $crate::cli::output::write(false, format_args!($($arg)*), true) };
}
macro_rules! eprint {
    ($($arg:tt)*) => { $crate::cli::output::write(true, format_args!($($arg)*), false) };
}
macro_rules! eprintln {
    () => { $crate::cli::output::write(true, format_args!(""), true) };
    ($($arg:tt)*) => { $crate::cli::output::write(true, format_args!($($arg)*), true) };
}

mod batch;
mod credentials;
mod demo;
mod output;
mod presets;
mod records;
mod remote;
mod runs;
mod sandbox;
mod serve;
mod store;
mod sync;
mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use roster_engine::Error;
use roster_engine::clock::Clock;
use roster_engine::home::Home;

/// Workflow automation for people operations and IT.
#[derive(Parser, Debug)]
#[command(name = "roster", version, about, propagate_version = true)]
pub struct Cli {
    /// Home folder (store, master key, presets, workflows).
    #[arg(long, global = true, env = "ROSTER_HOME", default_value = ".roster")]
    home: PathBuf,

    /// The store: a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE) that several
    /// `serve` nodes share. Without it, the URL `init --store` recorded, else the embedded
    /// store in HOME/store.
    #[arg(long = "store", global = true, env = "ROSTER_STORE_URL", hide_env_values = true, value_name = "URL")]
    store: Option<String>,

    /// Pretend it is this time (2027-03-01 or 2027-03-01T09:00:00Z); for tests and demos.
    #[arg(long, global = true, env = "ROSTER_NOW")]
    now: Option<String>,

    /// Extra or overriding preset files (default: HOME/presets).
    #[arg(long, global = true)]
    presets: Option<PathBuf>,

    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the home folder: store, master key, API token.
    Init,
    /// Named credentials (secrets are read from stdin or an environment variable).
    #[command(subcommand)]
    Credentials(credentials::Command),
    /// People in the store.
    #[command(subcommand)]
    Records(records::Command),
    /// Check workflow files; exit 1 listing every problem.
    Validate(workflows::ValidateArgs),
    /// The workflows there are, what starts each and when it fires next.
    #[command(subcommand)]
    Workflows(workflows::Command),
    /// Run a workflow for one person.
    Run(runs::RunArgs),
    /// Look at and settle runs.
    #[command(subcommand)]
    Runs(runs::Command),
    /// Draw a workflow's block graph.
    Graph(workflows::GraphArgs),
    /// Built-in and custom API presets.
    #[command(subcommand)]
    Presets(presets::Command),
    /// Pull people from a source system now (see also `sync sessions`, `sync show`).
    Sync(sync::SyncArgs),
    /// See the whole product at work against the sandbox, in a temporary home.
    Demo(demo::DemoArgs),
    /// Run schedules, event triggers, workers and the HTTP API until stopped.
    Serve(serve::ServeArgs),
    /// The store itself: migrate a PostgreSQL schema, copy a store to another.
    #[command(subcommand)]
    Store(store::Command),
    /// The `serve` nodes sharing this store: last heartbeat and the runs each holds.
    Nodes(store::NodesArgs),
    /// Start the fake vendor APIs (Brex, Expensify, Sage People) on loopback.
    Sandbox(sandbox::SandboxArgs),
}

/// What every command gets: where the home is, what time it is, where presets are.
pub struct Context {
    pub home: Home,
    pub clock: Clock,
    pub presets_dir: Option<PathBuf>,
}

impl Context {
    pub fn presets(&self) -> Result<roster_blocks::preset::PresetCatalog, Error> {
        let dir = self.presets_dir.clone().unwrap_or_else(|| self.home.presets_dir());
        roster_engine::presets::with_folder(Some(&dir))
    }
}

/// How a command ended, mapped to the exit code contract.
pub enum Outcome {
    /// Exit 0.
    Ok,
    /// Exit 1: a run or validation failed (already reported).
    Failed,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    let clock = match cli.now.as_deref() {
        Some(text) => match Clock::parse(text) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: --now / ROSTER_NOW: {e}");
                return ExitCode::from(2);
            }
        },
        None => Clock::system(),
    };
    let home = Home::new(cli.home.clone()).with_store_url(cli.store.clone());
    let cx = Context { home, clock, presets_dir: cli.presets.clone() };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let outcome = runtime.block_on(dispatch(cli.command, &cx));
    if output::write_failed() {
        return ExitCode::from(2);
    }
    match outcome {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            let code = match e.downcast_ref::<Error>() {
                Some(Error::Invalid { .. }) => 1,
                _ => 2,
            };
            ExitCode::from(code)
        }
    }
}

async fn dispatch(command: Command, cx: &Context) -> anyhow::Result<Outcome> {
    match command {
        Command::Init => {
            let report = cx.home.init().await?;
            println!("Roster home ready in {}", cx.home.dir.display());
            if let roster_engine::home::StoreLocation::Postgres(_) = cx.home.store_location()? {
                println!("  the store is PostgreSQL (migrated); every command of this home uses it");
            }
            if report.created_key {
                println!(
                    "  created the master key {}/master.key (mode 0600): back it up; credentials cannot be read without it",
                    cx.home.dir.display()
                );
            }
            if report.created_token {
                println!("  created the API token {}/api.token (mode 0600) for `roster serve`", cx.home.dir.display());
            }
            println!(
                "Next: `roster credentials add NAME --kind bearer --base-url URL` and `roster records import FILE`."
            );
            Ok(Outcome::Ok)
        }
        Command::Credentials(c) => credentials::run(c, cx).await,
        Command::Records(c) => records::run(c, cx).await,
        Command::Validate(a) => workflows::validate(a, cx).await,
        Command::Workflows(c) => workflows::run(c, cx).await,
        Command::Run(a) => runs::run_one(a, cx).await,
        Command::Runs(c) => runs::run(c, cx).await,
        Command::Graph(a) => workflows::graph(a, cx).await,
        Command::Presets(c) => presets::run(c, cx).await,
        Command::Sync(a) => sync::run(a, cx).await,
        Command::Serve(a) => serve::run(a, cx).await,
        Command::Demo(a) => demo::run(a, cx).await,
        Command::Sandbox(a) => sandbox::run(a, cx).await,
        Command::Store(c) => store::run(c, cx).await,
        Command::Nodes(a) => store::nodes(a, cx).await,
    }
}

fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| ScrubbedStderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Log lines go to stderr scrubbed of every secret, whatever a field held (a vendor's
/// answer, an error). The formatter hands over one whole line per write.
struct ScrubbedStderr;

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(roster_blocks::redact::process().scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// An error and its causes, each cause once: a cause whose text the message already holds
/// (a store error carries its own) is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
