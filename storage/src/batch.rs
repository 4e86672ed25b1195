//! Kafka record batch v2 (magic 2): header parsing, validation, and the only rewrites we allow —
//! `baseOffset` (outside the CRC), for LogAppendTime topics `maxTimestamp` + timestamp-type bit
//! with the CRC-32C recomputed, and for topics with a `compression.type` codec the records
//! section recompressed to that codec ([`recompress`]: compression bits, `batchLength`, CRC-32C;
//! every other header field, producer id/epoch/sequence included, kept).
//!
//! Layout (big-endian): baseOffset i64 @0, batchLength i32 @8, partitionLeaderEpoch i32 @12, magic i8
//! @16, crc u32 @17 (CRC-32C of bytes 21..end), attributes i16 @21, lastOffsetDelta i32 @23,
//! baseTimestamp i64 @27, maxTimestamp i64 @35, producerId i64 @43, producerEpoch i16 @51,
//! baseSequence i32 @53, recordCount i32 @57, records @61.
//!
//! Each record (inside the possibly compressed records section): length varint, attributes i8,
//! timestampDelta varlong, offsetDelta varint, key (varint length, -1 = null), value (same), header
//! count varint, then per header a key (varint length ≥ 0) and a value (varint length, -1 = null).
//! Varints are zigzag-encoded like protobuf's `sint32`/`sint64`.
//!
//! Everything here reads bytes from the network or disk, so nothing may panic: slices are taken with
//! `get`/`split_at_checked`-style helpers and offset/timestamp arithmetic is checked.

use std::io::Read;

use bytes::Bytes;

/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 61;

