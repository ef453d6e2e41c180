//! The one loop that carries a run from block to block: real runs, resumes after a crash
//! or a person's decision, and dry runs all go through it. Each block kind plans its step
//! (`BlockKind::plan`, no I/O); the driver sends what the plan says through a
//! [`Transport`] and writes what [`journal_policy`](super::journal_policy) says through a
//! [`Persistence`]. A dry run is this driver with a transport that sends nothing and a
//! persistence that writes nothing.

use std::collections::BTreeMap;
use std::time::Instant;

use roster_blocks::http::{HttpResponse, SendError};
use roster_blocks::kinds::Block;
use roster_blocks::kinds::api::RenderedRequest;
use roster_blocks::kinds::plan::{Calls, Exchange, Exit, Plan, PlannedCall, Refusal, Wake, Wording};
use serde_json::{Map, Value};

use super::credential_cache::Connection;
use super::dry::DryStep;
use super::journal_policy::{
    BeforeSending, Deferred, Durability, Persistence, answer_durability, before_sending, bound_response,
};
use super::steps::{Steps, call_result};
use super::transport::Transport;
use super::{Engine, RunObserver, idempotency_key};
use crate::clock::{rfc3339, rfc3339_millis};
use crate::error::{Error, Result};
use crate::model::{FieldChange, JournalEntry, Pending, Record, Run, RunState, StepPhase};
use crate::store::RecordWrite;
use crate::workflow::Workflow;

/// What became of one call.
enum CallOutcome {
    Answered,
    /// The transport sends nothing (a dry run).
    Unsent,
    /// A stop or a cancel came first; the run is parked.
    Parked,
}

pub(crate) struct Driver<'a, T: Transport, P: Persistence> {
    pub engine: &'a Engine,
    pub wf: &'a Workflow,
    pub transport: &'a T,
    pub persistence: &'a P,
    pub run: Run,
    pub steps: Steps,
    pub observer: &'a mut dyn RunObserver,
    /// A dry run's steps as it shows them; `None` in a real run.
    pub dry: Option<Vec<DryStep>>,
    /// Finished steps not yet written (see [`journal_policy`](super::journal_policy)).
    pub deferred: Deferred,
}

