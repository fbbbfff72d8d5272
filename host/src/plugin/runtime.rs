//! Compiles a plugin once and runs it. Each running instance owns a Store;
//! instances are pooled so that shards of one pipeline route concurrently,
//! and an instance that trapped is dropped (a trapped Store cannot be entered
//! again) and replaced by a fresh, re-initialised one on next use.
//!
//! Limits: a wall-clock cap per call through epoch interruption (a ticker
//! thread advances the engine's epoch every `EPOCH_TICK`), and a linear-memory
//! cap through `StoreLimits`.

use super::batch::{empty, pack_into, unpack};
use super::bindings::distributary::plugin::types::Batch;
use super::bindings::{Router, RouterPre};
use super::cache::{ArtifactCache, compile, digest};
use super::host::HostState;
use super::pool::{Pool, Taken};
use crate::config::Limits;
use crate::record::{OutRecord, SourceRecord};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
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

/// What a pipeline asks of its plugin: which file, its configuration, the
/// outputs it may name, and the limits it runs under.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub pipeline: String,
    pub path: PathBuf,
    pub config_json: String,
    pub outputs: Vec<String>,
    pub limits: Limits,
}

struct Instance {
    store: Store<HostState>,
    router: Router,
    /// Column buffers reused from batch to batch.
    batch: Batch,
}

/// One loaded version of a pipeline's plugin.
pub struct Plugin {
    spec: PluginSpec,
    digest: String,
    engine: Engine,
    pre: RouterPre<HostState>,
    pool: Pool<Instance>,
}

impl Plugin {
    /// Reads, compiles (through `cache`), links and initialises one instance
    /// of the plugin at `spec.path`: a plugin that loads is known to
    /// implement the contract and accept its configuration.
    pub fn load(spec: &PluginSpec, cache: Option<&ArtifactCache>) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(&spec.path).map_err(|e| PluginError::Load {
            path: spec.path.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        Plugin::from_bytes(spec, &bytes, cache)
    }

    /// As [`Plugin::load`], for a file already read.
    pub fn from_bytes(
        spec: &PluginSpec,
        bytes: &[u8],
        cache: Option<&ArtifactCache>,
    ) -> Result<Plugin, PluginError> {
        let load_error = |reason: String| PluginError::Load {
            path: spec.path.clone(),
            reason,
        };
        let engine = engine().map_err(load_error)?;
        let digest = digest(bytes);
        let component = compile(&engine, bytes, &digest, cache).map_err(load_error)?;
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
            spec: spec.clone(),
            digest,
            engine,
            pre,
            pool: Pool::for_this_machine(),
        };
        let first = plugin.take()?;
        plugin.give_back(first);
        Ok(plugin)
    }

    /// The same compiled plugin initialised for another list of outputs (its
    /// pipeline's outputs changed: discovery). The first instance is made and
    /// `init`ed here, so an `init` that rejects the new list is an error.
    pub fn with_outputs(&self, outputs: Vec<String>) -> Result<Plugin, PluginError> {
        let plugin = Plugin {
            spec: PluginSpec {
                outputs,
                ..self.spec.clone()
            },
            digest: self.digest.clone(),
            engine: self.engine.clone(),
            pre: self.pre.clone(),
            pool: Pool::for_this_machine(),
        };
        let first = plugin.take()?;
        plugin.give_back(first);
        Ok(plugin)
    }

    pub fn path(&self) -> &Path {
        &self.spec.path
    }

    /// The output names this version was initialised with, in routing order.
    pub fn outputs(&self) -> &[String] {
        &self.spec.outputs
    }

