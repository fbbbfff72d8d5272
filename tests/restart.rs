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
        let log = running.log.clone();
        let status = running.terminate(Duration::from_secs(30)).unwrap();
        assert!(
            status.success(),
            "round {round}: exit status {status}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    writer.await.unwrap();
    let running = Distributary::start(&s.config).unwrap();
    for out in ["out-0", "out-1"] {
        let got = wait_for_settled(&s.client, out, records.len(), Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
        assert_exactly_once_in_key_order(out, &records, &got);
    }
    running.stop_cleanly();
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
        let got = wait_for_every(&s.client, out, &records, Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
        assert_at_least_once_in_key_order(out, &records, &got);
    }
    running.stop_cleanly();
    drop(s.kinesis);
}

/// SIGTERM while an output rejects every entry: the process keeps draining
/// (it does not exit with the batch half written), stays nearly idle while it
/// waits, and once writes succeed again it finishes the batch, checkpoints it,
/// and exits 0; a restart then delivers nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_writes_without_spinning() {
    use distributary_e2e::fault::FaultProxy;
    use std::sync::atomic::Ordering;
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out-a", 1)])
        .await
        .unwrap();
    let records = numbered_records(200, 20, "");
    put_all(&client, "input", &records).await.unwrap();
    let proxy = FaultProxy::start(&kinesis.endpoint, 1.0).await.unwrap();
    let dir = TestDir::new().unwrap();
    let text = config::split_endpoints(&kinesis.endpoint, &proxy.endpoint, &[("a", "out-a")], "");
    let config = dir.write_config("drain.toml", &text).unwrap();
    let mut running = Distributary::start(&config).unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.put_calls.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "no PutRecords attempted:\n{}",
            running.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.send_term();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = running.cpu_seconds().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = running.cpu_seconds().unwrap() - before;
    assert!(
        running.is_running(),
        "exited with a batch in flight:\n{}",
        running.log_text()
    );
    assert!(
        used < 0.5,
        "{used:.2} s of CPU in 2 s while waiting to drain"
    );

    proxy.set_fail_rate(0.0);
    let status = running.wait(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "exit status {status}");
    let got = read_all(&client, "out-a").await.unwrap();
    assert_exactly_once_in_key_order("out-a", &records, &got);

    let running = Distributary::start(&config).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.stop_cleanly();
    let got = read_all(&client, "out-a").await.unwrap();
    assert_exactly_once_in_key_order("out-a", &records, &got);
}
