//! Kinesis' and DynamoDB's quotas, enforced by the front (`Front::enforce`):
//! what no emulator does. Per shard: writes 1,000 records/s and 1 MiB/s
//! (entries over it get a per-entry ProvisionedThroughputExceededException
//! and are not written: the front forwards only the others and merges the
//! answers in the entries' order); GetRecords 5 calls/s and 2 MiB/s (a call
//! may read past the byte rate; the calls after it are throttled until the
//! debt is repaid, as AWS does); GetShardIterator 5 calls/s. Per stream:
//! ListShards 100/s; per account: DescribeStreamSummary 20/s, DescribeStream
//! 10/s (LimitExceededException). SubscribeToShard once per second per
//! consumer and shard. DynamoDB: reads and writes per table per second when
//! set (ProvisionedThroughputExceededException).
//!
//! Each limit is a token bucket holding one second of its rate. The shard
//! of a written entry is found as Kinesis finds it: the MD5 of its
//! partition key (or its explicit hash key) against the shards' hash ranges,
//! read from the emulator with ListShards; the shard of a GetRecords call
//! from the iterator, learned from the GetShardIterator and GetRecords
//! answers that handed it out.
//!
//! Upstream: <https://docs.aws.amazon.com/streams/latest/dev/service-sizes-and-limits.html>.

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const ACCOUNT: &str = "123456789012";

/// The rates enforced (per second).
#[derive(Debug, Clone)]
pub struct Quotas {
    pub write_records: f64,
    pub write_bytes: f64,
    pub read_calls: f64,
    pub read_bytes: f64,
    pub iterator_calls: f64,
    pub list_shards: f64,
    pub describe_summary: f64,
    pub describe_stream: f64,
    pub subscribe: f64,
    /// DynamoDB requests per table per second (None: unlimited).
    pub dynamodb_reads: Option<f64>,
    pub dynamodb_writes: Option<f64>,
}

impl Quotas {
    /// Kinesis' published limits; DynamoDB unlimited.
    pub fn aws() -> Quotas {
        Quotas {
            write_records: 1000.0,
            write_bytes: 1_048_576.0,
            read_calls: 5.0,
            read_bytes: 2.0 * 1_048_576.0,
            iterator_calls: 5.0,
            list_shards: 100.0,
            describe_summary: 20.0,
            describe_stream: 10.0,
            subscribe: 1.0,
            dynamodb_reads: None,
            dynamodb_writes: None,
        }
    }
}

/// A token bucket holding one second of `rate`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: rate,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + self.rate * dt).min(self.rate);
    }

    /// Takes `n` if there are that many.
    fn take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// What the front counted under quotas.
#[derive(Debug, Clone, Default)]
pub struct QuotaStats {
    /// Calls let through, by `API stream shard` (shard `-` when per stream).
    pub calls: BTreeMap<String, u64>,
    /// Whole calls throttled, by `API stream shard`.
    pub throttled: BTreeMap<String, u64>,
    /// PutRecords entries throttled, by stream.
    pub throttled_entries: BTreeMap<String, u64>,
    /// PutRecords entries forwarded, by stream.
    pub forwarded_entries: BTreeMap<String, u64>,
    /// Bytes GetRecords answered, by `stream shard`.
    pub read_bytes: BTreeMap<String, u64>,
}

