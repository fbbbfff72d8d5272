//! The quota scenario, shared by `tests/quotas.rs` (which asserts on it) and
//! the `quota-bench` program (`scripts/bench quota`, which prints it): a
//! 1 KiB backlog over 1,000 random keys on a 4-shard source, read by several
//! instances sharing it through the lease table (moto) with 3 pipelines
//! each, written to 2 outputs of 2 shards (p1 to both, p2 to a, p3 to b:
//! each output gets every record twice), Kinesis' quotas and a round trip
//! added by the fronts (`front/quota.rs`).

use crate::front::{QuotaStats, Quotas};
use crate::*;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

pub const KEYS: usize = 1_000;
pub const SOURCE_SHARDS: i32 = 4;
pub const OUTPUT_SHARDS: i32 = 2;
pub const OUTPUTS: [&str; 2] = ["out-a", "out-b"];
/// Records per second an output can take: its shards × 1,000.
pub const CEILING: f64 = OUTPUT_SHARDS as f64 * 1000.0;

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Setup {
    pub records: usize,
    pub instances: usize,
    /// Added to every Kinesis call by the front.
    pub rtt: Duration,
    /// `pace_writes` of both outputs.
    pub pace_writes: bool,
    /// The lease table's reads and writes per second.
    pub table_reads: Option<f64>,
    pub table_writes: Option<f64>,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub seconds: f64,
    /// Per output: records/s from 10% to 90% of its copies.
    pub rate: BTreeMap<String, f64>,
    /// Per output: records/s from its first copy to its last.
    pub overall: BTreeMap<String, f64>,
    /// Per output: records/s in each 5 s from the start.
    pub profile: BTreeMap<String, Vec<f64>>,
    pub stats: QuotaStats,
    /// Per source shard: (GetRecords attempts/s, GetShardIterator attempts/s, bytes read/s).
    pub reads: BTreeMap<String, (f64, f64, f64)>,
    /// Per API named per stream or account: attempts/s.
    pub control_calls: BTreeMap<String, f64>,
    pub table_calls: u64,
    /// Lease-table calls throttled, by `API table -`.
    pub table_throttled: BTreeMap<String, u64>,
    /// Per output: what is wrong with what it holds (empty: every record
    /// twice, per key and pipeline in order).
    pub faults: BTreeMap<String, String>,
    /// Per output: copies beyond the two each record is owed (at-least-once
    /// after a lease failover).
    pub duplicates: BTreeMap<String, usize>,
    /// The instances' logs.
    pub logs: Vec<String>,
}