    /// The SHA-256 of the file this version was loaded from.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    fn instantiate(&self) -> Result<Instance, PluginError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size((self.spec.limits.memory_mb as usize) << 20)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine, HostState::new(&self.spec.pipeline, limits));
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(ticks(INIT_TIMEOUT));
        let router = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| PluginError::Init(format!("instantiation failed: {e:#}")))?;
        match router.call_init(&mut store, &self.spec.config_json, &self.spec.outputs) {
            Ok(Ok(())) => Ok(Instance {
                store,
                router,
                batch: empty(),
            }),
            Ok(Err(message)) => Err(PluginError::Init(message)),
            Err(e) => {
                let state = store.data();
                let said = state.last_error.clone().or_else(|| {
                    let output = state.output.take();
                    (!output.is_empty()).then_some(output)
                });
                Err(PluginError::Init(
                    describe_trap(&e, INIT_TIMEOUT, said.as_deref()).to_string(),
                ))
            }
        }
    }

    fn take(&self) -> Result<Instance, PluginError> {
        match self.pool.take() {
            Taken::Pooled(instance) => Ok(instance),
            Taken::Make => self.instantiate().inspect_err(|_| self.pool.discard()),
        }
    }

    fn give_back(&self, instance: Instance) {
        self.pool.give_back(instance);
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
        let mut instance = self.take()?;
        pack_into(&mut instance.batch, source, shard_id, records);
        let timeout = Duration::from_millis(self.spec.limits.batch_timeout_ms);
        instance.store.set_epoch_deadline(ticks(timeout));
        instance.store.data_mut().last_error = None;
        instance.store.data().output.take();
        let result = instance
            .router
            .call_route(&mut instance.store, &instance.batch);
        match result {
            Ok(Ok(decisions)) => {
                self.give_back(instance);
                unpack(decisions, records, self.spec.outputs.len())
                    .map_err(PluginError::BadDecisions)
            }
            Ok(Err(message)) => {
                self.give_back(instance);
                Err(PluginError::Returned(message))
            }
            // The Store trapped: drop it with the instance; a new one is made on next use.
            Err(e) => {
                self.pool.discard();
                let state = instance.store.data();
                let said = state.last_error.clone().or_else(|| {
                    let output = state.output.take();
                    (!output.is_empty()).then_some(output)
                });
                let error = describe_trap(&e, timeout, said.as_deref());
                tracing::debug!(pipeline = %self.spec.pipeline, trap = %format!("{e:#}"), "plugin trap, with its wasm backtrace");
                Err(error)
            }
        }
    }
}

fn ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64 + 1
}

