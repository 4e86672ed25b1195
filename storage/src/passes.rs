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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Lets every other task of this (single-threaded) test runtime run until it waits.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn run_one_waits_for_a_pass_that_started_after_the_call() {
        let passes = Arc::new(Passes::default());
        // Pass `n` finishes once the gate is at `n` or more.
        let gate = watch::Sender::new(0u64);
        let looping = tokio::spawn({
            let passes = passes.clone();
            let mut gate = gate.subscribe();
            async move {
                for number in 1..=2u64 {
                    passes.requested().await;
                    passes
                        .run(async {
                            let _ = gate.wait_for(|&open| open >= number).await;
                        })
                        .await;
                }
            }
        });
        let first = tokio::spawn({
            let passes = passes.clone();
            async move { passes.run_one().await }
        });
        settle().await;
        assert_eq!(passes.started.load(Ordering::SeqCst), 1, "pass 1 running");
        // Asked while pass 1 runs: pass 1 may have looked before the caller's change.
        let second = tokio::spawn({
            let passes = passes.clone();
            async move { passes.run_one().await }
        });
        settle().await;
        gate.send_replace(1);
        settle().await;
        assert!(first.is_finished(), "pass 1 was asked for and has finished");
        assert!(
            !second.is_finished(),
            "answered by a pass that started before it asked"
        );
        assert_eq!(
            passes.started.load(Ordering::SeqCst),
            2,
            "pass 2 runs on request"
        );
        gate.send_replace(2);
        settle().await;
        assert!(second.is_finished());
        looping.await.unwrap();
    }
}
