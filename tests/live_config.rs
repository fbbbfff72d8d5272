//! Live configuration end to end, while records flow (kinesis-local, a
//! 4-shard source, records over many keys):
//!
//! - with `--watch-config`, one file change adds a pipeline, removes one and
//!   changes another's route (its `plugin_config`); a later change adds the
//!   removed one back. Every output is read back: the untouched pipeline
//!   and the added one hold every record exactly once in key order; the
//!   changed pipeline's two outputs together hold every record exactly once,
//!   each key's records switching from the old route to the new at one
//!   point; the removed-and-restored pipeline resumed from its checkpoint
//!   (every record exactly once). No reload stopped or restarted a lane of
//!   the untouched pipeline (its log lines). (It may still be detached by
//!   backpressure while the added pipelines replay the backlog on the same
//!   shards and machine: that is the slow-pipeline rule, `slow_pipeline.rs`.)
//! - without `--watch-config`, only SIGHUP reads the file: broken files
//!   (syntax, an unknown output, a plugin that does not load, a change that
//!   needs a restart) are each refused with the file and key named, counted,
//!   and the running configuration stays; then a good file applies.

use distributary_e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Records over 24 keys; the JSON field `t` is `a` for every third key, else `b`.
fn records(count: usize, from: usize) -> Vec<Rec> {
    (from..from + count)
        .map(|i| {
            let k = i % 24;
            let t = if k % 3 == 0 { "a" } else { "b" };
            Rec {
                key: format!("key-{k}"),
                data: format!("{{\"t\":\"{t}\",\"i\":{i}}}").into_bytes(),
            }
        })
        .collect()
}

fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_extension("toml.tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn metric_value(port: u16, series: &str) -> Option<f64> {
    scrape_metrics(port).and_then(|text| metric(&text, series))
}

/// Waits until `series` reaches `value` on /metrics; how long it took.
fn wait_for_metric(running: &Distributary, port: u16, series: &str, value: f64) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if metric_value(port, series) == Some(value) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{series} never became {value} (now {:?}); log:\n{}",
        metric_value(port, series),
        running.log_text()
    );
}

fn wait_for_log(running: &Distributary, needle: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if running.log_text().contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no {needle:?} in the log:\n{}", running.log_text());
}

/// A private kinesis-local with the source and output streams (the
/// outputs with `output_shards` shards each), a test directory and a port.
struct Streams {
    kinesis: LocalKinesis,
    client: aws_sdk_kinesis::Client,
    dir: TestDir,
    port: u16,
    router: std::path::PathBuf,
}

impl Streams {
    async fn start(output_shards: i32) -> Streams {
        let mut streams = vec![("input", 4)];
        for name in ["out-keep", "out-gone", "out-a", "out-b", "out-new"] {
            streams.push((name, output_shards));
        }
        let (kinesis, client) = kinesis_with_streams(&streams).await.unwrap();
        Streams {
            kinesis,
            client,
            dir: TestDir::new().unwrap(),
            port: free_port_pair(),
            router: plugin("route_by_field"),
        }
    }

