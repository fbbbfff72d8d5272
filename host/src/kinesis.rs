//! Builds the Kinesis clients of sources and outputs: region, endpoint,
//! optional assumed role, and explicit timeouts (the SDK's defaults can hang);
//! stream references, the error classes the callers act on, and ListShards.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_kinesis::Client;
use std::time::Duration;

/// Where and as whom a client talks to Kinesis.
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    /// The CA bundle in force (`tls::bundle`): None trusts the system's roots.
    pub ca_bundle: Option<std::path::PathBuf>,
}

/// How long one attempt of a call may take before it is abandoned.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(6);

/// Builds a client. Transient failures are retried by the callers (forever,
/// with backoff); the SDK's own retries are kept to a few quick attempts.
pub async fn client(settings: &ClientSettings) -> anyhow::Result<Client> {
    Ok(client_and_credentials(settings).await?.0)
}

/// A client, and the credentials provider it signs with (the SDK's chain, or
/// the assumed role), for the calls made without the SDK (`sink/direct.rs`).
pub async fn client_and_credentials(
    settings: &ClientSettings,
) -> anyhow::Result<(Client, Option<SharedCredentialsProvider>)> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .read_timeout(Duration::from_secs(20))
                // A call left unanswered is abandoned after this and tried
                // again, so an outage in which calls hang costs seconds,
                // not the SDK's default. (An EFO subscription's event stream
                // outlives its call: only the initial answer is bounded.)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(ATTEMPT_TIMEOUT * 2 + Duration::from_secs(2))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(2));
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    // The credential providers (STS, the container endpoint) use it too.
    if let Some(http) = crate::tls::sdk_http_client(settings.ca_bundle.as_deref())? {
        loader = loader.http_client(http);
    }
    let base = loader.load().await;
    let mut builder = aws_sdk_kinesis::config::Builder::from(&base);
    if let Some(endpoint) = &settings.endpoint_url {
        builder = builder.endpoint_url(endpoint);
    }
    let mut credentials = base.credentials_provider();
    if let Some(role) = &settings.role_arn {
        let mut provider =
            aws_config::sts::AssumeRoleProvider::builder(role).session_name("distributary");
        if let Some(id) = &settings.external_id {
            provider = provider.external_id(id);
        }
        let assumed = SharedCredentialsProvider::new(provider.configure(&base).build().await);
        builder = builder.credentials_provider(assumed.clone());
        credentials = Some(assumed);
    }
    Ok((Client::from_conf(builder.build()), credentials))
}

/// A stream named by name or ARN, as the Kinesis API wants it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamRef {
    Name(String),
    Arn(String),
}

impl StreamRef {
    pub fn parse(text: &str) -> StreamRef {
        if text.starts_with("arn:") {
            StreamRef::Arn(text.to_string())
        } else {
            StreamRef::Name(text.to_string())
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            StreamRef::Name(n) => Some(n),
            StreamRef::Arn(_) => None,
        }
    }

    pub fn arn(&self) -> Option<&str> {
        match self {
            StreamRef::Arn(a) => Some(a),
            StreamRef::Name(_) => None,
        }
    }

    /// The stream's name (the last segment of an ARN).
    pub fn short_name(&self) -> &str {
        match self {
            StreamRef::Name(n) => n,
            StreamRef::Arn(a) => a.rsplit('/').next().unwrap_or(a),
        }
    }
}

impl std::fmt::Display for StreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamRef::Name(n) | StreamRef::Arn(n) => f.write_str(n),
        }
    }
}

/// What a Kinesis error code means for the call that got it: one table for
/// the SDK path and the direct PutRecords path (`sink/direct.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The stream is gone (ResourceNotFoundException).
    Gone,
    /// The request (or a record in it) can never be accepted.
    Invalid,
    /// Refused for access or encryption reasons: retrying does not help
    /// until someone changes a policy or key.
    Rejected,
    /// Throttling, ExpiredToken, 5xx, KMSThrottling, LimitExceeded, and
    /// codes not known here: worth retrying.
    Transient,
}

pub fn error_class(code: &str) -> ErrorClass {
    match code {
        "ResourceNotFoundException" => ErrorClass::Gone,
        "InvalidArgumentException" | "ValidationException" | "SerializationException" => {
            ErrorClass::Invalid
        }
        "AccessDeniedException"
        | "KMSAccessDeniedException"
        | "KMSDisabledException"
        | "KMSInvalidStateException"
        | "KMSNotFoundException"
        | "KMSOptInRequired"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken" => ErrorClass::Rejected,
        _ => ErrorClass::Transient,
    }
}

