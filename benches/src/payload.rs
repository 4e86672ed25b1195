//! Record payloads: incompressible bytes (or, on request, text-like compressible ones) served as
//! slices of one pre-filled buffer, so producing a record costs no allocation and no random-number
//! generation in the send loop.

/// A pool of pseudo-random bytes from which fixed-size record payloads are cut.
pub(crate) struct PayloadPool {
    bytes: Vec<u8>,
    record_size: usize,
    /// Number of distinct 64-byte-aligned start positions a payload can have.
    starts: u64,
}

/// Size of the random area; large enough that consecutive records differ and the pool stays cache-cold
/// like real data would be.
const POOL_BYTES: usize = 4 << 20;
const START_ALIGN: usize = 64;

impl PayloadPool {
    pub(crate) fn new(record_size: usize) -> PayloadPool {
        let mut bytes = vec![0u8; POOL_BYTES + record_size];
        // xorshift64*: plenty random for "not compressible", no dependency, reproducible.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for chunk in bytes.chunks_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        PayloadPool {
            bytes,
            record_size,
            starts: (POOL_BYTES / START_ALIGN) as u64,
        }
    }

    /// Like [`PayloadPool::new`], filled with text-like bytes instead: words drawn pseudo-randomly
    /// from a small vocabulary, with digits, as log lines or JSON events look (lz4 and zstd shrink
    /// them several-fold, unlike the default pool).
    pub(crate) fn compressible(record_size: usize) -> PayloadPool {
        const WORDS: &[&str] = &[
            "{\"user\":",
            "\"event\":",
            "\"click\"",
            "\"view\"",
            "\"session\":",
            "true,",
            "false,",
            "null,",
            "\"ts\":",
            "\"page\":",
            "\"/checkout\"",
            "\"/home\"",
            "} ",
            "\"amount\":",
            "\"currency\":",
            "\"EUR\"",
        ];
        let mut bytes = Vec::with_capacity(POOL_BYTES + record_size + 32);
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        while bytes.len() < POOL_BYTES + record_size {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            bytes.extend_from_slice(WORDS[(word % WORDS.len() as u64) as usize].as_bytes());
            bytes.extend_from_slice(((word >> 32) % 100_000).to_string().as_bytes());
        }
        bytes.truncate(POOL_BYTES + record_size);
        PayloadPool {
            bytes,
            record_size,
            starts: (POOL_BYTES / START_ALIGN) as u64,
        }
    }

    /// Payload of record number `index` (always `record_size` bytes).
    pub(crate) fn get(&self, index: u64) -> &[u8] {
        // A multiplicative hash spreads consecutive indices over the pool.
        let slot = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) % self.starts;
        let start = slot as usize * START_ALIGN;
        &self.bytes[start..start + self.record_size]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_record_size_and_differ() {
        let pool = PayloadPool::new(1024);
        let first = pool.get(0);
        let second = pool.get(1);
        assert_eq!(first.len(), 1024);
        assert_eq!(second.len(), 1024);
        assert_ne!(first, second);
        assert_eq!(pool.get(u64::MAX).len(), 1024);
    }

    #[test]
    fn compressible_payloads_have_the_record_size_and_few_byte_values() {
        let pool = PayloadPool::compressible(1024);
        assert_eq!(pool.get(7).len(), 1024);
        assert_ne!(pool.get(0), pool.get(1));
        let mut seen = [false; 256];
        for &byte in pool.get(42) {
            seen[usize::from(byte)] = true;
        }
        assert!(seen.iter().filter(|&&hit| hit).count() < 64);
    }

    #[test]
    fn payloads_do_not_compress_to_nothing() {
        // Incompressible data has close to 256 distinct byte values in 1 KiB.
        let pool = PayloadPool::new(1024);
        let mut seen = [false; 256];
        for &byte in pool.get(42) {
            seen[usize::from(byte)] = true;
        }
        assert!(seen.iter().filter(|&&hit| hit).count() > 200);
    }
}
