//! Watches plugin files and reloads a plugin when its file changes.
//!
//! The watch is on each plugin file's directory, not the file: an atomic
//! replace (write a temporary file, rename it over the plugin) swaps the
//! inode, and a watch on the old inode would never fire again. Events are
//! kept only for the plugin's own name, or for any name in the directory when
//! the plugin file is a symlink (Kubernetes ConfigMap volumes swap a `..data`
//! link). Open, read and close-without-write events are dropped: they include
//! the host's own reads of the file.
//!
//! Debounce: a reload starts once no event arrived for `DEBOUNCE`. Measured
//! on this machine, an in-place write in two chunks fires on the first chunk,
//! and an atomic rename fires twice; the debounce folds each into one reload.
//! A writer slower than that still cannot install a half-written file: a
//! truncated component does not compile, so the old version keeps serving
//! until the complete file arrives (and fires again).

use super::live::{LivePlugin, Reload};
use crate::shutdown::Shutdown;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Quiet time after the last event of a burst before the file is read.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Keeps the file watcher alive; dropping it stops watching.
pub struct PluginWatch {
    _watcher: RecommendedWatcher,
}

struct Watched {
    dir: PathBuf,
    file_name: std::ffi::OsString,
    any_name: bool,
    wake: mpsc::UnboundedSender<()>,
}

impl Watched {
    fn matches(&self, path: &Path) -> bool {
        path.parent() == Some(self.dir.as_path())
            && (self.any_name || path.file_name() == Some(self.file_name.as_os_str()))
    }
}

/// Whether an event can mean the content changed (not a mere open or read).
pub(crate) fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// What to watch for changes of the file at `path`: its directory
/// (canonical), its name, and whether any name in the directory may be it (a
/// symlink, such as a Kubernetes ConfigMap's, changes when its target's
/// directory entry is swapped).
pub(crate) fn watch_target(path: &Path) -> anyhow::Result<(PathBuf, std::ffi::OsString, bool)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot watch: {e}", dir.display()))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{}: not a file path", path.display()))?
        .to_os_string();
    let any_name = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    Ok((dir, file_name, any_name))
}

/// Starts watching every plugin's file; each change reloads that plugin
/// (debounced, off the data path) until `shutdown`.
pub fn watch(plugins: Vec<Arc<LivePlugin>>, shutdown: Shutdown) -> anyhow::Result<PluginWatch> {
    let mut watched = Vec::new();
    let mut dirs = BTreeSet::new();
    for plugin in plugins {
        let (dir, file_name, any_name) = watch_target(&plugin.spec().path)?;
        let (wake, events) = mpsc::unbounded_channel();
        tokio::spawn(reload_loop(plugin.clone(), events, shutdown.clone()));
        dirs.insert(dir.clone());
        watched.push(Watched {
            dir,
            file_name,
            any_name,
            wake,
        });
    }
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !may_change_content(&event.kind) {
            return;
        }
        for w in &watched {
            if event.paths.iter().any(|p| w.matches(p)) {
                let _ = w.wake.send(());
            }
        }
    })?;
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| anyhow::anyhow!("{}: cannot watch: {e}", dir.display()))?;
    }
    Ok(PluginWatch { _watcher: watcher })
}

async fn reload_loop(
    plugin: Arc<LivePlugin>,
    mut events: mpsc::UnboundedReceiver<()>,
    shutdown: Shutdown,
) {
    let pipeline = plugin.spec().pipeline.clone();
    loop {
        tokio::select! {
            event = events.recv() => if event.is_none() { return },
            _ = shutdown.requested() => return,
        }
        let first_event = Instant::now();
        // Debounce: wait for a quiet period.
        loop {
            match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let p = plugin.clone();
        let outcome = match tokio::task::spawn_blocking(move || p.reload()).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(%pipeline, error = %e, "plugin reload task failed");
                continue;
            }
        };
        let path = plugin.spec().path.display().to_string();
        match outcome {
            Reload::Unchanged => {
                tracing::debug!(%pipeline, %path, "plugin file event, content unchanged")
            }
            Reload::Swapped { version, digest } => tracing::info!(
                %pipeline,
                %path,
                version,
                digest = &digest[..12],
                ms_since_change = first_event.elapsed().as_millis() as u64,
                "plugin reloaded; the new version routes from the next batch"
            ),
            Reload::Failed(error) => tracing::warn!(
                %pipeline,
                %path,
                error = %error,
                failures = plugin.stats.reload_failures.load(Ordering::Relaxed),
                serving = plugin.stats.version.load(Ordering::Relaxed),
                "plugin reload failed; the serving version keeps running"
            ),
        }
    }
}
