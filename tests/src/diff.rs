//! Differential testing against Apache Kafka: the same request to both brokers over raw sockets,
//! both responses decoded and compared field by field.
//!
//! Every response is checked three ways:
//! 1. **Framing:** the body decodes with no byte left over ([`RawConnection::request_with_bytes`]).
//! 2. **Codec round trip:** re-encoding the decoded response at the same version gives back
//!    exactly the bytes received. For Kafka this validates the protocol crate against the
//!    reference; for Sluice it catches anything encoded by hand (record sets, …).
//! 3. **Field by field:** both responses go through [`Normalize`] (the ONE place that maps
//!    legitimately different values to fixed ones, see its table) and their pretty-printed forms
//!    must be identical; a difference is reported as a line diff.
//!
//! Known differences that are not bugs are normalised in the same place, each marked with its
//! row id (`D1`, `D2`, …) in the "Differences from Apache Kafka" table of ARCHITECTURE.md.

use std::collections::HashMap;
use std::fmt::Debug;

use anyhow::{Context as _, Result};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
use uuid::Uuid;

use crate::wire::RawConnection;

/// Which broker a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Apache Kafka 4.4.0.
    Kafka,
    /// The broker under test.
    Sluice,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Kafka => "kafka",
            Side::Sluice => "sluice",
        }
    }
}

/// One broker of the pair: its connection, advertised versions and the ids it gave our topics.
pub struct Broker {
    pub side: Side,
    pub addr: String,
    pub conn: RawConnection,
    /// api key → (min, max) from its ApiVersions.
    pub versions: HashMap<i16, (i16, i16)>,
    /// Topic name → topic id, as this broker assigned them.
    pub topic_ids: HashMap<String, Uuid>,
}

impl Broker {
    pub fn connect(side: Side, addr: &str) -> Result<Self> {
        let mut conn = RawConnection::connect(addr)?;
        let versions = conn.api_versions()?;
        Ok(Self {
            side,
            addr: addr.to_string(),
            conn,
            versions,
            topic_ids: HashMap::new(),
        })
    }

    /// A fresh connection (after the broker closed one).
    pub fn reconnect(&mut self) -> Result<()> {
        self.conn = RawConnection::connect(&self.addr)?;
        Ok(())
    }

    /// A second broker handle on its own connection (same ids), for requests that block.
    pub fn another(&self) -> Result<Self> {
        let mut other = Self::connect(self.side, &self.addr)?;
        other.topic_ids = self.topic_ids.clone();
        Ok(other)
    }

    /// Sends a request without waiting for its answer; returns its correlation id for
    /// [`Broker::finish`].
    pub fn start<R: Request>(&mut self, request: &R, version: i16) -> Result<i32> {
        let (correlation_id, body) = self.conn.encode_request(request, version)?;
        self.conn.send_frame(&body)?;
        Ok(correlation_id)
    }

    /// Reads the answer to a request sent with [`Broker::start`], within `timeout`.
    pub fn finish<R: Request>(
        &mut self,
        correlation_id: i32,
        version: i16,
        timeout: std::time::Duration,
    ) -> Result<R::Response> {
        use kafka_protocol::protocol::Decodable as _;
        let mut frame = match self.conn.read_frame(timeout)? {
            crate::wire::FrameRead::Frame(frame) => frame,
            other => anyhow::bail!("{}: no answer ({other:?})", self.side.name()),
        };
        let api_key =
            ApiKey::try_from(R::KEY).map_err(|()| anyhow::anyhow!("unknown api key {}", R::KEY))?;
        let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))?;
        anyhow::ensure!(
            header.correlation_id == correlation_id,
            "correlation id {} instead of {correlation_id}",
            header.correlation_id
        );
        let raw = frame.clone();
        let response = R::Response::decode(&mut frame, version)?;
        anyhow::ensure!(frame.is_empty(), "{} undecoded bytes", frame.len());
        if let Some(problem) = round_trip_problem(&response, version, &raw) {
            anyhow::bail!("{}: {problem}", self.side.name());
        }
        Ok(response)
    }

    pub fn supports(&self, api_key: i16, version: i16) -> bool {
        self.versions
            .get(&api_key)
            .is_some_and(|(min, max)| (*min..=*max).contains(&version))
    }

    /// The id this broker gave `topic` (nil if unknown).
    pub fn topic_id(&self, topic: &str) -> Uuid {
        self.topic_ids.get(topic).copied().unwrap_or(Uuid::nil())
    }
}

