//! The tests' Kinesis proxy as a program, for benchmarks (local endpoints only):
//!
//!   fault-proxy LISTEN_PORT UPSTREAM DELAY_MS [FAIL_RATE]
//!
//! Listens on 127.0.0.1:LISTEN_PORT and forwards to UPSTREAM
//! (http://127.0.0.1:PORT), answering every call DELAY_MS later (a real
//! round trip) and failing FAIL_RATE of PutRecords entries with
//! ProvisionedThroughputExceeded. Runs until killed.

use anyhow::{Context, Result, bail};
use distributary_e2e::fault::FaultProxy;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, upstream, delay, rest @ ..] = args.as_slice() else {
        bail!("usage: fault-proxy LISTEN_PORT UPSTREAM DELAY_MS [FAIL_RATE]");
    };
    if !upstream.starts_with("http://127.0.0.1:") {
        bail!("fault-proxy only forwards to a local endpoint (http://127.0.0.1:PORT)");
    }
    let port: u16 = port.parse().context("LISTEN_PORT")?;
    let rate: f64 = rest
        .first()
        .map_or(Ok(0.0), |r| r.parse())
        .context("FAIL_RATE")?;
    let proxy = FaultProxy::start_plain_at(upstream, &format!("127.0.0.1:{port}"), rate).await?;
    proxy.set_delay(Duration::from_millis(delay.parse().context("DELAY_MS")?));
    println!("{}", proxy.endpoint);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
