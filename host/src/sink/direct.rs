//! PutRecords without the SDK's orchestrator: the request body written in one
//! pass (record data base64-encoded straight from the shared `Bytes`), signed
//! with AWS's `aws-sigv4` crate using the SDK's credential provider, sent
//! with hyper on a kept connection driven by the sending task
//! (`connection.rs`), and the answer parsed with serde.
//!
//! Why: measured with one record per request, about half of the CPU of a
//! PutRecords through the SDK is its per-call machinery (configuration
//! layering, interceptors, the endpoint resolver, the identity cache), and
//! its serializer copies each record's data and grows its buffer. Only this
//! one hot call goes this way; every other call (ListShards, GetRecords,
//! DescribeStreamSummary, EFO) stays on the SDK. Endpoint resolution (with
//! the account-specific endpoint of a stream ARN) uses the SDK's own rules,
//! once per output. Upstream: the Kinesis JSON protocol
//! (<https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecords.html>)
//! and SigV4 (<https://docs.rs/aws-sigv4>).
//!
//! TLS trusts the roots of `tls.rs` (the output's CA bundle, else the
//! system's), as the SDK's clients do; the signing time is corrected from
//! the service's `Date` header (`signing_clock.rs`), as the SDK does.
//!
//! The pure parts (body, answer, error class, credential refresh) are
//! functions tested below.

use super::connection::{Connections, Connector};
use super::service::{Entry, Put, PutOutcome, Transport, answered};
use super::signing_clock::{SigningClock, is_skew_refusal};
use super::sigv4::Signer;
use crate::kinesis::{ATTEMPT_TIMEOUT, ErrorClass, StreamRef};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_kinesis::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Credentials are fetched again at most this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Whether credentials fetched at `fetched` and expiring at `expiry` should
/// be fetched again at `now`: 5 minutes before they expire, or, for
/// credentials issued for less than 10 minutes (a rotating container
/// endpoint), once half their lifetime has passed, so that every request is
/// signed with credentials that have time left and the provider is not asked
/// on every request.
pub fn needs_refresh(expiry: Option<SystemTime>, fetched: SystemTime, now: SystemTime) -> bool {
    let Some(expiry) = expiry else {
        return false;
    };
    let lifetime = expiry.duration_since(fetched).unwrap_or_default();
    let margin = REFRESH_BEFORE_EXPIRY.min(lifetime / 2);
    now + margin >= expiry
}

/// A skew refusal followed by a correction of at least this much is sent
/// again at once (below it, a signature error is what it says).
const SKEW_CORRECTION: i64 = 4 * 60 * 1000;

/// PutRecords over HTTP, signed here.
pub struct DirectTransport {
    http: Connections,
    /// The resolved endpoint's path and query, the request's target
    /// (origin form: the connection is to the endpoint's host).
    path: http::Uri,
    /// `uri` as text, as the signer wants it (computed once).
    uri_text: String,
    host: String,
    region: String,
    credentials: SharedCredentialsProvider,
    /// The credentials in use and when they were fetched.
    cached: Mutex<Option<(Credentials, SystemTime)>>,
    clock: SigningClock,
    /// Signs requests to the endpoint's root path (`sigv4.rs`, its signing
    /// key kept for the day); None for an endpoint with a path of its own,
    /// signed by `aws-sigv4`'s general signer.
    signer: Option<Mutex<Signer>>,
    shard_names: Mutex<ShardNames>,
}

