//! Key groups: the unit in which keyed state is stored, snapshotted and
//! moved between subtasks. The assignment functions are Flink's, so their
//! behaviour under rescaling is well understood: subtask `i` of `p` owns the
//! key groups `ceil(i*m/p) ..= ((i+1)*m - 1)/p` of `m`.

use xxhash_rust::xxh3::xxh3_64;

/// A key group index, in `0..max_parallelism`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct KeyGroup(pub u16);

/// The key group of a key. The hash is XXH3-64 of the key bytes (seed 0),
/// a fixed, documented function so every wrun version and every SDK agrees.
pub fn key_group_of(key: &[u8], max_parallelism: u32) -> KeyGroup {
    KeyGroup((xxh3_64(key) % u64::from(max_parallelism.max(1))) as u16)
}

/// Which subtask of `parallelism` owns a key group.
pub fn subtask_for_key_group(kg: KeyGroup, max_parallelism: u32, parallelism: u32) -> u32 {
    (u32::from(kg.0) * parallelism / max_parallelism.max(1)).min(parallelism.saturating_sub(1))
}

/// A contiguous range of key groups, `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyGroupRange {
    /// First key group (inclusive).
    pub start: u16,
    /// Last key group (exclusive).
    pub end: u16,
}

impl KeyGroupRange {
    /// The key groups subtask `index` of `parallelism` owns.
    pub fn for_subtask(max_parallelism: u32, parallelism: u32, index: u32) -> KeyGroupRange {
        let (m, p, i) = (
            u64::from(max_parallelism),
            u64::from(parallelism.max(1)),
            u64::from(index),
        );
        let start = (i * m).div_ceil(p);
        let end_inclusive = ((i + 1) * m - 1) / p;
        KeyGroupRange {
            start: start as u16,
            end: (end_inclusive + 1) as u16,
        }
    }

    /// Whether the range holds `kg`.
    pub fn contains(&self, kg: KeyGroup) -> bool {
        kg.0 >= self.start && kg.0 < self.end
    }

    /// How many key groups the range holds.
    pub fn len(&self) -> usize {
        usize::from(self.end.saturating_sub(self.start))
    }

    /// Whether the range is empty (a subtask beyond max parallelism).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key groups in order.
    pub fn iter(&self) -> impl Iterator<Item = KeyGroup> {
        (self.start..self.end).map(KeyGroup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_all_key_groups_and_agree_with_routing() {
        for m in [1u32, 2, 7, 128, 1000] {
            for p in 1..=m.min(17) {
                let mut next = 0u16;
                for i in 0..p {
                    let r = KeyGroupRange::for_subtask(m, p, i);
                    assert_eq!(r.start, next, "m={m} p={p} i={i}: ranges are contiguous");
                    assert!(
                        !r.is_empty(),
                        "m={m} p={p} i={i}: every subtask owns a key group"
                    );
                    for kg in r.iter() {
                        assert_eq!(subtask_for_key_group(kg, m, p), i, "m={m} p={p} kg={kg:?}");
                    }
                    next = r.end;
                }
                assert_eq!(u32::from(next), m, "m={m} p={p}: all key groups owned");
            }
        }
    }

    #[test]
    fn key_group_hash_is_fixed() {
        // Pinned: changing the hash would strand every saved key group.
        assert_eq!(xxh3_64(b""), 0x2d06800538d394c2);
        assert_eq!(
            key_group_of(b"hello", 128),
            KeyGroup((xxh3_64(b"hello") % 128) as u16)
        );
        assert!(key_group_of(b"anything", 128).0 < 128);
    }
}
