//! Acknowledged positions, per pipeline and source shard (SPEC §6).
//!
//! A position moves only after every record routed from the batch that ends
//! there is acknowledged by every output (or dead-lettered): `advance` is
//! called by the shard task after `Pipeline::process` returned Ok, never
//! before. The table lives in memory and is flushed to the store every
//! `interval_ms` and at shutdown; a crash loses at most the positions of the
//! last interval, which means re-delivery (duplicates), never loss.

mod file;

pub use file::FileStore;

use crate::record::ShardPosition;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// When reading started at LATEST (ms since the epoch), while no record is
    /// acknowledged yet: a restart resumes AT_TIMESTAMP from here instead of
    /// taking LATEST again, which would skip what arrived while it was down.
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

pub struct Checkpoints {
    store: FileStore,
    table: Mutex<BTreeMap<Key, Position>>,
    dirty: AtomicBool,
}

impl Checkpoints {
    /// Opens the store (taking its lock) and loads what it holds.
    pub fn open(store: FileStore) -> std::io::Result<Self> {
        let table = store.load()?;
        Ok(Checkpoints {
            store,
            table: Mutex::new(table),
            dirty: AtomicBool::new(false),
        })
    }

    pub fn get(&self, pipeline: &str, stream: &str, shard: &str) -> Option<Position> {
        let table = self.table.lock().ok()?;
        table
            .get(&(pipeline.to_string(), stream.to_string(), shard.to_string()))
            .cloned()
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
                .entry((pipeline.to_string(), stream.to_string(), shard.to_string()))
                .or_insert(Position {
                    sequence: None,
                    sub_sequence: None,
                    finished: false,
                    latest_since_ms: None,
                });
            change(entry);
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Records that everything up to `sequence` is acknowledged.
    pub fn advance(&self, pipeline: &str, stream: &str, shard: &str, done: &ShardPosition) {
        self.update(pipeline, stream, shard, |p| {
            p.sequence = Some(done.sequence.clone());
            p.sub_sequence = done.sub;
        });
    }

    /// Records that reading this shard starts at LATEST now, unless a position exists.
    pub fn started_at_latest(&self, pipeline: &str, stream: &str, shard: &str, now_ms: i64) {
        self.update(pipeline, stream, shard, |p| {
            if p.sequence.is_none() && p.latest_since_ms.is_none() {
                p.latest_since_ms = Some(now_ms);
            }
        });
    }

    /// Records that the shard is read to its end and fully acknowledged.
    pub fn finish(&self, pipeline: &str, stream: &str, shard: &str) {
        self.update(pipeline, stream, shard, |p| p.finished = true);
    }

    /// Writes the table if it changed since the last flush.
    pub fn flush(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let snapshot = match self.table.lock() {
            Ok(table) => table.clone(),
            Err(_) => return Err(std::io::Error::other("checkpoint table lock poisoned")),
        };
        let result = self.store.save(&snapshot);
        if result.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        result
    }

    /// A copy of every position (for `status` and tests).
    pub fn snapshot(&self) -> BTreeMap<Key, Position> {
        self.table.lock().map(|t| t.clone()).unwrap_or_default()
    }
}
