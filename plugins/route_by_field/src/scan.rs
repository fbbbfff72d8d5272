//! Finds one top-level field of a JSON object without decoding the rest.
//!
//! Routing needs one field; a full decode walks every byte of the record a
//! byte or a word at a time. Here the scanner jumps from one structural byte
//! to the next with `memchr` (vectorised, on wasm32 with simd128 too), so
//! long string values are skipped in a few steps. It stops at the field:
//! what follows it is not read, so a record that is malformed only after
//! the field is still routed by it. The value itself is decoded by
//! serde_json (escapes, numbers). The first occurrence of a repeated field
//! wins, as in serde_json.

use memchr::{memchr2, memchr3};

/// The raw JSON text of `field` in the top-level object `data`, if `data`
/// is an object with that field (up to the field, well-formed).
pub fn find_field<'a>(data: &'a [u8], field: &str) -> Option<&'a [u8]> {
    let mut i = skip_ws(data, 0);
    if data.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(data, i + 1);
    if data.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        if data.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(data, i)?;
        let key = &data[i..=key_end];
        i = skip_ws(data, key_end + 1);
        if data.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(data, i + 1);
        let value_end = value_end(data, value_start)?;
        if key_is(key, field) {
            return Some(&data[value_start..value_end]);
        }
        i = skip_ws(data, value_end);
        match data.get(i) {
            Some(b',') => i = skip_ws(data, i + 1),
            _ => return None,
        }
    }
}

/// Whether the quoted key `raw` (with its quotes) is `field`.
fn key_is(raw: &[u8], field: &str) -> bool {
    let inner = &raw[1..raw.len() - 1];
    if !inner.contains(&b'\\') {
        return inner == field.as_bytes();
    }
    serde_json::from_slice::<String>(raw).is_ok_and(|k| k == field)
}

fn skip_ws(data: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = data.get(i) {
        i += 1;
    }
    i
}

/// The index of the closing quote of the string opening at `start`.
fn string_end(data: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let at = i + memchr2(b'"', b'\\', data.get(i..)?)?;
        if data[at] == b'"' {
            return Some(at);
        }
        i = at + 2; // an escape: skip the backslash and the escaped byte
    }
}

/// The index just past the value starting at `start`.
fn value_end(data: &[u8], start: usize) -> Option<usize> {
    match data.get(start)? {
        b'"' => string_end(data, start).map(|e| e + 1),
        b'{' | b'[' => container_end(data, start),
        _ => {
            let mut i = start;
            while let Some(&b) = data.get(i) {
                if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

/// The index just past the object or array opening at `start`: counts
/// brackets outside strings (any kind: the value is only skipped).
fn container_end(data: &[u8], start: usize) -> Option<usize> {
    let (open, close) = if data[start] == b'{' {
        (b'{', b'}')
    } else {
        (b'[', b']')
    };
    let mut depth = 0usize;
    let mut i = start;
    loop {
        // Brackets of the other kind nest inside and balance out: track ours and strings.
        let at = i + memchr3(b'"', open, close, data.get(i..)?)?;
        match data[at] {
            b'"' => i = string_end(data, at)? + 1,
            b if b == open => {
                depth += 1;
                i = at + 1;
            }
            _ => {
                depth -= 1;
                i = at + 1;
                if depth == 0 {
                    return Some(i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The scanner agrees with a full decode on every top-level field of
    /// documents with nesting, escapes, mixed brackets and whitespace.
    #[test]
    fn agrees_with_serde_json_on_varied_documents() {
        let docs = [
            json!({"a": 1, "b": "x", "c": null, "d": true, "e": -1.5e3}),
            json!({"s": "with \"quotes\" and \\ and } ] { [", "t": "after"}),
            json!({"o": {"a": [1, {"b": "]}"}], "c": {}}, "t": "after"}),
            json!({"arr": [[], [[]], {"x": [{}]}], "t": [1, 2]}),
            json!({"unicode": "é\u{1F600}", "k\"ey": "v", "t": "after"}),
            json!({}),
        ];
        for doc in &docs {
            for text in [doc.to_string(), serde_json::to_string_pretty(doc).unwrap()] {
                let map = doc.as_object().unwrap();
                for (key, value) in map {
                    let raw = find_field(text.as_bytes(), key)
                        .unwrap_or_else(|| panic!("{key} not found in {text}"));
                    let parsed: Value = serde_json::from_slice(raw).unwrap();
                    assert_eq!(&parsed, value, "{key} in {text}");
                }
                assert_eq!(find_field(text.as_bytes(), "absent"), None, "{text}");
            }
        }
    }

    #[test]
    fn escaped_keys_and_malformed_documents() {
        assert_eq!(find_field(br#"{"\u0074":5}"#, "t"), Some(&b"5"[..]));
        assert_eq!(find_field(br#"{"t":5,"#, "t"), Some(&b"5"[..]));
        assert_eq!(find_field(br#"{"a":1 "t":5}"#, "t"), None);
        assert_eq!(find_field(b"[1]", "t"), None);
        assert_eq!(find_field(b"", "t"), None);
        assert_eq!(find_field(br#"{"a":"unterminated"#, "t"), None);
        assert_eq!(find_field(br#"{"a":{"b":1}"#, "t"), None);
        assert_eq!(find_field(br#"{"t":}"#, "t"), None);
    }
}