impl DirectTransport {
    /// A transport for `stream` with the client's region and credentials;
    /// `endpoint_url` overrides the endpoint as for the SDK client.
    pub async fn new(
        client: &aws_sdk_kinesis::Client,
        credentials: SharedCredentialsProvider,
        endpoint_url: Option<String>,
        stream: &StreamRef,
        ca_bundle: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let config = client.config();
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| anyhow::anyhow!("no AWS region configured"))?;
        let params = Params::builder()
            .region(region.clone())
            .set_endpoint(endpoint_url)
            .set_stream_arn(stream.arn().map(str::to_string))
            .operation_type("data")
            .build()
            .map_err(|e| anyhow::anyhow!("resolving the Kinesis endpoint: {e}"))?;
        let endpoint = DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .map_err(|e| anyhow::anyhow!("resolving the Kinesis endpoint: {e}"))?;
        let uri: http::Uri = endpoint
            .url()
            .parse()
            .map_err(|e| anyhow::anyhow!("Kinesis endpoint {}: {e}", endpoint.url()))?;
        let host = match (uri.host(), uri.port_u16()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => anyhow::bail!("Kinesis endpoint {} has no host", endpoint.url()),
        };
        let root = uri.path() == "/" && uri.query().is_none();
        let signer = root.then(|| Mutex::new(Signer::new(&host, &region)));
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| anyhow::anyhow!("Kinesis endpoint {}: {e}", endpoint.url()))?;
        Ok(DirectTransport {
            signer,
            shard_names: Mutex::default(),
            http: Connections::new(shared_connector(ca_bundle)?, uri.clone()),
            uri_text: uri.to_string(),
            path,
            host,
            region,
            credentials,
            cached: Mutex::new(None),
            clock: SigningClock::default(),
        })
    }

    async fn credentials(&self) -> Result<Credentials, String> {
        if let Ok(cached) = self.cached.lock()
            && let Some((c, fetched)) = cached.as_ref()
            && !needs_refresh(c.expiry(), *fetched, SystemTime::now())
        {
            return Ok(c.clone());
        }
        let fetched = SystemTime::now();
        let c = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| format!("cannot load AWS credentials: {e}"))?;
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some((c.clone(), fetched));
        }
        Ok(c)
    }

    fn forget_credentials(&self) {
        if let Ok(mut cached) = self.cached.lock() {
            *cached = None;
        }
    }

    fn request(
        &self,
        body: Vec<u8>,
        credentials: Credentials,
    ) -> Result<http::Request<Full<Bytes>>, String> {
        if let Some(signer) = &self.signer {
            let signed = signer
                .lock()
                .map_err(|_| "cannot sign PutRecords: the signer is poisoned".to_string())?
                .sign(&credentials, self.clock.now(), CONTENT_TYPE, TARGET, &body);
            let mut request = http::Request::post(self.path.clone())
                .header(http::header::HOST, &self.host)
                .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
                .header("x-amz-target", TARGET)
                .header("x-amz-date", signed.amz_date)
                .header(http::header::AUTHORIZATION, signed.authorization);
            if let Some(token) = signed.security_token {
                request = request.header("x-amz-security-token", token);
            }
            return request
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| format!("cannot build PutRecords: {e}"));
        }
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let identity = credentials.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kinesis")
            .time(self.clock.now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("cannot sign PutRecords: {e}"))?
            .into();
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", CONTENT_TYPE),
            ("x-amz-target", TARGET),
        ];
        let signable = SignableRequest::new(
            "POST",
            self.uri_text.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| format!("cannot sign PutRecords: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| format!("cannot sign PutRecords: {e}"))?
            .into_parts();
        let mut request = http::Request::post(self.path.clone())
            .header(http::header::HOST, &self.host)
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .header("x-amz-target", TARGET)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build PutRecords: {e}"))?;
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }

    /// Sends one request; the answer's status and body, and how far its
    /// `Date` header moved the signing clock (ms).
    async fn call(&self, body: Vec<u8>) -> Result<(http::StatusCode, Bytes, i64), String> {
        let credentials = self.credentials().await?;
        let request = self.request(body, credentials)?;
        let sent = SystemTime::now();
        let (head, body) = self
            .http
            .send(request)
            .await
            .map_err(|e| format!("PutRecords to {}: {e}", self.host))?;
        let moved = self.clock.observe(
            sent,
            SystemTime::now(),
            head.headers
                .get(http::header::DATE)
                .and_then(|d| d.to_str().ok()),
        );
        Ok((head.status, body, moved))
    }
}

