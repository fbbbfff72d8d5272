//! The running lease protocol of one instance: which leases it holds, the
//! loops that keep them (renewer, taker, self-fencing watchdog), and the
//! coordinator's `ShardOwnership` over them.
//!
//! - **Renewer** (`renewer.rs`): each held lease renewed by one
//!   conditional UpdateItem `failover / 4` after its last successful one
//!   (100 ms after a failed call), storing the shard's positions when they
//!   moved; each lease on its own schedule, its call a task of its own, so
//!   one unanswered call (given up after `failover / 12`) delays no other
//!   lease. A refused renewal is understood from the item as it stood: a
//!   handoff to another instance (this one drains the shard and writes its
//!   final positions), this instance's own unanswered renewal that took
//!   effect (kept), or a lost lease (stop at once). It also makes the final
//!   writes of ended shards and follows the handoffs to this instance.
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

mod renewer;

use super::decide::{self, Action, LeaseView, Observations};
use super::item::{Lease, lease_key};
use super::table::{LeaseTable, Written};
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
    /// Read-held by the renewer for its life and by each taker's writes,
    /// which run side by side (a slow take must never delay renewals past
    /// the fencing margin); write-held by `release_all` once `stopped` is
    /// set, so no renewal or take races the final writes (which are
    /// conditional on the counters it then reads).
    pass: tokio::sync::RwLock<()>,
    /// Renewal failures are warned about once per interval (a lease-table
    /// outage fails every lease's call every 100 ms).
    renewal_warnings: crate::log_limit::WarnEvery,
    /// Leases taken, stolen and lost since start (for /metrics).
    pub taken: AtomicU64,
    pub lost: AtomicU64,
}

#[derive(Default)]
struct State {
    held: BTreeMap<String, Held>,
    /// Handoffs to this instance under way.
    pending: BTreeMap<String, Pending>,
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
    /// Given up on this side by the watchdog (not renewed within the
    /// margin): its shard is stopped; once the task ended, renewals resume,
    /// and the first that succeeds (no peer took the lease meanwhile)
    /// starts the shard again from the positions its outputs acknowledged.
    fenced: bool,
    /// When the first renewal since the last answered one was sent, if one
    /// failed: a write of it that took effect unanswered landed after this.
    unanswered_since: Option<Instant>,
    /// When its next call (renewal, or final write once settling) is due.
    due: Instant,
}

/// A handoff to this instance: the old owner drains the shard meanwhile.
struct Pending {
    /// When this instance stole the lease.
    since: Instant,
    /// When the lease is read again.
    due: Instant,
}

/// What one taker cycle found.
struct Cycle {
    /// When a lease seen standing still would expire, if before the next scan.
    look_again: Option<Duration>,
    /// A take lost to another instance taking the same lease.
    lost_race: bool,
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
            renewal_warnings: crate::log_limit::WarnEvery::default(),
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

