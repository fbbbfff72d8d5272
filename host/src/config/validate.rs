//! Cross-reference and value checks that serde cannot express. Each check
//! returns the dotted key it is about and the problem.

use super::types::*;
use std::collections::HashSet;

type Problem = (String, String);

pub(super) fn validate(config: &Config) -> Result<(), Problem> {
    if config.pipelines.is_empty() {
        return Err((
            "pipelines".into(),
            "no [[pipelines]] defined: nothing to run".into(),
        ));
    }
    for (name, source) in &config.sources {
        check_source(name, source)?;
    }
    for (name, output) in &config.outputs {
        check_output(name, output)?;
    }
    check_checkpoint(&config.checkpoint)?;
    check_ca_bundles(config)?;
    if config.buffer.max_bytes < 1 << 20 {
        return Err((
            "buffer.max_bytes".into(),
            "must be at least 1048576 (1 MiB)".into(),
        ));
    }
    let mut names = HashSet::new();
    for (i, pipeline) in config.pipelines.iter().enumerate() {
        let key = format!("pipelines[{i}]");
        if pipeline.name.trim().is_empty() {
            return Err((format!("{key}.name"), "must not be empty".into()));
        }
        if !names.insert(pipeline.name.as_str()) {
            return Err((
                format!("{key}.name"),
                format!("duplicate pipeline name {:?}", pipeline.name),
            ));
        }
        check_pipeline(config, &format!("{key} ({})", pipeline.name), pipeline)?;
    }
    if let Some(server) = &config.server {
        server.listen.parse::<std::net::SocketAddr>().map_err(|e| {
            (
                "server.listen".to_string(),
                format!("{:?} is not an address:port: {e}", server.listen),
            )
        })?;
    }
    Ok(())
}

/// Every CA bundle named (by key, or by `AWS_CA_BUNDLE`) is a file of PEM
/// certificates.
fn check_ca_bundles(config: &Config) -> Result<(), Problem> {
    let keyed =
        config
            .sources
            .iter()
            .filter_map(|(n, s)| Some((format!("sources.{n}.ca_bundle"), s.ca_bundle.clone()?)))
            .chain(config.outputs.iter().filter_map(|(n, o)| {
                Some((format!("outputs.{n}.ca_bundle"), o.ca_bundle.clone()?))
            }))
            .chain(
                config
                    .checkpoint
                    .ca_bundle
                    .clone()
                    .map(|b| ("checkpoint.ca_bundle".to_string(), b)),
            )
            .chain(
                std::env::var_os("AWS_CA_BUNDLE")
                    .filter(|v| !v.is_empty())
                    .map(|b| ("AWS_CA_BUNDLE (environment)".to_string(), b.into())),
            );
    for (key, path) in keyed {
        let text =
            std::fs::read(&path).map_err(|e| (key.clone(), format!("{}: {e}", path.display())))?;
        if !text
            .windows(27)
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err((key, format!("{}: holds no PEM certificate", path.display())));
        }
    }
    Ok(())
}

