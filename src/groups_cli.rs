//! `sluice groups list|describe GROUP`: an operator's view of consumer groups over the Kafka
//! protocol (any Kafka-compatible broker at `--bootstrap` works), with per-partition lag
//! (log end offset − committed offset), like `kafka-consumer-groups.sh --describe`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::{Args, Subcommand};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerProtocolAssignment, DescribeGroupsRequest, FindCoordinatorRequest,
    GroupId, ListGroupsRequest, ListOffsetsRequest, OffsetFetchRequest, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on one request/response round trip.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response frame accepted (a describe of a huge group stays far below).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Args)]
pub(crate) struct GroupsArgs {
    /// Kafka listener of any broker (`host:port`).
    #[arg(
        long,
        env = "SLUICE_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    bootstrap: String,
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(Subcommand)]
enum GroupsCommand {
    /// Lists every consumer group with its state.
    List,
    /// Shows a group's state, members and per-partition committed offsets and lag.
    Describe { group: String },
}

/// One connection speaking request/response Kafka.
struct Connection {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl Connection {
    async fn connect(address: &str) -> Result<Connection> {
        let stream = tokio::time::timeout(ROUND_TRIP_TIMEOUT, TcpStream::connect(address))
            .await
            .with_context(|| format!("connecting to {address} timed out"))?
            .with_context(|| format!("cannot connect to {address}"))?;
        Ok(Connection {
            stream,
            next_correlation_id: 1,
        })
    }

    async fn request<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response> {
        let api = ApiKey::try_from(R::KEY).map_err(|()| anyhow::anyhow!("unknown api key"))?;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("sluice-groups")));
        let mut body = BytesMut::new();
        header.encode(&mut body, api.request_header_version(version))?;
        request.encode(&mut body, version)?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(i32::try_from(body.len()).context("request too large")?);
        frame.put_slice(&body);
        let mut response = tokio::time::timeout(ROUND_TRIP_TIMEOUT, async {
            self.stream.write_all(&frame).await?;
            let size = self.stream.read_i32().await?;
            let size = usize::try_from(size)
                .ok()
                .filter(|size| *size <= MAX_RESPONSE_BYTES)
                .ok_or_else(|| std::io::Error::other(format!("bad response size {size}")))?;
            let mut buf = vec![0u8; size];
            self.stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(Bytes::from(buf))
        })
        .await
        .context("the broker did not answer in time")?
        .context("talking to the broker")?;
        let header = ResponseHeader::decode(&mut response, api.response_header_version(version))?;
        if header.correlation_id != correlation_id {
            bail!("the broker answered another request");
        }
        let decoded = R::Response::decode(&mut response, version)?;
        Ok(decoded)
    }
}

fn error_name(code: i16) -> String {
    match code {
        0 => "NONE".into(),
        15 => "COORDINATOR_NOT_AVAILABLE".into(),
        16 => "NOT_COORDINATOR".into(),
        24 => "INVALID_GROUP_ID".into(),
        69 => "GROUP_ID_NOT_FOUND".into(),
        other => format!("error {other}"),
    }
}

pub(crate) fn run(args: GroupsArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.command {
            GroupsCommand::List => list(&args.bootstrap).await,
            GroupsCommand::Describe { group } => describe(&args.bootstrap, &group).await,
        }
    })
}

async fn list(bootstrap: &str) -> Result<()> {
    let mut connection = Connection::connect(bootstrap).await?;
    let response = connection.request(&ListGroupsRequest::default(), 4).await?;
    if response.error_code != 0 {
        bail!("ListGroups failed: {}", error_name(response.error_code));
    }
    println!("{:<40} {:<22} PROTOCOL-TYPE", "GROUP", "STATE");
    for group in response.groups {
        println!(
            "{:<40} {:<22} {}",
            group.group_id.0.as_str(),
            group.group_state.as_str(),
            group.protocol_type.as_str()
        );
    }
    Ok(())
}

