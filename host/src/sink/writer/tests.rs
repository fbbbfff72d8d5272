//! The writer against fake transports: injected entry and request failures,
//! several deliveries sharing the queue, the window, both ordering rules.

use super::*;
use crate::sink::service::Put;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

/// Fails each entry with the given probability and whole calls now and
/// then; keeps what it "wrote", the request sizes and the most requests in
/// flight at once. Answers after `delay`.
struct Flaky {
    entry_failure: f64,
    /// What a failed entry says.
    entry_error: &'static str,
    call_failure: f64,
    delay: Duration,
    written: Mutex<Vec<(String, Vec<u8>)>>,
    sizes: Mutex<Vec<usize>>,
    flying: AtomicUsize,
    most_flying: AtomicUsize,
    rng: Mutex<fastrand::Rng>,
}

fn flaky(entry_failure: f64, call_failure: f64, delay: Duration, seed: u64) -> Flaky {
    Flaky {
        entry_failure,
        entry_error: "ProvisionedThroughputExceededException: slow down",
        call_failure,
        delay,
        written: Mutex::new(Vec::new()),
        sizes: Mutex::new(Vec::new()),
        flying: AtomicUsize::new(0),
        most_flying: AtomicUsize::new(0),
        rng: Mutex::new(fastrand::Rng::with_seed(seed)),
    }
}

impl Transport for Flaky {
    async fn put_records(&self, _: &StreamRef, entries: Vec<crate::sink::Entry>) -> PutOutcome {
        assert!(entries.len() <= MAX_ENTRIES_PER_REQUEST);
        let now = self.flying.fetch_add(1, Atomic::SeqCst) + 1;
        self.most_flying.fetch_max(now, Atomic::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.flying.fetch_sub(1, Atomic::SeqCst);
        self.sizes.lock().unwrap().push(entries.len());
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
                        Err(self.entry_error.to_string())
                    } else {
                        written.push((e.partition_key, e.data.to_vec()));
                        Ok(Put {
                            shard: "shardId-000000000000".into(),
                            sequence: format!("{:020}", written.len()),
                        })
                    }
                })
                .collect(),
        )
    }
}

fn fast() -> Backoff {
    Backoff::new(Duration::from_millis(1), Duration::from_millis(10))
}

fn records(n: u32, keys: u32, lane: u32) -> Vec<OutRecord> {
    (0..n)
        .map(|i| OutRecord {
            data: [lane.to_be_bytes(), i.to_be_bytes()].concat().into(),
            partition_key: format!("lane{lane}-k{}", i % keys),
            explicit_hash_key: None,
            source_index: i,
        })
        .collect()
}

/// (lane, index) of each record written, per key, must be increasing.
fn assert_per_key_order(written: &[(String, Vec<u8>)]) -> usize {
    let mut last: HashMap<&str, u32> = HashMap::new();
    let mut reordered = 0;
    for (key, data) in written {
        let i = u32::from_be_bytes(data[4..8].try_into().unwrap());
        match last.get(key.as_str()) {
            Some(&prev) if prev > i => reordered += 1,
            _ => {
                last.insert(key, i);
            }
        }
    }
    reordered
}

fn writer<T: Transport>(transport: T) -> OutputWriter<T> {
    OutputWriter::new(
        "out".into(),
        StreamRef::parse("s"),
        transport,
        1 << 20,
        5 << 20,
    )
    .with_backoff(fast())
}

#[tokio::test]
async fn partial_failures_lose_nothing_and_keep_per_key_order() {
    let writer = writer(flaky(0.3, 0.1, Duration::ZERO, 7));
    writer.deliver(records(3000, 37, 0)).await.unwrap();
    let written = writer.transport().written.lock().unwrap();
    assert_eq!(written.len(), 3000, "every record written exactly once");
    assert_eq!(assert_per_key_order(&written), 0);
    assert!(writer.stats.entries_retried.load(Atomic::Relaxed) > 0);
    assert_eq!(writer.stats.reordered.load(Atomic::Relaxed), 0);
}

