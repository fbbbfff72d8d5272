//! `/metrics`: the Prometheus text exposition of what every pipeline, plugin,
//! output and source reader did. Counters live where the work happens (plain
//! atomics in `PipelineStats`, `WriterStats`, `ReloadStats`, `SourceStats`);
//! this collector reads them at scrape time (prometheus-client's
//! `Collector`), so the data path never touches a metrics library.

use crate::outputs::Catalog;
use crate::pipeline::Pipeline;
use crate::plugin::LivePlugin;
use crate::sink::OutputWriter;
use crate::source::SourceStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

type Labels = Vec<(&'static str, String)>;

/// What the running configuration has now: replaced by each live reload.
pub struct MetricsView {
    pub pipelines: Vec<Arc<Pipeline>>,
    pub plugins: BTreeMap<String, Arc<LivePlugin>>,
    /// Every output writer, named and discovered (read at each scrape).
    pub outputs: Arc<Catalog>,
    /// (source name, its read counters)
    pub sources: Vec<(String, Arc<SourceStats>)>,
}

/// Live configuration changes (`reload/`).
#[derive(Debug)]
pub struct ConfigStats {
    /// 1 at start, +1 per change applied.
    pub version: AtomicU64,
    pub reloads: AtomicU64,
    /// Files refused: unreadable, invalid, a plugin that does not load, a
    /// stream that does not exist, or a change that needs a restart.
    pub reload_failures: AtomicU64,
}

impl Default for ConfigStats {
    fn default() -> Self {
        ConfigStats {
            version: AtomicU64::new(1),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }
    }
}

/// Everything `/metrics` reports on.
pub struct Metrics {
    pub view: Arc<arc_swap::ArcSwap<MetricsView>>,
    pub config: Arc<ConfigStats>,
    /// The checkpoint store's flush health.
    pub checkpoints: Arc<crate::checkpoint::Checkpoints>,
    /// The memory budget of records read and not yet settled.
    pub budget: Arc<crate::buffer::Budget>,
    /// With the lease table: this instance's leases.
    pub leases: Option<Arc<crate::lease::LeaseManager>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("pipelines", &self.view.load().pipelines.len())
            .finish()
    }
}

