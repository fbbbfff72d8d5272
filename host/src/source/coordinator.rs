//! Runs one source: discovers its shards, starts one task per shard once its
//! parents are done, and in each task reads the shard once (the shared
//! reader) and publishes its batches to every pipeline on the source, each
//! through its own bounded queue (`lane.rs`).
//!
//! Invariants:
//! - A child shard starts only when every parent still listed is read to its
//!   end and acknowledged by every pipeline still running (or was already
//!   finished per checkpoint), so per-key order holds across splits and merges.
//! - Per pipeline, batches of one shard are processed one after another, and
//!   its checkpoint moves after its outputs acknowledged a batch. Pipelines do
//!   not wait for each other: a pipeline whose queue (`buffer_batches`) is full
//!   while another keeps up is detached and catches up on its own reader,
//!   then rejoins (see `lane.rs`). When every attached pipeline is full, the
//!   shared reader waits: GetRecords calls do not multiply with slow outputs.
//! - The shared reader reads one batch ahead of publishing; memory per shard
//!   is bounded by the pipelines' queues.
//! - On shutdown each lane finishes the batch it is delivering and stops;
//!   batches read but not started are dropped unacknowledged (read again
//!   after restart, never written twice).

use super::efo::EfoReader;
use super::lane::{Lane, LaneEnd, Published, ReadSetup, Rejoin};
use super::reader::{ReadBatch, ShardReader, StartAt};
use super::shards::{ShardInfo, list_shards};
use crate::backoff::Backoff;
use crate::checkpoint::Checkpoints;
use crate::config::{Source, StartPosition, validate_timestamp};
use crate::kinesis::StreamRef;
use crate::pipeline::{Pipeline, ShardBatch};
use crate::record::ShardPosition;
use crate::shutdown::Shutdown;
use aws_sdk_kinesis::Client;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
}

/// The shared reader of a shard: GetRecords, or an enhanced fan-out subscription.
enum TipReader {
    Polling(ShardReader),
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

/// What reading one source cost, read by `/metrics`.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// GetRecords calls per shard, by this process (all pipelines on the source together).
    get_records: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    /// MillisBehindLatest of the last batch the shared reader read, per shard.
    millis_behind: Mutex<BTreeMap<String, i64>>,
}

