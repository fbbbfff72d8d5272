//! What a plugin instance can reach: its Store state. WASI is linked because
//! Rust guests built for `wasm32-wasip2` import it through std, but the context
//! is empty: no preopened directories, no environment, no arguments, no
//! sockets, no inherited stdio. The one capability granted on purpose is
//! `log`, tagged with the pipeline and rate-limited.

use super::bindings::distributary::plugin::log::{Host as LogHost, Level};
use super::bindings::distributary::plugin::types::Host as TypesHost;
use std::time::Instant;
use wasmtime::StoreLimits;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Most log lines a plugin instance may emit per second; the rest are counted and dropped.
const LOG_LINES_PER_SECOND: u32 = 20;
/// Longest log line kept, in bytes.
const LOG_LINE_MAX: usize = 1024;

pub struct HostState {
    pub pipeline: String,
    pub limits: StoreLimits,
    wasi: WasiCtx,
    table: ResourceTable,
    log_window: Instant,
    log_lines: u32,
    pub logs_dropped: u64,
}

impl HostState {
    pub fn new(pipeline: &str, limits: StoreLimits) -> Self {
        HostState {
            pipeline: pipeline.to_string(),
            limits,
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            log_window: Instant::now(),
            log_lines: 0,
            logs_dropped: 0,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl LogHost for HostState {
    fn log(&mut self, level: Level, message: String) {
        if self.log_window.elapsed().as_secs() >= 1 {
            self.log_window = Instant::now();
            self.log_lines = 0;
        }
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_SECOND {
            self.logs_dropped += 1;
            return;
        }
        let mut message = message;
        if message.len() > LOG_LINE_MAX {
            let mut cut = LOG_LINE_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let pipeline = self.pipeline.as_str();
        match level {
            Level::Trace => tracing::trace!(pipeline, plugin_log = %message),
            Level::Debug => tracing::debug!(pipeline, plugin_log = %message),
            Level::Info => tracing::info!(pipeline, plugin_log = %message),
            Level::Warn => tracing::warn!(pipeline, plugin_log = %message),
            Level::Error => tracing::error!(pipeline, plugin_log = %message),
        }
    }
}

/// The `types` interface has no functions; its host side is empty.
impl TypesHost for HostState {}