impl QuotaStats {
    /// The sum of the counts in `map` whose key starts with `prefix`.
    pub fn sum(map: &BTreeMap<String, u64>, prefix: &str) -> u64 {
        map.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

/// An open shard's hash key range (start, end, shard id).
type HashRange = (u128, u128, String);

/// The quota state of one front.
pub struct Quota {
    quotas: Quotas,
    buckets: HashMap<String, Bucket>,
    /// Iterator -> (stream, shard).
    iterators: HashMap<String, (String, String)>,
    /// Stream -> (read at, open shards by hash range).
    maps: HashMap<String, (Instant, Vec<HashRange>)>,
    pub stats: QuotaStats,
}

/// What the front does with a call before forwarding it.
pub enum Before {
    /// Forward it as it is.
    Forward,
    /// Forward this body instead (a PutRecords without its throttled
    /// entries); `plan` says, per original entry, its throttled answer or
    /// None (forwarded, in order).
    Rewrite {
        body: Vec<u8>,
        plan: Vec<Option<Value>>,
    },
    /// Every entry was throttled: answer this, forward nothing.
    Answer(Value),
    /// Refuse the call: HTTP status, code, message.
    Refuse(u16, &'static str, String),
}

/// The stream a Kinesis call names (`StreamName`, or the name in `StreamARN`
/// or `ConsumerARN`).
pub fn stream_of(body: &Value) -> Option<String> {
    if let Some(name) = body.get("StreamName").and_then(Value::as_str) {
        return Some(name.to_string());
    }
    let arn = body
        .get("StreamARN")
        .or_else(|| body.get("ConsumerARN"))
        .and_then(Value::as_str)?;
    let after = arn.split_once(":stream/")?.1;
    Some(after.split('/').next().unwrap_or(after).to_string())
}

fn hash_of(entry: &Value) -> u128 {
    use md5::{Digest, Md5};
    if let Some(h) = entry
        .get("ExplicitHashKey")
        .and_then(Value::as_str)
        .and_then(|k| k.parse::<u128>().ok())
    {
        return h;
    }
    let key = entry
        .get("PartitionKey")
        .and_then(Value::as_str)
        .unwrap_or("");
    u128::from_be_bytes(Md5::digest(key.as_bytes()).into())
}

/// The bytes an entry counts against the write quota: its data (decoded)
/// and its partition key.
fn entry_bytes(entry: &Value) -> f64 {
    let data = entry
        .get("Data")
        .and_then(Value::as_str)
        .map_or(0, |d| d.len() * 3 / 4);
    let key = entry
        .get("PartitionKey")
        .and_then(Value::as_str)
        .map_or(0, str::len);
    (data + key) as f64
}

fn rate_exceeded_shard(shard: &str, stream: &str) -> String {
    format!("Rate exceeded for shard {shard} in stream {stream} under account {ACCOUNT}.")
}

/// The whole-call refusal Kinesis gives a shard over its quota.
fn shard_rate_exceeded(shard: &str, stream: &str) -> Before {
    Before::Refuse(
        400,
        "ProvisionedThroughputExceededException",
        rate_exceeded_shard(shard, stream),
    )
}

impl Quota {
    pub fn new(quotas: Quotas) -> Quota {
        Quota {
            quotas,
            buckets: HashMap::new(),
            iterators: HashMap::new(),
            maps: HashMap::new(),
            stats: QuotaStats::default(),
        }
    }

    /// Whether the front must (re)read `stream`'s shard map first.
    pub fn needs_map(&self, stream: &str) -> bool {
        self.maps
            .get(stream)
            .is_none_or(|(at, _)| at.elapsed() > Duration::from_secs(5))
    }

    /// The shard map from a ListShards answer.
    pub fn learn_map(&mut self, stream: &str, answer: &Value) {
        let mut ranges = Vec::new();
        for shard in answer
            .get("Shards")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let closed = shard
                .pointer("/SequenceNumberRange/EndingSequenceNumber")
                .is_some_and(|e| !e.is_null());
            let id = shard.get("ShardId").and_then(Value::as_str);
            let start = shard
                .pointer("/HashKeyRange/StartingHashKey")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u128>().ok());
            let end = shard
                .pointer("/HashKeyRange/EndingHashKey")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u128>().ok());
            if let (false, Some(id), Some(start), Some(end)) = (closed, id, start, end) {
                ranges.push((start, end, id.to_string()));
            }
        }
        self.maps
            .insert(stream.to_string(), (Instant::now(), ranges));
    }

    fn shard_of(&self, stream: &str, hash: u128) -> Option<&str> {
        let (_, ranges) = self.maps.get(stream)?;
        ranges
            .iter()
            .find(|(s, e, _)| *s <= hash && hash <= *e)
            .map(|(_, _, id)| id.as_str())
    }

