//! Polls one shard with GetRecords.
//!
//! Pacing: at most one call per `MIN_CALL_GAP` on a shard by all of this
//! process's readers together (`read_slots.rs`: Kinesis allows 5 reads per
//! second per shard across all consumers), at most `MAX_BYTES_PER_SECOND`
//! read per shard on average (the next call waits until the bytes of the last
//! one fit the 2 MiB/s read limit), and a pause of `poll_interval` after a
//! call that found the shard caught up. ProvisionedThroughputExceeded is
//! backed off like any transient error. Recovery: an expired iterator
//! is replaced from the last record read; throttling and transient errors are
//! retried with backoff, forever. The reader position (last record read) is
//! not the checkpoint (last record acknowledged): a restart resumes from the
//! checkpoint.
//!
//! Memory: with a budget (`budgeted`), each call first reserves room for its
//! records (waiting while the budget is full) and asks for as many records
//! (Limit) as that room holds, by the average size of the records read so
//! far; the batch carries its charge, sized to what was read.

use super::stats::ReadErrors;
use crate::backoff::Backoff;
use crate::buffer::{Budget, Charge, ReadSizer};
use crate::kinesis::{StreamRef, describe, is_transient};
use crate::record::{ShardPosition, SourceRecord};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_smithy_types::DateTime;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::read_slots::{self, MIN_CALL_GAP};

/// The read limit of one shard (shared by all polling consumers).
const MAX_BYTES_PER_SECOND: u64 = 2 << 20;

/// How long after a call that read `bytes` the next one may be made.
fn gap_after(bytes: usize) -> Duration {
    let for_bytes = Duration::from_micros(bytes as u64 * 1_000_000 / MAX_BYTES_PER_SECOND);
    MIN_CALL_GAP.max(for_bytes)
}

/// Where reading a shard starts.
#[derive(Debug, Clone, PartialEq)]
pub enum StartAt {
    TrimHorizon,
    Latest,
    AtTimestamp(DateTime),
    AfterSequence(String),
    /// At this record: the position was inside a KPL aggregate, which is
    /// read again (its acknowledged sub-records are skipped by the lane).
    AtSequence(String),
}

impl StartAt {
    /// Where to read so as to see everything after `done`.
    pub fn after(done: &ShardPosition) -> StartAt {
        match done.sub {
            None => StartAt::AfterSequence(done.sequence.clone()),
            Some(_) => StartAt::AtSequence(done.sequence.clone()),
        }
    }
}

/// What one GetRecords call gave.
pub struct ReadBatch {
    pub records: Vec<SourceRecord>,
    pub millis_behind: Option<i64>,
    /// The shard is closed and this was its last batch.
    pub end: bool,
    /// Its share of the memory budget, held until the batch is dropped.
    pub charge: Option<Charge>,
}

pub struct ShardReader {
    client: Client,
    stream: StreamRef,
    pub shard_id: String,
    position: StartAt,
    iterator: Option<String>,
    limit: i32,
    poll_interval: Duration,
    /// Split KPL aggregates into their sub-records (`deaggregate`).
    deaggregate: bool,
    next_call: Instant,
    backoff: Backoff,
    /// Counts GetRecords calls, when set (`counting_calls`).
    calls: Option<Arc<AtomicU64>>,
    /// Counts read errors by code, when set (`counting_errors`).
    errors: Option<Arc<ReadErrors>>,
    /// The memory budget reads are charged to, when set (`budgeted`).
    budget: Option<Arc<Budget>>,
    sizer: ReadSizer,
}

impl ShardReader {
    pub fn new(
        client: Client,
        stream: StreamRef,
        shard_id: String,
        start: StartAt,
        limit: i32,
        poll_interval: Duration,
    ) -> Self {
        ShardReader {
            client,
            stream,
            shard_id,
            position: start,
            iterator: None,
            limit,
            poll_interval,
            deaggregate: false,
            next_call: Instant::now(),
            backoff: Backoff::kinesis(),
            calls: None,
            errors: None,
            budget: None,
            sizer: ReadSizer::default(),
        }
    }

