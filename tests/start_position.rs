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
