//! `distributary route`: runs a plugin offline over sample records and says,
//! for each record, where it goes and what it becomes, or why it fails.
//!
//! Input: JSON lines, one record each: `data` (a string, taken as UTF-8 text;
//! or any other JSON value, taken as its compact JSON text) or `data_base64`
//! (binary data), `partition_key` (default `record-<line>`), and optionally
//! `explicit_hash_key` and `sequence_number`. Output: one JSON line per
//! record: `{"line", "deliveries": [{"output", "partition_key", "data" |
//! "data_base64", "changed": [...], "refused"?}]}` or `{"line", "error"}`.
//!
//! The whole input is routed as one batch, as the host would route a
//! GetRecords batch. If the plugin fails that batch, each record is routed
//! alone, so that every error is pinned to the record that causes it.
//! Deliveries an output would refuse (key, explicit hash key or size limits,
//! 1 MiB records) are shown with `refused`.

use crate::plugin::{Plugin, PluginError};
use crate::record::{OutRecord, SourceRecord};
use crate::sink::limits::check_record;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::BufRead;

/// Largest record a default stream accepts (data plus partition key).
const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    data: Option<Value>,
    data_base64: Option<String>,
    partition_key: Option<String>,
    explicit_hash_key: Option<String>,
    sequence_number: Option<String>,
}

/// Reads the records of a JSON-lines input; errors name the input and the line.
pub fn read_input(name: &str, input: impl BufRead) -> Result<Vec<SourceRecord>, String> {
    let mut records = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|e| format!("{name}: line {number}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: InputLine = serde_json::from_str(&line)
            .map_err(|e| format!("{name}: line {number}: not a record: {e}"))?;
        let data = match (parsed.data, parsed.data_base64) {
            (Some(Value::String(text)), None) => text.into_bytes(),
            (Some(value), None) => value.to_string().into_bytes(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| format!("{name}: line {number}: data_base64: {e}"))?,
            (None, None) => {
                return Err(format!(
                    "{name}: line {number}: needs `data` or `data_base64`"
                ));
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{name}: line {number}: give `data` or `data_base64`, not both"
                ));
            }
        };
        records.push(SourceRecord {
            data,
            partition_key: parsed
                .partition_key
                .unwrap_or_else(|| format!("record-{number}")),
            explicit_hash_key: parsed.explicit_hash_key,
            sequence_number: parsed
                .sequence_number
                .unwrap_or_else(|| format!("{number}")),
            sub_sequence_number: None,
            arrival_ms: 0,
        });
    }
    Ok(records)
}

/// Routes `records` through `plugin`; one JSON value per record. The second
/// value is the number of records that failed or had a delivery refused.
pub fn route(plugin: &Plugin, outputs: &[String], records: &[SourceRecord]) -> (Vec<Value>, usize) {
    let per_record: Vec<Result<Vec<(usize, OutRecord)>, PluginError>> =
        match plugin.route("dry-run", "shardId-000000000000", records) {
            Ok(routed) => by_record(routed, records.len())
                .into_iter()
                .map(Ok)
                .collect(),
            Err(_) => records
                .iter()
                .map(|r| {
                    plugin
                        .route("dry-run", "shardId-000000000000", std::slice::from_ref(r))
                        .map(|routed| by_record(routed, 1).pop().unwrap_or_default())
                })
                .collect(),
        };
    let mut failures = 0;
    let lines = records
        .iter()
        .zip(per_record)
        .enumerate()
        .map(|(i, (record, result))| {
            let deliveries = match result {
                Ok(deliveries) => deliveries,
                Err(e) => {
                    failures += 1;
                    return json!({"record": i + 1, "error": e.to_string()});
                }
            };
            let mut refused_any = false;
            let deliveries: Vec<Value> = deliveries
                .iter()
                .map(|(output, out)| {
                    let mut d = describe(record, out);
                    d["output"] = json!(outputs.get(*output).cloned().unwrap_or_default());
                    if let Err(reason) = check_record(out, DEFAULT_MAX_RECORD_BYTES) {
                        refused_any = true;
                        d["refused"] = json!(reason);
                    }
                    d
                })
                .collect();
            failures += usize::from(refused_any);
            json!({"record": i + 1, "deliveries": deliveries})
        })
        .collect();
    (lines, failures)
}

/// Regroups per-output lists into per-record lists of (output index, record).
fn by_record(routed: Vec<Vec<OutRecord>>, n: usize) -> Vec<Vec<(usize, OutRecord)>> {
    let mut per_record: Vec<Vec<(usize, OutRecord)>> = vec![Vec::new(); n];
    for (output, list) in routed.into_iter().enumerate() {
        for out in list {
            if let Some(slot) = per_record.get_mut(out.source_index as usize) {
                slot.push((output, out));
            }
        }
    }
    per_record
}

fn describe(source: &SourceRecord, out: &OutRecord) -> Value {
    let mut changed = Vec::new();
    if out.data != source.data {
        changed.push("data");
    }
    if out.partition_key != source.partition_key {
        changed.push("partition_key");
    }
    if out.explicit_hash_key != source.explicit_hash_key {
        changed.push("explicit_hash_key");
    }
    let mut d = json!({"partition_key": out.partition_key, "changed": changed});
    if let Some(hash) = &out.explicit_hash_key {
        d["explicit_hash_key"] = json!(hash);
    }
    match std::str::from_utf8(&out.data) {
        Ok(text) => d["data"] = json!(text),
        Err(_) => {
            d["data_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&out.data))
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_lines_take_text_json_or_base64_data_and_errors_name_the_line() {
        let input = "{\"data\":\"hello\",\"partition_key\":\"k\"}\n\n{\"data\":{\"a\":1}}\n{\"data_base64\":\"AAE=\"}\n";
        let records = read_input("in.jsonl", input.as_bytes()).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].data, b"hello");
        assert_eq!(records[0].partition_key, "k");
        assert_eq!(records[1].data, br#"{"a":1}"#);
        assert_eq!(records[1].partition_key, "record-3");
        assert_eq!(records[2].data, [0u8, 1]);
        let err = read_input(
            "in.jsonl",
            "{\"data\":1}\n{\"partition_key\":\"k\"}".as_bytes(),
        )
        .unwrap_err();
        assert_eq!(err, "in.jsonl: line 2: needs `data` or `data_base64`");
        let err = read_input("in.jsonl", "not json".as_bytes()).unwrap_err();
        assert!(err.starts_with("in.jsonl: line 1: not a record"), "{err}");
    }
}
