//! Request decoding and dispatch: request bytes in, response bytes out. No sockets here.
//!
//! Failure policy (what a Kafka broker does, and what clients expect):
//! - a frame too short for a header, a header or body that does not decode → the connection is closed
//!   (the stream can no longer be trusted); other connections are untouched;
//! - an API key or version outside [`crate::versions::SUPPORTED`] → an UNSUPPORTED_VERSION answer; for
//!   ApiVersions the answer is a v0 ApiVersionsResponse listing what is supported, so the client can
//!   retry with a version both sides know.

use std::net::IpAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::errors::ErrorCode;
use crate::frame::{request_prefix, FrameError};
use crate::handlers;
use crate::legacy;
use crate::versions::{is_supported, SUPPORTED};
use crate::Broker;

/// What the connection should do with a request's outcome.
#[derive(Debug)]
pub enum Outcome {
    /// Send this response payload (without the size prefix).
    Respond(Bytes),
    /// Send nothing (Produce with acks=0).
    NoResponse,
    /// Close the connection: the request could not be understood.
    Close(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("cannot decode {api:?} v{version}: {reason}")]
    Decode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("cannot encode response: {0}")]
    Encode(String),
}

/// Encodes a response header + body for `api` at `version`.
pub(crate) fn encode_response<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, DispatchError> {
    let header_version = api.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header
        .compute_size(header_version)
        .and_then(|h| body.compute_size(version).map(|b| h + b))
        .map_err(|e| DispatchError::Encode(e.to_string()))?;
    let mut out = BytesMut::with_capacity(size);
    header
        .encode(&mut out, header_version)
        .and_then(|()| body.encode(&mut out, version))
        .map_err(|e| DispatchError::Encode(e.to_string()))?;
    Ok(out.freeze())
}

/// The v0 ApiVersions answer: error code + every supported range.
pub fn api_versions_body(error: ErrorCode) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error.code())
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*key as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
}

/// Handles one request payload (the frame without its size prefix) from an unknown peer.
pub async fn handle_frame(broker: &Broker, payload: Bytes) -> Outcome {
    let (placed, _) = tokio::sync::oneshot::channel();
    handle_frame_ordered(broker, payload, None, placed).await
}

/// Like [`handle_frame`] for a request from `peer` (the connection's remote address: group
/// members' `client_host`), telling `placed` (or dropping it) once the request's effects are
/// ordered: a Produce when all its batches are placed in their partitions, any other request when
/// it is done. The connection starts its next request only then, which keeps Kafka's
/// per-connection order.
pub async fn handle_frame_ordered(
    broker: &Broker,
    payload: Bytes,
    peer: Option<IpAddr>,
    placed: tokio::sync::oneshot::Sender<()>,
) -> Outcome {
    let client_host = peer.map(client_host).unwrap_or_default();
    match dispatch(broker, payload, &client_host, placed).await {
        Ok(Some(response)) => Outcome::Respond(response),
        Ok(None) => Outcome::NoResponse,
        Err(error) => Outcome::Close(error.to_string()),
    }
}

/// A peer address as Kafka reports it in `client_host` (Java's `InetAddress.toString()` of an
/// address without a host name): "/" + the address, IPv6 as eight uncompressed hex groups, an
/// IPv4-mapped IPv6 address as IPv4.
pub fn client_host(peer: IpAddr) -> String {
    match peer.to_canonical() {
        IpAddr::V4(v4) => format!("/{v4}"),
        IpAddr::V6(v6) => {
            let groups: Vec<String> = v6.segments().iter().map(|g| format!("{g:x}")).collect();
            format!("/{}", groups.join(":"))
        }
    }
}

/// A request decoded from its frame, ready for a handler.
#[derive(Debug)]
pub enum Decoded {
    Request {
        api: ApiKey,
        /// The version the request is handled and answered at: the request's own, except for a
        /// version without a kafka-protocol schema that [`crate::legacy`] maps to a newer one.
        version: i16,
        header: RequestHeader,
        /// `None` only for an ApiVersions body that did not decode: Kafka still answers it.
        body: Option<Box<RequestKind>>,
    },
    /// An API key or version outside [`SUPPORTED`]: answer UNSUPPORTED_VERSION.
    Unsupported {
        api_key: i16,
        api_version: i16,
        correlation_id: i32,
    },
}

