//! A slow pipeline does not hold back the others on its source: it is
//! detached from the shared reader when its buffer fills, catches up on its
//! own reader, and still delivers every record exactly once, in order. The
//! fast pipeline delivers everything while the slow one is far behind, and
//! the slow one rejoins the shared reader once it has caught up.

use distributary_e2e::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pipeline_falls_behind_alone_and_catches_up() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out-fast", 1), ("out-slow", 1)])
        .await
        .unwrap();
    let dir = TestDir::new().unwrap();
    let hostile = plugin("hostile").display().to_string();
    // The slow plugin crawls (~20 ms of busy work per record on this
    // machine): slow enough to fall far behind even when the machine is
    // loaded and the fast pipeline's writes slow down too.
    let text = format!(
        "[sources.input]\nstream = \"input\"\nendpoint_url = \"{e}\"\npoll_interval_ms = 200\nmax_records_per_read = 100\n\n\
         [outputs.fast]\nstream = \"out-fast\"\nendpoint_url = \"{e}\"\n\n[outputs.slow]\nstream = \"out-slow\"\nendpoint_url = \"{e}\"\n\n\
         [checkpoint]\npath = \"state\"\ninterval_ms = 200\n\n\
         [[pipelines]]\nname = \"fast\"\nsource = \"input\"\noutputs = [\"fast\"]\nbuffer_batches = 2\n\n\
         [[pipelines]]\nname = \"slow\"\nsource = \"input\"\noutputs = [\"slow\"]\nbuffer_batches = 2\nplugin = {hostile:?}\n\
         plugin_config = \"crawl:20000000\"\nlimits = {{ batch_timeout_ms = 60000 }}\n",
        e = kinesis.endpoint
    );
    let config = dir.write_config("slow.toml", &text).unwrap();
    let records = numbered_records(1000, 30, "");
    put_all(&client, "input", &records).await.unwrap();
    let running = Distributary::start(&config).unwrap();

    let started = Instant::now();
    let fast = wait_for_count(&client, "out-fast", records.len(), Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    let fast_time = started.elapsed();
    let slow_then = read_all(&client, "out-slow").await.unwrap().len();
    assert_exactly_once_in_key_order("out-fast", &records, &fast);
    assert!(
        slow_then < records.len() / 2,
        "the slow pipeline kept up ({slow_then} of {} when the fast one had all, after {fast_time:?}): the test proves nothing\n{}",
        records.len(),
        running.log_text()
    );
    let slow = wait_for_settled(&client, "out-slow", records.len(), Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    let slow_time = started.elapsed();
    assert_exactly_once_in_key_order("out-slow", &records, &slow);
    let log = running.log_text();
    assert!(log.contains("catching up on its own reader"), "{log}");
    assert!(
        log.contains("back on the shared reader"),
        "the slow pipeline never rejoined:\n{log}"
    );
    println!(
        "fast pipeline: all {} records in {fast_time:?} (slow had {slow_then}); slow pipeline: all in {slow_time:?}",
        records.len()
    );
    running.stop_cleanly();
}
