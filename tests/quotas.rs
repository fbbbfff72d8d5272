//! Under Kinesis' quotas (enforced by the front, `front/quota.rs`) with
//! 20 ms added to every call, the scenario of `quota_run.rs`: a 60,000 ×
//! 1 KiB backlog over 1,000 random keys on a 4-shard source, 3 instances
//! sharing it through the lease table (moto, limited to 10 reads and 20
//! writes per second) with 3 pipelines each, 2 outputs of 2 shards. Each
//! output must run at >= 90% of its ceiling (2,000 records/s), hold every
//! record at least twice (two pipelines write it) in per-key order per
//! pipeline, with fewer than 2% of copies more (a lease that fails over on a
//! throttled table repeats its shard's records since the last checkpoint:
//! at-least-once; the count is printed with the instances' lease lines),
//! and the instances' own read call rates must stay within the read quotas
//! on average.

use distributary_e2e::quota_run::{self, CEILING, OUTPUTS, Setup};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_under_quotas_runs_each_output_near_its_ceiling_within_the_read_quotas() {
    let report = quota_run::run(&Setup {
        records: 60_000,
        instances: 3,
        rtt: Duration::from_millis(20),
        pace_writes: true,
        table_reads: Some(10.0),
        table_writes: Some(20.0),
    })
    .await
    .unwrap();
    eprintln!(
        "quota run in {:.1} s:\n  {}",
        report.seconds,
        report.lines().join("\n  ")
    );
    assert!(
        report.faults.is_empty(),
        "outputs: {:?}\nthe instances' lease and shard lines:\n{}",
        report.faults,
        report.lease_lines().join("\n")
    );
    // At-least-once: a lease that fails over (its renewals throttled or
    // late on a loaded machine) has its shard's records since the last
    // checkpoint delivered again; never more than a sliver of the run.
    let extra: usize = report.duplicates.values().sum();
    if extra > 0 {
        eprintln!(
            "{extra} duplicates; the instances' lease and shard lines:\n{}",
            report.lease_lines().join("\n")
        );
    }
    let copies = OUTPUTS.len() * 2 * 60_000;
    assert!(
        extra * 50 < copies,
        "{extra} duplicates in {copies} copies: more than 2%"
    );
    for out in OUTPUTS {
        let rate = report.rate.get(out).copied().unwrap_or(0.0);
        assert!(
            rate >= 0.9 * CEILING,
            "{out} ran at {rate:.0} rec/s, under 90% of its ceiling {CEILING}"
        );
        let (throttled, sent) = report.entries(out);
        assert!(
            throttled * 20 < sent,
            "{out}: {throttled} of {sent} entries throttled: pacing does not hold"
        );
    }
    for (shard, (reads, iterators, bytes)) in &report.reads {
        assert!(*reads <= 5.0, "{shard}: {reads:.2} GetRecords calls/s");
        assert!(
            *iterators <= 5.0,
            "{shard}: {iterators:.2} GetShardIterator calls/s"
        );
        assert!(*bytes <= 2.0 * 1_048_576.0, "{shard}: {bytes:.0} B/s read");
    }
    for (api, rate) in &report.control_calls {
        let limit = if api.starts_with("ListShards") {
            100.0
        } else {
            20.0
        };
        assert!(*rate <= limit, "{api}: {rate:.2}/s");
    }
    assert!(
        report.table_calls > 0,
        "the lease table was reached through its quota front"
    );
    for (i, log) in report.logs.iter().enumerate() {
        assert!(!log.contains("panicked"), "instance {i} panicked:\n{log}");
    }
}
