//! Which records go into the next PutRecords request of one output: the
//! output's queue of records not yet acknowledged, fed by every lane (source
//! shard × pipeline) that writes to the output, and the ordering rule that
//! packs requests from it. Pure bookkeeping, no I/O: `writer.rs` drives it.
//!
//! Records are numbered in the order they are queued (their *position*);
//! records of one lane are queued in source order, so per key the position
//! order is the source order.
//!
//! - [`Ordering::PerKey`] (the default): a request takes the first pending
//!   record of *each* ordering key (the partition key; for a KPL aggregate,
//!   its explicit hash key: the shard it is for), oldest first, skipping over later records of keys it already holds, up
//!   to 500 entries and the byte limit; a key is never in two requests in
//!   flight. Whichever entries Kinesis fails, a later record of a key is never
//!   written before an earlier one: a failed record stays the head of its key
//!   and is taken again first.
//! - [`Ordering::None`]: a request takes the oldest pending records whatever
//!   their keys. A key's records can then land out of order (a failed entry
//!   retried after a later one of its key succeeded, or two requests in
//!   flight that Kinesis orders by arrival). `acknowledged` finds exactly
//!   those records from the sequence numbers Kinesis assigned.
//!
//! Keys are told apart by a 64-bit hash of the ordering key: two keys that
//! collide share a queue, which only orders them more strictly than needed.

use super::limits::MAX_ENTRIES_PER_REQUEST;
use super::reorders::Landings;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

/// How an output orders the records of one key (`ordering` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Per ordering key, records land in source order.
    #[default]
    PerKey,
    /// Full requests whatever the keys; reorders are counted, not prevented.
    None,
}

/// Whether a record may go into the request being packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Take,
    /// Not now; look at the next one.
    Skip,
    /// Not now, nor anything after it.
    Stop,
}

/// Where Kinesis put an acknowledged record: its shard and sequence number.
pub struct Landed<'a> {
    pub shard: &'a str,
    pub sequence: &'a str,
}

struct Slot<R> {
    item: R,
    key: u64,
    bytes: usize,
    in_flight: bool,
    /// The ordinal of the request it was last taken into.
    request: u64,
    /// Must be sent alone (its request was rejected as invalid; finding the culprit).
    alone: bool,
    /// The caller's group of the record (`push_tagged`), shown to `admit`.
    tag: u32,
}

/// What the packing loop needs of a ready record, kept in `Queue::ready`
/// itself: records skipped (their tag's shard is full) are passed over
/// without touching their slots, which are large and scattered.
#[derive(Debug, Clone, Copy)]
struct Ready {
    bytes: usize,
    tag: u32,
    alone: bool,
}

/// Per key: its records not yet acknowledged (positions, oldest first) and,
/// with `Ordering::None`, where its acknowledged records landed.
#[derive(Default)]
struct KeyState {
    open: VecDeque<u64>,
    /// `Ordering::None` only: where its acknowledged records landed, as
    /// long as a later acknowledgement may pair with them (`reorders.rs`).
    landed: Landings,
}

/// The records of one output not yet acknowledged.
pub struct Queue<R> {
    ordering: Ordering,
    /// Position of `slots[0]`.
    base: u64,
    slots: VecDeque<Option<Slot<R>>>,
    keys: HashMap<u64, KeyState>,
    /// Positions that may be taken now (per key: its head; none: all not in flight).
    ready: BTreeMap<u64, Ready>,
    /// Bytes of the records in `ready`.
    ready_bytes: usize,
    len: usize,
    hasher: std::collections::hash_map::RandomState,
    /// Requests taken so far (the ordinal of the last one).
    requests_taken: u64,
    /// `Ordering::None` only: per request still in flight (ordinal), how
    /// many of its records are.
    in_flight_requests: BTreeMap<u64, usize>,
}

impl<R> Queue<R> {
    pub fn new(ordering: Ordering) -> Self {
        Queue {
            ordering,
            base: 0,
            slots: VecDeque::new(),
            keys: HashMap::new(),
            ready: BTreeMap::new(),
            ready_bytes: 0,
            len: 0,
            hasher: std::collections::hash_map::RandomState::new(),
            requests_taken: 0,
            in_flight_requests: BTreeMap::new(),
        }
    }

