//! The output writers of a run: one per named output (`stream = ...`) and one
//! per stream currently matching a `stream_pattern` output, each shared by
//! every pipeline that lists it. A discovered stream is an output named like
//! the stream itself; that is the name plugins see and route to. A live
//! reload builds a new catalog with `reopen`, which keeps the writer (queue,
//! window, counters) of every output whose definition did not change.
//!
//! Invariants: a discovered stream gets a writer only once DescribeStreamSummary
//! shows it ACTIVE or UPDATING (until then it is left for the next refresh);
//! a named output's stream must exist at start-up (an endpoint that does not
//! answer is waited for, `startup.rs`); a
//! pipeline's expansion never includes its own source stream or dead-letter
//! stream (a pattern that matches them would feed records back), nor the
//! same name twice.

use super::discovery::matching_streams;
use crate::config::{Config, Output};
use crate::kinesis::{ClientSettings, StreamRef, client_and_credentials};
use crate::server::Readiness;
use crate::shutdown::Shutdown;
use crate::sink::{KinesisPut, OutputWriter};
use crate::startup::{StartFailure, until_reachable};
use anyhow::Context;
use aws_credential_types::provider::SharedCredentialsProvider;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// A `stream_pattern` output: its pattern and the writers of its matches.
struct PatternOutput {
    pattern: glob::Pattern,
    text: String,
    client: aws_sdk_kinesis::Client,
    credentials: Option<SharedCredentialsProvider>,
    config: Output,
    /// Matching streams, by name.
    matched: Mutex<BTreeMap<String, Arc<OutputWriter>>>,
}

/// What a refresh of one pattern output changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<String>,
    pub dropped: Vec<String>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.dropped.is_empty()
    }
}

pub struct Catalog {
    /// The configuration file, for error messages.
    file: String,
    named: BTreeMap<String, Arc<OutputWriter>>,
    patterns: BTreeMap<String, Arc<PatternOutput>>,
    /// Each output's definition, to tell on a reload which writers stay.
    definitions: BTreeMap<String, Output>,
}

