//! A small HTTP server on 127.0.0.1 running on a thread and runtime of its
//! own, so that it answers whatever the test's own runtime is doing (a test
//! that blocks in `std::thread::sleep` does not stall the binary's calls).
//! Plain HTTP/1.1, or TLS with HTTP/2 and HTTP/1.1 (ALPN). Stopped when
//! dropped.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::sync::Arc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body: buffered, or streamed from upstream (EFO event streams).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A plain text answer with `status`.
pub fn status(status: u16, text: &str) -> Result<http::Response<Full<Bytes>>> {
    Ok(http::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(text.to_string())))?)
}

pub struct Server {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Server {
    /// Serves plain HTTP/1.1.
    pub fn plain<F, Fut, B>(handler: F) -> Result<Server>
    where
        F: Fn(http::Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<http::Response<B>>> + Send + 'static,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self::serve(None, 0, handler)
    }

    /// Serves TLS (`config` decides the certificate and ALPN) on `port`
    /// (0: any free one).
    pub fn tls<F, Fut, B>(
        config: Arc<rustls::ServerConfig>,
        port: u16,
        handler: F,
    ) -> Result<Server>
    where
        F: Fn(http::Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<http::Response<B>>> + Send + 'static,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self::serve(Some(config), port, handler)
    }

    fn serve<F, Fut, B>(
        tls: Option<Arc<rustls::ServerConfig>>,
        port: u16,
        handler: F,
    ) -> Result<Server>
    where
        F: Fn(http::Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<http::Response<B>>> + Send + 'static,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("binding 127.0.0.1:{port}"))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("front-{port}"))
            .enable_all()
            .build()?;
        let handler = Arc::new(handler);
        std::thread::Builder::new()
            .name(format!("server-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
                    let accept = async {
                        loop {
                            let Ok((tcp, _)) = listener.accept().await else {
                                continue;
                            };
                            let _ = tcp.set_nodelay(true);
                            let handler = handler.clone();
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |req| {
                                    let handler = handler.clone();
                                    async move {
                                        match handler(req).await {
                                            Ok(r) => Ok::<_, std::convert::Infallible>(
                                                r.map(|b| b.map_err(Into::into).boxed_unsync()),
                                            ),
                                            Err(e) => Ok(http::Response::builder()
                                                .status(502)
                                                .body(full(format!("front: {e:#}")))
                                                .unwrap_or_default()),
                                        }
                                    }
                                });
                                let builder = hyper_util::server::conn::auto::Builder::new(
                                    TokioExecutor::new(),
                                );
                                match acceptor {
                                    Some(acceptor) => {
                                        // A refused handshake (the client does not trust
                                        // the certificate) just ends the connection.
                                        if let Ok(tls) = acceptor.accept(tcp).await {
                                            let _ = builder
                                                .serve_connection(TokioIo::new(tls), service)
                                                .await;
                                        }
                                    }
                                    None => {
                                        let _ = builder
                                            .http1_only()
                                            .serve_connection(TokioIo::new(tcp), service)
                                            .await;
                                    }
                                }
                            });
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            })?;
        Ok(Server {
            port,
            stop: Some(stop),
        })
    }
}
