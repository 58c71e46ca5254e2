//! Which partition a record goes to.
//!
//! - With a key: Kafka's default partitioner, `toPositive(murmur2(key)) %
//!   partitions`, so a key lands on the same partition number as with a Java
//!   producer ([`partition_for_key`]).
//! - Without a key: the sticky partitioner (Kafka 2.4+, KIP-480): every
//!   keyless record of a topic goes to one partition until that partition's
//!   batch is sent, then another partition is picked at random. Fewer, fuller
//!   batches than round robin.
//!
//! The one thing a newcomer must not break: [`murmur2`] must stay bit-for-bit
//! Kafka's `Utils.murmur2`; the tests hold Kafka's own vectors.

use std::collections::HashMap;

use rand::Rng;

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Kafka hashes `int length`; keys are far below 2^31 bytes.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        if let Some(&b) = rest.get(2) {
            h ^= u32::from(b) << 16;
        }
        if let Some(&b) = rest.get(1) {
            h ^= u32::from(b) << 8;
        }
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key` among
/// `partitions` (`toPositive(murmur2(key)) % partitions`). `partitions` of
/// 0 gives 0.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    if partitions == 0 {
        return 0;
    }
    // `toPositive(x) = x & 0x7fffffff`, so the value fits in u32.
    let positive = (murmur2(key) & 0x7fff_ffff) as u32;
    positive % partitions
}

/// Per-topic sticky choice for keyless records.
#[derive(Debug, Default)]
pub(crate) struct StickyPartitioner {
    current: HashMap<String, u32>,
}

impl StickyPartitioner {
    /// The partition for a keyless record of `topic`: the current sticky one,
    /// or a new random one.
    pub(crate) fn partition(&mut self, topic: &str, partitions: u32, rng: &mut impl Rng) -> u32 {
        if partitions == 0 {
            return 0;
        }
        if let Some(&p) = self.current.get(topic)
            && p < partitions
        {
            return p;
        }
        let p = rng.random_range(0..partitions);
        self.current.insert(topic.to_owned(), p);
        p
    }

    /// Called when the batch of `topic`/`partition` is closed for sending:
    /// if keyless records stick to it, move them to another partition.
    pub(crate) fn batch_closed(
        &mut self,
        topic: &str,
        partition: u32,
        partitions: u32,
        rng: &mut impl Rng,
    ) {
        if let Some(current) = self.current.get_mut(topic)
            && *current == partition
        {
            *current = if partitions > 1 {
                // Any partition but this one.
                let other = rng.random_range(0..partitions - 1);
                if other >= partition { other + 1 } else { other }
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn murmur2_matches_kafka_utils_test_vectors() {
        // From Kafka's clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), want, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partition_for_key_is_kafkas_default() {
        // toPositive(-973932308) = 1173551340; % 4 = 0, % 7 = 4.
        assert_eq!(partition_for_key(b"21", 4), 1_173_551_340 % 4);
        assert_eq!(partition_for_key(b"21", 7), 1_173_551_340 % 7);
        // abc: 479470107 is already positive.
        assert_eq!(partition_for_key(b"abc", 10), 479_470_107 % 10);
        assert_eq!(partition_for_key(b"", 1), 0);
        assert_eq!(partition_for_key(b"x", 0), 0);
        for p in 1..20 {
            assert!(partition_for_key(b"foobar", p) < p);
        }
    }

    #[test]
    fn sticky_until_batch_closed() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut s = StickyPartitioner::default();
        let first = s.partition("t", 8, &mut rng);
        for _ in 0..100 {
            assert_eq!(s.partition("t", 8, &mut rng), first);
        }
        // Another partition's batch closing changes nothing.
        s.batch_closed("t", (first + 1) % 8, 8, &mut rng);
        assert_eq!(s.partition("t", 8, &mut rng), first);
        // Its own batch closing moves it elsewhere.
        s.batch_closed("t", first, 8, &mut rng);
        let second = s.partition("t", 8, &mut rng);
        assert_ne!(second, first);
        assert!(second < 8);
        // Topics are independent; one partition stays on 0.
        assert_eq!(s.partition("one", 1, &mut rng), 0);
        s.batch_closed("one", 0, 1, &mut rng);
        assert_eq!(s.partition("one", 1, &mut rng), 0);
        // Fewer partitions than the sticky choice: re-pick.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let p = s.partition("t", 8, &mut rng);
            seen.insert(p);
            s.batch_closed("t", p, 8, &mut rng);
        }
        assert_eq!(
            seen.len(),
            8,
            "all partitions get keyless records over time"
        );
    }
}
