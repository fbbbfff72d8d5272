//! Output side of the data path: validating routed records against an output's
//! limits, cutting them into PutRecords requests, and writing them with
//! retries of the failed entries only.
//!
//! Invariant (SPEC §6, order): records that share an ordering key (explicit
//! hash key, else partition key) are written in the order given. A request
//! never holds two records with the same ordering key, so a failed entry that
//! is retried can never be overtaken by a later record of its key, whichever
//! entries of a request Kinesis rejects.

pub mod limits;
pub mod writer;

pub use writer::{DeliverError, Delivered, KinesisTransport, OutputWriter, Transport};
