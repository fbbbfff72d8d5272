//! Restarts mid-stream. Graceful (SIGTERM): the process drains what it is
//! delivering, writes its checkpoint and exits 0; after restart every record
//! arrives exactly once. Crash (SIGKILL): after restart every record arrives
//! at least once, in per-key order for first deliveries.

use distributary_e2e::*;
use std::time::{Duration, Instant};

struct Setup {
    kinesis: LocalKinesis,
    client: aws_sdk_kinesis::Client,
    dir: TestDir,
    config: std::path::PathBuf,
}

async fn setup(n_outputs: usize) -> Setup {
    let (kinesis, client) = kinesis_with_streams(&[("input", 2)]).await.unwrap();
    let outputs: Vec<(String, String)> = (0..n_outputs)
        .map(|i| (format!("o{i}"), format!("out-{i}")))
        .collect();
    for (_, s) in &outputs {
        create_stream(&client, s, 1).await.unwrap();
    }
    let refs: Vec<(&str, &str)> = outputs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = TestDir::new().unwrap();
    let config = dir
        .write_config(
            "restart.toml",
            &config::simple(&kinesis.endpoint, &refs, ""),
        )
        .unwrap();
    Setup {
        kinesis,
        client,
        dir,
        config,
    }
}

/// Writes `records` in the background in small chunks, so the service is stopped mid-stream.
fn write_slowly(client: aws_sdk_kinesis::Client, records: Vec<Rec>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for chunk in records.chunks(100) {
            put_all(&client, "input", chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn wait_some(client: &aws_sdk_kinesis::Client, stream: &str, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_all(client, stream).await.unwrap().len() < at_least {
        assert!(
            Instant::now() < deadline,
            "{stream}: not even {at_least} records arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_loses_and_duplicates_nothing() {
    let s = setup(2).await;
    let records = numbered_records(2000, 64, "");
    let writer = write_slowly(s.client.clone(), records.clone());
    for round in 0..3 {
        let running = Distributary::start(&s.config).unwrap();
        wait_some(&s.client, "out-0", 300 * (round + 1)).await;
        let status = running.terminate(Duration::from_secs(30)).unwrap();
        assert!(status.success(), "round {round}: exit status {status}");
    }
    writer.await.unwrap();
    let running = Distributary::start(&s.config).unwrap();
    for out in ["out-0", "out-1"] {
        let got = wait_for_settled(&s.client, out, records.len(), Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
        assert_exactly_once_in_key_order(out, &records, &got);
    }
    let status = running.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    assert!(s.dir.dir.path().join("state/checkpoints.json").is_file());
    drop(s.kinesis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_restart_loses_nothing() {
    let s = setup(2).await;
    let records = numbered_records(2000, 64, "");
    let writer = write_slowly(s.client.clone(), records.clone());
    for round in 0..3 {
        let running = Distributary::start(&s.config).unwrap();
        wait_some(&s.client, "out-1", 300 * (round + 1)).await;
        running.kill().unwrap();
    }
    writer.await.unwrap();
    let running = Distributary::start(&s.config).unwrap();
    for out in ["out-0", "out-1"] {
        let got = wait_for_count(&s.client, out, records.len(), Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
        assert_at_least_once_in_key_order(out, &records, &got);
    }
    let status = running.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    drop(s.kinesis);
}
