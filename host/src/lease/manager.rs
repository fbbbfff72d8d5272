//! The running lease protocol of one instance: which leases it holds, the
//! loops that keep them (renewer, taker, self-fencing watchdog), and the
//! coordinator's `ShardOwnership` over them.
//!
//! - **Renewer**, every `failover / 3` (every 100 ms while a renewal is
//!   failing): one conditional UpdateItem per held lease, storing the
//!   shard's positions when they moved since the last write. Each call
//!   (attempts end after `failover / 12`) goes on its own. A failed
//!   condition is read back: a handoff to another instance (this one drains
//!   the shard and writes its final positions), this instance's own
//!   unanswered renewal that took effect (kept), or a lost lease (stop at
//!   once). Final writes of ended shards run beside the renewals.
//! - **Watchdog**, every 100 ms: a lease not renewed for `failover / 2` is
//!   given up on this side (its shard stops at once): other instances take
//!   it only after seeing its counter still for `failover`. A lease whose
//!   shard task already ended only waits for its (conditional) final write.
//! - **Taker**, every `failover / 2` ± 20 %: creates the leases of newly
//!   listed shards, scans the table, takes or steals what `decide::plan`
//!   says, and follows the handoffs to this instance (`decide::pending_step`).
//!
//! Invariants: a shard is started only while its lease is held and valid;
//! its positions are written only by conditional writes on the counter this
//! instance holds; `checkpointOwner` set by a steal is cleared by the old
//! owner's final write, or by the new owner once the lease stopped moving
//! for `failover` or the handoff passed `handoff_timeout`.

use super::decide::{self, Action, LeaseView, Observations, PendingStep, RenewFailed};
use super::item::{Lease, lease_key};
use super::table::LeaseTable;
use crate::checkpoint::{Checkpoints, Position};
use crate::kinesis::ShardInfo;
use crate::ownership::{Hold, HoldState, ShardOwnership, TaskEnd};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// How soon a failed renewal or final write is tried again.
const RETRY: Duration = Duration::from_millis(100);

pub struct LeaseSettings {
    /// This instance's name in the table.
    pub me: String,
    pub failover: Duration,
    /// How long a handoff's old owner has to write its final positions.
    pub handoff_timeout: Duration,
    /// Per source stream (short name): the pipelines reading it.
    pub pipelines: BTreeMap<String, Vec<String>>,
}

pub struct LeaseManager {
    table: Arc<LeaseTable>,
    settings: LeaseSettings,
    checkpoints: Arc<Checkpoints>,
    /// Per source stream (short name): the pipelines reading it now
    /// (`settings.pipelines` at start, then as reloads change them).
    pipelines: Mutex<BTreeMap<String, Vec<String>>>,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    epoch: Instant,
    /// Wakes the renewer (a task ended: its lease is settled) or the taker
    /// (new shards were listed).
    wake_renewer: Notify,
    wake_taker: Notify,
    stopped: AtomicBool,
    /// Read-held by each renewer pass and each taker's writes, which run side
    /// by side (a slow take must never delay renewals past the fencing
    /// margin); write-held by `release_all` once `stopped` is set, so no
    /// renewal or take races the final writes (which are conditional on the
    /// counters it then reads).
    pass: tokio::sync::RwLock<()>,
    /// Leases taken, stolen and lost since start (for /metrics).
    pub taken: AtomicU64,
    pub lost: AtomicU64,
}

#[derive(Default)]
struct State {
    held: BTreeMap<String, Held>,
    /// Handoffs to this instance under way: key → (stream, shard, since).
    pending: BTreeMap<String, (String, String, Instant)>,
    observations: Observations,
    /// Lease keys in the table at the last scan.
    known: HashSet<String>,
    /// Per stream, its shards as last listed.
    listed: BTreeMap<String, Vec<ShardInfo>>,
}

