//! Start positions used when no checkpoint exists: `at_timestamp` skips what
//! arrived before the timestamp; `latest` skips what was in the stream before
//! distributary started; and a checkpoint, once written, wins over both.

use distributary_e2e::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_timestamp_skips_earlier_records() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 2), ("out-a", 1)])
        .await
        .unwrap();
    let before = numbered_records(150, 10, "before-");
    put_all(&client, "input", &before).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = rfc3339(SystemTime::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = numbered_records(150, 10, "after-");
    put_all(&client, "input", &after).await.unwrap();

    let dir = TestDir::new().unwrap();
    let text = config::simple(&kinesis.endpoint, &[("a", "out-a")], "")
        .replace("poll_interval_ms = 200", &format!("poll_interval_ms = 200\nstart_position = \"at_timestamp\"\nstart_timestamp = \"{start}\""));
    let config = dir.write_config("ts.toml", &text).unwrap();
    let running = Distributary::start(&config).unwrap();
    let got = wait_for_settled(&client, "out-a", after.len(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    assert_exactly_once_in_key_order("out-a", &after, &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_skips_the_backlog_but_not_what_arrives_while_stopped() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 2), ("out-a", 1)])
        .await
        .unwrap();
    let backlog = numbered_records(100, 10, "old-");
    put_all(&client, "input", &backlog).await.unwrap();

    let dir = TestDir::new().unwrap();
    let text = config::simple(&kinesis.endpoint, &[("a", "out-a")], "").replace(
        "poll_interval_ms = 200",
        "poll_interval_ms = 200\nstart_position = \"latest\"",
    );
    let config = dir.write_config("latest.toml", &text).unwrap();

    // First run: starts at LATEST on both shards, sees nothing, stops.
    let running = Distributary::start(&config).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while running.log_text().matches("reading shard").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "shards not started:\n{}",
            running.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.stop_cleanly();

    // Written while stopped, before any record was acknowledged: must not be skipped by a new LATEST.
    let while_down = numbered_records(100, 10, "down-");
    put_all(&client, "input", &while_down).await.unwrap();
    let running = Distributary::start(&config).unwrap();
    let got = wait_for_settled(&client, "out-a", while_down.len(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out-a", &while_down, &got);

    // While running: new records arrive; after a restart the checkpoint decides.
    let fresh = numbered_records(100, 10, "new-");
    put_all(&client, "input", &fresh).await.unwrap();
    let mut expected = while_down.clone();
    expected.extend(fresh.iter().cloned());
    wait_for_count(&client, "out-a", expected.len(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    let late = numbered_records(100, 10, "late-");
    put_all(&client, "input", &late).await.unwrap();
    expected.extend(late.iter().cloned());
    let running = Distributary::start(&config).unwrap();
    let got = wait_for_settled(&client, "out-a", expected.len(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    assert_exactly_once_in_key_order("out-a", &expected, &got);
}

/// Waits until the log says `n` shards are being read.
async fn wait_reading(running: &Distributary, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while running.log_text().matches("reading shard").count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} shards not started:\n{}",
            running.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reported loss: a 1-shard source with `latest`; records delivered; the
/// shard split while running; a graceful stop once the (empty) children are
/// being read; records written while stopped land in the children. After
/// the restart every one of them must arrive: the children start at
/// TRIM_HORIZON because their parent was read to its end, which the store
/// remembers, not the process.
async fn latest_split_restart(reader: &str) {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out-a", 1)])
        .await
        .unwrap();
    put_all(&client, "input", &numbered_records(50, 5, "old-"))
        .await
        .unwrap();
    let dir = TestDir::new().unwrap();
    let text = config::simple(&kinesis.endpoint, &[("a", "out-a")], "").replace(
        "poll_interval_ms = 200",
        &format!("start_position = \"latest\"\n{reader}"),
    );
    let config = dir.write_config("latest.toml", &text).unwrap();
    let running = Distributary::start(&config).unwrap();
    wait_reading(&running, 1).await;
    let before = numbered_records(100, 10, "before-");
    put_all(&client, "input", &before).await.unwrap();
    wait_for_count(&client, "out-a", before.len(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    split_in_half(&client, "input", 0).await.unwrap();
    // The parent is read to its end and both (empty) children are started.
    wait_reading(&running, 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.stop_cleanly();

    let while_down = numbered_records(300, 30, "down-");
    put_all(&client, "input", &while_down).await.unwrap();
    let running = Distributary::start(&config).unwrap();
    let mut expected = before.clone();
    expected.extend(while_down.iter().cloned());
    let got = wait_for_settled(&client, "out-a", expected.len(), Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    assert_exactly_once_in_key_order("out-a", &expected, &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_split_and_restart_deliver_what_the_children_got_while_stopped() {
    latest_split_restart("poll_interval_ms = 200").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_split_and_restart_deliver_what_the_children_got_while_stopped_efo() {
    latest_split_restart("reader = \"efo\"\nefo_consumer_name = \"distributary-test\"").await;
}

/// A pipeline added with `at_timestamp` next to one that has a position
/// ahead of that moment must read from its own moment, not join the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pipeline_honours_its_timestamp_beside_one_further_on() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out-a", 1), ("out-b", 1)])
        .await
        .unwrap();
    let early = numbered_records(50, 5, "early-");
    put_all(&client, "input", &early).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = rfc3339(SystemTime::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let middle = numbered_records(80, 8, "middle-");
    put_all(&client, "input", &middle).await.unwrap();

    let dir = TestDir::new().unwrap();
    let one = config::simple(&kinesis.endpoint, &[("a", "out-a")], "").replace(
        "poll_interval_ms = 200",
        &format!("poll_interval_ms = 200\nstart_position = \"at_timestamp\"\nstart_timestamp = \"{start}\""),
    );
    // First run: pipeline p alone reads everything after the moment.
    let config = dir.write_config("one.toml", &one).unwrap();
    let running = Distributary::start(&config).unwrap();
    wait_for_settled(&client, "out-a", middle.len(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();

    // Second run adds pipeline q, which has no position: it must deliver
    // `middle` too (after its moment), while p resumes after its checkpoint.
    let late = numbered_records(40, 4, "late-");
    put_all(&client, "input", &late).await.unwrap();
    let two = format!(
        "{}\n[outputs.b]\nstream = \"out-b\"\nendpoint_url = \"{}\"\n\n[[pipelines]]\nname = \"q\"\nsource = \"input\"\noutputs = [\"b\"]\n",
        one.trim_end(),
        kinesis.endpoint
    );
    let config = dir.write_config("two.toml", &two).unwrap();
    let running = Distributary::start(&config).unwrap();
    let mut for_p = middle.clone();
    for_p.extend(late.iter().cloned());
    let got_b = wait_for_settled(&client, "out-b", for_p.len(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    let got_a = wait_for_settled(&client, "out-a", for_p.len(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    assert_exactly_once_in_key_order("out-a", &for_p, &got_a);
    assert_exactly_once_in_key_order("out-b", &for_p, &got_b);
}