/// The pair of brokers plus everything found so far.
pub struct Differ {
    pub kafka: Broker,
    pub sluice: Broker,
    /// Every unexpected difference, ready to print.
    pub failures: Vec<String>,
    /// Responses compared field by field.
    pub compared: usize,
    /// (api key, version) pairs Sluice serves and Kafka 4.4 does not: only checked on Sluice
    /// (framing + codec round trip). ARCHITECTURE.md D1.
    pub sluice_only: Vec<(i16, i16)>,
}

impl Differ {
    pub fn new(kafka_addr: &str, sluice_addr: &str) -> Result<Self> {
        Ok(Self {
            kafka: Broker::connect(Side::Kafka, kafka_addr)?,
            sluice: Broker::connect(Side::Sluice, sluice_addr)?,
            failures: Vec::new(),
            compared: 0,
            sluice_only: Vec::new(),
        })
    }

    /// Every version of `R` Sluice advertises (and the protocol crate can encode).
    pub fn versions<R: Request>(&self) -> Vec<i16> {
        match self.sluice.versions.get(&R::KEY) {
            Some((min, max)) => (*min.max(&R::VERSIONS.min)..=*max.min(&R::VERSIONS.max)).collect(),
            None => Vec::new(),
        }
    }

    /// The broker of `side`.
    pub fn broker(&mut self, side: Side) -> &mut Broker {
        match side {
            Side::Kafka => &mut self.kafka,
            Side::Sluice => &mut self.sluice,
        }
    }

    /// Whether Sluice advertises `R` at all.
    pub fn sluice_has<R: Request>(&self) -> bool {
        self.sluice.versions.contains_key(&R::KEY)
    }

    pub fn fail(&mut self, message: String) {
        eprintln!("DIFF FAILURE: {message}");
        self.failures.push(message);
    }

    /// Sends the request `build` makes for each broker (requests may differ only in per-broker
    /// ids) to one broker and returns its decoded response, after the codec round-trip check.
    pub fn send<R, F>(
        &mut self,
        side: Side,
        case: &str,
        version: i16,
        build: F,
    ) -> Result<R::Response>
    where
        R: Request,
        F: Fn(&Broker) -> R,
    {
        let broker = match side {
            Side::Kafka => &mut self.kafka,
            Side::Sluice => &mut self.sluice,
        };
        let request = build(broker);
        let outcome = broker.conn.request_with_bytes(&request, version);
        let (response, raw) = match outcome {
            Ok(ok) => ok,
            Err(err) => {
                // Keep the next cases going on a fresh connection.
                let _ = broker.reconnect();
                return Err(err).with_context(|| {
                    format!("{case}: {} v{version} to {}", api_name(R::KEY), side.name())
                });
            }
        };
        if let Some(problem) = round_trip_problem(&response, version, &raw) {
            self.fail(format!(
                "{case}: {} v{version} from {}: {problem}",
                api_name(R::KEY),
                side.name()
            ));
        }
        Ok(response)
    }

    /// The same request to both brokers; `None` (after checking Sluice alone) when Kafka 4.4 does
    /// not serve this version.
    pub fn exchange<R, F>(
        &mut self,
        case: &str,
        version: i16,
        build: F,
    ) -> Result<Option<(R::Response, R::Response)>>
    where
        R: Request,
        F: Fn(&Broker) -> R,
    {
        if !self.kafka.supports(R::KEY, version) {
            self.send(Side::Sluice, case, version, &build)?;
            if !self.sluice_only.contains(&(R::KEY, version)) {
                self.sluice_only.push((R::KEY, version));
            }
            return Ok(None);
        }
        let kafka = self.send(Side::Kafka, case, version, &build)?;
        let sluice = self.send(Side::Sluice, case, version, &build)?;
        Ok(Some((kafka, sluice)))
    }

    /// [`Differ::exchange`] followed by [`Differ::compare`]; returns the responses.
    pub fn diff<R, F>(
        &mut self,
        case: &str,
        version: i16,
        build: F,
    ) -> Result<Option<(R::Response, R::Response)>>
    where
        R: Request,
        R::Response: Normalize + Clone,
        F: Fn(&Broker) -> R,
    {
        let responses = self.exchange(case, version, build)?;
        if let Some((kafka, sluice)) = &responses {
            self.compare(
                &format!("{case} ({} v{version})", api_name(R::KEY)),
                kafka,
                sluice,
            );
        }
        Ok(responses)
    }

