//! `sluice serve`: start metadata, storage, the Kafka listener and the HTTP ingest listener; stop them in
//! reverse order on SIGINT/SIGTERM (the WAL is flushed and closed before exit).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use broker::{Broker, BrokerConfig};
use metadata::{Command, CommandResponse, MetadataClient, MetadataNode, MetadataOptions};
use storage::{LogStore, StorageOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ServeConfig, WalKind};
use crate::identity;

/// While a file exists at this path, every WAL fsync fails (test-only failure injection).
#[derive(Debug)]
struct FsyncFailpoint(PathBuf);

impl wal::FaultInjector for FsyncFailpoint {
    fn before_sync(&self) -> std::io::Result<()> {
        if self.0.exists() {
            return Err(std::io::Error::other(
                "injected fsync failure (failpoint file present)",
            ));
        }
        Ok(())
    }
}

pub(crate) async fn run(config: ServeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let data_dir = config.data_dir.canonicalize()?;
    // Lock first: a second process on this data dir stops here, having touched nothing.
    let _data_dir_lock = lock_data_dir(&data_dir)?;

    // Bind before anything is written to the bucket: a start that cannot listen must not have
    // continued (and so fenced) the cluster's metadata log.
    let listener = TcpListener::bind(&config.kafka_listener)
        .await
        .with_context(|| format!("cannot listen on {}", config.kafka_listener))?;
    let http_listener = TcpListener::bind(&config.http_listener)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_listener))?;

    let objects =
        storage::objects::object_store_from_url(&config.object_store, &data_dir, &config.s3)
            .with_context(|| format!("object store {}", config.object_store))?;
    if config.wal == WalKind::Object {
        // The bucket metadata log is only safe on a store that decides create-if-absent.
        if let Err(reason) = storage::objects::check_create_if_absent(objects.as_ref()).await {
            bail!(
                "object store {} (endpoint {}) cannot be used with --wal object: {reason}",
                config.object_store,
                config.s3.endpoint.as_deref().unwrap_or("AWS S3 default")
            );
        }
    }
    let cluster_id = identity::ensure(objects.as_ref(), config.cluster_id.as_deref()).await?;

    // With the S3 WAL the metadata lives in the bucket too (a journal of every applied change
    // plus snapshots), so a broker on an empty data dir recovers everything from the bucket.
    let journal = (config.wal == WalKind::Object).then(|| metadata::JournalOptions {
        store: objects.clone(),
        prefix: cluster_id.clone(),
        snapshot_every: 4096,
        persist_timeout: Duration::from_secs(30),
    });
    let node = MetadataNode::start(MetadataOptions {
        dir: data_dir.join("metadata"),
        node_id: config.node_id,
        snapshot_every: 1024,
        // With the journal the bucket is what makes metadata durable; the local Raft log is a
        // cache rebuilt at every start, so fsyncing it would only add latency to every commit.
        fsync: config.wal_fsync && journal.is_none(),
        journal,
    })
    .await
    .context("cannot start the metadata node")?;
    let meta = node.client();
    match meta
        .propose(Command::InitCluster {
            cluster_id: cluster_id.clone(),
        })
        .await?
    {
        CommandResponse::ClusterId(id) if id == cluster_id => {}
        CommandResponse::ClusterId(id) => bail!(
            "data dir {} belongs to cluster {id}, but the object store belongs to {cluster_id}",
            data_dir.display()
        ),
        other => bail!("unexpected answer to InitCluster: {other:?}"),
    }

    let bound = listener.local_addr()?;
    tracing::info!("kafka listening on {bound}");
    let (host, port) = config.advertised(bound)?;
    meta.propose(Command::RegisterBroker {
        node_id: config.node_id,
        host: host.clone(),
        port,
    })
    .await?;
    // Single-node Sluice: this broker owns every partition. Started under another node id on the
    // same data dir or bucket, it takes over the partitions the old id still owns (their epochs
    // bump, so whatever the old id would still write is fenced) before storage opens.
    match meta
        .propose(Command::AcquirePartitions {
            node_id: config.node_id,
            partitions: Vec::new(),
        })
        .await?
    {
        CommandResponse::Acquired(acquired) if acquired.is_empty() => {}
        CommandResponse::Acquired(acquired) => tracing::info!(
            partitions = acquired.len(),
            "took over the partitions owned by other node ids"
        ),
        other => bail!("unexpected answer to AcquirePartitions: {other:?}"),
    }

    let mut storage_options = StorageOptions::new(&data_dir, config.node_id, cluster_id.clone());
    storage_options.wal.fsync = config.wal_fsync;
    if config.wal == WalKind::Object {
        storage_options.object_wal = Some(config.object_wal.clone());
    }
    if let Some(path) = &config.fail_fsync_file {
        storage_options.wal.fault = Some(Arc::new(FsyncFailpoint(path.clone())));
    }
    storage_options.segment_bytes = config.segment_bytes;
    storage_options.segment_max_age = Duration::from_millis(config.segment_ms);
    storage_options.tail_cache_bytes = config.tail_cache_bytes;
    storage_options.housekeeping_interval = Duration::from_millis(config.housekeeping_ms.max(10));
    storage_options.gc_grace = Duration::from_millis(config.gc_grace_ms);
    storage_options.max_producers_per_partition = config.max_producers_per_partition;
    storage_options.producer_id_expiration =
        Duration::from_millis(config.producer_id_expiration_ms.max(1));
    let store = LogStore::open(storage_options, objects, meta.clone())
        .await
        .context("cannot open the partition logs")?;

    let shutdown = CancellationToken::new();
    let sync_task = tokio::spawn(sync_topic_settings(
        meta.clone(),
        store.clone(),
        shutdown.clone(),
    ));

    let mut broker_config = BrokerConfig::new(config.node_id, host, port);
    broker_config.auto_create_topics = config.auto_create_topics;
    broker_config.default_partitions = config.default_partitions;
    broker_config.max_request_bytes = config.max_request_bytes;
    broker_config.connections = broker::ConnectionLimits {
        max_connections: config.max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        max_idle: Duration::from_millis(config.connections_max_idle_ms),
        request_read_timeout: Duration::from_millis(config.request_read_timeout_ms),
    };
    if config.wal == WalKind::Object {
        // ~10 ms to durability: more requests of a connection must be in flight (see the field).
        broker_config.max_pipelined_requests = 1024;
    }
    broker_config.coordinator.group.initial_rebalance_delay =
        Duration::from_millis(config.group_initial_rebalance_delay_ms);
    broker_config.coordinator.group.min_session_timeout =
        Duration::from_millis(config.group_min_session_timeout_ms);
    broker_config.coordinator.offsets_retention =
        Duration::from_secs(config.offsets_retention_minutes.saturating_mul(60));
    let broker = Broker::new(broker_config, store.clone(), meta.clone());
    let server = tokio::spawn(broker::server::serve(listener, broker, shutdown.clone()));

    let (ingest, http_server, http_bound) = start_http(
        &config,
        http_listener,
        &data_dir,
        &cluster_id,
        &store,
        &meta,
        &shutdown,
    )
    .await?;

    if let Some(path) = &config.ready_file {
        write_ready_file(path, bound, http_bound, config.node_id, &cluster_id)?;
    }
    tracing::info!(node_id = config.node_id, %cluster_id, data_dir = %data_dir.display(), "sluice is serving");

    let fenced = tokio::select! {
        () = wait_for_signal() => None,
        reason = meta.fenced() => Some(format!(
            "this process was fenced off the cluster's metadata log and serves no more writes \
             ({reason})"
        )),
        reason = store.wait_wal_sealed() => Some(format!(
            "another process sealed this process's S3 WAL lanes (it took the partitions over); \
             this one serves no more writes ({reason})"
        )),
    };
    match &fenced {
        None => tracing::info!("shutting down"),
        Some(reason) => tracing::error!("stopping: {reason}"),
    }
    ingest.set_ready(false);
    shutdown.cancel();
    let _ = server.await;
    // Graceful HTTP shutdown waits for requests in progress; a long v3 stream must not hold the
    // process forever.
    if tokio::time::timeout(Duration::from_secs(10), http_server)
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still running after 10 s; stopping anyway");
    }
    ingest
        .shutdown()
        .await
        .context("closing the idempotency store")?;
    let _ = sync_task.await;
    store
        .shutdown()
        .await
        .context("closing the partition logs")?;
    node.shutdown()
        .await
        .context("stopping the metadata node")?;
    tracing::info!("stopped");
    if let Some(reason) = fenced {
        bail!("fenced: {reason}");
    }
    Ok(())
}

