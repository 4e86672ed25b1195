//! The data-WAL record: a small routing header in front of one record batch, so recovery can tell
//! which partition a batch belongs to.
//!
//! `version u8 (=1) | topic_id [16] | partition i32 BE | batch bytes`

use bytes::{BufMut, Bytes, BytesMut};
use metadata::TopicPartition;
use uuid::Uuid;

const VERSION: u8 = 1;
/// Bytes in front of the batch.
pub(crate) const HEADER_LEN: usize = 1 + 16 + 4;

/// Builds a WAL record for `batch` of `tp`. Returns the record and the batch as a zero-copy slice of it
/// (what the tail cache keeps, so a batch is held in memory once).
pub(crate) fn encode(tp: TopicPartition, batch: &[u8]) -> (Bytes, Bytes) {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + batch.len());
    buf.put_u8(VERSION);
    buf.put_slice(tp.topic_id.as_bytes());
    buf.put_i32(tp.partition);
    buf.put_slice(batch);
    let record = buf.freeze();
    let batch = record.slice(HEADER_LEN..);
    (record, batch)
}

/// Splits a WAL record into its partition and batch (zero-copy). `Err` carries why it is unreadable.
pub(crate) fn decode(record: &Bytes) -> Result<(TopicPartition, Bytes), String> {
    let Some(header) = record.first_chunk::<HEADER_LEN>() else {
        return Err(format!(
            "record of {} bytes is shorter than its header",
            record.len()
        ));
    };
    if header[0] != VERSION {
        return Err(format!("unknown record version {}", header[0]));
    }
    let mut topic = [0u8; 16];
    topic.copy_from_slice(&header[1..17]);
    let mut partition = [0u8; 4];
    partition.copy_from_slice(&header[17..21]);
    let tp = TopicPartition {
        topic_id: Uuid::from_bytes(topic),
        partition: i32::from_be_bytes(partition),
    };
    Ok((tp, record.slice(HEADER_LEN..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let tp = TopicPartition {
            topic_id: Uuid::new_v4(),
            partition: 7,
        };
        let (record, batch) = encode(tp, b"batch-bytes");
        assert_eq!(&batch[..], b"batch-bytes");
        let (got_tp, got_batch) = decode(&record).unwrap();
        assert_eq!(got_tp, tp);
        assert_eq!(got_batch, batch);
        assert!(decode(&record.slice(..10)).is_err());
        let mut bad = record.to_vec();
        bad[0] = 9;
        assert!(decode(&Bytes::from(bad)).is_err());
    }
}
