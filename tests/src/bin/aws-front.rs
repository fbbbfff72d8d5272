//! The AWS-shaped front as a program (for `scripts/bench` and by hand):
//! HTTPS with the tests' CA and SigV4 verified (static keys `test`/`test`),
//! before a local emulator.
//!
//!   aws-front LISTEN_PORT UPSTREAM [DELAY_MS]
//!
//! Prints the CA bundle's path (for `AWS_CA_BUNDLE`) on its first line, then
//! runs until killed.

use anyhow::{Result, bail};
use distributary_e2e::front::{Certificate, Front, tls};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        bail!("usage: aws-front LISTEN_PORT UPSTREAM [DELAY_MS]");
    }
    let port: u16 = args[1].parse()?;
    let upstream = &args[2];
    if !upstream.starts_with("http://127.0.0.1:") {
        bail!("aws-front only forwards to a local endpoint (http://127.0.0.1:PORT)");
    }
    let delay: u64 = args.get(3).map_or(Ok(0), |d| d.parse())?;
    let front = Front::start_on(upstream, Certificate::Good, port)?;
    front.set_delay(std::time::Duration::from_millis(delay));
    println!("{}", tls::ca_file()?.display());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
