//! Writing KPL aggregated records: the key tables (each key once), the
//! records, the magic bytes and the MD5 trailer.

use super::deaggregate::SubRecord;
use super::{MAGIC, proto};
use crate::record::OutRecord;
use md5::{Digest, Md5};
use prost::Message;
use std::collections::{HashMap, HashSet};

/// The aggregated record holding `records`, in order.
pub fn encode(records: &[SubRecord]) -> Vec<u8> {
    let mut partition_keys = KeyTable::default();
    let mut hash_keys = KeyTable::default();
    let records = records
        .iter()
        .map(|r| proto::Record {
            partition_key_index: partition_keys.index(&r.partition_key),
            explicit_hash_key_index: r.explicit_hash_key.as_deref().map(|k| hash_keys.index(k)),
            data: r.data.clone(),
            tags: Vec::new(),
        })
        .collect();
    let message = proto::AggregatedRecord {
        partition_key_table: partition_keys.keys,
        explicit_hash_key_table: hash_keys.keys,
        records,
    }
    .encode_to_vec();
    let mut out = Vec::with_capacity(MAGIC.len() + message.len() + 16);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&message);
    out.extend_from_slice(&Md5::digest(&message));
    out
}

/// A key table: each distinct key once, in order of first use.
#[derive(Default)]
struct KeyTable {
    keys: Vec<String>,
    index: HashMap<String, u64>,
}

impl KeyTable {
    fn index(&mut self, key: &str) -> u64 {
        if let Some(&i) = self.index.get(key) {
            return i;
        }
        let i = self.keys.len() as u64;
        self.keys.push(key.to_string());
        self.index.insert(key.to_string(), i);
        i
    }
}

/// Bytes an aggregate adds around its records (magic, digest, framing), at most.
const FRAME_BYTES: usize = 4 + 16 + 16;
/// Bytes one record adds besides its data and keys (protobuf tags and lengths), at most.
const RECORD_OVERHEAD: usize = 24;

/// An aggregate's share of the stream: where records for one shard go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    pub id: String,
    pub start: u128,
    pub end: u128,
}

/// What `pack` gives: the records to write (each `source_index` is an index
/// into `members` and `placements`), the original `source_index`es each
/// holds, and the shard each aggregate must land in (None: not checked).
pub struct Packed {
    pub records: Vec<OutRecord>,
    pub members: Vec<Vec<u32>>,
    pub placements: Vec<Option<String>>,
}

/// Packs `records` (in order) into aggregates of at most `max_bytes`, one
/// stream of aggregates per shard of `shards` (open shards, by hash range).
/// Returns the records to write, each tagged with its index in the returned
/// member lists (which original `source_index`es it holds).
///
/// Every record of an aggregate hashes into the shard the aggregate is sent
/// to (its explicit hash key is the shard's first hash key), so consumers that
/// check placement (the KCL) keep them. A record too large to share an
/// aggregate is written alone, unaggregated, with the same explicit hash key,
/// so it keeps its place in the shard's order. A record that has nothing to
/// share an aggregate with (the only one for its shard in this call) is
/// written as the plain record it is, as the KPL does: readers that do not
/// de-aggregate see plain data whenever packing gains nothing. With no shard
/// map, records are written as they are.
pub fn pack(records: Vec<OutRecord>, shards: &[ShardRange], max_bytes: usize) -> Packed {
    let mut packer = Packer {
        out: Vec::new(),
        members: Vec::new(),
        placements: Vec::new(),
        open: HashMap::new(),
        emitted: HashSet::new(),
    };
    for record in records {
        let Some(shard) = shard_for(shards, hash_of(&record)) else {
            packer.emit(record.source_index, record);
            continue;
        };
        let start_key = shards[shard].start.to_string();
        let size = record.data.len()
            + record.partition_key.len()
            + record.explicit_hash_key.as_ref().map_or(0, String::len)
            + RECORD_OVERHEAD;
        if size + FRAME_BYTES > max_bytes {
            packer.close(shard);
            packer.emitted.insert(shard);
            let index = record.source_index;
            packer.emit(
                index,
                OutRecord {
                    explicit_hash_key: Some(start_key),
                    ..record
                },
            );
            continue;
        }
        let full = packer
            .open
            .get(&shard)
            .is_some_and(|open| open.bytes + size > max_bytes);
        if full {
            packer.close(shard);
        }
        let open = packer.open.entry(shard).or_insert_with(|| Open {
            records: Vec::new(),
            members: Vec::new(),
            bytes: FRAME_BYTES,
            explicit_hash_key: start_key,
            shard_id: shards[shard].id.clone(),
        });
        open.bytes += size;
        open.members.push(record.source_index);
        open.records.push(SubRecord {
            sub_sequence_number: open.records.len() as u64,
            data: record.data.to_vec(),
            partition_key: record.partition_key,
            explicit_hash_key: record.explicit_hash_key,
        });
    }
    let mut rest: Vec<usize> = packer.open.keys().copied().collect();
    rest.sort_unstable();
    for shard in rest {
        if !packer.emitted.contains(&shard) {
            packer.close_lone_as_plain(shard);
        }
        packer.close(shard);
    }
    Packed {
        records: packer.out,
        members: packer.members,
        placements: packer.placements,
    }
}

