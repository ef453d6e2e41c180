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

use tokio::sync::watch;

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