struct Held {
    stream: String,
    shard: String,
    counter: u64,
    state: watch::Sender<HoldState>,
    /// Milliseconds after `epoch` until which the lease is valid here.
    valid_until: Arc<AtomicU64>,
    /// A shard task runs with it.
    running: bool,
    /// The positions last stored.
    written: Option<BTreeMap<String, Position>>,
    /// Draining for a handoff (renewing as `checkpointOwner`).
    draining: bool,
    /// The task ended; the lease waits for its final write.
    settle: Option<Settle>,
    /// When the first renewal since the last answered one was sent, if one
    /// failed: a write of it that took effect unanswered landed after this.
    unanswered_since: Option<Instant>,
}

/// One renewal to send: key, counter held, positions if they moved, draining.
type Renewal = (String, u64, Option<BTreeMap<String, Position>>, bool);

/// How one renewal call ended.
enum Renewed {
    Done(Lease),
    /// Its condition failed: the lease as read back right after.
    Refused(anyhow::Result<Option<Lease>>),
    Failed(anyhow::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Final positions, then `checkpointOwner` cleared (handoff).
    FinishHandoff,
    /// Final positions, then the lease let go (the shard is finished).
    Release,
}

impl LeaseManager {
    pub fn new(
        table: Arc<LeaseTable>,
        settings: LeaseSettings,
        checkpoints: Arc<Checkpoints>,
    ) -> Arc<Self> {
        Arc::new(LeaseManager {
            table,
            pipelines: Mutex::new(settings.pipelines.clone()),
            settings,
            checkpoints,
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            epoch: Instant::now(),
            wake_renewer: Notify::new(),
            wake_taker: Notify::new(),
            stopped: AtomicBool::new(false),
            pass: tokio::sync::RwLock::new(()),
            taken: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        })
    }

    pub fn instance_id(&self) -> &str {
        &self.settings.me
    }

    /// How many leases this instance holds now.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn valid_until(&self, renewed_at: Instant) -> u64 {
        (renewed_at.saturating_duration_since(self.epoch) + self.settings.failover / 2).as_millis()
            as u64
    }

    fn notify_changed(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// The pipelines reading each source stream now.
    fn pipelines(&self) -> BTreeMap<String, Vec<String>> {
        match self.pipelines.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Which pipelines read which stream from now on (a live reload): what
    /// a shard must be finished for before its children are taken, and
    /// which streams' leases are taken at all.
    pub fn set_pipelines(&self, pipelines: BTreeMap<String, Vec<String>>) {
        match self.pipelines.lock() {
            Ok(mut p) => *p = pipelines,
            Err(poisoned) => *poisoned.into_inner() = pipelines,
        }
        self.wake_taker.notify_one();
    }

    /// Starts the renewer, the taker and the watchdog.
    pub fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(self.clone().renew_loop()),
            tokio::spawn(self.clone().take_loop()),
            tokio::spawn(self.clone().watchdog_loop()),
        ]
    }

    async fn renew_loop(self: Arc<Self>) {
        let interval = self.settings.failover / 3;
        loop {
            let (failing, settling) = {
                let _pass = self.pass.read().await;
                if self.stopped.load(Ordering::Acquire) {
                    return;
                }
                // Disjoint leases (settling ones are not renewed): side by
                // side, so a slow final write delays no renewal.
                let (failing, settling) = tokio::join!(self.renew_all(), self.settle_ended());
                self.follow_pending().await;
                (failing, settling)
            };
            // A failed renewal is retried soon: the margin before self-fencing
            // (failover/2) leaves failover/6 after a missed period.
            let wait = if failing || settling {
                interval.min(RETRY)
            } else {
                interval
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake_renewer.notified() => {}
            }
        }
    }

    async fn take_loop(self: Arc<Self>) {
        while !self.stopped.load(Ordering::Acquire) {
            if let Err(error) = self.take_cycle().await {
                tracing::warn!(table = %self.table.name(), error = %format!("{error:#}"), "lease scan failed; retrying");
            }
            let base = self.settings.failover / 2;
            let jittered = base.mul_f64(0.8 + fastrand::f64() * 0.4);
            tokio::select! {
                _ = tokio::time::sleep(jittered) => {}
                _ = self.wake_taker.notified() => {}
            }
        }
    }

