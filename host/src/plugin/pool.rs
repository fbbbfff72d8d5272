//! The instance pool of one plugin version: instances are reused from batch
//! to batch (instantiating costs far more than a call), at most `max_live`
//! exist at once (a call waits for one when all are busy: more concurrent
//! calls than cores gain nothing and each instance holds its own linear
//! memory), and idle ones are dropped after `IDLE_TIMEOUT`, so a pipeline
//! that went quiet gives its memory back. Called from blocking threads.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an unused instance is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Pool<T> {
    state: Mutex<State<T>>,
    returned: Condvar,
    max_live: usize,
    idle_timeout: Duration,
}

struct State<T> {
    /// Unused instances, most recently returned last.
    idle: Vec<(T, Instant)>,
    /// Instances that exist: idle, in use, or being made.
    live: usize,
}

/// What `take` gives: a pooled instance, or leave to make a new one.
pub enum Taken<T> {
    Pooled(T),
    /// The caller makes one, then `give_back`s it, or calls `discard` if it
    /// could not be made or must not be reused.
    Make,
}

impl<T> Pool<T> {
    pub fn new(max_live: usize) -> Self {
        Pool {
            state: Mutex::new(State {
                idle: Vec::new(),
                live: 0,
            }),
            returned: Condvar::new(),
            max_live: max_live.max(1),
            idle_timeout: IDLE_TIMEOUT,
        }
    }

    /// At most twice the cores, at least 2.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Pool::new((2 * cores).max(2))
    }

    #[cfg(test)]
    fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle instance, or leave to make one; waits while `max_live` are in use.
    pub fn take(&self) -> Taken<T> {
        let mut state = self.lock();
        loop {
            self.expire(&mut state);
            if let Some((instance, _)) = state.idle.pop() {
                return Taken::Pooled(instance);
            }
            if state.live < self.max_live {
                state.live += 1;
                return Taken::Make;
            }
            state = self.returned.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Puts an instance back for reuse.
    pub fn give_back(&self, instance: T) {
        let mut state = self.lock();
        state.idle.push((instance, Instant::now()));
        self.expire(&mut state);
        drop(state);
        self.returned.notify_one();
    }

    /// An instance taken or being made is gone (trapped, or not made).
    pub fn discard(&self) {
        let mut state = self.lock();
        state.live = state.live.saturating_sub(1);
        drop(state);
        self.returned.notify_one();
    }

    /// Instances that exist now, and of those, idle.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.live, state.idle.len())
    }

    /// Drops idle instances unused for longer than the idle timeout (the
    /// oldest are first in `idle`), keeping the most recent one.
    fn expire(&self, state: &mut State<T>) {
        let keep_from = state
            .idle
            .iter()
            .position(|(_, at)| at.elapsed() < self.idle_timeout)
            .unwrap_or(state.idle.len())
            .min(state.idle.len().saturating_sub(1));
        if keep_from > 0 {
            state.idle.drain(..keep_from);
            state.live = state.live.saturating_sub(keep_from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn make(pool: &Pool<u32>, n: u32) -> u32 {
        match pool.take() {
            Taken::Pooled(i) => i,
            Taken::Make => n,
        }
    }

    #[test]
    fn instances_are_reused_and_at_most_max_live_exist() {
        let pool = Arc::new(Pool::new(2));
        let a = make(&pool, 1);
        let b = make(&pool, 2);
        assert_eq!(pool.counts(), (2, 0));
        let waiter = std::thread::spawn({
            let pool = pool.clone();
            move || make(&pool, 3)
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a third waits");
        pool.give_back(a);
        assert_eq!(waiter.join().unwrap(), 1, "gets the returned one");
        pool.discard(); // b trapped
        let _ = b;
        assert_eq!(pool.counts(), (1, 0));
        assert_eq!(make(&pool, 4), 4, "room for a new one");
    }

    #[test]
    fn idle_instances_are_dropped_after_the_timeout_but_one() {
        let pool = Pool::new(4).with_idle_timeout(Duration::from_millis(20));
        let (a, b, c) = (make(&pool, 1), make(&pool, 2), make(&pool, 3));
        pool.give_back(a);
        pool.give_back(b);
        pool.give_back(c);
        assert_eq!(pool.counts(), (3, 3));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(make(&pool, 9), 3, "the most recent one is kept");
        assert_eq!(pool.counts(), (1, 0), "the others were dropped");
    }
}
