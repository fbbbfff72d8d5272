//! Live configuration: the file read again on SIGHUP (always) and, with
//! `run --watch-config`, whenever it changes; what changed is applied while
//! records flow, with nothing lost and nothing written twice.
//!
//! - `trigger.rs`: the requests (SIGHUP, file events, debounced).
//! - `diff.rs`: what a new file changes, and what would need a restart (pure).
//! - `generation.rs`: what a file becomes (outputs, plugins, pipelines,
//!   sources), built off the data path and then committed.
//!
//! A file that does not load (syntax, schema, a cross-reference, a plugin
//! that does not compile or refuses its config, a stream that does not
//! exist) or that changes something only a restart can is refused as a
//! whole: the error (file, key, problem) is logged and counted, and the
//! running configuration stays. Invariant: a reload either applies
//! completely or changes nothing.

pub mod diff;
pub mod generation;
pub mod trigger;

pub use generation::{Generation, RunContext, pipelines_by_stream};
pub use trigger::{Requests, requests};

use crate::config::Config;
use std::time::Duration;

/// How long opening the new outputs and sources of a reload may take (an
/// endpoint that does not answer) before the reload is refused.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the configuration file again and applies what changed to
/// `generation`. Ok(None): nothing changed. Ok(Some(tasks)): applied; the
/// tasks are those of sources it closed, still finishing their batches.
/// Err: refused, nothing changed.
pub async fn reload(
    generation: &mut Generation,
    context: &RunContext,
) -> anyhow::Result<Option<Vec<tokio::task::JoinHandle<()>>>> {
    let path = generation.config.file.clone();
    let file = path.display().to_string();
    let config = Config::load(&path)?;
    let diff = diff::diff(&generation.config, &config);
    if !diff.restart.is_empty() {
        anyhow::bail!(
            "{file}: {}: cannot change while running; restart distributary to apply this file (nothing was changed)",
            diff.restart.join(", ")
        );
    }
    if diff.is_empty() {
        tracing::info!(%file, "configuration read again: no change");
        return Ok(None);
    }
    tracing::info!(%file, changes = %diff.summary(), "applying configuration change");
    let plugins = Generation::load_plugins(Some(generation), &config, Some(&diff), &context.cache)?;
    let build = Generation::build(Some(generation), config, Some(&diff), plugins, context);
    let next = tokio::time::timeout(OPEN_TIMEOUT, build)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{file}: opening the new outputs and sources took more than {} s (nothing was changed)",
                OPEN_TIMEOUT.as_secs()
            )
        })??;
    let previous = std::mem::replace(generation, next);
    Ok(Some(generation.commit(Some(previous), context)))
}
