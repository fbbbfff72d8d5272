//! Reading a source stream (shards and their lineage come from
//! `kinesis::list_shards`): `start` decides where each pipeline starts on a shard (and whether the
//! shard is ready: parents before children) from the stored state,
//! `reader` polls one shard with GetRecords (at the shard's slots in
//! `read_slots`, shared by every reader of it in the process), `efo` reads it through an
//! enhanced fan-out subscription, `coordinator` runs the ready shards and
//! feeds each shard's batches to the pipelines' lanes (`lane`), which
//! checkpoint what they acknowledged; `stats` counts what reading cost.

pub mod coordinator;
pub mod efo;
pub mod lane;
pub mod pipeline_set;
pub mod read_slots;
pub mod reader;
pub mod start;
pub mod stats;

pub use coordinator::SourceRunner;
pub use stats::SourceStats;
