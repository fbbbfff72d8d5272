//! The pipelines reading one source, as live configuration changes them.
//!
//! `run.rs` sets what is `wanted` (a reload adds, removes or replaces
//! pipelines: a changed pipeline is a new `Pipeline` with the same name); the
//! source's run loop stores the `latest` moments of new pipelines and then
//! makes the list `active`; every shard task follows `active` and starts or
//! retires lanes at batch boundaries (`coordinator.rs`). A pipeline is the
//! same one only if it is the same `Arc` (`same`).
//!
//! Invariant: a pipeline is active only after its `latest` moment (if any)
//! is stored, so every shard of the source starts it from that moment.

use crate::pipeline::Pipeline;
use std::sync::Arc;
use tokio::sync::watch;

pub type Pipelines = Arc<Vec<Arc<Pipeline>>>;

pub struct PipelineSet {
    wanted: watch::Sender<Pipelines>,
    active: watch::Sender<Pipelines>,
    /// Set when the source is removed from the configuration: the run loop
    /// ends once its shard tasks have.
    closed: watch::Sender<bool>,
}

impl PipelineSet {
    pub fn new(pipelines: Vec<Arc<Pipeline>>) -> Self {
        PipelineSet {
            wanted: watch::channel(Arc::new(pipelines)).0,
            active: watch::channel(Arc::new(Vec::new())).0,
            closed: watch::channel(false).0,
        }
    }

    /// The pipelines that should read the source from now on.
    pub fn set(&self, pipelines: Vec<Arc<Pipeline>>) {
        self.wanted.send_replace(Arc::new(pipelines));
    }

    /// No pipeline reads the source any more: lanes retire, the source stops.
    pub fn close(&self) {
        self.set(Vec::new());
        self.closed.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    pub fn wanted(&self) -> watch::Receiver<Pipelines> {
        self.wanted.subscribe()
    }

    pub(super) fn activate(&self, pipelines: Pipelines) {
        self.active.send_replace(pipelines);
    }

    /// What shard tasks run now.
    pub fn active(&self) -> Pipelines {
        self.active.borrow().clone()
    }

    pub(super) fn subscribe_active(&self) -> watch::Receiver<Pipelines> {
        self.active.subscribe()
    }
}

/// Whether `a` and `b` are the same pipeline (not merely the same name).
pub fn same(a: &Arc<Pipeline>, b: &Arc<Pipeline>) -> bool {
    Arc::ptr_eq(a, b)
}