fn check_source(name: &str, source: &Source) -> Result<(), Problem> {
    let key = |k: &str| format!("sources.{name}.{k}");
    if source.stream.trim().is_empty() {
        return Err((key("stream"), "must name a stream (name or ARN)".into()));
    }
    match (source.start_position, &source.start_timestamp) {
        (StartPosition::AtTimestamp, None) => {
            return Err((
                key("start_timestamp"),
                "required with start_position = \"at_timestamp\"".into(),
            ));
        }
        (StartPosition::AtTimestamp, Some(ts)) => {
            parse_timestamp(ts).map_err(|e| (key("start_timestamp"), e))?;
        }
        (_, Some(_)) => {
            return Err((
                key("start_timestamp"),
                "only used with start_position = \"at_timestamp\"".into(),
            ));
        }
        (_, None) => {}
    }
    if source.reader == ReaderKind::Efo && source.efo_consumer_name.trim().is_empty() {
        return Err((key("efo_consumer_name"), "must not be empty".into()));
    }
    if source.poll_interval_ms == 0 {
        return Err((key("poll_interval_ms"), "must be at least 1".into()));
    }
    if !(1..=10_000).contains(&source.max_records_per_read) {
        return Err((
            key("max_records_per_read"),
            "must be between 1 and 10000".into(),
        ));
    }
    if source.shard_discovery_interval_s == 0 {
        return Err((
            key("shard_discovery_interval_s"),
            "must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Parses an RFC 3339 timestamp such as `2026-11-25T00:00:00Z`.
pub fn parse_timestamp(text: &str) -> Result<aws_smithy_types::DateTime, String> {
    aws_smithy_types::DateTime::from_str(text, aws_smithy_types::date_time::Format::DateTime)
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp: {e}"))
}

fn check_output(name: &str, output: &Output) -> Result<(), Problem> {
    let key = |k: &str| format!("outputs.{name}.{k}");
    match (&output.stream, &output.stream_pattern) {
        (None, None) => return Err((key("stream"), "required (a stream name or ARN)".into())),
        (Some(_), Some(_)) => {
            return Err((
                key("stream_pattern"),
                "give either stream or stream_pattern, not both".into(),
            ));
        }
        (None, Some(pattern)) => check_pattern(pattern).map_err(|e| (key("stream_pattern"), e))?,
        (Some(s), None) if s.trim().is_empty() => {
            return Err((key("stream"), "must not be empty".into()));
        }
        _ => {}
    }
    if output.stream_pattern.is_some() && output.discover_interval_s == 0 {
        return Err((key("discover_interval_s"), "must be at least 1".into()));
    }

    if output.external_id.is_some() && output.role_arn.is_none() {
        return Err((key("external_id"), "only used with role_arn".into()));
    }
    let max_record_bytes = output.max_record_bytes.unwrap_or(1 << 20);
    if !(1024..=10 * 1024 * 1024).contains(&max_record_bytes) {
        return Err((
            key("max_record_bytes"),
            "must be between 1024 and 10485760".into(),
        ));
    }
    if output.aggregate && !(1024..=max_record_bytes).contains(&output.aggregate_max_bytes) {
        return Err((
            key("aggregate_max_bytes"),
            format!("must be between 1024 and max_record_bytes ({max_record_bytes})"),
        ));
    }
    if output.max_request_bytes < max_record_bytes {
        return Err((
            key("max_request_bytes"),
            "must be at least max_record_bytes".into(),
        ));
    }
    if !(1..=64).contains(&output.max_requests_in_flight) {
        return Err((
            key("max_requests_in_flight"),
            "must be between 1 and 64".into(),
        ));
    }
    Ok(())
}

/// A `stream_pattern` is a glob over stream names: `*`, `?` and `[...]`.
fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if pattern.starts_with("arn:") {
        return Err("matches stream names, not ARNs (e.g. \"app-output-*\")".into());
    }
    glob::Pattern::new(pattern)
        .map(|_| ())
        .map_err(|e| format!("{pattern:?} is not a valid pattern: {e}"))
}

fn check_checkpoint(checkpoint: &Checkpoint) -> Result<(), Problem> {
    if checkpoint.store == StoreKind::Dynamodb {
        if checkpoint.table.trim().is_empty() {
            return Err((
                "checkpoint.table".into(),
                "must name the lease table".into(),
            ));
        }
        // DynamoDB table names: 3 to 255 of [A-Za-z0-9_.-].
        let valid = (3..=255).contains(&checkpoint.table.len())
            && checkpoint
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err((
                "checkpoint.table".into(),
                format!(
                    "{:?} is not a DynamoDB table name (3 to 255 of A-Z a-z 0-9 _ . -)",
                    checkpoint.table
                ),
            ));
        }
        if checkpoint.failover_ms < 1000 {
            return Err((
                "checkpoint.failover_ms".into(),
                "must be at least 1000 (renewals run every failover_ms / 3)".into(),
            ));
        }
        if checkpoint
            .instance_id
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            return Err(("checkpoint.instance_id".into(), "must not be empty".into()));
        }
    }
    if checkpoint.interval_ms == 0 {
        return Err(("checkpoint.interval_ms".into(), "must be at least 1".into()));
    }
    Ok(())
}

fn check_pipeline(config: &Config, key: &str, pipeline: &Pipeline) -> Result<(), Problem> {
    let k = |sub: &str| format!("{key}.{sub}");
    if !config.sources.contains_key(&pipeline.source) {
        return Err((
            k("source"),
            format!(
                "unknown source {:?} (defined: {})",
                pipeline.source,
                names(config.sources.keys())
            ),
        ));
    }
    if pipeline.outputs.is_empty() {
        return Err((k("outputs"), "must list at least one output".into()));
    }
    let mut seen = HashSet::new();
    for output in &pipeline.outputs {
        if !config.outputs.contains_key(output) {
            return Err((
                k("outputs"),
                format!(
                    "unknown output {output:?} (defined: {})",
                    names(config.outputs.keys())
                ),
            ));
        }
        if !seen.insert(output) {
            return Err((k("outputs"), format!("output {output:?} listed twice")));
        }
    }
    match (pipeline.on_error, &pipeline.dead_letter) {
        (OnError::DeadLetter, None) => {
            return Err((
                k("dead_letter"),
                "required with on_error = \"dead_letter\": name the output for dead letters".into(),
            ));
        }
        (OnError::DeadLetter, Some(dlq)) => {
            if !config.outputs.contains_key(dlq) {
                return Err((k("dead_letter"), format!("unknown output {dlq:?}")));
            }
            if config
                .outputs
                .get(dlq)
                .is_some_and(|o| o.stream_pattern.is_some())
            {
                return Err((
                    k("dead_letter"),
                    format!(
                        "{dlq:?} is a stream_pattern output; dead letters need one named stream"
                    ),
                ));
            }
            if pipeline.outputs.contains(dlq) {
                return Err((
                    k("dead_letter"),
                    format!(
                        "{dlq:?} is also a routing output of this pipeline; use a separate stream"
                    ),
                ));
            }
        }
        (_, Some(_)) => {
            return Err((
                k("dead_letter"),
                "only used with on_error = \"dead_letter\"".into(),
            ));
        }
        (_, None) => {}
    }
    if let Some(plugin) = &pipeline.plugin {
        if !plugin.is_file() {
            return Err((k("plugin"), format!("{} is not a file", plugin.display())));
        }
    } else if pipeline.plugin_config.is_some() {
        return Err((k("plugin_config"), "given without a plugin".into()));
    }
    if pipeline.limits.memory_mb == 0 || pipeline.limits.memory_mb > 4096 {
        return Err((k("limits.memory_mb"), "must be between 1 and 4096".into()));
    }
    if !(1..=64).contains(&pipeline.buffer_batches) {
        return Err((k("buffer_batches"), "must be between 1 and 64".into()));
    }
    if pipeline.limits.batch_timeout_ms == 0 {
        return Err((k("limits.batch_timeout_ms"), "must be at least 1".into()));
    }
    Ok(())
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = keys.map(String::as_str).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}
