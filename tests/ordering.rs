//! The two `ordering` modes of an output under a loopback proxy that fails a
//! random 30% of the entries of every PutRecords call (and does not write
//! them) and delays every call, so that several requests are in flight:
//!
//! - `per_key` (the default): with records of two source shards packed into
//!   shared requests and up to 16 requests in flight, every record arrives
//!   exactly once and in per-key order, and nothing is counted as reordered.
//! - `none`: every record arrives exactly once; records of a key do land out
//!   of order, and `distributary_output_reordered_total` counts exactly the
//!   records that landed after a newer record of their key.

use distributary_e2e::fault::FaultProxy;
use distributary_e2e::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn config(source: &str, output: &str, ordering: &str, port: u16) -> String {
    format!(
        "[sources.input]\nstream = \"input\"\nendpoint_url = \"{source}\"\npoll_interval_ms = 200\n\n\
         [outputs.o]\nstream = \"out\"\nendpoint_url = \"{output}\"\nordering = \"{ordering}\"\nmax_requests_in_flight = 16\n\n\
         [checkpoint]\npath = \"state\"\ninterval_ms = 200\n\n\
         [[pipelines]]\nname = \"p\"\nsource = \"input\"\noutputs = [\"o\"]\n\n\
         [server]\nlisten = \"127.0.0.1:{port}\"\n"
    )
}

/// Records (as read back, in stored order per shard) that come after a
/// record of the same key that is later in the source.
fn reordered(expected: &[Rec], got: &[ReadRec]) -> usize {
    let position: HashMap<&Rec, usize> = expected.iter().enumerate().map(|(i, r)| (r, i)).collect();
    let mut newest: HashMap<(&str, &str), usize> = HashMap::new();
    let mut n = 0;
    for r in got {
        let i = position[&r.rec];
        let seen = newest.entry((&r.shard, &r.rec.key)).or_insert(i);
        if *seen > i {
            n += 1;
        } else {
            *seen = i;
        }
    }
    n
}

/// The output's reordered counter, once it stops changing (the last answers
/// may be applied just after the records became readable).
async fn reordered_metric(port: u16) -> f64 {
    let series = "distributary_output_reordered_total{output=\"o\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        let now = scrape_metrics(port).and_then(|t| metric(&t, series));
        if now.is_some() && now == last {
            return now.unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "no stable {series}: {now:?}");
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run(ordering: &str, source_shards: i32, records: &[Rec]) -> (Vec<ReadRec>, f64, u64) {
    let (kinesis, client) = kinesis_with_streams(&[("input", source_shards), ("out", 1)])
        .await
        .unwrap();
    put_all(&client, "input", records).await.unwrap();
    let proxy = FaultProxy::start(&kinesis.endpoint, 0.3).await.unwrap();
    proxy.set_delay(Duration::from_millis(15));
    let dir = TestDir::new().unwrap();
    let port = free_port_pair();
    let text = config(&kinesis.endpoint, &proxy.endpoint, ordering, port);
    let config = dir.write_config("ordering.toml", &text).unwrap();
    let running = Distributary::start(&config).unwrap();
    let got = wait_for_settled(&client, "out", records.len(), Duration::from_secs(240))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    let counted = reordered_metric(port).await;
    running.stop_cleanly();
    (got, counted, proxy.injected.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_keeps_order_with_failures_and_requests_in_flight() {
    let records = numbered_records(3000, 12, "");
    let (got, counted, injected) = run("per_key", 2, &records).await;
    assert!(
        injected > 300,
        "the proxy injected only {injected} failures"
    );
    assert_exactly_once_in_key_order("out", &records, &got);
    assert_eq!(counted, 0.0, "nothing reordered, nothing counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_counts_exactly_the_records_it_reorders() {
    let records = numbered_records(3000, 3, "");
    let (got, counted, injected) = run("none", 1, &records).await;
    assert!(
        injected > 300,
        "the proxy injected only {injected} failures"
    );
    // Every record once (order aside).
    let mut sorted_got: Vec<&Rec> = got.iter().map(|r| &r.rec).collect();
    let mut sorted_expected: Vec<&Rec> = records.iter().collect();
    sorted_got.sort_by(|a, b| (&a.key, &a.data).cmp(&(&b.key, &b.data)));
    sorted_expected.sort_by(|a, b| (&a.key, &a.data).cmp(&(&b.key, &b.data)));
    assert!(sorted_got == sorted_expected, "every record exactly once");
    let seen = reordered(&records, &got);
    println!(
        "ordering = none, 30% failed entries: {seen} of {} records landed after a newer one of their key; counted {counted}",
        records.len()
    );
    assert!(
        seen > 0,
        "30% failures with full requests reorder some records"
    );
    assert_eq!(
        counted, seen as f64,
        "the counter is exactly what the output shows"
    );
}
