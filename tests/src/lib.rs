//! The end-to-end test harness: starts a private kinesis-local on a free
//! loopback port (through `scripts/local-kinesis`), creates streams, writes
//! and reads records, and runs the release `distributary` binary as a child
//! process, stopping everything it started by PID.
//!
//! Every wait is bounded: helpers take a deadline and fail with what they saw.
//!
//! The binary under test reaches every emulator through an AWS-shaped front
//! (`front/`: TLS from the tests' CA, SigV4 verified, AWS's refusals); the
//! tests' own clients talk to the emulators directly (`plain`).

pub mod config;
pub mod cut;
pub mod fault;
pub mod front;
pub mod quota_run;

use anyhow::{Context, Result, bail};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The target directory shared by the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The release binary under test (built by `cargo build --release` before the tests).
pub fn distributary_bin() -> PathBuf {
    target_dir().join("release").join("distributary")
}

/// A shipped plugin built for wasm32-wasip2.
pub fn plugin(name: &str) -> PathBuf {
    target_dir()
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{name}.wasm"))
}

/// A free TCP port on 127.0.0.1 (and the next one, which kinesis-local uses for TLS).
pub fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let Ok(a) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = a.local_addr() else { continue };
        let port = addr.port();
        if port < 65000 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair on 127.0.0.1");
}

/// A kinesis-local server owned by one test, behind its front.
pub struct LocalKinesis {
    /// The emulator's own port (plain HTTP).
    pub port: u16,
    /// What the binary under test is pointed at: the front (HTTPS, verified).
    pub endpoint: String,
    /// The emulator itself, for the tests' own clients.
    pub plain: String,
    pub front: front::Front,
    dir: tempfile::TempDir,
    pid: u32,
}

impl LocalKinesis {
    /// kinesis-local: the primary emulator (widest API).
    pub fn start() -> Result<Self> {
        Self::start_with("start")
    }

    /// kinesalite: the faster emulator, for tests that measure throughput
    /// (stream names only, no ARNs, no EFO).
    pub fn start_kinesalite() -> Result<Self> {
        Self::start_with("start-kinesalite")
    }

