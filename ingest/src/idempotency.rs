//! `Idempotency-Key` store of the native endpoint.
//!
//! A finished request's response is kept under its key for a TTL; a retry with the same key and the
//! same request fingerprint (SHA-256 over method, path + query, content type and body) gets that
//! response back and writes nothing; the same key with another fingerprint is refused (422); a key
//! whose first request is still running is refused (409).
//!
//! Durability: answered keys are appended to a dedicated WAL (the `wal` crate, group commit +
//! fsync) under `{data_dir}/ingest/idempotency` **before** the response is sent, and replayed on
//! start, so keys survive a crash or restart. Entries expire in append order (one TTL for all), so
//! expiry is a prefix of the log: a sweeper drops expired entries from memory and deletes WAL files
//! wholly below the oldest live entry (`truncate_prefix`). A cap on live keys bounds memory.
//!
//! This store keeps *answers*; it is not what keeps a retry from writing twice. A keyed request's
//! records are written as the key's own idempotent producer (`produce::IdempotentWrite`), so the
//! partition's producer state — durable with the records, in the same WAL write — recognises a
//! retry even when this store never saw the answer (a 503 whose append landed later, a crash
//! between the records and this store's fsync, an empty data dir in S3 mode).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wal::{Lsn, Wal, WalOptions};

use crate::error::Error;
use crate::time::now_ms;

pub(crate) type Fingerprint = [u8; 32];

/// Fingerprint of a request: any difference in method, target, content type or body changes it.
pub(crate) fn fingerprint(
    method: &str,
    target: &str,
    content_type: &str,
    body: &[u8],
) -> Fingerprint {
    let mut hasher = Sha256::new();
    for part in [
        method.as_bytes(),
        target.as_bytes(),
        content_type.as_bytes(),
    ] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.update(body);
    hasher.finalize().into()
}

/// A response as it is kept and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredResponse {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: Bytes,
}

#[derive(Debug, Clone)]
struct Entry {
    fingerprint: Fingerprint,
    response: StoredResponse,
    created_ms: i64,
    lsn: Lsn,
}

/// The WAL record of one answered key (JSON; `v` is the format version).
#[derive(Serialize, Deserialize)]
struct WalEntry {
    v: u8,
    key: String,
    fingerprint: String,
    status: u16,
    content_type: String,
    body: String,
    created_ms: i64,
}

#[derive(Default)]
struct State {
    answered: HashMap<String, Entry>,
    /// lsn → key of `answered`, oldest first (expiry and eviction order).
    by_lsn: BTreeMap<Lsn, String>,
    /// Keys whose first request is running: its fingerprint, and a receiver that wakes when its
    /// ticket is finished or dropped.
    in_flight: HashMap<String, (Fingerprint, tokio::sync::watch::Receiver<()>)>,
    /// Next pseudo-lsn when there is no WAL (in-memory store).
    next_memory_lsn: Lsn,
}

impl State {
    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.answered.remove(key) {
            self.by_lsn.remove(&entry.lsn);
        }
    }

    fn insert(&mut self, key: String, entry: Entry, max_keys: usize) {
        self.remove(&key);
        self.by_lsn.insert(entry.lsn, key.clone());
        self.answered.insert(key, entry);
        while self.answered.len() > max_keys {
            let Some((_, oldest)) = self.by_lsn.pop_first() else {
                break;
            };
            self.answered.remove(&oldest);
        }
    }

    fn expire(&mut self, cutoff_ms: i64) -> usize {
        let mut removed = 0;
        // Entries are appended in time order, so the expired ones are a prefix of `by_lsn`
        // (clock steps back aside; such an entry simply lives a little longer).
        while let Some((&lsn, key)) = self.by_lsn.first_key_value() {
            let expired = self
                .answered
                .get(key)
                .is_none_or(|entry| entry.created_ms <= cutoff_ms);
            if !expired {
                break;
            }
            let key = key.clone();
            self.by_lsn.remove(&lsn);
            self.answered.remove(&key);
            removed += 1;
        }
        removed
    }
}

/// Result of [`IdempotencyStore::begin`].
pub(crate) enum Begin {
    /// First time (or expired): run the request, then [`IdempotencyStore::finish`] the ticket.
    Proceed(Ticket),
    /// Answered before with the same request.
    Replay(StoredResponse),
    /// Answered before with a different request.
    Mismatch,
    /// The first request with this key is still running; resolves (`changed()` errs) once it
    /// is answered or abandoned — then begin again.
    InFlight(tokio::sync::watch::Receiver<()>),
}

