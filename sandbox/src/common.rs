//! State shared by the three fake vendors, the request-counting and fault middleware, the
//! `/_sandbox/` admin routes, and small helpers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::faults::{Echo, Fault, FaultState, Faults};
use crate::net::ConnHandle;
use crate::people::Person;
use crate::stats::{Stats, Vendor};
use crate::{RateLimit, SandboxConfig, brex, expensify, sage};

pub(crate) struct Shared {
    pub(crate) config: SandboxConfig,
    pub(crate) people: Vec<Person>,
    pub(crate) stats: Mutex<Stats>,
    pub(crate) faults: [Mutex<FaultState>; 3],
    pub(crate) brex: Mutex<brex::Store>,
    pub(crate) expensify: expensify::Store,
    pub(crate) sage: Mutex<sage::Store>,
    pub(crate) urls: Urls,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Urls {
    pub(crate) brex: String,
    pub(crate) expensify: String,
    pub(crate) sage: String,
}

/// Locks ignoring poisoning: a panicking handler must not take the whole sandbox down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn stats(&self) -> MutexGuard<'_, Stats> {
        lock(&self.stats)
    }

    pub(crate) fn set_faults(&self, vendor: Option<Vendor>, faults: &Faults) {
        for v in Vendor::ALL {
            if vendor.is_none_or(|only| only == v) {
                lock(&self.faults[v.index()]).set(faults.clone());
            }
        }
    }
}

#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) vendor: Vendor,
}

/// Marks a response whose connection was killed, so it is not counted as sent.
#[derive(Clone, Copy)]
struct Dropped;

/// Outermost vendor middleware: counts the request by route and the response by status.
pub(crate) async fn count(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("(unmatched)", MatchedPath::as_str).to_string();
    let key = format!("{} {route}", req.method());
    tracing::debug!(vendor = ctx.vendor.name(), route = %key, "sandbox request");
    {
        let mut stats = ctx.shared.stats();
        let v = stats.vendor_mut(ctx.vendor);
        v.requests += 1;
        *v.requests_by_route.entry(key).or_insert(0) += 1;
    }
    let response = next.run(req).await;
    if response.extensions().get::<Dropped>().is_none() {
        let mut stats = ctx.shared.stats();
        *stats.vendor_mut(ctx.vendor).responses_by_status.entry(response.status().as_u16()).or_insert(0) += 1;
    }
    response
}

