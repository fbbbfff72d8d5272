//! The Python example plugin (examples/python-plugin, built by
//! scripts/build-python-plugin with componentize-py) running under the same
//! host as Rust plugins: every record lands where its field says, exactly
//! once, in order. Its ~18 MB component takes seconds to compile; a second
//! start with the same state directory loads the compiled artifact from the
//! cache instead, and the test reports both start-up times.
//!
//! The component is built by scripts/test (and so in CI). Without it the
//! test fails, unless DISTRIBUTARY_SKIP_PYTHON=1 says to skip it.

use distributary_e2e::*;
use std::time::{Duration, Instant};

fn wait_for_log_count(running: &Distributary, needle: &str, n: usize) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if running.log_text().matches(needle).count() >= n {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{needle:?} not seen {n} times:\n{}", running.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_plugin_routes_like_route_by_field_and_its_compilation_is_cached() {
    let wasm = plugin("route_by_field_py");
    if !wasm.is_file() {
        assert!(
            std::env::var_os("DISTRIBUTARY_SKIP_PYTHON").is_some(),
            "{} missing: run scripts/build-python-plugin (or set DISTRIBUTARY_SKIP_PYTHON=1)",
            wasm.display()
        );
        eprintln!("skipped: DISTRIBUTARY_SKIP_PYTHON is set");
        return;
    }
    let (kinesis, client) = kinesis_with_streams(&[
        ("input", 2),
        ("tenant-a", 1),
        ("tenant-b", 1),
        ("others", 1),
    ])
    .await
    .unwrap();
    let tenants = ["a", "b", "c"];
    let records: Vec<Rec> = (0..300)
        .map(|i| Rec {
            key: format!("user-{}", i % 30),
            data: format!(r#"{{"n":{i},"tenant":"{}"}}"#, tenants[i % 3]).into_bytes(),
        })
        .collect();
    put_all(&client, "input", &records).await.unwrap();
    let dir = TestDir::new().unwrap();
    let config = dir
        .write_config(
            "python.toml",
            &config::route_by_tenant(&kinesis.endpoint, &wasm),
        )
        .unwrap();

    let running = Distributary::start(&config).unwrap();
    let cold = wait_for_log_count(&running, "distributary running", 1);
    for (stream, tenant) in [("tenant-a", "a"), ("tenant-b", "b"), ("others", "c")] {
        let want: Vec<Rec> = records
            .iter()
            .filter(|r| {
                String::from_utf8_lossy(&r.data).contains(&format!("\"tenant\":\"{tenant}\""))
            })
            .cloned()
            .collect();
        let got = wait_for_settled(&client, stream, want.len(), Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
        assert_exactly_once_in_key_order(stream, &want, &got);
    }
    running.stop_cleanly();
    assert_eq!(running_compiles(&config), 1);

    // Second start, same state directory: the compiled artifact is reused.
    let running = Distributary::start(&config).unwrap();
    let warm = wait_for_log_count(&running, "distributary running", 2);
    running.stop_cleanly();
    assert_eq!(
        running_compiles(&config),
        1,
        "the second start compiled again"
    );
    println!(
        "python plugin (18 MB component): start-up to running: cold {cold:?} (compiling), warm {warm:?} (compiled artifact from the cache)"
    );
    assert!(
        warm < cold,
        "warm start {warm:?} not faster than cold {cold:?}"
    );
}

/// How many times the runs logged to this config's log compiled a plugin.
fn running_compiles(config: &std::path::Path) -> usize {
    std::fs::read_to_string(config.with_extension("log"))
        .unwrap_or_default()
        .matches("plugin compiled")
        .count()
}
