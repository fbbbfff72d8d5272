//! One routing job (a `[[pipelines]]` entry): its router, the output writers
//! it may use, and its failure policy. `process` takes one batch of one source
//! shard and returns Ok only when every record routed from it is acknowledged
//! by every output, or dead-lettered, or deliberately skipped: only then may
//! the caller checkpoint the batch.
//!
//! Failure policy (`on_error`): a plugin error or trap fails the whole batch;
//! a routed record an output can never accept fails that record. `halt` stops
//! the pipeline (its checkpoint stays before the batch, nothing is lost);
//! `skip` drops what failed, logs and counts it; `dead_letter` writes a JSON
//! envelope of each failed source record to the dead-letter output.

use crate::config::OnError;
use crate::record::{OutRecord, SourceRecord};
use crate::router::Router;
use crate::sink::OutputWriter;
use base64::Engine as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::task::JoinSet;

/// Why a pipeline stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("pipeline {pipeline} halted: {reason}")]
pub struct Halt {
    pub pipeline: String,
    pub reason: String,
}

/// What one pipeline did, read by `/metrics` (`metrics.rs`).
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Source records handed to the router.
    pub records_in: AtomicU64,
    /// Deliveries routed, all outputs together.
    pub deliveries: AtomicU64,
    /// Deliveries routed, per output (indexed like the pipeline's outputs).
    pub routed: Vec<AtomicU64>,
    /// Records the router sent nowhere (a filter's drops).
    pub dropped: AtomicU64,
    /// Records dropped by `on_error = "skip"`.
    pub skipped: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Time spent routing (the plugin call, or native replication), nanoseconds.
    pub route_nanos: AtomicU64,
    /// Per source shard: MillisBehindLatest of the last batch this pipeline acknowledged.
    pub lag_ms: std::sync::Mutex<std::collections::BTreeMap<String, i64>>,
}

pub struct Pipeline {
    pub name: String,
    pub source: String,
    router: Router,
    outputs: Vec<Arc<OutputWriter>>,
    on_error: OnError,
    dead_letter: Option<Arc<OutputWriter>>,
    halted: AtomicBool,
    pub stats: PipelineStats,
    /// Batches per shard it may hold unprocessed before it is detached from
    /// the shared reader (see `source/lane.rs`).
    pub buffer_batches: usize,
}

/// A batch from one shard, shared by every pipeline on the source.
pub struct ShardBatch {
    pub source: Arc<str>,
    pub shard_id: Arc<str>,
    pub records: Arc<Vec<SourceRecord>>,
    /// How far behind the tip of the shard this batch was read (GetRecords' MillisBehindLatest).
    pub millis_behind: Option<i64>,
}

impl Pipeline {
    pub fn new(
        name: String,
        source: String,
        router: Router,
        outputs: Vec<Arc<OutputWriter>>,
        on_error: OnError,
        dead_letter: Option<Arc<OutputWriter>>,
    ) -> Self {
        let stats = PipelineStats {
            routed: outputs.iter().map(|_| AtomicU64::new(0)).collect(),
            ..PipelineStats::default()
        };
        Pipeline {
            name,
            source,
            router,
            outputs,
            on_error,
            dead_letter,
            halted: AtomicBool::new(false),
            stats,
            buffer_batches: 4,
        }
    }

    /// Sets how many batches per shard the pipeline may hold unprocessed.
    pub fn with_buffer_batches(mut self, batches: usize) -> Self {
        self.buffer_batches = batches.max(1);
        self
    }

    /// The output names, in the order of `stats.routed`.
    pub fn output_names(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().map(|w| w.name.as_str())
    }

