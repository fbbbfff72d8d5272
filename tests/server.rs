//! The operator endpoints: `/healthz` is 200 while the process runs;
//! `/readyz` is 200 once running and turns 503, naming the pipeline, when a
//! pipeline halts, while the healthy pipeline keeps delivering; `/metrics`
//! counts what each pipeline, output and shard reader did.

use distributary_e2e::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_halted_pipeline_while_the_other_keeps_going() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out-a", 1), ("out-small", 1)])
        .await
        .unwrap();
    let port = free_port_pair();
    let dir = TestDir::new().unwrap();
    let text = format!(
        "{}\n[outputs.small]\nstream = \"out-small\"\nendpoint_url = \"{e}\"\nmax_record_bytes = 1024\n\n\
         [[pipelines]]\nname = \"strict\"\nsource = \"input\"\noutputs = [\"small\"]\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n",
        config::simple(&kinesis.endpoint, &[("a", "out-a")], ""),
        e = kinesis.endpoint
    );
    let config = dir.write_config("server.toml", &text).unwrap();
    let running = Distributary::start(&config).unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, body)) = http_get(port, "/readyz") {
            assert_eq!(body, "ready\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            running.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(port, "/healthz").map(|(s, _)| s), Some(200));
    assert_eq!(http_get(port, "/nope").map(|(s, _)| s), Some(404));

    // A record too large for `small` halts pipeline `strict`; `p` delivers everything.
    let mut records = numbered_records(50, 5, "");
    records[10].data = vec![b'x'; 2000];
    put_all(&client, "input", &records).await.unwrap();
    let got = wait_for_count(&client, "out-a", records.len(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out-a", &records, &got);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http_get(port, "/readyz") {
            Some((503, body)) => {
                assert!(body.contains("halted pipelines: strict"), "{body}");
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "readyz still {other:?}:\n{}",
                running.log_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(port, "/healthz").map(|(s, _)| s), Some(200));

    let (status, text) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200, "{text}");
    let value =
        |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        value(r#"distributary_pipeline_records_in_total{pipeline="p"}"#),
        50.0
    );
    assert_eq!(
        value(r#"distributary_pipeline_routed_total{pipeline="p",output="a"}"#),
        50.0
    );
    assert_eq!(
        value(r#"distributary_output_records_written_total{output="a"}"#),
        50.0
    );
    assert_eq!(
        value(r#"distributary_pipeline_dropped_total{pipeline="p"}"#),
        0.0
    );
    assert_eq!(
        value(r#"distributary_pipeline_halted{pipeline="strict"}"#),
        1.0
    );
    assert_eq!(value(r#"distributary_pipeline_halted{pipeline="p"}"#), 0.0);
    assert!(
        value(
            r#"distributary_source_get_records_calls_total{source="input",shard="shardId-000000000000"}"#
        ) >= 1.0
    );
    // Every record is delivered, so the reader is at the tip of the shard.
    assert_eq!(
        value(
            r#"distributary_source_millis_behind_latest{source="input",shard="shardId-000000000000"}"#
        ),
        0.0
    );
    assert!(
        text.contains(
            r#"distributary_pipeline_lag_milliseconds{pipeline="p",shard="shardId-000000000000"}"#
        ),
        "{text}"
    );

    let status = running.terminate(Duration::from_secs(30)).unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "a halted pipeline makes the exit status 1"
    );
    assert!(
        http_get(port, "/healthz").is_none(),
        "the server stops with the process"
    );
}
