//! The shapes the API takes and answers, one type per body, query and answer. The router
//! reads and writes them, the CLI's client for `roster serve` sends and reads them, and
//! the CLI prints them when it reads the store itself, so the three cannot drift apart.

use std::collections::BTreeMap;

use roster_engine::model::{CredentialKind, JournalEntry, RunState, RunTrigger};
use roster_engine::run::DryStep;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use roster_engine::credentials::{CredentialUpdate, NewCredential};
pub use roster_engine::model::{Record, SyncSession};
pub use roster_engine::records::ImportReport;
pub use roster_engine::service::BatchStart;

/// The record field a person is looked up by when a request names none.
fn email() -> String {
    "email".into()
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ---- requests -------------------------------------------------------------------------

/// A file's text the CLI sends for a workflow or integration file serve has not loaded
/// (compiled with serve's presets and credentials), with the path it names in errors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SentFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `POST /v1/workflows/{name}/runs`: one run for one person.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartRun {
    /// The person: their value of `key`, or their record id.
    pub user: String,
    #[serde(default = "email")]
    pub key: String,
    #[serde(flatten)]
    pub sent: SentFile,
}

/// `POST /v1/workflows/{name}/dry-run`: one person (`user`), or the batch (`all`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRunRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default = "email")]
    pub key: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub all: bool,
    #[serde(flatten)]
    pub sent: SentFile,
}

/// `POST /v1/integrations/{name}/sync`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncRequest {
    /// A test run writes nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub test: bool,
    #[serde(flatten)]
    pub sent: SentFile,
}

/// `POST /v1/records/import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportRequest {
    pub rows: Vec<Map<String, Value>>,
    #[serde(default = "email")]
    pub key: String,
}

/// `GET /v1/runs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Only runs with this trigger (`batch:<id>`, `manual`, `schedule:<time>`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<RunTrigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default = "email")]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// How many runs `GET /v1/runs` answers when the query sets no limit.
pub const DEFAULT_RUN_LIMIT: usize = 50;

/// `GET /v1/records` and `GET /v1/records/{key}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default = "email")]
    pub key: String,
}

/// `GET /v1/sync/sessions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// How many sessions `GET /v1/sync/sessions` answers when the query sets no limit.
pub const DEFAULT_SESSION_LIMIT: usize = 20;

// ---- answers --------------------------------------------------------------------------

/// Every error: `{"error": "..."}` with the status saying which kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `ok`, or `stopping` while a shutdown lets runs reach their next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Ok,
    Stopping,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub status: ServiceState,
}

/// `GET /v1/status`: the service's state, the queue and what is loaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub status: ServiceState,
    pub queued: usize,
    pub workflows: usize,
    pub integrations: usize,
}

/// A loaded workflow as `workflows list` and `GET /v1/workflows` show it: what starts it
/// and, for a schedule, when it fires next (RFC 3339 UTC).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowView {
    pub name: String,
    pub description: String,
    pub hash: String,
    pub file: String,
    pub trigger: String,
    pub next_fire_at: Option<String>,
}

/// A loaded integration: its sync schedule and when it syncs next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntegrationView {
    pub name: String,
    pub connector: String,
    pub schedule: String,
    pub next_sync_at: Option<String>,
}

/// The short form of a run, in listings (CLI and API alike).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub workflow: String,
    pub record: String,
    pub state: RunState,
    pub trigger: RunTrigger,
    pub created_at: String,
    pub error: Option<String>,
    /// A waiting run's timer: when it goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<String>,
}

/// A run with its journal, as `runs show --json` and `GET /v1/runs/{id}` print it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDetail {
    pub run_id: Uuid,
    pub workflow: String,
    pub workflow_hash: String,
    pub record: String,
    pub record_id: Uuid,
    pub trigger: RunTrigger,
    pub today: Option<String>,
    pub state: RunState,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// A waiting run's timer: when it goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<String>,
    pub steps: Vec<JournalEntry>,
}

/// `POST /v1/workflows/{name}/runs` when the run was queued (202).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStarted {
    pub run_id: Uuid,
    pub state: RunState,
    pub workflow: String,
    pub record: String,
}

