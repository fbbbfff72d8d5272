//! The two shapes a record takes on the data path: as read from a source
//! shard, and as routed to one output.

/// A record read from a source shard.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub data: Vec<u8>,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub sequence_number: String,
    /// Position inside a KPL aggregate; 0 for a plain record.
    pub sub_sequence_number: u64,
    /// Approximate arrival time, milliseconds since the Unix epoch.
    pub arrival_ms: i64,
}

/// A record bound for one output, in the order it must be written.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub data: Vec<u8>,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    /// Index of the source record in its batch (to name it in errors).
    pub source_index: u32,
}

impl OutRecord {
    /// The key Kinesis places the record by; records with equal keys keep their order.
    pub fn ordering_key(&self) -> &str {
        self.explicit_hash_key
            .as_deref()
            .unwrap_or(&self.partition_key)
    }

    /// Bytes counted against PutRecords limits: data plus partition key.
    pub fn billed_bytes(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Compares two Kinesis sequence numbers (decimal strings of up to 128 digits).
pub fn compare_sequence(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Records with the given data, keys `k0, k1, ...` and sequence numbers from 1000: for tests.
#[cfg(test)]
pub fn test_records(data: &[&[u8]]) -> Vec<SourceRecord> {
    data.iter()
        .enumerate()
        .map(|(i, d)| SourceRecord {
            data: d.to_vec(),
            partition_key: format!("k{i}"),
            explicit_hash_key: None,
            sequence_number: format!("{}", 1000 + i),
            sub_sequence_number: 0,
            arrival_ms: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::compare_sequence;
    use std::cmp::Ordering::*;

    #[test]
    fn sequence_numbers_compare_numerically() {
        assert_eq!(compare_sequence("9", "10"), Less);
        assert_eq!(
            compare_sequence(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692538361571095921575989136588899"
            ),
            Less
        );
        assert_eq!(compare_sequence("007", "7"), Equal);
        assert_eq!(compare_sequence("100", "99"), Greater);
    }
}
