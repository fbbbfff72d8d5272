//! The Kinesis Producer Library's aggregated record format, read and written.
//!
//! An aggregated record is the 4 magic bytes `F3 89 9A C2`, a protobuf
//! `AggregatedRecord`, and the 16-byte MD5 of the protobuf bytes (upstream:
//! awslabs/amazon-kinesis-producer, `aggregation-format.md`). Its
//! sub-records keep their own partition key and explicit hash key; Kinesis
//! places the whole aggregate by the outer record's key.
//!
//! - [`deaggregate`]: splits a record read from a source into its sub-records,
//!   or says it is not an aggregate (anything that does not match exactly
//!   passes through unchanged, never an error).
//! - [`aggregate`]: packs records bound for one output shard into aggregates.

pub mod aggregate;
pub mod deaggregate;

pub use deaggregate::deaggregate;

/// The first four bytes of every aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Length of the MD5 trailer.
pub const DIGEST_LEN: usize = 16;

/// The protobuf messages of the format (proto2), as prost types.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AggregatedRecord {
        #[prost(string, repeated, tag = "1")]
        pub partition_key_table: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub explicit_hash_key_table: Vec<String>,
        #[prost(message, repeated, tag = "3")]
        pub records: Vec<Record>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Record {
        #[prost(uint64, required, tag = "1")]
        pub partition_key_index: u64,
        #[prost(uint64, optional, tag = "2")]
        pub explicit_hash_key_index: Option<u64>,
        #[prost(bytes = "vec", required, tag = "3")]
        pub data: Vec<u8>,
        #[prost(message, repeated, tag = "4")]
        pub tags: Vec<Tag>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tag {
        #[prost(string, required, tag = "1")]
        pub key: String,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }
}
