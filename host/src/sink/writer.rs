//! One writer per output stream, shared by every lane (pipeline × source
//! shard) that writes to it. A lane hands it a delivery (`deliver_checked`):
//! an ordered list of records. The records join the output's queue
//! (`request.rs`), from which requests are packed across all deliveries by
//! the output's ordering rule and sent, up to the window (`window.rs`) in
//! flight at once; failed entries are retried after the policy's backoff
//! (`policy.rs`), whole requests that failed transiently (5xx, timeouts,
//! connection loss) are sent again, forever. A delivery returns when every
//! one of its records is acknowledged, with the records Kinesis refused as
//! invalid and those dropped because a discovered stream was deleted; it
//! returns an error only when the stream rejects requests as a whole for a
//! reason that will not pass (access denied).
//!
//! Each acknowledged record is reported to the delivery's `BatchProgress` as
//! it is acknowledged, so the lane can checkpoint the settled prefix before
//! the rest is written. If the process dies at any await here, nothing not
//! acknowledged was reported: it is read and written again after restart
//! (at-least-once).
//!
//! Requests run as tasks of their own (`send`): a delivery whose lane stops
//! waiting does not cancel requests other deliveries' records share.
//!
//! Pacing (`paced`, on for every output the catalog builds): each record is
//! placed in the shard it will land in by the stream's shard map
//! (`shard_map.rs`, read again every `SHARD_MAP_TTL` and when a record lands
//! elsewhere), and a request takes only records whose shard has room under
//! its write quota (`pacing.rs`); when nothing ready has room, the writer
//! wakes itself when some will.

use super::limits::{MAX_ENTRIES_PER_REQUEST, check_record};
use super::pacing::{Pacer, UNPACED};
use super::policy::{RetryPolicy, is_throttling};
use super::put_path::KinesisPut;
use super::request::{Admission, Landed, Ordering, Queue};
use super::service::{Entry, PutOutcome, Transport};
use super::shard_map::{ShardMap, hash_key};
use super::window::Window;
use crate::backoff::Backoff;
use crate::kinesis::{StreamRef, list_shards};
use crate::pipeline::progress::BatchProgress;
use crate::record::OutRecord;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as Atomic};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// How often a paced output's shard map is read again.
const SHARD_MAP_TTL: Duration = Duration::from_secs(30);

pub use super::aggregate::Aggregation;

/// Requests one output may have in flight at once, unless configured.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 8;

/// A record an output can never accept, or a delivery the stream rejected as a whole.
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

/// What one delivery through the queue did.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub refused: Vec<DeliverError>,
    pub gone: Vec<u32>,
    /// Records written to another shard than their placement, with that shard.
    pub misplaced: Vec<(u32, String)>,
}

/// What an aggregating output says of the entries of a delivery, by
/// `source_index`: the shard each must land in, and the records it holds.
pub(super) struct Packing<'a> {
    pub placements: &'a [Option<String>],
    pub members: &'a [Vec<u32>],
}

/// Counters of one output, read by the metrics and the tests' logs.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub records_written: AtomicU64,
    pub requests: AtomicU64,
    pub entries_retried: AtomicU64,
    pub requests_retried: AtomicU64,
    /// Records that landed after a newer record of their key (`ordering = "none"`).
    pub reordered: AtomicU64,
    /// Records not sent because their source shard's lease was lost (or
    /// went unrenewed past the margin) while they waited in the queue.
    pub fenced: AtomicU64,
    /// Errors by AWS error code: requests refused or failed as a whole, and
    /// failed entries (off the fast path: only failures take the lock).
    pub errors: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Times the writer held ready records back for their shards' quota.
    pub paced: AtomicU64,
}

impl WriterStats {
    /// Counts an error whose text starts with their code (`Code: message`).
    fn count_error(&self, text: &str) {
        let code = crate::kinesis::code_of(text);
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(code.to_string()).or_default() += 1;
        }
    }
}