#[tokio::test]
async fn deliveries_of_several_lanes_share_full_requests_and_the_window() {
    // Failures that are not throttling: the window grows.
    let transport = Flaky {
        entry_error: "InternalFailure: try again",
        ..flaky(0.2, 0.0, Duration::from_millis(5), 3)
    };
    let writer = Arc::new(writer(transport).with_max_requests_in_flight(4));
    // Four lanes of 300 keys each: requests are full (500), so several go at once.
    let lanes: Vec<_> = (0..4u32)
        .map(|lane| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.deliver(records(2000, 300, lane)).await })
        })
        .collect();
    for lane in lanes {
        lane.await.unwrap().unwrap();
    }
    let t = writer.transport();
    let written = t.written.lock().unwrap();
    assert_eq!(written.len(), 8000);
    assert_eq!(assert_per_key_order(&written), 0, "per key order");
    let sizes = t.sizes.lock().unwrap();
    assert!(
        sizes.iter().any(|&n| n > 300),
        "requests pack records of several lanes: {sizes:?}"
    );
    let most = t.most_flying.load(Atomic::SeqCst);
    assert!(
        (2..=4).contains(&most),
        "window used, within its max: {most}"
    );
}

#[tokio::test]
async fn partial_requests_wait_for_those_in_flight_and_pack_every_lane() {
    let writer = Arc::new(
        writer(flaky(0.0, 0.0, Duration::from_millis(3), 4)).with_max_requests_in_flight(8),
    );
    // Four lanes of 37 keys: no request can be full, so one is in flight at
    // a time and each holds the ready keys of every lane, not of one.
    let lanes: Vec<_> = (0..4u32)
        .map(|lane| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.deliver(records(1000, 37, lane)).await })
        })
        .collect();
    for lane in lanes {
        lane.await.unwrap().unwrap();
    }
    let t = writer.transport();
    assert_eq!(t.written.lock().unwrap().len(), 4000);
    assert_eq!(t.most_flying.load(Atomic::SeqCst), 1);
    let sizes = t.sizes.lock().unwrap();
    let average = 4000.0 / sizes.len() as f64;
    assert!(
        average > 100.0,
        "{average:.1} records per request: {sizes:?}"
    );
}

#[tokio::test]
async fn throttling_keeps_the_window_at_one_request() {
    let writer =
        writer(flaky(0.5, 0.0, Duration::from_millis(2), 9)).with_max_requests_in_flight(8);
    writer.deliver(records(2000, 1000, 0)).await.unwrap();
    // Every full request has throttled entries; only the last small ones
    // (all written) may grow the window.
    let most = writer.transport().most_flying.load(Atomic::SeqCst);
    assert!(most <= 2, "{most} requests in flight on a throttled output");
}

#[tokio::test]
async fn settled_records_are_reported_as_they_are_acknowledged() {
    let writer = writer(flaky(0.3, 0.0, Duration::ZERO, 11));
    let progress = Arc::new(BatchProgress::new(500));
    let list = records(500, 1, 0);
    for r in &list {
        progress.owe(r.source_index);
        progress.settle(r.source_index); // the pipeline's hold
    }
    writer.deliver_checked(list, Some(&progress)).await.unwrap();
    assert_eq!(progress.prefix(0), 500, "every record settled");
}

#[tokio::test]
async fn without_ordering_requests_are_full_and_reorders_are_counted() {
    let writer = writer(flaky(0.3, 0.0, Duration::from_millis(2), 5))
        .with_ordering(Ordering::None)
        .with_max_requests_in_flight(4);
    writer.deliver(records(5000, 1, 0)).await.unwrap();
    let t = writer.transport();
    let written = t.written.lock().unwrap();
    assert_eq!(written.len(), 5000, "nothing lost");
    let sizes = t.sizes.lock().unwrap();
    assert_eq!(sizes[0], 500, "one key, yet a full request");
    let actual = assert_per_key_order(&written);
    let counted = writer.stats.reordered.load(Atomic::Relaxed) as usize;
    assert!(actual > 0, "30% failures reorder a hot key");
    assert_eq!(
        counted, actual,
        "every record behind a newer one is counted, no other"
    );
}

