//! How many PutRecords requests one output may have in flight at once:
//! additive increase, multiplicative decrease, like TCP's congestion window.
//! Every answered request with no throttled entry grows the window by one
//! (up to the output's `max_requests_in_flight`); a request throttled as a
//! whole, or with any entry failed by ProvisionedThroughputExceeded, halves
//! it (down to 1), so a throttled output shard is not hammered; a request
//! that failed as a whole (5xx, timeout) halves it too, so an unreachable
//! endpoint gets one request at a time. One window per output, shared by
//! every lane writing to it (it estimates the output's capacity); exported
//! as `distributary_output_window`.
//!
//! Several requests in flight never break per-key order with
//! `ordering = "per_key"`: a key is in flight in at most one of them
//! (`request.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct Window {
    size: AtomicUsize,
    max: AtomicUsize,
}

impl Window {
    /// A window starting at one request, growing up to `max` (at least 1).
    pub fn new(max: usize) -> Self {
        Window {
            size: AtomicUsize::new(1),
            max: AtomicUsize::new(max.max(1)),
        }
    }

    /// Changes the most it may grow to (at least 1).
    pub fn set_max(&self, max: usize) {
        let max = max.max(1);
        self.max.store(max, Ordering::Relaxed);
        let _ = self
            .size
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                (s > max).then_some(max)
            });
    }

    /// Requests that may be in flight now.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// A request was answered and nothing in it was throttled.
    pub fn succeeded(&self) {
        let max = self.max();
        let _ = self
            .size
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                (s < max).then_some(s + 1)
            });
    }

    /// A request (or some of its entries) was throttled.
    pub fn throttled(&self) {
        let _ = self
            .size
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((s / 2).max(1))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_one_and_halves_on_throttling() {
        let w = Window::new(8);
        assert_eq!(w.size(), 1);
        for _ in 0..20 {
            w.succeeded();
        }
        assert_eq!(w.size(), 8, "capped");
        w.throttled();
        assert_eq!(w.size(), 4);
        w.throttled();
        w.throttled();
        w.throttled();
        assert_eq!(w.size(), 1, "never below one");
        w.succeeded();
        assert_eq!(w.size(), 2);
        assert_eq!(Window::new(0).max(), 1);
    }
}
