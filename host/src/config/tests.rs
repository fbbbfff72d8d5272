//! Parsing and validation of configuration text (the binary-level cases live
//! in tests/bad_config.rs; these pin defaults and path resolution).

use super::*;
use std::path::Path;

const MINIMAL: &str = r#"
[sources.in]
stream = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"

[outputs.a]
stream = "copy"

[[pipelines]]
name = "p"
source = "in"
outputs = ["a"]
"#;

#[test]
fn defaults_follow_the_spec() {
    let c = Config::parse(Path::new("/etc/d/c.toml"), MINIMAL).unwrap();
    let s = &c.sources["in"];
    assert_eq!(s.start_position, StartPosition::TrimHorizon);
    assert_eq!(s.reader, ReaderKind::Polling);
    assert_eq!(s.poll_interval_ms, 1000);
    assert!(s.deaggregate);
    let o = &c.outputs["a"];
    assert_eq!((o.max_record_bytes, o.max_request_bytes), (None, 5 << 20));
    assert_eq!(c.checkpoint.store, StoreKind::File);
    assert_eq!(c.checkpoint.interval_ms, 200);
    let p = &c.pipelines[0];
    assert_eq!(p.on_error, OnError::Halt);
    assert_eq!((p.limits.memory_mb, p.limits.batch_timeout_ms), (64, 200));
    assert_eq!(p.plugin_config_json(), "{}");
}

#[test]
fn relative_paths_resolve_against_the_config_file() {
    let c = Config::parse(Path::new("/etc/d/c.toml"), MINIMAL).unwrap();
    assert_eq!(c.checkpoint.path, Path::new("/etc/d/./distributary-state"));
    let text = MINIMAL.replace(
        "outputs = [\"a\"]",
        "outputs = [\"a\"]\nplugin = \"x.wasm\"",
    );
    let err = Config::parse(Path::new("/etc/d/c.toml"), &text).unwrap_err();
    assert!(
        err.to_string().contains("/etc/d/x.wasm is not a file"),
        "{err}"
    );
}

#[test]
fn plugin_config_becomes_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.wasm"), b"").unwrap();
    let text = MINIMAL.replace(
        "outputs = [\"a\"]",
        "outputs = [\"a\"]\nplugin = \"r.wasm\"\nplugin_config = { field = \"t\", routes = { x = \"a\" }, n = 3 }",
    );
    let c = Config::parse(&dir.path().join("c.toml"), &text).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&c.pipelines[0].plugin_config_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"field": "t", "routes": {"x": "a"}, "n": 3})
    );
}

#[test]
fn errors_name_file_and_key() {
    let text = MINIMAL.replace(
        "outputs = [\"a\"]",
        "outputs = [\"a\"]\non_error = \"dead_letter\"\ndead_letter = \"a\"",
    );
    let err = Config::parse(Path::new("c.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("c.toml: pipelines[0] (p).dead_letter:"),
        "{err}"
    );
    let err = Config::parse(
        Path::new("c.toml"),
        "[outputs.a]\nstream = \"x\"\nbogus = 1\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("line 3") && err.contains("unknown field `bogus`"),
        "{err}"
    );
}

#[test]
fn type_and_enum_errors_name_the_full_key() {
    let parse = |text: &str| {
        Config::parse(Path::new("c.toml"), text)
            .unwrap_err()
            .to_string()
    };
    let err = parse(&format!("{MINIMAL}on_error = \"explode\"\n"));
    assert!(
        err.starts_with("c.toml: pipelines[0].on_error (line 12):")
            && err.contains("unknown variant `explode`"),
        "{err}"
    );
    let err = parse(&MINIMAL.replace(
        "stream = \"copy\"",
        "stream = \"copy\"\nmax_request_bytes = \"big\"",
    ));
    assert!(
        err.starts_with("c.toml: outputs.a.max_request_bytes (line 7):")
            && err.contains("invalid type"),
        "{err}"
    );
    let err = parse(&format!("{MINIMAL}[pipelines.limits]\nmemory_mb = -1\n"));
    assert!(
        err.starts_with("c.toml: pipelines[0].limits.memory_mb"),
        "{err}"
    );
    let err = parse(&MINIMAL.replace("[sources.in]", "[sources.in]\nreader = 3"));
    assert!(
        err.starts_with("c.toml: sources.in.reader (line 3):"),
        "{err}"
    );
}

#[test]
fn the_lease_table_settings_are_checked_offline() {
    let with = |lines: &str| format!("{MINIMAL}\n[checkpoint]\nstore = \"dynamodb\"\n{lines}\n");
    let c = Config::parse(Path::new("c.toml"), &with("")).unwrap();
    assert_eq!(c.checkpoint.store, StoreKind::Dynamodb);
    assert_eq!(c.checkpoint.table, "distributary-leases");
    assert_eq!(c.checkpoint.failover_ms, 10_000);
    assert!(!c.checkpoint.create_table);
    for (lines, key) in [
        ("table = \"no spaces\"", "checkpoint.table"),
        ("table = \"ab\"", "checkpoint.table"),
        ("failover_ms = 10", "checkpoint.failover_ms"),
        ("instance_id = \" \"", "checkpoint.instance_id"),
    ] {
        let err = Config::parse(Path::new("c.toml"), &with(lines))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("c.toml: {key}:")),
            "{lines}: {err}"
        );
    }
}
