//! Splitting a KPL aggregated record into its sub-records (SPEC §3,
//! `deaggregate`).
//!
//! Invariant: only a record that matches the format exactly is split: the
//! magic bytes, room for the digest, an MD5 that matches, a protobuf that
//! parses, at least one sub-record, and every key index inside its table.
//! Anything else is returned as not an aggregate, so the caller passes it on
//! as the plain record it is; nothing here is an error or loses bytes.

use super::{DIGEST_LEN, MAGIC, proto};
use md5::{Digest, Md5};
use prost::Message;

/// One record of an aggregate, with its place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRecord {
    pub data: Vec<u8>,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    /// Index in the aggregate, from 0 (the KCL's sub-sequence number).
    pub sub_sequence_number: u64,
}

/// The sub-records of `data` if it is an aggregated record, else None.
pub fn deaggregate(data: &[u8]) -> Option<Vec<SubRecord>> {
    let rest = data.strip_prefix(&MAGIC[..])?;
    let split = rest.len().checked_sub(DIGEST_LEN)?;
    let (message, digest) = rest.split_at(split);
    if Md5::digest(message).as_slice() != digest {
        return None;
    }
    let aggregate = proto::AggregatedRecord::decode(message).ok()?;
    if aggregate.records.is_empty() {
        return None;
    }
    let key = |table: &[String], index: u64| -> Option<String> {
        table.get(usize::try_from(index).ok()?).cloned()
    };
    aggregate
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            Some(SubRecord {
                partition_key: key(&aggregate.partition_key_table, r.partition_key_index)?,
                explicit_hash_key: match r.explicit_hash_key_index {
                    Some(index) => Some(key(&aggregate.explicit_hash_key_table, index)?),
                    None => None,
                },
                data: r.data,
                sub_sequence_number: i as u64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpl::aggregate::encode;
    use proptest::prelude::*;

    fn sub(key: &str, hash: Option<&str>, data: &[u8], i: u64) -> SubRecord {
        SubRecord {
            data: data.to_vec(),
            partition_key: key.into(),
            explicit_hash_key: hash.map(str::to_string),
            sub_sequence_number: i,
        }
    }

    #[test]
    fn an_aggregate_splits_into_its_records_with_their_own_keys() {
        let records = vec![
            sub("a", None, b"one", 0),
            sub(
                "b",
                Some("170141183460469231731687303715884105728"),
                b"two",
                1,
            ),
            sub("a", None, b"", 2),
        ];
        let bytes = encode(&records);
        assert_eq!(&bytes[..4], &MAGIC);
        assert_eq!(deaggregate(&bytes), Some(records));
    }

    #[test]
    fn near_misses_pass_through() {
        let bytes = encode(&[sub("a", None, b"x", 0)]);
        // A wrong digest, a cut trailer, no magic, plain data, an empty aggregate.
        let mut wrong_digest = bytes.clone();
        if let Some(last) = wrong_digest.last_mut() {
            *last ^= 1;
        }
        assert_eq!(deaggregate(&wrong_digest), None);
        assert_eq!(deaggregate(&bytes[..bytes.len() - 1]), None);
        assert_eq!(deaggregate(&bytes[1..]), None);
        assert_eq!(deaggregate(b"{\"plain\": true}"), None);
        assert_eq!(deaggregate(&MAGIC), None);
        assert_eq!(deaggregate(&encode(&[])), None);
        // A key index outside the table, with a valid digest.
        let message = proto::AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: vec![],
            records: vec![proto::Record {
                partition_key_index: 1,
                explicit_hash_key_index: None,
                data: b"x".to_vec(),
                tags: vec![],
            }],
        }
        .encode_to_vec();
        let mut framed = MAGIC.to_vec();
        framed.extend_from_slice(&message);
        framed.extend_from_slice(&Md5::digest(&message));
        assert_eq!(deaggregate(&framed), None);
    }

    proptest! {
        /// Whatever the bytes, the parser answers (no panic) and only splits
        /// what carries the magic and a matching digest.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Some(records) = deaggregate(&data) {
                prop_assert!(data.starts_with(&MAGIC));
                prop_assert!(!records.is_empty());
            }
        }

        /// Arbitrary bytes behind the magic and a matching digest: split or
        /// passed through, never a panic.
        #[test]
        fn framed_garbage_never_panics(message in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&message);
            framed.extend_from_slice(&Md5::digest(&message));
            let _ = deaggregate(&framed);
        }

        /// Encode then decode gives the records back, and flipping any byte of
        /// the encoding makes it a plain record (the digest covers it all).
        #[test]
        fn round_trip_and_any_flipped_byte_passes_through(
            records in proptest::collection::vec(
                ("[a-z]{1,8}", proptest::option::of("[0-9]{1,38}"), proptest::collection::vec(any::<u8>(), 0..64)),
                1..20,
            ),
            flip in any::<prop::sample::Index>(),
        ) {
            let records: Vec<SubRecord> = records
                .into_iter()
                .enumerate()
                .map(|(i, (key, hash, data))| SubRecord { data, partition_key: key, explicit_hash_key: hash, sub_sequence_number: i as u64 })
                .collect();
            let bytes = encode(&records);
            prop_assert_eq!(deaggregate(&bytes), Some(records));
            let mut flipped = bytes.clone();
            let at = flip.index(flipped.len());
            flipped[at] ^= 0x40;
            prop_assert_eq!(deaggregate(&flipped), None);
        }
    }
}
