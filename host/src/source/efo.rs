//! Enhanced fan-out (`reader = "efo"`): a registered stream consumer, and one
//! SubscribeToShard subscription per shard, pushed to us over an event stream.
//!
//! - `consumer_arn` registers the consumer `efo_consumer_name` on the stream,
//!   or reuses it, and waits until it is ACTIVE. RegisterStreamConsumer is
//!   called at most once per attempt (the service allows 5 per second) and
//!   DescribeStreamConsumer at most every 500 ms (20 per second allowed).
//! - `EfoReader::next` gives the next event's records like a GetRecords batch.
//!   A subscription ends after 5 minutes, or fails; the reader subscribes
//!   again (at most once per second per shard) after the last
//!   `ContinuationSequenceNumber`, or its last record, so nothing is skipped
//!   or read twice. An event without a continuation sequence number is the
//!   end of a closed shard (`end`). Which shards come next (parents before
//!   children) is decided by the coordinator from ListShards lineage, as in
//!   polling mode; the ChildShards of the last event are logged.
//! - A server that never sends that last event (kinesis-local keeps sending
//!   empty events on a closed shard): once ListShards shows the shard closed
//!   (`closed`, kept by the coordinator) and an event came back empty, the
//!   rest of the shard is read with GetRecords from the subscription's
//!   position, which ends definitively (no next iterator).
//!
//! - Another subscription holding the shard (ResourceInUseException: an old
//!   process's subscription still open, or a second consumer with the same
//!   name): counted, retried with a backoff growing to 10 s, and once the
//!   conflict has lasted `CONFLICT_FALLBACK_AFTER`, the shard is read with
//!   GetRecords from the subscription's position, trying to take the
//!   subscription again every `RETAKE_EVERY` (then at the GetRecords
//!   reader's position), so a held subscription delays nothing for long.
//!
//! Only the shared reader of a shard uses a subscription. A pipeline that fell
//! behind catches up with GetRecords (`lane.rs`): reading history is what
//! polling is for, and a second subscription per consumer and shard would
//! replace the first.

use super::reader::{ReadBatch, ShardReader, StartAt, push_source_records};
use super::stats::EfoShardStats;
use crate::backoff::Backoff;
use crate::kinesis::{StreamRef, describe, is_not_found};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{
    ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Gap between two SubscribeToShard calls on one shard (the service allows one per second).
const SUBSCRIBE_GAP: Duration = Duration::from_millis(1000);
/// How long SubscribeToShard may keep answering ResourceInUseException
/// before the shard is read with GetRecords instead.
const CONFLICT_FALLBACK_AFTER: Duration = Duration::from_secs(15);
/// While reading with GetRecords for a held subscription: how often to try
/// to take the subscription again.
const RETAKE_EVERY: Duration = Duration::from_secs(30);
/// Gap between two DescribeStreamConsumer calls while waiting for ACTIVE.
const DESCRIBE_GAP: Duration = Duration::from_millis(500);

type Events = aws_sdk_kinesis::primitives::event_stream::EventReceiver<
    SubscribeToShardEventStream,
    aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
>;

/// The stream's ARN (SubscribeToShard and the consumer APIs need it).
pub async fn stream_arn(client: &Client, stream: &StreamRef) -> Result<String, String> {
    if let Some(arn) = stream.arn() {
        return Ok(arn.to_string());
    }
    let out = client
        .describe_stream_summary()
        .set_stream_name(stream.name().map(str::to_string))
        .send()
        .await
        .map_err(|e| format!("DescribeStreamSummary on {stream}: {}", describe(&e)))?;
    out.stream_description_summary()
        .map(|s| s.stream_arn().to_string())
        .filter(|arn| !arn.is_empty())
        .ok_or_else(|| format!("DescribeStreamSummary on {stream}: no StreamARN"))
}

/// Registers consumer `name` on the stream, or reuses it; returns its ARN
/// once it is ACTIVE.
pub async fn consumer_arn(client: &Client, stream_arn: &str, name: &str) -> Result<String, String> {
    let mut registered = false;
    let mut last_status = None;
    loop {
        let described = client
            .describe_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name)
            .send()
            .await;
        match described {
            Ok(out) => {
                let Some(consumer) = out.consumer_description() else {
                    return Err(format!("DescribeStreamConsumer {name}: no description"));
                };
                match consumer.consumer_status() {
                    ConsumerStatus::Active => return Ok(consumer.consumer_arn().to_string()),
                    status if last_status.as_ref() != Some(status) => {
                        tracing::info!(consumer = %name, ?status, "waiting for the stream consumer to be ACTIVE");
                        last_status = Some(status.clone());
                    }
                    _ => {}
                }
            }
            Err(e) if is_not_found(&e) && !registered => {
                client
                    .register_stream_consumer()
                    .stream_arn(stream_arn)
                    .consumer_name(name)
                    .send()
                    .await
                    .map_err(|e| format!("RegisterStreamConsumer {name}: {}", describe(&e)))?;
                tracing::info!(consumer = %name, stream = %stream_arn, "registered the stream consumer");
                registered = true;
            }
            Err(e) => return Err(format!("DescribeStreamConsumer {name}: {}", describe(&e))),
        }
        tokio::time::sleep(DESCRIBE_GAP).await;
    }
}

