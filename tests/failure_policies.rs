//! Every plugin and record failure of SPEC §6 under each `on_error` policy,
//! in one run: four pipelines read the same source through the `hostile`
//! test plugin, each misbehaving on some records (by their data), and their
//! outputs go through the fault proxy, which rejects any PutRecords holding
//! the record `poison` as InvalidArgumentException.
//!
//! - batch-dlq (`boom` trap, `spin` timeout, `hog` memory, `stray` output
//!   index; dead_letter): each failed batch is dead-lettered whole, the rest
//!   delivered: output and dead letters together hold every record once.
//! - record-dlq (`empty-key`, `long-key`, `bad-hash`, `huge`; dead_letter):
//!   exactly the offending records (and `poison`) are dead-lettered, each
//!   with its own reason; every other record is delivered.
//! - skip (all of the above; skip): no offending record is delivered, the
//!   rest is, in order, and the pipeline keeps going to the end.
//! - halt (`huge`; halt): the output holds a prefix of the source, ending
//!   before `huge`, and the pipeline reports the record; the others go on.

use base64::Engine as _;
use distributary_e2e::fault::FaultProxy;
use distributary_e2e::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const SPECIALS: [&str; 9] = [
    "boom",
    "empty-key",
    "spin",
    "long-key",
    "hog",
    "bad-hash",
    "stray",
    "huge",
    "poison",
];

fn config(source: &str, outputs: &str, state: &str) -> String {
    let hostile = plugin("hostile").display().to_string();
    let mut text = format!(
        "[sources.input]\nstream = \"input\"\nendpoint_url = \"{source}\"\npoll_interval_ms = 200\n\n[checkpoint]\npath = \"{state}\"\ninterval_ms = 200\n\n"
    );
    for name in ["a", "a-dlq", "b", "b-dlq", "c", "d"] {
        text.push_str(&format!(
            "[outputs.{name}]\nstream = \"{name}\"\nendpoint_url = \"{outputs}\"\n\n"
        ));
    }
    let pipelines = [
        (
            "batch-dlq",
            "a",
            "mixed:boom,spin,hog,stray",
            "on_error = \"dead_letter\"\ndead_letter = \"a-dlq\"",
        ),
        (
            "record-dlq",
            "b",
            "mixed:empty-key,long-key,bad-hash,huge",
            "on_error = \"dead_letter\"\ndead_letter = \"b-dlq\"",
        ),
        (
            "skip",
            "c",
            "mixed:boom,spin,hog,stray,empty-key,long-key,bad-hash,huge",
            "on_error = \"skip\"",
        ),
        ("halt", "d", "mixed:huge", "on_error = \"halt\""),
    ];
    for (name, output, mode, policy) in pipelines {
        text.push_str(&format!(
            "[[pipelines]]\nname = \"{name}\"\nsource = \"input\"\noutputs = [\"{output}\"]\nplugin = {hostile:?}\nplugin_config = \"{mode}\"\n{policy}\nlimits = {{ memory_mb = 32, batch_timeout_ms = 300 }}\n\n"
        ));
    }
    text
}

/// The original data and error of each dead letter in `stream`.
fn letters(got: &[ReadRec]) -> Vec<(Vec<u8>, String)> {
    got.iter()
        .map(|r| {
            let envelope: serde_json::Value = serde_json::from_slice(&r.rec.data).unwrap();
            let data = base64::engine::general_purpose::STANDARD
                .decode(envelope["data"].as_str().unwrap())
                .unwrap();
            (data, envelope["error"].as_str().unwrap().to_string())
        })
        .collect()
}

