//! Group commit of offset commits through metadata: many OffsetCommit requests (from any groups)
//! become one Raft entry, so commits/s are bounded by entries × batch size, not by one Raft round
//! trip per request.
//!
//! [`LANES`] tasks own the proposals; a group always goes to the same lane (by hash). A lane takes
//! every commit queued while its previous proposal was in flight (bounded in entries and bytes) and
//! proposes them as one `Command::CommitOffsets`. One proposal per lane is in flight at a time, so
//! a group's commits apply in the order they were queued — a later commit of a partition never
//! lands before an earlier one — while different groups' commits overlap in Raft. The queues are
//! bounded (backpressure on the OffsetCommit handlers).

use metadata::{Command, CommandResponse, MetadataClient, OffsetCommitEntry};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::errors::ErrorCode;

/// Batcher tasks (each with one proposal in flight). One lane makes the biggest batches, which is
/// what counts when the metadata node is CPU-bound (measured: 2-core machine, 128 committers,
/// ~22k commits/s with one lane, ~15k with four); more lanes only pay when Raft latency, not CPU,
/// is the limit.
const LANES: usize = 1;
/// Requests waiting per lane; beyond this the handlers wait (backpressure).
const QUEUE_DEPTH: usize = 1024;
/// Entries per proposal.
const MAX_BATCH_ENTRIES: usize = 4096;
/// Estimated encoded bytes per proposal (well under `metadata::MAX_COMMAND_BYTES`).
const MAX_BATCH_BYTES: usize = 512 * 1024;
/// JSON overhead of one entry besides its strings (uuid, numbers, field names).
const ENTRY_OVERHEAD: usize = 160;

struct Job {
    commits: Vec<OffsetCommitEntry>,
    reply: oneshot::Sender<Result<(), ErrorCode>>,
}

fn estimated_bytes(commits: &[OffsetCommitEntry]) -> usize {
    commits
        .iter()
        .map(|c| ENTRY_OVERHEAD + c.group.len() + c.committed.metadata.len())
        .sum()
}

/// Handle to the commit batcher. Cheap to share.
pub(crate) struct OffsetCommitter {
    /// One queue per lane (empty outside a runtime).
    lanes: Vec<mpsc::Sender<Job>>,
    meta: MetadataClient,
}

/// The lane of a group: a stable hash, so a group's commits stay in order.
fn lane_of(group: &str, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    group.hash(&mut hasher);
    usize::try_from(hasher.finish() % lanes.max(1) as u64).unwrap_or(0)
}

impl OffsetCommitter {
    /// Starts the batcher task (outside a runtime, commits are proposed one by one instead).
    pub(crate) fn start(meta: MetadataClient, cancel: CancellationToken) -> Self {
        if tokio::runtime::Handle::try_current().is_err() {
            return OffsetCommitter {
                lanes: Vec::new(),
                meta,
            };
        }
        let lanes = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
                tokio::spawn(run(meta.clone(), rx, cancel.clone()));
                tx
            })
            .collect();
        OffsetCommitter { lanes, meta }
    }

    /// Stores the commits of one group durably (answers once they are applied in metadata).
    pub(crate) async fn commit(&self, commits: Vec<OffsetCommitEntry>) -> Result<(), ErrorCode> {
        let Some(first) = commits.first() else {
            return Ok(());
        };
        let queue = self.lanes.get(lane_of(&first.group, self.lanes.len()));
        debug_assert!(commits.iter().all(|c| c.group == first.group));
        // A huge request is split so that no proposal outgrows the metadata command limit.
        let mut chunks = Vec::new();
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for commit in commits {
            let size = estimated_bytes(std::slice::from_ref(&commit));
            if !chunk.is_empty() && bytes + size > MAX_BATCH_BYTES {
                chunks.push(std::mem::take(&mut chunk));
                bytes = 0;
            }
            bytes += size;
            chunk.push(commit);
        }
        chunks.push(chunk);
        for commits in chunks {
            let Some(queue) = queue else {
                propose(&self.meta, commits).await?;
                continue;
            };
            let (reply, answer) = oneshot::channel();
            if queue.send(Job { commits, reply }).await.is_err() {
                return Err(ErrorCode::CoordinatorNotAvailable);
            }
            answer
                .await
                .unwrap_or(Err(ErrorCode::CoordinatorNotAvailable))?;
        }
        Ok(())
    }
}

async fn propose(meta: &MetadataClient, commits: Vec<OffsetCommitEntry>) -> Result<(), ErrorCode> {
    match meta.propose(Command::CommitOffsets { commits }).await {
        Ok(CommandResponse::Rejected(rejection)) => {
            tracing::warn!(%rejection, "metadata rejected an offset commit batch");
            Err(ErrorCode::UnknownServerError)
        }
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "offset commit batch failed");
            // Retriable for the client: the coordinator could not make the commit durable.
            Err(ErrorCode::CoordinatorNotAvailable)
        }
    }
}

async fn run(meta: MetadataClient, mut rx: mpsc::Receiver<Job>, cancel: CancellationToken) {
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            job = rx.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        let mut bytes = estimated_bytes(&first.commits);
        let mut entries = first.commits.len();
        let mut jobs = vec![first];
        while entries < MAX_BATCH_ENTRIES && bytes < MAX_BATCH_BYTES {
            let Ok(job) = rx.try_recv() else { break };
            bytes += estimated_bytes(&job.commits);
            entries += job.commits.len();
            jobs.push(job);
        }
        let mut commits = Vec::with_capacity(entries);
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            commits.extend(job.commits);
            replies.push(job.reply);
        }
        let result = propose(&meta, commits).await;
        for reply in replies {
            // The handler may have gone away (client disconnected); the commit stands anyway.
            let _ = reply.send(result);
        }
    }
}