/// Marks a key in flight; dropping it without `finish` (error, client gone) frees the key.
pub(crate) struct Ticket {
    store: Arc<IdempotencyStore>,
    key: String,
    fingerprint: Fingerprint,
    finished: bool,
    /// Dropped with the ticket: wakes the requests waiting on the key.
    _done: tokio::sync::watch::Sender<()>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.finished {
            self.store.lock().in_flight.remove(&self.key);
        }
    }
}

/// Settings of the store.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyOptions {
    /// `None` keeps keys in memory only (tests).
    pub(crate) dir: Option<PathBuf>,
    pub(crate) ttl: Duration,
    pub(crate) max_keys: usize,
    pub(crate) fsync: bool,
    /// The file system of the WAL; `None` is the real one (tests put a simulated disk here).
    pub(crate) wal_fs: Option<Arc<dyn wal::WalFs>>,
}

pub(crate) struct IdempotencyStore {
    wal: Option<Wal>,
    ttl_ms: i64,
    max_keys: usize,
    state: Mutex<State>,
}

impl IdempotencyStore {
    /// Opens the store, replaying the keys of its WAL that have not expired yet.
    pub(crate) async fn open(options: IdempotencyOptions) -> Result<Arc<IdempotencyStore>, Error> {
        let ttl_ms = i64::try_from(options.ttl.as_millis()).unwrap_or(i64::MAX);
        let max_keys = options.max_keys.max(1);
        let mut state = State::default();
        let wal = match &options.dir {
            None => None,
            Some(dir) => {
                let mut wal_options = WalOptions::new(dir.clone());
                wal_options.file_bytes = 8 * 1024 * 1024;
                wal_options.fsync = options.fsync;
                if let Some(fs) = &options.wal_fs {
                    wal_options.fs = fs.clone();
                }
                let wal = Wal::open(wal_options)?;
                let cutoff = now_ms().saturating_sub(ttl_ms);
                let reader = wal.replay(wal.start_lsn())?;
                let replayed = tokio::task::spawn_blocking(move || {
                    let mut records = Vec::new();
                    for item in reader {
                        records.push(item?);
                    }
                    Ok::<_, wal::Error>(records)
                })
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))??;
                for (lsn, bytes) in replayed {
                    match decode_entry(&bytes) {
                        Ok((key, entry)) if entry.created_ms > cutoff => {
                            state.insert(key, Entry { lsn, ..entry }, max_keys)
                        }
                        Ok(_) => {}
                        Err(reason) => {
                            return Err(Error::CorruptIdempotencyRecord { lsn, reason });
                        }
                    }
                }
                Some(wal)
            }
        };
        tracing::info!(keys = state.answered.len(), "idempotency keys loaded");
        Ok(Arc::new(IdempotencyStore {
            wal,
            ttl_ms,
            max_keys,
            state: Mutex::new(state),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain maps that stay consistent across a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks `key` up and, if it is new, marks it in flight.
    pub(crate) fn begin(self: &Arc<Self>, key: &str, fingerprint: Fingerprint) -> Begin {
        let cutoff = now_ms().saturating_sub(self.ttl_ms);
        let mut state = self.lock();
        if let Some(entry) = state.answered.get(key) {
            if entry.created_ms > cutoff {
                return if entry.fingerprint == fingerprint {
                    Begin::Replay(entry.response.clone())
                } else {
                    Begin::Mismatch
                };
            }
            state.remove(key);
        }
        if let Some((running, done)) = state.in_flight.get(key) {
            return if *running == fingerprint {
                Begin::InFlight(done.clone())
            } else {
                Begin::Mismatch
            };
        }
        let (done_tx, done_rx) = tokio::sync::watch::channel(());
        state
            .in_flight
            .insert(key.to_string(), (fingerprint, done_rx));
        Begin::Proceed(Ticket {
            store: self.clone(),
            key: key.to_string(),
            fingerprint,
            finished: false,
            _done: done_tx,
        })
    }

    /// Records the answer of a ticket's request; returns once it is durable.
    pub(crate) async fn finish(
        &self,
        mut ticket: Ticket,
        response: StoredResponse,
    ) -> Result<(), Error> {
        let created_ms = now_ms();
        let lsn = match &self.wal {
            Some(wal) => {
                let record = WalEntry {
                    v: 1,
                    key: ticket.key.clone(),
                    fingerprint: hex(&ticket.fingerprint),
                    status: response.status,
                    content_type: response.content_type.clone(),
                    body: String::from_utf8_lossy(&response.body).into_owned(),
                    created_ms,
                };
                let bytes =
                    serde_json::to_vec(&record).map_err(|e| Error::Io(std::io::Error::other(e)))?;
                wal.append(Bytes::from(bytes)).await?
            }
            None => {
                let mut state = self.lock();
                state.next_memory_lsn += 1;
                state.next_memory_lsn
            }
        };
        let mut state = self.lock();
        // Answered and no longer in flight in one step: a retry sees one or the other.
        state.in_flight.remove(&ticket.key);
        let entry = Entry {
            fingerprint: ticket.fingerprint,
            response,
            created_ms,
            lsn,
        };
        state.insert(ticket.key.clone(), entry, self.max_keys);
        ticket.finished = true;
        Ok(())
    }

    /// Drops expired keys and deletes WAL files holding only expired keys.
    pub(crate) async fn sweep(&self) -> Result<usize, Error> {
        let cutoff = now_ms().saturating_sub(self.ttl_ms);
        let (removed, keep_from) = {
            let mut state = self.lock();
            let removed = state.expire(cutoff);
            (removed, state.by_lsn.first_key_value().map(|(lsn, _)| *lsn))
        };
        if let Some(wal) = &self.wal {
            let keep_from = keep_from.unwrap_or_else(|| wal.durable_lsn());
            let wal = wal.clone();
            tokio::task::spawn_blocking(move || wal.truncate_prefix(keep_from))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))??;
        }
        Ok(removed)
    }

    /// Runs [`sweep`](Self::sweep) periodically until cancelled.
    pub(crate) async fn run_sweeper(self: Arc<Self>, cancel: CancellationToken) {
        let every = Duration::from_millis(u64::try_from(self.ttl_ms / 4).unwrap_or(1000))
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.sweep().await {
                Ok(removed) if removed > 0 => tracing::debug!(removed, "idempotency keys expired"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "idempotency sweep failed"),
            }
        }
    }

    /// Number of answered keys held (tests, metrics).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().answered.len()
    }

    /// Closes the WAL (everything answered is already durable).
    pub(crate) async fn close(&self) -> Result<(), Error> {
        if let Some(wal) = &self.wal {
            wal.close().await?;
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Fingerprint> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn decode_entry(bytes: &[u8]) -> Result<(String, Entry), String> {
    let record: WalEntry = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if record.v != 1 {
        return Err(format!("unknown record version {}", record.v));
    }
    let fingerprint = unhex(&record.fingerprint).ok_or("bad fingerprint")?;
    Ok((
        record.key,
        Entry {
            fingerprint,
            response: StoredResponse {
                status: record.status,
                content_type: record.content_type,
                body: Bytes::from(record.body),
            },
            created_ms: record.created_ms,
            lsn: 0,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: Option<PathBuf>, ttl: Duration) -> IdempotencyOptions {
        IdempotencyOptions {
            dir,
            ttl,
            max_keys: 1000,
            fsync: false,
            wal_fs: None,
        }
    }

    fn response(body: &str) -> StoredResponse {
        StoredResponse {
            status: 200,
            content_type: "application/json".into(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[tokio::test]
    async fn replay_mismatch_and_in_flight() {
        let store = IdempotencyStore::open(options(None, Duration::from_secs(60)))
            .await
            .unwrap();
        let fp = fingerprint("POST", "/ingest/v1/t", "application/json", b"{}");
        let other = fingerprint("POST", "/ingest/v1/t", "application/json", b"{\"a\":1}");
        let Begin::Proceed(ticket) = store.begin("k1", fp) else {
            panic!("first use must proceed")
        };
        let Begin::InFlight(mut waiting) = store.begin("k1", fp) else {
            panic!("a retry while the first runs waits for it")
        };
        assert!(
            matches!(store.begin("k1", other), Begin::Mismatch),
            "another request with a running key is refused at once"
        );
        store.finish(ticket, response("first")).await.unwrap();
        assert!(waiting.changed().await.is_err(), "the waiter is woken");
        match store.begin("k1", fp) {
            Begin::Replay(r) => assert_eq!(r.body, Bytes::from_static(b"first")),
            _ => panic!("same request must replay"),
        }
        assert!(matches!(store.begin("k1", other), Begin::Mismatch));
        // A dropped ticket frees its key.
        let Begin::Proceed(ticket) = store.begin("k2", fp) else {
            panic!()
        };
        drop(ticket);
        assert!(matches!(store.begin("k2", fp), Begin::Proceed(_)));
    }

    #[tokio::test]
    async fn keys_survive_reopen_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idem");
        let fp = fingerprint("POST", "/x", "", b"body");
        {
            let store =
                IdempotencyStore::open(options(Some(path.clone()), Duration::from_secs(60)))
                    .await
                    .unwrap();
            let Begin::Proceed(ticket) = store.begin("key", fp) else {
                panic!()
            };
            store.finish(ticket, response("kept")).await.unwrap();
            store.close().await.unwrap();
        }
        {
            let store =
                IdempotencyStore::open(options(Some(path.clone()), Duration::from_secs(60)))
                    .await
                    .unwrap();
            assert_eq!(store.len(), 1);
            match store.begin("key", fp) {
                Begin::Replay(r) => assert_eq!(r.body, Bytes::from_static(b"kept")),
                _ => panic!("key must survive a reopen"),
            }
            store.close().await.unwrap();
        }
        // Reopened with a TTL the entry has outlived: gone.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let store = IdempotencyStore::open(options(Some(path), Duration::from_millis(10)))
            .await
            .unwrap();
        assert_eq!(store.len(), 0);
        assert!(matches!(store.begin("key", fp), Begin::Proceed(_)));
        store.close().await.unwrap();
    }

    /// Power loss (the `wal` crate's simulated disk): every key whose `finish` returned — the
    /// point after which its response is sent — is there after the crash, with nothing closed.
    #[tokio::test]
    async fn answered_keys_survive_power_loss() {
        let disk = wal::PowerLossFs::new();
        disk.create_durable_dir(std::path::Path::new("/data"))
            .unwrap();
        let options = |disk: &wal::PowerLossFs| IdempotencyOptions {
            fsync: true,
            wal_fs: Some(Arc::new(disk.clone())),
            ..options(
                Some(PathBuf::from("/data/ingest/idempotency")),
                Duration::from_secs(60),
            )
        };
        let store = IdempotencyStore::open(options(&disk)).await.unwrap();
        let keys: Vec<String> = (0..5).map(|i| format!("key-{i}")).collect();
        let fp = fingerprint("POST", "/x", "", b"body");
        for key in &keys {
            let Begin::Proceed(ticket) = store.begin(key, fp) else {
                panic!("{key} is new")
            };
            store.finish(ticket, response(key)).await.unwrap();
        }

        let disk = disk.crash();
        drop(store);
        let store = IdempotencyStore::open(options(&disk)).await.unwrap();
        assert_eq!(store.len(), keys.len());
        for key in &keys {
            match store.begin(key, fp) {
                Begin::Replay(r) => assert_eq!(r.body, Bytes::copy_from_slice(key.as_bytes())),
                _ => panic!("{key} must survive the power loss"),
            }
        }
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn sweep_expires_in_order_and_cap_evicts_oldest() {
        let mut opts = options(None, Duration::from_millis(30));
        opts.max_keys = 2;
        let store = IdempotencyStore::open(opts).await.unwrap();
        for key in ["a", "b", "c"] {
            let Begin::Proceed(t) = store.begin(key, [0; 32]) else {
                panic!()
            };
            store.finish(t, response(key)).await.unwrap();
        }
        assert_eq!(store.len(), 2, "cap evicts the oldest");
        assert!(matches!(store.begin("a", [0; 32]), Begin::Proceed(_)));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(store.sweep().await.unwrap(), 2);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn fingerprint_covers_every_part() {
        let base = fingerprint("POST", "/a", "json", b"x");
        assert_ne!(base, fingerprint("PUT", "/a", "json", b"x"));
        assert_ne!(base, fingerprint("POST", "/b", "json", b"x"));
        assert_ne!(base, fingerprint("POST", "/a", "ndjson", b"x"));
        assert_ne!(base, fingerprint("POST", "/a", "json", b"y"));
        assert_eq!(unhex(&hex(&base)), Some(base));
    }
}
