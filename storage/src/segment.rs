//! Segment object format: batches followed by an offset + time index footer.
//!
//! A segment object holds a contiguous run of one partition's record batches, byte-for-byte as they
//! were stored, followed by a footer that lets a reader find a batch by offset or by timestamp with
//! one ranged GET of the footer and one ranged GET of the batch bytes:
//!
//! ```text
//! [batch][batch]...[batch]                 data: bytes 0..index_position
//! [entry]...[entry]                        index: ENTRY_LEN bytes each
//! [trailer]                                TRAILER_LEN bytes
//!
//! entry   = relative_offset u64 | position u64 | max_timestamp i64
//! trailer = index_position u64 | base_offset i64 | end_offset i64 | entry_count u32
//!         | format_version u16 | magic "SLSG" | crc32c u32
//! ```
//!
//! All integers are big-endian. `relative_offset` is the entry's batch `baseOffset` minus the
//! footer's `base_offset` (the `baseOffset` of the first batch), `position` is the byte position of
//! that batch in the object, `max_timestamp` is the largest batch max timestamp from that entry up to
//! the next one. An entry is written for the first batch and then for the first batch starting at
//! least [`INDEX_INTERVAL_BYTES`] after the previous entry, so the index stays ~0.6% of the data.
//! The CRC-32C covers the index entries and the trailer up to (excluding) the CRC itself.
//!
//! Keys ([`segment_key`]) carry the writer's node id and a random 64-bit value, so a key is never
//! reused even when the same offsets are written twice (a retry, or a zombie writer).

use bytes::{BufMut, Bytes, BytesMut};
use metadata::{NodeId, TopicPartition};

use crate::batch::{BatchError, BatchHeader, HEADER_LEN};

/// Marks a segment footer.
pub const MAGIC: [u8; 4] = *b"SLSG";
/// The footer layout written by this version.
pub const FORMAT_VERSION: u16 = 1;
/// Size of one index entry.
pub const ENTRY_LEN: usize = 24;
/// Size of the fixed trailer at the very end of the object.
pub const TRAILER_LEN: usize = 8 + 8 + 8 + 4 + 2 + 4 + 4;
/// Data bytes between two sparse index entries (at least).
pub const INDEX_INTERVAL_BYTES: u64 = 4096;

/// Attribute bit of a batch whose timestamps are broker (LogAppendTime) timestamps.
const TIMESTAMP_TYPE_LOG_APPEND_TIME: i16 = 0x08;

/// A segment object (or a part of it) does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SegmentFormatError(pub String);

impl From<BatchError> for SegmentFormatError {
    fn from(err: BatchError) -> Self {
        SegmentFormatError(err.to_string())
    }
}

fn format_error(reason: impl Into<String>) -> SegmentFormatError {
    SegmentFormatError(reason.into())
}

/// The object key of a new segment of `tp` whose first offset is `base_offset`.
///
/// `{cluster_id}/topics/{topic_id}/{partition}/{base_offset:020}-{node_id}-{unique:016x}.seg`; the
/// random `unique` part makes every key new, so an object is never overwritten.
pub fn segment_key(
    cluster_id: &str,
    tp: TopicPartition,
    base_offset: i64,
    node_id: NodeId,
) -> String {
    let unique: u64 = rand::random();
    format!(
        "{cluster_id}/topics/{}/{}/{base_offset:020}-{node_id}-{unique:016x}.seg",
        tp.topic_id, tp.partition
    )
}

/// One sparse index entry (absolute offsets, see the module docs for the encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// `baseOffset` of the batch the entry points at.
    pub base_offset: i64,
    /// Byte position of that batch in the object.
    pub position: u64,
    /// Largest batch max timestamp from this entry up to the next one.
    pub max_timestamp: i64,
}

/// The parsed footer of a segment object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFooter {
    /// `baseOffset` of the first batch in the object.
    pub base_offset: i64,
    /// One past the last offset of the last batch.
    pub end_offset: i64,
    /// Where the data ends and the index starts (= length of the data when it starts at byte 0).
    pub index_position: u64,
    /// Sorted by offset and position; never empty.
    pub entries: Vec<IndexEntry>,
}

impl SegmentFooter {
    /// Bytes the footer occupies at the end of the object.
    pub fn encoded_len(&self) -> usize {
        self.entries.len() * ENTRY_LEN + TRAILER_LEN
    }

