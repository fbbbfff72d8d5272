//! Outages and stops around the data path: an output that cannot be reached
//! at start-up is waited for (not a start-up error), a call left unanswered
//! is abandoned and retried within seconds, the drain after SIGTERM is
//! bounded by `shutdown_timeout_s` when an output keeps failing, and a
//! checkpoint that cannot be written turns `/readyz` to 503. Nothing is lost
//! in any of them.

use distributary_e2e::fault::FaultProxy;
use distributary_e2e::*;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);

/// One pipeline from `input` to `out` (written through `output_endpoint`),
/// with the operator endpoints on `port`; `extra` goes at the top.
fn config(source: &str, output_endpoint: &str, port: u16, extra: &str) -> String {
    format!(
        "{extra}\n{}\n[server]\nlisten = \"127.0.0.1:{port}\"\n",
        config::split_endpoints(source, output_endpoint, &[("a", "out")], "")
    )
}

/// Waits until `/readyz` answers `status` with a body containing `words`.
async fn wait_readyz(port: u16, status: u16, words: &str, running: &Distributary) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((s, body)) = http_get(port, "/readyz")
            && s == status
            && body.contains(words)
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {status} with {words:?}: {:?}\n{}",
            http_get(port, "/readyz"),
            running.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_unreachable_at_start_up_is_waited_for_then_served() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out", 1)])
        .await
        .unwrap();
    // Nothing listens on the output's port yet: connections are refused.
    let output_port = free_port_pair();
    // The front that will listen there later serves HTTPS for `localhost`.
    let output = format!("https://localhost:{output_port}");
    let port = free_port_pair();
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config("outage.toml", &config(&kinesis.endpoint, &output, port, ""))
        .unwrap();
    let records = numbered_records(60, 6, "");
    put_all(&client, "input", &records).await.unwrap();
    let mut running = Distributary::start(&path).unwrap();
    let body = wait_readyz(port, 503, "waiting for outputs.a", &running).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        running.is_running(),
        "an outage is not a start-up error\n{}",
        running.log_text()
    );
    assert_eq!(http_get(port, "/healthz").map(|(s, _)| s), Some(200));
    assert!(body.contains("starting"), "{body}");

    // The endpoint comes up: delivery starts.
    let _proxy = FaultProxy::start_on(&kinesis.endpoint, output_port, 0.0)
        .await
        .unwrap();
    let got = wait_for_settled(&client, "out", records.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out", &records, &got);
    wait_readyz(port, 200, "ready", &running).await;
    running.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_output_stream_is_still_a_start_up_error() {
    let (kinesis, _client) = kinesis_with_streams(&[("input", 1)]).await.unwrap();
    let port = free_port_pair();
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            "missing.toml",
            &config(&kinesis.endpoint, &kinesis.endpoint, port, ""),
        )
        .unwrap();
    let mut running = Distributary::start(&path).unwrap();
    let status = running.wait(Duration::from_secs(30)).unwrap();
    assert_eq!(status.code(), Some(2), "{}", running.log_text());
    assert!(
        running.log_text().contains("outputs.a"),
        "{}",
        running.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_left_unanswered_are_abandoned_and_retried_within_seconds() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out", 1)])
        .await
        .unwrap();
    let proxy = FaultProxy::start(&kinesis.endpoint, 0.0).await.unwrap();
    let port = free_port_pair();
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            "stall.toml",
            &config(&kinesis.endpoint, &proxy.endpoint, port, ""),
        )
        .unwrap();
    let running = Distributary::start(&path).unwrap();
    let first = numbered_records(30, 3, "first-");
    put_all(&client, "input", &first).await.unwrap();
    wait_for_count(&client, "out", first.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));

    // An outage in which every PutRecords is taken and never answered.
    proxy.set_stalled(true);
    let second = numbered_records(30, 3, "second-");
    put_all(&client, "input", &second).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    proxy.set_stalled(false);
    let healed = Instant::now();
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    let got = wait_for_count(&client, "out", all.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    let catch_up = healed.elapsed();
    running.stop_cleanly();
    assert_exactly_once_in_key_order("out", &all, &got);
    println!("caught up {catch_up:?} after the outage ended");
    assert!(
        catch_up < Duration::from_secs(9),
        "a call left unanswered must be given up within seconds; caught up after {catch_up:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_when_an_output_keeps_failing_and_nothing_is_lost() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out", 1)])
        .await
        .unwrap();
    // Every PutRecords entry fails: the writer retries forever.
    let proxy = FaultProxy::start(&kinesis.endpoint, 1.0).await.unwrap();
    let port = free_port_pair();
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            "bounded.toml",
            &config(
                &kinesis.endpoint,
                &proxy.endpoint,
                port,
                "shutdown_timeout_s = 3",
            ),
        )
        .unwrap();
    let records = numbered_records(40, 4, "");
    put_all(&client, "input", &records).await.unwrap();
    let running = Distributary::start(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.injected.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "no write attempted\n{}",
            running.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = running.log.clone();
    let asked = Instant::now();
    let status = running
        .terminate(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
    let took = asked.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{text}");
    assert!(
        took < Duration::from_secs(10),
        "shutdown took {took:?}\n{text}"
    );
    assert!(
        took >= Duration::from_secs(3),
        "the drain was given its time: {took:?}"
    );
    assert!(text.contains("shutdown timeout passed"), "{text}");
    assert!(text.contains("abandoning the batch in flight"), "{text}");
    assert!(read_all(&client, "out").await.unwrap().is_empty());

    // The output heals; the restart delivers everything, once.
    proxy.set_fail_rate(0.0);
    let running = Distributary::start(&path).unwrap();
    let got = wait_for_settled(&client, "out", records.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    assert_exactly_once_in_key_order("out", &records, &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_that_cannot_be_written_turns_readyz_to_503_and_is_counted() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out", 1)])
        .await
        .unwrap();
    let port = free_port_pair();
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            "state.toml",
            &config(&kinesis.endpoint, &kinesis.endpoint, port, ""),
        )
        .unwrap();
    let running = Distributary::start(&path).unwrap();
    wait_readyz(port, 200, "ready", &running).await;
    let first = numbered_records(20, 2, "first-");
    put_all(&client, "input", &first).await.unwrap();
    wait_for_count(&client, "out", first.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));

    // The state directory disappears (tests run as root, for whom a
    // read-only mode does not stop writes; a removed directory does).
    let state = dir.dir.path().join("state");
    let moved = dir.dir.path().join("state.moved");
    std::fs::rename(&state, &moved).unwrap();
    let second = numbered_records(20, 2, "second-");
    put_all(&client, "input", &second).await.unwrap();
    let body = wait_readyz(port, 503, "checkpoints cannot be written", &running).await;
    assert!(body.contains("checkpoints.json"), "names the file: {body}");
    let text = scrape_metrics(port).unwrap_or_default();
    assert!(
        metric(&text, "distributary_checkpoint_flush_failures_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "distributary_checkpoint_failing"),
        Some(1.0),
        "{text}"
    );

    // It comes back: the next flush succeeds and readiness returns.
    std::fs::rename(&moved, &state).unwrap();
    wait_readyz(port, 200, "ready", &running).await;
    let text = scrape_metrics(port).unwrap_or_default();
    assert_eq!(
        metric(&text, "distributary_checkpoint_failing"),
        Some(0.0),
        "{text}"
    );
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    let got = wait_for_settled(&client, "out", all.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    assert_exactly_once_in_key_order("out", &all, &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_while_start_up_waits_is_a_clean_stop() {
    let (kinesis, _client) = kinesis_with_streams(&[("input", 1), ("out", 1)])
        .await
        .unwrap();
    let output = format!("http://127.0.0.1:{}", free_port_pair());
    let port = free_port_pair();
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            "waiting.toml",
            &config(&kinesis.endpoint, &output, port, ""),
        )
        .unwrap();
    let running = Distributary::start(&path).unwrap();
    wait_readyz(port, 503, "waiting for outputs.a", &running).await;
    let log = running.log.clone();
    let status = running.terminate(Duration::from_secs(15)).unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{text}");
    assert!(text.contains("stopped before start-up finished"), "{text}");
}
