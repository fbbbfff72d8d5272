//! The version of a pipeline's plugin that is serving now, and how it is
//! replaced while the pipeline runs (SPEC §6, hot reload).
//!
//! Invariants:
//! - A batch is routed by exactly one version: the router takes the current
//!   version once per batch (`current`), so a swap lands at a batch boundary.
//! - A new version serves only after it compiled, linked and `init`ed
//!   (`reload`, called off the data path on a blocking thread). If any step
//!   fails, the old version keeps serving; the failure is logged and counted.
//! - Content decides, not events: a file whose SHA-256 equals the serving
//!   version's is not reloaded.
//! - The output names a version was `init`ed with are part of the version:
//!   when a pipeline's outputs change (discovery by `stream_pattern`),
//!   `set_outputs` initialises the same compiled plugin with the new list and
//!   swaps it in like a reload. Loads are serialised (`loading`), and a reload
//!   uses the outputs of the serving version, so no version with a stale list
//!   is swapped in after `set_outputs`.
//! - A plugin that keeps failing is backed off: after a failed call, the next
//!   call waits a capped, jittered, growing delay (`penalty`), reset by a
//!   successful call or a new version.

use super::cache::{ArtifactCache, digest};
use super::runtime::{Plugin, PluginError, PluginSpec};
use crate::backoff::Backoff;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Delay before calling a plugin whose last call failed: 100 ms doubling to 10 s.
fn failure_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
}

/// Reload counters of one plugin.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// The serving version: 1 for the one loaded at start, +1 per reload.
    pub version: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Calls that failed (trap, timeout, error, bad decisions).
    pub call_failures: AtomicU64,
}

/// What a reload attempt did.
#[derive(Debug)]
pub enum Reload {
    /// The file's content is the serving version's.
    Unchanged,
    /// A new version is serving.
    Swapped { version: u64, digest: String },
    /// The file could not be loaded; the old version keeps serving.
    Failed(PluginError),
}

struct Failing {
    consecutive: u32,
    backoff: Backoff,
}

pub struct LivePlugin {
    spec: PluginSpec,
    cache: Option<ArtifactCache>,
    current: ArcSwap<Plugin>,
    /// Held while a new version is loaded and swapped in.
    loading: Mutex<()>,
    failing: Mutex<Failing>,
    pub stats: ReloadStats,
}

impl LivePlugin {
    /// Loads the first version; an error here is a start-up error.
    pub fn load(spec: PluginSpec, cache: Option<ArtifactCache>) -> Result<Self, PluginError> {
        let plugin = Plugin::load(&spec, cache.as_ref())?;
        let live = LivePlugin {
            spec,
            cache,
            current: ArcSwap::from_pointee(plugin),
            loading: Mutex::new(()),
            failing: Mutex::new(Failing {
                consecutive: 0,
                backoff: failure_backoff(),
            }),
            stats: ReloadStats::default(),
        };
        live.stats.version.store(1, Ordering::Relaxed);
        Ok(live)
    }

    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// The version serving now; hold it for the whole batch.
    pub fn current(&self) -> Arc<Plugin> {
        self.current.load_full()
    }