pub struct EfoReader {
    client: Client,
    consumer_arn: String,
    pub shard_id: String,
    /// Where the next subscription starts.
    position: StartAt,
    events: Option<Events>,
    deaggregate: bool,
    next_subscribe: Instant,
    backoff: Backoff,
    /// Shards ListShards shows closed (kept by the coordinator).
    closed: watch::Receiver<HashSet<String>>,
    /// Makes a GetRecords reader, to finish a closed shard (see the module doc).
    make_polling: Box<dyn Fn(StartAt) -> ShardReader + Send + Sync>,
    finishing: Option<ShardReader>,
    /// Since when SubscribeToShard answers ResourceInUseException, and its backoff.
    conflict: Option<(Instant, Backoff)>,
    /// Reading with GetRecords while the subscription is held elsewhere; when
    /// to try to take it again.
    fallback: Option<(ShardReader, Instant)>,
    stats: Arc<EfoShardStats>,
    /// The memory budget events are charged to, when set (`budgeted`).
    budget: Option<Arc<crate::buffer::Budget>>,
    sizer: crate::buffer::ReadSizer,
}

/// Why a subscription could not be had.
enum SubscribeError {
    /// ResourceInUseException: another subscription holds the shard.
    InUse(String),
    Other(String),
}

impl EfoReader {
    pub fn new(
        client: Client,
        consumer_arn: String,
        shard_id: String,
        start: StartAt,
        deaggregate: bool,
        closed: watch::Receiver<HashSet<String>>,
        make_polling: Box<dyn Fn(StartAt) -> ShardReader + Send + Sync>,
    ) -> Self {
        EfoReader {
            client,
            consumer_arn,
            shard_id,
            position: start,
            events: None,
            deaggregate,
            next_subscribe: Instant::now(),
            backoff: Backoff::kinesis(),
            closed,
            make_polling,
            finishing: None,
            conflict: None,
            fallback: None,
            stats: Arc::default(),
            budget: None,
            sizer: crate::buffer::ReadSizer::default(),
        }
    }

