//! The plugin authoring loop: `distributary plugin new` scaffolds a Rust
//! project that passes its own tests, builds to a component and routes its
//! sample records in a dry run with the command it prints; Python and
//! JavaScript projects that componentize-py and componentize-js build and
//! that route their samples; and `route --watch` routes again when the
//! records file changes.

use distributary_e2e::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn distributary(args: &[&str]) -> std::process::Output {
    Command::new(distributary_bin())
        .args(args)
        .output()
        .unwrap()
}

fn run_ok(what: &str, command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The dry-run command `plugin new` printed, as arguments.
fn printed_route_command(stdout: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("distributary route"))
        .unwrap_or_else(|| panic!("no route command printed:\n{stdout}"));
    // The only quoted argument is the JSON plugin config, in single quotes.
    let (before, rest) = line.split_once('\'').expect("a quoted --plugin-config");
    let (config, after) = rest.split_once('\'').expect("closing quote");
    let mut args: Vec<String> = before
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect();
    args.push(config.to_string());
    args.extend(after.split_whitespace().map(String::from));
    args
}

fn dry_run(project: &Path, args: &[String]) -> Vec<serde_json::Value> {
    let out = run_ok(
        "the printed dry run",
        Command::new(distributary_bin())
            .args(args)
            .current_dir(project),
    );
    out.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON line per record"))
        .collect()
}

#[test]
fn a_scaffolded_rust_plugin_tests_builds_and_routes_its_samples() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("tenant-router");
    let sdk = root().join("plugins/sdk").display().to_string();
    let project_arg = project.display().to_string();
    let out = distributary(&[
        "plugin",
        "new",
        "tenant-router",
        "--dir",
        &project_arg,
        "--sdk",
        &sdk,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for expected in [
        "cargo test",
        "cargo build --release --target wasm32-wasip2",
        "distributary route",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} not printed:\n{stdout}"
        );
    }
    // A second time: refused, nothing overwritten.
    let again = distributary(&["plugin", "new", "tenant-router", "--dir", &project_arg]);
    assert_eq!(again.status.code(), Some(2));
    // Same dependency versions as this repository, and its target directory
    // (the dependencies are built already).
    std::fs::copy(root().join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    let cargo = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.args(args)
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", target_dir());
        c
    };
    let tests = run_ok("cargo test", &mut cargo(&["test", "--release"]));
    let _ = tests;
    run_ok(
        "cargo build",
        &mut cargo(&["build", "--release", "--target", "wasm32-wasip2"]),
    );
    // The printed command names the component under ./target; ours is in the shared one.
    let args: Vec<String> = printed_route_command(&stdout)
        .into_iter()
        .map(|a| a.replace("target/", &format!("{}/", target_dir().display())))
        .collect();
    let routed = dry_run(&project, &args);
    let records = std::fs::read_to_string(project.join("records.jsonl")).unwrap();
    assert_eq!(routed.len(), records.lines().count(), "{routed:?}");
    let text = serde_json::to_string(&routed).unwrap();
    assert!(
        text.contains("alerts") && text.contains("archive"),
        "{text}"
    );
}

/// Scaffolds a `lang` project, builds it with `build` (the repository's
/// own componentizer, instead of the project's build.sh which installs one),
/// and checks the printed dry run routes the three sample records.
fn scaffolded_component_routes_its_samples(lang: &str, tool: &str, skip: &str, build: &[&str]) {
    let tool = root().join(tool);
    if !tool.is_file() {
        assert!(
            std::env::var_os(skip).is_some(),
            "{} missing: run scripts/test's build steps (or set {skip}=1)",
            tool.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{lang}-router");
    let project = dir.path().join(&name);
    let out = distributary(&[
        "plugin",
        "new",
        &name,
        "--lang",
        lang,
        "--dir",
        &project.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(project.join("build.sh").is_file() && project.join("test.sh").is_file());
    let output = format!("{}.wasm", name.replace('-', "_"));
    let args: Vec<&str> = build
        .iter()
        .map(|a| if *a == "OUT" { output.as_str() } else { a })
        .collect();
    run_ok(
        &format!("{lang} build"),
        Command::new(&tool).args(&args).current_dir(&project),
    );
    let routed = dry_run(&project, &printed_route_command(&stdout));
    assert_eq!(routed.len(), 3, "{routed:?}");
    let text = serde_json::to_string(&routed[0]).unwrap();
    assert!(
        text.contains("alerts"),
        "the ERROR record goes to alerts: {text}"
    );
    let text = serde_json::to_string(&routed[1..]).unwrap();
    assert!(
        !text.contains("alerts") && text.contains("archive"),
        "{text}"
    );
}

#[test]
fn a_scaffolded_python_plugin_builds_and_routes_its_samples() {
    scaffolded_component_routes_its_samples(
        "python",
        ".cache/py/bin/componentize-py",
        "DISTRIBUTARY_SKIP_PYTHON",
        &[
            "-d",
            "wit",
            "-w",
            "router",
            "componentize",
            "app",
            "-p",
            ".",
            "-o",
            "OUT",
        ],
    );
}

#[test]
fn a_scaffolded_js_plugin_builds_and_routes_its_samples() {
    scaffolded_component_routes_its_samples(
        "js",
        ".cache/js/node_modules/.bin/componentize-js",
        "DISTRIBUTARY_SKIP_JS",
        &[
            "plugin.js",
            "--wit",
            "wit",
            "--world-name",
            "router",
            "--disable",
            "stdio",
            "random",
            "clocks",
            "http",
            "fetch-event",
            "-o",
            "OUT",
        ],
    );
}

#[test]
fn route_watch_routes_again_when_the_records_change() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("records.jsonl");
    std::fs::write(&input, "{\"data\": \"one\", \"partition_key\": \"k\"}\n").unwrap();
    let mut child = Command::new(distributary_bin())
        .args(["route", "--watch", "--outputs", "a,b", "--plugin"])
        .arg(plugin("replicate"))
        .arg("--input")
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next_line = |rx: &std::sync::mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a routed line within 30 s")
    };
    assert!(next_line(&rx).contains("one"));
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(
        &input,
        "{\"data\": \"one\", \"partition_key\": \"k\"}\n{\"data\": \"two\", \"partition_key\": \"k\"}\n",
    )
    .unwrap();
    let start = Instant::now();
    let mut seen_two = false;
    while !seen_two && start.elapsed() < Duration::from_secs(30) {
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            seen_two = line.contains("two");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen_two, "the changed records were not routed again");
}
