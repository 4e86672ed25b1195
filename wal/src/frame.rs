//! Record framing, without I/O: `[len: u32 LE][crc32c(payload): u32 LE][payload]`.
//!
//! The writer, recovery, `read` and `replay` all go through [`Header`], so the format is defined in one
//! place. A frame with `len == 0` is never valid: a zero-filled region (preallocated or half-written
//! blocks after a crash) would otherwise parse as an endless run of empty records, because
//! `crc32c(b"") == 0`. That is why empty records are refused at submit.

use std::fmt;

/// Bytes of `len` + `crc` in front of every payload.
pub(crate) const HEADER_LEN: usize = 8;

/// Largest payload, chosen so that a whole frame length still fits in a `u32` (lengths and backpressure
/// permits are `u32`).
pub(crate) const MAX_PAYLOAD: usize = u32::MAX as usize - HEADER_LEN;

/// Length of the frame carrying a payload of `payload_len` bytes.
pub(crate) fn frame_len(payload_len: usize) -> u64 {
    HEADER_LEN as u64 + payload_len as u64
}

/// The 8-byte frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) len: u32,
    pub(crate) crc: u32,
}

impl Header {
    /// Header for `payload`; the caller guarantees `payload.len() <= MAX_PAYLOAD`.
    pub(crate) fn for_payload(payload: &[u8]) -> Header {
        debug_assert!(payload.len() <= MAX_PAYLOAD);
        Header {
            len: payload.len() as u32,
            crc: crc32c::crc32c(payload),
        }
    }

    pub(crate) fn encode(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&self.len.to_le_bytes());
        out[4..].copy_from_slice(&self.crc.to_le_bytes());
        out
    }

    /// Decodes a header from the first [`HEADER_LEN`] bytes of `bytes`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Header, FrameError> {
        let (len, crc) = match (bytes.get(0..4), bytes.get(4..8)) {
            (Some(len), Some(crc)) => (len, crc),
            _ => return Err(FrameError::IncompleteHeader),
        };
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(len);
        let mut crc_bytes = [0u8; 4];
        crc_bytes.copy_from_slice(crc);
        Ok(Header {
            len: u32::from_le_bytes(len_bytes),
            crc: u32::from_le_bytes(crc_bytes),
        })
    }

    /// Length of the whole frame (header + payload).
    pub(crate) fn frame_len(self) -> u64 {
        frame_len(self.len as usize)
    }

    /// Checks that the length is plausible given `available` bytes after the header.
    pub(crate) fn check_len(self, available: u64) -> Result<(), FrameError> {
        if self.len == 0 {
            return Err(FrameError::ZeroLength);
        }
        if u64::from(self.len) > available {
            return Err(FrameError::Truncated {
                len: self.len,
                available,
            });
        }
        Ok(())
    }

    /// Checks a checksum computed over the payload against the stored one.
    pub(crate) fn check_crc(self, computed: u32) -> Result<(), FrameError> {
        if computed == self.crc {
            Ok(())
        } else {
            Err(FrameError::CrcMismatch {
                stored: self.crc,
                computed,
            })
        }
    }
}

/// Why the bytes at a position are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    IncompleteHeader,
    ZeroLength,
    Truncated { len: u32, available: u64 },
    CrcMismatch { stored: u32, computed: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::IncompleteHeader => write!(f, "incomplete frame header"),
            FrameError::ZeroLength => write!(f, "zero-length frame"),
            FrameError::Truncated { len, available } => write!(
                f,
                "frame of {len} bytes but only {available} bytes follow its header"
            ),
            FrameError::CrcMismatch { stored, computed } => write!(
                f,
                "crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

/// Appends one frame to `out` (tests; the writer builds the same bytes with vectored writes).
#[cfg(test)]
pub(crate) fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&Header::for_payload(payload).encode());
    out.extend_from_slice(payload);
}

/// Decodes the frame at the start of `buf`, returning its payload and frame length.
#[cfg(test)]
pub(crate) fn decode_frame(buf: &[u8]) -> Result<(&[u8], usize), FrameError> {
    let header = Header::decode(buf)?;
    header.check_len((buf.len() - HEADER_LEN) as u64)?;
    let end = HEADER_LEN + header.len as usize;
    let payload = &buf[HEADER_LEN..end];
    header.check_crc(crc32c::crc32c(payload))?;
    Ok((payload, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 1..20)
    }

    proptest! {
        #[test]
        fn frames_round_trip(records in payloads()) {
            let mut buf = Vec::new();
            for record in &records {
                encode_frame(record, &mut buf);
            }
            let mut rest = &buf[..];
            for record in &records {
                let (payload, used) = decode_frame(rest).unwrap();
                prop_assert_eq!(payload, &record[..]);
                rest = &rest[used..];
            }
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn truncated_frame_is_rejected(record in prop::collection::vec(any::<u8>(), 1..300), cut in 0usize..308) {
            let mut buf = Vec::new();
            encode_frame(&record, &mut buf);
            let cut = cut % buf.len();
            prop_assert!(decode_frame(&buf[..cut]).is_err());
        }

        #[test]
        fn flipped_byte_is_rejected(record in prop::collection::vec(any::<u8>(), 1..300), at in any::<usize>(), bit in 0u8..8) {
            let mut buf = Vec::new();
            encode_frame(&record, &mut buf);
            let at = at % buf.len();
            buf[at] ^= 1 << bit;
            // A flipped length bit makes the frame longer or shorter than the buffer, a flipped crc or
            // payload bit breaks the checksum: every single-bit error must be caught.
            match decode_frame(&buf) {
                Err(_) => {}
                Ok((_, used)) => prop_assert!(used != buf.len(), "corruption accepted"),
            }
        }
    }

    #[test]
    fn zero_header_is_not_a_frame() {
        assert_eq!(decode_frame(&[0u8; 64]), Err(FrameError::ZeroLength));
    }

    #[test]
    fn header_layout_is_little_endian() {
        let header = Header::for_payload(b"abc");
        let bytes = header.encode();
        assert_eq!(&bytes[..4], &3u32.to_le_bytes());
        assert_eq!(&bytes[4..], &crc32c::crc32c(b"abc").to_le_bytes());
        assert_eq!(Header::decode(&bytes), Ok(header));
    }
}
