//! `sluice serve` settings: command-line flags, `SLUICE_*` environment variables and a TOML file.
//! Precedence: flag > environment > file > built-in default. Flag names are the command-line contract
//! of DESIGN.md; operators and external test scripts rely on them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WalKind {
    /// Append + fsync on a local path (the embedded default).
    File,
    /// One object PUT per group commit into the object store (`--object-store`); nothing that
    /// matters stays on local disk.
    Object,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML file with the same settings (snake_case keys, e.g. `data_dir = "..."`).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Local data directory (metadata Raft log, file WAL, default object store).
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    #[arg(long, env = "SLUICE_NODE_ID")]
    pub(crate) node_id: Option<u64>,
    /// Cluster id to create the cluster with; must match the one stored in the object store.
    #[arg(long, env = "SLUICE_CLUSTER_ID")]
    pub(crate) cluster_id: Option<String>,
    /// Kafka listener address (port 0 picks a free port).
    #[arg(long, env = "SLUICE_KAFKA_LISTENER")]
    pub(crate) kafka_listener: Option<String>,
    /// HOST:PORT advertised to Kafka clients (default: the bound listener address).
    #[arg(long, env = "SLUICE_ADVERTISED_KAFKA")]
    pub(crate) advertised_kafka: Option<String>,
    /// Object store URL: file:///path, memory://, s3://bucket/prefix.
    #[arg(long, env = "SLUICE_OBJECT_STORE")]
    pub(crate) object_store: Option<String>,
    #[arg(long, env = "SLUICE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "SLUICE_S3_REGION")]
    pub s3_region: Option<String>,
    /// Sign S3 requests with UNSIGNED-PAYLOAD instead of hashing every body with SHA-256 (use over
    /// HTTPS; also `[s3] unsigned_payload = true` or AWS_UNSIGNED_PAYLOAD=true).
    #[arg(long, env = "SLUICE_S3_UNSIGNED_PAYLOAD")]
    pub s3_unsigned_payload: bool,
    /// WAL backend.
    #[arg(long, env = "SLUICE_WAL", value_enum)]
    pub(crate) wal: Option<WalKind>,
    /// fsync the WAL (turning it off trades durability away; benchmarks only).
    #[arg(long, env = "SLUICE_WAL_FSYNC")]
    pub(crate) wal_fsync: Option<bool>,
    /// S3 WAL: how long the first batch waits for company before its WAL object is cut (ms).
    #[arg(long, env = "SLUICE_WAL_LINGER_MS")]
    pub(crate) wal_linger_ms: Option<u64>,
    /// S3 WAL: a WAL object is cut as soon as this many bytes are queued.
    #[arg(long, env = "SLUICE_WAL_FLUSH_BYTES")]
    pub(crate) wal_flush_bytes: Option<usize>,
    /// S3 WAL: PUTs of WAL objects in flight at once.
    #[arg(long, env = "SLUICE_WAL_MAX_INFLIGHT_PUTS")]
    pub(crate) wal_max_inflight_puts: Option<usize>,
    /// S3 WAL: bytes accepted but not yet durable; producers wait beyond this (backpressure).
    #[arg(long, env = "SLUICE_WAL_MAX_UNFLUSHED_BYTES")]
    pub(crate) wal_max_unflushed_bytes: Option<usize>,
    /// S3 WAL: lanes (independent WAL object sequences; partitions are hashed onto them, so one
    /// slow PUT stalls only its lane's acks).
    #[arg(long, env = "SLUICE_WAL_LANES")]
    pub(crate) wal_lanes: Option<u32>,
    /// S3 WAL: acknowledged WAL objects per lane not yet in the metadata index; producers wait
    /// beyond this. Bounds what a new owner reads after a crash (takeover time).
    #[arg(long, env = "SLUICE_WAL_MAX_UNINDEXED_OBJECTS")]
    pub(crate) wal_max_unindexed_objects: Option<usize>,
    /// S3 WAL: a WAL object not stored after this long is given up (ms): its seq is tombstoned,
    /// its batches fail with a retriable error, and the broker continues under a new incarnation.
    #[arg(long, env = "SLUICE_WAL_PUT_GIVE_UP_MS")]
    pub(crate) wal_put_give_up_ms: Option<u64>,
    /// Write the bound addresses as JSON to this file once serving.
    #[arg(long, env = "SLUICE_READY_FILE")]
    pub(crate) ready_file: Option<PathBuf>,
    /// `num.partitions`: partitions of auto-created topics and CreateTopics with -1.
    #[arg(long, env = "SLUICE_DEFAULT_PARTITIONS")]
    pub(crate) default_partitions: Option<u32>,
    /// `auto.create.topics.enable`.
    #[arg(long, env = "SLUICE_AUTO_CREATE_TOPICS")]
    pub(crate) auto_create_topics: Option<bool>,
    /// `socket.request.max.bytes`.
    #[arg(long, env = "SLUICE_MAX_REQUEST_BYTES")]
    pub(crate) max_request_bytes: Option<usize>,
    /// `max.connections`: open Kafka connections; at the limit the listener stops accepting until
    /// one closes (new connections wait in the kernel backlog), as Kafka does.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS")]
    pub(crate) max_connections: Option<usize>,
    /// `max.connections.per.ip`: a Kafka connection from an address that already has this many
    /// is closed right after accept.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS_PER_IP")]
    pub(crate) max_connections_per_ip: Option<usize>,
    /// `connections.max.idle.ms`: a Kafka connection with no request in progress and no traffic
    /// for this long is closed.
    #[arg(long, env = "SLUICE_CONNECTIONS_MAX_IDLE_MS")]
    pub(crate) connections_max_idle_ms: Option<u64>,
    /// A Kafka request whose first byte arrived must be complete within this bound (time spent
    /// waiting for the in-flight budget excluded), or its connection is closed (ms).
    #[arg(long, env = "SLUICE_REQUEST_READ_TIMEOUT_MS")]
    pub(crate) request_read_timeout_ms: Option<u64>,
    /// WAL data of a partition moves to a segment object at this size...
    #[arg(long, env = "SLUICE_SEGMENT_BYTES")]
    pub(crate) segment_bytes: Option<u64>,
    /// ...or at this age (milliseconds).
    #[arg(long, env = "SLUICE_SEGMENT_MS")]
    pub(crate) segment_ms: Option<u64>,
    /// Bytes of recent batches kept in memory for tailing consumers.
    #[arg(long, env = "SLUICE_TAIL_CACHE_BYTES")]
    pub(crate) tail_cache_bytes: Option<usize>,
    /// How often retention and object GC run (milliseconds).
    #[arg(long, env = "SLUICE_HOUSEKEEPING_MS")]
    pub(crate) housekeeping_ms: Option<u64>,
    /// Grace period before unreferenced objects are deleted (milliseconds).
    #[arg(long, env = "SLUICE_GC_GRACE_MS")]
    pub(crate) gc_grace_ms: Option<u64>,
    /// `producer.id.expiration.ms`: an idempotent producer (and an HTTP `Idempotency-Key`'s
    /// records) not written for this long is forgotten (milliseconds).
    #[arg(long, env = "SLUICE_PRODUCER_ID_EXPIRATION_MS")]
    pub(crate) producer_id_expiration_ms: Option<u64>,
    /// Most idempotent producers remembered per partition (bounds memory against a flood of new
    /// producer ids); beyond it the least recently written are forgotten first.
    #[arg(long, env = "SLUICE_MAX_PRODUCERS_PER_PARTITION")]
    pub(crate) max_producers_per_partition: Option<usize>,
    /// HTTP ingest listener address (port 0 picks a free port).
    #[arg(long, env = "SLUICE_HTTP_LISTENER")]
    pub(crate) http_listener: Option<String>,
    /// Largest HTTP ingest request body (larger ones get 413).
    #[arg(long, env = "SLUICE_HTTP_MAX_BODY_BYTES")]
    pub(crate) http_max_body_bytes: Option<usize>,
    /// How long an answered HTTP `Idempotency-Key` is remembered (milliseconds).
    #[arg(long, env = "SLUICE_IDEMPOTENCY_TTL_MS")]
    pub(crate) idempotency_ttl_ms: Option<u64>,
    /// HTTP ingest: longest wait for an append to become durable before the request is answered
    /// 503 (milliseconds).
    #[arg(long, env = "SLUICE_HTTP_ACK_TIMEOUT_MS")]
    pub(crate) http_ack_timeout_ms: Option<u64>,
    /// `group.initial.rebalance.delay.ms`: the first rebalance of an empty group waits this long
    /// for more members.
    #[arg(long, env = "SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub(crate) group_initial_rebalance_delay_ms: Option<u64>,
    /// `group.min.session.timeout.ms`: shorter consumer session timeouts are refused.
    #[arg(long, env = "SLUICE_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub(crate) group_min_session_timeout_ms: Option<u64>,
    /// `offsets.retention.minutes`: committed offsets of a group without members expire this
    /// long after its newest commit.
    #[arg(long, env = "SLUICE_OFFSETS_RETENTION_MINUTES")]
    pub(crate) offsets_retention_minutes: Option<u64>,
    /// Failure injection for tests: while a file exists at this path, every WAL fsync fails.
    #[arg(long, env = "SLUICE_FAIL_FSYNC_FILE", hide = true)]
    pub(crate) fail_fsync_file: Option<PathBuf>,
}

