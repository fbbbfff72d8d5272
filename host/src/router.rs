//! How a pipeline decides where records go: natively replicating every record
//! to every output (no plugin configured: no WASM on the path), or through a
//! WASM plugin called once per batch on a blocking thread.
//!
//! A batch is routed by the plugin version serving when it starts (a
//! [`Snapshot`]: hot reload and new outputs swap versions between batches),
//! after the failure backoff of a plugin whose last call failed.

use crate::plugin::{LivePlugin, Plugin, PluginError};
use crate::record::{OutRecord, SourceRecord};
use std::sync::Arc;

pub enum Router {
    Replicate,
    Wasm(Arc<LivePlugin>),
}

/// What routes one batch: the plugin version serving when the batch started.
pub enum Snapshot {
    Replicate,
    Wasm {
        live: Arc<LivePlugin>,
        version: Arc<Plugin>,
    },
}

impl Router {
    /// Waits out the failure backoff of a plugin whose last call failed.
    pub async fn wait_penalty(&self) {
        if let Router::Wasm(live) = self
            && let Some(delay) = live.penalty()
        {
            tokio::time::sleep(delay).await;
        }
    }

    /// The router for the next batch (for a plugin, the version serving now).
    pub fn snapshot(&self) -> Snapshot {
        match self {
            Router::Replicate => Snapshot::Replicate,
            Router::Wasm(live) => Snapshot::Wasm {
                live: live.clone(),
                version: live.current(),
            },
        }
    }
}

impl Snapshot {
    /// The output names a plugin version was `init`ed with (None: native
    /// replication, which takes whatever outputs it is given).
    pub fn outputs(&self) -> Option<&[String]> {
        match self {
            Snapshot::Replicate => None,
            Snapshot::Wasm { version, .. } => Some(version.outputs()),
        }
    }

    /// Per output (in the pipeline's order), the records to write there, in
    /// source order; `records[start..]` is the part of the batch to route.
    pub async fn route(
        self,
        source: &Arc<str>,
        shard_id: &Arc<str>,
        records: &Arc<Vec<SourceRecord>>,
        start: usize,
        outputs: usize,
    ) -> Result<Vec<Vec<OutRecord>>, PluginError> {
        match self {
            Snapshot::Replicate => Ok(replicate(&records[start..], outputs)),
            Snapshot::Wasm { live, version } => {
                let (source, shard_id, records) =
                    (source.clone(), shard_id.clone(), records.clone());
                let result = tokio::task::spawn_blocking(move || {
                    version.route(&source, &shard_id, &records[start..])
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
                    partition_key: r.output_key(),
                    explicit_hash_key: r.explicit_hash_key.clone(),
                    source_index: i as u32,
                })
                .collect()
        })
        .collect()
}