struct Open {
    records: Vec<SubRecord>,
    members: Vec<u32>,
    bytes: usize,
    explicit_hash_key: String,
    shard_id: String,
}

struct Packer {
    out: Vec<OutRecord>,
    members: Vec<Vec<u32>>,
    placements: Vec<Option<String>>,
    open: HashMap<usize, Open>,
    /// Shards that have an entry out already (aggregate or oversize record).
    emitted: HashSet<usize>,
}

impl Packer {
    fn emit(&mut self, source_index: u32, record: OutRecord) {
        self.members.push(vec![source_index]);
        self.placements.push(None);
        self.out.push(OutRecord {
            source_index: (self.members.len() - 1) as u32,
            ..record
        });
    }

    /// Writes the open aggregate of `shard` as a plain record if it holds
    /// only one. Only for a shard with no other entry: its ordering key is
    /// then its own, and nothing else of the shard shares the request.
    fn close_lone_as_plain(&mut self, shard: usize) {
        let lone = self.open.get(&shard).is_some_and(|o| o.records.len() == 1);
        if !lone {
            return;
        }
        let Some(mut open) = self.open.remove(&shard) else {
            return;
        };
        let (Some(record), Some(&index)) = (open.records.pop(), open.members.first()) else {
            return;
        };
        self.emit(
            index,
            OutRecord {
                data: record.data.into(),
                partition_key: record.partition_key,
                explicit_hash_key: record.explicit_hash_key,
                source_index: index,
            },
        );
    }

    fn close(&mut self, shard: usize) {
        self.emitted.insert(shard);
        let Some(open) = self.open.remove(&shard) else {
            return;
        };
        let Some(first) = open.records.first() else {
            return;
        };
        let partition_key = first.partition_key.clone();
        self.members.push(open.members);
        self.placements.push(Some(open.shard_id));
        self.out.push(OutRecord {
            data: encode(&open.records).into(),
            partition_key,
            explicit_hash_key: Some(open.explicit_hash_key),
            source_index: (self.members.len() - 1) as u32,
        });
    }
}

/// Where Kinesis places a record: its explicit hash key, else the MD5 of its
/// partition key read as a 128-bit big-endian number.
pub fn hash_of(record: &OutRecord) -> u128 {
    if let Some(key) = &record.explicit_hash_key
        && let Ok(hash) = key.parse::<u128>()
    {
        return hash;
    }
    u128::from_be_bytes(Md5::digest(record.partition_key.as_bytes()).into())
}