pub struct OutputWriter<T: Transport = KinesisPut> {
    pub name: String,
    pub stream: StreamRef,
    max_record_bytes: usize,
    pub(super) core: Arc<Core<T>>,
    /// KPL aggregation on output (`aggregate = true`).
    pub(super) aggregation: Option<Aggregation>,
    pub stats: Arc<WriterStats>,
    /// Reads the shard map of a paced output; ends with the writer.
    refresh: Option<tokio::task::AbortHandle>,
}

impl<T: Transport> Drop for OutputWriter<T> {
    fn drop(&mut self) {
        if let Some(refresh) = &self.refresh {
            refresh.abort();
        }
    }
}

/// What a paced output knows of its stream's shards.
#[derive(Default)]
pub(super) struct Pacing {
    map: Mutex<Arc<ShardMap>>,
    /// A record landed outside the shard the map placed it in.
    stale: Notify,
    /// A wake-up is scheduled for records held back by the pacer.
    wake_scheduled: AtomicBool,
}

/// The part of a writer its request tasks share.
pub(super) struct Core<T> {
    name: String,
    stream: StreamRef,
    transport: T,
    max_request_bytes: usize,
    /// Found by a `stream_pattern`: if the stream is deleted, what is routed
    /// to it is dropped (and counted) rather than retried.
    discovered: AtomicBool,
    /// Set once the deletion of this (discovered) stream was logged.
    gone_logged: AtomicBool,
    window: Window,
    state: Mutex<State>,
    stats: Arc<WriterStats>,
    /// Set for a paced output (`OutputWriter::paced`).
    pacing: Option<Arc<Pacing>>,
}

struct State {
    queue: Queue<Item>,
    /// Requests sent and not yet answered (or waiting out their backoff).
    in_flight: usize,
    policy: RetryPolicy,
    pacer: Pacer,
}

/// A queued record and the delivery it belongs to.
struct Item {
    record: OutRecord,
    delivery: Arc<Delivery>,
    /// The shard it must land in (an aggregate), if checked.
    placement: Option<Arc<str>>,
    /// Records it carries (an aggregate's sub-records; else 1).
    carries: u32,
    /// The shard the shard map places it in (a paced output).
    shard: Option<Arc<str>>,
}

/// One `deliver_checked` call: its records settle one by one.
struct Delivery {
    progress: Option<Arc<BatchProgress>>,
    state: Mutex<DeliveryState>,
}

struct DeliveryState {
    left: usize,
    written: Written,
    done: Option<oneshot::Sender<Result<Written, DeliverError>>>,
}

enum Settled {
    Written { misplaced: Option<String> },
    Gone,
    Refused(DeliverError),
}

fn lock<S>(mutex: &Mutex<S>) -> MutexGuard<'_, S> {
    // Nothing holding these locks panics; if something did, the state is
    // still consistent between operations.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Delivery {
    /// Whether its records may still be written (see `BatchProgress::writable`).
    fn writable(&self) -> bool {
        self.progress.as_ref().is_none_or(|p| p.writable())
    }

    fn settle(&self, record: &OutRecord, how: Settled) {
        let mut state = lock(&self.state);
        if state.done.is_none() {
            return;
        }
        match how {
            Settled::Written { misplaced } => {
                if let Some(shard) = misplaced {
                    state.written.misplaced.push((record.source_index, shard));
                }
                if let Some(p) = &self.progress {
                    p.settle(record.source_index);
                }
            }
            Settled::Gone => {
                state.written.gone.push(record.source_index);
                if let Some(p) = &self.progress {
                    p.settle(record.source_index);
                }
            }
            Settled::Refused(e) => state.written.refused.push(e),
        }
        state.left = state.left.saturating_sub(1);
        if state.left == 0
            && let Some(done) = state.done.take()
        {
            let written = std::mem::take(&mut state.written);
            let _ = done.send(Ok(written));
        }
    }
}