    pub fn ordering(&self) -> Ordering {
        self.ordering
    }

    /// Records not yet acknowledged (queued or in flight).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `item`, ordered by `key` (`key_hash` of its ordering key),
    /// counting `bytes` against the request limit; returns its position.
    pub fn push(&mut self, key: u64, bytes: usize, item: R) -> u64 {
        self.push_tagged(key, 0, bytes, item)
    }

    /// Like `push`, with a `tag` that `next_request_admitted` shows its
    /// `admit` instead of the record (the writer: the shard it goes to).
    pub fn push_tagged(&mut self, key: u64, tag: u32, bytes: usize, item: R) -> u64 {
        let position = self.base + self.slots.len() as u64;
        self.slots.push_back(Some(Slot {
            item,
            key,
            bytes,
            in_flight: false,
            request: 0,
            alone: false,
            tag,
        }));
        self.len += 1;
        let state = self.keys.entry(key).or_default();
        let ready = self.ordering == Ordering::None || state.open.is_empty();
        state.open.push_back(position);
        if ready {
            self.make_ready(position);
        }
        position
    }

    /// Whether the records ready now fill a request (`max_entries` of them,
    /// or `max_bytes`): the writer sends a request that is not full only
    /// when none is in flight, so that records coming back from requests in
    /// flight at different moments are packed together, not each in a
    /// request of their own.
    pub fn fills_a_request(&self, max_entries: usize, max_bytes: usize) -> bool {
        self.ready.len() >= max_entries.clamp(1, MAX_ENTRIES_PER_REQUEST)
            || self.ready_bytes >= max_bytes
    }

    /// The record at `position`, if not yet acknowledged.
    pub fn get(&self, position: u64) -> Option<&R> {
        self.slot(position).map(|s| &s.item)
    }

    /// The positions of the next request, oldest first, by the ordering
    /// rule, up to `max_entries` (at most 500) and `max_bytes` (a first
    /// record always goes, even alone over the limit). They are in flight
    /// until `acknowledged`, `failed` or `dropped`.
    pub fn next_request(&mut self, max_entries: usize, max_bytes: usize) -> Vec<u64> {
        self.next_request_admitted(max_entries, max_bytes, |_, _| Admission::Take)
    }

    /// Like `next_request`, taking only the records `admit` lets go, asked
    /// with each record's tag and bytes (the pacer: whether its shard has
    /// room); a record skipped stays ready, first of its key.
    /// `Admission::Stop` ends the request there.
    pub fn next_request_admitted(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
        mut admit: impl FnMut(u32, usize) -> Admission,
    ) -> Vec<u64> {
        let max_entries = max_entries.clamp(1, MAX_ENTRIES_PER_REQUEST);
        let mut taken = Vec::new();
        let mut bytes = 0usize;
        for (&position, ready) in &self.ready {
            if taken.len() == max_entries {
                break;
            }
            if ready.alone {
                if taken.is_empty() {
                    taken.push(position);
                    break;
                }
                continue;
            }
            if !taken.is_empty() && bytes + ready.bytes > max_bytes {
                break;
            }
            match admit(ready.tag, ready.bytes) {
                Admission::Take => {}
                Admission::Skip => continue,
                Admission::Stop => break,
            }
            bytes += ready.bytes;
            taken.push(position);
        }
        if taken.is_empty() {
            return taken;
        }
        self.requests_taken += 1;
        let request = self.requests_taken;
        for &position in &taken {
            self.unready(position);
            if let Some(slot) = self.slot_mut(position) {
                slot.in_flight = true;
                slot.request = request;
            }
        }
        if self.ordering == Ordering::None {
            self.in_flight_requests.insert(request, taken.len());
        }
        taken
    }

