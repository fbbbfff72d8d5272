//! Isolation: four pipelines read one source; one runs a hostile plugin that
//! fails every batch (endless loop, memory bomb, panic, in turn; on_error =
//! skip). The other three must deliver every record, in order, at 90% or
//! more of the throughput they reach without the hostile one. Run on
//! kinesalite (the faster emulator), measured from `/metrics` (records
//! written per output), in one test. Prints both throughputs.

use distributary_e2e::*;
use std::time::{Duration, Instant};

const RECORDS: usize = 12_000;
const GOOD: [&str; 3] = ["a", "b", "c"];

/// Records written to the good outputs, summed.
fn written(text: &str) -> f64 {
    GOOD.iter()
        .filter_map(|o| {
            metric(
                text,
                &format!("distributary_output_records_written_total{{output=\"{o}\"}}"),
            )
        })
        .sum()
}

fn config(endpoint: &str, run: &str, hostile: bool, port: u16) -> String {
    let mut text = format!(
        "[sources.input]\nstream = \"input\"\nendpoint_url = \"{endpoint}\"\npoll_interval_ms = 200\nmax_records_per_read = 500\n\n\
         [checkpoint]\npath = \"state-{run}\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n"
    );
    let replicate = plugin("replicate").display().to_string();
    for o in GOOD {
        text.push_str(&format!(
            "[outputs.{o}]\nstream = \"{run}-{o}\"\nendpoint_url = \"{endpoint}\"\n\n\
             [[pipelines]]\nname = \"{o}\"\nsource = \"input\"\noutputs = [\"{o}\"]\nplugin = {replicate:?}\n\n"
        ));
    }
    if hostile {
        let wasm = plugin("hostile").display().to_string();
        text.push_str(&format!(
            "[outputs.h]\nstream = \"{run}-h\"\nendpoint_url = \"{endpoint}\"\n\n\
             [[pipelines]]\nname = \"hostile\"\nsource = \"input\"\noutputs = [\"h\"]\nplugin = {wasm:?}\n\
             plugin_config = \"rotate\"\non_error = \"skip\"\nlimits = {{ memory_mb = 32, batch_timeout_ms = 200 }}\n\n"
        ));
    }
    text
}

/// Runs one configuration until the good outputs hold every record; returns
/// deliveries per second to the good outputs, from "running" to the last one.
async fn throughput(
    kinesis: &LocalKinesis,
    client: &aws_sdk_kinesis::Client,
    records: &[Rec],
    run: &str,
    hostile: bool,
) -> f64 {
    for o in GOOD.iter().chain(["h"].iter()) {
        create_stream(client, &format!("{run}-{o}"), 2)
            .await
            .unwrap();
    }
    let port = free_port_pair();
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            &format!("{run}.toml"),
            &config(&kinesis.endpoint, run, hostile, port),
        )
        .unwrap();
    let running = Distributary::start(&path).unwrap();
    let want = (GOOD.len() * records.len()) as f64;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut started = None;
    let (elapsed, text) = loop {
        assert!(
            Instant::now() < deadline,
            "{run}: too slow\n{}",
            running.log_text()
        );
        if let Some(text) = scrape_metrics(port) {
            let start = *started.get_or_insert_with(Instant::now);
            if written(&text) >= want {
                break (start.elapsed(), text);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if hostile {
        // The hostile pipeline really was failing all along.
        let value = |series: &str| metric(&text, series).unwrap_or(0.0);
        let failures = value(r#"distributary_plugin_call_failures_total{pipeline="hostile"}"#);
        let skipped = value(r#"distributary_pipeline_skipped_total{pipeline="hostile"}"#);
        let log = running.log_text();
        let kinds: Vec<&str> = ["time limit", "memory", "boom"]
            .into_iter()
            .filter(|k| log.contains(k))
            .collect();
        println!(
            "hostile pipeline: {failures} failed calls, {skipped} records skipped, failures seen: {kinds:?}"
        );
        assert!(failures >= 2.0 && skipped > 0.0, "{text}");
        assert_eq!(
            value(r#"distributary_output_records_written_total{output="h"}"#),
            0.0
        );
    }
    running.stop_cleanly();
    for o in GOOD {
        let stream = format!("{run}-{o}");
        let got = read_all(client, &stream).await.unwrap();
        assert_exactly_once_in_key_order(&stream, records, &got);
    }
    want / elapsed.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_pipeline_costs_the_others_little_speed_and_no_correctness() {
    let kinesis = LocalKinesis::start_kinesalite().unwrap();
    let client = kinesis.client().await;
    create_stream(&client, "input", 2).await.unwrap();
    let records = numbered_records(RECORDS, 500, "");
    put_all(&client, "input", &records).await.unwrap();
    let alone = throughput(&kinesis, &client, &records, "alone", false).await;
    let shared = throughput(&kinesis, &client, &records, "with-hostile", true).await;
    println!(
        "isolation: 3 good pipelines, {RECORDS} records each: {alone:.0} deliveries/s alone, {shared:.0} with the hostile pipeline ({:.0}%)",
        100.0 * shared / alone
    );
    assert!(
        shared >= 0.9 * alone,
        "with the hostile pipeline {shared:.0}/s, alone {alone:.0}/s"
    );
}