    fn bucket(&mut self, key: String, rate: f64, now: Instant) -> &mut Bucket {
        self.buckets
            .entry(key)
            .or_insert_with(|| Bucket::new(rate, now))
    }

    /// Counts a call let through, or throttled (`ok` false).
    fn count(&mut self, key: String, ok: bool) {
        let map = if ok {
            &mut self.stats.calls
        } else {
            &mut self.stats.throttled
        };
        *map.entry(key).or_default() += 1;
    }

    /// A rate-limited call: one token from the bucket named `bucket`.
    fn limited(&mut self, bucket: String, rate: f64, count: String, now: Instant) -> bool {
        let ok = self.bucket(bucket, rate, now).take(1.0, now);
        self.count(count, ok);
        ok
    }

    /// Decides on a Kinesis call (`api` from its target) before it is forwarded.
    pub fn kinesis_before(&mut self, api: &str, body: &Value, now: Instant) -> Before {
        let stream = stream_of(body).unwrap_or_default();
        let q = self.quotas.clone();
        match api {
            "PutRecords" => self.put_records(&stream, body, now),
            "PutRecord" => {
                let Some(shard) = self.shard_of(&stream, hash_of(body)).map(str::to_string) else {
                    return Before::Forward;
                };
                let bytes = entry_bytes(body);
                if self.take_write(&stream, &shard, bytes, now) {
                    *self.stats.forwarded_entries.entry(stream).or_default() += 1;
                    Before::Forward
                } else {
                    *self
                        .stats
                        .throttled_entries
                        .entry(stream.clone())
                        .or_default() += 1;
                    shard_rate_exceeded(&shard, &stream)
                }
            }
            "GetRecords" => {
                let iterator = body
                    .get("ShardIterator")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some((stream, shard)) = self.iterators.get(iterator).cloned() else {
                    return Before::Forward;
                };
                let key = format!("GetRecords {stream} {shard}");
                let bytes = self.bucket(format!("read-bytes {stream} {shard}"), q.read_bytes, now);
                bytes.refill(now);
                let in_debt = bytes.tokens < 0.0;
                let calls_ok = !in_debt
                    && self
                        .bucket(format!("read-calls {stream} {shard}"), q.read_calls, now)
                        .take(1.0, now);
                self.count(key, calls_ok);
                if calls_ok {
                    Before::Forward
                } else {
                    shard_rate_exceeded(&shard, &stream)
                }
            }
            "GetShardIterator" => {
                let shard = body.get("ShardId").and_then(Value::as_str).unwrap_or("");
                let key = format!("GetShardIterator {stream} {shard}");
                if self.limited(
                    format!("iterator {stream} {shard}"),
                    q.iterator_calls,
                    key,
                    now,
                ) {
                    Before::Forward
                } else {
                    shard_rate_exceeded(shard, &stream)
                }
            }
            "ListShards" => self.per_stream(api, &stream, q.list_shards, now),
            "DescribeStreamSummary" => self.per_account(api, q.describe_summary, now),
            "DescribeStream" => self.per_account(api, q.describe_stream, now),
            "SubscribeToShard" => {
                let consumer = body
                    .get("ConsumerARN")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let shard = body.get("ShardId").and_then(Value::as_str).unwrap_or("");
                let key = format!("SubscribeToShard {stream} {shard}");
                if self.limited(
                    format!("subscribe {consumer} {shard}"),
                    q.subscribe,
                    key,
                    now,
                ) {
                    Before::Forward
                } else {
                    Before::Refuse(
                        400,
                        "LimitExceededException",
                        format!(
                            "Rate exceeded for consumer {consumer} and shard {shard} under account {ACCOUNT}."
                        ),
                    )
                }
            }
            _ => {
                self.count(format!("{api} {stream} -"), true);
                Before::Forward
            }
        }
    }

