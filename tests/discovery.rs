//! Output discovery by `stream_pattern`, live: streams created while running
//! become outputs (records routed after that arrive there), deleted streams
//! stop being outputs, and nothing is lost or duplicated on the streams that
//! stay. Two pipelines: one replicating natively, one through the
//! `replicate` plugin, which sends to the outputs it was `init`ed with, so
//! records reach a new stream only if the plugin was told its name.
//!
//! The source stream itself matches the native pipeline's pattern: it must
//! never become one of its outputs (that would feed records back forever).
//! A third pipeline's pattern matches nothing until the end: it must hold its
//! records, not acknowledge them to nowhere.

use distributary_e2e::*;
use std::time::{Duration, Instant};

const WAVE: usize = 60;
const KEYS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(120);

fn config(endpoint: &str, port: u16) -> String {
    let replicate = plugin("replicate");
    format!(
        r#"
[sources.input]
stream = "app-a-in"
endpoint_url = "{endpoint}"
poll_interval_ms = 200

[outputs.apps_a]
stream_pattern = "app-a-*"
discover_interval_s = 1
endpoint_url = "{endpoint}"

[outputs.apps_b]
stream_pattern = "app-b-?"
discover_interval_s = 1
endpoint_url = "{endpoint}"

[outputs.late]
stream_pattern = "late-*"
discover_interval_s = 1
endpoint_url = "{endpoint}"

[checkpoint]
path = "state"
interval_ms = 200

[server]
listen = "127.0.0.1:{port}"

[[pipelines]]
name = "native"
source = "input"
outputs = ["apps_a"]

[[pipelines]]
name = "wasm"
source = "input"
outputs = ["apps_b"]
plugin = {replicate:?}

[[pipelines]]
name = "late"
source = "input"
outputs = ["late"]
"#
    )
}

