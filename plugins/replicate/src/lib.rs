//! `replicate`: every record to every output of the pipeline, unchanged.
//!
//! The WASM twin of the host's native replication (a pipeline without a
//! plugin); useful as a template and as the baseline of the plugin benchmark.

use distributary_plugin_sdk::{Batch, Decisions, Init, Plugin, export_plugin};

pub struct Replicate {
    outputs: u32,
}

impl Plugin for Replicate {
    fn init(init: Init) -> Result<Self, String> {
        Ok(Replicate {
            outputs: init.outputs.len() as u32,
        })
    }

    fn route(&mut self, batch: &Batch, out: &mut Decisions) -> Result<(), String> {
        for record in 0..batch.len() {
            for output in 0..self.outputs {
                out.deliver(record, output);
            }
        }
        Ok(())
    }
}

export_plugin!(Replicate);
