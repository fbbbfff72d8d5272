//! The two shapes a record takes on the data path: as read from a source
//! shard, and as routed to one output.

/// A record read from a source shard.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub data: bytes::Bytes,
    /// Empty when the source record has none: streams with service-managed
    /// record distribution deliver records without a partition key. Plugins
    /// see it empty; outputs get [`SourceRecord::output_key`].
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub sequence_number: String,
    /// Position inside a KPL aggregate (from 0); None for a plain record.
    pub sub_sequence_number: Option<u64>,
    /// Approximate arrival time, milliseconds since the Unix epoch.
    pub arrival_ms: i64,
}

impl SourceRecord {
    /// Bytes it is counted for in the memory budget (`buffer.rs`).
    pub fn footprint(&self) -> usize {
        self.data.len()
            + self.partition_key.len()
            + self.explicit_hash_key.as_ref().map_or(0, String::len)
            + self.sequence_number.len()
            + crate::buffer::RECORD_OVERHEAD
    }

    /// The partition key it is written with when routing keeps its key: its
    /// own, or, for a record that has none, its sequence number (unique, so
    /// such records spread evenly over the output's shards).
    pub fn output_key(&self) -> String {
        if self.partition_key.is_empty() {
            self.sequence_number.clone()
        } else {
            self.partition_key.clone()
        }
    }
}

/// A record bound for one output, in the order it must be written.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub data: bytes::Bytes,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    /// Index of the source record in its batch (to name it in errors).
    pub source_index: u32,
}

impl OutRecord {
    /// The key Kinesis places the record by: its explicit hash key, else its
    /// partition key (an aggregating output orders its entries by it).
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

/// A point in a shard: a record's sequence number and, for a sub-record of a
/// KPL aggregate, its sub-sequence number. A position says that everything at
/// or before it is done (acknowledged, or read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPosition {
    pub sequence: String,
    /// None: the whole record (a plain record, or every sub-record of it).
    pub sub: Option<u64>,
}

impl ShardPosition {
    /// The position just after `record`.
    pub fn after(record: &SourceRecord) -> Self {
        ShardPosition {
            sequence: record.sequence_number.clone(),
            sub: record.sub_sequence_number,
        }
    }

    /// Whether `record` is at or before this position (done already).
    pub fn covers(&self, record: &SourceRecord) -> bool {
        match compare_sequence(&record.sequence_number, &self.sequence) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => match (self.sub, record.sub_sequence_number) {
                (None, _) | (_, None) => true,
                (Some(done), Some(sub)) => sub <= done,
            },
        }
    }

    /// Orders positions along the shard; a whole record comes after each of its sub-records.
    pub fn cmp_position(&self, other: &Self) -> std::cmp::Ordering {
        compare_sequence(&self.sequence, &other.sequence).then_with(|| {
            self.sub
                .unwrap_or(u64::MAX)
                .cmp(&other.sub.unwrap_or(u64::MAX))
        })
    }
}

/// Records with the given data, keys `k0, k1, ...` and sequence numbers from 1000: for tests.
#[cfg(test)]
pub fn test_records(data: &[&[u8]]) -> Vec<SourceRecord> {
    data.iter()
        .enumerate()
        .map(|(i, d)| SourceRecord {
            data: d.to_vec().into(),
            partition_key: format!("k{i}"),
            explicit_hash_key: None,
            sequence_number: format!("{}", 1000 + i),
            sub_sequence_number: None,
            arrival_ms: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn record(sequence: &str, sub: Option<u64>) -> SourceRecord {
        SourceRecord {
            data: bytes::Bytes::new(),
            partition_key: "k".into(),
            explicit_hash_key: None,
            sequence_number: sequence.into(),
            sub_sequence_number: sub,
            arrival_ms: 0,
        }
    }

    #[test]
    fn a_position_inside_an_aggregate_covers_its_earlier_sub_records_only() {
        let inside = ShardPosition::after(&record("20", Some(1)));
        assert!(inside.covers(&record("19", None)));
        assert!(inside.covers(&record("20", Some(0))));
        assert!(inside.covers(&record("20", Some(1))));
        assert!(!inside.covers(&record("20", Some(2))));
        assert!(!inside.covers(&record("21", None)));
        let whole = ShardPosition::after(&record("20", None));
        assert!(whole.covers(&record("20", Some(7))));
        assert!(inside.cmp_position(&whole).is_lt());
        assert!(
            whole
                .cmp_position(&ShardPosition::after(&record("3", None)))
                .is_gt()
        );
    }
}
