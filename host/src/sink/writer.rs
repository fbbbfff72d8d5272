//! One writer per output stream: `deliver` writes an ordered list of records
//! and returns only when every one is acknowledged, retrying only the entries
//! that failed (throttling, internal failures) and whole requests that failed
//! transiently (5xx, timeouts, connection loss), with capped jittered backoff,
//! forever. It returns an error only for a record the stream can never accept.
//!
//! If the process dies inside `deliver`, nothing was checkpointed for these
//! records yet: they are read and written again after restart (at-least-once).

use super::limits::{MAX_ENTRIES_PER_REQUEST, check_record, next_request_len};
use crate::backoff::Backoff;
use crate::kinesis::{StreamRef, describe, is_invalid_input, is_not_found, is_transient};
use crate::kpl::aggregate::{Packed, ShardRange, hash_of, pack};
use crate::record::OutRecord;
use crate::source::shards::list_shards;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What became of one PutRecords call.
#[derive(Debug)]
pub enum PutOutcome {
    /// The call was answered: per entry, the shard it was written to, or the
    /// error code and message.
    Answered(Vec<Result<String, String>>),
    /// The whole call failed in a way worth retrying.
    Transient(String),
    /// The whole call was rejected as invalid input (InvalidArgumentException,
    /// ValidationException): one of its records can never be written.
    Invalid(String),
    /// The stream does not exist (ResourceNotFoundException): deleted, or not
    /// created yet.
    Gone(String),
    /// The whole call was rejected for a reason that is not about its records
    /// (access denied, KMS, ...) and will be again.
    Rejected(String),
}

/// The PutRecords call, behind a trait so the retry logic can be tested with injected failures.
pub trait Transport: Send + Sync {
    fn put_records(
        &self,
        stream: &StreamRef,
        entries: Vec<PutRecordsRequestEntry>,
    ) -> impl Future<Output = PutOutcome> + Send;
}

/// PutRecords against a real (or local) Kinesis.
pub struct KinesisTransport(pub Client);

impl Transport for KinesisTransport {
    async fn put_records(
        &self,
        stream: &StreamRef,
        entries: Vec<PutRecordsRequestEntry>,
    ) -> PutOutcome {
        let n = entries.len();
        let call = self
            .0
            .put_records()
            .set_stream_name(stream.name().map(str::to_string))
            .set_stream_arn(stream.arn().map(str::to_string))
            .set_records(Some(entries));
        match call.send().await {
            Ok(out) => {
                let results: Vec<Result<String, String>> = out
                    .records()
                    .iter()
                    .map(|r| match r.error_code() {
                        Some(code) => Err(format!("{code}: {}", r.error_message().unwrap_or(""))),
                        None => Ok(r.shard_id().unwrap_or_default().to_string()),
                    })
                    .collect();
                if results.len() != n {
                    return PutOutcome::Transient(format!(
                        "PutRecords answered {} results for {n} entries",
                        results.len()
                    ));
                }
                PutOutcome::Answered(results)
            }
            Err(err) if is_not_found(&err) => PutOutcome::Gone(describe(&err)),
            Err(err) if is_transient(&err) => PutOutcome::Transient(describe(&err)),
            Err(err) if is_invalid_input(&err) => PutOutcome::Invalid(describe(&err)),
            Err(err) => PutOutcome::Rejected(describe(&err)),
        }
    }
}

/// A record an output can never accept.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "output {output} (stream {stream}) cannot accept the record routed from batch index {source_index}: {reason}"
)]
pub struct DeliverError {
    pub output: String,
    pub stream: String,
    pub source_index: u32,
    pub reason: String,
}

/// What became of a delivery whose records are all settled.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Records Kinesis refused as invalid (each isolated in its own request).
    pub refused: Vec<DeliverError>,
    /// Records dropped because their discovered stream was deleted (source
    /// indexes): not a failure of the pipeline, nothing to retry.
    pub gone: Vec<u32>,
}

