//! Under Kinesis' quotas (the front enforces them, `front/quota.rs`) with
//! 20 ms added to every call: a 60,000 × 1 KiB backlog over 1,000 random
//! keys on a 4-shard source, read by 3 instances sharing it through the
//! lease table (moto, its throughput limited too) with 3 pipelines each,
//! written to 2 outputs of 2 shards (p1 to both, p2 to a, p3 to b: each
//! output gets every record twice). Each output must run at >= 90% of its
//! ceiling (2 shards × 1,000 records/s), nothing may be lost or reordered
//! per key and pipeline, and the instances' own read call rates must stay
//! within the read quotas on average.

use distributary_e2e::front::{QuotaStats, Quotas};
use distributary_e2e::*;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const RECORDS: usize = 60_000;
const KEYS: usize = 1_000;
const SOURCE_SHARDS: i32 = 4;
const OUTPUT_SHARDS: i32 = 2;
const CEILING: f64 = OUTPUT_SHARDS as f64 * 1000.0;

/// 1 KiB records over `KEYS` random keys (seeded), each naming its index.
fn backlog() -> Vec<Rec> {
    let mut rng = fastrand::Rng::with_seed(21);
    (0..RECORDS)
        .map(|i| {
            let key = format!("key-{}", rng.usize(..KEYS));
            let mut data = format!("{{\"i\":{i},\"key\":\"{key}\",\"pad\":\"").into_bytes();
            data.resize(1022, b'x');
            data.extend_from_slice(b"\"}");
            Rec { key, data }
        })
        .collect()
}