    async fn watchdog_loop(self: Arc<Self>) {
        while !self.stopped.load(Ordering::Acquire) {
            let now = self.now_ms();
            let expired: Vec<String> = self
                .lock()
                .held
                .iter()
                // A settling lease's shard task has ended: nothing is read or
                // written for it, and its final write is conditional anyway.
                .filter(|(_, h)| h.settle.is_none() && now >= h.valid_until.load(Ordering::Acquire))
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                tracing::warn!(lease = %key, margin_ms = (self.settings.failover / 2).as_millis() as u64, "lease not renewed within the margin; stopping its shard (self-fencing)");
                self.lose(&key);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Drops a lease this instance can no longer write for.
    fn lose(&self, key: &str) {
        let removed = self.lock().held.remove(key);
        if let Some(held) = removed {
            held.valid_until.store(0, Ordering::Release);
            held.state.send_replace(HoldState::Lost);
            self.lost.fetch_add(1, Ordering::Relaxed);
            self.notify_changed();
        }
    }

    /// Renews every held lease once, concurrently; true if one failed for
    /// a reason other than its condition (retried soon).
    async fn renew_all(&self) -> bool {
        let work: Vec<Renewal> = {
            let state = self.lock();
            state
                .held
                .iter()
                .filter(|(_, h)| h.settle.is_none())
                .map(|(key, h)| {
                    let now = self.checkpoints.shard_positions(&h.stream, &h.shard);
                    let moved = h.written.as_ref() != Some(&now);
                    (key.clone(), h.counter, moved.then_some(now), h.draining)
                })
                .collect()
        };
        if work.is_empty() {
            return false;
        }
        // Each lease's renewal, and the read-back of a refused one, go on
        // their own: one unanswered call delays no other lease.
        let mut calls = tokio::task::JoinSet::new();
        for (key, counter, positions, draining) in work {
            let (table, me) = (self.table.clone(), self.settings.me.clone());
            calls.spawn(async move {
                let sent = Instant::now();
                let outcome = match table
                    .renew(&key, counter, &me, positions.as_ref(), draining)
                    .await
                {
                    Ok(Some(lease)) => Renewed::Done(lease),
                    Ok(None) => Renewed::Refused(table.get(&key).await),
                    Err(error) => Renewed::Failed(error),
                };
                (key, counter, positions, draining, sent, outcome)
            });
        }
        let mut failing = false;
        while let Some(joined) = calls.join_next().await {
            let Ok((key, counter, positions, draining, sent, outcome)) = joined else {
                failing = true;
                continue;
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
                        if positions.is_some() {
                            held.written = positions;
                        }
                    }
                }
                Renewed::Failed(error) => {
                    if let Some(held) = self.lock().held.get_mut(&key)
                        && held.counter == counter
                    {
                        held.unanswered_since.get_or_insert(sent);
                    }
                    failing = true;
                    tracing::warn!(lease = %key, error = %format!("{error:#}"), "lease renewal failed; retrying");
                }
                Renewed::Refused(Ok(Some(lease))) => {
                    let why = decide::renew_failed(
                        lease.owner.as_deref(),
                        lease.checkpoint_owner.as_deref(),
                        lease.counter,
                        counter,
                        &self.settings.me,
                        draining,
                    );
                    match why {
                        RenewFailed::Handoff { counter: now } => {
                            self.begin_handoff(&key, counter, now)
                        }
                        RenewFailed::Landed { counter: now } => {
                            self.adopt_landed(&key, counter, now);
                            failing = true;
                        }
                        RenewFailed::Lost => {
                            tracing::warn!(lease = %key, owner = ?lease.owner, "lease lost to another instance; stopping its shard");
                            self.lose(&key);
                        }
                    }
                }
                Renewed::Refused(Ok(None)) => self.lose(&key),
                Renewed::Refused(Err(error)) => {
                    failing = true;
                    tracing::warn!(lease = %key, error = %format!("{error:#}"), "cannot read a lease back after a refused renewal; retrying");
                }
            }
        }
        failing
    }

