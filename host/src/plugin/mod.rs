//! WASM routing plugins (SPEC §5): the wasmtime host side of `wit/plugin.wit`.
//!
//! - `bindings`: the host bindings generated from the WIT contract;
//! - `host`: the per-Store state a plugin sees (no files, env or network) and the `log` import;
//! - `batch`: packs source records into the columnar WIT batch, and turns the
//!   plugin's decisions back into per-output record lists, checking them;
//! - `runtime`: compiles a plugin once and runs `route` on pooled instances
//!   under a wall-clock and memory cap.

pub mod batch;
pub mod host;
pub mod runtime;

pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "router",
    });
}

pub use runtime::{Plugin, PluginError};
