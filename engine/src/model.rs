//! The data Roster keeps: records, runs, their journals, change events, credentials.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use roster_blocks::http::HttpResponse;
use roster_blocks::kinds::api::RenderedRequest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use roster_blocks::credential::CredentialKind;
pub use roster_blocks::diag::UnknownName;

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
    pub kind: EventKind,
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

    /// Whether driving the run has nothing to do now: it has finished, or it waits for a
    /// person (`needs_attention`) or for its timer (`waiting`).
    pub fn is_resting(self) -> bool {
        self.is_finished() || matches!(self, RunState::NeedsAttention | RunState::Waiting)
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
    pub trigger: RunTrigger,
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
    /// fire's local date, else the machine's date; a wait moves it on to the day the wait
    /// ends. Runs stored without it use the clock's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub today: Option<String>,
    /// While running under a claim: who holds the run and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// While waiting: when the run is due to carry on (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<String>,
}

/// A claim on a running run. A claimer renews it by heartbeat; once `until` passes without
/// a renewal the claimer is taken for dead and another may claim the run and resume it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub owner: String,
    /// New for every claim, so a claimer that lost the run cannot write over its successor.
    pub token: Uuid,
    /// RFC 3339, to the millisecond.
    pub until: String,
}

impl Run {
    /// The run's `<<today>>` as a date; `None` for a run stored without one.
    pub fn today_date(&self) -> Option<jiff::civil::Date> {
        self.today.as_deref().and_then(|d| d.parse().ok())
    }

    /// When a waiting run goes on; `None` for a run that is not waiting.
    pub fn wakes_at(&self) -> Option<&str> {
        self.wake_at.as_deref().filter(|_| self.state == RunState::Waiting)
    }

    /// A waiting run whose timer is due at `now` (the real clock, as timers are). A timer
    /// that cannot be read counts as due, so no run rests for ever on it.
    pub fn wait_is_over(&self, now: jiff::Timestamp) -> bool {
        self.wakes_at().is_some_and(|at| at.parse::<jiff::Timestamp>().map_or(true, |at| at <= now))
    }

    /// Puts the run under a new claim of `owner`, running, until `until` unless renewed:
    /// the one way every claimer (a store's claim, a process driving its own run) takes it.
    pub fn claim(&mut self, owner: &str, until: jiff::Timestamp) {
        self.state = RunState::Running;
        self.lease =
            Some(Lease { owner: owner.to_string(), token: Uuid::new_v4(), until: crate::clock::rfc3339_millis(until) });
    }
}

impl Lease {
    /// Whether the claimer may still be working on the run at `now` (a time that cannot be
    /// read counts as expired, as the stores count it).
    pub fn is_live(&self, now: jiff::Timestamp) -> bool {
        self.until.parse::<jiff::Timestamp>().is_ok_and(|until| until > now)
    }
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
    /// A wait step's end: when the run goes on (on the real clock, as timers run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<String>,
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
    pub kind: CredentialKind,
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
    pub state: SyncState,
    /// A test run writes nothing.
    pub test: bool,
    /// The node that runs it (its sync lease names it too); none in sessions written
    /// before nodes were recorded, and for a sync run outside a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
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

/// What started a run. Stored and shown as text (`manual`, `event:created:<id>`,
/// `schedule:<time>`, `batch:<id>` …), which templates see as `run.trigger`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunTrigger {
    /// `roster run` on this machine.
    Manual,
    /// `POST /v1/workflows/{name}/runs`.
    ManualApi,
    /// A record change a workflow's `created`/`updated` trigger took.
    Event { kind: EventKind, id: Uuid },
    /// A schedule fire, by its fire time (RFC 3339, as the fire mark keeps it).
    Schedule(String),
    /// One run of a batch (`roster run WORKFLOW --all`).
    Batch(Uuid),
    /// A preview that is never stored.
    DryRun,
    /// The scope the begin rules are checked in before a run exists; never stored.
    Check,
}

