//! Wires a validated configuration into running tasks, and shuts them down.
//!
//! Start-up order, everything that can fail before any record is read:
//! plugins compiled and initialised, clients built, every source and output
//! stream checked to exist, the state directory locked and loaded. Then one
//! `SourceRunner` per source and a checkpoint flusher. On shutdown: sources
//! stop reading and finish the batches they are delivering, then the final
//! checkpoint is written.

use crate::checkpoint::{Checkpoints, FileStore};
use crate::config::{Config, Pipeline as PipelineConfig};
use crate::kinesis::{ClientSettings, StreamRef, client, describe};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::plugin::{ArtifactCache, LivePlugin, PluginSpec};
use crate::router::Router;
use crate::server::{Readiness, serve};
use crate::shutdown::Shutdown;
use crate::sink::{KinesisTransport, OutputWriter};
use crate::source::{SourceRunner, SourceStats};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request with every pipeline healthy.
    Stopped,
    /// One or more pipelines halted (their names).
    Halted(Vec<String>),
}

/// Loads the plugin of every pipeline that has one (compile through `cache`,
/// link, `init`).
pub fn load_plugins(
    config: &Config,
    cache: Option<&ArtifactCache>,
) -> anyhow::Result<BTreeMap<String, Arc<LivePlugin>>> {
    let mut plugins = BTreeMap::new();
    for (i, p) in config.pipelines.iter().enumerate() {
        if let Some(path) = &p.plugin {
            let spec = PluginSpec {
                pipeline: p.name.clone(),
                path: path.clone(),
                config_json: p.plugin_config_json(),
                outputs: p.outputs.clone(),
                limits: p.limits.clone(),
            };
            let plugin = LivePlugin::load(spec, cache.cloned()).with_context(|| {
                format!(
                    "{}: pipelines[{i}] ({}).plugin",
                    config.file.display(),
                    p.name
                )
            })?;
            plugins.insert(p.name.clone(), Arc::new(plugin));
        }
    }
    Ok(plugins)
}

