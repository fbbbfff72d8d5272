//! Wires a validated configuration into running tasks, and shuts them down.
//!
//! Start-up order, everything that can fail before any record is read:
//! output streams checked to exist and stream patterns listed (the
//! `Catalog`), plugins compiled and initialised with their pipelines' output
//! names, the state directory locked and loaded, every source stream checked.
//! Then one `SourceRunner` per source, output discovery, and a checkpoint
//! flusher. On shutdown: sources
//! stop reading and finish the batches they are delivering, then the final
//! checkpoint is written.

use crate::checkpoint::{Checkpoints, FileStore, Store, Stored};
use crate::config::{Config, Pipeline as PipelineConfig, StoreKind};
use crate::kinesis::StreamRef;
use crate::lease::{LeaseManager, LeaseSettings, LeaseTable};
use crate::metrics::{ConfigStats, Metrics};
use crate::outputs::Catalog;
use crate::ownership::{OwnAll, ShardOwnership};
use crate::pipeline::Pipeline;
use crate::plugin::{ArtifactCache, LivePlugin, Plugin, PluginError, PluginSpec};
use crate::reload::{Generation, RunContext};
use crate::router::Router;
use crate::server::{Readiness, serve};
use crate::shutdown::Shutdown;
use crate::sink::OutputWriter;
use crate::startup::{StartFailure, until_reachable};
use anyhow::Context;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How `run` behaves beyond the configuration file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Apply the configuration file again whenever it changes (it is
    /// always read again on SIGHUP).
    pub watch_config: bool,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request with every pipeline healthy.
    Stopped,
    /// One or more pipelines halted (their names).
    Halted(Vec<String>),
}

/// Loads the plugin of every pipeline for which `outputs_of` gives the output
/// names (compile through `cache`, link, `init` with those names); skips the
/// others.
pub fn load_plugins(
    config: &Config,
    cache: Option<&ArtifactCache>,
    outputs_of: impl Fn(&PipelineConfig) -> Option<Vec<String>>,
) -> anyhow::Result<BTreeMap<String, Arc<LivePlugin>>> {
    let mut plugins = BTreeMap::new();
    for (i, p) in config.pipelines.iter().enumerate() {
        if let Some(spec) = outputs_of(p).and_then(|outputs| plugin_spec(p, outputs)) {
            let plugin =
                LivePlugin::load(spec, cache.cloned()).with_context(|| plugin_key(config, i, p))?;
            plugins.insert(p.name.clone(), Arc::new(plugin));
        }
    }
    Ok(plugins)
}

fn plugin_key(config: &Config, i: usize, p: &PipelineConfig) -> String {
    format!(
        "{}: pipelines[{i}] ({}).plugin",
        config.file.display(),
        p.name
    )
}

/// Whether pipeline `p` lists an output with a `stream_pattern`: its plugin's
/// `init` needs the stream names found at run time.
pub fn discovers_outputs(config: &Config, p: &PipelineConfig) -> bool {
    p.outputs.iter().any(|o| {
        config
            .outputs
            .get(o)
            .is_some_and(|o| o.stream_pattern.is_some())
    })
}

/// Checks, offline, the plugins of pipelines that discover outputs: each is
/// compiled (through `cache`) and linked, which must succeed, and `init`ed
/// with the configured names (a pattern output by its own name). Returns the
/// `init` failures as warnings: `init` may need the discovered names.
pub fn precheck_discovering_plugins(
    config: &Config,
    cache: Option<&ArtifactCache>,
) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (i, p) in config.pipelines.iter().enumerate() {
        if !discovers_outputs(config, p) {
            continue;
        }
        let Some(spec) = plugin_spec(p, p.outputs.clone()) else {
            continue;
        };
        match Plugin::load(&spec, cache) {
            Ok(_) => {}
            Err(PluginError::Init(e)) => warnings.push(format!(
                "{}: init with outputs [{}] failed: {e} (the streams a stream_pattern matches are known only when running)",
                plugin_key(config, i, p),
                p.outputs.join(", ")
            )),
            Err(e) => return Err(anyhow::Error::new(e).context(plugin_key(config, i, p))),
        }
    }
    Ok(warnings)
}

/// What pipeline `p` asks of its plugin, if it has one, initialised with `outputs`.
pub fn plugin_spec(p: &PipelineConfig, outputs: Vec<String>) -> Option<PluginSpec> {
    Some(PluginSpec {
        pipeline: p.name.clone(),
        path: p.plugin.clone()?,
        config_json: p.plugin_config_json(),
        outputs,
        limits: p.limits.clone(),
    })
}

/// Checks that the stream exists (for sources; outputs are checked by the
/// `Catalog`); waits while its endpoint does not answer.
pub(crate) async fn check_stream_exists(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    endpoint: &str,
    (what, key): (&str, &str),
    readiness: &Readiness,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    until_reachable(what, readiness, shutdown, || async {
        client
            .describe_stream_summary()
            .set_stream_name(stream.name().map(str::to_string))
            .set_stream_arn(stream.arn().map(str::to_string))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StartFailure::of_sdk(&e, &format!("stream {stream} at {endpoint}")))
    })
    .await
    .with_context(|| key.to_string())
}