    fn per_stream(&mut self, api: &str, stream: &str, rate: f64, now: Instant) -> Before {
        let key = format!("{api} {stream} -");
        if self.limited(format!("{api} {stream}"), rate, key, now) {
            Before::Forward
        } else {
            Before::Refuse(
                400,
                "LimitExceededException",
                format!("Rate exceeded for stream {stream} under account {ACCOUNT}."),
            )
        }
    }

    fn per_account(&mut self, api: &str, rate: f64, now: Instant) -> Before {
        let key = format!("{api} - -");
        if self.limited(api.to_string(), rate, key, now) {
            Before::Forward
        } else {
            Before::Refuse(
                400,
                "LimitExceededException",
                format!("Rate exceeded for {api} under account {ACCOUNT}."),
            )
        }
    }

    fn take_write(&mut self, stream: &str, shard: &str, bytes: f64, now: Instant) -> bool {
        let q = self.quotas.clone();
        let records_key = format!("write-records {stream} {shard}");
        let bytes_key = format!("write-bytes {stream} {shard}");
        self.bucket(records_key.clone(), q.write_records, now)
            .refill(now);
        self.bucket(bytes_key.clone(), q.write_bytes, now)
            .refill(now);
        let fits =
            self.buckets[&records_key].tokens >= 1.0 && self.buckets[&bytes_key].tokens >= bytes;
        if fits {
            if let Some(b) = self.buckets.get_mut(&records_key) {
                b.tokens -= 1.0;
            }
            if let Some(b) = self.buckets.get_mut(&bytes_key) {
                b.tokens -= bytes;
            }
        }
        fits
    }

    fn put_records(&mut self, stream: &str, body: &Value, now: Instant) -> Before {
        let Some(entries) = body.get("Records").and_then(Value::as_array) else {
            return Before::Forward;
        };
        let mut kept = Vec::with_capacity(entries.len());
        let mut plan = Vec::with_capacity(entries.len());
        for entry in entries {
            let shard = self.shard_of(stream, hash_of(entry)).map(str::to_string);
            let throttled = match &shard {
                Some(shard) => !self.take_write(stream, shard, entry_bytes(entry), now),
                None => false,
            };
            if throttled {
                let shard = shard.unwrap_or_default();
                plan.push(Some(json!({
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": rate_exceeded_shard(&shard, stream),
                })));
            } else {
                plan.push(None);
                kept.push(entry.clone());
            }
        }
        let throttled = (entries.len() - kept.len()) as u64;
        self.count(format!("PutRecords {stream} -"), true);
        *self
            .stats
            .forwarded_entries
            .entry(stream.to_string())
            .or_default() += kept.len() as u64;
        if throttled > 0 {
            *self
                .stats
                .throttled_entries
                .entry(stream.to_string())
                .or_default() += throttled;
        }
        if throttled == 0 {
            return Before::Forward;
        }
        if kept.is_empty() {
            return Before::Answer(json!({
                "FailedRecordCount": throttled,
                "Records": plan.into_iter().flatten().collect::<Vec<_>>(),
            }));
        }
        let mut rewritten = body.clone();
        rewritten["Records"] = Value::Array(kept);
        Before::Rewrite {
            body: rewritten.to_string().into_bytes(),
            plan,
        }
    }

