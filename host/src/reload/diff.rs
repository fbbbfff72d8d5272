//! What a new configuration changes against the running one, decided from
//! the two parsed files alone (pure, unit-tested below).
//!
//! Applied live (`reload/apply.rs`): pipelines added, removed or changed
//! (a pipeline is changed when its own entry differs, or the definition of
//! an output it writes to or dead-letters to does); sources added or
//! removed; outputs opened or closed. Everything else needs a restart:
//! `checkpoint.*` (the store and the leases), `server.*` (the listener),
//! `buffer.*` (the memory budget every reader holds), `shutdown_timeout_s`,
//! and a source whose definition changed in place (its readers, iterators
//! and EFO consumer are built from it): rename it to read the new one.

use crate::config::Config;
use std::collections::BTreeSet;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Keys whose change needs a restart; the reload is refused if any.
    pub restart: Vec<String>,
    pub pipelines_added: Vec<String>,
    pub pipelines_removed: Vec<String>,
    pub pipelines_changed: Vec<String>,
    pub sources_added: Vec<String>,
    pub sources_removed: Vec<String>,
    /// New outputs, and outputs whose definition changed (a new writer).
    pub outputs_opened: Vec<String>,
    /// Outputs no longer defined, and changed ones (the old writer).
    pub outputs_closed: Vec<String>,
}

impl Diff {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }

    /// One line for the log: what the reload does.
    pub fn summary(&self) -> String {
        let parts = [
            ("pipelines added", &self.pipelines_added),
            ("removed", &self.pipelines_removed),
            ("changed", &self.pipelines_changed),
            ("sources added", &self.sources_added),
            ("sources removed", &self.sources_removed),
            ("outputs opened", &self.outputs_opened),
            ("outputs closed", &self.outputs_closed),
        ];
        let text: Vec<String> = parts
            .iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(what, names)| format!("{what}: {}", names.join(", ")))
            .collect();
        if text.is_empty() {
            "no change".into()
        } else {
            text.join("; ")
        }
    }
}

pub fn diff(old: &Config, new: &Config) -> Diff {
    let mut d = Diff::default();
    if old.checkpoint != new.checkpoint {
        d.restart.push("checkpoint".into());
    }
    if old.server != new.server {
        d.restart.push("server".into());
    }
    if old.buffer != new.buffer {
        d.restart.push("buffer".into());
    }
    if old.shutdown_timeout_s != new.shutdown_timeout_s {
        d.restart.push("shutdown_timeout_s".into());
    }
    for (name, source) in &new.sources {
        match old.sources.get(name) {
            None => d.sources_added.push(name.clone()),
            Some(before) if before != source => d.restart.push(format!("sources.{name}")),
            Some(_) => {}
        }
    }
    d.sources_removed = old
        .sources
        .keys()
        .filter(|name| !new.sources.contains_key(*name))
        .cloned()
        .collect();
    let changed_outputs: BTreeSet<&String> = new
        .outputs
        .iter()
        .filter(|(name, o)| old.outputs.get(*name).is_some_and(|before| before != *o))
        .map(|(name, _)| name)
        .collect();
    for name in new.outputs.keys() {
        if !old.outputs.contains_key(name) || changed_outputs.contains(name) {
            d.outputs_opened.push(name.clone());
        }
    }
    for name in old.outputs.keys() {
        if !new.outputs.contains_key(name) || changed_outputs.contains(name) {
            d.outputs_closed.push(name.clone());
        }
    }
    for p in &new.pipelines {
        match old.pipelines.iter().find(|o| o.name == p.name) {
            None => d.pipelines_added.push(p.name.clone()),
            Some(before) => {
                let writes_to_changed = p
                    .outputs
                    .iter()
                    .chain(&p.dead_letter)
                    .any(|o| changed_outputs.contains(o));
                if before != p || writes_to_changed {
                    d.pipelines_changed.push(p.name.clone());
                }
            }
        }
    }
    d.pipelines_removed = old
        .pipelines
        .iter()
        .filter(|o| !new.pipelines.iter().any(|p| p.name == o.name))
        .map(|o| o.name.clone())
        .collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[sources.in]
stream = "in"
[outputs.a]
stream = "a"
[outputs.b]
stream = "b"
[[pipelines]]
name = "p1"
source = "in"
outputs = ["a"]
[[pipelines]]
name = "p2"
source = "in"
outputs = ["b"]
"#;

    fn config(text: &str) -> Config {
        match Config::parse(Path::new("/etc/distributary.toml"), text) {
            Ok(c) => c,
            Err(e) => panic!("test config does not parse: {e}"),
        }
    }

    fn diff_of(edit: impl Fn(&str) -> String) -> Diff {
        diff(&config(BASE), &config(&edit(BASE)))
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let d = diff_of(|s| s.to_string());
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.summary(), "no change");
    }

    #[test]
    fn pipelines_added_removed_and_changed_are_told_apart() {
        let d = diff_of(|s| {
            s.replace("name = \"p2\"", "name = \"p3\"")
                .replace("outputs = [\"a\"]", "outputs = [\"a\", \"b\"]")
        });
        assert_eq!(d.pipelines_added, ["p3"]);
        assert_eq!(d.pipelines_removed, ["p2"]);
        assert_eq!(d.pipelines_changed, ["p1"]);
        assert!(d.restart.is_empty());
    }

    #[test]
    fn a_changed_output_changes_every_pipeline_writing_to_it() {
        let d = diff_of(|s| s.replace("stream = \"b\"", "stream = \"b2\""));
        assert_eq!(d.outputs_opened, ["b"]);
        assert_eq!(d.outputs_closed, ["b"]);
        assert_eq!(d.pipelines_changed, ["p2"]);
        assert!(d.pipelines_added.is_empty() && d.pipelines_removed.is_empty());
    }

    #[test]
    fn new_sources_and_outputs_open_and_unused_ones_close() {
        let d = diff_of(|s| {
            format!("{s}\n[sources.more]\nstream = \"more\"\n[outputs.c]\nstream = \"c\"\n")
        });
        assert_eq!(d.sources_added, ["more"]);
        assert_eq!(d.outputs_opened, ["c"]);
        let back = diff(
            &config(&format!("{BASE}\n[outputs.c]\nstream = \"c\"\n")),
            &config(BASE),
        );
        assert_eq!(back.outputs_closed, ["c"]);
    }

    #[test]
    fn store_server_buffer_timeout_and_a_changed_source_need_a_restart() {
        let d = diff_of(|s| {
            format!(
                "shutdown_timeout_s = 5\n{}\n[checkpoint]\npath = \"/elsewhere\"\n[server]\nlisten = \"127.0.0.1:9\"\n[buffer]\nmax_bytes = 2000000\n",
                s.replace("stream = \"in\"", "stream = \"other\"")
            )
        });
        assert_eq!(
            d.restart,
            [
                "checkpoint",
                "server",
                "buffer",
                "shutdown_timeout_s",
                "sources.in"
            ]
        );
    }

    #[test]
    fn a_plugin_config_or_limit_change_is_a_pipeline_change() {
        let d = diff_of(|s| {
            s.replace(
                "outputs = [\"b\"]",
                "outputs = [\"b\"]\nbuffer_batches = 9\n[pipelines.limits]\nmemory_mb = 8",
            )
        });
        assert_eq!(d.pipelines_changed, ["p2"]);
    }
}
