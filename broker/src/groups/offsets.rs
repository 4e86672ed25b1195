//! Group commit of offset commits through metadata: many OffsetCommit requests (from any groups)
//! become one Raft entry, so commits/s are bounded by entries × batch size, not by one Raft round
//! trip per request.
//!
//! One task owns the proposals: it takes every commit queued while the previous proposal was in
//! flight (bounded in entries and bytes) and proposes them as one `Command::CommitOffsets`. Only
//! one proposal is in flight at a time, so commits apply in the order they were queued — a later
//! commit of the same partition never lands before an earlier one. The queue is bounded
//! (backpressure on the OffsetCommit handlers).

use metadata::{Command, CommandResponse, MetadataClient, OffsetCommitEntry};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::errors::ErrorCode;

/// Requests waiting for the batcher; beyond this the handlers wait (backpressure).
const QUEUE_DEPTH: usize = 4096;
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
    queue: Option<mpsc::Sender<Job>>,
    meta: MetadataClient,
}

impl OffsetCommitter {
    /// Starts the batcher task (outside a runtime, commits are proposed one by one instead).
    pub(crate) fn start(meta: MetadataClient, cancel: CancellationToken) -> Self {
        if tokio::runtime::Handle::try_current().is_err() {
            return OffsetCommitter { queue: None, meta };
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(meta.clone(), rx, cancel));
        OffsetCommitter {
            queue: Some(tx),
            meta,
        }
    }

    /// Stores the commits durably (answers once they are applied in metadata).
    pub(crate) async fn commit(&self, commits: Vec<OffsetCommitEntry>) -> Result<(), ErrorCode> {
        if commits.is_empty() {
            return Ok(());
        }
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
            let Some(queue) = &self.queue else {
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
