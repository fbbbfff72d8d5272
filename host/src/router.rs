//! How a pipeline decides where records go: natively replicating every record
//! to every output (no plugin configured: no WASM on the path), or through a
//! WASM plugin called once per batch on a blocking thread.
//!
//! A batch is routed by the plugin version serving when it starts (hot
//! reload swaps versions between batches), after the failure backoff of a
//! plugin whose last call failed.

use crate::plugin::{LivePlugin, PluginError};
use crate::record::{OutRecord, SourceRecord};
use std::sync::Arc;

pub enum Router {
    Replicate,
    Wasm(Arc<LivePlugin>),
}

impl Router {
    /// Per output (in the pipeline's order), the records to write there, in
    /// source order; `records[start..]` is the part of the batch to route.
    pub async fn route(
        &self,
        source: &Arc<str>,
        shard_id: &Arc<str>,
        records: &Arc<Vec<SourceRecord>>,
        start: usize,
        outputs: usize,
    ) -> Result<Vec<Vec<OutRecord>>, PluginError> {
        match self {
            Router::Replicate => Ok(replicate(&records[start..], outputs)),
            Router::Wasm(live) => {
                if let Some(delay) = live.penalty() {
                    tokio::time::sleep(delay).await;
                }
                let (plugin, source, shard_id, records) = (
                    live.current(),
                    source.clone(),
                    shard_id.clone(),
                    records.clone(),
                );
                let result = tokio::task::spawn_blocking(move || {
                    plugin.route(&source, &shard_id, &records[start..])
                })
                .await
                .map_err(|e| PluginError::Trap(format!("plugin thread failed: {e}")))
                .and_then(|routed| routed);
                live.record_call(result.is_ok());
                result
            }
        }
    }
}

/// Every record, unchanged, to each of `outputs` outputs.
pub fn replicate(records: &[SourceRecord], outputs: usize) -> Vec<Vec<OutRecord>> {
    (0..outputs)
        .map(|_| {
            records
                .iter()
                .enumerate()
                .map(|(i, r)| OutRecord {
                    data: r.data.clone(),
                    partition_key: r.partition_key.clone(),
                    explicit_hash_key: r.explicit_hash_key.clone(),
                    source_index: i as u32,
                })
                .collect()
        })
        .collect()
}
