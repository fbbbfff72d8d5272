//! The AWS-shaped front: what real AWS does to a request that no emulator
//! does. It listens on 127.0.0.1 with TLS (a certificate from the tests' own
//! CA, `tls.rs`), verifies every request's SigV4 signature against the
//! credentials it knows (`creds.rs`, `sigv4.rs`), refuses what AWS refuses
//! (unknown key, bad signature, expired or revoked session, a request signed
//! more than 5 minutes off its clock) in the service's own error shape with
//! a `Date` header from its clock, which can be set off by any amount, as a
//! drifting client clock sees it. What passes is forwarded, unchanged
//! (headers, body), to the plain-HTTP emulator behind it (kinesis-local,
//! kinesalite, moto), and the answer is streamed back (an EFO event stream
//! too). STS answers teach it the credentials they hand out.
//!
//! Every end-to-end test reaches the emulators through a front
//! (`LocalKinesis` and `LocalDynamo` start one); the tests' own clients talk
//! to the emulators directly.

pub mod creds;
pub mod quota;
pub mod server;
pub mod sigv4;
pub mod tls;

pub use creds::ContainerCredentials;
pub use quota::{QuotaStats, Quotas};
pub use server::{Body, Server, full, status};
pub use tls::Certificate;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// What a running front counts and how it is set.
#[derive(Default)]
pub struct Control {
    /// The front's clock minus the real one, in seconds.
    skew_secs: AtomicI64,
    /// Added before each call is forwarded (a round trip's worth of distance).
    delay_ms: AtomicU64,
    /// Requests that passed verification, per service.
    verified: Mutex<BTreeMap<String, u64>>,
    /// Requests refused, per error code.
    refused: Mutex<BTreeMap<String, u64>>,
    /// (API, stream): calls of that API naming that stream are refused with
    /// AccessDeniedException, as an IAM policy without the action does.
    denied: Mutex<Option<(String, String)>>,
    /// GetRecords calls still to answer with ExpiredIteratorException
    /// (`expire_iterators`).
    expire: AtomicU64,
    /// The quotas enforced, when set (`enforce`).
    quota: Mutex<Option<quota::Quota>>,
}

impl Control {
    fn now(&self) -> i64 {
        unix_now() + self.skew_secs.load(Ordering::Relaxed)
    }
}

pub struct Front {
    /// `https://localhost:PORT`
    pub endpoint: String,
    pub port: u16,
    control: Arc<Control>,
    _server: Server,
}

/// The upstream each front forwards to, by its endpoint: a proxy that a test
/// puts between the binary and an emulator forwards to the emulator itself
/// and gets a front of its own (`upstream_of`).
fn fronts() -> &'static Mutex<HashMap<String, String>> {
    static FRONTS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    FRONTS.get_or_init(Default::default)
}

/// The plain-HTTP upstream of the front at `endpoint`, or `endpoint` itself
/// when it is no front.
pub fn upstream_of(endpoint: &str) -> String {
    fronts()
        .lock()
        .ok()
        .and_then(|f| f.get(endpoint).cloned())
        .unwrap_or_else(|| endpoint.to_string())
}

