//! A fault-injecting Kinesis proxy on 127.0.0.1 for the tests: it forwards
//! every call to the real local Kinesis, except that in each PutRecords call
//! it fails a random share of the entries with
//! ProvisionedThroughputExceededException. Failed entries are removed from
//! the request before it is forwarded, so (as with real Kinesis) they are not
//! written; the answer merges the upstream results with the injected failures
//! at their original positions. No emulator produces partial failures itself.
//! It can also reject, as real Kinesis does with a record it finds invalid,
//! any PutRecords call holding a record with given data (400,
//! InvalidArgumentException), which no emulator does on demand either; and
//! leave every call unanswered while it is stalled (`set_stalled`), as a
//! network that drops packets does; and answer every call only after a fixed
//! delay (`set_delay`), as real Kinesis does (10-30 ms a round trip) where
//! the emulators answer in about 1 ms. In front of any other AWS JSON or
//! query API (DynamoDB, STS) it can throttle a share of every call
//! (`set_call_failure_rate`: 400 ProvisionedThroughputExceededException, in
//! the protocol's own error shape), or forward a call and then never answer
//! it (`lose_answers`: the write took effect, its caller cannot know), and
//! it keeps what the tests inspect:
//! each call's Authorization header and the bodies of calls and answers
//! (`seen`).

use anyhow::Result;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct FaultProxy {
    /// Its front (HTTPS, verified): what the binary under test is pointed at.
    pub endpoint: String,
    /// The proxy itself (plain HTTP).
    pub plain: String,
    front: Option<crate::front::Front>,
    fail_rate: Arc<AtomicU64>,
    stalled: Arc<std::sync::atomic::AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    reject_data: Arc<Mutex<Option<Vec<u8>>>>,
    pub injected: Arc<AtomicU64>,
    pub put_calls: Arc<AtomicU64>,
    call_failure_rate: Arc<AtomicU64>,
    /// Calls answered with an injected throttling error.
    pub calls_failed: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
    lost_answers: Arc<Mutex<LostAnswers>>,
    task: tokio::task::JoinHandle<()>,
}

/// Which calls `lose_answers` still withholds the answer of.
#[derive(Default)]
struct LostAnswers {
    /// The API, as the end of the `x-amz-target` header (e.g. `.UpdateItem`).
    target: String,
    remaining: u64,
    /// Answers withheld so far.
    lost: u64,
}

/// One call through the proxy, as the tests inspect it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub authorization: String,
    pub target: String,
    pub body: String,
    pub answer: String,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    upstream: String,
    fail_rate: Arc<AtomicU64>,
    stalled: Arc<std::sync::atomic::AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    reject_data: Arc<Mutex<Option<Vec<u8>>>>,
    client: Client<HttpConnector, Full<Bytes>>,
    injected: Arc<AtomicU64>,
    put_calls: Arc<AtomicU64>,
    call_failure_rate: Arc<AtomicU64>,
    calls_failed: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
    lost_answers: Arc<Mutex<LostAnswers>>,
}

/// At most this many calls are kept for `seen` (the first ones).
const SEEN_KEPT: usize = 2000;

impl FaultProxy {
    /// Changes the share of all calls (any API) answered with a throttling
    /// error instead of being forwarded (0.0 to 1.0).
    pub fn set_call_failure_rate(&self, rate: f64) {
        self.call_failure_rate
            .store(rate.to_bits(), Ordering::Relaxed);
    }

