//! The routes and their handlers: each reads a [`crate::wire`] body or query and answers
//! a [`crate::wire`] type, or an [`ApiError`].

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use roster_engine::model::{Run, RunState};
use roster_engine::records;
use roster_engine::store::RunFilter;
use roster_engine::workflow::Workflow;
use uuid::Uuid;

use crate::ApiState;
use crate::answers;
use crate::auth::authenticate;
use crate::error::ApiError;
use crate::extract::{Body, Params};
use crate::scrub::scrub_answer;
use crate::wire::{
    self, CancelAnswer, DryRunRequest, Health, ImportRequest, RecordQuery, RecordRow, Removed, RunQuery, SentFile,
    ServiceState, SessionQuery, StartRun, Status, SyncRequest,
};

type Answer<T> = Result<T, ApiError>;

pub fn router(api: ApiState) -> Router {
    let private = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/workflows", get(workflows))
        .route("/v1/nodes", get(nodes))
        .route("/v1/workflows/{name}/runs", post(start_run))
        .route("/v1/workflows/{name}/dry-run", post(dry_run))
        .route("/v1/workflows/{name}/batches", post(start_batch))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/prune", post(prune_runs))
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
        .route("/v1/credentials/{name}", patch(update_credential).delete(remove_credential))
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

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {} (the routes are listed in the README)", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method} (the README lists its methods)", uri.path()),
    )
}

fn service_state(api: &ApiState) -> ServiceState {
    if api.service.engine.is_stopping() { ServiceState::Stopping } else { ServiceState::Ok }
}

async fn health(State(api): State<ApiState>) -> Json<Health> {
    Json(Health { status: service_state(&api) })
}

async fn status(State(api): State<ApiState>) -> Json<Status> {
    let queued = api.service.engine.store.queue.queued_count().await.unwrap_or(0);
    let catalog = api.service.catalog();
    Json(Status {
        status: service_state(&api),
        queued,
        workflows: catalog.workflows.len(),
        integrations: catalog.integrations.len(),
    })
}

/// The serve nodes sharing this store, alive ones first.
async fn nodes(State(api): State<ApiState>) -> Answer<Json<Vec<roster_engine::service::NodeStatus>>> {
    Ok(Json(api.service.nodes().await?))
}

async fn workflows(State(api): State<ApiState>) -> Json<Vec<wire::WorkflowView>> {
    let catalog = api.service.catalog();
    let now = api.service.engine.clock.now();
    Json(catalog.workflows.values().map(|w| answers::workflow(w, now)).collect())
}

/// The workflow a request means: the file it sent, else the loaded one named `name`.
async fn workflow_for(api: &ApiState, name: &str, sent: &SentFile) -> Answer<Arc<Workflow>> {
    match &sent.source {
        Some(source) => {
            let file = sent.file.as_deref().unwrap_or("the workflow sent");
            Ok(Arc::new(api.service.compile_workflow(source, file).await?))
        }
        None => api.service.catalog().workflows.get(name).cloned().ok_or_else(|| {
            ApiError::not_found(format!("no workflow named `{name}` is loaded (send its file's `source`)"))
        }),
    }
}

async fn start_run(
    State(api): State<ApiState>,
    Path(name): Path<String>,
    Body(body): Body<StartRun>,
) -> Answer<Response> {
    let wf = workflow_for(&api, &name, &body.sent).await?;
    let engine = &api.service.engine;
    let record = records::find(&engine.store, &body.key, &body.user).await?;
    if let Some(why) = engine.rules_refuse(&wf, &record)? {
        // What `roster run` prints when the rules refuse the person.
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(answers::refused(&wf, &record, &why))).into_response());
    }
    let run = engine.create_run(&wf, &record, roster_engine::model::RunTrigger::ManualApi).await?;
    api.service.wake();
    Ok((StatusCode::ACCEPTED, Json(answers::run_started(&run))).into_response())
}

async fn list_runs(State(api): State<ApiState>, Params(q): Params<RunQuery>) -> Answer<Json<Vec<wire::RunSummary>>> {
    let store = &api.service.engine.store;
    let record_id = match &q.user {
        Some(u) => Some(records::find(store, &q.key, u).await?.id),
        None => None,
    };
    let filter = RunFilter {
        workflow: q.workflow,
        record_id,
        state: None,
        trigger: q.trigger,
        limit: Some(q.limit.unwrap_or(wire::DEFAULT_RUN_LIMIT)),
    };
    Ok(Json(store.runs.runs(&filter).await?.iter().map(answers::run_summary).collect()))
}

async fn show_run(State(api): State<ApiState>, Path(id): Path<String>) -> Answer<Json<wire::RunDetail>> {
    let uuid = Uuid::parse_str(&id).map_err(|_| ApiError::bad_request(format!("`{id}` is not a run id")))?;
    let store = &api.service.engine.store;
    let run = store.runs.run(uuid).await?.ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    Ok(Json(answers::run_detail(store, &run).await?))
}