/// The same settings as read from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    node_id: Option<u64>,
    cluster_id: Option<String>,
    kafka_listener: Option<String>,
    advertised_kafka: Option<String>,
    object_store: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    aws_access_key_id: Option<String>,
    aws_secret_access_key: Option<String>,
    /// `[s3]` table; its keys win over the flat `s3_*`/`aws_*` keys above.
    s3: Option<S3FileConfig>,
    wal: Option<WalKind>,
    wal_fsync: Option<bool>,
    wal_linger_ms: Option<u64>,
    wal_flush_bytes: Option<usize>,
    wal_max_inflight_puts: Option<usize>,
    wal_max_unflushed_bytes: Option<usize>,
    wal_lanes: Option<u32>,
    wal_max_unindexed_objects: Option<usize>,
    wal_put_give_up_ms: Option<u64>,
    ready_file: Option<PathBuf>,
    default_partitions: Option<u32>,
    auto_create_topics: Option<bool>,
    max_request_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    connections_max_idle_ms: Option<u64>,
    request_read_timeout_ms: Option<u64>,
    segment_bytes: Option<u64>,
    segment_ms: Option<u64>,
    tail_cache_bytes: Option<usize>,
    housekeeping_ms: Option<u64>,
    gc_grace_ms: Option<u64>,
    producer_id_expiration_ms: Option<u64>,
    max_producers_per_partition: Option<usize>,
    http_listener: Option<String>,
    http_max_body_bytes: Option<usize>,
    idempotency_ttl_ms: Option<u64>,
    http_ack_timeout_ms: Option<u64>,
    group_initial_rebalance_delay_ms: Option<u64>,
    group_min_session_timeout_ms: Option<u64>,
    offsets_retention_minutes: Option<u64>,
}

