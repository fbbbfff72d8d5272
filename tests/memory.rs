//! The memory budget (`[buffer] max_bytes`): a backlog far larger than the
//! budget, on 4 source shards, to an output that answers nothing (the proxy
//! holds every call), so nothing is ever acknowledged. The budget, not the
//! backlog, bounds what is read: the `distributary_buffer_bytes` gauge stays
//! within the budget (plus at most one read's misestimate per shard) and the
//! process's peak RSS within `max_bytes` + 64 MiB. A control run with a
//! budget larger than the backlog reads all of it, and its peak RSS exceeds
//! that bound: the check can fail. Once the output answers, every record is
//! delivered once, in key order.

use distributary_e2e::fault::FaultProxy;
use distributary_e2e::*;
use std::time::{Duration, Instant};

const RECORDS: usize = 60_000;
const BUDGET: usize = 16 << 20;
const SLACK: usize = 64 << 20;

/// 1 KiB records over 1,000 keys.
fn backlog() -> Vec<Rec> {
    let mut records = numbered_records(RECORDS, 1000, "");
    for r in &mut records {
        r.data.resize(1024, b' ');
    }
    records
}

fn config(source: &str, output: &str, budget: usize, port: u16) -> String {
    format!(
        "[sources.input]\nstream = \"input\"\nendpoint_url = \"{source}\"\npoll_interval_ms = 200\n\n\
         [outputs.o]\nstream = \"out\"\nendpoint_url = \"{output}\"\n\n\
         [buffer]\nmax_bytes = {budget}\n\n\
         [checkpoint]\npath = \"state\"\ninterval_ms = 200\n\n\
         [[pipelines]]\nname = \"p\"\nsource = \"input\"\noutputs = [\"o\"]\n\n\
         [server]\nlisten = \"127.0.0.1:{port}\"\n"
    )
}

/// The process's peak resident set (VmHWM), bytes.
fn peak_rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Runs with `budget` against a failing output for `hold`; returns (peak
/// RSS, the highest buffer gauge seen), then lets the output answer and
/// checks delivery when `deliver` is set.
async fn stalled_run(budget: usize, hold: Duration, deliver: bool) -> (usize, f64) {
    let kinesis = LocalKinesis::start_kinesalite().unwrap();
    let client = kinesis.client().await;
    create_stream(&client, "input", 4).await.unwrap();
    create_stream(&client, "out", 1).await.unwrap();
    let records = backlog();
    put_all(&client, "input", &records).await.unwrap();
    let proxy = FaultProxy::start(&kinesis.endpoint, 1.0).await.unwrap();
    let dir = TestDir::new().unwrap();
    let port = free_port_pair();
    let path = dir
        .write_config(
            "memory.toml",
            &config(&kinesis.endpoint, &proxy.endpoint, budget, port),
        )
        .unwrap();
    let running = Distributary::start(&path).unwrap();
    let until = Instant::now() + hold;
    let mut highest = 0f64;
    while Instant::now() < until {
        if let Some(text) = scrape_metrics(port) {
            highest = highest.max(metric(&text, "distributary_buffer_bytes").unwrap_or(0.0));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = peak_rss(running.pid());
    if deliver {
        proxy.set_fail_rate(0.0);
        let got = wait_for_settled(&client, "out", RECORDS, Duration::from_secs(300))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
        assert_exactly_once_in_key_order("out", &records, &got);
    }
    running.stop_cleanly();
    (peak, highest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_the_budget_is_read_within_it() {
    let (peak, highest) = stalled_run(BUDGET, Duration::from_secs(12), true).await;
    let mib = |b: f64| b / (1 << 20) as f64;
    println!(
        "budget {} MiB: peak RSS {:.1} MiB, buffer at most {:.1} MiB",
        BUDGET >> 20,
        mib(peak as f64),
        mib(highest)
    );
    assert!(
        highest > (BUDGET / 2) as f64,
        "reading filled the budget: {highest}"
    );
    // One read's misestimate per shard at most (4 shards).
    assert!(
        highest <= (BUDGET + (4 << 20)) as f64,
        "buffer gauge {highest} over the {BUDGET}-byte budget"
    );
    assert!(
        peak <= BUDGET + SLACK,
        "peak RSS {peak} over budget + 64 MiB ({})",
        BUDGET + SLACK
    );

    // Control: a budget above the backlog reads it all, and the same bound fails.
    let (peak, highest) = stalled_run(1 << 30, Duration::from_secs(12), false).await;
    println!(
        "control, budget 1 GiB: peak RSS {:.1} MiB, buffer at most {:.1} MiB",
        mib(peak as f64),
        mib(highest)
    );
    assert!(
        peak > BUDGET + SLACK,
        "the control run stayed under the bound too ({peak}): the check cannot fail"
    );
}
