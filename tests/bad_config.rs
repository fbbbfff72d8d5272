//! Malformed configurations: `distributary run` and `check` exit non-zero with
//! an error naming the file and the key, before reading anything. The source
//! endpoint is a listener the test owns; it must see no connection at all.

use distributary_e2e::*;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

const GOOD: &str = r#"
[sources.input]
stream = "input"
endpoint_url = "ENDPOINT"

[outputs.a]
stream = "out-a"
endpoint_url = "ENDPOINT"

[outputs.b]
stream = "out-b"
endpoint_url = "ENDPOINT"

[[pipelines]]
name = "p"
source = "input"
outputs = ["a", "b"]
"#;

/// (case, config text, words the error must contain)
fn cases(route_wasm: &str) -> Vec<(&'static str, String, Vec<&'static str>)> {
    let pipeline = |extra: &str| {
        GOOD.replace(
            "outputs = [\"a\", \"b\"]",
            &format!("outputs = [\"a\", \"b\"]\n{extra}"),
        )
    };
    vec![
        ("bad toml", "[sources.input\nstream = 1".into(), vec!["line 1"]),
        ("unknown key in a source", GOOD.replace("stream = \"input\"", "stream = \"input\"\nshards = 4"), vec!["unknown field `shards`"]),
        ("unknown top-level table", format!("{GOOD}\n[metrics]\nport = 1\n"), vec!["unknown field `metrics`"]),
        ("buffer of no batches", pipeline("buffer_batches = 0"), vec!["(p).buffer_batches", "between 1 and 64"]),
        ("unknown output", GOOD.replace("outputs = [\"a\", \"b\"]", "outputs = [\"a\", \"nope\"]"), vec!["pipelines[0] (p).outputs", "\"nope\""]),
        ("unknown source", GOOD.replace("source = \"input\"", "source = \"orders\""), vec!["pipelines[0] (p).source", "\"orders\""]),
        ("duplicate pipeline", format!("{GOOD}\n[[pipelines]]\nname = \"p\"\nsource = \"input\"\noutputs = [\"a\"]\n"), vec!["pipelines[1].name", "duplicate"]),
        ("missing plugin file", pipeline("plugin = \"/nonexistent/route.wasm\""), vec!["pipelines[0] (p).plugin", "not a file"]),
        ("plugin that is not wasm", pipeline("plugin = \"CONFIG_FILE\""), vec!["pipelines[0] (p).plugin", "not a valid WebAssembly component"]),
        ("bad start_position", GOOD.replace("stream = \"input\"", "stream = \"input\"\nstart_position = \"beginning\""), vec!["unknown variant `beginning`"]),
        ("bad on_error", pipeline("on_error = \"ignore\""), vec!["pipelines[0].on_error (line", "unknown variant `ignore`"]),
        ("wrong type", pipeline("buffer_batches = \"four\""), vec!["pipelines[0].buffer_batches (line", "invalid type"]),
        ("empty outputs", GOOD.replace("outputs = [\"a\", \"b\"]", "outputs = []"), vec!["pipelines[0] (p).outputs", "at least one"]),
        ("no pipelines", GOOD.split("[[pipelines]]").next().unwrap_or("").to_string(), vec!["pipelines", "no [[pipelines]]"]),
        ("dead_letter missing", pipeline("on_error = \"dead_letter\""), vec!["pipelines[0] (p).dead_letter", "required"]),
        ("at_timestamp without timestamp", GOOD.replace("stream = \"input\"", "stream = \"input\"\nstart_position = \"at_timestamp\""), vec!["sources.input.start_timestamp", "required"]),
        ("bad timestamp", GOOD.replace("stream = \"input\"", "stream = \"input\"\nstart_position = \"at_timestamp\"\nstart_timestamp = \"yesterday\""), vec!["sources.input.start_timestamp", "RFC 3339"]),
        ("output without stream", GOOD.replace("stream = \"out-b\"", ""), vec!["outputs.b.stream", "required"]),
        ("missing required pipeline key", GOOD.replace("source = \"input\"\n", ""), vec!["missing field `source`"]),
        ("plugin config rejected by init", pipeline(&format!("plugin = {route_wasm:?}\nplugin_config = {{ field = 1 }}")), vec!["pipelines[0] (p).plugin", "plugin init failed", "plugin_config.field: invalid type: integer `1`, expected a string"]),
        ("bad stream pattern", GOOD.replace("stream = \"out-b\"", "stream_pattern = \"out-[\""), vec!["outputs.b.stream_pattern", "not a valid pattern"]),
        ("stream and stream pattern", GOOD.replace("stream = \"out-b\"", "stream = \"out-b\"\nstream_pattern = \"out-*\""), vec!["outputs.b.stream_pattern", "not both"]),
        ("discovery every 0 s", GOOD.replace("stream = \"out-b\"", "stream_pattern = \"out-*\"\ndiscover_interval_s = 0"), vec!["outputs.b.discover_interval_s", "at least 1"]),
        ("dead letters to a pattern", format!("{}\n[outputs.dlq]\nstream_pattern = \"dlq-*\"\n", pipeline("on_error = \"dead_letter\"\ndead_letter = \"dlq\"")), vec!["pipelines[0] (p).dead_letter", "stream_pattern"]),
        ("bad listen address", format!("{GOOD}\n[server]\nlisten = \"everywhere\"\n"), vec!["server.listen"]),
    ]
}

#[test]
fn every_malformed_config_is_refused_naming_the_key_and_reads_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let dir = TestDir::new().unwrap();
    let route_wasm = plugin("route_by_field").display().to_string();
    let all = cases(&route_wasm);
    assert!(all.len() >= 12);
    for (i, (case, text, words)) in all.into_iter().enumerate() {
        let path = dir.dir.path().join(format!("case{i}.toml"));
        let text = text
            .replace("ENDPOINT", &endpoint)
            .replace("CONFIG_FILE", &path.display().to_string());
        std::fs::write(&path, &text).unwrap();
        for command in ["check", "run"] {
            let out = Command::new(distributary_bin())
                .args([command, "--config"])
                .arg(&path)
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_REGION", "us-east-1")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{case}: `{command}` accepted:\n{text}"
            );
            assert!(
                stderr.contains(&format!("case{i}.toml")),
                "{case}: `{command}` error does not name the file: {stderr}"
            );
            for w in &words {
                assert!(
                    stderr.contains(w),
                    "{case}: `{command}` error lacks {w:?}: {stderr}"
                );
            }
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        listener.accept().is_err(),
        "a malformed config must not lead to any connection"
    );
}

#[test]
fn a_good_config_checks() {
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config("good.toml", &GOOD.replace("ENDPOINT", "http://127.0.0.1:9"))
        .unwrap();
    let stdout = check_ok(&path);
    assert!(
        stdout.contains("pipeline p: input -> [a, b] via replicate (native)"),
        "{stdout}"
    );
}