impl<T: Transport, P: Persistence> Driver<'_, T, P> {
    /// Runs to the end (or to `needs_attention`, or until parked): the rules' second look
    /// for a run queued by a trigger, then a request left pending by a crash, then the blocks.
    pub async fn drive(&mut self) -> Result<()> {
        if self.run.state.is_resting() {
            return Ok(());
        }
        self.run.state = RunState::Running;
        if self.run.next_seq == 0 && !self.run.trigger.is_manual() {
            // Queued by a trigger: the record may have changed (or an earlier run did the
            // work) while the run waited, so the rules get a second look before step one.
            if let Some(record) = self.persistence.record(self.run.record_id).await?
                && let Some(why) = self.engine.rules_refuse_run(self.wf, &self.run, &record)?
            {
                self.run.state = RunState::Skipped;
                self.run.error = Some(format!("the record no longer matches the rules: {why}"));
                self.run.current = None;
                self.run.finished_at = Some(self.engine.now());
                return self.save(None).await;
            }
        }
        if let Some(pending) = self.run.pending.clone() {
            self.settle_pending(pending).await?;
            if self.run.state != RunState::Running {
                return Ok(());
            }
        }
        self.run_blocks().await
    }

    /// Executes blocks from `run.current` on until the run ends or is parked.
    pub async fn run_blocks(&mut self) -> Result<()> {
        let wf = self.wf;
        let mut visited = 0;
        while let Some(block_id) = self.run.current.clone() {
            if self.interrupted() {
                return self.park().await;
            }
            visited += 1;
            if self.dry.is_some() && visited > wf.blocks.len() + 1 {
                break;
            }
            let Some(block) = wf.block(&block_id) else {
                return self.fail(format!("the workflow has no block `{block_id}`")).await;
            };
            let record = record_of(self.persistence, &self.run, &self.deferred).await?;
            let scope = self.scope(&record);
            let run = &self.run;
            let plan = block.plan(&scope, &|item| idempotency_key(run, &block_id, item));
            match plan {
                Plan::Branch { branch, target } => {
                    let mut entry = self.entry(&block_id, block.kind(), None, 1);
                    entry.branch = Some(branch.to_string());
                    self.steps.branch(&block_id, branch);
                    self.run.current = target;
                    self.show(|s| s.branch = Some(branch.to_string()), &block_id, block.kind());
                    self.finish_step(entry, None, Durability::Deferred).await?;
                }
                Plan::Write { changes, next } => {
                    let mut entry = self.entry(&block_id, block.kind(), None, 1);
                    entry.changes = diff(&record, &changes);
                    self.steps.set(&block_id, changes.clone());
                    self.run.current = next;
                    self.show(|s| s.changes = changes.clone(), &block_id, block.kind());
                    let write = self.record_write(&record, changes);
                    self.finish_step(entry, Some(write), Durability::Deferred).await?;
                }
                Plan::End { failed, message } => {
                    let mut entry = self.entry(&block_id, block.kind(), None, 1);
                    self.run.current = None;
                    if failed {
                        self.run.state = RunState::Failed;
                        self.run.error = Some(message.unwrap_or_else(|| format!("ended at `{block_id}`")));
                        entry.error = self.run.error.clone();
                    }
                    self.show(|_| {}, &block_id, block.kind());
                    self.finish_step(entry, None, Durability::Deferred).await?;
                }
                Plan::Refuse(refusal) => self.refuse(block, &block_id, &record, refusal).await?,
                Plan::Send(calls) => self.send(block, &block_id, calls).await?,
                Plan::Wait { wake, next } => self.wait(block, &block_id, wake, next).await?,
            }
            if self.run.state != RunState::Running {
                break;
            }
        }
        if matches!(self.run.state, RunState::Queued | RunState::Cancelled | RunState::Waiting) {
            return Ok(()); // parked by a stop or a cancel inside a block, or resting until a time
        }
        // Usually the last step's own write already settled the run; this covers the rest.
        if self.run.finished_at.is_none() {
            if self.run.state == RunState::Running {
                self.run.state = RunState::Succeeded;
            }
            self.run.finished_at = Some(self.engine.now());
            self.save(None).await?;
        }
        Ok(())
    }

    /// A wait: the run rests, holding no worker, until `wake` and then goes on at `next`.
    /// Its one write (flushing the steps that wait with it) journals the step, moves the
    /// run on and sets its timer, so a crash either redoes the wait or finds it set; once
    /// the store's timer is due a claim takes the run at `next`. A wait that is already
    /// over, and a dry run's, go straight on.
    async fn wait(&mut self, block: &Block, block_id: &str, wake: Wake, next: Option<String>) -> Result<()> {
        let clock = self.engine.clock;
        let now = clock.now();
        let until = wake.instant(now);
        self.move_day_to(until);
        let mut entry = self.entry(block_id, block.kind(), None, 1);
        self.run.current = next;
        self.show(|s| s.wait_until = Some(rfc3339(until)), block_id, block.kind());
        if until <= now || self.dry.is_some() {
            self.steps.waited(block_id, &rfc3339(until));
            return self.finish_step(entry, None, Durability::Deferred).await;
        }
        let wake_at = rfc3339_millis(clock.real_instant(until));
        self.steps.waited(block_id, &wake_at);
        entry.wake_at = Some(wake_at.clone());
        self.run.state = RunState::Waiting;
        self.run.wake_at = Some(wake_at);
        self.finish_step(entry, None, Durability::Now).await
    }

    /// After a wait `<<today>>` is the day it ends, unless the run's day is later already
    /// (a catch-up fire waiting until a time already past keeps its fire's day).
    fn move_day_to(&mut self, at: jiff::Timestamp) {
        let day = super::day_of(self.wf, &self.run, at);
        if self.run.today_date().is_none_or(|d| d < day) {
            self.run.today = Some(day.to_string());
        }
    }

    /// A step that cannot go ahead: a real run fails (or takes `on_error`); a dry run
    /// shows why and follows the success path past it.
    async fn refuse(&mut self, block: &Block, block_id: &str, record: &Record, refusal: Refusal) -> Result<()> {
        if self.dry.is_some() {
            let message = self.word(refusal.in_dry_run, block_id, record, &refusal.message);
            let steps = self.steps.clone();
            self.show(|s| s.blocked(&steps, refusal.variable.as_deref(), message), block_id, block.kind());
            self.run.current = refusal.dry_next;
            return Ok(());
        }
        let mut entry = self.entry(block_id, block.kind(), None, 1);
        entry.error = Some(self.word(refusal.in_run, block_id, record, &refusal.message));
        match refusal.on_error {
            Some(target) => self.run.current = Some(target),
            None => self.fail_here(entry.error.clone()),
        }
        self.finish_step(entry, None, Durability::Deferred).await
    }

    /// Makes a block's calls in order (one, or one per `for_each` item), skipping those
    /// the journal says are done; the last call's write also moves the run on.
    async fn send(&mut self, block: &Block, block_id: &str, calls: Calls<'_>) -> Result<()> {
        let exchange = calls.exchange;
        if self.dry.is_some() && calls.for_each && calls.calls.is_empty() {
            let note = "no items (for_each over data an earlier step would fetch)";
            self.show(|s| s.note = Some(note.into()), block_id, block.kind());
        }
        let connection = match exchange.credential() {
            Some(name) if self.transport.sends() => Some(self.engine.connection(name).await?),
            _ => None,
        };
        // A block runs once per run (the graph has no cycles, and `runs retry` sets its
        // earlier results aside), so calls with a result are never sent again.
        let done = self.steps.calls_done(block_id, calls.for_each);
        let total = calls.calls.len();
        let mut left = false;
        for (n, call) in calls.calls.iter().enumerate().skip(done) {
            if self.interrupted() {
                return self.park().await;
            }
            let last = n + 1 == total;
            match &call.request {
                Ok(request) => {
                    let sent = self
                        .call(block, block_id, exchange, connection.as_ref(), call, request.clone(), 1, last)
                        .await?;
                    match sent {
                        CallOutcome::Parked => return Ok(()),
                        CallOutcome::Unsent => {
                            let credential = exchange.credential().map(str::to_string);
                            self.show(
                                |s| {
                                    s.item = call.index();
                                    s.credential = credential;
                                    s.request = Some(request.clone());
                                },
                                block_id,
                                block.kind(),
                            );
                        }
                        CallOutcome::Answered => {}
                    }
                }
                Err(refusal) => self.refuse_call(block, block_id, exchange, call, refusal, last).await?,
            }
            left = last;
        }
        if self.dry.is_some() {
            // Answers are unknown: later steps see them as absent, and the success path goes on.
            self.steps.unknown(block_id);
            self.run.current = exchange.success_next();
            return Ok(());
        }
        if !left {
            self.leave(exchange, block_id);
            self.save(None).await?;
        }
        Ok(())
    }

    /// One call whose request could not be rendered: its result is the error.
    async fn refuse_call(
        &mut self,
        block: &Block,
        block_id: &str,
        exchange: &dyn Exchange,
        call: &PlannedCall,
        refusal: &Refusal,
        last: bool,
    ) -> Result<()> {
        let record = record_of(self.persistence, &self.run, &self.deferred).await?;
        if self.dry.is_some() {
            let message = self.word(refusal.in_dry_run, block_id, &record, &refusal.message);
            let steps = self.steps.clone();
            let credential = exchange.credential().map(str::to_string);
            self.show(
                |s| {
                    s.item = call.index();
                    s.credential = credential;
                    s.blocked(&steps, refusal.variable.as_deref(), message);
                },
                block_id,
                block.kind(),
            );
            return Ok(());
        }
        let mut entry = self.entry(block_id, block.kind(), call.index(), 1);
        let message = self.word(refusal.in_run, block_id, &record, &refusal.message);
        entry.error = Some(message.clone());
        self.steps.call(block_id, call.index(), call_result(call.index(), None, Some(&message)));
        if last {
            self.leave(exchange, block_id);
        }
        self.finish_step(entry, None, Durability::Deferred).await
    }

    /// Sends one request, retrying transient failures, journaling as the policy says; the
    /// outcome lands in `steps` (and the record).
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &mut self,
        block: &Block,
        block_id: &str,
        exchange: &dyn Exchange,
        connection: Option<&Connection>,
        call: &PlannedCall,
        request: RenderedRequest,
        first_attempt: u32,
        last: bool,
    ) -> Result<CallOutcome> {
        let safe = exchange.safe_to_resend();
        let policy = exchange.retry().cloned().unwrap_or_else(|| self.engine.retry.clone());
        let first_sent = Instant::now();
        let mut attempt = first_attempt;
        loop {
            // Every attempt is a new step: none starts once a stop is asked for. The
            // attempt is made again (same request, same idempotency key) on the next start.
            if self.interrupted() {
                self.park().await?;
                return Ok(CallOutcome::Parked);
            }
            // Deferred steps go before the entry is made, so the head written with them
            // does not count it; a started call takes them along with its entry, below.
            let before = before_sending(safe, &request.method);
            if before == BeforeSending::Deferred && !self.deferred.is_empty() {
                self.save(None).await?;
            }
            let permit = match connection.and_then(|c| c.limits.rate.clone()) {
                Some(rate) => tokio::select! {
                    permit = rate.acquire() => Some(permit),
                    _ = self.engine.interruption(self.run.id) => {
                        self.park().await?;
                        return Ok(CallOutcome::Parked);
                    }
                },
                None => None,
            };
            let mut entry = self.entry(block_id, block.kind(), call.index(), attempt);
            entry.request = Some(request.clone());
            if before == BeforeSending::Started {
                self.run.pending = Some(Pending {
                    seq: entry.seq,
                    block: block_id.to_string(),
                    item: call.index(),
                    attempt,
                    request: request.clone(),
                    started_at: entry.started_at.clone(),
                });
                self.save(Some(&entry)).await?;
            }
            let sent = self.transport.send(connection, &request, exchange.paginate(), permit).await;
            self.run.pending = None;
            let Some(sent) = sent else { return Ok(CallOutcome::Unsent) };
            // The HTTP layer's one retry policy decides whether this attempt goes again.
            let outcome = sent.as_ref().map_or_else(SendError::outcome, HttpResponse::outcome);
            if let Ok(delay) = policy.next_attempt_in(attempt, first_sent.elapsed(), outcome, safe) {
                entry.status = sent.as_ref().ok().map(|r| r.status);
                entry.error = Some(exchange.describe(&sent));
                entry.response = sent.ok().map(bound_response);
                entry.retried = true;
                self.finish_step(entry, None, Durability::Now).await?;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.engine.interruption(self.run.id) => {
                        self.park().await?;
                        return Ok(CallOutcome::Parked);
                    }
                }
                attempt += 1;
                continue;
            }
            self.answered(block_id, exchange, call, last, entry, sent).await?;
            return Ok(CallOutcome::Answered);
        }
    }

    /// Records a call's final outcome: its result, the record changes its answer maps
    /// to, and (after the block's last call) where the run goes.
    async fn answered(
        &mut self,
        block_id: &str,
        exchange: &dyn Exchange,
        call: &PlannedCall,
        last: bool,
        mut entry: JournalEntry,
        sent: std::result::Result<HttpResponse, SendError>,
    ) -> Result<()> {
        let record = record_of(self.persistence, &self.run, &self.deferred).await?;
        let mut write = None;
        let result = match sent {
            Ok(resp) => {
                entry.status = Some(resp.status);
                let scope = self.scope(&record);
                let answer = exchange.answer(&scope, call.item.as_ref().map(|(i, v)| (*i, v)), &resp);
                let mut error = None;
                match answer.changes {
                    Ok(changes) if !changes.is_empty() => {
                        entry.changes = diff(&record, &changes);
                        write = Some(self.record_write(&record, changes));
                    }
                    Ok(_) => {}
                    Err(e) => error = Some(self.step_error(block_id, &record, &e.to_string())),
                }
                if let Some(failure) = answer.failure {
                    error = Some(failure);
                }
                entry.error = error.clone();
                let result = call_result(call.index(), Some((resp.status, &resp.body)), error.as_deref());
                entry.response = Some(bound_response(resp));
                result
            }
            Err(e) => {
                let message = format!("{block_id}: {}", e.message);
                entry.error = Some(message.clone());
                call_result(call.index(), None, Some(&message))
            }
        };
        self.steps.call(block_id, call.index(), result);
        if last {
            self.leave(exchange, block_id);
        }
        self.finish_step(entry, write, answer_durability(exchange.safe_to_resend())).await
    }

    /// After a crash: what to do with a request journaled as started.
    async fn settle_pending(&mut self, pending: Pending) -> Result<()> {
        let Some(exchange) = self.wf.block(&pending.block).and_then(|b| b.exchange()) else {
            self.run.pending = None;
            return Ok(());
        };
        if !exchange.safe_to_resend() {
            self.run.state = RunState::NeedsAttention;
            self.run.error = Some(format!(
                "`{} {}` (block {}) was sent and its answer was lost in a crash; it has no idempotency key and is not \
                 safe to repeat. Check the vendor, then `roster runs resume {}` to send it again or `roster runs cancel {}`",
                pending.request.method, pending.request.url, pending.block, self.run.id, self.run.id
            ));
            return self.save(None).await;
        }
        self.resend(&pending).await
    }

    /// Sends a journaled request again (same request, same idempotency key); a single
    /// call moves the run on, a `for_each` block goes on with its next item.
    pub async fn resend(&mut self, pending: &Pending) -> Result<()> {
        let wf = self.wf;
        let Some(block) = wf.block(&pending.block) else {
            return Err(Error::NotFound(format!("block {} is gone from the workflow", pending.block)));
        };
        let Some(exchange) = block.exchange() else {
            self.run.pending = None;
            return Ok(());
        };
        let connection = match exchange.credential() {
            Some(name) if self.transport.sends() => Some(self.engine.connection(name).await?),
            _ => None,
        };
        // The item's value, for the answer's scope, from the block's plan as it stands now.
        let record = record_of(self.persistence, &self.run, &self.deferred).await?;
        let scope = self.scope(&record);
        let run = &self.run;
        let item = match block.plan(&scope, &|i| idempotency_key(run, &pending.block, i)) {
            Plan::Send(calls) => calls.calls.into_iter().find(|c| c.index() == pending.item).and_then(|c| c.item),
            _ => None,
        };
        let call =
            PlannedCall { item: item.or(pending.item.map(|i| (i, Value::Null))), request: Ok(pending.request.clone()) };
        let last = pending.item.is_none();
        self.call(
            block,
            &pending.block,
            exchange,
            connection.as_ref(),
            &call,
            pending.request.clone(),
            pending.attempt + 1,
            last,
        )
        .await?;
        Ok(())
    }

    /// After a block's last call: `next`, or `on_error` (or failure) if any call failed.
    fn leave(&mut self, exchange: &dyn Exchange, block_id: &str) {
        match exchange.leave(&self.steps.failures(block_id)) {
            Exit::Next(target) => self.run.current = target,
            Exit::Fail(error) => self.fail_here(Some(error)),
        }
    }

    fn fail_here(&mut self, error: Option<String>) {
        self.run.current = None;
        self.run.state = RunState::Failed;
        self.run.error = error;
    }

    async fn fail(&mut self, error: String) -> Result<()> {
        self.fail_here(Some(error));
        self.save(None).await
    }

    /// Whether the run must not start another step: a stop, or a cancel asked for it. A dry
    /// run has nothing to park.
    fn interrupted(&self) -> bool {
        self.dry.is_none() && self.engine.interrupted(&self.run)
    }

    /// An interruption reached the run between two steps, nothing of it in flight: on a
    /// stop it waits in the queue and the next start carries on at the same step; on a
    /// cancel it ends, cancelled, its journal kept.
    async fn park(&mut self) -> Result<()> {
        if self.engine.take_cancel(self.run.id) {
            self.run.state = RunState::Cancelled;
            self.run.pending = None;
            self.run.finished_at = Some(self.engine.now());
        } else {
            self.run.state = RunState::Queued;
        }
        self.save(None).await
    }

    fn scope(&self, record: &Record) -> Value {
        self.engine.scope_of(&self.run, &self.steps, record)
    }

    fn record_write(&self, record: &Record, changes: Map<String, Value>) -> RecordWrite {
        RecordWrite {
            id: Some(record.id),
            changes,
            source: format!("workflow:{}", self.wf.name),
            at: self.engine.now(),
        }
    }

    /// A refusal's message, worded as `wording` says.
    fn word(&self, wording: Wording, block_id: &str, record: &Record, message: &str) -> String {
        match wording {
            Wording::InContext => self.step_error(block_id, record, message),
            Wording::AfterBlock => format!("{block_id}: {message}"),
            Wording::Prefixed(prefix) => format!("{prefix}{message}"),
        }
    }

    /// "workflow W, block B, record R: …" — the context a strict template error needs.
    fn step_error(&self, block: &str, record: &Record, message: &str) -> String {
        format!("workflow {}, block {block}, record {}: {message}", self.wf.name, record.label())
    }

    /// Adds a step to a dry run's list (a real run shows its journal instead).
    fn show(&mut self, fill: impl FnOnce(&mut DryStep), block_id: &str, kind: &str) {
        if let Some(out) = &mut self.dry {
            let mut step = DryStep::new(block_id, kind);
            fill(&mut step);
            out.push(step);
        }
    }

    fn entry(&mut self, block: &str, kind: &str, item: Option<usize>, attempt: u32) -> JournalEntry {
        let seq = self.run.next_seq;
        self.run.next_seq += 1;
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
            wake_at: None,
            started_at: self.engine.now(),
            finished_at: None,
            duration_ms: None,
            retried: false,
            by_retry: self.run.retries,
            started: Some(Instant::now()),
        }
    }

    /// Ends a step: written now, or (when `durability` allows and the run goes on) with
    /// the next write.
    async fn finish_step(
        &mut self,
        mut entry: JournalEntry,
        write: Option<RecordWrite>,
        durability: Durability,
    ) -> Result<()> {
        entry.phase = StepPhase::Finished;
        entry.finished_at = Some(self.engine.now());
        // The vendor's own answer time when there is one; otherwise the step's, measured
        // on the monotonic clock (a resumed step has no start here and gets none).
        entry.duration_ms = match &entry.response {
            Some(resp) => Some(resp.elapsed_ms),
            None => entry.started.map(|t| t.elapsed().as_millis() as u64),
        };
        self.deferred.push(entry, write);
        let goes_on = self.run.state == RunState::Running && self.run.current.is_some() && self.run.pending.is_none();
        if durability == Durability::Now || !goes_on || !self.deferred.has_room() {
            self.save(None).await?;
        }
        Ok(())
    }

    /// Writes the head with the deferred steps (and `started`, a call's entry before it
    /// goes out) as one durable write, then tells the observer of the steps it wrote; a
    /// step that ends the run settles it in the same write.
    async fn save(&mut self, started: Option<&JournalEntry>) -> Result<()> {
        let run = &mut self.run;
        run.updated_at = self.engine.now();
        if run.current.is_none() && run.pending.is_none() && run.state == RunState::Running {
            run.state = RunState::Succeeded;
        }
        if run.state.is_finished() && run.finished_at.is_none() {
            run.finished_at = Some(self.engine.now());
        }
        let (mut entries, write) = self.deferred.take();
        let finished = entries.len();
        entries.extend(started.cloned());
        self.persistence.save_steps(&self.run, &entries, write).await?;
        for entry in &entries[..finished] {
            self.observer.step(entry);
        }
        Ok(())
    }
}

/// The record `run` is over, with the changes of its deferred steps. (Borrowing only
/// these, not the driver, keeps the driver's future `Send` while the read is awaited.)
async fn record_of<P: Persistence>(persistence: &P, run: &Run, deferred: &Deferred) -> Result<Record> {
    let mut record = persistence
        .record(run.record_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("record {} of run {} no longer exists", run.record_id, run.id)))?;
    deferred.lay_over(&mut record);
    Ok(record)
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