async fn list_records(State(api): State<ApiState>, Params(q): Params<RecordQuery>) -> Answer<Json<Vec<RecordRow>>> {
    let mut out = Vec::new();
    let limit = q.limit.unwrap_or(usize::MAX);
    api.service
        .engine
        .store
        .records
        .scan_records(&mut |r| {
            out.push(RecordRow { id: r.id, fields: r.fields, version: r.version });
            out.len() < limit
        })
        .await?;
    Ok(Json(out))
}

async fn show_record(
    State(api): State<ApiState>,
    Path(key): Path<String>,
    Params(q): Params<RecordQuery>,
) -> Answer<Json<wire::Record>> {
    Ok(Json(records::find(&api.service.engine.store, &q.key, &key).await?))
}

async fn import_records(
    State(api): State<ApiState>,
    Body(body): Body<ImportRequest>,
) -> Answer<Json<wire::ImportReport>> {
    let engine = &api.service.engine;
    let now = roster_engine::clock::rfc3339(engine.clock.now());
    let report = records::import(&engine.store, body.rows, &body.key, "import", &now).await?;
    api.service.wake();
    Ok(Json(report))
}

/// `roster run --dry-run [--all]`: the preview `--json` prints; sends and writes nothing.
async fn dry_run(
    State(api): State<ApiState>,
    Path(name): Path<String>,
    Body(body): Body<DryRunRequest>,
) -> Answer<Response> {
    let wf = workflow_for(&api, &name, &body.sent).await?;
    let engine = &api.service.engine;
    let answer = match (&body.user, body.all) {
        (None, true) => Json(answers::dry_run_all(&api.service, &wf).await?).into_response(),
        (Some(user), false) => {
            let record = records::find(&engine.store, &body.key, user).await?;
            Json(answers::dry_run(engine, &wf, &record)?).into_response()
        }
        _ => return Err(ApiError::unprocessable("send either `user` or `\"all\": true`")),
    };
    Ok(answer)
}

async fn run_of(api: &ApiState, id: &str) -> Answer<Run> {
    let uuid =
        Uuid::parse_str(id).map_err(|_| ApiError::bad_request(format!("`{id}` is not a run id (see GET /v1/runs)")))?;
    api.service.engine.store.runs.run(uuid).await?.ok_or_else(|| ApiError::not_found(format!("no run {id}")))
}

/// `roster runs cancel`: the run's summary once cancelled; 202 with `"cancelling": true`
/// for a run a worker is running, which ends cancelled before its next step.
async fn cancel_run(State(api): State<ApiState>, Path(id): Path<String>) -> Answer<(StatusCode, Json<CancelAnswer>)> {
    let run = run_of(&api, &id).await?;
    let engine = &api.service.engine;
    if !run.state.is_finished() {
        // Asked first, so a worker that claims the run meanwhile cancels it at its first step.
        engine.request_cancel(run.id);
    }
    if run.state == RunState::Running {
        return Ok((StatusCode::ACCEPTED, Json(CancelAnswer { run: answers::run_summary(&run), cancelling: true })));
    }
    let run = engine.cancel(run).await?;
    Ok((StatusCode::OK, Json(CancelAnswer { run: answers::run_summary(&run), cancelling: false })))
}

/// `roster runs prune`: deletes finished runs older than the age given, with their journals.
async fn prune_runs(
    State(api): State<ApiState>,
    Body(body): Body<wire::PruneRequest>,
) -> Answer<Json<wire::PruneAnswer>> {
    let engine = &api.service.engine;
    let age = roster_engine::retention::parse_age(&body.older_than)?;
    let pruned = roster_engine::retention::prune(&engine.store, engine.clock.now(), age).await?;
    Ok(Json(wire::PruneAnswer { pruned: pruned.runs, before: roster_engine::clock::rfc3339(pruned.before) }))
}