    /// Charges every event to `budget`: before taking the next event from
    /// the subscription, it waits for room for one record (so a full budget
    /// stops the pull, and HTTP/2 flow control holds the sender); the event
    /// is then charged in full. (The GetRecords readers it makes for a
    /// closed shard or a conflict must be budgeted by `make_polling`.)
    pub fn budgeted(mut self, budget: Arc<crate::buffer::Budget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Counts subscription conflicts and the GetRecords fallback in `stats`.
    pub fn counting(mut self, stats: Arc<EfoShardStats>) -> Self {
        self.stats = stats;
        self
    }

    /// The next event's records (possibly none), subscribing again as needed.
    pub async fn next(&mut self) -> ReadBatch {
        loop {
            if let Some(polling) = self.finishing.as_mut() {
                return polling.next().await;
            }
            if let Some((polling, retake_at)) = self.fallback.as_mut() {
                if Instant::now() < *retake_at {
                    return polling.next().await;
                }
                *retake_at = Instant::now() + RETAKE_EVERY;
                self.position = polling.position().clone();
                match self.subscribe().await {
                    Ok(events) => {
                        // Back to the subscription; if it ends at once in a
                        // conflict again, `in_use` falls back right away.
                        tracing::info!(shard = %self.shard_id, position = ?self.position, "subscribed again; leaving GetRecords");
                        self.events = Some(events);
                        self.fallback = None;
                        self.stats.polling_fallback.store(false, Ordering::Relaxed);
                    }
                    Err(SubscribeError::InUse(_)) => {
                        self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(SubscribeError::Other(error)) => {
                        tracing::debug!(shard = %self.shard_id, %error, "cannot take the subscription again yet");
                    }
                }
                continue;
            }
            let Some(events) = self.events.as_mut() else {
                tokio::time::sleep_until(self.next_subscribe.into()).await;
                self.next_subscribe = Instant::now() + SUBSCRIBE_GAP;
                match self.subscribe().await {
                    Ok(events) => self.events = Some(events),
                    Err(SubscribeError::InUse(error)) => self.in_use(&error).await,
                    Err(SubscribeError::Other(error)) => self.retry_later(&error).await,
                }
                continue;
            };
            let mut charge = match &self.budget {
                Some(budget) => Some(budget.reserve(self.sizer.reservation(1).0, 0).await),
                None => None,
            };
            match events.recv().await {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))) => {
                    self.backoff.reset();
                    if self.conflict.take().is_some() {
                        tracing::info!(shard = %self.shard_id, "subscription taken after a conflict");
                    }
                    tracing::trace!(shard = %self.shard_id, records = event.records.len(), continuation = %event.continuation_sequence_number, children = ?event.child_shards, "subscription event");
                    let end = event.continuation_sequence_number.is_empty();
                    if let Some(last) = event.records.last() {
                        self.position = StartAt::AfterSequence(last.sequence_number.clone());
                    }
                    if !end {
                        self.position =
                            StartAt::AfterSequence(event.continuation_sequence_number.clone());
                    } else {
                        let children: Vec<&str> = event
                            .child_shards
                            .iter()
                            .flatten()
                            .map(|c| c.shard_id.as_str())
                            .collect();
                        tracing::info!(shard = %self.shard_id, ?children, "subscription reached the end of the shard");
                    }
                    if event.records.is_empty()
                        && !end
                        && self.closed.borrow().contains(&self.shard_id)
                    {
                        tracing::info!(shard = %self.shard_id, "the shard is closed but its subscription sends no end; reading the rest with GetRecords");
                        self.events = None;
                        self.finishing = Some((self.make_polling)(self.position.clone()));
                        continue;
                    }
                    let mut records = Vec::with_capacity(event.records.len());
                    for record in event.records {
                        push_source_records(&mut records, record, self.deaggregate);
                    }
                    let footprint: usize = records
                        .iter()
                        .map(crate::record::SourceRecord::footprint)
                        .sum();
                    self.sizer.observe(records.len(), footprint);
                    if let Some(charge) = charge.as_mut() {
                        charge.resize(footprint);
                    }
                    return ReadBatch {
                        records,
                        millis_behind: Some(event.millis_behind_latest),
                        end,
                        charge,
                    };
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::debug!(shard = %self.shard_id, "subscription ended; subscribing again");
                    self.events = None;
                }
                Err(e) => {
                    self.events = None;
                    let error = format!("subscription failed: {}", describe(&e));
                    // Some servers accept the call and then end the stream
                    // with ResourceInUseException (kinesis-local does).
                    let in_use = e
                        .as_service_error()
                        .is_some_and(|s| s.is_resource_in_use_exception());
                    if in_use {
                        self.in_use(&error).await;
                    } else {
                        self.retry_later(&error).await;
                    }
                }
            }
        }
    }

    /// Another subscription holds the shard: count it, back off, and once
    /// the conflict lasted `CONFLICT_FALLBACK_AFTER`, read with GetRecords.
    async fn in_use(&mut self, error: &str) {
        self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
        let (since, backoff) = self.conflict.get_or_insert_with(|| {
            (
                Instant::now(),
                Backoff::new(Duration::from_secs(1), Duration::from_secs(10)),
            )
        });
        if since.elapsed() >= CONFLICT_FALLBACK_AFTER {
            tracing::warn!(shard = %self.shard_id, %error, position = ?self.position, "another subscription holds the shard; reading it with GetRecords until the subscription can be taken");
            self.stats.polling_fallback.store(true, Ordering::Relaxed);
            self.fallback = Some((
                (self.make_polling)(self.position.clone()),
                Instant::now() + RETAKE_EVERY,
            ));
            return;
        }
        if backoff.attempts() == 0 {
            tracing::warn!(shard = %self.shard_id, %error, "another subscription holds the shard; retrying with backoff");
        }
        backoff.wait().await;
    }

    async fn subscribe(&self) -> Result<Events, SubscribeError> {
        let (kind, sequence, timestamp) = match &self.position {
            StartAt::TrimHorizon => (ShardIteratorType::TrimHorizon, None, None),
            StartAt::Latest => (ShardIteratorType::Latest, None, None),
            StartAt::AtTimestamp(ts) => (ShardIteratorType::AtTimestamp, None, Some(*ts)),
            StartAt::AfterSequence(seq) => (
                ShardIteratorType::AfterSequenceNumber,
                Some(seq.clone()),
                None,
            ),
            StartAt::AtSequence(seq) => {
                (ShardIteratorType::AtSequenceNumber, Some(seq.clone()), None)
            }
        };
        let start = StartingPosition::builder()
            .r#type(kind)
            .set_sequence_number(sequence)
            .set_timestamp(timestamp)
            .build()
            .map_err(|e| SubscribeError::Other(format!("StartingPosition: {e}")))?;
        let out = self
            .client
            .subscribe_to_shard()
            .consumer_arn(&self.consumer_arn)
            .shard_id(&self.shard_id)
            .starting_position(start)
            .send()
            .await
            .map_err(|e| {
                let text = format!("SubscribeToShard: {}", describe(&e));
                match e
                    .as_service_error()
                    .map(|s| s.is_resource_in_use_exception())
                {
                    Some(true) => SubscribeError::InUse(text),
                    _ => SubscribeError::Other(text),
                }
            })?;
        Ok(out.event_stream)
    }

    async fn retry_later(&mut self, error: &str) {
        if self.backoff.attempts() >= 3 {
            tracing::warn!(shard = %self.shard_id, %error, "enhanced fan-out read failed; retrying");
        } else {
            tracing::debug!(shard = %self.shard_id, %error, "enhanced fan-out read failed; retrying");
        }
        self.backoff.wait().await;
    }
}
