//! Which writes are durable, and when: the one place that decides it.
//!
//! - A write is atomic and flushed: journal entries, the run's new (small) head and the
//!   record change they make ([`Store::save_steps`](crate::store::RunStore::save_steps)).
//! - A step whose redoing changes nothing outside the run (a condition, an update, a
//!   refusal, the answer to a call that is safe to resend) is not written on its own: it
//!   waits, and goes with the next write that must be durable ([`Durability::Deferred`]).
//!   That write comes before any call that is not a read (GET, HEAD) goes out, when the run
//!   ends, parks, waits, fails or retries, and after [`MOST_DEFERRED`] steps. A crash loses only
//!   deferred steps: the head still points where they began, the resume does them again,
//!   and every call it sends again is a read or safe to resend. So the path a run took to a
//!   change at a vendor is always in the journal before the change is asked for. Later
//!   steps read the record with the deferred changes laid over it.
//! - A call whose resend is safe (`ApiBlock::safe_to_resend`: a GET or PUT, a preset
//!   marked safe to repeat, or a request carrying an idempotency key derived from the
//!   run) writes nothing before it goes out: after a
//!   crash the head still points at its block and item, and the resume sends it again
//!   with the same key. Its answer is its one write.
//! - A call that is unsafe to resend is first written as *started* (the entry, and the
//!   exact request as the head's `pending`): after a crash the run waits in
//!   `needs_attention` for a person to decide.
//! - A failed attempt that is tried again is one write of its own (marked `retried`), so
//!   a stop during the backoff leaves nothing half done.
//! - Stopping, cancelling and leaving a block with no call left write the head alone.
//!
//! Step outputs live in the journal entries, their bodies cut to [`JOURNAL_BODY_LIMIT`]; the
//! head never holds them, so a step's write does not grow with the run.

use std::sync::Mutex;

use roster_blocks::http::{HttpResponse, excerpt};
use uuid::Uuid;

use crate::error::Result;
use crate::model::{JournalEntry, Record, Run};
use crate::store::{RecordWrite, Store};

/// The most of a response body the journal keeps.
pub const JOURNAL_BODY_LIMIT: usize = 64 * 1024;

/// The most finished steps that wait for a write: what a crash can make a run do again.
pub const MOST_DEFERRED: usize = 16;

/// Whether a finished step must be written before the run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Written now (with any deferred steps before it).
    Now,
    /// May wait for the next write: doing the step again changes nothing outside the run.
    Deferred,
}

/// How the answer to a call is written: an unsafe call's answer now, since its started
/// entry is on the head and a crash before the answer is written would ask a person.
pub(crate) fn answer_durability(safe_to_resend: bool) -> Durability {
    if safe_to_resend { Durability::Deferred } else { Durability::Now }
}

/// What is written before a call goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BeforeSending {
    /// Nothing: a read, after which deferred steps may go on waiting.
    Nothing,
    /// The deferred steps, if any: a change at a vendor is never asked for on a path the
    /// journal does not hold.
    Deferred,
    /// The deferred steps and the call itself as started (with `pending` on the head): it
    /// is unsafe to resend.
    Started,
}

pub(crate) fn before_sending(safe_to_resend: bool, method: &str) -> BeforeSending {
    let read = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
    match (safe_to_resend, read) {
        (false, _) => BeforeSending::Started,
        (true, false) => BeforeSending::Deferred,
        (true, true) => BeforeSending::Nothing,
    }
}

/// A response as the journal keeps it: the body cut to [`JOURNAL_BODY_LIMIT`].
pub(crate) fn bound_response(mut resp: HttpResponse) -> HttpResponse {
    let text = resp.body.to_string();
    if text.len() > JOURNAL_BODY_LIMIT {
        resp.body = serde_json::Value::String(excerpt(&text, JOURNAL_BODY_LIMIT / 4));
    }
    resp
}

/// Finished steps waiting for the next durable write, and the record change they make
/// together.
#[derive(Default)]
pub(crate) struct Deferred {
    entries: Vec<JournalEntry>,
    write: Option<RecordWrite>,
}

impl Deferred {
    pub fn push(&mut self, entry: JournalEntry, write: Option<RecordWrite>) {
        self.entries.push(entry);
        let Some(later) = write else { return };
        match &mut self.write {
            Some(earlier) => {
                earlier.changes.extend(later.changes);
                earlier.at = later.at;
            }
            None => self.write = Some(later),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether another step may still wait.
    pub fn has_room(&self) -> bool {
        self.entries.len() < MOST_DEFERRED
    }

    /// The record as the run's later steps see it: as stored, with the deferred changes.
    pub fn lay_over(&self, record: &mut Record) {
        if let Some(write) = &self.write {
            record.fields.extend(write.changes.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }

    /// Everything waiting, for the write that takes it; nothing waits afterwards.
    pub fn take(&mut self) -> (Vec<JournalEntry>, Option<RecordWrite>) {
        (std::mem::take(&mut self.entries), self.write.take())
    }
}

/// What the driver reads and writes; the only store calls a run makes while it runs.
pub(crate) trait Persistence: Sync {
    /// Writes the head, journal entries and a record change atomically and durably.
    async fn save_steps(&self, run: &Run, entries: &[JournalEntry], write: Option<RecordWrite>) -> Result<()>;
    async fn record(&self, id: Uuid) -> Result<Option<Record>>;
    async fn journal(&self, run: Uuid) -> Result<Vec<JournalEntry>>;
}

/// The store. Its writes (and their share of a group flush) are awaited, so async workers
/// keep sending requests meanwhile.
pub(crate) struct StorePersistence(pub Store);

impl Persistence for StorePersistence {
    async fn save_steps(&self, run: &Run, entries: &[JournalEntry], write: Option<RecordWrite>) -> Result<()> {
        self.0.runs.save_steps(run, entries, write).await?;
        Ok(())
    }

    async fn record(&self, id: Uuid) -> Result<Option<Record>> {
        Ok(self.0.records.record(id).await?)
    }

    async fn journal(&self, run: Uuid) -> Result<Vec<JournalEntry>> {
        Ok(self.0.runs.journal(run).await?)
    }
}

/// Writes nothing: a dry run's record changes stay in memory, for the steps after them.
pub(crate) struct DryPersistence {
    record: Mutex<Record>,
}

impl DryPersistence {
    pub fn new(record: Record) -> Self {
        Self { record: Mutex::new(record) }
    }
}

impl Persistence for DryPersistence {
    async fn save_steps(&self, _run: &Run, _entries: &[JournalEntry], write: Option<RecordWrite>) -> Result<()> {
        if let Some(write) = write {
            self.record.lock().expect("dry record").fields.extend(write.changes);
        }
        Ok(())
    }

    async fn record(&self, _id: Uuid) -> Result<Option<Record>> {
        Ok(Some(self.record.lock().expect("dry record").clone()))
    }

    async fn journal(&self, _run: Uuid) -> Result<Vec<JournalEntry>> {
        Ok(Vec::new())
    }
}
