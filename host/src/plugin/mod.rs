//! WASM routing plugins (SPEC §5): the wasmtime host side of `wit/plugin.wit`.
//!
//! - `bindings`: the host bindings generated from the WIT contract;
//! - `host`: the per-Store state a plugin sees (no files, env, network,
//!   clock or randomness) and the `log` import;
//! - `output`: keeps the tail of a plugin's stdout/stderr for error messages;
//! - `batch`: packs source records into the columnar WIT batch, and turns the
//!   plugin's decisions back into per-output record lists, checking them;
//! - `cache`: compiles a component, through an on-disk cache of compiled
//!   artifacts keyed by content hash and engine settings;
//! - `runtime`: one loaded version of a plugin: `route` on pooled instances
//!   under a wall-clock and memory cap;
//! - `pool`: the instance pool of a version: bounded, idle instances dropped;
//! - `live`: the serving version of a pipeline's plugin, swapped at a batch
//!   boundary on reload, and the backoff of a plugin that keeps failing;
//! - `watch`: watches plugin files (notify) and reloads on change, debounced.

pub mod batch;
pub mod cache;
pub mod host;
pub mod live;
pub mod output;
pub mod pool;
pub mod runtime;
pub mod watch;

pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "router",
    });
}

pub use cache::ArtifactCache;
pub use live::{LivePlugin, Reload};
pub use runtime::{Plugin, PluginError, PluginSpec};
pub use watch::{PluginWatch, watch};