/// Byte positions of the header fields we read or rewrite individually.
const BASE_OFFSET_AT: usize = 0;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const BATCH_LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
const CRC_COVERS_FROM: usize = 21;
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;
/// `baseOffset` + `batchLength`: the bytes of a batch that `batchLength` does not count.
const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength`: a header with an empty records section (49).
const MIN_BATCH_LENGTH: usize = HEADER_LEN - LOG_OVERHEAD;
const SUPPORTED_MAGIC: i8 = 2;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_LOG_APPEND_TIME: i16 = 0x08;

/// Upper bound on a batch's decompressed records section. Kafka's default `message.max.bytes` is
/// about 1 MiB, so anything near this is hostile (a decompression bomb) rather than real data.
const MAX_DECOMPRESSED_LEN: usize = 256 << 20;

/// The smallest possible encoded record: a 1-byte length followed by attributes, timestampDelta,
/// offsetDelta, key length, value length and header count, one byte each. Used to cap allocations
/// sized from an untrusted record count.
const MIN_RECORD_LEN: usize = 7;

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

fn malformed(reason: impl Into<String>) -> BatchError {
    BatchError::Malformed(reason.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec's value in the batch attributes' low three bits.
    fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
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

/// Copies the `N` bytes at `at` out of the fixed header. The callers only pass constant positions
/// inside the 61-byte layout, so the range is always in bounds.
fn header_field<const N: usize>(header: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut field = [0u8; N];
    field.copy_from_slice(&header[at..at + N]);
    field
}

impl BatchHeader {
    /// Parses the fixed header (no CRC check). Needs at least [`HEADER_LEN`] bytes.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(malformed(format!(
                "record batch header needs {HEADER_LEN} bytes, got {}",
                buf.len()
            )));
        };
        Ok(BatchHeader {
            base_offset: i64::from_be_bytes(header_field(h, BASE_OFFSET_AT)),
            batch_length: i32::from_be_bytes(header_field(h, BATCH_LENGTH_AT)),
            partition_leader_epoch: i32::from_be_bytes(header_field(h, PARTITION_LEADER_EPOCH_AT)),
            magic: i8::from_be_bytes(header_field(h, MAGIC_AT)),
            crc: u32::from_be_bytes(header_field(h, CRC_AT)),
            attributes: i16::from_be_bytes(header_field(h, ATTRIBUTES_AT)),
            last_offset_delta: i32::from_be_bytes(header_field(h, 23)),
            base_timestamp: i64::from_be_bytes(header_field(h, 27)),
            max_timestamp: i64::from_be_bytes(header_field(h, MAX_TIMESTAMP_AT)),
            producer_id: i64::from_be_bytes(header_field(h, 43)),
            producer_epoch: i16::from_be_bytes(header_field(h, 51)),
            base_sequence: i32::from_be_bytes(header_field(h, 53)),
            record_count: i32::from_be_bytes(header_field(h, 57)),
        })
    }
    /// Whole batch size in bytes (`batchLength + 12`).
    ///
    /// A negative `batchLength` (only possible on a header that was never validated) counts as 0.
    pub fn total_len(&self) -> usize {
        usize::try_from(self.batch_length)
            .unwrap_or(0)
            .saturating_add(LOG_OVERHEAD)
    }
    pub fn last_offset(&self) -> i64 {
        // Saturating: on an unvalidated header both fields are attacker-chosen.
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }
    pub fn compression(&self) -> Result<Compression, BatchError> {
        match self.attributes & COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            codec => Err(BatchError::UnsupportedCompression(codec)),
        }
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
    fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_LOG_APPEND_TIME != 0
    }
}

/// Splits the `records` bytes of a produce partition into batches and fully validates each (magic 2,
/// lengths, CRC-32C, record count ≥ 1 and consistent with lastOffsetDelta). No partial results: any bad
/// batch fails the whole call.
///
/// The returned `Bytes` are zero-copy slices of `records`. Compressed batches are not decompressed
/// here (this is the produce hot path); uncompressed ones have their records walked as well.
pub fn split_and_validate(records: &Bytes) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    if records.is_empty() {
        return Err(malformed("produce partition carries no record batches"));
    }
    let mut batches = Vec::new();
    let mut start = 0;
    // Each iteration advances `start` by at least HEADER_LEN bytes or returns an error.
    while let Some(rest) = records.get(start..).filter(|rest| !rest.is_empty()) {
        let header = check_framing(rest)?;
        let end = start + header.total_len();
        let batch = records.slice(start..end);
        check_contents(&header, &batch)?;
        batches.push((header, batch));
        start = end;
    }
    Ok(batches)
}

/// Validates one complete batch (exactly one, no trailing bytes).
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = check_single_batch(batch)?;
    check_contents(&header, batch)?;
    Ok(header)
}

/// Overwrites `baseOffset` (outside the CRC: the batch stays byte-for-byte otherwise).
///
/// Meant for batches that passed [`validate`]; a buffer too short to hold a header is left untouched.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    if let Some(field) = batch.get_mut(BASE_OFFSET_AT..BASE_OFFSET_AT + 8) {
        field.copy_from_slice(&base_offset.to_be_bytes());
    }
}

/// Overwrites `partitionLeaderEpoch` with the epoch of the leader appending the batch, as Kafka
/// does (outside the CRC, like `baseOffset`); consumers read it to track leader epochs.
///
/// Meant for batches that passed [`validate`]; a buffer too short to hold a header is left untouched.
pub fn set_partition_leader_epoch(batch: &mut [u8], leader_epoch: i32) {
    if let Some(field) = batch.get_mut(PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4) {
        field.copy_from_slice(&leader_epoch.to_be_bytes());
    }
}

/// LogAppendTime: sets the timestamp-type attribute bit and `maxTimestamp` to `now_ms`, recomputes the CRC.
///
/// Meant for batches that passed [`validate`]; a buffer too short to hold a header is left untouched.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let Ok(header) = BatchHeader::parse(batch) else {
        return;
    };
    let attributes = header.attributes | TIMESTAMP_TYPE_LOG_APPEND_TIME;
    if let Some(field) = batch.get_mut(ATTRIBUTES_AT..ATTRIBUTES_AT + 2) {
        field.copy_from_slice(&attributes.to_be_bytes());
    }
    if let Some(field) = batch.get_mut(MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8) {
        field.copy_from_slice(&now_ms.to_be_bytes());
    }
    // The CRC covers exactly this batch; if the caller's slice is longer (it should not be) the
    // trailing bytes belong to someone else and must not be folded in.
    let end = header.total_len().min(batch.len());
    let crc = batch.get(CRC_COVERS_FROM..end).map(crc32c::crc32c);
    if let (Some(crc), Some(field)) = (crc, batch.get_mut(CRC_AT..CRC_AT + 4)) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
}

/// Rewrites `batch` with its records section compressed with `target`, as Kafka does for a topic
/// whose `compression.type` is a codec: `None` when the batch already uses `target` (it is stored
/// untouched), else the new batch. The records are decompressed (bounded against bombs), checked
/// to frame exactly `recordCount` records, and compressed once; the compression bits,
/// `batchLength` and CRC-32C are rewritten, every other header field (base offset, leader epoch,
/// timestamps, producer id, epoch and base sequence, counts) is kept, as are the record bytes
/// themselves, so offsets and timestamps read back as before.
///
/// Meant for batches that passed [`validate`] (or [`split_and_validate`]); the CRC is not checked
/// again.
pub fn recompress(batch: &[u8], target: Compression) -> Result<Option<Vec<u8>>, BatchError> {
    recompress_bounded(batch, target, MAX_DECOMPRESSED_LEN)
}

fn recompress_bounded(
    batch: &[u8],
    target: Compression,
    max_decompressed_len: usize,
) -> Result<Option<Vec<u8>>, BatchError> {
    let header = check_single_batch(batch)?;
    check_counts(&header)?;
    let source = header.compression()?;
    if source == target {
        return Ok(None);
    }
    let section = records_section(batch);
    let records = match source {
        Compression::None => std::borrow::Cow::Borrowed(section),
        codec => std::borrow::Cow::Owned(decompress(codec, section, max_decompressed_len)?),
    };
    walk_records(&records, header.record_count, |_| Ok(()))?;
    let compressed = compress(target, &records)?;
    let batch_length = i32::try_from(HEADER_LEN - LOG_OVERHEAD + compressed.len())
        .map_err(|_| malformed("recompressed batch exceeds 2 GiB"))?;
    let attributes = (header.attributes & !COMPRESSION_MASK) | target.attribute_bits();
    let mut out = Vec::with_capacity(HEADER_LEN + compressed.len());
    out.extend_from_slice(batch.get(..HEADER_LEN).unwrap_or_default());
    out.extend_from_slice(&compressed);
    overwrite(&mut out, BATCH_LENGTH_AT, &batch_length.to_be_bytes());
    overwrite(&mut out, ATTRIBUTES_AT, &attributes.to_be_bytes());
    let crc = crc32c::crc32c(out.get(CRC_COVERS_FROM..).unwrap_or_default());
    overwrite(&mut out, CRC_AT, &crc.to_be_bytes());
    Ok(Some(out))
}

/// Writes `value` at `at` when it fits (callers pass header positions of a full header).
fn overwrite(buf: &mut [u8], at: usize, value: &[u8]) {
    if let Some(field) = buf.get_mut(at..at + value.len()) {
        field.copy_from_slice(value);
    }
}

/// (offset, timestamp) of every record in the batch, decompressing if needed (ListOffsets by time).
///
/// Checks the header (magic, lengths, CRC, counts) like [`validate`] before trusting it. For
/// LogAppendTime batches every record's timestamp is the batch's `maxTimestamp`.
pub fn record_timestamps(batch: &[u8]) -> Result<Vec<(i64, i64)>, BatchError> {
    record_timestamps_bounded(batch, MAX_DECOMPRESSED_LEN)
}

fn record_timestamps_bounded(
    batch: &[u8],
    max_decompressed_len: usize,
) -> Result<Vec<(i64, i64)>, BatchError> {
    let header = check_single_batch(batch)?;
    check_crc(&header, batch)?;
    check_counts(&header)?;
    let compression = header.compression()?;
    let section = records_section(batch);
    let decompressed;
    let records = if compression == Compression::None {
        section
    } else {
        decompressed = decompress(compression, section, max_decompressed_len)?;
        decompressed.as_slice()
    };

    let declared = usize::try_from(header.record_count).unwrap_or(0);
    let mut out = Vec::with_capacity(declared.min(records.len() / MIN_RECORD_LEN));
    let log_append_time = header.is_log_append_time();
    walk_records(records, header.record_count, |fields| {
        let offset = header
            .base_offset
            .checked_add(i64::from(fields.offset_delta))
            .ok_or_else(|| malformed("record offset overflows i64"))?;
        let timestamp = if log_append_time {
            header.max_timestamp
        } else {
            header
                .base_timestamp
                .checked_add(fields.timestamp_delta)
                .ok_or_else(|| malformed("record timestamp overflows i64"))?
        };
        out.push((offset, timestamp));
        Ok(())
    })?;
    Ok(out)
}

/// Reads the header at the start of `buf` and checks that a whole batch of that length is there.
/// Magic is checked first: magic 0/1 message sets have a different layout, and byte 16 is the magic
/// in every format, so nothing else may be trusted until it says 2.
fn check_framing(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let Some(&magic) = buf.get(MAGIC_AT) else {
        return Err(malformed(format!(
            "truncated record batch: {} bytes, header needs {HEADER_LEN}",
            buf.len()
        )));
    };
    let magic = i8::from_be_bytes([magic]);
    if magic != SUPPORTED_MAGIC {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    let header = BatchHeader::parse(buf)?;
    let batch_length = usize::try_from(header.batch_length).unwrap_or(0);
    if batch_length < MIN_BATCH_LENGTH {
        return Err(malformed(format!(
            "batchLength {} is below the minimum {MIN_BATCH_LENGTH}",
            header.batch_length
        )));
    }
    if header.total_len() > buf.len() {
        return Err(malformed(format!(
            "truncated record batch: batchLength {} needs {} bytes, {} present",
            header.batch_length,
            header.total_len(),
            buf.len()
        )));
    }
    Ok(header)
}

/// [`check_framing`] plus "the buffer is exactly one batch".
fn check_single_batch(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = check_framing(batch)?;
    if header.total_len() != batch.len() {
        return Err(malformed(format!(
            "{} bytes after the record batch",
            batch.len() - header.total_len()
        )));
    }
    Ok(header)
}

/// Everything past framing, for a `batch` slice of exactly `header.total_len()` bytes.
fn check_contents(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    check_crc(header, batch)?;
    check_counts(header)?;
    if header.compression()? == Compression::None {
        walk_records(records_section(batch), header.record_count, |_| Ok(()))?;
    }
    Ok(())
}

fn check_crc(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    let computed = crc32c::crc32c(batch.get(CRC_COVERS_FROM..).unwrap_or_default());
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

fn check_counts(header: &BatchHeader) -> Result<(), BatchError> {
    if header.record_count < 1 {
        return Err(BatchError::InvalidRecord(format!(
            "record count {} (a batch must hold at least one record)",
            header.record_count
        )));
    }
    // record_count ≥ 1, so the subtraction cannot overflow.
    if header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::InvalidRecord(format!(
            "lastOffsetDelta {} does not match record count {}",
            header.last_offset_delta, header.record_count
        )));
    }
    Ok(())
}

fn records_section(batch: &[u8]) -> &[u8] {
    batch.get(HEADER_LEN..).unwrap_or_default()
}

/// The per-record fields callers care about; key, value and headers are only checked for framing.
#[derive(Debug, Clone, Copy)]
struct RecordFields {
    timestamp_delta: i64,
    offset_delta: i32,
}

/// Walks exactly `record_count` records that must fill `records` exactly, calling `visit` for each.
fn walk_records(
    records: &[u8],
    record_count: i32,
    mut visit: impl FnMut(RecordFields) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let mut cursor = Cursor { rest: records };
    // Bounded by the input as well as the count: every record consumes at least one byte.
    for index in 0..record_count {
        if cursor.rest.is_empty() {
            return Err(malformed(format!(
                "batch declares {record_count} records but holds only {index}"
            )));
        }
        visit(read_record(&mut cursor)?)?;
    }
    if !cursor.rest.is_empty() {
        return Err(malformed(format!(
            "{} bytes after the last of {record_count} records",
            cursor.rest.len()
        )));
    }
    Ok(())
}

fn read_record(cursor: &mut Cursor<'_>) -> Result<RecordFields, BatchError> {
    let length = cursor.varint()?;
    let length =
        usize::try_from(length).map_err(|_| malformed(format!("record length {length}")))?;
    let mut body = Cursor {
        rest: cursor.take(length, "record")?,
    };
    let _attributes = body.byte()?;
    let timestamp_delta = body.varlong()?;
    let offset_delta = body.varint()?;
    body.skip_nullable_bytes("record key")?;
    body.skip_nullable_bytes("record value")?;
    let header_count = body.varint()?;
    if header_count < 0 {
        return Err(malformed(format!("record header count {header_count}")));
    }
    // Bounded by the body as well: every header consumes at least two bytes.
    for _ in 0..header_count {
        let key_len = body.varint()?;
        let key_len = usize::try_from(key_len)
            .map_err(|_| malformed(format!("record header key length {key_len}")))?;
        body.take(key_len, "record header key")?;
        body.skip_nullable_bytes("record header value")?;
    }
    if !body.rest.is_empty() {
        return Err(malformed(format!(
            "record length {length} leaves {} unread bytes",
            body.rest.len()
        )));
    }
    Ok(RecordFields {
        timestamp_delta,
        offset_delta,
    })
}

/// Forward-only reader over untrusted bytes; every read is bounds-checked.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], BatchError> {
        if len > self.rest.len() {
            return Err(malformed(format!(
                "{what} needs {len} bytes, {} left",
                self.rest.len()
            )));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, BatchError> {
        let (&byte, rest) = self
            .rest
            .split_first()
            .ok_or_else(|| malformed("record truncated"))?;
        self.rest = rest;
        Ok(byte)
    }

    fn be_u32(&mut self) -> Result<u32, BatchError> {
        let bytes = self.take(4, "block length")?;
        let mut field = [0u8; 4];
        field.copy_from_slice(bytes);
        Ok(u32::from_be_bytes(field))
    }

    /// Unsigned LEB128 of at most `max_bytes` bytes. Like Kafka's `ByteUtils`, bits beyond the
    /// target width in the last byte are dropped rather than rejected.
    fn unsigned_varint(&mut self, max_bytes: u32) -> Result<u64, BatchError> {
        let mut value = 0u64;
        for index in 0..max_bytes {
            let byte = self.byte()?;
            // index ≤ 9, so the shift is at most 63.
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed(format!("varint longer than {max_bytes} bytes")))
    }

    fn varint(&mut self) -> Result<i32, BatchError> {
        // Truncation to 32 bits is the point: see `unsigned_varint`.
        let raw = self.unsigned_varint(5)? as u32;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, BatchError> {
        let raw = self.unsigned_varint(10)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// Key or value: a varint length (-1 = null) then that many bytes.
    fn skip_nullable_bytes(&mut self, what: &str) -> Result<(), BatchError> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(());
        }
        let len = usize::try_from(len).map_err(|_| malformed(format!("{what} length {len}")))?;
        self.take(len, what)?;
        Ok(())
    }
}

/// Decompresses a records section, refusing to produce more than `max_len` bytes.
fn decompress(
    compression: Compression,
    compressed: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, BatchError> {
    match compression {
        Compression::None => Ok(compressed.to_vec()),
        // Multi-member: Java's GZIPInputStream reads concatenated gzip members, so producers may
        // legitimately send them.
        Compression::Gzip => read_bounded(
            flate2::read::MultiGzDecoder::new(compressed),
            "gzip",
            max_len,
        ),
        Compression::Snappy => snappy_decompress(compressed, max_len),
        Compression::Lz4 => {
            let decoder = lz4::Decoder::new(compressed)
                .map_err(|e| malformed(format!("lz4 decoder: {e}")))?;
            read_bounded(decoder, "lz4", max_len)
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(compressed)
                .map_err(|e| malformed(format!("zstd decoder: {e}")))?;
            read_bounded(decoder, "zstd", max_len)
        }
    }
}

/// Compresses a records section the way Kafka's own producer and broker do, at Kafka's default
/// levels except lz4: gzip at level 6 (zlib's default, Kafka's `compression.gzip.level=-1`);
/// snappy in snappy-java's xerial framing with 32 KiB blocks; lz4 as an LZ4 frame with independent
/// 64 KiB blocks and no block or content checksums (what Kafka's lz4 stream writes), in lz4's fast
/// mode (Kafka defaults to high-compression level 9, several times slower: Sluice favours produce
/// throughput on this path); zstd at level 3 (Kafka's default).
fn compress(codec: Compression, records: &[u8]) -> Result<Vec<u8>, BatchError> {
    use std::io::Write as _;
    let failed =
        |codec: &str, e: std::io::Error| malformed(format!("{codec} compression failed: {e}"));
    match codec {
        Compression::None => Ok(records.to_vec()),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(records.len() / 2 + 64),
                flate2::Compression::new(6),
            );
            encoder.write_all(records).map_err(|e| failed("gzip", e))?;
            encoder.finish().map_err(|e| failed("gzip", e))
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(records.len() / 2 + XERIAL_HEADER_LEN);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
            let mut encoder = snap::raw::Encoder::new();
            for chunk in records.chunks(SNAPPY_BLOCK_LEN) {
                let block = encoder
                    .compress_vec(chunk)
                    .map_err(|e| malformed(format!("snappy compression failed: {e}")))?;
                let len = u32::try_from(block.len())
                    .map_err(|_| malformed("snappy block exceeds 4 GiB"))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .block_checksum(lz4_sys::BlockChecksum::NoBlockChecksum)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .level(0)
                .build(Vec::with_capacity(records.len() / 2 + 64))
                .map_err(|e| failed("lz4", e))?;
            encoder.write_all(records).map_err(|e| failed("lz4", e))?;
            let (out, result) = encoder.finish();
            result.map_err(|e| failed("lz4", e))?;
            Ok(out)
        }
        Compression::Zstd => {
            zstd::bulk::compress(records, ZSTD_LEVEL).map_err(|e| failed("zstd", e))
        }
    }
}

/// Kafka's default `compression.zstd.level`.
const ZSTD_LEVEL: i32 = 3;
/// Uncompressed bytes per xerial snappy block (snappy-java's default block size).
const SNAPPY_BLOCK_LEN: usize = 32 * 1024;

fn read_bounded(reader: impl Read, codec: &str, max_len: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it".
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| malformed(format!("{codec} decompression failed: {e}")))?;
    if out.len() > max_len {
        return Err(too_large(codec, max_len));
    }
    Ok(out)
}

fn too_large(codec: &str, max_len: usize) -> BatchError {
    malformed(format!(
        "{codec} records decompress to more than {max_len} bytes"
    ))
}

/// snappy-java's stream header ("\x82SNAPPY\0", then a version and a compatible-version i32), which
/// the Java client and librdkafka put in front of Kafka snappy data.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
const XERIAL_HEADER_LEN: usize = 16;

/// Kafka snappy: either xerial framing (header, then blocks of `u32 length` + raw snappy block) or,
/// as snappy-java falls back to when the magic is absent, one raw snappy block.
fn snappy_decompress(compressed: &[u8], max_len: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    if !compressed.starts_with(XERIAL_MAGIC) {
        append_raw_snappy(compressed, &mut out, max_len)?;
        return Ok(out);
    }
    let mut cursor = Cursor {
        rest: compressed
            .get(XERIAL_HEADER_LEN..)
            .ok_or_else(|| malformed("truncated xerial snappy header"))?,
    };
    // Each iteration consumes at least the 4-byte block length.
    while !cursor.rest.is_empty() {
        let block_len = cursor.be_u32()?;
        let block_len = usize::try_from(block_len).unwrap_or(usize::MAX);
        let block = cursor.take(block_len, "snappy block")?;
        append_raw_snappy(block, &mut out, max_len)?;
    }
    Ok(out)
}

/// The most a raw snappy block can expand: a 3-byte copy element emits at most 64 bytes, and no
/// element does better. Lets a lying length preamble be refused before allocating for it.
const SNAPPY_MAX_EXPANSION: usize = 22;

fn append_raw_snappy(block: &[u8], out: &mut Vec<u8>, max_len: usize) -> Result<(), BatchError> {
    let block_len = snap::raw::decompress_len(block)
        .map_err(|e| malformed(format!("snappy block header: {e}")))?;
    if block_len > block.len().saturating_mul(SNAPPY_MAX_EXPANSION) {
        return Err(malformed(format!(
            "snappy block of {} bytes claims {block_len} decompressed bytes",
            block.len()
        )));
    }
    let start = out.len();
    let end = start
        .checked_add(block_len)
        .filter(|&end| end <= max_len)
        .ok_or_else(|| too_large("snappy", max_len))?;
    out.resize(end, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, out.get_mut(start..).unwrap_or_default())
        .map_err(|e| malformed(format!("snappy decompression failed: {e}")))?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::{BufMut, BytesMut};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression as Codec, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use proptest::prelude::*;

    const ALL_CODECS: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    fn our_codec(codec: Codec) -> Compression {
        match codec {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }

    fn record(offset: i64, timestamp: i64, value: &[u8]) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: 4242,
            producer_epoch: 3,
            timestamp_type: TimestampType::Creation,
            offset,
            // The encoder starts a new batch whenever offset - sequence changes.
            sequence: offset as i32,
            timestamp,
            key: Some(Bytes::from(format!("key-{offset}"))),
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
        }
    }

    fn encode(records: &[Record], codec: Codec) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression: codec,
            },
        )
        .expect("encode");
        buf.freeze()
    }

    /// Three records, timestamps deliberately not in offset order.
    fn sample_records() -> Vec<Record> {
        let mut with_header = record(2, 1_700_000_000_500, b"third");
        with_header.key = None;
        with_header
            .headers
            .insert(StrBytes::from_static_str("trace"), Some(Bytes::from("abc")));
        with_header
            .headers
            .insert(StrBytes::from_static_str("empty"), None);
        vec![
            record(0, 1_700_000_000_000, b"first"),
            record(1, 1_699_999_999_000, b""),
            with_header,
        ]
    }

    fn expected_timestamps(records: &[Record], base_offset: i64) -> Vec<(i64, i64)> {
        records
            .iter()
            .enumerate()
            .map(|(i, r)| (base_offset + i as i64, r.timestamp))
            .collect()
    }

    fn sample_batch(codec: Codec) -> Bytes {
        encode(&sample_records(), codec)
    }

    /// Recomputes the CRC after a test edits bytes inside it.
    fn fix_crc(batch: &mut [u8]) {
        let crc = crc32c::crc32c(&batch[CRC_COVERS_FROM..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }

    fn put_i32(batch: &mut [u8], at: usize, value: i32) {
        batch[at..at + 4].copy_from_slice(&value.to_be_bytes());
    }

    /// Replaces the records section and codec of a valid batch, fixing length and CRC.
    fn rebuild(batch: &[u8], codec_bits: i16, section: &[u8]) -> Vec<u8> {
        let mut out = batch[..HEADER_LEN].to_vec();
        out.extend_from_slice(section);
        let batch_length = (out.len() - LOG_OVERHEAD) as i32;
        put_i32(&mut out, BATCH_LENGTH_AT, batch_length);
        let attributes = (i16::from_be_bytes([out[21], out[22]]) & !COMPRESSION_MASK) | codec_bits;
        out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        fix_crc(&mut out);
        out
    }

    #[test]
    fn every_codec_validates() {
        for codec in ALL_CODECS {
            let batch = sample_batch(codec);
            let batches = split_and_validate(&batch).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(batches.len(), 1);
            let (header, bytes) = &batches[0];
            assert_eq!(bytes, &batch);
            assert_eq!(header.magic, 2);
            assert_eq!(header.record_count, 3);
            assert_eq!(header.last_offset_delta, 2);
            assert_eq!(header.compression(), Ok(our_codec(codec)));
            assert_eq!(header.base_timestamp, 1_699_999_999_000);
            assert_eq!(header.max_timestamp, 1_700_000_000_500);
            assert_eq!(header.producer_id, 4242);
            assert_eq!(header.producer_epoch, 3);
            assert!(header.has_producer_id());
            assert!(!header.is_transactional() && !header.is_control());
            assert_eq!(header.total_len(), batch.len());
            assert_eq!(validate(&batch), Ok(*header));
        }
    }

    #[test]
    fn every_codec_yields_record_timestamps() {
        let records = sample_records();
        for codec in ALL_CODECS {
            let batch = encode(&records, codec);
            assert_eq!(
                record_timestamps(&batch),
                Ok(expected_timestamps(&records, 0)),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn large_batches_round_trip() {
        // > 32 KiB of records, so xerial snappy writes several blocks and lz4 several frames' blocks.
        let records: Vec<Record> = (0..2_000)
            .map(|i| record(i, 1_000_000 + i * 7 % 13, &[(i % 251) as u8; 100]))
            .collect();
        for codec in ALL_CODECS {
            let batch = encode(&records, codec);
            let batches = split_and_validate(&batch).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(batches.len(), 1);
            assert_eq!(batches[0].0.record_count, 2_000);
            assert_eq!(
                record_timestamps(&batch),
                Ok(expected_timestamps(&records, 0)),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn raw_snappy_without_xerial_framing() {
        let records = sample_records();
        let plain = sample_batch(Codec::None);
        let raw = snap::raw::Encoder::new()
            .compress_vec(&plain[HEADER_LEN..])
            .expect("snappy");
        let batch = rebuild(&plain, 2, &raw);
        let header = validate(&batch).expect("valid");
        assert_eq!(header.compression(), Ok(Compression::Snappy));
        assert_eq!(
            record_timestamps(&batch),
            Ok(expected_timestamps(&records, 0))
        );
    }

    #[test]
    fn concatenated_batches_split_zero_copy() {
        let mut all = BytesMut::new();
        let mut lens = Vec::new();
        for codec in ALL_CODECS {
            let batch = sample_batch(codec);
            lens.push(batch.len());
            all.put_slice(&batch);
        }
        let all = all.freeze();
        let batches = split_and_validate(&all).expect("valid");
        assert_eq!(batches.len(), ALL_CODECS.len());
        let mut start = 0;
        for ((header, bytes), (len, codec)) in batches.iter().zip(lens.iter().zip(ALL_CODECS)) {
            assert_eq!(header.compression(), Ok(our_codec(codec)));
            assert_eq!(bytes.len(), *len);
            // Zero-copy: each batch points into the input buffer.
            assert_eq!(bytes.as_ptr(), all[start..].as_ptr());
            start += len;
        }
    }

    #[test]
    fn bad_batch_anywhere_fails_whole_call() {
        let good = sample_batch(Codec::None);
        let mut bad = sample_batch(Codec::Gzip).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        let mut all = good.to_vec();
        all.extend_from_slice(&bad);
        assert!(matches!(
            split_and_validate(&Bytes::from(all)),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn empty_input_is_malformed() {
        assert!(matches!(
            split_and_validate(&Bytes::new()),
            Err(BatchError::Malformed(_))
        ));
        assert!(matches!(validate(&[]), Err(BatchError::Malformed(_))));
        assert!(matches!(
            record_timestamps(&[]),
            Err(BatchError::Malformed(_))
        ));
    }

    #[test]
    fn every_flipped_byte_is_caught_or_harmless() {
        for codec in ALL_CODECS {
            let batch = sample_batch(codec);
            for at in 0..batch.len() {
                let mut flipped = batch.to_vec();
                flipped[at] ^= 0x20;
                let result = validate(&flipped);
                match at {
                    // baseOffset and partitionLeaderEpoch are outside the CRC by design.
                    0..=7 | 12..=15 => assert!(result.is_ok(), "{codec:?} byte {at}: {result:?}"),
                    8..=11 => assert!(
                        matches!(result, Err(BatchError::Malformed(_))),
                        "{codec:?} byte {at}: {result:?}"
                    ),
                    MAGIC_AT => assert_eq!(result, Err(BatchError::UnsupportedMagic(2 ^ 0x20))),
                    _ => assert!(
                        matches!(result, Err(BatchError::CrcMismatch { .. })),
                        "{codec:?} byte {at}: {result:?}"
                    ),
                }
                if at >= CRC_AT {
                    assert!(
                        matches!(
                            record_timestamps(&flipped),
                            Err(BatchError::CrcMismatch { .. })
                        ),
                        "{codec:?} byte {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn crc_mismatch_reports_both_values() {
        let mut batch = sample_batch(Codec::None).to_vec();
        let stored = u32::from_be_bytes(batch[CRC_AT..CRC_AT + 4].try_into().unwrap());
        batch[HEADER_LEN] ^= 0xff;
        let computed = crc32c::crc32c(&batch[CRC_COVERS_FROM..]);
        assert_eq!(
            validate(&batch),
            Err(BatchError::CrcMismatch { stored, computed })
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        for codec in ALL_CODECS {
            let batch = sample_batch(codec);
            for len in 0..batch.len() {
                let cut = batch.slice(..len);
                assert!(
                    matches!(split_and_validate(&cut), Err(BatchError::Malformed(_))),
                    "{codec:?} len {len}"
                );
                assert!(validate(&cut).is_err(), "{codec:?} len {len}");
                assert!(record_timestamps(&cut).is_err(), "{codec:?} len {len}");
            }
            // A whole batch followed by a truncated one fails too.
            let mut two = batch.to_vec();
            two.extend_from_slice(&batch[..batch.len() - 1]);
            assert!(matches!(
                split_and_validate(&Bytes::from(two)),
                Err(BatchError::Malformed(_))
            ));
        }
    }

    #[test]
    fn trailing_bytes_after_single_batch() {
        let mut batch = sample_batch(Codec::None).to_vec();
        batch.push(0);
        assert!(matches!(validate(&batch), Err(BatchError::Malformed(_))));
        assert!(matches!(
            record_timestamps(&batch),
            Err(BatchError::Malformed(_))
        ));
        // In a produce request the extra byte is the start of a second (truncated) batch.
        assert!(matches!(
            split_and_validate(&Bytes::from(batch)),
            Err(BatchError::Malformed(_))
        ));
    }

    /// A magic 0/1 message set entry: offset, size, crc, magic, attributes, (v1: timestamp), key,
    /// value. The CRC is not the real legacy CRC-32; it must not matter.
    fn legacy_message(magic: i8) -> Vec<u8> {
        let mut body = vec![magic as u8, 0];
        if magic == 1 {
            body.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        }
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&5i32.to_be_bytes());
        body.extend_from_slice(b"hello");
        let mut message = 0i64.to_be_bytes().to_vec();
        message.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        message.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        message.extend_from_slice(&body);
        message
    }

    #[test]
    fn legacy_magic_is_unsupported() {
        for magic in [0, 1] {
            let message = legacy_message(magic);
            assert_eq!(message[MAGIC_AT], magic as u8);
            // Shorter than a v2 header: magic is still reported, not "truncated".
            assert!(message.len() < HEADER_LEN);
            assert_eq!(
                split_and_validate(&Bytes::from(message.clone())),
                Err(BatchError::UnsupportedMagic(magic))
            );
            assert_eq!(validate(&message), Err(BatchError::UnsupportedMagic(magic)));
            assert_eq!(
                record_timestamps(&message),
                Err(BatchError::UnsupportedMagic(magic))
            );
        }
        let mut v2 = sample_batch(Codec::None).to_vec();
        v2[MAGIC_AT] = 1;
        assert_eq!(validate(&v2), Err(BatchError::UnsupportedMagic(1)));
    }

    #[test]
    fn header_count_checks() {
        let plain = sample_batch(Codec::None);

        let mut zero = plain.to_vec();
        put_i32(&mut zero, 57, 0);
        put_i32(&mut zero, 23, -1);
        fix_crc(&mut zero);
        assert!(matches!(validate(&zero), Err(BatchError::InvalidRecord(_))));

        let mut negative = plain.to_vec();
        put_i32(&mut negative, 57, -5);
        fix_crc(&mut negative);
        assert!(matches!(
            validate(&negative),
            Err(BatchError::InvalidRecord(_))
        ));

        let mut delta = plain.to_vec();
        put_i32(&mut delta, 23, 7);
        fix_crc(&mut delta);
        assert!(matches!(
            validate(&delta),
            Err(BatchError::InvalidRecord(_))
        ));
        assert!(matches!(
            record_timestamps(&delta),
            Err(BatchError::InvalidRecord(_))
        ));
    }

    #[test]
    fn uncompressed_record_count_must_match_records() {
        let plain = sample_batch(Codec::None);
        for (count, delta) in [(4, 3), (2, 1)] {
            let mut wrong = plain.to_vec();
            put_i32(&mut wrong, 57, count);
            put_i32(&mut wrong, 23, delta);
            fix_crc(&mut wrong);
            assert!(
                matches!(validate(&wrong), Err(BatchError::Malformed(_))),
                "count {count}"
            );
            assert!(matches!(
                record_timestamps(&wrong),
                Err(BatchError::Malformed(_))
            ));
        }
        // Compressed: not checked on the produce path, but caught when decompressed.
        let gzip = sample_batch(Codec::Gzip);
        let mut wrong = gzip.to_vec();
        put_i32(&mut wrong, 57, 4);
        put_i32(&mut wrong, 23, 3);
        fix_crc(&mut wrong);
        assert!(validate(&wrong).is_ok());
        assert!(matches!(
            record_timestamps(&wrong),
            Err(BatchError::Malformed(_))
        ));
    }

    #[test]
    fn records_must_fill_the_batch() {
        let plain = sample_batch(Codec::None);
        let mut section = plain[HEADER_LEN..].to_vec();
        section.push(0);
        let padded = rebuild(&plain, 0, &section);
        assert!(matches!(validate(&padded), Err(BatchError::Malformed(_))));

        // A record whose length prefix promises more than its fields use.
        let mut section = plain[HEADER_LEN..].to_vec();
        let first_len = section[0]; // zigzag varint, < 64 so one byte
        section[0] = first_len + 2;
        section.insert(1 + (first_len / 2) as usize, 0);
        let bloated = rebuild(&plain, 0, &section);
        assert!(matches!(validate(&bloated), Err(BatchError::Malformed(_))));
    }

    #[test]
    fn too_short_batch_length_is_malformed() {
        let mut batch = sample_batch(Codec::None).to_vec();
        put_i32(&mut batch, BATCH_LENGTH_AT, MIN_BATCH_LENGTH as i32 - 1);
        assert!(matches!(validate(&batch), Err(BatchError::Malformed(_))));
        put_i32(&mut batch, BATCH_LENGTH_AT, -1);
        assert!(matches!(validate(&batch), Err(BatchError::Malformed(_))));
        put_i32(&mut batch, BATCH_LENGTH_AT, i32::MAX);
        assert!(matches!(validate(&batch), Err(BatchError::Malformed(_))));
    }

    #[test]
    fn unknown_codec_is_unsupported() {
        let plain = sample_batch(Codec::None);
        for codec in 5..=7 {
            let batch = rebuild(&plain, codec, &plain[HEADER_LEN..]);
            assert_eq!(
                validate(&batch),
                Err(BatchError::UnsupportedCompression(codec))
            );
            assert_eq!(
                record_timestamps(&batch),
                Err(BatchError::UnsupportedCompression(codec))
            );
        }
    }

    #[test]
    fn set_base_offset_keeps_batch_valid() {
        for codec in ALL_CODECS {
            let original = sample_batch(codec);
            let mut batch = original.to_vec();
            set_base_offset(&mut batch, 1_000_000);
            let header = validate(&batch).expect("still valid");
            assert_eq!(header.base_offset, 1_000_000);
            assert_eq!(header.last_offset(), 1_000_002);
            assert_eq!(&batch[8..], &original[8..], "only baseOffset changes");
            set_partition_leader_epoch(&mut batch, 7);
            let header = validate(&batch).expect("still valid after the epoch stamp");
            assert_eq!(header.partition_leader_epoch, 7);
            assert_eq!(&batch[8..12], &original[8..12]);
            assert_eq!(&batch[16..], &original[16..], "only the epoch changes");
            assert_eq!(
                record_timestamps(&batch),
                Ok(expected_timestamps(&sample_records(), 1_000_000))
            );
        }
    }

    #[test]
    fn set_log_append_time_rewrites_and_recrcs() {
        let now = 1_800_000_000_000;
        for codec in ALL_CODECS {
            let original = sample_batch(codec);
            let mut batch = original.to_vec();
            set_log_append_time(&mut batch, now);
            let header = validate(&batch).expect("CRC recomputed");
            assert_eq!(header.max_timestamp, now);
            assert_ne!(header.crc, validate(&original).unwrap().crc);
            assert!(header.is_log_append_time());
            assert_eq!(header.compression(), Ok(our_codec(codec)));
            assert_eq!(
                header.base_timestamp, 1_699_999_999_000,
                "base timestamp kept"
            );
            assert_eq!(
                record_timestamps(&batch),
                Ok(vec![(0, now), (1, now), (2, now)])
            );
            // Idempotent apart from the timestamp.
            set_log_append_time(&mut batch, now + 1);
            assert_eq!(validate(&batch).unwrap().max_timestamp, now + 1);
        }
    }

    #[test]
    fn rewrites_ignore_short_buffers() {
        for len in [0, 7, HEADER_LEN - 1] {
            let mut short = vec![0xab; len];
            set_base_offset(&mut short, 5);
            set_log_append_time(&mut short, 5);
            if len < 8 {
                assert_eq!(short, vec![0xab; len]);
            }
        }
        let mut short = vec![0xab; HEADER_LEN - 1];
        set_log_append_time(&mut short, 5);
        assert_eq!(short, vec![0xab; HEADER_LEN - 1]);
    }

    #[test]
    fn decompression_is_bounded() {
        let plain = sample_batch(Codec::None);
        // A valid record section padded to 64 KiB of zeros compresses to almost nothing.
        let mut section = plain[HEADER_LEN..].to_vec();
        section.resize(64 << 10, 0);
        let limit = 16 << 10;

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &section).unwrap();
        let gzip = rebuild(&plain, 1, &gz.finish().unwrap());
        let zstd = rebuild(&plain, 4, &zstd::encode_all(&section[..], 3).unwrap());
        let raw_snappy = rebuild(
            &plain,
            2,
            &snap::raw::Encoder::new().compress_vec(&section).unwrap(),
        );
        let mut lz4_encoder = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        std::io::Write::write_all(&mut lz4_encoder, &section).unwrap();
        let (lz4_bytes, result) = lz4_encoder.finish();
        result.unwrap();
        let lz4 = rebuild(&plain, 3, &lz4_bytes);

        for batch in [gzip, zstd, raw_snappy, lz4] {
            let err = record_timestamps_bounded(&batch, limit).unwrap_err();
            assert!(
                matches!(&err, BatchError::Malformed(m) if m.contains("more than")),
                "{err:?}"
            );
            // Under the real limit the zero padding is trailing garbage, still an error.
            assert!(matches!(
                record_timestamps(&batch),
                Err(BatchError::Malformed(_))
            ));
        }
    }

    #[test]
    fn snappy_length_lies_are_refused_before_allocating() {
        let plain = sample_batch(Codec::None);
        // Raw snappy preamble claiming 1 GiB (varint 0x40000000) followed by one literal byte.
        let lie = [0x80, 0x80, 0x80, 0x80, 0x04, 0x00, b'x'];
        let batch = rebuild(&plain, 2, &lie);
        assert!(matches!(
            record_timestamps(&batch),
            Err(BatchError::Malformed(_))
        ));
        // Same inside xerial framing, plus a block length running past the end.
        let mut xerial = b"\x82SNAPPY\0\0\0\0\x01\0\0\0\x01".to_vec();
        xerial.extend_from_slice(&(lie.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&lie);
        let batch = rebuild(&plain, 2, &xerial);
        assert!(matches!(
            record_timestamps(&batch),
            Err(BatchError::Malformed(_))
        ));
        let mut overrun = b"\x82SNAPPY\0\0\0\0\x01\0\0\0\x01".to_vec();
        overrun.extend_from_slice(&u32::MAX.to_be_bytes());
        let batch = rebuild(&plain, 2, &overrun);
        assert!(matches!(
            record_timestamps(&batch),
            Err(BatchError::Malformed(_))
        ));
    }

    #[test]
    fn varints_decode_like_kafka() {
        let read_varint = |bytes: &[u8]| Cursor { rest: bytes }.varint();
        let read_varlong = |bytes: &[u8]| Cursor { rest: bytes }.varlong();
        assert_eq!(read_varint(&[0x00]), Ok(0));
        assert_eq!(read_varint(&[0x01]), Ok(-1));
        assert_eq!(read_varint(&[0x02]), Ok(1));
        assert_eq!(read_varint(&[0x96, 0x01]), Ok(75));
        assert_eq!(read_varint(&[0xfe, 0xff, 0xff, 0xff, 0x0f]), Ok(i32::MAX));
        assert_eq!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Ok(i32::MIN));
        assert!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
        assert!(read_varint(&[0x80]).is_err());
        assert_eq!(
            read_varlong(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Ok(i64::MAX)
        );
        assert_eq!(
            read_varlong(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Ok(i64::MIN)
        );
        assert!(read_varlong(&[0xff; 11]).is_err());
    }

    #[test]
    fn timestamp_overflow_is_an_error_not_a_panic() {
        let records = vec![record(0, i64::MAX, b"a"), record(1, 0, b"b")];
        let mut batch = encode(&records, Codec::None).to_vec();
        // Base timestamp is 0 and the first delta is i64::MAX; push the base up by one.
        batch[27..35].copy_from_slice(&1i64.to_be_bytes());
        fix_crc(&mut batch);
        assert!(matches!(
            record_timestamps(&batch),
            Err(BatchError::Malformed(_))
        ));
        set_base_offset(&mut batch, i64::MAX);
        assert!(validate(&batch).is_ok());
        assert_eq!(validate(&batch).unwrap().last_offset(), i64::MAX);
    }

    fn codec_strategy() -> impl Strategy<Value = Codec> {
        prop::sample::select(ALL_CODECS.to_vec())
    }

    type RecordSpec = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
    );

    fn record_spec() -> impl Strategy<Value = RecordSpec> {
        (
            0i64..(1 << 45),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
            prop::collection::vec(
                (
                    "[a-z]{0,8}",
                    prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
                ),
                0..4,
            ),
        )
    }

    fn build_records(specs: &[RecordSpec]) -> Vec<Record> {
        specs
            .iter()
            .enumerate()
            .map(|(i, (timestamp, key, value, headers))| {
                let mut r = record(i as i64, *timestamp, b"");
                r.key = key.clone().map(Bytes::from);
                r.value = value.clone().map(Bytes::from);
                for (name, value) in headers {
                    r.headers.insert(
                        StrBytes::from_string(name.clone()),
                        value.clone().map(Bytes::from),
                    );
                }
                r
            })
            .collect()
    }

    /// The fields a reader sees in each record, for comparing batches across codecs.
    fn decoded(batch: &[u8]) -> (Compression, Vec<String>) {
        let mut buf = Bytes::copy_from_slice(batch);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).expect("decodes");
        let records = set
            .records
            .iter()
            .map(|r| {
                format!(
                    "offset={} ts={} pid={} epoch={} seq={} key={:?} value={:?} headers={:?}",
                    r.offset,
                    r.timestamp,
                    r.producer_id,
                    r.producer_epoch,
                    r.sequence,
                    r.key,
                    r.value,
                    r.headers
                )
            })
            .collect();
        (our_codec(set.compression), records)
    }

    #[test]
    fn recompress_rewrites_codec_length_and_crc_and_keeps_everything_else() {
        for from in ALL_CODECS {
            let mut original = sample_batch(from).to_vec();
            // As stored: an assigned base offset and leader epoch (both outside the CRC).
            set_base_offset(&mut original, 1234);
            set_partition_leader_epoch(&mut original, 7);
            let before = BatchHeader::parse(&original).unwrap();
            let (_, records_before) = decoded(&original);
            for to in ALL_CODECS.map(our_codec) {
                let outcome = recompress(&original, to).expect("recompresses");
                if our_codec(from) == to {
                    assert_eq!(outcome, None, "{from:?} → {to:?} must stay untouched");
                    continue;
                }
                let rewritten = outcome.unwrap_or_else(|| panic!("{from:?} → {to:?} rewritten"));
                // A valid batch: framing, CRC-32C over the new bytes, counts, records.
                let after = validate(&rewritten).expect("valid after recompression");
                assert_eq!(after.compression(), Ok(to));
                assert_eq!(
                    after.crc,
                    crc32c::crc32c(&rewritten[CRC_COVERS_FROM..]),
                    "CRC recomputed"
                );
                assert_eq!(after.total_len(), rewritten.len());
                // Every other header field as it was: producer id, epoch and base sequence
                // (idempotence), timestamps, counts, base offset, leader epoch.
                let expected = BatchHeader {
                    batch_length: after.batch_length,
                    crc: after.crc,
                    attributes: (before.attributes & !COMPRESSION_MASK) | to.attribute_bits(),
                    ..before
                };
                assert_eq!(after, expected, "{from:?} → {to:?}");
                assert_eq!(after.producer_id, 4242);
                assert_eq!(after.producer_epoch, 3);
                let (codec, records_after) = decoded(&rewritten);
                assert_eq!(codec, to);
                assert_eq!(records_after, records_before, "{from:?} → {to:?}");
                assert_eq!(
                    record_timestamps(&rewritten),
                    Ok(expected_timestamps(&sample_records(), 1234))
                );
                // LogAppendTime rewrites on top keep it valid.
                let mut log_append = rewritten.clone();
                set_log_append_time(&mut log_append, 1_800_000_000_000);
                assert!(validate(&log_append).is_ok());
            }
        }
    }

    #[test]
    fn recompress_shrinks_compressible_data() {
        let value = vec![b'a'; 64 * 1024];
        let records: Vec<Record> = (0..4)
            .map(|i| record(i, 1_700_000_000_000, &value))
            .collect();
        let plain = encode(&records, Codec::None);
        for to in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let rewritten = recompress(&plain, to).unwrap().unwrap();
            assert!(
                rewritten.len() * 10 < plain.len(),
                "{to:?}: {} of {} bytes",
                rewritten.len(),
                plain.len()
            );
            // More than one xerial snappy block / lz4 block: still one valid batch.
            assert_eq!(decoded(&rewritten).1.len(), 4);
        }
    }

    #[test]
    fn recompress_refuses_what_does_not_decompress_to_its_records() {
        let gzip = sample_batch(Codec::Gzip).to_vec();
        // A compressed section that is not gzip.
        let garbage = rebuild(&gzip, 1, b"definitely not gzip data");
        assert!(matches!(
            recompress(&garbage, Compression::Zstd),
            Err(BatchError::Malformed(_))
        ));
        // Records that do not match the declared count.
        let mut wrong_count = sample_batch(Codec::None).to_vec();
        put_i32(&mut wrong_count, 57, 2);
        put_i32(&mut wrong_count, 23, 1);
        fix_crc(&mut wrong_count);
        assert!(recompress(&wrong_count, Compression::Lz4).is_err());
        // A decompression bomb is stopped at the bound.
        let big: Vec<Record> = (0..2).map(|i| record(i, 0, &[0u8; 8192])).collect();
        let zstd = encode(&big, Codec::Zstd);
        assert!(recompress_bounded(&zstd, Compression::Gzip, 4096).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let bytes = Bytes::from(bytes);
            let _ = split_and_validate(&bytes);
            let _ = validate(&bytes);
            let _ = record_timestamps(&bytes);
            let _ = recompress(&bytes, Compression::Zstd);
        }

        /// Random bytes behind a plausible header, CRC fixed up, so that the record walker and the
        /// decompressors see hostile input rather than failing at the framing checks.
        #[test]
        fn hostile_records_behind_valid_header_never_panic(
            codec in 0i16..5,
            count in -2i32..40,
            section in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let plain = sample_batch(Codec::None);
            let mut batch = rebuild(&plain, codec, &section);
            put_i32(&mut batch, 57, count);
            put_i32(&mut batch, 23, count.saturating_sub(1));
            fix_crc(&mut batch);
            let _ = split_and_validate(&Bytes::from(batch.clone()));
            let _ = record_timestamps(&batch);
            let _ = recompress(&batch, Compression::Lz4);
            let _ = recompress(&batch, Compression::None);
        }

        #[test]
        fn mutated_batches_never_panic(
            codec in codec_strategy(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            recrc in any::<bool>(),
        ) {
            let mut batch = sample_batch(codec).to_vec();
            for (index, xor) in flips {
                let at = index.index(batch.len());
                batch[at] ^= xor;
            }
            if recrc {
                fix_crc(&mut batch);
            }
            let _ = split_and_validate(&Bytes::from(batch.clone()));
            let _ = record_timestamps(&batch);
            let _ = recompress(&batch, Compression::Gzip);
        }

        #[test]
        fn encoded_records_round_trip(
            specs in prop::collection::vec(record_spec(), 1..30),
            codec in codec_strategy(),
            target in codec_strategy(),
            base_offset in 0i64..(1 << 50),
        ) {
            let records = build_records(&specs);
            let encoded = encode(&records, codec);
            let batches = split_and_validate(&encoded).expect("valid");
            prop_assert_eq!(batches.len(), 1);
            let (header, batch) = &batches[0];
            prop_assert_eq!(header.record_count as usize, records.len());
            prop_assert_eq!(header.compression(), Ok(our_codec(codec)));
            let mut batch = batch.to_vec();
            set_base_offset(&mut batch, base_offset);
            prop_assert_eq!(
                record_timestamps(&batch),
                Ok(expected_timestamps(&records, base_offset))
            );
            // Recompressed to any codec: valid, in that codec, the same records.
            let recompressed = recompress(&batch, our_codec(target))
                .expect("recompresses")
                .unwrap_or(batch);
            let header = validate(&recompressed).expect("valid after recompression");
            prop_assert_eq!(header.compression(), Ok(our_codec(target)));
            prop_assert_eq!(
                record_timestamps(&recompressed),
                Ok(expected_timestamps(&records, base_offset))
            );
        }
    }
}
