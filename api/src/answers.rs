//! The answers of commands that both the CLI (on its own store) and `roster serve`'s API
//! give, built from the engine's data: one builder per [`crate::wire`] answer, so `--json`,
//! the API and the CLI's human printer see the same thing either way.

use jiff::Timestamp;
use roster_blocks::kinds::Trigger;
use roster_engine::Result;
use roster_engine::credentials;
use roster_engine::model::{Record, Run, StoredCredential};
use roster_engine::run::Engine;
use roster_engine::service::{Service, describe_schedule, describe_trigger, next_fire};
use roster_engine::store::Store;
use roster_engine::sync::Integration;
use roster_engine::workflow::Workflow;

use crate::wire::{
    BatchPreview, CredentialView, DryRunAnswer, DryRunPreview, IntegrationView, PersonPreview, Refused, RefusedState,
    RunDetail, RunStarted, RunSummary, WorkflowView,
};

/// A dry run for one person, or the begin rules' refusal. Sends and writes nothing.
pub fn dry_run(engine: &Engine, wf: &Workflow, record: &Record) -> Result<DryRunAnswer> {
    if let Some(why) = engine.rules_refuse(wf, record)? {
        return Ok(DryRunAnswer::Refused(refused(wf, record, &why)));
    }
    let steps = engine.dry_run(wf, record)?;
    Ok(DryRunAnswer::Preview(DryRunPreview { workflow: wf.name.clone(), record: record.label(), dry_run: true, steps }))
}

/// The begin rules do not accept the person.
pub fn refused(wf: &Workflow, record: &Record, why: &str) -> Refused {
    let error = format!("{} does not match the rules of {}: {why}", record.label(), wf.name);
    Refused { workflow: wf.name.clone(), record: record.label(), state: RefusedState::Refused, error }
}

/// A dry run of a batch: every person the rules accept now, previewed; nothing is sent or
/// written (no runs, no batch marker, no index, no workflow source).
pub async fn dry_run_all(service: &Service, wf: &Workflow) -> Result<BatchPreview> {
    let engine = &service.engine;
    let total_records = engine.store.records.count_records().await?;
    let selected = service.select(wf).await?;
    let mut people = Vec::with_capacity(selected.len());
    for record in &selected {
        let steps = engine.dry_run(wf, record)?;
        people.push(PersonPreview { record: record.label(), record_id: record.id, steps });
    }
    Ok(BatchPreview {
        workflow: wf.name.clone(),
        dry_run: true,
        runs: selected.len(),
        skipped: total_records.saturating_sub(selected.len()),
        people,
    })
}

pub fn credential(c: &StoredCredential) -> CredentialView {
    CredentialView {
        name: c.name.clone(),
        kind: c.kind,
        base_url: c.base_url.clone(),
        rate_limit: credentials::rate_limit_of(c).map(str::to_string),
        timeout: c
            .settings
            .get("timeout")
            .cloned()
            .unwrap_or_else(|| format!("{}s", credentials::DEFAULT_TIMEOUT.as_secs())),
        settings: c.settings.clone(),
        created_at: c.created_at.clone(),
        updated_at: c.updated_at.clone(),
    }
}

pub fn workflow(wf: &Workflow, now: Timestamp) -> WorkflowView {
    let next_fire_at = match &wf.begin.trigger {
        Trigger::Schedule(schedule) => next_fire(schedule, now).map(roster_engine::clock::rfc3339),
        _ => None,
    };
    WorkflowView {
        name: wf.name.clone(),
        description: wf.description.clone(),
        hash: wf.hash.clone(),
        file: wf.file.clone(),
        trigger: describe_trigger(&wf.begin.trigger),
        next_fire_at,
    }
}

pub fn integration(i: &Integration, now: Timestamp) -> IntegrationView {
    IntegrationView {
        name: i.name.clone(),
        connector: i.connector.clone(),
        schedule: describe_schedule(&i.schedule),
        next_sync_at: next_fire(&i.schedule, now).map(roster_engine::clock::rfc3339),
    }
}

pub fn run_summary(r: &Run) -> RunSummary {
    RunSummary {
        run_id: r.id,
        workflow: r.workflow.clone(),
        record: r.record_label.clone(),
        state: r.state,
        trigger: r.trigger.clone(),
        created_at: r.created_at.clone(),
        error: r.error.clone(),
        wake_at: r.wakes_at().map(str::to_string),
    }
}

pub fn run_started(r: &Run) -> RunStarted {
    RunStarted { run_id: r.id, state: r.state, workflow: r.workflow.clone(), record: r.record_label.clone() }
}

/// A run with its journal, read from the store.
pub async fn run_detail(store: &Store, run: &Run) -> Result<RunDetail> {
    Ok(RunDetail {
        run_id: run.id,
        workflow: run.workflow.clone(),
        workflow_hash: run.workflow_hash.clone(),
        record: run.record_label.clone(),
        record_id: run.record_id,
        trigger: run.trigger.clone(),
        today: run.today.clone(),
        state: run.state,
        error: run.error.clone(),
        created_at: run.created_at.clone(),
        finished_at: run.finished_at.clone(),
        wake_at: run.wakes_at().map(str::to_string),
        steps: store.runs.journal(run.id).await?,
    })
}
