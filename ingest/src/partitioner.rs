//! Partition choice for HTTP records, identical to the Java client's default partitioner for keyed
//! records (`toPositive(murmur2(key)) % partitions`), so an HTTP producer and a Kafka producer (Java,
//! or librdkafka with `partitioner=murmur2_random`) that use the same key land in the same partition.

use std::sync::atomic::{AtomicU32, Ordering};

/// Kafka's `Utils.murmur2`: MurmurHash2, 32-bit, seed `0x9747b28c`, little-endian 4-byte blocks.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java computes the seed xor with an int length; lengths beyond i32 cannot reach us (body limit).
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    // Java's switch falls through from case 3 to case 1.
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for a non-null key.
pub fn partition_for_key(key: &[u8], partitions: u32) -> i32 {
    debug_assert!(partitions > 0);
    let positive = (murmur2(key) & 0x7fff_ffff) as u32;
    (positive % partitions.max(1)) as i32
}

/// Partitions for unkeyed records: every request sticks to one partition (one batch, one append,
/// like the Java client's sticky partitioner), and successive requests rotate over the partitions.
#[derive(Debug, Default)]
pub(crate) struct StickyRotation {
    next: AtomicU32,
}

impl StickyRotation {
    pub(crate) fn next_partition(&self, partitions: u32) -> i32 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n % partitions.max(1)) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from Kafka's `UtilsTest.testMurmur2` and Akka's Murmur2Spec (both taken from the Java
    /// implementation).
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"1", -1_993_445_489),
            (b"12", 126_087_238),
            (b"123", -267_702_483),
            (b"1234", -1_614_185_708),
            (b"12345", -1_188_365_604),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                *expected,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn keyed_partition_is_positive_modulo() {
        // toPositive(-973932308) = -973932308 & 0x7fffffff = 1173551340; % 10 = 0.
        assert_eq!(partition_for_key(b"21", 10), 0);
        // toPositive(479470107) % 7 = 479470107 % 7 = 4.
        assert_eq!(partition_for_key(b"abc", 7), 479_470_107 % 7);
        for partitions in 1..50 {
            let p = partition_for_key(b"some key", partitions);
            assert!(p >= 0 && (p as u32) < partitions);
        }
    }

    #[test]
    fn rotation_visits_every_partition() {
        let rotation = StickyRotation::default();
        let mut seen: Vec<i32> = (0..6).map(|_| rotation.next_partition(3)).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 0, 1, 1, 2, 2]);
    }
}
