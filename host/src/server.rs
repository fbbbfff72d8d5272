//! The operator's HTTP endpoints on `[server] listen` (SPEC §3): `/healthz`
//! answers 200 while the process is up (liveness); `/readyz` answers 200 once
//! start-up checks passed, while no pipeline is halted and checkpoints can be
//! written, else 503 with the reason (starting, and what start-up waits for;
//! halted pipelines; the checkpoint write error; shutting down); `/metrics` answers the
//! OpenMetrics text of `metrics.rs` once start-up is done (503 before).
//! Plain HTTP/1.1; bind it to loopback or a private network.

use crate::checkpoint::Checkpoints;
use crate::metrics::render;
use crate::pipeline::Pipeline;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// What `/readyz` reports.
#[derive(Default)]
pub struct Readiness {
    state: Mutex<State>,
    /// What start-up is waiting for (an unreachable endpoint), if anything.
    waiting: Mutex<Option<String>>,
}

#[derive(Default)]
enum State {
    #[default]
    Starting,
    Running(Vec<Arc<Pipeline>>, Arc<Checkpoints>),
    Stopping,
}

impl Readiness {
    pub fn running(&self, pipelines: Vec<Arc<Pipeline>>, checkpoints: Arc<Checkpoints>) {
        if let Ok(mut s) = self.state.lock() {
            *s = State::Running(pipelines, checkpoints);
        }
    }

    /// Sets (or clears) what start-up is waiting for.
    pub fn waiting_for(&self, what: Option<String>) {
        if let Ok(mut w) = self.waiting.lock() {
            *w = what;
        }
    }

    pub fn stopping(&self) {
        if let Ok(mut s) = self.state.lock() {
            *s = State::Stopping;
        }
    }

    /// Ok when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        let state = self
            .state
            .lock()
            .map_err(|_| "state lock poisoned".to_string())?;
        match &*state {
            State::Starting => match self.waiting.lock().ok().and_then(|w| w.clone()) {
                Some(what) => Err(format!("starting: waiting for {what}")),
                None => Err("starting".into()),
            },
            State::Stopping => Err("shutting down".into()),
            State::Running(pipelines, checkpoints) => {
                let mut why = Vec::new();
                let halted: Vec<&str> = pipelines
                    .iter()
                    .filter(|p| p.is_halted())
                    .map(|p| p.name.as_str())
                    .collect();
                if !halted.is_empty() {
                    why.push(format!("halted pipelines: {}", halted.join(", ")));
                }
                if let Some(error) = checkpoints.health().failing() {
                    why.push(format!("checkpoints cannot be written: {error}"));
                }
                if why.is_empty() {
                    Ok(())
                } else {
                    Err(why.join("; "))
                }
            }
        }
    }
}

/// The metrics registry, set once start-up is done.
pub type MetricsSlot = Arc<OnceLock<Registry>>;

/// Binds `listen` and serves until the returned task is aborted.
pub async fn serve(
    listen: SocketAddr,
    readiness: Arc<Readiness>,
    metrics: MetricsSlot,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "serving /healthz, /readyz and /metrics");
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    continue;
                }
            };
            let (readiness, metrics) = (readiness.clone(), metrics.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (readiness, metrics) = (readiness.clone(), metrics.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(answer(&req, &readiness, &metrics))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

fn answer(
    req: &Request<hyper::body::Incoming>,
    readiness: &Readiness,
    metrics: &OnceLock<Registry>,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/metrics" {
        let (status, body) = match metrics.get().map(render) {
            Some(Ok(text)) => (StatusCode::OK, text),
            Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            None => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string()),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if status == StatusCode::OK {
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
        }
        return response;
    }
    let (status, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" => match readiness.check() {
            Ok(()) => (StatusCode::OK, "ready\n".to_string()),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz or /metrics\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
