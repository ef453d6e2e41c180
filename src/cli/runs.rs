//! `roster run` and `roster runs list|show|resume|cancel`.

use std::time::Instant;

use clap::{Args, Subcommand};
use roster_api::answers;
use roster_api::wire::{
    CancelAnswer, DryRunAnswer, DryRunRequest, PruneAnswer, PruneRequest, Refused, RunDetail, RunQuery, RunSummary,
    StartAnswer, StartRun,
};
use roster_engine::model::{JournalEntry, Run, RunState, RunTrigger};
use roster_engine::records;
use roster_engine::run::{DryStep, Engine, RunObserver};
use roster_engine::store::{RunFilter, Store};
use roster_engine::workflow::Workflow;

use super::remote::{self, Remote};
use super::{Context, Outcome, output, workflows};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Workflow file, or the name of one in HOME/workflows.
    workflow: String,
    /// The person: their key value (email by default) or record id.
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    user: Option<String>,
    /// Run for every record the workflow's rules accept, one run per person.
    #[arg(long)]
    all: bool,
    /// With --all: runs at once (at least 1; default 8).
    #[arg(long, value_parser = at_least_one)]
    concurrency: Option<usize>,
    /// With --user: the record field it matches (default: email).
    #[arg(long)]
    key: Option<String>,
    /// Print the requests it would send; send nothing, write nothing (with --all: for every
    /// person the rules accept).
    #[arg(long)]
    dry_run: bool,
    /// One JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

/// A count that must be 1 or more (`--concurrency 0` would run nothing, forever).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// Runs at once in a batch when `--concurrency` is not given.
const DEFAULT_CONCURRENCY: usize = 8;

impl RunArgs {
    fn key(&self) -> &str {
        self.key.as_deref().unwrap_or("email")
    }