impl RunTrigger {
    /// Started by a person asking for it, so the begin rules were checked just now.
    pub fn is_manual(&self) -> bool {
        matches!(self, RunTrigger::Manual | RunTrigger::ManualApi)
    }
}

impl fmt::Display for RunTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunTrigger::Manual => f.write_str("manual"),
            RunTrigger::ManualApi => f.write_str("manual:api"),
            RunTrigger::Event { kind, id } => write!(f, "event:{kind}:{id}"),
            RunTrigger::Schedule(at) => write!(f, "schedule:{at}"),
            RunTrigger::Batch(id) => write!(f, "batch:{id}"),
            RunTrigger::DryRun => f.write_str("dry-run"),
            RunTrigger::Check => f.write_str("check"),
        }
    }
}

impl FromStr for RunTrigger {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        let unknown = || UnknownName {
            what: "run trigger",
            given: s.to_string(),
            known: "manual, manual:api, event:<created|updated>:<id>, schedule:<time>, batch:<id>, dry-run, check"
                .into(),
        };
        let trigger = match s {
            "manual" => RunTrigger::Manual,
            "manual:api" => RunTrigger::ManualApi,
            "dry-run" => RunTrigger::DryRun,
            "check" => RunTrigger::Check,
            _ => match s.split_once(':') {
                Some(("event", rest)) => {
                    let (kind, id) = rest.split_once(':').ok_or_else(unknown)?;
                    RunTrigger::Event {
                        kind: kind.parse().map_err(|_| unknown())?,
                        id: id.parse().map_err(|_| unknown())?,
                    }
                }
                Some(("schedule", at)) if !at.is_empty() => RunTrigger::Schedule(at.to_string()),
                Some(("batch", id)) => RunTrigger::Batch(id.parse().map_err(|_| unknown())?),
                _ => return Err(unknown()),
            },
        };
        Ok(trigger)
    }
}

/// An enum stored and shown as one lower-case word per variant: the enum with serde, its
/// `as_str`, `Display`, and a `FromStr` whose error names the words there are.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $word)] $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownName { what: $what, given: s.to_string(), known: [$($word),+].join(", ") }),
                }
            }
        }
    };
}

named_enum!(
    /// How a record changed.
    EventKind, "event kind", { Created => "created", Updated => "updated" }
);

named_enum!(
    /// Where a sync session is: it never stays `Running` once it stopped (a session a crash
    /// interrupted is marked failed once its sync lease is gone: on the next start of a
    /// store one process owns, after the lease time on a shared one).
    SyncState, "sync state", { Running => "running", Succeeded => "succeeded", Failed => "failed" }
);

// Stored as its text, so stores written before the type existed read the same.
impl Serialize for RunTrigger {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunTrigger {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_trigger() -> Vec<RunTrigger> {
        let id = Uuid::parse_str("0190f5a2-7b1c-7d3e-8f00-0123456789ab").unwrap();
        vec![
            RunTrigger::Manual,
            RunTrigger::ManualApi,
            RunTrigger::Event { kind: EventKind::Created, id },
            RunTrigger::Event { kind: EventKind::Updated, id },
            RunTrigger::Schedule("2027-03-01T17:00:00Z".into()),
            RunTrigger::Batch(id),
            RunTrigger::DryRun,
            RunTrigger::Check,
        ]
    }

    #[test]
    fn every_trigger_round_trips_through_text_and_json() {
        for trigger in every_trigger() {
            let text = trigger.to_string();
            assert_eq!(text.parse::<RunTrigger>(), Ok(trigger.clone()), "{text}");
            let json = serde_json::to_value(&trigger).unwrap();
            assert_eq!(json, Value::String(text));
            assert_eq!(serde_json::from_value::<RunTrigger>(json).unwrap(), trigger);
        }
    }

