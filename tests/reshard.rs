//! Resharding mid-run: one source shard is split and two others are merged
//! while records keep arriving. Children are read only after their parents,
//! so nothing is lost or read twice and per-key order holds in the outputs.

use distributary_e2e::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_mid_run_keep_every_record_in_key_order() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 3), ("out-a", 1), ("out-b", 2)])
        .await
        .unwrap();
    let records = numbered_records(2400, 48, "");
    let (first, rest) = records.split_at(800);
    let (second, third) = rest.split_at(800);
    put_all(&client, "input", first).await.unwrap();

    let dir = TestDir::new().unwrap();
    // Small reads keep distributary behind the producer, so the parents still
    // hold unread records when their children fill: reading a child early would
    // reorder keys.
    let text = config::simple(&kinesis.endpoint, &[("a", "out-a"), ("b", "out-b")], "").replace(
        "poll_interval_ms = 200",
        "poll_interval_ms = 200\nmax_records_per_read = 25",
    );
    let config = dir.write_config("reshard.toml", &text).unwrap();
    let running = Distributary::start(&config).unwrap();
    wait_for_count(&client, "out-a", 50, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));

    // Split shard 0 at the middle of its hash range.
    let before = split_in_half(&client, "input", 0).await.unwrap();
    put_all(&client, "input", second).await.unwrap();

    // Merge shards 1 and 2 (adjacent hash ranges).
    let (s1, s2) = (before[1].clone(), before[2].clone());
    client
        .merge_shards()
        .stream_name("input")
        .shard_to_merge(&s1)
        .adjacent_shard_to_merge(&s2)
        .send()
        .await
        .unwrap();
    wait_active(&client, "input").await.unwrap();
    put_all(&client, "input", third).await.unwrap();

    let listed = client
        .list_shards()
        .stream_name("input")
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.shards().len(),
        6,
        "3 parents, 2 split children, 1 merge child"
    );

    for out in ["out-a", "out-b"] {
        let got = wait_for_settled(&client, out, records.len(), Duration::from_secs(180))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
        assert_exactly_once_in_key_order(out, &records, &got);
    }
    running.stop_cleanly();
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
    assert!(
        log.contains("shard read to its end"),
        "closed parents must be read to their end:\n{log}"
    );
}
