//! Reading a source stream: `shards` lists shards and their lineage,
//! `reader` polls one shard with GetRecords, `coordinator` decides which
//! shards run (parents before children) and feeds each shard's batches to the
//! pipelines on the source, checkpointing what they acknowledged.

pub mod coordinator;
pub mod lane;
pub mod reader;
pub mod shards;

pub use coordinator::{SourceRunner, SourceStats};