impl SourceStats {
    /// The counter of GetRecords calls on `shard` (created on first use).
    pub fn get_records_counter(&self, shard: &str) -> Arc<AtomicU64> {
        match self.get_records.lock() {
            Ok(mut map) => map.entry(shard.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Records how far behind the tip the shared reader of `shard` is.
    pub fn set_millis_behind(&self, shard: &str, ms: i64) {
        if let Ok(mut map) = self.millis_behind.lock() {
            map.insert(shard.to_string(), ms);
        }
    }

    /// (shard, MillisBehindLatest) for every shard read so far.
    pub fn millis_behind(&self) -> Vec<(String, i64)> {
        self.millis_behind
            .lock()
            .map(|map| map.iter().map(|(s, ms)| (s.clone(), *ms)).collect())
            .unwrap_or_default()
    }

    /// (shard, GetRecords calls) for every shard read so far.
    pub fn get_records(&self) -> Vec<(String, u64)> {
        self.get_records
            .lock()
            .map(|map| {
                map.iter()
                    .map(|(shard, n)| (shard.clone(), n.load(Ordering::Relaxed)))
                    .collect()
            })
            .unwrap_or_default()
    }
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
        let mut shards: BTreeMap<String, ShardInfo> = BTreeMap::new();
        let mut done: HashSet<String> = HashSet::new();
        let mut read_here: HashSet<String> = HashSet::new();
        let mut running: HashSet<String> = HashSet::new();
        let mut tasks: JoinSet<(String, ShardEnd)> = JoinSet::new();
        let mut discover =
            tokio::time::interval(Duration::from_secs(self.config.shard_discovery_interval_s));
        let mut backoff = Backoff::kinesis();
        let (closed_tx, closed) = tokio::sync::watch::channel(HashSet::new());
        // Set once shutdown is seen, so that branch does not fire again (it
        // would resolve at once on every turn and spin while tasks drain).
        let mut draining = false;
        loop {
            if !self.shutdown.is_requested() && self.active_pipelines().next().is_some() {
                self.start_ready_shards(
                    &shards,
                    &mut done,
                    &read_here,
                    &mut running,
                    &mut tasks,
                    &closed,
                );
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
                    if let ShardEnd::Finished = end {
                        tracing::info!(source = %self.name, %shard, "shard read to its end");
                        done.insert(shard.clone());
                        read_here.insert(shard);
                        discover.reset_immediately();
                    }
                }
                _ = discover.tick(), if !self.shutdown.is_requested() => {
                    match list_shards(&self.client, &self.stream).await {
                        Ok(list) => {
                            backoff.reset();
                            let known = shards.len();
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

    fn start_ready_shards(
        self: &Arc<Self>,
        shards: &BTreeMap<String, ShardInfo>,
        done: &mut HashSet<String>,
        read_here: &HashSet<String>,
        running: &mut HashSet<String>,
        tasks: &mut JoinSet<(String, ShardEnd)>,
        closed: &tokio::sync::watch::Receiver<HashSet<String>>,
    ) {
        // Marking a shard done can make its children ready: repeat until stable.
        loop {
            let mut progressed = false;
            for shard in shards.values() {
                if done.contains(&shard.id) || running.contains(&shard.id) {
                    continue;
                }
                let parents_done = shard
                    .parents
                    .iter()
                    .all(|p| !shards.contains_key(p) || done.contains(p));
                if !parents_done {
                    continue;
                }
                match self.start_for(shard, read_here) {
                    None => {
                        done.insert(shard.id.clone());
                        progressed = true;
                    }
                    Some(start) => {
                        running.insert(shard.id.clone());
                        let me = self.clone();
                        let id = shard.id.clone();
                        let closed = closed.clone();
                        tracing::info!(source = %self.name, shard = %id, ?start, "reading shard");
                        tasks.spawn(async move {
                            let end = me.run_shard(id.clone(), start, closed).await;
                            (id, end)
                        });
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// Where to start reading `shard`, or None if no pipeline needs it.
    fn start_for(&self, shard: &ShardInfo, read_here: &HashSet<String>) -> Option<StartAt> {
        let stream = self.stream_key();
        let mut sequences = Vec::new();
        let mut latest_since: Option<i64> = None;
        let mut unstarted = false;
        let mut needed = false;
        for pipeline in self.active_pipelines() {
            match self.checkpoints.get(&pipeline.name, stream, &shard.id) {
                Some(p) if p.finished => {}
                Some(p) => {
                    needed = true;
                    match (p.done(), p.latest_since_ms) {
                        (Some(done), _) => sequences.push(done),
                        (None, Some(ms)) => {
                            latest_since = Some(latest_since.map_or(ms, |t| t.min(ms)));
                            unstarted = true;
                        }
                        (None, None) => unstarted = true,
                    }
                }
                None => {
                    needed = true;
                    unstarted = true;
                }
            }
        }
        if !needed {
            return None;
        }
        let configured = match self.config.start_position {
            StartPosition::TrimHorizon => StartAt::TrimHorizon,
            StartPosition::AtTimestamp => match self
                .config
                .start_timestamp
                .as_deref()
                .map(validate_timestamp)
            {
                Some(Ok(ts)) => StartAt::AtTimestamp(ts),
                _ => StartAt::TrimHorizon,
            },
            StartPosition::Latest => {
                if shard.parents.iter().any(|p| read_here.contains(p)) {
                    // Everything in a child of a shard we read to its end is new to us.
                    StartAt::TrimHorizon
                } else if shard.closed && sequences.is_empty() {
                    // Nothing new will ever arrive in a closed shard.
                    return None;
                } else if let Some(ms) = latest_since {
                    // A previous run started here at LATEST and acknowledged nothing
                    // yet: resume from that moment, not from a new LATEST.
                    StartAt::AtTimestamp(aws_smithy_types::DateTime::from_millis(ms))
                } else {
                    StartAt::Latest
                }
            }
        };
        let earliest = sequences.into_iter().min_by(|a, b| a.cmp_position(b));
        Some(match (earliest, unstarted) {
            (Some(done), false) => StartAt::after(&done),
            // A pipeline without a position joins the earliest one, unless the configured start is earlier still.
            (Some(_), true) if configured == StartAt::TrimHorizon => StartAt::TrimHorizon,
            (Some(done), true) => StartAt::after(&done),
            (None, _) => configured,
        })
    }

    async fn run_shard(
        self: Arc<Self>,
        shard_id: String,
        start: StartAt,
        closed: tokio::sync::watch::Receiver<HashSet<String>>,
    ) -> ShardEnd {
        let stream = self.stream_key().to_string();
        if start == StartAt::Latest {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            for pipeline in self.active_pipelines() {
                self.checkpoints
                    .started_at_latest(&pipeline.name, &stream, &shard_id, now_ms);
            }
        }
        let calls = self.stats.get_records_counter(&shard_id);
        let setup = {
            let (client, stream, shard, limit, poll, calls, deaggregate) = (
                self.client.clone(),
                self.stream.clone(),
                shard_id.clone(),
                self.config.max_records_per_read,
                Duration::from_millis(self.config.poll_interval_ms),
                calls.clone(),
                self.config.deaggregate,
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
                }),
                initial: start.clone(),
            })
        };
        // The shared reader reads one batch ahead of publishing.
        let (tx, mut rx) = mpsc::channel::<ReadBatch>(1);
        let tip = match &self.consumer_arn {
            Some(consumer) => {
                let setup = setup.clone();
                TipReader::Efo(Box::new(EfoReader::new(
                    self.client.clone(),
                    consumer.clone(),
                    shard_id.clone(),
                    start,
                    self.config.deaggregate,
                    closed,
                    Box::new(move |at| (setup.make_reader)(at)),
                )))
            }
            None => TipReader::Polling((setup.make_reader)(start)),
        };
        let behind = {
            let (stats, shard) = (self.stats.clone(), shard_id.clone());
            move |ms| stats.set_millis_behind(&shard, ms)
        };
        let read_ahead = tokio::spawn(read_loop(tip, tx, self.shutdown.clone(), behind));
        let (rejoin_tx, mut rejoin_rx) = mpsc::unbounded_channel::<Rejoin>();
        let shard_arc: Arc<str> = Arc::from(shard_id.as_str());
        let mut queues: Vec<Option<mpsc::Sender<Arc<Published>>>> =
            vec![None; self.pipelines.len()];
        let mut lanes = JoinSet::new();
        for (i, pipeline) in self.pipelines.iter().enumerate() {
            let checkpoint = self.checkpoints.get(&pipeline.name, &stream, &shard_id);
            if pipeline.is_halted() || checkpoint.as_ref().is_some_and(|c| c.finished) {
                continue;
            }
            let (queue, receiver) = mpsc::channel(pipeline.buffer_batches);
            queues[i] = Some(queue);
            let lane = Lane {
                index: i,
                pipeline: pipeline.clone(),
                source: self.name.clone(),
                stream: stream.clone(),
                shard_id: shard_arc.clone(),
                checkpoints: self.checkpoints.clone(),
                shutdown: self.shutdown.clone(),
                position: checkpoint.and_then(|c| c.done()),
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
                        }),
                        end,
                    });
                    self.publish(&mut queues, published).await;
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
                        tracing::error!(source = %self.name, shard = %shard_id, error = %e, "a pipeline lane failed");
                        LaneEnd::Stopped
                    }));
                }
                else => break,
            }
            if reading && queues.iter().all(Option::is_none) && !self.shutdown.is_requested() {
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
                _ = self.shutdown.requested() => false,
            };
            if !sent {
                queues[i] = None;
            }
        }
    }
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