    /// This instance's own unanswered renewal of `key` (held at `was`) took
    /// effect: the lease is at `now`. Peers saw the counter move no earlier
    /// than that write was sent, so it is valid from then; it is renewed
    /// again soon, which also stores the positions that write carried.
    fn adopt_landed(&self, key: &str, was: u64, now: u64) {
        let mut state = self.lock();
        if let Some(held) = state.held.get_mut(key)
            && held.counter == was
        {
            tracing::info!(lease = %key, counter = now, "an unanswered renewal had taken effect; lease kept");
            held.counter = now;
            held.written = None;
            if let Some(sent) = held.unanswered_since.take() {
                held.valid_until
                    .fetch_max(self.valid_until(sent), Ordering::AcqRel);
            }
        }
    }

    /// Another instance stole `key`: drain its shard, then write the final positions.
    fn begin_handoff(&self, key: &str, was: u64, now: u64) {
        let mut state = self.lock();
        let Some(held) = state.held.get_mut(key) else {
            return;
        };
        if held.counter != was {
            return;
        }
        held.counter = now;
        if !held.draining {
            tracing::info!(lease = %key, "lease handed off to another instance; draining its shard");
            held.draining = true;
            held.state.send_replace(HoldState::Handoff);
        }
        if !held.running {
            held.settle = Some(Settle::FinishHandoff);
            self.wake_renewer.notify_one();
        }
    }

    /// Final writes of leases whose task ended; true if one must be retried.
    async fn settle_ended(&self) -> bool {
        let work: Vec<(String, u64, Settle, BTreeMap<String, Position>)> = {
            let state = self.lock();
            state
                .held
                .iter()
                .filter_map(|(key, h)| {
                    let settle = h.settle?;
                    let positions = self.checkpoints.shard_positions(&h.stream, &h.shard);
                    Some((key.clone(), h.counter, settle, positions))
                })
                .collect()
        };
        let mut retry = false;
        for (key, counter, settle, positions) in work {
            let me = &self.settings.me;
            let result = match settle {
                Settle::FinishHandoff => {
                    self.table
                        .finish_handoff(&key, counter, me, &positions)
                        .await
                }
                Settle::Release => self.table.release(&key, counter, me, &positions).await,
            };
            match result {
                Ok(written) => {
                    if written.is_none() {
                        tracing::warn!(lease = %key, ?settle, "lease moved on before its final write");
                    } else {
                        tracing::info!(lease = %key, ?settle, "final positions written; lease passed on");
                    }
                    if let Some(held) = self.lock().held.remove(&key) {
                        held.state.send_replace(HoldState::Lost);
                    }
                    self.notify_changed();
                }
                Err(error) => {
                    retry = true;
                    tracing::warn!(lease = %key, error = %format!("{error:#}"), "final lease write failed; retrying");
                }
            }
        }
        retry
    }