/// The only state a [`Refused`] answer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusedState {
    Refused,
}

/// The begin rules do not accept the person: what `roster run` prints (exit 1), and the
/// API's 422 answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refused {
    pub workflow: String,
    pub record: String,
    pub state: RefusedState,
    pub error: String,
}

/// What starting a run answers: queued, or refused by the rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StartAnswer {
    Refused(Refused),
    Started(RunStarted),
}

/// A dry run for one person: the steps that would run, sending and writing nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRunPreview {
    pub workflow: String,
    pub record: String,
    pub dry_run: bool,
    pub steps: Vec<DryStep>,
}

/// A one-person dry run's answer: its preview, or the rules' refusal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DryRunAnswer {
    Refused(Refused),
    Preview(DryRunPreview),
}

/// One person of a batch preview.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersonPreview {
    pub record: String,
    pub record_id: Uuid,
    pub steps: Vec<DryStep>,
}

/// A dry run of a batch: every person the rules accept now, previewed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchPreview {
    pub workflow: String,
    pub dry_run: bool,
    pub runs: usize,
    pub skipped: usize,
    pub people: Vec<PersonPreview>,
}

/// `POST /v1/runs/{id}/cancel`: the run's summary; `cancelling` (202) while a worker runs
/// it, which ends it cancelled before its next step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelAnswer {
    #[serde(flatten)]
    pub run: RunSummary,
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancelling: bool,
}

/// `POST /v1/runs/prune`: delete finished runs older than `older_than` (`90d`, `12w`, `36h`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneRequest {
    pub older_than: String,
}

/// What a prune did: how many finished runs went, and the cut-off they finished before.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneAnswer {
    pub pruned: usize,
    pub before: String,
}

/// One record in `GET /v1/records`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordRow {
    pub id: Uuid,
    pub fields: Map<String, Value>,
    pub version: u64,
}

/// A credential as `credentials list` shows it: never a secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialView {
    pub name: String,
    pub kind: CredentialKind,
    pub base_url: String,
    /// The limit every run shares: its own, else the vendor's documented one.
    pub rate_limit: Option<String>,
    pub timeout: String,
    pub settings: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: Option<String>,
}

/// `DELETE /v1/credentials/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Removed {
    pub removed: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_answer_is_told_apart_by_its_fields() {
        let refused = r#"{"workflow":"w","record":"a@x","state":"refused","error":"no"}"#;
        assert!(matches!(serde_json::from_str(refused).unwrap(), StartAnswer::Refused(_)));
        let started =
            r#"{"run_id":"0190f5a2-7b1c-7d3e-8f00-0123456789ab","state":"queued","workflow":"w","record":"a@x"}"#;
        let StartAnswer::Started(run) = serde_json::from_str(started).unwrap() else { panic!("a started run") };
        assert_eq!(serde_json::to_string(&run).unwrap(), started, "written back as read");
    }

    #[test]
    fn cancelling_is_only_written_when_true() {
        let run = RunSummary {
            run_id: Uuid::nil(),
            workflow: "w".into(),
            record: "a@x".into(),
            state: RunState::Running,
            trigger: RunTrigger::ManualApi,
            created_at: "2027-03-01T09:00:00Z".into(),
            error: None,
            wake_at: None,
        };
        let mut answer = CancelAnswer { run, cancelling: false };
        let plain = serde_json::to_value(&answer).unwrap();
        assert_eq!(plain.get("cancelling"), None);
        assert_eq!(plain["trigger"], "manual:api");
        answer.cancelling = true;
        let text = serde_json::to_string(&answer).unwrap();
        assert!(text.ends_with(r#""error":null,"cancelling":true}"#), "{text}");
        assert!(serde_json::from_str::<CancelAnswer>(&text).unwrap().cancelling);
    }

    #[test]
    fn requests_leave_out_what_they_do_not_set() {
        let body = DryRunRequest { user: None, key: email(), all: true, sent: SentFile::default() };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"key":"email","all":true}"#);
        let read: DryRunRequest = serde_json::from_str(r#"{"user":"a@x"}"#).unwrap();
        assert_eq!((read.user.as_deref(), read.key.as_str(), read.all), (Some("a@x"), "email", false));
    }
}