/// `[s3]` table of the TOML file: endpoint, region, credentials and client timeouts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3FileConfig {
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    connect_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    max_retries: Option<usize>,
    retry_timeout_ms: Option<u64>,
    initial_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    unsigned_payload: Option<bool>,
}

/// S3 settings: flag / `SLUICE_S3_*` > `AWS_*` environment (credentials) > `[s3]` table > flat file
/// keys > defaults. An endpoint or region left unset here is still read from `AWS_ENDPOINT` /
/// `AWS_REGION` when the store is built.
fn resolve_s3(
    flag_endpoint: Option<String>,
    flag_region: Option<String>,
    flag_unsigned_payload: bool,
    file: &FileConfig,
) -> storage::objects::S3Options {
    let table = file.s3.as_ref();
    let from_table = |get: fn(&S3FileConfig) -> &Option<String>| table.and_then(|t| get(t).clone());
    let env = |key: &str| std::env::var(key).ok().filter(|value| !value.is_empty());
    let millis = |get: fn(&S3FileConfig) -> Option<u64>| {
        table.and_then(get).map(std::time::Duration::from_millis)
    };
    let defaults = storage::objects::S3Options::default();
    storage::objects::S3Options {
        endpoint: flag_endpoint
            .or_else(|| from_table(|t| &t.endpoint))
            .or_else(|| file.s3_endpoint.clone()),
        region: flag_region
            .or_else(|| from_table(|t| &t.region))
            .or_else(|| file.s3_region.clone()),
        access_key_id: env("AWS_ACCESS_KEY_ID")
            .or_else(|| from_table(|t| &t.access_key_id))
            .or_else(|| file.aws_access_key_id.clone()),
        secret_access_key: env("AWS_SECRET_ACCESS_KEY")
            .or_else(|| from_table(|t| &t.secret_access_key))
            .or_else(|| file.aws_secret_access_key.clone()),
        session_token: env("AWS_SESSION_TOKEN").or_else(|| from_table(|t| &t.session_token)),
        connect_timeout: millis(|t| t.connect_timeout_ms).unwrap_or(defaults.connect_timeout),
        request_timeout: millis(|t| t.request_timeout_ms).unwrap_or(defaults.request_timeout),
        max_retries: table
            .and_then(|t| t.max_retries)
            .unwrap_or(defaults.max_retries),
        retry_timeout: millis(|t| t.retry_timeout_ms).unwrap_or(defaults.retry_timeout),
        initial_backoff: millis(|t| t.initial_backoff_ms).unwrap_or(defaults.initial_backoff),
        max_backoff: millis(|t| t.max_backoff_ms).unwrap_or(defaults.max_backoff),
        unsigned_payload: flag_unsigned_payload
            || table
                .and_then(|t| t.unsigned_payload)
                .unwrap_or(defaults.unsigned_payload),
    }
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    pub(crate) data_dir: PathBuf,
    pub(crate) node_id: u64,
    pub(crate) cluster_id: Option<String>,
    pub(crate) kafka_listener: String,
    pub(crate) advertised_kafka: Option<String>,
    pub(crate) object_store: String,
    pub s3: storage::objects::S3Options,
    pub(crate) wal: WalKind,
    pub(crate) wal_fsync: bool,
    /// S3 WAL settings (used with `wal = object`).
    pub(crate) object_wal: storage::ObjectWalOptions,
    pub(crate) ready_file: Option<PathBuf>,
    pub(crate) default_partitions: u32,
    pub(crate) auto_create_topics: bool,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) connections_max_idle_ms: u64,
    pub(crate) request_read_timeout_ms: u64,
    pub(crate) segment_bytes: u64,
    pub(crate) segment_ms: u64,
    pub(crate) tail_cache_bytes: usize,
    pub(crate) housekeeping_ms: u64,
    pub(crate) gc_grace_ms: u64,
    pub(crate) producer_id_expiration_ms: u64,
    pub(crate) max_producers_per_partition: usize,
    pub(crate) http_listener: String,
    pub(crate) http_max_body_bytes: usize,
    pub(crate) idempotency_ttl_ms: u64,
    pub(crate) http_ack_timeout_ms: u64,
    pub(crate) group_initial_rebalance_delay_ms: u64,
    pub(crate) group_min_session_timeout_ms: u64,
    pub(crate) offsets_retention_minutes: u64,
    pub(crate) fail_fsync_file: Option<PathBuf>,
}

