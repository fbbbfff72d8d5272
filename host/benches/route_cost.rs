//! Route cost per record, WASM plugin against the same logic in native Rust,
//! in one run: replicate (3 outputs) and route_by_field (3 outputs), on
//! batches of 500 JSON records of about 100 B and 1 KiB, with the routing
//! field before the record's long string field and after it (the scanner
//! must then skip the long string).
//!
//! Run: `scripts/build-plugins && cargo bench -p distributary --bench route_cost`.
//! Both sides produce the same thing, the per-output record lists the
//! writers take; the WASM side includes packing the batch, the call, and
//! checking and unpacking the decisions. `ROUTE_COST_PHASES=1` also prints
//! the cost of packing a batch and of the native routing decision alone.

use distributary::config::Limits;
use distributary::plugin::{Plugin, PluginSpec};
use distributary::record::{OutRecord, SourceRecord};
use route_by_field::RouteByField;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BATCH: usize = 500;
const OUTPUTS: [&str; 3] = ["eu", "us", "rest"];
const ROUTE_CONFIG: &str = r#"{"field":"region","routes":{"eu":"eu","us":"us"},"default":"rest"}"#;

fn records(size: usize, field_last: bool) -> Vec<SourceRecord> {
    let regions = ["eu", "us", "ap"];
    (0..BATCH)
        .map(|i| {
            let region = format!(r#""region":"{}""#, regions[i % 3]);
            let user = format!(r#""id":{i},"user":"user-{}""#, i % 97);
            let fixed = region.len() + user.len() + 16;
            let payload = format!(r#""payload":"{}""#, "x".repeat(size.saturating_sub(fixed)));
            let data = if field_last {
                format!("{{{user},{payload},{region}}}")
            } else {
                format!("{{{user},{region},{payload}}}")
            };
            SourceRecord {
                data: data.into_bytes().into(),
                partition_key: format!("user-{}", i % 97),
                explicit_hash_key: None,
                sequence_number: format!("4960{i:052}"),
                sub_sequence_number: None,
                arrival_ms: 1_764_000_000_000,
            }
        })
        .collect()
}

fn out(r: &SourceRecord, i: usize) -> OutRecord {
    OutRecord {
        data: r.data.clone(),
        partition_key: r.partition_key.clone(),
        explicit_hash_key: r.explicit_hash_key.clone(),
        source_index: i as u32,
    }
}

fn native_replicate(records: &[SourceRecord]) -> Vec<Vec<OutRecord>> {
    distributary::router::replicate(records, OUTPUTS.len())
}

fn native_route_by_field(logic: &RouteByField, records: &[SourceRecord]) -> Vec<Vec<OutRecord>> {
    let mut lists: Vec<Vec<OutRecord>> = vec![Vec::new(); OUTPUTS.len()];
    for (i, r) in records.iter().enumerate() {
        if let Some(o) = logic.decide(&r.data) {
            lists[o as usize].push(out(r, i));
        }
    }
    lists
}

/// Nanoseconds per record: repeats `f` over one batch for about `for_at_least`.
fn measure(for_at_least: Duration, mut f: impl FnMut() -> usize) -> f64 {
    for _ in 0..20 {
        black_box(f());
    }
    let start = Instant::now();
    let mut records = 0usize;
    while start.elapsed() < for_at_least {
        records += black_box(f());
    }
    start.elapsed().as_nanos() as f64 / records as f64
}

fn wasm(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    if !path.is_file() {
        eprintln!(
            "{} missing: run scripts/build-plugins first",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

fn load(name: &str, config: &str) -> Plugin {
    let spec = PluginSpec {
        pipeline: "bench".into(),
        path: wasm(name),
        config_json: config.into(),
        outputs: OUTPUTS.iter().map(|o| o.to_string()).collect(),
        limits: Limits::default(),
    };
    Plugin::load(&spec, None).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    })
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) runs briefly.
    let full = std::env::args().any(|a| a == "--bench");
    let time = if full {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(50)
    };
    let outputs: Vec<String> = OUTPUTS.iter().map(|o| o.to_string()).collect();
    let logic = RouteByField::new(ROUTE_CONFIG, &outputs).unwrap_or_else(|e| panic!("{e}"));
    let replicate = load("replicate", "{}");
    let by_field = load("route_by_field", ROUTE_CONFIG);
    println!(
        "route cost per record, batches of {BATCH}, {} outputs",
        OUTPUTS.len()
    );
    println!(
        "{:<16} {:>6} {:>11} {:>10} {:>8} {:>7}",
        "plugin", "size", "field", "native ns", "wasm ns", "ratio"
    );
    for (size, field_last) in [(100, false), (100, true), (1024, false), (1024, true)] {
        let input = records(size, field_last);
        let place = if field_last { "last" } else { "first" };
        let count = |lists: Vec<Vec<OutRecord>>| lists.iter().map(Vec::len).sum::<usize>();
        // Same answers on both sides before timing anything.
        let wasm_lists = by_field
            .route("bench", "shard", &input)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            count(wasm_lists),
            count(native_route_by_field(&logic, &input))
        );
        let cases: [(&str, f64, f64); 2] = [
            (
                "replicate",
                measure(time, || {
                    black_box(native_replicate(&input));
                    BATCH
                }),
                measure(time, || {
                    black_box(replicate.route("bench", "shard", &input).ok());
                    BATCH
                }),
            ),
            (
                "route_by_field",
                measure(time, || {
                    black_box(native_route_by_field(&logic, &input));
                    BATCH
                }),
                measure(time, || {
                    black_box(by_field.route("bench", "shard", &input).ok());
                    BATCH
                }),
            ),
        ];
        if std::env::var_os("ROUTE_COST_PHASES").is_some() {
            let pack = measure(time, || {
                black_box(distributary::plugin::batch::pack("s", "shard", &input));
                BATCH
            });
            let decide = measure(time, || {
                for r in &input {
                    black_box(logic.decide(&r.data));
                }
                BATCH
            });
            println!(
                "phases {size}B field {place}: pack {pack:.0} ns, native decide {decide:.0} ns"
            );
        }
        for (name, native, wasm) in cases {
            if name == "replicate" && field_last {
                continue; // replicate does not read the data: same as the row above
            }
            println!(
                "{name:<16} {size:>5}B {place:>11} {native:>10.0} {wasm:>8.0} {:>6.2}x",
                wasm / native
            );
        }
    }
}
