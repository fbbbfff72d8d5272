//! A small Kinesis client for the demo script (local endpoints only):
//!
//!   kinesis-tool ENDPOINT create STREAM SHARDS
//!   kinesis-tool ENDPOINT put STREAM COUNT [KEYS [BYTES]]
//!       JSON records padded to BYTES (default: as short as they are), over
//!       KEYS partition keys: `N` (round-robin, default 16), `random:N`
//!       (uniform at random, seeded), `zipf:N` (Zipf-skewed, s = 1)
//!   kinesis-tool ENDPOINT count STREAM            (records in the stream)
//!   kinesis-tool ENDPOINT check STREAM COUNT      (of the records `put` wrote:
//!       how many are present, missing, duplicated, and out of key order;
//!       KPL aggregates are read as the records they carry)

use anyhow::{Context, Result, bail};
use distributary_e2e::{Rec, client_for, create_stream, numbered_records, put_all, read_all};

/// `count` records over the key distribution `keys`, padded to `bytes`.
fn records(count: usize, keys: &str, bytes: usize) -> Result<Vec<Rec>> {
    let (kind, n) = keys.split_once(':').unwrap_or(("round-robin", keys));
    let n: usize = n.parse().context("KEYS")?;
    if n == 0 {
        bail!("KEYS must be at least 1");
    }
    let mut rng = fastrand::Rng::with_seed(42);
    // Zipf (s = 1): key k (from 1) with weight 1/k.
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / k as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut records = numbered_records(count, 1, "");
    for (i, record) in records.iter_mut().enumerate() {
        let k = match kind {
            "round-robin" => i % n,
            "random" => rng.usize(0..n),
            "zipf" => {
                let mut x = rng.f64() * total;
                weights
                    .iter()
                    .position(|w| {
                        x -= w;
                        x <= 0.0
                    })
                    .unwrap_or(n - 1)
            }
            other => bail!("unknown key distribution {other:?}"),
        };
        record.key = format!("key-{k}");
        record.data = format!("{{\"key\":{k},\"i\":{i}}}").into_bytes();
        if record.data.len() < bytes {
            record.data.resize(bytes, b' ');
        }
    }
    Ok(records)
}

/// The `i` of a record `put` wrote (`{"key":K,"i":I}` plus padding).
fn record_index(data: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(data).ok()?;
    let value: serde_json::Value = serde_json::from_str(text.trim_end()).ok()?;
    value.get("i")?.as_u64().map(|i| i as usize)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, command, rest @ ..] = args.as_slice() else {
        bail!(
            "usage: kinesis-tool ENDPOINT (create STREAM SHARDS | put STREAM COUNT | count STREAM)"
        );
    };
    if !endpoint.starts_with("http://127.0.0.1:") {
        bail!("kinesis-tool only talks to a local endpoint (http://127.0.0.1:PORT)");
    }
    let client = client_for(endpoint).await;
    match (command.as_str(), rest) {
        ("create", [stream, shards]) => {
            create_stream(&client, stream, shards.parse().context("SHARDS")?).await
        }
        ("put", [stream, count, more @ ..]) if more.len() <= 2 => {
            let count: usize = count.parse().context("COUNT")?;
            let keys = more.first().map_or("16", String::as_str);
            let bytes: usize = more.get(1).map_or(Ok(0), |b| b.parse()).context("BYTES")?;
            let records = records(count, keys, bytes)?;
            put_all(&client, stream, &records).await
        }
        ("count", [stream]) => {
            println!("{}", read_all(&client, stream).await?.len());
            Ok(())
        }
        ("check", [stream, count]) => {
            let count: usize = count.parse().context("COUNT")?;
            // KPL aggregates (an output with aggregate = true) count as the
            // records they carry.
            let mut got = Vec::new();
            for r in read_all(&client, stream).await? {
                match distributary::kpl::deaggregate(&r.rec.data) {
                    Some(subs) => {
                        got.extend(subs.into_iter().map(|sub| distributary_e2e::ReadRec {
                            shard: r.shard.clone(),
                            sequence: r.sequence.clone(),
                            rec: Rec {
                                key: sub.partition_key,
                                data: sub.data,
                            },
                        }))
                    }
                    None => got.push(r),
                }
            }
            let mut seen = vec![0usize; count];
            // Per (shard, key): the newest record index seen, first copies only.
            let mut newest: std::collections::HashMap<(String, String), usize> =
                std::collections::HashMap::new();
            let mut reordered = 0usize;
            let mut foreign = 0usize;
            for r in &got {
                let Some(i) = record_index(&r.rec.data).filter(|&i| i < count) else {
                    foreign += 1;
                    continue;
                };
                seen[i] += 1;
                if seen[i] > 1 {
                    continue;
                }
                let last = newest
                    .entry((r.shard.clone(), r.rec.key.clone()))
                    .or_insert(i);
                if *last > i {
                    reordered += 1;
                } else {
                    *last = i;
                }
            }
            let present = seen.iter().filter(|&&n| n > 0).count();
            let duplicates: usize = seen.iter().map(|&n| n.saturating_sub(1)).sum();
            println!(
                "records {} present {present} missing {} duplicates {duplicates} reordered {reordered} foreign {foreign}",
                got.len(),
                count - present
            );
            Ok(())
        }
        _ => bail!("unknown command {command:?} or wrong arguments"),
    }
}
