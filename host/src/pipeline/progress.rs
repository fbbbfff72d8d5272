//! Which records of one batch are settled (acknowledged by every output they
//! were routed to, dead-lettered, or deliberately skipped), so that a lane can
//! checkpoint the settled prefix while the rest of the batch is still being
//! written: a crash then replays what was in flight, not the whole batch.
//!
//! Each record starts held once by the pipeline (`new`); every output it is
//! routed to adds a hold (`owe`) that the writer releases when the record is
//! acknowledged (`settle`), and the pipeline releases its own hold once it has
//! decided the record's fate (routed, or its failure handled). A record is
//! settled when nothing holds it. Records are settled in any order; only the
//! prefix counts.
//!
//! A batch read under a lease carries its `Hold` (`fenced_by`): the output
//! writers ask `writable` before they put a record of it in a request, so
//! nothing more of a shard is written once its lease is lost or went
//! unrenewed past the self-fencing margin, even records queued before.

use crate::ownership::Hold;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct BatchProgress {
    holds: Vec<AtomicU32>,
    changed: tokio::sync::Notify,
    /// The shard's lease, when it can end (not the file store's).
    fence: Option<Hold>,
}

impl BatchProgress {
    /// A batch of `len` records, each held once by the pipeline.
    pub fn new(len: usize) -> Self {
        BatchProgress {
            holds: (0..len).map(|_| AtomicU32::new(1)).collect(),
            changed: tokio::sync::Notify::new(),
            fence: None,
        }
    }

    /// Records of this batch may be written only while `hold` is valid.
    pub fn fenced_by(mut self, hold: &Hold) -> Self {
        self.fence = (!hold.is_forever()).then(|| hold.clone());
        self
    }

    /// Whether records of this batch may still be written: false once the
    /// shard's lease is lost or past its validity (self-fencing).
    pub fn writable(&self) -> bool {
        self.fence.as_ref().is_none_or(Hold::is_valid)
    }

    pub fn len(&self) -> usize {
        self.holds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    /// One more output must acknowledge record `index`.
    pub fn owe(&self, index: u32) {
        if let Some(h) = self.holds.get(index as usize) {
            h.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// One hold on record `index` is released.
    pub fn settle(&self, index: u32) {
        let Some(h) = self.holds.get(index as usize) else {
            return;
        };
        let before = h.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if before == Ok(1) {
            self.changed.notify_one();
        }
    }

    /// The number of settled records from the start, scanning from `from`
    /// (a prefix length found before: the prefix only grows).
    pub fn prefix(&self, from: usize) -> usize {
        let mut n = from.min(self.holds.len());
        while self
            .holds
            .get(n)
            .is_some_and(|h| h.load(Ordering::Acquire) == 0)
        {
            n += 1;
        }
        n
    }

    /// Returns when a record was settled since the last call (or now, if one was).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_grows_only_over_records_nothing_holds() {
        let p = BatchProgress::new(4);
        p.owe(0);
        p.owe(1);
        p.owe(1);
        for i in 0..4 {
            p.settle(i); // the pipeline's own hold
        }
        assert_eq!(p.prefix(0), 0, "record 0 still owed by an output");
        p.settle(1);
        p.settle(0);
        assert_eq!(p.prefix(0), 1, "record 1 still owed by a second output");
        p.settle(1);
        assert_eq!(p.prefix(1), 4);
        p.settle(3); // an extra release is ignored, not wrapped
        p.settle(9);
        assert_eq!(p.prefix(0), 4);
    }

    #[tokio::test]
    async fn a_settled_record_wakes_the_waiter() {
        let p = std::sync::Arc::new(BatchProgress::new(1));
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.changed().await }
        });
        p.settle(0);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