/// The connection to the group's coordinator (asked through the bootstrap broker).
async fn coordinator(bootstrap: &str, group: &str) -> Result<Connection> {
    let mut connection = Connection::connect(bootstrap).await?;
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into()));
    let response = connection.request(&request, 3).await?;
    if response.error_code != 0 {
        bail!(
            "FindCoordinator for {group} failed: {}",
            error_name(response.error_code)
        );
    }
    let address = format!("{}:{}", response.host.as_str(), response.port);
    if address == bootstrap {
        return Ok(connection);
    }
    Connection::connect(&address).await
}

/// (topic, partition) → member id, from the consumer-protocol assignments of a stable group.
fn assignments(
    members: &[kafka_protocol::messages::describe_groups_response::DescribedGroupMember],
) -> BTreeMap<(String, i32), (String, String)> {
    let mut owners = BTreeMap::new();
    for member in members {
        let mut bytes = member.member_assignment.clone();
        if bytes.remaining() < 2 {
            continue;
        }
        let version = bytes.get_i16();
        let Ok(assignment) = ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3))
        else {
            continue;
        };
        for topic in assignment.assigned_partitions {
            for partition in topic.partitions {
                owners.insert(
                    (topic.topic.0.to_string(), partition),
                    (member.member_id.to_string(), member.client_id.to_string()),
                );
            }
        }
    }
    owners
}

async fn describe(bootstrap: &str, group: &str) -> Result<()> {
    let mut connection = coordinator(bootstrap, group).await?;
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.into()))]);
    let described = connection.request(&request, 5).await?;
    let Some(info) = described.groups.into_iter().next() else {
        bail!("the broker described no group");
    };
    if info.error_code != 0 {
        bail!("DescribeGroups failed: {}", error_name(info.error_code));
    }
    println!(
        "group {group}: state {}, protocol {} {}, {} member(s)",
        info.group_state.as_str(),
        info.protocol_type.as_str(),
        info.protocol_data.as_str(),
        info.members.len()
    );
    let owners = assignments(&info.members);

    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_topics(None);
    let committed = connection.request(&fetch, 7).await?;
    if committed.error_code != 0 {
        bail!("OffsetFetch failed: {}", error_name(committed.error_code));
    }
    // Every partition with a commit or an owner.
    let mut rows: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in &committed.topics {
        for partition in &topic.partitions {
            rows.insert(
                (topic.name.0.to_string(), partition.partition_index),
                partition.committed_offset,
            );
        }
    }
    for key in owners.keys() {
        rows.entry(key.clone()).or_insert(-1);
    }

    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in rows.keys() {
        by_topic.entry(topic.clone()).or_default().push(*partition);
    }
    let list = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            by_topic
                .iter()
                .map(|(topic, partitions)| {
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(
                            partitions
                                .iter()
                                .map(|p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(*p)
                                        .with_timestamp(-1)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    // Log end offsets come from the partition owners; single node: the bootstrap broker.
    let mut data = Connection::connect(bootstrap).await?;
    let ends = data.request(&list, 7).await?;
    let mut end_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in ends.topics {
        for partition in topic.partitions {
            if partition.error_code == 0 {
                end_offsets.insert(
                    (topic.name.0.to_string(), partition.partition_index),
                    partition.offset,
                );
            }
        }
    }

    println!(
        "{:<30} {:>9} {:>15} {:>15} {:>10}  {:<40} CLIENT-ID",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID"
    );
    let mut total_lag = 0i64;
    for ((topic, partition), committed) in &rows {
        let end = end_offsets.get(&(topic.clone(), *partition)).copied();
        let lag = match (end, *committed) {
            (Some(end), committed) if committed >= 0 => Some((end - committed).max(0)),
            _ => None,
        };
        total_lag += lag.unwrap_or(0);
        let (member, client) = owners
            .get(&(topic.clone(), *partition))
            .cloned()
            .unwrap_or_else(|| ("-".into(), "-".into()));
        let show = |value: Option<i64>| value.map_or("-".to_string(), |v| v.to_string());
        println!(
            "{:<30} {:>9} {:>15} {:>15} {:>10}  {:<40} {}",
            topic,
            partition,
            show((*committed >= 0).then_some(*committed)),
            show(end),
            show(lag),
            member,
            client
        );
    }
    println!("total lag: {total_lag}");
    Ok(())
}
