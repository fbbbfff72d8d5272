//! `hostile`: misbehaves on purpose, for the host's runtime tests. Not shipped.
//!
//! `plugin_config` is a mode string (JSON): `"loop"` never returns, `"grow"`
//! allocates until memory runs out, `"bad-output"` names an output index the
//! pipeline does not have, `"fail-init"` refuses to start, and `"boom"`
//! replicates every record but panics when a record's data is `boom`, so a
//! test can trap one batch and check the next is served by a fresh instance.
//! `"probe"` tries every capability the sandbox denies (a file, the
//! directory tree, the environment, both clocks, both random sources, a TCP
//! connection) and fails the batch with a report of what it got.
//! `"mixed:KIND,KIND,..."` replicates every record except those whose data is
//! one of the listed kinds, which misbehave as their name says: `boom`
//! (panic), `spin` (endless loop), `hog` (memory bomb), `stray` (an output
//! the pipeline does not have), `empty-key`, `long-key` (300 characters),
//! `bad-hash` (explicit hash key `xyz`), `huge` (1 MiB + 1 byte of data).
//! `"rotate"` fails every batch, in turn by an endless loop, a memory bomb
//! and a panic (chosen by the batch's first sequence number).
//! `"crawl:N"` replicates every record after N iterations of busy work per
//! record: a slow but correct plugin.

use distributary_plugin_sdk::{Batch, Decisions, Init, Plugin, Rewrite, export_plugin};

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
            "probe" => Err(probe()),
            "rotate" => {
                let seq = if batch.is_empty() {
                    "0"
                } else {
                    batch.sequence_number(0)
                };
                let turn = seq.bytes().last().map_or(0, |b| b % 3);
                let kind = ["spin", "hog", "boom"][turn as usize];
                for record in 0..batch.len() {
                    self.misbehave(kind, record, out);
                }
                Ok(())
            }
            mode if mode.starts_with("crawl:") => {
                let work: u64 = mode["crawl:".len()..].parse().unwrap_or(1_000_000);
                for record in 0..batch.len() {
                    let mut n = 0u64;
                    for i in 0..work {
                        n = std::hint::black_box(n.wrapping_add(i));
                    }
                    std::hint::black_box(n);
                    out.deliver_each(record, &(0..self.outputs).collect::<Vec<_>>());
                }
                Ok(())
            }
            mode if mode.starts_with("mixed:") => {
                let kinds: Vec<&str> = mode["mixed:".len()..].split(',').collect();
                for record in 0..batch.len() {
                    let data = std::str::from_utf8(batch.data(record)).unwrap_or("");
                    let kind = kinds.iter().find(|k| **k == data).copied().unwrap_or("");
                    self.misbehave(kind, record, out);
                }
                Ok(())
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

impl Hostile {
    fn misbehave(&self, kind: &str, record: u32, out: &mut Decisions) {
        let rewrite = match kind {
            "boom" => panic!("boom at record {record}"),
            "spin" => loop {
                std::hint::black_box(record);
            },
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "stray" => return out.deliver(record, self.outputs + 7),
            "empty-key" => Some(Rewrite {
                partition_key: Some(String::new()),
                ..Rewrite::default()
            }),
            "long-key" => Some(Rewrite {
                partition_key: Some("k".repeat(300)),
                ..Rewrite::default()
            }),
            "bad-hash" => Some(Rewrite {
                explicit_hash_key: Some("xyz".into()),
                ..Rewrite::default()
            }),
            "huge" => Some(Rewrite {
                data: Some(vec![b'x'; (1 << 20) + 1]),
                ..Rewrite::default()
            }),
            _ => None,
        };
        for output in 0..self.outputs {
            match &rewrite {
                Some(r) => out.deliver_rewritten(record, output, r.clone()),
                None => out.deliver(record, output),
            }
        }
    }
}

export_plugin!(Hostile);

/// What the sandbox let this plugin see, one `name=value` per line.
fn probe() -> String {
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    let file = match std::fs::read("/etc/passwd") {
        Ok(bytes) => format!("read {} bytes", bytes.len()),
        Err(e) => format!("error: {e}"),
    };
    let dir = match std::fs::read_dir(".") {
        Ok(entries) => format!("listed {} entries", entries.count()),
        Err(e) => format!("error: {e}"),
    };
    let env = std::env::vars().count();
    let args = std::env::args().count();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(u128::MAX);
    let start = Instant::now();
    let mut spin = 0u64;
    for i in 0..5_000_000u64 {
        spin = std::hint::black_box(spin.wrapping_add(i));
    }
    let monotonic = start.elapsed().as_nanos();
    let mut random = [0xAAu8; 16];
    let random = match getrandom::fill(&mut random) {
        Ok(()) => format!("{random:?}"),
        Err(e) => format!("error: {e}"),
    };
    let net = match std::net::TcpStream::connect("127.0.0.1:9") {
        Ok(_) => "connected".to_string(),
        Err(e) => format!("error: {e}"),
    };
    format!(
        "file={file}\ndir={dir}\nenv={env}\nargs={args}\nwall_ns={wall}\nmonotonic_ns={monotonic}\nrandom={random}\nnet={net}"
    )
}
