//! Conversion between the host's records and the packed WIT types: one copy
//! per column into the plugin, and decisions checked and turned back into
//! per-output record lists in source order.

use super::bindings::distributary::plugin::types::{Batch, Decisions};
use crate::record::{OutRecord, SourceRecord};

/// Packs a shard's records into the columnar batch of the contract.
pub fn pack(source: &str, shard_id: &str, records: &[SourceRecord]) -> Batch {
    let mut batch = empty();
    pack_into(&mut batch, source, shard_id, records);
    batch
}

/// An empty batch, to pack into again and again.
pub fn empty() -> Batch {
    Batch {
        source: String::new(),
        shard_id: String::new(),
        data: Vec::new(),
        data_ends: Vec::new(),
        partition_keys: String::new(),
        partition_key_ends: Vec::new(),
        explicit_hash_keys: String::new(),
        explicit_hash_key_ends: Vec::new(),
        sequence_numbers: String::new(),
        sequence_number_ends: Vec::new(),
        sub_sequence_numbers: Vec::new(),
        arrival_times: Vec::new(),
    }
}

/// Packs into `batch`, reusing its buffers: a plugin instance keeps one, so
/// that routing a batch allocates no fresh (page-faulting) column buffers.
pub fn pack_into(batch: &mut Batch, source: &str, shard_id: &str, records: &[SourceRecord]) {
    batch.source.clear();
    batch.source.push_str(source);
    batch.shard_id.clear();
    batch.shard_id.push_str(shard_id);
    batch.data.clear();
    batch.data_ends.clear();
    batch.partition_keys.clear();
    batch.partition_key_ends.clear();
    batch.explicit_hash_keys.clear();
    batch.explicit_hash_key_ends.clear();
    batch.sequence_numbers.clear();
    batch.sequence_number_ends.clear();
    batch.sub_sequence_numbers.clear();
    batch.arrival_times.clear();
    for r in records {
        batch.data.extend_from_slice(&r.data);
        batch.data_ends.push(batch.data.len() as u32);
        batch.partition_keys.push_str(&r.partition_key);
        batch
            .partition_key_ends
            .push(batch.partition_keys.len() as u32);
        if let Some(h) = &r.explicit_hash_key {
            batch.explicit_hash_keys.push_str(h);
        }
        batch
            .explicit_hash_key_ends
            .push(batch.explicit_hash_keys.len() as u32);
        batch.sequence_numbers.push_str(&r.sequence_number);
        batch
            .sequence_number_ends
            .push(batch.sequence_numbers.len() as u32);
        batch
            .sub_sequence_numbers
            .push(r.sub_sequence_number.unwrap_or(0));
        batch.arrival_times.push(r.arrival_ms);
    }
}