/// Applies the configured faults, inside `count` so faulted requests are still counted.
pub(crate) async fn inject_faults(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let fault = lock(&ctx.shared.faults[ctx.vendor.index()]).draw(ctx.vendor);
    let Some(fault) = fault else {
        return next.run(req).await;
    };
    let conn = req.extensions().get::<ConnectInfo<ConnHandle>>().cloned();
    let record = |f: &dyn Fn(&mut crate::stats::FaultCounts)| {
        let mut stats = ctx.shared.stats();
        f(&mut stats.vendor_mut(ctx.vendor).faults);
    };
    match fault {
        Fault::Error500 { in_body } => {
            record(&|c| c.error_500 += 1);
            server_error(ctx.vendor, in_body)
        }
        Fault::RateLimit429 => {
            record(&|c| c.rate_limit_429 += 1);
            too_many_requests(ctx.vendor, 1)
        }
        Fault::Slow(d) => {
            record(&|c| c.slow += 1);
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Fault::DropBefore | Fault::DropAfter => {
            let after = fault == Fault::DropAfter;
            record(&|c| {
                c.drop_connection += 1;
                if after {
                    c.drop_after_side_effect += 1;
                }
            });
            let mut response =
                if after { next.run(req).await } else { StatusCode::INTERNAL_SERVER_ERROR.into_response() };
            match conn {
                Some(ConnectInfo(handle)) => {
                    handle.kill();
                    response.extensions_mut().insert(Dropped);
                    response
                }
                // Not served through our listener (cannot happen in the sandbox): fail loudly.
                None => server_error(ctx.vendor, false),
            }
        }
    }
}

/// The largest request or answer body the echo and redirect switches read.
const ECHO_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The `redirect_to` and `echo_credentials` switches, inside the fault layer.
pub(crate) async fn echo_or_redirect(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let (echo, redirect) = {
        let state = lock(&ctx.shared.faults[ctx.vendor.index()]);
        (state.faults.echo_credentials, state.faults.redirect_to.clone())
    };
    if let Some(base) = redirect {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = format!("{}{path}", base.trim_end_matches('/'));
        let mut r = empty(StatusCode::TEMPORARY_REDIRECT);
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    if echo == Echo::Off {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, ECHO_BODY_LIMIT).await else {
        return empty(StatusCode::PAYLOAD_TOO_LARGE);
    };
    let seen = credentials_seen(&parts.headers, &body);
    if echo == Echo::Reject {
        let sage_token = parts.uri.path() == crate::SAGE_TOKEN_PATH;
        return echo_rejection(ctx.vendor, sage_token, &seen);
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, ECHO_BODY_LIMIT).await else {
        return empty(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    add_echo(&mut value, &seen.join(" | "));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(value.to_string()))
}

/// Every credential-looking part of a request: auth and key headers, the raw body, and the
/// body's form fields decoded.
fn credentials_seen(headers: &axum::http::HeaderMap, body: &[u8]) -> Vec<String> {
    let mut seen = Vec::new();
    for (name, value) in headers {
        let n = name.as_str();
        if ["auth", "key", "token", "secret"].iter().any(|w| n.contains(w)) {
            seen.push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
    }
    let text = String::from_utf8_lossy(body);
    if !text.is_empty() {
        seen.push(text.to_string());
        seen.extend(parse_form(&text).into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    seen
}

fn add_echo(value: &mut Value, echo: &str) {
    match value {
        Value::Object(m) => {
            for v in m.values_mut() {
                add_echo(v, echo);
            }
            m.insert("echo".into(), Value::String(echo.to_string()));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| add_echo(v, echo)),
        _ => {}
    }
}

fn echo_rejection(vendor: Vendor, sage_token: bool, seen: &[String]) -> Response {
    let said = seen.join(" | ");
    let mut r = match vendor {
        Vendor::Brex => json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"type": "UNAUTHORIZED", "message": format!("Invalid token: {said}")}),
        ),
        Vendor::Expensify => json_response(
            StatusCode::OK,
            &json!({"responseMessage": format!("Not authorized to authenticate with {said}"), "responseCode": 401}),
        ),
        Vendor::Sage if sage_token => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_client", "error_description": format!("invalid client credentials: {said}")}),
        ),
        Vendor::Sage => json_response(
            StatusCode::UNAUTHORIZED,
            &json!([{"message": format!("Session expired or invalid: {said}"), "errorCode": "INVALID_SESSION_ID"}]),
        ),
    };
    echo_header(&mut r, seen);
    r
}

/// The first thing seen, in the headers a client keeps for support tickets.
fn echo_header(response: &mut Response, seen: &[String]) {
    if let Some(v) = seen.first().and_then(|s| HeaderValue::from_str(s).ok()) {
        response.headers_mut().insert("x-brex-trace-id", v.clone());
        response.headers_mut().insert("x-request-id", v);
    }
}

#[derive(Deserialize)]
struct EchoQuery {
    status: Option<u16>,
}

/// `ANY /_sandbox/echo[?status=N]`: the credentials the request carried, in the body (as
/// `message` and `echo`) and in `X-Request-Id`.
async fn admin_echo(Query(q): Query<EchoQuery>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, ECHO_BODY_LIMIT).await.unwrap_or_default();
    let seen = credentials_seen(&parts.headers, &body);
    let said = seen.join(" | ");
    let status = q.status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    let mut r = json_response(status, &json!({"message": format!("you sent: {said}"), "echo": said}));
    echo_header(&mut r, &seen);
    r
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn server_error(vendor: Vendor, in_body: bool) -> Response {
    match vendor {
        Vendor::Brex => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"type": "INTERNAL_SERVER_ERROR", "message": "Internal Server Error"}),
        ),
        Vendor::Expensify => json_response(
            if in_body { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR },
            &json!({"responseMessage": "Internal error. Please try again later.", "responseCode": 500}),
        ),
        Vendor::Sage => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": {
                "code": "INTERNAL_API_ERROR",
                "message": "An unexpected error occurred",
                "innererror": {"code": "UNKNOWN_EXCEPTION"}
            }}),
        ),
    }
}

pub(crate) const EXPENSIFY_RATE_LIMIT_MESSAGE: &str =
    "You have been rate-limited. Please try again later or contact help@expensify.com for assistance.";

pub(crate) fn too_many_requests(vendor: Vendor, retry_after_secs: u64) -> Response {
    let body = match vendor {
        Vendor::Brex => {
            json!({"type": "TOO_MANY_REQUESTS", "message": "Rate limit exceeded. Please retry later."})
        }
        Vendor::Expensify => {
            json!({"responseMessage": EXPENSIFY_RATE_LIMIT_MESSAGE, "responseCode": 429})
        }
        Vendor::Sage => json!([{
            "message": "Request limit exceeded. Please retry later.",
            "errorCode": "REQUEST_LIMIT_EXCEEDED"
        }]),
    };
    let mut r = json_response(StatusCode::TOO_MANY_REQUESTS, &body);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    r
}

