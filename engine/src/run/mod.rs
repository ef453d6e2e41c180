//! Running a workflow over one record, durably.
//!
//! - [`Engine`] (this file): the run lifecycle — creating, driving, resuming, retrying and
//!   cancelling runs, stops and cancels between steps, and the scope templates see.
//! - `driver`: the one loop every run goes through (real runs, resumes, dry runs).
//! - `journal_policy`: which writes are durable and when.
//! - `transport`: sending a request (`HttpTransport`) or not (`DryTransport`).
//! - `steps`: the `steps` scope, rebuilt from the journal; `retry`: the retry decision;
//!   `credential_cache`: credentials opened for runs; `dry`: dry runs.
//!
//! The stored run is a small head (position, state, pending request); step outputs are in
//! the journal. A call that is safe to resend writes nothing before it goes out: if the
//! process dies first, the resume sends it again with the same idempotency key. A call that
//! is unsafe to resend is journaled as started, with the exact request as `pending`; after
//! a crash the run waits in `needs_attention` for a person to decide.

mod credential_cache;
mod driver;
mod dry;
mod journal_policy;
mod steps;
mod transport;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::civil::Date;
use roster_blocks::credential::Credential;
use roster_blocks::http;
pub use roster_blocks::http::retry::RetryPolicy;
use roster_blocks::kinds::begin::Trigger;
use serde_json::{Value, json};
use uuid::Uuid;

use self::credential_cache::{Connection, CredentialCache};
use self::driver::Driver;
pub use self::dry::DryStep;
pub use self::journal_policy::JOURNAL_BODY_LIMIT;
use self::journal_policy::{Persistence, StorePersistence};
use self::steps::Steps;
use self::transport::HttpTransport;
use crate::clock::{Clock, rfc3339_millis};
use crate::error::{Error, Result};
use crate::model::{JournalEntry, Record, Run, RunState, RunTrigger};
use crate::store::Store;
use crate::vault::Vault;
use crate::workflow::Workflow;

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
    transport: HttpTransport,
    persistence: StorePersistence,
    pub clock: Clock,
    pub retry: RetryPolicy,
    credentials: CredentialCache,
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
            persistence: StorePersistence(store.clone()),
            store,
            vault,
            transport: HttpTransport { client: http::client(Duration::from_secs(30), Duration::from_secs(10)) },
            clock,
            retry: RetryPolicy::default(),
            credentials: CredentialCache::default(),
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

    /// Takes back a cancel asked for `id`; whether there was one.
    fn take_cancel(&self, id: Uuid) -> bool {
        self.cancelling.lock().expect("cancelling").remove(&id)
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

    /// Opens a credential by name (cached for the life of the engine).
    pub async fn credential(&self, name: &str) -> Result<Arc<Credential>> {
        Ok(self.connection(name).await?.credential)
    }

    async fn connection(&self, name: &str) -> Result<Connection> {
        self.credentials.open(&self.store, self.vault.as_ref(), name).await
    }

    /// The vault credentials are sealed with, when a master key is available.
    pub fn vault(&self) -> Option<&Vault> {
        self.vault.as_ref()
    }

    /// Drops a credential from the cache after it changed or was removed, so the next
    /// run opens it (and its limits) afresh.
    pub fn forget_credential(&self, name: &str) {
        self.credentials.forget(name);
    }

    /// The rate limiter of a credential a run or sync opened, for a sync to share with the
    /// runs; `None` when the credential is not paced.
    pub fn rate_limiter(&self, credential: &str) -> Option<std::sync::Arc<roster_blocks::http::rate::RateLimiter>> {
        self.credentials.rate_limiter(credential)
    }

    /// What templates see before a run's first step: the record's fields at the top level
    /// (and under `record`), then `run`, `steps`, `now` and `today`, which win over
    /// same-named fields.
    pub fn scope(&self, run: &Run, record: &Record) -> Value {
        self.scope_of(run, &Steps::default(), record)
    }

    /// The scope of a step of `run`, after the steps whose outputs are in `steps`.
    fn scope_of(&self, run: &Run, steps: &Steps, record: &Record) -> Value {
        scope_with(record, &self.run_context(run, steps))
    }

    /// The part of a scope that comes from the run, not the record.
    fn run_context(&self, run: &Run, steps: &Steps) -> [(&'static str, Value); 4] {
        let today = run.today.clone().unwrap_or_else(|| self.clock.today().to_string());
        [
            (
                "run",
                json!({"id": run.id.to_string(), "workflow": run.workflow, "trigger": run.trigger, "started_at": run.created_at}),
            ),
            ("steps", steps.to_value()),
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
            let context = context.get_or_insert_with(|| {
                self.run_context(&self.blank_run(wf, record, RunTrigger::Check, today), &Steps::default())
            });
            rules.evaluate(&scope_with(record, context)).map_err(|e| Error::Refused(e.to_string()))
        }
    }

    /// The begin rules as `run` sees them before its first step (its own `today`).
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

    /// Creates a run already claimed by `owner` for `lease` (renewed by [`crate::service::hold_leases`]),
    /// for a process that drives it itself: no worker of any node sharing the store takes it.
    pub async fn create_run_held(
        &self,
        wf: &Workflow,
        record: &Record,
        trigger: RunTrigger,
        owner: &str,
        lease: Duration,
    ) -> Result<Run> {
        let mut run = self.new_run(wf, record, trigger, self.clock.today()).await?;
        // Leases are judged by the real clock, whatever `--now` says.
        run.claim(owner, jiff::Timestamp::now() + lease);
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
            next_seq: 0,
            pending: None,
            error: None,
            created_at: now.clone(),
            updated_at: now,
            finished_at: None,
            retries: 0,
            retry_block: None,
            today: Some(today.to_string()),
            lease: None,
            wake_at: None,
        }
    }

    /// A driver for `run` over the store and HTTP, its `steps` rebuilt from the journal.
    async fn driver<'a>(
        &'a self,
        wf: &'a Workflow,
        run: Run,
        observer: &'a mut dyn RunObserver,
    ) -> Result<Driver<'a, HttpTransport, StorePersistence>> {
        let steps = if run.next_seq == 0 {
            Steps::default()
        } else {
            Steps::from_journal(wf, &run, &self.persistence.journal(run.id).await?)
        };
        Ok(Driver {
            engine: self,
            wf,
            transport: &self.transport,
            persistence: &self.persistence,
            run,
            steps,
            observer,
            dry: None,
            deferred: Default::default(),
        })
    }

    /// Runs `run` to the end (or to `needs_attention`, or to a wait), journaling every step.
    /// A run that was under way when the process stopped carries on where its journal ends;
    /// a waiting run is left to its timer ([`Engine::wake_now`] cuts the wait short).
    pub async fn drive(&self, wf: &Workflow, run: Run, observer: &mut dyn RunObserver) -> Result<Run> {
        if run.state.is_resting() {
            return Ok(run);
        }
        let mut driver = self.driver(wf, run, observer).await?;
        driver.drive().await?;
        Ok(driver.run)
    }

    /// Sends a `needs_attention` run's pending request again, by a person's decision.
    pub async fn resume_attention(&self, wf: &Workflow, mut run: Run, observer: &mut dyn RunObserver) -> Result<Run> {
        if run.state != RunState::NeedsAttention {
            return Err(Error::Refused(format!("run {} is {}, not needs_attention", run.id, run.state.as_str())));
        }
        run.state = RunState::Running;
        run.error = None;
        let pending = run.pending.clone();
        let mut driver = self.driver(wf, run, observer).await?;
        if let Some(pending) = pending {
            driver.resend(&pending).await?;
        }
        driver.drive().await?;
        Ok(driver.run)
    }

    /// Runs a failed run again from its failed step, with the record as it is now.
    pub async fn retry(&self, wf: &Workflow, run: Run, observer: &mut dyn RunObserver) -> Result<Run> {
        let run = self.prepare_retry(wf, run).await?;
        self.drive(wf, run, observer).await
    }

    /// Puts a failed run back in the queue at its failed step (durably), for `drive` or
    /// a worker to carry on. The step's earlier journal entries stay, as history.
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
        run.current = Some(block.clone());
        run.retry_block = Some(block);
        run.retries += 1;
        run.error = None;
        run.pending = None;
        run.finished_at = None;
        run.state = RunState::Queued;
        run.updated_at = self.now();
        self.store.runs.save_step(&run, None, None).await?;
        Ok(run)
    }

    /// Ends a waiting run's wait now, by a person's decision: it goes back on the queue at
    /// the block after the wait (durably), for `drive` or a worker to carry on. Its
    /// `<<today>>` is the day it goes on, not the day the wait was to end.
    pub async fn wake_now(&self, wf: &Workflow, mut run: Run) -> Result<Run> {
        if run.state != RunState::Waiting {
            return Err(Error::Refused(format!("run {} is {}, not waiting", run.id, run.state.as_str())));
        }
        let today = day_of(wf, &run, self.clock.now());
        if run.today_date().is_none_or(|d| d > today) {
            run.today = Some(today.to_string());
        }
        run.state = RunState::Queued;
        run.wake_at = None;
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
        run.wake_at = None;
        run.pending = None;
        run.finished_at = Some(self.now());
        run.updated_at = self.now();
        self.store.runs.save_step(&run, None, None).await?;
        Ok(run)
    }
}

