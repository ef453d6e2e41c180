//! `roster run WORKFLOW --all`: one run per person the rules accept, queued in the store
//! so an interrupted batch resumes instead of starting over.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_api::answers::run_summary;
use roster_api::wire::{BatchPreview, RunQuery, RunSummary, SentFile};
use roster_engine::model::RunState;
use roster_engine::run::Engine;
use roster_engine::service::{BatchStart, Catalog, Service};
use roster_engine::store::RunFilter;
use roster_engine::workflow::Workflow;
use serde_json::json;

use super::remote::Remote;
use super::{Context, Outcome, output};

pub async fn run_all(
    engine: Engine,
    wf: Workflow,
    concurrency: usize,
    json: bool,
    cx: &Context,
) -> anyhow::Result<Outcome> {
    let engine = Arc::new(engine);
    let wf = Arc::new(wf);
    let mut catalog = Catalog::default();
    catalog.workflows.insert(wf.name.clone(), wf.clone());
    let service = Service::new(engine.clone(), catalog, cx.presets()?);
    // Its claims are leases like a serve node's: if this process dies, whoever resumes the
    // batch on a shared store waits this long for them.
    service.set_lease(super::store::lease_from_env()?);
    service.prepare_indexes().await?;
    service.recover().await?;
    let store = engine.store.clone();
    let start = service.queue_batch(&wf).await?;
    // Only this batch's runs: others left unfinished are named, not waited on.
    service.only_runs_of(&start.trigger);
    for run in store.runs.unfinished_runs().await?.iter().filter(|r| r.trigger != start.trigger) {
        super::runs::name_leftover(run);
    }
    print_start(&start, json);
    let started = Instant::now();
    let work = {
        let service = service.clone();
        tokio::spawn(async move { service.work(concurrency, true).await })
    };
    let filter = RunFilter { trigger: Some(start.trigger.clone()), ..Default::default() };
    let summaries =
        || async { anyhow::Ok(store.runs.runs(&filter).await?.iter().map(run_summary).collect::<Vec<RunSummary>>()) };
    let terminal = !json && std::io::stderr().is_terminal();
    while !work.is_finished() {
        if terminal {
            eprint!("\r  {}", progress_line(&tally(&summaries().await?)));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    work.await??;
    if terminal {
        eprintln!();
    }
    print_finished(&start, &summaries().await?, started, json)
}

/// `run --all` through serve: serve queues the batch and runs it with its workers; this
/// follows its runs and prints what the local batch prints.
pub async fn run_all_remote(remote: &Remote, name: &str, sent: SentFile, json: bool) -> anyhow::Result<Outcome> {
    let start: BatchStart = remote.post(&format!("/v1/workflows/{name}/batches"), &sent).await?;
    print_start(&start, json);
    let started = Instant::now();
    let query = RunQuery { trigger: Some(start.trigger.clone()), limit: Some(usize::MAX), ..RunQuery::default() };
    let terminal = !json && std::io::stderr().is_terminal();
    let runs = loop {
        let runs: Vec<RunSummary> = remote.get("/v1/runs", &query).await?;
        if runs.iter().all(|r| r.state.is_resting()) {
            break runs;
        }
        if terminal {
            eprint!("\r  {}", progress_line(&tally(&runs)));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if terminal {
        eprintln!();
    }
    print_finished(&start, &runs, started, json)
}

fn print_start(start: &BatchStart, json: bool) {
    if json {
        return;
    }
    let BatchStart { batch, workflow, .. } = start;
    if start.resumed {
        println!("resuming batch {batch} of {workflow}: {} new run(s) queued, earlier runs continue", start.queued);
    } else {
        println!(
            "batch {batch} of {workflow}: {} of {} record(s) match the rules",
            start.selected, start.total_records
        );
    }
}

/// The end of a batch, from its runs' summaries.
fn print_finished(start: &BatchStart, runs: &[RunSummary], started: Instant, json: bool) -> anyhow::Result<Outcome> {
    let counts = tally(runs);
    let failed = counts.get("failed").copied().unwrap_or(0) + counts.get("needs_attention").copied().unwrap_or(0);
    // A waiting run is not behind: it rests by design until its timer, which serve keeps.
    let unfinished = counts.get("queued").copied().unwrap_or(0) + counts.get("running").copied().unwrap_or(0);
    let skipped = start.total_records.saturating_sub(start.selected);
    if json {
        output::json(
            &json!({"batch": start.batch, "workflow": start.workflow, "runs": runs.len(), "states": counts, "skipped": skipped}),
        )?;
    } else {
        println!(
            "{} run(s) in {:.1} s: {}, {skipped} skipped (rules did not match)",
            runs.len(),
            started.elapsed().as_secs_f64(),
            progress_line(&counts)
        );
        for r in runs.iter().filter(|r| r.state == RunState::Failed).take(20) {
            println!("  failed: {} ({}): {}", r.record, r.run_id, r.error.as_deref().unwrap_or("?"));
        }
        if let Some(first) = runs.iter().filter_map(|r| r.wake_at.as_deref()).min() {
            println!(
                "  {} run(s) wait, the first until {first}: `roster serve` carries them on when they are due \
                 (`roster runs resume RUN` ends a wait now)",
                counts.get("waiting").copied().unwrap_or(0)
            );
        }
    }
    Ok(if failed == 0 && unfinished == 0 { Outcome::Ok } else { Outcome::Failed })
}

/// `--all --dry-run`: the single-person preview for every person the rules accept. Sends
/// nothing and writes nothing: no runs, no batch marker, no field index, no workflow source
/// (the selection reads the store and falls back to a scan where no index exists).
pub async fn dry_run_all(engine: Engine, wf: Workflow, json: bool, cx: &Context) -> anyhow::Result<Outcome> {
    let service = Service::new(Arc::new(engine), Catalog::default(), cx.presets()?);
    print_dry_run_all(&roster_api::answers::dry_run_all(&service, &wf).await?, json)
}

/// A batch dry run's answer (see `answers::dry_run_all`), from the store or from serve.
pub fn print_dry_run_all(answer: &BatchPreview, json: bool) -> anyhow::Result<Outcome> {
    let would_fail = answer.people.iter().filter(|person| person.steps.iter().any(|s| s.would_fail)).count();
    // As for one person: a preview in which a step would fail makes the dry run a failure.
    let outcome = if would_fail == 0 { Outcome::Ok } else { Outcome::Failed };
    if json {
        output::json(answer)?;
        return Ok(outcome);
    }
    let (runs, skipped) = (answer.runs, answer.skipped);
    println!(
        "dry run of a batch of {}: {runs} of {} record(s) match the rules (nothing is sent or written)",
        answer.workflow,
        runs + skipped
    );
    for person in &answer.people {
        println!("{}:", person.record);
        super::runs::print_dry_steps(&person.steps)?;
    }
    let failing = if would_fail == 0 { String::new() } else { format!(", {would_fail} with a step that would fail") };
    println!(
        "dry run: {runs} run(s) would start{failing}, {skipped} skipped (rules did not match); nothing was sent or written"
    );
    Ok(outcome)
}

fn tally(runs: &[RunSummary]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in runs {
        *counts.entry(r.state.as_str().to_string()).or_insert(0) += 1;
    }
    counts
}

fn progress_line(counts: &BTreeMap<String, usize>) -> String {
    ["succeeded", "failed", "skipped", "needs_attention", "waiting", "running", "queued"]
        .iter()
        .map(|s| format!("{} {s}", counts.get(*s).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}
