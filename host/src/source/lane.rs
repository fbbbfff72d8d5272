//! One pipeline's view of one shard: the batches the shared reader publishes
//! to it through a bounded queue and, when it falls behind, its own catch-up
//! reader.
//!
//! The shared reader (`coordinator.rs`, `run_shard`) publishes each batch to
//! every attached lane's queue (`buffer_batches` deep). A lane whose queue is
//! full while another lane keeps up is detached: its queue is closed, and once
//! the lane has processed what the queue held, it reads the shard itself from
//! its own position (a `ShardReader` starting after its last acknowledged
//! sequence number). When that reader is caught up (an empty read, or
//! MillisBehindLatest 0) the lane asks to rejoin; the shared reader accepts
//! only if the lane's position is at or past the last batch it published, so
//! no batch can fall between the two readers. After rejoining, records at or
//! before the lane's position are skipped, never processed twice.
//!
//! Invariants: a lane processes its shard's records in order, each once; its
//! checkpoint moves over a record only once `Pipeline::process` settled it
//! and every record before it (the settled prefix of the batch, advanced
//! while the rest of the batch is written); a halted pipeline's lane ends
//! and its checkpoint stays before the first record not settled;
//! a pipeline with no outputs at the moment holds the batch (and so its
//! checkpoint) until discovery finds one.

use super::reader::{ReadBatch, ShardReader, StartAt};
use crate::checkpoint::Checkpoints;
use crate::pipeline::progress::BatchProgress;
use crate::pipeline::{Pipeline, Processed, ShardBatch};
use crate::record::ShardPosition;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How often a pipeline with no outputs offers its batch again.
const NO_OUTPUTS_RETRY: Duration = Duration::from_millis(500);

/// A batch as published by the shared reader.
pub struct Published {
    pub batch: Arc<ShardBatch>,
    /// The shard is closed and this is its last batch.
    pub end: bool,
}

/// A detached lane asking to rejoin the shared reader.
pub struct Rejoin {
    pub lane: usize,
    /// The lane's new queue, if accepted.
    pub queue: mpsc::Sender<Arc<Published>>,
    /// The last record the lane acknowledged.
    pub position: Option<ShardPosition>,
    pub accepted: oneshot::Sender<bool>,
}

/// How a lane ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneEnd {
    /// Read to the end of the shard, everything acknowledged.
    Finished,
    /// Shutdown, or the shared reader stopped.
    Stopped,
    /// The pipeline halted.
    Halted,
}

/// What a catch-up reader needs to read the shard on its own.
pub struct ReadSetup {
    pub make_reader: Box<dyn Fn(StartAt) -> ShardReader + Send + Sync>,
}

pub struct Lane {
    pub index: usize,
    pub pipeline: Arc<Pipeline>,
    pub source: Arc<str>,
    pub stream: String,
    pub shard_id: Arc<str>,
    pub checkpoints: Arc<Checkpoints>,
    /// The shard's stop signal: the process's shutdown, or the lease passing
    /// on (handoff: a batch boundary; lost: at once, through `abandon`).
    pub shutdown: Shutdown,
    /// The right to read and write the shard (self-fencing: checked before
    /// every batch).
    pub hold: crate::ownership::Hold,
    /// The last record acknowledged (records up to it are skipped).
    pub position: Option<ShardPosition>,
    /// Where its own reader starts while it has no position (`start.rs`).
    pub initial: StartAt,
    pub read: Arc<ReadSetup>,
    pub rejoin: mpsc::UnboundedSender<Rejoin>,
}

enum Step {
    Continue,
    End(LaneEnd),
}

impl Lane {
    /// Runs the lane until the shard ends, the pipeline halts, or shutdown.
    pub async fn run(mut self, mut queue: mpsc::Receiver<Arc<Published>>) -> LaneEnd {
        loop {
            // Attached: take what the shared reader publishes.
            while let Some(published) = queue.recv().await {
                if let Step::End(end) = self.take(&published.batch, published.end).await {
                    return end;
                }
            }
            if self.shutdown.is_requested() {
                return LaneEnd::Stopped;
            }
            // Detached (or the shared reader stopped): read on our own.
            tracing::info!(pipeline = %self.pipeline.name, shard = %self.shard_id, position = ?self.position, "pipeline fell behind the shared reader; catching up on its own reader");
            match self.catch_up().await {
                Ok(rejoined) => queue = rejoined,
                Err(end) => return end,
            }
        }
    }