/// What `write` did.
struct Written {
    /// Records Kinesis refused as invalid.
    refused: Vec<DeliverError>,
    /// Records dropped because the (discovered) stream is gone.
    gone: Vec<u32>,
    /// Records written to another shard than predicted, with that shard.
    misplaced: Vec<(u32, String)>,
    /// Records not written because of that, in order.
    unsent: Vec<u32>,
}

/// How often the shard map of an aggregating output is read again, so that
/// aggregates follow a resharded stream.
const SHARD_MAP_TTL: Duration = Duration::from_secs(10);

/// KPL aggregation state of one output: the size limit and the stream's open
/// shards by hash range (ListShards), read again every `SHARD_MAP_TTL`.
pub struct Aggregation {
    client: Client,
    max_bytes: usize,
    shards: tokio::sync::Mutex<Option<(Instant, Arc<Vec<ShardRange>>)>>,
}

impl Aggregation {
    /// The open shards now; an empty map (no aggregation) until ListShards answers.
    async fn shard_map(&self, stream: &StreamRef, reread: bool) -> Arc<Vec<ShardRange>> {
        let mut cached = self.shards.lock().await;
        if let Some((fetched, map)) = cached.as_ref()
            && fetched.elapsed() < SHARD_MAP_TTL
            && !reread
        {
            return map.clone();
        }
        match list_shards(&self.client, stream).await {
            Ok(list) => {
                let map: Vec<ShardRange> = list
                    .iter()
                    .filter(|s| !s.closed)
                    .filter_map(|s| {
                        let (start, end) = s.hash_range?;
                        Some(ShardRange {
                            id: s.id.clone(),
                            start,
                            end,
                        })
                    })
                    .collect();
                let map = Arc::new(map);
                *cached = Some((Instant::now(), map.clone()));
                map
            }
            Err(error) => {
                tracing::warn!(stream = %stream, %error, "cannot read the output's shard map; using the last one");
                let map = cached
                    .as_ref()
                    .map(|(_, map)| map.clone())
                    .unwrap_or_default();
                *cached = Some((Instant::now(), map.clone()));
                map
            }
        }
    }
}

/// Counters of one output, read by the metrics and the tests' logs.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub records_written: AtomicU64,
    pub requests: AtomicU64,
    pub entries_retried: AtomicU64,
    pub requests_retried: AtomicU64,
}

pub struct OutputWriter<T: Transport = KinesisTransport> {
    pub name: String,
    pub stream: StreamRef,
    transport: T,
    max_record_bytes: usize,
    max_request_bytes: usize,
    backoff: Backoff,
    /// Found by a `stream_pattern`: if the stream is deleted, what is routed
    /// to it is refused (the pipeline's `on_error`) rather than retried.
    discovered: bool,
    /// KPL aggregation on output (`aggregate = true`).
    aggregation: Option<Aggregation>,
    /// Set once the deletion of this (discovered) stream was logged.
    gone_logged: std::sync::atomic::AtomicBool,
    pub stats: WriterStats,
}

impl<T: Transport> OutputWriter<T> {
    pub fn new(
        name: String,
        stream: StreamRef,
        transport: T,
        max_record_bytes: usize,
        max_request_bytes: usize,
    ) -> Self {
        OutputWriter {
            name,
            stream,
            transport,
            max_record_bytes,
            max_request_bytes,
            backoff: Backoff::kinesis(),
            discovered: false,
            aggregation: None,
            gone_logged: std::sync::atomic::AtomicBool::new(false),
            stats: WriterStats::default(),
        }
    }

    /// Marks the output as found by a `stream_pattern` (see `discovered`).
    pub fn discovered(mut self) -> Self {
        self.discovered = true;
        self
    }

    pub fn is_discovered(&self) -> bool {
        self.discovered
    }

