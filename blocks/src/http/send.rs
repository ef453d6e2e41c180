//! Sending: one exchange ([`exchange`]: send, read the answer bounded, note `Retry-After`
//! and the trace id, classify what went wrong), and the API block's send on top of it
//! ([`send`]: authentication, paging, the answer parsed and scrubbed of secrets).
//!
//! Authentication is added here from the credential, at the last moment, so the rendered
//! request that the engine journals never holds a secret.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rate::Permit;
use super::retry::Outcome;
use crate::credential::Credential;
use crate::kinds::api::RenderedRequest;
use crate::paging::PageTrail;
use crate::preset::Paginate;
use crate::redact;

/// The largest response body read into memory; larger answers fail the step.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What came back from the vendor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    /// Parsed JSON, or the text as a JSON string when the body is not JSON.
    pub body: Value,
    /// The vendor's trace or request id, for support tickets (e.g. `X-Brex-Trace-Id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// `Retry-After`, in seconds, when the vendor sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    pub elapsed_ms: u64,
    /// How many pages were fetched (1 without pagination).
    pub pages: u32,
}

impl HttpResponse {
    /// The answer, as far as sending the request again is concerned.
    pub fn outcome(&self) -> Outcome {
        Outcome::Answered { status: self.status, retry_after: self.retry_after_secs.map(Duration::from_secs) }
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendErrorKind {
    Timeout,
    Connect,
    BodyTooLarge,
    /// The vendor's pages looped or passed a cap: sending again would do the same.
    Paging,
    /// The vendor redirected to another origin; the request was not followed there.
    Redirect,
    /// The request could not be built (a URL that does not parse, say): it never left.
    Request,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendError {
    pub kind: SendErrorKind,
    pub message: String,
}

impl SendError {
    /// Timeouts and connection failures may succeed on a second try; the rest would fail
    /// the same way.
    pub fn outcome(&self) -> Outcome {
        match self.kind {
            SendErrorKind::Timeout | SendErrorKind::Connect | SendErrorKind::Other => Outcome::NoAnswer,
            SendErrorKind::BodyTooLarge | SendErrorKind::Paging | SendErrorKind::Redirect | SendErrorKind::Request => {
                Outcome::Final
            }
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Sends `request` (following every page when `paginate` is given) and reads the answer.
/// The caller takes the rate limiter's permit for the first request (so it can give up
/// the wait); every further page takes its own from the same limiter, so a long listing
/// keeps to the vendor's limit too.
pub async fn send(
    client: &reqwest::Client,
    credential: Option<&Credential>,
    request: &RenderedRequest,
    paginate: Option<&Paginate>,
    timeout: Option<Duration>,
    first_permit: Option<Permit>,
) -> Result<HttpResponse, SendError> {
    let started = Instant::now();
    let url = match credential {
        Some(c) => c.resolve_url(&request.url),
        None => request.url.clone(),
    };
    let Some(p) = paginate else {
        let mut resp = send_once(client, credential, request, &url, timeout).await?;
        drop(first_permit);
        resp.elapsed_ms = started.elapsed().as_millis() as u64;
        return Ok(resp);
    };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut trail = PageTrail::new(p.limits);
    let limiter = first_permit.as_ref().map(|permit| permit.limiter().clone());
    let mut permit = first_permit;
    loop {
        let mut page_url = url.clone();
        let mut params = Vec::new();
        if let (Some(name), Some(limit)) = (&p.limit_param, p.limit) {
            params.push(format!("{name}={limit}"));
        }
        if let Some(c) = &cursor {
            params.push(format!("{}={}", p.cursor_param, encode(c)));
        }
        if !params.is_empty() {
            page_url.push(if page_url.contains('?') { '&' } else { '?' });
            page_url.push_str(&params.join("&"));
        }
        if pages > 0
            && let Some(limiter) = &limiter
        {
            permit = Some(limiter.acquire().await);
        }
        let resp = send_once(client, credential, request, &page_url, timeout).await?;
        // This page's answer is in: it counts from now on, and the next takes its own permit.
        permit.take();
        pages += 1;
        if !(200..300).contains(&resp.status) {
            // A failed page is the step's answer: the caller sees the vendor's error.
            return Ok(HttpResponse { elapsed_ms: started.elapsed().as_millis() as u64, pages, ..resp });
        }
        let before = items.len();
        if let Some(Value::Array(page)) = resp.body.get(&p.items) {
            items.extend(page.iter().cloned());
        }
        cursor = resp.body.get(&p.next_cursor).and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_string);
        trail.page(items.len() - before, cursor.as_deref()).map_err(|e| SendError {
            kind: SendErrorKind::Paging,
            message: e
                .describe("in the preset's `paginate` (a preset file in HOME/presets overrides the built-in one)"),
        })?;
        if cursor.is_none() {
            let mut body = serde_json::Map::new();
            body.insert(p.items.clone(), Value::Array(items));
            return Ok(HttpResponse {
                status: resp.status,
                body: Value::Object(body),
                trace_id: resp.trace_id,
                retry_after_secs: None,
                elapsed_ms: started.elapsed().as_millis() as u64,
                pages,
            });
        }
    }
}

async fn send_once(
    client: &reqwest::Client,
    credential: Option<&Credential>,
    request: &RenderedRequest,
    url: &str,
    timeout: Option<Duration>,
) -> Result<HttpResponse, SendError> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| SendError {
        kind: SendErrorKind::Request,
        message: format!("`{}` is not an HTTP method", request.method),
    })?;
    let mut builder = client.request(method, url);
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    for (k, v) in &request.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    if let Some(c) = credential {
        // Whatever comes back is scrubbed of this credential, so register it before it leaves.
        redact::process().add_credential(c);
        builder = c.apply(builder);
    }
    if let Some(body) = &request.body {
        builder = builder.body(serde_json::to_vec(body).unwrap_or_default());
    }
    let reply = exchange(builder).await?;
    // A vendor may echo the credential (401 bodies often do): nothing downstream sees it.
    let mut body = parse_body(&reply.body);
    redact::process().scrub_value(&mut body);
    Ok(HttpResponse {
        status: reply.status,
        body,
        trace_id: reply.trace_id,
        retry_after_secs: reply.retry_after.map(|d| d.as_secs()),
        elapsed_ms: 0,
        pages: 1,
    })
}

/// An HTTP answer as it came, its body read in full (at most [`MAX_BODY_BYTES`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// `Retry-After` in seconds, when the vendor sent one.
    pub retry_after: Option<Duration>,
    /// The vendor's trace or request id (`X-Brex-Trace-Id`, `X-Request-Id`), scrubbed.
    pub trace_id: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends one request and reads the answer, bounded. Every vendor call ends up here, so
/// what is read, how long it may be and how a failure is named are decided once.
pub async fn exchange(request: reqwest::RequestBuilder) -> Result<Reply, SendError> {
    let resp = request.send().await.map_err(classify)?;
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let trace_id = header("x-brex-trace-id").or_else(|| header("x-request-id"));
    let trace_id = trace_id.map(|t| redact::process().scrub(&t).into_owned());
    let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
    let body = read_bounded(resp).await?;
    Ok(Reply { status, retry_after, trace_id, body })
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, SendError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if out.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(SendError {
                kind: SendErrorKind::BodyTooLarge,
                message: format!("the response body is larger than {} MiB; refusing to read it", MAX_BODY_BYTES >> 20),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// JSON when it parses, otherwise the text (lossy UTF-8) as a JSON string.
pub fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn classify(e: reqwest::Error) -> SendError {
    let kind = if e.is_redirect() {
        SendErrorKind::Redirect
    } else if e.is_builder() {
        SendErrorKind::Request
    } else if e.is_timeout() {
        SendErrorKind::Timeout
    } else if e.is_connect() {
        SendErrorKind::Connect
    } else {
        SendErrorKind::Other
    };
    let message = super::redirect_refusal(&e).unwrap_or_else(|| chain(&e));
    // reqwest puts the URL in its message; auth travels in headers, but a record value in
    // the URL may still be a secret.
    SendError { kind, message: redact::process().scrub(&message).into_owned() }
}

/// reqwest hides the useful part (e.g. "connection refused") in the source chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = s.source();
    }
    message
}

/// The vendor's own words from an error body, in the shapes Brex, Expensify, Salesforce
/// and most JSON APIs use; falls back to a bounded excerpt of the text.
pub fn vendor_message(body: &Value) -> Option<String> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    match body {
        Value::Null => None,
        Value::Object(m) => {
            let message = text(m.get("message"))
                .or_else(|| text(m.get("responseMessage")))
                .or_else(|| text(m.get("error_description")))
                .or_else(|| m.get("error").and_then(|e| text(e.get("message")).or_else(|| text(Some(e)))));
            let code = text(m.get("code")).or_else(|| text(m.get("type")));
            match (message, code) {
                (Some(msg), Some(code)) if !msg.contains(&code) => Some(format!("{msg} ({code})")),
                (Some(msg), _) => Some(msg),
                (None, Some(code)) => Some(code),
                (None, None) => Some(excerpt(&body.to_string(), 300)),
            }
        }
        Value::Array(items) => items.first().and_then(|first| {
            let msg = text(first.get("message"))?;
            Some(match text(first.get("errorCode")) {
                Some(code) => format!("{msg} ({code})"),
                None => msg,
            })
        }),
        Value::String(s) => Some(excerpt(s.trim(), 300)),
        other => Some(other.to_string()),
    }
}

/// At most `max` characters of `s`, marked when cut.
pub fn excerpt(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}… ({} bytes in all)", s.len())
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
