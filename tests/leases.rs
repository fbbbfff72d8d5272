//! Several instances share one source through the DynamoDB lease table
//! (`checkpoint.store = "dynamodb"`): kinesalite for Kinesis (16 shards
//! polled by 3 or 4 instances), moto's server (and dynalite) for DynamoDB.
//! Every output is read back and compared with what was written.

use distributary_e2e::fault::FaultProxy;
use distributary_e2e::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SHARDS: i32 = 16;
const OUTPUTS: usize = 3;
/// Long enough that the margins hold on two loaded cores (moto answers in
/// up to a few hundred ms there): 1 s after a missed renewal period, and
/// lease-table calls given up on after F/12 = 500 ms.
const FAILOVER_MS: u64 = 6000;
const TABLE: &str = "distributary-leases";

struct Cluster {
    kinesis: LocalKinesis,
    dynamo: LocalDynamo,
    /// Where the instances reach the lease table (the emulator, or a proxy).
    table_endpoint: String,
    client: aws_sdk_kinesis::Client,
    dir: TestDir,
    /// Appended to the source's section.
    extra_source: &'static str,
    /// Where instance i0 serves /metrics.
    metrics_port: u16,
}

impl Cluster {
    /// kinesalite with a 16-shard source.
    async fn start(dynamo: LocalDynamo) -> Cluster {
        Self::start_on(LocalKinesis::start_kinesalite().unwrap(), dynamo, SHARDS).await
    }

    async fn start_on(kinesis: LocalKinesis, dynamo: LocalDynamo, shards: i32) -> Cluster {
        let client = kinesis.client().await;
        create_stream(&client, "input", shards).await.unwrap();
        for i in 0..OUTPUTS {
            create_stream(&client, &format!("out-{i}"), 2)
                .await
                .unwrap();
        }
        Cluster {
            kinesis,
            table_endpoint: dynamo.endpoint.clone(),
            dynamo,
            client,
            dir: TestDir::new().unwrap(),
            extra_source: "",
            metrics_port: free_port_pair(),
        }
    }

    /// kinesalite and moto, the instances reaching moto through a fault proxy.
    async fn start_behind_proxy() -> (Cluster, FaultProxy) {
        let mut cluster = Self::start(LocalDynamo::start_moto().unwrap()).await;
        let proxy = FaultProxy::start(&cluster.dynamo.endpoint, 0.0)
            .await
            .unwrap();
        cluster.table_endpoint = proxy.endpoint.clone();
        (cluster, proxy)
    }

    fn config(&self, instance: &str) -> PathBuf {
        let (kin, dyn_) = (&self.kinesis.endpoint, &self.table_endpoint);
        let extra = self.extra_source;
        let mut text = format!(
            "[sources.input]\nstream = \"input\"\nendpoint_url = \"{kin}\"\npoll_interval_ms = 200\nshard_discovery_interval_s = 1\n{extra}\n"
        );
        for i in 0..OUTPUTS {
            text.push_str(&format!(
                "[outputs.o{i}]\nstream = \"out-{i}\"\nendpoint_url = \"{kin}\"\n\n"
            ));
        }
        let names: Vec<String> = (0..OUTPUTS).map(|i| format!("\"o{i}\"")).collect();
        text.push_str(&format!(
            "[checkpoint]\nstore = \"dynamodb\"\ntable = \"{TABLE}\"\nendpoint_url = \"{dyn_}\"\nfailover_ms = {FAILOVER_MS}\ninstance_id = \"{instance}\"\ncreate_table = true\npath = \"state-{instance}\"\n\n[[pipelines]]\nname = \"p\"\nsource = \"input\"\noutputs = [{}]\n",
            names.join(", ")
        ));
        if instance == "i0" {
            text.push_str(&format!(
                "\n[server]\nlisten = \"127.0.0.1:{}\"\n",
                self.metrics_port
            ));
        }
        self.dir
            .write_config(&format!("{instance}.toml"), &text)
            .unwrap()
    }

    fn instance(&self, name: &str) -> Distributary {
        Distributary::start(&self.config(name)).unwrap()
    }

    /// Starts i0, i1 and i2 and waits until they hold the shards evenly.
    async fn three_spread(&self) -> [Distributary; 3] {
        let instances = [
            self.instance("i0"),
            self.instance("i1"),
            self.instance("i2"),
        ];
        self.wait_owners(
            "spread",
            Duration::from_secs(60),
            spread(&["i0", "i1", "i2"]),
        )
        .await;
        instances
    }

