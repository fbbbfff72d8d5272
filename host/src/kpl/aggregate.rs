//! Writing KPL aggregated records: the key tables (each key once), the
//! records, the magic bytes and the MD5 trailer.

use super::deaggregate::SubRecord;
use super::{MAGIC, proto};
use md5::{Digest, Md5};
use prost::Message;
use std::collections::HashMap;

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
