//! Builds the packed answer of the WIT contract: parallel record/output index
//! columns, plus rewrites only for deliveries that change the record.

use crate::bindings::distributary::plugin::types::{
    Decisions as WitDecisions, Rewrite as WitRewrite,
};

/// A change to a delivered record; `None` keeps the original field.
#[derive(Debug, Default, Clone)]
pub struct Rewrite {
    pub data: Option<Vec<u8>>,
    pub partition_key: Option<String>,
    pub explicit_hash_key: Option<String>,
}

/// The deliveries decided for one batch.
#[derive(Default)]
pub struct Decisions {
    records: Vec<u32>,
    outputs: Vec<u32>,
    rewrites: Vec<WitRewrite>,
}

impl Decisions {
    pub(crate) fn with_capacity(n: u32) -> Self {
        Decisions {
            records: Vec::with_capacity(n as usize),
            outputs: Vec::with_capacity(n as usize),
            rewrites: Vec::new(),
        }
    }

    /// Sends record `record` unchanged to output `output` (an index into `Init::outputs`).
    pub fn deliver(&mut self, record: u32, output: u32) {
        self.records.push(record);
        self.outputs.push(output);
    }

    /// Sends record `record` to output `output` with the given changes.
    pub fn deliver_rewritten(&mut self, record: u32, output: u32, rewrite: Rewrite) {
        let delivery = self.records.len() as u32;
        self.deliver(record, output);
        self.rewrites.push(WitRewrite {
            delivery,
            data: rewrite.data,
            partition_key: rewrite.partition_key,
            explicit_hash_key: rewrite.explicit_hash_key,
        });
    }

    /// Sends record `record` unchanged to each of `outputs`.
    pub fn deliver_each(&mut self, record: u32, outputs: &[u32]) {
        for &output in outputs {
            self.deliver(record, output);
        }
    }

    /// Sends record `record` to each of `outputs` with the same changes.
    pub fn deliver_each_rewritten(&mut self, record: u32, outputs: &[u32], rewrite: Rewrite) {
        for &output in outputs {
            self.deliver_rewritten(record, output, rewrite.clone());
        }
    }

    /// Number of deliveries so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub(crate) fn into_wit(self) -> WitDecisions {
        WitDecisions {
            records: self.records,
            outputs: self.outputs,
            rewrites: self.rewrites,
        }
    }
}
