//! The JSON answers of commands that both the CLI (on its own store) and `roster serve`'s
//! API give: one shape, so `--json`, the API and the CLI's human printer (which renders
//! this JSON in both cases) cannot drift apart.

use jiff::Timestamp;
use roster_blocks::kinds::Trigger;
use serde_json::{Value, json};

use crate::credentials;
use crate::error::Result;
use crate::model::{Record, StoredCredential};
use crate::run::Engine;
use crate::service::{Service, describe_schedule, describe_trigger, next_fire};
use crate::sync::Integration;
use crate::workflow::Workflow;

/// A dry run for one person: `{workflow, record, dry_run, steps}`, or `{workflow, record,
/// state: "refused", error}` when the begin rules refuse the person. Sends and writes nothing.
pub fn dry_run(engine: &Engine, wf: &Workflow, record: &Record) -> Result<Value> {
    if let Some(why) = engine.rules_refuse(wf, record)? {
        return Ok(refused(wf, record, &why));
    }
    let steps = engine.dry_run(wf, record)?;
    Ok(json!({"workflow": wf.name, "record": record.label(), "dry_run": true, "steps": steps}))
}

/// `{workflow, record, state: "refused", error}`: the begin rules do not accept the person.
pub fn refused(wf: &Workflow, record: &Record, why: &str) -> Value {
    let error = format!("{} does not match the rules of {}: {why}", record.label(), wf.name);
    json!({"workflow": wf.name, "record": record.label(), "state": "refused", "error": error})
}

/// A dry run of a batch: every person the rules accept now, previewed; nothing is sent or
/// written (no runs, no batch marker, no index, no workflow source).
pub async fn dry_run_all(service: &Service, wf: &Workflow) -> Result<Value> {
    let engine = &service.engine;
    let total_records = engine.store.records.count_records().await?;
    let selected = service.select(wf).await?;
    let mut people = Vec::with_capacity(selected.len());
    for record in &selected {
        let steps = engine.dry_run(wf, record)?;
        people.push(json!({"record": record.label(), "record_id": record.id, "steps": steps}));
    }
    Ok(json!({
        "workflow": wf.name, "dry_run": true, "runs": selected.len(),
        "skipped": total_records.saturating_sub(selected.len()), "people": people,
    }))
}

/// A credential as `credentials list` shows it: never a secret.
pub fn credential(c: &StoredCredential) -> Value {
    json!({
        "name": c.name, "kind": c.kind, "base_url": c.base_url,
        "rate_limit": credentials::rate_limit_of(c),
        "timeout": c.settings.get("timeout").cloned().unwrap_or_else(|| format!("{}s", credentials::DEFAULT_TIMEOUT.as_secs())),
        "settings": c.settings, "created_at": c.created_at, "updated_at": c.updated_at,
    })
}

/// A loaded workflow as `workflows list` and `GET /v1/workflows` show it: what starts it
/// and, for a schedule, when it fires next (`next_fire_at`, RFC 3339 UTC).
pub fn workflow(wf: &Workflow, now: Timestamp) -> Value {
    let next = match &wf.begin.trigger {
        Trigger::Schedule(schedule) => next_fire(schedule, now).map(crate::clock::rfc3339),
        _ => None,
    };
    json!({
        "name": wf.name, "description": wf.description, "hash": wf.hash, "file": wf.file,
        "trigger": describe_trigger(&wf.begin.trigger), "next_fire_at": next,
    })
}

/// A loaded integration: its sync schedule and when it syncs next.
pub fn integration(i: &Integration, now: Timestamp) -> Value {
    json!({
        "name": i.name, "connector": i.connector, "schedule": describe_schedule(&i.schedule),
        "next_sync_at": next_fire(&i.schedule, now).map(crate::clock::rfc3339),
    })
}
