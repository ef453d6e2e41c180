//! `roster serve`'s HTTP API, on loopback by default. Every request needs the bearer
//! token from the home's `api.token`, compared in constant time.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Error;
use crate::model::Run;
use crate::records;
use crate::service::Service;
use crate::store::{RunFilter, Store};

#[derive(Clone)]
struct Api {
    service: Arc<Service>,
    token: Arc<String>,
}

pub fn router(service: Arc<Service>, token: String) -> Router {
    let api = Api { service, token: Arc::new(token) };
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/workflows", get(workflows))
        .route("/v1/workflows/{name}/runs", post(start_run))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(show_run))
        .route("/v1/records", get(list_records))
        .route("/v1/records/import", post(import_records))
        .route("/v1/records/{key}", get(show_record))
        .layer(axum::middleware::from_fn_with_state(api.clone(), authenticate))
        .layer(axum::middleware::map_response(scrub_answer))
        .with_state(api)
}

/// Every answer leaves scrubbed of every secret the process knows: JSON as a value (each
/// string on its own), anything else as text.
async fn scrub_answer(response: Response) -> Response {
    let secrets = roster_blocks::redact::process();
    if secrets.is_empty() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "the answer could not be read to scrub it of secrets");
    };
    let clean = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut value) => {
            if !secrets.scrub_value(&mut value) {
                return Response::from_parts(parts, axum::body::Body::from(bytes));
            }
            serde_json::to_vec(&value).unwrap_or_default()
        }
        Err(_) => secrets.scrub(&String::from_utf8_lossy(&bytes)).into_owned().into_bytes(),
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(clean))
}

/// Equal-length comparison that looks at every byte, so timing says nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(
    State(api): State<Api>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if same(token.trim().as_bytes(), api.token.as_bytes()) => next.run(request).await,
        Some(_) => problem(StatusCode::UNAUTHORIZED, "the bearer token is wrong (see HOME/api.token)"),
        None => {
            problem(StatusCode::UNAUTHORIZED, "send `Authorization: Bearer <token>` (the token is in HOME/api.token)")
        }
    }
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn error_response(e: Error) -> Response {
    let status = match &e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Refused(_) | Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    problem(status, e.to_string())
}

async fn health(State(api): State<Api>) -> Response {
    let queued = api.service.engine.store.queued_count().unwrap_or(0);
    let catalog = api.service.catalog();
    Json(json!({
        "status": if api.service.engine.is_stopping() { "stopping" } else { "ok" },
        "queued": queued,
        "workflows": catalog.workflows.len(),
        "integrations": catalog.integrations.len(),
    }))
    .into_response()
}

async fn workflows(State(api): State<Api>) -> Response {
    let catalog = api.service.catalog();
    let list: Vec<Value> = catalog
        .workflows
        .values()
        .map(|w| json!({"name": w.name, "description": w.description, "hash": w.hash, "file": w.file}))
        .collect();
    Json(list).into_response()
}

#[derive(Deserialize)]
struct StartRun {
    user: String,
    #[serde(default = "email")]
    key: String,
}

fn email() -> String {
    "email".into()
}

async fn start_run(State(api): State<Api>, Path(name): Path<String>, Json(body): Json<StartRun>) -> Response {
    let Some(wf) = api.service.catalog().workflows.get(&name).cloned() else {
        return problem(StatusCode::NOT_FOUND, format!("no workflow named `{name}` is loaded"));
    };
    let engine = &api.service.engine;
    let record = match records::find(engine.store.as_ref(), &body.key, &body.user) {
        Ok(r) => r,
        Err(e) => return error_response(e),
    };
    match engine.rules_refuse(&wf, &record) {
        Ok(Some(why)) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{} does not match the rules of {}: {why}", record.label(), wf.name),
            );
        }
        Ok(None) => {}
        Err(e) => return error_response(e),
    }
    match engine.create_run(&wf, &record, "manual:api") {
        Ok(run) => {
            api.service.wake();
            (StatusCode::ACCEPTED, Json(json!({"run_id": run.id, "state": run.state}))).into_response()
        }
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
struct RunQuery {
    workflow: Option<String>,
    user: Option<String>,
    #[serde(default = "email")]
    key: String,
    limit: Option<usize>,
}

async fn list_runs(State(api): State<Api>, Query(q): Query<RunQuery>) -> Response {
    let store = api.service.engine.store.as_ref();
    let record_id = match &q.user {
        Some(u) => match records::find(store, &q.key, u) {
            Ok(r) => Some(r.id),
            Err(e) => return error_response(e),
        },
        None => None,
    };
    let filter =
        RunFilter { workflow: q.workflow, record_id, state: None, trigger: None, limit: Some(q.limit.unwrap_or(50)) };
    match store.runs(&filter) {
        Ok(runs) => Json(runs.iter().map(run_summary).collect::<Vec<_>>()).into_response(),
        Err(e) => error_response(e),
    }
}

/// The short form of a run used in listings (CLI and API alike).
pub fn run_summary(r: &Run) -> Value {
    json!({"run_id": r.id, "workflow": r.workflow, "record": r.record_label, "state": r.state,
           "trigger": r.trigger, "created_at": r.created_at, "error": r.error})
}

/// A run with its journal, as `runs show --json` and the API print it.
pub fn run_detail(store: &dyn Store, run: &Run) -> crate::Result<Value> {
    let journal = store.journal(run.id)?;
    Ok(json!({
        "run_id": run.id,
        "workflow": run.workflow,
        "workflow_hash": run.workflow_hash,
        "record": run.record_label,
        "record_id": run.record_id,
        "trigger": run.trigger,
        "today": run.today,
        "state": run.state,
        "error": run.error,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "steps": journal,
    }))
}

async fn show_run(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
        return problem(StatusCode::BAD_REQUEST, format!("`{id}` is not a run id"));
    };
    let store = api.service.engine.store.as_ref();
    match store.run(uuid) {
        Ok(Some(run)) => match run_detail(store, &run) {
            Ok(v) => Json(v).into_response(),
            Err(e) => error_response(e),
        },
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no run {id}")),
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
struct RecordQuery {
    limit: Option<usize>,
    #[serde(default = "email")]
    key: String,
}

async fn list_records(State(api): State<Api>, Query(q): Query<RecordQuery>) -> Response {
    let mut out = Vec::new();
    let limit = q.limit.unwrap_or(usize::MAX);
    let scanned = api.service.engine.store.scan_records(&mut |r| {
        out.push(json!({"id": r.id, "fields": r.fields, "version": r.version}));
        out.len() < limit
    });
    match scanned {
        Ok(()) => Json(out).into_response(),
        Err(e) => error_response(e),
    }
}

async fn show_record(State(api): State<Api>, Path(key): Path<String>, Query(q): Query<RecordQuery>) -> Response {
    match records::find(api.service.engine.store.as_ref(), &q.key, &key) {
        Ok(r) => Json(r).into_response(),
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
struct Import {
    rows: Vec<serde_json::Map<String, Value>>,
    #[serde(default = "email")]
    key: String,
}

async fn import_records(State(api): State<Api>, Json(body): Json<Import>) -> Response {
    let engine = &api.service.engine;
    let now = crate::clock::rfc3339(engine.clock.now());
    match records::import(engine.store.as_ref(), body.rows, &body.key, "import", &now) {
        Ok(report) => {
            api.service.wake();
            Json(report).into_response()
        }
        Err(e) => error_response(e),
    }
}