async fn wait_for_union(
    client: &aws_sdk_kinesis::Client,
    streams: [&str; 2],
    n: usize,
) -> [Vec<ReadRec>; 2] {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let first = read_all(client, streams[0]).await.unwrap();
        let second = read_all(client, streams[1]).await.unwrap();
        if first.len() + second.len() >= n || Instant::now() > deadline {
            return [first, second];
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_gets_its_pipelines_policy_and_nothing_is_lost() {
    let (kinesis, client) = kinesis_with_streams(&[
        ("input", 1),
        ("a", 1),
        ("a-dlq", 1),
        ("b", 1),
        ("b-dlq", 1),
        ("c", 1),
        ("d", 1),
    ])
    .await
    .unwrap();
    let proxy = FaultProxy::start(&kinesis.endpoint, 0.0).await.unwrap();
    proxy.reject_records_with_data(b"poison");
    let dir = TestDir::new().unwrap();
    let config = dir
        .write_config(
            "policies.toml",
            &config(&kinesis.endpoint, &proxy.endpoint, "state"),
        )
        .unwrap();
    let mut running = Distributary::start(&config).unwrap();

    // Waves of ten ordinary records and one special, a second apart, so
    // that each special is read in a batch of its own.
    let mut records = Vec::new();
    for (wave, special) in SPECIALS.iter().map(Some).chain([None]).enumerate() {
        let mut batch: Vec<Rec> = (0..10)
            .map(|i| Rec {
                key: format!("key-{i}"),
                data: format!("wave-{wave}-record-{i}").into_bytes(),
            })
            .collect();
        if let Some(special) = special {
            batch.push(Rec {
                key: format!("special-{wave}"),
                data: special.as_bytes().to_vec(),
            });
        }
        put_all(&client, "input", &batch).await.unwrap();
        records.extend(batch);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let is_special = |r: &Rec| SPECIALS.contains(&std::str::from_utf8(&r.data).unwrap_or(""));

    // batch-dlq: delivered plus dead-lettered is every record, once.
    let [a, a_dlq] = wait_for_union(&client, ["a", "a-dlq"], records.len()).await;
    let dead = letters(&a_dlq);
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for data in a
        .iter()
        .map(|r| r.rec.data.clone())
        .chain(dead.iter().map(|(d, _)| d.clone()))
    {
        *seen.entry(data).or_default() += 1;
    }
    for r in &records {
        assert_eq!(
            seen.get(&r.data),
            Some(&1),
            "batch-dlq: {:?} not exactly once\n{}",
            String::from_utf8_lossy(&r.data),
            running.log_text()
        );
    }
    assert_eq!(seen.len(), records.len());
    let reason = |dead: &[(Vec<u8>, String)], special: &str| -> String {
        dead.iter()
            .find(|(d, _)| d == special.as_bytes())
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("{special} was not dead-lettered"))
    };
    for (special, why) in [
        ("boom", "trapped"),
        ("spin", "time limit"),
        ("hog", "memory"),
        ("stray", "output index"),
        ("poison", "InvalidArgumentException"),
    ] {
        let error = reason(&dead, special);
        assert!(error.contains(why), "batch-dlq: {special}: {error}");
    }

    // record-dlq: exactly the offending records are dead-lettered.
    let [b, b_dlq] = wait_for_union(&client, ["b", "b-dlq"], records.len()).await;
    let dead = letters(&b_dlq);
    let mut dead_data: Vec<&[u8]> = dead.iter().map(|(d, _)| d.as_slice()).collect();
    dead_data.sort();
    let mut want: Vec<&[u8]> = ["empty-key", "long-key", "bad-hash", "huge", "poison"]
        .iter()
        .map(|s| s.as_bytes())
        .collect();
    want.sort();
    assert_eq!(dead_data, want, "record-dlq dead letters");
    for (special, why) in [
        ("empty-key", "empty partition key"),
        ("long-key", "partition key of 300 characters"),
        ("bad-hash", "explicit hash key"),
        ("huge", "exceeds"),
        ("poison", "InvalidArgumentException"),
    ] {
        let error = reason(&dead, special);
        assert!(error.contains(why), "record-dlq: {special}: {error}");
    }
    let delivered: Vec<Rec> = records
        .iter()
        .filter(|r| !want.contains(&r.data.as_slice()))
        .cloned()
        .collect();
    assert_exactly_once_in_key_order("b", &delivered, &b);

    // skip: nothing offending, the rest in order, up to the last wave.
    let last_wave: Vec<Rec> = records[records.len() - 10..].to_vec();
    let c = wait_for_count(&client, "c", 1, Duration::from_secs(60))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut c = c;
    while !last_wave.iter().all(|w| c.iter().any(|r| r.rec == *w)) {
        assert!(
            Instant::now() < deadline,
            "skip: the last wave never arrived\n{}",
            running.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        c = read_all(&client, "c").await.unwrap();
    }
    assert!(
        c.iter().all(|r| !is_special(&r.rec)),
        "skip delivered an offending record"
    );
    let positions: Vec<usize> = c
        .iter()
        .map(|r| {
            records
                .iter()
                .position(|x| *x == r.rec)
                .expect("unknown record in c")
        })
        .collect();
    // Once each, and per key in source order (records of different keys
    // may interleave: a request rejected as invalid is resent one record
    // per request, several in flight).
    let mut newest: HashMap<&str, usize> = HashMap::new();
    let mut once = std::collections::HashSet::new();
    for (r, &i) in c.iter().zip(&positions) {
        assert!(once.insert(i), "skip: record {i} duplicated: {positions:?}");
        if let Some(prev) = newest.insert(&r.rec.key, i) {
            assert!(
                prev < i,
                "skip: key {} out of order: {positions:?}",
                r.rec.key
            );
        }
    }
    assert!(
        running.log_text().contains("skipping records"),
        "{}",
        running.log_text()
    );

    // halt: a prefix of the source, ending before `huge`; the run goes on for the others.
    let d = read_all(&client, "d").await.unwrap();
    let huge = records.iter().position(|r| r.data == b"huge").unwrap();
    assert!(
        !d.is_empty() && d.len() < huge,
        "halt: {} records of {huge}",
        d.len()
    );
    // The source as stored (the producer's retries may store a record after
    // a later one of another key; `records` is only the order written in).
    let source = read_all(&client, "input").await.unwrap();
    for (got, want) in d.iter().zip(&source) {
        assert_eq!(got.rec, want.rec, "halt: not a prefix of the source");
    }
    assert!(
        running.log_text().contains("pipeline halt halted"),
        "{}",
        running.log_text()
    );
    let still_running = running.is_running();
    assert!(
        still_running,
        "a halted pipeline stopped the others\n{}",
        running.log_text()
    );
    // A halted pipeline makes the run end with status 1, after a clean drain.
    let status = running.terminate(Duration::from_secs(30)).unwrap();
    assert_eq!(status.code(), Some(1));
}
