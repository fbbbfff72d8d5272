//! A lease as stored in the DynamoDB table, and its conversion from and to
//! DynamoDB attribute maps. Attribute names follow the Kinesis Client
//! Library's lease table where they mean the same (`leaseKey`, `leaseOwner`,
//! `leaseCounter`, `checkpoint`, `checkpointSubSequenceNumber`,
//! `parentShardId`, `checkpointOwner`, `ownerSwitchesSinceCheckpoint`); the
//! checkpoint is a map keyed by pipeline name, because every pipeline on a
//! source shard keeps its own position.

use crate::checkpoint::Position;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::{BTreeMap, HashMap};

pub const LEASE_KEY: &str = "leaseKey";
pub const OWNER: &str = "leaseOwner";
pub const COUNTER: &str = "leaseCounter";
pub const CHECKPOINT: &str = "checkpoint";
pub const SUB_SEQUENCE: &str = "checkpointSubSequenceNumber";
pub const PARENTS: &str = "parentShardId";
pub const CHECKPOINT_OWNER: &str = "checkpointOwner";
pub const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
pub const STREAM: &str = "streamName";
pub const SHARD: &str = "shardId";
/// Wall-clock time of the last renewal (ms since the epoch): shown by
/// `status`, never used to decide expiry (that is by observation).
pub const RENEWED_MS: &str = "lastRenewedMs";
/// The checkpoint of a pipeline that read the shard to its end.
pub const SHARD_END: &str = "SHARD_END";
/// Items that hold where `latest` starts for a pipeline on a source.
const START_PREFIX: &str = "#start:";
pub const START_MS: &str = "startMs";

/// The lease key of a source shard: `<stream name>:<shard id>`.
pub fn lease_key(stream: &str, shard: &str) -> String {
    format!("{stream}:{shard}")
}

/// The key of the item holding where `latest` starts for `pipeline` on `stream`.
pub fn start_key(stream: &str, pipeline: &str) -> String {
    format!("{START_PREFIX}{stream}:{pipeline}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub stream: String,
    pub shard: String,
    pub owner: Option<String>,
    pub counter: u64,
    /// Per pipeline: its position in the shard.
    pub checkpoints: BTreeMap<String, Position>,
    pub parents: Vec<String>,
    /// Set while a handoff is under way: the old owner, which writes the
    /// final positions and then clears it.
    pub checkpoint_owner: Option<String>,
    pub owner_switches: u64,
    pub renewed_ms: Option<i64>,
}

impl Lease {
    /// Whether every one of `pipelines` read the shard to its end.
    pub fn finished_for<'a>(&self, mut pipelines: impl Iterator<Item = &'a str>) -> bool {
        pipelines.all(|p| self.checkpoints.get(p).is_some_and(|c| c.finished))
    }
}