    /// The record at `position` was written (`landed`, when known, says
    /// where): it leaves the queue and the next record of its key becomes
    /// ready. Returns it and whether it landed after a newer record of its
    /// key (`Ordering::None` only; in that order by Kinesis' sequence
    /// numbers): how many records this acknowledgement shows landed after a
    /// newer one of their key (itself, or older ones it overtook).
    pub fn acknowledged(
        &mut self,
        position: u64,
        landed: Option<Landed<'_>>,
    ) -> Option<(R, usize)> {
        let ordering = self.ordering;
        let slot = self.take(position)?;
        let (requests_taken, oldest_in_flight) = (self.requests_taken, self.oldest_in_flight());
        let mut reordered = 0;
        if let Some(state) = self.keys.get_mut(&slot.key) {
            if ordering == Ordering::None
                && let Some(landed) = landed
            {
                reordered =
                    state
                        .landed
                        .landed(position, landed.shard, landed.sequence, requests_taken);
            }
            Self::close(state, position, oldest_in_flight);
        }
        self.after_close(slot.key);
        Some((slot.item, reordered))
    }

    /// The ordinal of the oldest request with a record still in flight
    /// (`Ordering::None` only).
    fn oldest_in_flight(&self) -> Option<u64> {
        self.in_flight_requests.keys().next().copied()
    }

    /// The slot's record is no longer in flight in its request.
    fn landed_or_back(&mut self, request: u64) {
        if let Some(n) = self.in_flight_requests.get_mut(&request) {
            *n -= 1;
            if *n == 0 {
                self.in_flight_requests.remove(&request);
            }
        }
    }

    /// The record at `position` leaves the queue unwritten (its stream is
    /// gone, Kinesis refused it, or its delivery failed as a whole).
    pub fn dropped(&mut self, position: u64) -> Option<R> {
        let slot = self.take(position)?;
        let oldest_in_flight = self.oldest_in_flight();
        if let Some(state) = self.keys.get_mut(&slot.key) {
            Self::close(state, position, oldest_in_flight);
        }
        self.after_close(slot.key);
        Some(slot.item)
    }

    /// The record at `position` was not written: it may be taken again, still first of its key.
    pub fn failed(&mut self, position: u64) {
        if let Some(slot) = self.slot_mut(position)
            && slot.in_flight
        {
            slot.in_flight = false;
            let request = slot.request;
            self.landed_or_back(request);
            self.make_ready(position);
        }
    }

    /// Like `failed`, and from now on it is sent in a request of its own.
    pub fn isolate(&mut self, position: u64) {
        if let Some(slot) = self.slot_mut(position) {
            slot.alone = true;
        }
        if let Some(ready) = self.ready.get_mut(&position) {
            ready.alone = true;
        }
        self.failed(position);
    }