#[tokio::test]
async fn an_oversize_record_is_refused_before_anything_is_written() {
    let w = OutputWriter::new(
        "out".into(),
        StreamRef::parse("s"),
        flaky(0.0, 0.0, Duration::ZERO, 1),
        1024,
        5 << 20,
    );
    let mut list = records(2, 2, 0);
    list[1].data = vec![1; 2000].into();
    let err = w.deliver(list).await.unwrap_err();
    assert_eq!(err.source_index, 1);
    assert!(err.to_string().contains("exceeds"), "{err}");
    assert!(w.transport().written.lock().unwrap().is_empty());
}

/// Answers every call with a fixed outcome; counts calls.
struct Fixed {
    outcome: fn() -> PutOutcome,
    calls: AtomicU64,
}

impl Transport for Fixed {
    async fn put_records(&self, _: &StreamRef, _: Vec<crate::sink::Entry>) -> PutOutcome {
        self.calls.fetch_add(1, Atomic::Relaxed);
        (self.outcome)()
    }
}

fn fixed(outcome: fn() -> PutOutcome) -> OutputWriter<Fixed> {
    let transport = Fixed {
        outcome,
        calls: AtomicU64::new(0),
    };
    OutputWriter::new("w".into(), StreamRef::parse("s"), transport, 1024, 5 << 20).with_backoff(
        Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
    )
}

#[tokio::test]
async fn a_deleted_discovered_stream_drops_its_records_and_a_configured_one_retries() {
    let gone = || PutOutcome::Gone("ResourceNotFoundException: no such stream".into());
    let writer = fixed(gone).discovered();
    let mut delivered = writer
        .deliver_checked(records(3, 3, 0), None)
        .await
        .unwrap();
    delivered.gone.sort_unstable();
    assert_eq!(delivered.gone, [0, 1, 2], "dropped as deleted");
    assert!(delivered.refused.is_empty(), "not refused: no on_error");
    assert_eq!(writer.transport().calls.load(Atomic::Relaxed), 1);

    let writer = fixed(gone);
    let still_trying = tokio::time::timeout(
        Duration::from_millis(200),
        writer.deliver_checked(records(3, 3, 0), None),
    )
    .await;
    assert!(
        still_trying.is_err(),
        "a configured stream is retried until it exists"
    );
    assert!(writer.transport().calls.load(Atomic::Relaxed) > 3);
}

#[tokio::test]
async fn an_invalid_request_is_split_to_find_the_record_kinesis_refuses() {
    // Every request is refused: each record ends up alone, and refused.
    let writer = fixed(|| PutOutcome::Invalid("ValidationException: bad".into()));
    let delivered = writer
        .deliver_checked(records(4, 4, 0), None)
        .await
        .unwrap();
    let mut refused: Vec<u32> = delivered.refused.iter().map(|e| e.source_index).collect();
    refused.sort_unstable();
    assert_eq!(refused, [0, 1, 2, 3]);
    assert_eq!(
        writer.transport().calls.load(Atomic::Relaxed),
        5,
        "one for all, then one each"
    );
}

/// Refuses every call (AccessDenied) until `fixed` is set, then writes
/// everything: a policy that was restored.
struct RefusedUntilFixed {
    fixed: AtomicBool,
    calls: AtomicUsize,
    written: Mutex<Vec<Vec<u8>>>,
}

impl Transport for RefusedUntilFixed {
    async fn put_records(&self, _: &StreamRef, entries: Vec<crate::sink::Entry>) -> PutOutcome {
        self.calls.fetch_add(1, Atomic::SeqCst);
        if !self.fixed.load(Atomic::SeqCst) {
            return PutOutcome::Rejected(
                "AccessDeniedException: not authorized to perform kinesis:PutRecords".into(),
            );
        }
        let mut written = self.written.lock().unwrap();
        PutOutcome::Answered(
            entries
                .into_iter()
                .map(|e| {
                    written.push(e.data.to_vec());
                    Ok(Put {
                        shard: "shardId-000000000000".into(),
                        sequence: format!("{:020}", written.len()),
                    })
                })
                .collect(),
        )
    }
}

