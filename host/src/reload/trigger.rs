//! When to read the configuration file again: on SIGHUP, always; with
//! `--watch-config`, also when the file changes (a notify watcher on its
//! directory, so editors that replace the file and Kubernetes' ConfigMap
//! symlink swap are both seen). Bursts of events are debounced.

use crate::plugin::watch::{may_change_content, watch_target};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last event before the file is read.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// The stream of reload requests.
pub struct Requests {
    events: mpsc::UnboundedReceiver<()>,
    _watcher: Option<RecommendedWatcher>,
    signal: tokio::task::JoinHandle<()>,
}

impl Drop for Requests {
    fn drop(&mut self) {
        self.signal.abort();
    }
}

impl Requests {
    /// The next request, once its burst of events has been quiet for
    /// `DEBOUNCE`.
    pub async fn next(&mut self) -> Option<()> {
        self.events.recv().await?;
        loop {
            match tokio::time::timeout(DEBOUNCE, self.events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return Some(()),
                Err(_) => return Some(()),
            }
        }
    }
}

/// Starts listening for SIGHUP and, with `watch`, for changes of `path`.
pub fn requests(path: &Path, watch: bool) -> anyhow::Result<Requests> {
    let (tx, events) = mpsc::unbounded_channel();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGHUP: {e}"))?;
    let on_signal = tx.clone();
    let signal = tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reading the configuration again");
            if on_signal.send(()).is_err() {
                return;
            }
        }
    });
    let watcher = if watch {
        Some(watch_file(path, tx)?)
    } else {
        None
    };
    Ok(Requests {
        events,
        _watcher: watcher,
        signal,
    })
}

fn watch_file(path: &Path, tx: mpsc::UnboundedSender<()>) -> anyhow::Result<RecommendedWatcher> {
    let (dir, name, any_name) = watch_target(path)?;
    let watched = dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !may_change_content(&event.kind) {
            return;
        }
        let ours = event.paths.iter().any(|p| {
            p.parent() == Some(watched.as_path())
                && (any_name || p.file_name() == Some(name.as_os_str()))
        });
        if ours {
            let _ = tx.send(());
        }
    })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| anyhow::anyhow!("{}: cannot watch: {e}", dir.display()))?;
    Ok(watcher)
}
