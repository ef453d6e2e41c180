//! Who syncs an integration now, across every node sharing the store.
//!
//! A sync first takes its integration's lease ([`Mark::SyncLease`], by compare-and-set):
//! which node, which session, until when. The node renews it a third of a lease apart while
//! the sync runs, as its heartbeat renews its run leases, and releases it when the sync
//! ends. A lease not renewed past its time belongs to a sync that stopped (its node died);
//! it is taken over. So one sync of an integration runs at a time, and a `running` session
//! is still running exactly while a live lease names it: any other is marked interrupted,
//! whichever node notices first.

use std::time::Duration;

use jiff::Timestamp;
use uuid::Uuid;

use crate::clock::rfc3339_millis;
use crate::error::{Error, Result};
use crate::model::{SyncSession, SyncState};
use crate::store::{Mark, Store};

/// A sync lease as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncHolder {
    pub node: String,
    pub session: Uuid,
    pub until: Timestamp,
}

impl SyncHolder {
    fn text(&self) -> String {
        format!("{} {} {}", rfc3339_millis(self.until), self.session, self.node)
    }

    /// `None` for text that is not a lease (it is then free to take).
    fn parse(text: &str) -> Option<SyncHolder> {
        let mut parts = text.splitn(3, ' ');
        let until = parts.next()?.parse().ok()?;
        let session = parts.next()?.parse().ok()?;
        let node = parts.next().filter(|n| !n.is_empty())?.to_string();
        Some(SyncHolder { node, session, until })
    }

    /// Whether its sync still holds it at `now`.
    pub fn live(&self, now: Timestamp) -> bool {
        now < self.until
    }
}

/// What taking an integration's lease found.
pub(crate) enum Taken {
    /// The lease is this sync's now.
    Held(HeldLease),
    /// A live sync of the integration holds it.
    Busy(SyncHolder),
}

/// A lease this node holds, as it last wrote it (the value its compare-and-sets expect).
pub(crate) struct HeldLease {
    mark: Mark,
    text: String,
    holder: SyncHolder,
}

/// Leases are about processes staying alive, so they use the real clock even when `--now`
/// makes the rest of Roster believe in another day.
fn lease_end(now: Timestamp, lease: Duration) -> Timestamp {
    now.checked_add(lease).unwrap_or(Timestamp::MAX)
}

/// How many times a taker reads again when the lease changed under it.
const TAKE_TRIES: usize = 5;

/// Takes `integration`'s lease for `session` of `node`, unless a live one is held. A lease
/// that ran out is taken over, and the session it named is marked interrupted.
pub(crate) async fn take(
    store: &Store,
    integration: &str,
    node: &str,
    session: Uuid,
    lease: Duration,
) -> Result<Taken> {
    let mark = Mark::SyncLease { integration: integration.to_string() };
    for _ in 0..TAKE_TRIES {
        let read = store.scheduler.mark(&mark).await?;
        let now = Timestamp::now();
        let before = read.as_deref().and_then(SyncHolder::parse);
        if let Some(live) = before.as_ref().filter(|h| h.live(now)) {
            return Ok(Taken::Busy(live.clone()));
        }
        let holder = SyncHolder { node: node.to_string(), session, until: lease_end(now, lease) };
        let text = holder.text();
        if store.scheduler.set_mark(&mark, read.as_deref(), Some(&text)).await? {
            if let Some(gone) = before {
                interrupt(store, gone.session, &ran_out(Some(&gone.node))).await?;
            }
            return Ok(Taken::Held(HeldLease { mark, text, holder }));
        }
    }
    Err(Error::Refused(format!("sync {integration}: its sync lease keeps changing hands; try again")))
}

