//! Reading a source stream: `shards` lists shards and their lineage,
//! `reader` polls one shard with GetRecords, `efo` reads it through an
//! enhanced fan-out subscription, `coordinator` decides which
//! shards run (parents before children) and feeds each shard's batches to the
//! pipelines on the source, checkpointing what they acknowledged.

pub mod coordinator;
pub mod efo;
pub mod lane;
pub mod reader;
pub mod shards;
pub mod start;

pub use coordinator::{SourceRunner, SourceStats};