    /// A flag the chosen mode would silently ignore is refused instead (exit 2).
    fn refuse_ignored_flags(&self) -> anyhow::Result<()> {
        if self.concurrency.is_some() && !self.all {
            anyhow::bail!("--concurrency only applies to --all (a run for one --user is a single run)");
        }
        if self.concurrency.is_some() && self.dry_run {
            anyhow::bail!("--concurrency cannot be used with --dry-run: a dry run starts no runs");
        }
        if self.key.is_some() && self.user.is_none() {
            anyhow::bail!("--key only applies to --user (--all selects people by the workflow's rules)");
        }
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs, newest first.
    List {
        /// Only runs of this workflow (its name).
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs for this person (key value or record id).
        #[arg(long)]
        user: Option<String>,
        /// With --user: the record field it matches.
        #[arg(long, default_value = "email", requires = "user")]
        key: String,
        /// Show at most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the runs as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One run with its journal.
    Show {
        /// The run's id (from `roster runs list`).
        run_id: String,
        /// Print the run and its journal as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Carry a run on: send a `needs_attention` run's pending request again, or end a
    /// waiting run's wait now.
    Resume {
        /// The run's id (from `roster runs list`).
        run_id: String,
    },
    /// Stop a run that has not finished, keeping its journal.
    Cancel {
        /// The run's id (from `roster runs list`).
        run_id: String,
    },
    /// Run a failed run again from its failed step, with the record as it is now.
    Retry {
        /// The run's id (from `roster runs list`).
        run_id: String,
    },
    /// Delete finished runs (and their journals) that finished longer ago than an age.
    /// Unfinished runs are never pruned, and nothing a trigger fired fires again.
    Prune {
        /// How old a finished run must be to go: `90d`, `12w`, `36h`.
        #[arg(long, value_name = "AGE")]
        older_than: String,
        /// Print what was pruned as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Prints a line per finished step as a run goes.
struct Printer {
    enabled: bool,
}

impl RunObserver for Printer {
    fn step(&mut self, e: &JournalEntry) {
        if self.enabled {
            println!("  {}", step_line(e));
        }
    }
}

fn step_line(e: &JournalEntry) -> String {
    let mark = if e.error.is_some() { "✗" } else { "✓" };
    let item = e.item.map(|i| format!("[{i}]")).unwrap_or_default();
    let attempt = if e.attempt > 1 { format!(" (attempt {})", e.attempt) } else { String::new() };
    let mut line = format!("{mark} {}{item}{attempt}", e.block);
    if let Some(r) = &e.request {
        line.push_str(&format!("  {}", r.line()));
    }
    if let Some(s) = e.status {
        line.push_str(&format!("  → {s}"));
    }
    if let Some(ms) = e.duration_ms {
        line.push_str(&format!("  {ms} ms"));
    }
    if let Some(b) = &e.branch {
        line.push_str(&format!("  → {b}"));
    }
    if let Some(until) = &e.wake_at {
        line.push_str(&format!("  waits until {until}"));
    }
    if !e.changes.is_empty() {
        let fields: Vec<String> =
            e.changes.iter().map(|(k, c)| format!("{k}={}", output::cell(Some(&c.after), 40))).collect();
        line.push_str(&format!("  set {}", fields.join(", ")));
    }
    if let Some(err) = &e.error {
        line.push_str(&format!("\n      {err}"));
    }
    line
}

pub async fn engine(cx: &Context) -> anyhow::Result<Engine> {
    let store = cx.home.open_store().await?;
    let vault = cx.home.vault().ok();
    Ok(Engine::new(store, vault, cx.clock))
}

pub async fn run_one(args: RunArgs, cx: &Context) -> anyhow::Result<Outcome> {
    args.refuse_ignored_flags()?;
    let engine = match engine(cx).await {
        Ok(e) => e,
        Err(e) if e.downcast_ref::<roster_engine::Error>().is_some_and(remote::is_locked) => {
            return run_remote(args, cx).await;
        }
        Err(e) => return Err(e),
    };
    let wf = workflows::load(cx, &args.workflow, Some(&engine.store)).await?;
    if args.all && args.dry_run {
        return super::batch::dry_run_all(engine, wf, args.json, cx).await;
    }
    if args.all {
        let concurrency = args.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        return super::batch::run_all(engine, wf, concurrency, args.json, cx).await;
    }
    let user = args.user.clone().unwrap_or_default();
    let record = records::find(&engine.store, args.key(), &user).await?;
    if args.dry_run {
        return print_dry_run(&answers::dry_run(&engine, &wf, &record)?, args.json);
    }
    let started = Instant::now();
    if let Some(mut leftover) = leftovers(&engine.store, &wf, &record).await? {
        let now = jiff::Timestamp::now();
        if leftover.state == RunState::Waiting && !leftover.wait_is_over(now) {
            // Its timer carries it on; a second run would do again what it already did.
            if args.json {
                output::json(&run_json(&engine.store, &leftover).await?)?;
            } else {
                println!(
                    "run {} of {} for {} is already under way and waits until {}; a second is not started",
                    leftover.id,
                    leftover.workflow,
                    leftover.record_label,
                    leftover.wakes_at().unwrap_or("?")
                );
                print_waiting(&leftover);
            }
            return Ok(Outcome::Ok);
        }
        // A waiting run's lease is history: it was let go with the wait.
        if leftover.state != RunState::Waiting
            && let Some(lease) = leftover.lease.as_ref().filter(|l| l.is_live(now))
        {
            // On a shared store another process is on it: a second run would repeat its work.
            anyhow::bail!(
                "run {} of {} for {} is being run by {} right now; follow it with `roster runs show {}`",
                leftover.id,
                leftover.workflow,
                leftover.record_label,
                lease.owner,
                leftover.id
            );
        }
        if !args.json {
            match leftover.wakes_at() {
                Some(until) => println!(
                    "run {} of {} for {} waited until {until}; it goes on now (instead of starting a second)",
                    leftover.id, leftover.workflow, leftover.record_label
                ),
                None => println!(
                    "resuming run {} of {} for {}, which an earlier process left {} (instead of starting a second)",
                    leftover.id,
                    leftover.workflow,
                    leftover.record_label,
                    leftover.state.as_str()
                ),
            }
        }
        let version = workflow_of(cx, &engine.store, &leftover).await?;
        if leftover.state == RunState::Waiting {
            // Its timer is due and no `serve` has carried it on: this process does.
            leftover = engine.wake_now(&version, leftover).await?;
        }
        return follow_run(&engine, &version, leftover, args.json, started).await;
    }
    if let Some(why) = engine.rules_refuse(&wf, &record)? {
        return print_refused(&answers::refused(&wf, &record, &why), args.json);
    }
    // Claimed by this process from the start, so no serve node sharing the store takes it
    // while it runs here.
    let (owner, lease) = (roster_engine::service::node_id(), super::store::lease_from_env()?);
    let run = engine.create_run_held(&wf, &record, RunTrigger::Manual, &owner, lease).await?;
    let holding = roster_engine::service::hold_leases(engine.store.clone(), owner, lease);
    if !args.json {
        println!("run {} of {} for {}", run.id, wf.name, record.label());
    }
    let outcome = follow_run(&engine, &wf, run, args.json, started).await;
    holding.abort();
    outcome
}

/// Drives a run in this process, a line per step, then how it ended.
async fn follow_run(engine: &Engine, wf: &Workflow, run: Run, json: bool, started: Instant) -> anyhow::Result<Outcome> {
    let mut printer = Printer { enabled: !json };
    let run = engine.drive(wf, run, &mut printer).await?;
    if json {
        output::json(&run_json(&engine.store, &run).await?)?;
    } else {
        print_finished(run.state.as_str(), run.error.as_deref(), started);
        print_waiting(&run);
    }
    Ok(outcome_of(run.state))
}

/// A run that ended well, or that waits by design, is a success; the rest is not.
fn outcome_of(state: RunState) -> Outcome {
    if matches!(state, RunState::Succeeded | RunState::Waiting) { Outcome::Ok } else { Outcome::Failed }
}

/// For a waiting run: until when, and what carries it on.
fn print_waiting(run: &Run) {
    if let Some(until) = run.wakes_at() {
        println!(
            "  waits until {until}: `roster serve` (or `roster run` for this person) carries it on then; \
             `roster runs resume {}` goes on now, `roster runs cancel {}` ends it",
            run.id, run.id
        );
    }
}

/// The last line of `roster run`: how the run ended and how long it took.
fn print_finished(state: &str, error: Option<&str>, started: Instant) {
    let took = started.elapsed().as_millis();
    match error {
        Some(e) => println!("{state} in {took} ms: {e}"),
        None => println!("{state} in {took} ms"),
    }
}

/// A refusal by the begin rules (exit 1).
fn print_refused(answer: &Refused, json: bool) -> anyhow::Result<Outcome> {
    if json {
        output::json(answer)?;
    } else {
        eprintln!("refused: {}", answer.error);
    }
    Ok(Outcome::Failed)
}

/// A one-person dry run's answer (see `answers::dry_run`), from the store or from serve.
fn print_dry_run(answer: &DryRunAnswer, json: bool) -> anyhow::Result<Outcome> {
    let preview = match answer {
        DryRunAnswer::Refused(refused) => return print_refused(refused, json),
        DryRunAnswer::Preview(preview) => preview,
    };
    if json {
        output::json(preview)?;
    } else {
        println!("dry run of {} for {} (nothing is sent or written)", preview.workflow, preview.record);
        print_dry_steps(&preview.steps)?;
    }
    // A step that would fail makes the preview a failure, as the run would be.
    Ok(if preview.steps.iter().any(|s| s.would_fail) { Outcome::Failed } else { Outcome::Ok })
}

/// The lines of a dry run's preview, one per step that would run.
pub(super) fn print_dry_steps(steps: &[DryStep]) -> anyhow::Result<()> {
    for s in steps {
        let item = s.item.map(|i| format!("[{i}]")).unwrap_or_default();
        let mut line = format!("  {}{item} ({})", s.block, s.kind);
        if let Some(r) = &s.request {
            line.push_str(&format!(
                "  would send {}{}",
                r.line(),
                s.credential.as_ref().map(|c| format!(" via {c}")).unwrap_or_default()
            ));
            for (k, v) in &r.headers {
                line.push_str(&format!("\n      {k}: {v}"));
            }
            if let Some(b) = &r.body {
                line.push_str(&format!("\n      {}", serde_json::to_string(b)?));
            }
        }
        if let Some(b) = &s.branch {
            line.push_str(&format!("  → {b}"));
        }
        if let Some(until) = &s.wait_until {
            line.push_str(&format!("  would wait until {until}"));
        }
        if !s.changes.is_empty() {
            line.push_str(&format!("  would set {}", serde_json::Value::Object(s.changes.clone())));
        }
        if let Some(n) = &s.note {
            line.push_str(&format!("  ({n})"));
        }
        println!("{line}");
    }
    Ok(())
}

/// Runs an earlier process left unfinished (a crash, a kill, a stop) do not hold up this
/// one, whatever vendor they wait on: each is named on stderr with how to settle it. The
/// one of this workflow for this person, if any, is the run asked for: it is returned, to
/// be resumed instead of starting a second that would repeat what the first already did.
async fn leftovers(store: &Store, wf: &Workflow, record: &roster_engine::model::Record) -> anyhow::Result<Option<Run>> {
    let mut same = None;
    for run in store.runs.unfinished_runs().await? {
        if same.is_none() && run.workflow == wf.name && run.record_id == record.id {
            same = Some(run);
            continue;
        }
        // A run another process holds right now was not left behind.
        if run.lease.as_ref().is_some_and(|l| l.is_live(jiff::Timestamp::now())) {
            continue;
        }
        name_leftover(&run);
    }
    Ok(same)
}

/// Names a run an earlier process left unfinished, on stderr, with how to settle it. A
/// waiting run was not left behind (it rests by design until its timer) and is not named.
pub(super) fn name_leftover(run: &Run) {
    if run.state == RunState::Waiting {
        return;
    }
    let id = run.id;
    eprintln!(
        "note: run {id} of {} for {} was left {} by an earlier process; settle it with `roster runs resume {id}` \
         or `roster runs cancel {id}` (a running `roster serve` resumes it too)",
        run.workflow,
        run.record_label,
        run.state.as_str()
    );
}

async fn run_json(store: &Store, run: &Run) -> anyhow::Result<RunDetail> {
    Ok(answers::run_detail(store, run).await?)
}

/// `roster run` while `roster serve` holds the store: start the run there and follow it.
async fn run_remote(args: RunArgs, cx: &Context) -> anyhow::Result<Outcome> {
    if args.concurrency.is_some() {
        anyhow::bail!(
            "`roster serve` runs this batch with its own workers: drop --concurrency (see `serve --concurrency`)"
        );
    }
    let remote = Remote::find(cx)?;
    let (name, sent) = remote::sent_file(workflows::resolve(cx, &args.workflow).ok(), &args.workflow)?;
    if args.all && !args.dry_run {
        return super::batch::run_all_remote(&remote, &name, sent, args.json).await;
    }
    let key = args.key().to_string();
    if args.dry_run {
        let path = format!("/v1/workflows/{name}/dry-run");
        if args.all {
            let body = DryRunRequest { user: None, key, all: true, sent };
            return super::batch::print_dry_run_all(&remote.post(&path, &body).await?, args.json);
        }
        let body = DryRunRequest { user: args.user.clone(), key, all: false, sent };
        return print_dry_run(&remote.post(&path, &body).await?, args.json);
    }
    let body = StartRun { user: args.user.clone().unwrap_or_default(), key, sent };
    let started_at = Instant::now();
    let started = match remote.post(&format!("/v1/workflows/{name}/runs"), &body).await? {
        StartAnswer::Refused(refused) => return print_refused(&refused, args.json),
        StartAnswer::Started(started) => started,
    };
    let id = started.run_id.to_string();
    if !args.json {
        println!("run {id} of {} for {}", started.workflow, started.record);
    }
    let detail = remote.follow(&id).await?;
    if args.json {
        output::json(&detail)?;
    } else {
        for entry in &detail.steps {
            println!("  {}", step_line(entry));
        }
        print_finished(detail.state.as_str(), detail.error.as_deref(), started_at);
        if let Some(until) = &detail.wake_at {
            println!("  waits until {until}: serve carries it on then; `roster runs resume {id}` goes on now");
        }
    }
    Ok(outcome_of(detail.state))
}

/// `runs resume|retry` through serve: it settles the run, this prints each new step as
/// the local command does, then the state the run ended in.
async fn settle_remote(cx: &Context, id: &str, action: &str) -> anyhow::Result<Outcome> {
    parse_run_id(id)?;
    let remote = Remote::find(cx)?;
    let seen = remote.run_detail(id).await?.steps.len();
    let _: RunSummary = remote.post(&format!("/v1/runs/{id}/{action}"), &serde_json::json!({})).await?;
    let detail = remote.follow(id).await?;
    for entry in detail.steps.iter().skip(seen) {
        println!("  {}", step_line(entry));
    }
    print_settled(detail.state, detail.error.as_deref())
}

/// The last line of `runs resume|retry`: the state the run ended in (exit 0 on success,
/// or when it waits by design).
fn print_settled(state: RunState, error: Option<&str>) -> anyhow::Result<Outcome> {
    println!("{}{}", state.as_str(), error.map(|e| format!(": {e}")).unwrap_or_default());
    Ok(outcome_of(state))
}

fn print_cancelled(run_id: uuid::Uuid) -> anyhow::Result<Outcome> {
    println!("run {run_id} cancelled");
    Ok(Outcome::Ok)
}

/// `runs show`: a run's detail (see `answers::run_detail`), from the store or from serve.
fn print_run_detail(detail: &RunDetail, json: bool) -> anyhow::Result<Outcome> {
    if json {
        output::json(detail)?;
        return Ok(Outcome::Ok);
    }
    let hash = &detail.workflow_hash;
    println!("run {}", detail.run_id);
    println!("  workflow  {} (version {})", detail.workflow, &hash[..12.min(hash.len())]);
    println!("  record    {} ({})", detail.record, detail.record_id);
    println!("  trigger   {}", detail.trigger);
    if let Some(today) = &detail.today {
        println!("  today     {today}");
    }
    println!("  state     {}", detail.state.as_str());
    println!("  started   {}", detail.created_at);
    if let Some(f) = &detail.finished_at {
        println!("  finished  {f}");
    }
    if let Some(w) = &detail.wake_at {
        println!("  wakes at  {w}");
    }
    if let Some(e) = &detail.error {
        println!("  error     {e}");
    }
    println!("steps:");
    for entry in &detail.steps {
        println!("  {:>3} {}", entry.seq, step_line(entry));
    }
    Ok(Outcome::Ok)
}

async fn find_run(store: &Store, id: &str) -> anyhow::Result<Run> {
    store.runs.run(parse_run_id(id)?).await?.ok_or_else(|| anyhow::anyhow!("no run {id}"))
}

/// A run id as typed, checked before the store or serve is asked.
fn parse_run_id(id: &str) -> anyhow::Result<uuid::Uuid> {
    uuid::Uuid::parse_str(id).map_err(|_| anyhow::anyhow!("`{id}` is not a run id (see `roster runs list`)"))
}

/// The workflow version a run started with, from the store.
async fn workflow_of(cx: &Context, store: &Store, run: &Run) -> anyhow::Result<Workflow> {
    let source = store
        .workflows
        .source(&run.workflow_hash)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the workflow version of run {} is missing from the store", run.id))?;
    let presets = cx.presets()?;
    let compile_cx = roster_blocks::kinds::CompileContext { presets: &presets, credentials: None };
    Ok(Workflow::compile(&source, &format!("{} (version {})", run.workflow, &run.workflow_hash[..12]), &compile_cx)?)
}

fn print_run_list(list: &[RunSummary], json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let error = r.error.clone().map_or(serde_json::Value::Null, serde_json::Value::String);
            vec![
                r.run_id.to_string(),
                r.workflow.clone(),
                r.record.clone(),
                match &r.wake_at {
                    Some(until) => format!("waiting until {until}"),
                    None => r.state.as_str().to_string(),
                },
                r.created_at.clone(),
                output::cell(Some(&error), 60),
            ]
        })
        .collect();
    output::table(&["RUN", "WORKFLOW", "RECORD", "STATE", "STARTED", "ERROR"], &rows);
    Ok(())
}

pub async fn run(command: Command, cx: &Context) -> anyhow::Result<Outcome> {
    match command {
        Command::List { workflow, user, key, limit, json } => {
            let store = match cx.home.open_store().await {
                Ok(s) => s,
                Err(e) if remote::is_locked(&e) => {
                    let remote = Remote::find(cx)?;
                    let query = RunQuery { workflow, trigger: None, user, key, limit: Some(limit) };
                    let list: Vec<RunSummary> = remote.get("/v1/runs", &query).await?;
                    print_run_list(&list, json)?;
                    return Ok(Outcome::Ok);
                }
                Err(e) => return Err(e.into()),
            };
            let record_id = match user {
                Some(u) => Some(records::find(&store, &key, &u).await?.id),
                None => None,
            };
            let runs = store
                .runs
                .runs(&RunFilter { workflow, record_id, state: None, trigger: None, limit: Some(limit) })
                .await?;
            let list: Vec<_> = runs.iter().map(answers::run_summary).collect();
            print_run_list(&list, json)?;
            Ok(Outcome::Ok)
        }
        Command::Show { run_id, json } => {
            let store = match cx.home.open_store().await {
                Ok(s) => s,
                Err(e) if remote::is_locked(&e) => {
                    parse_run_id(&run_id)?;
                    let detail = Remote::find(cx)?.run_detail(&run_id).await?;
                    return print_run_detail(&detail, json);
                }
                Err(e) => return Err(e.into()),
            };
            let run = find_run(&store, &run_id).await?;
            print_run_detail(&run_json(&store, &run).await?, json)
        }
        Command::Resume { run_id } => {
            let engine = match engine(cx).await {
                Ok(e) => e,
                Err(e) if e.downcast_ref::<roster_engine::Error>().is_some_and(remote::is_locked) => {
                    return settle_remote(cx, &run_id, "resume").await;
                }
                Err(e) => return Err(e),
            };
            let run = find_run(&engine.store, &run_id).await?;
            let wf = workflow_of(cx, &engine.store, &run).await?;
            let mut printer = Printer { enabled: true };
            let run = match run.state {
                RunState::NeedsAttention => engine.resume_attention(&wf, run, &mut printer).await?,
                RunState::Waiting => {
                    let run = engine.wake_now(&wf, run).await?;
                    engine.drive(&wf, run, &mut printer).await?
                }
                _ => engine.drive(&wf, run, &mut printer).await?,
            };
            print_waiting(&run);
            print_settled(run.state, run.error.as_deref())
        }
        Command::Retry { run_id } => {
            let engine = match engine(cx).await {
                Ok(e) => e,
                Err(e) if e.downcast_ref::<roster_engine::Error>().is_some_and(remote::is_locked) => {
                    return settle_remote(cx, &run_id, "retry").await;
                }
                Err(e) => return Err(e),
            };
            let run = find_run(&engine.store, &run_id).await?;
            let wf = workflow_of(cx, &engine.store, &run).await?;
            let mut printer = Printer { enabled: true };
            let run = engine.retry(&wf, run, &mut printer).await?;
            print_settled(run.state, run.error.as_deref())
        }
        Command::Prune { older_than, json } => {
            let age = roster_engine::retention::parse_age(&older_than)?;
            let answer = match cx.home.open_store().await {
                Ok(store) => {
                    let pruned = roster_engine::retention::prune(&store, cx.clock.now(), age).await?;
                    PruneAnswer { pruned: pruned.runs, before: roster_engine::clock::rfc3339(pruned.before) }
                }
                Err(e) if remote::is_locked(&e) => {
                    Remote::find(cx)?.post("/v1/runs/prune", &PruneRequest { older_than }).await?
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                output::json(&answer)?;
            } else {
                println!("pruned {} finished run(s) that finished before {}", answer.pruned, answer.before);
            }
            Ok(Outcome::Ok)
        }
        Command::Cancel { run_id } => {
            let engine = match engine(cx).await {
                Ok(e) => e,
                Err(e) if e.downcast_ref::<roster_engine::Error>().is_some_and(remote::is_locked) => {
                    parse_run_id(&run_id)?;
                    let remote = Remote::find(cx)?;
                    let answer: CancelAnswer =
                        remote.post(&format!("/v1/runs/{run_id}/cancel"), &serde_json::json!({})).await?;
                    if answer.cancelling {
                        // Running in serve: it ends, cancelled, before its next step.
                        let settled = remote.follow(&run_id).await?;
                        if settled.state != RunState::Cancelled {
                            anyhow::bail!("run {run_id} ended {} before it could be cancelled", settled.state.as_str());
                        }
                        return print_cancelled(settled.run_id);
                    }
                    return print_cancelled(answer.run.run_id);
                }
                Err(e) => return Err(e),
            };
            let run = find_run(&engine.store, &run_id).await?;
            let run = engine.cancel(run).await?;
            print_cancelled(run.id)
        }
    }
}
