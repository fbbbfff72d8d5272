//! One routing job (a `[[pipelines]]` entry): its router, the output writers
//! it may use, and its failure policy. `process` takes one batch of one source
//! shard and returns Ok only when every record routed from it is acknowledged
//! by every output, or dead-lettered, or deliberately skipped. Along the way
//! it settles each record in the batch's `BatchProgress` (`progress.rs`) as
//! soon as that is true of it, so the caller can checkpoint the settled
//! prefix before the whole batch is done.
//!
//! Failure policy (`on_error`): a plugin error or trap fails the whole batch;
//! a routed record an output can never accept fails that record. `halt` stops
//! the pipeline (its checkpoint stays before the batch, nothing is lost);
//! `skip` drops what failed, logs and counts it; `dead_letter` writes a JSON
//! envelope of each failed source record to the dead-letter output.

use crate::config::OnError;
use crate::outputs::OutputSet;
use crate::outputs::RoutedCounters;
use crate::plugin::PluginError;
use crate::record::{OutRecord, SourceRecord};
use crate::router::{Router, Snapshot};
use crate::sink::OutputWriter;
use arc_swap::ArcSwap;
use base64::Engine as _;
use progress::BatchProgress;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::task::JoinSet;

pub mod progress;

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
    /// Records the router sent nowhere (a filter's drops).
    pub dropped: AtomicU64,
    /// Records dropped by `on_error = "skip"`.
    pub skipped: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Time spent routing (the plugin call, or native replication), nanoseconds.
    pub route_nanos: AtomicU64,
    /// Per source shard: MillisBehindLatest of the last batch this pipeline acknowledged.
    pub lag_ms: std::sync::Mutex<std::collections::BTreeMap<String, i64>>,
    /// Per output: deliveries dropped because its (discovered) stream was deleted.
    pub dropped_stream_deleted: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

pub struct Pipeline {
    pub name: String,
    pub source: String,
    router: Router,
    /// The outputs now (a new set when discovery changes them), and the
    /// per-output counters the sets share.
    outputs: Arc<ArcSwap<OutputSet>>,
    routed: RoutedCounters,
    /// Held while the outputs are replaced, so replacements do not interleave.
    updating: tokio::sync::Mutex<()>,
    on_error: OnError,
    dead_letter: Option<Arc<OutputWriter>>,
    halted: AtomicBool,
    /// `on_error` warnings: at most one per interval, with counts.
    policy_warnings: crate::log_limit::WarnEvery,
    /// Shared with the versions a live reload replaces it with, so counters
    /// go on across a change.
    pub stats: Arc<PipelineStats>,
    /// Batches per shard it may hold unprocessed before it is detached from
    /// the shared reader (see `source/lane.rs`).
    pub buffer_batches: usize,
}

/// What `process` did with a batch it did not halt on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// Every record is acknowledged, dead-lettered or skipped: checkpoint it.
    Delivered,
    /// The pipeline has no outputs now; nothing was routed. Keep the batch
    /// and offer it again.
    NoOutputs,
}