    /// Compares two responses after normalisation; a difference is recorded as a failure.
    pub fn compare<T: Normalize + Clone>(&mut self, case: &str, kafka: &T, sluice: &T) {
        self.compared += 1;
        let kafka_text = describe(kafka, &self.kafka);
        let sluice_text = describe(sluice, &self.sluice);
        if kafka_text != sluice_text {
            self.fail(format!(
                "{case}: responses differ (- kafka, + sluice)\n{}",
                line_diff(&kafka_text, &sluice_text)
            ));
        }
    }

    /// Records that `topic` has id `kafka_id` on Kafka and `sluice_id` on Sluice.
    pub fn learn_topic_ids(&mut self, topic: &str, kafka_id: Uuid, sluice_id: Uuid) {
        if !kafka_id.is_nil() {
            self.kafka.topic_ids.insert(topic.to_string(), kafka_id);
        }
        if !sluice_id.is_nil() {
            self.sluice.topic_ids.insert(topic.to_string(), sluice_id);
        }
    }
}

/// The normalised, pretty-printed form of `response` as `broker` sent it.
pub fn describe<T: Normalize + Clone>(response: &T, broker: &Broker) -> String {
    let mut copy = response.clone();
    let mut context = Normalizer {
        topic_names: broker
            .topic_ids
            .iter()
            .map(|(name, id)| (*id, name.clone()))
            .collect(),
        extra: Vec::new(),
    };
    copy.normalize(&mut context);
    let mut text = format!("{copy:#?}");
    for (index, extra) in context.extra.iter().enumerate() {
        text.push_str(&format!("\n#{index}:\n{extra}"));
    }
    text
}

/// Checks that `response` re-encodes to exactly `raw`.
fn round_trip_problem<T: Encodable>(response: &T, version: i16, raw: &Bytes) -> Option<String> {
    let mut encoded = BytesMut::new();
    if let Err(err) = response.encode(&mut encoded, version) {
        return Some(format!("re-encoding the decoded response failed: {err}"));
    }
    if encoded[..] == raw[..] {
        return None;
    }
    let first = encoded
        .iter()
        .zip(raw.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(encoded.len().min(raw.len()));
    Some(format!(
        "codec round trip: received {} bytes, re-encoding the decoded response gives {} \
         (first difference at byte {first}: received {:02x?}, re-encoded {:02x?})",
        raw.len(),
        encoded.len(),
        &raw[first..raw.len().min(first + 16)],
        &encoded[first..encoded.len().min(first + 16)],
    ))
}

/// A minimal line diff (longest common subsequence), `-` for Kafka-only and `+` for Sluice-only
/// lines, with six lines of context.
pub fn line_diff(kafka: &str, sluice: &str) -> String {
    let a: Vec<&str> = kafka.lines().collect();
    let b: Vec<&str> = sluice.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| *op != ' ')
        .map(|(index, _)| index)
        .collect();
    let mut out = String::new();
    let mut last_printed: Option<usize> = None;
    for (index, (op, line)) in ops.iter().enumerate() {
        let near = changed.iter().any(|c| index + 6 >= *c && index <= c + 6);
        if !near {
            continue;
        }
        if let Some(last) = last_printed {
            if index > last + 1 {
                out.push_str("   ...\n");
            }
        }
        out.push_str(&format!("{op}  {line}\n"));
        last_printed = Some(index);
    }
    out
}

/// Name of an API key for messages.
pub fn api_name(key: i16) -> String {
    ApiKey::try_from(key)
        .map(|key| format!("{key:?}"))
        .unwrap_or_else(|()| format!("api {key}"))
}

// ---------------------------------------------------------------------------------------------
// Normalisation: the ONE place where legitimately different values are made equal.
//
// | value                                   | normalised to           | why                                   |
// | --------------------------------------- | ----------------------- | ------------------------------------- |
// | broker / coordinator / endpoint port    | 0                       | each broker listens on its own port   |
// | cluster id                              | "CLUSTER"               | each cluster has its own              |
// | topic id                                | a UUID derived from the topic name (nil stays nil) | ids are random |
// | member id (JoinGroup, LeaveGroup, DescribeGroups) | "member-N" by first appearance in the response ("" stays "") | random suffix |
// | error messages (top-level, per topic, per partition, per coordinator) | null | free text, sent or not at will; the error *code* is compared |
// | order of topics / partitions in responses Kafka builds from hash maps (Produce, Metadata, …) | sorted | Kafka's order is arbitrary |
// | CreateTopics topic id                   | nil                     | random; Kafka even returns one for validate-only |
// | config source of min.insync.replicas    | DEFAULT_CONFIG          | D8: Kafka's storage tool sets it as a cluster default |
// | InitProducerId producer id (when ≥ 0)   | 1000                    | allocated per cluster                 |
// | record batches in Fetch                 | parsed into their header fields + payload length and CRC | readable diff (nothing is lost: the CRC covers the payload) |
// | ApiVersions API list and features       | removed                 | D1/D2: checked separately in the test |
// | topic configs (CreateTopics, DescribeConfigs) | only SLUICE_TOPIC_CONFIGS kept | D3                       |
//
// Differences that are not bugs are normalised here too, marked with their row in the
// "Differences from Apache Kafka" table of ARCHITECTURE.md (D1, D2, …).
// ---------------------------------------------------------------------------------------------

