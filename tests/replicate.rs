//! Replication end to end: a 4-shard source, 3 outputs, no plugin (native)
//! and the replicate.wasm plugin; every record arrives in every output,
//! unchanged, once, in per-key order, and in source order per source shard.

use distributary_e2e::*;
use std::time::Duration;

async fn replicate_3000(plugin: Option<&str>) {
    let (kinesis, client) = kinesis_with_streams(&[("input", 4)]).await.unwrap();
    for out in ["out-a", "out-b", "out-c"] {
        create_stream(&client, out, 2).await.unwrap();
    }
    let records = numbered_records(3000, 200, "");
    put_all(&client, "input", &records).await.unwrap();
    let source = read_all(&client, "input").await.unwrap();
    let plugin_line = plugin
        .map(|p| format!("plugin = {:?}", plugin_path(p)))
        .unwrap_or_default();
    let dir = TestDir::new().unwrap();
    let config = dir
        .write_config(
            "replicate.toml",
            &format!(
                r#"
[sources.input]
stream = "input"
endpoint_url = "{e}"
poll_interval_ms = 200

[outputs.a]
stream = "out-a"
endpoint_url = "{e}"
[outputs.b]
stream = "out-b"
endpoint_url = "{e}"
[outputs.c]
stream = "out-c"
endpoint_url = "{e}"

[checkpoint]
path = "state"

[[pipelines]]
name = "copy"
source = "input"
outputs = ["a", "b", "c"]
{plugin_line}
"#,
                e = kinesis.endpoint
            ),
        )
        .unwrap();
    let running = Distributary::start(&config).unwrap();
    for out in ["out-a", "out-b", "out-c"] {
        let got = wait_for_count(&client, out, 3000, Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
        assert_exactly_once_in_key_order(out, &records, &got);
        assert_source_shard_order(out, &source, &got);
    }
    running.stop_cleanly();
}

fn plugin_path(name: &str) -> String {
    plugin(name).display().to_string()
}

/// For each (source shard, output shard), records appear in source order.
fn assert_source_shard_order(stream: &str, source: &[ReadRec], got: &[ReadRec]) {
    use std::collections::HashMap;
    let origin: HashMap<&Rec, (&str, usize)> = source
        .iter()
        .enumerate()
        .map(|(i, r)| (&r.rec, (r.shard.as_str(), i)))
        .collect();
    let mut last: HashMap<(&str, &str), usize> = HashMap::new();
    for r in got {
        let (shard, i) = origin[&r.rec];
        if let Some(prev) = last.insert((shard, r.shard.as_str()), i) {
            assert!(
                prev < i,
                "{stream}: from source {shard} into {}: record {i} after {prev}",
                r.shard
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_every_record_natively() {
    replicate_3000(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_every_record_through_the_wasm_plugin() {
    replicate_3000(Some("replicate")).await;
}
