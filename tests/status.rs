//! `distributary status` with the file store: after a replication, every
//! (shard, pipeline) shows its stored position and no lag; records written
//! afterwards show up as lag; an unreadable store is an error naming it.

use distributary_e2e::*;
use std::time::Duration;

fn status(config: &std::path::Path, json: bool) -> std::process::Output {
    let mut cmd = distributary_command();
    cmd.args(["status", "--config"]).arg(config);
    if json {
        cmd.arg("--json");
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run distributary status: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_shards_position_and_lag_and_fails_on_a_bad_store() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 2), ("out", 1)])
        .await
        .unwrap();
    let dir = TestDir::new().unwrap();
    let config = dir
        .write_config(
            "status.toml",
            &config::simple(&kinesis.endpoint, &[("o", "out")], ""),
        )
        .unwrap();
    let records = numbered_records(300, 16, "");
    put_all(&client, "input", &records).await.unwrap();
    let running = Distributary::start(&config).unwrap();
    wait_for_count(&client, "out", 300, Duration::from_secs(60))
        .await
        .unwrap();
    running.stop_cleanly();

    let out = status(&config, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2, "two shards × one pipeline: {rows:?}");
    for row in &rows {
        assert_eq!(row["pipeline"], "p");
        assert!(row["position"].is_string(), "a stored position: {row}");
        assert_eq!(row["lag_ms"], 0, "caught up: {row}");
        assert!(
            row["owner"].as_str().unwrap().contains("file store"),
            "{row}"
        );
    }

    // Records written while nothing runs: the stored positions fall behind.
    put_all(&client, "input", &numbered_records(50, 16, "late-"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = status(&config, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        table.lines().filter(|l| l.contains("shardId-")).count(),
        2,
        "{table}"
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&status(&config, true).stdout).unwrap();
    assert!(
        rows.iter().any(|r| r["lag_ms"].as_i64().unwrap_or(0) > 0),
        "records written after the checkpoint show as lag: {rows:?}"
    );

    let store = dir.dir.path().join("state").join("checkpoints.json");
    std::fs::write(&store, "not json").unwrap();
    let out = status(&config, true);
    assert!(!out.status.success(), "an unreadable store is an error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("checkpoints.json"),
        "names the file: {stderr}"
    );
}
