//! Running a workflow over one record, durably.
//!
//! Every step is journaled: an API call is written as *started* (with the exact request)
//! before it goes out, and as *finished* together with its record changes and the run's
//! next position in one atomic, flushed write. If the process dies in between, the run's
//! `pending` request says what may have reached the vendor; on resume it is sent again
//! with the same idempotency key when that is safe, and otherwise the run waits in
//! `needs_attention` for a person to decide.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::civil::Date;
use roster_blocks::credential::Credential;
use roster_blocks::http::rate::{RateLimiter, RateLimits};
pub use roster_blocks::http::retry::RetryPolicy;
use roster_blocks::http::{self, HttpResponse, SendError, excerpt, vendor_message};
use roster_blocks::kinds::Block;
use roster_blocks::kinds::api::{ApiBlock, RenderedRequest, StepError, with_item};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::clock::{Clock, rfc3339_millis};
use crate::credentials;
use crate::error::{Error, Result};
use crate::model::{FieldChange, JournalEntry, Pending, Record, Run, RunState, RunTrigger, StepPhase};
use crate::store::{RecordWrite, Store};
use crate::vault::Vault;
use crate::workflow::Workflow;

/// The most of a response body the journal keeps.
pub const JOURNAL_BODY_LIMIT: usize = 64 * 1024;

/// Which call of a block is being made: its item, and whether it is the block's last
/// (whose write then also moves the run on).
#[derive(Clone, Copy)]
struct Call<'a> {
    block: &'a str,
    item: Option<usize>,
    last: bool,
}

/// A credential's shared rate limiter and its request timeout.
#[derive(Clone)]
struct CredentialLimits {
    rate: Option<Arc<RateLimiter>>,
    timeout: Duration,
}