    fn start_with(command: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port_pair();
        let out = Command::new(root().join("scripts/local-kinesis"))
            .args([command, &port.to_string()])
            .arg(dir.path())
            .stderr(Stdio::inherit())
            .output()
            .context("running scripts/local-kinesis")?;
        if !out.status.success() {
            bail!(
                "scripts/local-kinesis {command} failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .parse()
            .context("reading the server PID")?;
        let plain = format!("http://127.0.0.1:{port}");
        let front = front::Front::start(&plain)?;
        Ok(LocalKinesis {
            port,
            endpoint: front.endpoint.clone(),
            plain,
            front,
            dir,
            pid,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A client of the emulator itself (not through the front).
    pub async fn client(&self) -> Client {
        client_for(&self.plain).await
    }
}

impl Drop for LocalKinesis {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/local-kinesis"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// The environment every run of the binary under test gets: the tests'
/// static keys (which the fronts know), the region, the test CA as the CA
/// bundle, and no instance metadata.
pub fn aws_env() -> Vec<(String, String)> {
    let mut env = vec![
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            front::creds::TEST_KEY.to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            front::creds::TEST_SECRET.to_string(),
        ),
        ("AWS_REGION".to_string(), "us-east-1".to_string()),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
    ];
    match front::tls::ca_file() {
        Ok(ca) => env.push(("AWS_CA_BUNDLE".to_string(), ca.display().to_string())),
        Err(e) => panic!("{e:#}"),
    }
    env
}

/// `distributary` with `aws_env()` set.
pub fn distributary_command() -> Command {
    let mut cmd = Command::new(distributary_bin());
    cmd.envs(aws_env());
    cmd
}

/// A client with dummy credentials for a local endpoint.
pub async fn client_for(endpoint: &str) -> Client {
    let creds =
        aws_sdk_kinesis::config::Credentials::new("test", "test", None, None, "distributary-tests");
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .timeout_config(
            aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(30))
                .connect_timeout(Duration::from_secs(3))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// Splits shard `index` of `stream` (in ListShards order) at the middle of
/// its hash range and waits until the stream is ACTIVE again; returns the
/// shard ids listed before the split.
pub async fn split_in_half(client: &Client, stream: &str, index: usize) -> Result<Vec<String>> {
    let listed = client.list_shards().stream_name(stream).send().await?;
    let shard = listed
        .shards()
        .get(index)
        .with_context(|| format!("{stream} has no shard {index}"))?;
    let range = shard.hash_key_range().context("shard without hash range")?;
    let start: u128 = range.starting_hash_key().parse()?;
    let end: u128 = range.ending_hash_key().parse()?;
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(shard.shard_id())
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .with_context(|| format!("SplitShard {stream}"))?;
    wait_active(client, stream).await?;
    Ok(listed
        .shards()
        .iter()
        .map(|s| s.shard_id().to_string())
        .collect())
}

/// Creates a stream and waits until it is ACTIVE.
pub async fn create_stream(client: &Client, name: &str, shards: i32) -> Result<()> {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .with_context(|| format!("CreateStream {name}"))?;
    wait_active(client, name).await
}

pub async fn wait_active(client: &Client, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await?;
        if out.stream_description_summary().map(|s| s.stream_status())
            == Some(&StreamStatus::Active)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("stream {name} not ACTIVE after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A test record: data and partition key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rec {
    pub key: String,
    pub data: Vec<u8>,
}

/// Writes records in order, 500 per call, retrying failed entries in order (a test producer).
pub async fn put_all(client: &Client, stream: &str, records: &[Rec]) -> Result<()> {
    for chunk in records.chunks(250) {
        // One record per key per call keeps the producer's own per-key order under retries.
        let mut pending: Vec<&Rec> = chunk.iter().collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pending.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let n = pending
                .iter()
                .take_while(|r| seen.insert(r.key.clone()))
                .count();
            let entries: Vec<PutRecordsRequestEntry> = pending[..n]
                .iter()
                .map(|r| {
                    PutRecordsRequestEntry::builder()
                        .data(Blob::new(r.data.clone()))
                        .partition_key(&r.key)
                        .build()
                })
                .collect::<Result<_, _>>()?;
            let out = client
                .put_records()
                .stream_name(stream)
                .set_records(Some(entries))
                .send()
                .await
                .context("PutRecords")?;
            let failed: Vec<&Rec> = pending[..n]
                .iter()
                .zip(out.records())
                .filter(|(_, r)| r.error_code().is_some())
                .map(|(rec, _)| *rec)
                .collect();
            let rest = pending.split_off(n);
            pending = failed.into_iter().chain(rest).collect();
            if Instant::now() > deadline {
                bail!("test producer could not write to {stream} in 60 s");
            }
        }
    }
    Ok(())
}

/// A record as read back: its shard and sequence number too.
#[derive(Debug, Clone)]
pub struct ReadRec {
    pub shard: String,
    pub sequence: String,
    pub rec: Rec,
}

/// Reads every record of every shard of `stream` from the trim horizon.
/// Within a shard, records come in stored order.
pub async fn read_all(client: &Client, stream: &str) -> Result<Vec<ReadRec>> {
    let shards = client.list_shards().stream_name(stream).send().await?;
    let mut all = Vec::new();
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator
            .context("no iterator")?;
        for _ in 0..10_000 {
            let out = client
                .get_records()
                .shard_iterator(&iterator)
                .limit(10_000)
                .send()
                .await?;
            let empty = out.records().is_empty();
            for r in out.records() {
                all.push(ReadRec {
                    shard: shard.shard_id().to_string(),
                    sequence: r.sequence_number().to_string(),
                    rec: Rec {
                        key: r.partition_key().unwrap_or_default().to_string(),
                        data: r.data().as_ref().to_vec(),
                    },
                });
            }
            match out.next_shard_iterator() {
                Some(next) if !(empty && out.millis_behind_latest() == Some(0)) => {
                    iterator = next.to_string()
                }
                _ => break,
            }
        }
    }
    Ok(all)
}

/// Waits until `stream` holds at least `n` records; returns them.
pub async fn wait_for_count(
    client: &Client,
    stream: &str,
    n: usize,
    timeout: Duration,
) -> Result<Vec<ReadRec>> {
    let deadline = Instant::now() + timeout;
    loop {
        let all = read_all(client, stream).await?;
        if all.len() >= n {
            return Ok(all);
        }
        if Instant::now() > deadline {
            bail!("{stream}: {} of {n} records after {timeout:?}", all.len());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits (bounded) until `stream` holds every one of `expected`, then a
/// second more for late duplicates; returns what it holds (on timeout too,
/// so the caller's assertion names what is missing). For at-least-once
/// checks: a count is not enough there, since duplicates of early records
/// can make up the number while the last ones are still on their way.
pub async fn wait_for_every(
    client: &Client,
    stream: &str,
    expected: &[Rec],
    timeout: Duration,
) -> Result<Vec<ReadRec>> {
    let want: std::collections::HashSet<&Rec> = expected.iter().collect();
    let deadline = Instant::now() + timeout;
    loop {
        let got = read_all(client, stream).await?;
        let present: std::collections::HashSet<&Rec> = got.iter().map(|r| &r.rec).collect();
        if want.iter().all(|r| present.contains(r)) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return read_all(client, stream).await;
        }
        if Instant::now() > deadline {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `stream` holds `n` records, then gives a late duplicate a
/// second to show up and reads the stream again: for exactly-once checks.
pub async fn wait_for_settled(
    client: &Client,
    stream: &str,
    n: usize,
    timeout: Duration,
) -> Result<Vec<ReadRec>> {
    let got = wait_for_count(client, stream, n, timeout).await?;
    if got.len() > n {
        return Ok(got);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    read_all(client, stream).await
}

/// A private kinesis-local with the given streams (name, shard count) created.
pub async fn kinesis_with_streams(streams: &[(&str, i32)]) -> Result<(LocalKinesis, Client)> {
    let kinesis = LocalKinesis::start()?;
    let client = kinesis.client().await;
    for (name, shards) in streams {
        create_stream(&client, name, *shards).await?;
    }
    Ok((kinesis, client))
}

/// `count` records over `keys` partition keys; the data names the record's key and its index in that key.
pub fn numbered_records(count: usize, keys: usize, prefix: &str) -> Vec<Rec> {
    let mut next: BTreeMap<usize, usize> = BTreeMap::new();
    (0..count)
        .map(|i| {
            let k = i % keys;
            let n = next.entry(k).or_default();
            let rec = Rec {
                key: format!("{prefix}key-{k}"),
                data: format!("{{\"key\":{k},\"n\":{n},\"i\":{i}}}").into_bytes(),
            };
            *n += 1;
            rec
        })
        .collect()
}

/// Asserts that `got` holds each of `expected` exactly once, and that for every
/// partition key the records come in the expected order (per shard they were read from).
pub fn assert_exactly_once_in_key_order(stream: &str, expected: &[Rec], got: &[ReadRec]) {
    assert_complete(stream, expected, got, false);
}

/// Like `assert_exactly_once_in_key_order`, but duplicates are allowed (at-least-once after a crash).
pub fn assert_at_least_once_in_key_order(stream: &str, expected: &[Rec], got: &[ReadRec]) {
    assert_complete(stream, expected, got, true);
}

fn assert_complete(stream: &str, expected: &[Rec], got: &[ReadRec], duplicates_allowed: bool) {
    let position: std::collections::HashMap<&Rec, usize> =
        expected.iter().enumerate().map(|(i, r)| (r, i)).collect();
    let mut seen = vec![0usize; expected.len()];
    // Per key: the source position of the last record seen (order check), first occurrences only.
    let mut last_of_key: BTreeMap<&str, usize> = BTreeMap::new();
    for r in got {
        let Some(&i) = position.get(&r.rec) else {
            panic!(
                "{stream}: unexpected record {:?} / {}",
                r.rec.key,
                String::from_utf8_lossy(&r.rec.data)
            );
        };
        seen[i] += 1;
        if seen[i] > 1 {
            assert!(
                duplicates_allowed,
                "{stream}: record {i} ({}) delivered {} times",
                String::from_utf8_lossy(&r.rec.data),
                seen[i]
            );
            continue;
        }
        if let Some(&prev) = last_of_key.get(r.rec.key.as_str()) {
            assert!(
                prev < i,
                "{stream}: key {} out of order: record {i} after record {prev} (shard {})",
                r.rec.key,
                r.shard
            );
        }
        last_of_key.insert(&r.rec.key, i);
    }
    let missing: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, n)| **n == 0)
        .map(|(i, _)| i)
        .collect();
    assert!(
        missing.is_empty(),
        "{stream}: {} of {} records missing, first: {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(10)]
    );
}

/// GET over plain HTTP/1.1 on loopback: (status, body), or None if nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// The `/metrics` text, once the server answers it with 200.
pub fn scrape_metrics(port: u16) -> Option<String> {
    match http_get(port, "/metrics")? {
        (200, text) => Some(text),
        _ => None,
    }
}

/// The value of one series (name and labels, exactly as exposed) in a metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs `distributary check --config <config>` and asserts it succeeds; returns its stdout.
pub fn check_ok(config: &Path) -> String {
    let out = distributary_command()
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("cannot run distributary check: {e}"));
    assert!(
        out.status.success(),
        "{}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running `distributary run` child process.
pub struct Distributary {
    child: Child,
    pub log: PathBuf,
}

impl Distributary {
    /// Starts `distributary run --config <config>`, logging to `<config>.log` (appending).
    pub fn start(config: &Path) -> Result<Self> {
        Self::start_with_env(config, &[])
    }

    /// Like `start`, with extra environment variables (e.g. an STS endpoint).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Result<Self> {
        Self::start_with(config, &[], env)
    }

    /// Like `start`, with extra `run` flags (e.g. `--watch-config`) and
    /// environment variables.
    pub fn start_with(config: &Path, flags: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let bin = distributary_bin();
        if !bin.is_file() {
            bail!(
                "{} missing: run `cargo build --release` first",
                bin.display()
            );
        }
        let log = config.with_extension("log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut command = Command::new(bin);
        command
            .args(["run", "--config"])
            .arg(config)
            .args(flags)
            .envs(aws_env())
            .env(
                "RUST_LOG",
                std::env::var("DISTRIBUTARY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        // An empty value removes the variable.
        for (name, value) in env {
            if value.is_empty() {
                command.env_remove(name);
            } else {
                command.env(name, value);
            }
        }
        let child = command
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting distributary")?;
        Ok(Distributary { child, log })
    }

    /// Like `start_with_env`, without the tests' static keys: credentials
    /// come from what `env` names (a container credentials endpoint).
    pub fn start_without_static_keys(config: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let mut all: Vec<(&str, &str)> =
            vec![("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")];
        all.extend_from_slice(env);
        Self::start_with(config, &[], &all)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        signal(self.child.id(), "TERM");
        self.wait(timeout)
    }

    /// SIGTERM, then asserts a clean exit (status 0), showing the log if not.
    pub fn stop_cleanly(self) {
        let log = self.log.clone();
        let status = self
            .terminate(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            status.success(),
            "exit status {status}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// Sends SIGTERM without waiting.
    pub fn send_term(&self) {
        signal(self.child.id(), "TERM");
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU time (user + system) the process has used so far, from /proc.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields
            .get(11)
            .and_then(|u| u.parse::<f64>().ok())
            .unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
        let hz = Command::new("getconf").arg("CLK_TCK").output()?;
        let hz: f64 = String::from_utf8_lossy(&hz.stdout)
            .trim()
            .parse()
            .unwrap_or(100.0);
        Ok(ticks / hz)
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    pub fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "distributary did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Distributary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// A config file in a fresh directory (state directory beside it).
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Result<Self> {
        Ok(TestDir {
            dir: tempfile::tempdir()?,
        })
    }

    pub fn write_config(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// A DynamoDB emulator owned by one test (scripts/local-dynamodb): moto's
/// server (the primary one; it also serves STS) or dynalite, behind its front.
pub struct LocalDynamo {
    /// The front (HTTPS, verified), for the binary under test.
    pub endpoint: String,
    /// The emulator itself, for the tests' own clients.
    pub plain: String,
    pub front: front::Front,
    dir: tempfile::TempDir,
}

impl LocalDynamo {
    pub fn start_moto() -> Result<Self> {
        Self::start_with("start-moto")
    }

    pub fn start_dynalite() -> Result<Self> {
        Self::start_with("start-dynalite")
    }

    fn start_with(command: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port_pair();
        let out = Command::new(root().join("scripts/local-dynamodb"))
            .args([command, &port.to_string()])
            .arg(dir.path())
            .stderr(Stdio::inherit())
            .output()
            .context("running scripts/local-dynamodb")?;
        if !out.status.success() {
            bail!(
                "scripts/local-dynamodb {command} failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let plain = format!("http://127.0.0.1:{port}");
        let front = front::Front::start(&plain)?;
        Ok(LocalDynamo {
            endpoint: front.endpoint.clone(),
            plain,
            front,
            dir,
        })
    }

    /// The lease table `name` as distributary reads it.
    pub async fn leases(&self, name: &str) -> Result<Vec<distributary::lease::Lease>> {
        Ok(self.table(name).scan().await?.0)
    }

    /// The lease table `name` through the host's own I/O (to act as a peer would).
    pub fn table(&self, name: &str) -> distributary::lease::LeaseTable {
        // Through a client with the tests' dummy credentials.
        let creds = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests");
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url(&self.plain)
            .credentials_provider(creds)
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(config);
        distributary::lease::LeaseTable::new(client, name.to_string())
    }
}

impl Drop for LocalDynamo {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/local-dynamodb"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

impl Distributary {
    /// Sends a signal by name (`STOP`, `CONT`, ...) without waiting.
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }
}