impl<T: Transport> OutputWriter<T> {
    pub fn new(
        name: String,
        stream: StreamRef,
        transport: T,
        max_record_bytes: usize,
        max_request_bytes: usize,
    ) -> Self {
        let stats = Arc::new(WriterStats::default());
        OutputWriter {
            core: Arc::new(Core {
                name: name.clone(),
                stream: stream.clone(),
                transport,
                max_request_bytes,
                discovered: AtomicBool::new(false),
                gone_logged: AtomicBool::new(false),
                window: Window::new(DEFAULT_MAX_REQUESTS_IN_FLIGHT),
                state: Mutex::new(State {
                    queue: Queue::new(Ordering::PerKey),
                    in_flight: 0,
                    policy: RetryPolicy::new(Backoff::kinesis()),
                    pacer: Pacer::default(),
                }),
                stats: stats.clone(),
                pacing: None,
            }),
            name,
            stream,
            max_record_bytes,
            aggregation: None,
            stats,
            refresh: None,
        }
    }

    /// Paces writes per shard (see the module doc), reading the stream's
    /// shard map with `client`. Before the first delivery, in a runtime.
    pub fn paced(mut self, client: aws_sdk_kinesis::Client) -> Self {
        let pacing = Arc::new(Pacing::default());
        let Some(core) = Arc::get_mut(&mut self.core) else {
            return self;
        };
        core.pacing = Some(pacing.clone());
        let stream = self.stream.clone();
        let task = tokio::spawn(async move {
            loop {
                match list_shards(&client, &stream).await {
                    Ok(list) => {
                        let map = ShardMap::of(&list);
                        tracing::debug!(stream = %stream, shards = map.len(), "output shard map read");
                        *lock(&pacing.map) = Arc::new(map);
                    }
                    Err(error) => {
                        tracing::warn!(stream = %stream, %error, "cannot read the output's shard map; pacing by the last one")
                    }
                }
                let _ = tokio::time::timeout(SHARD_MAP_TTL, pacing.stale.notified()).await;
            }
        });
        self.refresh = Some(task.abort_handle());
        self
    }

    /// Marks the output as found by a `stream_pattern` (see `Core::discovered`).
    pub fn discovered(self) -> Self {
        self.core.discovered.store(true, Atomic::Relaxed);
        self
    }

    pub fn is_discovered(&self) -> bool {
        self.core.discovered.load(Atomic::Relaxed)
    }

    /// Packs what is written into KPL aggregates (see `aggregate.rs`).
    pub fn aggregating(mut self, client: aws_sdk_kinesis::Client, max_bytes: usize) -> Self {
        self.aggregation = Some(Aggregation::new(client, max_bytes));
        self
    }

    /// Replaces the retry backoff (default: `Backoff::kinesis()`).
    pub fn with_backoff(self, backoff: Backoff) -> Self {
        lock(&self.core.state).policy = RetryPolicy::new(backoff);
        self
    }

    /// Sets the ordering rule (default: per key). Before the first delivery.
    pub fn with_ordering(self, ordering: Ordering) -> Self {
        let mut state = lock(&self.core.state);
        if state.queue.is_empty() {
            state.queue = Queue::new(ordering);
        }
        drop(state);
        self
    }

    /// Sets the most requests in flight at once (default 8).
    pub fn with_max_requests_in_flight(self, max: usize) -> Self {
        self.core.window.set_max(max);
        self
    }

    pub fn ordering(&self) -> Ordering {
        lock(&self.core.state).queue.ordering()
    }

    /// Requests that may be in flight now (the adaptive window).
    pub fn window(&self) -> usize {
        self.core.window.size()
    }

    /// The PutRecords transport (the tests' fakes read what they were sent).
    pub fn transport(&self) -> &T {
        &self.core.transport
    }

    /// Checks every record against the output's limits before anything is written.
    pub fn check(&self, records: &[OutRecord]) -> Result<(), DeliverError> {
        for record in records {
            check_record(record, self.max_record_bytes)
                .map_err(|reason| self.core.error(record.source_index, reason))?;
        }
        Ok(())
    }

