//! The process-wide memory budget (`[buffer] max_bytes`): the bytes of
//! records read from every source shard and not yet settled by every
//! pipeline and output. Readers take a [`Charge`] before they read (and size
//! the read to it), the charge travels with the batch, and it is released
//! when the last holder of the batch drops it: after every lane processed
//! it, which is after every output acknowledged its records. So memory
//! follows the configuration, whatever the number of shards, pipelines or
//! outputs, and whatever the backlog.
//!
//! A reader estimates its records' size from what it read before
//! ([`ReadSizer`]); a read that turns out larger than reserved is charged in
//! full at once (it is already in memory) and the next reads wait longer.
//! So the total exceeds `max_bytes` by at most one read's misestimate per
//! reader, and readers wait whenever it is reached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes counted for one record besides its data and keys: the record's
/// struct and its sequence number, and the per-output copies of its struct.
pub const RECORD_OVERHEAD: usize = 256;

pub struct Budget {
    max: usize,
    used: Mutex<usize>,
    freed: tokio::sync::Notify,
    /// Reads that had to wait for room.
    waits: AtomicU64,
}

/// Bytes taken from the budget; given back when dropped.
pub struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    pub fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(Budget {
            max: max_bytes.max(1),
            used: Mutex::new(0),
            freed: tokio::sync::Notify::new(),
            waits: AtomicU64::new(0),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        *self.lock()
    }

    /// Reads that waited for room so far.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until at least `min` bytes are free (at most `max_bytes`), then
    /// takes up to `want` of what is free.
    pub async fn reserve(self: &Arc<Self>, min: usize, want: usize) -> Charge {
        let min = min.clamp(1, self.max);
        let want = want.max(min);
        let mut waited = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut used = self.lock();
                let room = self.max.saturating_sub(*used);
                if room >= min {
                    let bytes = want.min(room);
                    *used += bytes;
                    return Charge {
                        budget: self.clone(),
                        bytes,
                    };
                }
            }
            if !waited {
                waited = true;
                self.waits.fetch_add(1, Ordering::Relaxed);
            }
            freed.await;
        }
    }

    fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut used = self.lock();
        *used = used.saturating_sub(bytes);
        drop(used);
        self.freed.notify_waiters();
    }
}

impl Charge {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Makes the charge `bytes`: what was read is charged in full, even
    /// past the budget (it is in memory already); what was not is given back.
    pub fn resize(&mut self, bytes: usize) {
        if bytes > self.bytes {
            *self.budget.lock() += bytes - self.bytes;
        } else {
            self.budget.release(self.bytes - bytes);
        }
        self.bytes = bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Charge({} bytes)", self.bytes)
    }
}

/// How large a reader's next read may be: from the average size of the
/// records it read so far and the room the budget gives.
#[derive(Debug, Clone)]
pub struct ReadSizer {
    /// Average bytes charged per record (with `RECORD_OVERHEAD`).
    average: usize,
}

/// A GetRecords response takes about twice its records' size while it is
/// parsed (the base64 JSON body, then the records): reserved for the read.
pub const READ_FACTOR: usize = 2;

impl Default for ReadSizer {
    fn default() -> Self {
        // Until something was read: a cautious guess, so that a first read
        // of large records does not overshoot the budget by much.
        ReadSizer { average: 16 << 10 }
    }
}

impl ReadSizer {
    /// Bytes to reserve for a read of at most `limit` records: (least, most).
    pub fn reservation(&self, limit: usize) -> (usize, usize) {
        let per_record = self.average * READ_FACTOR;
        (per_record, per_record.saturating_mul(limit.max(1)))
    }

    /// The record limit of a read for which `reserved` bytes were taken.
    pub fn limit(&self, reserved: usize, most: usize) -> usize {
        (reserved / (self.average * READ_FACTOR)).clamp(1, most.max(1))
    }

    /// A read returned `records` records charged `bytes` in all.
    pub fn observe(&mut self, records: usize, bytes: usize) {
        if let Some(now) = bytes.checked_div(records) {
            // Follow changes quickly, but not one odd batch entirely.
            self.average = ((self.average + 3 * now) / 4).max(RECORD_OVERHEAD);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_reservation_waits_for_room_and_takes_what_is_free() {
        let budget = Budget::new(1000);
        let a = budget.reserve(100, 700).await;
        assert_eq!(a.bytes(), 700);
        let b = budget.reserve(100, 700).await;
        assert_eq!(b.bytes(), 300, "only what is free");
        assert_eq!(budget.used(), 1000);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(200, 200).await.bytes() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no room: it waits");
        drop(a);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(got.unwrap().unwrap(), 200);
        assert_eq!(budget.waits(), 1);
        drop(b);
        assert_eq!(budget.used(), 0, "all given back");
    }

    #[tokio::test]
    async fn a_read_larger_than_reserved_is_charged_in_full() {
        let budget = Budget::new(1000);
        let mut charge = budget.reserve(10, 100).await;
        charge.resize(1500);
        assert_eq!(budget.used(), 1500, "over the budget: it is in memory");
        charge.resize(20);
        assert_eq!(budget.used(), 20);
        drop(charge);
        // `min` is clamped to the budget, so a read of huge records waits
        // only until the budget is empty, not forever.
        let big = tokio::time::timeout(Duration::from_secs(5), budget.reserve(5000, 5000)).await;
        assert_eq!(big.unwrap().bytes(), 1000);
    }

    #[test]
    fn reads_are_sized_to_the_room_by_the_records_seen() {
        let mut sizer = ReadSizer::default();
        let (least, most) = sizer.reservation(10_000);
        assert_eq!(least, 32 << 10);
        assert_eq!(most, 10_000 * (32 << 10));
        for _ in 0..20 {
            sizer.observe(1000, 1000 * 1300);
        }
        assert!((1300..1400).contains(&sizer.average), "{sizer:?}");
        assert_eq!(sizer.limit(26_000 * 100, 10_000), 1000);
        assert_eq!(sizer.limit(10, 10_000), 1, "always at least one record");
        assert_eq!(
            sizer.limit(usize::MAX, 500),
            500,
            "at most the configured limit"
        );
    }
}