    /// Records routed, dropped and the lag of the batch, once it is acknowledged.
    fn account(&self, batch: &ShardBatch, routed: &[Vec<OutRecord>], records: usize) {
        let mut reached = vec![false; records];
        for (counter, list) in self.stats.routed.iter().zip(routed) {
            counter.fetch_add(list.len() as u64, Ordering::Relaxed);
            for r in list {
                if let Some(slot) = reached.get_mut(r.source_index as usize) {
                    *slot = true;
                }
            }
        }
        let dropped = reached.iter().filter(|r| !**r).count();
        self.stats
            .dropped
            .fetch_add(dropped as u64, Ordering::Relaxed);
        if let (Some(ms), Ok(mut lag)) = (batch.millis_behind, self.stats.lag_ms.lock()) {
            lag.insert(batch.shard_id.to_string(), ms);
        }
    }

    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }

    fn halt(&self, reason: String) -> Halt {
        self.halted.store(true, Ordering::Release);
        Halt {
            pipeline: self.name.clone(),
            reason,
        }
    }

    /// Routes and delivers `batch.records[start..]`. On error the pipeline is
    /// halted and nothing of this batch may be checkpointed.
    pub async fn process(&self, batch: &ShardBatch, start: usize) -> Result<(), Halt> {
        let records = &batch.records[start..];
        if records.is_empty() {
            return Ok(());
        }
        self.stats
            .records_in
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let routed = self
            .router
            .route(
                &batch.source,
                &batch.shard_id,
                &batch.records,
                start,
                self.outputs.len(),
            )
            .await;
        self.stats
            .route_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let routed = match routed {
            Ok(routed) => routed,
            Err(error) => {
                let reason = format!(
                    "shard {} batch of {} records: {error}",
                    batch.shard_id,
                    records.len()
                );
                let failed: Vec<u32> = (0..records.len() as u32).collect();
                return self.on_failure(batch, start, &failed, reason).await;
            }
        };
        self.account(batch, &routed, records.len());
        let mut deliveries = Vec::with_capacity(self.outputs.len());
        for (writer, mut list) in self.outputs.iter().zip(routed) {
            let mut refused = Vec::new();
            list.retain(|record| match writer.check(std::slice::from_ref(record)) {
                Ok(()) => true,
                Err(e) => {
                    refused.push((record.source_index, e.to_string()));
                    false
                }
            });
            for (index, reason) in refused {
                let record = &records[index as usize];
                let reason = format!(
                    "shard {} sequence {}: {reason}",
                    batch.shard_id, record.sequence_number
                );
                self.on_failure(batch, start, &[index], reason).await?;
            }
            deliveries.push((writer.clone(), list));
        }
        let refused = self.deliver_all(deliveries).await.map_err(|e| {
            let record = &records[e.source_index as usize];
            self.halt(format!(
                "shard {} sequence {}: {e}",
                batch.shard_id, record.sequence_number
            ))
        })?;
        // Records Kinesis refused as invalid; everything else is acknowledged.
        for e in refused {
            let record = &records[e.source_index as usize];
            let reason = format!(
                "shard {} sequence {}: {e}",
                batch.shard_id, record.sequence_number
            );
            self.on_failure(batch, start, &[e.source_index], reason)
                .await?;
        }
        Ok(())
    }

    /// Writes every output's list (already checked) concurrently; Ok when
    /// all are acknowledged, with the records an output refused as invalid.
    async fn deliver_all(
        &self,
        deliveries: Vec<(Arc<OutputWriter>, Vec<OutRecord>)>,
    ) -> Result<Vec<crate::sink::DeliverError>, crate::sink::DeliverError> {
        let mut set = JoinSet::new();
        for (writer, list) in deliveries {
            if list.is_empty() {
                continue;
            }
            self.stats
                .deliveries
                .fetch_add(list.len() as u64, Ordering::Relaxed);
            set.spawn(async move { writer.deliver_checked(list).await });
        }
        let mut first_error = None;
        let mut refused = Vec::new();
        while let Some(joined) = set.join_next().await {
            let result = joined.unwrap_or_else(|e| {
                Err(crate::sink::DeliverError {
                    output: "?".into(),
                    stream: "?".into(),
                    source_index: 0,
                    reason: format!("writer task failed: {e}"),
                })
            });
            match result {
                Ok(mut r) => refused.append(&mut r),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(refused), Err)
    }

    /// Applies `on_error` to the records at `failed` (indexes into `records[start..]`).
    async fn on_failure(
        &self,
        batch: &ShardBatch,
        start: usize,
        failed: &[u32],
        reason: String,
    ) -> Result<(), Halt> {
        match self.on_error {
            OnError::Halt => Err(self.halt(reason)),
            OnError::Skip => {
                tracing::warn!(pipeline = %self.name, records = failed.len(), %reason, "skipping records (on_error = skip)");
                self.stats
                    .skipped
                    .fetch_add(failed.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            OnError::DeadLetter => {
                let Some(dlq) = &self.dead_letter else {
                    return Err(self.halt(format!("{reason} (and no dead_letter output)")));
                };
                let records = &batch.records[start..];
                let letters: Vec<OutRecord> = failed
                    .iter()
                    .map(|&i| self.envelope(batch, &records[i as usize], i, &reason))
                    .collect();
                tracing::warn!(pipeline = %self.name, records = failed.len(), %reason, "dead-lettering records");
                dlq.deliver(letters).await.map_err(|e| {
                    self.halt(format!(
                        "{reason}; and the dead letter could not be written: {e}"
                    ))
                })?;
                self.stats
                    .dead_lettered
                    .fetch_add(failed.len() as u64, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// The dead-letter envelope of SPEC §6, keyed like the original record.
    fn envelope(
        &self,
        batch: &ShardBatch,
        record: &SourceRecord,
        index: u32,
        error: &str,
    ) -> OutRecord {
        let envelope = serde_json::json!({
            "pipeline": self.name,
            "source": &*batch.source,
            "shard_id": &*batch.shard_id,
            "sequence_number": record.sequence_number,
            "sub_sequence_number": record.sub_sequence_number,
            "partition_key": record.partition_key,
            "explicit_hash_key": record.explicit_hash_key,
            "approximate_arrival_ms": record.arrival_ms,
            "data": base64::engine::general_purpose::STANDARD.encode(&record.data),
            "error": error,
        });
        OutRecord {
            data: envelope.to_string().into_bytes(),
            partition_key: record.partition_key.clone(),
            explicit_hash_key: None,
            source_index: index,
        }
    }
}
