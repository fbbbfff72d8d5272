//! Read access to the packed batch of the WIT contract: record i's fields as
//! slices of the shared column buffers, with no per-record copy and no
//! per-record validation pass (the accessors' bounds checks are the guard).

use crate::bindings::distributary::plugin::types::Batch as WitBatch;

/// One record of a batch, borrowed from the batch's columns.
#[derive(Debug, Clone, Copy)]
pub struct Record<'b> {
    /// Its index in the batch: what [`crate::Decisions`] names it by.
    pub index: u32,
    pub data: &'b [u8],
    pub partition_key: &'b str,
    pub explicit_hash_key: Option<&'b str>,
    pub sequence_number: &'b str,
    /// Position inside a KPL aggregate; 0 for a plain record.
    pub sub_sequence_number: u64,
    /// Approximate arrival time, milliseconds since the Unix epoch.
    pub arrival_ms: i64,
}

/// A batch of records from one source shard, in source order.
pub struct Batch {
    raw: WitBatch,
}

fn span(ends: &[u32], i: usize) -> (usize, usize) {
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    (start, ends[i] as usize)
}

fn check(name: &str, ends: &[u32], len: usize) -> Result<(), String> {
    if ends.len() != len {
        return Err(format!(
            "batch column {name} has {} ends for {len} records",
            ends.len()
        ));
    }
    Ok(())
}

impl Batch {
    /// Checks that every column has one entry per record (O(1)). Offsets
    /// are not walked here: the accessors slice with bounds checks, so an
    /// offset out of range or off a character boundary panics (the batch
    /// fails) instead of reading the wrong bytes.
    pub(crate) fn new(raw: WitBatch) -> Result<Self, String> {
        let n = raw.data_ends.len();
        check("partition-keys", &raw.partition_key_ends, n)?;
        check("explicit-hash-keys", &raw.explicit_hash_key_ends, n)?;
        check("sequence-numbers", &raw.sequence_number_ends, n)?;
        if raw.sub_sequence_numbers.len() != n || raw.arrival_times.len() != n {
            return Err("batch columns differ in length".into());
        }
        Ok(Batch { raw })
    }

    /// Record `i` with all its fields.
    pub fn record(&self, i: u32) -> Record<'_> {
        Record {
            index: i,
            data: self.data(i),
            partition_key: self.partition_key(i),
            explicit_hash_key: self.explicit_hash_key(i),
            sequence_number: self.sequence_number(i),
            sub_sequence_number: self.sub_sequence_number(i),
            arrival_ms: self.arrival_ms(i),
        }
    }

    /// Every record, in source order.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        (0..self.len()).map(|i| self.record(i))
    }

    /// Number of records.
    pub fn len(&self) -> u32 {
        self.raw.data_ends.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.raw.data_ends.is_empty()
    }

    /// The source's name in the host configuration.
    pub fn source(&self) -> &str {
        &self.raw.source
    }

    /// The source shard all records of this batch come from.
    pub fn shard_id(&self) -> &str {
        &self.raw.shard_id
    }

    /// Record `i`'s data.
    pub fn data(&self, i: u32) -> &[u8] {
        let (s, e) = span(&self.raw.data_ends, i as usize);
        &self.raw.data[s..e]
    }

    pub fn partition_key(&self, i: u32) -> &str {
        let (s, e) = span(&self.raw.partition_key_ends, i as usize);
        &self.raw.partition_keys[s..e]
    }

    pub fn explicit_hash_key(&self, i: u32) -> Option<&str> {
        let (s, e) = span(&self.raw.explicit_hash_key_ends, i as usize);
        (s != e).then(|| &self.raw.explicit_hash_keys[s..e])
    }

    pub fn sequence_number(&self, i: u32) -> &str {
        let (s, e) = span(&self.raw.sequence_number_ends, i as usize);
        &self.raw.sequence_numbers[s..e]
    }

    pub fn sub_sequence_number(&self, i: u32) -> u64 {
        self.raw.sub_sequence_numbers[i as usize]
    }

    /// Approximate arrival time, milliseconds since the Unix epoch.
    pub fn arrival_ms(&self, i: u32) -> i64 {
        self.raw.arrival_times[i as usize]
    }
}