    /// Packs what is written into KPL aggregates of at most `max_bytes`, per
    /// shard of the stream (shard map from ListShards through `client`).
    pub fn aggregating(mut self, client: Client, max_bytes: usize) -> Self {
        self.aggregation = Some(Aggregation {
            client,
            max_bytes,
            shards: tokio::sync::Mutex::new(None),
        });
        self
    }

    /// Replaces the retry backoff (default: `Backoff::kinesis()`).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Checks every record against the output's limits before anything is written.
    pub fn check(&self, records: &[OutRecord]) -> Result<(), DeliverError> {
        for record in records {
            check_record(record, self.max_record_bytes)
                .map_err(|reason| self.error(record.source_index, reason))?;
        }
        Ok(())
    }

    fn error(&self, source_index: u32, reason: String) -> DeliverError {
        DeliverError {
            output: self.name.clone(),
            stream: self.stream.to_string(),
            source_index,
            reason,
        }
    }

    /// Checks `records`, then writes them in order; returns when all are
    /// acknowledged. Any record refused is an error.
    pub async fn deliver(&self, records: Vec<OutRecord>) -> Result<(), DeliverError> {
        self.check(&records)?;
        let delivered = self.deliver_checked(records).await?;
        if let Some(refused) = delivered.refused.into_iter().next() {
            return Err(refused);
        }
        match delivered.gone.first() {
            Some(&index) => Err(self.error(index, "the stream was deleted".into())),
            None => Ok(()),
        }
    }

    /// Writes records that already passed `check`, in order; returns when all
    /// are acknowledged, with the records Kinesis refused as invalid (each
    /// found by retrying its rejected request one record at a time; the others
    /// are written) and those dropped because a discovered stream was deleted.
    /// (The pipeline checks each record itself, to apply its failure policy
    /// per record, and so does not pay for a second check.)
    pub async fn deliver_checked(
        &self,
        records: Vec<OutRecord>,
    ) -> Result<Delivered, DeliverError> {
        let Some(aggregation) = &self.aggregation else {
            return self.write(records, &[]).await.map(|w| Delivered {
                refused: w.refused,
                gone: w.gone,
            });
        };
        // As the KPL does: an aggregate that lands in another shard than the
        // map predicted (the stream was resharded) makes the map be read
        // again, and its records, with all not yet written, are packed again
        // and sent again, so every sub-record ends up in the shard it hashes
        // to. (The misplaced aggregate stays in the stream; the KCL drops its
        // sub-records that are outside that shard.)
        let mut todo = records;
        let mut delivered = Delivered::default();
        let mut backoff = self.backoff.clone();
        loop {
            let shards = aggregation.shard_map(&self.stream, false).await;
            // Pack positions in `todo`, so that errors and re-sends find their records.
            let tagged = todo
                .iter()
                .enumerate()
                .map(|(i, r)| OutRecord {
                    source_index: i as u32,
                    ..r.clone()
                })
                .collect();
            let Packed {
                records: packed,
                members,
                placements,
            } = pack(tagged, &shards, aggregation.max_bytes);
            let original =
                |position: u32| todo.get(position as usize).map_or(0, |r| r.source_index);
            // The positions in `todo` of the records entry `i` holds.
            let holds = |i: u32| members.get(i as usize).cloned().unwrap_or_default();
            let written = match self.write(packed, &placements).await {
                Ok(written) => written,
                Err(e) => {
                    let first = holds(e.source_index).first().copied().unwrap_or(0);
                    return Err(DeliverError {
                        source_index: original(first),
                        ..e
                    });
                }
            };
            for e in &written.refused {
                delivered
                    .refused
                    .extend(holds(e.source_index).into_iter().map(|p| DeliverError {
                        source_index: original(p),
                        ..e.clone()
                    }));
            }
            for &i in &written.gone {
                delivered.gone.extend(holds(i).into_iter().map(&original));
            }
            if written.misplaced.is_empty() {
                return Ok(delivered);
            }
            // The new map says which sub-records of a misplaced aggregate are
            // outside the shard it landed in: only those are sent again.
            let shards = aggregation.shard_map(&self.stream, true).await;
            let mut positions: Vec<u32> = written.unsent.iter().flat_map(|&i| holds(i)).collect();
            for (i, landed) in &written.misplaced {
                let range = shards.iter().find(|s| &s.id == landed);
                positions.extend(holds(*i).into_iter().filter(|&p| {
                    let hash = todo.get(p as usize).map_or(0, hash_of);
                    !range.is_some_and(|r| r.start <= hash && hash <= r.end)
                }));
            }
            positions.sort_unstable();
            positions.dedup();
            tracing::warn!(output = %self.name, records = positions.len(), "an aggregate landed outside its predicted shard (resharded?); reading the shard map again and re-sending");
            todo = positions
                .into_iter()
                .filter_map(|p| todo.get(p as usize).cloned())
                .collect();
            if todo.is_empty() {
                return Ok(delivered);
            }
            backoff.wait().await;
        }
    }