/// State for one normalisation: the broker's topic ids, and side texts appended to the output
/// (parsed record batches).
pub struct Normalizer {
    topic_names: HashMap<Uuid, String>,
    extra: Vec<String>,
}

impl Normalizer {
    fn topic_id(&self, id: &mut Uuid) {
        if id.is_nil() {
            return;
        }
        *id = match self.topic_names.get(id) {
            Some(name) => name_uuid(name),
            // An id this test never learned: still comparable as "some id".
            None => Uuid::max(),
        };
    }

    fn message(&self, message: &mut Option<StrBytes>) {
        *message = None;
    }

    fn records(&mut self, records: &mut Option<Bytes>) {
        if let Some(bytes) = records.as_mut() {
            if bytes.is_empty() {
                return;
            }
            let index = self.extra.len();
            self.extra.push(describe_batches(bytes));
            *bytes = Bytes::from(format!("<record batches #{index}>"));
        }
    }
}

/// A UUID standing for `name` (FNV-1a of the name in both halves).
fn name_uuid(name: &str) -> Uuid {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Uuid::from_u64_pair(hash, hash)
}

/// Member ids: "member-N" in order of first appearance within one response.
#[derive(Default)]
struct MemberIds(Vec<String>);

impl MemberIds {
    fn map(&mut self, id: &mut StrBytes) {
        if id.is_empty() {
            return;
        }
        let index = match self.0.iter().position(|known| known == id.as_str()) {
            Some(index) => index,
            None => {
                self.0.push(id.to_string());
                self.0.len() - 1
            }
        };
        *id = StrBytes::from_string(format!("member-{index}"));
    }
}

/// Parses magic-2 record batches into one line each; a trailing partial batch (a fetch cut at
/// max_bytes) is shown as such.
pub fn describe_batches(bytes: &Bytes) -> String {
    let mut out = String::new();
    let mut buf = bytes.clone();
    while buf.remaining() >= 12 {
        let base_offset = buf.get_i64();
        let length = buf.get_i32();
        let Ok(length_usize) = usize::try_from(length) else {
            out.push_str(&format!("invalid batch length {length}\n"));
            break;
        };
        if buf.remaining() < length_usize || length_usize < 49 {
            out.push_str(&format!(
                "partial batch at base offset {base_offset}: length {length}, {} bytes present\n",
                buf.remaining()
            ));
            break;
        }
        let mut batch = buf.split_to(length_usize);
        let leader_epoch = batch.get_i32();
        let magic = batch.get_i8();
        let crc = batch.get_u32();
        let attributes = batch.get_i16();
        let last_offset_delta = batch.get_i32();
        let first_timestamp = batch.get_i64();
        let max_timestamp = batch.get_i64();
        let producer_id = batch.get_i64();
        let producer_epoch = batch.get_i16();
        let base_sequence = batch.get_i32();
        let records = batch.get_i32();
        out.push_str(&format!(
            "batch base_offset={base_offset} length={length} partition_leader_epoch={leader_epoch} \
             magic={magic} crc={crc:08x} attributes={attributes} last_offset_delta={last_offset_delta} \
             first_timestamp={first_timestamp} max_timestamp={max_timestamp} producer_id={producer_id} \
             producer_epoch={producer_epoch} base_sequence={base_sequence} records={records} \
             payload_bytes={}\n",
            batch.remaining()
        ));
    }
    if buf.has_remaining() && buf.remaining() < 12 {
        out.push_str(&format!("{} trailing bytes\n", buf.remaining()));
    }
    out
}

