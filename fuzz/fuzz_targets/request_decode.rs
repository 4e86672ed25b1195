//! Fuzz target: the broker's request decoding (framing prefix, header, every supported API body) must
//! never panic or abort on arbitrary bytes — it either decodes or returns an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

// kafka-protocol pre-allocates arrays from wire lengths; the broker binary runs under this allocator.
#[global_allocator]
static ALLOCATOR: alloc_guard::Guard = alloc_guard::Guard;

fuzz_target!(|data: &[u8]| {
    let payload = bytes::Bytes::copy_from_slice(data);
    let _ = broker::dispatch::decode_request(payload);
    let _ = broker::frame::request_prefix(data);
    if let Some(prefix) = data.get(..4) {
        let prefix: [u8; 4] = prefix.try_into().unwrap_or_default();
        let _ = broker::frame::payload_len(prefix, 100 * 1024 * 1024);
    }
});
