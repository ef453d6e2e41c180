//! The data Roster keeps: records, runs, their journals, change events, credentials.

use std::collections::BTreeMap;

use roster_blocks::http::HttpResponse;
use roster_blocks::kinds::api::RenderedRequest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A person.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: Uuid,
    pub fields: Map<String, Value>,
    /// Per field: which source last wrote it, and when.
    #[serde(default)]
    pub provenance: BTreeMap<String, Provenance>,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    /// `import`, `workflow:NAME`, `sync:INTEGRATION`.
    pub source: String,
    pub at: String,
}

impl Record {
    /// A short label for messages: the email when there is one, else the id.
    pub fn label(&self) -> String {
        for key in ["email", "username", "name"] {
            if let Some(Value::String(s)) = self.fields.get(key)
                && !s.is_empty()
            {
                return s.clone();
            }
        }
        self.id.to_string()
    }
}

/// One field's change: what it was and what it became.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FieldChange {
    pub before: Value,
    pub after: Value,
}

/// A record was created or changed; triggers consume these.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChangeEvent {
    pub id: Uuid,
    pub record_id: Uuid,
    /// `created` or `updated`.
    pub kind: String,
    pub source: String,
    pub changes: BTreeMap<String, FieldChange>,
    pub at: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Waiting,
    Succeeded,
    Failed,
    /// A step was sent and its outcome is unknown, and resending it is not safe.
    NeedsAttention,
    Cancelled,
    /// Queued by a trigger, but the record no longer matched the rules when it was its turn.
    Skipped,
}

impl RunState {
    pub fn is_finished(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Failed | RunState::Cancelled | RunState::Skipped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Waiting => "waiting",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::NeedsAttention => "needs_attention",
            RunState::Cancelled => "cancelled",
            RunState::Skipped => "skipped",
        }
    }
}

/// One workflow over one record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Run {
    pub id: Uuid,
    pub workflow: String,
    /// SHA-256 of the workflow file the run started with; the text is kept in the store.
    pub workflow_hash: String,
    pub record_id: Uuid,
    /// The record's label when the run started, for listings.
    pub record_label: String,
    /// `manual`, `event:<id>`, `schedule:<time>`, …
    pub trigger: String,
    pub state: RunState,
    /// The block the run is on (next to execute, or executing).
    pub current: Option<String>,
    // Step outputs (`steps.<block>` in templates) are not kept here: they live in the
    // journal and the engine rebuilds them when it (re)starts a run. Runs stored with a
    // `steps` field still load; serde skips it.
    /// Journal sequence number of the next step.
    pub next_seq: u32,
    /// A request that is unsafe to resend, journaled as started, whose outcome is not yet
    /// recorded. After a crash this says exactly what may have reached the vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// How many times a person retried the run (`roster runs retry`); part of the
    /// idempotency keys so a retry is a new request, not a replay of the failed one.
    #[serde(default)]
    pub retries: u32,
    /// The block the last `runs retry` restarted the run at: its journal entries from
    /// before that retry are history, not results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_block: Option<String>,
    /// The date `<<today>>` means for this run, fixed when it was queued: a schedule
    /// fire's local date, else the machine's date. Runs stored without it use the clock's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub today: Option<String>,
}

/// The request a run is waiting on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    pub seq: u32,
    pub block: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub attempt: u32,
    pub request: RenderedRequest,
    pub started_at: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepPhase {
    /// Written before a request that is unsafe to resend goes out.
    Started,
    Finished,
}

/// One step of a run's journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournalEntry {
    pub seq: u32,
    pub block: String,
    pub kind: String,
    pub phase: StepPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RenderedRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The response, its body cut to a bounded excerpt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changes: BTreeMap<String, FieldChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// This attempt failed and the call was tried again: not the call's result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retried: bool,
    /// Which `runs retry` of the run made this entry (0: before any).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub by_retry: u32,
    /// When the step started on the monotonic clock, for its duration (never stored: a
    /// wall clock can jump, and `--now` stands still).
    #[serde(skip)]
    pub started: Option<std::time::Instant>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A credential as stored: its public settings in clear, its secrets sealed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredCredential {
    pub name: String,
    pub kind: String,
    pub base_url: String,
    /// Non-secret settings (header name, username, token URL, client id …).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// XChaCha20-Poly1305 nonce + ciphertext of the secrets, base64.
    pub sealed: String,
    pub created_at: String,
    /// When `credentials update` last changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// One run of an integration: what it fetched, wrote and refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncSession {
    pub id: Uuid,
    pub integration: String,
    pub connector: String,
    /// `running`, `succeeded`, `failed`.
    pub state: String,
    /// A test run writes nothing.
    pub test: bool,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub counts: SyncCounts,
    /// Per-person problems (bounded), e.g. a malformed record or a duplicate key.
    #[serde(default)]
    pub failures: Vec<SyncFailure>,
    /// Why the whole session failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What a person reading the session must know, e.g. that nobody was marked missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The first raw payloads from the vendor, secrets redacted.
    #[serde(default)]
    pub samples: Vec<Value>,
    /// In a test run: the first records it would create or update.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview: Vec<Value>,
    /// The first people the preference did not let it write, with why (`no record with
    /// this email` for an update-only sync).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skips: Vec<SyncFailure>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncCounts {
    pub fetched: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub filtered: u64,
    pub skipped: u64,
    pub failed: u64,
    /// People no longer in the source, marked `<integration>_present = false`.
    pub missing: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncFailure {
    /// The source record's key or id, when it has one.
    pub who: String,
    pub reason: String,
}
