//! HTTP/1 connections of the direct PutRecords path, each driven by the task
//! that sends a request on it, and kept idle between requests.
//!
//! Why: with hyper-util's pooled client every connection runs in a task of
//! its own, so each answer crosses two tasks (the connection task reads it,
//! a channel hands it to the request's task) and, on a multi-threaded
//! runtime, often wakes a second worker thread. Measured with one record per
//! request, that hop was about a quarter of the CPU of a request. Here the
//! request's own task polls the connection (`hyper::client::conn::http1`)
//! together with the answer, so the socket's readiness wakes the one task
//! that wants the answer.
//!
//! Semantics kept from hyper-util's pool: connections are reused while they
//! are open and ready (a connection the server closed is noticed before
//! reuse and dropped), idle ones are dropped after `IDLE_TIMEOUT`, and a
//! request that a reused connection refused before sending any byte of it
//! is sent again on a new connection (nothing of it reached the service).
//! Any other failure is the caller's to handle (the writer retries only the
//! request's entries).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tower_service::Service;

pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// An idle connection is dropped after this long unused (the service closes
/// idle connections on its side after some time too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many idle connections are kept (one per request in flight
/// at the busiest moment, bounded).
const MAX_IDLE: usize = 256;

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    connection: Connection<Io, Full<Bytes>>,
    since: Instant,
}

/// The connections to one endpoint.
pub struct Connections {
    connector: Connector,
    uri: http::Uri,
    idle: Mutex<Vec<Idle>>,
}

impl Connections {
    pub fn new(connector: Connector, uri: http::Uri) -> Self {
        Connections {
            connector,
            uri,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` and reads its answer whole: the answer's head and body.
    pub async fn send(
        &self,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), String> {
        loop {
            let (mut conn, reused) = match self.take_idle() {
                Some(idle) => (idle, true),
                None => (self.connect().await?, false),
            };
            let answer = conn.sender.try_send_request(request);
            let work = async {
                let response = answer.await?;
                let (head, body) = response.into_parts();
                let body = body
                    .collect()
                    .await
                    .map_err(|e| Refused::Failed(format!("reading the answer: {e}")))?
                    .to_bytes();
                Ok::<_, Refused>((head, body))
            };
            match drive(&mut conn.connection, work).await {
                Ok(answer) => {
                    self.keep(conn);
                    return Ok(answer);
                }
                Err(Refused::Unsent(again)) if reused => request = *again,
                Err(Refused::Unsent(_)) => {
                    return Err("the new connection refused the request".to_string());
                }
                Err(Refused::Failed(e)) => return Err(e),
            }
        }
    }

    /// An open idle connection ready for a request, if one is kept.
    fn take_idle(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut conn) = idle.pop() {
            if conn.since.elapsed() < IDLE_TIMEOUT && still_open(&mut conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request if it can take one.
    fn keep(&self, mut conn: Idle) {
        if !still_open(&mut conn) {
            return;
        }
        conn.since = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|c| c.since.elapsed() < IDLE_TIMEOUT);
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }

    async fn connect(&self) -> Result<Idle, String> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| format!("connecting: {}", super::direct::error_chain(&*e)))?;
        let io = connector
            .call(self.uri.clone())
            .await
            .map_err(|e| format!("connecting: {}", super::direct::error_chain(&*e)))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("connecting: {}", super::direct::error_chain(&e)))?;
        Ok(Idle {
            sender,
            connection,
            since: Instant::now(),
        })
    }
}

/// Why an exchange failed: the request was never sent (given back), or
/// anything after.
enum Refused {
    Unsent(Box<http::Request<Full<Bytes>>>),
    Failed(String),
}

impl From<hyper::client::conn::TrySendError<http::Request<Full<Bytes>>>> for Refused {
    fn from(mut e: hyper::client::conn::TrySendError<http::Request<Full<Bytes>>>) -> Self {
        match e.take_message() {
            Some(request) => Refused::Unsent(Box::new(request)),
            None => Refused::Failed(super::direct::error_chain(e.error())),
        }
    }
}

/// Polls the connection while `work` (the answer) is pending, in this task.
/// Once the connection has ended, `work` ends too (hyper fails what it
/// still owed), so `work` alone is polled from then on.
///
/// The two wake each other (the connection fills the answer's channel, the
/// answer's body asks the connection for more): such wakes, made while this
/// poll runs, are kept here and answered by polling again at once, not
/// handed to the runtime (which would reschedule the task and often wake a
/// second worker thread for it).
async fn drive<T>(
    connection: &mut Connection<Io, Full<Bytes>>,
    work: impl Future<Output = Result<T, Refused>>,
) -> Result<T, Refused> {
    /// Rounds of polling in one poll of the task before the runtime is
    /// asked to poll again (a pair that keeps waking itself yields).
    const ROUNDS: usize = 8;
    let mut work = std::pin::pin!(work);
    let mut ended = false;
    let wakes = Arc::new(Wakes::default());
    let waker = Waker::from(wakes.clone());
    std::future::poll_fn(|cx| {
        wakes.forward_to(cx.waker());
        let mut inner = Context::from_waker(&waker);
        for _ in 0..ROUNDS {
            wakes.polling.store(true, SeqCst);
            wakes.woken.store(false, SeqCst);
            if !ended && Pin::new(&mut *connection).poll(&mut inner).is_ready() {
                ended = true;
            }
            let out = work.as_mut().poll(&mut inner);
            wakes.polling.store(false, SeqCst);
            if out.is_ready() {
                return out;
            }
            if !wakes.woken.swap(false, SeqCst) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// The waker `drive` hands to the connection and the answer: a wake while
/// `drive` polls is noted (`woken`); any other is forwarded to the task.
#[derive(Default)]
struct Wakes {
    polling: AtomicBool,
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wakes {
    fn forward_to(&self, waker: &Waker) {
        if let Ok(mut task) = self.task.lock()
            && !task.as_ref().is_some_and(|t| t.will_wake(waker))
        {
            *task = Some(waker.clone());
        }
    }
}

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // SeqCst: a wake that reads `polling` as true wrote `woken` before
        // `drive` cleared `polling`, so `drive` sees it and polls again.
        self.woken.store(true, SeqCst);
        if !self.polling.load(SeqCst)
            && let Ok(task) = self.task.lock()
            && let Some(task) = task.as_ref()
        {
            task.wake_by_ref();
        }
    }
}

/// Lets the connection notice what arrived while nobody polled it (the
/// server's close, the end of the last answer) and says whether it can take
/// a request now.
fn still_open(conn: &mut Idle) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    if Pin::new(&mut conn.connection).poll(&mut cx).is_ready() {
        return false;
    }
    conn.sender.is_ready()
}