    /// The calls seen so far (the first 2,000).
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Changes the share of PutRecords entries failed from now on (0.0 to 1.0).
    pub fn set_fail_rate(&self, rate: f64) {
        self.fail_rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// From now on, rejects every PutRecords call holding a record whose data is `data`.
    pub fn reject_records_with_data(&self, data: &[u8]) {
        if let Ok(mut reject) = self.reject_data.lock() {
            *reject = Some(data.to_vec());
        }
    }

    /// From now on, every call is answered `delay` later than upstream answers it.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// The next `calls` calls whose `x-amz-target` ends with `target` are
    /// forwarded (they take effect upstream) and then never answered.
    pub fn lose_answers(&self, target: &str, calls: u64) {
        if let Ok(mut lost) = self.lost_answers.lock() {
            lost.target = target.to_string();
            lost.remaining = calls;
        }
    }

    /// How many answers `lose_answers` has withheld so far.
    pub fn answers_lost(&self) -> u64 {
        self.lost_answers.lock().map_or(0, |l| l.lost)
    }

    /// From now on (while `stalled`), takes every call and never answers it.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }

    /// Starts a proxy in front of `upstream` (an emulator, or the front of
    /// one: the proxy then forwards to the emulator), with a front of its own.
    pub async fn start(upstream: &str, fail_rate: f64) -> Result<FaultProxy> {
        Self::start_on(upstream, 0, fail_rate).await
    }

    /// Like `start`, its front on `port` (e.g. a port a test reserved).
    pub async fn start_on(upstream: &str, port: u16, fail_rate: f64) -> Result<FaultProxy> {
        let mut proxy = Self::start_plain_at(upstream, "127.0.0.1:0", fail_rate).await?;
        let front =
            crate::front::Front::start_on(&proxy.plain, crate::front::Certificate::Good, port)?;
        proxy.endpoint = front.endpoint.clone();
        proxy.front = Some(front);
        Ok(proxy)
    }

    /// The proxy alone, plain HTTP on `listen` (the benchmark's program).
    pub async fn start_plain_at(
        upstream: &str,
        listen: &str,
        fail_rate: f64,
    ) -> Result<FaultProxy> {
        let upstream = crate::front::upstream_of(upstream);
        let upstream = upstream.as_str();
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let injected = Arc::new(AtomicU64::new(0));
        let put_calls = Arc::new(AtomicU64::new(0));
        let fail_rate = Arc::new(AtomicU64::new(fail_rate.to_bits()));
        let reject_data = Arc::new(Mutex::new(None));
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let call_failure_rate = Arc::new(AtomicU64::new(0f64.to_bits()));
        let calls_failed = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let lost_answers = Arc::new(Mutex::new(LostAnswers::default()));
        let state = Arc::new(State {
            lost_answers: lost_answers.clone(),
            call_failure_rate: call_failure_rate.clone(),
            calls_failed: calls_failed.clone(),
            seen: seen.clone(),
            delay_ms: delay_ms.clone(),
            upstream: upstream.trim_end_matches('/').to_string(),
            fail_rate: fail_rate.clone(),
            stalled: stalled.clone(),
            reject_data: reject_data.clone(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            injected: injected.clone(),
            put_calls: put_calls.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { handle(state, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FaultProxy {
            plain: endpoint.clone(),
            front: None,
            endpoint,
            fail_rate,
            stalled,
            delay_ms,
            reject_data,
            injected,
            put_calls,
            call_failure_rate,
            calls_failed,
            seen,
            lost_answers,
            task,
        })
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    if state.stalled.load(Ordering::Relaxed) {
        // Never answered: the caller must give up on its own.
        std::future::pending::<()>().await;
    }
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let rate = f64::from_bits(state.call_failure_rate.load(Ordering::Relaxed));
    if rate > 0.0 && fastrand::f64() < rate {
        state.calls_failed.fetch_add(1, Ordering::Relaxed);
        let kind = if target.starts_with("DynamoDB_") {
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
        } else {
            "ProvisionedThroughputExceededException"
        };
        return Ok(error_response_typed(
            400,
            kind,
            "Rate exceeded (injected by the test proxy)",
        ));
    }
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let request_text = String::from_utf8_lossy(&body).into_owned();
    let response = if target.ends_with(".PutRecords")
        && let Ok(request) = serde_json::from_slice::<Value>(&body)
    {
        put_records_with_faults(&state, &parts, request).await
    } else {
        forward(&state, &parts, body).await
    };
    let lose = state.lost_answers.lock().is_ok_and(|mut l| {
        let lose = l.remaining > 0 && !l.target.is_empty() && target.ends_with(&l.target);
        if lose {
            l.remaining -= 1;
            l.lost += 1;
        }
        lose
    });
    if lose {
        // Taken upstream, never answered: the caller must give up on its own.
        std::future::pending::<()>().await;
    }
    let keep = state.seen.lock().is_ok_and(|s| s.len() < SEEN_KEPT);
    if !keep {
        return Ok(response);
    }
    let (response_parts, response_body) = response.into_parts();
    let bytes = response_body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Ok(mut seen) = state.seen.lock() {
        seen.push(Seen {
            authorization,
            target,
            body: request_text,
            answer: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    Ok(Response::from_parts(response_parts, Full::new(bytes)))
}

async fn forward(
    state: &State,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let uri = format!(
        "{}{}",
        state.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut builder = Request::builder().method(parts.method.clone()).uri(uri);
    for (name, value) in &parts.headers {
        if name != "content-length" && name != "host" {
            builder = builder.header(name, value);
        }
    }
    let request = match builder
        .header("content-length", body.len())
        .body(Full::new(body))
    {
        Ok(r) => r,
        Err(e) => return error_response(502, &format!("proxy: {e}")),
    };
    match state.client.request(request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            match body.collect().await {
                Ok(bytes) => Response::from_parts(parts, Full::new(bytes.to_bytes())),
                Err(e) => error_response(502, &format!("proxy: {e}")),
            }
        }
        Err(e) => error_response(502, &format!("proxy: {e}")),
    }
}

async fn put_records_with_faults(
    state: &State,
    parts: &hyper::http::request::Parts,
    mut request: Value,
) -> Response<Full<Bytes>> {
    state.put_calls.fetch_add(1, Ordering::Relaxed);
    let entries = request
        .get("Records")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let reject = state.reject_data.lock().ok().and_then(|r| r.clone());
    if let Some(reject) = reject {
        let holds = entries.iter().any(|e| {
            e.get("Data")
                .and_then(Value::as_str)
                .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                .is_some_and(|d| d == reject)
        });
        if holds {
            return error_response_typed(
                400,
                "InvalidArgumentException",
                "record rejected (injected by the test proxy)",
            );
        }
    }
    let rate = f64::from_bits(state.fail_rate.load(Ordering::Relaxed));
    let fail: Vec<bool> = entries.iter().map(|_| fastrand::f64() < rate).collect();
    let survivors: Vec<Value> = entries
        .iter()
        .zip(&fail)
        .filter(|(_, f)| !**f)
        .map(|(e, _)| e.clone())
        .collect();
    let mut upstream_results: Vec<Value> = Vec::new();
    if !survivors.is_empty() {
        request["Records"] = Value::Array(survivors);
        let body = Bytes::from(request.to_string());
        let response = forward(state, parts, body).await;
        if !response.status().is_success() {
            return response;
        }
        let bytes = match response.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return error_response(502, "proxy: upstream body"),
        };
        let answer: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => return error_response(502, "proxy: upstream answer is not JSON"),
        };
        upstream_results = answer
            .get("Records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
    }
    let mut upstream = upstream_results.into_iter();
    let mut failed_count = 0;
    let records: Vec<Value> = fail
        .iter()
        .map(|&f| {
            if f {
                failed_count += 1;
                json!({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard (injected by the test proxy)"})
            } else {
                let r = upstream.next().unwrap_or(Value::Null);
                if r.get("ErrorCode").is_some() {
                    failed_count += 1;
                }
                r
            }
        })
        .collect();
    state.injected.fetch_add(
        fail.iter().filter(|f| **f).count() as u64,
        Ordering::Relaxed,
    );
    let answer = json!({"FailedRecordCount": failed_count, "Records": records});
    Response::builder()
        .status(200)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap_or_else(|_| error_response(500, "proxy"))
}

fn error_response(status: u16, message: &str) -> Response<Full<Bytes>> {
    error_response_typed(status, "InternalFailure", message)
}

fn error_response_typed(status: u16, kind: &str, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(
        json!({"__type": kind, "message": message}).to_string(),
    )));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    response
}