    /// Charges every read to `budget` (see the module doc).
    pub fn budgeted(mut self, budget: Arc<Budget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Splits KPL aggregated records into their sub-records.
    pub fn deaggregating(mut self, deaggregate: bool) -> Self {
        self.deaggregate = deaggregate;
        self
    }

    /// Counts every GetRecords call this reader makes in `calls`.
    pub fn counting_calls(mut self, calls: Arc<AtomicU64>) -> Self {
        self.calls = Some(calls);
        self
    }

    /// Counts every read error by its AWS code (`other`: no answer) in `errors`.
    pub fn counting_errors(mut self, errors: Arc<ReadErrors>) -> Self {
        self.errors = Some(errors);
        self
    }

    fn count_error(&self, code: Option<&str>) {
        if let Some(errors) = &self.errors {
            errors.count(code.unwrap_or("other"));
        }
    }

    /// Where the next read continues: after the last record returned, or the start.
    pub fn position(&self) -> &StartAt {
        &self.position
    }

    /// The next batch (possibly empty), retrying errors until it gets one.
    pub async fn next(&mut self) -> ReadBatch {
        let slot_key = format!("{}/{}", self.stream, self.shard_id);
        loop {
            tokio::time::sleep_until(self.next_call.into()).await;
            if self.iterator.is_none() {
                match self.get_iterator().await {
                    Ok(iterator) => self.iterator = Some(iterator),
                    Err(error) => {
                        self.count_error(Some(crate::kinesis::code_of(
                            error.strip_prefix("GetShardIterator: ").unwrap_or(&error),
                        )));
                        self.retry_later(&error).await;
                        continue;
                    }
                }
            }
            let Some(iterator) = self.iterator.clone() else {
                continue;
            };
            let most = self.limit.max(1) as usize;
            let (mut charge, limit) = match &self.budget {
                Some(budget) => {
                    let (least, want) = self.sizer.reservation(most);
                    let charge = budget.reserve(least, want).await;
                    let limit = self.sizer.limit(charge.bytes(), most);
                    (Some(charge), limit as i32)
                }
                None => (None, self.limit),
            };
            // Every reader of this shard in the process shares its slots.
            let slot = read_slots::reserve(&slot_key, Instant::now());
            tokio::time::sleep_until(slot.into()).await;
            self.next_call = Instant::now() + MIN_CALL_GAP;
            if let Some(calls) = &self.calls {
                calls.fetch_add(1, Ordering::Relaxed);
            }
            let result = self
                .client
                .get_records()
                .shard_iterator(iterator)
                .limit(limit)
                .set_stream_arn(self.stream.arn().map(str::to_string))
                .send()
                .await;
            match result {
                Ok(out) => {
                    self.backoff.reset();
                    if let Some(last) = out.records.last() {
                        self.position = StartAt::AfterSequence(last.sequence_number.clone());
                    }
                    let bytes: usize = out.records.iter().map(|r| r.data.as_ref().len()).sum();
                    self.next_call = Instant::now() + gap_after(bytes);
                    read_slots::push_back(&slot_key, self.next_call);
                    let mut records = Vec::with_capacity(out.records.len());
                    for record in out.records {
                        push_source_records(&mut records, record, self.deaggregate);
                    }
                    let footprint: usize = records.iter().map(SourceRecord::footprint).sum();
                    self.sizer.observe(records.len(), footprint);
                    if let Some(charge) = charge.as_mut() {
                        charge.resize(footprint);
                    }
                    self.iterator = out.next_shard_iterator.filter(|i| !i.is_empty());
                    let end = self.iterator.is_none();
                    let caught_up = records.is_empty() || out.millis_behind_latest == Some(0);
                    if caught_up && !end {
                        self.next_call = self.next_call.max(Instant::now() + self.poll_interval);
                    }
                    return ReadBatch {
                        records,
                        millis_behind: out.millis_behind_latest,
                        end,
                        charge,
                    };
                }
                Err(err) => {
                    let code = err
                        .as_service_error()
                        .and_then(|e| aws_sdk_kinesis::error::ProvideErrorMetadata::code(e));
                    self.count_error(code);
                    if code == Some("ExpiredIteratorException") {
                        // After a stall of over 5 minutes (at most once per
                        // stall and shard): nothing is lost, the next
                        // iterator starts after the last record read.
                        tracing::info!(stream = %self.stream, shard = %self.shard_id, "shard iterator expired; getting a new one after the last record read");
                        self.iterator = None;
                        continue;
                    }
                    let transient = is_transient(&err);
                    let error = describe(&err);
                    if !transient {
                        // e.g. an iterator the server no longer recognises: start again from the position.
                        self.iterator = None;
                    }
                    self.retry_later(&format!("GetRecords: {error}")).await;
                }
            }
        }
    }

    async fn retry_later(&mut self, error: &str) {
        if self.backoff.attempts() >= 3 {
            tracing::warn!(stream = %self.stream, shard = %self.shard_id, %error, "reading a shard failed; retrying");
        } else {
            tracing::debug!(stream = %self.stream, shard = %self.shard_id, %error, "reading a shard failed; retrying");
        }
        self.backoff.wait().await;
    }

    async fn get_iterator(&self) -> Result<String, String> {
        let call = self
            .client
            .get_shard_iterator()
            .shard_id(&self.shard_id)
            .set_stream_name(self.stream.name().map(str::to_string))
            .set_stream_arn(self.stream.arn().map(str::to_string));
        let call = match &self.position {
            StartAt::TrimHorizon => call.shard_iterator_type(ShardIteratorType::TrimHorizon),
            StartAt::Latest => call.shard_iterator_type(ShardIteratorType::Latest),
            StartAt::AtTimestamp(ts) => call
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(*ts),
            StartAt::AfterSequence(seq) => call
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            StartAt::AtSequence(seq) => call
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq),
        };
        let out = call
            .send()
            .await
            .map_err(|e| format!("GetShardIterator: {}", describe(&e)))?;
        out.shard_iterator
            .ok_or_else(|| "GetShardIterator returned no iterator".to_string())
    }
}

