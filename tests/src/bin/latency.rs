//! Put-to-output latency, polling against enhanced fan-out, in one run (a
//! measurement, not a test): a private kinesis-local on 127.0.0.1, one
//! source stream read by three sources of one distributary process:
//! `reader = "polling"` with the default `poll_interval_ms` (1000), polling
//! with 200, and `reader = "efo"`, each replicating to its own output. Records are put one
//! at a time at a steady rate; a record's latency is the output record's
//! ApproximateArrivalTimestamp minus the source record's (one server clock).
//!
//! Usage: cargo run --release -p distributary-e2e --bin latency [RECORDS] [PER_SECOND]
//! (defaults 300 and 10). Prints p50, p99 and max per reader.

use anyhow::{Context, Result, bail};
use aws_sdk_kinesis::Client;
use distributary_e2e::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// (data, arrival ms) of every record of `stream`.
async fn arrivals(client: &Client, stream: &str) -> Result<HashMap<Vec<u8>, i64>> {
    let mut out = HashMap::new();
    let shards = client.list_shards().stream_name(stream).send().await?;
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator;
        for _ in 0..1000 {
            let Some(it) = iterator.take() else { break };
            let page = client.get_records().shard_iterator(it).send().await?;
            for r in page.records() {
                let ms = r
                    .approximate_arrival_timestamp()
                    .and_then(|t| t.to_millis().ok())
                    .context("record without arrival time")?;
                out.insert(r.data().as_ref().to_vec(), ms);
            }
            if page.records().is_empty() {
                break;
            }
            iterator = page.next_shard_iterator().map(str::to_string);
        }
    }
    Ok(out)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(300);
    let per_second: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let (kinesis, client) = kinesis_with_streams(&[
        ("input", 2),
        ("out-polling", 1),
        ("out-polling-200", 1),
        ("out-efo", 1),
    ])
    .await?;
    let endpoint = &kinesis.endpoint;
    let port = free_port_pair();
    let config = format!(
        r#"
[sources.polling]
stream = "input"
endpoint_url = "{endpoint}"
reader = "polling"

[sources.polling-200]
stream = "input"
endpoint_url = "{endpoint}"
reader = "polling"
poll_interval_ms = 200

[sources.efo]
stream = "input"
endpoint_url = "{endpoint}"
reader = "efo"
efo_consumer_name = "latency"

[outputs.polling]
stream = "out-polling"
endpoint_url = "{endpoint}"

[outputs.polling-200]
stream = "out-polling-200"
endpoint_url = "{endpoint}"

[outputs.efo]
stream = "out-efo"
endpoint_url = "{endpoint}"

[checkpoint]
path = "state"

[server]
listen = "127.0.0.1:{port}"

[[pipelines]]
name = "polling"
source = "polling"
outputs = ["polling"]

[[pipelines]]
name = "polling-200"
source = "polling-200"
outputs = ["polling-200"]

[[pipelines]]
name = "efo"
source = "efo"
outputs = ["efo"]
"#
    );
    let dir = TestDir::new()?;
    let path = dir.write_config("latency.toml", &config)?;
    let running = Distributary::start(&path)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http_get(port, "/readyz"), Some((200, _))) {
        if Instant::now() > deadline {
            bail!("distributary never became ready:\n{}", running.log_text());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let gap = Duration::from_micros(1_000_000 / per_second.max(1));
    let start = Instant::now();
    for i in 0..records {
        tokio::time::sleep_until((start + gap * i as u32).into()).await;
        client
            .put_record()
            .stream_name("input")
            .partition_key(format!("k{}", i % 16))
            .data(aws_sdk_kinesis::primitives::Blob::new(format!(
                "latency {i}"
            )))
            .send()
            .await?;
    }
    for stream in ["out-polling", "out-polling-200", "out-efo"] {
        wait_for_count(&client, stream, records, Duration::from_secs(120))
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", running.log_text()))?;
    }
    running.stop_cleanly();
    let source = arrivals(&client, "input").await?;
    println!("{records} records at {per_second}/s, kinesis-local, one distributary process:");
    for (reader, stream) in [
        ("polling (poll_interval_ms 1000)", "out-polling"),
        ("polling (poll_interval_ms 200)", "out-polling-200"),
        ("efo", "out-efo"),
    ] {
        let out = arrivals(&client, stream).await?;
        let mut latencies: Vec<i64> = out
            .iter()
            .filter_map(|(data, at)| Some(at - source.get(data)?))
            .collect();
        latencies.sort_unstable();
        println!(
            "  {reader:32} {} records: p50 {} ms, p99 {} ms, max {} ms",
            latencies.len(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0)
        );
    }
    Ok(())
}
