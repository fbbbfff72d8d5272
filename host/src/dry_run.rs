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

/// A JSON-lines input: the records of its good lines, and the problem of
/// each bad one. A bad line does not stop the others.
#[derive(Debug, Default)]
pub struct Input {
    pub records: Vec<SourceRecord>,
    /// The input line of each record (1-based).
    pub lines: Vec<usize>,
    /// (line, "name: line n: problem") for each line that is not a record.
    pub errors: Vec<(usize, String)>,
}

/// Reads every line of a JSON-lines input; a line that is not a record is
/// reported (naming the input and the line) and the others are kept. Only a
/// failure to read the input at all is an error.
pub fn read_input(name: &str, mut input: impl BufRead) -> Result<Input, String> {
    let mut read = Input::default();
    let mut buf = Vec::new();
    for number in 1.. {
        buf.clear();
        let n = input
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("{name}: line {number}: cannot read: {e}"))?;
        if n == 0 {
            break;
        }
        match parse_line(&buf, number) {
            Ok(Some(record)) => {
                read.records.push(record);
                read.lines.push(number);
            }
            Ok(None) => {}
            Err(problem) => read
                .errors
                .push((number, format!("{name}: line {number}: {problem}"))),
        }
    }
    Ok(read)
}

/// One input line as a record; None for a blank line.
fn parse_line(bytes: &[u8], number: usize) -> Result<Option<SourceRecord>, String> {
    let line = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    if line.trim().is_empty() {
        return Ok(None);
    }
    let parsed: InputLine = serde_json::from_str(line).map_err(|e| format!("not a record: {e}"))?;
    let data = match (parsed.data, parsed.data_base64) {
        (Some(Value::String(text)), None) => text.into_bytes(),
        (Some(value), None) => value.to_string().into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("data_base64: {e}"))?,
        (None, None) => return Err("needs `data` or `data_base64`".into()),
        (Some(_), Some(_)) => return Err("give `data` or `data_base64`, not both".into()),
    };
    Ok(Some(SourceRecord {
        data: data.into(),
        partition_key: parsed
            .partition_key
            .unwrap_or_else(|| format!("record-{number}")),
        explicit_hash_key: parsed.explicit_hash_key,
        sequence_number: parsed
            .sequence_number
            .unwrap_or_else(|| format!("{number}")),
        sub_sequence_number: None,
        arrival_ms: 0,
    }))
}

/// Routes `records` (read from input lines `lines`) through `plugin`; one
/// JSON value per record, numbered by its input line. The second value is
/// the number of records that failed or had a delivery refused.
pub fn route(
    plugin: &Plugin,
    outputs: &[String],
    records: &[SourceRecord],
    lines: &[usize],
) -> (Vec<Value>, usize) {
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
    let routed = records
        .iter()
        .zip(per_record)
        .enumerate()
        .map(|(i, (record, result))| {
            let line = lines.get(i).copied().unwrap_or(i + 1);
            let deliveries = match result {
                Ok(deliveries) => deliveries,
                Err(e) => {
                    failures += 1;
                    return json!({"line": line, "error": e.to_string()});
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
            json!({"line": line, "deliveries": deliveries})
        })
        .collect();
    (routed, failures)
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
        let read = read_input("in.jsonl", input.as_bytes()).unwrap();
        assert!(read.errors.is_empty());
        assert_eq!(read.lines, [1, 3, 4]);
        let records = read.records;
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].data, &b"hello"[..]);
        assert_eq!(records[0].partition_key, "k");
        assert_eq!(records[1].data, &br#"{"a":1}"#[..]);
        assert_eq!(records[1].partition_key, "record-3");
        assert_eq!(records[2].data, &[0u8, 1][..]);
    }

    #[test]
    fn every_bad_line_is_reported_and_every_good_one_kept() {
        let mut input = Vec::new();
        for i in 1..=20 {
            match i {
                4 => input.extend_from_slice(b"{\"partition_key\":\"k\"}\n"),
                9 => input.extend_from_slice(b"not json\n"),
                15 => input.extend_from_slice(b"{\"data\":\"\xff\"}\n"),
                _ => input.extend_from_slice(format!("{{\"data\":\"r{i}\"}}\n").as_bytes()),
            }
        }
        let read = read_input("in.jsonl", &input[..]).unwrap();
        let bad: Vec<usize> = read.errors.iter().map(|(line, _)| *line).collect();
        assert_eq!(bad, [4, 9, 15]);
        assert_eq!(
            read.errors[0].1,
            "in.jsonl: line 4: needs `data` or `data_base64`"
        );
        assert!(
            read.errors[1]
                .1
                .starts_with("in.jsonl: line 9: not a record")
        );
        assert!(
            read.errors[2].1.contains("not UTF-8"),
            "{}",
            read.errors[2].1
        );
        assert_eq!(read.records.len(), 17);
        assert_eq!(read.lines.len(), 17);
        assert_eq!(read.records[3].data, &b"r5"[..]);
        assert_eq!(read.lines[3], 5);
    }
}
