//! Runs one source: discovers its shards, starts one task per shard that
//! `start.rs` says is ready (and where each pipeline starts on it), and in
//! each task reads the shard once (the shared reader) and publishes its
//! batches to every pipeline on the source, each through its own bounded
//! queue (`lane.rs`). A pipeline whose start the shared reader cannot serve
//! begins on its own reader and joins the shared one once caught up.
//!
//! Invariants:
//! - A child shard starts only when every parent still listed is finished in
//!   the checkpoint store for every pipeline still running (read to its end
//!   and acknowledged), so per-key order holds across splits and merges, in
//!   this run and after any restart.
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
    pub pipelines: Vec<Arc<Pipeline>>,
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

    fn active_pipelines(&self) -> impl Iterator<Item = &Arc<Pipeline>> {
        self.pipelines.iter().filter(|p| !p.is_halted())
    }

    /// Runs until shutdown, or until every pipeline on the source halted.
    pub async fn run(self: Arc<Self>) {
        if !self.store_latest_moments().await {
            return;
        }
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
            if !self.shutdown.is_requested() && self.active_pipelines().next().is_some() {
                self.start_ready_shards(&shards, &mut done, &mut running, &mut tasks, &closed);
            } else if tasks.is_empty() {
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
                _ = self.shutdown.requested(), if !draining && !tasks.is_empty() => {
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
    async fn store_latest_moments(&self) -> bool {
        if self.config.start_position != StartPosition::Latest {
            return true;
        }
        let stream = self.stream_key();
        let now_ms = now_ms();
        let mut stored_new = false;
        for pipeline in &self.pipelines {
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

    /// Where each pipeline starts on `shard`, from the stored state and the
    /// lineage; a halted pipeline takes no part.
    fn plan_for(&self, shard: &ShardInfo, shards: &BTreeMap<String, ShardInfo>) -> ShardPlan {
        let stream = self.stream_key();
        let starts: Vec<Start> = self
            .pipelines
            .iter()
            .map(|pipeline| {
                if pipeline.is_halted() {
                    return Start::Done;
                }
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
            })
            .collect();
        plan(&starts)
    }

    fn start_ready_shards(
        self: &Arc<Self>,
        shards: &BTreeMap<String, ShardInfo>,
        done: &mut HashSet<String>,
        running: &mut HashSet<String>,
        tasks: &mut JoinSet<(String, ShardEnd)>,
        closed: &tokio::sync::watch::Receiver<HashSet<String>>,
    ) {
        for shard in shards.values() {
            if done.contains(&shard.id) || running.contains(&shard.id) {
                continue;
            }
            match self.plan_for(shard, shards) {
                ShardPlan::Wait => {}
                ShardPlan::Finished => {
                    done.insert(shard.id.clone());
                }
                ShardPlan::Read { shared, lanes } => {
                    // Only a shard this instance holds (its lease, with the lease store).
                    let Some(hold) = self.ownership.start(self.stream_key(), &shard.id) else {
                        continue;
                    };
                    running.insert(shard.id.clone());
                    let me = self.clone();
                    let id = shard.id.clone();
                    let closed = closed.clone();
                    tracing::info!(source = %self.name, shard = %id, start = ?shared, "reading shard");
                    tasks.spawn(async move {
                        let end = me.run_shard(id.clone(), shared, lanes, closed, hold).await;
                        (id, end)
                    });
                }
            }
        }
    }

    async fn run_shard(
        self: Arc<Self>,
        shard_id: String,
        start: StartAt,
        lane_starts: Vec<LaneStart>,
        closed: tokio::sync::watch::Receiver<HashSet<String>>,
        hold: Hold,
    ) -> ShardEnd {
        let stream = self.stream_key().to_string();
        let (stop, stop_forwarder) = shard_stop(&self.shutdown, &hold, self.handoff_drain);
        let calls = self.stats.get_records_counter(&shard_id);
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
        let shard_arc: Arc<str> = Arc::from(shard_id.as_str());
        let mut queues: Vec<Option<mpsc::Sender<Arc<Published>>>> =
            vec![None; self.pipelines.len()];
        let mut lanes = JoinSet::new();
        for ((i, pipeline), lane_start) in self.pipelines.iter().enumerate().zip(lane_starts) {
            let (position, initial) = match lane_start {
                LaneStart::None => continue,
                LaneStart::Attached { skip } => (skip, start.clone()),
                LaneStart::Detached { at } => (None, at),
            };
            let (queue, receiver) = mpsc::channel(pipeline.buffer_batches);
            if initial == start {
                queues[i] = Some(queue);
            } else {
                // Its start is not the shared reader's: it begins on its own
                // reader (its queue is closed) and rejoins once caught up.
                tracing::info!(source = %self.name, pipeline = %pipeline.name, shard = %shard_id, start = ?initial, "pipeline starts on its own reader");
            }
            let lane = Lane {
                index: i,
                pipeline: pipeline.clone(),
                source: self.name.clone(),
                stream: stream.clone(),
                shard_id: shard_arc.clone(),
                checkpoints: self.checkpoints.clone(),
                shutdown: stop.clone(),
                hold: hold.clone(),
                position,
                initial,
                read: setup.clone(),
                rejoin: rejoin_tx.clone(),
            };
            lanes.spawn(lane.run(receiver));
        }
        drop(rejoin_tx);
        // Publish until the shard ends, shutdown, or no lane is attached or alive.
        let mut last_published: Option<ShardPosition> = None;
        let mut reading = true;
        let mut ends = Vec::new();
        while !lanes.is_empty() {
            tokio::select! {
                read = rx.recv(), if reading => {
                    let Some(read) = read else {
                        reading = false;
                        queues.iter_mut().for_each(|q| *q = None);
                        continue;
                    };
                    if let Some(last) = read.records.last() {
                        last_published = Some(ShardPosition::after(last));
                    }
                    let end = read.end;
                    let published = Arc::new(Published {
                        batch: Arc::new(ShardBatch {
                            source: self.name.clone(),
                            shard_id: shard_arc.clone(),
                            records: Arc::new(read.records),
                            millis_behind: read.millis_behind,
                            charge: read.charge,
                        }),
                        end,
                    });
                    self.publish(&mut queues, published, &stop).await;
                    if end {
                        // Nothing more to read; attached lanes finish with their queues.
                        reading = false;
                        queues.iter_mut().for_each(|q| *q = None);
                    }
                }
                Some(rejoin) = rejoin_rx.recv() => {
                    answer_rejoin(rejoin, reading, &last_published, &mut queues);
                }
                Some(joined) = lanes.join_next() => {
                    ends.push(joined.unwrap_or_else(|e| {
                        if !e.is_cancelled() {
                            tracing::error!(source = %self.name, shard = %shard_id, error = %e, "a pipeline lane failed");
                        }
                        LaneEnd::Stopped
                    }));
                }
                _ = hold.lost() => {
                    // Another instance may own the shard now: stop writing at once.
                    tracing::warn!(source = %self.name, shard = %shard_id, "lease lost; stopping the shard at once");
                    lanes.abort_all();
                    reading = false;
                }
                else => break,
            }
            if reading && queues.iter().all(Option::is_none) && !stop.is_requested() {
                // Every live lane is catching up on its own reader: pause the
                // shared one until one rejoins (or all end).
                tokio::select! {
                    Some(rejoin) = rejoin_rx.recv() => {
                        answer_rejoin(rejoin, reading, &last_published, &mut queues);
                    }
                    Some(joined) = lanes.join_next() => {
                        ends.push(joined.unwrap_or(LaneEnd::Stopped));
                    }
                    else => {}
                }
            }
        }
        read_ahead.abort();
        stop_forwarder.abort();
        if hold.state() == HoldState::Lost {
            return ShardEnd::Stopped;
        }
        let finished = ends
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
    async fn publish(
        &self,
        queues: &mut [Option<mpsc::Sender<Arc<Published>>>],
        published: Arc<Published>,
        stop: &Shutdown,
    ) {
        let mut full = Vec::new();
        let mut delivered = 0usize;
        for (i, slot) in queues.iter_mut().enumerate() {
            let Some(queue) = slot else { continue };
            match queue.try_send(published.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => full.push(i),
                Err(mpsc::error::TrySendError::Closed(_)) => *slot = None,
            }
        }
        if full.is_empty() {
            return;
        }
        if delivered > 0 {
            for i in full {
                tracing::info!(source = %self.name, pipeline = %self.pipelines[i].name, "pipeline's buffer is full; detaching it from the shared reader");
                queues[i] = None;
            }
            return;
        }
        for i in full {
            let Some(queue) = &queues[i] else { continue };
            let sent = tokio::select! {
                sent = queue.send(published.clone()) => sent.is_ok(),
                _ = stop.requested() => false,
            };
            if !sent {
                queues[i] = None;
            }
        }
    }
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
    queues: &mut [Option<mpsc::Sender<Arc<Published>>>],
) {
    let caught_up = match (last_published, &rejoin.position) {
        (None, _) => true,
        (Some(published), Some(position)) => position.cmp_position(published).is_ge(),
        (Some(_), None) => false,
    };
    let accepted = reading && caught_up;
    if accepted && let Some(slot) = queues.get_mut(rejoin.lane) {
        *slot = Some(rejoin.queue);
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