    /// The configuration: `pipelines` chosen from keep / gone / route (with
    /// `route_a` as tenant a's output) / new.
    fn config(&self, pipelines: &[&str], route_a: &str) -> String {
        let endpoint = &self.kinesis.endpoint;
        let mut text = format!(
            "[sources.input]\nstream = \"input\"\nendpoint_url = \"{endpoint}\"\npoll_interval_ms = 100\nshard_discovery_interval_s = 1\n\n[server]\nlisten = \"127.0.0.1:{}\"\n\n[checkpoint]\npath = \"state\"\ninterval_ms = 100\n\n",
            self.port
        );
        for (name, stream) in [
            ("keep", "out-keep"),
            ("gone", "out-gone"),
            ("a", "out-a"),
            ("b", "out-b"),
            ("new", "out-new"),
        ] {
            text.push_str(&format!(
                "[outputs.{name}]\nstream = \"{stream}\"\nendpoint_url = \"{endpoint}\"\n\n"
            ));
        }
        for p in pipelines {
            text.push_str(&match *p {
                "route" => format!(
                    "[[pipelines]]\nname = \"route\"\nsource = \"input\"\noutputs = [\"a\", \"b\"]\nplugin = {:?}\nplugin_config = {{ field = \"t\", routes = {{ a = \"{route_a}\", b = \"b\" }}, default = \"b\" }}\n\n",
                    self.router.display().to_string()
                ),
                name => format!(
                    "[[pipelines]]\nname = \"{name}\"\nsource = \"input\"\noutputs = [\"{name}\"]\n\n"
                ),
            });
        }
        text
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_added_removed_and_rerouted_while_records_flow() {
    let streams = Streams::start(2).await;
    let (client, dir, port) = (&streams.client, &streams.dir, streams.port);
    let config = dir
        .write_config(
            "live.toml",
            &streams.config(&["keep", "gone", "route"], "a"),
        )
        .unwrap();
    let running = Distributary::start_with(&config, &["--watch-config"], &[]).unwrap();
    wait_for_log(&running, "distributary running");

    let all = records(3600, 0);
    let waves: Vec<&[Rec]> = all.chunks(150).collect();
    let mut applied = Vec::new();
    // The untouched pipeline's progress at each wave's end: (time, records
    // put so far, records `keep` took), for its throughput around the changes.
    let keep_in = "distributary_pipeline_records_in_total{pipeline=\"keep\"}";
    let mut progress = Vec::new();
    for (i, wave) in waves.iter().enumerate() {
        put_all(client, "input", wave).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        progress.push((
            Instant::now(),
            (i + 1) * wave.len(),
            metric_value(port, keep_in).unwrap_or(0.0),
        ));
        if i == 7 {
            // Add `new`, remove `gone`, send tenant a to output b.
            write_atomically(&config, &streams.config(&["keep", "route", "new"], "b"));
            applied.push(wait_for_metric(
                &running,
                port,
                "distributary_config_version",
                2.0,
            ));
        }
        if i == 15 {
            // `gone` comes back: it resumes from its checkpoint.
            write_atomically(
                &config,
                &streams.config(&["keep", "route", "new", "gone"], "b"),
            );
            applied.push(wait_for_metric(
                &running,
                port,
                "distributary_config_version",
                3.0,
            ));
        }
    }
    let timeout = Duration::from_secs(90);
    for stream in ["out-keep", "out-new", "out-gone"] {
        let got = wait_for_settled(client, stream, all.len(), timeout)
            .await
            .unwrap();
        assert_exactly_once_in_key_order(stream, &all, &got);
    }
    // The rerouted pipeline: a then b read one after the other is each
    // key's order, if the switch happened at one point per shard.
    let a = read_all(client, "out-a").await.unwrap();
    let b_count = all.len() - a.len();
    let b = wait_for_settled(client, "out-b", b_count, timeout)
        .await
        .unwrap();
    assert!(
        !a.is_empty() && a.iter().all(|r| r.rec.data.starts_with(b"{\"t\":\"a\"")),
        "out-a holds {} records, all of tenant a before the change",
        a.len()
    );
    let tenant_a = all
        .iter()
        .filter(|r| r.data.starts_with(b"{\"t\":\"a\""))
        .count();
    assert!(
        a.len() < tenant_a,
        "every tenant-a record went to out-a ({} of {tenant_a}): the route never changed",
        a.len()
    );
    let both: Vec<ReadRec> = a.into_iter().chain(b).collect();
    assert_exactly_once_in_key_order("out-a + out-b", &all, &both);

    let log = running.log_text();
    let keep_disturbed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pipeline=keep"))
        .filter(|l| l.contains("removed or changed") || l.contains("pipeline added"))
        .collect();
    let context: Vec<&str> = log
        .lines()
        .filter(|l| {
            [
                "detaching",
                "own reader",
                "configuration",
                "removed or changed",
                "caught up",
            ]
            .iter()
            .any(|n| l.contains(n))
        })
        .collect();
    assert!(
        keep_disturbed.is_empty(),
        "a reload stopped or restarted the untouched pipeline: {keep_disturbed:?}\n{}",
        context.join("\n")
    );
    assert_eq!(
        metric_value(port, "distributary_config_reloads_total"),
        Some(2.0)
    );
    eprintln!("changes applied in {applied:?} after the file was written");
    // Measured, not asserted (timing on a shared machine): `keep`'s rate and
    // largest backlog before the first change, between them, and after.
    for (what, waves) in [("before", 0..8), ("between", 8..16), ("after", 16..24)] {
        let (first, last) = (&progress[waves.start], &progress[waves.end - 1]);
        let seconds = last.0.duration_since(first.0).as_secs_f64().max(1e-3);
        let backlog = progress[waves.clone()]
            .iter()
            .map(|(_, put, took)| *put as f64 - took)
            .fold(0.0, f64::max);
        eprintln!(
            "keep {what} the changes: {:.0} records/s taken, {:.0} put; largest backlog {backlog:.0} records",
            (last.2 - first.2) / seconds,
            (last.1 - first.1) as f64 / seconds
        );
    }
    running.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_files_are_refused_and_only_sighup_reads_the_file() {
    let streams = Streams::start(1).await;
    let (client, dir, port) = (&streams.client, &streams.dir, streams.port);
    let good = streams.config(&["keep"], "a");
    let config = dir.write_config("hup.toml", &good).unwrap();
    let running = Distributary::start(&config).unwrap();
    wait_for_log(&running, "distributary running");
    let file = config.display().to_string();
    let not_a_plugin = dir.dir.path().join("not-a-plugin.wasm");
    std::fs::write(&not_a_plugin, b"not wasm").unwrap();

    let all = records(1200, 0);
    let mut waves = all.chunks(150);
    let broken: Vec<(String, Vec<String>)> = vec![
        (
            format!("{good}\n[[pipelines]\n"),
            vec![file.clone(), "line".into()],
        ),
        (
            good.replace("outputs = [\"keep\"]", "outputs = [\"nowhere\"]"),
            vec![
                file.clone(),
                "pipelines[0] (keep).outputs".into(),
                "nowhere".into(),
            ],
        ),
        (
            format!(
                "{good}[[pipelines]]\nname = \"bad\"\nsource = \"input\"\noutputs = [\"a\"]\nplugin = {:?}\n",
                not_a_plugin.display().to_string()
            ),
            vec![file.clone(), "pipelines[1]".into(), "plugin".into()],
        ),
        (
            good.replace("path = \"state\"", "path = \"elsewhere\""),
            vec![file.clone(), "checkpoint".into(), "restart".into()],
        ),
    ];
    for (n, (text, expected)) in broken.iter().enumerate() {
        put_all(client, "input", waves.next().unwrap())
            .await
            .unwrap();
        std::fs::write(&config, text).unwrap();
        running.signal("HUP");
        wait_for_metric(
            &running,
            port,
            "distributary_config_reload_failures_total",
            (n + 1) as f64,
        );
        let log = running.log_text();
        let line = log
            .lines()
            .filter(|l| l.contains("configuration not applied"))
            .nth(n)
            .unwrap_or_else(|| panic!("no refusal logged for broken file {n}:\n{log}"));
        for needle in expected {
            assert!(line.contains(needle.as_str()), "{needle:?} not in {line:?}");
        }
        assert_eq!(metric_value(port, "distributary_config_version"), Some(1.0));
    }
    // A good file is not read until SIGHUP.
    std::fs::write(&config, streams.config(&["keep", "new"], "a")).unwrap();
    put_all(client, "input", waves.next().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(metric_value(port, "distributary_config_version"), Some(1.0));
    running.signal("HUP");
    wait_for_metric(&running, port, "distributary_config_version", 2.0);
    for wave in waves {
        put_all(client, "input", wave).await.unwrap();
    }
    for stream in ["out-keep", "out-new"] {
        let got = wait_for_settled(client, stream, all.len(), Duration::from_secs(90))
            .await
            .unwrap();
        assert_exactly_once_in_key_order(stream, &all, &got);
    }
    running.stop_cleanly();
}

/// Issue 22's finding: started without `--watch-config`, a pipeline with a
/// new output added to the file and SIGHUP sent while records trickle in
/// (40/s, as a producer does), starting from the stream's trim horizon: the
/// new output must end up with every record, the ones before the signal
/// and the ones after. With the file store, and with the lease table as the
/// checkpoint store (moto behind the verifying front), in the report's
/// shape: 3,800 records, the signal early, the check 60 s after the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_added_by_sighup_while_records_trickle_gets_every_record() {
    let streams = Streams::start(2).await;
    sighup_while_records_trickle(&streams, "", 1600, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_added_by_sighup_gets_every_record_with_the_lease_table_store() {
    let streams = Streams::start(2).await;
    let dynamo = LocalDynamo::start_moto().unwrap();
    let store = format!(
        "[checkpoint]\nstore = \"dynamodb\"\ntable = \"sighup\"\ncreate_table = true\nendpoint_url = \"{}\"\nfailover_ms = 6000\npath = \"state\"\ninterval_ms = 100\n\n",
        dynamo.endpoint
    );
    sighup_while_records_trickle(&streams, &store, 3800, 20).await;
    drop(dynamo);
}

/// Runs the `keep` pipeline, trickles `count` records at 40/s, adds the
/// `new` pipeline by SIGHUP after `signal_after` waves of 4, and checks
/// both outputs hold every record exactly once in key order. `checkpoint`
/// replaces the file store's `[checkpoint]` table when not empty.
async fn sighup_while_records_trickle(
    streams: &Streams,
    checkpoint: &str,
    count: usize,
    signal_after: usize,
) {
    let (client, dir, port) = (&streams.client, &streams.dir, streams.port);
    let text = |pipelines: &[&str]| {
        let text = streams.config(pipelines, "a");
        match checkpoint {
            "" => text,
            store => text.replace(
                "[checkpoint]\npath = \"state\"\ninterval_ms = 100\n\n",
                store,
            ),
        }
    };
    let config = dir.write_config("trickle.toml", &text(&["keep"])).unwrap();
    let running = Distributary::start(&config).unwrap();
    wait_for_log(&running, "distributary running");
    let all = records(count, 0);
    // 40 records/s: one record every 25 ms, in waves of 4 every 100 ms.
    let mut waves = all.chunks(4).enumerate();
    for (i, wave) in waves.by_ref() {
        put_all(client, "input", wave).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if i == signal_after {
            break;
        }
    }
    std::fs::write(&config, text(&["keep", "new"])).unwrap();
    running.signal("HUP");
    wait_for_metric(&running, port, "distributary_config_version", 2.0);
    for (_, wave) in waves {
        put_all(client, "input", wave).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for stream in ["out-keep", "out-new"] {
        let got = wait_for_settled(client, stream, all.len(), Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{stream}: {e}\n{}", running.log_text()));
        assert_exactly_once_in_key_order(stream, &all, &got);
    }
    running.stop_cleanly();
}