impl Report {
    /// Each instance's log lines about leases and shard tasks (and every
    /// warning or error but throttled entries), prefixed by the instance:
    /// what explains records delivered more than once.
    pub fn lease_lines(&self) -> Vec<String> {
        let wanted = ["lease", "handoff", "shard", "WARN", "ERROR"];
        self.logs
            .iter()
            .enumerate()
            .flat_map(|(i, log)| {
                log.lines()
                    .filter(|l| wanted.iter().any(|w| l.contains(w)))
                    .filter(|l| !l.contains("PutRecords entries failed"))
                    .map(move |l| format!("i{i}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// PutRecords entries throttled and sent, per output.
    pub fn entries(&self, stream: &str) -> (u64, u64) {
        let throttled = self
            .stats
            .throttled_entries
            .get(stream)
            .copied()
            .unwrap_or(0);
        let forwarded = self
            .stats
            .forwarded_entries
            .get(stream)
            .copied()
            .unwrap_or(0);
        (throttled, throttled + forwarded)
    }

    /// The report as lines of text.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (stream, rate) in &self.rate {
            let (throttled, sent) = self.entries(stream);
            let overall = self.overall.get(stream).copied().unwrap_or(0.0);
            out.push(format!(
                "{stream}: {rate:.0} rec/s from 10% to 90% = {:.0}% of its ceiling {CEILING:.0} ({overall:.0} rec/s = {:.0}% first to last); {throttled} of {sent} entries throttled ({:.2}%)",
                rate / CEILING * 100.0,
                overall / CEILING * 100.0,
                throttled as f64 * 100.0 / sent.max(1) as f64
            ));
        }
        for (stream, extra) in &self.duplicates {
            out.push(format!(
                "{stream}: {extra} copies beyond the two each record is owed (read again after a lease failover)"
            ));
        }
        for (stream, rates) in &self.profile {
            let rates: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
            out.push(format!("{stream} rec/s per 5 s: {}", rates.join(" ")));
        }
        for (shard, (reads, iterators, bytes)) in &self.reads {
            out.push(format!(
                "in/{shard}: GetRecords {reads:.2}/s (quota 5), GetShardIterator {iterators:.2}/s (quota 5), read {:.2} MiB/s (quota 2)",
                bytes / 1_048_576.0
            ));
        }
        for (api, rate) in &self.control_calls {
            out.push(format!("{api}: {rate:.2}/s"));
        }
        out.push(format!(
            "lease table: {} calls, throttled: {:?}",
            self.table_calls, self.table_throttled
        ));
        out
    }
}

/// 1 KiB records over `KEYS` random keys (seeded), each naming its index.
pub fn backlog(records: usize) -> Vec<Rec> {
    let mut rng = fastrand::Rng::with_seed(21);
    (0..records)
        .map(|i| {
            let key = format!("key-{}", rng.usize(..KEYS));
            let mut data = format!("{{\"i\":{i},\"key\":\"{key}\",\"pad\":\"").into_bytes();
            data.resize(1022, b'x');
            data.extend_from_slice(b"\"}");
            Rec { key, data }
        })
        .collect()
}

/// What is wrong with `got` unless it holds every record at least `copies`
/// times and, per key, the k-th copy of each record after the k-th copy of
/// the one before it (each pipeline's copies in order, whatever the
/// interleaving); copies beyond the first `copies` (records read again
/// after a lease failover: at-least-once) are counted, and returned.
pub fn copies_in_key_order(
    expected: &[Rec],
    got: &[ReadRec],
    copies: usize,
) -> Result<usize, String> {
    let index: HashMap<&Rec, usize> = expected.iter().enumerate().map(|(i, r)| (r, i)).collect();
    let mut seen: Vec<Vec<(&str, usize)>> = vec![Vec::new(); expected.len()];
    let mut extra = 0;
    for (at, r) in got.iter().enumerate() {
        let Some(&i) = index.get(&r.rec) else {
            return Err(format!("unexpected record of key {:?}", r.rec.key));
        };
        if seen[i].len() < copies {
            seen[i].push((r.shard.as_str(), at));
        } else {
            extra += 1;
        }
    }
    let missing: Vec<(usize, usize)> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.len() < copies)
        .map(|(i, s)| (i, s.len()))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} records delivered fewer than {copies} times (index, copies): {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in expected.iter().enumerate() {
        if let Some(&prev) = last.get(r.key.as_str()) {
            for (k, (a, b)) in seen[prev].iter().zip(&seen[i]).enumerate() {
                if a.0 != b.0 || a.1 >= b.1 {
                    return Err(format!(
                        "key {}: copy {k} of record {i} is not after copy {k} of record {prev} ({a:?} / {b:?})",
                        r.key
                    ));
                }
            }
        }
        last.insert(&r.key, i);
    }
    Ok(extra)
}

/// When `count` first reached `at_least` in `samples` (time, count).
fn crossing(samples: &[(Instant, u64)], at_least: u64) -> Option<Instant> {
    samples
        .iter()
        .find(|(_, n)| *n >= at_least)
        .map(|(t, _)| *t)
}

fn config(setup: &Setup, kin: &str, dyn_: &str, i: usize, port: u16) -> String {
    let pace = setup.pace_writes;
    format!(
        r#"[sources.in]
stream = "in"
endpoint_url = "{kin}"
poll_interval_ms = 200

[outputs.a]
stream = "out-a"
endpoint_url = "{kin}"
pace_writes = {pace}

[outputs.b]
stream = "out-b"
endpoint_url = "{kin}"
pace_writes = {pace}

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
"#
    )
}

/// Runs the scenario once (bounded: 600 s for the copies to be written).
pub async fn run(setup: &Setup) -> Result<Report> {
    let kinesis = LocalKinesis::start_kinesalite()?;
    let dynamo = LocalDynamo::start_moto()?;
    let client = kinesis.client().await;
    create_stream(&client, "in", SOURCE_SHARDS).await?;
    for out in OUTPUTS {
        create_stream(&client, out, OUTPUT_SHARDS).await?;
    }
    let records = backlog(setup.records);
    put_all(&client, "in", &records).await?;

    kinesis.front.set_delay(setup.rtt);
    kinesis.front.enforce(Quotas::aws());
    dynamo.front.set_delay(Duration::from_millis(5));
    dynamo.front.enforce(Quotas {
        dynamodb_reads: setup.table_reads,
        dynamodb_writes: setup.table_writes,
        ..Quotas::aws()
    });

    let dir = TestDir::new()?;
    let started = Instant::now();
    let mut instances = Vec::new();
    for i in 0..setup.instances {
        let text = config(
            setup,
            &kinesis.endpoint,
            &dynamo.endpoint,
            i,
            free_port_pair(),
        );
        let path = dir.write_config(&format!("i{i}.toml"), &text)?;
        instances.push(Distributary::start(&path)?);
    }

    // Sample what the front let into each output until both hold every copy.
    let want = 2 * records.len() as u64;
    let mut samples: BTreeMap<&str, Vec<(Instant, u64)>> = BTreeMap::new();
    let deadline = started + Duration::from_secs(600);
    loop {
        let stats = kinesis.front.quota_stats();
        let now = Instant::now();
        let mut done = true;
        for out in OUTPUTS {
            let n = stats.forwarded_entries.get(out).copied().unwrap_or(0);
            samples.entry(out).or_default().push((now, n));
            done &= n >= want;
        }
        if done {
            break;
        }
        if now > deadline {
            bail!(
                "not every copy written in 600 s: {:?}; log of i0:\n{}",
                stats.forwarded_entries,
                instances
                    .first()
                    .map(Distributary::log_text)
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Let the last checkpoints land, then stop cleanly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut report = Report {
        seconds,
        stats: kinesis.front.quota_stats(),
        logs: instances.iter().map(Distributary::log_text).collect(),
        ..Report::default()
    };
    for instance in instances {
        instance.stop_cleanly();
    }
    for out in OUTPUTS {
        let got = read_all(&client, out).await?;
        match copies_in_key_order(&records, &got, 2) {
            Ok(extra) => {
                report.duplicates.insert(out.to_string(), extra);
            }
            Err(fault) => {
                report.faults.insert(out.to_string(), fault);
            }
        }
    }
    for (out, s) in &samples {
        let mut rates = Vec::new();
        let mut from = (started, 0u64);
        for &(t, n) in s {
            if t.duration_since(from.0) >= Duration::from_secs(5) {
                rates.push((n - from.1) as f64 / t.duration_since(from.0).as_secs_f64());
                from = (t, n);
            }
        }
        report.profile.insert(out.to_string(), rates);
        if let (Some(first), Some(last)) = (crossing(s, 1), crossing(s, want)) {
            let rate = want as f64 / last.duration_since(first).as_secs_f64().max(0.001);
            report.overall.insert(out.to_string(), rate);
        }
        if let (Some(t10), Some(t90)) = (crossing(s, want / 10), crossing(s, want * 9 / 10)) {
            let rate = (want * 8 / 10) as f64 / t90.duration_since(t10).as_secs_f64().max(0.001);
            report.rate.insert(out.to_string(), rate);
        }
    }
    // The instances' own call rates, throttled attempts included.
    let stats = &report.stats;
    let attempts = |prefix: &str| {
        QuotaStats::sum(&stats.calls, prefix) + QuotaStats::sum(&stats.throttled, prefix)
    };
    for i in 0..SOURCE_SHARDS {
        let shard = format!("shardId-{i:012}");
        let reads = attempts(&format!("GetRecords in {shard}")) as f64 / seconds;
        let iterators = attempts(&format!("GetShardIterator in {shard}")) as f64 / seconds;
        let bytes = stats
            .read_bytes
            .get(&format!("in {shard}"))
            .copied()
            .unwrap_or(0) as f64
            / seconds;
        report.reads.insert(shard, (reads, iterators, bytes));
    }
    for api in [
        "ListShards in",
        "ListShards out-a",
        "ListShards out-b",
        "DescribeStreamSummary",
    ] {
        report
            .control_calls
            .insert(api.to_string(), attempts(api) as f64 / seconds);
    }
    let table = dynamo.front.quota_stats();
    report.table_calls = table.calls.values().sum::<u64>();
    report.table_throttled = table.throttled;
    Ok(report)
}
