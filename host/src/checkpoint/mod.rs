//! Acknowledged positions, per pipeline and source shard (SPEC §6).
//!
//! A position moves only after every record routed from the batch that ends
//! there is acknowledged by every output (or dead-lettered): `advance` is
//! called by the shard task after `Pipeline::process` returned Ok, never
//! before. The table lives in memory and is flushed to the store at most once
//! per `interval_ms` and at shutdown: the first change after a quiet interval
//! is written at once (leading edge), later ones at the end of the interval.
//! A crash loses at most the positions of the last interval, which means
//! re-delivery (duplicates), never loss.
//!
//! Where the table is kept is the `Store`: one JSON file (`file.rs`), or the
//! DynamoDB lease table (`lease/`), where each shard's positions are stored
//! by the renewals of its lease (fenced: a write by an instance that lost the
//! lease fails), and this table only holds them until then.

mod file;

pub use file::FileStore;

/// Where checkpoints are kept.
pub enum Store {
    File(FileStore),
    /// The lease table: `flush` stores only the `latest` moments; positions
    /// go with lease renewals (`lease::LeaseManager`).
    Leases(Arc<crate::lease::LeaseTable>),
}

use crate::record::ShardPosition;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Last acknowledged sequence number; reading resumes after it.
    pub sequence: Option<String>,
    /// When the last acknowledged record was a sub-record of a KPL aggregate:
    /// its sub-sequence number. Reading resumes at `sequence` (the aggregate
    /// is read again) and skips the sub-records up to this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_sequence: Option<u64>,
    /// The shard was read to its end and everything from it acknowledged.
    #[serde(default)]
    pub finished: bool,
    /// Written by older versions when a shard was started at LATEST (ms since
    /// the epoch), while no record was acknowledged yet: read as "resume
    /// AT_TIMESTAMP here". Now the moment is stored per source (`Stored::starts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_since_ms: Option<i64>,
}

impl Position {
    /// The acknowledged position in the shard, if any.
    pub fn done(&self) -> Option<ShardPosition> {
        Some(ShardPosition {
            sequence: self.sequence.clone()?,
            sub: self.sub_sequence,
        })
    }
}

/// (pipeline, stream, shard id)
pub type Key = (String, String, String);

/// Everything the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub positions: BTreeMap<Key, Position>,
    /// (pipeline, stream) → when the pipeline first started on the source
    /// with `start_position = "latest"` (ms since the epoch): what "latest"
    /// means for it from then on (`source/start.rs`).
    pub starts: BTreeMap<(String, String), i64>,
}

pub struct Checkpoints {
    store: Store,
    table: Mutex<Stored>,
    dirty: AtomicBool,
    /// Woken when the table turns dirty (`changed`).
    changed: tokio::sync::Notify,
    health: FlushHealth,
}

/// Whether the last flush succeeded, for `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub struct FlushHealth {
    /// Flushes that failed since start.
    pub failures: AtomicU64,
    /// Flushes that wrote the table since start.
    pub writes: AtomicU64,
    /// The error of the last flush, if it failed (cleared by a success).
    last_error: Mutex<Option<String>>,
}

impl FlushHealth {
    /// The error of the last flush, while the store cannot be written.
    pub fn failing(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn record<T>(&self, result: &Result<(), T>)
    where
        T: std::fmt::Display,
    {
        let error = match result {
            Ok(()) => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Some(e.to_string())
            }
        };
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }
}

impl Checkpoints {
    /// Opens the file store (taking its lock) and loads what it holds.
    pub fn open(store: FileStore) -> std::io::Result<Self> {
        let table = store.load()?;
        Ok(Self::with_store(Store::File(store), table))
    }

    /// A table over `store`, holding `loaded` to begin with.
    pub fn with_store(store: Store, loaded: Stored) -> Self {
        Checkpoints {
            store,
            table: Mutex::new(loaded),
            dirty: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
            health: FlushHealth::default(),
        }
    }

    /// Whether checkpoints are being written.
    pub fn health(&self) -> &FlushHealth {
        &self.health
    }

    pub fn get(&self, pipeline: &str, stream: &str, shard: &str) -> Option<Position> {
        let table = self.table.lock().ok()?;
        table
            .positions
            .get(&(pipeline.to_string(), stream.to_string(), shard.to_string()))
            .cloned()
    }

    /// When `pipeline` first started on `stream` with `latest`, if it did.
    pub fn source_start(&self, pipeline: &str, stream: &str) -> Option<i64> {
        let table = self.table.lock().ok()?;
        table
            .starts
            .get(&(pipeline.to_string(), stream.to_string()))
            .copied()
    }

    /// Records that `pipeline` starts on `stream` with `latest` at `now_ms`,
    /// unless a moment is stored already; returns the moment in force.
    pub fn start_source_at(&self, pipeline: &str, stream: &str, now_ms: i64) -> i64 {
        let Ok(mut table) = self.table.lock() else {
            return now_ms;
        };
        let entry = table
            .starts
            .entry((pipeline.to_string(), stream.to_string()));
        if let std::collections::btree_map::Entry::Occupied(e) = &entry {
            return *e.get();
        }
        entry.or_insert(now_ms);
        self.mark_dirty();
        now_ms
    }