impl Transport for DirectTransport {
    async fn put_records(&self, stream: &StreamRef, entries: Vec<Entry>) -> PutOutcome {
        let body = encode(stream, &entries);
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.call(body)).await {
            Err(_) => PutOutcome::Transient(format!(
                "PutRecords: no answer within {} s",
                ATTEMPT_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => PutOutcome::Transient(e),
            Ok(Ok((status, body, _))) if status.is_success() => match self.shard_names.lock() {
                Ok(mut shards) => answer(&body, entries.len(), &mut shards),
                Err(_) => PutOutcome::Transient("the shard name table is poisoned".into()),
            },
            Ok(Ok((status, body, moved))) => {
                let (code, message) = error_of(&body);
                if is_skew_refusal(&code, &message) && moved >= SKEW_CORRECTION {
                    tracing::warn!(endpoint = %self.host, skew_ms = self.clock.skew_ms(), "the service's clock differs from this host's; signing with the service's time from now on");
                    return PutOutcome::Transient(format!(
                        "{code}: {message} (signing clock corrected by {} s)",
                        self.clock.skew_ms() / 1000
                    ));
                }
                if refuses_credentials(&code) {
                    // Rotated or revoked: ask the provider again next time.
                    self.forget_credentials();
                }
                classify(status, &code, &message)
            }
        }
    }
}

/// Whether an error code says the credentials themselves were refused.
fn refuses_credentials(code: &str) -> bool {
    matches!(
        code,
        "ExpiredTokenException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignatureException"
    )
}

/// One connector (TLS roots) per CA bundle, shared by every output trusting
/// the same roots: the roots are loaded once, not per output.
fn shared_connector(bundle: Option<&Path>) -> anyhow::Result<Connector> {
    type Connectors = Mutex<Vec<(Option<PathBuf>, Connector)>>;
    static CONNECTORS: std::sync::OnceLock<Connectors> = std::sync::OnceLock::new();
    let connectors = CONNECTORS.get_or_init(Default::default);
    let mut connectors = connectors
        .lock()
        .map_err(|_| anyhow::anyhow!("the connector table is poisoned"))?;
    if let Some((_, connector)) = connectors.iter().find(|(b, _)| b.as_deref() == bundle) {
        return Ok(connector.clone());
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(3)));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls::client_config(bundle)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    connectors.push((bundle.map(Path::to_path_buf), connector.clone()));
    Ok(connector)
}

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
const TARGET: &str = "Kinesis_20131202.PutRecords";

/// The JSON body of PutRecords for `entries`, in one buffer sized up front.
pub fn encode(stream: &StreamRef, entries: &[Entry]) -> Vec<u8> {
    let base64 = &base64_simd::STANDARD;
    let size: usize = entries
        .iter()
        .map(|e| {
            base64.encoded_length(e.data.len())
                + e.partition_key.len()
                + e.explicit_hash_key.as_ref().map_or(0, |k| k.len() + 20)
                + 40
        })
        .sum();
    let mut body = Vec::with_capacity(size + 128);
    match stream {
        StreamRef::Name(_) => body.extend_from_slice(b"{\"StreamName\":"),
        StreamRef::Arn(_) => body.extend_from_slice(b"{\"StreamARN\":"),
    }
    let (StreamRef::Name(s) | StreamRef::Arn(s)) = stream;
    json_string(&mut body, s);
    body.extend_from_slice(b",\"Records\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"Data\":\"");
        base64.encode_append(&e.data, &mut body);
        body.extend_from_slice(b"\",\"PartitionKey\":");
        json_string(&mut body, &e.partition_key);
        if let Some(k) = &e.explicit_hash_key {
            body.extend_from_slice(b",\"ExplicitHashKey\":");
            json_string(&mut body, k);
        }
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    body
}

/// Appends `s` as a JSON string (quoted and escaped).
fn json_string(body: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        body.push(b'"');
        body.extend_from_slice(s.as_bytes());
        body.push(b'"');
    } else {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *body, s);
    }
}

/// An answer, read in place: its strings borrow from the body unless they
/// hold escapes.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<AnswerEntry<'a>>,
}

#[derive(serde::Deserialize)]
struct AnswerEntry<'a> {
    #[serde(rename = "SequenceNumber", borrow)]
    sequence: Option<Cow<'a, str>>,
    #[serde(rename = "ShardId", borrow)]
    shard: Option<Cow<'a, str>>,
    #[serde(rename = "ErrorCode", borrow)]
    error_code: Option<Cow<'a, str>>,
    #[serde(rename = "ErrorMessage", borrow)]
    error_message: Option<Cow<'a, str>>,
}

/// The shard names an output's answers mention, each allocated once and
/// shared by every entry written to it (bounded).
#[derive(Default)]
pub struct ShardNames(HashSet<Arc<str>>);