    /// Merges the emulator's answer to a rewritten PutRecords with the
    /// throttled entries, in the original order.
    pub fn merge_put(plan: Vec<Option<Value>>, answer: &Value) -> Value {
        let mut forwarded = answer
            .get("Records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter();
        let mut failed = 0u64;
        let records: Vec<Value> = plan
            .into_iter()
            .map(|throttled| {
                let r = throttled.unwrap_or_else(|| forwarded.next().unwrap_or(Value::Null));
                if r.get("ErrorCode").is_some() {
                    failed += 1;
                }
                r
            })
            .collect();
        let mut merged = answer.clone();
        merged["FailedRecordCount"] = json!(failed);
        merged["Records"] = Value::Array(records);
        merged
    }

    /// Learns from a Kinesis answer: the iterators it hands out, and the
    /// bytes a GetRecords read (charged to its shard's read rate).
    pub fn kinesis_after(&mut self, api: &str, request: &Value, answer: &Value, now: Instant) {
        match api {
            "GetShardIterator" => {
                let (Some(stream), Some(shard), Some(iterator)) = (
                    stream_of(request),
                    request.get("ShardId").and_then(Value::as_str),
                    answer.get("ShardIterator").and_then(Value::as_str),
                ) else {
                    return;
                };
                self.iterators
                    .insert(iterator.to_string(), (stream, shard.to_string()));
            }
            "GetRecords" => {
                let iterator = request
                    .get("ShardIterator")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some((stream, shard)) = self.iterators.remove(iterator) else {
                    return;
                };
                let bytes: usize = answer
                    .get("Records")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        r.get("Data")
                            .and_then(Value::as_str)
                            .map_or(0, |d| d.len() * 3 / 4)
                            + r.get("PartitionKey")
                                .and_then(Value::as_str)
                                .map_or(0, str::len)
                    })
                    .sum();
                let rate = self.quotas.read_bytes;
                let bucket = self.bucket(format!("read-bytes {stream} {shard}"), rate, now);
                bucket.refill(now);
                bucket.tokens -= bytes as f64;
                *self
                    .stats
                    .read_bytes
                    .entry(format!("{stream} {shard}"))
                    .or_default() += bytes as u64;
                if let Some(next) = answer.get("NextShardIterator").and_then(Value::as_str) {
                    self.iterators.insert(next.to_string(), (stream, shard));
                }
            }
            _ => {}
        }
    }

    /// Decides on a DynamoDB call before it is forwarded.
    pub fn dynamodb_before(&mut self, api: &str, body: &Value, now: Instant) -> Before {
        let table = body
            .get("TableName")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string();
        let (kind, rate) = match api {
            "GetItem" | "Query" | "Scan" | "BatchGetItem" => ("read", self.quotas.dynamodb_reads),
            "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" => {
                ("write", self.quotas.dynamodb_writes)
            }
            _ => ("other", None),
        };
        let key = format!("{api} {table} -");
        let Some(rate) = rate else {
            self.count(key, true);
            return Before::Forward;
        };
        if self.limited(format!("dynamodb-{kind} {table}"), rate, key, now) {
            Before::Forward
        } else {
            Before::Refuse(
                400,
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.".into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_of_two(q: &mut Quota, stream: &str) {
        let half = u128::MAX / 2;
        q.learn_map(
            stream,
            &json!({"Shards": [
                {"ShardId": "shardId-0", "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": half.to_string()}, "SequenceNumberRange": {"StartingSequenceNumber": "1"}},
                {"ShardId": "shardId-1", "HashKeyRange": {"StartingHashKey": (half + 1).to_string(), "EndingHashKey": u128::MAX.to_string()}, "SequenceNumberRange": {"StartingSequenceNumber": "1"}},
            ]}),
        );
    }

    fn put(entries: usize, hash: u128) -> Value {
        let records: Vec<Value> = (0..entries)
            .map(|_| json!({"Data": "AAAA", "PartitionKey": "k", "ExplicitHashKey": hash.to_string()}))
            .collect();
        json!({"StreamName": "s", "Records": records})
    }

    #[test]
    fn writes_over_a_shards_quota_are_throttled_per_entry() {
        let mut q = Quota::new(Quotas::aws());
        map_of_two(&mut q, "s");
        let now = Instant::now();
        assert!(matches!(
            q.kinesis_before("PutRecords", &put(500, 1), now),
            Before::Forward
        ));
        assert!(matches!(
            q.kinesis_before("PutRecords", &put(500, 1), now),
            Before::Forward
        ));
        // Shard 0 is spent; shard 1 is not.
        let Before::Answer(all) = q.kinesis_before("PutRecords", &put(3, 1), now) else {
            panic!("shard 0 has no room left");
        };
        assert_eq!(all["FailedRecordCount"], 3);
        assert!(matches!(
            q.kinesis_before("PutRecords", &put(3, u128::MAX), now),
            Before::Forward
        ));
        // A second later there is room for 1,000 more.
        let later = now + Duration::from_secs(1);
        let mut mixed = put(999, 1);
        mixed["Records"]
            .as_array_mut()
            .unwrap()
            .extend(put(2, 1)["Records"].as_array().unwrap().clone());
        let Before::Rewrite { body, plan } = q.kinesis_before("PutRecords", &mixed, later) else {
            panic!("some entries over the quota");
        };
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["Records"].as_array().unwrap().len(), 1000);
        let answer = json!({"FailedRecordCount": 0, "Records": vec![json!({"SequenceNumber": "9", "ShardId": "shardId-0"}); 1000]});
        let merged = Quota::merge_put(plan, &answer);
        assert_eq!(merged["FailedRecordCount"], 1);
        assert_eq!(
            merged["Records"][1000]["ErrorCode"],
            "ProvisionedThroughputExceededException"
        );
        assert_eq!(q.stats.throttled_entries["s"], 4);
    }

    #[test]
    fn reads_are_throttled_by_calls_and_by_bytes() {
        let mut q = Quota::new(Quotas::aws());
        let now = Instant::now();
        let request = json!({"StreamName": "s", "ShardId": "shardId-0"});
        q.kinesis_after(
            "GetShardIterator",
            &request,
            &json!({"ShardIterator": "it-0"}),
            now,
        );
        for i in 0..5 {
            let call = json!({"ShardIterator": format!("it-{i}")});
            assert!(
                matches!(q.kinesis_before("GetRecords", &call, now), Before::Forward),
                "call {i}"
            );
            q.kinesis_after(
                "GetRecords",
                &call,
                &json!({"Records": [], "NextShardIterator": format!("it-{}", i + 1)}),
                now,
            );
        }
        let sixth = json!({"ShardIterator": "it-5"});
        assert!(matches!(
            q.kinesis_before("GetRecords", &sixth, now),
            Before::Refuse(400, "ProvisionedThroughputExceededException", _)
        ));
        // A second later: one call reads 4 MiB, so the next waits ~2 s.
        let later = now + Duration::from_secs(1);
        assert!(matches!(
            q.kinesis_before("GetRecords", &sixth, later),
            Before::Forward
        ));
        let big = "A".repeat(4 << 20);
        q.kinesis_after(
            "GetRecords",
            &sixth,
            &json!({"Records": [{"Data": big, "PartitionKey": "k"}], "NextShardIterator": "it-6"}),
            later,
        );
        let next = json!({"ShardIterator": "it-6"});
        assert!(matches!(
            q.kinesis_before("GetRecords", &next, later + Duration::from_millis(500)),
            Before::Refuse(..)
        ));
        assert!(matches!(
            q.kinesis_before("GetRecords", &next, later + Duration::from_millis(2600)),
            Before::Forward
        ));
    }

    #[test]
    fn per_stream_and_account_limits() {
        let mut q = Quota::new(Quotas::aws());
        let now = Instant::now();
        let body = json!({"StreamName": "s"});
        for _ in 0..20 {
            assert!(matches!(
                q.kinesis_before("DescribeStreamSummary", &body, now),
                Before::Forward
            ));
        }
        assert!(matches!(
            q.kinesis_before("DescribeStreamSummary", &body, now),
            Before::Refuse(400, "LimitExceededException", _)
        ));
        let sub = json!({"ConsumerARN": "arn:aws:kinesis:us-east-1:1:stream/s/consumer/c:1", "ShardId": "shardId-0"});
        assert!(matches!(
            q.kinesis_before("SubscribeToShard", &sub, now),
            Before::Forward
        ));
        assert!(matches!(
            q.kinesis_before("SubscribeToShard", &sub, now),
            Before::Refuse(400, "LimitExceededException", _)
        ));
        assert_eq!(stream_of(&sub).as_deref(), Some("s"));
    }
}
