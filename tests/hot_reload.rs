//! Hot reload end to end, under a steady stream: the plugin file is replaced
//! atomically (replicate -> route_by_field), then rewritten in place in two
//! chunks with a pause between them (route_by_field -> replicate).
//!
//! replicate sends every record to outputs a and b; route_by_field (as
//! configured) sends every record to b only. So b must hold every record
//! exactly once (each record routed by exactly one version, none lost), and,
//! per source shard, the records in a must be those routed before the first
//! swap or after the second: a prefix and a suffix of the shard, never a
//! record routed by route_by_field. The half-written file must be refused
//! (the serving version stays) and the complete one then take over.

use distributary_e2e::*;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn wait_for_log(running: &Distributary, needle: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if running.log_text().contains(needle) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!(
        "no {needle:?} in the log within {timeout:?}:\n{}",
        running.log_text()
    );
}

fn replace_atomically(from: &Path, to: &Path) {
    let temp = to.with_extension("wasm.tmp");
    std::fs::copy(from, &temp).unwrap();
    std::fs::rename(&temp, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_replaced_under_load_routes_every_record_exactly_once() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 2), ("out-a", 1), ("out-b", 1)])
        .await
        .unwrap();
    let dir = TestDir::new().unwrap();
    let plugins = dir.dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let live = plugins.join("router.wasm");
    std::fs::copy(plugin("replicate"), &live).unwrap();
    let extra =
        "plugin = \"plugins/router.wasm\"\nplugin_config = { field = \"x\", default = \"b\" }\n";
    let config = dir
        .write_config(
            "reload.toml",
            &config::simple(&kinesis.endpoint, &[("a", "out-a"), ("b", "out-b")], extra),
        )
        .unwrap();
    let running = Distributary::start(&config).unwrap();
    wait_for_log(&running, "distributary running", Duration::from_secs(30));

    let records: Vec<Rec> = (0..1200)
        .map(|i| Rec {
            key: format!("key-{}", i % 40),
            data: format!(r#"{{"n":{i}}}"#).into_bytes(),
        })
        .collect();
    let waves: Vec<&[Rec]> = records.chunks(100).collect();
    let mut latencies = Vec::new();
    for (i, wave) in waves.iter().enumerate() {
        put_all(&client, "input", wave).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        if i == 3 {
            // Atomic replace: write a temporary file, rename it over the plugin.
            replace_atomically(&plugin("route_by_field"), &live);
            latencies.push(wait_for_log(&running, "version=2", Duration::from_secs(30)));
        }
        if i == 7 {
            // In-place rewrite in two chunks, 1 s apart: the first half alone must not load.
            let full = std::fs::read(plugin("replicate")).unwrap();
            let half = full.len() / 2;
            std::fs::write(&live, &full[..half]).unwrap();
            wait_for_log(&running, "plugin reload failed", Duration::from_secs(30));
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(
                !running.log_text().contains("version=3"),
                "a half-written plugin took over"
            );
            let started = Instant::now();
            {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&live)
                    .unwrap();
                file.write_all(&full[half..]).unwrap();
            }
            wait_for_log(&running, "version=3", Duration::from_secs(30));
            latencies.push(started.elapsed());
        }
    }
    println!(
        "hot reload: file replaced -> new version serving: atomic rename {:?}, in-place completion {:?}",
        latencies[0], latencies[1]
    );

    let in_b = wait_for_settled(&client, "out-b", records.len(), Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    assert_exactly_once_in_key_order("out-b", &records, &in_b);
    // Everything routed was acknowledged before the clean stop: a is final.
    let in_a = read_all(&client, "out-a").await.unwrap();

    // Per source shard, which records reached a (routed by replicate).
    let source = read_all(&client, "input").await.unwrap();
    let in_a: HashMap<&[u8], usize> = in_a.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.rec.data.as_slice()).or_default() += 1;
        m
    });
    assert!(in_a.values().all(|&n| n == 1), "a record reached a twice");
    let mut shards: HashMap<&str, String> = HashMap::new();
    for r in &source {
        let mark = if in_a.contains_key(r.rec.data.as_slice()) {
            'R'
        } else {
            'F'
        };
        shards.entry(r.shard.as_str()).or_default().push(mark);
    }
    let mut saw_v2 = false;
    let mut saw_v3 = false;
    for (shard, marks) in &shards {
        // R* F* R*: version 1, then version 2, then version 3, never back.
        let v1 = marks.chars().take_while(|&c| c == 'R').count();
        let v2 = marks[v1..].chars().take_while(|&c| c == 'F').count();
        let v3 = &marks[v1 + v2..];
        assert!(
            v3.chars().all(|c| c == 'R'),
            "shard {shard} went back to an old version: {marks}"
        );
        saw_v2 |= v2 > 0;
        saw_v3 |= !v3.is_empty() && v2 > 0;
    }
    assert!(saw_v2, "route_by_field never routed a record: {shards:?}");
    assert!(
        saw_v3,
        "the rewritten replicate never routed a record: {shards:?}"
    );
}
