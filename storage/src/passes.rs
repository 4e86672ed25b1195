//! Passes of a background loop (segment writer or compaction, housekeeping), counted, so that a
//! caller can ask for one and wait until it has run.
//!
//! A loop waits on [`Passes::requested`] next to its timer and runs each pass through
//! [`Passes::run`]. Tests call `run_one` instead of waiting for a timer: it returns once a pass
//! that started after the call has finished. The pass is the loop's own (same code, same
//! per-partition backoff, never two at once), so what a test drives cannot drift from what runs
//! in production, where nothing asks for passes.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{watch, Notify};

pub(crate) struct Passes {
    requested: Notify,
    /// Passes begun so far; the number of the one running, if any.
    started: AtomicU64,
    /// The number of the last pass that finished.
    finished: watch::Sender<u64>,
}

impl Default for Passes {
    fn default() -> Self {
        Passes {
            requested: Notify::new(),
            started: AtomicU64::new(0),
            finished: watch::Sender::new(0),
        }
    }
}

impl Passes {
    /// Resolves when someone asked for a pass (never in production).
    pub(crate) async fn requested(&self) {
        self.requested.notified().await;
    }

    /// Runs `pass` as the next numbered pass of the loop.
    pub(crate) async fn run<F: Future>(&self, pass: F) -> F::Output {
        let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let output = pass.await;
        self.finished.send_replace(number);
        output
    }

    /// Asks the loop for a pass and waits until one that started after this call has finished.
    /// Never resolves once the loop has stopped (the store was shut down).
    #[cfg(test)]
    pub(crate) async fn run_one(&self) {
        let mut finished = self.finished.subscribe();
        // A pass running now may have looked at the partitions before the caller's changes: the
        // one after it counts.
        let target = self.started.load(Ordering::SeqCst) + 1;
        self.requested.notify_one();
        // The sender lives in the store as long as `self` does.
        let _ = finished.wait_for(|&number| number >= target).await;
    }
}