/// Sliding-window limiter: at most `requests` accepted per `per`, per key. Rejected requests do
/// not use up the window. `requests == 0` disables the limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    limit: RateLimit,
    windows: HashMap<String, VecDeque<Instant>>,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Limiter {
        Limiter { limit, windows: HashMap::new() }
    }

    /// Ok, or the whole seconds to wait before a retry can succeed.
    pub(crate) fn check(&mut self, key: &str) -> Result<(), u64> {
        if self.limit.requests == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let window = self.windows.entry(key.to_string()).or_default();
        while window.front().is_some_and(|t| now.duration_since(*t) >= self.limit.per) {
            window.pop_front();
        }
        if window.len() < self.limit.requests as usize {
            window.push_back(now);
            return Ok(());
        }
        let oldest = window.front().copied().unwrap_or(now);
        let wait = self.limit.per.saturating_sub(now.duration_since(oldest));
        Err((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
    }
}

/// Decodes `application/x-www-form-urlencoded` (also query strings): `+` is a space.
pub(crate) fn parse_form(input: &str) -> Vec<(String, String)> {
    input
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

fn decode_component(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

pub(crate) fn form_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

// ---- admin routes ----

#[derive(Deserialize)]
struct VendorQuery {
    vendor: Option<String>,
}

fn faults_json(shared: &Shared) -> Value {
    let mut out = serde_json::Map::new();
    for v in Vendor::ALL {
        let faults = lock(&shared.faults[v.index()]).faults.clone();
        out.insert(v.name().to_string(), serde_json::to_value(faults).unwrap_or(Value::Null));
    }
    Value::Object(out)
}

async fn admin_stats(State(ctx): State<Ctx>) -> Response {
    let stats = ctx.shared.stats().clone();
    Json(stats).into_response()
}

async fn admin_reset_stats(State(ctx): State<Ctx>) -> StatusCode {
    *ctx.shared.stats() = Stats::default();
    StatusCode::NO_CONTENT
}

async fn admin_get_faults(State(ctx): State<Ctx>) -> Response {
    json_response(StatusCode::OK, &faults_json(&ctx.shared))
}

async fn admin_put_faults(State(ctx): State<Ctx>, Query(q): Query<VendorQuery>, body: axum::body::Bytes) -> Response {
    let vendor = match q.vendor.as_deref().map(str::parse::<Vendor>).transpose() {
        Ok(v) => v,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
    };
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return json_response(StatusCode::BAD_REQUEST, &json!({"error": format!("invalid Faults JSON: {e}")}));
        }
    };
    ctx.shared.set_faults(vendor, &faults);
    json_response(StatusCode::OK, &faults_json(&ctx.shared))
}

async fn admin_people(State(ctx): State<Ctx>) -> Response {
    Json(&ctx.shared.people).into_response()
}

async fn admin_info(State(ctx): State<Ctx>) -> Response {
    json_response(StatusCode::OK, &crate::info_json(&ctx.shared))
}

async fn admin_expire_tokens(State(ctx): State<Ctx>) -> StatusCode {
    lock(&ctx.shared.sage).expire_all();
    StatusCode::NO_CONTENT
}

async fn admin_accept_invites(State(ctx): State<Ctx>) -> Response {
    let n = lock(&ctx.shared.brex).accept_invites();
    json_response(StatusCode::OK, &json!({"activated": n}))
}

/// `/_sandbox/...`: no auth, no faults, not counted. Loopback only, like everything here.
pub(crate) fn admin_router(ctx: Ctx) -> Router {
    Router::new()
        .route("/_sandbox/stats", get(admin_stats).delete(admin_reset_stats))
        .route("/_sandbox/faults", get(admin_get_faults).put(admin_put_faults))
        .route("/_sandbox/people", get(admin_people))
        .route("/_sandbox/info", get(admin_info))
        .route("/_sandbox/sage/expire-tokens", post(admin_expire_tokens))
        .route("/_sandbox/brex/accept-invites", post(admin_accept_invites))
        .route("/_sandbox/echo", axum::routing::any(admin_echo))
        .with_state(ctx)
}

/// Adds the shared layers around a vendor's routes, then the admin routes beside them.
pub(crate) fn finish(vendor_routes: Router<Ctx>, ctx: Ctx) -> Router {
    vendor_routes
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), echo_or_redirect))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), inject_faults))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), count))
        .with_state(ctx.clone())
        .merge(admin_router(ctx))
}

pub(crate) fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn limiter_window() {
        let mut l = Limiter::new(RateLimit { requests: 2, per: Duration::from_secs(10) });
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let wait = l.check("a").unwrap_err();
        assert!((1..=10).contains(&wait));
        assert!(l.check("b").is_ok(), "keys are independent");
    }

    #[test]
    fn form_decoding() {
        let pairs = parse_form("a=1+2&b=%7B%22x%22%3A1%7D&c");
        assert_eq!(form_value(&pairs, "a"), Some("1 2"));
        assert_eq!(form_value(&pairs, "b"), Some("{\"x\":1}"));
        assert_eq!(form_value(&pairs, "c"), Some(""));
    }
}
