//! A small Kinesis client for the demo script (local endpoints only):
//!
//!   kinesis-tool ENDPOINT create STREAM SHARDS
//!   kinesis-tool ENDPOINT put STREAM COUNT [KEYS] (JSON records over KEYS partition keys, default 16)
//!   kinesis-tool ENDPOINT count STREAM            (records in the stream)

use anyhow::{Context, Result, bail};
use distributary_e2e::{client_for, create_stream, numbered_records, put_all, read_all};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, command, rest @ ..] = args.as_slice() else {
        bail!(
            "usage: kinesis-tool ENDPOINT (create STREAM SHARDS | put STREAM COUNT | count STREAM)"
        );
    };
    if !endpoint.starts_with("http://127.0.0.1:") {
        bail!("kinesis-tool only talks to a local endpoint (http://127.0.0.1:PORT)");
    }
    let client = client_for(endpoint).await;
    match (command.as_str(), rest) {
        ("create", [stream, shards]) => {
            create_stream(&client, stream, shards.parse().context("SHARDS")?).await
        }
        ("put", [stream, count, keys @ ..]) if keys.len() <= 1 => {
            let keys = keys.first().map_or(Ok(16), |k| k.parse()).context("KEYS")?;
            let records = numbered_records(count.parse().context("COUNT")?, keys, "");
            put_all(&client, stream, &records).await
        }
        ("count", [stream]) => {
            println!("{}", read_all(&client, stream).await?.len());
            Ok(())
        }
        _ => bail!("unknown command {command:?} or wrong arguments"),
    }
}
