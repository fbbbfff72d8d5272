//! Which shard of an output stream a record lands in: the open shards by hash
//! key range (from ListShards), and the record's hash key (the MD5 of its
//! partition key as a 128-bit big-endian number, or its explicit hash key),
//! as Kinesis computes it. Pure: the writer reads the map (`refresh` in
//! `writer.rs`), the pacer (`pacing.rs`) and KPL aggregation
//! (`aggregate.rs`) use it.
//!
//! Upstream: <https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecordsRequestEntry.html>
//! ("an MD5 hash function is used to map partition keys to 128-bit integer
//! values and to map associated data records to shards").

use crate::kinesis::ShardInfo;
use crate::kpl::aggregate::ShardRange;
use std::sync::Arc;

/// The open shards of a stream, sorted by the start of their hash range.
#[derive(Debug, Default, Clone)]
pub struct ShardMap {
    ranges: Vec<(u128, u128, Arc<str>)>,
}

impl ShardMap {
    /// The open shards of `list` (closed ones take no writes).
    pub fn of(list: &[ShardInfo]) -> ShardMap {
        let mut ranges: Vec<(u128, u128, Arc<str>)> = list
            .iter()
            .filter(|s| !s.closed)
            .filter_map(|s| {
                let (start, end) = s.hash_range?;
                Some((start, end, Arc::from(s.id.as_str())))
            })
            .collect();
        ranges.sort_by_key(|r| r.0);
        ShardMap { ranges }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// The shard whose range holds `hash`.
    pub fn shard_of(&self, hash: u128) -> Option<&Arc<str>> {
        let i = self.ranges.partition_point(|r| r.0 <= hash);
        let (start, end, id) = self.ranges.get(i.checked_sub(1)?)?;
        (*start <= hash && hash <= *end).then_some(id)
    }

    /// Whether `shard` is one of the map's.
    pub fn holds(&self, shard: &str) -> bool {
        self.ranges.iter().any(|r| &*r.2 == shard)
    }

    /// The map as KPL aggregation wants it.
    pub fn ranges(&self) -> Vec<ShardRange> {
        self.ranges
            .iter()
            .map(|(start, end, id)| ShardRange {
                id: id.to_string(),
                start: *start,
                end: *end,
            })
            .collect()
    }
}

/// The hash key Kinesis places a record by: its explicit hash key if it has
/// a valid one, else the MD5 of its partition key.
pub fn hash_key(partition_key: &str, explicit_hash_key: Option<&str>) -> u128 {
    use md5::{Digest, Md5};
    if let Some(hash) = explicit_hash_key.and_then(|k| k.parse::<u128>().ok()) {
        return hash;
    }
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, closed: bool, hash_range: Option<(u128, u128)>) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parents: Vec::new(),
            closed,
            hash_range,
        }
    }

    #[test]
    fn holds_open_shards_with_a_hash_range() {
        let map = ShardMap::of(&[
            shard("a", true, Some((0, 10))),
            shard("d", false, Some((6, 10))),
            shard("b", false, Some((0, 5))),
            shard("c", false, None),
        ]);
        let ids: Vec<String> = map.ranges().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["b", "d"]);
        assert!(map.holds("d") && !map.holds("a"));
    }

    #[test]
    fn finds_the_shard_of_a_hash() {
        let half = u128::MAX / 2;
        let map = ShardMap::of(&[
            shard("low", false, Some((0, half))),
            shard("high", false, Some((half + 1, u128::MAX))),
        ]);
        assert_eq!(map.shard_of(0).map(|s| &**s), Some("low"));
        assert_eq!(map.shard_of(half).map(|s| &**s), Some("low"));
        assert_eq!(map.shard_of(half + 1).map(|s| &**s), Some("high"));
        assert_eq!(map.shard_of(u128::MAX).map(|s| &**s), Some("high"));
        // A gap (a shard missing from a partial answer) places nothing.
        let gappy = ShardMap::of(&[shard("low", false, Some((0, 10)))]);
        assert_eq!(gappy.shard_of(11), None);
        assert_eq!(ShardMap::default().shard_of(5), None);
    }

    #[test]
    fn hashes_partition_keys_as_kinesis_does() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(hash_key("a", None), 0x0cc175b9c0f1b6a831c399e269772661_u128);
        assert_eq!(hash_key("a", Some("7")), 7);
        assert_eq!(
            hash_key("a", Some("not a number")),
            hash_key("a", None),
            "an invalid explicit key is refused before; never used"
        );
    }
}
