//! Which records go into the next PutRecords request of one output, so that
//! requests are full and per-key order survives any partial failure.
//!
//! The rule: a request takes the first pending record of *each* ordering key
//! (explicit hash key, else partition key), in source order, skipping over
//! the later records of keys already taken, up to 500 entries and the byte
//! limit. A key is never in two places of a request nor in flight twice, so
//! whichever entries Kinesis fails, a later record of a key is never written
//! before an earlier one: a failed record stays the head of its key and is
//! taken again first.
//!
//! Keys are told apart by a 64-bit hash of the ordering key: two keys that
//! collide share a queue, which only orders them more strictly than needed.
//! Pure bookkeeping, no I/O: `writer.rs` drives it and the tests below check
//! the rule with random keys and random failures.

use super::limits::MAX_ENTRIES_PER_REQUEST;
use crate::record::OutRecord;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

/// The records of one delivery not yet acknowledged, by position (their
/// index in the delivery, which is their order).
pub struct Pending {
    records: Vec<OutRecord>,
    /// Per key hash: the positions not yet acknowledged, head first.
    queues: HashMap<u64, VecDeque<usize>>,
    /// Positions that head their key's queue and are not in flight.
    ready: BTreeSet<usize>,
    /// Records not yet acknowledged.
    left: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl Pending {
    pub fn new(records: Vec<OutRecord>) -> Self {
        let hasher = std::collections::hash_map::RandomState::new();
        let mut queues: HashMap<u64, VecDeque<usize>> = HashMap::new();
        let mut ready = BTreeSet::new();
        for (position, record) in records.iter().enumerate() {
            let queue = queues.entry(key_hash(&hasher, record)).or_default();
            if queue.is_empty() {
                ready.insert(position);
            }
            queue.push_back(position);
        }
        Pending {
            left: records.len(),
            records,
            queues,
            ready,
            hasher,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// The record at `position`.
    pub fn record(&self, position: usize) -> &OutRecord {
        &self.records[position]
    }

    /// The positions of the next request, in source order: the ready head
    /// of each key, up to `max_entries` (at most 500) and `max_bytes` (a
    /// first record always goes, even alone over the limit). They are in
    /// flight until `acknowledged` or `failed`.
    pub fn next_request(&mut self, max_entries: usize, max_bytes: usize) -> Vec<usize> {
        let max_entries = max_entries.clamp(1, MAX_ENTRIES_PER_REQUEST);
        let mut taken = Vec::new();
        let mut bytes = 0usize;
        for &position in &self.ready {
            if taken.len() == max_entries {
                break;
            }
            let size = self.records[position].billed_bytes();
            if !taken.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            taken.push(position);
        }
        for position in &taken {
            self.ready.remove(position);
        }
        taken
    }

    /// `position` was written: the next record of its key becomes ready.
    pub fn acknowledged(&mut self, position: usize) {
        let key = key_hash(&self.hasher, &self.records[position]);
        let Some(queue) = self.queues.get_mut(&key) else {
            return;
        };
        if queue.front() != Some(&position) {
            return;
        }
        queue.pop_front();
        self.left -= 1;
        match queue.front() {
            Some(&next) => {
                self.ready.insert(next);
            }
            None => {
                self.queues.remove(&key);
            }
        }
    }

    /// `position` was not written: it is ready again, still first of its key.
    pub fn failed(&mut self, position: usize) {
        self.ready.insert(position);
    }

    /// Every position not yet acknowledged, in source order.
    pub fn unacknowledged(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self.queues.values().flatten().copied().collect();
        all.sort_unstable();
        all
    }

    /// Gives up on everything not yet acknowledged; returns it, in order.
    pub fn drain(&mut self) -> Vec<usize> {
        let all = self.unacknowledged();
        self.queues.clear();
        self.ready.clear();
        self.left = 0;
        all
    }
}

fn key_hash(hasher: &impl BuildHasher, record: &OutRecord) -> u64 {
    let mut h = hasher.build_hasher();
    h.write(record.ordering_key().as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap as Map, HashSet};

    fn rec(i: usize, key: &str, size: usize) -> OutRecord {
        OutRecord {
            data: vec![b'x'; size],
            partition_key: key.into(),
            explicit_hash_key: None,
            source_index: i as u32,
        }
    }

    #[test]
    fn a_request_skips_over_repeated_keys_to_the_next_key() {
        let keys = ["a", "b", "a", "c", "b", "d"];
        let mut p = Pending::new(keys.iter().enumerate().map(|(i, k)| rec(i, k, 1)).collect());
        // The old rule stopped at the second "a" (3 records); this one takes
        // the first of each key.
        assert_eq!(p.next_request(500, 5 << 20), [0, 1, 3, 5]);
        assert!(
            p.next_request(500, 5 << 20).is_empty(),
            "all heads in flight"
        );
        p.acknowledged(0);
        p.failed(1);
        p.acknowledged(3);
        p.acknowledged(5);
        // "b" failed: its first record goes again before its second.
        assert_eq!(p.next_request(500, 5 << 20), [1, 2]);
        p.acknowledged(1);
        p.acknowledged(2);
        assert_eq!(p.next_request(500, 5 << 20), [4]);
        p.acknowledged(4);
        assert!(p.is_empty());
    }

    #[test]
    fn limits_of_entries_and_bytes() {
        let mut p = Pending::new((0..1234).map(|i| rec(i, &format!("k{i}"), 10)).collect());
        assert_eq!(p.next_request(500, 5 << 20).len(), 500);
        let mut p = Pending::new(
            (0..10)
                .map(|i| rec(i, &format!("k{i}"), (1 << 20) - 2))
                .collect(),
        );
        assert_eq!(p.next_request(500, 5 << 20).len(), 5);
        let mut p = Pending::new(vec![rec(0, "a", 900), rec(1, "b", 10)]);
        assert_eq!(
            p.next_request(500, 500),
            [0],
            "a large first record goes alone"
        );
        let mut p = Pending::new(vec![rec(0, "a", 1), rec(1, "b", 1)]);
        assert_eq!(p.next_request(1, 500), [0]);
    }

    #[test]
    fn the_explicit_hash_key_is_the_ordering_key() {
        let mut records: Vec<OutRecord> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, k)| rec(i, k, 1))
            .collect();
        records[0].explicit_hash_key = Some("7".into());
        records[2].explicit_hash_key = Some("7".into());
        let mut p = Pending::new(records);
        assert_eq!(p.next_request(500, 5 << 20), [0, 1]);
        assert_eq!(p.unacknowledged(), [0, 1, 2]);
        assert_eq!(p.drain(), [0, 1, 2]);
        assert!(p.is_empty());
    }

    proptest! {
        /// Random keys (skewed: few keys often), random entry failures:
        /// every record is written once, per key in source order, no key is
        /// ever twice in a request, and each request holds every ready key
        /// (as full as the rule allows).
        #[test]
        fn order_per_key_holds_and_requests_are_full(
            keys in proptest::collection::vec(0u8..40, 1..600),
            fail_seed in any::<u64>(),
            fail_rate in 0.0f64..0.6,
            max_entries in prop_oneof![Just(500usize), 1usize..20],
        ) {
            let records: Vec<OutRecord> = keys.iter().enumerate().map(|(i, k)| rec(i, &format!("k{k}"), 3)).collect();
            let mut p = Pending::new(records.clone());
            let mut rng = fastrand::Rng::with_seed(fail_seed);
            let mut written: Vec<usize> = Vec::new();
            let mut rounds = 0;
            while !p.is_empty() {
                rounds += 1;
                prop_assert!(rounds < 100_000);
                // Keys with a record not yet written, and whose head is not in flight.
                let request = p.next_request(max_entries, 5 << 20);
                let distinct: HashSet<&str> = request.iter().map(|&i| records[i].ordering_key()).collect();
                prop_assert_eq!(distinct.len(), request.len(), "a key twice in one request");
                let open_keys: HashSet<&str> = p.unacknowledged().iter().map(|&i| records[i].ordering_key()).collect();
                prop_assert_eq!(request.len(), open_keys.len().min(max_entries), "request not as full as allowed");
                for i in request {
                    if rng.f64() < fail_rate {
                        p.failed(i);
                    } else {
                        p.acknowledged(i);
                        written.push(i);
                    }
                }
            }
            let mut sorted = written.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..records.len()).collect::<Vec<_>>());
            let mut last: Map<&str, usize> = Map::new();
            for i in written {
                if let Some(prev) = last.insert(records[i].ordering_key(), i) {
                    prop_assert!(prev < i, "key {} reordered", records[i].ordering_key());
                }
            }
        }
    }
}
