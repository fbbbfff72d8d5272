//! A TCP proxy on 127.0.0.1 that cuts enhanced fan-out subscriptions: it
//! pipes bytes to and from the local Kinesis, and closes a connection a fixed
//! time after a SubscribeToShard request went through it. The reader sees its
//! subscription fail mid-stream, as it does on AWS after a network error or
//! at the 5-minute end, and must subscribe again without a gap or a repeat.

use anyhow::Result;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct CutProxy {
    /// Its front (HTTPS, verified), for the binary under test; the cuts are
    /// between the front and the emulator.
    pub endpoint: String,
    _front: crate::front::Front,
    /// Connections cut so far.
    pub cuts: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CutProxy {
    /// Proxies to `upstream` (`http://127.0.0.1:PORT`), cutting each connection
    /// `after` a SubscribeToShard request was seen on it.
    pub async fn start(upstream: &str, after: Duration) -> Result<CutProxy> {
        let upstream = crate::front::upstream_of(upstream)
            .trim_start_matches("http://")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let front = crate::front::Front::start(&format!("http://{}", listener.local_addr()?))?;
        let cuts = Arc::new(AtomicU64::new(0));
        let counter = cuts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, cuts) = (upstream.clone(), counter.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        pipe(client, server, after, cuts).await;
                    }
                });
            }
        });
        Ok(CutProxy {
            endpoint: front.endpoint.clone(),
            _front: front,
            cuts,
            task,
        })
    }
}

async fn pipe(client: TcpStream, server: TcpStream, after: Duration, cuts: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(false);
    let upstream = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if buf[..n].windows(16).any(|w| w == b"SubscribeToShard") {
                let _ = seen_tx.send(true);
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let cut = async move {
        while !*seen_rx.borrow() {
            if seen_rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        tokio::time::sleep(after).await;
        cuts.fetch_add(1, Ordering::Relaxed);
    };
    // Whichever ends first closes both directions.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut => {}
    }
}
