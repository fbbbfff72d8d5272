//! Output discovery: every `discover_interval_s`, list the streams matching
//! each `stream_pattern` output (ListStreams, all pages), update the catalog,
//! and give each pipeline that lists the output its new outputs.
//!
//! A pipeline's new outputs take effect at a batch boundary, after its plugin
//! (if any) accepted the new names in `init` (`Pipeline::update_outputs`). A
//! plugin that rejects them keeps the old version and the old outputs; the
//! next refresh tries again. A failed ListStreams keeps the matches as they
//! were. Records are delivered to the streams that are outputs when they are
//! routed: a new stream gets what is routed after it was found, nothing older.

use super::Catalog;
use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;
use aws_sdk_kinesis::types::StreamStatus;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Pages of ListStreams read per refresh, at most (100 names per page).
const MAX_PAGES: usize = 1000;

/// The streams whose names match `pattern`, each with whether it can be
/// written to (false while ListStreams reports it being created or deleted).
pub async fn matching_streams(
    client: &aws_sdk_kinesis::Client,
    pattern: &glob::Pattern,
) -> anyhow::Result<BTreeMap<String, bool>> {
    matching_streams_paged(client, pattern, None).await
}

/// As [`matching_streams`], asking for at most `page_size` names per page
/// (the service's default when None); the tests page through small pages.
pub async fn matching_streams_paged(
    client: &aws_sdk_kinesis::Client,
    pattern: &glob::Pattern,
    page_size: Option<i32>,
) -> anyhow::Result<BTreeMap<String, bool>> {
    let mut found = BTreeMap::new();
    let mut next_token: Option<String> = None;
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = client
            .list_streams()
            .set_limit(page_size)
            .set_next_token(next_token.clone())
            .set_exclusive_start_stream_name(if next_token.is_none() {
                after.clone()
            } else {
                None
            })
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("ListStreams: {}", crate::kinesis::describe(&e)))?;
        let status: BTreeMap<&str, &StreamStatus> = page
            .stream_summaries()
            .iter()
            .map(|s| (s.stream_name(), s.stream_status()))
            .collect();
        for name in page.stream_names() {
            if pattern.matches(name) {
                let usable = !matches!(
                    status.get(name.as_str()),
                    Some(StreamStatus::Creating | StreamStatus::Deleting)
                );
                found.insert(name.clone(), usable);
            }
        }
        if !page.has_more_streams() {
            return Ok(found);
        }
        next_token = page.next_token().map(str::to_string);
        after = page.stream_names().last().cloned();
        if next_token.is_none() && after.is_none() {
            anyhow::bail!("ListStreams said it has more streams but gave no way to page on");
        }
    }
    anyhow::bail!("ListStreams: more than {MAX_PAGES} pages")
}

/// A pipeline that lists a pattern output.
pub struct Member {
    pub pipeline: Arc<Pipeline>,
    /// Its `outputs` as configured (named and pattern outputs).
    pub configured: Vec<String>,
    /// Streams it must never write to: its source and its dead-letter stream.
    pub exclude: Vec<String>,
}

impl Member {
    /// Gives the pipeline its outputs as the catalog expands them now.
    pub async fn apply(&self, catalog: &Catalog) {
        let update = self
            .pipeline
            .update_outputs(|| catalog.expand(&self.configured, &self.exclude))
            .await;
        match update {
            Ok(Some(names)) => {
                tracing::info!(pipeline = %self.pipeline.name, outputs = ?names, "pipeline outputs changed")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(pipeline = %self.pipeline.name, error = %e, "the plugin did not accept the new outputs; keeping the old ones until the next discovery")
            }
        }
    }
}

pub struct Discovery {
    pub catalog: Arc<Catalog>,
    pub members: Vec<Member>,
    pub shutdown: Shutdown,
}

impl Discovery {
    /// Refreshes every pattern output on its own interval until shutdown.
    pub async fn run(self) {
        let this = Arc::new(self);
        let mut loops = tokio::task::JoinSet::new();
        for (output, interval_s) in this.catalog.patterns() {
            loops.spawn(this.clone().watch(output, Duration::from_secs(interval_s)));
        }
        while loops.join_next().await.is_some() {}
    }

    async fn watch(self: Arc<Self>, output: String, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the catalog listed every pattern at start-up
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.requested() => return,
            }
            if let Err(e) = self.catalog.refresh(&output).await {
                tracing::warn!(%output, error = %format!("{e:#}"), "output discovery failed; keeping the streams found before");
            }
            // Every time, not only on a change: a plugin that rejected the
            // last list gets the current one again.
            for member in self
                .members
                .iter()
                .filter(|m| m.configured.contains(&output))
            {
                member.apply(&self.catalog).await;
            }
        }
    }
}
