//! Runs one source: discovers its shards, starts one task per shard that
//! `start.rs` says is ready (and where each pipeline starts on it), and in
//! each task reads the shard once (the shared reader) and publishes its
//! batches to every pipeline on the source, each through its own bounded
//! queue (`lane.rs`). A pipeline whose start the shared reader cannot serve
//! begins on its own reader and joins the shared one once caught up. The
//! pipelines on the source change with live reloads (`pipeline_set.rs`):
//! each shard task starts a lane for a new pipeline and retires the lane of
//! a removed or replaced one at a batch boundary (`Lanes::reconcile`).
//!
//! Invariants:
//! - Per pipeline, a child shard is read only when every parent still listed
//!   is finished for that pipeline in the checkpoint store (read to its end
//!   and acknowledged), so per-key order holds across splits and merges, in
//!   this run and after any restart. A pipeline waiting for a parent does not
//!   hold the others back.
//! - Two versions of one pipeline never run on a shard at once: a changed
//!   pipeline's new lane starts after the old one ended, from what it
//!   acknowledged.
//! - With `latest`, the moment each pipeline starts on the source is stored
//!   before any shard is read (`store_latest_moments`).
//! - Per pipeline, batches of one shard are processed one after another, and
//!   its checkpoint moves after its outputs acknowledged a batch. Pipelines do
//!   not wait for each other: a pipeline whose queue (`buffer_batches`) is full
//!   while another keeps up is detached and catches up on its own reader,
//!   then rejoins (see `lane.rs`). When every attached pipeline is full, the
//!   shared reader waits: GetRecords calls do not multiply with slow outputs.
//! - The shared reader reads one batch ahead of publishing; memory per shard
//!   is bounded by the pipelines' queues.
//! - On shutdown each lane finishes the batch it is delivering and stops
//!   (or abandons it unacknowledged once `shutdown_timeout_s` passed);
//!   batches read but not started are dropped unacknowledged (read again
//!   after restart, never written twice).

use super::efo::EfoReader;
use super::lane::{Lane, LaneEnd, Published, ReadSetup, Rejoin};
use super::pipeline_set::{PipelineSet, same};
use super::reader::{ReadBatch, ShardReader, StartAt};
use super::start::{LaneStart, Parent, ShardPlan, SourceStart, Start, pipeline_start, plan};
use super::stats::SourceStats;
use crate::backoff::Backoff;
use crate::checkpoint::Checkpoints;
use crate::config::{Source, StartPosition, validate_timestamp};
use crate::kinesis::StreamRef;
use crate::kinesis::{ShardInfo, list_shards};
use crate::ownership::{Hold, HoldState, ShardOwnership, TaskEnd};
use crate::pipeline::{Pipeline, ShardBatch};
use crate::record::ShardPosition;
use crate::shutdown::Shutdown;
use aws_sdk_kinesis::Client;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub struct SourceRunner {
    pub name: Arc<str>,
    pub stream: StreamRef,
    pub client: Client,
    pub config: Source,
    /// The pipelines on the source, as live configuration changes them.
    pub pipelines: PipelineSet,
    pub checkpoints: Arc<Checkpoints>,
    pub shutdown: Shutdown,
    pub stats: Arc<SourceStats>,
    /// With `reader = "efo"`: the ARN of the registered stream consumer.
    pub consumer_arn: Option<String>,
    /// The process-wide memory budget every read is charged to.
    pub budget: Arc<crate::buffer::Budget>,
    /// Which shards this instance may read (every one, or those it leases).
    pub ownership: Arc<dyn ShardOwnership>,
    /// How long a shard handed off to another instance may take to finish
    /// the batch in flight before it is abandoned.
    pub handoff_drain: Duration,
    /// How long a removed (or replaced) pipeline's lane may take to finish
    /// its batch in flight before it is abandoned (None: as long as it takes).
    pub retire_drain: Option<Duration>,
}