    /// Checks `records`, then writes them; returns when all are
    /// acknowledged. Any record refused is an error.
    pub async fn deliver(&self, records: Vec<OutRecord>) -> Result<(), DeliverError> {
        self.check(&records)?;
        let delivered = self.deliver_checked(records, None).await?;
        if let Some(refused) = delivered.refused.into_iter().next() {
            return Err(refused);
        }
        match delivered.gone.first() {
            Some(&index) => Err(self.core.error(index, "the stream was deleted".into())),
            None => Ok(()),
        }
    }

    /// Writes records that already passed `check` (by the output's ordering
    /// rule); returns when all are settled, with the records Kinesis refused
    /// as invalid (each found by sending its rejected request's records one
    /// at a time; the others are written) and those dropped because a
    /// discovered stream was deleted. Every record not refused is settled in
    /// `progress` once acknowledged (or dropped). (The pipeline checks each
    /// record itself, to apply its failure policy per record.)
    pub async fn deliver_checked(
        &self,
        records: Vec<OutRecord>,
        progress: Option<&Arc<BatchProgress>>,
    ) -> Result<Delivered, DeliverError> {
        if let Some(aggregation) = &self.aggregation {
            return self
                .deliver_aggregated(aggregation, records, progress)
                .await;
        }
        let written = self.submit(records, None, progress.cloned()).await?;
        Ok(Delivered {
            refused: written.refused,
            gone: written.gone,
        })
    }

    /// Queues `records` as one delivery and waits until all are settled.
    /// `packed`, for an aggregating output, says per `source_index` which
    /// shard the entry must land in (checked, reported as misplaced) and how
    /// many records it carries; its entries are then ordered by their
    /// explicit hash key (the shard), not their partition key.
    pub(super) async fn submit(
        &self,
        records: Vec<OutRecord>,
        packed: Option<Packing<'_>>,
        progress: Option<Arc<BatchProgress>>,
    ) -> Result<Written, DeliverError> {
        if records.is_empty() {
            return Ok(Written::default());
        }
        let (done, answer) = oneshot::channel();
        let delivery = Arc::new(Delivery {
            progress,
            state: Mutex::new(DeliveryState {
                left: records.len(),
                written: Written::default(),
                done: Some(done),
            }),
        });
        let by_shard = packed.is_some();
        let (placements, members) =
            packed.map_or((&[][..], &[][..]), |p| (p.placements, p.members));
        let map = self.core.pacing.as_ref().map(|p| lock(&p.map).clone());
        {
            let mut state = lock(&self.core.state);
            for record in records {
                let placement = placements
                    .get(record.source_index as usize)
                    .and_then(|p| p.as_deref())
                    .map(Arc::from);
                let carries = members
                    .get(record.source_index as usize)
                    .map_or(1, |m| m.len() as u32);
                // Plain records are ordered per partition key; the entries
                // of an aggregating output per shard (their explicit hash key).
                let key = match by_shard {
                    true => state.queue.key_hash(record.ordering_key()),
                    false => state.queue.key_hash(&record.partition_key),
                };
                let bytes = record.billed_bytes();
                let shard = map.as_ref().and_then(|m| {
                    m.shard_of(hash_key(
                        &record.partition_key,
                        record.explicit_hash_key.as_deref(),
                    ))
                    .cloned()
                });
                let tag = shard.as_ref().map_or(UNPACED, |s| state.pacer.tag(s));
                let item = Item {
                    record,
                    delivery: delivery.clone(),
                    placement,
                    carries,
                    shard,
                };
                state.queue.push_tagged(key, tag, bytes, item);
            }
        }
        Core::pump(&self.core);
        answer.await.unwrap_or_else(|_| {
            Err(self.core.error(
                0,
                "the output's writer stopped before the delivery settled".into(),
            ))
        })
    }
}

impl<T: Transport> Core<T> {
    fn error(&self, source_index: u32, reason: String) -> DeliverError {
        DeliverError {
            output: self.name.clone(),
            stream: self.stream.to_string(),
            source_index,
            reason,
        }
    }

