//! The least a durable store must do for the work a bench measures, without Roster: each
//! write is applied atomically and awaited until it is on disk, and one thread makes
//! everything written so far durable for all waiters (group commit, as the sled backend
//! does). Run beside bare reqwest it gives the ceiling any engine on that store can
//! reach: what is left between it and Roster is Roster's own cost.
//!
//! Two stores: sled (one tree, one `apply_batch` per write: cheaper than the backend's
//! multi-tree transaction) and a plain append-only file synced with `fdatasync`, the
//! shape of a write-ahead log.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use serde_json::Value;
use tokio::sync::watch;

use crate::common::{Row, f, fmt_rate};

/// The two floors a bench measures, each as the phase or variant name its results carry
/// and the words its table rows use.
#[allow(dead_code)] // memory_runs reads RSS, not these rows
pub const FLOORS: [(&str, &str); 2] =
    [("floor-sled", "sled (one batch per write)"), ("floor-log", "an append-only file (fdatasync)")];

/// The table rows of one floor's result beside the baseline's: its rate, its client CPU
/// and its store, each per `unit` (the key of the result counting them, e.g. `runs`).
/// `work` says what the floor did, for the rate's row.
#[allow(dead_code)] // memory_runs reads RSS, not these rows
pub fn floor_rows(what: &str, work: &str, unit: &str, floor: &Value, baseline: &Value) -> Vec<Row> {
    let per_s = |r: &Value| f(r, unit) / f(r, "elapsed_s");
    let cpu = |r: &Value| format!("{:.1} µs", f(r, "cpu_s") / f(r, unit) * 1e6);
    let noun = unit.trim_end_matches('s');
    vec![
        Row::new(format!("floor: {work} on {what}, {unit}/s"), fmt_rate(per_s(floor)))
            .baseline(fmt_rate(per_s(baseline)))
            .ratio(per_s(floor) / per_s(baseline)),
        Row::new(format!("floor: client CPU per {noun} on {what}"), cpu(floor)).baseline(cpu(baseline)),
        Row::new(
            format!("floor: store per {noun} on {what}"),
            format!("{:.2} KB", f(floor, "store_bytes") / f(floor, unit).max(1.0) / 1024.0),
        ),
    ]
}

#[allow(dead_code)] // each bench uses the kinds it measures
pub enum FloorKind {
    Sled,
    Log,
}

enum Target {
    Sled { db: sled::Db, tree: sled::Tree },
    Log(Mutex<File>),
}

pub struct DurableFloor {
    target: Arc<Target>,
    /// Writes applied so far; the flusher makes them durable.
    requested: Arc<(Mutex<(u64, bool)>, Condvar)>,
    durable: watch::Receiver<u64>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl DurableFloor {
    pub fn open(kind: FloorKind, dir: &Path) -> DurableFloor {
        let target = Arc::new(match kind {
            FloorKind::Sled => {
                // The cache cap the sled backend uses by default (`ROSTER_STORE_CACHE_MB`).
                let db = sled::Config::new()
                    .path(dir.join("floor"))
                    .cache_capacity(32 * 1024 * 1024)
                    .flush_every_ms(None)
                    .open()
                    .expect("open sled");
                let tree = db.open_tree("steps").expect("open a tree");
                Target::Sled { db, tree }
            }
            FloorKind::Log => Target::Log(Mutex::new(File::create(dir.join("floor.log")).expect("create the log"))),
        });
        let requested = Arc::new((Mutex::new((0u64, false)), Condvar::new()));
        let (done, durable) = watch::channel(0u64);
        let flusher = {
            let (target, requested) = (target.clone(), requested.clone());
            std::thread::spawn(move || {
                let (lock, asked) = &*requested;
                let mut st = lock.lock().unwrap();
                let mut flushed = 0;
                loop {
                    while st.0 == flushed && !st.1 {
                        st = asked.wait(st).unwrap();
                    }
                    if st.0 == flushed {
                        return;
                    }
                    let upto = st.0;
                    drop(st);
                    match &*target {
                        Target::Sled { db, .. } => {
                            db.flush().expect("flush sled");
                        }
                        Target::Log(file) => file.lock().unwrap().sync_data().expect("fdatasync the log"),
                    }
                    flushed = upto;
                    done.send_replace(upto);
                    st = lock.lock().unwrap();
                }
            })
        };
        DurableFloor { target, requested, durable, flusher: Some(flusher) }
    }

    /// Applies `writes` atomically and returns once they are on disk.
    pub async fn write(&self, writes: &[(&[u8], &[u8])]) {
        let applied = {
            match &*self.target {
                Target::Sled { tree, .. } => {
                    let mut batch = sled::Batch::default();
                    for (k, v) in writes {
                        batch.insert(*k, *v);
                    }
                    tree.apply_batch(batch).expect("apply a batch");
                }
                Target::Log(file) => {
                    // One length-prefixed frame per write set, written in one call.
                    let mut frame = Vec::new();
                    for (k, v) in writes {
                        frame.extend_from_slice(&(k.len() as u32).to_le_bytes());
                        frame.extend_from_slice(k);
                        frame.extend_from_slice(&(v.len() as u32).to_le_bytes());
                        frame.extend_from_slice(v);
                    }
                    file.lock().unwrap().write_all(&frame).expect("append to the log");
                }
            }
            let (lock, asked) = &*self.requested;
            let mut st = lock.lock().unwrap();
            st.0 += 1;
            asked.notify_one();
            st.0
        };
        let mut durable = self.durable.clone();
        durable.wait_for(|d| *d >= applied).await.expect("the flusher is running");
    }
}

impl Drop for DurableFloor {
    fn drop(&mut self) {
        let (lock, asked) = &*self.requested;
        lock.lock().unwrap().1 = true;
        asked.notify_all();
        if let Some(f) = self.flusher.take() {
            let _ = f.join();
        }
    }
}
