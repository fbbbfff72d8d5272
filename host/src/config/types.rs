//! The configuration schema, as serde types. Unknown keys are rejected
//! everywhere (`deny_unknown_fields`); defaults follow SPEC §3.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// After the first SIGINT/SIGTERM, how long the drain may take before
    /// deliveries still in flight are abandoned (not checkpointed; delivered
    /// again after restart). 0: wait for them forever.
    #[serde(default = "default_shutdown_timeout_s")]
    pub shutdown_timeout_s: u64,
    #[serde(default)]
    pub sources: BTreeMap<String, Source>,
    #[serde(default)]
    pub outputs: BTreeMap<String, Output>,
    #[serde(default)]
    pub checkpoint: Checkpoint,
    #[serde(default)]
    pub buffer: Buffer,
    #[serde(default)]
    pub pipelines: Vec<Pipeline>,
    pub server: Option<Server>,
    /// The file this configuration was read from (set by `Config::load`).
    #[serde(skip)]
    pub file: PathBuf,
}

/// `[buffer]`: the process-wide memory budget of records read and not yet
/// acknowledged everywhere (`buffer.rs`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buffer {
    #[serde(default = "default_buffer_max_bytes")]
    pub max_bytes: usize,
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer {
            max_bytes: default_buffer_max_bytes(),
        }
    }
}