impl Catalog {
    /// Builds a client per output, checks every named stream, and lists the
    /// streams of every pattern once. A missing stream or a refused request
    /// is a start-up error naming the output; an endpoint that does not
    /// answer (or throttles, or fails with 5xx) is retried until it does,
    /// shown on `/readyz` meanwhile.
    pub async fn open(
        config: &Config,
        readiness: &Readiness,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Catalog> {
        Self::reopen(None, config, readiness, shutdown).await
    }

    /// The catalog of `config`, keeping from `previous` (the running one)
    /// the writer of every output whose definition did not change, with its
    /// queue, window and counters; the others are opened as by `open`.
    pub async fn reopen(
        previous: Option<&Catalog>,
        config: &Config,
        readiness: &Readiness,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Catalog> {
        let file = config.file.display().to_string();
        let mut catalog = Catalog {
            file: file.clone(),
            named: BTreeMap::new(),
            patterns: BTreeMap::new(),
            definitions: BTreeMap::new(),
        };
        for (name, output) in &config.outputs {
            if let Some(previous) = previous {
                if let Some(writer) = previous
                    .named
                    .get(name)
                    .filter(|_| previous.definitions.get(name) == Some(output))
                {
                    catalog.named.insert(name.clone(), writer.clone());
                    catalog.definitions.insert(name.clone(), output.clone());
                    continue;
                }
                if let Some(pattern) = previous.patterns.get(name).filter(|p| &p.config == output) {
                    catalog.patterns.insert(name.clone(), pattern.clone());
                    catalog.definitions.insert(name.clone(), output.clone());
                    continue;
                }
            }
            catalog
                .open_output(&file, name, output, readiness, shutdown)
                .await?;
        }
        Ok(catalog)
    }

    async fn open_output(
        &mut self,
        file: &str,
        name: &str,
        output: &Output,
        readiness: &Readiness,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        let key = format!("{file}: outputs.{name}");
        let (client, credentials) = client_and_credentials(&ClientSettings {
            region: output.region.clone(),
            endpoint_url: output.endpoint_url.clone(),
            role_arn: output.role_arn.clone(),
            external_id: output.external_id.clone(),
            ca_bundle: crate::tls::bundle(output.ca_bundle.as_deref()),
        })
        .await
        .with_context(|| format!("{key}.ca_bundle"))?;
        match (&output.stream, &output.stream_pattern) {
            (Some(stream), _) => {
                let stream = StreamRef::parse(stream);
                let what = format!("outputs.{name}");
                let writer = until_reachable(&what, readiness, shutdown, || {
                    open_writer(
                        &client,
                        credentials.as_ref(),
                        name,
                        stream.clone(),
                        output,
                        false,
                    )
                })
                .await
                .with_context(|| key.clone())?
                .with_context(|| format!("{key}: the stream is being deleted"))?;
                self.named.insert(name.to_string(), Arc::new(writer));
            }
            (None, Some(text)) => {
                let pattern =
                    glob::Pattern::new(text).with_context(|| format!("{key}.stream_pattern"))?;
                let pattern_output = PatternOutput {
                    pattern,
                    text: text.clone(),
                    client,
                    credentials,
                    config: output.clone(),
                    matched: Mutex::default(),
                };
                self.patterns
                    .insert(name.to_string(), Arc::new(pattern_output));
                // The pattern is valid (checked above), so a failed
                // listing is taken as an outage and waited for.
                let what = format!("outputs.{name}.stream_pattern");
                let change = until_reachable(&what, readiness, shutdown, || async {
                    self.refresh(name)
                        .await
                        .map_err(|e| StartFailure::Outage(format!("{e:#}")))
                })
                .await
                .with_context(|| format!("{key}.stream_pattern"))?;
                if change.added.is_empty() {
                    tracing::warn!(output = %name, pattern = %text, "no stream matches the pattern yet; its pipelines wait for one");
                }
            }
            (None, None) => anyhow::bail!("{key}.stream: missing"),
        }
        self.definitions.insert(name.to_string(), output.clone());
        Ok(())
    }

    /// The writer of a named output (dead letters are always named).
    pub fn named(&self, name: &str) -> Option<Arc<OutputWriter>> {
        self.named.get(name).cloned()
    }

    /// The pattern outputs: (name, discover interval in seconds).
    pub fn patterns(&self) -> Vec<(String, u64)> {
        self.patterns
            .iter()
            .map(|(name, p)| (name.clone(), p.config.discover_interval_s))
            .collect()
    }

    pub fn is_pattern(&self, name: &str) -> bool {
        self.patterns.contains_key(name)
    }

    /// Every writer that exists now: named and discovered (for `/metrics`).
    pub fn writers(&self) -> Vec<Arc<OutputWriter>> {
        let mut all: Vec<Arc<OutputWriter>> = self.named.values().cloned().collect();
        for p in self.patterns.values() {
            if let Ok(matched) = p.matched.lock() {
                all.extend(matched.values().cloned());
            }
        }
        all
    }

    /// A pipeline's outputs now, in routing order: each configured output in
    /// its listed order, a pattern output standing for its matches sorted by
    /// name. Streams in `exclude` (short names) and repeated names are left out.
    pub fn expand(&self, configured: &[String], exclude: &[String]) -> Vec<Arc<OutputWriter>> {
        // Names and streams the pipeline's named outputs already take.
        let mut taken: BTreeSet<String> = configured
            .iter()
            .filter_map(|name| self.named.get(name))
            .flat_map(|w| [w.name.clone(), w.stream.short_name().to_string()])
            .collect();
        let mut expanded = Vec::new();
        for name in configured {
            if let Some(writer) = self.named.get(name) {
                expanded.push(writer.clone());
                continue;
            }
            let Some(pattern) = self.patterns.get(name) else {
                continue;
            };
            let Ok(matched) = pattern.matched.lock() else {
                continue;
            };
            for (stream, writer) in matched.iter() {
                if exclude.iter().any(|e| e == stream) {
                    tracing::warn!(output = %name, %stream, "the pattern matches this pipeline's source or dead-letter stream; not writing to it");
                } else if taken.insert(stream.clone()) {
                    expanded.push(writer.clone());
                }
            }
        }
        expanded
    }

    /// Lists the streams matching pattern output `name` and updates its
    /// writers: new active matches get one, streams no longer listed (or
    /// being deleted) lose theirs. Errors leave the matches as they were.
    pub async fn refresh(&self, name: &str) -> anyhow::Result<Change> {
        let Some(p) = self.patterns.get(name) else {
            anyhow::bail!("{}: outputs.{name}: not a stream_pattern output", self.file);
        };
        let listed = matching_streams(&p.client, &p.pattern).await?;
        let known: BTreeSet<String> = match p.matched.lock() {
            Ok(matched) => matched.keys().cloned().collect(),
            Err(_) => BTreeSet::new(),
        };
        let mut change = Change::default();
        let mut opened = Vec::new();
        let new = listed
            .iter()
            .filter(|(stream, usable)| **usable && !known.contains(*stream));
        for (stream, _) in new {
            let writer = open_writer(
                &p.client,
                p.credentials.as_ref(),
                stream,
                StreamRef::parse(stream),
                &p.config,
                true,
            )
            .await;
            match writer {
                Ok(Some(writer)) => opened.push(Arc::new(writer.discovered())),
                Ok(None) => {
                    tracing::info!(output = %name, %stream, "matching stream is not active yet");
                }
                Err(StartFailure::Outage(error)) => {
                    tracing::warn!(output = %name, %stream, %error, "cannot use matching stream; will look again");
                }
                Err(StartFailure::Fatal(e)) => {
                    tracing::warn!(output = %name, %stream, error = %format!("{e:#}"), "cannot use matching stream; will look again");
                }
            }
        }
        let mut matched = p
            .matched
            .lock()
            .map_err(|_| anyhow::anyhow!("outputs.{name}: discovery state poisoned"))?;
        matched.retain(|stream, _| {
            let keep = listed.get(stream).copied().unwrap_or(false);
            if !keep {
                change.dropped.push(stream.clone());
            }
            keep
        });
        for writer in opened {
            change.added.push(writer.name.clone());
            matched.insert(writer.name.clone(), writer);
        }
        if !change.is_empty() {
            tracing::info!(output = %name, pattern = %p.text, added = ?change.added, dropped = ?change.dropped, streams = matched.len(), "output streams discovered");
        }
        Ok(change)
    }
}

/// A writer for `stream`, named `name`; None if the stream is being deleted,
/// or with `only_active`, also while it is being created. Its largest record is the stream's own
/// limit, or `max_record_bytes` if that is lower.
async fn open_writer(
    client: &aws_sdk_kinesis::Client,
    credentials: Option<&SharedCredentialsProvider>,
    name: &str,
    stream: StreamRef,
    output: &Output,
    only_active: bool,
) -> Result<Option<OutputWriter>, StartFailure> {
    use aws_sdk_kinesis::types::StreamStatus;
    const DEFAULT_MAX_RECORD_KIB: i32 = 1024;
    let summary = client
        .describe_stream_summary()
        .set_stream_name(stream.name().map(str::to_string))
        .set_stream_arn(stream.arn().map(str::to_string))
        .send()
        .await
        .map_err(|e| {
            let endpoint = crate::tls::kinesis_endpoint(
                output.endpoint_url.as_deref(),
                output.region.as_deref(),
            );
            StartFailure::of_sdk(&e, &format!("stream {stream} at {endpoint}"))
        })?;
    let Some(summary) = summary.stream_description_summary() else {
        return Err(StartFailure::Outage(format!(
            "stream {stream}: DescribeStreamSummary returned no description"
        )));
    };
    match summary.stream_status() {
        StreamStatus::Deleting => return Ok(None),
        StreamStatus::Creating if only_active => return Ok(None),
        _ => {}
    }
    let stream_max = summary
        .max_record_size_in_kib()
        .filter(|&kib| kib > 0)
        .unwrap_or(DEFAULT_MAX_RECORD_KIB) as usize
        * 1024;
    let max_record_bytes = match output.max_record_bytes {
        Some(configured) if configured > stream_max => {
            tracing::warn!(output = %name, configured, stream_max, "max_record_bytes is above the stream's limit; using the stream's");
            stream_max
        }
        Some(configured) => configured,
        None => stream_max,
    };
    let bundle = crate::tls::bundle(output.ca_bundle.as_deref());
    let transport = KinesisPut::new(
        client,
        credentials,
        output.endpoint_url.clone(),
        &stream,
        bundle.as_deref(),
    )
    .await
    .map_err(|e| StartFailure::Fatal(e.context(format!("outputs.{name}: PutRecords path"))))?;
    let writer = OutputWriter::new(
        name.to_string(),
        stream,
        transport,
        max_record_bytes,
        output.max_request_bytes.max(max_record_bytes),
    )
    .with_max_requests_in_flight(output.max_requests_in_flight)
    .with_ordering(output.ordering);
    let writer = match output.pace_writes {
        true => writer.paced(client.clone()),
        false => writer,
    };
    Ok(Some(if output.aggregate {
        writer.aggregating(
            client.clone(),
            output.aggregate_max_bytes.min(max_record_bytes),
        )
    } else {
        writer
    }))
}