impl ShardNames {
    const MOST: usize = 4096;

    fn get(&mut self, shard: &str) -> Arc<str> {
        if let Some(known) = self.0.get(shard) {
            return known.clone();
        }
        let name: Arc<str> = shard.into();
        if self.0.len() < Self::MOST {
            self.0.insert(name.clone());
        }
        name
    }
}

/// What a successful answer says of each of the `n` entries.
pub fn answer(body: &[u8], n: usize, shards: &mut ShardNames) -> PutOutcome {
    let parsed: Answer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => return PutOutcome::Transient(format!("PutRecords: cannot read the answer: {e}")),
    };
    let results = parsed
        .records
        .into_iter()
        .map(|r| match r.error_code {
            Some(code) => Err(format!(
                "{code}: {}",
                r.error_message.as_deref().unwrap_or("")
            )),
            None => Ok(Put {
                shard: shards.get(r.shard.as_deref().unwrap_or_default()),
                sequence: r.sequence.map(Cow::into_owned).unwrap_or_default(),
            }),
        })
        .collect();
    answered(results, n)
}

/// The error code and message of an error answer (`__type` may carry a
/// namespace before `#`).
pub fn error_of(body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(rename = "__type")]
        kind: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => {
            let kind = e.kind.unwrap_or_default();
            let code = kind.rsplit('#').next().unwrap_or_default().to_string();
            (code, e.message.unwrap_or_default())
        }
        Err(_) => (
            String::new(),
            String::from_utf8_lossy(body).chars().take(200).collect(),
        ),
    }
}