impl ServeConfig {
    pub(crate) fn resolve(mut args: ServeArgs) -> anyhow::Result<ServeConfig> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let s3 = resolve_s3(
            args.s3_endpoint.take(),
            args.s3_region.take(),
            args.s3_unsigned_payload,
            &file,
        );
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("sluice-data"));
        let object_store = args
            .object_store
            .or(file.object_store)
            .unwrap_or_else(|| "file://".to_string());
        let config = ServeConfig {
            node_id: args.node_id.or(file.node_id).unwrap_or(1),
            cluster_id: args.cluster_id.or(file.cluster_id),
            kafka_listener: args
                .kafka_listener
                .or(file.kafka_listener)
                .unwrap_or_else(|| "127.0.0.1:9092".to_string()),
            advertised_kafka: args.advertised_kafka.or(file.advertised_kafka),
            object_store,
            s3,
            wal: args.wal.or(file.wal).unwrap_or(WalKind::File),
            wal_fsync: args.wal_fsync.or(file.wal_fsync).unwrap_or(true),
            object_wal: {
                let defaults = storage::ObjectWalOptions::default();
                storage::ObjectWalOptions {
                    linger: args
                        .wal_linger_ms
                        .or(file.wal_linger_ms)
                        .map(Duration::from_millis)
                        .unwrap_or(defaults.linger),
                    flush_bytes: args
                        .wal_flush_bytes
                        .or(file.wal_flush_bytes)
                        .unwrap_or(defaults.flush_bytes),
                    max_inflight_puts: args
                        .wal_max_inflight_puts
                        .or(file.wal_max_inflight_puts)
                        .unwrap_or(defaults.max_inflight_puts),
                    max_unflushed_bytes: args
                        .wal_max_unflushed_bytes
                        .or(file.wal_max_unflushed_bytes)
                        .unwrap_or(defaults.max_unflushed_bytes),
                    max_object_bytes: defaults.max_object_bytes,
                    lanes: args.wal_lanes.or(file.wal_lanes).unwrap_or(defaults.lanes),
                    max_unindexed_objects: args
                        .wal_max_unindexed_objects
                        .or(file.wal_max_unindexed_objects)
                        .unwrap_or(defaults.max_unindexed_objects),
                    sweep_interval: defaults.sweep_interval,
                    put_give_up: args
                        .wal_put_give_up_ms
                        .or(file.wal_put_give_up_ms)
                        .map(Duration::from_millis)
                        .unwrap_or(defaults.put_give_up),
                }
            },
            ready_file: args.ready_file.or(file.ready_file),
            default_partitions: args
                .default_partitions
                .or(file.default_partitions)
                .unwrap_or(1),
            auto_create_topics: args
                .auto_create_topics
                .or(file.auto_create_topics)
                .unwrap_or(true),
            max_request_bytes: args
                .max_request_bytes
                .or(file.max_request_bytes)
                .unwrap_or(100 * 1024 * 1024),
            // Kafka's defaults: no connection limits (Int.MaxValue), 10 minutes idle.
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(i32::MAX as usize),
            max_connections_per_ip: args
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(i32::MAX as usize),
            connections_max_idle_ms: args
                .connections_max_idle_ms
                .or(file.connections_max_idle_ms)
                .unwrap_or(600_000),
            request_read_timeout_ms: args
                .request_read_timeout_ms
                .or(file.request_read_timeout_ms)
                .unwrap_or(30_000),
            segment_bytes: args
                .segment_bytes
                .or(file.segment_bytes)
                .unwrap_or(16 * 1024 * 1024),
            segment_ms: args.segment_ms.or(file.segment_ms).unwrap_or(30_000),
            tail_cache_bytes: args
                .tail_cache_bytes
                .or(file.tail_cache_bytes)
                .unwrap_or(64 * 1024 * 1024),
            housekeeping_ms: args
                .housekeeping_ms
                .or(file.housekeeping_ms)
                .unwrap_or(5_000),
            gc_grace_ms: args.gc_grace_ms.or(file.gc_grace_ms).unwrap_or(60_000),
            producer_id_expiration_ms: args
                .producer_id_expiration_ms
                .or(file.producer_id_expiration_ms)
                .unwrap_or(24 * 3600 * 1000),
            max_producers_per_partition: args
                .max_producers_per_partition
                .or(file.max_producers_per_partition)
                .unwrap_or(100_000)
                .max(1),
            http_listener: args
                .http_listener
                .or(file.http_listener)
                .unwrap_or_else(|| "127.0.0.1:8082".to_string()),
            http_max_body_bytes: args
                .http_max_body_bytes
                .or(file.http_max_body_bytes)
                .unwrap_or(16 * 1024 * 1024),
            idempotency_ttl_ms: args
                .idempotency_ttl_ms
                .or(file.idempotency_ttl_ms)
                .unwrap_or(24 * 3600 * 1000),
            http_ack_timeout_ms: args
                .http_ack_timeout_ms
                .or(file.http_ack_timeout_ms)
                .unwrap_or(30_000),
            group_initial_rebalance_delay_ms: args
                .group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms)
                .unwrap_or(3_000),
            group_min_session_timeout_ms: args
                .group_min_session_timeout_ms
                .or(file.group_min_session_timeout_ms)
                .unwrap_or(6_000),
            offsets_retention_minutes: args
                .offsets_retention_minutes
                .or(file.offsets_retention_minutes)
                .unwrap_or(7 * 24 * 60),
            fail_fsync_file: args.fail_fsync_file,
            data_dir,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.wal == WalKind::Object {
            let wal = &self.object_wal;
            if wal.flush_bytes == 0 || wal.flush_bytes > wal.max_object_bytes {
                bail!(
                    "--wal-flush-bytes must be between 1 and {} (the largest WAL object)",
                    wal.max_object_bytes
                );
            }
            if wal.max_inflight_puts == 0 || wal.max_inflight_puts > 64 {
                bail!("--wal-max-inflight-puts must be between 1 and 64");
            }
            if wal.max_unflushed_bytes < 1024 * 1024 {
                bail!("--wal-max-unflushed-bytes must be at least 1 MiB");
            }
            if wal.put_give_up < Duration::from_secs(1) {
                bail!("--wal-put-give-up-ms must be at least 1000");
            }
            if wal.lanes == 0 || wal.lanes > metadata::MAX_WAL_LANES {
                bail!(
                    "--wal-lanes must be between 1 and {}",
                    metadata::MAX_WAL_LANES
                );
            }
            if wal.max_unindexed_objects == 0 || wal.max_unindexed_objects > 100_000 {
                bail!("--wal-max-unindexed-objects must be between 1 and 100000");
            }
        }
        if self.default_partitions == 0 {
            bail!("--default-partitions must be at least 1");
        }
        if self.offsets_retention_minutes == 0 {
            bail!("--offsets-retention-minutes must be at least 1");
        }
        if self.node_id > i32::MAX as u64 {
            bail!("--node-id must fit a Kafka broker id (0..={})", i32::MAX);
        }
        if self.http_max_body_bytes == 0 || self.http_max_body_bytes > 1024 * 1024 * 1024 {
            bail!("--http-max-body-bytes must be between 1 and 1 GiB");
        }
        if self.max_request_bytes < 1024 {
            bail!("--max-request-bytes must be at least 1024");
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            bail!("--max-connections and --max-connections-per-ip must be at least 1");
        }
        if self.connections_max_idle_ms == 0 || self.request_read_timeout_ms == 0 {
            bail!("--connections-max-idle-ms and --request-read-timeout-ms must be at least 1");
        }
        Ok(())
    }

    /// The address to advertise, given the address the Kafka listener is bound to.
    pub(crate) fn advertised(&self, bound: SocketAddr) -> anyhow::Result<(String, u16)> {
        if let Some(advertised) = &self.advertised_kafka {
            let (host, port) = advertised
                .rsplit_once(':')
                .with_context(|| format!("--advertised-kafka '{advertised}' is not HOST:PORT"))?;
            let port: u16 = port
                .parse()
                .with_context(|| format!("bad port in '{advertised}'"))?;
            return Ok((host.trim_matches(['[', ']']).to_string(), port));
        }
        let host = if bound.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            bound.ip().to_string()
        };
        Ok((host, bound.port()))
    }
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct TestCli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "node_id = 7\ndefault_partitions = 3\nkafka_listener = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let cli = TestCli::parse_from([
            "sluice",
            "--config",
            file.to_str().unwrap(),
            "--kafka-listener",
            "127.0.0.1:0",
        ]);
        let config = ServeConfig::resolve(cli.serve).unwrap();
        assert_eq!(config.node_id, 7);
        assert_eq!(config.default_partitions, 3);
        assert_eq!(config.kafka_listener, "127.0.0.1:0");
        assert_eq!(config.data_dir, PathBuf::from("sluice-data"));
        assert_eq!(config.http_listener, "127.0.0.1:8082");
        assert!(config.auto_create_topics);
        assert_eq!(config.max_connections, i32::MAX as usize);
        assert_eq!(config.max_connections_per_ip, i32::MAX as usize);
        assert_eq!(config.connections_max_idle_ms, 600_000);
        assert_eq!(config.request_read_timeout_ms, 30_000);
    }

    #[test]
    fn connection_limits_from_file_and_flags_and_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("limits.toml");
        std::fs::write(
            &file,
            "max_connections = 10\nmax_connections_per_ip = 3\nconnections_max_idle_ms = 5000\n",
        )
        .unwrap();
        let cli = TestCli::parse_from([
            "sluice",
            "--config",
            file.to_str().unwrap(),
            "--request-read-timeout-ms",
            "700",
            "--max-connections",
            "20",
        ]);
        let config = ServeConfig::resolve(cli.serve).unwrap();
        assert_eq!(config.max_connections, 20);
        assert_eq!(config.max_connections_per_ip, 3);
        assert_eq!(config.connections_max_idle_ms, 5000);
        assert_eq!(config.request_read_timeout_ms, 700);
        for flag in [
            "--max-connections",
            "--max-connections-per-ip",
            "--connections-max-idle-ms",
            "--request-read-timeout-ms",
        ] {
            let cli = TestCli::parse_from(["sluice", flag, "0"]);
            assert!(ServeConfig::resolve(cli.serve).is_err(), "{flag} 0");
        }
    }

    #[test]
    fn unknown_file_keys_and_bad_object_wal_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        let cli = TestCli::parse_from(["sluice", "--config", file.to_str().unwrap()]);
        assert!(ServeConfig::resolve(cli.serve).is_err());
        let cli =
            TestCli::parse_from(["sluice", "--wal", "object", "--wal-max-inflight-puts", "0"]);
        assert!(ServeConfig::resolve(cli.serve).is_err());
        let cli = TestCli::parse_from(["sluice", "--wal", "object", "--wal-linger-ms", "2"]);
        let config = ServeConfig::resolve(cli.serve).unwrap();
        assert_eq!(config.wal, WalKind::Object);
        assert_eq!(config.object_wal.linger, Duration::from_millis(2));
    }

    #[test]
    fn s3_table_fills_s3_options_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s3.toml");
        std::fs::write(
            &file,
            "s3_region = \"flat-region\"\n\
             [s3]\n\
             endpoint = \"http://127.0.0.1:9000\"\n\
             connect_timeout_ms = 250\n\
             request_timeout_ms = 4000\n\
             max_retries = 2\n",
        )
        .unwrap();
        let cli = TestCli::parse_from(["sluice", "--config", file.to_str().unwrap()]);
        let config = ServeConfig::resolve(cli.serve).unwrap();
        assert_eq!(config.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(config.s3.region.as_deref(), Some("flat-region"));
        assert_eq!(config.s3.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.s3.request_timeout, Duration::from_secs(4));
        assert_eq!(config.s3.max_retries, 2);
        let defaults = storage::objects::S3Options::default();
        assert_eq!(config.s3.retry_timeout, defaults.retry_timeout);
        assert!(!config.s3.unsigned_payload, "signed payloads by default");
        std::fs::write(&file, "[s3]\nunsigned_payload = true\n").unwrap();
        let cli = TestCli::parse_from(["sluice", "--config", file.to_str().unwrap()]);
        assert!(ServeConfig::resolve(cli.serve).unwrap().s3.unsigned_payload);
        let cli = TestCli::parse_from(["sluice", "--s3-unsigned-payload"]);
        assert!(ServeConfig::resolve(cli.serve).unwrap().s3.unsigned_payload);
        std::fs::write(
            &file,
            "s3_region = \"flat-region\"\n[s3]\nendpoint = \"http://127.0.0.1:9000\"\n",
        )
        .unwrap();

        let cli = TestCli::parse_from([
            "sluice",
            "--config",
            file.to_str().unwrap(),
            "--s3-endpoint",
            "http://127.0.0.1:1",
            "--s3-region",
            "r",
        ]);
        let config = ServeConfig::resolve(cli.serve).unwrap();
        assert_eq!(config.s3.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(config.s3.region.as_deref(), Some("r"));

        // Credentials in the table are read (when AWS_* is not set in this environment).
        std::fs::write(
            &file,
            "[s3]\naccess_key_id = \"id\"\nsecret_access_key = \"secret\"\n",
        )
        .unwrap();
        let cli = TestCli::parse_from(["sluice", "--config", file.to_str().unwrap()]);
        let config = ServeConfig::resolve(cli.serve).unwrap();
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            assert_eq!(config.s3.access_key_id.as_deref(), Some("id"));
        }
        if std::env::var_os("AWS_SECRET_ACCESS_KEY").is_none() {
            assert_eq!(config.s3.secret_access_key.as_deref(), Some("secret"));
        }

        std::fs::write(&file, "[s3]\nno_such_key = 1\n").unwrap();
        let cli = TestCli::parse_from(["sluice", "--config", file.to_str().unwrap()]);
        assert!(ServeConfig::resolve(cli.serve).is_err());
    }
}
