//! Which writes are durable, and when: the one place that decides it.
//!
//! - Every step is one atomic, flushed write of its journal entry, the run's new (small)
//!   head and the record change it makes ([`Store::save_step`]).
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

/// Whether a call is journaled as started (with `pending` on the head) before it goes out.
pub(crate) fn journal_before_sending(safe_to_resend: bool) -> bool {
    !safe_to_resend
}

/// A response as the journal keeps it: the body cut to [`JOURNAL_BODY_LIMIT`].
pub(crate) fn bound_response(mut resp: HttpResponse) -> HttpResponse {
    let text = resp.body.to_string();
    if text.len() > JOURNAL_BODY_LIMIT {
        resp.body = serde_json::Value::String(excerpt(&text, JOURNAL_BODY_LIMIT / 4));
    }
    resp
}

/// What the driver reads and writes; the only store calls a run makes while it runs.
pub(crate) trait Persistence: Sync {
    /// Writes the head, one journal entry and a record change atomically and durably.
    async fn save_step(&self, run: &Run, entry: Option<&JournalEntry>, write: Option<RecordWrite>) -> Result<()>;
    async fn record(&self, id: Uuid) -> Result<Option<Record>>;
    async fn journal(&self, run: Uuid) -> Result<Vec<JournalEntry>>;
}

/// The store. Its writes (and their share of a group flush) are awaited, so async workers
/// keep sending requests meanwhile.
pub(crate) struct StorePersistence(pub Store);

impl Persistence for StorePersistence {
    async fn save_step(&self, run: &Run, entry: Option<&JournalEntry>, write: Option<RecordWrite>) -> Result<()> {
        self.0.runs.save_step(run, entry, write).await?;
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
    async fn save_step(&self, _run: &Run, _entry: Option<&JournalEntry>, write: Option<RecordWrite>) -> Result<()> {
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