/// The error code a failure text starts with (`Code: message`), or
/// `other` when it starts with none (a connection error, a timeout).
pub fn code_of(text: &str) -> &str {
    match text.split_once(':') {
        Some((code, _))
            if !code.is_empty()
                && code.len() <= 64
                && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') =>
        {
            code
        }
        _ => "other",
    }
}

/// Whether a failed PutRecords entry's code means the record itself can
/// never be written as things stand (its stream's KMS key refuses it), so
/// that the pipeline's `on_error` applies, rather than a retry
/// (ProvisionedThroughputExceeded, InternalFailure, KMSThrottling).
pub fn is_undeliverable_entry(code: &str) -> bool {
    code.starts_with("KMS") && error_class(code) == ErrorClass::Rejected
}

/// Whether an SDK error is worth retrying (throttling, 5xx, timeouts, connection
/// loss, a stream not found yet) rather than a request that can never succeed
/// (validation, access).
pub fn is_transient<E, R>(err: &aws_sdk_kinesis::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata,
{
    use aws_sdk_kinesis::error::SdkError;
    match err {
        SdkError::ServiceError(service) => matches!(
            error_class(service.err().code().unwrap_or("")),
            ErrorClass::Transient | ErrorClass::Gone
        ),
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    }
}

/// Whether an SDK error says the request's input is invalid (so, for
/// PutRecords, that some record in it can never be written).
pub fn is_invalid_input<E, R>(err: &aws_sdk_kinesis::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata,
{
    match err {
        aws_sdk_kinesis::error::SdkError::ServiceError(service) => {
            error_class(service.err().code().unwrap_or("")) == ErrorClass::Invalid
        }
        _ => false,
    }
}

/// Whether an SDK error says the stream does not exist (ResourceNotFoundException).
pub fn is_not_found<E, R>(err: &aws_sdk_kinesis::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata,
{
    match err {
        aws_sdk_kinesis::error::SdkError::ServiceError(service) => {
            service.err().code() == Some("ResourceNotFoundException")
        }
        _ => false,
    }
}

/// A one-line description of an SDK error, with the service's code and message.
pub fn describe<E, R>(err: &aws_sdk_kinesis::error::SdkError<E, R>) -> String
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_kinesis::error::{DisplayErrorContext, SdkError};
    match err {
        SdkError::ServiceError(service) => format!(
            "{}: {}",
            service.err().code().unwrap_or("service error"),
            service.err().message().unwrap_or("")
        ),
        other => DisplayErrorContext(other).to_string(),
    }
}

/// One shard as ListShards describes it (used for lineage, and for the
/// shard map of an aggregating output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    /// `ParentShardId` and `AdjacentParentShardId` (after a merge), when present.
    pub parents: Vec<String>,
    /// The shard has an ending sequence number: it was split or merged away.
    pub closed: bool,
    /// Its hash key range (starting, ending), inclusive.
    pub hash_range: Option<(u128, u128)>,
}

/// Every shard of the stream (open and closed, within retention), all pages.
pub async fn list_shards(client: &Client, stream: &StreamRef) -> Result<Vec<ShardInfo>, String> {
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let mut call = client.list_shards().max_results(1000);
        call = match &next_token {
            // With a token, the stream must not be named again.
            Some(token) => call.next_token(token),
            None => call
                .set_stream_name(stream.name().map(str::to_string))
                .set_stream_arn(stream.arn().map(str::to_string)),
        };
        let out = call
            .send()
            .await
            .map_err(|e| format!("ListShards on {stream}: {}", describe(&e)))?;
        for shard in out.shards() {
            let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(str::to_string)
                .collect();
            let closed = shard
                .sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_some();
            let hash_range = shard.hash_key_range().and_then(|r| {
                Some((
                    r.starting_hash_key().parse().ok()?,
                    r.ending_hash_key().parse().ok()?,
                ))
            });
            shards.push(ShardInfo {
                id: shard.shard_id().to_string(),
                parents,
                closed,
                hash_range,
            });
        }
        match out.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
            _ => break,
        }
    }
    Ok(shards)
}