/// Maps legitimately different values to fixed ones (see the table above).
pub trait Normalize: Debug {
    fn normalize(&mut self, n: &mut Normalizer);
}

impl Normalize for ApiVersionsResponse {
    fn normalize(&mut self, _n: &mut Normalizer) {
        // D2: the API list and feature flags are compared separately (every API Sluice lists must
        // exist in Kafka with a max version Kafka also serves), not as a whole.
        self.api_keys.clear();
        self.supported_features.clear();
        self.finalized_features.clear();
        self.finalized_features_epoch = -1;
    }
}

impl Normalize for MetadataResponse {
    fn normalize(&mut self, n: &mut Normalizer) {
        for broker in &mut self.brokers {
            broker.port = 0;
        }
        if self.cluster_id.is_some() {
            self.cluster_id = Some(StrBytes::from_static_str("CLUSTER"));
        }
        // Kafka lists topics in hash order.
        self.topics.sort_by(|a, b| a.name.cmp(&b.name));
        for topic in &mut self.topics {
            n.topic_id(&mut topic.topic_id);
            topic.partitions.sort_by_key(|p| p.partition_index);
        }
    }
}

/// The topic configs Sluice implements (broker/src/configs.rs). D3: Kafka describes every topic
/// config it has; the lists are compared on these names only.
pub const SLUICE_TOPIC_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "max.message.bytes",
    "message.timestamp.type",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
    "delete.retention.ms",
];

/// D8: Kafka's storage tool writes `min.insync.replicas=1` as a cluster-wide dynamic default, so
/// Kafka reports its source as DYNAMIC_DEFAULT_BROKER_CONFIG (3) where Sluice, with no such
/// layer, reports DEFAULT_CONFIG (5): a difference of the reference setup, not of behaviour.
fn config_source(name: &str, source: &mut i8) {
    if name == "min.insync.replicas" && *source == 3 {
        *source = 5;
    }
}

impl Normalize for CreateTopicsResponse {
    fn normalize(&mut self, n: &mut Normalizer) {
        for topic in &mut self.topics {
            topic.topic_id = Uuid::nil();
            n.message(&mut topic.error_message);
            if let Some(configs) = topic.configs.as_mut() {
                configs.retain(|config| SLUICE_TOPIC_CONFIGS.contains(&config.name.as_str()));
                configs.sort_by(|a, b| a.name.cmp(&b.name));
                for config in configs {
                    config_source(config.name.as_str(), &mut config.config_source);
                }
            }
        }
    }
}

impl Normalize for ProduceResponse {
    fn normalize(&mut self, n: &mut Normalizer) {
        self.responses.sort_by(|a, b| a.name.cmp(&b.name));
        for topic in &mut self.responses {
            n.topic_id(&mut topic.topic_id);
            topic.partition_responses.sort_by_key(|p| p.index);
            for partition in &mut topic.partition_responses {
                n.message(&mut partition.error_message);
                for error in &mut partition.record_errors {
                    n.message(&mut error.batch_index_error_message);
                }
            }
        }
        for endpoint in &mut self.node_endpoints {
            endpoint.port = 0;
        }
    }
}

impl Normalize for FetchResponse {
    fn normalize(&mut self, n: &mut Normalizer) {
        for topic in &mut self.responses {
            n.topic_id(&mut topic.topic_id);
            for partition in &mut topic.partitions {
                n.records(&mut partition.records);
            }
        }
        for endpoint in &mut self.node_endpoints {
            endpoint.port = 0;
        }
    }
}

impl Normalize for ListOffsetsResponse {
    fn normalize(&mut self, _n: &mut Normalizer) {
        self.topics.sort_by(|a, b| a.name.cmp(&b.name));
        for topic in &mut self.topics {
            topic.partitions.sort_by_key(|p| p.partition_index);
        }
    }
}

impl Normalize for OffsetForLeaderEpochResponse {
    fn normalize(&mut self, _n: &mut Normalizer) {
        self.topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        for topic in &mut self.topics {
            topic.partitions.sort_by_key(|p| p.partition);
        }
    }
}

impl Normalize for FindCoordinatorResponse {
    fn normalize(&mut self, n: &mut Normalizer) {
        self.port = 0;
        n.message(&mut self.error_message);
        for coordinator in &mut self.coordinators {
            coordinator.port = 0;
            n.message(&mut coordinator.error_message);
        }
    }
}