    /// Encodes the index entries and the trailer.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        for entry in &self.entries {
            // Entries are built from batches at or after the footer base, so this never underflows;
            // saturating keeps a misuse from panicking.
            let relative = entry.base_offset.saturating_sub(self.base_offset).max(0);
            buf.put_u64(relative as u64);
            buf.put_u64(entry.position);
            buf.put_i64(entry.max_timestamp);
        }
        buf.put_u64(self.index_position);
        buf.put_i64(self.base_offset);
        buf.put_i64(self.end_offset);
        // `entries.len()` is bounded by the object size / INDEX_INTERVAL_BYTES; saturate anyway.
        buf.put_u32(u32::try_from(self.entries.len()).unwrap_or(u32::MAX));
        buf.put_u16(FORMAT_VERSION);
        buf.put_slice(&MAGIC);
        let crc = crc32c::crc32c(&buf);
        buf.put_u32(crc);
        buf.freeze()
    }

    /// Parses a footer: `buf` must be exactly the bytes from the index position to the end of the
    /// object (what a GET from `data_start + data_len` to the end returns).
    pub fn parse(buf: &[u8]) -> Result<SegmentFooter, SegmentFormatError> {
        let trailer_at = buf.len().checked_sub(TRAILER_LEN).ok_or_else(|| {
            format_error(format!(
                "footer of {} bytes is shorter than the trailer",
                buf.len()
            ))
        })?;
        let mut trailer = Reader::new(&buf[trailer_at..]);
        let index_position = trailer.u64()?;
        let base_offset = trailer.i64()?;
        let end_offset = trailer.i64()?;
        let entry_count = trailer.u32()?;
        let version = trailer.u16()?;
        let magic = trailer.array::<4>()?;
        let stored_crc = trailer.u32()?;
        if magic != MAGIC {
            return Err(format_error(format!("bad footer magic {magic:?}")));
        }
        if version != FORMAT_VERSION {
            return Err(format_error(format!(
                "unsupported segment format version {version}"
            )));
        }
        let entries_len = usize::try_from(entry_count)
            .ok()
            .and_then(|n| n.checked_mul(ENTRY_LEN))
            .ok_or_else(|| format_error("entry count overflows"))?;
        if entries_len != trailer_at {
            return Err(format_error(format!(
                "footer has {} bytes before the trailer but {entry_count} entries need {entries_len}",
                trailer_at
            )));
        }
        let computed_crc = crc32c::crc32c(&buf[..buf.len() - 4]);
        if computed_crc != stored_crc {
            return Err(format_error(format!(
                "footer crc mismatch (stored {stored_crc:#010x}, computed {computed_crc:#010x})"
            )));
        }
        if entry_count == 0 {
            return Err(format_error("footer has no index entries"));
        }
        if end_offset <= base_offset {
            return Err(format_error(format!(
                "footer offsets {base_offset}..{end_offset} are empty"
            )));
        }
        let mut entries = Vec::with_capacity(entry_count as usize);
        let mut reader = Reader::new(&buf[..trailer_at]);
        let mut previous: Option<IndexEntry> = None;
        for _ in 0..entry_count {
            let relative = reader.u64()?;
            let position = reader.u64()?;
            let max_timestamp = reader.i64()?;
            let base = i64::try_from(relative)
                .ok()
                .and_then(|r| base_offset.checked_add(r))
                .filter(|&b| b < end_offset)
                .ok_or_else(|| {
                    format_error(format!(
                        "index entry offset +{relative} is outside the segment"
                    ))
                })?;
            if position >= index_position {
                return Err(format_error(format!(
                    "index entry position {position} is past the data"
                )));
            }
            if let Some(prev) = previous {
                if base <= prev.base_offset || position <= prev.position {
                    return Err(format_error("index entries are not increasing"));
                }
            }
            let entry = IndexEntry {
                base_offset: base,
                position,
                max_timestamp,
            };
            entries.push(entry);
            previous = Some(entry);
        }
        Ok(SegmentFooter {
            base_offset,
            end_offset,
            index_position,
            entries,
        })
    }

    /// Byte position from which a forward scan finds the batch containing `offset`: the position of
    /// the last entry at or before `offset` (the first batch when `offset` precedes the segment).
    pub fn position_for_offset(&self, offset: i64) -> u64 {
        let after = self.entries.partition_point(|e| e.base_offset <= offset);
        let index = after.saturating_sub(1);
        self.entries.get(index).map(|e| e.position).unwrap_or(0)
    }

    /// Byte position from which a forward scan finds the first batch whose max timestamp is
    /// `>= timestamp`, or `None` when no batch in the segment has one.
    pub fn position_for_timestamp(&self, timestamp: i64) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.max_timestamp >= timestamp)
            .map(|e| e.position)
    }
}