fn string(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// Reads a lease item; None for items that are not leases (`#start:` items)
/// or lack a key or counter.
pub fn parse(item: &HashMap<String, AttributeValue>) -> Option<Lease> {
    let key = string(item, LEASE_KEY)?;
    if key.starts_with(START_PREFIX) {
        return None;
    }
    let counter = number(item, COUNTER)?.max(0) as u64;
    let (stream, shard) = match (string(item, STREAM), string(item, SHARD)) {
        (Some(stream), Some(shard)) => (stream, shard),
        _ => {
            let (stream, shard) = key.rsplit_once(':')?;
            (stream.to_string(), shard.to_string())
        }
    };
    let subs: BTreeMap<String, u64> = item
        .get(SUB_SEQUENCE)
        .and_then(|v| v.as_m().ok())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_n().ok()?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default();
    let checkpoints = item
        .get(CHECKPOINT)
        .and_then(|v| v.as_m().ok())
        .map(|m| {
            m.iter()
                .filter_map(|(pipeline, v)| {
                    let value = v.as_s().ok()?;
                    let finished = value == SHARD_END;
                    Some((
                        pipeline.clone(),
                        Position {
                            sequence: (!finished).then(|| value.clone()),
                            sub_sequence: subs.get(pipeline).copied(),
                            finished,
                            latest_since_ms: None,
                        },
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let parents = item
        .get(PARENTS)
        .and_then(|v| v.as_ss().ok())
        .cloned()
        .unwrap_or_default();
    Some(Lease {
        key,
        stream,
        shard,
        owner: string(item, OWNER),
        counter,
        checkpoints,
        parents,
        checkpoint_owner: string(item, CHECKPOINT_OWNER),
        owner_switches: number(item, OWNER_SWITCHES).unwrap_or(0).max(0) as u64,
        renewed_ms: number(item, RENEWED_MS),
    })
}

/// A `#start:` item: (stream, pipeline, moment).
pub fn parse_start(item: &HashMap<String, AttributeValue>) -> Option<(String, String, i64)> {
    let key = string(item, LEASE_KEY)?;
    let rest = key.strip_prefix(START_PREFIX)?;
    // Stream names have no colon; pipeline names may.
    let (stream, pipeline) = rest.split_once(':')?;
    Some((stream.into(), pipeline.into(), number(item, START_MS)?))
}

/// The `checkpoint` and `checkpointSubSequenceNumber` maps of `positions`
/// (pipelines with no position yet are left out).
pub fn checkpoint_maps(positions: &BTreeMap<String, Position>) -> (AttributeValue, AttributeValue) {
    let mut checkpoint = HashMap::new();
    let mut subs = HashMap::new();
    for (pipeline, position) in positions {
        let value = if position.finished {
            SHARD_END.to_string()
        } else if let Some(sequence) = &position.sequence {
            sequence.clone()
        } else {
            continue;
        };
        checkpoint.insert(pipeline.clone(), AttributeValue::S(value));
        if let (Some(sub), false) = (position.sub_sequence, position.finished) {
            subs.insert(pipeline.clone(), AttributeValue::N(sub.to_string()));
        }
    }
    (AttributeValue::M(checkpoint), AttributeValue::M(subs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(sequence: Option<&str>, sub: Option<u64>, finished: bool) -> Position {
        Position {
            sequence: sequence.map(Into::into),
            sub_sequence: sub,
            finished,
            latest_since_ms: None,
        }
    }

    #[test]
    fn positions_round_trip_through_the_item() {
        let positions: BTreeMap<String, Position> = [
            ("a".to_string(), position(Some("49"), Some(3), false)),
            ("b".to_string(), position(None, None, true)),
            ("c".to_string(), position(Some("50"), None, false)),
        ]
        .into();
        let (checkpoint, subs) = checkpoint_maps(&positions);
        let item: HashMap<String, AttributeValue> = [
            (
                LEASE_KEY.to_string(),
                AttributeValue::S("src:shardId-1".into()),
            ),
            (COUNTER.to_string(), AttributeValue::N("7".into())),
            (OWNER.to_string(), AttributeValue::S("i-1".into())),
            (CHECKPOINT.to_string(), checkpoint),
            (SUB_SEQUENCE.to_string(), subs),
            (
                PARENTS.to_string(),
                AttributeValue::Ss(vec!["shardId-0".into()]),
            ),
        ]
        .into();
        let lease = parse(&item).unwrap();
        assert_eq!(lease.stream, "src");
        assert_eq!(lease.shard, "shardId-1");
        assert_eq!(lease.counter, 7);
        assert_eq!(lease.owner.as_deref(), Some("i-1"));
        assert_eq!(lease.checkpoints, positions);
        assert_eq!(lease.parents, vec!["shardId-0".to_string()]);
        assert!(lease.finished_for(["b"].into_iter()));
        assert!(!lease.finished_for(["a", "b"].into_iter()));
    }

    #[test]
    fn start_items_are_not_leases() {
        let item: HashMap<String, AttributeValue> = [
            (
                LEASE_KEY.to_string(),
                AttributeValue::S(start_key("src", "p")),
            ),
            (START_MS.to_string(), AttributeValue::N("1700".into())),
        ]
        .into();
        assert!(parse(&item).is_none());
        assert_eq!(parse_start(&item), Some(("src".into(), "p".into(), 1700)));
    }
}
