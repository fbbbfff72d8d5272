//! Kinesis PutRecords limits: per record (partition key, explicit hash key,
//! size) and per request (500 entries; the 5 MiB of data plus partition keys
//! is the writer's `max_request_bytes`, applied by `request.rs`).
//! The local emulators accept batches that real Kinesis rejects, so these are
//! enforced here and unit-tested.

use crate::record::OutRecord;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, size: usize) -> OutRecord {
        OutRecord {
            data: vec![b'x'; size].into(),
            partition_key: key.into(),
            explicit_hash_key: None,
            source_index: 0,
        }
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
