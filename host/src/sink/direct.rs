//! PutRecords without the SDK's orchestrator: the request body written in one
//! pass (record data base64-encoded straight from the shared `Bytes`), signed
//! with AWS's `aws-sigv4` crate using the SDK's credential provider, sent
//! with hyper over a pooled connection, and the answer parsed with serde.
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
//! The pure parts (body, answer, error class) are functions tested below.

use super::service::{Entry, PutOutcome, Transport, answered, entry_result};
use crate::kinesis::{ATTEMPT_TIMEOUT, ErrorClass, StreamRef};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_kinesis::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Credentials are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// PutRecords over HTTP, signed here.
pub struct DirectTransport {
    http: HttpClient<Connector, Full<Bytes>>,
    /// The resolved endpoint, e.g. `https://kinesis.us-east-1.amazonaws.com`.
    uri: http::Uri,
    /// `uri` as text, as the signer wants it (computed once).
    uri_text: String,
    host: String,
    region: String,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
}

impl DirectTransport {
    /// A transport for `stream` with the client's region and credentials;
    /// `endpoint_url` overrides the endpoint as for the SDK client.
    pub async fn new(
        client: &aws_sdk_kinesis::Client,
        credentials: SharedCredentialsProvider,
        endpoint_url: Option<String>,
        stream: &StreamRef,
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
        Ok(DirectTransport {
            http: shared_http_client()?,
            uri_text: uri.to_string(),
            uri,
            host,
            region,
            credentials,
            cached: Mutex::new(None),
        })
    }

    async fn credentials(&self) -> Result<Credentials, String> {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|at| at > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
        };
        if let Ok(cached) = self.cached.lock()
            && let Some(c) = cached.as_ref().filter(|c| fresh(c))
        {
            return Ok(c.clone());
        }
        let c = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| format!("cannot load AWS credentials: {e}"))?;
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some(c.clone());
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
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let identity = credentials.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kinesis")
            .time(SystemTime::now())
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
        let mut request = http::Request::post(self.uri.clone())
            .header(http::header::HOST, &self.host)
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .header("x-amz-target", TARGET)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build PutRecords: {e}"))?;
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }

    async fn call(&self, body: Vec<u8>) -> Result<(http::StatusCode, Bytes), String> {
        let credentials = self.credentials().await?;
        let request = self.request(body, credentials)?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| format!("PutRecords: {}", error_chain(&e)))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("PutRecords: reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
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
            Ok(Ok((status, body))) if status.is_success() => answer(&body, entries.len()),
            Ok(Ok((status, body))) => {
                let (code, message) = error_of(&body);
                let outcome = classify(status, &code, &message);
                if code == "ExpiredTokenException" {
                    self.forget_credentials();
                }
                outcome
            }
        }
    }
}

/// One HTTP client (connection pool, TLS roots) for every output of the
/// process: the system's roots are loaded once, not per output.
fn shared_http_client() -> anyhow::Result<HttpClient<Connector, Full<Bytes>>> {
    static CLIENT: std::sync::OnceLock<Result<HttpClient<Connector, Full<Bytes>>, String>> =
        std::sync::OnceLock::new();
    let built = CLIENT.get_or_init(|| {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(3)));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| format!("loading the system's TLS roots: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(HttpClient::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector))
    });
    built.clone().map_err(|e| anyhow::anyhow!(e))
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

#[derive(serde::Deserialize)]
struct Answer {
    #[serde(rename = "Records")]
    records: Vec<AnswerEntry>,
}

#[derive(serde::Deserialize)]
struct AnswerEntry {
    #[serde(rename = "SequenceNumber")]
    sequence: Option<String>,
    #[serde(rename = "ShardId")]
    shard: Option<String>,
    #[serde(rename = "ErrorCode")]
    error_code: Option<String>,
    #[serde(rename = "ErrorMessage")]
    error_message: Option<String>,
}

/// What a successful answer says of each of the `n` entries.
pub fn answer(body: &[u8], n: usize) -> PutOutcome {
    let parsed: Answer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => return PutOutcome::Transient(format!("PutRecords: cannot read the answer: {e}")),
    };
    answered(
        parsed
            .records
            .into_iter()
            .map(|r| {
                entry_result(
                    r.error_code,
                    r.error_message.as_deref(),
                    r.shard,
                    r.sequence,
                )
            })
            .collect(),
        n,
    )
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

fn error_chain(e: &dyn std::error::Error) -> String {
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
    use crate::sink::service::Put;

    fn entry(data: &[u8], key: &str, ehk: Option<&str>) -> Entry {
        Entry {
            data: Bytes::copy_from_slice(data),
            partition_key: key.into(),
            explicit_hash_key: ehk.map(str::to_string),
        }
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
        let PutOutcome::Answered(r) = answer(body, 2) else {
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
        assert!(matches!(answer(body, 3), PutOutcome::Transient(_)));
        assert!(matches!(answer(b"<html>", 1), PutOutcome::Transient(_)));
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
