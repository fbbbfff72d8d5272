//! Which output streams each pipeline writes to, now. An output in the config
//! is either one named stream or a `stream_pattern` that stands for every
//! matching stream, found with ListStreams and refreshed while running
//! (SPEC §3). This module owns that mapping:
//!
//! - [`OutputSet`] (here): one pipeline's outputs at one moment, in routing
//!   order, with their `routed` counters. A pipeline swaps in a new set as a
//!   whole, so a batch is routed and delivered to one set.
//! - [`catalog`]: makes the writers (one per stream, shared by every pipeline
//!   that lists it) and expands a pipeline's configured outputs into a list
//!   of writers.
//! - [`discovery`]: lists the streams matching each pattern and, when the
//!   matches change, gives the pipelines that use it their new sets (their
//!   plugins are `init`ed again with the new names first).

pub mod catalog;
pub mod discovery;

pub use catalog::Catalog;
pub use discovery::{Discovery, matching_streams};

use crate::sink::OutputWriter;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// One pipeline's outputs at one moment, in routing order: output `i` of a
/// routing decision is `writers[i]`.
pub struct OutputSet {
    writers: Vec<Arc<OutputWriter>>,
    /// Records routed to each output by this pipeline (same order).
    routed: Vec<Arc<AtomicU64>>,
}

impl OutputSet {
    pub fn writers(&self) -> &[Arc<OutputWriter>] {
        &self.writers
    }

    pub fn routed(&self) -> &[Arc<AtomicU64>] {
        &self.routed
    }

    pub fn len(&self) -> usize {
        self.writers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writers.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.writers.iter().map(|w| w.name.clone()).collect()
    }

    /// Whether these are the outputs named `names`, in that order.
    pub fn is_named(&self, names: &[String]) -> bool {
        self.writers.len() == names.len()
            && self.writers.iter().zip(names).all(|(w, n)| &w.name == n)
    }
}

/// A pipeline's `routed` counter per output name. Kept across sets, so an
/// output that is dropped and found again continues its count.
#[derive(Default)]
pub struct RoutedCounters(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

impl RoutedCounters {
    /// The set of `writers`, with this pipeline's counter for each.
    pub fn set_of(&self, writers: Vec<Arc<OutputWriter>>) -> OutputSet {
        let routed = match self.0.lock() {
            Ok(mut counters) => writers
                .iter()
                .map(|w| counters.entry(w.name.clone()).or_default().clone())
                .collect(),
            Err(_) => writers.iter().map(|_| Arc::default()).collect(),
        };
        OutputSet { writers, routed }
    }
}