/// Takes an exclusive lock on `{data_dir}/LOCK` for the life of the process.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "data dir {} is in use by another sluice process (lock {} is held); nothing was changed",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Keeps storage's per-topic settings (retention) in step with the topic configs in metadata, and
/// drops the in-memory state of deleted topics — whoever changed them.
async fn sync_topic_settings(meta: MetadataClient, store: LogStore, shutdown: CancellationToken) {
    let mut watch = meta.watch();
    let mut known: BTreeSet<uuid::Uuid> = BTreeSet::new();
    loop {
        let state = meta.state();
        let current: BTreeSet<uuid::Uuid> = state.topics.keys().copied().collect();
        for topic in state.topics.values() {
            store.set_retention(topic.id, broker::configs::retention(&topic.configs));
        }
        for gone in known.difference(&current) {
            store.drop_topic(*gone);
        }
        known = current;
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = watch.changed() => if changed.is_err() { return },
        }
    }
}

/// Binds the HTTP ingest listener and starts serving it (ready at once: storage is open).
async fn start_http(
    config: &ServeConfig,
    listener: TcpListener,
    data_dir: &std::path::Path,
    cluster_id: &str,
    store: &LogStore,
    meta: &MetadataClient,
    shutdown: &CancellationToken,
) -> anyhow::Result<(
    ingest::Ingest,
    tokio::task::JoinHandle<std::io::Result<()>>,
    std::net::SocketAddr,
)> {
    let bound = listener.local_addr()?;
    tracing::info!("http listening on {bound}");
    let mut ingest_config = ingest::IngestConfig::new(config.node_id, cluster_id);
    ingest_config.auto_create_topics = config.auto_create_topics;
    ingest_config.default_partitions = config.default_partitions;
    ingest_config.max_body_bytes = config.http_max_body_bytes;
    ingest_config.inflight_bytes = ingest_config.inflight_bytes.max(config.http_max_body_bytes);
    ingest_config.data_dir = Some(data_dir.to_path_buf());
    ingest_config.idempotency_ttl = Duration::from_millis(config.idempotency_ttl_ms);
    ingest_config.fsync = config.wal_fsync;
    ingest_config.ack_timeout = Duration::from_millis(config.http_ack_timeout_ms.max(1));
    let ingest = ingest::Ingest::open(ingest_config, store.clone(), meta.clone())
        .await
        .context("cannot open HTTP ingest")?;
    let server = tokio::spawn(ingest::serve(listener, ingest.router(), shutdown.clone()));
    ingest.set_ready(true);
    Ok((ingest, server, bound))
}

fn write_ready_file(
    path: &std::path::Path,
    kafka: std::net::SocketAddr,
    http: std::net::SocketAddr,
    node_id: u64,
    cluster_id: &str,
) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "kafka": kafka.to_string(),
        "http": http.to_string(),
        "node_id": node_id,
        "cluster_id": cluster_id,
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&body)?)?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot write ready file {}", path.display()))?;
    Ok(())
}

async fn wait_for_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
