//! Request decoding and dispatch: request bytes in, response bytes out. No sockets here.
//!
//! Failure policy (what a Kafka broker does, and what clients expect):
//! - a frame too short for a header, a header or body that does not decode → the connection is closed
//!   (the stream can no longer be trusted); other connections are untouched;
//! - an API key or version outside [`crate::versions::SUPPORTED`] → an UNSUPPORTED_VERSION answer; for
//!   ApiVersions the answer is a v0 ApiVersionsResponse listing what is supported, so the client can
//!   retry with a version both sides know.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::errors::ErrorCode;
use crate::frame::{request_prefix, FrameError};
use crate::handlers;
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

/// Decodes a request body of type `T`, failing on trailing garbage.
pub(crate) fn decode_body<T: Decodable>(
    api: ApiKey,
    version: i16,
    body: &mut Bytes,
) -> Result<T, DispatchError> {
    let request = T::decode(body, version).map_err(|e| DispatchError::Decode {
        api,
        version,
        reason: e.to_string(),
    })?;
    if body.has_remaining() {
        return Err(DispatchError::Decode {
            api,
            version,
            reason: format!("{} trailing bytes", body.remaining()),
        });
    }
    Ok(request)
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

/// Handles one request payload (the frame without its size prefix).
pub async fn handle_frame(broker: &Broker, payload: Bytes) -> Outcome {
    match dispatch(broker, payload).await {
        Ok(Some(response)) => Outcome::Respond(response),
        Ok(None) => Outcome::NoResponse,
        Err(error) => Outcome::Close(error.to_string()),
    }
}

async fn dispatch(broker: &Broker, mut payload: Bytes) -> Result<Option<Bytes>, DispatchError> {
    let prefix = request_prefix(&payload)?;
    if !is_supported(prefix.api_key, prefix.api_version) {
        return Ok(Some(unsupported_version(
            prefix.api_key,
            prefix.correlation_id,
        )));
    }
    let api = ApiKey::try_from(prefix.api_key).map_err(|()| DispatchError::Decode {
        api: ApiKey::ApiVersions,
        version: prefix.api_version,
        reason: format!("unknown api key {}", prefix.api_key),
    })?;
    let version = prefix.api_version;
    let header =
        RequestHeader::decode(&mut payload, api.request_header_version(version)).map_err(|e| {
            DispatchError::Decode {
                api,
                version,
                reason: format!("header: {e}"),
            }
        })?;
    handlers::handle(broker, api, version, header, payload).await
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
