//! Counting reorders of an output with `ordering = "none"`: the records of
//! one key that landed (by Kinesis' sequence numbers, within a shard) after a
//! newer record of that key. One [`Landings`] per key, kept by the queue
//! (`request.rs`) beside the key's open records. Pure, no I/O.
//!
//! A record r is reordered when some newer record n of its key has a smaller
//! sequence number in the same shard. Answers can come back in any order
//! (several requests in flight), so the pair is found when the later of the
//! two acknowledgements arrives:
//! - r acknowledged after n: n's landing is here; r is counted at once;
//! - n acknowledged after r: r's landing is here; r is counted then (once,
//!   however many newer records overtook it).
//!
//! What is kept: a landing can still pair with a future acknowledgement of an
//! open record p only if p is older (first case: any open record older than
//! it), or p is newer and was in flight when the landing was acknowledged
//! (second case: a record sent later lands later). So a landing older than
//! every open record is forgotten once every request taken before its
//! acknowledgement has been answered; all are forgotten when the key has no
//! open record. Memory: at most the records acknowledged while the oldest
//! request in flight was out, plus those newer than the key's oldest open one.

use crate::record::compare_sequence;
use std::collections::BTreeMap;

/// Where one acknowledged record landed.
struct Landing {
    shard: String,
    sequence: String,
    /// Requests taken from the queue before it was acknowledged (ordinal).
    horizon: u64,
    /// Already counted as reordered.
    counted: bool,
}

/// The landings of one key's acknowledged records, by queue position.
#[derive(Default)]
pub struct Landings {
    by_position: BTreeMap<u64, Landing>,
}

impl Landings {
    /// The record at `position` landed at `sequence` in `shard`, with
    /// `requests_taken` requests taken so far; returns how many records this
    /// shows reordered (itself, and older ones it overtook not counted yet).
    pub fn landed(
        &mut self,
        position: u64,
        shard: &str,
        sequence: &str,
        requests_taken: u64,
    ) -> usize {
        let overtaken = self
            .by_position
            .range(position + 1..)
            .any(|(_, n)| n.shard == shard && compare_sequence(&n.sequence, sequence).is_lt());
        let mut found = usize::from(overtaken);
        for (_, older) in self.by_position.range_mut(..position) {
            if !older.counted
                && older.shard == shard
                && compare_sequence(&older.sequence, sequence).is_gt()
            {
                older.counted = true;
                found += 1;
            }
        }
        self.by_position.insert(
            position,
            Landing {
                shard: shard.to_string(),
                sequence: sequence.to_string(),
                horizon: requests_taken,
                counted: overtaken,
            },
        );
        found
    }

    /// Forgets what no future acknowledgement can pair with: with the key's
    /// oldest open record at `oldest_open` (None: the key has none) and the
    /// oldest request still in flight at `oldest_in_flight` (its ordinal;
    /// None: none is).
    pub fn forget(&mut self, oldest_open: Option<u64>, oldest_in_flight: Option<u64>) {
        let Some(oldest_open) = oldest_open else {
            self.by_position.clear();
            return;
        };
        self.by_position.retain(|&position, l| {
            position >= oldest_open || oldest_in_flight.is_some_and(|r| r <= l.horizon)
        });
    }

    pub fn is_empty(&self) -> bool {
        self.by_position.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_counted_whichever_of_the_pair_is_acknowledged_first() {
        // 0 is older than 1; 1 landed first (seq 10), 0 after (seq 11).
        let mut newer_first = Landings::default();
        assert_eq!(newer_first.landed(1, "s", "10", 2), 0);
        assert_eq!(newer_first.landed(0, "s", "11", 2), 1);
        let mut older_first = Landings::default();
        assert_eq!(older_first.landed(0, "s", "11", 2), 0);
        assert_eq!(older_first.landed(1, "s", "10", 2), 1);
        // Overtaken twice, counted once.
        assert_eq!(older_first.landed(2, "s", "09", 2), 1);
    }

    #[test]
    fn other_shards_do_not_compare() {
        let mut l = Landings::default();
        assert_eq!(l.landed(1, "a", "10", 1), 0);
        assert_eq!(l.landed(0, "b", "11", 1), 0);
    }

    #[test]
    fn old_landings_stay_while_a_request_taken_before_them_is_out() {
        let mut l = Landings::default();
        l.landed(0, "s", "11", 3);
        // Oldest open is 1; request 3 (taken before) is still in flight.
        l.forget(Some(1), Some(3));
        assert_eq!(l.landed(1, "s", "10", 3), 1, "kept, so the pair is found");
        l.forget(Some(5), Some(4));
        assert!(l.is_empty(), "nothing in flight from before them");
        l.landed(6, "s", "20", 5);
        l.forget(None, Some(1));
        assert!(l.is_empty(), "no open record: nothing to pair with");
    }
}