/// A batch from one shard, shared by every pipeline on the source.
pub struct ShardBatch {
    pub source: Arc<str>,
    pub shard_id: Arc<str>,
    pub records: Arc<Vec<SourceRecord>>,
    /// How far behind the tip of the shard this batch was read (GetRecords' MillisBehindLatest).
    pub millis_behind: Option<i64>,
    /// Its share of the memory budget: given back when the last lane drops it.
    pub charge: Option<crate::buffer::Charge>,
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
        let routed = RoutedCounters::default();
        let outputs = Arc::new(ArcSwap::from_pointee(routed.set_of(outputs)));
        Pipeline {
            name,
            source,
            router,
            outputs,
            routed,
            updating: tokio::sync::Mutex::new(()),
            on_error,
            dead_letter,
            halted: AtomicBool::new(false),
            policy_warnings: Default::default(),
            stats: Arc::default(),
            buffer_batches: 4,
        }
    }

    /// Counts into `stats` (those of the version this one replaces).
    pub fn with_stats(mut self, stats: Arc<PipelineStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Sets how many batches per shard the pipeline may hold unprocessed.
    pub fn with_buffer_batches(mut self, batches: usize) -> Self {
        self.buffer_batches = batches.max(1);
        self
    }

    /// The outputs now, in routing order.
    pub fn outputs(&self) -> Arc<OutputSet> {
        self.outputs.load_full()
    }

    /// Replaces the outputs with what `expand` returns (called under the
    /// update lock, so the latest expansion wins). A plugin is first `init`ed
    /// with the new names; if it refuses them, nothing changes. Returns the
    /// new names, or None if they did not change.
    pub async fn update_outputs(
        &self,
        expand: impl FnOnce() -> Vec<Arc<OutputWriter>>,
    ) -> Result<Option<Vec<String>>, PluginError> {
        let _updating = self.updating.lock().await;
        let writers = expand();
        let names: Vec<String> = writers.iter().map(|w| w.name.clone()).collect();
        if self.outputs.load().is_named(&names) {
            return Ok(None);
        }
        let set = Arc::new(self.routed.set_of(writers));
        match &self.router {
            Router::Replicate => self.outputs.store(set),
            Router::Wasm(live) => {
                // The set is stored right after the new version is swapped
                // in, on the same thread; a batch that took the new version
                // just before waits for it (`routing`).
                let (live, list, outputs) = (live.clone(), names.clone(), self.outputs.clone());
                tokio::task::spawn_blocking(move || live.set_outputs(&list, || outputs.store(set)))
                    .await
                    .map_err(|e| PluginError::Init(format!("plugin thread failed: {e}")))??;
            }
        }
        Ok(Some(names))
    }

    /// The router and the outputs for one batch, consistent with each other:
    /// a plugin version routes to the outputs it was `init`ed with. They
    /// differ only for the instant between `update_outputs` swapping the
    /// plugin and storing the set, so a mismatch is retried.
    async fn routing(&self) -> Result<(Snapshot, Arc<OutputSet>), PluginError> {
        const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);
        let started = std::time::Instant::now();
        loop {
            let snapshot = self.router.snapshot();
            let outputs = self.outputs.load_full();
            match snapshot.outputs() {
                Some(names) if !outputs.is_named(names) => {
                    if started.elapsed() > PATIENCE {
                        return Err(PluginError::Init(format!(
                            "the plugin was initialised with outputs {names:?} but the pipeline has {:?}",
                            outputs.names()
                        )));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                _ => return Ok((snapshot, outputs)),
            }
        }
    }

    /// Records routed, dropped and the lag of the batch, once it is acknowledged.
    fn account(
        &self,
        outputs: &OutputSet,
        batch: &ShardBatch,
        routed: &[Vec<OutRecord>],
        records: usize,
    ) {
        let mut reached = vec![false; records];
        for (counter, list) in outputs.routed().iter().zip(routed) {
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

    /// Routes and delivers `batch.records[start..]`, settling each record in
    /// `progress` (indexes from `start`; each starts held once, released
    /// here) when it is done. On error the pipeline is halted; records
    /// settled before stay settled (they are delivered), the others are not.
    /// A pipeline with no outputs at the moment (every stream of its patterns
    /// gone, or none found yet) does nothing and says so: the caller keeps
    /// the batch.
    pub async fn process(
        &self,
        batch: &ShardBatch,
        start: usize,
        progress: &Arc<BatchProgress>,
    ) -> Result<Processed, Halt> {
        let records = &batch.records[start..];
        let release_all = || (0..records.len() as u32).for_each(|i| progress.settle(i));
        if records.is_empty() {
            return Ok(Processed::Delivered);
        }
        self.router.wait_penalty().await;
        let started = std::time::Instant::now();
        let routed = match self.routing().await {
            Ok((_, outputs)) if outputs.is_empty() => return Ok(Processed::NoOutputs),
            Ok((snapshot, outputs)) => {
                self.stats
                    .records_in
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                snapshot
                    .route(
                        &batch.source,
                        &batch.shard_id,
                        &batch.records,
                        start,
                        outputs.len(),
                    )
                    .await
                    .map(|routed| (routed, outputs))
            }
            Err(e) => Err(e),
        };
        self.stats
            .route_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let (routed, outputs) = match routed {
            Ok(routed) => routed,
            Err(error) => {
                let reason = format!(
                    "shard {} batch of {} records: {error}",
                    batch.shard_id,
                    records.len()
                );
                let failed: Vec<u32> = (0..records.len() as u32).collect();
                self.on_failure(batch, start, &failed, reason).await?;
                release_all();
                return Ok(Processed::Delivered);
            }
        };
        self.account(&outputs, batch, &routed, records.len());
        let mut deliveries = Vec::with_capacity(outputs.len());
        for (writer, mut list) in outputs.writers().iter().zip(routed) {
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
            for record in &list {
                progress.owe(record.source_index);
            }
            deliveries.push((writer.clone(), list));
        }
        // Every record is now held by the outputs it goes to (or by nothing:
        // dropped by the router, or its failure handled above).
        release_all();
        let refused = self.deliver_all(deliveries, progress).await.map_err(|e| {
            let record = &records[e.source_index as usize];
            self.halt(format!(
                "shard {} sequence {}: {e}",
                batch.shard_id, record.sequence_number
            ))
        })?;
        // Records Kinesis refused as invalid; everything else is acknowledged
        // (or dropped because its stream was deleted, counted by deliver_all).
        for e in refused {
            let record = &records[e.source_index as usize];
            let reason = format!(
                "shard {} sequence {}: {e}",
                batch.shard_id, record.sequence_number
            );
            self.on_failure(batch, start, &[e.source_index], reason)
                .await?;
            progress.settle(e.source_index);
        }
        Ok(Processed::Delivered)
    }

    /// Writes every output's list (already checked) concurrently; Ok when
    /// all are acknowledged, with the records an output refused as invalid.
    async fn deliver_all(
        &self,
        deliveries: Vec<(Arc<OutputWriter>, Vec<OutRecord>)>,
        progress: &Arc<BatchProgress>,
    ) -> Result<Vec<crate::sink::DeliverError>, crate::sink::DeliverError> {
        let mut set = JoinSet::new();
        for (writer, list) in deliveries {
            if list.is_empty() {
                continue;
            }
            self.stats
                .deliveries
                .fetch_add(list.len() as u64, Ordering::Relaxed);
            let progress = progress.clone();
            set.spawn(async move {
                let delivered = writer.deliver_checked(list, Some(&progress)).await;
                (writer, delivered)
            });
        }
        let mut first_error = None;
        let mut refused = Vec::new();
        while let Some(joined) = set.join_next().await {
            let joined = joined.map(|(writer, delivered)| {
                delivered.map(|d| {
                    if !d.gone.is_empty()
                        && let Ok(mut dropped) = self.stats.dropped_stream_deleted.lock()
                    {
                        *dropped.entry(writer.name.clone()).or_default() += d.gone.len() as u64;
                    }
                    d.refused
                })
            });
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
                match self.policy_warnings.event() {
                    Some(failures) => {
                        tracing::warn!(pipeline = %self.name, records = failed.len(), failures, %reason, "skipping records (on_error = skip; failures: batches since the last warning)")
                    }
                    None => {
                        tracing::debug!(pipeline = %self.name, records = failed.len(), %reason, "skipping records (on_error = skip)")
                    }
                }
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
                match self.policy_warnings.event() {
                    Some(failures) => {
                        tracing::warn!(pipeline = %self.name, records = failed.len(), failures, %reason, "dead-lettering records (failures: batches since the last warning)")
                    }
                    None => {
                        tracing::debug!(pipeline = %self.name, records = failed.len(), %reason, "dead-lettering records")
                    }
                }
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
            // null: the source record had no partition key.
            "partition_key": (!record.partition_key.is_empty()).then_some(&record.partition_key),
            "explicit_hash_key": record.explicit_hash_key,
            "approximate_arrival_ms": record.arrival_ms,
            "data": base64::engine::general_purpose::STANDARD.encode(&record.data),
            "error": error,
        });
        OutRecord {
            data: envelope.to_string().into_bytes().into(),
            partition_key: record.output_key(),
            explicit_hash_key: None,
            source_index: index,
        }
    }
}
