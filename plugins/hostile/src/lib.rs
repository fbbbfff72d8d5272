//! `hostile`: misbehaves on purpose, for the host's runtime tests. Not shipped.
//!
//! `plugin_config` is a mode string (JSON): `"loop"` never returns, `"grow"`
//! allocates until memory runs out, `"bad-output"` names an output index the
//! pipeline does not have, `"fail-init"` refuses to start, and `"boom"`
//! replicates every record but panics when a record's data is `boom`, so a
//! test can trap one batch and check the next is served by a fresh instance.

use distributary_plugin_sdk::{Batch, Decisions, Init, Plugin, export_plugin};

struct Hostile {
    mode: String,
    outputs: u32,
}

impl Plugin for Hostile {
    fn init(init: Init) -> Result<Self, String> {
        let mode = init.config.trim().trim_matches('"').to_string();
        if mode == "fail-init" {
            return Err("refusing to start (fail-init)".into());
        }
        Ok(Hostile {
            mode,
            outputs: init.outputs.len() as u32,
        })
    }

    fn route(&mut self, batch: &Batch, out: &mut Decisions) -> Result<(), String> {
        match self.mode.as_str() {
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "bad-output" => {
                out.deliver(0, self.outputs + 7);
                Ok(())
            }
            _ => {
                for record in 0..batch.len() {
                    if batch.data(record) == b"boom" {
                        panic!("boom at record {record}");
                    }
                    for output in 0..self.outputs {
                        out.deliver(record, output);
                    }
                }
                Ok(())
            }
        }
    }
}

export_plugin!(Hostile);
