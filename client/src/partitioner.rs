//! Which partition a record goes to.
//!
//! - With a key: Kafka's default partitioner, `toPositive(murmur2(key)) %
//!   partitions`, so a key lands on the same partition number as with a Java
//!   producer ([`partition_for_key`]).
//! - Without a key: the uniform sticky partitioner (Kafka 3.3+, KIP-794):
//!   keyless records of a topic go to one partition until a batch's worth
//!   (`batch_bytes`) has gone there, then to another, picked at random but
//!   away from partitions whose queue is backed up (a partition that cannot
//!   send as fast as the others gets fewer records, where KIP-480's switch
//!   on every sent batch piled a full producer buffer onto whichever
//!   partition was stuck behind its in-flight limit). Fewer, fuller batches
//!   than round robin, and every partition kept busy.
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
    current: HashMap<String, Sticky>,
}

#[derive(Debug, Clone, Copy)]
struct Sticky {
    partition: u32,
    /// Bytes sent to `partition` since it was picked.
    produced: usize,
}

impl StickyPartitioner {
    /// The partition for a keyless record of `size` bytes of `topic`: the
    /// current sticky one until `batch_bytes` have gone to it, then a new
    /// one from [`pick`]. `backlog(p)` is how many bytes wait in
    /// partition `p`'s queue, not yet sent.
    pub(crate) fn partition(
        &mut self,
        topic: &str,
        partitions: u32,
        size: usize,
        batch_bytes: usize,
        backlog: impl Fn(u32) -> usize,
        rng: &mut impl Rng,
    ) -> u32 {
        if partitions == 0 {
            return 0;
        }
        if let Some(s) = self.current.get_mut(topic)
            && s.partition < partitions
            && (s.produced == 0 || s.produced + size <= batch_bytes)
        {
            s.produced += size;
            return s.partition;
        }
        let partition = pick(partitions, batch_bytes, backlog, rng);
        self.current.insert(
            topic.to_owned(),
            Sticky {
                partition,
                produced: size,
            },
        );
        partition
    }
}

/// KIP-794's adaptive choice: each partition weighs `1 + most - queued`,
/// where `queued` counts the full batches waiting in its queue and `most`
/// is the largest such count, so with even queues the pick is uniform and
/// a partition that is falling behind is picked less (one batches behind
/// the busiest never picked at all once the gap is large).
fn pick(
    partitions: u32,
    batch_bytes: usize,
    backlog: impl Fn(u32) -> usize,
    rng: &mut impl Rng,
) -> u32 {
    let queued: Vec<u64> = (0..partitions)
        .map(|p| (backlog(p) / batch_bytes.max(1)) as u64)
        .collect();
    let most = queued.iter().copied().max().unwrap_or(0);
    let total: u64 = queued.iter().map(|q| 1 + most - q).sum();
    let mut x = rng.random_range(0..total);
    for (p, q) in queued.iter().enumerate() {
        let w = 1 + most - q;
        if x < w {
            return p as u32;
        }
        x -= w;
    }
    partitions - 1
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
    fn sticky_for_a_batch_worth_then_moves() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut s = StickyPartitioner::default();
        let none = |_| 0;
        let first = s.partition("t", 8, 100, 1000, none, &mut rng);
        for _ in 0..9 {
            assert_eq!(s.partition("t", 8, 100, 1000, none, &mut rng), first);
        }
        // The 11th record would pass batch_bytes: a new pick (which may
        // be the same partition again, by chance).
        let mut switched = false;
        for _ in 0..20 {
            for _ in 0..10 {
                let p = s.partition("t", 8, 100, 1000, none, &mut rng);
                switched |= p != first;
            }
        }
        assert!(switched, "keyless records move on after a batch's worth");
        // A record bigger than a batch still goes somewhere.
        assert!(s.partition("t", 8, 5000, 1000, none, &mut rng) < 8);
        // Topics are independent; one partition stays on 0.
        for _ in 0..20 {
            assert_eq!(s.partition("one", 1, 600, 1000, none, &mut rng), 0);
        }
        // All partitions get keyless records over time.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            seen.insert(s.partition("t", 8, 500, 1000, none, &mut rng));
        }
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn backed_up_partitions_are_avoided() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        // Partition 3 has 4 batches queued, the others none: its weight is
        // 1 against 5 for each other one.
        let backlog = |p: u32| if p == 3 { 4000 } else { 0 };
        let mut counts = [0u32; 8];
        for _ in 0..8000 {
            counts[pick(8, 1000, backlog, &mut rng) as usize] += 1;
        }
        let others = counts.iter().enumerate().filter(|(p, _)| *p != 3);
        for (p, &n) in others {
            assert!(n > 800, "partition {p} picked {n} times of 8000");
        }
        assert!(
            counts[3] < 400,
            "the backed-up partition was picked {} times",
            counts[3]
        );
        // Even queues: uniform.
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[pick(4, 1000, |_| 2500, &mut rng) as usize] += 1;
        }
        assert!(counts.iter().all(|&n| n > 800), "{counts:?}");
    }
}