    /// Reads the plugin file and, if its content changed, loads and swaps in
    /// the new version. Blocking (compiles): call it off the data path.
    pub fn reload(&self) -> Reload {
        let _loading = self.loading.lock();
        let bytes = match std::fs::read(&self.spec.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                return self.failed(PluginError::Load {
                    path: self.spec.path.clone(),
                    reason: format!("cannot read: {e}"),
                });
            }
        };
        if digest(&bytes) == self.current.load().digest() {
            return Reload::Unchanged;
        }
        let spec = PluginSpec {
            outputs: self.current.load().outputs().to_vec(),
            ..self.spec.clone()
        };
        match Plugin::from_bytes(&spec, &bytes, self.cache.as_ref()) {
            Ok(plugin) => {
                let digest = plugin.digest().to_string();
                let version = self.swap_in(plugin);
                Reload::Swapped { version, digest }
            }
            Err(e) => self.failed(e),
        }
    }

    /// Initialises the serving plugin for a new list of outputs and swaps it
    /// in. Once the serving version has these outputs (swapped, or already
    /// so), calls `swapped`, still holding the load lock, on this thread: the
    /// caller switches its own outputs there. Returns the new version number,
    /// or None if the list is unchanged. If `init`
    /// rejects the list, the old version keeps serving (with its old outputs)
    /// and the failure is counted. Blocking: call it off the data path.
    pub fn set_outputs(
        &self,
        outputs: &[String],
        swapped: impl FnOnce(),
    ) -> Result<Option<u64>, PluginError> {
        let _loading = self.loading.lock();
        let current = self.current.load_full();
        if current.outputs() == outputs {
            swapped();
            return Ok(None);
        }
        match current.with_outputs(outputs.to_vec()) {
            Ok(plugin) => {
                let version = self.swap_in(plugin);
                swapped();
                Ok(Some(version))
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn swap_in(&self, plugin: Plugin) -> u64 {
        self.current.store(Arc::new(plugin));
        self.reset_failures();
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
        self.stats.version.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn failed(&self, error: PluginError) -> Reload {
        self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
        Reload::Failed(error)
    }

    /// How long to wait before the next call, if the last one failed.
    pub fn penalty(&self) -> Option<Duration> {
        let mut failing = self.failing.lock().ok()?;
        (failing.consecutive > 0).then(|| failing.backoff.next_delay())
    }

    /// Records whether a call succeeded, for `penalty`.
    pub fn record_call(&self, ok: bool) {
        if ok {
            self.reset_failures();
            return;
        }
        self.stats.call_failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut failing) = self.failing.lock() {
            failing.consecutive = failing.consecutive.saturating_add(1);
        }
    }

    fn reset_failures(&self) {
        if let Ok(mut failing) = self.failing.lock()
            && failing.consecutive > 0
        {
            failing.consecutive = 0;
            failing.backoff.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    //! Swaps real plugins under a routing loop: `replicate` (every record to
    //! outputs a and b) for `route_by_field` configured to send everything to b.
    use super::*;
    use crate::config::Limits;
    use crate::plugin::runtime::tests::{spec, wasm};
    use crate::record::SourceRecord;
    use std::sync::atomic::AtomicBool;

    const CONFIG: &str = r#"{"field":"x","default":"b"}"#;

    fn records(n: usize) -> Vec<SourceRecord> {
        crate::record::test_records(&vec![&b"{}"[..]; n])
    }

    /// Copies `name` over `path` the way deployments do: a temporary file, then a rename.
    fn install(name: &str, path: &std::path::Path) {
        let temp = path.with_extension("tmp");
        std::fs::copy(wasm(name), &temp).unwrap();
        std::fs::rename(&temp, path).unwrap();
    }

    fn live(dir: &std::path::Path) -> LivePlugin {
        let path = dir.join("router.wasm");
        install("replicate", &path);
        let mut spec = spec("replicate", CONFIG, &["a", "b"], Limits::default());
        spec.path = path;
        LivePlugin::load(spec, None).unwrap()
    }

    #[test]
    fn a_swap_lands_between_batches_and_every_batch_is_routed_by_one_version() {
        let dir = tempfile::tempdir().unwrap();
        let live = Arc::new(live(dir.path()));
        let stop = Arc::new(AtomicBool::new(false));
        let router = {
            let (live, stop) = (live.clone(), stop.clone());
            std::thread::spawn(move || {
                let input = records(50);
                let mut shapes = Vec::new();
                while !stop.load(Ordering::Relaxed) && shapes.len() < 100_000 {
                    let routed = live.current().route("s", "shard", &input).unwrap();
                    shapes.push((routed[0].len(), routed[1].len()));
                }
                shapes
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        install("route_by_field", &live.spec().path);
        assert!(matches!(live.reload(), Reload::Swapped { version: 2, .. }));
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        let shapes = router.join().unwrap();
        // Every batch is wholly version 1 (50 to a and b) or wholly version 2
        // (none to a, 50 to b), and once version 2 served, version 1 never did again.
        let first_v2 = shapes.iter().position(|s| *s == (0, 50)).unwrap();
        assert!(first_v2 > 0, "no batch routed by version 1");
        assert!(
            shapes[..first_v2].iter().all(|s| *s == (50, 50)),
            "{shapes:?}"
        );
        assert!(
            shapes[first_v2..].iter().all(|s| *s == (0, 50)),
            "{shapes:?}"
        );
    }

    #[test]
    fn a_truncated_file_keeps_the_old_version_and_unchanged_content_is_not_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let live = live(dir.path());
        let path = live.spec().path.clone();
        assert!(matches!(live.reload(), Reload::Unchanged));
        let full = std::fs::read(wasm("route_by_field")).unwrap();
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        assert!(matches!(
            live.reload(),
            Reload::Failed(PluginError::Load { .. })
        ));
        assert_eq!(live.stats.reload_failures.load(Ordering::Relaxed), 1);
        assert_eq!(live.stats.version.load(Ordering::Relaxed), 1);
        let routed = live.current().route("s", "shard", &records(3)).unwrap();
        assert_eq!(
            (routed[0].len(), routed[1].len()),
            (3, 3),
            "version 1 serves"
        );
        std::fs::write(&path, &full).unwrap();
        assert!(matches!(live.reload(), Reload::Swapped { version: 2, .. }));
        let routed = live.current().route("s", "shard", &records(3)).unwrap();
        assert_eq!(
            (routed[0].len(), routed[1].len()),
            (0, 3),
            "version 2 serves"
        );
    }

    #[test]
    fn an_init_failure_on_reload_keeps_the_old_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.wasm");
        install("replicate", &path);
        let mut spec = spec(
            "replicate",
            r#"{"no":"field"}"#,
            &["a", "b"],
            Limits::default(),
        );
        spec.path = path.clone();
        let live = LivePlugin::load(spec, None).unwrap();
        install("route_by_field", &path);
        assert!(matches!(
            live.reload(),
            Reload::Failed(PluginError::Init(_))
        ));
        let routed = live.current().route("s", "shard", &records(2)).unwrap();
        assert_eq!((routed[0].len(), routed[1].len()), (2, 2));
    }

    #[test]
    fn failing_calls_are_backed_off_and_success_resets_the_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let live = live(dir.path());
        assert_eq!(live.penalty(), None);
        live.record_call(false);
        assert!(live.penalty().is_some());
        live.record_call(false);
        assert_eq!(live.stats.call_failures.load(Ordering::Relaxed), 2);
        live.record_call(true);
        assert_eq!(live.penalty(), None);
    }

    #[test]
    fn new_outputs_are_a_new_version_and_a_rejected_list_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.wasm");
        install("route_by_field", &path);
        let mut spec = spec("route_by_field", CONFIG, &["a", "b"], Limits::default());
        spec.path = path;
        let live = LivePlugin::load(spec, None).unwrap();
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut told = false;
        let unchanged = live.set_outputs(&names(&["a", "b"]), || told = true);
        assert_eq!((unchanged.unwrap(), told), (None, true));
        let mut told = false;
        let version = live.set_outputs(&names(&["b", "c", "a"]), || told = true);
        assert_eq!((version.unwrap(), told), (Some(2), true));
        let routed = live.current().route("s", "shard", &records(2)).unwrap();
        let lengths: Vec<usize> = routed.iter().map(Vec::len).collect();
        assert_eq!(lengths, [2, 0, 0], "default b is now the first output");
        // route_by_field's init refuses a default output that is not in the list.
        assert!(
            live.set_outputs(&names(&["a", "c"]), || panic!("not swapped"))
                .is_err()
        );
        assert_eq!(live.current().outputs(), names(&["b", "c", "a"]));
        assert_eq!(live.stats.reload_failures.load(Ordering::Relaxed), 1);
        // A new file is loaded for the outputs of the serving version.
        install("replicate", &live.spec().path);
        assert!(matches!(live.reload(), Reload::Swapped { version: 3, .. }));
        assert_eq!(live.current().outputs(), names(&["b", "c", "a"]));
    }
}
