//! One generation of a run: what a configuration file becomes (outputs,
//! plugins, pipelines, source readers, discovery, plugin watch), built the
//! same way at start-up and on every live reload.
//!
//! `Generation::build` does everything that can fail (outputs opened,
//! plugins compiled and `init`ed off the data path, new source streams
//! checked) without touching what runs; only `commit` changes the running
//! process, and it cannot fail: existing sources get their new pipeline
//! lists (their shard tasks start and retire lanes at batch boundaries),
//! new sources start, unused ones close. A pipeline whose configuration
//! did not change keeps its `Arc<Pipeline>`, so its lanes never notice.

use super::diff::Diff;
use crate::buffer::Budget;
use crate::checkpoint::Checkpoints;
use crate::config::{Config, Pipeline as PipelineConfig, ReaderKind};
use crate::kinesis::{ClientSettings, StreamRef, client};
use crate::lease::LeaseManager;
use crate::metrics::MetricsView;
use crate::outputs::Catalog;
use crate::outputs::discovery::{Discovery, Member};
use crate::ownership::ShardOwnership;
use crate::pipeline::Pipeline;
use crate::plugin::{ArtifactCache, LivePlugin, PluginWatch};
use crate::run::{
    build_pipeline, check_stream_exists, discovers_outputs, load_plugins, never_write_to,
    precheck_discovering_plugins,
};
use crate::server::Readiness;
use crate::shutdown::Shutdown;
use crate::sink::OutputWriter;
use crate::source::efo;
use crate::source::pipeline_set::PipelineSet;
use crate::source::{SourceRunner, SourceStats};
use anyhow::Context;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What stays the same for the whole run, whatever the reloads.
pub struct RunContext {
    pub cache: ArtifactCache,
    pub checkpoints: Arc<Checkpoints>,
    pub leases: Option<Arc<LeaseManager>>,
    pub ownership: Arc<dyn ShardOwnership>,
    pub budget: Arc<Budget>,
    pub readiness: Arc<Readiness>,
    pub shutdown: Shutdown,
    /// How long a handed-off shard may take to finish its batch in flight.
    pub handoff_drain: Duration,
}

/// A source being read, and the task reading it.
pub struct RunningSource {
    pub runner: Arc<SourceRunner>,
    pub stats: Arc<SourceStats>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

pub struct Generation {
    pub config: Config,
    pub catalog: Arc<Catalog>,
    pub plugins: BTreeMap<String, Arc<LivePlugin>>,
    /// In configuration order.
    pub pipelines: Vec<Arc<Pipeline>>,
    /// The sources read, by name (those with at least one pipeline).
    pub sources: BTreeMap<String, RunningSource>,
    plugin_watch: Option<PluginWatch>,
    discovery: Option<tokio::task::JoinHandle<()>>,
}

impl Generation {
    /// The plugins `config` needs that `previous` does not have (all, at
    /// start-up): compiled, linked and `init`ed offline, before any request.
    /// Those of pipelines that discover outputs are only checked here; they
    /// are `init`ed by `build` once their streams are listed.
    pub fn load_plugins(
        previous: Option<&Generation>,
        config: &Config,
        diff: Option<&Diff>,
        cache: &ArtifactCache,
    ) -> anyhow::Result<BTreeMap<String, Arc<LivePlugin>>> {
        tokio::task::block_in_place(|| {
            for warning in precheck_discovering_plugins(config, Some(cache))? {
                tracing::debug!(%warning, "plugin init with the configured output names");
            }
            load_plugins(config, Some(cache), |p| {
                (fresh(previous, diff, p) && !discovers_outputs(config, p))
                    .then(|| p.outputs.clone())
            })
        })
    }