/// Turns decisions into one ordered record list per output (indexed like the
/// pipeline's outputs). Deliveries to one output are sorted by source record
/// (stably), so the host keeps source order whatever order the plugin listed
/// them in. Any index out of range is an error naming it.
pub fn unpack(
    decisions: Decisions,
    records: &[SourceRecord],
    outputs: usize,
) -> Result<Vec<Vec<OutRecord>>, String> {
    let Decisions {
        records: targets,
        outputs: output_ids,
        rewrites,
    } = decisions;
    if targets.len() != output_ids.len() {
        return Err(format!(
            "decisions have {} record indexes but {} output indexes",
            targets.len(),
            output_ids.len()
        ));
    }
    let mut rewrite_of: Vec<Option<usize>> = Vec::new();
    if !rewrites.is_empty() {
        rewrite_of = vec![None; targets.len()];
        for (i, rewrite) in rewrites.iter().enumerate() {
            let slot = rewrite_of
                .get_mut(rewrite.delivery as usize)
                .ok_or_else(|| {
                    format!(
                        "rewrite names delivery {} of {}",
                        rewrite.delivery,
                        targets.len()
                    )
                })?;
            if slot.replace(i).is_some() {
                return Err(format!("delivery {} is rewritten twice", rewrite.delivery));
            }
        }
    }
    let mut rewrites: Vec<_> = rewrites.into_iter().map(Some).collect();
    let mut per_output: Vec<Vec<OutRecord>> = vec![Vec::new(); outputs];
    for (delivery, (&record, &output)) in targets.iter().zip(&output_ids).enumerate() {
        let source = records.get(record as usize).ok_or_else(|| {
            format!(
                "delivery {delivery} names record {record} of a batch of {}",
                records.len()
            )
        })?;
        let list = per_output
            .get_mut(output as usize)
            .ok_or_else(|| format!("delivery {delivery} names output index {output}, but the pipeline has {outputs} outputs"))?;
        let rewrite = rewrite_of
            .get(delivery)
            .copied()
            .flatten()
            .and_then(|i| rewrites[i].take());
        let (data, partition_key, explicit_hash_key) = match rewrite {
            None => (
                source.data.clone(),
                source.output_key(),
                source.explicit_hash_key.clone(),
            ),
            Some(r) => (
                r.data
                    .map_or_else(|| source.data.clone(), bytes::Bytes::from),
                r.partition_key.unwrap_or_else(|| source.output_key()),
                match r.explicit_hash_key {
                    Some(h) if h.is_empty() => None,
                    Some(h) => Some(h),
                    None => source.explicit_hash_key.clone(),
                },
            ),
        };
        list.push(OutRecord {
            data,
            partition_key,
            explicit_hash_key,
            source_index: record,
        });
    }
    for list in &mut per_output {
        if !list.is_sorted_by_key(|r| r.source_index) {
            list.sort_by_key(|r| r.source_index);
        }
    }
    Ok(per_output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::distributary::plugin::types::Rewrite;

    fn records(n: usize) -> Vec<SourceRecord> {
        (0..n)
            .map(|i| SourceRecord {
                data: format!("d{i}").into_bytes().into(),
                partition_key: format!("k{i}"),
                explicit_hash_key: (i == 1).then(|| "42".to_string()),
                sequence_number: format!("{}", 100 + i),
                sub_sequence_number: None,
                arrival_ms: i as i64,
            })
            .collect()
    }

    #[test]
    fn pack_lays_fields_back_to_back() {
        let b = pack("src", "shardId-0", &records(3));
        assert_eq!(b.data, b"d0d1d2");
        assert_eq!(b.data_ends, [2, 4, 6]);
        assert_eq!(b.partition_keys, "k0k1k2");
        assert_eq!(b.explicit_hash_keys, "42");
        assert_eq!(b.explicit_hash_key_ends, [0, 2, 2]);
        assert_eq!(b.sequence_number_ends, [3, 6, 9]);
    }

    #[test]
    fn unpack_sorts_per_output_and_applies_rewrites() {
        let recs = records(3);
        let d = Decisions {
            records: vec![2, 0, 1, 0],
            outputs: vec![0, 0, 1, 1],
            rewrites: vec![Rewrite {
                delivery: 3,
                data: Some(b"new".to_vec()),
                partition_key: None,
                explicit_hash_key: None,
            }],
        };
        let out = unpack(d, &recs, 2).unwrap();
        assert_eq!(
            out[0].iter().map(|r| r.source_index).collect::<Vec<_>>(),
            [0, 2]
        );
        assert_eq!(
            out[1].iter().map(|r| r.source_index).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(out[1][0].data, &b"new"[..]);
        assert_eq!(out[1][0].partition_key, "k0");
        assert_eq!(out[1][1].explicit_hash_key.as_deref(), Some("42"));
    }

    #[test]
    fn unpack_rejects_bad_indexes() {
        let recs = records(2);
        let bad_output = Decisions {
            records: vec![0],
            outputs: vec![5],
            rewrites: vec![],
        };
        assert!(
            unpack(bad_output, &recs, 2)
                .unwrap_err()
                .contains("output index 5")
        );
        let bad_record = Decisions {
            records: vec![9],
            outputs: vec![0],
            rewrites: vec![],
        };
        assert!(
            unpack(bad_record, &recs, 2)
                .unwrap_err()
                .contains("record 9")
        );
        let ragged = Decisions {
            records: vec![0, 1],
            outputs: vec![0],
            rewrites: vec![],
        };
        assert!(unpack(ragged, &recs, 2).is_err());
    }
}