    /// Follows each handoff to this instance: adopt, take over, or give up.
    async fn follow_pending(&self) {
        let pending: Vec<(String, Instant)> = self
            .lock()
            .pending
            .iter()
            .map(|(k, (_, _, since))| (k.clone(), *since))
            .collect();
        for (key, since) in pending {
            let lease = match self.table.get(&key).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    self.lock().pending.remove(&key);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(lease = %key, error = %format!("{error:#}"), "cannot read a lease under handoff; retrying");
                    continue;
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
                PendingStep::Wait => {}
                PendingStep::Adopt => {
                    self.lock().pending.remove(&key);
                    self.adopt(lease, now);
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
    }

    /// Holds `lease` from now on, starting from the positions it stores.
    fn adopt(&self, lease: Lease, sent: Instant) {
        self.checkpoints
            .replace_shard(&lease.stream, &lease.shard, &lease.checkpoints);
        let held = Held {
            stream: lease.stream.clone(),
            shard: lease.shard.clone(),
            counter: lease.counter,
            state: watch::channel(HoldState::Held).0,
            valid_until: Arc::new(AtomicU64::new(self.valid_until(sent))),
            running: false,
            written: Some(lease.checkpoints.clone()),
            draining: false,
            settle: None,
            unanswered_since: None,
        };
        tracing::info!(lease = %lease.key, counter = lease.counter, switches = lease.owner_switches, "lease held");
        self.lock().held.insert(lease.key.clone(), held);
        self.taken.fetch_add(1, Ordering::Relaxed);
        self.notify_changed();
    }

    /// Takes a lease seen at `seen`, then confirms it with a renewal (owner
    /// and counter as just written) before holding it: a take is only
    /// believed once a second conditional write on it succeeded. On DynamoDB
    /// the take alone is enough; emulators whose conditional writes are not
    /// atomic under concurrency (moto's server) can let two takers both
    /// succeed, and then only the last writer's confirmation passes.
    async fn try_take(&self, key: &str, seen: u64) {
        let me = &self.settings.me;
        let taken = match self.table.take(key, seen, me).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tracing::debug!(lease = %key, "lease taken by another instance first");
                return;
            }
            Err(error) => {
                tracing::warn!(lease = %key, error = %format!("{error:#}"), "cannot take a lease");
                return;
            }
        };
        let sent = Instant::now();
        match self.table.renew(key, taken.counter, me, None, false).await {
            Ok(Some(confirmed)) => self.adopt(confirmed, sent),
            Ok(None) => {
                tracing::warn!(lease = %key, "a take was not confirmed (another instance wrote the lease at the same moment); not reading it")
            }
            // Not held, but ours in the table: taken again at the next scan.
            Err(error) => {
                tracing::warn!(lease = %key, error = %format!("{error:#}"), "cannot confirm a take; retrying at the next scan")
            }
        }
    }