/// Big-endian field reader over a byte slice that fails instead of panicking when short.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SegmentFormatError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or_else(|| format_error("footer is truncated"))?;
        self.buf = rest;
        Ok(*head)
    }
    fn u64(&mut self) -> Result<u64, SegmentFormatError> {
        self.array().map(u64::from_be_bytes)
    }
    fn i64(&mut self) -> Result<i64, SegmentFormatError> {
        self.array().map(i64::from_be_bytes)
    }
    fn u32(&mut self) -> Result<u32, SegmentFormatError> {
        self.array().map(u32::from_be_bytes)
    }
    fn u16(&mut self) -> Result<u16, SegmentFormatError> {
        self.array().map(u16::from_be_bytes)
    }
}

/// The smallest timestamp a batch is known to carry without decoding its records: the first
/// record's timestamp (`baseTimestamp`), or the append time for LogAppendTime batches.
pub fn batch_min_timestamp(header: &BatchHeader) -> i64 {
    if header.attributes & TIMESTAMP_TYPE_LOG_APPEND_TIME != 0 {
        header.max_timestamp
    } else {
        header.base_timestamp.min(header.max_timestamp)
    }
}

/// A finished segment object, ready to upload: `chunks` concatenated are the object.
#[derive(Debug, Clone)]
pub struct BuiltSegment {
    pub chunks: Vec<Bytes>,
    pub footer: SegmentFooter,
    /// Bytes of batch data (the data starts at byte 0, or at the builder's base position).
    pub data_len: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

impl BuiltSegment {
    /// Size of the whole object.
    pub fn object_len(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }
}

/// Streams batches (in offset order) into a segment object; the batches are kept as shared `Bytes`
/// (no copy), only the footer is newly allocated.
#[derive(Debug, Default)]
pub struct SegmentBuilder {
    chunks: Vec<Bytes>,
    entries: Vec<IndexEntry>,
    data_len: u64,
    /// Data bytes written since the last index entry started.
    since_entry: u64,
    /// Object position of the first batch (0 for a segment object of its own).
    base_position: u64,
    base_offset: Option<i64>,
    end_offset: i64,
    min_timestamp: i64,
    max_timestamp: i64,
}

impl SegmentBuilder {
    pub fn new() -> Self {
        SegmentBuilder::default()
    }

    /// A builder for a chunk that starts at byte `position` of a larger object (a partition's part
    /// of a shared WAL object): index positions and the footer's `index_position` are absolute
    /// object positions. `BuiltSegment::data_len` stays the length of the chunk's data.
    pub fn with_base_position(position: u64) -> Self {
        SegmentBuilder {
            base_position: position,
            ..SegmentBuilder::default()
        }
    }

