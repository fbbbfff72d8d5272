//! `distributary status`: per source shard and pipeline, who owns it, where
//! its checkpoint stands, whether it is finished, and how far behind the
//! stream's tip that position is (MillisBehindLatest of one GetRecords with
//! Limit 1 just after it). Read-only: the store is read without its lock,
//! so it works while `run` holds it.
//!
//! `rows` (which shards and positions make the table) is pure; `collect`
//! does the calls.

use crate::checkpoint::{FileStore, Key, Position};
use crate::config::Config;
use crate::kinesis::{ClientSettings, ShardInfo, StreamRef, client, list_shards};
use std::collections::BTreeMap;

/// One line of the table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub source: String,
    pub stream: String,
    pub shard: String,
    pub pipeline: String,
    /// Who holds the shard: with the file store, the one process holding
    /// the state directory's lock; with the lease table, the lease's owner
    /// ("-" when unowned; "new <- old" while a handoff is under way).
    pub owner: String,
    /// Lease table: milliseconds since the lease was last renewed (by the
    /// owner's wall clock as written; shown, never used to decide expiry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_age_ms: Option<i64>,
    /// Last acknowledged sequence number (and sub-sequence), if any.
    pub position: Option<String>,
    pub finished: bool,
    /// The shard is closed (split or merged away).
    pub closed: bool,
    /// Milliseconds behind the tip at the stored position (None: not asked,
    /// or the shard could not be read; then `error` says why).
    pub lag_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The rows for one source: every listed shard (and every stored one no
/// longer listed, e.g. past retention) × every pipeline reading the source.
pub fn rows(
    source: &str,
    stream: &str,
    pipelines: &[String],
    shards: &[ShardInfo],
    positions: &BTreeMap<Key, Position>,
    owner: &dyn Fn(&str) -> (String, Option<i64>),
) -> Vec<Row> {
    let mut ids: Vec<(String, bool)> = shards.iter().map(|s| (s.id.clone(), s.closed)).collect();
    for (p, s, shard) in positions.keys() {
        if s == stream && pipelines.contains(p) && !ids.iter().any(|(id, _)| id == shard) {
            ids.push((shard.clone(), true));
        }
    }
    ids.sort();
    let mut out = Vec::new();
    for (shard, closed) in ids {
        for pipeline in pipelines {
            let stored = positions.get(&(pipeline.clone(), stream.to_string(), shard.clone()));
            out.push(Row {
                source: source.to_string(),
                stream: stream.to_string(),
                shard: shard.clone(),
                pipeline: pipeline.clone(),
                owner: owner(&shard).0,
                lease_age_ms: owner(&shard).1,
                position: stored.and_then(|p| {
                    p.sequence.as_ref().map(|s| match p.sub_sequence {
                        Some(sub) => format!("{s}/{sub}"),
                        None => s.clone(),
                    })
                }),
                finished: stored.is_some_and(|p| p.finished),
                closed,
                lag_ms: None,
                error: None,
            });
        }
    }
    out
}

/// Reads the store and asks each source where its shards stand.
pub async fn collect(config: &Config) -> anyhow::Result<Vec<Row>> {
    let (positions, owners) = read_store(config).await?;
    let file_owner = format!("file store {}", config.checkpoint.path.display());
    let mut all = Vec::new();
    for (name, source) in &config.sources {
        let pipelines: Vec<String> = config
            .pipelines
            .iter()
            .filter(|p| &p.source == name)
            .map(|p| p.name.clone())
            .collect();
        let client = client(&ClientSettings {
            region: source.region.clone(),
            endpoint_url: source.endpoint_url.clone(),
            ca_bundle: crate::tls::bundle(source.ca_bundle.as_deref()),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("sources.{name}.ca_bundle: {e:#}"))?;
        let stream = StreamRef::parse(&source.stream);
        let shards = list_shards(&client, &stream).await.map_err(|e| {
            anyhow::anyhow!(
                "sources.{name}: listing the shards of {}: {e}",
                source.stream
            )
        })?;
        let short = stream.short_name().to_string();
        let owner = |shard: &str| match &owners {
            None => (file_owner.clone(), None),
            Some(owners) => owners
                .get(&(short.clone(), shard.to_string()))
                .cloned()
                .unwrap_or_else(|| ("(no lease)".to_string(), None)),
        };
        let mut rows = rows(
            name,
            &source.stream,
            &pipelines,
            &shards,
            &positions,
            &owner,
        );
        for row in &mut rows {
            if row.finished {
                row.lag_ms = Some(0);
                continue;
            }
            match lag(&client, &stream, &row.shard, row.position.as_deref()).await {
                Ok(ms) => row.lag_ms = Some(ms),
                Err(e) => row.error = Some(e),
            }
        }
        all.extend(rows);
    }
    Ok(all)
}

/// (stream, shard) → (owner, lease age in ms), from the lease table.
type Owners = BTreeMap<(String, String), (String, Option<i64>)>;

/// Every stored position, and with the lease table each lease's owner.
async fn read_store(config: &Config) -> anyhow::Result<(BTreeMap<Key, Position>, Option<Owners>)> {
    let settings = &config.checkpoint;
    if settings.store == crate::config::StoreKind::File {
        let store = FileStore::open_read_only(&settings.path);
        let stored = store
            .load()
            .map_err(|e| anyhow::anyhow!("{}: {e}", store.path().display()))?;
        return Ok((stored.positions, None));
    }
    let client = crate::lease::client(
        settings.region.as_deref(),
        settings.endpoint_url.as_deref(),
        settings.ca_bundle.as_deref(),
        std::time::Duration::from_millis(settings.failover_ms),
    )
    .await
    .map_err(|e| anyhow::anyhow!("checkpoint.ca_bundle: {e:#}"))?;
    let table = crate::lease::LeaseTable::new(client, settings.table.clone());
    let (leases, _) = table
        .scan()
        .await
        .map_err(|e| anyhow::anyhow!("checkpoint.table: {e:#}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut positions = BTreeMap::new();
    let mut owners = Owners::new();
    for lease in leases {
        for (pipeline, position) in &lease.checkpoints {
            positions.insert(
                (pipeline.clone(), lease.stream.clone(), lease.shard.clone()),
                position.clone(),
            );
        }
        let owner = match (&lease.owner, &lease.checkpoint_owner) {
            (Some(owner), Some(old)) => format!("{owner} <- {old}"),
            (Some(owner), None) => owner.clone(),
            (None, _) => "-".to_string(),
        };
        let age = lease.renewed_ms.map(|ms| (now - ms).max(0));
        owners.insert((lease.stream, lease.shard), (owner, age));
    }
    Ok((positions, Some(owners)))
}

/// MillisBehindLatest just after `position` (the shard's start without one).
async fn lag(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    shard: &str,
    position: Option<&str>,
) -> Result<i64, String> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let sequence = position.map(|p| p.split('/').next().unwrap_or(p).to_string());
    let kind = if sequence.is_some() {
        ShardIteratorType::AfterSequenceNumber
    } else {
        ShardIteratorType::TrimHorizon
    };
    let iterator = client
        .get_shard_iterator()
        .set_stream_name(stream.name().map(str::to_string))
        .set_stream_arn(stream.arn().map(str::to_string))
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_starting_sequence_number(sequence)
        .send()
        .await
        .map_err(|e| crate::kinesis::describe(&e))?
        .shard_iterator
        .ok_or_else(|| "no shard iterator (the shard is past retention)".to_string())?;
    let out = client
        .get_records()
        .shard_iterator(iterator)
        .limit(1)
        .set_stream_arn(stream.arn().map(str::to_string))
        .send()
        .await
        .map_err(|e| crate::kinesis::describe(&e))?;
    Ok(out.millis_behind_latest.unwrap_or(0))
}

/// The table for people: one line per (shard, pipeline).
pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<12} {:<24} {:<14} {:<24} {:>8} {:>10} {:<9} {}\n",
        "source", "shard", "pipeline", "owner", "lease_ms", "lag_ms", "state", "position"
    );
    for r in rows {
        let state = if r.finished {
            "finished"
        } else if r.position.is_none() {
            "new"
        } else {
            "reading"
        };
        let lag = match (&r.lag_ms, &r.error) {
            (Some(ms), _) => ms.to_string(),
            (None, Some(_)) => "?".to_string(),
            (None, None) => "-".to_string(),
        };
        out.push_str(&format!(
            "{:<12} {:<24} {:<14} {:<24} {:>8} {:>10} {:<9} {}{}\n",
            r.source,
            r.shard,
            r.pipeline,
            r.owner,
            r.lease_age_ms.map_or("-".to_string(), |ms| ms.to_string()),
            lag,
            state,
            r.position.as_deref().unwrap_or("-"),
            r.error
                .as_ref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, closed: bool) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parents: vec![],
            closed,
            hash_range: None,
        }
    }

    #[test]
    fn every_shard_and_pipeline_gets_a_row_with_its_stored_position() {
        let mut positions = BTreeMap::new();
        positions.insert(
            ("a".into(), "in".into(), "shardId-1".into()),
            Position {
                sequence: Some("42".into()),
                sub_sequence: Some(3),
                finished: false,
                latest_since_ms: None,
            },
        );
        positions.insert(
            ("b".into(), "in".into(), "shardId-0".into()),
            Position {
                sequence: Some("7".into()),
                sub_sequence: None,
                finished: true,
                latest_since_ms: None,
            },
        );
        // Past retention: stored, no longer listed.
        positions.insert(
            ("a".into(), "in".into(), "shardId-gone".into()),
            Position {
                sequence: Some("1".into()),
                sub_sequence: None,
                finished: true,
                latest_since_ms: None,
            },
        );
        // Another stream's, or a pipeline not in the config: not shown.
        positions.insert(
            ("a".into(), "other".into(), "shardId-9".into()),
            Position {
                sequence: Some("1".into()),
                sub_sequence: None,
                finished: false,
                latest_since_ms: None,
            },
        );
        let pipelines = vec!["a".to_string(), "b".to_string()];
        let shards = [shard("shardId-0", true), shard("shardId-1", false)];
        let rows = rows("src", "in", &pipelines, &shards, &positions, &|_| {
            ("me".into(), None)
        });
        let got: Vec<(&str, &str, Option<&str>, bool)> = rows
            .iter()
            .map(|r| {
                (
                    r.shard.as_str(),
                    r.pipeline.as_str(),
                    r.position.as_deref(),
                    r.finished,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("shardId-0", "a", None, false),
                ("shardId-0", "b", Some("7"), true),
                ("shardId-1", "a", Some("42/3"), false),
                ("shardId-1", "b", None, false),
                ("shardId-gone", "a", Some("1"), true),
                ("shardId-gone", "b", None, false),
            ]
        );
        assert!(rows.iter().all(|r| r.owner == "me" && r.source == "src"));
        assert!(render(&rows).contains("42/3"));
    }
}
