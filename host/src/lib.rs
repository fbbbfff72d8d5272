//! distributary: reads Kinesis streams and delivers every record to N other
//! Kinesis streams, routed by sandboxed WebAssembly plugins.
//!
//! The data path, in the order a record travels it (see ARCHITECTURE.md):
//!
//! - [`config`]: the TOML contract, parsed and validated before anything runs.
//! - [`source`]: shard discovery and lineage (parents before children) and one
//!   polling reader per shard, splitting KPL aggregates ([`kpl`]) into records.
//! - [`pipeline`]: one routing job: a [`router`] (native replication or a
//!   [`plugin`]) and the output writers it may use; processes one shard batch
//!   at a time and settles each record as every output acknowledges it, so
//!   the lane checkpoints the settled prefix.
//! - [`outputs`]: which streams each pipeline writes to now: named outputs
//!   and the streams matching a `stream_pattern`, refreshed while running.
//! - [`sink`]: one writer per output stream, shared by every lane: requests
//!   packed across lanes by the ordering rule, a window of them in flight,
//!   retries of failed entries only.
//! - [`checkpoint`]: acknowledged positions per pipeline and shard, flushed to the store.
//! - [`lease`] and [`ownership`]: several instances share the shards of a
//!   source through a DynamoDB lease table; the coordinator reads only the
//!   shards its store lets it hold.
//! - [`run`]: wires it all together and handles shutdown; [`reload`] applies
//!   a changed configuration file while running (SIGHUP, `--watch-config`);
//!   [`server`] answers
//!   `/healthz`, `/readyz` and `/metrics` ([`metrics`]: per pipeline, plugin,
//!   output and source shard).
//!
//! Off the data path: [`dry_run`] (`distributary route`: a plugin over sample
//! records, offline) and [`status`] (`distributary status`: owner, position
//! and lag per shard and pipeline), and [`scaffold`] (`distributary plugin
//! new`: a plugin project from the embedded templates).
//!
//! Support: [`buffer`] (the memory budget of records read and not yet
//! settled), [`kinesis`] (clients, stream references, error classes),
//! [`backoff`] (capped jittered exponential backoff), [`log_limit`] (one
//! warning per interval in a failure storm), [`record`] (record shapes),
//! [`shutdown`] (the shared stop signal, and the drain's deadline),
//! [`startup`] (start-up calls that wait out an outage).

pub mod backoff;
pub mod buffer;
pub mod checkpoint;
pub mod config;
pub mod dry_run;
pub mod kinesis;
pub mod kpl;
pub mod lease;
pub mod log_limit;
pub mod metrics;
pub mod outputs;
pub mod ownership;
pub mod pipeline;
pub mod plugin;
pub mod record;
pub mod reload;
pub mod router;
pub mod run;
pub mod scaffold;
pub mod server;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod startup;
pub mod status;
pub mod tls;
