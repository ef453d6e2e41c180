//! `roster serve`'s HTTP API, on loopback by default. Every request but `GET /v1/health`
//! needs the bearer token from the home's `api.token`, compared in constant time. Every
//! answer is JSON, errors too (`{"error": "..."}`): unknown routes, wrong methods and
//! bodies or queries that do not parse included.

// Helpers return the error answer itself (`Result<_, Response>`); it is sent at once, so
// boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
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
    let private = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/workflows", get(workflows))
        .route("/v1/workflows/{name}/runs", post(start_run))
        .route("/v1/workflows/{name}/dry-run", post(dry_run))
        .route("/v1/workflows/{name}/batches", post(start_batch))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(show_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/runs/{id}/retry", post(retry_run))
        .route("/v1/runs/{id}/resume", post(resume_run))
        .route("/v1/records", get(list_records))
        .route("/v1/records/import", post(import_records))
        .route("/v1/records/{key}", get(show_record))
        .route("/v1/integrations/{name}/sync", post(sync_integration))
        .route("/v1/sync/sessions", get(sync_sessions))
        .route("/v1/sync/sessions/{id}", get(sync_session))
        .route("/v1/credentials", get(list_credentials).post(add_credential))
        .route("/v1/credentials/{name}", axum::routing::patch(update_credential).delete(remove_credential))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(api.clone(), authenticate));
    // Liveness for a load balancer: no token, and nothing private in the answer.
    Router::new()
        .route("/v1/health", get(health))
        .merge(private)
        .layer(axum::middleware::map_response(scrub_answer))
        .with_state(api)
}

async fn no_route(method: Method, uri: Uri) -> Response {
    problem(StatusCode::NOT_FOUND, format!("no route {method} {} (the routes are listed in the README)", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method} (the README lists its methods)", uri.path()),
    )
}

/// A JSON request body; a wrong content type or a body that does not parse is answered
/// with a JSON error saying what was expected.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(JsonRejection::MissingJsonContentType(r)) => {
                Err(problem(r.status(), "the request body must be JSON, sent with `Content-Type: application/json`"))
            }
            Err(r) => {
                Err(problem(r.status(), format!("the request body is not what this route takes: {}", r.body_text())))
            }
        }
    }
}

/// A URL query; one that does not parse is answered with a JSON error.
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Response> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Params(value)),
            Err(r @ QueryRejection::FailedToDeserializeQueryString(_)) => Err(problem(
                StatusCode::BAD_REQUEST,
                format!("the query is not what this route takes: {}", r.body_text()),
            )),
            Err(r) => Err(problem(r.status(), r.body_text())),
        }
    }
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

fn error_response(e: impl Into<Error>) -> Response {
    let e = e.into();
    let status = match &e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Refused(_) | Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    problem(status, e.to_string())
}

/// Liveness only: `ok`, or `stopping` while a shutdown lets runs reach their next step.
async fn health(State(api): State<Api>) -> Response {
    Json(json!({"status": if api.service.engine.is_stopping() { "stopping" } else { "ok" }})).into_response()
}

/// What the service holds: its state, the queue and what is loaded.
async fn status(State(api): State<Api>) -> Response {
    let queued = api.service.engine.store.queue.queued_count().await.unwrap_or(0);
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
    let now = api.service.engine.clock.now();
    let list: Vec<Value> = catalog.workflows.values().map(|w| crate::answers::workflow(w, now)).collect();
    Json(list).into_response()
}

#[derive(Deserialize)]
struct StartRun {
    user: String,
    #[serde(default = "email")]
    key: String,
    #[serde(flatten)]
    sent: SentFile,
}

/// A file's text the CLI sends for a workflow or integration file serve has not loaded
/// (compiled with serve's presets and credentials), with the path it names in errors.
#[derive(Deserialize, Default)]
struct SentFile {
    source: Option<String>,
    file: Option<String>,
}