    /// Builds what `config` needs, reusing from `previous` every output,
    /// pipeline and source that `diff` leaves unchanged, with `plugins`
    /// from `load_plugins`. Nothing runs yet.
    pub async fn build(
        previous: Option<&Generation>,
        config: Config,
        diff: Option<&Diff>,
        mut plugins: BTreeMap<String, Arc<LivePlugin>>,
        context: &RunContext,
    ) -> anyhow::Result<Generation> {
        let fresh = |p: &PipelineConfig| fresh(previous, diff, p);
        let catalog = Arc::new(
            Catalog::reopen(
                previous.map(|g| g.catalog.as_ref()),
                &config,
                &context.readiness,
                &context.shutdown,
            )
            .await?,
        );
        let expanded: BTreeMap<String, Vec<Arc<OutputWriter>>> = config
            .pipelines
            .iter()
            .map(|p| {
                let writers = catalog.expand(&p.outputs, &never_write_to(&config, p));
                (p.name.clone(), writers)
            })
            .collect();
        plugins.extend(tokio::task::block_in_place(|| {
            load_plugins(&config, Some(&context.cache), |p| {
                let writers = expanded
                    .get(&p.name)
                    .filter(|_| fresh(p) && discovers_outputs(&config, p))?;
                Some(writers.iter().map(|w| w.name.clone()).collect())
            })
        })?);
        let mut pipelines = Vec::new();
        for p in &config.pipelines {
            let before = previous.and_then(|g| g.pipelines.iter().find(|b| b.name == p.name));
            if let Some(kept) = before.filter(|_| !fresh(p)) {
                if let Some(plugin) = previous.and_then(|g| g.plugins.get(&p.name)) {
                    plugins.insert(p.name.clone(), plugin.clone());
                }
                pipelines.push(kept.clone());
                continue;
            }
            let outputs = expanded.get(&p.name).cloned().unwrap_or_default();
            // A changed pipeline counts on where its previous version stopped.
            let stats = before.map(|b| b.stats.clone());
            pipelines.push(build_pipeline(p, &plugins, outputs, &catalog, stats)?);
        }
        // Sources: a running one is kept (its pipeline list changes at
        // commit); a new one is built and its stream checked now.
        let mut sources = BTreeMap::new();
        for name in config.sources.keys() {
            let on_source: Vec<Arc<Pipeline>> = pipelines
                .iter()
                .filter(|p| &p.source == name)
                .cloned()
                .collect();
            if on_source.is_empty() {
                tracing::warn!(source = %name, "no pipeline reads this source; not reading it");
                continue;
            }
            if previous.is_some_and(|g| g.sources.contains_key(name)) {
                continue;
            }
            let opened = open_source(name, &config, on_source, context).await?;
            sources.insert(name.clone(), opened);
        }
        Ok(Generation {
            config,
            catalog,
            plugins,
            pipelines,
            sources,
            plugin_watch: None,
            discovery: None,
        })
    }

    /// Makes this generation the running one: every source reads its new
    /// pipeline list, new sources start, unused ones close, discovery and
    /// the plugin watch follow the new pipelines. Returns the tasks of
    /// closed sources (they finish their batches in flight).
    pub fn commit(
        &mut self,
        previous: Option<Generation>,
        context: &RunContext,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut closing = Vec::new();
        if let Some(mut previous) = previous {
            if let Some(discovery) = previous.discovery.take() {
                discovery.abort();
            }
            for (name, running) in std::mem::take(&mut previous.sources) {
                if self.config.sources.contains_key(&name)
                    && self.pipelines.iter().any(|p| p.source == name)
                {
                    self.sources.insert(name, running);
                } else {
                    tracing::info!(source = %name, "no pipeline reads this source any more; closing it");
                    running.runner.pipelines.close();
                    closing.extend(running.task);
                }
            }
            // The old plugin watch goes when `previous` is dropped, after
            // the new one is in place (below).
            self.plugin_watch = previous.plugin_watch.take();
        }
        for (name, source) in &mut self.sources {
            let list: Vec<Arc<Pipeline>> = self
                .pipelines
                .iter()
                .filter(|p| &p.source == name)
                .cloned()
                .collect();
            source.runner.pipelines.set(list);
            if source.task.is_none() {
                source.task = Some(tokio::spawn(source.runner.clone().run()));
            }
        }
        if let Some(leases) = &context.leases {
            leases.set_pipelines(pipelines_by_stream(&self.config));
        }
        let old_watch = self.plugin_watch.take();
        match crate::plugin::watch(
            self.plugins.values().cloned().collect(),
            context.shutdown.clone(),
        ) {
            Ok(watch) => {
                self.plugin_watch = Some(watch);
                drop(old_watch);
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot watch plugin files; plugins are not hot-reloaded until the next configuration change")
            }
        }
        let discovery = Discovery {
            catalog: self.catalog.clone(),
            members: self
                .config
                .pipelines
                .iter()
                .zip(&self.pipelines)
                .filter(|(p, _)| p.outputs.iter().any(|o| self.catalog.is_pattern(o)))
                .map(|(p, pipeline)| Member {
                    pipeline: pipeline.clone(),
                    configured: p.outputs.clone(),
                    exclude: never_write_to(&self.config, p),
                })
                .collect(),
            shutdown: context.shutdown.clone(),
        };
        self.discovery = Some(tokio::spawn(discovery.run()));
        if !context.shutdown.is_requested() {
            context
                .readiness
                .running(self.pipelines.clone(), context.checkpoints.clone());
        }
        closing
    }

