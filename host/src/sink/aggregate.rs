//! KPL re-packing for an output with `aggregate = true`: a delivery's records
//! are packed into aggregates per shard of the output stream (`kpl::aggregate`,
//! by the shard map from ListShards, read again every `SHARD_MAP_TTL`), the
//! aggregates go through the output's queue like any records (per shard they
//! share an explicit hash key, so `per_key` ordering keeps them in order), and
//! an aggregate that lands in another shard than the map predicted (the
//! stream was resharded) makes the map be read again and the sub-records that
//! are outside the shard it landed in be packed and sent again, as the KPL
//! does. (The misplaced aggregate stays in the stream; the KCL drops its
//! sub-records that are outside that shard.)
//!
//! Progress: the delivery's records are settled when the whole delivery is,
//! since a sub-record of a misplaced aggregate is not done when it is acknowledged.

use super::shard_map::ShardMap;
use super::writer::{DeliverError, Delivered, OutputWriter, Packing};
use crate::kinesis::{StreamRef, list_shards};
use crate::kpl::aggregate::{Packed, ShardRange, hash_of, pack};
use crate::pipeline::progress::BatchProgress;
use crate::record::OutRecord;
use crate::sink::service::Transport;
use aws_sdk_kinesis::Client;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the shard map of an aggregating output is read again, so that
/// aggregates follow a resharded stream.
const SHARD_MAP_TTL: Duration = Duration::from_secs(10);

/// KPL aggregation state of one output: the size limit and the stream's open
/// shards by hash range.
pub struct Aggregation {
    client: Client,
    max_bytes: usize,
    shards: tokio::sync::Mutex<Option<(Instant, Arc<Vec<ShardRange>>)>>,
}

impl Aggregation {
    pub fn new(client: Client, max_bytes: usize) -> Self {
        Aggregation {
            client,
            max_bytes,
            shards: tokio::sync::Mutex::new(None),
        }
    }

    /// The open shards now; an empty map (no aggregation) until ListShards answers.
    async fn shard_map(&self, stream: &StreamRef, reread: bool) -> Arc<Vec<ShardRange>> {
        let mut cached = self.shards.lock().await;
        if let Some((fetched, map)) = cached.as_ref()
            && fetched.elapsed() < SHARD_MAP_TTL
            && !reread
        {
            return map.clone();
        }
        let map = match list_shards(&self.client, stream).await {
            Ok(list) => Arc::new(ShardMap::of(&list).ranges()),
            Err(error) => {
                tracing::warn!(stream = %stream, %error, "cannot read the output's shard map; using the last one");
                cached
                    .as_ref()
                    .map(|(_, map)| map.clone())
                    .unwrap_or_default()
            }
        };
        *cached = Some((Instant::now(), map.clone()));
        map
    }
}

impl<T: Transport> OutputWriter<T> {
    /// `deliver_checked` for an aggregating output.
    pub(super) async fn deliver_aggregated(
        &self,
        aggregation: &Aggregation,
        records: Vec<OutRecord>,
        progress: Option<&Arc<BatchProgress>>,
    ) -> Result<Delivered, DeliverError> {
        let originals: Vec<u32> = records.iter().map(|r| r.source_index).collect();
        let mut todo = records;
        let mut delivered = Delivered::default();
        let mut backoff = crate::backoff::Backoff::kinesis();
        loop {
            let shards = aggregation.shard_map(&self.stream, false).await;
            // Pack positions in `todo`, so that errors and re-sends find their records.
            let tagged = todo
                .iter()
                .enumerate()
                .map(|(i, r)| OutRecord {
                    source_index: i as u32,
                    ..r.clone()
                })
                .collect();
            let Packed {
                records: packed,
                members,
                placements,
            } = pack(tagged, &shards, aggregation.max_bytes);
            let original =
                |position: u32| todo.get(position as usize).map_or(0, |r| r.source_index);
            // The positions in `todo` of the records entry `i` holds.
            let holds = |i: u32| members.get(i as usize).cloned().unwrap_or_default();
            let written = match self
                .submit(
                    packed,
                    Some(Packing {
                        placements: &placements,
                        members: &members,
                    }),
                    None,
                )
                .await
            {
                Ok(written) => written,
                Err(e) => {
                    let first = holds(e.source_index).first().copied().unwrap_or(0);
                    return Err(DeliverError {
                        source_index: original(first),
                        ..e
                    });
                }
            };
            for e in &written.refused {
                delivered
                    .refused
                    .extend(holds(e.source_index).into_iter().map(|p| DeliverError {
                        source_index: original(p),
                        ..e.clone()
                    }));
            }
            for &i in &written.gone {
                delivered.gone.extend(holds(i).into_iter().map(&original));
            }
            if written.misplaced.is_empty() {
                break;
            }
            // The new map says which sub-records of a misplaced aggregate are
            // outside the shard it landed in: only those are sent again.
            let shards = aggregation.shard_map(&self.stream, true).await;
            let mut positions: Vec<u32> = Vec::new();
            for (i, landed) in &written.misplaced {
                let range = shards.iter().find(|s| &s.id == landed);
                positions.extend(holds(*i).into_iter().filter(|&p| {
                    let hash = todo.get(p as usize).map_or(0, hash_of);
                    !range.is_some_and(|r| r.start <= hash && hash <= r.end)
                }));
            }
            positions.sort_unstable();
            positions.dedup();
            tracing::warn!(output = %self.name, records = positions.len(), "an aggregate landed outside its predicted shard (resharded?); reading the shard map again and re-sending");
            todo = positions
                .into_iter()
                .filter_map(|p| todo.get(p as usize).cloned())
                .collect();
            if todo.is_empty() {
                break;
            }
            backoff.wait().await;
        }
        if let Some(progress) = progress {
            let mut refused: HashMap<u32, usize> = HashMap::new();
            for e in &delivered.refused {
                *refused.entry(e.source_index).or_default() += 1;
            }
            for index in originals {
                match refused.get_mut(&index) {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => progress.settle(index),
                }
            }
        }
        Ok(delivered)
    }
}
