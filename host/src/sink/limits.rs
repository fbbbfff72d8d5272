//! Kinesis PutRecords limits: per record (partition key, explicit hash key,
//! size) and per request (500 entries, 5 MiB of data plus partition keys).
//! The local emulators accept batches that real Kinesis rejects, so these are
//! enforced here and unit-tested.

use crate::record::OutRecord;
use std::collections::{HashSet, VecDeque};

/// Most entries in one PutRecords request.
pub const MAX_ENTRIES_PER_REQUEST: usize = 500;
/// Longest partition key, in Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// Why a record can never be accepted by an output.
pub fn check_record(record: &OutRecord, max_record_bytes: usize) -> Result<(), String> {
    let key_chars = record.partition_key.chars().count();
    if key_chars == 0 {
        return Err("empty partition key".into());
    }
    if key_chars > MAX_PARTITION_KEY_CHARS {
        return Err(format!(
            "partition key of {key_chars} characters (at most {MAX_PARTITION_KEY_CHARS})"
        ));
    }
    if let Some(hash_key) = &record.explicit_hash_key {
        let valid = !hash_key.is_empty()
            && hash_key.bytes().all(|b| b.is_ascii_digit())
            && hash_key.parse::<u128>().is_ok();
        if !valid {
            return Err(format!(
                "explicit hash key {hash_key:?} is not a decimal number in 0..2^128"
            ));
        }
    }
    if record.billed_bytes() > max_record_bytes {
        return Err(format!(
            "record of {} bytes (data plus partition key) exceeds the output's {max_record_bytes}-byte limit",
            record.billed_bytes()
        ));
    }
    Ok(())
}

/// How many records from the front of `pending` go into the next request: the
/// longest prefix with at most 500 entries, at most `max_request_bytes`, and
/// no ordering key twice. Always at least 1 when `pending` is not empty (a
/// single record is within the request limit once `check_record` passed).
pub fn next_request_len(pending: &VecDeque<OutRecord>, max_request_bytes: usize) -> usize {
    let mut keys: HashSet<&str> = HashSet::new();
    let mut bytes = 0usize;
    let mut n = 0usize;
    for record in pending {
        if n == MAX_ENTRIES_PER_REQUEST {
            break;
        }
        let size = record.billed_bytes();
        if n > 0 && bytes + size > max_request_bytes {
            break;
        }
        if !keys.insert(record.ordering_key()) {
            break;
        }
        bytes += size;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, size: usize) -> OutRecord {
        OutRecord {
            data: vec![b'x'; size],
            partition_key: key.into(),
            explicit_hash_key: None,
            source_index: 0,
        }
    }

    #[test]
    fn at_most_500_entries_per_request() {
        let pending: VecDeque<_> = (0..1234).map(|i| rec(&format!("k{i}"), 10)).collect();
        assert_eq!(next_request_len(&pending, 5 << 20), 500);
        let pending: VecDeque<_> = (0..499).map(|i| rec(&format!("k{i}"), 10)).collect();
        assert_eq!(next_request_len(&pending, 5 << 20), 499);
    }

    #[test]
    fn request_bytes_count_data_and_partition_key() {
        // 10 records of 1 MiB - 2 bytes of data + a 2-byte key = exactly 1 MiB each.
        let pending: VecDeque<_> = (0..10)
            .map(|i| rec(&format!("k{i}"), (1 << 20) - 2))
            .collect();
        assert_eq!(next_request_len(&pending, 5 << 20), 5);
        let pending: VecDeque<_> = (0..10)
            .map(|i| rec(&format!("k{i}"), (1 << 20) - 1))
            .collect();
        assert_eq!(next_request_len(&pending, 5 << 20), 4);
    }

    #[test]
    fn a_single_large_record_still_goes_alone() {
        let pending: VecDeque<_> = [rec("a", 900), rec("b", 10)].into_iter().collect();
        assert_eq!(next_request_len(&pending, 500), 1);
    }

    #[test]
    fn a_repeated_ordering_key_ends_the_request() {
        let pending: VecDeque<_> = ["a", "b", "c", "b", "d"]
            .iter()
            .map(|k| rec(k, 1))
            .collect();
        assert_eq!(next_request_len(&pending, 5 << 20), 3);
        let mut with_hash = pending.clone();
        with_hash[0].explicit_hash_key = Some("7".into());
        with_hash[1].explicit_hash_key = Some("7".into());
        assert_eq!(next_request_len(&with_hash, 5 << 20), 1);
    }

    #[test]
    fn record_checks() {
        assert!(check_record(&rec("k", 10), 1 << 20).is_ok());
        assert!(
            check_record(&rec("", 10), 1 << 20)
                .unwrap_err()
                .contains("empty partition key")
        );
        assert!(check_record(&rec(&"é".repeat(256), 10), 1 << 20).is_ok());
        assert!(
            check_record(&rec(&"é".repeat(257), 10), 1 << 20)
                .unwrap_err()
                .contains("257 characters")
        );
        assert!(check_record(&rec("k", (1 << 20) - 1), 1 << 20).is_ok());
        assert!(
            check_record(&rec("k", 1 << 20), 1 << 20)
                .unwrap_err()
                .contains("exceeds")
        );
        let mut r = rec("k", 1);
        r.explicit_hash_key = Some(u128::MAX.to_string());
        assert!(check_record(&r, 1 << 20).is_ok());
        r.explicit_hash_key = Some("340282366920938463463374607431768211456".into());
        assert!(check_record(&r, 1 << 20).is_err());
        r.explicit_hash_key = Some("-1".into());
        assert!(check_record(&r, 1 << 20).is_err());
    }
}