#[tokio::test]
async fn a_request_refused_as_a_whole_stalls_the_output_until_the_cause_is_fixed() {
    let writer = Arc::new(writer(RefusedUntilFixed {
        fixed: AtomicBool::new(false),
        calls: AtomicUsize::new(0),
        written: Mutex::new(Vec::new()),
    }));
    let sent = records(600, 600, 0);
    let expected: Vec<Vec<u8>> = sent.iter().map(|r| r.data.to_vec()).collect();
    let delivery = {
        let writer = writer.clone();
        tokio::spawn(async move { writer.deliver_checked(sent, None).await })
    };
    // Refused again and again: nothing settles, nothing is dropped.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while writer.transport().calls.load(Atomic::SeqCst) < 3 {
        assert!(std::time::Instant::now() < deadline, "retried");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!delivery.is_finished(), "a refusal fails no delivery");
    writer.transport().fixed.store(true, Atomic::SeqCst);
    let delivered = tokio::time::timeout(Duration::from_secs(10), delivery)
        .await
        .expect("resumes once fixed")
        .unwrap()
        .unwrap();
    assert!(delivered.refused.is_empty());
    let mut written = writer.transport().written.lock().unwrap().clone();
    written.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(written, expected, "every record written once");
    let errors = writer.stats.errors.lock().unwrap().clone();
    assert!(errors["AccessDeniedException"] >= 3, "{errors:?}");
}

#[tokio::test]
async fn an_entry_its_kms_key_refuses_is_refused_and_a_kms_throttle_retried() {
    let mut t = flaky(0.3, 0.0, Duration::ZERO, 5);
    t.entry_error = "KMSAccessDeniedException: the key policy denies kinesis";
    let kms = writer(t);
    let delivered = kms
        .deliver_checked(records(200, 200, 0), None)
        .await
        .unwrap();
    let refused = delivered.refused.len();
    let written = kms.transport().written.lock().unwrap().len();
    assert!(refused > 30, "{refused}");
    assert_eq!(
        refused + written,
        200,
        "each record written or refused, once"
    );
    assert!(delivered.refused[0].reason.contains("KMSAccessDenied"));

    let mut t = flaky(0.3, 0.0, Duration::ZERO, 5);
    t.entry_error = "KMSThrottlingException: rate exceeded";
    let throttled = writer(t);
    let delivered = throttled
        .deliver_checked(records(200, 200, 0), None)
        .await
        .unwrap();
    assert!(delivered.refused.is_empty(), "throttling is retried");
    assert_eq!(throttled.transport().written.lock().unwrap().len(), 200);
}

#[tokio::test]
async fn records_of_a_shard_whose_lease_ended_are_not_sent() {
    use crate::ownership::{Hold, HoldState};
    let writer = Arc::new(
        writer(flaky(0.0, 0.0, Duration::from_millis(2), 13)).with_max_requests_in_flight(1),
    );
    let (_state, rx) = tokio::sync::watch::channel(HoldState::Held);
    let valid_until = Arc::new(AtomicU64::new(u64::MAX - 1));
    let hold = Hold::new(rx, valid_until.clone(), std::time::Instant::now());
    let lane = |progress: Arc<BatchProgress>, lane: u32| {
        let writer = writer.clone();
        tokio::spawn(async move {
            writer
                .deliver_checked(records(1000, 10, lane), Some(&progress))
                .await
        })
    };
    // Lane 0 reads a leased shard, lane 1 another shard (always valid).
    let leased = lane(Arc::new(BatchProgress::new(1000).fenced_by(&hold)), 0);
    let other = lane(Arc::new(BatchProgress::new(1000)), 1);
    let written_of = |lane: &str| {
        writer
            .transport()
            .written
            .lock()
            .unwrap()
            .iter()
            .filter(|(key, _)| key.starts_with(lane))
            .count()
    };
    for _ in 0..2000 {
        if written_of("lane0-") >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The lease goes past its validity while most of lane 0 is queued.
    valid_until.store(0, Atomic::Release);
    other.await.unwrap().unwrap();
    assert_eq!(written_of("lane1-"), 1000, "the other shard is untouched");
    let stuck = tokio::time::timeout(Duration::from_millis(200), leased).await;
    assert!(
        stuck.is_err(),
        "a fenced delivery never completes: its lane is stopped by the lost lease"
    );
    let (written, fenced) = (
        written_of("lane0-"),
        writer.stats.fenced.load(Atomic::Relaxed) as usize,
    );
    assert!(
        (50..1000).contains(&written),
        "written before the fence only: {written}"
    );
    assert_eq!(
        written + fenced,
        1000,
        "every other record of the fenced shard left the queue unwritten"
    );
}
