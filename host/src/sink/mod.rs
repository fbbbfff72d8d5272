//! Output side of the data path, one concern per file (the shape of Vector's
//! `sinks/aws_kinesis`):
//!
//! - `limits.rs`: what one record and one request may hold.
//! - `request.rs`: the output's queue and the ordering rule that packs
//!   requests from it (pure; property-tested).
//! - `reorders.rs`: which records an `ordering = "none"` output wrote after
//!   a newer one of their key (pure; counted by `reordered_total`).
//! - `window.rs`: how many requests may be in flight (AIMD on throttling).
//! - `shard_map.rs`: which shard of the output a record lands in (pure).
//! - `pacing.rs`: per-shard write pacing under the shard quotas, AIMD on
//!   throttled entries, as the KPL does (pure).
//! - `policy.rs`: the retry policy: backoff of failed entries and requests.
//! - `service.rs`: the PutRecords call, behind the `Transport` trait (the
//!   SDK's implementation).
//! - `put_path.rs`: which implementation an output uses (`KinesisPut`).
//! - `direct.rs`: PutRecords signed with `aws-sigv4` and sent with hyper,
//!   without the SDK's per-call machinery (the default path).
//! - `connection.rs`: the direct path's HTTP/1 connections, kept between
//!   requests and driven by the task that sends on them.
//! - `sigv4.rs`: the direct path's signer: the canonical request of its one
//!   request shape, the signing key derived once a day.
//! - `aggregate.rs`: KPL re-packing for `aggregate = true` outputs.
//! - `writer.rs`: `OutputWriter`, which drives them: one per output stream,
//!   shared by every lane that writes to it.
//!
//! Invariant (`ordering = "per_key"`, the default): records that share an
//! ordering key (partition key; for KPL aggregates, the shard they are
//! packed for) and were handed to
//! the writer in an order land in that order. A request never holds two
//! records with the same ordering key, and a key is in at most one request in
//! flight, so a failed entry that is retried can never be overtaken by a
//! later record of its key, whichever entries Kinesis rejects.

pub mod aggregate;
mod connection;
pub mod direct;
pub mod limits;
pub mod pacing;
pub mod policy;
pub mod put_path;
pub mod reorders;
pub mod request;
pub mod service;
pub mod shard_map;
pub mod signing_clock;
pub mod sigv4;
pub mod window;
pub mod writer;

pub use put_path::KinesisPut;
pub use request::Ordering;
pub use service::{Entry, KinesisTransport, Put, PutOutcome, Transport};
pub use writer::{DeliverError, Delivered, OutputWriter};