impl HeldLease {
    /// Extends the lease to `lease` from now. `Ok(false)`: it is not this sync's any more
    /// (it ran out and another node took it over or cleared it).
    pub(crate) async fn renew(&mut self, store: &Store, lease: Duration) -> Result<bool> {
        let holder = SyncHolder { until: lease_end(Timestamp::now(), lease), ..self.holder.clone() };
        let text = holder.text();
        if !store.scheduler.set_mark(&self.mark, Some(&self.text), Some(&text)).await? {
            return Ok(false);
        }
        (self.text, self.holder) = (text, holder);
        Ok(true)
    }

    /// Whether it ran out at `now` without being renewed.
    pub(crate) fn expired(&self, now: Timestamp) -> bool {
        !self.holder.live(now)
    }

    /// Gives the lease up; one another node took over meanwhile stays theirs.
    pub(crate) async fn release(self, store: &Store) -> Result<()> {
        store.scheduler.set_mark(&self.mark, Some(&self.text), None).await?;
        Ok(())
    }
}

/// Marks every `running` session among the newest `newest` that no live lease names as
/// interrupted (failed), its sync having stopped with its node; returns how many. A live
/// other node's session is never touched: its lease names it until that node stops
/// renewing it.
pub(crate) async fn interrupt_abandoned(store: &Store, newest: usize) -> Result<usize> {
    let mut interrupted = 0;
    for session in store.syncs.sessions(None, newest).await? {
        if session.state != SyncState::Running {
            continue;
        }
        let mark = Mark::SyncLease { integration: session.integration.clone() };
        let read = store.scheduler.mark(&mark).await?;
        let holder = read.as_deref().and_then(SyncHolder::parse).filter(|h| h.session == session.id);
        if let Some(holder) = holder {
            if holder.live(Timestamp::now()) {
                continue;
            }
            // Cleared first, so its node, should it come back, fails to renew it and stops
            // instead of syncing beside the next one. Renewed meanwhile: it lives.
            if !store.scheduler.set_mark(&mark, read.as_deref(), None).await? {
                continue;
            }
        }
        if interrupt(store, session.id, &ran_out(session.node.as_deref())).await? {
            tracing::warn!(
                "sync {}: session {} of node {} stopped before it finished (no live sync lease names it); marked failed",
                session.integration,
                session.id,
                session.node.as_deref().unwrap_or("unknown")
            );
            interrupted += 1;
        }
    }
    Ok(interrupted)
}

/// Why a session whose lease ran out (or went with its process) failed.
fn ran_out(node: Option<&str>) -> String {
    let who = node.map_or_else(|| "the process".to_string(), |n| format!("node {n}"));
    format!("interrupted: {who} stopped before the sync finished")
}

/// Marks `session` failed with `why` if it is still running; says whether it was. Read
/// here, after its lease: a sync that ended wrote its session before giving the lease up.
pub(crate) async fn interrupt(store: &Store, id: Uuid, why: &str) -> Result<bool> {
    let Some(mut session): Option<SyncSession> = store.syncs.session(id).await? else { return Ok(false) };
    if session.state != SyncState::Running {
        return Ok(false);
    }
    session.state = SyncState::Failed;
    session.error = Some(why.to_string());
    session.finished_at = Some(rfc3339_millis(Timestamp::now()));
    store.syncs.put_session(&session).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_reads_back_as_written_and_anything_else_is_free() {
        let holder = SyncHolder {
            node: "host a-12-3f9c".into(),
            session: Uuid::now_v7(),
            until: "2027-03-01T06:00:30.250Z".parse().unwrap(),
        };
        assert_eq!(SyncHolder::parse(&holder.text()), Some(holder.clone()), "a node name may hold spaces");
        assert!(holder.live("2027-03-01T06:00:30.249Z".parse().unwrap()));
        assert!(!holder.live("2027-03-01T06:00:30.250Z".parse().unwrap()));
        for text in
            ["", "2027-03-01T06:00:30Z", "soon 0190f5a2-7b1c-7d3e-8f00-0123456789ab a", "2027-03-01T06:00:30Z x a"]
        {
            assert_eq!(SyncHolder::parse(text), None, "{text:?}");
        }
    }
}