/// Every record `copies` times, and per key the k-th copy of each record
/// after the k-th copy of the one before it (each pipeline's copies in
/// order, whatever the interleaving of the pipelines).
fn assert_copies_in_key_order(stream: &str, expected: &[Rec], got: &[ReadRec], copies: usize) {
    let index: HashMap<&Rec, usize> = expected.iter().enumerate().map(|(i, r)| (r, i)).collect();
    // Per record: where its copies were read (per shard order is stored order).
    let mut seen: Vec<Vec<(String, usize)>> = vec![Vec::new(); expected.len()];
    for (at, r) in got.iter().enumerate() {
        let i = *index
            .get(&r.rec)
            .unwrap_or_else(|| panic!("{stream}: unexpected record {:?}", r.rec.key));
        seen[i].push((r.shard.clone(), at));
    }
    let wrong: Vec<(usize, usize)> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.len() != copies)
        .map(|(i, s)| (i, s.len()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{stream}: {} records not delivered exactly {copies} times (index, copies): {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in expected.iter().enumerate() {
        if let Some(&prev) = last.get(r.key.as_str()) {
            for (k, (a, b)) in seen[prev].iter().zip(&seen[i]).enumerate() {
                assert!(
                    a.0 == b.0 && a.1 < b.1,
                    "{stream}: key {}: copy {k} of record {i} is not after copy {k} of record {prev} ({a:?} / {b:?})",
                    r.key
                );
            }
        }
        last.insert(&r.key, i);
    }
}

/// When `count` first reached `at_least` in `samples` (time, count).
fn crossing(samples: &[(Instant, u64)], at_least: u64) -> Option<Instant> {
    samples
        .iter()
        .find(|(_, n)| *n >= at_least)
        .map(|(t, _)| *t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_under_quotas_runs_each_output_near_its_ceiling_within_the_read_quotas() {
    let kinesis = LocalKinesis::start_kinesalite().unwrap();
    let dynamo = LocalDynamo::start_moto().unwrap();
    let client = kinesis.client().await;
    create_stream(&client, "in", SOURCE_SHARDS).await.unwrap();
    for out in ["out-a", "out-b"] {
        create_stream(&client, out, OUTPUT_SHARDS).await.unwrap();
    }
    let records = backlog();
    put_all(&client, "in", &records).await.unwrap();

    kinesis.front.set_delay(Duration::from_millis(20));
    kinesis.front.enforce(Quotas::aws());
    dynamo.front.set_delay(Duration::from_millis(5));
    dynamo.front.enforce(Quotas {
        dynamodb_reads: Some(5.0),
        dynamodb_writes: Some(5.0),
        ..Quotas::aws()
    });

    let dir = TestDir::new().unwrap();
    let (kin, dyn_) = (&kinesis.endpoint, &dynamo.endpoint);
    let ports: Vec<u16> = (0..3).map(|_| free_port_pair()).collect();
    let started = Instant::now();
    let instances: Vec<Distributary> = (0..3)
        .map(|i| {
            let text = format!(
                r#"[sources.in]
stream = "in"
endpoint_url = "{kin}"
poll_interval_ms = 200

[outputs.a]
stream = "out-a"
endpoint_url = "{kin}"

[outputs.b]
stream = "out-b"
endpoint_url = "{kin}"

[buffer]
max_bytes = 67108864

[checkpoint]
store = "dynamodb"
table = "quota-leases"
endpoint_url = "{dyn_}"
failover_ms = 6000
instance_id = "i{i}"
create_table = true
path = "state-{i}"

[server]
listen = "127.0.0.1:{port}"

[[pipelines]]
name = "p1"
source = "in"
outputs = ["a", "b"]

[[pipelines]]
name = "p2"
source = "in"
outputs = ["a"]

[[pipelines]]
name = "p3"
source = "in"
outputs = ["b"]
"#,
                port = ports[i]
            );
            let config = dir.write_config(&format!("i{i}.toml"), &text).unwrap();
            Distributary::start(&config).unwrap()
        })
        .collect();

    // Sample what the front let into each output until both hold every copy.
    let want = 2 * RECORDS as u64;
    let mut samples: BTreeMap<&str, Vec<(Instant, u64)>> = BTreeMap::new();
    let deadline = started + Duration::from_secs(300);
    loop {
        let stats = kinesis.front.quota_stats();
        let now = Instant::now();
        let mut done = true;
        for out in ["out-a", "out-b"] {
            let n = stats.forwarded_entries.get(out).copied().unwrap_or(0);
            samples.entry(out).or_default().push((now, n));
            done &= n >= want;
        }
        if done {
            break;
        }
        assert!(
            now < deadline,
            "not every copy written in 300 s: {:?}; logs:\n{}",
            stats.forwarded_entries,
            instances[0].log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the last checkpoints land, then stop cleanly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats: QuotaStats = kinesis.front.quota_stats();
    let lease_refusals = dynamo.front.refused();
    let logs: Vec<String> = instances.iter().map(Distributary::log_text).collect();
    for instance in instances {
        instance.stop_cleanly();
    }

    // Nothing lost, nothing duplicated, per key and pipeline in order.
    for out in ["out-a", "out-b"] {
        let got = read_all(&client, out).await.unwrap();
        assert_copies_in_key_order(out, &records, &got, 2);
    }

    // Throughput: from 10% to 90% of the copies, per output.
    let mut report = Vec::new();
    for (out, s) in &samples {
        let (Some(t10), Some(t90)) = (crossing(s, want / 10), crossing(s, want * 9 / 10)) else {
            panic!("{out}: no samples");
        };
        let rate = (want * 8 / 10) as f64 / t90.duration_since(t10).as_secs_f64();
        report.push(format!(
            "{out}: {rate:.0} rec/s ({:.0}% of {CEILING})",
            rate / CEILING * 100.0
        ));
        assert!(
            rate >= 0.9 * CEILING,
            "{out} ran at {rate:.0} rec/s, under 90% of its ceiling {CEILING}"
        );
    }
    let throttled = |stream: &str| stats.throttled_entries.get(stream).copied().unwrap_or(0);
    let written = |stream: &str| stats.forwarded_entries.get(stream).copied().unwrap_or(0);
    for out in ["out-a", "out-b"] {
        report.push(format!(
            "{out}: {} entries throttled ({:.1}% of {} sent)",
            throttled(out),
            throttled(out) as f64 * 100.0 / (written(out) + throttled(out)) as f64,
            written(out) + throttled(out)
        ));
    }

    // The instances' own call rates (throttled attempts included), on average.
    let attempts = |prefix: &str| {
        QuotaStats::sum(&stats.calls, prefix) + QuotaStats::sum(&stats.throttled, prefix)
    };
    let shards: Vec<String> = (0..SOURCE_SHARDS)
        .map(|i| format!("shardId-{i:012}"))
        .collect();
    for shard in &shards {
        let reads = attempts(&format!("GetRecords in {shard}")) as f64 / elapsed;
        let iterators = attempts(&format!("GetShardIterator in {shard}")) as f64 / elapsed;
        let bytes = stats
            .read_bytes
            .get(&format!("in {shard}"))
            .copied()
            .unwrap_or(0) as f64
            / elapsed;
        report.push(format!(
            "in/{shard}: GetRecords {reads:.2}/s ({} throttled), GetShardIterator {iterators:.2}/s, read {:.2} MiB/s",
            QuotaStats::sum(&stats.throttled, &format!("GetRecords in {shard}")),
            bytes / 1_048_576.0
        ));
        assert!(
            reads <= 5.0,
            "{shard}: {reads:.2} GetRecords calls/s on average"
        );
        assert!(
            iterators <= 5.0,
            "{shard}: {iterators:.2} GetShardIterator calls/s"
        );
        assert!(bytes <= 2.0 * 1_048_576.0, "{shard}: {bytes:.0} B/s read");
    }
    for (api, limit) in [("ListShards in", 100.0), ("DescribeStreamSummary", 20.0)] {
        let rate = attempts(api) as f64 / elapsed;
        report.push(format!("{api}: {rate:.2}/s"));
        assert!(rate <= limit, "{api}: {rate:.2}/s over {limit}/s");
    }
    report.push(format!(
        "lease table: {} throttled of {} calls; all refusals {lease_refusals:?}",
        lease_refusals
            .get("ProvisionedThroughputExceededException")
            .copied()
            .unwrap_or(0),
        dynamo.front.quota_stats().calls.values().sum::<u64>()
    ));
    eprintln!("quota run in {elapsed:.1} s:\n  {}", report.join("\n  "));
    for (i, log) in logs.iter().enumerate() {
        assert!(!log.contains("panicked"), "instance {i} panicked:\n{log}");
    }
}
