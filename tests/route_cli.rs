//! `distributary route`, the offline dry run: per input record, the
//! deliveries (output, key, data, what changed) or the error, pinned to the
//! record that caused it; exit 0 when all route cleanly, 1 when some fail,
//! 2 when the input or the plugin cannot be loaded.

use distributary_e2e::*;
use serde_json::Value;
use std::process::{Command, Output};

fn route(plugin_name: &str, config: &str, outputs: &str, input: &str) -> (Output, Vec<Value>) {
    let dir = TestDir::new().unwrap();
    let file = dir.dir.path().join("records.jsonl");
    std::fs::write(&file, input).unwrap();
    let out = Command::new(distributary_bin())
        .args(["route", "--plugin"])
        .arg(plugin(plugin_name))
        .args(["--plugin-config", config, "--outputs", outputs, "--input"])
        .arg(&file)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, lines)
}

#[test]
fn route_by_field_dry_run_shows_each_records_destination() {
    let input = concat!(
        "{\"data\":{\"tenant\":\"a\",\"n\":1},\"partition_key\":\"u1\"}\n",
        "{\"data\":\"not json\"}\n",
        "{\"data_base64\":\"eyJ0ZW5hbnQiOiJiIn0=\",\"partition_key\":\"u2\"}\n",
    );
    let (out, lines) = route(
        "route_by_field",
        r#"{"field":"tenant","routes":{"a":"copy-a"},"default":"rest"}"#,
        "copy-a,rest",
        input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines.len(), 3);
    let first = &lines[0]["deliveries"];
    assert_eq!(first.as_array().unwrap().len(), 1);
    assert_eq!(first[0]["output"], "copy-a");
    assert_eq!(first[0]["partition_key"], "u1");
    assert_eq!(first[0]["changed"], serde_json::json!([]));
    assert_eq!(lines[1]["deliveries"][0]["output"], "rest");
    assert_eq!(lines[2]["deliveries"][0]["output"], "rest");
    assert_eq!(lines[2]["deliveries"][0]["data"], r#"{"tenant":"b"}"#);
}

#[test]
fn a_failing_record_is_named_and_the_others_still_route() {
    let input =
        "{\"data\":\"ok\"}\n{\"data\":\"boom\"}\n{\"data\":\"empty-key\"}\n{\"data\":\"fine\"}\n";
    let (out, lines) = route("hostile", r#""mixed:boom,empty-key""#, "a,b", input);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["deliveries"].as_array().unwrap().len(), 2);
    let error = lines[1]["error"].as_str().unwrap();
    assert!(error.contains("boom at record 0"), "{error}");
    assert_eq!(lines[2]["deliveries"][0]["refused"], "empty partition key");
    assert_eq!(
        lines[2]["deliveries"][0]["changed"],
        serde_json::json!(["partition_key"])
    );
    assert_eq!(lines[3]["deliveries"][1]["output"], "b");
}

#[test]
fn every_bad_input_line_is_named_and_every_good_one_routed() {
    // 20 lines, two of them malformed: exit 1, both named by line, the 18
    // others routed, and every output line numbered by its input line.
    let mut input = String::new();
    for i in 1..=20 {
        match i {
            7 => input.push_str("{\"data\": \"unterminated\n"),
            13 => input.push_str("{\"nope\":1}\n"),
            _ => input.push_str(&format!("{{\"data\":\"r{i}\"}}\n")),
        }
    }
    let (out, lines) = route("replicate", "{}", "a", &input);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("records.jsonl: line 7"), "{stderr}");
    assert!(stderr.contains("records.jsonl: line 13"), "{stderr}");
    assert_eq!(lines.len(), 20);
    for (i, line) in lines.iter().enumerate() {
        let number = i + 1;
        assert_eq!(line["line"], number, "{line}");
        if number == 7 || number == 13 {
            let error = line["error"].as_str().unwrap();
            assert!(error.contains(&format!("line {number}")), "{error}");
        } else {
            assert_eq!(line["deliveries"][0]["data"], format!("r{number}"));
        }
    }
}

#[test]
fn bad_plugin_config_exits_2_naming_the_problem() {
    let (out, _) = route(
        "route_by_field",
        r#"{"routes":{}}"#,
        "a",
        "{\"data\":\"x\"}\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin init failed") && stderr.contains("field"),
        "{stderr}"
    );
}