/// Decodes a request payload without doing anything with it (I/O-free; the fuzz target's entry).
pub fn decode_request(mut payload: Bytes) -> Result<Decoded, DispatchError> {
    let prefix = request_prefix(&payload)?;
    if !is_supported(prefix.api_key, prefix.api_version) {
        return Ok(Decoded::Unsupported {
            api_key: prefix.api_key,
            api_version: prefix.api_version,
            correlation_id: prefix.correlation_id,
        });
    }
    let version = prefix.api_version;
    let api = ApiKey::try_from(prefix.api_key).map_err(|()| DispatchError::Decode {
        api: ApiKey::ApiVersions,
        version,
        reason: format!("unknown api key {}", prefix.api_key),
    })?;
    let header =
        RequestHeader::decode(&mut payload, api.request_header_version(version)).map_err(|e| {
            DispatchError::Decode {
                api,
                version,
                reason: format!("header: {e}"),
            }
        })?;
    let legacy_error = |reason| DispatchError::Decode {
        api,
        version,
        reason,
    };
    let (body, version) = match (api, version) {
        (ApiKey::OffsetCommit, legacy::OFFSET_COMMIT_V1) => (
            // No schema in kafka-protocol; handled and answered as v2 (same response bytes).
            legacy::decode_offset_commit_v1(&mut payload)
                .map(RequestKind::OffsetCommit)
                .map_err(legacy_error),
            legacy::OFFSET_COMMIT_V1_ANSWERED_AS,
        ),
        (ApiKey::DescribeConfigs, legacy::DESCRIBE_CONFIGS_V0) => (
            // No schema in kafka-protocol; the handler answers in the v0 layout.
            legacy::decode_describe_configs_v0(&mut payload)
                .map(RequestKind::DescribeConfigs)
                .map_err(legacy_error),
            version,
        ),
        _ => (
            RequestKind::decode(api, &mut payload, version).map_err(|e| DispatchError::Decode {
                api,
                version,
                reason: e.to_string(),
            }),
            version,
        ),
    };
    if payload.has_remaining() {
        // Kafka ignores bytes after the body, and librdkafka relies on it (its "all topics" Metadata
        // v12 request carries a 3-byte leftover of a placeholder), so do we.
        tracing::debug!(
            ?api,
            version,
            trailing = payload.remaining(),
            "ignoring trailing request bytes"
        );
    }
    let body = match body {
        Ok(body) => Some(Box::new(body)),
        // The ApiVersions body (client name/version) is informational; a body that doesn't decode
        // still gets the version list, as Kafka does, so the client can pick a version.
        Err(_) if api == ApiKey::ApiVersions => None,
        Err(error) => return Err(error),
    };
    Ok(Decoded::Request {
        api,
        version,
        header,
        body,
    })
}

async fn dispatch(
    broker: &Broker,
    payload: Bytes,
    client_host: &str,
    placed: tokio::sync::oneshot::Sender<()>,
) -> Result<Option<Bytes>, DispatchError> {
    match decode_request(payload)? {
        Decoded::Unsupported {
            api_key,
            api_version,
            correlation_id,
        } => {
            // A client or tool that Sluice cannot serve gets UNSUPPORTED_VERSION *and* a line an
            // operator can find, naming the API, the version asked for and what is supported.
            let supported = SUPPORTED
                .iter()
                .find(|(key, _, _)| *key as i16 == api_key)
                .map(|(key, min, max)| format!("{key:?} v{min}-v{max}"));
            tracing::warn!(
                api_key,
                api_version,
                supported = supported.as_deref().unwrap_or("API not supported"),
                "answering UNSUPPORTED_VERSION"
            );
            metrics::counter!("broker_unsupported_requests_total").increment(1);
            Ok(Some(unsupported_version(api_key, correlation_id)))
        }
        Decoded::Request {
            api,
            version,
            header,
            body,
        } => {
            let started = std::time::Instant::now();
            let client_id = header.client_id.as_deref().unwrap_or("");
            let response = handlers::handle(
                broker,
                api,
                version,
                header.correlation_id,
                client_id,
                client_host,
                body,
                placed,
            )
            .await;
            // Recorded through the `metrics` facade: whoever installed a recorder (the HTTP
            // ingest's Prometheus page) shows them; without one this is a no-op.
            let api_name = format!("{api:?}");
            metrics::counter!("broker_requests_total", "api" => api_name.clone()).increment(1);
            metrics::histogram!("broker_request_duration_seconds", "api" => api_name)
                .record(started.elapsed().as_secs_f64());
            response
        }
    }
}

/// Answer to an API key or version we do not support.
fn unsupported_version(api_key: i16, correlation_id: i32) -> Bytes {
    if api_key == ApiKey::ApiVersions as i16 {
        // KIP-511: a newer ApiVersions gets a v0 answer (header v0) so the client can downgrade.
        if let Ok(bytes) = encode_response(
            ApiKey::ApiVersions,
            0,
            correlation_id,
            &api_versions_body(ErrorCode::UnsupportedVersion),
        ) {
            return bytes;
        }
    }
    // No response schema exists for an unknown key/version, so the answer is the correlation id (so the
    // client can match it) followed by the UNSUPPORTED_VERSION code; the connection stays usable.
    let mut out = BytesMut::with_capacity(6);
    out.put_i32(correlation_id);
    out.put_i16(ErrorCode::UnsupportedVersion.code());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_host_is_printed_as_kafka_prints_it() {
        assert_eq!(client_host("127.0.0.1".parse().unwrap()), "/127.0.0.1");
        // Java prints IPv6 without zero compression, and an IPv4-mapped address as IPv4.
        assert_eq!(client_host("::1".parse().unwrap()), "/0:0:0:0:0:0:0:1");
        assert_eq!(
            client_host("fe80::1:ab".parse().unwrap()),
            "/fe80:0:0:0:0:0:1:ab"
        );
        assert_eq!(client_host("::ffff:10.0.0.7".parse().unwrap()), "/10.0.0.7");
    }
}