    /// Drops every record not in flight for which `doomed` holds; returns
    /// them with their positions, oldest first.
    pub fn drop_queued(&mut self, mut doomed: impl FnMut(&R) -> bool) -> Vec<(u64, R)> {
        let positions: Vec<u64> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let slot = slot.as_ref()?;
                (!slot.in_flight && doomed(&slot.item)).then_some(self.base + i as u64)
            })
            .collect();
        positions
            .into_iter()
            .filter_map(|p| self.dropped(p).map(|item| (p, item)))
            .collect()
    }

    /// The queue's hash of an ordering key.
    pub fn key_hash(&self, ordering_key: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(ordering_key.as_bytes());
        h.finish()
    }

    fn slot(&self, position: u64) -> Option<&Slot<R>> {
        let index = position.checked_sub(self.base)?;
        self.slots.get(index as usize)?.as_ref()
    }

    fn slot_mut(&mut self, position: u64) -> Option<&mut Slot<R>> {
        let index = position.checked_sub(self.base)?;
        self.slots.get_mut(index as usize)?.as_mut()
    }

    fn make_ready(&mut self, position: u64) {
        let Some(ready) = self.slot(position).map(|s| Ready {
            bytes: s.bytes,
            tag: s.tag,
            alone: s.alone,
        }) else {
            return;
        };
        if self.ready.insert(position, ready).is_none() {
            self.ready_bytes += ready.bytes;
        }
    }

    fn unready(&mut self, position: u64) {
        if let Some(ready) = self.ready.remove(&position) {
            self.ready_bytes -= ready.bytes;
        }
    }

    /// Empties the slot at `position` and compacts the front.
    fn take(&mut self, position: u64) -> Option<Slot<R>> {
        let index = position.checked_sub(self.base)? as usize;
        let slot = self.slots.get_mut(index)?.take()?;
        self.len -= 1;
        if slot.in_flight {
            self.landed_or_back(slot.request);
        }
        if let Some(ready) = self.ready.remove(&position) {
            self.ready_bytes -= ready.bytes;
        }
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(slot)
    }

    /// Removes `position` from its key's open records; forgets landings no
    /// later acknowledgement can pair with (`reorders.rs`).
    fn close(state: &mut KeyState, position: u64, oldest_in_flight: Option<u64>) {
        if state.open.front() == Some(&position) {
            state.open.pop_front();
        } else if let Some(i) = state.open.iter().position(|&p| p == position) {
            state.open.remove(i);
        }
        if !state.landed.is_empty() {
            state
                .landed
                .forget(state.open.front().copied(), oldest_in_flight);
        }
    }

    /// After a record of `key` left: its next record becomes ready (per
    /// key), or the key is forgotten.
    fn after_close(&mut self, key: u64) {
        let Some(state) = self.keys.get(&key) else {
            return;
        };
        match state.open.front().copied() {
            None => {
                self.keys.remove(&key);
            }
            Some(head) if self.ordering == Ordering::PerKey => {
                if self.slot(head).is_some_and(|s| !s.in_flight) {
                    self.make_ready(head);
                }
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap as Map, HashSet};

    /// A queue of `keys` (one record each, of `size` bytes); items and tags are their index.
    fn queue(ordering: Ordering, keys: &[&str], size: usize) -> Queue<usize> {
        let mut q = Queue::new(ordering);
        for (i, k) in keys.iter().enumerate() {
            let key = q.key_hash(k);
            q.push_tagged(key, i as u32, size, i);
        }
        q
    }

    fn ack(q: &mut Queue<usize>, position: u64) {
        q.acknowledged(position, None).unwrap();
    }

    #[test]
    fn a_request_skips_over_repeated_keys_to_the_next_key() {
        let mut q = queue(Ordering::PerKey, &["a", "b", "a", "c", "b", "d"], 1);
        // A request used to end at the second "a" (3 records); it now takes
        // the first of each key.
        assert_eq!(q.next_request(500, 5 << 20), [0, 1, 3, 5]);
        assert!(q.next_request(500, 5 << 20).is_empty(), "heads in flight");
        ack(&mut q, 0);
        q.failed(1);
        ack(&mut q, 3);
        ack(&mut q, 5);
        // "b" failed: its first record goes again before its second.
        assert_eq!(q.next_request(500, 5 << 20), [1, 2]);
        ack(&mut q, 1);
        ack(&mut q, 2);
        assert_eq!(q.next_request(500, 5 << 20), [4]);
        ack(&mut q, 4);
        assert!(q.is_empty());
        assert!(q.keys.is_empty() && q.slots.is_empty(), "nothing kept");
    }

    #[test]
    fn limits_of_entries_and_bytes() {
        let keys: Vec<String> = (0..1234).map(|i| format!("k{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut q = queue(Ordering::PerKey, &keys, 10);
        assert_eq!(q.next_request(500, 5 << 20).len(), 500);
        let mut q = queue(Ordering::PerKey, &keys[..10], 1 << 20);
        assert_eq!(q.next_request(500, 5 << 20).len(), 5);
        let mut q = queue(Ordering::PerKey, &["a", "b"], 900);
        assert_eq!(
            q.next_request(500, 500),
            [0],
            "a large first record goes alone"
        );
        let mut q = queue(Ordering::PerKey, &["a", "b"], 1);
        assert_eq!(q.next_request(1, 500), [0]);
    }

    #[test]
    fn records_not_admitted_stay_first_of_their_keys() {
        // Items are their push index; "b" (1, 3) is paced out.
        let mut q = queue(Ordering::PerKey, &["a", "b", "c", "b", "a"], 10);
        let taken = q.next_request_admitted(500, 5 << 20, |tag, _| match tag {
            1 | 3 => Admission::Skip,
            _ => Admission::Take,
        });
        assert_eq!(taken, [0, 2]);
        ack(&mut q, 0);
        assert_eq!(
            q.next_request_admitted(500, 5 << 20, |_, _| Admission::Stop),
            Vec::<u64>::new()
        );
        assert_eq!(
            q.next_request(500, 5 << 20),
            [1, 4],
            "b's first, then a's second"
        );
    }

    #[test]
    fn a_request_is_full_by_entries_or_bytes() {
        let keys: Vec<String> = (0..600).map(|i| format!("k{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut q = queue(Ordering::PerKey, &keys[..499], 10);
        assert!(!q.fills_a_request(500, 5 << 20));
        let key = q.key_hash("one more");
        q.push(key, 10, 499);
        assert!(q.fills_a_request(500, 5 << 20), "500 ready");
        let taken = q.next_request(500, 5 << 20);
        assert!(!q.fills_a_request(500, 5 << 20), "nothing ready");
        assert_eq!(q.ready_bytes, 0);
        for p in taken {
            q.failed(p);
        }
        assert_eq!(q.ready_bytes, 5000, "ready again");
        let q = queue(Ordering::PerKey, &keys[..5], 1 << 20);
        assert!(q.fills_a_request(500, 5 << 20), "5 MiB ready");
        let q = queue(Ordering::PerKey, &["a", "a", "a"], 10);
        assert_eq!(q.ready_bytes, 10, "per key only the head is ready");
    }

    #[test]
    fn an_isolated_record_goes_alone() {
        let mut q = queue(Ordering::PerKey, &["a", "b", "c"], 1);
        let all = q.next_request(500, 5 << 20);
        for p in all {
            q.isolate(p);
        }
        assert_eq!(q.next_request(500, 5 << 20), [0]);
        assert_eq!(q.next_request(500, 5 << 20), [1]);
        ack(&mut q, 0);
        assert_eq!(q.dropped(1), Some(1));
        assert_eq!(q.next_request(500, 5 << 20), [2]);
    }

    #[test]
    fn without_ordering_a_request_takes_every_record() {
        let mut q = queue(Ordering::None, &["a", "a", "a", "b"], 1);
        assert_eq!(q.next_request(500, 5 << 20), [0, 1, 2, 3]);
        // The first "a" fails, the two after it land: both are newer, so the
        // first lands after them when retried.
        q.failed(0);
        let landed = |seq| Landed {
            shard: "s0",
            sequence: seq,
        };
        assert_eq!(q.acknowledged(1, Some(landed("10"))), Some((1, 0)));
        assert_eq!(q.acknowledged(2, Some(landed("11"))), Some((2, 0)));
        assert_eq!(q.acknowledged(3, Some(landed("12"))), Some((3, 0)));
        assert_eq!(q.next_request(500, 5 << 20), [0]);
        assert_eq!(q.acknowledged(0, Some(landed("13"))), Some((0, 1)));
        assert!(
            q.keys.is_empty(),
            "landings forgotten once a key has nothing open"
        );
        // Another shard cannot be compared (the stream was resharded).
        let mut q = queue(Ordering::None, &["a", "a"], 1);
        q.next_request(500, 5 << 20);
        q.acknowledged(1, Some(landed("10")));
        let other = Landed {
            shard: "s1",
            sequence: "20",
        };
        assert_eq!(q.acknowledged(0, Some(other)), Some((0, 0)));
    }

    #[test]
    fn dropping_queued_records_keeps_those_in_flight() {
        let mut q = queue(Ordering::PerKey, &["a", "a", "b"], 1);
        assert_eq!(q.next_request(500, 5 << 20), [0, 2]);
        let dropped = q.drop_queued(|_| true);
        assert_eq!(dropped, [(1, 1)], "only the queued one");
        ack(&mut q, 0);
        q.failed(2);
        assert_eq!(q.next_request(500, 5 << 20), [2]);
        ack(&mut q, 2);
        assert!(q.is_empty());
    }

    /// An `Ordering::None` queue of one 1-byte record per entry of `keys`
    /// (key `k{n}`); items are their key numbers.
    fn unordered_queue(keys: &[u8]) -> Queue<u8> {
        let mut q: Queue<u8> = Queue::new(Ordering::None);
        for &k in keys {
            let hash = q.key_hash(&format!("k{k}"));
            q.push(hash, 1, k);
        }
        q
    }

    proptest! {
        /// Random keys (skewed: few keys often), several lanes feeding one
        /// queue, random entry failures, several requests in flight: every
        /// record is written once, per key in queue order, no key is twice
        /// in a request or in flight, and each request holds every ready key
        /// up to the entry limit (as full as the rule allows).
        #[test]
        fn per_key_order_holds_and_requests_are_full(
            lanes in proptest::collection::vec(proptest::collection::vec(0u8..40, 0..200), 1..5),
            fail_seed in any::<u64>(),
            fail_rate in 0.0f64..0.6,
            max_entries in prop_oneof![Just(500usize), 1usize..20],
            in_flight_max in 1usize..4,
        ) {
            let mut q: Queue<(usize, String)> = Queue::new(Ordering::PerKey);
            let mut rng = fastrand::Rng::with_seed(fail_seed);
            // Lanes are interleaved in random chunks, as batches arrive.
            let mut next = vec![0usize; lanes.len()];
            let mut keys_of: Vec<String> = Vec::new();
            let mut written: Vec<u64> = Vec::new();
            let mut flying: VecDeque<Vec<u64>> = VecDeque::new();
            let total: usize = lanes.iter().map(Vec::len).sum();
            let mut rounds = 0;
            while written.len() < total {
                rounds += 1;
                prop_assert!(rounds < 100_000);
                let lane = rng.usize(..lanes.len());
                let chunk = rng.usize(0..30);
                for _ in 0..chunk {
                    if let Some(&k) = lanes[lane].get(next[lane]) {
                        let key = format!("lane{lane}-k{k}");
                        let hash = q.key_hash(&key);
                        q.push(hash, 3, (lane, key.clone()));
                        keys_of.push(key);
                        next[lane] += 1;
                    }
                }
                if flying.len() < in_flight_max {
                    let request = q.next_request(max_entries, 5 << 20);
                    let keys: HashSet<&str> = request.iter().map(|&p| keys_of[p as usize].as_str()).collect();
                    prop_assert_eq!(keys.len(), request.len(), "a key twice in one request");
                    let flying_keys: HashSet<&str> = flying.iter().flatten().map(|&p| keys_of[p as usize].as_str()).collect();
                    prop_assert!(keys.is_disjoint(&flying_keys), "a key in two requests in flight");
                    let open: HashSet<&str> = (0..keys_of.len() as u64)
                        .filter(|p| q.get(*p).is_some())
                        .map(|p| keys_of[p as usize].as_str())
                        .collect();
                    let ready = open.difference(&flying_keys).count();
                    prop_assert_eq!(request.len(), ready.min(max_entries), "not as full as allowed");
                    if !request.is_empty() {
                        flying.push_back(request);
                    }
                }
                // Answer the oldest (or a random) request in flight.
                if !flying.is_empty() && (flying.len() == in_flight_max || rng.bool()) {
                    let i = rng.usize(..flying.len());
                    let Some(request) = flying.remove(i) else { continue };
                    for p in request {
                        if rng.f64() < fail_rate {
                            q.failed(p);
                        } else {
                            q.acknowledged(p, None).unwrap();
                            written.push(p);
                        }
                    }
                }
            }
            prop_assert!(q.is_empty());
            let mut sorted = written.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..total as u64).collect::<Vec<_>>());
            let mut last: Map<&str, u64> = Map::new();
            for p in written {
                let key = keys_of[p as usize].as_str();
                if let Some(prev) = last.insert(key, p) {
                    prop_assert!(prev < p, "key {} reordered", key);
                }
            }
        }

        /// Without ordering: requests are full whatever the keys, and the
        /// records `acknowledged` reports reordered are exactly those that
        /// land (by sequence number) after a newer record of their key.
        #[test]
        fn unordered_reorders_are_counted_exactly(
            keys in proptest::collection::vec(0u8..5, 1..300),
            fail_seed in any::<u64>(),
            fail_rate in 0.0f64..0.5,
        ) {
            let mut q = unordered_queue(&keys);
            let mut rng = fastrand::Rng::with_seed(fail_seed);
            let mut sequence = 0u64;
            let mut reported = 0usize;
            let mut landed: Vec<(u8, u64)> = Vec::new();
            while !q.is_empty() {
                let request = q.next_request(100, 5 << 20);
                prop_assert_eq!(request.len(), q.len().min(100), "not full");
                for p in request {
                    if rng.f64() < fail_rate {
                        q.failed(p);
                        continue;
                    }
                    sequence += 1;
                    let seq = format!("{sequence:05}");
                    let (k, reordered) = q.acknowledged(p, Some(Landed { shard: "s", sequence: &seq })).unwrap();
                    reported += reordered;
                    landed.push((k, p));
                }
            }
            // In landing order: a record lands after a newer one of its key.
            let mut expected = 0;
            for (i, &(k, p)) in landed.iter().enumerate() {
                if landed[..i].iter().any(|&(k2, p2)| k2 == k && p2 > p) {
                    expected += 1;
                }
            }
            prop_assert_eq!(reported, expected);
        }

        /// Without ordering, with several requests in flight whose answers
        /// come back in any order (Kinesis writes a request when it gets it;
        /// the writer reads the answers as they arrive): still exactly the
        /// records that land after a newer record of their key, whichever
        /// of the two is acknowledged first.
        #[test]
        fn unordered_reorders_are_counted_exactly_when_answers_cross(
            keys in proptest::collection::vec(0u8..4, 1..300),
            seed in any::<u64>(),
            fail_rate in 0.0f64..0.5,
            in_flight_max in 1usize..6,
        ) {
            let mut q = unordered_queue(&keys);
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut sequence = 0u64;
            let mut reported = 0usize;
            // Requests sent, not yet answered: (position, its sequence if written).
            let mut flying: Vec<Vec<(u64, Option<u64>)>> = Vec::new();
            // Every landing: (sequence, key, position).
            let mut landed: Vec<(u64, u8, u64)> = Vec::new();
            let mut rounds = 0;
            while !q.is_empty() {
                rounds += 1;
                prop_assert!(rounds < 100_000, "no progress");
                if flying.len() < in_flight_max && rng.bool() {
                    let request = q.next_request(1 + rng.usize(..20), 5 << 20);
                    if !request.is_empty() {
                        // Written as it arrives, entries in request order.
                        let sent = request
                            .into_iter()
                            .map(|p| {
                                if rng.f64() < fail_rate {
                                    (p, None)
                                } else {
                                    sequence += 1;
                                    (p, Some(sequence))
                                }
                            })
                            .collect();
                        flying.push(sent);
                        continue;
                    }
                }
                if flying.is_empty() {
                    continue;
                }
                let answer = flying.swap_remove(rng.usize(..flying.len()));
                for (p, written) in answer {
                    match written {
                        None => q.failed(p),
                        Some(seq) => {
                            let text = format!("{seq:06}");
                            let (k, reordered) = q
                                .acknowledged(p, Some(Landed { shard: "s", sequence: &text }))
                                .unwrap();
                            reported += reordered;
                            landed.push((seq, k, p));
                        }
                    }
                }
            }
            landed.sort();
            let mut expected = 0;
            for (i, &(_, k, p)) in landed.iter().enumerate() {
                if landed[..i].iter().any(|&(_, k2, p2)| k2 == k && p2 > p) {
                    expected += 1;
                }
            }
            prop_assert_eq!(reported, expected);
        }
    }
}