/// Each shipped plugin, built for wasm32-wasip2, through the host.
#[test]
fn shipped_plugins_route_as_documented() {
    let input = concat!(
        "{\"data\":{\"type\":\"order\",\"amount\":250,\"user\":{\"id\":7,\"email\":\"a@b\"}},\"partition_key\":\"k1\"}\n",
        "{\"data\":{\"type\":\"refund\",\"amount\":50,\"user\":{\"id\":8,\"email\":\"c@d\"}},\"partition_key\":\"k2\"}\n",
        "{\"data\":\"not json\",\"partition_key\":\"k3\"}\n",
    );
    let outputs = |line: &Value| -> Vec<String> {
        line["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["output"].as_str().unwrap().to_string())
            .collect()
    };

    let (out, lines) = route(
        "filter",
        r#"{"conditions":[{"field":"type","equals":"order"},{"field":"amount","gte":100}],"outputs":["big"]}"#,
        "big,other",
        input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(outputs(&lines[0]), ["big"]);
    assert!(outputs(&lines[1]).is_empty());
    assert!(
        outputs(&lines[2]).is_empty(),
        "non-JSON is dropped by default"
    );

    let (out, lines) = route(
        "redact",
        r#"{"mask":["user.email"],"remove":["amount"]}"#,
        "clean",
        input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = &lines[0]["deliveries"][0];
    assert_eq!(first["changed"], serde_json::json!(["data"]));
    let data: Value = serde_json::from_str(first["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["user"]["email"], "***");
    assert!(data.get("amount").is_none());
    assert!(
        outputs(&lines[2]).is_empty(),
        "non-JSON is dropped by default"
    );

    let (out, lines) = route(
        "repartition",
        r#"{"template":"user-{user.id}"}"#,
        "a",
        input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines[0]["deliveries"][0]["partition_key"], "user-7");
    assert_eq!(
        lines[0]["deliveries"][0]["changed"],
        serde_json::json!(["partition_key"])
    );
    assert_eq!(lines[1]["deliveries"][0]["partition_key"], "user-8");
    assert_eq!(
        lines[2]["deliveries"][0]["partition_key"], "k3",
        "missing keeps the key"
    );

    let many: String = (0..400)
        .map(|i| {
            format!(
                "{{\"data\":\"r{i}\",\"partition_key\":\"user-{}\"}}\n",
                i % 100
            )
        })
        .collect();
    let (out, lines) = route(
        "sample",
        r#"{"fraction":0.25,"all":["full"]}"#,
        "sampled,full",
        &many,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sampled_keys = std::collections::BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let outs = outputs(line);
        assert!(outs.contains(&"full".to_string()));
        sampled_keys
            .entry(i % 100)
            .or_insert_with(Vec::new)
            .push(outs.contains(&"sampled".to_string()));
    }
    // The same key is always in or always out; about a quarter of the keys are in.
    assert!(sampled_keys.values().all(|v| v.iter().all(|&s| s == v[0])));
    let n = sampled_keys.values().filter(|v| v[0]).count();
    assert!((10..=40).contains(&n), "{n} of 100 keys sampled at 0.25");
}

/// The template's dry run, as docs/plugins.md shows it.
#[test]
fn the_plugin_template_routes_its_sample_records() {
    let input =
        std::fs::read_to_string(root().join("examples/plugin-template/records.jsonl")).unwrap();
    let (out, lines) = route(
        "my_plugin",
        r#"{"keyword":"ERROR","matched":"alerts","others":"archive","key_prefix":"alert-"}"#,
        "alerts,archive",
        &input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines[0]["deliveries"][0]["output"], "alerts");
    assert_eq!(lines[0]["deliveries"][0]["partition_key"], "alert-host-1");
    assert_eq!(lines[1]["deliveries"][0]["output"], "archive");
    assert_eq!(lines[2]["deliveries"][0]["output"], "alerts");
}

/// Every example configuration passes `distributary check` (plugins included).
#[test]
fn every_example_config_checks() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            check_ok(&path);
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} example configs");
}
