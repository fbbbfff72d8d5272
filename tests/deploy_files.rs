//! The deployment examples (`examples/deploy/`) parse, and every flag they
//! pass to `distributary` exists (read from the binary's own `--help`): the
//! systemd unit (INI), the Kubernetes manifests (YAML, several documents),
//! the Dockerfile's CMD; the manifests keep the promises README makes:
//! several replicas on the lease table, a disruption budget, readiness on
//! /readyz, a grace period above `shutdown_timeout_s`, config and plugins
//! from ConfigMaps.

use distributary_e2e::*;
use std::collections::BTreeSet;
use std::process::Command;

fn deploy(name: &str) -> String {
    std::fs::read_to_string(root().join("examples/deploy").join(name)).unwrap()
}

/// Every `--flag` the binary accepts: global ones and `run`'s.
fn known_flags() -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for args in [&["--help"][..], &["run", "--help"][..]] {
        let out = Command::new(distributary_bin())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Some(flag) = word.strip_prefix("--") {
                let flag = flag.split(['=', ',', '<', '[']).next().unwrap_or("");
                flags.insert(format!("--{flag}"));
            }
        }
    }
    flags
}

fn assert_flags_exist(what: &str, args: &[String]) {
    let known = known_flags();
    assert_eq!(
        args.first().map(String::as_str),
        Some("run"),
        "{what}: {args:?}"
    );
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            known.contains(arg),
            "{what}: {arg} is not a flag of distributary ({known:?})"
        );
    }
}

#[test]
fn the_systemd_unit_runs_reloads_and_restarts() {
    let unit = ini::Ini::load_from_str(&deploy("distributary.service")).expect("the unit is INI");
    let service = unit.section(Some("Service")).expect("[Service]");
    let exec = service.get("ExecStart").expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert!(
        words
            .next()
            .is_some_and(|bin| bin.ends_with("/distributary"))
    );
    assert_flags_exist("ExecStart", &words.map(String::from).collect::<Vec<_>>());
    assert!(
        service
            .get("ExecReload")
            .is_some_and(|r| r.contains("-HUP"))
    );
    assert!(service.get("Restart").is_some());
    assert!(service.get("StateDirectory").is_some());
    let stop: u64 = service
        .get("TimeoutStopSec")
        .and_then(|t| t.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop > 20,
        "TimeoutStopSec {stop} s must exceed the default shutdown_timeout_s"
    );
    assert!(unit.section(Some("Install")).is_some());
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_and_ships_the_plugins() {
    let text = deploy("Dockerfile");
    assert!(text.matches("\nFROM ").count() + usize::from(text.starts_with("FROM ")) >= 2);
    assert!(
        text.lines()
            .any(|l| l.starts_with("USER ") && !l.contains("root"))
    );
    assert!(text.contains("/usr/share/distributary/plugins/"));
    let cmd = text
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("CMD");
    let args: Vec<String> = serde_json::from_str(cmd).expect("CMD in JSON form");
    assert_flags_exist("CMD", &args);
}

#[test]
fn the_kubernetes_manifests_keep_the_promises() {
    let text = deploy("kubernetes.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .collect();
    let of_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let config_map = of_kind("ConfigMap");
    let toml_text = config_map["data"]["distributary.toml"]
        .as_str()
        .expect("config");
    let config: toml::Value = toml::from_str(toml_text).expect("the config is TOML");
    assert_eq!(config["checkpoint"]["store"].as_str(), Some("dynamodb"));
    let shutdown_timeout = config["shutdown_timeout_s"].as_integer().unwrap_or(20);

    let deployment = of_kind("Deployment");
    assert!(
        deployment["spec"]["replicas"]
            .as_u64()
            .is_some_and(|n| n >= 2)
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("grace period");
    assert!(
        grace > shutdown_timeout,
        "grace {grace} s <= shutdown_timeout_s"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<String> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("an arg").to_string())
        .collect();
    assert_flags_exist("Deployment args", &args);
    assert!(args.iter().any(|a| a == "--watch-config"));
    let config_path = args
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("--config PATH");
    let mounts = container["volumeMounts"].as_sequence().expect("mounts");
    let volumes = pod["volumes"].as_sequence().expect("volumes");
    let from_config_map = |path: &str| {
        mounts.iter().any(|m| {
            let mounted = m["mountPath"].as_str().unwrap_or("/nowhere");
            path.starts_with(mounted)
                && volumes
                    .iter()
                    .any(|v| v["name"] == m["name"] && v["configMap"].is_mapping())
        })
    };
    assert!(
        from_config_map(config_path),
        "{config_path} not from a ConfigMap"
    );
    let plugin = config["pipelines"][0]["plugin"].as_str().expect("a plugin");
    assert!(from_config_map(plugin), "{plugin} not from a ConfigMap");
    let pdb = of_kind("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["selector"], deployment["spec"]["selector"]);
}
