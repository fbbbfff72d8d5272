//! Bounded log volume under failure storms: a warning that may repeat for
//! every request or batch (an output that keeps failing, a plugin failing
//! every batch) is logged at most once per interval, with the number of
//! events since the last one, instead of once per event. Every event still
//! counts in `/metrics`; the detail of each is at debug level.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a repeating warning may be logged.
pub const WARN_INTERVAL: Duration = Duration::from_secs(5);

/// At most one warning per interval; counts the events it kept quiet.
#[derive(Debug)]
pub struct WarnEvery {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Default for WarnEvery {
    fn default() -> Self {
        WarnEvery::new(WARN_INTERVAL)
    }
}

impl WarnEvery {
    pub fn new(interval: Duration) -> Self {
        WarnEvery {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// One more event at `now`: Some(events since the last warning, this
    /// one included) when a warning is due, None to stay quiet.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (last, quiet) = &mut *state;
        *quiet += 1;
        match last {
            Some(at) if now.saturating_duration_since(*at) < self.interval => None,
            _ => {
                *last = Some(now);
                Some(std::mem::take(quiet))
            }
        }
    }

    /// `admit` now.
    pub fn event(&self) -> Option<u64> {
        self.admit(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_carrying_the_count_of_events() {
        let warn = WarnEvery::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            warn.admit(at(0)),
            Some(1),
            "the first event is told at once"
        );
        let quiet: Vec<Option<u64>> = (1..=99).map(|i| warn.admit(at(i * 40))).collect();
        assert!(quiet.iter().all(Option::is_none), "{quiet:?}");
        assert_eq!(warn.admit(at(5000)), Some(100), "then once, with the count");
        assert_eq!(warn.admit(at(5001)), None);
        assert_eq!(warn.admit(at(20_000)), Some(2));
    }
}