    /// Owner → number of leases it holds (None: unowned; a lease under
    /// handoff counts as "new <- old", held by neither yet).
    async fn owners(&self) -> BTreeMap<Option<String>, usize> {
        let mut counts = BTreeMap::new();
        for lease in self.dynamo.leases(TABLE).await.unwrap_or_default() {
            let owner = match (&lease.owner, &lease.checkpoint_owner) {
                (Some(new), Some(old)) => Some(format!("{new} <- {old}")),
                (owner, _) => owner.clone(),
            };
            *counts.entry(owner).or_default() += 1;
        }
        counts
    }

    /// Waits until `ok` holds for the owner counts; returns how long it took.
    async fn wait_owners(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&BTreeMap<Option<String>, usize>) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let owners = self.owners().await;
            if ok(&owners) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "{what}: not within {timeout:?}; owners now {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads every output back: each record of `expected`, in key order.
    async fn check_outputs(&self, expected: &[Rec], duplicates_allowed: bool) -> usize {
        let mut duplicates = 0;
        for i in 0..OUTPUTS {
            let stream = format!("out-{i}");
            let got = wait_for_every(&self.client, &stream, expected, Duration::from_secs(120))
                .await
                .unwrap();
            duplicates += got.len().saturating_sub(expected.len());
            if duplicates_allowed {
                assert_at_least_once_in_key_order(&stream, expected, &got);
            } else {
                assert_exactly_once_in_key_order(&stream, expected, &got);
            }
        }
        duplicates
    }
}

impl Drop for Cluster {
    /// With DISTRIBUTARY_TEST_KEEP_LOGS=DIR, the instances' logs are copied there.
    fn drop(&mut self) {
        let Ok(keep) = std::env::var("DISTRIBUTARY_TEST_KEEP_LOGS") else {
            return;
        };
        let keep =
            std::path::Path::new(&keep).join(self.dir.dir.path().file_name().unwrap_or_default());
        let _ = std::fs::create_dir_all(&keep);
        if let Ok(entries) = std::fs::read_dir(self.dir.dir.path()) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let _ = std::fs::copy(&path, keep.join(entry.file_name()));
                }
            }
        }
    }
}

/// Every lease held by one of `names` (however many each).
fn held_by(names: &[&str]) -> impl Fn(&BTreeMap<Option<String>, usize>) -> bool {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    move |owners| {
        let held: usize = names
            .iter()
            .map(|n| owners.get(&Some(n.clone())).copied().unwrap_or(0))
            .sum();
        held == SHARDS as usize
    }
}

/// Spread within one: every instance in `names` holds 5 or 6 of 16, none unowned.
fn spread(names: &[&str]) -> impl Fn(&BTreeMap<Option<String>, usize>) -> bool {
    spread_of(names, SHARDS as usize)
}

/// Every one of `total` leases held, by `names`, within one of each other.
fn spread_of(names: &[&str], total: usize) -> impl Fn(&BTreeMap<Option<String>, usize>) -> bool {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    move |owners| {
        let counts: Vec<usize> = names
            .iter()
            .map(|n| owners.get(&Some(n.clone())).copied().unwrap_or(0))
            .collect();
        let held: usize = counts.iter().sum();
        held == total && counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1
    }
}

