//! What a plugin instance can reach: its Store state.
//!
//! WASI is linked because Rust guests built for `wasm32-wasip2` (and Python
//! guests built with componentize-py) import it through their standard
//! library, but every capability in it is denied or emptied:
//! no preopened directories (opening any file fails), no environment, no
//! arguments, no sockets or name lookup, no inherited stdio (output is kept
//! in a small tail for error messages, see `output`); both clocks are
//! frozen at zero (the wall clock reads 1970-01-01T00:00:00Z, the monotonic
//! clock never advances) and both random sources return zeros. A plugin is
//! thus a pure function of its configuration and its input: the same batch
//! always gets the same decisions, live, in a replay, and in
//! `distributary route`. The one capability granted on purpose is `log`,
//! tagged with the pipeline and rate-limited.

use super::bindings::distributary::plugin::log::{Host as LogHost, Level};
use super::bindings::distributary::plugin::types::Host as TypesHost;
use super::output::OutputTail;
use std::time::{Duration, Instant};
use wasmtime::StoreLimits;
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, ResourceTable, WasiCtx, WasiCtxBuilder,
    WasiCtxView, WasiView,
};

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
    /// The last error-level line logged during the current call (the SDK's
    /// panic hook logs the panic message there), to explain a trap.
    pub last_error: Option<String>,
    /// The tail of what the instance wrote to stdout and stderr.
    pub output: OutputTail,
}

impl HostState {
    pub fn new(pipeline: &str, limits: StoreLimits) -> Self {
        let output = OutputTail::default();
        HostState {
            pipeline: pipeline.to_string(),
            limits,
            wasi: deny_all(&output),
            output,
            table: ResourceTable::new(),
            log_window: Instant::now(),
            log_lines: 0,
            logs_dropped: 0,
            last_error: None,
        }
    }
}

/// The WASI context of every plugin instance: nothing to reach, nothing that varies.
fn deny_all(output: &OutputTail) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(output.clone())
        .stderr(output.clone())
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .secure_random(Deterministic::new(vec![0]))
        .insecure_random(Deterministic::new(vec![0]))
        .insecure_random_seed(0)
        .build()
}

/// A clock that always reads zero.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
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
        if matches!(level, Level::Error) {
            self.last_error = Some(truncate(&message).to_string());
        }
        if self.log_window.elapsed().as_secs() >= 1 {
            self.log_window = Instant::now();
            self.log_lines = 0;
        }
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_SECOND {
            self.logs_dropped += 1;
            return;
        }
        let message = truncate(&message);
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

/// At most `LOG_LINE_MAX` bytes of `message`, cut at a character boundary.
fn truncate(message: &str) -> &str {
    let mut cut = message.len().min(LOG_LINE_MAX);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    &message[..cut]
}

/// The `types` interface has no functions; its host side is empty.
impl TypesHost for HostState {}