/// The workflow a request means: the file it sent, else the loaded one named `name`.
async fn workflow_for(api: &Api, name: &str, sent: &SentFile) -> Result<Arc<crate::workflow::Workflow>, Response> {
    match &sent.source {
        Some(source) => {
            let file = sent.file.as_deref().unwrap_or("the workflow sent");
            api.service.compile_workflow(source, file).await.map(Arc::new).map_err(error_response)
        }
        None => api.service.catalog().workflows.get(name).cloned().ok_or_else(|| {
            problem(StatusCode::NOT_FOUND, format!("no workflow named `{name}` is loaded (send its file's `source`)"))
        }),
    }
}

fn email() -> String {
    "email".into()
}

async fn start_run(State(api): State<Api>, Path(name): Path<String>, Body(body): Body<StartRun>) -> Response {
    let wf = match workflow_for(&api, &name, &body.sent).await {
        Ok(wf) => wf,
        Err(answer) => return answer,
    };
    let engine = &api.service.engine;
    let record = match records::find(&engine.store, &body.key, &body.user).await {
        Ok(r) => r,
        Err(e) => return error_response(e),
    };
    match engine.rules_refuse(&wf, &record) {
        Ok(Some(why)) => {
            // `{workflow, record, state: "refused", error}`: what `roster run` prints.
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(crate::answers::refused(&wf, &record, &why)))
                .into_response();
        }
        Ok(None) => {}
        Err(e) => return error_response(e),
    }
    match engine.create_run(&wf, &record, "manual:api").await {
        Ok(run) => {
            api.service.wake();
            let answer =
                json!({"run_id": run.id, "state": run.state, "workflow": run.workflow, "record": run.record_label});
            (StatusCode::ACCEPTED, Json(answer)).into_response()
        }
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
struct RunQuery {
    workflow: Option<String>,
    /// Only runs with this trigger (`batch:<id>`, `manual`, `schedule:<time>`…).
    trigger: Option<String>,
    user: Option<String>,
    #[serde(default = "email")]
    key: String,
    limit: Option<usize>,
}

async fn list_runs(State(api): State<Api>, Params(q): Params<RunQuery>) -> Response {
    let store = &api.service.engine.store;
    let record_id = match &q.user {
        Some(u) => match records::find(store, &q.key, u).await {
            Ok(r) => Some(r.id),
            Err(e) => return error_response(e),
        },
        None => None,
    };
    let filter = RunFilter {
        workflow: q.workflow,
        record_id,
        state: None,
        trigger: q.trigger,
        limit: Some(q.limit.unwrap_or(50)),
    };
    match store.runs.runs(&filter).await {
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
pub async fn run_detail(store: &Store, run: &Run) -> crate::Result<Value> {
    let journal = store.runs.journal(run.id).await?;
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
    let store = &api.service.engine.store;
    match store.runs.run(uuid).await {
        Ok(Some(run)) => match run_detail(store, &run).await {
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

async fn list_records(State(api): State<Api>, Params(q): Params<RecordQuery>) -> Response {
    let mut out = Vec::new();
    let limit = q.limit.unwrap_or(usize::MAX);
    let scanned = api
        .service
        .engine
        .store
        .records
        .scan_records(&mut |r| {
            out.push(json!({"id": r.id, "fields": r.fields, "version": r.version}));
            out.len() < limit
        })
        .await;
    match scanned {
        Ok(()) => Json(out).into_response(),
        Err(e) => error_response(e),
    }
}

async fn show_record(State(api): State<Api>, Path(key): Path<String>, Params(q): Params<RecordQuery>) -> Response {
    match records::find(&api.service.engine.store, &q.key, &key).await {
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

async fn import_records(State(api): State<Api>, Body(body): Body<Import>) -> Response {
    let engine = &api.service.engine;
    let now = crate::clock::rfc3339(engine.clock.now());
    match records::import(&engine.store, body.rows, &body.key, "import", &now).await {
        Ok(report) => {
            api.service.wake();
            Json(report).into_response()
        }
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
struct DryRun {
    /// One person (their key value or record id); without it, `all` previews the batch.
    user: Option<String>,
    #[serde(default = "email")]
    key: String,
    #[serde(default)]
    all: bool,
    #[serde(flatten)]
    sent: SentFile,
}

/// `roster run --dry-run [--all]`: the preview `--json` prints; sends and writes nothing.
async fn dry_run(State(api): State<Api>, Path(name): Path<String>, Body(body): Body<DryRun>) -> Response {
    let wf = match workflow_for(&api, &name, &body.sent).await {
        Ok(wf) => wf,
        Err(answer) => return answer,
    };
    let engine = &api.service.engine;
    let answer = match (&body.user, body.all) {
        (None, true) => crate::answers::dry_run_all(&api.service, &wf).await,
        (Some(user), false) => records::find(&engine.store, &body.key, user)
            .await
            .and_then(|record| crate::answers::dry_run(engine, &wf, &record)),
        _ => return problem(StatusCode::UNPROCESSABLE_ENTITY, "send either `user` or `\"all\": true`"),
    };
    match answer {
        Ok(v) => Json(v).into_response(),
        Err(e) => error_response(e),
    }
}

async fn run_of(api: &Api, id: &str) -> Result<Run, Response> {
    let uuid = uuid::Uuid::parse_str(id)
        .map_err(|_| problem(StatusCode::BAD_REQUEST, format!("`{id}` is not a run id (see GET /v1/runs)")))?;
    match api.service.engine.store.runs.run(uuid).await {
        Ok(Some(run)) => Ok(run),
        Ok(None) => Err(problem(StatusCode::NOT_FOUND, format!("no run {id}"))),
        Err(e) => Err(error_response(e)),
    }
}

/// `roster runs cancel`: the run's summary once cancelled; 202 with `"cancelling": true`
/// for a run a worker is running, which ends cancelled before its next step.
async fn cancel_run(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let run = match run_of(&api, &id).await {
        Ok(run) => run,
        Err(answer) => return answer,
    };
    let engine = &api.service.engine;
    if !run.state.is_finished() {
        // Asked first, so a worker that claims the run meanwhile cancels it at its first step.
        engine.request_cancel(run.id);
    }
    if run.state == crate::model::RunState::Running {
        let mut answer = run_summary(&run);
        answer["cancelling"] = Value::Bool(true);
        return (StatusCode::ACCEPTED, Json(answer)).into_response();
    }
    match engine.cancel(run).await {
        Ok(run) => Json(run_summary(&run)).into_response(),
        Err(e) => error_response(e),
    }
}

/// `roster runs retry`: the failed run goes back to the queue at its failed step (202).
async fn retry_run(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let run = match run_of(&api, &id).await {
        Ok(run) => run,
        Err(answer) => return answer,
    };
    let queued = match api.service.workflow_version(&run.workflow_hash).await {
        Ok(wf) => api.service.engine.prepare_retry(&wf, run).await,
        Err(e) => Err(e),
    };
    match queued {
        Ok(run) => {
            api.service.wake();
            (StatusCode::ACCEPTED, Json(run_summary(&run))).into_response()
        }
        Err(e) => error_response(e),
    }
}

/// `roster runs resume`: a `needs_attention` run sends its pending request again, by a
/// person's decision; a queued run is simply left to the workers (202).
async fn resume_run(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let run = match run_of(&api, &id).await {
        Ok(run) => run,
        Err(answer) => return answer,
    };
    if run.state == crate::model::RunState::NeedsAttention {
        let wf = match api.service.workflow_version(&run.workflow_hash).await {
            Ok(wf) => wf,
            Err(e) => return error_response(e),
        };
        let engine = api.service.engine.clone();
        let summary = run_summary(&run);
        tokio::spawn(async move {
            let id = run.id;
            if let Err(e) = engine.resume_attention(&wf, run, &mut crate::run::Quiet).await {
                tracing::error!("run {id}: {e}");
            }
        });
        return (StatusCode::ACCEPTED, Json(summary)).into_response();
    }
    api.service.wake();
    (StatusCode::ACCEPTED, Json(run_summary(&run))).into_response()
}

#[derive(Deserialize)]
struct SyncNow {
    #[serde(default)]
    test: bool,
    #[serde(flatten)]
    sent: SentFile,
}

/// `roster sync NAME [--test]`: the session, as `sync --json` prints it.
async fn sync_integration(State(api): State<Api>, Path(name): Path<String>, Body(body): Body<SyncNow>) -> Response {
    let integration = match &body.sent.source {
        Some(source) => {
            let file = body.sent.file.as_deref().unwrap_or("the integration sent");
            match api.service.compile_integration(source, file).await {
                Ok(i) => Arc::new(i),
                Err(e) => return error_response(e),
            }
        }
        None => match api.service.catalog().integrations.get(&name).cloned() {
            Some(i) => i,
            None => {
                return problem(
                    StatusCode::NOT_FOUND,
                    format!("no integration named `{name}` is loaded (send its file's `source`)"),
                );
            }
        },
    };
    match api.service.sync_with(&integration, body.test).await {
        Ok(session) => {
            api.service.wake();
            Json(session).into_response()
        }
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
struct SessionQuery {
    integration: Option<String>,
    limit: Option<usize>,
}

async fn sync_sessions(State(api): State<Api>, Params(q): Params<SessionQuery>) -> Response {
    match api.service.engine.store.syncs.sessions(q.integration.as_deref(), q.limit.unwrap_or(20)).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => error_response(e),
    }
}

async fn sync_session(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
        return problem(StatusCode::BAD_REQUEST, format!("`{id}` is not a session id"));
    };
    match api.service.engine.store.syncs.session(uuid).await {
        Ok(Some(session)) => Json(session).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no sync session {id}")),
        Err(e) => error_response(e),
    }
}

async fn list_credentials(State(api): State<Api>) -> Response {
    match api.service.engine.store.credentials.credentials().await {
        Ok(list) => Json(list.iter().map(crate::answers::credential).collect::<Vec<_>>()).into_response(),
        Err(e) => error_response(e),
    }
}

fn vault_of(api: &Api) -> Result<&crate::vault::Vault, Response> {
    api.service.engine.vault().ok_or_else(|| {
        problem(StatusCode::INTERNAL_SERVER_ERROR, "serve has no master key, so it cannot seal credentials")
    })
}

/// `roster credentials add`: seals and stores it; the answer never holds a secret.
async fn add_credential(State(api): State<Api>, Body(body): Body<crate::credentials::NewCredential>) -> Response {
    let vault = match vault_of(&api) {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let engine = &api.service.engine;
    let name = body.name.clone();
    let now = crate::clock::rfc3339(engine.clock.now());
    let saved = match crate::credentials::seal(vault, body, &now) {
        Ok(stored) => engine.store.credentials.put_credential(&stored).await.map(|()| stored).map_err(Error::from),
        Err(e) => Err(e),
    };
    match saved {
        Ok(stored) => {
            engine.forget_credential(&name);
            (StatusCode::CREATED, Json(crate::answers::credential(&stored))).into_response()
        }
        Err(e) => error_response(e),
    }
}

/// `roster credentials update`: changes what the body names, keeping the rest.
async fn update_credential(
    State(api): State<Api>,
    Path(name): Path<String>,
    Body(change): Body<crate::credentials::CredentialUpdate>,
) -> Response {
    let vault = match vault_of(&api) {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let engine = &api.service.engine;
    let now = crate::clock::rfc3339(engine.clock.now());
    match crate::credentials::update_in(&engine.store, vault, &name, change, &now).await {
        Ok(c) => {
            engine.forget_credential(&name);
            Json(crate::answers::credential(&c)).into_response()
        }
        Err(e) => error_response(e),
    }
}

async fn remove_credential(State(api): State<Api>, Path(name): Path<String>) -> Response {
    match api.service.engine.store.credentials.delete_credential(&name).await {
        Ok(true) => {
            api.service.engine.forget_credential(&name);
            Json(json!({"removed": name})).into_response()
        }
        Ok(false) => problem(StatusCode::NOT_FOUND, format!("no credential named `{name}`")),
        Err(e) => error_response(e),
    }
}

/// `roster run WORKFLOW --all`: queues one run per person the rules accept (resuming an
/// unfinished batch of the workflow) for serve's workers; answers what was queued (202).
async fn start_batch(State(api): State<Api>, Path(name): Path<String>, Body(sent): Body<SentFile>) -> Response {
    let wf = match workflow_for(&api, &name, &sent).await {
        Ok(wf) => wf,
        Err(answer) => return answer,
    };
    match api.service.queue_batch(&wf).await {
        Ok(start) => (StatusCode::ACCEPTED, Json(start)).into_response(),
        Err(e) => error_response(e),
    }
}