/// Streams a pipeline must never write to, even if a pattern matches them:
/// its source and its dead-letter stream (short names).
pub(crate) fn never_write_to(config: &Config, p: &PipelineConfig) -> Vec<String> {
    let source = config
        .sources
        .get(&p.source)
        .map(|s| StreamRef::parse(&s.stream).short_name().to_string());
    let dead_letter = p
        .dead_letter
        .as_ref()
        .and_then(|d| config.outputs.get(d))
        .and_then(|o| o.stream.as_deref())
        .map(|s| StreamRef::parse(s).short_name().to_string());
    source.into_iter().chain(dead_letter).collect()
}

/// Runs until shutdown (see the module doc). A shutdown that comes while
/// start-up still waits for an endpoint is a clean stop: nothing was read.
pub async fn run(
    config: Config,
    shutdown: Shutdown,
    options: RunOptions,
) -> anyhow::Result<Outcome> {
    match run_started(config, shutdown, options).await {
        Err(e) if crate::startup::is_interrupted(&e) => {
            tracing::info!(reason = %format!("{e:#}"), "stopped before start-up finished");
            Ok(Outcome::Stopped)
        }
        other => other,
    }
}

async fn run_started(
    config: Config,
    shutdown: Shutdown,
    options: RunOptions,
) -> anyhow::Result<Outcome> {
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
    // Plugins first, offline: a plugin that does not compile, link or
    // accept its config stops the run before any request.
    let cache = ArtifactCache::new(config.checkpoint.path.join("plugin-cache"));
    let plugins = Generation::load_plugins(None, &config, None, &cache)?;
    let (checkpoints, leases) = open_store(&config, &file).await?;
    let ownership: Arc<dyn ShardOwnership> = match &leases {
        Some(manager) => manager.clone(),
        None => Arc::new(OwnAll::default()),
    };
    let context = RunContext {
        cache,
        checkpoints: checkpoints.clone(),
        leases: leases.clone(),
        ownership,
        budget: crate::buffer::Budget::new(config.buffer.max_bytes),
        readiness: readiness.clone(),
        shutdown: shutdown.clone(),
        handoff_drain: HANDOFF_TIMEOUT / 2,
    };
    // Outputs, the plugins of pipelines that discover outputs, pipelines and
    // source streams: everything that can fail, before any record is read.
    let mut generation = Generation::build(None, config, None, plugins, &context).await?;
    let mut closing = generation.commit(None, &context);
    tracing::info!(
        pipelines = generation.pipelines.len(),
        sources = generation.sources.len(),
        "distributary running"
    );
    let view = Arc::new(ArcSwap::from_pointee(generation.view()));
    let config_stats = Arc::new(ConfigStats::default());
    let _ = metrics_slot.set(
        Metrics {
            view: view.clone(),
            config: config_stats.clone(),
            checkpoints: checkpoints.clone(),
            budget: context.budget.clone(),
            leases: leases.clone(),
        }
        .into_registry(),
    );
    let lease_loops = leases.as_ref().map(|m| m.start()).unwrap_or_default();
    let flusher = tokio::spawn(flush_loop(
        checkpoints.clone(),
        Duration::from_millis(generation.config.checkpoint.interval_ms),
        shutdown.clone(),
    ));
    // Shuts down when every pipeline halted; turns /readyz off as soon as shutdown begins.
    let watcher = {
        let (view, shutdown, readiness) = (view.clone(), shutdown.clone(), readiness.clone());
        tokio::spawn(async move {
            loop {
                if view.load().pipelines.iter().all(|p| p.is_halted()) {
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
    // The drain after the first signal may take `shutdown_timeout_s`; then
    // deliveries still in flight are abandoned (not checkpointed).
    let deadline = {
        let (shutdown, timeout) = (shutdown.clone(), generation.config.shutdown_timeout_s);
        tokio::spawn(async move {
            shutdown.requested().await;
            if timeout == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs(timeout)).await;
            tracing::warn!(
                shutdown_timeout_s = timeout,
                "shutdown timeout passed: abandoning deliveries still in flight; the final checkpoint holds only what was acknowledged"
            );
            shutdown.abandon();
        })
    };
    // Live configuration: each request (SIGHUP, or the file changed with
    // `--watch-config`) reads the file again and applies what changed.
    let mut requests = crate::reload::requests(&generation.config.file, options.watch_config)
        .with_context(|| format!("{file}: watching the configuration"))?;
    loop {
        tokio::select! {
            _ = shutdown.requested() => break,
            Some(()) = requests.next() => {
                match crate::reload::reload(&mut generation, &context).await {
                    Ok(Some(done)) => {
                        closing.extend(done);
                        view.store(Arc::new(generation.view()));
                        config_stats.reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let version = config_stats.version.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        tracing::info!(version, "configuration applied");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        config_stats.reload_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::error!(error = %format!("{e:#}"), "configuration not applied; the running configuration stays");
                    }
                }
            }
        }
    }
    // Every source (and every one a reload closed) drains its batches in flight.
    for task in generation.source_tasks().into_iter().chain(closing) {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a source task failed");
        }
    }
    readiness.stopping();
    watcher.abort();
    deadline.abort();
    generation.stop_discovery();
    let _ = flusher.await;
    checkpoints
        .flush()
        .await
        .context("writing the final checkpoint")?;
    if let Some(manager) = &leases {
        // Every shard task ended: final positions, then the leases let go.
        manager.release_all().await;
    }
    lease_loops.iter().for_each(|t| t.abort());
    tracing::info!("final checkpoint written");
    for writer in generation.catalog.writers() {
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
    let halted: Vec<String> = generation
        .pipelines
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

/// How long a handoff's old owner has to drain its shard and write the
/// final positions before the new owner takes the lease without them.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens the checkpoint store: the state directory's file, or the lease
/// table (checked, or created when `create_table` allows) with the lease
/// manager that shares the shards with other instances.
async fn open_store(
    config: &Config,
    file: &str,
) -> anyhow::Result<(Arc<Checkpoints>, Option<Arc<LeaseManager>>)> {
    let settings = &config.checkpoint;
    if settings.store == StoreKind::File {
        let store =
            FileStore::open(&settings.path).with_context(|| format!("{file}: checkpoint.path"))?;
        let checkpoints =
            Checkpoints::open(store).with_context(|| format!("{file}: checkpoint.path"))?;
        return Ok((Arc::new(checkpoints), None));
    }
    let failover = Duration::from_millis(settings.failover_ms);
    let client = crate::lease::client(
        settings.region.as_deref(),
        settings.endpoint_url.as_deref(),
        settings.ca_bundle.as_deref(),
        failover,
    )
    .await
    .with_context(|| format!("{file}: checkpoint.ca_bundle"))?;
    let table = Arc::new(LeaseTable::new(client, settings.table.clone()));
    table
        .ensure(settings.create_table)
        .await
        .with_context(|| format!("{file}: checkpoint.table"))?;
    let (_, starts) = table
        .scan()
        .await
        .with_context(|| format!("{file}: checkpoint.table"))?;
    let stored = Stored {
        positions: Default::default(),
        starts: starts
            .into_iter()
            .map(|(stream, pipeline, ms)| ((pipeline, stream), ms))
            .collect(),
    };
    let checkpoints = Arc::new(Checkpoints::with_store(
        Store::Leases(table.clone()),
        stored,
    ));
    let pipelines = crate::reload::pipelines_by_stream(config);
    let me = settings
        .instance_id
        .clone()
        .unwrap_or_else(crate::lease::default_instance_id);
    tracing::info!(instance = %me, table = %settings.table, failover_ms = settings.failover_ms, "sharing shards through the lease table");
    let manager = LeaseManager::new(
        table,
        LeaseSettings {
            me,
            failover,
            handoff_timeout: HANDOFF_TIMEOUT,
            pipelines,
        },
        checkpoints.clone(),
    );
    Ok((checkpoints, Some(manager)))
}

/// Pipeline `p` with its router (its plugin in `plugins`, or native
/// replication), `outputs`, and dead-letter writer; counting into `stats`
/// when it replaces an earlier version.
pub(crate) fn build_pipeline(
    p: &PipelineConfig,
    plugins: &BTreeMap<String, Arc<LivePlugin>>,
    outputs: Vec<Arc<OutputWriter>>,
    catalog: &Catalog,
    stats: Option<Arc<crate::pipeline::PipelineStats>>,
) -> anyhow::Result<Arc<Pipeline>> {
    let dead_letter = p
        .dead_letter
        .as_ref()
        .map(|name| {
            catalog
                .named(name)
                .with_context(|| format!("pipeline {}: no writer for output {name}", p.name))
        })
        .transpose()?;
    let router = match plugins.get(&p.name) {
        Some(plugin) => Router::Wasm(plugin.clone()),
        None => Router::Replicate,
    };
    let pipeline = Pipeline::new(
        p.name.clone(),
        p.source.clone(),
        router,
        outputs,
        p.on_error,
        dead_letter,
    )
    .with_buffer_batches(p.buffer_batches);
    Ok(Arc::new(match stats {
        Some(stats) => pipeline.with_stats(stats),
        None => pipeline,
    }))
}

/// Flushes checkpoints on their first change after a quiet interval, then at
/// most once per `interval`: a short-lived process still leaves a checkpoint,
/// and a busy one writes no more than one per interval.
async fn flush_loop(checkpoints: Arc<Checkpoints>, interval: Duration, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = checkpoints.changed() => {}
            _ = shutdown.requested() => return,
        }
        if let Err(e) = checkpoints.flush().await {
            tracing::error!(error = %format!("{e:#}"), "cannot write checkpoints; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.requested() => return,
        }
    }
}