    /// Writes records in order until all are acknowledged (see
    /// `deliver_checked`). `placements[i]`, when given, is the shard record
    /// `i` (by `source_index`) must land in: if one lands elsewhere, the
    /// write stops after that request and `again` names it and every record
    /// not yet written, in order.
    async fn write(
        &self,
        records: Vec<OutRecord>,
        placements: &[Option<String>],
    ) -> Result<Written, DeliverError> {
        let mut pending: VecDeque<OutRecord> = records.into();
        let mut refused = Vec::new();
        let mut gone = Vec::new();
        let mut backoff = self.backoff.clone();
        // Consecutive answered requests with failed entries: logged loudly every 10.
        let mut failing_rounds = 0u32;
        // Records still to send one per request, to find the one a rejected request held.
        let mut isolate = 0usize;
        while !pending.is_empty() {
            let n = if isolate > 0 {
                isolate -= 1;
                1
            } else {
                next_request_len(&pending, self.max_request_bytes)
            };
            debug_assert!((1..=MAX_ENTRIES_PER_REQUEST).contains(&n));
            let entries = pending
                .iter()
                .take(n)
                .map(to_entry)
                .collect::<Result<Vec<_>, _>>();
            let entries = entries.map_err(|e| self.error(pending[0].source_index, e))?;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            match self.transport.put_records(&self.stream, entries).await {
                PutOutcome::Answered(results) => {
                    let mut failed: Vec<OutRecord> = Vec::new();
                    let mut first_error = None;
                    let mut misplaced = Vec::new();
                    for (record, result) in pending.drain(..n).zip(results) {
                        match result {
                            Err(error) => {
                                first_error.get_or_insert(error);
                                failed.push(record);
                            }
                            Ok(shard) => {
                                let expected = placements
                                    .get(record.source_index as usize)
                                    .and_then(Option::as_ref);
                                if expected.is_some_and(|e| *e != shard) {
                                    misplaced.push((record.source_index, shard));
                                }
                            }
                        }
                    }
                    if !misplaced.is_empty() {
                        let written = n - failed.len();
                        self.stats
                            .records_written
                            .fetch_add(written as u64, Ordering::Relaxed);
                        for record in failed.into_iter().rev() {
                            pending.push_front(record);
                        }
                        return Ok(Written {
                            refused,
                            gone,
                            misplaced,
                            unsent: pending.iter().map(|r| r.source_index).collect(),
                        });
                    }
                    let written = n - failed.len();
                    self.stats
                        .records_written
                        .fetch_add(written as u64, Ordering::Relaxed);
                    if failed.is_empty() {
                        backoff.reset();
                        failing_rounds = 0;
                        continue;
                    }
                    failing_rounds += 1;
                    if failing_rounds.is_multiple_of(10) {
                        tracing::warn!(output = %self.name, rounds = failing_rounds, failed = failed.len(), error = ?first_error, "PutRecords entries keep failing; still retrying");
                    }
                    self.stats
                        .entries_retried
                        .fetch_add(failed.len() as u64, Ordering::Relaxed);
                    tracing::debug!(output = %self.name, failed = failed.len(), of = n, error = ?first_error, "PutRecords entries failed; retrying them");
                    for record in failed.into_iter().rev() {
                        pending.push_front(record);
                    }
                    // Progress (some entries written) keeps the wait short; only
                    // requests that write nothing escalate towards the cap.
                    if written > 0 {
                        backoff.reset();
                    }
                    backoff.wait().await;
                }
                PutOutcome::Gone(error) if self.discovered => {
                    // Its owner deleted it: not the pipeline's failure. What
                    // is routed to it is dropped and counted; logged once.
                    if !self.gone_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(output = %self.name, records = pending.len(), %error, "discovered stream was deleted; dropping what is routed to it (counted in distributary_pipeline_dropped_stream_deleted_total) until discovery removes it");
                    }
                    gone.extend(pending.drain(..).map(|r| r.source_index));
                }
                PutOutcome::Transient(error) | PutOutcome::Gone(error) => {
                    self.stats.requests_retried.fetch_add(1, Ordering::Relaxed);
                    let level_warn = backoff.attempts() >= 3;
                    if level_warn {
                        tracing::warn!(output = %self.name, attempt = backoff.attempts(), %error, "PutRecords failed; retrying");
                    } else {
                        tracing::debug!(output = %self.name, %error, "PutRecords failed; retrying");
                    }
                    backoff.wait().await;
                }
                PutOutcome::Invalid(error) if n > 1 => {
                    tracing::warn!(output = %self.name, records = n, %error, "PutRecords rejected as invalid; sending those records one at a time to find the culprit");
                    isolate = n;
                }
                PutOutcome::Invalid(error) => {
                    if let Some(record) = pending.pop_front() {
                        refused.push(self.error(
                            record.source_index,
                            format!("PutRecords rejected the record: {error}"),
                        ));
                    }
                }
                PutOutcome::Rejected(error) => {
                    return Err(self.error(
                        pending[0].source_index,
                        format!("PutRecords of {n} records rejected: {error}"),
                    ));
                }
            }
        }
        Ok(Written {
            refused,
            gone,
            misplaced: Vec::new(),
            unsent: Vec::new(),
        })
    }
}

