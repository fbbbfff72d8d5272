//! `repartition`: gives each record a new partition key taken from its JSON.
//!
//! ```toml
//! plugin_config = { field = "user.id" }
//! plugin_config = { template = "{tenant}/{user.id}", missing = "keep", outputs = ["by-user"] }
//! ```
//! `field`: the key is that field's value (strings as they are, numbers and
//! booleans as JSON text). `template`: `{path}` placeholders are replaced by
//! field values; `{{` and `}}` are literal braces. Give one of the two.
//! When a field is absent, not a scalar, or the key comes out empty or over
//! 256 characters (Kinesis' limit), `missing` decides: `keep` (default) the
//! original key, or `drop` the record. Records that are not JSON are treated
//! as missing. `outputs`: where records go (default: every output). The data
//! is never copied; only the key changes.

use distributary_plugin_sdk::json::{Path, scalar_text};
use distributary_plugin_sdk::{Batch, Decisions, Init, Plugin, Rewrite, export_plugin};
use serde::Deserialize;
use serde_json::Value;

/// Kinesis' longest partition key, in characters.
const MAX_KEY_CHARS: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    field: Option<String>,
    template: Option<String>,
    #[serde(default)]
    missing: Missing,
    outputs: Option<Vec<String>>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Missing {
    #[default]
    Keep,
    Drop,
}

#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Path),
}

/// What happens to one record.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Key(String),
    Keep,
    Drop,
}

pub struct Repartition {
    pieces: Vec<Piece>,
    missing: Missing,
    outputs: Vec<u32>,
}

/// Splits a template into text and `{field}` pieces.
fn parse_template(template: &str) -> Result<Vec<Piece>, String> {
    let key = "plugin_config.template";
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let field: String = chars.by_ref().take_while(|&c| c != '}').collect();
                if !pieces.is_empty() || !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Field(Path::parse(field.trim(), key)?));
            }
            '}' => return Err(format!("{key}: unmatched `}}` (write `}}}}` for a brace)")),
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    if !pieces.iter().any(|p| matches!(p, Piece::Field(_))) {
        return Err(format!("{key}: names no field (like {{user.id}})"));
    }
    Ok(pieces)
}

impl Repartition {
    pub fn new(init: &Init) -> Result<Self, String> {
        let config: Config = init.config()?;
        let pieces = match (&config.field, &config.template) {
            (Some(field), None) => vec![Piece::Field(Path::parse(field, "plugin_config.field")?)],
            (None, Some(template)) => parse_template(template)?,
            _ => return Err("plugin_config: give one of `field` or `template`".into()),
        };
        Ok(Repartition {
            pieces,
            missing: config.missing,
            outputs: init.outputs_or_all(config.outputs.as_deref(), "outputs")?,
        })
    }

    pub fn key_for(&self, data: &[u8]) -> Outcome {
        let fallback = match self.missing {
            Missing::Keep => Outcome::Keep,
            Missing::Drop => Outcome::Drop,
        };
        let Ok(record) = serde_json::from_slice::<Value>(data) else {
            return fallback;
        };
        let mut key = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => key.push_str(text),
                Piece::Field(path) => match path.get(&record).and_then(scalar_text) {
                    Some(value) => key.push_str(&value),
                    None => return fallback,
                },
            }
        }
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS {
            return fallback;
        }
        Outcome::Key(key)
    }
}

impl Plugin for Repartition {
    fn init(init: Init) -> Result<Self, String> {
        Repartition::new(&init)
    }

    fn route(&mut self, batch: &Batch, out: &mut Decisions) -> Result<(), String> {
        for record in batch.records() {
            match self.key_for(record.data) {
                Outcome::Drop => {}
                Outcome::Keep => out.deliver_each(record.index, &self.outputs),
                Outcome::Key(key) => out.deliver_each_rewritten(
                    record.index,
                    &self.outputs,
                    Rewrite {
                        partition_key: Some(key),
                        ..Rewrite::default()
                    },
                ),
            }
        }
        Ok(())
    }
}

export_plugin!(Repartition);

#[cfg(test)]
mod tests {
    use super::*;

    fn repartition(config: &str) -> Result<Repartition, String> {
        Repartition::new(&Init {
            config: config.into(),
            outputs: vec!["a".into()],
        })
    }

    #[test]
    fn field_and_template_keys() {
        let r = repartition(r#"{"field":"user.id"}"#).unwrap();
        assert_eq!(
            r.key_for(br#"{"user":{"id":42}}"#),
            Outcome::Key("42".into())
        );
        assert_eq!(
            r.key_for(br#"{"user":{"id":"u-1"}}"#),
            Outcome::Key("u-1".into())
        );
        let r = repartition(r#"{"template":"{tenant}/{{{user.id}}}"}"#).unwrap();
        assert_eq!(
            r.key_for(br#"{"tenant":"t1","user":{"id":true}}"#),
            Outcome::Key("t1/{true}".into())
        );
    }

    #[test]
    fn missing_fields_empty_and_long_keys_fall_back() {
        let r = repartition(r#"{"template":"{a}-{b}"}"#).unwrap();
        assert_eq!(r.key_for(br#"{"a":"x"}"#), Outcome::Keep);
        assert_eq!(r.key_for(br#"{"a":"x","b":{"obj":1}}"#), Outcome::Keep);
        assert_eq!(r.key_for(b"not json"), Outcome::Keep);
        let r = repartition(r#"{"field":"a","missing":"drop"}"#).unwrap();
        assert_eq!(r.key_for(br#"{"a":""}"#), Outcome::Drop);
        let long = format!(r#"{{"a":"{}"}}"#, "k".repeat(257));
        assert_eq!(r.key_for(long.as_bytes()), Outcome::Drop);
        let exact = format!(r#"{{"a":"{}"}}"#, "k".repeat(256));
        assert!(matches!(r.key_for(exact.as_bytes()), Outcome::Key(_)));
    }

    #[test]
    fn configuration_errors_name_the_key() {
        assert!(
            repartition("{}")
                .err()
                .unwrap()
                .contains("`field` or `template`")
        );
        assert!(repartition(r#"{"field":"a","template":"{a}"}"#).is_err());
        let e = repartition(r#"{"template":"static"}"#).err().unwrap();
        assert!(e.contains("names no field"), "{e}");
        let e = repartition(r#"{"template":"a}"}"#).err().unwrap();
        assert!(e.contains("unmatched"), "{e}");
    }
}
