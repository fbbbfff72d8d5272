//! The Kinesis PutRecords call, and what became of it, behind the
//! [`Transport`] trait so that the writer's retry and ordering logic is
//! unit-tested with injected failures. The SDK's errors are sorted here into
//! the few outcomes the writer acts on.

use crate::kinesis::{StreamRef, describe, is_invalid_input, is_not_found, is_transient};
use crate::record::OutRecord;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
use std::future::Future;

/// One record of a PutRecords request.
#[derive(Debug, Clone)]
pub struct Entry {
    pub data: Bytes,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
}

impl Entry {
    pub fn of(record: &OutRecord) -> Entry {
        Entry {
            data: record.data.clone(),
            partition_key: record.partition_key.clone(),
            explicit_hash_key: record.explicit_hash_key.clone(),
        }
    }
}

/// Where one entry was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// Shared: the direct path gives every entry of a shard the same name.
    pub shard: std::sync::Arc<str>,
    pub sequence: String,
}

/// What became of one PutRecords call.
#[derive(Debug)]
pub enum PutOutcome {
    /// The call was answered: per entry, where it was written, or the error
    /// code and message.
    Answered(Vec<Result<Put, String>>),
    /// The whole call failed in a way worth retrying.
    Transient(String),
    /// The whole call was rejected as invalid input (InvalidArgumentException,
    /// ValidationException): one of its records can never be written.
    Invalid(String),
    /// The stream does not exist (ResourceNotFoundException): deleted, or not
    /// created yet.
    Gone(String),
    /// The whole call was rejected for a reason that is not about its records
    /// (access denied, KMS, ...) and will be again.
    Rejected(String),
}

/// The PutRecords call.
pub trait Transport: Send + Sync + 'static {
    fn put_records(
        &self,
        stream: &StreamRef,
        entries: Vec<Entry>,
    ) -> impl Future<Output = PutOutcome> + Send;
}

/// PutRecords against a real (or local) Kinesis, through the SDK (the
/// writers use `direct::DirectTransport` unless `put_path::KinesisPut`
/// chooses this one).
pub struct KinesisTransport(pub Client);

impl Transport for KinesisTransport {
    async fn put_records(&self, stream: &StreamRef, entries: Vec<Entry>) -> PutOutcome {
        let n = entries.len();
        let entries: Result<Vec<_>, _> = entries.iter().map(to_entry).collect();
        let entries = match entries {
            Ok(e) => e,
            Err(e) => return PutOutcome::Invalid(e),
        };
        let call = self
            .0
            .put_records()
            .set_stream_name(stream.name().map(str::to_string))
            .set_stream_arn(stream.arn().map(str::to_string))
            .set_records(Some(entries));
        match call.send().await {
            Ok(out) => answered(
                out.records
                    .into_iter()
                    .map(|r| {
                        entry_result(
                            r.error_code,
                            r.error_message.as_deref(),
                            r.shard_id,
                            r.sequence_number,
                        )
                    })
                    .collect(),
                n,
            ),
            Err(err) if is_not_found(&err) => PutOutcome::Gone(describe(&err)),
            Err(err) if is_transient(&err) => PutOutcome::Transient(describe(&err)),
            Err(err) if is_invalid_input(&err) => PutOutcome::Invalid(describe(&err)),
            Err(err) => PutOutcome::Rejected(describe(&err)),
        }
    }
}

/// One entry of a PutRecords answer: where it was written, or its error
/// (`code: message`). Shared by the SDK and the direct path.
pub fn entry_result(
    error_code: Option<String>,
    error_message: Option<&str>,
    shard: Option<String>,
    sequence: Option<String>,
) -> Result<Put, String> {
    match error_code {
        Some(code) => Err(format!("{code}: {}", error_message.unwrap_or(""))),
        None => Ok(Put {
            shard: shard.unwrap_or_default().into(),
            sequence: sequence.unwrap_or_default(),
        }),
    }
}

/// The per-entry results of an answer, which must hold one per entry sent.
pub fn answered(results: Vec<Result<Put, String>>, n: usize) -> PutOutcome {
    if results.len() != n {
        return PutOutcome::Transient(format!(
            "PutRecords answered {} results for {n} entries",
            results.len()
        ));
    }
    PutOutcome::Answered(results)
}

/// The SDK's PutRecords entry of `entry`.
fn to_entry(entry: &Entry) -> Result<PutRecordsRequestEntry, String> {
    PutRecordsRequestEntry::builder()
        .data(Blob::new(entry.data.to_vec()))
        .partition_key(entry.partition_key.clone())
        .set_explicit_hash_key(entry.explicit_hash_key.clone())
        .build()
        .map_err(|e| format!("cannot build the PutRecords entry: {e}"))
}
