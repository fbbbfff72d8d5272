//! `redact`: masks or removes fields of JSON records before they leave.
//!
//! ```toml
//! plugin_config = { mask = ["user.email", "cards.*.number"], remove = ["user.ssn"],
//!                   mask_with = "***", outputs = ["analytics"], non_json = "drop" }
//! ```
//! `mask`: field paths (see the SDK's `json` module; `*` matches every field
//! or element) whose values are replaced by `mask_with` (default `"***"`,
//! any JSON value). `remove`: field paths deleted. A path that is absent in a
//! record is ignored. `outputs`: where redacted records go (default: every
//! output). `non_json`: records that are not JSON are `drop`ped (default: a
//! redaction plugin fails closed, it does not pass on what it cannot read)
//! or `pass`ed on unchanged. A record with nothing to redact is passed on
//! without copying its data.

use distributary_plugin_sdk::json::Path;
use distributary_plugin_sdk::{Batch, Decisions, Init, Plugin, Rewrite, export_plugin};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mask: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default = "default_mask")]
    mask_with: Value,
    outputs: Option<Vec<String>>,
    #[serde(default)]
    non_json: NonJson,
}

fn default_mask() -> Value {
    Value::from("***")
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum NonJson {
    #[default]
    Drop,
    Pass,
}

/// What happens to one record.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to redact: send the record as it is.
    Unchanged,
    /// Send this data instead.
    Redacted(Vec<u8>),
    Dropped,
}

pub struct Redact {
    mask: Vec<Path>,
    remove: Vec<Path>,
    mask_with: Value,
    non_json: NonJson,
    outputs: Vec<u32>,
}

fn paths(list: &[String], key: &str) -> Result<Vec<Path>, String> {
    list.iter()
        .enumerate()
        .map(|(i, p)| Path::parse(p, &format!("plugin_config.{key}[{i}]")))
        .collect()
}

impl Redact {
    pub fn new(init: &Init) -> Result<Self, String> {
        let config: Config = init.config()?;
        if config.mask.is_empty() && config.remove.is_empty() {
            return Err("plugin_config: give fields to `mask` or `remove`".into());
        }
        Ok(Redact {
            mask: paths(&config.mask, "mask")?,
            remove: paths(&config.remove, "remove")?,
            mask_with: config.mask_with,
            non_json: config.non_json,
            outputs: init.outputs_or_all(config.outputs.as_deref(), "outputs")?,
        })
    }

    pub fn redact(&self, data: &[u8]) -> Outcome {
        let Ok(mut record) = serde_json::from_slice::<Value>(data) else {
            return match self.non_json {
                NonJson::Drop => Outcome::Dropped,
                NonJson::Pass => Outcome::Unchanged,
            };
        };
        let mut touched = 0;
        for path in &self.mask {
            touched += path.for_each_mut(&mut record, &mut |v| *v = self.mask_with.clone());
        }
        for path in &self.remove {
            touched += path.remove(&mut record);
        }
        if touched == 0 {
            return Outcome::Unchanged;
        }
        match serde_json::to_vec(&record) {
            Ok(bytes) => Outcome::Redacted(bytes),
            Err(_) => Outcome::Dropped,
        }
    }
}

impl Plugin for Redact {
    fn init(init: Init) -> Result<Self, String> {
        Redact::new(&init)
    }

    fn route(&mut self, batch: &Batch, out: &mut Decisions) -> Result<(), String> {
        for record in batch.records() {
            match self.redact(record.data) {
                Outcome::Dropped => {}
                Outcome::Unchanged => out.deliver_each(record.index, &self.outputs),
                Outcome::Redacted(data) => out.deliver_each_rewritten(
                    record.index,
                    &self.outputs,
                    Rewrite {
                        data: Some(data),
                        ..Rewrite::default()
                    },
                ),
            }
        }
        Ok(())
    }
}

export_plugin!(Redact);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redact(config: &str) -> Result<Redact, String> {
        Redact::new(&Init {
            config: config.into(),
            outputs: vec!["a".into()],
        })
    }

    fn redacted(r: &Redact, data: Value) -> Value {
        match r.redact(data.to_string().as_bytes()) {
            Outcome::Redacted(bytes) => serde_json::from_slice(&bytes).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn masks_and_removes_nested_and_wildcard_fields() {
        let r =
            redact(r#"{"mask":["user.email","cards.*.number"],"remove":["user.ssn"]}"#).unwrap();
        let out = redacted(
            &r,
            json!({"user": {"email": "a@b", "ssn": "1", "name": "A"}, "cards": [{"number": "4111"}, {"number": "5500"}]}),
        );
        assert_eq!(
            out,
            json!({"user": {"email": "***", "name": "A"}, "cards": [{"number": "***"}, {"number": "***"}]})
        );
    }

    #[test]
    fn unchanged_records_are_not_copied_and_non_json_fails_closed() {
        let r = redact(r#"{"remove":["secret"],"mask_with":null}"#).unwrap();
        assert_eq!(r.redact(br#"{"public":1}"#), Outcome::Unchanged);
        assert_eq!(r.redact(b"plain text"), Outcome::Dropped);
        let r = redact(r#"{"mask":["secret"],"mask_with":null,"non_json":"pass"}"#).unwrap();
        assert_eq!(r.redact(b"plain text"), Outcome::Unchanged);
        assert_eq!(redacted(&r, json!({"secret": 5})), json!({"secret": null}));
    }

    #[test]
    fn configuration_errors_name_the_key() {
        assert!(redact("{}").err().unwrap().contains("mask"));
        let e = redact(r#"{"mask":["a", ""]}"#).err().unwrap();
        assert!(e.starts_with("plugin_config.mask[1]"), "{e}");
        let e = redact(r#"{"mask":["a"],"outputs":["x"]}"#).err().unwrap();
        assert!(e.contains("plugin_config.outputs"), "{e}");
    }
}
