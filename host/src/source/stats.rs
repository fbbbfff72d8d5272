//! What reading one source cost and met, per shard, kept where the reading
//! happens (plain atomics and small maps) and read by `/metrics` at scrape
//! time: GetRecords calls, MillisBehindLatest of the shared reader, and
//! enhanced fan-out subscription conflicts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What reading one source cost, read by `/metrics`.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// GetRecords calls per shard, by this process (all pipelines on the source together).
    get_records: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    /// MillisBehindLatest of the last batch the shared reader read, per shard.
    millis_behind: Mutex<BTreeMap<String, i64>>,
    /// Enhanced fan-out, per shard: subscriptions refused because another
    /// one holds the shard, and whether the shard is read by GetRecords
    /// meanwhile.
    efo: Mutex<BTreeMap<String, Arc<EfoShardStats>>>,
    /// GetRecords and GetShardIterator errors by AWS error code
    /// (ExpiredIteratorException, ProvisionedThroughputExceededException, ...).
    read_errors: Arc<ReadErrors>,
}

/// Read errors of one source by code (off the fast path: only errors lock).
#[derive(Debug, Default)]
pub struct ReadErrors(Mutex<BTreeMap<String, u64>>);

impl ReadErrors {
    pub fn count(&self, code: &str) {
        if let Ok(mut map) = self.0.lock() {
            *map.entry(code.to_string()).or_default() += 1;
        }
    }

    pub fn by_code(&self) -> Vec<(String, u64)> {
        self.0
            .lock()
            .map(|m| m.iter().map(|(c, n)| (c.clone(), *n)).collect())
            .unwrap_or_default()
    }
}

/// What enhanced fan-out met on one shard.
#[derive(Debug, Default)]
pub struct EfoShardStats {
    pub conflicts: AtomicU64,
    pub polling_fallback: std::sync::atomic::AtomicBool,
}

impl SourceStats {
    /// The counter of GetRecords calls on `shard` (created on first use).
    pub fn get_records_counter(&self, shard: &str) -> Arc<AtomicU64> {
        match self.get_records.lock() {
            Ok(mut map) => map.entry(shard.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// The source's read error counts, shared by its readers.
    pub fn read_errors(&self) -> Arc<ReadErrors> {
        self.read_errors.clone()
    }

    /// The enhanced fan-out counters of `shard` (created on first use).
    pub fn efo_shard(&self, shard: &str) -> Arc<EfoShardStats> {
        match self.efo.lock() {
            Ok(mut map) => map.entry(shard.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// (shard, subscription conflicts) for every EFO shard.
    pub fn efo_conflicts(&self) -> Vec<(String, u64)> {
        self.efo
            .lock()
            .map(|map| {
                map.iter()
                    .map(|(s, e)| (s.clone(), e.conflicts.load(Ordering::Relaxed)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// (shard, 1 while read by GetRecords for a held subscription).
    pub fn efo_fallbacks(&self) -> Vec<(String, i64)> {
        self.efo
            .lock()
            .map(|map| {
                map.iter()
                    .map(|(s, e)| {
                        (
                            s.clone(),
                            i64::from(e.polling_fallback.load(Ordering::Relaxed)),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
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
