//! The operations files: the Grafana dashboard is JSON a Grafana can load
//! (panels with PromQL targets), the alert rules are YAML with the shape of
//! a Prometheus rule file (`promtool check rules` runs in scripts/check-ops),
//! and every `distributary_*` series either names exists on a live
//! `/metrics` (a run with a plugin pipeline and the lease table, so every
//! family is there).

use distributary_e2e::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The `distributary_*` names in a PromQL expression.
fn series_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("distributary_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("examples/grafana/distributary.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {} has no targets", panel["title"]));
        assert!(
            !targets.is_empty(),
            "panel {} has no targets",
            panel["title"]
        );
        for t in targets {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    exprs
}

fn rule_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("examples/prometheus/alerts.yml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts.yml is YAML");
    let mut exprs = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        assert!(group["name"].is_string());
        for rule in group["rules"].as_sequence().expect("rules") {
            assert!(rule["alert"].is_string(), "a rule without a name: {rule:?}");
            exprs.push(rule["expr"].as_str().expect("expr").to_string());
        }
    }
    exprs
}

/// Whether family `name` is on the page: a sample, or a declared family
/// (a counter `x_total` is declared as `x`).
fn exposed(metrics: &str, name: &str) -> bool {
    let family = name.strip_suffix("_total").unwrap_or(name);
    metrics.lines().any(|l| {
        l.starts_with(&format!("{name} "))
            || l.starts_with(&format!("{name}{{"))
            || l.starts_with(&format!("# TYPE {family} "))
            || l.starts_with(&format!("# TYPE {name} "))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboard_and_alerts_name_exists() {
    let mut names = BTreeSet::new();
    let exprs: Vec<String> = dashboard_exprs().into_iter().chain(rule_exprs()).collect();
    for expr in &exprs {
        names.extend(series_in(expr));
    }
    assert!(names.len() > 20, "only {names:?}");

    let (kinesis, _client) = kinesis_with_streams(&[("input", 2), ("out-a", 1), ("out-b", 1)])
        .await
        .unwrap();
    let dynamo = LocalDynamo::start_moto().unwrap();
    let dir = TestDir::new().unwrap();
    let port = free_port_pair();
    let text = format!(
        "{}\n[server]\nlisten = \"127.0.0.1:{port}\"\n",
        config::simple(
            &kinesis.endpoint,
            &[("a", "out-a"), ("b", "out-b")],
            &format!(
                "plugin = {:?}\nplugin_config = {{ field = \"t\", default = \"b\" }}\n",
                plugin("route_by_field").display().to_string()
            ),
        )
        .replace(
            "[checkpoint]\npath = \"state\"",
            &format!(
                "[checkpoint]\nstore = \"dynamodb\"\ntable = \"ops\"\ncreate_table = true\nendpoint_url = \"{}\"\nfailover_ms = 3000\npath = \"state\"",
                dynamo.endpoint
            ),
        )
    );
    let config = dir.write_config("ops.toml", &text).unwrap();
    let running = Distributary::start(&config).unwrap();
    let start = Instant::now();
    let metrics = loop {
        if let Some(page) = scrape_metrics(port)
            && page.contains("distributary_leases_held{")
            && page.contains("distributary_plugin_version{")
        {
            break page;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no complete /metrics; log:\n{}",
            running.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let missing: Vec<&String> = names.iter().filter(|n| !exposed(&metrics, n)).collect();
    assert!(
        missing.is_empty(),
        "named by the dashboard or the alerts but not on /metrics: {missing:?}\n{metrics}"
    );
    running.stop_cleanly();
}