impl Metrics {
    /// A registry holding this collector, to encode on every scrape.
    pub fn into_registry(self) -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        registry
    }
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One counter family; a sample without labels must be the only one.
fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<(Labels, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            ConstCounter::new(value).encode(metric)?;
            return Ok(());
        }
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<(Labels, i64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            ConstGauge::new(value).encode(metric)?;
            return Ok(());
        }
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One sample per (source, shard) of what `read` gives for each source.
fn per_source_shard<T>(
    sources: &[(String, Arc<SourceStats>)],
    read: impl Fn(&SourceStats) -> Vec<(String, T)>,
) -> Vec<(Labels, T)> {
    sources
        .iter()
        .flat_map(|(source, stats)| {
            read(stats)
                .into_iter()
                .map(|(shard, v)| (vec![("source", source.clone()), ("shard", shard)], v))
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let view = self.view.load_full();
        let pipeline = |p: &Pipeline| vec![("pipeline", p.name.clone())];
        let per_pipeline = |f: &dyn Fn(&Pipeline) -> u64| -> Vec<(Labels, u64)> {
            view.pipelines.iter().map(|p| (pipeline(p), f(p))).collect()
        };
        counters(
            &mut encoder,
            "distributary_pipeline_records_in",
            "Source records handed to the pipeline's router",
            per_pipeline(&|p| load(&p.stats.records_in)),
        )?;
        let routed = view
            .pipelines
            .iter()
            .flat_map(|p| {
                let outputs = p.outputs();
                outputs
                    .names()
                    .into_iter()
                    .zip(outputs.routed())
                    .map(|(output, n)| {
                        (
                            vec![("pipeline", p.name.clone()), ("output", output)],
                            load(n),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        counters(
            &mut encoder,
            "distributary_pipeline_routed",
            "Records routed to each current output of the pipeline",
            routed,
        )?;
        counters(
            &mut encoder,
            "distributary_pipeline_dropped",
            "Records the router sent to no output",
            per_pipeline(&|p| load(&p.stats.dropped)),
        )?;
        let deleted = view
            .pipelines
            .iter()
            .flat_map(|p| {
                let dropped = p
                    .stats
                    .dropped_stream_deleted
                    .lock()
                    .map(|m| m.clone())
                    .unwrap_or_default();
                dropped
                    .into_iter()
                    .map(|(output, n)| (vec![("pipeline", p.name.clone()), ("output", output)], n))
            })
            .collect();
        counters(
            &mut encoder,
            "distributary_pipeline_dropped_stream_deleted",
            "Records routed to a discovered output whose stream its owner deleted, dropped (not a failure; no on_error)",
            deleted,
        )?;
        counters(
            &mut encoder,
            "distributary_pipeline_skipped",
            "Records dropped by on_error = skip",
            per_pipeline(&|p| load(&p.stats.skipped)),
        )?;
        counters(
            &mut encoder,
            "distributary_pipeline_dead_lettered",
            "Records written to the dead-letter output",
            per_pipeline(&|p| load(&p.stats.dead_lettered)),
        )?;
        counters(
            &mut encoder,
            "distributary_pipeline_route_microseconds",
            "Time spent routing: the plugin call, or native replication",
            per_pipeline(&|p| load(&p.stats.route_nanos) / 1000),
        )?;
        gauges(
            &mut encoder,
            "distributary_pipeline_halted",
            "1 when the pipeline has halted (on_error = halt)",
            view.pipelines
                .iter()
                .map(|p| (pipeline(p), i64::from(p.is_halted())))
                .collect(),
        )?;
        let lag = view
            .pipelines
            .iter()
            .flat_map(|p| {
                let lag = p.stats.lag_ms.lock().map(|l| l.clone()).unwrap_or_default();
                lag.into_iter()
                    .map(|(shard, ms)| (vec![("pipeline", p.name.clone()), ("shard", shard)], ms))
                    .collect::<Vec<_>>()
            })
            .collect();
        gauges(
            &mut encoder,
            "distributary_pipeline_lag_milliseconds",
            "MillisBehindLatest of the last batch the pipeline acknowledged, per source shard",
            lag,
        )?;

        let per_plugin = |f: &dyn Fn(&LivePlugin) -> u64| -> Vec<(Labels, u64)> {
            view.plugins
                .iter()
                .map(|(name, p)| (vec![("pipeline", name.clone())], f(p)))
                .collect()
        };
        gauges(
            &mut encoder,
            "distributary_plugin_version",
            "The serving version of the pipeline's plugin: 1 at start, +1 per reload",
            per_plugin(&|p| load(&p.stats.version))
                .into_iter()
                .map(|(l, v)| (l, v as i64))
                .collect(),
        )?;
        counters(
            &mut encoder,
            "distributary_plugin_reloads",
            "Plugin versions swapped in while running",
            per_plugin(&|p| load(&p.stats.reloads)),
        )?;
        counters(
            &mut encoder,
            "distributary_plugin_reload_failures",
            "Plugin files that changed but could not be loaded (the old version kept serving)",
            per_plugin(&|p| load(&p.stats.reload_failures)),
        )?;
        counters(
            &mut encoder,
            "distributary_plugin_call_failures",
            "Plugin calls that failed: trap, timeout, error, invalid decisions",
            per_plugin(&|p| load(&p.stats.call_failures)),
        )?;

        let writers = view.outputs.writers();
        let per_output = |f: &dyn Fn(&OutputWriter) -> u64| -> Vec<(Labels, u64)> {
            writers
                .iter()
                .map(|w| (vec![("output", w.name.clone())], f(w)))
                .collect()
        };
        counters(
            &mut encoder,
            "distributary_output_records_written",
            "Records acknowledged by the output stream (an aggregate counts the records it carries)",
            per_output(&|w| load(&w.stats.records_written)),
        )?;
        counters(
            &mut encoder,
            "distributary_output_requests",
            "PutRecords requests sent",
            per_output(&|w| load(&w.stats.requests)),
        )?;
        counters(
            &mut encoder,
            "distributary_output_entries_retried",
            "PutRecords entries that failed and were sent again",
            per_output(&|w| load(&w.stats.entries_retried)),
        )?;
        counters(
            &mut encoder,
            "distributary_output_paced",
            "Times the output held ready records back because their shards had no room under the write quota (per-shard pacing)",
            per_output(&|w| load(&w.stats.paced)),
        )?;
        counters(
            &mut encoder,
            "distributary_output_requests_retried",
            "Whole PutRecords requests that failed transiently and were sent again",
            per_output(&|w| load(&w.stats.requests_retried)),
        )?;
        counters(
            &mut encoder,
            "distributary_output_reordered",
            "Records that landed after a newer record of their partition key (ordering = \"none\" only; by the sequence numbers Kinesis assigned)",
            per_output(&|w| load(&w.stats.reordered)),
        )?;
        counters(
            &mut encoder,
            "distributary_output_records_fenced",
            "Records not sent because their source shard's lease was lost (or not renewed within failover_ms / 2) while they waited: the shard's new owner writes them",
            per_output(&|w| load(&w.stats.fenced)),
        )?;
        counters(
            &mut encoder,
            "distributary_output_errors",
            "PutRecords errors by AWS error code (`other`: no answer, connection errors): requests refused or failed as a whole, and failed entries",
            writers
                .iter()
                .flat_map(|w| {
                    let errors = w.stats.errors.lock().map(|e| e.clone()).unwrap_or_default();
                    errors
                        .into_iter()
                        .map(|(code, n)| (vec![("output", w.name.clone()), ("code", code)], n))
                })
                .collect(),
        )?;
        gauges(
            &mut encoder,
            "distributary_output_window",
            "PutRecords requests the output may have in flight now (grows on success, halves on throttling or failed requests, up to max_requests_in_flight)",
            writers
                .iter()
                .map(|w| (vec![("output", w.name.clone())], w.window() as i64))
                .collect(),
        )?;

        let get_records = per_source_shard(&view.sources, |stats| stats.get_records());
        let behind = per_source_shard(&view.sources, |stats| stats.millis_behind());
        gauges(
            &mut encoder,
            "distributary_source_millis_behind_latest",
            "MillisBehindLatest of the last read of each shard by its shared reader (GetRecords or EFO)",
            behind,
        )?;
        counters(
            &mut encoder,
            "distributary_source_get_records_calls",
            "GetRecords calls per source shard (all pipelines on the source share them)",
            get_records,
        )?;
        counters(
            &mut encoder,
            "distributary_source_read_errors",
            "GetRecords and GetShardIterator errors by AWS error code (ExpiredIteratorException, ProvisionedThroughputExceededException, ...; `other`: no answer), all retried",
            view.sources
                .iter()
                .flat_map(|(source, stats)| {
                    stats
                        .read_errors()
                        .by_code()
                        .into_iter()
                        .map(|(code, n)| (vec![("source", source.clone()), ("code", code)], n))
                })
                .collect(),
        )?;
        counters(
            &mut encoder,
            "distributary_source_efo_subscription_conflicts",
            "SubscribeToShard calls answered ResourceInUseException (another subscription holds the shard)",
            per_source_shard(&view.sources, |stats| stats.efo_conflicts()),
        )?;
        gauges(
            &mut encoder,
            "distributary_source_efo_polling_fallback",
            "1 while an enhanced fan-out shard is read with GetRecords because its subscription is held elsewhere",
            per_source_shard(&view.sources, |stats| stats.efo_fallbacks()),
        )?;
        let health = self.checkpoints.health();
        counters(
            &mut encoder,
            "distributary_checkpoint_flush_failures",
            "Checkpoint writes that failed (disk full, permissions, directory removed)",
            vec![(vec![], load(&health.failures))],
        )?;
        counters(
            &mut encoder,
            "distributary_checkpoint_writes",
            "Checkpoint writes that succeeded (at most one per checkpoint.interval_ms, only while positions move)",
            vec![(vec![], load(&health.writes))],
        )?;
        gauges(
            &mut encoder,
            "distributary_checkpoint_failing",
            "1 while the last checkpoint write failed (then /readyz answers 503)",
            vec![(vec![], i64::from(health.failing().is_some()))],
        )?;
        gauges(
            &mut encoder,
            "distributary_buffer_bytes",
            "Bytes of records read and not yet settled by every pipeline and output (the [buffer] max_bytes budget)",
            vec![(vec![], self.budget.used() as i64)],
        )?;
        gauges(
            &mut encoder,
            "distributary_buffer_max_bytes",
            "The memory budget: [buffer] max_bytes",
            vec![(vec![], self.budget.max() as i64)],
        )?;
        counters(
            &mut encoder,
            "distributary_buffer_waits",
            "Reads that waited for room in the memory budget",
            vec![(vec![], self.budget.waits())],
        )?;
        gauges(
            &mut encoder,
            "distributary_config_version",
            "The configuration serving now: 1 at start, +1 per change applied (reload)",
            vec![(vec![], load(&self.config.version) as i64)],
        )?;
        counters(
            &mut encoder,
            "distributary_config_reloads",
            "Configuration changes applied live (SIGHUP or --watch-config)",
            vec![(vec![], load(&self.config.reloads))],
        )?;
        counters(
            &mut encoder,
            "distributary_config_reload_failures",
            "Configuration files refused (invalid, or needing a restart); the running configuration stayed",
            vec![(vec![], load(&self.config.reload_failures))],
        )?;
        if let Some(leases) = &self.leases {
            let me: Labels = vec![("instance", leases.instance_id().to_string())];
            gauges(
                &mut encoder,
                "distributary_leases_held",
                "Source shard leases this instance holds (checkpoint.store = \"dynamodb\")",
                vec![(me.clone(), leases.held() as i64)],
            )?;
            counters(
                &mut encoder,
                "distributary_leases_taken",
                "Leases this instance took (free, expired, released, or by handoff)",
                vec![(me.clone(), load(&leases.taken))],
            )?;
            counters(
                &mut encoder,
                "distributary_leases_lost",
                "Leases this instance gave up without a final write (taken by another, or not renewed within failover_ms / 2)",
                vec![(me, load(&leases.lost))],
            )?;
        }
        Ok(())
    }
}
