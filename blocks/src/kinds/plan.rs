//! What a step does, decided without I/O: each block kind turns its compiled block and
//! the run's scope into a [`Plan`], and the engine's driver carries it out (sending,
//! journaling, moving the run on). A kind that sends requests also says, through
//! [`Exchange`], what each answer means.

use serde_json::{Map, Value};

use crate::http::retry::RetryPolicy;
use crate::http::{HttpResponse, SendError};
use crate::kinds::api::RenderedRequest;
use crate::preset::Paginate;
use crate::template::RenderError;

/// What one step does.
pub enum Plan<'a> {
    /// Follow one branch; no target ends the run, succeeded.
    Branch { branch: &'static str, target: Option<String> },
    /// Set record fields, then go on.
    Write { changes: Map<String, Value>, next: Option<String> },
    /// Send one request, or one per `for_each` item.
    Send(Calls<'a>),
    /// Wait, then go on at `next` (none ends the run, succeeded, once the wait is over).
    Wait { wake: Wake, next: Option<String> },
    /// End the run; `failed` ends it failed on purpose, with `message` when given.
    End { failed: bool, message: Option<String> },
    /// The step cannot go ahead (a missing variable, a bad value).
    Refuse(Refusal),
}

/// When a waiting run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// This long after the step.
    After(std::time::Duration),
    /// At this instant (one already past does not wait).
    At(jiff::Timestamp),
}

impl Wake {
    /// The instant the wait ends, for a step taken at `now` (the far future when a
    /// duration overflows the calendar, which the longest accepted never does).
    pub fn instant(self, now: jiff::Timestamp) -> jiff::Timestamp {
        match self {
            Wake::At(at) => at,
            Wake::After(d) => jiff::SignedDuration::try_from(d)
                .ok()
                .and_then(|d| now.checked_add(d).ok())
                .unwrap_or(jiff::Timestamp::MAX),
        }
    }
}

/// Why a step (or one of its calls) cannot go ahead, and how each kind of run words it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub message: String,
    /// The variable that was missing or null, when that is the problem.
    pub variable: Option<String>,
    pub in_run: Wording,
    pub in_dry_run: Wording,
    /// Where a real run goes instead of failing (an API block's `on_error`).
    pub on_error: Option<String>,
    /// The edge a dry run follows past the refusal along the success path; none stops it.
    pub dry_next: Option<String>,
}

/// How a refusal's message is put to a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wording {
    /// "workflow W, block B, record R: message", the context a template error needs.
    InContext,
    /// "B: message".
    AfterBlock,
    /// A fixed prefix, then the message.
    Prefixed(&'static str),
}

/// The requests a step sends.
pub struct Calls<'a> {
    /// How they are sent and what the answers mean.
    pub exchange: &'a dyn Exchange,
    /// One call per item of a `for_each` (possibly none) rather than one for the block.
    pub for_each: bool,
    pub calls: Vec<PlannedCall>,
}

/// One request of a step, rendered with the idempotency key the driver supplied.
pub struct PlannedCall {
    /// The `for_each` item: its index and value.
    pub item: Option<(usize, Value)>,
    pub request: Result<RenderedRequest, Refusal>,
}

impl PlannedCall {
    pub fn index(&self) -> Option<usize> {
        self.item.as_ref().map(|(i, _)| *i)
    }
}

/// What an answer to one call amounts to.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The record changes the answer maps to (`response`, or `error_response` when the
    /// status is not accepted).
    pub changes: Result<Map<String, Value>, RenderError>,
    /// Why the call failed when the status is not accepted.
    pub failure: Option<String>,
}

/// Where a run goes after a step's last call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// On to this block (none ends the run).
    Next(Option<String>),
    /// The run fails with this error.
    Fail(String),
}

/// How a kind that sends requests sends them, and what the answers mean.
pub trait Exchange: Sync {
    fn credential(&self) -> Option<&str>;
    fn paginate(&self) -> Option<&Paginate>;
    /// The block's own retry policy; `None` takes the engine's.
    fn retry(&self) -> Option<&RetryPolicy>;
    /// Sending a call again after a crash left its outcome unknown does no harm.
    fn safe_to_resend(&self) -> bool;
    /// What `response` to the call for `item` means, in `scope` (the step's scope).
    fn answer(&self, scope: &Value, item: Option<(usize, &Value)>, response: &HttpResponse) -> Answer;
    /// After the last call: where the run goes, given the failed calls' errors in order.
    fn leave(&self, failures: &[String]) -> Exit;
    /// One line on a failed attempt: "brex answered 503: …" or "brex could not be reached: …".
    fn describe(&self, sent: &Result<HttpResponse, SendError>) -> String;
    /// Where the run goes when every call succeeds (a dry run assumes they do).
    fn success_next(&self) -> Option<String>;
}
