//! Helpers shared by the wal integration tests: deterministic payloads, fault injectors that block or
//! fail the writer, and direct access to the files on disk.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wal::{FaultInjector, Lsn, Wal, WalOptions};

/// Upper bound for anything a test waits for; generous because the machine is shared.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A payload that differs per `seed` and position, so a misplaced or mixed-up record is noticed.
pub fn payload(seed: u64, len: usize) -> Bytes {
    (0..len)
        .map(|i| (seed.wrapping_mul(131).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

pub fn options(dir: &Path) -> WalOptions {
    WalOptions::new(dir)
}

/// Frame length of a record of `len` payload bytes.
pub fn frame(len: usize) -> u64 {
    8 + len as u64
}

/// Log files in `dir` by start lsn.
pub fn wal_files(dir: &Path) -> Vec<(Lsn, PathBuf)> {
    let mut files: Vec<(Lsn, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name()?.to_str()?.to_owned();
            let start = name.strip_suffix(".wal")?.parse().ok()?;
            Some((start, path))
        })
        .collect();
    files.sort();
    files
}

pub fn replay_all(wal: &Wal, from: Lsn) -> Vec<(Lsn, Bytes)> {
    wal.replay(from)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Awaits `fut`, failing the test if it takes longer than [`PATIENCE`].
pub async fn bounded<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .expect("timed out")
}

/// Polls `condition` until it holds, failing the test after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Blocks the writer in `before_sync` while closed; optionally fails every sync after it opens.
#[derive(Debug, Default)]
pub struct Gate {
    closed: Mutex<bool>,
    changed: Condvar,
    entered: AtomicU64,
    fail: AtomicBool,
}

impl Gate {
    pub fn closed() -> Gate {
        Gate {
            closed: Mutex::new(true),
            ..Gate::default()
        }
    }

    pub fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.changed.notify_all();
    }

    pub fn fail_from_now_on(&self) {
        self.fail.store(true, Ordering::SeqCst);
    }

    /// How many times the writer reached `before_sync`.
    pub fn entered(&self) -> u64 {
        self.entered.load(Ordering::SeqCst)
    }
}

impl FaultInjector for Gate {
    fn before_sync(&self) -> std::io::Result<()> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + PATIENCE;
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            let now = Instant::now();
            if now >= deadline {
                return Err(std::io::Error::other("test gate was never opened"));
            }
            closed = self.changed.wait_timeout(closed, deadline - now).unwrap().0;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        Ok(())
    }
}

/// Lets `ok_syncs` syncs succeed, then fails every later one.
#[derive(Debug)]
pub struct FailAfter {
    remaining: AtomicU64,
}

impl FailAfter {
    pub fn new(ok_syncs: u64) -> FailAfter {
        FailAfter {
            remaining: AtomicU64::new(ok_syncs),
        }
    }
}

impl FaultInjector for FailAfter {
    fn before_sync(&self) -> std::io::Result<()> {
        self.remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .map(|_| ())
            .map_err(|_| std::io::Error::other("injected fsync failure"))
    }
}