    fn update(
        &self,
        pipeline: &str,
        stream: &str,
        shard: &str,
        change: impl FnOnce(&mut Position),
    ) {
        if let Ok(mut table) = self.table.lock() {
            let entry = table
                .positions
                .entry((pipeline.to_string(), stream.to_string(), shard.to_string()))
                .or_insert(Position {
                    sequence: None,
                    sub_sequence: None,
                    finished: false,
                    latest_since_ms: None,
                });
            change(entry);
            drop(table);
            self.mark_dirty();
        }
    }

    /// Records that everything up to `sequence` is acknowledged.
    pub fn advance(&self, pipeline: &str, stream: &str, shard: &str, done: &ShardPosition) {
        self.update(pipeline, stream, shard, |p| {
            p.sequence = Some(done.sequence.clone());
            p.sub_sequence = done.sub;
        });
    }

    /// Records that the shard is read to its end and fully acknowledged.
    pub fn finish(&self, pipeline: &str, stream: &str, shard: &str) {
        self.update(pipeline, stream, shard, |p| p.finished = true);
    }

    fn mark_dirty(&self) {
        if !self.dirty.swap(true, Ordering::AcqRel) {
            self.changed.notify_one();
        }
    }

    /// Returns once the table holds something not yet flushed (at once if it
    /// does already).
    pub async fn changed(&self) {
        if self.dirty.load(Ordering::Acquire) {
            return;
        }
        self.changed.notified().await;
    }

    /// Writes the table if it changed since the last flush.
    pub async fn flush(self: &Arc<Self>) -> anyhow::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let snapshot = match self.table.lock() {
            Ok(table) => table.clone(),
            Err(_) => anyhow::bail!("checkpoint table lock poisoned"),
        };
        let result = match &self.store {
            Store::File(_) => {
                let me = self.clone();
                tokio::task::spawn_blocking(move || match &me.store {
                    Store::File(file) => file.save(&snapshot).map_err(anyhow::Error::from),
                    Store::Leases(_) => Ok(()),
                })
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("checkpoint writer failed: {e}")))
            }
            Store::Leases(table) => self.store_starts(table, &snapshot).await,
        };
        if result.is_err() {
            self.mark_dirty();
        }
        self.health.record(&result);
        result
    }

    /// The lease table: stores each `latest` moment (the first writer's
    /// wins, and every instance adopts it).
    async fn store_starts(
        &self,
        table: &crate::lease::LeaseTable,
        snapshot: &Stored,
    ) -> anyhow::Result<()> {
        for ((pipeline, stream), ms) in &snapshot.starts {
            let in_force = table.store_start(stream, pipeline, *ms).await?;
            if in_force != *ms
                && let Ok(mut t) = self.table.lock()
            {
                t.starts
                    .insert((pipeline.clone(), stream.clone()), in_force);
            }
        }
        Ok(())
    }

    /// Every pipeline's position in one shard.
    pub fn shard_positions(&self, stream: &str, shard: &str) -> BTreeMap<String, Position> {
        self.table
            .lock()
            .map(|t| {
                t.positions
                    .iter()
                    .filter(|((_, s, sh), _)| s == stream && sh == shard)
                    .map(|((p, _, _), position)| (p.clone(), position.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replaces one shard's positions with `positions` (read from the lease
    /// table): a pipeline it does not name has no position there.
    pub fn replace_shard(&self, stream: &str, shard: &str, positions: &BTreeMap<String, Position>) {
        if let Ok(mut t) = self.table.lock() {
            t.positions
                .retain(|(_, s, sh), _| !(s == stream && sh == shard));
            for (pipeline, position) in positions {
                t.positions.insert(
                    (pipeline.clone(), stream.to_string(), shard.to_string()),
                    position.clone(),
                );
            }
        }
    }

    /// A copy of every position (for `status` and tests).
    pub fn snapshot(&self) -> BTreeMap<Key, Position> {
        self.table
            .lock()
            .map(|t| t.positions.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn position(sequence: &str) -> ShardPosition {
        ShardPosition {
            sequence: sequence.into(),
            sub: None,
        }
    }

    #[tokio::test]
    async fn changed_wakes_on_the_first_change_after_a_flush_and_counts_writes() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints =
            Arc::new(Checkpoints::open(FileStore::open(dir.path()).unwrap()).unwrap());
        let quiet = tokio::time::timeout(Duration::from_millis(50), checkpoints.changed()).await;
        assert!(quiet.is_err(), "nothing changed yet");
        checkpoints.advance("p", "s", "shardId-0", &position("1"));
        tokio::time::timeout(Duration::from_secs(1), checkpoints.changed())
            .await
            .expect("a change wakes the flusher");
        checkpoints.flush().await.unwrap();
        assert_eq!(checkpoints.health().writes.load(Ordering::Relaxed), 1);
        // A stale wake-up may remain; the table is clean, so a flush writes nothing.
        checkpoints.flush().await.unwrap();
        assert_eq!(checkpoints.health().writes.load(Ordering::Relaxed), 1);
        let waiter = checkpoints.changed();
        checkpoints.advance("p", "s", "shardId-0", &position("2"));
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("a change while waiting wakes the flusher");
        checkpoints.flush().await.unwrap();
        let stored = FileStore::open_read_only(dir.path()).load().unwrap();
        assert_eq!(
            stored.positions[&("p".into(), "s".into(), "shardId-0".into())].sequence,
            Some("2".into())
        );
    }
}