    #[test]
    fn triggers_stored_before_the_type_parse() {
        let id = Uuid::parse_str("0190f5a2-7b1c-7d3e-8f00-0123456789ab").unwrap();
        let stored = [
            ("manual", RunTrigger::Manual),
            ("manual:api", RunTrigger::ManualApi),
            ("event:updated:0190f5a2-7b1c-7d3e-8f00-0123456789ab", RunTrigger::Event { kind: EventKind::Updated, id }),
            ("schedule:2027-03-01T17:00:00Z", RunTrigger::Schedule("2027-03-01T17:00:00Z".into())),
            ("batch:0190f5a2-7b1c-7d3e-8f00-0123456789ab", RunTrigger::Batch(id)),
        ];
        for (text, trigger) in stored {
            assert_eq!(text.parse::<RunTrigger>(), Ok(trigger.clone()));
            assert_eq!(trigger.to_string(), text, "written back byte for byte");
        }
    }

    #[test]
    fn a_run_stored_before_the_types_reads_and_writes_back_byte_for_byte() {
        let stored = r#"{"id":"0190f5a2-7b1c-7d3e-8f00-0123456789ab","workflow":"offboard","workflow_hash":"ab12","record_id":"0190f5a2-7b1c-7d3e-8f00-0123456789ac","record_label":"ann@acme.test","trigger":"event:updated:0190f5a2-7b1c-7d3e-8f00-0123456789ad","state":"queued","current":"card","steps":{},"next_seq":0,"created_at":"2027-03-01T09:00:00Z","updated_at":"2027-03-01T09:00:00Z","retries":0}"#;
        let run: Run = serde_json::from_str(stored).unwrap();
        assert!(matches!(run.trigger, RunTrigger::Event { kind: EventKind::Updated, .. }));
        // Step outputs moved to the journal: an old head's `steps` is read past and not
        // written back; everything else comes back byte for byte.
        assert_eq!(serde_json::to_string(&run).unwrap(), stored.replace(r#""steps":{},"#, ""));
        let session = r#"{"id":"0190f5a2-7b1c-7d3e-8f00-0123456789ab","integration":"brex","connector":"brex","state":"succeeded","test":false,"started_at":"2027-03-01T09:00:00Z","counts":{"fetched":1,"created":1,"updated":0,"unchanged":0,"filtered":0,"skipped":0,"failed":0,"missing":0},"failures":[],"samples":[]}"#;
        let read: SyncSession = serde_json::from_str(session).unwrap();
        assert_eq!(read.state, SyncState::Succeeded);
        assert_eq!(serde_json::to_string(&read).unwrap(), session);
    }

    #[test]
    fn an_unknown_trigger_says_what_is_known() {
        for text in
            ["", "cron", "event:deleted:0190f5a2-7b1c-7d3e-8f00-0123456789ab", "event:created", "batch:x", "schedule:"]
        {
            let err = text.parse::<RunTrigger>().unwrap_err();
            assert_eq!(err.given, text);
            assert!(err.to_string().starts_with(&format!("unknown run trigger `{text}` (known: manual, ")), "{err}");
        }
        let err = serde_json::from_str::<RunTrigger>("\"later\"").unwrap_err();
        assert!(err.to_string().contains("unknown run trigger `later`"), "{err}");
    }

    #[test]
    fn event_kinds_and_sync_states_round_trip() {
        for kind in [EventKind::Created, EventKind::Updated] {
            assert_eq!(kind.to_string().parse::<EventKind>(), Ok(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), Value::String(kind.to_string()));
            assert_eq!(serde_json::from_value::<EventKind>(Value::String(kind.to_string())).unwrap(), kind);
        }
        for state in [SyncState::Running, SyncState::Succeeded, SyncState::Failed] {
            assert_eq!(state.to_string().parse::<SyncState>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), Value::String(state.to_string()));
            assert_eq!(serde_json::from_value::<SyncState>(Value::String(state.to_string())).unwrap(), state);
        }
        assert_eq!(
            "deleted".parse::<EventKind>().unwrap_err().to_string(),
            "unknown event kind `deleted` (known: created, updated)"
        );
        assert_eq!(
            "interrupted".parse::<SyncState>().unwrap_err().to_string(),
            "unknown sync state `interrupted` (known: running, succeeded, failed)"
        );
    }
}
