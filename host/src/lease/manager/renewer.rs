//! The renewer: every held lease renewed on its own schedule, the final
//! write of each lease whose shard task ended, and the handoffs to this
//! instance followed until they complete.
//!
//! Each lease has its own due time (`Held::due`): `failover / 4` after the
//! send time of its last successful renewal, 100 ms after a failed call, at
//! once after a refusal that keeps it (handoff, or its own renewal landed).
//! Each call runs as a task of its own, and a lease never has two calls in
//! flight (a renewal and a final write conditional on the same counter
//! would refuse each other). So one slow or unanswered call (given up after
//! `failover / 12`) delays no other lease: a lease's validity ends
//! `failover / 2` after its last successful renewal was sent, and the
//! `failover / 4` left when its renewal falls due is its own, not spent
//! waiting for the slowest lease of a shared pass (a pass that started the
//! next one a period after the slowest call ended also drifted later each
//! time). `decide::next_calls` picks what is due.

use super::decide::{self, CallDue, PendingStep, RenewFailed};
use super::{LeaseManager, RETRY, Settle};
use crate::checkpoint::Position;
use crate::lease::item::Lease;
use crate::lease::table::Written;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::task::JoinSet;

/// One lease-table call of the renewer.
enum Call {
    /// Renew a held lease at `counter`, storing `positions` if they moved.
    Renew {
        key: String,
        counter: u64,
        positions: Option<BTreeMap<String, Position>>,
        draining: bool,
    },
    /// Final positions of a lease whose shard task ended.
    Settle {
        key: String,
        counter: u64,
        settle: Settle,
        positions: BTreeMap<String, Position>,
    },
    /// Read a lease under handoff to this instance; adopt or take it over.
    Follow { key: String, since: Instant },
}

/// How a renewal call ended.
enum Renewed {
    Done(Lease),
    /// Its condition failed: the lease as read back right after.
    Refused(anyhow::Result<Option<Lease>>),
    Failed(anyhow::Error),
}

