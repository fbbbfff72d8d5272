//! The quota scenario (`quota_run.rs`) as a benchmark, for `scripts/bench
//! quota`: prints per output its throughput against the quota ceiling and
//! the entries throttled, per source shard the read calls and bytes per
//! second, with per-shard pacing on and off.
//!
//!   quota-bench [RECORDS] [INSTANCES] [RTT_MS] [on|off|both]

use anyhow::Result;
use distributary_e2e::quota_run::{self, Setup};
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| -> Result<u64> {
        Ok(args.get(i).map_or(Ok(default), |a| a.parse())?)
    };
    let records = arg(1, 60_000)? as usize;
    let instances = arg(2, 3)? as usize;
    let rtt = Duration::from_millis(arg(3, 20)?);
    let modes: &[bool] = match args.get(4).map(String::as_str) {
        Some("on") => &[true],
        Some("off") => &[false],
        _ => &[true, false],
    };
    for &pace_writes in modes {
        let setup = Setup {
            records,
            instances,
            rtt,
            pace_writes,
            table_reads: Some(10.0),
            table_writes: Some(20.0),
        };
        let report = quota_run::run(&setup).await?;
        println!(
            "pace_writes = {pace_writes}: {records} × 1 KiB, {instances} instances × 3 pipelines, +{} ms per call, {:.1} s",
            rtt.as_millis(),
            report.seconds
        );
        for line in report.lines() {
            println!("  {line}");
        }
        if !report.faults.is_empty() {
            println!("  OUTPUTS WRONG: {:?}", report.faults);
            std::process::exit(1);
        }
    }
    Ok(())
}
