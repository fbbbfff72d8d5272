//! KPL aggregation on output (`aggregate = true`): the output holds
//! aggregates; read the way the KCL reads them (sub-records outside the shard
//! they were read from are dropped), they hold every record once, in key
//! order. Before any resharding, no sub-record is outside its shard. The
//! output is then split while records flow: aggregates packed with the old
//! shard map land in a child, the writer notices, reads the map again and
//! re-sends, so the KCL view stays complete.

use distributary::kpl::{aggregate::hash_of, deaggregate};
use distributary::record::OutRecord;
use distributary_e2e::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The output's records as the KCL sees them: de-aggregated, without the
/// sub-records that hash outside the shard they were read from;
/// (sub-records kept, aggregates read, sub-records dropped).
async fn subrecords(client: &aws_sdk_kinesis::Client) -> (Vec<ReadRec>, usize, usize) {
    let shards = client
        .list_shards()
        .stream_name("out")
        .send()
        .await
        .unwrap();
    let ranges: HashMap<String, (u128, u128)> = shards
        .shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            (
                s.shard_id().to_string(),
                (
                    r.starting_hash_key().parse().unwrap(),
                    r.ending_hash_key().parse().unwrap(),
                ),
            )
        })
        .collect();
    let outer = read_all(client, "out").await.unwrap();
    let mut subs = Vec::new();
    let mut dropped = 0;
    for record in &outer {
        let parts = deaggregate(&record.rec.data)
            .unwrap_or_else(|| panic!("not an aggregate: {:?}", record.rec.key));
        let (start, end) = ranges[&record.shard];
        for sub in parts {
            let hash = hash_of(&OutRecord {
                data: Default::default(),
                partition_key: sub.partition_key.clone(),
                explicit_hash_key: sub.explicit_hash_key.clone(),
                source_index: 0,
            });
            if !(start <= hash && hash <= end) {
                dropped += 1;
                continue;
            }
            subs.push(ReadRec {
                shard: record.shard.clone(),
                sequence: record.sequence.clone(),
                rec: Rec {
                    key: sub.partition_key,
                    data: sub.data,
                },
            });
        }
    }
    (subs, outer.len(), dropped)
}

async fn wait_for_subrecords(
    client: &aws_sdk_kinesis::Client,
    n: usize,
    running: &Distributary,
) -> (Vec<ReadRec>, usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (subs, outer, _) = subrecords(client).await;
        if subs.len() >= n {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return subrecords(client).await;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} records\n{}",
            subs.len(),
            running.log_text()
        );
        let _ = outer;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_hold_every_record_in_its_own_shard_and_follow_a_split() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 2), ("out", 3)])
        .await
        .unwrap();
    let records = numbered_records(1600, 64, "");
    let (first, second) = records.split_at(800);
    put_all(&client, "input", first).await.unwrap();
    let dir = TestDir::new().unwrap();
    let text = config::simple(&kinesis.endpoint, &[("out", "out")], "").replace(
        "[outputs.out]\n",
        "[outputs.out]\naggregate = true\naggregate_max_bytes = 4096\n",
    );
    let path = dir.write_config("aggregate.toml", &text).unwrap();
    let running = Distributary::start(&path).unwrap();
    let (got, aggregates, dropped) = wait_for_subrecords(&client, first.len(), &running).await;
    assert_exactly_once_in_key_order("out", first, &got);
    assert_eq!(
        dropped, 0,
        "every sub-record sits in the shard it hashes to"
    );
    assert!(
        aggregates * 10 < first.len(),
        "{aggregates} aggregates for {} records",
        first.len()
    );

    // Split the first output shard while records flow.
    let parents = split_in_half(&client, "out", 0).await.unwrap();
    put_all(&client, "input", second).await.unwrap();
    let (got, _, dropped) = wait_for_subrecords(&client, records.len(), &running).await;
    let log = running.log_text();
    let resent = log.contains("landed outside its predicted shard");
    println!(
        "after the split: {dropped} misplaced sub-records (dropped by a KCL reader), re-sent: {resent}"
    );
    assert_eq!(
        dropped > 0,
        resent,
        "misplaced records are exactly those re-sent\n{log}"
    );
    running.stop_cleanly();
    assert_exactly_once_in_key_order("out", &records, &got);
    let children: Vec<&str> = got
        .iter()
        .map(|r| r.shard.as_str())
        .filter(|s| !parents.iter().any(|p| p == s))
        .collect();
    assert!(
        !children.is_empty(),
        "later aggregates went to the split's children"
    );
}