    /// Sends requests while the window has room and the queue has records
    /// the ordering rule lets go.
    fn pump(core: &Arc<Self>) {
        loop {
            let (positions, entries) = {
                let mut state = lock(&core.state);
                if state.in_flight >= core.window.size() {
                    return;
                }
                // Pipelining is for full requests; a partial one waits
                // until nothing is in flight (see `fills_a_request`).
                if state.in_flight > 0
                    && !state
                        .queue
                        .fills_a_request(MAX_ENTRIES_PER_REQUEST, core.max_request_bytes)
                {
                    return;
                }
                let mut positions = match &core.pacing {
                    None => state
                        .queue
                        .next_request(MAX_ENTRIES_PER_REQUEST, core.max_request_bytes),
                    Some(pacing) => {
                        let shards = lock(&pacing.map).len();
                        let (positions, wait) =
                            Self::next_paced(&mut state, core.max_request_bytes, shards);
                        if positions.is_empty() {
                            if let Some(wait) = wait {
                                core.stats.paced.fetch_add(1, Atomic::Relaxed);
                                Self::wake_after(core, pacing, wait);
                            }
                            return;
                        }
                        positions
                    }
                };
                if positions.is_empty() {
                    return;
                }
                // Self-fencing at the last moment before a write: records of
                // a shard whose lease is gone leave the queue unwritten and
                // unacknowledged (their delivery never completes; its lane
                // is stopped by the lost lease). The new owner writes them.
                let before = positions.len();
                positions.retain(|&p| {
                    let writable = state.queue.get(p).is_none_or(|i| i.delivery.writable());
                    if !writable {
                        state.queue.dropped(p);
                    }
                    writable
                });
                let fenced = before - positions.len();
                if fenced > 0 {
                    core.stats.fenced.fetch_add(fenced as u64, Atomic::Relaxed);
                    if positions.is_empty() {
                        continue;
                    }
                }
                let entries: Vec<Entry> = positions
                    .iter()
                    .filter_map(|&p| state.queue.get(p).map(|item| Entry::of(&item.record)))
                    .collect();
                state.in_flight += 1;
                (positions, entries)
            };
            core.stats.requests.fetch_add(1, Atomic::Relaxed);
            tokio::spawn(Core::send(core.clone(), positions, entries));
        }
    }

    /// The next request of a paced output: only records whose shard has
    /// room; and, when some ready record had none, how long until it will.
    /// The look stops once all `shards` of the map were found full (a queue
    /// of thousands at the quota is not walked on every pump).
    fn next_paced(
        state: &mut State,
        max_bytes: usize,
        shards: usize,
    ) -> (Vec<u64>, Option<Duration>) {
        let now = Instant::now();
        let State { queue, pacer, .. } = state;
        let mut wait: Option<Duration> = None;
        // Shards (tags) found full in this request: one look each.
        let mut full: Vec<u32> = Vec::new();
        let positions =
            queue.next_request_admitted(MAX_ENTRIES_PER_REQUEST, max_bytes, |tag, bytes| {
                if tag == UNPACED {
                    return Admission::Take;
                }
                if full.contains(&tag) {
                    return Admission::Skip;
                }
                match pacer.admit_tag(tag, bytes, now) {
                    Ok(()) => Admission::Take,
                    Err(until) => {
                        wait = Some(wait.map_or(until, |w| w.min(until)));
                        full.push(tag);
                        match full.len() >= shards {
                            true => Admission::Stop,
                            false => Admission::Skip,
                        }
                    }
                }
            });
        (positions, wait)
    }