    async fn take_loop(self: Arc<Self>) {
        while !self.stopped.load(Ordering::Acquire) {
            let base = self.settings.failover / 2;
            let mut wait = base.mul_f64(0.8 + fastrand::f64() * 0.4);
            match self.take_cycle().await {
                Ok(cycle) => {
                    if let Some(expiry) = cycle.look_again {
                        // Just past the moment, so the lease reads as expired.
                        wait = wait.min(expiry + Duration::from_millis(50));
                    }
                    if cycle.lost_race {
                        // Another instance took a lease this one meant to:
                        // look for others soon (jittered, not to collide again).
                        wait = wait.min(RETRY.mul_f64(2.0 + fastrand::f64() * 2.0));
                    }
                }
                Err(error) => {
                    tracing::warn!(table = %self.table.name(), error = %format!("{error:#}"), "lease scan failed; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
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
                .filter(|(_, h)| {
                    h.settle.is_none() && !h.fenced && now >= h.valid_until.load(Ordering::Acquire)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                tracing::warn!(lease = %key, margin_ms = (self.settings.failover / 2).as_millis() as u64, "lease not renewed within the margin; stopping its shard (self-fencing); it resumes if a renewal succeeds before a peer takes the lease");
                self.fence(&key);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the shard of a lease not renewed within the margin, keeping
    /// the lease: peers take it only after seeing its counter still for
    /// `failover`, and a renewal is conditional on the counter, so a
    /// renewal that succeeds after the shard stopped proves no peer took
    /// it, and the shard resumes here where its outputs left off (instead
    /// of a peer reading again, after `failover`, everything since the
    /// positions last stored). A refused renewal loses it as usual.
    fn fence(&self, key: &str) {
        let mut state = self.lock();
        if let Some(held) = state.held.get_mut(key) {
            held.fenced = true;
            held.valid_until.store(0, Ordering::Release);
            held.state.send_replace(HoldState::Lost);
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
        drop(state);
        self.notify_changed();
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
            fenced: false,
            unanswered_since: None,
            due: sent + decide::renewal_interval(self.settings.failover),
        };
        tracing::info!(lease = %lease.key, counter = lease.counter, switches = lease.owner_switches, "lease held");
        self.lock().held.insert(lease.key.clone(), held);
        self.taken.fetch_add(1, Ordering::Relaxed);
        self.notify_changed();
        self.wake_renewer.notify_one();
    }

    /// Takes a lease seen at `seen`, then confirms it with a renewal (owner
    /// and counter as just written) before holding it: a take is only
    /// believed once a second conditional write on it succeeded. On DynamoDB
    /// the take alone is enough; emulators whose conditional writes are not
    /// atomic under concurrency (moto's server) can let two takers both
    /// succeed, and then only the last writer's confirmation passes.
    /// False if another instance wrote the lease first.
    async fn try_take(&self, key: &str, seen: u64) -> bool {
        let me = &self.settings.me;
        let taken = match self.table.take(key, seen, me).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tracing::debug!(lease = %key, "lease taken by another instance first");
                return false;
            }
            Err(error) => {
                tracing::warn!(lease = %key, error = %format!("{error:#}"), "cannot take a lease");
                return true;
            }
        };
        self.confirm(key, taken.counter).await
    }

    /// Holds `key`, which the table shows as this instance's at `counter`
    /// (just taken, or handed over), once a renewal conditional on that
    /// succeeded; its validity runs from that renewal's send time, before
    /// which no peer can have seen the counter stand still. False if
    /// another instance wrote the lease meanwhile.
    async fn confirm(&self, key: &str, counter: u64) -> bool {
        let sent = Instant::now();
        match self
            .table
            .renew(key, counter, &self.settings.me, None, false)
            .await
        {
            Ok(Written::Done(confirmed)) => {
                self.adopt(confirmed, sent);
                true
            }
            Ok(Written::Refused(_)) => {
                tracing::warn!(lease = %key, "a take was not confirmed (another instance wrote the lease at the same moment); not reading it");
                false
            }
            // Not held, but ours in the table: taken again at the next scan.
            Err(error) => {
                tracing::warn!(lease = %key, error = %format!("{error:#}"), "cannot confirm a take; retrying at the next scan");
                true
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

    async fn take_cycle(&self) -> anyhow::Result<Cycle> {
        self.create_listed().await;
        let (leases, _) = self.table.scan().await?;
        let now = Instant::now();
        let pipelines = self.pipelines();
        let look_again;
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
            look_again = decide::look_again(&views, &busy, self.settings.failover);
            decide::plan(
                &views,
                &self.settings.me,
                &busy,
                self.settings.failover,
                |v| fastrand::shuffle(v),
            )
        };
        let _pass = self.pass.read().await;
        let mut lost_race = false;
        for action in actions {
            if self.stopped.load(Ordering::Acquire) {
                break;
            }
            match action {
                Action::Take { key, counter } => {
                    if !self.try_take(&key, counter).await {
                        lost_race = true;
                    }
                }
                Action::Steal { key, counter, from } => {
                    match self
                        .table
                        .steal(&key, counter, &from, &self.settings.me)
                        .await
                    {
                        Ok(Some(_)) => {
                            tracing::info!(lease = %key, %from, "balancing: handoff of a lease to this instance started");
                            let now = Instant::now();
                            let pending = Pending {
                                since: now,
                                due: now + decide::handoff_poll(self.settings.failover),
                            };
                            self.lock().pending.insert(key, pending);
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
        Ok(Cycle {
            look_again,
            lost_race,
        })
    }

    /// The final write of a lease held at `counter`: its positions, and the
    /// lease let go (`Release`) or its handoff finished. If a peer stole the
    /// lease meanwhile (a handoff this instance had not seen yet), the
    /// handoff is finished instead, with the same positions, so the peer
    /// starts from them rather than waiting out `failover` and reading
    /// again what was delivered since the last renewal. Ok(false): the
    /// lease had moved on otherwise (lost).
    async fn final_write(
        &self,
        key: &str,
        counter: u64,
        settle: Settle,
        positions: &BTreeMap<String, Position>,
    ) -> anyhow::Result<bool> {
        let me = &self.settings.me;
        let written = match settle {
            Settle::FinishHandoff => {
                self.table
                    .finish_handoff(key, counter, me, positions)
                    .await?
            }
            Settle::Release => self.table.release(key, counter, me, positions).await?,
        };
        let told = match written {
            Written::Done(_) => return Ok(true),
            Written::Refused(told) => told,
        };
        let Some(stood) = self.table.stood(key, told).await? else {
            return Ok(false);
        };
        let instead = decide::finish_instead(
            stood.owner.as_deref(),
            stood.checkpoint_owner.as_deref(),
            stood.counter,
            counter,
            me,
            settle == Settle::Release,
        );
        let Some(now) = instead else {
            return Ok(false);
        };
        tracing::info!(lease = %key, new_owner = ?stood.owner, "lease stolen just before its final write; finishing the handoff with the final positions");
        let finished = self.table.finish_handoff(key, now, me, positions).await?;
        Ok(matches!(finished, Written::Done(_)))
    }

    /// At shutdown, once every shard task ended: writes each held lease's
    /// final positions and lets it go (or finishes its handoff), so peers
    /// take them at their next scan; then stops the loops.
    pub async fn release_all(self: &Arc<Self>) {
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
        let mut releases = tokio::task::JoinSet::new();
        for (key, counter, draining, positions) in work {
            let manager = self.clone();
            releases
                .spawn(async move { manager.release_one(key, counter, draining, positions).await });
        }
        let (mut released, mut failed) = (0usize, 0usize);
        while let Some(joined) = releases.join_next().await {
            let Ok((key, result)) = joined else {
                failed += 1;
                continue;
            };
            match result {
                Ok(true) => released += 1,
                Ok(false) => {
                    failed += 1;
                    tracing::warn!(lease = %key, "lease moved on before it was released");
                }
                Err(error) => {
                    failed += 1;
                    tracing::warn!(lease = %key, error = %format!("{error:#}"), "cannot release a lease; it is taken after failover_ms");
                }
            }
        }
        self.lock().held.clear();
        tracing::info!(released, failed, "leases released");
    }

    /// One lease's final write at shutdown, tried a few times: a lease not
    /// let go waits out `failover` at its taker.
    async fn release_one(
        &self,
        key: String,
        counter: u64,
        draining: bool,
        positions: BTreeMap<String, Position>,
    ) -> (String, anyhow::Result<bool>) {
        let settle = match draining {
            true => Settle::FinishHandoff,
            false => Settle::Release,
        };
        let mut result = self.final_write(&key, counter, settle, &positions).await;
        for _ in 0..2 {
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(RETRY).await;
            result = self.final_write(&key, counter, settle, &positions).await;
        }
        (key, result)
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
            && !held.fenced
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
        // At once: the final write, or a renewal storing the positions the
        // task ended at (which also shows a handoff started meanwhile).
        held.due = Instant::now();
        drop(state);
        self.wake_renewer.notify_one();
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
