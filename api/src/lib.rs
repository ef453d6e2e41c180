//! roster-api: `roster serve`'s HTTP API, on loopback by default. Every request but
//! `GET /v1/health` needs the bearer token; every answer is JSON, errors too
//! (`{"error": "..."}`): unknown routes, wrong methods and bodies or queries that do not
//! parse included. The shapes of bodies and answers are [`wire`]'s types, which the CLI's
//! client for serve uses as well.

pub mod answers;
mod auth;
mod error;
mod extract;
mod routes;
mod scrub;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use roster_engine::service::Service;

pub use error::ApiError;

/// What every handler reads: the service and the token requests must carry.
#[derive(Clone)]
pub struct ApiState {
    pub service: Arc<Service>,
    pub token: Arc<String>,
}

impl ApiState {
    pub fn new(service: Arc<Service>, token: String) -> Self {
        ApiState { service, token: Arc::new(token) }
    }
}

/// The API's routes under `/v1`, authenticated and scrubbed of secrets, with JSON
/// answers for unknown routes and wrong methods. Other routers (a console) can be merged
/// beside it; they bring their own fallback only if they do not overlap `/v1`.
pub fn router(state: ApiState) -> Router {
    routes::router(state)
}
