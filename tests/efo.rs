//! Enhanced fan-out (`reader = "efo"`) against kinesis-local: the consumer is
//! registered, every record arrives once in key order, a graceful restart
//! resumes from the checkpoints with nothing duplicated, and a split mid-run
//! reads the parent to its end before its children. Subscriptions cut
//! mid-stream (as on AWS after a network error, or at their 5-minute end) are
//! replaced without a gap or a repeat.

use distributary_e2e::*;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

fn efo_config(endpoint: &str, outputs: &[(&str, &str)]) -> String {
    efo_config_via(endpoint, endpoint, outputs)
}

/// With the source read through `source_endpoint` (a proxy).
fn efo_config_via(source_endpoint: &str, endpoint: &str, outputs: &[(&str, &str)]) -> String {
    config::split_endpoints(source_endpoint, endpoint, outputs, "").replace(
        "poll_interval_ms = 200",
        "reader = \"efo\"\nefo_consumer_name = \"distributary-test\"",
    )
}

async fn consumers(client: &aws_sdk_kinesis::Client) -> Vec<String> {
    let summary = client
        .describe_stream_summary()
        .stream_name("input")
        .send()
        .await
        .unwrap();
    let arn = summary
        .stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_string();
    let listed = client
        .list_stream_consumers()
        .stream_arn(arn)
        .send()
        .await
        .unwrap();
    listed
        .consumers()
        .iter()
        .map(|c| c.consumer_name().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efo_replicates_and_a_graceful_restart_duplicates_nothing() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 2), ("out", 1)])
        .await
        .unwrap();
    // Kinesis' quotas hold throughout (SubscribeToShard once per second per
    // consumer and shard, the writes per shard).
    kinesis
        .front
        .enforce(distributary_e2e::front::Quotas::aws());
    let records = numbered_records(600, 12, "");
    let (first, second) = records.split_at(300);
    put_all(&client, "input", first).await.unwrap();
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            "efo.toml",
            &efo_config(&kinesis.endpoint, &[("out", "out")]),
        )
        .unwrap();

    let running = Distributary::start(&path).unwrap();
    let got = wait_for_settled(&client, "out", first.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out", first, &got);
    let log = running.log_text();
    running.stop_cleanly();
    assert!(log.contains("reading with enhanced fan-out"), "{log}");
    assert!(!log.contains("GetRecords"), "no polling on the tip: {log}");
    let quotas = kinesis.front.quota_stats();
    assert!(
        distributary_e2e::front::QuotaStats::sum(&quotas.calls, "SubscribeToShard") >= 2,
        "subscribed through the quota front: {quotas:?}"
    );
    assert_eq!(
        distributary_e2e::front::QuotaStats::sum(&quotas.throttled, "SubscribeToShard"),
        0,
        "never more than one subscription per second per shard: {quotas:?}"
    );
    assert_eq!(consumers(&client).await, ["distributary-test"]);

    // The second run reuses the consumer and resumes after the checkpoints.
    put_all(&client, "input", second).await.unwrap();
    let running = Distributary::start(&path).unwrap();
    let got = wait_for_settled(&client, "out", records.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    assert_exactly_once_in_key_order("out", &records, &got);
    assert_eq!(consumers(&client).await, ["distributary-test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efo_split_mid_run_reads_the_parent_before_its_children() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out", 2)])
        .await
        .unwrap();
    let records = numbered_records(900, 30, "");
    let (first, rest) = records.split_at(300);
    let (second, third) = rest.split_at(300);
    put_all(&client, "input", first).await.unwrap();
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            "efo-split.toml",
            &efo_config(&kinesis.endpoint, &[("out", "out")]),
        )
        .unwrap();
    let running = Distributary::start(&path).unwrap();
    wait_for_count(&client, "out", 100, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));

    put_all(&client, "input", second).await.unwrap();
    split_in_half(&client, "input", 0).await.unwrap();
    put_all(&client, "input", third).await.unwrap();

    let got = wait_for_settled(&client, "out", records.len(), Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    let log = running.log_text();
    running.stop_cleanly();
    assert_exactly_once_in_key_order("out", &records, &got);
    assert!(log.contains("shard read to its end"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_cut_mid_stream_lose_and_repeat_nothing() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 2), ("out", 1)])
        .await
        .unwrap();
    let proxy = cut::CutProxy::start(&kinesis.endpoint, Duration::from_millis(2500))
        .await
        .unwrap();
    let records = numbered_records(600, 12, "");
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            "efo-cut.toml",
            &efo_config_via(&proxy.endpoint, &kinesis.endpoint, &[("out", "out")]),
        )
        .unwrap();
    let running = Distributary::start(&path).unwrap();
    for wave in records.chunks(100) {
        put_all(&client, "input", wave).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let got = wait_for_settled(&client, "out", records.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    assert_exactly_once_in_key_order("out", &records, &got);
    let cuts = proxy.cuts.load(std::sync::atomic::Ordering::Relaxed);
    assert!(cuts >= 4, "only {cuts} subscriptions were cut");
}

/// Registers (or finds) consumer `name` on `input` and holds a subscription
/// to `shard` open, reading its events, until the returned task is aborted:
/// another process's subscription that is still open.
async fn hold_subscription(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    shard: &str,
) -> tokio::task::JoinHandle<()> {
    use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition};
    let arn = client
        .describe_stream_summary()
        .stream_name("input")
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_string();
    let consumer = client
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name(name)
        .send()
        .await
        .unwrap()
        .consumer
        .unwrap()
        .consumer_arn;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut events = loop {
        let start = StartingPosition::builder()
            .r#type(ShardIteratorType::Latest)
            .build()
            .unwrap();
        match client
            .subscribe_to_shard()
            .consumer_arn(&consumer)
            .shard_id(shard)
            .starting_position(start)
            .send()
            .await
        {
            Ok(out) => break out.event_stream,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "cannot subscribe: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = events.recv().await {} })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_held_elsewhere_is_backed_off_counted_and_read_by_get_records() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out", 1)])
        .await
        .unwrap();
    let shard = client
        .list_shards()
        .stream_name("input")
        .send()
        .await
        .unwrap()
        .shards()[0]
        .shard_id()
        .to_string();
    let holder = hold_subscription(&client, "distributary-test", &shard).await;
    let port = free_port_pair();
    let dir = TestDir::new().unwrap();
    let text = format!(
        "{}\n[server]\nlisten = \"127.0.0.1:{port}\"\n",
        efo_config(&kinesis.endpoint, &[("out", "out")])
    );
    let path = dir.write_config("efo-held.toml", &text).unwrap();
    let running = Distributary::start(&path).unwrap();
    let records = numbered_records(120, 6, "");
    put_all(&client, "input", &records).await.unwrap();
    // Delivered although the subscription stays held the whole time.
    let got = wait_for_settled(&client, "out", records.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out", &records, &got);
    let metrics = scrape_metrics(port).unwrap_or_default();
    let series = |name: &str| {
        metric(
            &metrics,
            &format!("{name}{{source=\"input\",shard=\"{shard}\"}}"),
        )
    };
    let conflicts = series("distributary_source_efo_subscription_conflicts_total").unwrap_or(0.0);
    assert!(conflicts >= 2.0, "{metrics}");
    // Backed off: far fewer attempts than one a second over the 15 s before the fallback.
    assert!(conflicts <= 10.0, "{conflicts} attempts\n{metrics}");
    assert_eq!(
        series("distributary_source_efo_polling_fallback"),
        Some(1.0),
        "{metrics}"
    );
    let log = running.log_text();
    assert!(
        log.contains("another subscription holds the shard; reading it with GetRecords"),
        "{log}"
    );
    holder.abort();
    running.stop_cleanly();
}