/// Checks that the stream exists; returns its largest accepted record, in bytes.
async fn check_stream_exists(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    key: &str,
) -> anyhow::Result<usize> {
    const DEFAULT_MAX_RECORD_KIB: i32 = 1024;
    client
        .describe_stream_summary()
        .set_stream_name(stream.name().map(str::to_string))
        .set_stream_arn(stream.arn().map(str::to_string))
        .send()
        .await
        .map(|out| {
            let kib = out
                .stream_description_summary()
                .and_then(|s| s.max_record_size_in_kib())
                .filter(|&kib| kib > 0)
                .unwrap_or(DEFAULT_MAX_RECORD_KIB);
            kib as usize * 1024
        })
        .map_err(|e| anyhow::anyhow!("{key}: stream {stream}: {}", describe(&e)))
}

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<Outcome> {
    let file = config.file.display().to_string();
    let readiness = Arc::new(Readiness::default());
    let metrics_slot: crate::server::MetricsSlot = Arc::default();
    let server = match &config.server {
        Some(server) => {
            let listen: std::net::SocketAddr = server
                .listen
                .parse()
                .with_context(|| format!("{file}: server.listen"))?;
            let task = serve(listen, readiness.clone(), metrics_slot.clone())
                .await
                .with_context(|| format!("{file}: server.listen: cannot listen on {listen}"))?;
            Some(task)
        }
        None => None,
    };
    let plugins = {
        let config_ref = &config;
        let cache = ArtifactCache::new(config.checkpoint.path.join("plugin-cache"));
        tokio::task::block_in_place(|| load_plugins(config_ref, Some(&cache)))?
    };
    let _plugin_watch = crate::plugin::watch(plugins.values().cloned().collect(), shutdown.clone())
        .with_context(|| format!("{file}: pipelines: watching plugin files"))?;

    let mut writers: BTreeMap<String, Arc<OutputWriter>> = BTreeMap::new();
    for (name, output) in &config.outputs {
        let Some(stream) = &output.stream else {
            bail!("{file}: outputs.{name}.stream: missing")
        };
        let settings = ClientSettings {
            region: output.region.clone(),
            endpoint_url: output.endpoint_url.clone(),
            role_arn: output.role_arn.clone(),
            external_id: output.external_id.clone(),
        };
        let client = client(&settings).await;
        let stream = StreamRef::parse(stream);
        let stream_max =
            check_stream_exists(&client, &stream, &format!("{file}: outputs.{name}")).await?;
        let max_record_bytes = match output.max_record_bytes {
            Some(configured) if configured > stream_max => {
                tracing::warn!(output = %name, configured, stream_max, "max_record_bytes is above the stream's limit; using the stream's");
                stream_max
            }
            Some(configured) => configured,
            None => stream_max,
        };
        let writer = OutputWriter::new(
            name.clone(),
            stream,
            KinesisTransport(client),
            max_record_bytes,
            output.max_request_bytes.max(max_record_bytes),
        );
        writers.insert(name.clone(), Arc::new(writer));
    }

    let store = FileStore::open(&config.checkpoint.path)
        .with_context(|| format!("{file}: checkpoint.path"))?;
    let checkpoints =
        Arc::new(Checkpoints::open(store).with_context(|| format!("{file}: checkpoint.path"))?);

    let pipelines: Vec<Arc<Pipeline>> = config
        .pipelines
        .iter()
        .map(|p| build_pipeline(p, &plugins, &writers))
        .collect::<anyhow::Result<_>>()?;

    let mut sources = Vec::new();
    let mut source_stats = Vec::new();
    for (name, source) in &config.sources {
        let on_source: Vec<Arc<Pipeline>> = pipelines
            .iter()
            .filter(|p| &p.source == name)
            .cloned()
            .collect();
        if on_source.is_empty() {
            tracing::warn!(source = %name, "no pipeline reads this source; not reading it");
            continue;
        }
        let settings = ClientSettings {
            region: source.region.clone(),
            endpoint_url: source.endpoint_url.clone(),
            ..Default::default()
        };
        let client = client(&settings).await;
        let stream = StreamRef::parse(&source.stream);
        check_stream_exists(&client, &stream, &format!("{file}: sources.{name}")).await?;
        let stats = Arc::new(SourceStats::default());
        sources.push(Arc::new(SourceRunner {
            name: Arc::from(name.as_str()),
            stream,
            client,
            config: source.clone(),
            pipelines: on_source,
            checkpoints: checkpoints.clone(),
            shutdown: shutdown.clone(),
            stats: stats.clone(),
        }));
        source_stats.push((name.clone(), stats));
    }

    tracing::info!(
        pipelines = pipelines.len(),
        sources = sources.len(),
        "distributary running"
    );
    let _ = metrics_slot.set(
        Metrics {
            pipelines: pipelines.clone(),
            plugins: plugins.clone(),
            writers: writers.values().cloned().collect(),
            sources: source_stats,
        }
        .into_registry(),
    );
    readiness.running(pipelines.clone());
    let flusher = tokio::spawn(flush_loop(
        checkpoints.clone(),
        Duration::from_millis(config.checkpoint.interval_ms),
        shutdown.clone(),
    ));
    let mut running = tokio::task::JoinSet::new();
    for source in sources {
        running.spawn(source.run());
    }
    // Shuts down when every pipeline halted; turns /readyz off as soon as shutdown begins.
    let watcher = {
        let (pipelines, shutdown, readiness) =
            (pipelines.clone(), shutdown.clone(), readiness.clone());
        tokio::spawn(async move {
            loop {
                if pipelines.iter().all(|p| p.is_halted()) {
                    tracing::error!("every pipeline halted; shutting down");
                    shutdown.request();
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.requested() => {
                        readiness.stopping();
                        return;
                    }
                }
            }
        })
    };
    while let Some(joined) = running.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "a source task failed");
        }
    }
    shutdown.request();
    readiness.stopping();
    watcher.abort();
    let _ = flusher.await;
    tokio::task::block_in_place(|| checkpoints.flush()).context("writing the final checkpoint")?;
    tracing::info!("final checkpoint written");
    for writer in writers.values() {
        let s = &writer.stats;
        use std::sync::atomic::Ordering::Relaxed;
        tracing::info!(
            output = %writer.name,
            records = s.records_written.load(Relaxed),
            requests = s.requests.load(Relaxed),
            entries_retried = s.entries_retried.load(Relaxed),
            requests_retried = s.requests_retried.load(Relaxed),
            "output totals"
        );
    }
    if let Some(server) = server {
        server.abort();
    }
    let halted: Vec<String> = pipelines
        .iter()
        .filter(|p| p.is_halted())
        .map(|p| p.name.clone())
        .collect();
    Ok(if halted.is_empty() {
        Outcome::Stopped
    } else {
        Outcome::Halted(halted)
    })
}

fn build_pipeline(
    p: &PipelineConfig,
    plugins: &BTreeMap<String, Arc<LivePlugin>>,
    writers: &BTreeMap<String, Arc<OutputWriter>>,
) -> anyhow::Result<Arc<Pipeline>> {
    let writer = |name: &String| {
        writers
            .get(name)
            .cloned()
            .with_context(|| format!("pipeline {}: no writer for output {name}", p.name))
    };
    let outputs = p
        .outputs
        .iter()
        .map(writer)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dead_letter = p.dead_letter.as_ref().map(writer).transpose()?;
    let router = match plugins.get(&p.name) {
        Some(plugin) => Router::Wasm(plugin.clone()),
        None => Router::Replicate,
    };
    Ok(Arc::new(
        Pipeline::new(
            p.name.clone(),
            p.source.clone(),
            router,
            outputs,
            p.on_error,
            dead_letter,
        )
        .with_buffer_batches(p.buffer_batches),
    ))
}

async fn flush_loop(checkpoints: Arc<Checkpoints>, interval: Duration, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.requested() => return,
        }
        let cp = checkpoints.clone();
        match tokio::task::spawn_blocking(move || cp.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write checkpoints; will retry"),
            Err(e) => tracing::error!(error = %e, "checkpoint writer failed"),
        }
    }
}