/// What templates and rules see: the record's fields at the top level (and under
/// `record`), then the run's context, which wins over same-named fields.
/// The record field `path` reads in a run's scope (built by [`scope_with`]), when it reads
/// one directly: `x`, unless a name of the run's own shadows it, or `record.x`.
pub fn record_field(path: &roster_blocks::path::Path) -> Option<&str> {
    use roster_blocks::path::Segment;
    const SHADOWING: [&str; 5] = ["record", "run", "steps", "now", "today"];
    match path.segments() {
        [Segment::Key(field)] if !SHADOWING.contains(&field.as_str()) => Some(field),
        [Segment::Key(record), Segment::Key(field)] if record == "record" => Some(field),
        _ => None,
    }
}

fn scope_with(record: &Record, context: &[(&'static str, Value)]) -> Value {
    let mut m = record.fields.clone();
    m.insert("record".into(), Value::Object(record.fields.clone()));
    for (key, value) in context {
        m.insert((*key).into(), value.clone());
    }
    Value::Object(m)
}

/// The date `at` falls on where `run`'s `<<today>>` is reckoned: a schedule fire's in its
/// schedule's zone, any other run's in the machine's (see [`Clock::today`]).
fn day_of(wf: &Workflow, run: &Run, at: jiff::Timestamp) -> Date {
    let zone = match (&run.trigger, &wf.begin.trigger) {
        // The zone's name was checked when the workflow loaded.
        (RunTrigger::Schedule(_), Trigger::Schedule(schedule)) => schedule.zone().unwrap_or(jiff::tz::TimeZone::UTC),
        _ => jiff::tz::TimeZone::system(),
    };
    at.to_zoned(zone).date()
}

/// The key a step's request carries: the same for every attempt and after a crash, new
/// for a new run and for a person's `runs retry`.
fn idempotency_key(run: &Run, block: &str, item: Option<usize>) -> String {
    let base = format!("roster-{}-{}-{}", run.id, block, item.unwrap_or(0));
    if run.retries == 0 { base } else { format!("{base}-r{}", run.retries) }
}