    /// Creates the leases of listed shards not in the table yet.
    async fn create_listed(&self) {
        let missing: Vec<(String, ShardInfo)> = {
            let state = self.lock();
            state
                .listed
                .iter()
                .flat_map(|(stream, shards)| shards.iter().map(move |s| (stream, s)))
                .filter(|(stream, s)| !state.known.contains(&lease_key(stream, &s.id)))
                .map(|(stream, s)| (stream.clone(), s.clone()))
                .collect()
        };
        for (stream, shard) in missing {
            match self.table.create(&stream, &shard.id, &shard.parents).await {
                Ok(_) => {
                    self.lock().known.insert(lease_key(&stream, &shard.id));
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "cannot create a lease; retrying at the next scan")
                }
            }
        }
    }

    async fn take_cycle(&self) -> anyhow::Result<()> {
        self.create_listed().await;
        let (leases, _) = self.table.scan().await?;
        let now = Instant::now();
        let pipelines = self.pipelines();
        let actions = {
            let mut state = self.lock();
            state.known = leases.iter().map(|l| l.key.clone()).collect();
            let finished: HashSet<&str> = leases
                .iter()
                .filter(|l| {
                    let of = pipelines.get(&l.stream).map_or(&[][..], |v| v.as_slice());
                    l.finished_for(of.iter().map(String::as_str))
                })
                .map(|l| l.key.as_str())
                .collect();
            let mut views = Vec::new();
            for lease in &leases {
                let unchanged = state.observations.observe(&lease.key, lease.counter, now);
                let busy =
                    state.held.contains_key(&lease.key) || state.pending.contains_key(&lease.key);
                if !busy {
                    // What other instances acknowledged: parents' state for
                    // the start decision of their children here.
                    self.checkpoints
                        .replace_shard(&lease.stream, &lease.shard, &lease.checkpoints);
                }
                if !pipelines.contains_key(&lease.stream) {
                    continue;
                }
                let parents_done = lease.parents.iter().all(|p| {
                    let parent = lease_key(&lease.stream, p);
                    !state.known.contains(&parent) || finished.contains(parent.as_str())
                });
                views.push(LeaseView {
                    key: lease.key.clone(),
                    owner: lease.owner.clone(),
                    checkpoint_owner: lease.checkpoint_owner.clone(),
                    counter: lease.counter,
                    unchanged_for: unchanged,
                    finished: finished.contains(lease.key.as_str()),
                    parents_done,
                });
            }
            let busy: HashSet<String> = state
                .held
                .keys()
                .chain(state.pending.keys())
                .cloned()
                .collect();
            decide::plan(
                &views,
                &self.settings.me,
                &busy,
                self.settings.failover,
                |v| fastrand::shuffle(v),
            )
        };
        let _pass = self.pass.read().await;
        for action in actions {
            if self.stopped.load(Ordering::Acquire) {
                break;
            }
            match action {
                Action::Take { key, counter } => self.try_take(&key, counter).await,
                Action::Steal { key, counter, from } => {
                    match self
                        .table
                        .steal(&key, counter, &from, &self.settings.me)
                        .await
                    {
                        Ok(Some(lease)) => {
                            tracing::info!(lease = %key, %from, "balancing: handoff of a lease to this instance started");
                            self.lock()
                                .pending
                                .insert(key, (lease.stream, lease.shard, Instant::now()));
                            self.wake_renewer.notify_one();
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(lease = %key, error = %format!("{error:#}"), "cannot start a handoff")
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// At shutdown, once every shard task ended: writes each held lease's
    /// final positions and lets it go (or finishes its handoff), so peers
    /// take them at their next scan; then stops the loops.
    pub async fn release_all(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake_renewer.notify_one();
        self.wake_taker.notify_one();
        let _pass = self.pass.write().await;
        let work: Vec<(String, u64, bool, BTreeMap<String, Position>)> = self
            .lock()
            .held
            .iter()
            .map(|(key, h)| {
                let positions = self.checkpoints.shard_positions(&h.stream, &h.shard);
                (key.clone(), h.counter, h.draining, positions)
            })
            .collect();
        let mut calls = tokio::task::JoinSet::new();
        for (key, counter, draining, positions) in work {
            let (table, me) = (self.table.clone(), self.settings.me.clone());
            calls.spawn(async move {
                let result = if draining {
                    table.finish_handoff(&key, counter, &me, &positions).await
                } else {
                    table.release(&key, counter, &me, &positions).await
                };
                (key, result)
            });
        }
        let (mut released, mut failed) = (0usize, 0usize);
        while let Some(joined) = calls.join_next().await {
            match joined {
                Ok((_, Ok(Some(_)))) => released += 1,
                Ok((key, Ok(None))) => {
                    failed += 1;
                    tracing::warn!(lease = %key, "lease moved on before it was released");
                }
                Ok((key, Err(error))) => {
                    failed += 1;
                    tracing::warn!(lease = %key, error = %format!("{error:#}"), "cannot release a lease; it is taken after failover_ms");
                }
                Err(_) => failed += 1,
            }
        }
        self.lock().held.clear();
        tracing::info!(released, failed, "leases released");
    }
}

impl ShardOwnership for LeaseManager {
    fn listed(&self, stream: &str, shards: &[ShardInfo]) {
        let mut state = self.lock();
        let new = shards
            .iter()
            .any(|s| !state.known.contains(&lease_key(stream, &s.id)));
        state.listed.insert(stream.to_string(), shards.to_vec());
        drop(state);
        if new {
            self.wake_taker.notify_one();
        }
    }

    fn start(&self, stream: &str, shard: &str) -> Option<Hold> {
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        let now = self.now_ms();
        let mut state = self.lock();
        let held = state.held.get_mut(&lease_key(stream, shard))?;
        let ready = !held.running
            && !held.draining
            && held.settle.is_none()
            && now < held.valid_until.load(Ordering::Acquire);
        if !ready {
            return None;
        }
        held.running = true;
        Some(Hold::new(
            held.state.subscribe(),
            held.valid_until.clone(),
            self.epoch,
        ))
    }

    fn ended(&self, stream: &str, shard: &str, end: TaskEnd) {
        let mut state = self.lock();
        let Some(held) = state.held.get_mut(&lease_key(stream, shard)) else {
            return;
        };
        held.running = false;
        if held.draining {
            held.settle = Some(Settle::FinishHandoff);
        } else if end == TaskEnd::Finished {
            held.settle = Some(Settle::Release);
        }
        drop(state);
        self.wake_renewer.notify_one();
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