/// A trap as an error: the trap itself (its wasm backtrace goes to the debug
/// log) and, when the plugin logged an error just before (a Rust panic
/// message, through the SDK's panic hook), that message.
fn describe_trap(
    error: &wasmtime::Error,
    timeout: Duration,
    last_error: Option<&str>,
) -> PluginError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginError::Timeout(timeout),
        _ => {
            let trap = error.root_cause().to_string();
            PluginError::Trap(match last_error {
                Some(message) => format!("{trap}; the plugin said: {message}"),
                None => trap,
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Runs the real runtime on misbehaving plugins (`plugins/hostile`, built
    //! by `scripts/build-plugins`): every failure must come back as an error
    //! of the right kind, within its limit, and leave the plugin usable.
    use super::*;
    use std::time::Instant;

    pub(crate) fn wasm(name: &str) -> PathBuf {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let path = target
            .join("wasm32-wasip2/release")
            .join(format!("{name}.wasm"));
        assert!(
            path.is_file(),
            "{} missing: run scripts/build-plugins first",
            path.display()
        );
        path
    }

    pub(crate) fn spec(
        name: &str,
        config_json: &str,
        outputs: &[&str],
        limits: Limits,
    ) -> PluginSpec {
        PluginSpec {
            pipeline: "test".into(),
            path: wasm(name),
            config_json: config_json.into(),
            outputs: outputs.iter().map(|o| o.to_string()).collect(),
            limits,
        }
    }

    fn load(mode: &str, limits: Limits) -> Result<Plugin, PluginError> {
        Plugin::load(
            &spec("hostile", &format!("{mode:?}"), &["a", "b"], limits),
            None,
        )
    }

    fn records(data: &[&str]) -> Vec<SourceRecord> {
        let data: Vec<&[u8]> = data.iter().map(|d| d.as_bytes()).collect();
        crate::record::test_records(&data)
    }

    #[test]
    fn an_endless_loop_is_stopped_at_the_time_limit() {
        let plugin = load(
            "loop",
            Limits {
                memory_mb: 64,
                batch_timeout_ms: 100,
            },
        )
        .unwrap();
        for _ in 0..2 {
            let start = Instant::now();
            let err = plugin.route("s", "shard", &records(&["x"])).unwrap_err();
            assert!(matches!(err, PluginError::Timeout(_)), "{err}");
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "took {:?}",
                start.elapsed()
            );
        }
    }

    #[test]
    fn a_memory_bomb_traps_at_the_memory_limit() {
        let plugin = load(
            "grow",
            Limits {
                memory_mb: 16,
                batch_timeout_ms: 5000,
            },
        )
        .unwrap();
        let err = plugin.route("s", "shard", &records(&["x"])).unwrap_err();
        assert!(
            matches!(&err, PluginError::Trap(m) if m.contains("memory")),
            "{err}"
        );
    }

    #[test]
    fn a_trapped_instance_is_replaced_and_the_next_batch_is_served() {
        let plugin = load("boom", Limits::default()).unwrap();
        let err = plugin
            .route("s", "shard", &records(&["a", "boom", "c"]))
            .unwrap_err();
        assert!(
            matches!(&err, PluginError::Trap(m) if m.contains("boom at record 1")),
            "the panic message is part of the error: {err}"
        );
        let routed = plugin
            .route("s", "shard", &records(&["a", "b", "c"]))
            .unwrap();
        assert_eq!(routed.len(), 2);
        for list in &routed {
            let data: Vec<&[u8]> = list.iter().map(|r| r.data.as_ref()).collect();
            assert_eq!(data, [b"a", b"b", b"c"]);
        }
    }

    #[test]
    fn the_sandbox_gives_no_file_env_clock_randomness_or_network() {
        // Not a time-limit test: room for a cold first call on a busy machine.
        let limits = Limits {
            batch_timeout_ms: 5000,
            ..Limits::default()
        };
        let plugin = load("probe", limits).unwrap();
        let err = plugin.route("s", "shard", &records(&["x"])).unwrap_err();
        let PluginError::Returned(report) = err else {
            panic!("expected the probe's report, got {err}");
        };
        let seen: std::collections::BTreeMap<&str, &str> =
            report.lines().filter_map(|l| l.split_once('=')).collect();
        assert!(seen["file"].starts_with("error"), "{report}");
        assert!(seen["dir"].starts_with("error"), "{report}");
        assert_eq!(seen["env"], "0", "{report}");
        assert_eq!(seen["args"], "0", "{report}");
        assert_eq!(seen["wall_ns"], "0", "{report}");
        assert_eq!(seen["monotonic_ns"], "0", "{report}");
        assert_eq!(seen["random"], format!("{:?}", [0u8; 16]), "{report}");
        assert!(seen["net"].starts_with("error"), "{report}");
    }

    #[test]
    fn an_output_outside_the_pipeline_is_refused() {
        let plugin = load("bad-output", Limits::default()).unwrap();
        let err = plugin.route("s", "shard", &records(&["x"])).unwrap_err();
        assert!(
            matches!(&err, PluginError::BadDecisions(m) if m.contains("output index 9")),
            "{err}"
        );
    }

    #[test]
    fn load_reports_init_errors_and_files_that_are_not_components() {
        let err = load("fail-init", Limits::default()).err().unwrap();
        assert!(
            matches!(&err, PluginError::Init(m) if m.contains("fail-init")),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.wasm");
        std::fs::write(&junk, b"\0asm junk").unwrap();
        let mut junk_spec = spec("hostile", "{}", &["a"], Limits::default());
        junk_spec.path = junk;
        let err = Plugin::load(&junk_spec, None).err().unwrap();
        assert!(matches!(err, PluginError::Load { .. }), "{err}");
    }

    #[test]
    fn replicate_wasm_routes_every_record_to_every_output_in_order() {
        let plugin = Plugin::load(
            &spec("replicate", "{}", &["a", "b", "c"], Limits::default()),
            None,
        )
        .unwrap();
        let input = records(&["1", "2", "3", "4"]);
        let routed = plugin.route("s", "shard", &input).unwrap();
        assert_eq!(routed.len(), 3);
        for list in routed {
            let keys: Vec<&str> = list.iter().map(|r| r.partition_key.as_str()).collect();
            assert_eq!(keys, ["k0", "k1", "k2", "k3"]);
        }
    }
}
