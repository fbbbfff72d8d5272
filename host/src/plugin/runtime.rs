//! Compiles a plugin once and runs it. Each running instance owns a Store;
//! instances are pooled so that shards of one pipeline route concurrently,
//! and an instance that trapped is dropped (a trapped Store cannot be entered
//! again) and replaced by a fresh, re-initialised one on next use.
//!
//! Limits: a wall-clock cap per call through epoch interruption (a ticker
//! thread advances the engine's epoch every `EPOCH_TICK`), and a linear-memory
//! cap through `StoreLimits`.

use super::batch::{pack, unpack};
use super::bindings::{Router, RouterPre};
use super::host::HostState;
use crate::config::Limits;
use crate::record::{OutRecord, SourceRecord};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder, Trap};

const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Wall-clock cap on `init`, which may parse a large configuration.
const INIT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot load plugin {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("plugin init failed: {0}")]
    Init(String),
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin exceeded its time limit of {0:?} for one call")]
    Timeout(Duration),
    #[error("plugin returned an error: {0}")]
    Returned(String),
    #[error("plugin returned invalid decisions: {0}")]
    BadDecisions(String),
}

/// The engine shared by all plugins, with its epoch ticker.
pub fn engine() -> Result<Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.epoch_interruption(true);
            let engine = Engine::new(&config)
                .map_err(|e| format!("cannot create the wasm engine: {e:#}"))?;
            let ticker = engine.weak();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while let Some(engine) = ticker.upgrade() {
                        drop(engine);
                        std::thread::sleep(EPOCH_TICK);
                        match ticker.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                    }
                })
                .map_err(|e| format!("cannot start the epoch ticker: {e}"))?;
            Ok(engine)
        })
        .clone()
}

struct Instance {
    store: Store<HostState>,
    router: Router,
}

/// One loaded plugin of one pipeline.
pub struct Plugin {
    pipeline: String,
    path: PathBuf,
    engine: Engine,
    pre: RouterPre<HostState>,
    config_json: String,
    outputs: Vec<String>,
    limits: Limits,
    pool: Mutex<Vec<Instance>>,
}

impl Plugin {
    /// Compiles `path`, links it against the contract, and initialises one
    /// instance with the pipeline's config: a plugin that loads is known to
    /// implement the contract and accept its configuration.
    pub fn load(
        pipeline: &str,
        path: &Path,
        config_json: &str,
        outputs: &[String],
        limits: &Limits,
    ) -> Result<Plugin, PluginError> {
        let load_error = |reason: String| PluginError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let engine = engine().map_err(load_error)?;
        let bytes = std::fs::read(path).map_err(|e| load_error(format!("cannot read: {e}")))?;
        let component = Component::new(&engine, &bytes)
            .map_err(|e| load_error(format!("not a valid WebAssembly component: {e:#}")))?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| load_error(format!("{e:#}")))?;
        Router::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| load_error(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            load_error(format!(
                "imports something the host does not provide: {e:#}"
            ))
        })?;
        let pre = RouterPre::new(pre).map_err(|e| {
            load_error(format!(
                "does not implement distributary:plugin/router@0.1.0: {e:#}"
            ))
        })?;
        let plugin = Plugin {
            pipeline: pipeline.to_string(),
            path: path.to_path_buf(),
            engine,
            pre,
            config_json: config_json.to_string(),
            outputs: outputs.to_vec(),
            limits: limits.clone(),
            pool: Mutex::new(Vec::new()),
        };
        let first = plugin.instantiate()?;
        plugin.give_back(first);
        Ok(plugin)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn instantiate(&self) -> Result<Instance, PluginError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size((self.limits.memory_mb as usize) << 20)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine, HostState::new(&self.pipeline, limits));
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(ticks(INIT_TIMEOUT));
        let router = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| PluginError::Init(format!("instantiation failed: {e:#}")))?;
        match router.call_init(&mut store, &self.config_json, &self.outputs) {
            Ok(Ok(())) => Ok(Instance { store, router }),
            Ok(Err(message)) => Err(PluginError::Init(message)),
            Err(e) => Err(PluginError::Init(
                describe_trap(&e, INIT_TIMEOUT).to_string(),
            )),
        }
    }

    fn take(&self) -> Result<Instance, PluginError> {
        let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        match pooled {
            Some(instance) => Ok(instance),
            None => self.instantiate(),
        }
    }

    fn give_back(&self, instance: Instance) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.push(instance);
        }
    }

    /// Routes one batch: per output of the pipeline (same order as its
    /// `outputs`), the records to write there, in source order. Blocking: call
    /// it from a blocking thread.
    pub fn route(
        &self,
        source: &str,
        shard_id: &str,
        records: &[SourceRecord],
    ) -> Result<Vec<Vec<OutRecord>>, PluginError> {
        let batch = pack(source, shard_id, records);
        let mut instance = self.take()?;
        let timeout = Duration::from_millis(self.limits.batch_timeout_ms);
        instance.store.set_epoch_deadline(ticks(timeout));
        let result = instance.router.call_route(&mut instance.store, &batch);
        match result {
            Ok(Ok(decisions)) => {
                self.give_back(instance);
                unpack(decisions, records, self.outputs.len()).map_err(PluginError::BadDecisions)
            }
            Ok(Err(message)) => {
                self.give_back(instance);
                Err(PluginError::Returned(message))
            }
            // The Store trapped: drop it with the instance; a new one is made on next use.
            Err(e) => Err(describe_trap(&e, timeout)),
        }
    }
}

fn ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64 + 1
}

fn describe_trap(error: &wasmtime::Error, timeout: Duration) -> PluginError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginError::Timeout(timeout),
        _ => PluginError::Trap(format!("{error:#}")),
    }
}