/// The shared reader of a shard: GetRecords, or an enhanced fan-out subscription.
enum TipReader {
    Polling(Box<ShardReader>),
    Efo(Box<EfoReader>),
}

impl TipReader {
    async fn next(&mut self) -> ReadBatch {
        match self {
            TipReader::Polling(reader) => reader.next().await,
            TipReader::Efo(reader) => reader.next().await,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

enum ShardEnd {
    /// Read to the end and acknowledged by every pipeline still running.
    Finished,
    /// Stopped by shutdown, or every pipeline halted.
    Stopped,
}

impl SourceRunner {
    fn stream_key(&self) -> &str {
        self.stream.short_name()
    }

    fn any_active(&self) -> bool {
        self.pipelines.active().iter().any(|p| !p.is_halted())
    }

    /// Runs until shutdown, or until the source is closed (removed from the
    /// configuration); idles while no pipeline on it is running.
    pub async fn run(self: Arc<Self>) {
        let mut wanted = self.pipelines.wanted();
        let mut wanted_changed = true;
        let (listing_tx, listing) = tokio::sync::watch::channel(Arc::new(BTreeMap::new()));
        let mut shards: BTreeMap<String, ShardInfo> = BTreeMap::new();
        let mut done: HashSet<String> = HashSet::new();
        let mut running: HashSet<String> = HashSet::new();
        let mut tasks: JoinSet<(String, ShardEnd)> = JoinSet::new();
        let mut discover =
            tokio::time::interval(Duration::from_secs(self.config.shard_discovery_interval_s));
        let mut backoff = Backoff::kinesis();
        let (closed_tx, closed) = tokio::sync::watch::channel(HashSet::new());
        let mut ownership = self.ownership.subscribe();
        // Set once shutdown is seen, so that branch does not fire again (it
        // would resolve at once on every turn and spin while tasks drain).
        let mut draining = false;
        loop {
            if wanted_changed {
                wanted_changed = false;
                let list = wanted.borrow_and_update().clone();
                // New pipelines become active once their `latest` moments are stored.
                if self.store_latest_moments(&list).await {
                    self.pipelines.activate(list);
                    // Decided with the old pipelines: decide again.
                    done.clear();
                }
            }
            let stopping = self.shutdown.is_requested() || self.pipelines.is_closed();
            if !stopping && self.any_active() {
                let ready = Ready {
                    shards: &shards,
                    closed: &closed,
                    listing: &listing,
                };
                self.start_ready_shards(ready, &mut done, &mut running, &mut tasks);
            } else if stopping && tasks.is_empty() {
                return;
            }
            tokio::select! {
                Some(joined) = tasks.join_next() => {
                    let (shard, end) = match joined {
                        Ok(result) => result,
                        Err(e) => {
                            tracing::error!(source = %self.name, error = %e, "a shard task failed; stopping the source");
                            self.shutdown.request();
                            continue;
                        }
                    };
                    running.remove(&shard);
                    let task_end = match end {
                        ShardEnd::Finished => TaskEnd::Finished,
                        ShardEnd::Stopped => TaskEnd::Stopped,
                    };
                    self.ownership.ended(self.stream_key(), &shard, task_end);
                    if let ShardEnd::Finished = end {
                        tracing::info!(source = %self.name, %shard, "shard read to its end");
                        discover.reset_immediately();
                    }
                }
                Ok(()) = ownership.changed(), if !self.shutdown.is_requested() => {}
                Ok(()) = wanted.changed(), if !self.shutdown.is_requested() => {
                    wanted_changed = true;
                }
                _ = discover.tick(), if !self.shutdown.is_requested() => {
                    match list_shards(&self.client, &self.stream).await {
                        Ok(list) => {
                            backoff.reset();
                            let known = shards.len();
                            self.ownership.listed(self.stream_key(), &list);
                            shards = list.into_iter().map(|s| (s.id.clone(), s)).collect();
                            closed_tx.send_replace(
                                shards.values().filter(|s| s.closed).map(|s| s.id.clone()).collect(),
                            );
                            listing_tx.send_replace(Arc::new(shards.clone()));
                            if shards.len() != known {
                                tracing::info!(source = %self.name, shards = shards.len(), "shard list changed");
                            }
                        }
                        Err(error) => {
                            tracing::warn!(source = %self.name, %error, "cannot list shards; retrying");
                            let delay = backoff.next_delay();
                            discover.reset_after(delay);
                        }
                    }
                }
                _ = self.shutdown.requested(), if !draining => {
                    // No new shards start from now on; running ones finish their batch and stop.
                    draining = true;
                }
            }
        }
    }

    /// With `start_position = "latest"`: stores, for every pipeline that has
    /// none yet, the moment it starts on this source, and writes it before
    /// anything is read, so that a restart, a child shard found later, or a
    /// shard closed while stopped all start from that same moment. Retries
    /// the write until it succeeds; false if shutdown came first.
    async fn store_latest_moments(&self, pipelines: &[Arc<Pipeline>]) -> bool {
        if self.config.start_position != StartPosition::Latest {
            return true;
        }
        let stream = self.stream_key();
        let now_ms = now_ms();
        let mut stored_new = false;
        for pipeline in pipelines {
            if self
                .checkpoints
                .source_start(&pipeline.name, stream)
                .is_none()
            {
                self.checkpoints
                    .start_source_at(&pipeline.name, stream, now_ms);
                stored_new = true;
            }
        }
        if !stored_new {
            return true;
        }
        let mut backoff = Backoff::kinesis();
        loop {
            match self.checkpoints.flush().await {
                Ok(()) => break,
                Err(error) => {
                    tracing::error!(source = %self.name, error = %format!("{error:#}"), "cannot store where `latest` starts; not reading until it is stored");
                }
            }
            tokio::select! {
                _ = backoff.wait() => {}
                _ = self.shutdown.requested() => return false,
            }
        }
        true
    }

    /// The source's start position for `pipeline`, resolved (`start.rs`).
    fn source_start_for(&self, pipeline: &Pipeline) -> SourceStart {
        match self.config.start_position {
            StartPosition::TrimHorizon => SourceStart::TrimHorizon,
            StartPosition::AtTimestamp => match self
                .config
                .start_timestamp
                .as_deref()
                .map(validate_timestamp)
            {
                Some(Ok(ts)) => ts
                    .to_millis()
                    .map_or(SourceStart::TrimHorizon, SourceStart::Moment),
                // Refused by config validation; never reached.
                _ => SourceStart::TrimHorizon,
            },
            StartPosition::Latest => SourceStart::Moment(
                self.checkpoints
                    .source_start(&pipeline.name, self.stream_key())
                    .unwrap_or_else(now_ms),
            ),
        }
    }

    /// Where `pipeline` starts on `shard`, from the stored state and the
    /// lineage; a halted pipeline takes no part.
    fn start_of(
        &self,
        pipeline: &Pipeline,
        shard: &ShardInfo,
        shards: &BTreeMap<String, ShardInfo>,
    ) -> Start {
        if pipeline.is_halted() {
            return Start::Done;
        }
        let stream = self.stream_key();
        let parents: Vec<Parent> = shard
            .parents
            .iter()
            .map(|p| Parent {
                listed: shards.contains_key(p),
                stored: self.checkpoints.get(&pipeline.name, stream, p),
            })
            .collect();
        let own = self.checkpoints.get(&pipeline.name, stream, &shard.id);
        pipeline_start(own.as_ref(), &parents, self.source_start_for(pipeline))
    }

    fn start_ready_shards(
        self: &Arc<Self>,
        ready: Ready<'_>,
        done: &mut HashSet<String>,
        running: &mut HashSet<String>,
        tasks: &mut JoinSet<(String, ShardEnd)>,
    ) {
        let pipelines = self.pipelines.active();
        for shard in ready.shards.values() {
            if done.contains(&shard.id) || running.contains(&shard.id) {
                continue;
            }
            // A pipeline waiting for a parent does not hold the others
            // back: the shard starts for those ready, and the waiting one
            // joins once its parents are finished (`Lanes::reconcile`).
            let mut any_waits = false;
            let starts: Vec<Start> = pipelines
                .iter()
                .map(|p| match self.start_of(p, shard, ready.shards) {
                    Start::Wait => {
                        any_waits = true;
                        Start::Done
                    }
                    start => start,
                })
                .collect();
            match plan(&starts) {
                ShardPlan::Wait => {}
                ShardPlan::Finished => {
                    if !any_waits {
                        done.insert(shard.id.clone());
                    }
                }
                ShardPlan::Read { shared, lanes } => {
                    // Only a shard this instance holds (its lease, with the lease store).
                    let Some(hold) = self.ownership.start(self.stream_key(), &shard.id) else {
                        continue;
                    };
                    running.insert(shard.id.clone());
                    let me = self.clone();
                    let id = shard.id.clone();
                    let task = ShardTask {
                        shard: shard.clone(),
                        start: shared,
                        lanes: pipelines.iter().cloned().zip(lanes).collect(),
                        closed: ready.closed.clone(),
                        listing: ready.listing.clone(),
                        hold,
                    };
                    tracing::info!(source = %self.name, shard = %id, start = ?task.start, "reading shard");
                    tasks.spawn(async move {
                        let end = me.run_shard(task).await;
                        (id, end)
                    });
                }
            }
        }
    }

    async fn run_shard(self: Arc<Self>, task: ShardTask) -> ShardEnd {
        let ShardTask {
            shard,
            start,
            lanes: lane_starts,
            closed,
            mut listing,
            hold,
        } = task;
        let shard_id = shard.id.clone();
        let stream = self.stream_key().to_string();
        let (stop, stop_forwarder) = shard_stop(&self.shutdown, &hold, self.handoff_drain);
        let calls = self.stats.get_records_counter(&shard_id);
        let read_errors = self.stats.read_errors();
        let setup = {
            let (client, stream, shard, limit, poll, calls, deaggregate, budget) = (
                self.client.clone(),
                self.stream.clone(),
                shard_id.clone(),
                self.config.max_records_per_read,
                Duration::from_millis(self.config.poll_interval_ms),
                calls.clone(),
                self.config.deaggregate,
                self.budget.clone(),
            );
            Arc::new(ReadSetup {
                make_reader: Box::new(move |at| {
                    ShardReader::new(
                        client.clone(),
                        stream.clone(),
                        shard.clone(),
                        at,
                        limit,
                        poll,
                    )
                    .counting_calls(calls.clone())
                    .counting_errors(read_errors.clone())
                    .deaggregating(deaggregate)
                    .budgeted(budget.clone())
                }),
            })
        };
        // The shared reader reads one batch ahead of publishing.
        let (tx, mut rx) = mpsc::channel::<ReadBatch>(1);
        let tip = match &self.consumer_arn {
            Some(consumer) => {
                let setup = setup.clone();
                TipReader::Efo(Box::new(
                    EfoReader::new(
                        self.client.clone(),
                        consumer.clone(),
                        shard_id.clone(),
                        start.clone(),
                        self.config.deaggregate,
                        closed,
                        Box::new(move |at| (setup.make_reader)(at)),
                    )
                    .counting(self.stats.efo_shard(&shard_id))
                    .budgeted(self.budget.clone()),
                ))
            }
            None => TipReader::Polling(Box::new((setup.make_reader)(start.clone()))),
        };
        let behind = {
            let (stats, shard) = (self.stats.clone(), shard_id.clone());
            move |ms| stats.set_millis_behind(&shard, ms)
        };
        let read_ahead = tokio::spawn(read_loop(tip, tx, stop.clone(), behind));
        let (rejoin_tx, mut rejoin_rx) = mpsc::unbounded_channel::<Rejoin>();
        let mut lanes = Lanes {
            context: LaneContext {
                stream,
                shard_id: Arc::from(shard_id.as_str()),
                stop: stop.clone(),
                hold: hold.clone(),
                read: setup,
                rejoin: rejoin_tx,
            },
            slots: Vec::new(),
            tasks: JoinSet::new(),
            by_task: BTreeMap::new(),
        };
        for (pipeline, lane_start) in lane_starts {
            match lane_start {
                LaneStart::None => {}
                LaneStart::Attached { skip } => {
                    lanes.spawn(&self, pipeline, skip, start.clone(), true)
                }
                LaneStart::Detached { at } => {
                    let attached = at == start;
                    if !attached {
                        // Its start is not the shared reader's: it begins on its
                        // own reader (its queue is closed) and rejoins once caught up.
                        tracing::info!(source = %self.name, pipeline = %pipeline.name, shard = %shard_id, start = ?at, "pipeline starts on its own reader");
                    }
                    lanes.spawn(&self, pipeline, None, at, attached)
                }
            }
        }
        // A pipeline that cannot start here yet (a parent not finished for
        // it, or, after a reload, its previous version still finishing) is
        // `waiting`: looked at again when lanes end, the listing changes, and
        // every second. Pipelines added or removed by a reload come through
        // `active` (the list may have changed since the plan was made).
        let mut active = self.pipelines.subscribe_active();
        let list = active.borrow_and_update().clone();
        let mut waiting = lanes.reconcile(&self, &list, &shard, &listing.borrow());
        let mut recheck = tokio::time::interval(Duration::from_secs(1));
        // Publish until the shard ends, shutdown, or no lane is attached or alive.
        let mut last_published: Option<ShardPosition> = None;
        let mut reading = true;
        let mut lost = false;
        let mut ends = Vec::new();
        loop {
            if lanes.tasks.is_empty() {
                // A reload may have added a pipeline just now.
                if active.has_changed().unwrap_or(false) && !stop.is_requested() {
                    let list = active.borrow_and_update().clone();
                    waiting = lanes.reconcile(&self, &list, &shard, &listing.borrow());
                    if !lanes.tasks.is_empty() {
                        continue;
                    }
                }
                break;
            }
            let attached = lanes.slots.iter().any(|s| s.queue.is_some());
            tokio::select! {
                // Paused while every live lane catches up on its own reader.
                read = rx.recv(), if reading && attached => {
                    let Some(read) = read else {
                        reading = false;
                        lanes.detach_all();
                        continue;
                    };
                    if let Some(last) = read.records.last() {
                        last_published = Some(ShardPosition::after(last));
                    }
                    let end = read.end;
                    let published = Arc::new(Published {
                        batch: Arc::new(ShardBatch {
                            source: self.name.clone(),
                            shard_id: lanes.context.shard_id.clone(),
                            records: Arc::new(read.records),
                            millis_behind: read.millis_behind,
                            charge: read.charge,
                        }),
                        end,
                    });
                    self.publish(&mut lanes.slots, published, &stop).await;
                    if end {
                        // Nothing more to read; attached lanes finish with their queues.
                        reading = false;
                        lanes.detach_all();
                    }
                }
                Some(rejoin) = rejoin_rx.recv() => {
                    answer_rejoin(rejoin, reading, &last_published, &mut lanes.slots);
                }
                Some(joined) = lanes.tasks.join_next_with_id() => {
                    let (slot, end) = match joined {
                        Ok((id, end)) => (lanes.by_task.remove(&id), end),
                        Err(e) => {
                            if !e.is_cancelled() {
                                tracing::error!(source = %self.name, shard = %shard_id, error = %e, "a pipeline lane failed");
                            }
                            (lanes.by_task.remove(&e.id()), LaneEnd::Stopped)
                        }
                    };
                    if let Some(slot) = slot.and_then(|i| lanes.slots.get_mut(i)) {
                        slot.ended();
                        // A retired lane's end says nothing about the shard.
                        if !slot.retiring {
                            ends.push(end);
                        }
                    }
                    if waiting && !stop.is_requested() {
                        let list = self.pipelines.active();
                        waiting = lanes.reconcile(&self, &list, &shard, &listing.borrow());
                    }
                }
                Ok(()) = active.changed(), if !stop.is_requested() => {
                    let list = active.borrow_and_update().clone();
                    waiting = lanes.reconcile(&self, &list, &shard, &listing.borrow());
                }
                Ok(()) = listing.changed(), if waiting && !stop.is_requested() => {
                    let list = self.pipelines.active();
                    waiting = lanes.reconcile(&self, &list, &shard, &listing.borrow_and_update());
                }
                _ = recheck.tick(), if waiting && !stop.is_requested() => {
                    let list = self.pipelines.active();
                    waiting = lanes.reconcile(&self, &list, &shard, &listing.borrow());
                }
                _ = hold.lost(), if !lost => {
                    // Another instance may own the shard now: stop writing at once.
                    lost = true;
                    tracing::warn!(source = %self.name, shard = %shard_id, "lease no longer valid here (lost, or fenced); stopping the shard at once");
                    lanes.tasks.abort_all();
                    reading = false;
                }
                else => break,
            }
        }
        read_ahead.abort();
        stop_forwarder.abort();
        lanes.slots.iter().for_each(|s| s.forwarder.abort());
        if hold.state() == HoldState::Lost {
            return ShardEnd::Stopped;
        }
        let finished = !waiting
            && ends
                .iter()
                .all(|e| matches!(e, LaneEnd::Finished | LaneEnd::Halted))
            && ends.contains(&LaneEnd::Finished);
        if finished {
            ShardEnd::Finished
        } else {
            ShardEnd::Stopped
        }
    }

    /// Hands `published` to every attached lane. A lane whose queue is full
    /// is detached (it catches up on its own reader) as long as another lane
    /// keeps up; when every attached lane is full, the shared reader waits
    /// (backpressure) instead of multiplying readers.
    async fn publish(&self, slots: &mut [LaneSlot], published: Arc<Published>, stop: &Shutdown) {
        let mut full = Vec::new();
        let mut delivered = 0usize;
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(queue) = &slot.queue else { continue };
            match queue.try_send(published.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => full.push(i),
                Err(mpsc::error::TrySendError::Closed(_)) => slot.queue = None,
            }
        }
        if full.is_empty() {
            return;
        }
        if delivered > 0 {
            for i in full {
                tracing::info!(source = %self.name, pipeline = %slots[i].pipeline.name, "pipeline's buffer is full; detaching it from the shared reader");
                slots[i].queue = None;
            }
            return;
        }
        for i in full {
            let Some(queue) = &slots[i].queue else {
                continue;
            };
            let sent = tokio::select! {
                sent = queue.send(published.clone()) => sent.is_ok(),
                _ = stop.requested() => false,
            };
            if !sent {
                slots[i].queue = None;
            }
        }
    }
}

/// What a shard task starts with (`start_ready_shards`).
struct ShardTask {
    shard: ShardInfo,
    /// Where the shared reader starts.
    start: StartAt,
    /// Each active pipeline and how its lane starts.
    lanes: Vec<(Arc<Pipeline>, LaneStart)>,
    closed: tokio::sync::watch::Receiver<HashSet<String>>,
    /// The source's shards as last listed (parents of pipelines added later).
    listing: tokio::sync::watch::Receiver<Arc<BTreeMap<String, ShardInfo>>>,
    hold: Hold,
}

/// What `start_ready_shards` decides from.
struct Ready<'a> {
    shards: &'a BTreeMap<String, ShardInfo>,
    closed: &'a tokio::sync::watch::Receiver<HashSet<String>>,
    listing: &'a tokio::sync::watch::Receiver<Arc<BTreeMap<String, ShardInfo>>>,
}

/// What every lane of one shard task shares.
struct LaneContext {
    stream: String,
    shard_id: Arc<str>,
    stop: Shutdown,
    hold: Hold,
    read: Arc<ReadSetup>,
    rejoin: mpsc::UnboundedSender<Rejoin>,
}

/// One lane of a shard task, running or ended.
struct LaneSlot {
    pipeline: Arc<Pipeline>,
    /// Its queue while attached to the shared reader.
    queue: Option<mpsc::Sender<Arc<Published>>>,
    /// Its own stop: the shard's, or its retirement (`lane_stop`).
    stop: Shutdown,
    forwarder: tokio::task::JoinHandle<()>,
    /// Its pipeline was removed or replaced: it stops after the batch in flight.
    retiring: bool,
    running: bool,
}

impl LaneSlot {
    fn ended(&mut self) {
        self.running = false;
        self.queue = None;
        self.forwarder.abort();
    }
}

/// The lanes of one shard task: each pipeline's, as reloads add and retire them.
struct Lanes {
    context: LaneContext,
    /// Indexed by lane number (`Lane::index`); ended lanes stay.
    slots: Vec<LaneSlot>,
    tasks: JoinSet<LaneEnd>,
    by_task: BTreeMap<tokio::task::Id, usize>,
}

impl Lanes {
    /// Starts `pipeline`'s lane: attached to the shared reader from its
    /// first batch, or on its own reader from `initial`.
    fn spawn(
        &mut self,
        runner: &SourceRunner,
        pipeline: Arc<Pipeline>,
        position: Option<ShardPosition>,
        initial: StartAt,
        attached: bool,
    ) {
        let index = self.slots.len();
        let (queue, receiver) = mpsc::channel(pipeline.buffer_batches);
        let (stop, forwarder) = lane_stop(&self.context.stop, runner.retire_drain);
        let lane = Lane {
            index,
            pipeline: pipeline.clone(),
            source: runner.name.clone(),
            stream: self.context.stream.clone(),
            shard_id: self.context.shard_id.clone(),
            checkpoints: runner.checkpoints.clone(),
            shutdown: stop.clone(),
            hold: self.context.hold.clone(),
            position,
            initial,
            read: self.context.read.clone(),
            rejoin: self.context.rejoin.clone(),
        };
        let handle = self.tasks.spawn(lane.run(receiver));
        self.by_task.insert(handle.id(), index);
        self.slots.push(LaneSlot {
            pipeline,
            queue: attached.then_some(queue),
            stop,
            forwarder,
            retiring: false,
            running: true,
        });
    }