    /// Pumps again after `wait`, once (records held back by the pacer).
    fn wake_after(core: &Arc<Self>, pacing: &Arc<Pacing>, wait: Duration) {
        if pacing.wake_scheduled.swap(true, Atomic::AcqRel) {
            return;
        }
        let core = core.clone();
        let pacing = pacing.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            pacing.wake_scheduled.store(false, Atomic::Release);
            Core::pump(&core);
        });
    }

    /// One PutRecords request, and what its answer does to the queue.
    async fn send(core: Arc<Self>, positions: Vec<u64>, entries: Vec<Entry>) {
        let n = positions.len();
        let outcome = match core.transport.put_records(&core.stream, entries).await {
            PutOutcome::Answered(results) if results.len() != n => PutOutcome::Transient(format!(
                "PutRecords answered {} results for {n} entries",
                results.len()
            )),
            outcome => outcome,
        };
        match outcome {
            PutOutcome::Answered(results) => core.answered(&positions, results).await,
            PutOutcome::Gone(error) if core.discovered.load(Atomic::Relaxed) => {
                // Its owner deleted it: not the pipeline's failure. What is
                // routed to it is dropped and counted; logged once.
                let mut state = lock(&core.state);
                if !core.gone_logged.swap(true, Atomic::Relaxed) {
                    tracing::warn!(output = %core.name, records = state.queue.len(), %error, "discovered stream was deleted; dropping what is routed to it (counted in distributary_pipeline_dropped_stream_deleted_total) until discovery removes it");
                }
                let mut gone: Vec<Item> = positions
                    .iter()
                    .filter_map(|&p| state.queue.dropped(p))
                    .collect();
                gone.extend(
                    state
                        .queue
                        .drop_queued(|_| true)
                        .into_iter()
                        .map(|(_, i)| i),
                );
                state.in_flight -= 1;
                drop(state);
                for item in gone {
                    item.delivery.settle(&item.record, Settled::Gone);
                }
            }
            PutOutcome::Transient(error) | PutOutcome::Gone(error) => {
                core.stats.requests_retried.fetch_add(1, Atomic::Relaxed);
                core.stats.count_error(&error);
                let wait = lock(&core.state).policy.call_failed(&core.window);
                if let Some(failures) = wait.warn {
                    tracing::warn!(output = %core.name, attempt = wait.rounds, failures, %error, "PutRecords failed; retrying (failures: since the last warning)");
                } else {
                    tracing::debug!(output = %core.name, %error, "PutRecords failed; retrying");
                }
                // The request keeps its place in the window while it waits,
                // so a failing endpoint is not sent more requests meanwhile.
                tokio::time::sleep(wait.delay).await;
                let mut state = lock(&core.state);
                for &p in &positions {
                    state.queue.failed(p);
                }
                state.in_flight -= 1;
            }
            PutOutcome::Invalid(error) if n > 1 => {
                tracing::warn!(output = %core.name, records = n, %error, "PutRecords rejected as invalid; sending those records one at a time to find the culprit");
                let mut state = lock(&core.state);
                for &p in &positions {
                    state.queue.isolate(p);
                }
                state.in_flight -= 1;
            }
            PutOutcome::Invalid(error) => {
                let mut state = lock(&core.state);
                let refused: Vec<Item> = positions
                    .iter()
                    .filter_map(|&p| state.queue.dropped(p))
                    .collect();
                state.in_flight -= 1;
                drop(state);
                for item in refused {
                    let e = core.error(
                        item.record.source_index,
                        format!("PutRecords rejected the record: {error}"),
                    );
                    item.delivery.settle(&item.record, Settled::Refused(e));
                }
            }
            PutOutcome::Rejected(error) => {
                // About the output or the caller, not the records: the
                // output stalls (this request keeps its place in the window
                // and its records their keys' place) and tries again after a
                // backoff growing to a minute, until the cause is fixed.
                // Other outputs and pipelines are not touched.
                core.stats.requests_retried.fetch_add(1, Atomic::Relaxed);
                core.stats.count_error(&error);
                let wait = lock(&core.state).policy.refused(&core.window);
                if let Some(failures) = wait.warn {
                    tracing::warn!(output = %core.name, stream = %core.stream, attempt = wait.rounds, failures, retry_in_ms = wait.delay.as_millis() as u64, %error, "PutRecords refused: access or credentials; the output waits and retries until the cause is fixed (failures: since the last warning)");
                } else {
                    tracing::debug!(output = %core.name, %error, "PutRecords refused; retrying");
                }
                tokio::time::sleep(wait.delay).await;
                let mut state = lock(&core.state);
                for &p in &positions {
                    state.queue.failed(p);
                }
                state.in_flight -= 1;
            }
        }
        Core::pump(&core);
    }

    /// Applies an answer: written entries leave the queue, failed ones wait
    /// out the backoff (keeping their keys' place) and are queued again.
    async fn answered(
        self: &Arc<Self>,
        positions: &[u64],
        results: Vec<Result<super::service::Put, String>>,
    ) {
        let mut failed = Vec::new();
        let mut undeliverable = Vec::new();
        let mut first_error = None;
        let mut throttled = false;
        let mut settled = Vec::with_capacity(positions.len());
        let wait = {
            let mut state = lock(&self.state);
            for (&p, result) in positions.iter().zip(results) {
                match result {
                    Ok(put) => {
                        if let Some(pacing) = &self.pacing
                            && state
                                .queue
                                .get(p)
                                .and_then(|i| i.shard.as_deref())
                                .is_some_and(|predicted| predicted != &*put.shard)
                        {
                            // Resharded since the map was read.
                            pacing.stale.notify_one();
                        }
                        let landed = Landed {
                            shard: &put.shard,
                            sequence: &put.sequence,
                        };
                        if let Some((item, reordered)) = state.queue.acknowledged(p, Some(landed)) {
                            if reordered > 0 {
                                self.stats
                                    .reordered
                                    .fetch_add(reordered as u64, Atomic::Relaxed);
                            }
                            let misplaced = item
                                .placement
                                .as_deref()
                                .is_some_and(|expected| expected != &*put.shard)
                                .then(|| put.shard.to_string());
                            settled.push((item, misplaced));
                        }
                    }
                    Err(error) => {
                        self.stats.count_error(&error);
                        if crate::kinesis::is_undeliverable_entry(crate::kinesis::code_of(&error)) {
                            // Refused for this record's sake (its KMS key):
                            // the pipeline's on_error decides.
                            if let Some(item) = state.queue.dropped(p) {
                                undeliverable.push((item, error));
                            }
                            continue;
                        }
                        if is_throttling(&error) {
                            throttled = true;
                            let State { queue, pacer, .. } = &mut *state;
                            if let Some(shard) = queue.get(p).and_then(|i| i.shard.as_deref()) {
                                pacer.throttled(shard, Instant::now());
                            }
                        }
                        first_error.get_or_insert(error);
                        failed.push(p);
                    }
                }
            }
            let written = settled.len();
            let carried: u64 = settled
                .iter()
                .map(|(item, _)| u64::from(item.carries))
                .sum();
            self.stats
                .records_written
                .fetch_add(carried, Atomic::Relaxed);
            self.stats
                .entries_retried
                .fetch_add(failed.len() as u64, Atomic::Relaxed);
            let wait = state
                .policy
                .answered(&self.window, written, failed.len(), throttled);
            state.in_flight -= 1;
            wait
        };
        for (item, misplaced) in settled {
            item.delivery
                .settle(&item.record, Settled::Written { misplaced });
        }
        for (item, error) in undeliverable {
            let e = self.error(
                item.record.source_index,
                format!("PutRecords refused the record: {error}"),
            );
            item.delivery.settle(&item.record, Settled::Refused(e));
        }
        let Some(wait) = wait else {
            return;
        };
        if let Some(failures) = wait.warn {
            tracing::warn!(output = %self.name, rounds = wait.rounds, failed = failed.len(), failures, error = ?first_error, "PutRecords entries failed; retrying them (failures: requests with failed entries since the last warning)");
        } else {
            tracing::debug!(output = %self.name, failed = failed.len(), of = positions.len(), error = ?first_error, "PutRecords entries failed; retrying them");
        }
        // Other keys go on meanwhile; the failed keys wait.
        Core::pump(self);
        tokio::time::sleep(wait.delay).await;
        let mut state = lock(&self.state);
        for p in failed {
            state.queue.failed(p);
        }
    }
}

#[cfg(test)]
mod tests;