impl Front {
    /// A verifying TLS front before `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Result<Front> {
        Self::start_with(upstream, Certificate::Good)
    }

    /// Like `start`, presenting `certificate`.
    pub fn start_with(upstream: &str, certificate: Certificate) -> Result<Front> {
        Self::start_on(upstream, certificate, 0)
    }

    /// Like `start_with`, on `port` (0: any free one).
    pub fn start_on(upstream: &str, certificate: Certificate, port: u16) -> Result<Front> {
        let control = Arc::new(Control::default());
        let state = Arc::new(Forward {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(HttpConnector::new()),
            control: control.clone(),
        });
        let server = Server::tls(tls::server_config(certificate)?, port, move |request| {
            let state = state.clone();
            async move { state.handle(request).await }
        })?;
        let endpoint = format!("https://localhost:{}", server.port);
        if let Ok(mut f) = fronts().lock() {
            f.insert(endpoint.clone(), upstream.to_string());
        }
        Ok(Front {
            endpoint,
            port: server.port,
            control,
            _server: server,
        })
    }

    /// Sets the front's clock `secs` seconds ahead of the real one (behind
    /// if negative): requests signed by a correct clock are then `secs` off.
    pub fn set_skew_secs(&self, secs: i64) {
        self.control.skew_secs.store(secs, Ordering::Relaxed);
    }

    /// Every call waits `delay` before it is forwarded.
    pub fn set_delay(&self, delay: Duration) {
        self.control
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// From now on, refuses `api` calls (e.g. `PutRecords`) on `stream` with
    /// AccessDeniedException; None: the policy is restored.
    pub fn deny(&self, rule: Option<(&str, &str)>) {
        if let Ok(mut d) = self.control.denied.lock() {
            *d = rule.map(|(a, s)| (a.to_string(), s.to_string()));
        }
    }

    /// From now on, enforces `quotas` (see `quota.rs`), counting afresh.
    pub fn enforce(&self, quotas: Quotas) {
        if let Ok(mut q) = self.control.quota.lock() {
            *q = Some(quota::Quota::new(quotas));
        }
    }

    /// Answers the next `calls` GetRecords calls with ExpiredIteratorException,
    /// as Kinesis does for an iterator older than 5 minutes.
    pub fn expire_iterators(&self, calls: u64) {
        self.control.expire.store(calls, Ordering::Relaxed);
    }

    /// What the quotas let through and throttled so far.
    pub fn quota_stats(&self) -> QuotaStats {
        self.control
            .quota
            .lock()
            .ok()
            .and_then(|q| q.as_ref().map(|q| q.stats.clone()))
            .unwrap_or_default()
    }

    /// Requests verified so far, per service (`kinesis`, `dynamodb`, `sts`).
    pub fn verified(&self) -> BTreeMap<String, u64> {
        self.control
            .verified
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Requests refused so far, per error code.
    pub fn refused(&self) -> BTreeMap<String, u64> {
        self.control
            .refused
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Ok(mut f) = fronts().lock() {
            f.remove(&self.endpoint);
        }
    }
}

struct Forward {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    control: Arc<Control>,
}

/// The service a request is for, from its signature's scope or, unsigned,
/// from its target header.
fn service_of(headers: &[(String, String)], auth: Option<&sigv4::Authorization>) -> String {
    if let Some(a) = auth {
        return a.service.clone();
    }
    let target = header(headers, "x-amz-target").unwrap_or_default();
    if target.starts_with("DynamoDB") {
        "dynamodb".into()
    } else if target.starts_with("Kinesis") {
        "kinesis".into()
    } else {
        "sts".into()
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

impl Forward {
    async fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
    ) -> Result<http::Response<Body>> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await?.to_bytes();
        let mut headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if header(&headers, "host").is_none()
            && let Some(authority) = parts.uri.authority()
        {
            // HTTP/2 carries the host as :authority.
            headers.push(("host".into(), authority.to_string()));
        }
        let auth = header(&headers, "authorization").map(sigv4::parse_authorization);
        let service = service_of(&headers, auth.as_ref().and_then(|a| a.as_ref().ok()));
        let verdict = match auth {
            None => Err(sigv4::Refusal::Missing),
            Some(Err(refusal)) => Err(refusal),
            Some(Ok(auth)) => self.verify(&parts, &headers, &body, &auth),
        };
        if let Err(refusal) = verdict {
            let (status, code, message) = refusal.answer(&service);
            if let Ok(mut r) = self.control.refused.lock() {
                *r.entry(code.to_string()).or_default() += 1;
            }
            return self.error(&service, status, code, &message);
        }
        if let Ok(mut v) = self.control.verified.lock() {
            *v.entry(service.clone()).or_default() += 1;
        }
        if let Some(api) = self.denied(&headers, &body) {
            let code = "AccessDeniedException";
            if let Ok(mut r) = self.control.refused.lock() {
                *r.entry(code.to_string()).or_default() += 1;
            }
            let message = format!(
                "User: arn:aws:sts::123456789012:assumed-role/distributary/tests is not authorized to perform: kinesis:{api} because no identity-based policy allows the kinesis:{api} action"
            );
            return self.error(&service, 400, code, &message);
        }
        if header(&headers, "x-amz-target").is_some_and(|t| t.ends_with(".GetRecords"))
            && self
                .control
                .expire
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        {
            let code = "ExpiredIteratorException";
            if let Ok(mut r) = self.control.refused.lock() {
                *r.entry(code.to_string()).or_default() += 1;
            }
            let now = self.control.now() * 1000;
            let message = format!(
                "Iterator expired. The iterator was created at time {} while right now it is {now} which is further in the future than the tolerated delay of 300000 milliseconds.",
                now - 300_001
            );
            return self.error(&service, 400, code, &message);
        }
        let delay = self.control.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let enforcing = self.control.quota.lock().is_ok_and(|q| q.is_some());
        if enforcing && (service == "kinesis" || service == "dynamodb") {
            return self.under_quota(&parts, &headers, &service, body).await;
        }
        let answer = self.forward(&parts, &headers, None, body).await?;
        let (mut answer_parts, answer_body) = answer.into_parts();
        answer_parts
            .headers
            .insert(http::header::DATE, http_date(self.control.now()).parse()?);
        let body = if service == "sts" && answer_parts.status.is_success() {
            let bytes = answer_body.collect().await?.to_bytes();
            creds::learn_from_sts(&String::from_utf8_lossy(&bytes));
            full(bytes)
        } else {
            answer_body.map_err(Into::into).boxed_unsync()
        };
        Ok(http::Response::from_parts(answer_parts, body))
    }

    /// Sends the call to the emulator (with `target` instead of its own
    /// `x-amz-target`, when set).
    async fn forward(
        &self,
        parts: &http::request::Parts,
        headers: &[(String, String)],
        target: Option<&str>,
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>> {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut forward = http::Request::builder()
            .method(parts.method.clone())
            .uri(format!("{}{path}", self.upstream));
        for (name, value) in &parts.headers {
            let name = name.as_str();
            // The body may have been rewritten: hyper sets its length.
            if !is_hop_by_hop(name)
                && name != "content-length"
                && !(target.is_some() && name == "x-amz-target")
            {
                forward = forward.header(name, value);
            }
        }
        if let Some(target) = target {
            forward = forward.header("x-amz-target", target);
        }
        if parts.headers.get(http::header::HOST).is_none()
            && let Some(host) = header(headers, "host")
        {
            forward = forward.header(http::header::HOST, host);
        }
        Ok(self.client.request(forward.body(Full::new(body))?).await?)
    }

    /// A Kinesis or DynamoDB call under quotas (`quota.rs`): refused,
    /// answered, rewritten or forwarded as the quotas say; the answers that
    /// hand out iterators or bytes read are learned from.
    async fn under_quota(
        &self,
        parts: &http::request::Parts,
        headers: &[(String, String)],
        service: &str,
        body: Bytes,
    ) -> Result<http::Response<Body>> {
        let target = header(headers, "x-amz-target")
            .unwrap_or_default()
            .to_string();
        let api = target.rsplit('.').next().unwrap_or_default().to_string();
        let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return self.pass(self.forward(parts, headers, None, body).await?);
        };
        if service == "kinesis" && matches!(api.as_str(), "PutRecords" | "PutRecord") {
            let stream = quota::stream_of(&request).unwrap_or_default();
            let stale = self
                .control
                .quota
                .lock()
                .is_ok_and(|q| q.as_ref().is_some_and(|q| q.needs_map(&stream)));
            if stale {
                let list = serde_json::json!({"StreamName": stream}).to_string();
                let prefix = target
                    .rsplit_once('.')
                    .map_or("Kinesis_20131202", |(p, _)| p);
                let answer = self
                    .forward(
                        parts,
                        headers,
                        Some(&format!("{prefix}.ListShards")),
                        Bytes::from(list),
                    )
                    .await?;
                let bytes = answer.into_body().collect().await?.to_bytes();
                if let Ok(map) = serde_json::from_slice::<serde_json::Value>(&bytes)
                    && let Ok(mut q) = self.control.quota.lock()
                    && let Some(q) = q.as_mut()
                {
                    q.learn_map(&stream, &map);
                }
            }
        }
        let now = std::time::Instant::now();
        let before = {
            let mut q = self
                .control
                .quota
                .lock()
                .map_err(|_| anyhow::anyhow!("quota lock"))?;
            q.as_mut().map(|q| match service {
                "kinesis" => q.kinesis_before(&api, &request, now),
                _ => q.dynamodb_before(&api, &request, now),
            })
        }
        .unwrap_or(quota::Before::Forward);
        let (body, plan) = match before {
            quota::Before::Refuse(status, code, message) => {
                if let Ok(mut r) = self.control.refused.lock() {
                    *r.entry(code.to_string()).or_default() += 1;
                }
                return self.error(service, status, code, &message);
            }
            quota::Before::Answer(answer) => return self.json(200, &answer),
            quota::Before::Rewrite { body, plan } => (Bytes::from(body), Some(plan)),
            quota::Before::Forward => (body, None),
        };
        let learns = plan.is_some() || matches!(api.as_str(), "GetShardIterator" | "GetRecords");
        let answer = self.forward(parts, headers, None, body).await?;
        if !learns || service != "kinesis" {
            return self.pass(answer);
        }
        let (answer_parts, answer_body) = answer.into_parts();
        let bytes = answer_body.collect().await?.to_bytes();
        let status = answer_parts.status.as_u16();
        let Ok(answered) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return self.pass(http::Response::from_parts(answer_parts, full(bytes)));
        };
        if !answer_parts.status.is_success() {
            return self.pass(http::Response::from_parts(answer_parts, full(bytes)));
        }
        if let Some(plan) = plan {
            return self.json(status, &quota::Quota::merge_put(plan, &answered));
        }
        if let Ok(mut q) = self.control.quota.lock()
            && let Some(q) = q.as_mut()
        {
            q.kinesis_after(&api, &request, &answered, std::time::Instant::now());
        }
        self.pass(http::Response::from_parts(answer_parts, full(bytes)))
    }

    /// An emulator's answer, passed back with the front's `Date`.
    fn pass<B>(&self, answer: http::Response<B>) -> Result<http::Response<Body>>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (mut parts, body) = answer.into_parts();
        parts
            .headers
            .insert(http::header::DATE, http_date(self.control.now()).parse()?);
        Ok(http::Response::from_parts(
            parts,
            body.map_err(Into::into).boxed_unsync(),
        ))
    }

    /// A JSON answer of the front's own (Kinesis' content type).
    fn json(&self, status: u16, value: &serde_json::Value) -> Result<http::Response<Body>> {
        Ok(http::Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-requestid", format!("{:032x}", fastrand::u128(..)))
            .header(http::header::DATE, http_date(self.control.now()))
            .body(full(value.to_string()))?)
    }

    /// The API, if a `deny` rule refuses this call.
    fn denied(&self, headers: &[(String, String)], body: &[u8]) -> Option<String> {
        let rule = self.control.denied.lock().ok()?.clone()?;
        let target = header(headers, "x-amz-target")?;
        let named = format!("\"StreamName\":\"{}\"", rule.1);
        let body = String::from_utf8_lossy(body);
        (target.ends_with(&format!(".{}", rule.0)) && body.contains(&named)).then_some(rule.0)
    }

    fn verify(
        &self,
        parts: &http::request::Parts,
        headers: &[(String, String)],
        body: &[u8],
        auth: &sigv4::Authorization,
    ) -> Result<(), sigv4::Refusal> {
        let known = creds::lookup(&auth.access_key).ok_or(sigv4::Refusal::UnknownKey)?;
        if known.token.as_deref() != header(headers, "x-amz-security-token") {
            return Err(sigv4::Refusal::UnknownKey);
        }
        // Expiry is AWS's real time, whatever the front's clock says.
        if known.revoked || known.expires.is_some_and(|e| e <= SystemTime::now()) {
            return Err(sigv4::Refusal::Expired);
        }
        let amz_date = header(headers, "x-amz-date").ok_or_else(|| {
            sigv4::Refusal::Incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into())
        })?;
        let signed_at = sigv4::parse_amz_date(amz_date).ok_or_else(|| {
            sigv4::Refusal::Incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{amz_date}'."
            ))
        })?;
        sigv4::check_skew(signed_at, self.control.now())?;
        let request = sigv4::Signed {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers,
            body,
        };
        sigv4::verify(&request, auth, &known.secret, amz_date)
    }

    fn error(
        &self,
        service: &str,
        status: u16,
        code: &str,
        message: &str,
    ) -> Result<http::Response<Body>> {
        let request_id = format!("{:032x}", fastrand::u128(..));
        let (content_type, body) = match service {
            "sts" => (
                "text/xml",
                format!(
                    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                    message.replace('&', "&amp;").replace('<', "&lt;")
                ),
            ),
            "dynamodb" => (
                "application/x-amz-json-1.0",
                serde_json::json!({"__type": format!("com.amazon.coral.service#{code}"), "message": message}).to_string(),
            ),
            _ => (
                "application/x-amz-json-1.1",
                serde_json::json!({"__type": code, "message": message}).to_string(),
            ),
        };
        Ok(http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("x-amzn-requestid", request_id)
            .header(http::header::DATE, http_date(self.control.now()))
            .body(full(body))?)
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "te" | "proxy-connection"
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An HTTP date (`Sun, 06 Dec 2026 19:00:00 GMT`) of seconds since the epoch.
fn http_date(secs: i64) -> String {
    aws_smithy_types::DateTime::from_secs(secs)
        .fmt(aws_smithy_types::date_time::Format::HttpDate)
        .unwrap_or_default()
}