/// Writes `records` in the background, 100 per call, paced so events land mid-stream.
fn write_slowly(client: aws_sdk_kinesis::Client, records: Vec<Rec>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for chunk in records.chunks(100) {
            put_all(&client, "input", chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

fn status(config: &std::path::Path) -> std::process::Output {
    distributary_command()
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("cannot run distributary status: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_fails_when_the_lease_table_cannot_be_read() {
    let cluster = Cluster::start(LocalDynamo::start_moto().unwrap()).await;
    // No instance ran: the table does not exist.
    let out = status(&cluster.config("i0"));
    assert!(!out.status.success(), "a missing lease table is an error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("checkpoint.table"), "{stderr}");
}

fn logs(instances: &[&Distributary]) -> String {
    instances
        .iter()
        .map(|d| d.log_text())
        .collect::<Vec<_>>()
        .join("\n----\n")
}

async fn three_instances_spread_and_deliver_exactly_once(dynamo: LocalDynamo) {
    let cluster = Cluster::start(dynamo).await;
    let records = numbered_records(3000, 200, "");
    let writer = write_slowly(cluster.client.clone(), records.clone());
    let instances = [
        cluster.instance("i0"),
        cluster.instance("i1"),
        cluster.instance("i2"),
    ];
    let took = cluster
        .wait_owners(
            "16 shards spread over 3 instances",
            Duration::from_secs(60),
            spread(&["i0", "i1", "i2"]),
        )
        .await;
    println!("spread 5/5/6 after {took:?}");
    writer.await.unwrap();
    cluster.check_outputs(&records, false).await;
    let text = scrape_metrics(cluster.metrics_port).expect("i0 serves /metrics");
    let held = metric(&text, "distributary_leases_held{instance=\"i0\"}");
    assert!(
        held.is_some_and(|n| (5.0..=6.0).contains(&n)),
        "leases held by i0: {held:?}\n{text}"
    );
    // `status` reads the lease table: every shard, owned by one of the three.
    let out = status(&cluster.config("i0"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), SHARDS as usize, "{rows:?}");
    for row in &rows {
        let owner = row["owner"].as_str().unwrap_or_default();
        assert!(["i0", "i1", "i2"].contains(&owner), "{row}");
        assert!(row["position"].is_string(), "{row}");
        assert!(
            row["lease_age_ms"].as_i64().is_some_and(|ms| ms < 10_000),
            "{row}"
        );
    }
    for instance in instances {
        instance.stop_cleanly();
    }
    let owners = cluster.owners().await;
    assert_eq!(
        owners.keys().collect::<Vec<_>>(),
        [&None],
        "SIGTERM releases every lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_spread_and_deliver_exactly_once_on_moto() {
    three_instances_spread_and_deliver_exactly_once(LocalDynamo::start_moto().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_spread_and_deliver_exactly_once_on_dynalite() {
    three_instances_spread_and_deliver_exactly_once(LocalDynamo::start_dynalite().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_s_shards_are_taken_within_two_failover_periods() {
    let cluster = Cluster::start(LocalDynamo::start_moto().unwrap()).await;
    let [i0, i1, i2] = cluster.three_spread().await;
    let records = numbered_records(4000, 200, "");
    let writer = write_slowly(cluster.client.clone(), records.clone());
    wait_for_count(&cluster.client, "out-0", 1000, Duration::from_secs(60))
        .await
        .unwrap();
    i2.kill().unwrap();
    // Read by the others: every lease held by a live instance.
    let took = cluster
        .wait_owners(
            "the killed instance's leases taken",
            Duration::from_millis(FAILOVER_MS * 2) + Duration::from_secs(5),
            held_by(&["i0", "i1"]),
        )
        .await;
    cluster
        .wait_owners(
            "the two left balanced",
            Duration::from_secs(60),
            spread(&["i0", "i1"]),
        )
        .await;
    writer.await.unwrap();
    let duplicates = cluster.check_outputs(&records, true).await;
    println!(
        "kill -9: leases taken after {took:?}; {duplicates} duplicates over {OUTPUTS} outputs"
    );
    assert!(
        took <= Duration::from_millis(FAILOVER_MS * 2),
        "taken after {took:?}, more than 2 × failover_ms\n{}",
        logs(&[&i0, &i1])
    );
    i0.stop_cleanly();
    i1.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_leases_for_the_others_with_nothing_lost_or_duplicated() {
    let cluster = Cluster::start(LocalDynamo::start_moto().unwrap()).await;
    let [i0, i1, i2] = cluster.three_spread().await;
    let records = numbered_records(4000, 200, "");
    let writer = write_slowly(cluster.client.clone(), records.clone());
    wait_for_count(&cluster.client, "out-0", 1000, Duration::from_secs(60))
        .await
        .unwrap();
    let stopped = Instant::now();
    i2.stop_cleanly();
    let took = cluster
        .wait_owners(
            "the stopped instance's leases taken",
            Duration::from_millis(FAILOVER_MS * 2),
            spread(&["i0", "i1"]),
        )
        .await;
    println!(
        "SIGTERM: exited after {:?}, leases taken {took:?} later",
        stopped.elapsed() - took
    );
    writer.await.unwrap();
    cluster.check_outputs(&records, false).await;
    assert!(
        took < Duration::from_millis(FAILOVER_MS),
        "released leases wait for one scan, not for expiry: {took:?}"
    );
    i0.stop_cleanly();
    i1.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steal_just_before_sigterm_is_finished_with_the_final_positions() {
    // 4 shards, one instance; records flowing.
    let cluster = Cluster::start_on(
        LocalKinesis::start_kinesalite().unwrap(),
        LocalDynamo::start_moto().unwrap(),
        4,
    )
    .await;
    let i0 = cluster.instance("i0");
    cluster
        .wait_owners(
            "i0 holds every lease",
            Duration::from_secs(60),
            spread_of(&["i0"], 4),
        )
        .await;
    let records = numbered_records(3000, 100, "");
    let writer = write_slowly(cluster.client.clone(), records.clone());
    wait_for_count(&cluster.client, "out-0", 500, Duration::from_secs(60))
        .await
        .unwrap();
    // A peer starts a handoff of one lease in the table, and i0 is told to
    // stop at once: whether the renewal that follows a shard task's end or
    // the final write (a release, refused) finds the handoff, i0 must finish
    // it with its final positions (left unfinished, the peer would wait out
    // failover_ms and read again what i0 delivered since its last renewal).
    // `decide::finish_instead` covers the narrower race in unit tests.
    let table = cluster.dynamo.table(TABLE);
    let leases = cluster.dynamo.leases(TABLE).await.unwrap();
    let stolen = leases
        .iter()
        .find(|l| l.owner.as_deref() == Some("i0"))
        .expect("a lease of i0");
    let steal = table
        .steal(&stolen.key, stolen.counter, "i0", "peer")
        .await
        .unwrap();
    assert!(steal.is_some(), "the steal took effect");
    let i0_log = i0.log.clone();
    i0.stop_cleanly();
    let after = cluster.dynamo.leases(TABLE).await.unwrap();
    let lease = after.iter().find(|l| l.key == stolen.key).unwrap();
    assert_eq!(
        (lease.owner.as_deref(), lease.checkpoint_owner.as_deref()),
        (Some("peer"), None),
        "the handoff was finished by i0's final write\n{}",
        std::fs::read_to_string(&i0_log).unwrap_or_default()
    );
    // The peer starts from the final positions: nothing read twice.
    let peer = cluster.instance("peer");
    writer.await.unwrap();
    let duplicates = cluster.check_outputs(&records, false).await;
    assert_eq!(duplicates, 0);
    peer.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_instance_gets_leases_by_handoff_with_nothing_lost_or_duplicated() {
    let cluster = Cluster::start(LocalDynamo::start_moto().unwrap()).await;
    let instances = cluster.three_spread().await;
    let records = numbered_records(4000, 200, "");
    let writer = write_slowly(cluster.client.clone(), records.clone());
    wait_for_count(&cluster.client, "out-0", 1000, Duration::from_secs(60))
        .await
        .unwrap();
    let i3 = cluster.instance("i3");
    let took = cluster
        .wait_owners(
            "4 instances spread",
            Duration::from_secs(60),
            |owners: &BTreeMap<Option<String>, usize>| {
                let counts: Vec<usize> = ["i0", "i1", "i2", "i3"]
                    .iter()
                    .map(|n| owners.get(&Some(n.to_string())).copied().unwrap_or(0))
                    .collect();
                counts.iter().sum::<usize>() == SHARDS as usize
                    && counts.iter().all(|c| (3..=5).contains(c))
            },
        )
        .await;
    println!("join: the 4th instance holds its share after {took:?}");
    writer.await.unwrap();
    cluster.check_outputs(&records, false).await;
    let log = i3.log_text();
    assert!(
        log.contains("handoff of a lease to this instance started"),
        "the 4th instance took its leases by handoff\n{log}"
    );
    for instance in instances {
        instance.stop_cleanly();
    }
    i3.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_instance_fences_itself_and_the_others_own_its_shards() {
    let cluster = Cluster::start(LocalDynamo::start_moto().unwrap()).await;
    let [i0, i1, i2] = cluster.three_spread().await;
    let records = numbered_records(4000, 200, "");
    let writer = write_slowly(cluster.client.clone(), records.clone());
    wait_for_count(&cluster.client, "out-0", 1000, Duration::from_secs(60))
        .await
        .unwrap();
    i2.signal("STOP");
    cluster
        .wait_owners(
            "the frozen instance's leases taken",
            Duration::from_millis(FAILOVER_MS * 3),
            spread(&["i0", "i1"]),
        )
        .await;
    i2.signal("CONT");
    // Resumed: it must notice that it lost them, not take them back by force.
    tokio::time::sleep(Duration::from_millis(FAILOVER_MS)).await;
    writer.await.unwrap();
    let duplicates = cluster.check_outputs(&records, true).await;
    println!("SIGSTOP past failover_ms: {duplicates} duplicates over {OUTPUTS} outputs");
    let log = i2.log_text();
    assert!(
        log.contains("self-fencing") || log.contains("lease lost"),
        "the resumed instance fenced itself\n{log}"
    );
    for d in [i0, i1, i2] {
        d.stop_cleanly();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_and_a_merge_under_three_instances_keep_parents_before_children() {
    // kinesis-local: ListShards with parents, as real Kinesis; 4 shards.
    let cluster = Cluster::start_on(
        LocalKinesis::start().unwrap(),
        LocalDynamo::start_moto().unwrap(),
        4,
    )
    .await;
    let mut cluster = cluster;
    // Small reads keep the instances behind the producer, so parents still
    // hold unread records when their children fill.
    cluster.extra_source = "max_records_per_read = 25\n";
    let records = numbered_records(2400, 48, "");
    let (first, rest) = records.split_at(800);
    let (second, third) = rest.split_at(800);
    put_all(&cluster.client, "input", first).await.unwrap();
    let instances = [
        cluster.instance("i0"),
        cluster.instance("i1"),
        cluster.instance("i2"),
    ];
    wait_for_count(&cluster.client, "out-0", 50, Duration::from_secs(60))
        .await
        .unwrap();
    let before = split_in_half(&cluster.client, "input", 0).await.unwrap();
    put_all(&cluster.client, "input", second).await.unwrap();
    cluster
        .client
        .merge_shards()
        .stream_name("input")
        .shard_to_merge(&before[2])
        .adjacent_shard_to_merge(&before[3])
        .send()
        .await
        .unwrap();
    wait_active(&cluster.client, "input").await.unwrap();
    put_all(&cluster.client, "input", third).await.unwrap();
    let duplicates = cluster.check_outputs(&records, true).await;
    println!("split + merge under 3 instances: {duplicates} duplicates over {OUTPUTS} outputs");
    if duplicates > 0 {
        // No instance died: say which lease moved uncleanly.
        let all = logs(&instances.iter().collect::<Vec<_>>());
        for line in all.lines().filter(|l| l.contains("WARN")) {
            println!("{line}");
        }
    }
    let leases = cluster.dynamo.leases(TABLE).await.unwrap();
    assert_eq!(
        leases.len(),
        7,
        "4 parents, 2 split children, 1 merge child"
    );
    let finished = leases
        .iter()
        .filter(|l| l.finished_for(["p"].into_iter()))
        .count();
    assert_eq!(finished, 3, "the closed parents are SHARD_END: {leases:?}");
    for instance in instances {
        instance.stop_cleanly();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_table_errors_within_the_margin_keep_every_lease_and_throttling_loses_nothing() {
    let (cluster, proxy) = Cluster::start_behind_proxy().await;
    let instances = cluster.three_spread().await;
    let records = numbered_records(4000, 200, "");
    let writer = write_slowly(cluster.client.clone(), records.clone());
    // Every lease-table call fails for 400 ms, again and again until the
    // outages have failed at least 20 calls: each shorter than the margin
    // left when a renewal falls due in an outage (failover/2 - failover/4 =
    // 1.5 s, less the 100 ms retry interval and a call's latency on moto).
    // Each lease is renewed every 1.5 s on its own schedule, so outages
    // 1.6 s apart fall on renewals of every instance.
    let failed_calls = || {
        proxy
            .calls_failed
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut outages = 0;
    while outages < 5 || (failed_calls() < 20 && outages < 15) {
        proxy.set_call_failure_rate(1.0);
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy.set_call_failure_rate(0.0);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        outages += 1;
    }
    let failed = failed_calls();
    assert!(
        failed >= 20,
        "{outages} outages failed only {failed} lease-table calls"
    );
    let log = logs(&instances.iter().collect::<Vec<_>>());
    assert!(
        log.contains("lease renewal failed"),
        "no renewal fell in an outage\n{log}"
    );
    for (name, instance) in ["i0", "i1", "i2"].iter().zip(&instances) {
        let log = instance.log_text();
        assert!(
            !log.contains("self-fencing") && !log.contains("lease lost"),
            "{name} lost a lease to errors shorter than the margin\n{log}"
        );
    }
    // Then a third of all calls throttled for 5 s: leases may move, nothing is lost.
    proxy.set_call_failure_rate(0.33);
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.set_call_failure_rate(0.0);
    writer.await.unwrap();
    let duplicates = cluster.check_outputs(&records, true).await;
    println!(
        "lease table faults: {failed} calls failed in {outages} short outages, {} in all; {duplicates} duplicates",
        failed_calls()
    );
    cluster
        .wait_owners(
            "every lease held again",
            Duration::from_secs(30),
            spread(&["i0", "i1", "i2"]),
        )
        .await;
    for instance in instances {
        instance.stop_cleanly();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_writes_that_take_effect_unanswered_keep_their_leases_and_duplicate_nothing() {
    let (cluster, proxy) = Cluster::start_behind_proxy().await;
    let instances = cluster.three_spread().await;
    let records = numbered_records(6000, 200, "");
    let writer = write_slowly(cluster.client.clone(), records.clone());
    // Every 700 ms one lease write (a renewal, in steady state) takes effect
    // in the table and its answer never comes: the writer gives up after
    // F/12, its retry is refused, and the lease, as it stood then (one
    // write past it and still its own), stays held.
    for _ in 0..12 {
        proxy.lose_answers(".UpdateItem", 1);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    writer.await.unwrap();
    let lost = proxy.answers_lost();
    for (name, instance) in ["i0", "i1", "i2"].iter().zip(&instances) {
        let log = instance.log_text();
        assert!(
            !log.contains("self-fencing") && !log.contains("lease lost"),
            "{name} gave up a lease whose renewal took effect unanswered\n{log}"
        );
    }
    let kept = instances
        .iter()
        .filter(|i| {
            i.log_text()
                .contains("an unanswered renewal had taken effect")
        })
        .count();
    assert!(
        kept > 0,
        "no instance saw its own unanswered renewal in the table"
    );
    let duplicates = cluster.check_outputs(&records, false).await;
    println!("lease writes answered never: {lost}; {duplicates} duplicates");
    assert!(lost >= 10, "the proxy withheld answers: {lost}");
    for instance in instances {
        instance.stop_cleanly();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_table_stall_past_the_margin_fences_then_resumes_without_moving_a_lease() {
    let (cluster, proxy) = Cluster::start_behind_proxy().await;
    let instances = cluster.three_spread().await;
    // 500 records/s for 12 s, so the stall falls mid-stream.
    let records = numbered_records(6000, 200, "");
    let client = cluster.client.clone();
    let paced = records.clone();
    let writer = tokio::spawn(async move {
        for chunk in paced.chunks(50) {
            put_all(&client, "input", chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    wait_for_count(&cluster.client, "out-0", 1500, Duration::from_secs(60))
        .await
        .unwrap();
    // Every lease-table call unanswered for 4 s: past the fencing margin
    // (failover/2 = 3 s), short of failover (6 s), before which no peer
    // takes a lease. Every instance stops its shards; once the table
    // answers, each renews its leases (still its own) and resumes them
    // from the positions its outputs acknowledged.
    let before = owners_and_switches(&cluster).await;
    proxy.set_stalled(true);
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.set_stalled(false);
    writer.await.unwrap();
    let duplicates = cluster.check_outputs(&records, true).await;
    let copies = records.len() * OUTPUTS;
    println!("lease table stalled 4 s: {duplicates} duplicates in {copies} copies");
    for (name, instance) in ["i0", "i1", "i2"].iter().zip(&instances) {
        let log = instance.log_text();
        assert!(
            log.contains("self-fencing"),
            "{name} did not fence itself in a stall past the margin\n{log}"
        );
        assert!(
            !log.contains("lease lost"),
            "{name} lost a lease no peer could take yet\n{log}"
        );
    }
    assert_eq!(
        owners_and_switches(&cluster).await,
        before,
        "a lease changed owners across a stall shorter than failover"
    );
    // What a fenced shard repeats is at most what its outputs had in flight
    // when it stopped, not everything since its last stored position.
    assert!(
        duplicates * 100 < copies,
        "{duplicates} duplicates in {copies} copies: a fenced lease moved or restarted from an old position"
    );
    cluster
        .wait_owners(
            "every lease held by its owner",
            Duration::from_secs(30),
            spread(&["i0", "i1", "i2"]),
        )
        .await;
    for instance in instances {
        instance.stop_cleanly();
    }
}

/// Per lease: its owner and how many times it changed owners.
async fn owners_and_switches(cluster: &Cluster) -> BTreeMap<String, (Option<String>, u64)> {
    let leases = cluster.dynamo.leases(TABLE).await.unwrap();
    leases
        .into_iter()
        .map(|l| (l.key, (l.owner, l.owner_switches)))
        .collect()
}
