//! PutRecords partial failures: a loopback proxy in front of the local
//! Kinesis fails a random 30% of the entries of every PutRecords call with
//! ProvisionedThroughputExceededException (and does not write them). Every
//! record still arrives exactly once, in per-key order.

use distributary_e2e::fault::FaultProxy;
use distributary_e2e::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_failed_entries_lose_nothing_and_keep_order() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 2), ("out-a", 2), ("out-b", 1)])
        .await
        .unwrap();
    let records = numbered_records(1500, 40, "");
    put_all(&client, "input", &records).await.unwrap();

    let proxy = FaultProxy::start(&kinesis.endpoint, 0.3).await.unwrap();
    let dir = TestDir::new().unwrap();
    // The source reads directly; the outputs write through the proxy.
    let text = config::split_endpoints(
        &kinesis.endpoint,
        &proxy.endpoint,
        &[("a", "out-a"), ("b", "out-b")],
        "",
    );
    let config = dir.write_config("faults.toml", &text).unwrap();
    let running = Distributary::start(&config).unwrap();
    for out in ["out-a", "out-b"] {
        let got = wait_for_count(&client, out, records.len(), Duration::from_secs(180))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
        assert_exactly_once_in_key_order(out, &records, &got);
    }
    let injected = proxy.injected.load(Ordering::Relaxed);
    assert!(
        injected > 300,
        "the proxy injected only {injected} failures"
    );
    running.stop_cleanly();
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    assert!(log.contains("entries_retried"), "{log}");
}
