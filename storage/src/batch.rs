//! Kafka record batch v2 (magic 2): header parsing, validation, and the only rewrites we allow —
//! `baseOffset` (outside the CRC) and, for LogAppendTime topics, `maxTimestamp` + timestamp-type bit
//! with the CRC-32C recomputed.
//!
//! Layout (big-endian): baseOffset i64 @0, batchLength i32 @8, partitionLeaderEpoch i32 @12, magic i8
//! @16, crc u32 @17 (CRC-32C of bytes 21..end), attributes i16 @21, lastOffsetDelta i32 @23,
//! baseTimestamp i64 @27, maxTimestamp i64 @35, producerId i64 @43, producerEpoch i16 @51,
//! baseSequence i32 @53, recordCount i32 @57, records @61.

use bytes::Bytes;

/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 61;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// CRC-32C mismatch → Kafka CORRUPT_MESSAGE.
    #[error("record batch CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    CrcMismatch { stored: u32, computed: u32 },
    /// Truncated / inconsistent lengths / bad record encoding → Kafka CORRUPT_MESSAGE.
    #[error("malformed record batch: {0}")]
    Malformed(String),
    /// magic != 2 → Kafka UNSUPPORTED_FOR_MESSAGE_FORMAT.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// Header fields that contradict each other (count vs lastOffsetDelta...) → Kafka INVALID_RECORD.
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    #[error("unsupported compression codec {0}")]
    UnsupportedCompression(i16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the fixed header (no CRC check). Needs at least [`HEADER_LEN`] bytes.
    pub fn parse(_buf: &[u8]) -> Result<BatchHeader, BatchError> {
        todo!()
    }
    /// Whole batch size in bytes (`batchLength + 12`).
    pub fn total_len(&self) -> usize {
        todo!()
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    pub fn compression(&self) -> Result<Compression, BatchError> {
        todo!()
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Splits the `records` bytes of a produce partition into batches and fully validates each (magic 2,
/// lengths, CRC-32C, record count ≥ 1 and consistent with lastOffsetDelta). No partial results: any bad
/// batch fails the whole call.
pub fn split_and_validate(_records: &Bytes) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    todo!()
}

/// Validates one complete batch (exactly one, no trailing bytes).
pub fn validate(_batch: &[u8]) -> Result<BatchHeader, BatchError> {
    todo!()
}

/// Overwrites `baseOffset` (outside the CRC: the batch stays byte-for-byte otherwise).
pub fn set_base_offset(_batch: &mut [u8], _base_offset: i64) {
    todo!()
}

/// LogAppendTime: sets the timestamp-type attribute bit and `maxTimestamp` to `now_ms`, recomputes the CRC.
pub fn set_log_append_time(_batch: &mut [u8], _now_ms: i64) {
    todo!()
}

/// (offset, timestamp) of every record in the batch, decompressing if needed (ListOffsets by time).
pub fn record_timestamps(_batch: &[u8]) -> Result<Vec<(i64, i64)>, BatchError> {
    todo!()
}
