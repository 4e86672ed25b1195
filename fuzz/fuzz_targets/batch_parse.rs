//! Fuzz target: Kafka record batch parsing in `storage::batch` on arbitrary bytes.
//!
//! Everything a produce request or a stored object can hand to the batch code goes through here:
//! splitting + validation (the produce hot path), single-batch validation, and `record_timestamps`
//! (decompression with every codec + record walking). None of it may panic, and the invariants below
//! must hold for whatever the fuzzer finds valid.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use storage::batch::{self, BatchHeader};

fuzz_target!(|data: &[u8]| {
    let records = Bytes::copy_from_slice(data);
    let _ = batch::validate(data);
    let _ = batch::record_timestamps(data);
    let _ = BatchHeader::parse(data);

    let Ok(batches) = batch::split_and_validate(&records) else {
        return;
    };
    let mut consumed = 0;
    for (header, bytes) in batches {
        // A batch that passed splitting is one whole valid batch on its own.
        assert_eq!(header.total_len(), bytes.len());
        assert_eq!(batch::validate(&bytes), Ok(header));
        consumed += bytes.len();

        // The two rewrites the broker performs must keep the batch valid.
        let mut rewritten = bytes.to_vec();
        batch::set_base_offset(&mut rewritten, 1_000);
        batch::set_log_append_time(&mut rewritten, 1_700_000_000_000);
        let rewritten_header = batch::validate(&rewritten).expect("rewrites keep the batch valid");
        assert_eq!(rewritten_header.base_offset, 1_000);
        assert_eq!(rewritten_header.max_timestamp, 1_700_000_000_000);

        // Uncompressed records were already walked by validation, so reading them cannot fail
        // except through offset arithmetic at the edges of i64.
        if let Ok(timestamps) = batch::record_timestamps(&bytes) {
            assert_eq!(timestamps.len(), header.record_count as usize);
        }
        if let Ok(timestamps) = batch::record_timestamps(&rewritten) {
            assert!(timestamps.iter().all(|&(_, ts)| ts == 1_700_000_000_000));
        }
    }
    assert_eq!(consumed, data.len(), "splitting must account for every byte");
});