/// What an error answer means for the writer (as `kinesis::is_transient`
/// and friends do for the SDK's errors).
pub fn classify(status: http::StatusCode, code: &str, message: &str) -> PutOutcome {
    let text = if code.is_empty() {
        format!("HTTP {}: {message}", status.as_u16())
    } else {
        format!("{code}: {message}")
    };
    match crate::kinesis::error_class(code) {
        ErrorClass::Gone => PutOutcome::Gone(text),
        ErrorClass::Invalid => PutOutcome::Invalid(text),
        ErrorClass::Rejected => PutOutcome::Rejected(text),
        ErrorClass::Transient => PutOutcome::Transient(text),
    }
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(data: &[u8], key: &str, ehk: Option<&str>) -> Entry {
        Entry {
            data: Bytes::copy_from_slice(data),
            partition_key: key.into(),
            explicit_hash_key: ehk.map(str::to_string),
        }
    }

    #[test]
    fn credentials_are_fetched_again_before_they_expire_not_on_every_request() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert!(
            !needs_refresh(None, t0, t0 + hour * 100),
            "static keys never"
        );
        // An hour-long session: 5 minutes before it ends.
        assert!(!needs_refresh(
            Some(t0 + hour),
            t0,
            t0 + Duration::from_secs(3299)
        ));
        assert!(needs_refresh(
            Some(t0 + hour),
            t0,
            t0 + Duration::from_secs(3300)
        ));
        // A 90-second credential: after 45 s, not at once and not on every call.
        let short = Some(t0 + Duration::from_secs(90));
        assert!(!needs_refresh(short, t0, t0 + Duration::from_secs(44)));
        assert!(needs_refresh(short, t0, t0 + Duration::from_secs(45)));
        assert!(
            needs_refresh(short, t0, t0 + Duration::from_secs(100)),
            "expired"
        );
    }

    #[test]
    fn the_body_is_the_json_protocol_with_base64_data_and_escaped_keys() {
        let entries = vec![
            entry(b"hello", "k\"1\n", None),
            entry(
                &[0, 255, 7],
                "k2",
                Some("170141183460469231731687303715884105728"),
            ),
            entry(b"", "k3", None),
        ];
        let body = encode(&StreamRef::Name("out".into()), &entries);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["StreamName"], "out");
        let r = v["Records"].as_array().unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0]["Data"], "aGVsbG8=");
        assert_eq!(r[0]["PartitionKey"], "k\"1\n");
        assert!(r[0].get("ExplicitHashKey").is_none());
        assert_eq!(r[1]["Data"], "AP8H");
        assert_eq!(
            r[1]["ExplicitHashKey"],
            "170141183460469231731687303715884105728"
        );
        assert_eq!(r[2]["Data"], "");
        let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/out";
        let body = encode(&StreamRef::Arn(arn.into()), &entries[..1]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["StreamARN"], arn);
        assert!(v.get("StreamName").is_none());
    }

    #[test]
    fn an_answer_gives_each_entry_its_place_or_its_error() {
        let body = br#"{"FailedRecordCount":1,"Records":[
            {"SequenceNumber":"495","ShardId":"shardId-000000000001"},
            {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded"}]}"#;
        let PutOutcome::Answered(r) = answer(body, 2, &mut ShardNames::default()) else {
            panic!("answered")
        };
        assert_eq!(
            r[0],
            Ok(Put {
                shard: "shardId-000000000001".into(),
                sequence: "495".into()
            })
        );
        assert_eq!(
            r[1],
            Err("ProvisionedThroughputExceededException: Rate exceeded".into())
        );
        assert!(matches!(
            answer(body, 3, &mut ShardNames::default()),
            PutOutcome::Transient(_)
        ));
        assert!(matches!(
            answer(b"<html>", 1, &mut ShardNames::default()),
            PutOutcome::Transient(_)
        ));
    }

    #[test]
    fn entries_of_one_shard_share_its_name_and_escaped_strings_are_read() {
        let body = br#"{"Records":[
            {"SequenceNumber":"1","ShardId":"shardId-000000000001"},
            {"SequenceNumber":"2","ShardId":"shardId-000000000001"},
            {"SequenceNumber":"3","ShardId":"shard\u0041"},
            {"ErrorCode":"InternalFailure","ErrorMessage":"a \"quoted\" word"}]}"#;
        let mut names = ShardNames::default();
        let PutOutcome::Answered(r) = answer(body, 4, &mut names) else {
            panic!("answered")
        };
        let (Ok(a), Ok(b), Ok(c)) = (&r[0], &r[1], &r[2]) else {
            panic!("three written: {r:?}")
        };
        assert!(Arc::ptr_eq(&a.shard, &b.shard), "one name, shared");
        assert_eq!((&*c.shard, c.sequence.as_str()), ("shardA", "3"));
        assert_eq!(r[3], Err("InternalFailure: a \"quoted\" word".into()));
        let PutOutcome::Answered(again) = answer(body, 4, &mut names) else {
            panic!("answered")
        };
        let Ok(d) = &again[0] else { panic!("written") };
        assert!(
            Arc::ptr_eq(&a.shard, &d.shard),
            "and kept for later answers"
        );
    }

    #[test]
    fn error_answers_are_sorted_as_the_writer_acts_on_them() {
        let bad = http::StatusCode::BAD_REQUEST;
        let (code, message) = error_of(
            br#"{"__type":"com.amazonaws.kinesis#ResourceNotFoundException","message":"no"}"#,
        );
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("ResourceNotFoundException", "no")
        );
        assert!(matches!(
            classify(bad, &code, &message),
            PutOutcome::Gone(_)
        ));
        let (code, message) = error_of(br#"{"__type":"ValidationException","Message":"too big"}"#);
        assert_eq!(message, "too big");
        assert!(matches!(
            classify(bad, &code, &message),
            PutOutcome::Invalid(_)
        ));
        assert!(matches!(
            classify(bad, "AccessDeniedException", ""),
            PutOutcome::Rejected(_)
        ));
        assert!(matches!(
            classify(bad, "LimitExceededException", ""),
            PutOutcome::Transient(t) if t.starts_with("LimitExceededException")
        ));
        assert!(matches!(
            classify(bad, "ExpiredTokenException", ""),
            PutOutcome::Transient(_)
        ));
        assert!(matches!(
            classify(http::StatusCode::SERVICE_UNAVAILABLE, "", "down"),
            PutOutcome::Transient(_)
        ));
        // As with the SDK: an error without a known code is worth retrying.
        assert!(matches!(
            classify(http::StatusCode::FORBIDDEN, "", ""),
            PutOutcome::Transient(_)
        ));
        assert!(matches!(
            classify(http::StatusCode::TOO_MANY_REQUESTS, "", ""),
            PutOutcome::Transient(_)
        ));
    }
}