/// Waits until `/metrics` says `pipeline` routes to exactly `outputs`.
async fn wait_for_outputs(port: u16, pipeline: &str, outputs: &[&str], running: &Distributary) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let prefix = format!("distributary_pipeline_routed_total{{pipeline=\"{pipeline}\",output=\"");
    loop {
        let current: Vec<String> = scrape_metrics(port)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| Some(l.strip_prefix(&prefix)?.split('"').next()?.to_string()))
            .collect();
        if current == outputs {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pipeline {pipeline}: outputs {current:?}, expected {outputs:?}\n{}",
            running.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn settled(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    expected: &[Rec],
    running: &Distributary,
) {
    let got = wait_for_settled(client, stream, expected.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order(stream, expected, &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_matching_the_pattern_are_found_and_dropped_while_running() {
    let (kinesis, client) = kinesis_with_streams(&[
        ("app-a-in", 1),
        ("app-a-1", 1),
        ("app-b-1", 1),
        ("app-b-10", 1),
    ])
    .await
    .unwrap();
    let dir = TestDir::new().unwrap();
    let port = free_port_pair();
    let path = dir
        .write_config("discovery.toml", &config(&kinesis.endpoint, port))
        .unwrap();
    let checked = check_ok(&path);
    assert!(
        checked.contains("every stream matching \"app-a-*\""),
        "{checked}"
    );
    let running = Distributary::start(&path).unwrap();
    wait_for_outputs(port, "native", &["app-a-1"], &running).await;
    // "app-b-?" matches one character: not app-b-10.
    wait_for_outputs(port, "wasm", &["app-b-1"], &running).await;

    let wave1 = numbered_records(WAVE, KEYS, "one");
    put_all(&client, "app-a-in", &wave1).await.unwrap();
    settled(&client, "app-a-1", &wave1, &running).await;
    settled(&client, "app-b-1", &wave1, &running).await;

    // New matching streams, found while running.
    create_stream(&client, "app-a-2", 1).await.unwrap();
    create_stream(&client, "app-b-2", 2).await.unwrap();
    wait_for_outputs(port, "native", &["app-a-1", "app-a-2"], &running).await;
    wait_for_outputs(port, "wasm", &["app-b-1", "app-b-2"], &running).await;
    let text = scrape_metrics(port).unwrap_or_default();
    assert_eq!(
        metric(&text, "distributary_plugin_version{pipeline=\"wasm\"}"),
        Some(2.0),
        "the plugin was initialised again with the new outputs\n{text}"
    );

    let wave2 = numbered_records(WAVE, KEYS, "two");
    put_all(&client, "app-a-in", &wave2).await.unwrap();
    let both: Vec<Rec> = wave1.iter().chain(&wave2).cloned().collect();
    settled(&client, "app-a-1", &both, &running).await;
    settled(&client, "app-b-1", &both, &running).await;
    // A new stream gets what was routed after it was found: exactly wave 2.
    settled(&client, "app-a-2", &wave2, &running).await;
    settled(&client, "app-b-2", &wave2, &running).await;

    // Deleted streams stop being outputs; the pipelines carry on.
    for stream in ["app-a-1", "app-b-1"] {
        client
            .delete_stream()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
    }
    wait_for_outputs(port, "native", &["app-a-2"], &running).await;
    wait_for_outputs(port, "wasm", &["app-b-2"], &running).await;
    let wave3 = numbered_records(WAVE, KEYS, "three");
    put_all(&client, "app-a-in", &wave3).await.unwrap();
    let later: Vec<Rec> = wave2.iter().chain(&wave3).cloned().collect();
    settled(&client, "app-a-2", &later, &running).await;
    settled(&client, "app-b-2", &later, &running).await;

    // A pipeline whose pattern matched nothing held its records meanwhile:
    // its first stream gets all of them.
    let all: Vec<Rec> = both.iter().chain(&wave3).cloned().collect();
    create_stream(&client, "late-1", 1).await.unwrap();
    settled(&client, "late-1", &all, &running).await;

    // The source matched "app-a-*" but was never written to; app-b-10 never matched.
    assert_exactly_once_in_key_order(
        "app-a-in",
        &all,
        &read_all(&client, "app-a-in").await.unwrap(),
    );
    assert!(read_all(&client, "app-b-10").await.unwrap().is_empty());
    let log = running.log_text();
    assert!(log.contains("output streams discovered"), "{log}");
    running.stop_cleanly();
}

/// ListStreams paging, through small pages, on both local implementations:
/// kinesis-local pages with NextToken, kinesalite with ExclusiveStartStreamName.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_of_list_streams_is_read() {
    use distributary::outputs::discovery::matching_streams_paged;
    let pattern = glob::Pattern::new("pg-*").unwrap();
    let matching: Vec<String> = (1..=7).map(|i| format!("pg-{i}")).collect();
    for kinesis in [LocalKinesis::start(), LocalKinesis::start_kinesalite()] {
        let kinesis = kinesis.unwrap();
        let client = kinesis.client().await;
        for name in matching
            .iter()
            .map(String::as_str)
            .chain(["other-1", "pgx"])
        {
            create_stream(&client, name, 1).await.unwrap();
        }
        for page_size in [Some(2), Some(3), None] {
            let found = matching_streams_paged(&client, &pattern, page_size)
                .await
                .unwrap();
            let names: Vec<&String> = found.keys().collect();
            assert_eq!(
                names,
                matching.iter().collect::<Vec<_>>(),
                "page size {page_size:?}"
            );
            assert!(found.values().all(|usable| *usable), "{found:?}");
        }
    }
}

/// The reported stop: outputs by pattern, the default `on_error` (halt),
/// records flowing to app-output-1..3; app-output-1 is deleted by its owner.
/// The pipeline must not halt nor the process exit: records routed to the
/// deleted stream are dropped and counted (logged once), and app-output-2
/// and -3 keep receiving everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_discovered_stream_is_dropped_and_the_others_keep_receiving() {
    let outputs = ["app-output-1", "app-output-2", "app-output-3"];
    let (kinesis, client) = kinesis_with_streams(&[
        ("input", 2),
        (outputs[0], 1),
        (outputs[1], 1),
        (outputs[2], 1),
    ])
    .await
    .unwrap();
    let dir = TestDir::new().unwrap();
    let port = free_port_pair();
    // A long refresh interval: the deleted stream stays an output for a
    // while, so records really are routed to it after it is gone.
    let text = format!(
        r#"
[sources.input]
stream = "input"
endpoint_url = "{0}"
poll_interval_ms = 200

[outputs.apps]
stream_pattern = "app-output-*"
discover_interval_s = 300
endpoint_url = "{0}"

[checkpoint]
path = "state"
interval_ms = 200

[server]
listen = "127.0.0.1:{port}"

[[pipelines]]
name = "p"
source = "input"
outputs = ["apps"]
"#,
        kinesis.endpoint
    );
    let path = dir.write_config("deleted.toml", &text).unwrap();
    let mut running = Distributary::start(&path).unwrap();
    wait_for_outputs(port, "p", &outputs, &running).await;
    let wave1 = numbered_records(WAVE, KEYS, "one");
    put_all(&client, "input", &wave1).await.unwrap();
    for stream in outputs {
        settled(&client, stream, &wave1, &running).await;
    }
    client
        .delete_stream()
        .stream_name(outputs[0])
        .send()
        .await
        .unwrap();
    let mut all = wave1.clone();
    for wave in ["two", "three"] {
        let records = numbered_records(WAVE, KEYS, wave);
        put_all(&client, "input", &records).await.unwrap();
        all.extend(records);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for stream in &outputs[1..] {
        settled(&client, stream, &all, &running).await;
    }
    assert!(
        running.is_running(),
        "the process must not exit\n{}",
        running.log_text()
    );
    let text = scrape_metrics(port).unwrap_or_default();
    let dropped = metric(
        &text,
        "distributary_pipeline_dropped_stream_deleted_total{pipeline=\"p\",output=\"app-output-1\"}",
    )
    .unwrap_or(0.0);
    assert_eq!(
        dropped,
        (2 * WAVE) as f64,
        "every record routed to it after the deletion\n{text}"
    );
    assert_eq!(
        metric(&text, "distributary_pipeline_halted{pipeline=\"p\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        http_get(port, "/readyz").map(|(status, _)| status),
        Some(200)
    );
    let log = running.log_text();
    assert_eq!(
        log.matches("discovered stream was deleted").count(),
        1,
        "logged once per stream\n{log}"
    );
    let status = running.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status:?}");
}
