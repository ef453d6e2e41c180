//! `roster run WORKFLOW --all`: one run per person the rules accept, queued in the store
//! so an interrupted batch resumes instead of starting over.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_engine::model::RunState;
use roster_engine::run::Engine;
use roster_engine::service::{Catalog, Service};
use roster_engine::store::RunFilter;
use roster_engine::workflow::Workflow;
use serde_json::json;

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
    service.prepare_indexes()?;
    service.recover()?;
    let store = engine.store.clone();
    let key = format!("batch:{}", wf.name);

    // An unfinished batch of this workflow is resumed, not started again.
    let (batch, resumed) = match store.get_meta(&key)?.filter(|id| !id.is_empty()) {
        Some(id) => (id, true),
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            store.put_meta(&key, &id)?;
            (id, false)
        }
    };
    let trigger = format!("batch:{batch}");
    let total_records = store.count_records()?;
    let today = engine.clock.today();
    let selected = service.select_on(&wf, today)?;
    let mut queued = 0;
    for record in &selected {
        let dedupe = format!("wf:{}:rec:{}:batch:{batch}", wf.name, record.id);
        if engine.create_run_once(&wf, record, &trigger, &dedupe, today)?.is_some() {
            queued += 1;
        }
    }
    if !json {
        if resumed {
            println!("resuming batch {batch} of {}: {queued} new run(s) queued, earlier runs continue", wf.name);
        } else {
            println!("batch {batch} of {}: {} of {total_records} record(s) match the rules", wf.name, selected.len());
        }
    }
    let started = Instant::now();
    let work = {
        let service = service.clone();
        tokio::spawn(async move { service.work(concurrency, true).await })
    };
    let filter = RunFilter { trigger: Some(trigger.clone()), ..Default::default() };
    let terminal = !json && std::io::stderr().is_terminal();
    while !work.is_finished() {
        if terminal {
            let counts = tally(&store.runs(&filter)?);
            eprint!("\r  {}", progress_line(&counts));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    work.await??;
    if terminal {
        eprintln!();
    }
    let runs = store.runs(&filter)?;
    let counts = tally(&runs);
    let failed = counts.get("failed").copied().unwrap_or(0) + counts.get("needs_attention").copied().unwrap_or(0);
    let unfinished = runs.iter().filter(|r| !r.state.is_finished() && r.state != RunState::NeedsAttention).count();
    if unfinished == 0 {
        store.put_meta(&key, "")?;
    }
    let skipped = total_records.saturating_sub(selected.len());
    if json {
        output::json(
            &json!({"batch": batch, "workflow": wf.name, "runs": runs.len(), "states": counts, "skipped": skipped}),
        )?;
    } else {
        println!(
            "{} run(s) in {:.1} s: {}, {skipped} skipped (rules did not match)",
            runs.len(),
            started.elapsed().as_secs_f64(),
            progress_line(&counts)
        );
        for r in runs.iter().filter(|r| r.state == RunState::Failed).take(20) {
            println!("  failed: {} ({}): {}", r.record_label, r.id, r.error.as_deref().unwrap_or("?"));
        }
    }
    Ok(if failed == 0 && unfinished == 0 { Outcome::Ok } else { Outcome::Failed })
}

/// `--all --dry-run`: the single-person preview for every person the rules accept. Sends
/// nothing and writes nothing: no runs, no batch marker, no field index, no workflow source
/// (the selection reads the store and falls back to a scan where no index exists).
pub fn dry_run_all(engine: Engine, wf: Workflow, json: bool, cx: &Context) -> anyhow::Result<Outcome> {
    let service = Service::new(Arc::new(engine), Catalog::default(), cx.presets()?);
    print_dry_run_all(&roster_engine::answers::dry_run_all(&service, &wf)?, json)
}

/// A batch dry run's answer (see `answers::dry_run_all`), from the store or from serve.
pub fn print_dry_run_all(answer: &serde_json::Value, json: bool) -> anyhow::Result<Outcome> {
    if json {
        output::json(answer)?;
        return Ok(Outcome::Ok);
    }
    let count = |key: &str| answer[key].as_u64().unwrap_or(0);
    let (runs, skipped) = (count("runs"), count("skipped"));
    println!(
        "dry run of a batch of {}: {runs} of {} record(s) match the rules (nothing is sent or written)",
        answer["workflow"].as_str().unwrap_or("?"),
        runs + skipped
    );
    for person in answer["people"].as_array().into_iter().flatten() {
        println!("{}:", person["record"].as_str().unwrap_or("?"));
        super::runs::print_dry_steps(&super::runs::dry_steps(&person["steps"])?)?;
    }
    println!(
        "dry run: {runs} run(s) would start, {skipped} skipped (rules did not match); nothing was sent or written"
    );
    Ok(Outcome::Ok)
}

fn tally(runs: &[roster_engine::model::Run]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for r in runs {
        *counts.entry(r.state.as_str()).or_insert(0) += 1;
    }
    counts
}

fn progress_line(counts: &BTreeMap<&'static str, usize>) -> String {
    ["succeeded", "failed", "skipped", "needs_attention", "running", "queued"]
        .iter()
        .map(|s| format!("{} {s}", counts.get(s).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}