fn shard_for(shards: &[ShardRange], hash: u128) -> Option<usize> {
    shards.iter().position(|s| s.start <= hash && hash <= s.end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpl::deaggregate;

    fn record(i: u32, key: &str, bytes: usize) -> OutRecord {
        OutRecord {
            data: vec![i as u8; bytes].into(),
            partition_key: key.into(),
            explicit_hash_key: None,
            source_index: i,
        }
    }

    fn halves() -> Vec<ShardRange> {
        let middle = u128::MAX / 2;
        vec![
            ShardRange {
                id: "left".into(),
                start: 0,
                end: middle,
            },
            ShardRange {
                id: "right".into(),
                start: middle + 1,
                end: u128::MAX,
            },
        ]
    }

    #[test]
    fn records_are_packed_per_shard_in_order_within_the_size_limit() {
        let shards = halves();
        let records: Vec<OutRecord> = (0..200)
            .map(|i| record(i, &format!("k{}", i % 13), 100))
            .collect();
        let Packed {
            records: out,
            members,
            placements,
        } = pack(records.clone(), &shards, 2048);
        let mut seen = Vec::new();
        for aggregate in &out {
            assert!(aggregate.data.len() <= 2048, "{}", aggregate.data.len());
            let subs = deaggregate(&aggregate.data).expect("an aggregate");
            let shard: u128 = aggregate
                .explicit_hash_key
                .as_deref()
                .unwrap()
                .parse()
                .unwrap();
            let range = shards.iter().find(|s| s.start == shard).unwrap();
            assert_eq!(
                placements[aggregate.source_index as usize].as_ref(),
                Some(&range.id)
            );
            let held = &members[aggregate.source_index as usize];
            assert_eq!(subs.len(), held.len());
            for (sub, &i) in subs.iter().zip(held) {
                let original = &records[i as usize];
                assert_eq!(
                    (&sub.partition_key, &sub.data),
                    (&original.partition_key, &original.data.to_vec())
                );
                let hash = hash_of(original);
                assert!(
                    range.start <= hash && hash <= range.end,
                    "placed in its shard"
                );
                seen.push(i);
            }
        }
        // Every record once; within a shard, in the original order.
        let mut all = seen.clone();
        all.sort_unstable();
        assert_eq!(all, (0..200).collect::<Vec<u32>>());
        for range in &shards {
            let in_shard: Vec<u32> = seen
                .iter()
                .copied()
                .filter(|&i| {
                    let h = hash_of(&records[i as usize]);
                    range.start <= h && h <= range.end
                })
                .collect();
            assert!(in_shard.windows(2).all(|w| w[0] < w[1]), "{in_shard:?}");
        }
    }

    #[test]
    fn a_record_too_large_to_share_goes_alone_and_no_map_means_no_aggregation() {
        let shards = halves();
        let Packed {
            records: out,
            members,
            ..
        } = pack(
            vec![record(0, "a", 10), record(1, "a", 5000), record(2, "a", 10)],
            &shards,
            2048,
        );
        assert_eq!(members, vec![vec![0], vec![1], vec![2]]);
        assert!(deaggregate(&out[0].data).is_some());
        assert_eq!(out[1].data.len(), 5000, "written as it is");
        assert_eq!(
            out[1].explicit_hash_key, out[0].explicit_hash_key,
            "same ordering key as its shard's aggregates"
        );
        let out = pack(vec![record(0, "a", 10)], &[], 2048).records;
        assert_eq!(out[0].data, vec![0; 10]);
    }

    #[test]
    fn a_record_alone_in_its_shard_is_sent_plain_as_the_kpl_does() {
        let shards = halves();
        // Find keys for each half.
        let key_in = |shard: usize| {
            (0..)
                .map(|i| format!("key{i}"))
                .find(|k| shard_for(&shards, hash_of(&record(0, k, 1))) == Some(shard))
                .unwrap()
        };
        let (left, right) = (key_in(0), key_in(1));
        let Packed {
            records: out,
            members,
            placements,
        } = pack(
            vec![
                record(0, &left, 10),
                record(1, &right, 10),
                record(2, &right, 10),
            ],
            &shards,
            2048,
        );
        let lone = out
            .iter()
            .find(|r| members[r.source_index as usize] == [0])
            .unwrap();
        assert!(
            deaggregate(&lone.data).is_none(),
            "plain, not a one-record aggregate"
        );
        assert_eq!(lone.data, vec![0; 10]);
        assert_eq!(lone.partition_key, left);
        assert_eq!(lone.explicit_hash_key, None, "placed by its own key");
        assert_eq!(placements[lone.source_index as usize], None);
        let pair = out
            .iter()
            .find(|r| members[r.source_index as usize] == [1, 2])
            .unwrap();
        assert_eq!(deaggregate(&pair.data).map(|s| s.len()), Some(2));
        assert_eq!(out.len(), 2);
    }
}
