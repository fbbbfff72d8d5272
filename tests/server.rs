//! The operator endpoints: `/healthz` is 200 while the process runs;
//! `/readyz` is 200 once running and turns 503, naming the pipeline, when a
//! pipeline halts, while the healthy pipeline keeps delivering; `/metrics`
//! counts what each pipeline, output and shard reader did.

use distributary_e2e::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// GET over plain HTTP/1.1 on loopback: (status, body), or None if nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// The value of one series (name and labels, exactly as exposed) in a metrics text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

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
        if let Some((200, body)) = get(port, "/readyz") {
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
    assert_eq!(get(port, "/healthz").map(|(s, _)| s), Some(200));
    assert_eq!(get(port, "/nope").map(|(s, _)| s), Some(404));

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
        match get(port, "/readyz") {
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
    assert_eq!(get(port, "/healthz").map(|(s, _)| s), Some(200));

    let (status, text) = get(port, "/metrics").unwrap();
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
        get(port, "/healthz").is_none(),
        "the server stops with the process"
    );
}