    fn detach_all(&mut self) {
        self.slots.iter_mut().for_each(|s| s.queue = None);
    }

    /// Follows the active pipelines: a lane whose pipeline is gone (removed,
    /// or replaced by a changed version) stops after its batch in flight; a
    /// pipeline without a lane gets one from its stored position once no
    /// earlier version of it still runs here. True if some pipeline waits
    /// (for that, or for a parent shard).
    fn reconcile(
        &mut self,
        runner: &SourceRunner,
        active: &[Arc<Pipeline>],
        shard: &ShardInfo,
        listed: &BTreeMap<String, ShardInfo>,
    ) -> bool {
        for slot in self.slots.iter_mut().filter(|s| s.running && !s.retiring) {
            if !active.iter().any(|p| same(p, &slot.pipeline)) {
                tracing::info!(source = %runner.name, pipeline = %slot.pipeline.name, shard = %self.context.shard_id, "pipeline removed or changed; its lane stops after the batch in flight");
                slot.retiring = true;
                slot.queue = None;
                slot.stop.request();
            }
        }
        let mut waiting = false;
        for pipeline in active {
            if self.slots.iter().any(|s| same(&s.pipeline, pipeline)) {
                continue;
            }
            if self
                .slots
                .iter()
                .any(|s| s.running && s.pipeline.name == pipeline.name)
            {
                waiting = true;
                continue;
            }
            match runner.start_of(pipeline, shard, listed) {
                Start::Done => {}
                Start::Wait => waiting = true,
                Start::Read { at, skip } => {
                    tracing::info!(source = %runner.name, pipeline = %pipeline.name, shard = %self.context.shard_id, start = ?at, "pipeline added; it starts on its own reader");
                    self.spawn(runner, pipeline.clone(), skip, at, false);
                }
            }
        }
        waiting
    }
}

/// A lane's own stop signal: requested with the shard's, or alone when its
/// pipeline is retired (then abandoned after `drain`, if set); abandoned
/// with the shard's.
fn lane_stop(shard: &Shutdown, drain: Option<Duration>) -> (Shutdown, tokio::task::JoinHandle<()>) {
    let lane = Shutdown::new();
    let (shard, me) = (shard.clone(), lane.clone());
    let forwarder = tokio::spawn(async move {
        let retired = tokio::select! {
            _ = shard.requested() => false,
            _ = me.requested() => true,
        };
        me.request();
        let drained = async {
            match (retired, drain) {
                (true, Some(drain)) => tokio::time::sleep(drain).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shard.abandoned() => {}
            _ = drained => tracing::warn!("a removed pipeline's batch did not finish within shutdown_timeout_s; abandoning it (not checkpointed)"),
        }
        me.abandon();
    });
    (lane, forwarder)
}

/// The stop signal of one shard's task: requested with the process's
/// shutdown or when the lease is handed off (the batch in flight finishes),
/// abandoned with the process's, when the lease is lost, or `drain` after a
/// handoff began.
fn shard_stop(
    shutdown: &Shutdown,
    hold: &Hold,
    drain: Duration,
) -> (Shutdown, tokio::task::JoinHandle<()>) {
    let stop = Shutdown::new();
    let (shutdown, hold, task_stop) = (shutdown.clone(), hold.clone(), stop.clone());
    let forwarder = tokio::spawn(async move {
        let handoff = tokio::select! {
            _ = shutdown.requested() => false,
            state = hold.released() => state == HoldState::Handoff,
        };
        task_stop.request();
        let drained = async {
            if handoff {
                tokio::time::sleep(drain).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = shutdown.abandoned() => {}
            _ = hold.lost() => {}
            _ = drained => tracing::warn!("handoff: the batch in flight did not finish in time; abandoning it"),
        }
        task_stop.abandon();
    });
    (stop, forwarder)
}

/// Lets a catching-up lane back onto the shared reader if nothing was
/// published past its position (so no batch falls between the two readers)
/// and the shared reader is still reading.
fn answer_rejoin(
    rejoin: Rejoin,
    reading: bool,
    last_published: &Option<ShardPosition>,
    slots: &mut [LaneSlot],
) {
    let caught_up = match (last_published, &rejoin.position) {
        (None, _) => true,
        (Some(published), Some(position)) => position.cmp_position(published).is_ge(),
        (Some(_), None) => false,
    };
    let slot = slots
        .get_mut(rejoin.lane)
        .filter(|s| s.running && !s.retiring);
    let accepted = reading && caught_up && slot.is_some();
    if accepted && let Some(slot) = slot {
        slot.queue = Some(rejoin.queue);
    }
    let _ = rejoin.accepted.send(accepted);
}

async fn read_loop(
    mut reader: TipReader,
    tx: mpsc::Sender<ReadBatch>,
    shutdown: Shutdown,
    behind: impl Fn(i64) + Send,
) {
    loop {
        let batch = tokio::select! {
            batch = reader.next() => batch,
            _ = shutdown.requested() => return,
        };
        if let Some(ms) = batch.millis_behind {
            behind(ms);
        }
        let end = batch.end;
        if (!batch.records.is_empty() || end) && tx.send(batch).await.is_err() {
            return;
        }
        if end {
            return;
        }
    }
}
