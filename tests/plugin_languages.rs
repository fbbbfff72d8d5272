//! route_by_field in three languages under the same host: Rust
//! (plugins/route_by_field), Python (examples/python-plugin, componentize-py)
//! and JavaScript (examples/js-plugin with the SDK plugins/js/sdk.js,
//! componentize-js). Each routes 3,000 records by their `tenant` field:
//! every record lands where its field says, exactly once, in key order. A
//! second start with the same state directory loads the compiled artifact
//! from the cache instead of compiling. Each test prints the component's
//! size, start-up time cold (compiling) and warm (cached), and the routing
//! cost per record from `/metrics` (time in the plugin call per record).
//!
//! The Python and JavaScript components are built by scripts/test (and so in
//! CI). Without one, its test fails, unless DISTRIBUTARY_SKIP_PYTHON=1 or
//! DISTRIBUTARY_SKIP_JS=1 says to skip it.

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

/// How many times the runs logged to this config's log compiled a plugin.
fn running_compiles(config: &std::path::Path) -> usize {
    std::fs::read_to_string(config.with_extension("log"))
        .unwrap_or_default()
        .matches("plugin compiled")
        .count()
}

async fn routes_by_tenant(language: &str, component: &str, skip: Option<&str>) {
    let wasm = plugin(component);
    if !wasm.is_file() {
        let skip = skip.expect("the Rust plugin is always built");
        assert!(
            std::env::var_os(skip).is_some(),
            "{} missing: run scripts/test's build steps (or set {skip}=1)",
            wasm.display()
        );
        eprintln!("skipped: {skip} is set");
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
    let records: Vec<Rec> = (0..3000)
        .map(|i| Rec {
            key: format!("user-{}", i % 30),
            data: format!(
                r#"{{"n":{i},"tenant":"{}","pad":"{}"}}"#,
                tenants[i % 3],
                "x".repeat(200)
            )
            .into_bytes(),
        })
        .collect();
    put_all(&client, "input", &records).await.unwrap();
    let dir = TestDir::new().unwrap();
    let port = free_port_pair();
    let config = dir
        .write_config(
            &format!("{component}.toml"),
            &format!(
                "{}\n[server]\nlisten = \"127.0.0.1:{port}\"\n",
                config::route_by_tenant(&kinesis.endpoint, &wasm)
            ),
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
    let page = scrape_metrics(port).expect("/metrics");
    let routed = metric(
        &page,
        "distributary_pipeline_records_in_total{pipeline=\"p\"}",
    );
    let micros = metric(
        &page,
        "distributary_pipeline_route_microseconds_total{pipeline=\"p\"}",
    );
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
    let size_mb = std::fs::metadata(&wasm).unwrap().len() as f64 / 1e6;
    let per_record = match (routed, micros) {
        (Some(n), Some(us)) if n > 0.0 => format!("{:.2} µs", us / n),
        _ => "?".into(),
    };
    println!(
        "{language} route_by_field ({size_mb:.1} MB component): start-up to running cold {cold:?} (compiling), warm {warm:?} (cached); routing {per_record} per 250-byte record"
    );
    assert!(
        warm < cold || cold < Duration::from_millis(500),
        "warm start {warm:?} not faster than cold {cold:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_route_by_field_routes_every_record() {
    routes_by_tenant("Rust", "route_by_field", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_route_by_field_routes_every_record_and_its_compilation_is_cached() {
    routes_by_tenant(
        "Python",
        "route_by_field_py",
        Some("DISTRIBUTARY_SKIP_PYTHON"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_route_by_field_routes_every_record_and_its_compilation_is_cached() {
    routes_by_tenant(
        "JavaScript",
        "route_by_field_js",
        Some("DISTRIBUTARY_SKIP_JS"),
    )
    .await;
}
