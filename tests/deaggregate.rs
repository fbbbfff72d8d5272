//! KPL de-aggregation on the source (`deaggregate`, on by default): a stream
//! holding plain records, KPL aggregates and near misses is replicated; the
//! output holds every plain record as it was, every sub-record as its own
//! record with its own partition key, and every near miss unchanged, in
//! order. Then a checkpoint inside an aggregate (what a crash after
//! delivering part of it leaves) resumes after the last delivered
//! sub-record.
//!
//! The aggregates are built here, by hand (protobuf wire format, MD5 from
//! the md-5 crate), not with the host's encoder, so the test checks the
//! format rather than the host against itself.

use distributary_e2e::*;
use md5::{Digest, Md5};
use std::time::Duration;

const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(out: &mut Vec<u8>, tag: u64, bytes: &[u8]) {
    varint(out, tag << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A KPL aggregated record of `records` (partition key, data). Every other
/// record also names an explicit hash key, to exercise that table.
fn aggregate(records: &[Rec]) -> Vec<u8> {
    let mut keys: Vec<&str> = Vec::new();
    let mut message = Vec::new();
    for r in records {
        if !keys.contains(&r.key.as_str()) {
            keys.push(&r.key);
        }
    }
    for key in &keys {
        field(&mut message, 1, key.as_bytes());
    }
    field(&mut message, 2, b"85070591730234615865843651857942052864");
    for (i, r) in records.iter().enumerate() {
        let mut record = Vec::new();
        varint(&mut record, 1 << 3);
        varint(
            &mut record,
            keys.iter().position(|k| *k == r.key).unwrap_or(0) as u64,
        );
        if i % 2 == 1 {
            varint(&mut record, 2 << 3);
            varint(&mut record, 0);
        }
        field(&mut record, 3, &r.data);
        field(&mut message, 3, &record);
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&message);
    out.extend_from_slice(&Md5::digest(&message));
    out
}

/// What goes into the source: (partition key of the outer record, data).
struct Input {
    outer: Vec<(String, Vec<u8>)>,
    /// What the output must hold, in order.
    expected: Vec<Rec>,
    /// Index into `outer` of the aggregate used for the resume check.
    resume_in: usize,
}

fn input() -> Input {
    let mut outer = Vec::new();
    let mut expected = Vec::new();
    let mut resume_in = 0;
    for round in 0..6 {
        let plain = Rec {
            key: format!("plain-{round}"),
            data: format!("plain {round}").into_bytes(),
        };
        outer.push((plain.key.clone(), plain.data.clone()));
        expected.push(plain);
        let subs: Vec<Rec> = (0..7)
            .map(|i| Rec {
                key: format!("k{}", (round + i) % 3),
                data: format!("agg {round} sub {i}").into_bytes(),
            })
            .collect();
        if round == 3 {
            resume_in = outer.len();
        }
        outer.push((format!("outer-{round}"), aggregate(&subs)));
        expected.extend(subs);
        // Near misses: the magic with a wrong digest, and the magic alone.
        let mut bad = aggregate(&expected[expected.len() - 2..]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        for data in [bad, MAGIC.to_vec()] {
            let near = Rec {
                key: format!("near-{round}"),
                data,
            };
            outer.push((near.key.clone(), near.data.clone()));
            expected.push(near);
        }
    }
    Input {
        outer,
        expected,
        resume_in,
    }
}

fn config(endpoint: &str, state: &str, output: &str) -> String {
    format!(
        "[sources.input]\nstream = \"input\"\nendpoint_url = \"{endpoint}\"\npoll_interval_ms = 200\n\n[outputs.out]\nstream = \"{output}\"\nendpoint_url = \"{endpoint}\"\n\n[checkpoint]\npath = \"{state}\"\ninterval_ms = 200\n\n[[pipelines]]\nname = \"p\"\nsource = \"input\"\noutputs = [\"out\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_are_split_near_misses_pass_and_a_checkpoint_inside_one_resumes_after_it() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out", 1), ("resumed", 1)])
        .await
        .unwrap();
    let input = input();
    let mut sequences = Vec::new();
    for (key, data) in &input.outer {
        let put = client
            .put_record()
            .stream_name("input")
            .partition_key(key)
            .data(aws_sdk_kinesis::primitives::Blob::new(data.clone()))
            .send()
            .await
            .unwrap();
        sequences.push(put.sequence_number().to_string());
    }

    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config("deagg.toml", &config(&kinesis.endpoint, "state", "out"))
        .unwrap();
    let running = Distributary::start(&path).unwrap();
    let got = wait_for_settled(
        &client,
        "out",
        input.expected.len(),
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    // Per key in source order (requests pack the first record of each key,
    // so records of different keys may interleave differently).
    assert_exactly_once_in_key_order("out", &input.expected, &got);

    // A checkpoint after sub-record 2 of an aggregate: the next run delivers
    // sub-records 3.. of it, and everything after.
    let state = dir.dir.path().join("resume-state");
    std::fs::create_dir_all(&state).unwrap();
    let checkpoint = serde_json::json!({
        "version": 1,
        "checkpoints": [{
            "pipeline": "p",
            "stream": "input",
            "shard": "shardId-000000000000",
            "sequence": sequences[input.resume_in],
            "sub_sequence": 2,
        }],
    });
    std::fs::write(state.join("checkpoints.json"), checkpoint.to_string()).unwrap();
    let path = dir
        .write_config(
            "resume.toml",
            &config(&kinesis.endpoint, "resume-state", "resumed"),
        )
        .unwrap();
    let running = Distributary::start(&path).unwrap();
    // Sub-records come after the plain record of their round and before the near misses.
    let first_sub = 1 + input.resume_in / 4 * 10;
    let rest = &input.expected[first_sub + 3..];
    let got = wait_for_settled(&client, "resumed", rest.len(), Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    running.stop_cleanly();
    assert_exactly_once_in_key_order("resumed", rest, &got);
    assert_eq!(&rest[0].data, b"agg 3 sub 3");
}
