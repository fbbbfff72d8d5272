//! The configuration file (SPEC §3): its types, loading and validation.
//!
//! Everything that can be checked without the network is checked here, before
//! any record is read; every error names the file, the key and what is wrong.
//! Relative paths in the file (plugins, checkpoint directory) are resolved
//! against the directory of the configuration file, so a config means the same
//! thing wherever it is run from.

mod types;
mod validate;

pub use types::*;
pub use validate::parse_timestamp as validate_timestamp;

use std::path::{Path, PathBuf};

/// A configuration error: `file: key: problem`.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {problem}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub problem: String,
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: "(file)".into(),
            problem: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates configuration text said to come from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        // Syntax first; then the schema, tracking the key path so that a
        // type or enum error names its key (`pipelines[0].on_error`).
        let line_of = |e: &toml::de::Error| {
            e.span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
        };
        let document = toml::Deserializer::parse(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: line_of(&e).map_or_else(|| "(toml)".into(), |line| format!("line {line}")),
            problem: e.message().trim().to_string(),
        })?;
        let mut config: Config = serde_path_to_error::deserialize(document).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = line_of(&inner);
            let key = match (key.as_str(), line) {
                (".", Some(line)) => format!("line {line}"),
                (".", None) => "(toml)".into(),
                (_, Some(line)) => format!("{key} (line {line})"),
                (_, None) => key,
            };
            ConfigError {
                file: path.to_path_buf(),
                key,
                problem: inner.message().trim().to_string(),
            }
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.file = path.to_path_buf();
        config.resolve_paths(&base);
        validate::validate(&config).map_err(|(key, problem)| ConfigError {
            file: path.to_path_buf(),
            key,
            problem,
        })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.checkpoint.path);
        let bundles = self
            .sources
            .values_mut()
            .filter_map(|s| s.ca_bundle.as_mut())
            .chain(
                self.outputs
                    .values_mut()
                    .filter_map(|o| o.ca_bundle.as_mut()),
            )
            .chain(self.checkpoint.ca_bundle.as_mut());
        for bundle in bundles {
            resolve(bundle);
        }
        for pipeline in &mut self.pipelines {
            if let Some(plugin) = &mut pipeline.plugin {
                resolve(plugin);
            }
        }
    }
}

#[cfg(test)]
mod tests;
