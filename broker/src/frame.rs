//! Kafka framing: every request and response is `[size: i32 BE][payload]`. I/O-free.

use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {0} is negative")]
    NegativeSize(i32),
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
}

/// Smallest request: api_key(2) + api_version(2) + correlation_id(4).
pub const MIN_REQUEST_LEN: usize = 8;

/// Validates the 4-byte size prefix and returns the payload length.
pub fn payload_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix);
    let size = usize::try_from(size).map_err(|_| FrameError::NegativeSize(size))?;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    if size < MIN_REQUEST_LEN {
        return Err(FrameError::TooShort(size));
    }
    Ok(size)
}

/// The fixed start of every request header (versions 0-2 all begin like this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Reads the api key, version and correlation id without trusting anything else in the frame.
pub fn request_prefix(payload: &[u8]) -> Result<RequestPrefix, FrameError> {
    let head: [u8; 8] = payload
        .get(..MIN_REQUEST_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::TooShort(payload.len()))?;
    Ok(RequestPrefix {
        api_key: i16::from_be_bytes([head[0], head[1]]),
        api_version: i16::from_be_bytes([head[2], head[3]]),
        correlation_id: i32::from_be_bytes([head[4], head[5], head[6], head[7]]),
    })
}

/// Prefixes a response payload with its size.
pub fn frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 4);
    // Responses are bounded by fetch byte limits, far below i32::MAX.
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_are_checked() {
        assert_eq!(payload_len(100i32.to_be_bytes(), 1000), Ok(100));
        assert_eq!(
            payload_len((-1i32).to_be_bytes(), 1000),
            Err(FrameError::NegativeSize(-1))
        );
        assert_eq!(
            payload_len(2000i32.to_be_bytes(), 1000),
            Err(FrameError::TooLarge {
                size: 2000,
                max: 1000
            })
        );
        assert_eq!(
            payload_len(3i32.to_be_bytes(), 1000),
            Err(FrameError::TooShort(3))
        );
    }

    proptest! {
        #[test]
        fn frame_round_trips(payload in proptest::collection::vec(any::<u8>(), 8..4096)) {
            let framed = frame(&payload);
            let prefix: [u8; 4] = framed[..4].try_into().unwrap();
            let len = payload_len(prefix, 1 << 20).unwrap();
            prop_assert_eq!(len, payload.len());
            prop_assert_eq!(&framed[4..], &payload[..]);
        }

        #[test]
        fn prefix_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let parsed = request_prefix(&bytes);
            prop_assert_eq!(parsed.is_ok(), bytes.len() >= MIN_REQUEST_LEN);
        }

        #[test]
        fn prefix_reads_the_header_fields(key in any::<i16>(), version in any::<i16>(), corr in any::<i32>()) {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&key.to_be_bytes());
            bytes.extend_from_slice(&version.to_be_bytes());
            bytes.extend_from_slice(&corr.to_be_bytes());
            let parsed = request_prefix(&bytes).unwrap();
            prop_assert_eq!(parsed, RequestPrefix { api_key: key, api_version: version, correlation_id: corr });
        }
    }
}
