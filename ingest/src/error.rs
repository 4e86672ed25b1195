//! Errors: the crate's public [`Error`] (opening and serving), and [`ApiError`], what a request
//! fails with, rendered either REST-Proxy style (`{"error_code", "message"}` with REST Proxy's codes)
//! or as RFC 9457 `application/problem+json` (native endpoint). Status codes and codes live here only.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Errors of opening or running the ingest service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("idempotency store: {0}")]
    Wal(#[from] wal::Error),
    #[error("idempotency store record {lsn}: {reason}")]
    CorruptIdempotencyRecord { lsn: u64, reason: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid ingest configuration: {0}")]
    Config(String),
}

/// What went wrong with a request or with one record of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Malformed JSON, missing fields, bad query parameters.
    BadRequest,
    UnsupportedMediaType,
    /// Body over the configured limit.
    PayloadTooLarge,
    UnknownTopic,
    UnknownPartition,
    UnknownCluster,
    /// Well-formed JSON whose content is unusable (bad base64, unsupported type, bad timestamp).
    InvalidPayload,
    /// One record larger than the topic's `max.message.bytes`.
    RecordTooLarge,
    /// In-flight byte budget exhausted: retry later.
    Overloaded,
    /// The same idempotency key is still being processed.
    IdempotencyInFlight,
    /// The same idempotency key was used with a different request.
    IdempotencyMismatch,
    /// Shutting down, or metadata unavailable: retriable.
    Unavailable,
    /// The WAL or storage failed: the records were not written.
    Internal,
}

/// A request (or record) failure with a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

/// How an error body is shaped (chosen by the route family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorStyle {
    /// Confluent REST Proxy v2: `application/vnd.kafka.v2+json`.
    RestV2,
    /// Confluent REST Proxy v3: `application/json`.
    RestV3,
    /// RFC 9457 problem details.
    Problem,
}

/// Seconds a client is asked to wait after a 503.
pub(crate) const RETRY_AFTER_SECS: u32 = 1;

impl ApiError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::BadRequest, message)
    }
    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::InvalidPayload, message)
    }
    pub(crate) fn unknown_topic(topic: &str) -> ApiError {
        ApiError::new(ErrorKind::UnknownTopic, format!("Topic {topic} not found."))
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::PayloadTooLarge | ErrorKind::RecordTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnknownTopic | ErrorKind::UnknownPartition | ErrorKind::UnknownCluster => {
                StatusCode::NOT_FOUND
            }
            ErrorKind::InvalidPayload | ErrorKind::IdempotencyMismatch => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorKind::IdempotencyInFlight => StatusCode::CONFLICT,
            ErrorKind::Overloaded | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// REST Proxy's `error_code`: its own five-digit codes where it has one, else the HTTP status.
    pub(crate) fn rest_code(&self) -> i32 {
        match self.kind {
            ErrorKind::UnknownTopic => 40401,
            ErrorKind::UnknownPartition => 40402,
            ErrorKind::InvalidPayload => 42206,
            // KAFKA_RETRIABLE_ERROR_CODE and KAFKA_ERROR_CODE.
            ErrorKind::Unavailable => 50003,
            ErrorKind::Internal => 50002,
            _ => i32::from(self.status().as_u16()),
        }
    }

    /// REST Proxy v2 per-record `error_code`: 1 = not retriable, 2 = retriable.
    pub(crate) fn v2_record_code(&self) -> i32 {
        if self.retriable() {
            2
        } else {
            1
        }
    }

    pub(crate) fn retriable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Overloaded | ErrorKind::Unavailable | ErrorKind::IdempotencyInFlight
        )
    }

    fn problem_slug(&self) -> (&'static str, &'static str) {
        match self.kind {
            ErrorKind::BadRequest => ("bad-request", "Bad request"),
            ErrorKind::UnsupportedMediaType => ("unsupported-media-type", "Unsupported media type"),
            ErrorKind::PayloadTooLarge => ("payload-too-large", "Request body too large"),
            ErrorKind::UnknownTopic => ("unknown-topic", "Unknown topic"),
            ErrorKind::UnknownPartition => ("unknown-partition", "Unknown partition"),
            ErrorKind::UnknownCluster => ("unknown-cluster", "Unknown cluster"),
            ErrorKind::InvalidPayload => ("invalid-payload", "Invalid event"),
            ErrorKind::RecordTooLarge => ("record-too-large", "Record too large"),
            ErrorKind::Overloaded => ("overloaded", "Server busy"),
            ErrorKind::IdempotencyInFlight => {
                ("idempotency-in-flight", "Request with this key in progress")
            }
            ErrorKind::IdempotencyMismatch => (
                "idempotency-key-reused",
                "Idempotency key reused with another request",
            ),
            ErrorKind::Unavailable => ("unavailable", "Service unavailable"),
            ErrorKind::Internal => ("write-failed", "Write failed"),
        }
    }

    /// The problem-details object (also used per event in 207 bodies).
    pub(crate) fn problem_json(&self, instance: Option<&str>) -> serde_json::Value {
        let (slug, title) = self.problem_slug();
        let mut body = json!({
            "type": format!("urn:sluice:problem:{slug}"),
            "title": title,
            "status": self.status().as_u16(),
            "detail": self.message,
        });
        if let Some(instance) = instance {
            body["instance"] = json!(instance);
        }
        body
    }

    /// The whole HTTP response for this error in `style`.
    pub(crate) fn render(&self, style: ErrorStyle, request_id: Option<&str>) -> Response {
        let (content_type, body) = match style {
            ErrorStyle::RestV2 | ErrorStyle::RestV3 => (
                if style == ErrorStyle::RestV2 {
                    crate::rest_v2::V2_CONTENT_TYPE
                } else {
                    "application/json"
                },
                json!({ "error_code": self.rest_code(), "message": self.message }),
            ),
            ErrorStyle::Problem => {
                let mut body = self.problem_json(None);
                if let Some(id) = request_id {
                    body["request_id"] = json!(id);
                }
                ("application/problem+json", body)
            }
        };
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body.to_string(),
        )
            .into_response();
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Maps a storage failure of an append to what the client sees.
pub(crate) fn from_storage(error: &storage::Error) -> ApiError {
    match error {
        storage::Error::UnknownTopicOrPartition => {
            ApiError::new(ErrorKind::UnknownPartition, "unknown topic or partition")
        }
        storage::Error::ShuttingDown => {
            ApiError::new(ErrorKind::Unavailable, "the broker is shutting down")
        }
        // Another broker owns the partition: retriable (ownership may come back, or the client
        // sends to the owner).
        storage::Error::NotLeader {
            owner,
            leader_epoch,
        } => ApiError::new(
            ErrorKind::Unavailable,
            format!(
                "this broker does not own the partition: broker {owner} does (leader epoch {leader_epoch})"
            ),
        ),
        storage::Error::InvalidBatch(error) => {
            ApiError::new(ErrorKind::Internal, format!("batch refused: {error}"))
        }
        // Durability could not be established (yet): retriable, never a false 2xx.
        storage::Error::TimedOut
        | storage::Error::Wal(_)
        | storage::Error::ObjectStore(_)
        | storage::Error::Metadata(_) => ApiError::new(
            ErrorKind::Unavailable,
            format!("the event is not durable yet, retry: {error}"),
        ),
        other => ApiError::new(ErrorKind::Internal, format!("write failed: {other}")),
    }
}
