//! A record an output can never accept (here: larger than the output's
//! `max_record_bytes`). With `on_error = "halt"` the pipeline stops with an
//! error naming the record, nothing after it is written, and the checkpoint
//! stays before it, so a restart with a fixed config delivers it. With
//! `on_error = "dead_letter"` it arrives as a JSON envelope in the dead-letter
//! stream and every other record is delivered.

use base64::Engine as _;
use distributary_e2e::*;
use std::time::Duration;

fn records_with_one_oversize() -> (Vec<Rec>, usize) {
    let mut records = numbered_records(200, 1, "");
    let big = 120;
    records[big].data = format!("{{\"big\":\"{}\"}}", "x".repeat(3000)).into_bytes();
    (records, big)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_stops_before_the_record_and_a_fixed_restart_delivers_it() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out-a", 1)])
        .await
        .unwrap();
    let (records, big) = records_with_one_oversize();
    put_all(&client, "input", &records).await.unwrap();

    let dir = TestDir::new().unwrap();
    let text = config::simple(&kinesis.endpoint, &[("a", "out-a")], "");
    let strict = text.replace(
        "stream = \"out-a\"",
        "stream = \"out-a\"\nmax_record_bytes = 2048",
    );
    let config = dir.write_config("halt.toml", &strict).unwrap();
    let mut running = Distributary::start(&config).unwrap();
    let status = running.wait(Duration::from_secs(60)).unwrap();
    let log = running.log_text();
    assert_eq!(
        status.code(),
        Some(1),
        "every pipeline halted: exit 1\n{log}"
    );
    assert!(
        log.contains("pipeline p halted") && log.contains("exceeds the output's 2048-byte limit"),
        "{log}"
    );
    let got = read_all(&client, "out-a").await.unwrap();
    // One key: records before the oversize one may be written, none after it.
    assert!(
        got.len() <= big,
        "records after the refused one were written: {}",
        got.len()
    );
    assert_exactly_once_in_key_order("out-a", &records[..got.len()], &got);

    // The operator raises the limit: the restart resumes at the checkpoint and delivers the rest once.
    std::fs::write(&config, &text).unwrap();
    let running = Distributary::start(&config).unwrap();
    let got = wait_for_every(&client, "out-a", &records, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    assert_at_least_once_in_key_order("out-a", &records, &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_envelopes_the_record_and_delivers_the_rest() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out-a", 1), ("dlq", 1)])
        .await
        .unwrap();
    let (records, big) = records_with_one_oversize();
    put_all(&client, "input", &records).await.unwrap();

    let dir = TestDir::new().unwrap();
    let text = config::simple(
        &kinesis.endpoint,
        &[("a", "out-a"), ("dlq", "dlq")],
        "on_error = \"dead_letter\"\ndead_letter = \"dlq\"",
    )
    .replace("outputs = [\"a\", \"dlq\"]", "outputs = [\"a\"]")
    .replace(
        "stream = \"out-a\"",
        "stream = \"out-a\"\nmax_record_bytes = 2048",
    );
    let config = dir.write_config("dlq.toml", &text).unwrap();
    let running = Distributary::start(&config).unwrap();
    let mut expected = records.clone();
    expected.remove(big);
    let got = wait_for_count(&client, "out-a", expected.len(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out-a", &expected, &got);
    let letters = wait_for_count(&client, "dlq", 1, Duration::from_secs(30))
        .await
        .unwrap();
    running.stop_cleanly();
    assert_eq!(letters.len(), 1);
    let envelope: serde_json::Value = serde_json::from_slice(&letters[0].rec.data).unwrap();
    assert_eq!(envelope["pipeline"], "p");
    assert_eq!(envelope["source"], "input");
    assert_eq!(envelope["partition_key"], records[big].key.as_str());
    let data = base64::engine::general_purpose::STANDARD
        .decode(envelope["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, records[big].data);
    assert!(
        envelope["error"].as_str().unwrap().contains("exceeds"),
        "{envelope}"
    );
    assert!(
        envelope["sequence_number"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
}
