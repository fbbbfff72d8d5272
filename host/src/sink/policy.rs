//! The retry policy of one output: how long failed entries wait before they
//! are sent again, when to say so loudly, and how answers move the window of
//! requests in flight (`window.rs`). Shared by every lane writing to the
//! output, so the backoff reflects the output's state, not one batch's.
//!
//! - An answered request with no throttled entry grows the window; one
//!   whose entries all succeeded also resets the backoff.
//! - A request with failed entries keeps them out of the next requests for a
//!   jittered backoff (reset first when some entries were written: progress
//!   keeps the wait short; only requests that write nothing escalate it
//!   towards the cap); a throttled entry halves the window instead.
//! - A request that failed as a whole (5xx, timeout, connection loss) waits
//!   the next backoff holding its place in the window, and halves the window.
//! - A request refused for a reason about the output or the caller rather
//!   than the records (access denied, an unknown, expired or revoked
//!   credential, a bad signature) stalls the output: it is sent again after
//!   a backoff of its own that grows to about a minute (`REFUSAL_CAP`), and
//!   the output resumes by itself once the cause is fixed (SPEC §8).
//! - Failures are told at warning level at most once per `WARN_INTERVAL`
//!   per output, with the count since the last warning (`log_limit.rs`), so a
//!   failure storm does not flood the log.

use super::window::Window;
use crate::backoff::Backoff;
use crate::log_limit::WarnEvery;
use std::time::Duration;

/// The longest wait between two attempts of a refused request.
pub const REFUSAL_CAP: Duration = Duration::from_secs(60);

/// Whether a failure text (an entry's error code, or a whole request's
/// error) is throttling.
pub fn is_throttling(error: &str) -> bool {
    error.contains("ProvisionedThroughputExceeded")
        || error.contains("LimitExceeded")
        || error.contains("Throttl")
        || error.contains("SlowDown")
}

/// How long to wait before sending failed entries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub delay: Duration,
    /// Consecutive failing rounds so far.
    pub rounds: u32,
    /// Some(failures since the last warning, this one included) when a
    /// warning is due (at most one per interval); None: log at debug level.
    pub warn: Option<u64>,
}

#[derive(Debug)]
pub struct RetryPolicy {
    backoff: Backoff,
    /// For requests refused as a whole (`refused`); reset by any answer.
    refusals: Backoff,
    /// Consecutive answered requests with failed entries.
    failing_rounds: u32,
    warnings: WarnEvery,
}

impl RetryPolicy {
    pub fn new(backoff: Backoff) -> Self {
        RetryPolicy {
            refusals: backoff.with_cap(REFUSAL_CAP),
            backoff,
            failing_rounds: 0,
            warnings: WarnEvery::default(),
        }
    }

    /// An answered request wrote `written` entries and failed `failed`
    /// (`throttled`: some by throttling). Returns the wait of the failed ones.
    pub fn answered(
        &mut self,
        window: &Window,
        written: usize,
        failed: usize,
        throttled: bool,
    ) -> Option<Wait> {
        self.refusals.reset();
        if throttled {
            window.throttled();
        } else {
            window.succeeded();
        }
        if failed == 0 {
            self.backoff.reset();
            self.failing_rounds = 0;
            return None;
        }
        if written > 0 {
            self.backoff.reset();
        }
        self.failing_rounds += 1;
        Some(Wait {
            delay: self.backoff.next_delay(),
            rounds: self.failing_rounds,
            warn: self.warnings.event(),
        })
    }

    /// A request was refused as a whole (access, credentials) and is sent
    /// again after the wait, which grows to `REFUSAL_CAP`.
    pub fn refused(&mut self, window: &Window) -> Wait {
        window.throttled();
        let delay = self.refusals.next_delay();
        Wait {
            delay,
            rounds: self.refusals.attempts(),
            warn: self.warnings.event(),
        }
    }

    /// A request failed as a whole and is sent again after the wait.
    pub fn call_failed(&mut self, window: &Window) -> Wait {
        window.throttled();
        let delay = self.backoff.next_delay();
        Wait {
            delay,
            rounds: self.backoff.attempts(),
            warn: self.warnings.event(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(800),
        ))
    }

    #[test]
    fn progress_keeps_the_wait_short_and_no_progress_escalates() {
        let window = Window::new(8);
        let mut p = policy();
        for _ in 0..5 {
            let wait = p.answered(&window, 10, 1, false).unwrap();
            assert!(wait.delay <= Duration::from_millis(100), "{wait:?}");
        }
        // Nothing written: the ceiling doubles up to the cap.
        let mut ceilings_reached = false;
        for _ in 0..30 {
            let wait = p.answered(&window, 0, 5, false).unwrap();
            assert!(wait.delay <= Duration::from_millis(800));
            ceilings_reached |= wait.delay > Duration::from_millis(100);
        }
        assert!(
            ceilings_reached,
            "waits grow past the base without progress"
        );
        assert_eq!(p.answered(&window, 5, 0, false), None);
        assert!(p.answered(&window, 0, 1, false).unwrap().delay <= Duration::from_millis(100));
    }

    #[test]
    fn a_failure_storm_warns_once_per_interval_whatever_fails() {
        let window = Window::new(8);
        let mut p = policy();
        let warnings: Vec<Option<u64>> = (0..20)
            .map(|i| {
                if i % 2 == 0 {
                    p.answered(&window, 1, 1, false).unwrap().warn
                } else {
                    p.call_failed(&window).warn
                }
            })
            .collect();
        assert_eq!(warnings[0], Some(1), "the first failure is told at once");
        assert!(
            warnings[1..].iter().all(Option::is_none),
            "then nothing within the interval: {warnings:?}"
        );
    }

    #[test]
    fn the_window_grows_on_success_and_halves_on_throttling_or_failed_calls() {
        let window = Window::new(8);
        let mut p = policy();
        for _ in 0..10 {
            p.answered(&window, 500, 0, false);
        }
        assert_eq!(window.size(), 8);
        p.answered(&window, 400, 100, true);
        assert_eq!(window.size(), 4, "throttled entries halve it");
        p.answered(&window, 400, 100, false);
        assert_eq!(
            window.size(),
            5,
            "other entry failures (InternalFailure) are not congestion"
        );
        p.call_failed(&window);
        assert_eq!(window.size(), 2);
        p.call_failed(&window);
        assert_eq!(window.size(), 1, "never below one");
    }

    #[test]
    fn refusals_back_off_towards_a_minute_and_an_answer_resets_them() {
        let window = Window::new(8);
        let mut p = RetryPolicy::new(Backoff::new(Duration::from_secs(1), Duration::from_secs(5)));
        let ceilings: Vec<Duration> = (0..12).map(|_| p.refused(&window).delay).collect();
        assert!(ceilings.iter().all(|d| *d <= REFUSAL_CAP));
        assert!(
            ceilings[6..].iter().any(|d| *d > Duration::from_secs(5)),
            "refusals wait past the entry backoff's cap: {ceilings:?}"
        );
        p.answered(&window, 1, 0, false);
        assert!(
            p.refused(&window).delay <= Duration::from_secs(1),
            "reset by an answer"
        );
    }

    #[test]
    fn throttling_is_recognised() {
        assert!(is_throttling(
            "ProvisionedThroughputExceededException: Rate exceeded for shard"
        ));
        assert!(is_throttling("LimitExceededException: too many"));
        assert!(!is_throttling("InternalFailure: oops"));
    }
}