    /// What `/metrics` reports on for this generation.
    pub fn view(&self) -> MetricsView {
        MetricsView {
            pipelines: self.pipelines.clone(),
            plugins: self.plugins.clone(),
            outputs: self.catalog.clone(),
            sources: self
                .sources
                .iter()
                .map(|(name, s)| (name.clone(), s.stats.clone()))
                .collect(),
        }
    }

    /// The tasks reading sources (to wait for at shutdown), and those of
    /// sources closed by reloads that may still be draining.
    pub fn source_tasks(&mut self) -> Vec<tokio::task::JoinHandle<()>> {
        self.sources
            .values_mut()
            .filter_map(|s| s.task.take())
            .collect()
    }

    pub fn stop_discovery(&mut self) {
        if let Some(discovery) = self.discovery.take() {
            discovery.abort();
        }
    }
}

impl std::fmt::Debug for RunningSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSource")
            .field("source", &self.runner.name)
            .finish()
    }
}

/// Whether pipeline `p` needs a new `Pipeline` (and plugin): at start-up,
/// or when it was added or changed.
fn fresh(previous: Option<&Generation>, diff: Option<&Diff>, p: &PipelineConfig) -> bool {
    match (previous, diff) {
        (Some(_), Some(d)) => {
            d.pipelines_added.contains(&p.name) || d.pipelines_changed.contains(&p.name)
        }
        _ => true,
    }
}

/// Per source stream (short name): the pipelines reading it.
pub fn pipelines_by_stream(config: &Config) -> BTreeMap<String, Vec<String>> {
    let mut pipelines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &config.pipelines {
        if let Some(source) = config.sources.get(&p.source) {
            let stream = StreamRef::parse(&source.stream).short_name().to_string();
            pipelines.entry(stream).or_default().push(p.name.clone());
        }
    }
    pipelines
}

/// A reader for source `name` (not started): its stream checked to exist,
/// its EFO consumer registered.
async fn open_source(
    name: &str,
    config: &Config,
    pipelines: Vec<Arc<Pipeline>>,
    context: &RunContext,
) -> anyhow::Result<RunningSource> {
    let file = config.file.display().to_string();
    let source = config
        .sources
        .get(name)
        .with_context(|| format!("{file}: sources.{name}: missing"))?;
    let settings = ClientSettings {
        region: source.region.clone(),
        endpoint_url: source.endpoint_url.clone(),
        ca_bundle: crate::tls::bundle(source.ca_bundle.as_deref()),
        ..Default::default()
    };
    let client = client(&settings)
        .await
        .with_context(|| format!("{file}: sources.{name}.ca_bundle"))?;
    let stream = StreamRef::parse(&source.stream);
    check_stream_exists(
        &client,
        &stream,
        &crate::tls::kinesis_endpoint(source.endpoint_url.as_deref(), source.region.as_deref()),
        (
            &format!("sources.{name}"),
            &format!("{file}: sources.{name}"),
        ),
        &context.readiness,
        &context.shutdown,
    )
    .await?;
    let consumer_arn = match source.reader {
        ReaderKind::Polling => None,
        ReaderKind::Efo => {
            let key = format!("{file}: sources.{name}.efo_consumer_name");
            let stream_arn = efo::stream_arn(&client, &stream)
                .await
                .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            let arn = efo::consumer_arn(&client, &stream_arn, &source.efo_consumer_name)
                .await
                .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            tracing::info!(source = %name, consumer = %arn, "reading with enhanced fan-out");
            Some(arn)
        }
    };
    let stats = Arc::new(SourceStats::default());
    let runner = Arc::new(SourceRunner {
        name: Arc::from(name),
        stream,
        client,
        config: source.clone(),
        pipelines: PipelineSet::new(pipelines),
        checkpoints: context.checkpoints.clone(),
        shutdown: context.shutdown.clone(),
        stats: stats.clone(),
        consumer_arn,
        budget: context.budget.clone(),
        ownership: context.ownership.clone(),
        handoff_drain: context.handoff_drain,
        retire_drain: (config.shutdown_timeout_s > 0)
            .then(|| Duration::from_secs(config.shutdown_timeout_s)),
    });
    Ok(RunningSource {
        runner,
        stats,
        task: None,
    })
}