fn to_entry(record: &OutRecord) -> Result<PutRecordsRequestEntry, String> {
    PutRecordsRequestEntry::builder()
        .data(Blob::new(record.data.clone()))
        .partition_key(record.partition_key.clone())
        .set_explicit_hash_key(record.explicit_hash_key.clone())
        .build()
        .map_err(|e| format!("cannot build the PutRecords entry: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Fails each entry with the given probability and whole calls now and then; keeps what it "wrote".
    struct Flaky {
        entry_failure: f64,
        call_failure: f64,
        written: Mutex<Vec<(String, Vec<u8>)>>,
        rng: Mutex<fastrand::Rng>,
    }

    impl Transport for Flaky {
        async fn put_records(
            &self,
            _: &StreamRef,
            entries: Vec<PutRecordsRequestEntry>,
        ) -> PutOutcome {
            assert!(entries.len() <= MAX_ENTRIES_PER_REQUEST);
            let mut rng = self.rng.lock().unwrap();
            if rng.f64() < self.call_failure {
                return PutOutcome::Transient("503".into());
            }
            let mut written = self.written.lock().unwrap();
            PutOutcome::Answered(
                entries
                    .into_iter()
                    .map(|e| {
                        if rng.f64() < self.entry_failure {
                            Err("ProvisionedThroughputExceededException: slow down".into())
                        } else {
                            let key = e.partition_key().unwrap_or_default().to_string();
                            written.push((key, e.data().as_ref().to_vec()));
                            Ok("shardId-000000000000".into())
                        }
                    })
                    .collect(),
            )
        }
    }

    #[tokio::test]
    async fn partial_failures_lose_nothing_and_keep_per_key_order() {
        let flaky = Flaky {
            entry_failure: 0.3,
            call_failure: 0.1,
            written: Mutex::new(Vec::new()),
            rng: Mutex::new(fastrand::Rng::with_seed(7)),
        };
        let writer =
            OutputWriter::new("out".into(), StreamRef::parse("s"), flaky, 1 << 20, 5 << 20)
                .with_backoff(Backoff::new(
                    Duration::from_millis(1),
                    Duration::from_millis(10),
                ));
        let records: Vec<OutRecord> = (0..3000u32)
            .map(|i| OutRecord {
                data: i.to_be_bytes().to_vec(),
                partition_key: format!("k{}", i % 37),
                explicit_hash_key: None,
                source_index: i,
            })
            .collect();
        writer.deliver(records).await.unwrap();
        let written = writer.transport.written.lock().unwrap();
        assert_eq!(written.len(), 3000, "every record written exactly once");
        let mut last: HashMap<&str, u32> = HashMap::new();
        for (key, data) in written.iter() {
            let i = u32::from_be_bytes(data[..4].try_into().unwrap());
            if let Some(prev) = last.insert(key, i) {
                assert!(prev < i, "key {key}: {i} written after {prev}");
            }
        }
        assert!(writer.stats.entries_retried.load(Ordering::Relaxed) > 0);
    }

    #[tokio::test]
    async fn an_oversize_record_is_refused_before_anything_is_written() {
        let flaky = Flaky {
            entry_failure: 0.0,
            call_failure: 0.0,
            written: Mutex::new(Vec::new()),
            rng: Mutex::new(fastrand::Rng::new()),
        };
        let writer = OutputWriter::new("out".into(), StreamRef::parse("s"), flaky, 1024, 5 << 20);
        let ok = OutRecord {
            data: vec![1; 10],
            partition_key: "a".into(),
            explicit_hash_key: None,
            source_index: 0,
        };
        let big = OutRecord {
            data: vec![1; 2000],
            partition_key: "b".into(),
            explicit_hash_key: None,
            source_index: 1,
        };
        let err = writer.deliver(vec![ok, big]).await.unwrap_err();
        assert_eq!(err.source_index, 1);
        assert!(err.to_string().contains("exceeds"), "{err}");
        assert!(writer.transport.written.lock().unwrap().is_empty());
    }

    /// Answers ResourceNotFoundException, like a stream deleted under the writer.
    struct Deleted {
        calls: AtomicU64,
    }

    impl Transport for Deleted {
        async fn put_records(&self, _: &StreamRef, _: Vec<PutRecordsRequestEntry>) -> PutOutcome {
            self.calls.fetch_add(1, Ordering::Relaxed);
            PutOutcome::Gone("ResourceNotFoundException: no such stream".into())
        }
    }

    fn three_records() -> Vec<OutRecord> {
        (0..3u32)
            .map(|i| OutRecord {
                data: vec![1],
                partition_key: format!("k{i}"),
                explicit_hash_key: None,
                source_index: i,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_deleted_discovered_stream_drops_its_records_and_a_configured_one_retries() {
        let deleted = || {
            let transport = Deleted {
                calls: AtomicU64::new(0),
            };
            OutputWriter::new("w".into(), StreamRef::parse("s"), transport, 1024, 5 << 20)
        };
        let writer = deleted().discovered();
        let delivered = writer.deliver_checked(three_records()).await.unwrap();
        assert_eq!(delivered.gone, [0, 1, 2], "dropped as deleted");
        assert!(delivered.refused.is_empty(), "not refused: no on_error");
        assert_eq!(writer.transport.calls.load(Ordering::Relaxed), 1);

        let writer = deleted().with_backoff(Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(2),
        ));
        let still_trying = tokio::time::timeout(
            Duration::from_millis(200),
            writer.deliver_checked(three_records()),
        )
        .await;
        assert!(
            still_trying.is_err(),
            "a configured stream is retried until it exists"
        );
        assert!(writer.transport.calls.load(Ordering::Relaxed) > 3);
    }
}
