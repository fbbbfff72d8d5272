//! Output side of the data path: validating routed records against an output's
//! limits, cutting them into PutRecords requests, and writing them with
//! retries of the failed entries only.
//!
//! `limits.rs` checks records, `request.rs` decides which pending records
//! form the next request, `window.rs` how many requests may be in flight,
//! `writer.rs` sends them and retries what failed.
//!
//! Invariant (SPEC §6, order): records that share an ordering key (explicit
//! hash key, else partition key) are written in the order given. A request
//! takes the first pending record of each key (skipping over later records
//! of keys it holds), never two of one key, and a key is never in flight
//! twice, so a failed entry that is retried can never be overtaken by a
//! later record of its key, whichever entries of a request Kinesis rejects.

pub mod limits;
pub mod request;
pub mod window;
pub mod writer;

pub use writer::{DeliverError, Delivered, KinesisTransport, OutputWriter, Transport};