    /// Processes the part of `batch` after our position; checkpoints it.
    async fn take(&mut self, batch: &ShardBatch, end: bool) -> Step {
        if self.shutdown.is_requested() || !self.hold.is_valid() {
            return Step::End(LaneEnd::Stopped);
        }
        let start = match &self.position {
            Some(done) => batch.records.partition_point(|r| done.covers(r)),
            None => 0,
        };
        if start < batch.records.len() {
            let progress =
                Arc::new(BatchProgress::new(batch.records.len() - start).fenced_by(&self.hold));
            let mut settled = 0usize;
            let mut waiting = false;
            let (pipeline, shutdown) = (self.pipeline.clone(), self.shutdown.clone());
            loop {
                let processed = {
                    let process = pipeline.process(batch, start, &progress);
                    tokio::pin!(process);
                    loop {
                        tokio::select! {
                            processed = &mut process => break processed,
                            _ = progress.changed() => {
                                settled = self.advance(batch, start, &progress, settled);
                            }
                            _ = shutdown.abandoned() => {
                                // shutdown_timeout_s passed: stop writing; what
                                // is not settled stays unacknowledged and is
                                // delivered after restart.
                                self.advance(batch, start, &progress, settled);
                                tracing::warn!(pipeline = %self.pipeline.name, source = %self.source, shard = %self.shard_id, records = batch.records.len() - start, position = ?self.position, "shutdown timeout: abandoning the batch in flight; it is delivered again after restart");
                                return Step::End(LaneEnd::Stopped);
                            }
                        }
                    }
                };
                match processed {
                    Ok(Processed::Delivered) => break,
                    Ok(Processed::NoOutputs) => {
                        if !waiting {
                            waiting = true;
                            tracing::warn!(pipeline = %self.pipeline.name, shard = %self.shard_id, "no output stream to write to; holding the batch until one is discovered");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(NO_OUTPUTS_RETRY) => {}
                            _ = self.shutdown.requested() => return Step::End(LaneEnd::Stopped),
                        }
                    }
                    Err(halt) => {
                        self.advance(batch, start, &progress, settled);
                        tracing::error!(source = %self.source, shard = %self.shard_id, error = %halt, position = ?self.position, "pipeline halted; its checkpoint stays before the first record not delivered");
                        return Step::End(LaneEnd::Halted);
                    }
                }
            }
            let settled = self.advance(batch, start, &progress, settled);
            if settled < progress.len() {
                // process() returns Delivered only when everything is settled.
                tracing::error!(pipeline = %self.pipeline.name, shard = %self.shard_id, settled, of = progress.len(), "batch reported delivered with records not settled; not checkpointing past them");
                return Step::End(LaneEnd::Halted);
            }
        }
        if end {
            self.checkpoints
                .finish(&self.pipeline.name, &self.stream, &self.shard_id);
            return Step::End(LaneEnd::Finished);
        }
        Step::Continue
    }

    /// Moves the checkpoint over the settled prefix of `batch[start..]`
    /// (`settled`: its length known so far); returns the new length.
    fn advance(
        &mut self,
        batch: &ShardBatch,
        start: usize,
        progress: &BatchProgress,
        settled: usize,
    ) -> usize {
        let now = progress.prefix(settled);
        if now > settled
            && let Some(last) = batch.records.get(start + now - 1)
        {
            let done = ShardPosition::after(last);
            self.checkpoints
                .advance(&self.pipeline.name, &self.stream, &self.shard_id, &done);
            self.position = Some(done);
        }
        now
    }

    /// Reads the shard from our position until caught up and rejoined (the
    /// new queue), or until the lane ends.
    async fn catch_up(&mut self) -> Result<mpsc::Receiver<Arc<Published>>, LaneEnd> {
        let start = match &self.position {
            Some(done) => StartAt::after(done),
            None => self.initial.clone(),
        };
        let mut reader = (self.read.make_reader)(start);
        loop {
            let read: ReadBatch = tokio::select! {
                read = reader.next() => read,
                _ = self.shutdown.requested() => return Err(LaneEnd::Stopped),
            };
            let caught_up = read.records.is_empty() || read.millis_behind == Some(0);
            let batch = ShardBatch {
                source: self.source.clone(),
                shard_id: self.shard_id.clone(),
                records: Arc::new(read.records),
                millis_behind: read.millis_behind,
                charge: read.charge,
            };
            if let Step::End(end) = self.take(&batch, read.end).await {
                return Err(end);
            }
            if caught_up {
                let (queue, rejoined) = mpsc::channel(self.pipeline.buffer_batches);
                let (accepted, answer) = oneshot::channel();
                let asked = self.rejoin.send(Rejoin {
                    lane: self.index,
                    queue,
                    position: self.position.clone(),
                    accepted,
                });
                if asked.is_ok() && answer.await == Ok(true) {
                    tracing::info!(pipeline = %self.pipeline.name, shard = %self.shard_id, "pipeline caught up; back on the shared reader");
                    return Ok(rejoined);
                }
                // Not yet: keep reading on our own (the shared reader moved on).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