/// `roster runs retry`: the failed run goes back to the queue at its failed step (202).
async fn retry_run(
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Answer<(StatusCode, Json<wire::RunSummary>)> {
    let run = run_of(&api, &id).await?;
    let wf = api.service.workflow_version(&run.workflow_hash).await?;
    let run = api.service.engine.prepare_retry(&wf, run).await?;
    api.service.wake();
    Ok((StatusCode::ACCEPTED, Json(answers::run_summary(&run))))
}

/// `roster runs resume`: a `needs_attention` run sends its pending request again, by a
/// person's decision; a waiting run's wait ends now; a queued run is simply left to the
/// workers (202).
async fn resume_run(
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Answer<(StatusCode, Json<wire::RunSummary>)> {
    let mut run = run_of(&api, &id).await?;
    if run.state == RunState::Waiting {
        let wf = api.service.workflow_version(&run.workflow_hash).await?;
        run = api.service.engine.wake_now(&wf, run).await?;
    }
    let summary = answers::run_summary(&run);
    if run.state == RunState::NeedsAttention {
        let wf = api.service.workflow_version(&run.workflow_hash).await?;
        let engine = api.service.engine.clone();
        tokio::spawn(async move {
            let id = run.id;
            if let Err(e) = engine.resume_attention(&wf, run, &mut roster_engine::run::Quiet).await {
                tracing::error!("run {id}: {e}");
            }
        });
    } else {
        api.service.wake();
    }
    Ok((StatusCode::ACCEPTED, Json(summary)))
}

/// `roster sync NAME [--test]`: the session, as `sync --json` prints it.
async fn sync_integration(
    State(api): State<ApiState>,
    Path(name): Path<String>,
    Body(body): Body<SyncRequest>,
) -> Answer<Json<wire::SyncSession>> {
    let integration = match &body.sent.source {
        Some(source) => {
            let file = body.sent.file.as_deref().unwrap_or("the integration sent");
            Arc::new(api.service.compile_integration(source, file).await?)
        }
        None => api.service.catalog().integrations.get(&name).cloned().ok_or_else(|| {
            ApiError::not_found(format!("no integration named `{name}` is loaded (send its file's `source`)"))
        })?,
    };
    let session = api.service.sync_with(&integration, body.test).await?;
    api.service.wake();
    Ok(Json(session))
}

async fn sync_sessions(
    State(api): State<ApiState>,
    Params(q): Params<SessionQuery>,
) -> Answer<Json<Vec<wire::SyncSession>>> {
    let limit = q.limit.unwrap_or(wire::DEFAULT_SESSION_LIMIT);
    Ok(Json(api.service.engine.store.syncs.sessions(q.integration.as_deref(), limit).await?))
}

async fn sync_session(State(api): State<ApiState>, Path(id): Path<String>) -> Answer<Json<wire::SyncSession>> {
    let uuid = Uuid::parse_str(&id).map_err(|_| ApiError::bad_request(format!("`{id}` is not a session id")))?;
    let session = api.service.engine.store.syncs.session(uuid).await?;
    Ok(Json(session.ok_or_else(|| ApiError::not_found(format!("no sync session {id}")))?))
}

async fn list_credentials(State(api): State<ApiState>) -> Answer<Json<Vec<wire::CredentialView>>> {
    Ok(Json(api.service.engine.store.credentials.credentials().await?.iter().map(answers::credential).collect()))
}

fn vault_of(api: &ApiState) -> Answer<&roster_engine::vault::Vault> {
    api.service
        .engine
        .vault()
        .ok_or_else(|| ApiError::internal("serve has no master key, so it cannot seal credentials"))
}

/// `roster credentials add`: seals and stores it; the answer never holds a secret.
async fn add_credential(
    State(api): State<ApiState>,
    Body(body): Body<wire::NewCredential>,
) -> Answer<(StatusCode, Json<wire::CredentialView>)> {
    let vault = vault_of(&api)?;
    let engine = &api.service.engine;
    let now = roster_engine::clock::rfc3339(engine.clock.now());
    let stored = roster_engine::credentials::seal(vault, body, &now)?;
    engine.store.credentials.put_credential(&stored).await?;
    engine.forget_credential(&stored.name);
    Ok((StatusCode::CREATED, Json(answers::credential(&stored))))
}

/// `roster credentials update`: changes what the body names, keeping the rest.
async fn update_credential(
    State(api): State<ApiState>,
    Path(name): Path<String>,
    Body(change): Body<wire::CredentialUpdate>,
) -> Answer<Json<wire::CredentialView>> {
    let vault = vault_of(&api)?;
    let engine = &api.service.engine;
    let now = roster_engine::clock::rfc3339(engine.clock.now());
    let updated = roster_engine::credentials::update_in(&engine.store, vault, &name, change, &now).await?;
    engine.forget_credential(&name);
    Ok(Json(answers::credential(&updated)))
}

async fn remove_credential(State(api): State<ApiState>, Path(name): Path<String>) -> Answer<Json<Removed>> {
    if !api.service.engine.store.credentials.delete_credential(&name).await? {
        return Err(ApiError::not_found(format!("no credential named `{name}`")));
    }
    api.service.engine.forget_credential(&name);
    Ok(Json(Removed { removed: name }))
}

/// `roster run WORKFLOW --all`: queues one run per person the rules accept (resuming an
/// unfinished batch of the workflow) for serve's workers; answers what was queued (202).
async fn start_batch(
    State(api): State<ApiState>,
    Path(name): Path<String>,
    Body(sent): Body<SentFile>,
) -> Answer<(StatusCode, Json<wire::BatchStart>)> {
    let wf = workflow_for(&api, &name, &sent).await?;
    Ok((StatusCode::ACCEPTED, Json(api.service.queue_batch(&wf).await?)))
}
