//! Which source shards this instance may read, and the signal that takes one
//! away: the seam between the coordinator (`source/coordinator.rs`) and the
//! checkpoint store. With the file store one process owns every shard
//! (`OwnAll`); with the DynamoDB store a shard is read only while its lease is
//! held (`lease/`).
//!
//! A shard task holds a `Hold` for as long as it runs. Its state moves from
//! `Held` to `Handoff` (stop at a batch boundary: finish what is in flight,
//! then the final positions are written and the lease passes to its taker) or
//! to `Lost` (stop at once, write nothing more: another instance may own the
//! shard now). `is_valid` is the self-fencing check, on the monotonic clock:
//! a lease not renewed for `failover_ms / 2` is not valid, whatever the state
//! says yet.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    Held,
    /// Another instance takes the shard by handoff: stop at a batch boundary.
    Handoff,
    /// The lease is gone (or could not be renewed in time): stop at once.
    Lost,
}

/// How a shard task ended, as the store needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnd {
    /// Read to its end and acknowledged by every running pipeline.
    Finished,
    /// Stopped (shutdown, handoff, lost lease, or every pipeline halted).
    Stopped,
}

/// One shard task's right to read and write its shard.
#[derive(Clone)]
pub struct Hold {
    state: watch::Receiver<HoldState>,
    /// Milliseconds since `epoch` until which the lease is valid (u64::MAX: forever).
    valid_until: Arc<AtomicU64>,
    epoch: Instant,
}

impl Hold {
    /// A hold that never ends (the file store owns every shard).
    pub fn forever() -> Hold {
        let (tx, rx) = watch::channel(HoldState::Held);
        // The sender is dropped: the state stays Held.
        drop(tx);
        Hold {
            state: rx,
            valid_until: Arc::new(AtomicU64::new(u64::MAX)),
            epoch: Instant::now(),
        }
    }

    /// A hold driven by `state`, valid until `valid_until` ms after `epoch`.
    pub fn new(
        state: watch::Receiver<HoldState>,
        valid_until: Arc<AtomicU64>,
        epoch: Instant,
    ) -> Hold {
        Hold {
            state,
            valid_until,
            epoch,
        }
    }

    /// A hold that never ends (the file store's): nothing to check.
    pub fn is_forever(&self) -> bool {
        self.valid_until.load(Ordering::Acquire) == u64::MAX
    }

    pub fn state(&self) -> HoldState {
        *self.state.borrow()
    }

    /// Whether the shard may still be read and written now.
    pub fn is_valid(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.state() != HoldState::Lost && now < self.valid_until.load(Ordering::Acquire)
    }

    /// Resolves when the state leaves `Held` (never, for `forever`).
    pub async fn released(&self) -> HoldState {
        let mut rx = self.state.clone();
        let state = rx.wait_for(|s| *s != HoldState::Held).await.map(|s| *s);
        match state {
            Ok(state) => state,
            Err(_) => std::future::pending().await,
        }
    }

    /// Resolves when the lease is lost (never, for `forever`).
    pub async fn lost(&self) {
        let mut rx = self.state.clone();
        if rx.wait_for(|s| *s == HoldState::Lost).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What the coordinator asks of the store about shards.
pub trait ShardOwnership: Send + Sync {
    /// The shards of `stream` as last listed (the lease store creates their leases).
    fn listed(&self, stream: &str, shards: &[crate::kinesis::ShardInfo]);
    /// A hold on `shard` if this instance may start reading it now.
    fn start(&self, stream: &str, shard: &str) -> Option<Hold>;
    /// The shard task started by `start` ended; its positions are in the
    /// checkpoint table (the lease store writes them, and lets the lease go
    /// on handoff or when the shard is finished).
    fn ended(&self, stream: &str, shard: &str, end: TaskEnd);
    /// Changes when which shards this instance may start has changed.
    fn subscribe(&self) -> watch::Receiver<u64>;
}

/// The file store: this process owns every shard.
pub struct OwnAll {
    never: watch::Sender<u64>,
}

impl Default for OwnAll {
    fn default() -> Self {
        OwnAll {
            never: watch::channel(0).0,
        }
    }
}

impl ShardOwnership for OwnAll {
    fn listed(&self, _: &str, _: &[crate::kinesis::ShardInfo]) {}
    fn start(&self, _: &str, _: &str) -> Option<Hold> {
        Some(Hold::forever())
    }
    fn ended(&self, _: &str, _: &str, _: TaskEnd) {}
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.never.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_hold_is_invalid_past_its_deadline_or_once_lost() {
        let (tx, rx) = watch::channel(HoldState::Held);
        let epoch = Instant::now();
        let until = Arc::new(AtomicU64::new(60_000));
        let hold = Hold::new(rx, until.clone(), epoch);
        assert!(hold.is_valid());
        until.store(0, Ordering::Release);
        assert!(!hold.is_valid(), "past the renewal margin");
        until.store(60_000, Ordering::Release);
        tx.send_replace(HoldState::Lost);
        assert!(!hold.is_valid());
        tokio::time::timeout(Duration::from_secs(1), hold.lost())
            .await
            .expect("lost resolves");
        let forever = Hold::forever();
        assert!(forever.is_valid());
        let quiet = tokio::time::timeout(Duration::from_millis(50), forever.released()).await;
        assert!(quiet.is_err(), "a forever hold is never released");
    }
}