    /// Adds one whole batch. Batches must come in increasing offset order without overlap.
    pub fn push(&mut self, batch: Bytes) -> Result<(), SegmentFormatError> {
        let header = BatchHeader::parse(&batch)?;
        if header.total_len() != batch.len() || batch.len() < HEADER_LEN {
            return Err(format_error(format!(
                "batch at offset {} is {} bytes but its header says {}",
                header.base_offset,
                batch.len(),
                header.total_len()
            )));
        }
        if header.last_offset() < header.base_offset {
            return Err(format_error(format!(
                "batch at offset {} has a negative lastOffsetDelta",
                header.base_offset
            )));
        }
        if self.base_offset.is_some() && header.base_offset < self.end_offset {
            return Err(format_error(format!(
                "batch at offset {} overlaps the previous batch ending at {}",
                header.base_offset, self.end_offset
            )));
        }
        // For LogAppendTime batches the max timestamp is the append time of every record in it.
        let max_ts = header.max_timestamp;
        let min_ts = batch_min_timestamp(&header);
        let new_entry = match self.entries.last_mut() {
            Some(last) if self.since_entry < INDEX_INTERVAL_BYTES => {
                last.max_timestamp = last.max_timestamp.max(max_ts);
                false
            }
            _ => true,
        };
        if new_entry {
            self.entries.push(IndexEntry {
                base_offset: header.base_offset,
                position: self.base_position + self.data_len,
                max_timestamp: max_ts,
            });
            self.since_entry = 0;
        }
        if self.base_offset.is_none() {
            self.base_offset = Some(header.base_offset);
            self.min_timestamp = min_ts;
            self.max_timestamp = max_ts;
        } else {
            self.min_timestamp = self.min_timestamp.min(min_ts);
            self.max_timestamp = self.max_timestamp.max(max_ts);
        }
        self.end_offset = header.last_offset() + 1;
        self.data_len += batch.len() as u64;
        self.since_entry += batch.len() as u64;
        self.chunks.push(batch);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Batch bytes pushed so far.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// One past the last offset pushed so far.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    /// Appends the footer; `None` when no batch was pushed (an empty segment is never written).
    pub fn finish(self) -> Option<BuiltSegment> {
        let base_offset = self.base_offset?;
        let footer = SegmentFooter {
            base_offset,
            end_offset: self.end_offset,
            index_position: self.base_position + self.data_len,
            entries: self.entries,
        };
        let mut chunks = self.chunks;
        chunks.push(footer.encode());
        Some(BuiltSegment {
            chunks,
            footer,
            data_len: self.data_len,
            min_timestamp: self.min_timestamp,
            max_timestamp: self.max_timestamp,
        })
    }
}

/// Whole batches cut from a buffer, see [`split_batches`].
#[derive(Debug, Default)]
pub struct SplitBatches {
    pub batches: Vec<(BatchHeader, Bytes)>,
    /// When the buffer ends inside a batch: the bytes that batch needs (its full length, or just
    /// the header length when not even the header is there), so the caller can fetch it whole.
    pub incomplete_len: Option<usize>,
}

/// Splits bytes read from a segment's data section (starting at a batch boundary) into whole
/// batches (zero-copy slices of `buf`).
pub fn split_batches(buf: &Bytes) -> Result<SplitBatches, SegmentFormatError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < HEADER_LEN {
            return Ok(SplitBatches {
                batches: out,
                incomplete_len: Some(HEADER_LEN),
            });
        }
        let header = BatchHeader::parse(rest)?;
        let len = header.total_len();
        if len < HEADER_LEN {
            return Err(format_error(format!(
                "batch at offset {} has length {len}",
                header.base_offset
            )));
        }
        if rest.len() < len {
            return Ok(SplitBatches {
                batches: out,
                incomplete_len: Some(len),
            });
        }
        out.push((header, buf.slice(at..at + len)));
        at += len;
    }
    Ok(SplitBatches {
        batches: out,
        incomplete_len: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal, well-formed-enough batch for the segment layer: a header with `count` offsets and
    /// `payload` filler bytes (the segment layer never looks at the records).
    pub(crate) fn fake_batch(base_offset: i64, count: i32, max_ts: i64, payload: usize) -> Bytes {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + payload);
        buf.put_i64(base_offset);
        buf.put_i32((HEADER_LEN + payload - 12) as i32);
        buf.put_i32(0); // partition leader epoch
        buf.put_i8(2);
        buf.put_u32(0); // crc (unchecked here)
        buf.put_i16(0);
        buf.put_i32(count - 1);
        buf.put_i64(max_ts - 10);
        buf.put_i64(max_ts);
        buf.put_i64(-1);
        buf.put_i16(-1);
        buf.put_i32(-1);
        buf.put_i32(count);
        buf.put_bytes(0xab, payload);
        buf.freeze()
    }

    fn concat(chunks: &[Bytes]) -> Bytes {
        let mut out = BytesMut::new();
        for c in chunks {
            out.extend_from_slice(c);
        }
        out.freeze()
    }

    #[test]
    fn footer_round_trip_and_lookup() {
        let mut builder = SegmentBuilder::new();
        let mut offset = 100;
        let mut batches = Vec::new();
        for i in 0..50 {
            let batch = fake_batch(offset, 3, 1_000 + i, 500);
            offset += 3;
            batches.push(batch.clone());
            builder.push(batch).unwrap();
        }
        let built = builder.finish().unwrap();
        assert_eq!(built.footer.base_offset, 100);
        assert_eq!(built.footer.end_offset, 250);
        assert_eq!(built.min_timestamp, 990);
        assert_eq!(built.max_timestamp, 1049);
        // ~561 bytes per batch, an entry every >= 4096 bytes: 8 batches per entry.
        assert!(built.footer.entries.len() > 1 && built.footer.entries.len() < 50);
        let object = concat(&built.chunks);
        assert_eq!(object.len() as u64, built.object_len());

        let footer = SegmentFooter::parse(&object[built.data_len as usize..]).unwrap();
        assert_eq!(footer, built.footer);

        // Every offset is found by scanning forward from the looked-up position.
        for target in [100, 101, 102, 103, 150, 200, 249] {
            let pos = footer.position_for_offset(target) as usize;
            let found = split_batches(&object.slice(pos..built.data_len as usize))
                .unwrap()
                .batches;
            let (h, bytes) = found
                .iter()
                .find(|(h, _)| h.last_offset() >= target)
                .unwrap();
            assert!(h.base_offset <= target && target <= h.last_offset());
            let index = ((h.base_offset - 100) / 3) as usize;
            assert_eq!(bytes, &batches[index]);
            // The entry used is at most one interval before the target.
            assert!(
                h.base_offset
                    - footer
                        .entries
                        .iter()
                        .rev()
                        .find(|e| e.position as usize == pos)
                        .unwrap()
                        .base_offset
                    < 3 * 9
            );
        }
        // Before the segment: the first batch.
        assert_eq!(footer.position_for_offset(0), 0);

        // Timestamps: the first entry whose span reaches the target.
        let pos = footer.position_for_timestamp(1_020).unwrap() as usize;
        let found = split_batches(&object.slice(pos..built.data_len as usize))
            .unwrap()
            .batches;
        let (h, _) = found
            .iter()
            .find(|(h, _)| h.max_timestamp >= 1_020)
            .unwrap();
        assert_eq!(h.max_timestamp, 1_020);
        assert_eq!(footer.position_for_timestamp(5_000), None);
        assert_eq!(footer.position_for_timestamp(i64::MIN), Some(0));
    }

    #[test]
    fn footer_rejects_corruption() {
        let mut builder = SegmentBuilder::new();
        builder.push(fake_batch(0, 1, 5, 10)).unwrap();
        let built = builder.finish().unwrap();
        let footer = built.chunks.last().unwrap().to_vec();
        assert!(SegmentFooter::parse(&footer).is_ok());
        for i in 0..footer.len() {
            let mut bad = footer.clone();
            bad[i] ^= 0x40;
            assert!(
                SegmentFooter::parse(&bad).is_err(),
                "flipped byte {i} went unnoticed"
            );
        }
        assert!(SegmentFooter::parse(&footer[1..]).is_err());
        assert!(SegmentFooter::parse(&footer[..footer.len() - 1]).is_err());
        assert!(SegmentFooter::parse(&[]).is_err());
    }

    #[test]
    fn builder_rejects_overlap_and_bad_lengths() {
        assert!(SegmentBuilder::new().finish().is_none());
        let mut builder = SegmentBuilder::new();
        builder.push(fake_batch(10, 5, 1, 0)).unwrap();
        assert!(builder.push(fake_batch(14, 1, 1, 0)).is_err());
        let truncated = fake_batch(15, 1, 1, 20).slice(..70);
        assert!(builder.push(truncated).is_err());
        builder.push(fake_batch(20, 1, 1, 0)).unwrap(); // a gap is allowed
        assert_eq!(builder.end_offset(), 21);
    }

    #[test]
    fn split_batches_reports_partial_tail() {
        let a = fake_batch(0, 1, 1, 10);
        let b = fake_batch(1, 1, 1, 100);
        let all = concat(&[a.clone(), b.clone()]);
        let SplitBatches {
            batches,
            incomplete_len: partial,
        } = split_batches(&all.slice(..a.len() + 70)).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(partial, Some(b.len()));
        let SplitBatches {
            batches,
            incomplete_len: partial,
        } = split_batches(&all.slice(..a.len() + 10)).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(partial, Some(HEADER_LEN));
        let SplitBatches {
            batches,
            incomplete_len: partial,
        } = split_batches(&all).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(partial, None);
    }

    #[test]
    fn keys_are_unique_and_sortable() {
        let tp = TopicPartition {
            topic_id: uuid::Uuid::nil(),
            partition: 3,
        };
        let a = segment_key("c1", tp, 42, 7);
        let b = segment_key("c1", tp, 42, 7);
        assert_ne!(a, b);
        assert!(a.starts_with(
            "c1/topics/00000000-0000-0000-0000-000000000000/3/00000000000000000042-7-"
        ));
        assert!(a.ends_with(".seg"));
    }
}
