//! When each shard may next be read by this process: one GetRecords
//! schedule per shard, shared by every reader of that shard here (the
//! shared reader and any catch-up reader of a detached lane, `lane.rs`), so
//! that together they stay within the shard's read quota (5 calls/s, 2 MiB/s)
//! however many pipelines read it. Each call books a slot `MIN_CALL_GAP`
//! after the one before; a call that read many bytes pushes the next slot
//! back until those bytes fit the byte rate (`reader.rs`, `gap_after`).
//! Other processes reading the shard are not counted: one instance owns a
//! shard at a time (leases), and other consumers get the rest of the quota
//! only if they are polite too (ProvisionedThroughputExceeded is backed off).
//!
//! The decision is pure (`Slots`); `reserve` and `push_back` use the
//! process-wide instance.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The least time between two GetRecords calls on one shard.
pub const MIN_CALL_GAP: Duration = Duration::from_millis(200);

/// Shards not read for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The next free slot of each shard (by `stream/shard`).
#[derive(Debug, Default)]
pub struct Slots {
    next: HashMap<String, Instant>,
}

impl Slots {
    /// Books the first slot at or after `earliest` for `shard`: the call may
    /// be made then; the next one not before `MIN_CALL_GAP` after it.
    pub fn reserve(&mut self, shard: &str, earliest: Instant) -> Instant {
        if self.next.len() > 1024 {
            self.next
                .retain(|_, at| earliest.saturating_duration_since(*at) < FORGET_AFTER);
        }
        let at = match self.next.get(shard) {
            Some(&free) => free.max(earliest),
            None => earliest,
        };
        self.next.insert(shard.to_string(), at + MIN_CALL_GAP);
        at
    }

    /// No call on `shard` before `until` (the bytes of a call just answered).
    pub fn push_back(&mut self, shard: &str, until: Instant) {
        let next = self.next.entry(shard.to_string()).or_insert(until);
        *next = (*next).max(until);
    }
}

fn slots() -> &'static Mutex<Slots> {
    static SLOTS: OnceLock<Mutex<Slots>> = OnceLock::new();
    SLOTS.get_or_init(Default::default)
}

/// `Slots::reserve` on the process's schedule.
pub fn reserve(shard: &str, earliest: Instant) -> Instant {
    match slots().lock() {
        Ok(mut s) => s.reserve(shard, earliest),
        Err(poisoned) => poisoned.into_inner().reserve(shard, earliest),
    }
}

/// `Slots::push_back` on the process's schedule.
pub fn push_back(shard: &str, until: Instant) {
    match slots().lock() {
        Ok(mut s) => s.push_back(shard, until),
        Err(poisoned) => poisoned.into_inner().push_back(shard, until),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_of_one_shard_share_its_five_calls_per_second() {
        let mut slots = Slots::default();
        let t0 = Instant::now();
        // Three readers all wanting to call now get slots 200 ms apart.
        let got: Vec<Instant> = (0..3).map(|_| slots.reserve("s/0", t0)).collect();
        assert_eq!(got, [t0, t0 + MIN_CALL_GAP, t0 + MIN_CALL_GAP * 2]);
        // Another shard is not held back.
        assert_eq!(slots.reserve("s/1", t0), t0);
        // A reader asking later than the next free slot goes when it asks.
        let late = t0 + Duration::from_secs(5);
        assert_eq!(slots.reserve("s/0", late), late);
    }

    #[test]
    fn a_large_read_pushes_the_next_call_back() {
        let mut slots = Slots::default();
        let t0 = Instant::now();
        slots.reserve("s/0", t0);
        slots.push_back("s/0", t0 + Duration::from_secs(5));
        assert_eq!(slots.reserve("s/0", t0), t0 + Duration::from_secs(5));
        slots.push_back("s/0", t0);
        assert_eq!(
            slots.reserve("s/0", t0),
            t0 + Duration::from_secs(5) + MIN_CALL_GAP,
            "never pulled forward"
        );
    }
}