impl Normalize for JoinGroupResponse {
    fn normalize(&mut self, _n: &mut Normalizer) {
        let mut ids = MemberIds::default();
        ids.map(&mut self.member_id);
        ids.map(&mut self.leader);
        for member in &mut self.members {
            ids.map(&mut member.member_id);
        }
        self.members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    }
}

impl Normalize for SyncGroupResponse {
    fn normalize(&mut self, _n: &mut Normalizer) {}
}

impl Normalize for HeartbeatResponse {
    fn normalize(&mut self, _n: &mut Normalizer) {}
}

impl Normalize for LeaveGroupResponse {
    fn normalize(&mut self, _n: &mut Normalizer) {
        let mut ids = MemberIds::default();
        for member in &mut self.members {
            ids.map(&mut member.member_id);
        }
    }
}

impl Normalize for OffsetCommitResponse {
    fn normalize(&mut self, n: &mut Normalizer) {
        self.topics.sort_by(|a, b| a.name.cmp(&b.name));
        for topic in &mut self.topics {
            n.topic_id(&mut topic.topic_id);
            topic.partitions.sort_by_key(|p| p.partition_index);
        }
    }
}

impl Normalize for OffsetFetchResponse {
    fn normalize(&mut self, n: &mut Normalizer) {
        self.topics.sort_by(|a, b| a.name.cmp(&b.name));
        for topic in &mut self.topics {
            topic.partitions.sort_by_key(|p| p.partition_index);
        }
        for group in &mut self.groups {
            group.topics.sort_by(|a, b| a.name.cmp(&b.name));
            for topic in &mut group.topics {
                n.topic_id(&mut topic.topic_id);
                topic.partitions.sort_by_key(|p| p.partition_index);
            }
        }
    }
}

impl Normalize for DescribeGroupsResponse {
    fn normalize(&mut self, n: &mut Normalizer) {
        for group in &mut self.groups {
            n.message(&mut group.error_message);
            let mut ids = MemberIds::default();
            group.members.sort_by(|a, b| {
                (&a.client_id, &a.member_assignment, &a.member_metadata).cmp(&(
                    &b.client_id,
                    &b.member_assignment,
                    &b.member_metadata,
                ))
            });
            for member in &mut group.members {
                ids.map(&mut member.member_id);
            }
        }
    }
}

impl Normalize for DescribeClusterResponse {
    fn normalize(&mut self, n: &mut Normalizer) {
        n.message(&mut self.error_message);
        if !self.cluster_id.is_empty() {
            self.cluster_id = StrBytes::from_static_str("CLUSTER");
        }
        for broker in &mut self.brokers {
            broker.port = 0;
        }
    }
}

impl Normalize for ListGroupsResponse {
    fn normalize(&mut self, _n: &mut Normalizer) {
        self.groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    }
}

impl Normalize for DescribeConfigsResponse {
    fn normalize(&mut self, n: &mut Normalizer) {
        for result in &mut self.results {
            n.message(&mut result.error_message);
            // D3: compared on the configs Sluice implements.
            result
                .configs
                .retain(|config| SLUICE_TOPIC_CONFIGS.contains(&config.name.as_str()));
            result.configs.sort_by(|a, b| a.name.cmp(&b.name));
            for config in &mut result.configs {
                config_source(config.name.as_str(), &mut config.config_source);
            }
        }
    }
}

impl Normalize for DeleteRecordsResponse {
    fn normalize(&mut self, _n: &mut Normalizer) {
        self.topics.sort_by(|a, b| a.name.cmp(&b.name));
        for topic in &mut self.topics {
            topic.partitions.sort_by_key(|p| p.partition_index);
        }
    }
}

impl Normalize for DeleteTopicsResponse {
    fn normalize(&mut self, n: &mut Normalizer) {
        for topic in &mut self.responses {
            n.topic_id(&mut topic.topic_id);
            n.message(&mut topic.error_message);
        }
        self.responses
            .sort_by(|a, b| (&a.name, a.topic_id).cmp(&(&b.name, b.topic_id)));
    }
}

impl Normalize for InitProducerIdResponse {
    fn normalize(&mut self, _n: &mut Normalizer) {
        // Producer ids are allocated per cluster; only "allocated or not" is comparable.
        if self.producer_id.0 >= 0 {
            self.producer_id = ProducerId(1000);
        }
    }
}

impl Normalize for CreatePartitionsResponse {
    fn normalize(&mut self, n: &mut Normalizer) {
        for result in &mut self.results {
            n.message(&mut result.error_message);
        }
        self.results.sort_by(|a, b| a.name.cmp(&b.name));
    }
}