/// Appends `r` to `records`: its sub-records if it is a KPL aggregate (and
/// `deaggregate`), else the record itself.
pub(super) fn push_source_records(
    records: &mut Vec<SourceRecord>,
    r: aws_sdk_kinesis::types::Record,
    deaggregate: bool,
) {
    let arrival_ms = r
        .approximate_arrival_timestamp
        .and_then(|t| t.to_millis().ok())
        .unwrap_or(0);
    let data = r.data.into_inner();
    if deaggregate && let Some(subs) = crate::kpl::deaggregate(&data) {
        records.extend(subs.into_iter().map(|sub| SourceRecord {
            data: sub.data.into(),
            partition_key: sub.partition_key,
            explicit_hash_key: sub.explicit_hash_key,
            sequence_number: r.sequence_number.clone(),
            sub_sequence_number: Some(sub.sub_sequence_number),
            arrival_ms,
        }));
        return;
    }
    records.push(SourceRecord {
        arrival_ms,
        data: data.into(),
        // Absent with service-managed record distribution: empty, and
        // written with `SourceRecord::output_key` (its sequence number).
        partition_key: r.partition_key.unwrap_or_default(),
        explicit_hash_key: None,
        sequence_number: r.sequence_number,
        sub_sequence_number: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_without_partition_key_is_seen_empty_and_written_keyed_by_its_sequence_number() {
        // No emulator has streams with service-managed distribution: build
        // the SDK record as such a stream returns it.
        let record = aws_sdk_kinesis::types::Record::builder()
            .sequence_number("49590338271490256608559692538361571095921575989136588898")
            .data(aws_sdk_kinesis::primitives::Blob::new(b"x".to_vec()))
            .build()
            .unwrap();
        let mut records = Vec::new();
        push_source_records(&mut records, record, true);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].partition_key, "", "plugins see it absent");
        let out = crate::router::replicate(&records, 1);
        assert_eq!(
            out[0][0].partition_key,
            "49590338271490256608559692538361571095921575989136588898"
        );
        assert!(
            crate::sink::limits::check_record(&out[0][0], 1 << 20).is_ok(),
            "every output accepts it"
        );
    }

    #[test]
    fn reads_are_paced_to_five_calls_and_two_mib_per_second() {
        assert_eq!(gap_after(0), MIN_CALL_GAP);
        assert_eq!(gap_after(100 << 10), MIN_CALL_GAP);
        // 10 MiB (the most one call returns) takes 5 s of the shard's budget.
        assert_eq!(gap_after(10 << 20), Duration::from_secs(5));
        assert_eq!(gap_after(1 << 20), Duration::from_millis(500));
    }
}
