//! `--log-format json` and the log volume of a failure storm: an output
//! whose every PutRecords entry fails for 6 s, then whose every call fails
//! for 6 s, logs one warning per interval (with the count of failures since
//! the last one), not one per failure; every log line is one JSON object
//! carrying the output's name as a field; every record is then delivered
//! exactly once, in key order.

use distributary_e2e::fault::FaultProxy;
use distributary_e2e::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_and_one_warning_per_interval_in_a_failure_storm() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 2), ("out", 1)])
        .await
        .unwrap();
    let proxy = FaultProxy::start(&kinesis.endpoint, 0.0).await.unwrap();
    let dir = TestDir::new().unwrap();
    let config = dir
        .write_config(
            "json.toml",
            &config::split_endpoints(&kinesis.endpoint, &proxy.endpoint, &[("out", "out")], ""),
        )
        .unwrap();
    let running = Distributary::start_with(&config, &["--log-format", "json"], &[]).unwrap();
    let start = Instant::now();
    while !running.log_text().contains("distributary running") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not running:\n{}",
            running.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let records = numbered_records(2000, 50, "");
    proxy.set_fail_rate(1.0);
    put_all(&client, "input", &records).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.set_fail_rate(0.0);
    proxy.set_call_failure_rate(1.0);
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.set_call_failure_rate(0.0);
    let got = wait_for_settled(&client, "out", records.len(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_exactly_once_in_key_order("out", &records, &got);
    let injected = proxy.injected.load(std::sync::atomic::Ordering::Relaxed)
        + proxy
            .calls_failed
            .load(std::sync::atomic::Ordering::Relaxed);
    let log = running.log.clone();
    running.stop_cleanly();

    let text = std::fs::read_to_string(log).unwrap();
    let mut warnings = Vec::new();
    for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line {} is not JSON ({e}): {line}", n + 1));
        assert!(
            value.get("level").is_some()
                && value.get("timestamp").is_some()
                && value.get("message").is_some(),
            "log line {} lacks level, timestamp or message: {line}",
            n + 1
        );
        if value["level"] == "WARN" && value["output"] == "out" {
            warnings.push(value);
        }
    }
    eprintln!(
        "{injected} failures injected, {} warnings about the output",
        warnings.len()
    );
    assert!(injected > 50, "the storm failed only {injected} times");
    // 12 s of failures at one warning per 5 s interval: 3, perhaps 4; never per failure.
    assert!(
        (2..=5).contains(&warnings.len()),
        "{} warnings for {injected} failures: {warnings:#?}",
        warnings.len()
    );
    assert!(
        warnings
            .iter()
            .any(|w| w["failures"].as_u64().is_some_and(|n| n > 1)),
        "no warning carries the count of failures it stands for: {warnings:#?}"
    );
}