impl LeaseManager {
    pub(super) async fn renew_loop(self: Arc<Self>) {
        // Read-held for the loop's life: `release_all` write-holds it, so its
        // final writes wait until the calls in flight here have ended.
        let _pass = self.pass.read().await;
        let mut calls = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
        while !self.stopped.load(Ordering::Acquire) {
            let now = Instant::now();
            let busy: HashSet<&str> = in_flight.values().map(String::as_str).collect();
            let (due, next) = self.due_calls(now, &busy);
            for call in due {
                let key = match &call {
                    Call::Renew { key, .. }
                    | Call::Settle { key, .. }
                    | Call::Follow { key, .. } => key.clone(),
                };
                let manager = self.clone();
                let handle = calls.spawn(async move { manager.call(call).await });
                in_flight.insert(handle.id(), key);
            }
            // Nothing due: sleep until woken (a lease adopted, a task ended,
            // a handoff started), or a period at most.
            let next = next.unwrap_or(now + decide::renewal_interval(self.settings.failover));
            tokio::select! {
                Some(done) = calls.join_next_with_id(), if !calls.is_empty() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(error) => error.id(),
                    };
                    in_flight.remove(&id);
                }
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = self.wake_renewer.notified() => {}
            }
        }
        // Each call ends within the client's timeout; their outcomes are
        // what `release_all` writes on.
        while calls.join_next().await.is_some() {}
    }

    /// The calls due now for leases without one in flight, and when the
    /// next one falls due.
    fn due_calls(&self, now: Instant, busy: &HashSet<&str>) -> (Vec<Call>, Option<Instant>) {
        let state = self.lock();
        // A fenced lease is renewed again only once its shard task ended:
        // a new task must not start beside the old one.
        let held = state
            .held
            .iter()
            .filter(|(_, h)| !(h.fenced && h.running))
            .map(|(key, h)| {
                let kind = match h.settle {
                    Some(_) => CallDue::Settle,
                    None => CallDue::Renew,
                };
                (key.as_str(), h.due, kind)
            });
        let pending = state
            .pending
            .iter()
            .map(|(key, p)| (key.as_str(), p.due, CallDue::Follow));
        let (keys, next) = decide::next_calls(held.chain(pending), busy, now);
        let calls = keys
            .into_iter()
            .filter_map(|(key, kind)| {
                let key = key.to_string();
                match kind {
                    CallDue::Renew => {
                        let h = state.held.get(&key)?;
                        let now = self.checkpoints.shard_positions(&h.stream, &h.shard);
                        let moved = h.written.as_ref() != Some(&now);
                        Some(Call::Renew {
                            counter: h.counter,
                            positions: moved.then_some(now),
                            draining: h.draining,
                            key,
                        })
                    }
                    CallDue::Settle => {
                        let h = state.held.get(&key)?;
                        Some(Call::Settle {
                            counter: h.counter,
                            settle: h.settle?,
                            positions: self.checkpoints.shard_positions(&h.stream, &h.shard),
                            key,
                        })
                    }
                    CallDue::Follow => {
                        let p = state.pending.get(&key)?;
                        Some(Call::Follow {
                            since: p.since,
                            key,
                        })
                    }
                }
            })
            .collect();
        (calls, next)
    }

    async fn call(&self, call: Call) {
        match call {
            Call::Renew {
                key,
                counter,
                positions,
                draining,
            } => self.renew(key, counter, positions, draining).await,
            Call::Settle {
                key,
                counter,
                settle,
                positions,
            } => self.settle(key, counter, settle, positions).await,
            Call::Follow { key, since } => self.follow(key, since).await,
        }
    }

    /// When `key`'s next call is due (if it is still held at `counter`).
    fn reschedule(&self, key: &str, counter: u64, at: Instant) {
        if let Some(held) = self.lock().held.get_mut(key)
            && held.counter == counter
        {
            held.due = at;
        }
    }

    /// One conditional renewal of `key`, held at `counter`, and what its
    /// answer does to the lease.
    async fn renew(
        &self,
        key: String,
        counter: u64,
        positions: Option<BTreeMap<String, Position>>,
        draining: bool,
    ) {
        let me = &self.settings.me;
        let sent = Instant::now();
        tracing::trace!(lease = %key, counter, "renewing");
        let outcome = match self
            .table
            .renew(&key, counter, me, positions.as_ref(), draining)
            .await
        {
            Ok(Written::Done(lease)) => Renewed::Done(lease),
            Ok(Written::Refused(told)) => Renewed::Refused(self.table.stood(&key, told).await),
            Err(error) => Renewed::Failed(error),
        };
        match outcome {
            Renewed::Done(lease) => {
                let mut state = self.lock();
                if let Some(held) = state.held.get_mut(&key)
                    && held.counter == counter
                {
                    held.counter = lease.counter;
                    held.valid_until
                        .store(self.valid_until(sent), Ordering::Release);
                    held.unanswered_since = None;
                    held.due = sent + decide::renewal_interval(self.settings.failover);
                    if positions.is_some() {
                        held.written = positions;
                    }
                    if held.fenced && !held.draining {
                        held.fenced = false;
                        held.state.send_replace(crate::ownership::HoldState::Held);
                        tracing::info!(lease = %key, counter = lease.counter, "a fenced lease renewed again (no peer took it); its shard resumes");
                        drop(state);
                        self.notify_changed();
                    }
                }
            }
            Renewed::Failed(error) => {
                if let Some(held) = self.lock().held.get_mut(&key)
                    && held.counter == counter
                {
                    held.unanswered_since.get_or_insert(sent);
                    held.due = Instant::now() + RETRY;
                }
                match self.renewal_warnings.event() {
                    Some(failures) => {
                        tracing::warn!(lease = %key, failures, error = %format!("{error:#}"), "lease renewal failed; retrying every 100 ms (failures: since the last warning)")
                    }
                    None => {
                        tracing::debug!(lease = %key, error = %format!("{error:#}"), "lease renewal failed; retrying")
                    }
                }
            }
            Renewed::Refused(Ok(Some(lease))) => {
                tracing::debug!(lease = %key, held = counter, counter = lease.counter, owner = ?lease.owner, checkpoint_owner = ?lease.checkpoint_owner, "lease renewal refused");
                let why = decide::renew_failed(
                    lease.owner.as_deref(),
                    lease.checkpoint_owner.as_deref(),
                    lease.counter,
                    counter,
                    me,
                    draining,
                );
                match why {
                    RenewFailed::Handoff { counter: now } => self.begin_handoff(&key, counter, now),
                    RenewFailed::Landed { counter: now } => self.adopt_landed(&key, counter, now),
                    RenewFailed::Lost => {
                        tracing::warn!(lease = %key, owner = ?lease.owner, "lease lost to another instance; stopping its shard");
                        self.lose(&key);
                    }
                }
            }
            Renewed::Refused(Ok(None)) => {
                tracing::warn!(lease = %key, "lease lost: its item is gone; stopping its shard");
                self.lose(&key);
            }
            Renewed::Refused(Err(error)) => {
                self.reschedule(&key, counter, Instant::now() + RETRY);
                match self.renewal_warnings.event() {
                    Some(failures) => {
                        tracing::warn!(lease = %key, failures, error = %format!("{error:#}"), "cannot read a lease back after a refused renewal; retrying")
                    }
                    None => {
                        tracing::debug!(lease = %key, error = %format!("{error:#}"), "cannot read a lease back after a refused renewal; retrying")
                    }
                }
            }
        }
    }

    /// This instance's own unanswered renewal of `key` (held at `was`) took
    /// effect: the lease is at `now`. Peers saw the counter move no earlier
    /// than that write was sent, so it is valid from then; it is renewed
    /// again at once, which also stores the positions that write carried.
    fn adopt_landed(&self, key: &str, was: u64, now: u64) {
        let mut state = self.lock();
        if let Some(held) = state.held.get_mut(key)
            && held.counter == was
        {
            tracing::info!(lease = %key, counter = now, "an unanswered renewal had taken effect; lease kept");
            held.counter = now;
            held.written = None;
            held.due = Instant::now();
            if let Some(sent) = held.unanswered_since.take() {
                held.valid_until
                    .fetch_max(self.valid_until(sent), Ordering::AcqRel);
            }
        }
    }

    /// Another instance stole `key`: drain its shard, then write the final
    /// positions. Renewed again at once as `checkpointOwner`: the refused
    /// renewal extended nothing.
    fn begin_handoff(&self, key: &str, was: u64, now: u64) {
        let mut state = self.lock();
        let Some(held) = state.held.get_mut(key) else {
            return;
        };
        if held.counter != was {
            return;
        }
        held.counter = now;
        held.due = Instant::now();
        if !held.draining {
            tracing::info!(lease = %key, "lease handed off to another instance; draining its shard");
            held.draining = true;
            held.state
                .send_replace(crate::ownership::HoldState::Handoff);
        }
        if !held.running {
            held.settle = Some(Settle::FinishHandoff);
        }
    }

    /// The final write of a lease whose shard task ended.
    async fn settle(
        &self,
        key: String,
        counter: u64,
        settle: Settle,
        positions: BTreeMap<String, Position>,
    ) {
        match self.final_write(&key, counter, settle, &positions).await {
            Ok(written) => {
                if written {
                    tracing::info!(lease = %key, ?settle, "final positions written; lease passed on");
                } else {
                    tracing::warn!(lease = %key, ?settle, "lease moved on before its final write");
                }
                if let Some(held) = self.lock().held.remove(&key) {
                    held.state.send_replace(crate::ownership::HoldState::Lost);
                }
                self.notify_changed();
            }
            Err(error) => {
                self.reschedule(&key, counter, Instant::now() + RETRY);
                tracing::warn!(lease = %key, error = %format!("{error:#}"), "final lease write failed; retrying");
            }
        }
    }

    /// One look at a handoff to this instance: adopt, take over, or give up.
    async fn follow(&self, key: String, since: Instant) {
        let lease = match self.table.get(&key).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                self.lock().pending.remove(&key);
                return;
            }
            Err(error) => {
                self.follow_again(&key, RETRY);
                tracing::warn!(lease = %key, error = %format!("{error:#}"), "cannot read a lease under handoff; retrying");
                return;
            }
        };
        let now = Instant::now();
        let unchanged = self.lock().observations.observe(&key, lease.counter, now);
        let step = decide::pending_step(
            lease.owner.as_deref(),
            lease.checkpoint_owner.as_deref(),
            &self.settings.me,
            unchanged,
            now.saturating_duration_since(since),
            self.settings.failover,
            self.settings.handoff_timeout,
        );
        match step {
            PendingStep::Wait => {
                self.follow_again(&key, decide::handoff_poll(self.settings.failover))
            }
            PendingStep::Adopt => {
                self.lock().pending.remove(&key);
                self.confirm(&key, lease.counter).await;
            }
            PendingStep::TakeOver => {
                self.lock().pending.remove(&key);
                tracing::warn!(lease = %key, old = ?lease.checkpoint_owner, "handoff not finished by the old owner; taking the lease over");
                self.try_take(&key, lease.counter).await;
            }
            PendingStep::Abandon => {
                self.lock().pending.remove(&key);
            }
        }
    }

    fn follow_again(&self, key: &str, after: std::time::Duration) {
        if let Some(pending) = self.lock().pending.get_mut(key) {
            pending.due = Instant::now() + after;
        }
    }
}