fn default_buffer_max_bytes() -> usize {
    256 << 20
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    TrimHorizon,
    Latest,
    AtTimestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReaderKind {
    Polling,
    Efo,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Stream name or ARN.
    pub stream: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// PEM file of the CAs trusted for this source's endpoint (default:
    /// `AWS_CA_BUNDLE`, else the system's roots).
    pub ca_bundle: Option<PathBuf>,
    #[serde(default = "default_start_position")]
    pub start_position: StartPosition,
    /// RFC 3339, with `start_position = "at_timestamp"`.
    pub start_timestamp: Option<String>,
    #[serde(default = "default_reader")]
    pub reader: ReaderKind,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Most records asked for per GetRecords call (Kinesis allows 10,000).
    #[serde(default = "default_max_records_per_read")]
    pub max_records_per_read: i32,
    /// How often the shard list is re-read to find new shards.
    #[serde(default = "default_shard_discovery_interval_s")]
    pub shard_discovery_interval_s: u64,
    #[serde(default = "default_efo_consumer_name")]
    pub efo_consumer_name: String,
    #[serde(default = "default_true")]
    pub deaggregate: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Stream name or ARN.
    pub stream: Option<String>,
    pub stream_pattern: Option<String>,
    #[serde(default = "default_discover_interval_s")]
    pub discover_interval_s: u64,
    pub region: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub endpoint_url: Option<String>,
    /// PEM file of the CAs trusted for this output's endpoint (default:
    /// `AWS_CA_BUNDLE`, else the system's roots).
    pub ca_bundle: Option<PathBuf>,
    #[serde(default)]
    pub aggregate: bool,
    #[serde(default = "default_aggregate_max_bytes")]
    pub aggregate_max_bytes: usize,
    /// Largest record written, data plus partition key. Unset: the stream's
    /// own limit, read at start-up (MaxRecordSizeInKiB; 1 MiB unless raised
    /// with UpdateMaxRecordSize). Set: at most that, and never above the stream's.
    pub max_record_bytes: Option<usize>,
    /// Largest PutRecords request, counted as data plus partition keys (5 MiB).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// PutRecords requests the output may have in flight at once, at most
    /// (the window adapts below it to throttling).
    #[serde(default = "default_max_requests_in_flight")]
    pub max_requests_in_flight: usize,
    /// How the records of one key are ordered: `per_key` (in source order)
    /// or `none` (full requests whatever the keys; reorders counted).
    #[serde(default)]
    pub ordering: crate::sink::Ordering,
    /// Pace writes per shard under Kinesis' write quota (1,000 records/s and
    /// 1 MiB/s per shard; AIMD on throttles). Off only for a
    /// Kinesis-compatible target without those quotas.
    #[serde(default = "default_true")]
    pub pace_writes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    File,
    Dynamodb,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    #[serde(default = "default_store")]
    pub store: StoreKind,
    #[serde(default = "default_checkpoint_path")]
    pub path: PathBuf,
    #[serde(default = "default_table")]
    pub table: String,
    /// How often acknowledged positions are written to the store (the file
    /// store; the lease table stores them with each renewal).
    #[serde(default = "default_checkpoint_interval_ms")]
    pub interval_ms: u64,
    /// dynamodb: the table's region (default: the AWS config chain).
    #[serde(default)]
    pub region: Option<String>,
    /// dynamodb: the table's endpoint (AWS_ENDPOINT_URL(_DYNAMODB) also work).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// dynamodb: PEM file of the CAs trusted for the table's endpoint.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// dynamodb: a lease whose counter has not moved for this long is taken.
    #[serde(default = "default_failover_ms")]
    pub failover_ms: u64,
    /// dynamodb: this instance's name in the lease table (default: hostname + pid).
    #[serde(default)]
    pub instance_id: Option<String>,
    /// dynamodb: create the table (on-demand billing) when it is missing.
    #[serde(default)]
    pub create_table: bool,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            store: default_store(),
            path: default_checkpoint_path(),
            table: default_table(),
            interval_ms: default_checkpoint_interval_ms(),
            region: None,
            endpoint_url: None,
            ca_bundle: None,
            failover_ms: default_failover_ms(),
            instance_id: None,
            create_table: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    DeadLetter,
    Skip,
    Halt,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub name: String,
    pub source: String,
    pub outputs: Vec<String>,
    pub plugin: Option<PathBuf>,
    pub plugin_config: Option<toml::Value>,
    #[serde(default = "default_on_error")]
    pub on_error: OnError,
    pub dead_letter: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    /// Batches per shard this pipeline may hold unprocessed before it is
    /// detached from the shared reader and catches up on its own reader.
    #[serde(default = "default_buffer_batches")]
    pub buffer_batches: usize,
}

impl Pipeline {
    /// `plugin_config` as the JSON text handed to the plugin's `init` (`{}` when unset).
    pub fn plugin_config_json(&self) -> String {
        match &self.plugin_config {
            Some(value) => serde_json::to_string(value).unwrap_or_else(|_| "{}".into()),
            None => "{}".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    #[serde(default = "default_batch_timeout_ms")]
    pub batch_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: default_memory_mb(),
            batch_timeout_ms: default_batch_timeout_ms(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_shutdown_timeout_s() -> u64 {
    20
}
fn default_start_position() -> StartPosition {
    StartPosition::TrimHorizon
}
fn default_reader() -> ReaderKind {
    ReaderKind::Polling
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_max_records_per_read() -> i32 {
    10_000
}
fn default_shard_discovery_interval_s() -> u64 {
    10
}
fn default_efo_consumer_name() -> String {
    "distributary".into()
}
fn default_true() -> bool {
    true
}
fn default_discover_interval_s() -> u64 {
    30
}
fn default_aggregate_max_bytes() -> usize {
    51_200
}
fn default_max_requests_in_flight() -> usize {
    crate::sink::writer::DEFAULT_MAX_REQUESTS_IN_FLIGHT
}
fn default_max_request_bytes() -> usize {
    5 * 1024 * 1024
}
fn default_store() -> StoreKind {
    StoreKind::File
}
fn default_checkpoint_path() -> PathBuf {
    PathBuf::from("./distributary-state")
}
fn default_buffer_batches() -> usize {
    4
}
fn default_table() -> String {
    "distributary-leases".into()
}
fn default_failover_ms() -> u64 {
    10_000
}
fn default_checkpoint_interval_ms() -> u64 {
    200
}
fn default_on_error() -> OnError {
    OnError::Halt
}
fn default_memory_mb() -> u64 {
    64
}
fn default_batch_timeout_ms() -> u64 {
    200
}
fn default_listen() -> String {
    "127.0.0.1:9100".into()
}
