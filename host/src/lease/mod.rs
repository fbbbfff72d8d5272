//! Scale-out: several instances share the shards of every source through a
//! DynamoDB lease table (`checkpoint.store = "dynamodb"`), in the Kinesis
//! Client Library's lease model (leaderless, with KCL 3's graceful handoff),
//! using only single-item conditional writes. See ARCHITECTURE.md, "The
//! lease protocol", for the protocol and its invariants.
//!
//! - `item.rs`: a lease item and its attributes (KCL's names).
//! - `decide.rs`: pure decisions: expiry by observation, what to take or
//!   steal, what a handoff's new owner does next, why a renewal failed.
//! - `table.rs`: the table's I/O (scan, create, take, renew, steal, finish
//!   handoff, release), each write fenced by `leaseCounter`.
//! - `manager.rs`: `LeaseManager`, the running protocol (renewer, taker,
//!   self-fencing watchdog) and the coordinator's `ShardOwnership`.

mod decide;
mod item;
mod manager;
mod table;

pub use item::{Lease, SHARD_END};
pub use manager::{LeaseManager, LeaseSettings};
pub use table::LeaseTable;

/// A DynamoDB client for the lease table (region and endpoint from the
/// config, else the AWS chain and AWS_ENDPOINT_URL(_DYNAMODB)); one call
/// attempt is bounded well inside the self-fencing margin.
pub async fn client(
    region: Option<&str>,
    endpoint_url: Option<&str>,
    ca_bundle: Option<&std::path::Path>,
    failover: std::time::Duration,
) -> anyhow::Result<aws_sdk_dynamodb::Client> {
    use aws_config::BehaviorVersion;
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    // A renewal sent on time (F/4 after the last, `decide::renewal_interval`)
    // must be answered, or given up on and retried, before the lease's
    // validity ends at F/2: an attempt of F/12 leaves 2F/12 (less the 100 ms
    // retry intervals) for retries when an answer is lost.
    let attempt = (failover / 12).max(std::time::Duration::from_millis(200));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(attempt)
                .operation_attempt_timeout(attempt)
                .operation_timeout(attempt * 2)
                .build(),
        )
        // No retries inside the SDK (its backoff could outlast the margin):
        // the renewer retries every 100 ms itself.
        .retry_config(RetryConfig::standard().with_max_attempts(1));
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    if let Some(http) = crate::tls::sdk_http_client(crate::tls::bundle(ca_bundle).as_deref())? {
        loader = loader.http_client(http);
    }
    let base = loader.load().await;
    let mut builder = aws_sdk_dynamodb::config::Builder::from(&base);
    if let Some(endpoint) = endpoint_url {
        builder = builder.endpoint_url(endpoint);
    }
    Ok(aws_sdk_dynamodb::Client::from_conf(builder.build()))
}

/// This instance's name in the lease table when none is configured:
/// hostname and pid.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "distributary".into());
    format!("{host}-{}", std::process::id())
}
