//! my-plugin: a template. Records whose data contains `keyword` go to the
//! `matched` output with their partition key prefixed by `key_prefix`; all
//! other records go to `others` (or are dropped when `others` is not set).
//!
//! ```toml
//! plugin = "target/wasm32-wasip2/release/my_plugin.wasm"
//! plugin_config = { keyword = "ERROR", matched = "alerts", others = "archive", key_prefix = "alert-" }
//! ```
//!
//! Try it without any stream: `distributary route --plugin
//! target/wasm32-wasip2/release/my_plugin.wasm --plugin-config
//! '{"keyword":"ERROR","matched":"alerts","others":"archive"}' --outputs alerts,archive
//! --input examples/plugin-template/records.jsonl`

use distributary_plugin_sdk::{Batch, Decisions, Init, Plugin, Rewrite, export_plugin};
use serde::Deserialize;

/// `plugin_config`, typed. `deny_unknown_fields` turns a typo into an init error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    keyword: String,
    matched: String,
    others: Option<String>,
    #[serde(default)]
    key_prefix: String,
}

/// Built once per plugin instance by `init`; then asked to route batch after batch.
pub struct MyPlugin {
    keyword: Vec<u8>,
    matched: u32,
    others: Option<u32>,
    key_prefix: String,
}

impl MyPlugin {
    /// Checks the configuration against the pipeline's outputs. An error here
    /// fails `distributary check`, start-up, or a hot reload (which then
    /// keeps the previous version).
    pub fn new(init: &Init) -> Result<Self, String> {
        let config: Config = init.config()?;
        if config.keyword.is_empty() {
            return Err("plugin_config.keyword: must not be empty".into());
        }
        Ok(MyPlugin {
            keyword: config.keyword.into_bytes(),
            matched: init.output(&config.matched, "matched")?,
            others: config
                .others
                .map(|name| init.output(&name, "others"))
                .transpose()?,
            key_prefix: config.key_prefix,
        })
    }

    /// The decision for one record: which output, and the new partition key if any.
    pub fn decide(&self, data: &[u8], partition_key: &str) -> Option<(u32, Option<String>)> {
        let matched = data
            .windows(self.keyword.len())
            .any(|w| w == self.keyword.as_slice());
        if matched {
            let key = (!self.key_prefix.is_empty())
                .then(|| format!("{}{partition_key}", self.key_prefix));
            Some((self.matched, key))
        } else {
            self.others.map(|o| (o, None))
        }
    }
}

impl Plugin for MyPlugin {
    fn init(init: Init) -> Result<Self, String> {
        MyPlugin::new(&init)
    }

    fn route(&mut self, batch: &Batch, out: &mut Decisions) -> Result<(), String> {
        for record in batch.records() {
            match self.decide(record.data, record.partition_key) {
                None => {} // dropped: no delivery at all
                Some((output, None)) => out.deliver(record.index, output),
                Some((output, Some(key))) => out.deliver_rewritten(
                    record.index,
                    output,
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

export_plugin!(MyPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(config: &str) -> Result<MyPlugin, String> {
        MyPlugin::new(&Init {
            config: config.into(),
            outputs: vec!["alerts".into(), "archive".into()],
        })
    }

    #[test]
    fn matching_records_go_to_matched_with_a_new_key() {
        let p = plugin(
            r#"{"keyword":"ERROR","matched":"alerts","others":"archive","key_prefix":"alert-"}"#,
        )
        .unwrap();
        assert_eq!(
            p.decide(b"disk ERROR on host-1", "host-1"),
            Some((0, Some("alert-host-1".into())))
        );
        assert_eq!(p.decide(b"all good", "host-1"), Some((1, None)));
    }

    #[test]
    fn without_others_unmatched_records_are_dropped() {
        let p = plugin(r#"{"keyword":"ERROR","matched":"alerts"}"#).unwrap();
        assert_eq!(p.decide(b"all good", "k"), None);
    }

    #[test]
    fn bad_configuration_is_refused_with_the_key() {
        let e = plugin(r#"{"keyword":"ERROR","matched":"nowhere"}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("plugin_config.matched"), "{e}");
        let e = plugin(r#"{"keyword":"","matched":"alerts"}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("plugin_config.keyword"), "{e}");
    }
}
