//! Pipelines on one source share one reader per shard: with four pipelines
//! the GetRecords calls per shard (counted by `/metrics`) are what they are
//! with one, not four times as many, and every pipeline still gets every
//! record. The test prints both counts.

use distributary_e2e::*;
use std::time::{Duration, Instant};

/// GetRecords calls per shard, summed over the source's shards.
fn get_records_calls(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("distributary_source_get_records_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn config(endpoint: &str, pipelines: usize, port: u16) -> String {
    let mut text = format!(
        "[sources.input]\nstream = \"input\"\nendpoint_url = \"{endpoint}\"\npoll_interval_ms = 200\n\n[checkpoint]\npath = \"state-{pipelines}\"\ninterval_ms = 200\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n"
    );
    for i in 1..=pipelines {
        text.push_str(&format!(
            "[outputs.o{i}]\nstream = \"out-{i}\"\nendpoint_url = \"{endpoint}\"\n\n[[pipelines]]\nname = \"p{i}\"\nsource = \"input\"\noutputs = [\"o{i}\"]\n\n"
        ));
    }
    text
}

/// Runs `pipelines` pipelines until all of `records` arrived in each output;
/// returns the GetRecords calls made on the source during a quiet 5 s after.
async fn calls_with(
    kinesis: &LocalKinesis,
    client: &aws_sdk_kinesis::Client,
    records: &[Rec],
    pipelines: usize,
) -> f64 {
    let port = free_port_pair();
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            &format!("shared-{pipelines}.toml"),
            &config(&kinesis.endpoint, pipelines, port),
        )
        .unwrap();
    let running = Distributary::start(&path).unwrap();
    for i in 1..=pipelines {
        let stream = format!("out-{i}");
        let got = wait_for_count(client, &stream, records.len(), Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
        assert_exactly_once_in_key_order(&stream, records, &got);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        if let Some(text) = scrape_metrics(port) {
            break get_records_calls(&text);
        }
        assert!(
            Instant::now() < deadline,
            "no /metrics:\n{}",
            running.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = scrape_metrics(port)
        .map(|t| get_records_calls(&t))
        .unwrap_or(0.0);
    running.stop_cleanly();
    after - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_pipelines_read_a_shard_no_more_often_than_one() {
    let (kinesis, client) = kinesis_with_streams(&[
        ("input", 2),
        ("out-1", 1),
        ("out-2", 1),
        ("out-3", 1),
        ("out-4", 1),
    ])
    .await
    .unwrap();
    let records = numbered_records(200, 20, "");
    put_all(&client, "input", &records).await.unwrap();
    let one = calls_with(&kinesis, &client, &records, 1).await;
    // The four-pipeline run starts from its own state directory: it reads everything again.
    let four = calls_with(&kinesis, &client, &records, 4).await;
    println!(
        "GetRecords calls on the 2-shard source in 5 s at the tip: 1 pipeline {one}, 4 pipelines {four}"
    );
    assert!(one >= 10.0, "the reader should poll while idle: {one}");
    assert!(
        four <= one * 1.3 + 2.0,
        "4 pipelines made {four} GetRecords calls, 1 made {one}"
    );
}