/// What a person watching a run sees as each step finishes.
pub trait RunObserver: Send {
    fn step(&mut self, _entry: &JournalEntry) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl RunObserver for Quiet {}

/// Runs workflows. Cheap to share behind an `Arc`.
pub struct Engine {
    pub store: Store,
    vault: Option<Vault>,
    client: reqwest::Client,
    pub clock: Clock,
    pub retry: RetryPolicy,
    credentials: Mutex<HashMap<String, Arc<Credential>>>,
    /// Rate limit and request timeout of each credential opened so far.
    limits: Mutex<HashMap<String, CredentialLimits>>,
    /// One rate limiter per credential, shared by its runs and its syncs.
    rate_limits: RateLimits,
    /// Set on shutdown: runs stop before their next step (every `for_each` item and
    /// every retry attempt is one) and stay queued; a retry's backoff wakes up for it.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Runs a person asked to cancel while they run: each ends, cancelled, before its
    /// next step, exactly where a stop would park it.
    cancelling: Mutex<std::collections::HashSet<Uuid>>,
    cancel_asked: tokio::sync::Notify,
}

impl Engine {
    pub fn new(store: Store, vault: Option<Vault>, clock: Clock) -> Self {
        Self {
            store,
            vault,
            client: http::client(Duration::from_secs(30), Duration::from_secs(10)),
            clock,
            retry: RetryPolicy::default(),
            credentials: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            rate_limits: RateLimits::default(),
            stopping: tokio::sync::watch::Sender::new(false),
            cancelling: Mutex::new(std::collections::HashSet::new()),
            cancel_asked: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> String {
        rfc3339_millis(self.clock.now())
    }

    /// Asks every run to stop before its next step (they stay queued for the next start).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once [`Engine::stop`] is called (at once if it was).
    pub async fn stopped(&self) {
        let mut watch = self.stopping.subscribe();
        let _ = watch.wait_for(|stopping| *stopping).await;
    }

    /// Asks a run that is running to end, cancelled, before its next step (a call in
    /// flight finishes and is journaled; a retry's backoff ends at once).
    pub fn request_cancel(&self, id: Uuid) {
        self.cancelling.lock().expect("cancelling").insert(id);
        self.cancel_asked.notify_waiters();
    }

    fn cancel_requested(&self, id: Uuid) -> bool {
        self.cancelling.lock().expect("cancelling").contains(&id)
    }

    /// Whether `run` must not start another step: a stop, or a cancel asked for it.
    fn interrupted(&self, run: &Run) -> bool {
        self.is_stopping() || self.cancel_requested(run.id)
    }

    /// Resolves once `run` is interrupted (at once if it is).
    async fn interruption(&self, id: Uuid) {
        loop {
            let asked = self.cancel_asked.notified();
            tokio::pin!(asked);
            asked.as_mut().enable();
            if self.is_stopping() || self.cancel_requested(id) {
                return;
            }
            tokio::select! {
                _ = self.stopped() => return,
                _ = asked => {}
            }
        }
    }

    /// An interruption reached the run between two steps, nothing of it in flight: on a
    /// stop it waits in the queue and the next start carries on at the same step; on a
    /// cancel it ends, cancelled, its journal kept.
    async fn park(&self, run: &mut Run) -> Result<()> {
        run.updated_at = self.now();
        if self.cancelling.lock().expect("cancelling").remove(&run.id) {
            run.state = RunState::Cancelled;
            run.pending = None;
            run.finished_at = Some(self.now());
        } else {
            run.state = RunState::Queued;
        }
        self.save_run(run).await
    }

    /// Opens a credential by name (cached for the life of the engine).
    pub async fn credential(&self, name: &str) -> Result<Arc<Credential>> {
        if let Some(c) = self.credentials.lock().expect("credential cache").get(name) {
            return Ok(c.clone());
        }
        let stored = self.store.credentials.credential(name).await?.ok_or_else(|| {
            Error::NotFound(format!("no credential named `{name}` (add it with `roster credentials add {name} ...`)"))
        })?;
        let vault =
            self.vault.as_ref().ok_or_else(|| Error::Vault("no master key is available to open credentials".into()))?;
        let cred = Arc::new(credentials::open(vault, &stored)?);
        // Runs and syncs that opened the credential at the same moment get the first one's
        // limiter: two limiters for one credential would each let their own burst through.
        let rate = self.rate_limits.for_credential(name, credentials::rate_limit_of(&stored));
        let limits = CredentialLimits { rate, timeout: credentials::timeout_of(&stored) };
        self.limits.lock().expect("limits").entry(name.to_string()).or_insert(limits);
        Ok(self.credentials.lock().expect("credential cache").entry(name.to_string()).or_insert(cred).clone())
    }

    /// The rate limiter of a credential opened with [`Engine::credential`], for a sync to
    /// share with the runs; None when the credential is not paced.
    pub fn rate_limiter(&self, credential: &str) -> Option<Arc<RateLimiter>> {
        self.rate_limits.get(credential)
    }

    /// The vault credentials are sealed with, when a master key is available.
    pub fn vault(&self) -> Option<&Vault> {
        self.vault.as_ref()
    }

    /// Drops a credential from the cache after it changed or was removed, so the next
    /// run opens it (and its limits) afresh.
    pub fn forget_credential(&self, name: &str) {
        self.credentials.lock().expect("credential cache").remove(name);
        self.limits.lock().expect("limits").remove(name);
        self.rate_limits.forget(name);
    }

    /// What templates see: the record's fields at the top level (and under `record`),
    /// then `run`, `steps`, `now` and `today`, which win over same-named fields.
    pub fn scope(&self, run: &Run, record: &Record) -> Value {
        scope_with(record, &self.run_context(run))
    }

    /// The part of a scope that comes from the run, not the record.
    fn run_context(&self, run: &Run) -> [(&'static str, Value); 4] {
        let today = run.today.clone().unwrap_or_else(|| self.clock.today().to_string());
        [
            (
                "run",
                json!({"id": run.id.to_string(), "workflow": run.workflow, "trigger": run.trigger, "started_at": run.created_at}),
            ),
            ("steps", Value::Object(run.steps.clone())),
            ("now", Value::String(self.now())),
            ("today", Value::String(today)),
        ]
    }

    /// `None` when the begin rules accept the record today; otherwise the rule that failed.
    pub fn rules_refuse(&self, wf: &Workflow, record: &Record) -> Result<Option<String>> {
        self.rules_refuse_run(wf, &self.blank_run(wf, record, RunTrigger::Check, self.clock.today()), record)
    }

    /// A selection's check (`run --all`, schedule fires): whether the begin rules accept each
    /// record on `today`, in the same scope a run is checked with when it starts, so a rule
    /// on `record.email` or `run.workflow` selects whom it accepts then. The run's part of
    /// the scope is made once, and no reason is written for the many refused.
    pub fn rule_checker<'a>(&'a self, wf: &'a Workflow, today: Date) -> impl FnMut(&Record) -> Result<bool> + 'a {
        let mut context = None;
        move |record| {
            let Some(rules) = &wf.begin.rules else { return Ok(true) };
            let context =
                context.get_or_insert_with(|| self.run_context(&self.blank_run(wf, record, RunTrigger::Check, today)));
            rules.evaluate(&scope_with(record, context)).map_err(|e| Error::Refused(e.to_string()))
        }
    }

    /// The begin rules as `run` sees them (its own `today`).
    fn rules_refuse_run(&self, wf: &Workflow, run: &Run, record: &Record) -> Result<Option<String>> {
        let Some(rules) = &wf.begin.rules else { return Ok(None) };
        rules.first_failure(&self.scope(run, record)).map_err(|e| Error::Refused(e.to_string()))
    }

    /// Creates a queued run (durably) positioned at the begin block's `next`.
    pub async fn create_run(&self, wf: &Workflow, record: &Record, trigger: RunTrigger) -> Result<Run> {
        let run = self.new_run(wf, record, trigger, self.clock.today()).await?;
        self.store.runs.save_step(&run, None, None).await?;
        Ok(run)
    }

    /// Creates a queued run for which `<<today>>` is `today`, unless one with the same
    /// dedupe key already exists.
    pub async fn create_run_once(
        &self,
        wf: &Workflow,
        record: &Record,
        trigger: RunTrigger,
        dedupe: &str,
        today: Date,
    ) -> Result<Option<Run>> {
        let run = self.new_run(wf, record, trigger, today).await?;
        Ok(self.store.runs.create_once(&run, dedupe).await?.then_some(run))
    }

    async fn new_run(&self, wf: &Workflow, record: &Record, trigger: RunTrigger, today: Date) -> Result<Run> {
        self.store.workflows.put_source(&wf.hash, &wf.source).await?;
        Ok(self.blank_run(wf, record, trigger, today))
    }

    /// A queued run of `wf` for `record`, positioned at the begin block's `next`; not stored.
    fn blank_run(&self, wf: &Workflow, record: &Record, trigger: RunTrigger, today: Date) -> Run {
        let now = self.now();
        Run {
            id: Uuid::now_v7(),
            workflow: wf.name.clone(),
            workflow_hash: wf.hash.clone(),
            record_id: record.id,
            record_label: record.label(),
            trigger,
            state: RunState::Queued,
            current: Some(wf.begin.next.clone()),
            steps: Map::new(),
            next_seq: 0,
            pending: None,
            error: None,
            created_at: now.clone(),
            updated_at: now,
            finished_at: None,
            retries: 0,
            today: Some(today.to_string()),
            lease: None,
            wake_at: None,
        }
    }

    /// Runs `run` to the end (or to `needs_attention`), journaling every step.
    pub async fn drive(&self, wf: &Workflow, mut run: Run, observer: &mut dyn RunObserver) -> Result<Run> {
        if run.state.is_finished() {
            return Ok(run);
        }
        if run.state == RunState::NeedsAttention {
            return Ok(run);
        }
        run.state = RunState::Running;
        if run.next_seq == 0 && !run.trigger.is_manual() {
            // Queued by a trigger: the record may have changed (or an earlier run did the
            // work) while the run waited, so the rules get a second look before step one.
            if let Some(record) = self.store.records.record(run.record_id).await?
                && let Some(why) = self.rules_refuse_run(wf, &run, &record)?
            {
                run.state = RunState::Skipped;
                run.error = Some(format!("the record no longer matches the rules: {why}"));
                run.current = None;
                run.finished_at = Some(self.now());
                self.save_run(&run).await?;
                return Ok(run);
            }
        }
        if let Some(pending) = run.pending.clone() {
            self.settle_pending(wf, &mut run, pending, observer).await?;
            if run.state != RunState::Running {
                return Ok(run);
            }
        }
        while let Some(block_id) = run.current.clone() {
            if self.interrupted(&run) {
                self.park(&mut run).await?;
                return Ok(run);
            }
            let Some(block) = wf.block(&block_id) else {
                return self.fail(run, format!("the workflow has no block `{block_id}`")).await;
            };
            let record = self.store.records.record(run.record_id).await?.ok_or_else(|| {
                Error::NotFound(format!("record {} of run {} no longer exists", run.record_id, run.id))
            })?;
            let scope = self.scope(&run, &record);
            match block {
                Block::Condition(c) => {
                    let mut entry = self.entry(&mut run, &block_id, "condition", None, 1);
                    match c.decide(&scope) {
                        Ok((branch, target)) => {
                            entry.branch = Some(branch.to_string());
                            run.steps.insert(block_id.clone(), json!({"branch": branch}));
                            run.current = target.map(str::to_string);
                        }
                        Err(e) => {
                            entry.error = Some(self.step_error(wf, &block_id, &record, &e.to_string()));
                            run.current = None;
                            run.state = RunState::Failed;
                            run.error = entry.error.clone();
                        }
                    }
                    self.finish_entry(&mut entry);
                    self.save(&mut run, &entry, None).await?;
                    observer.step(&entry);
                }
                Block::Update(u) => {
                    let mut entry = self.entry(&mut run, &block_id, "update", None, 1);
                    let write = match u.render(&scope) {
                        Ok(changes) => {
                            entry.changes = diff(&record, &changes);
                            run.steps.insert(block_id.clone(), json!({"set": Value::Object(changes.clone())}));
                            run.current = u.next.clone();
                            Some(RecordWrite {
                                id: Some(record.id),
                                changes,
                                source: format!("workflow:{}", wf.name),
                                at: self.now(),
                            })
                        }
                        Err(e) => {
                            entry.error = Some(self.step_error(wf, &block_id, &record, &e.to_string()));
                            run.current = None;
                            run.state = RunState::Failed;
                            run.error = entry.error.clone();
                            None
                        }
                    };
                    self.finish_entry(&mut entry);
                    self.save(&mut run, &entry, write).await?;
                    observer.step(&entry);
                }
                Block::End(e) => {
                    let mut entry = self.entry(&mut run, &block_id, "end", None, 1);
                    run.current = None;
                    if e.fail {
                        run.state = RunState::Failed;
                        run.error = Some(e.message.clone().unwrap_or_else(|| format!("ended at `{block_id}`")));
                        entry.error = run.error.clone();
                    }
                    self.finish_entry(&mut entry);
                    self.save(&mut run, &entry, None).await?;
                    observer.step(&entry);
                }
                Block::Api(a) => self.api_block(wf, &mut run, &block_id, a, &record, scope, observer).await?,
            }
            if run.state != RunState::Running {
                break;
            }
        }
        if matches!(run.state, RunState::Queued | RunState::Cancelled) {
            return Ok(run); // parked by a stop or a cancel inside a block
        }
        // Usually the last step's own write already settled the run; this covers the rest.
        if run.finished_at.is_none() {
            if run.state == RunState::Running {
                run.state = RunState::Succeeded;
            }
            run.finished_at = Some(self.now());
            run.updated_at = self.now();
            self.save_run(&run).await?;
        }
        Ok(run)
    }

    /// Executes an API block: once, or once per `for_each` item, each item its own step.
    #[allow(clippy::too_many_arguments)]
    async fn api_block(
        &self,
        wf: &Workflow,
        run: &mut Run,
        block_id: &str,
        api: &ApiBlock,
        record: &Record,
        scope: Value,
        observer: &mut dyn RunObserver,
    ) -> Result<()> {
        let items = match api.items(&scope) {
            Ok(items) => items,
            Err(e) => {
                let mut entry = self.entry(run, block_id, "api", None, 1);
                entry.error = Some(self.step_error(wf, block_id, record, &e.to_string()));
                self.finish_entry(&mut entry);
                self.route_failure(run, api, entry.error.clone());
                self.save(run, &entry, None).await?;
                observer.step(&entry);
                return Ok(());
            }
        };
        let credential = match &api.credential {
            Some(name) => Some(self.credential(name).await?),
            None => None,
        };
        let work: Vec<(Option<usize>, Value)> = match &items {
            None => vec![(None, scope.clone())],
            Some(list) => list.iter().map(|(i, item)| (Some(*i), with_item(&scope, item, *i))).collect(),
        };
        // Calls finished before a crash are kept in the run; never send them again. (A block
        // runs once per run: the graph has no cycles, and `runs retry` clears its result.)
        let done = match &items {
            Some(_) => {
                run.steps.get(block_id).and_then(|s| s.get("items")).and_then(Value::as_array).map_or(0, Vec::len)
            }
            None => usize::from(run.steps.contains_key(block_id)),
        };
        // The last call's write also moves the run on, so a block costs one write per call.
        let total = work.len();
        let mut left = false;
        for (n, (item, item_scope)) in work.into_iter().enumerate().skip(done) {
            if self.interrupted(run) {
                // Items already done are kept in `run.steps`; the next start skips them.
                return self.park(run).await;
            }
            let last = n + 1 == total;
            let key = idempotency_key(run, block_id, item);
            match api.render(&item_scope, &key) {
                Ok(request) => {
                    let call = Call { block: block_id, item, last };
                    self.call(wf, run, api, credential.as_deref(), call, request, 1, observer).await?;
                    if matches!(run.state, RunState::Queued | RunState::Cancelled) {
                        return Ok(()); // parked by a stop or a cancel
                    }
                }
                Err(e) => {
                    let mut entry = self.entry(run, block_id, "api", item, 1);
                    let msg = match &e {
                        StepError::Render(_) => self.step_error(wf, block_id, record, &e.to_string()),
                        StepError::Invalid(m) => format!("{block_id}: {m}"),
                    };
                    entry.error = Some(msg.clone());
                    self.finish_entry(&mut entry);
                    let result = json!({"index": item, "error": msg});
                    record_result(run, block_id, item.is_some(), result);
                    if last {
                        self.leave_block(run, api, block_id);
                    }
                    self.save(run, &entry, None).await?;
                    observer.step(&entry);
                }
            }
            left = last;
        }
        if !left {
            self.leave_block(run, api, block_id);
            self.save_run(run).await?;
        }
        Ok(())
    }

    /// Sends one request with retries, journaling each attempt; the outcome lands in
    /// `run.steps` (and the record), where `leave_block` reads it.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        wf: &Workflow,
        run: &mut Run,
        api: &ApiBlock,
        credential: Option<&Credential>,
        call: Call<'_>,
        request: RenderedRequest,
        first_attempt: u32,
        observer: &mut dyn RunObserver,
    ) -> Result<()> {
        let (block_id, item) = (call.block, call.item);
        let mut attempt = first_attempt;
        let policy = api.retry.clone().unwrap_or_else(|| self.retry.clone());
        let first_sent = std::time::Instant::now();
        loop {
            // Every attempt is a new step: none starts once a stop is asked for. The
            // attempt is made again (same request, same idempotency key) on the next start.
            if self.interrupted(run) {
                return self.park(run).await;
            }
            let limits = credential.and_then(|c| self.limits.lock().expect("limits").get(&c.name).cloned());
            let permit = match limits.as_ref().and_then(|l| l.rate.clone()) {
                Some(rate) => tokio::select! {
                    permit = rate.acquire() => Some(permit),
                    _ = self.interruption(run.id) => return self.park(run).await,
                },
                None => None,
            };
            let mut entry = self.entry(run, block_id, "api", item, attempt);
            entry.request = Some(request.clone());
            run.pending = Some(Pending {
                seq: entry.seq,
                block: block_id.to_string(),
                item,
                attempt,
                request: request.clone(),
                started_at: entry.started_at.clone(),
            });
            // Journal "started" durably before anything leaves the process.
            self.save(run, &entry, None).await?;
            let timeout = limits.as_ref().map(|l| l.timeout);
            let sent = http::send(&self.client, credential, &request, api.paginate.as_ref(), timeout, permit).await;
            run.pending = None;
            let outcome = sent.as_ref().map_or_else(SendError::outcome, HttpResponse::outcome);
            let wait = policy.next_attempt_in(attempt, first_sent.elapsed(), outcome, api.safe_to_resend());
            if let Ok(wait) = wait {
                entry.status = sent.as_ref().ok().map(|r| r.status);
                entry.error = Some(describe_failure(api, &sent, credential));
                entry.response = sent.ok().map(bound_response);
                self.finish_entry(&mut entry);
                self.save(run, &entry, None).await?;
                observer.step(&entry);
                // The failed attempt is journaled as finished, so a stop during the
                // backoff leaves nothing half done.
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.interruption(run.id) => return self.park(run).await,
                }
                attempt += 1;
                continue;
            }
            return self.finish_call(wf, run, api, call, entry, sent, observer).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish_call(
        &self,
        wf: &Workflow,
        run: &mut Run,
        api: &ApiBlock,
        call: Call<'_>,
        mut entry: JournalEntry,
        sent: std::result::Result<HttpResponse, SendError>,
        observer: &mut dyn RunObserver,
    ) -> Result<()> {
        let (block_id, item) = (call.block, call.item);
        let record =
            self.store.records.record(run.record_id).await?.ok_or_else(|| Error::NotFound("record vanished".into()))?;
        let mut write = None;
        match sent {
            Ok(resp) => {
                entry.status = Some(resp.status);
                let accepted = api.accepts(resp.status);
                let mut scope = self.item_scope(api, run, &record, item);
                if let Value::Object(m) = &mut scope {
                    m.insert("response".into(), resp.body.clone());
                    m.insert("http".into(), json!({"status": resp.status}));
                }
                let mapped = if accepted { api.map_response(&scope) } else { api.map_error_response(&scope) };
                let mut result = json!({"index": item, "status": resp.status, "response": resp.body});
                match mapped {
                    Ok(changes) if !changes.is_empty() => {
                        entry.changes = diff(&record, &changes);
                        write = Some(RecordWrite {
                            id: Some(record.id),
                            changes,
                            source: format!("workflow:{}", wf.name),
                            at: self.now(),
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let msg = self.step_error(wf, block_id, &record, &e.to_string());
                        entry.error = Some(msg.clone());
                        result["error"] = Value::String(msg);
                    }
                }
                if !accepted {
                    let msg = describe_failure(api, &Ok(resp.clone()), None);
                    entry.error = Some(msg.clone());
                    result["error"] = Value::String(msg);
                }
                entry.response = Some(bound_response(resp));
                record_result(run, block_id, item.is_some(), result);
            }
            Err(e) => {
                let msg = format!("{block_id}: {}", e.message);
                entry.error = Some(msg.clone());
                record_result(run, block_id, item.is_some(), json!({"index": item, "error": msg}));
            }
        }
        self.finish_entry(&mut entry);
        if call.last {
            self.leave_block(run, api, block_id);
        }
        self.save(run, &entry, write).await?;
        observer.step(&entry);
        Ok(())
    }

    /// After a crash: decide what to do with a request that was journaled as started.
    async fn settle_pending(
        &self,
        wf: &Workflow,
        run: &mut Run,
        pending: Pending,
        observer: &mut dyn RunObserver,
    ) -> Result<()> {
        let Some(Block::Api(api)) = wf.block(&pending.block) else {
            run.pending = None;
            return Ok(());
        };
        if !api.safe_to_resend() {
            run.state = RunState::NeedsAttention;
            run.error = Some(format!(
                "`{} {}` (block {}) was sent and its answer was lost in a crash; it has no idempotency key and is not \
                 safe to repeat. Check the vendor, then `roster runs resume {}` to send it again or `roster runs cancel {}`",
                pending.request.method, pending.request.url, pending.block, run.id, run.id
            ));
            run.updated_at = self.now();
            self.save_run(run).await?;
            return Ok(());
        }
        self.resend(wf, run, api, &pending, observer).await
    }

    /// Sends a journaled request again (same request, same idempotency key) and moves the
    /// run on from its block; `for_each` blocks carry on with their next item in `drive`.
    async fn resend(
        &self,
        wf: &Workflow,
        run: &mut Run,
        api: &ApiBlock,
        pending: &Pending,
        observer: &mut dyn RunObserver,
    ) -> Result<()> {
        let credential = match &api.credential {
            Some(name) => Some(self.credential(name).await?),
            None => None,
        };
        let request = pending.request.clone();
        // A single call is the block's last; a `for_each` block goes on with its next item.
        let call = Call { block: pending.block.as_str(), item: pending.item, last: pending.item.is_none() };
        self.call(wf, run, api, credential.as_deref(), call, request, pending.attempt + 1, observer).await?;
        Ok(())
    }

    /// After an API block's last call: `next`, or `on_error` (or failure) if any call failed.
    fn leave_block(&self, run: &mut Run, api: &ApiBlock, block: &str) {
        let failures = failures_of(run.steps.get(block));
        match failures.first() {
            None => run.current = api.next.clone(),
            Some(first) => {
                let error = if failures.len() > 1 {
                    format!("{first} (and {} more)", failures.len() - 1)
                } else {
                    first.clone()
                };
                self.route_failure(run, api, Some(error));
            }
        }
    }

    /// Sends a `needs_attention` run's pending request again, by a person's decision.
    pub async fn resume_attention(&self, wf: &Workflow, mut run: Run, observer: &mut dyn RunObserver) -> Result<Run> {
        if run.state != RunState::NeedsAttention {
            return Err(Error::Refused(format!("run {} is {}, not needs_attention", run.id, run.state.as_str())));
        }
        run.state = RunState::Running;
        run.error = None;
        if let Some(pending) = run.pending.clone() {
            let Some(Block::Api(api)) = wf.block(&pending.block) else {
                return Err(Error::NotFound(format!("block {} is gone from the workflow", pending.block)));
            };
            self.resend(wf, &mut run, api, &pending, observer).await?;
        }
        self.drive(wf, run, observer).await
    }

    /// Runs a failed run again from its failed step, with the record as it is now.
    pub async fn retry(&self, wf: &Workflow, run: Run, observer: &mut dyn RunObserver) -> Result<Run> {
        let run = self.prepare_retry(wf, run).await?;
        self.drive(wf, run, observer).await
    }

    /// Puts a failed run back in the queue at its failed step (durably), for `drive` or
    /// a worker to carry on.
    pub async fn prepare_retry(&self, wf: &Workflow, mut run: Run) -> Result<Run> {
        if run.state != RunState::Failed {
            return Err(Error::Refused(format!(
                "run {} is {}; only failed runs can be retried",
                run.id,
                run.state.as_str()
            )));
        }
        let journal = self.store.runs.journal(run.id).await?;
        let Some(block) = journal.iter().rev().find(|e| e.error.is_some()).map(|e| e.block.clone()) else {
            return Err(Error::Refused(format!("run {} has no failed step to retry", run.id)));
        };
        if wf.block(&block).is_none() {
            return Err(Error::NotFound(format!("block {block} is gone from the workflow")));
        }
        run.steps.remove(&block);
        run.current = Some(block);
        run.retries += 1;
        run.error = None;
        run.pending = None;
        run.finished_at = None;
        run.state = RunState::Queued;
        run.updated_at = self.now();
        self.store.runs.save_step(&run, None, None).await?;
        Ok(run)
    }

    /// Marks a run cancelled, keeping its journal.
    pub async fn cancel(&self, mut run: Run) -> Result<Run> {
        if run.state.is_finished() {
            return Err(Error::Refused(format!("run {} is already {}", run.id, run.state.as_str())));
        }
        run.state = RunState::Cancelled;
        run.pending = None;
        run.finished_at = Some(self.now());
        run.updated_at = self.now();
        self.store.runs.save_step(&run, None, None).await?;
        Ok(run)
    }

    /// The scope a step (and, with `for_each`, its item) sees.
    fn item_scope(&self, api: &ApiBlock, run: &Run, record: &Record, item: Option<usize>) -> Value {
        let scope = self.scope(run, record);
        let Some(i) = item else { return scope };
        let items = api.items(&scope).ok().flatten().unwrap_or_default();
        match items.into_iter().find(|(idx, _)| *idx == i) {
            Some((_, it)) => with_item(&scope, &it, i),
            None => scope,
        }
    }

    fn route_failure(&self, run: &mut Run, api: &ApiBlock, error: Option<String>) {
        match &api.on_error {
            Some(target) => run.current = Some(target.clone()),
            None => {
                run.current = None;
                run.state = RunState::Failed;
                run.error = error;
            }
        }
    }

    async fn fail(&self, mut run: Run, error: String) -> Result<Run> {
        run.state = RunState::Failed;
        run.error = Some(error);
        run.current = None;
        run.finished_at = Some(self.now());
        self.store.runs.save_step(&run, None, None).await?;
        Ok(run)
    }

    /// "workflow W, block B, record R: …" — the context a strict template error needs.
    fn step_error(&self, wf: &Workflow, block: &str, record: &Record, message: &str) -> String {
        format!("workflow {}, block {block}, record {}: {message}", wf.name, record.label())
    }

    fn entry(&self, run: &mut Run, block: &str, kind: &str, item: Option<usize>, attempt: u32) -> JournalEntry {
        let seq = run.next_seq;
        run.next_seq += 1;
        JournalEntry {
            seq,
            block: block.to_string(),
            kind: kind.to_string(),
            phase: StepPhase::Started,
            item,
            attempt,
            request: None,
            status: None,
            response: None,
            branch: None,
            changes: BTreeMap::new(),
            error: None,
            started_at: self.now(),
            finished_at: None,
            duration_ms: None,
            started: Some(std::time::Instant::now()),
        }
    }

    fn finish_entry(&self, entry: &mut JournalEntry) {
        entry.phase = StepPhase::Finished;
        entry.finished_at = Some(self.now());
        // The vendor's own answer time when there is one; otherwise the step's, measured
        // on the monotonic clock (a resumed step has no start here and gets none).
        entry.duration_ms = match &entry.response {
            Some(resp) => Some(resp.elapsed_ms),
            None => entry.started.map(|t| t.elapsed().as_millis() as u64),
        };
    }

    /// Writes the run and one journal entry (and a record change) atomically and durably
    /// (the store scrubs every known secret from all three). The write (and its share of a
    /// group flush) is awaited, so async workers keep sending requests meanwhile.
    async fn save(&self, run: &mut Run, entry: &JournalEntry, write: Option<RecordWrite>) -> Result<()> {
        run.updated_at = self.now();
        // A step that ends the run settles it in the same write.
        if run.current.is_none() && run.pending.is_none() && run.state == RunState::Running {
            run.state = RunState::Succeeded;
        }
        if run.state.is_finished() && run.finished_at.is_none() {
            run.finished_at = Some(self.now());
        }
        self.store.runs.save_step(run, Some(entry), write).await?;
        Ok(())
    }

    /// Saves the run alone (position and state), durably.
    async fn save_run(&self, run: &Run) -> Result<()> {
        self.store.runs.save_step(run, None, None).await?;
        Ok(())
    }
}

/// What templates and rules see: the record's fields at the top level (and under
/// `record`), then the run's context, which wins over same-named fields.
fn scope_with(record: &Record, context: &[(&'static str, Value)]) -> Value {
    let mut m = record.fields.clone();
    m.insert("record".into(), Value::Object(record.fields.clone()));
    for (key, value) in context {
        m.insert((*key).into(), value.clone());
    }
    Value::Object(m)
}

/// The key a step's request carries: the same for every attempt and after a crash, new
/// for a new run and for a person's `runs retry`.
fn idempotency_key(run: &Run, block: &str, item: Option<usize>) -> String {
    let base = format!("roster-{}-{}-{}", run.id, block, item.unwrap_or(0));
    if run.retries == 0 { base } else { format!("{base}-r{}", run.retries) }
}

/// Appends a result under `steps.<block>`: the result itself for a single call, or one
/// element of `items` for `for_each`.
fn record_result(run: &mut Run, block: &str, for_each: bool, result: Value) {
    if !for_each {
        run.steps.insert(block.to_string(), result);
        return;
    }
    let entry = run.steps.entry(block.to_string()).or_insert_with(|| json!({"items": []}));
    if let Some(Value::Array(items)) = entry.get_mut("items") {
        items.push(result.clone());
    }
    if let Some(status) = result.get("status") {
        entry["status"] = status.clone();
    }
}

/// The error messages of a block's failed calls, in order.
fn failures_of(step: Option<&Value>) -> Vec<String> {
    let Some(step) = step else { return Vec::new() };
    let one = |v: &Value| v.get("error").and_then(Value::as_str).map(str::to_string);
    match step.get("items").and_then(Value::as_array) {
        Some(items) => items.iter().filter_map(one).collect(),
        None => one(step).into_iter().collect(),
    }
}

/// The record changes `changes` makes to `record`, field by field.
fn diff(record: &Record, changes: &Map<String, Value>) -> BTreeMap<String, FieldChange> {
    changes
        .iter()
        .filter(|(k, v)| record.fields.get(*k) != Some(*v))
        .map(|(k, v)| {
            (k.clone(), FieldChange { before: record.fields.get(k).cloned().unwrap_or(Value::Null), after: v.clone() })
        })
        .collect()
}

/// A response as the journal keeps it: the body cut to [`JOURNAL_BODY_LIMIT`].
fn bound_response(mut resp: HttpResponse) -> HttpResponse {
    let text = resp.body.to_string();
    if text.len() > JOURNAL_BODY_LIMIT {
        resp.body = Value::String(excerpt(&text, JOURNAL_BODY_LIMIT / 4));
    }
    resp
}

/// "brex answered 404: Not Found (USER_NOT_FOUND)" or the transport error.
fn describe_failure(
    api: &ApiBlock,
    sent: &std::result::Result<HttpResponse, SendError>,
    _c: Option<&Credential>,
) -> String {
    let vendor = api.credential.as_deref().unwrap_or("the server");
    match sent {
        Ok(resp) => match vendor_message(&resp.body) {
            Some(msg) => format!("{vendor} answered {}: {msg}", resp.status),
            None => format!("{vendor} answered {} with no message", resp.status),
        },
        Err(e) => format!("{vendor} could not be reached: {}", e.message),
    }
}

/// One step of a dry run: what would be sent or decided, with nothing sent or written.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DryStep {
    pub block: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RenderedRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub changes: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The step needs what an earlier API block answers, which a dry run cannot know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<String>,
    /// The step would fail in a real run (a missing variable, a bad value).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub would_fail: bool,
}

impl DryStep {
    /// Records why the step cannot be shown: waiting on an earlier response (`variable`
    /// under `steps.NAME` of an API block this dry run did not send), or a real failure.
    fn blocked(&mut self, run: &Run, variable: Option<&str>, failure: String) {
        let earlier = variable.and_then(|v| roster_blocks::path::Path::parse(v).ok()).and_then(|p| {
            match (p.root(), p.segments().get(1)) {
                ("steps", Some(roster_blocks::path::Segment::Key(name))) if run.steps.contains_key(name) => {
                    Some(name.clone())
                }
                _ => None,
            }
        });
        match earlier {
            Some(name) => {
                self.note = Some(format!("depends on the response of `{name}`"));
                self.depends_on = Some(name);
            }
            None => {
                self.note = Some(failure);
                self.would_fail = true;
            }
        }
    }
}

impl Engine {
    /// Renders every request the run would send along the success path, sending nothing
    /// and writing nothing. API answers are unknown, so later steps see them as absent.
    pub fn dry_run(&self, wf: &Workflow, record: &Record) -> Result<Vec<DryStep>> {
        let mut run = self.blank_run(wf, record, RunTrigger::DryRun, self.clock.today());
        run.state = RunState::Running;
        let mut record = record.clone();
        let mut out = Vec::new();
        let step = |block: &str, kind: &str| DryStep {
            block: block.to_string(),
            kind: kind.to_string(),
            item: None,
            credential: None,
            request: None,
            branch: None,
            changes: Map::new(),
            note: None,
            depends_on: None,
            would_fail: false,
        };
        let mut guard = 0;
        while let Some(id) = run.current.clone() {
            guard += 1;
            if guard > wf.blocks.len() + 1 {
                break;
            }
            let Some(block) = wf.block(&id) else { break };
            let scope = self.scope(&run, &record);
            match block {
                Block::Condition(c) => {
                    let mut s = step(&id, "condition");
                    match c.decide(&scope) {
                        Ok((branch, target)) => {
                            s.branch = Some(branch.into());
                            run.current = target.map(str::to_string);
                        }
                        Err(e) => {
                            s.blocked(&run, e.variable(), format!("cannot decide: {e}"));
                            run.current = None;
                        }
                    }
                    out.push(s);
                }
                Block::Update(u) => {
                    let mut s = step(&id, "update");
                    match u.render(&scope) {
                        Ok(changes) => {
                            for (k, v) in &changes {
                                record.fields.insert(k.clone(), v.clone());
                            }
                            s.changes = changes;
                        }
                        Err(e) => s.blocked(&run, e.variable(), self.step_error(wf, &id, &record, &e.to_string())),
                    }
                    run.current = u.next.clone();
                    out.push(s);
                }
                Block::End(_) => {
                    out.push(step(&id, "end"));
                    run.current = None;
                }
                Block::Api(a) => {
                    let items = match a.items(&scope) {
                        Ok(items) => items,
                        Err(e) => {
                            let mut s = step(&id, "api");
                            s.blocked(&run, e.variable(), format!("would fail: for_each: {e}"));
                            out.push(s);
                            run.current = a.next.clone();
                            continue;
                        }
                    };
                    let work: Vec<(Option<usize>, Value)> = match &items {
                        None => vec![(None, scope.clone())],
                        Some(list) if list.is_empty() => {
                            let mut s = step(&id, "api");
                            s.note = Some("no items (for_each over data an earlier step would fetch)".into());
                            out.push(s);
                            vec![]
                        }
                        Some(list) => list.iter().map(|(i, it)| (Some(*i), with_item(&scope, it, *i))).collect(),
                    };
                    for (item, item_scope) in work {
                        let mut s = step(&id, "api");
                        s.item = item;
                        s.credential = a.credential.clone();
                        let key = idempotency_key(&run, &id, item);
                        match a.render(&item_scope, &key) {
                            Ok(req) => s.request = Some(req),
                            Err(e) => s.blocked(&run, e.variable(), format!("would fail: {e}")),
                        }
                        out.push(s);
                    }
                    run.steps.insert(id.clone(), json!({"status": null, "response": null}));
                    run.current = a.next.clone();
                }
            }
        }
        Ok(out)
    }
}
