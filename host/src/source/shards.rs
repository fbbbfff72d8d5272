//! Shard discovery: ListShards with paging, and each shard's parents, so that
//! children are read only after their parents are read to the end.

use crate::kinesis::{StreamRef, describe};
use aws_sdk_kinesis::Client;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    /// `ParentShardId` and `AdjacentParentShardId` (after a merge), when present.
    pub parents: Vec<String>,
    /// The shard has an ending sequence number: it was split or merged away.
    pub closed: bool,
    /// Its hash key range (starting, ending), inclusive.
    pub hash_range: Option<(u128, u128)>,
}

/// Every shard of the stream (open and closed, within retention), all pages.
pub async fn list_shards(client: &Client, stream: &StreamRef) -> Result<Vec<ShardInfo>, String> {
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let mut call = client.list_shards().max_results(1000);
        call = match &next_token {
            // With a token, the stream must not be named again.
            Some(token) => call.next_token(token),
            None => call
                .set_stream_name(stream.name().map(str::to_string))
                .set_stream_arn(stream.arn().map(str::to_string)),
        };
        let out = call
            .send()
            .await
            .map_err(|e| format!("ListShards on {stream}: {}", describe(&e)))?;
        for shard in out.shards() {
            let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(str::to_string)
                .collect();
            let closed = shard
                .sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_some();
            let hash_range = shard.hash_key_range().and_then(|r| {
                Some((
                    r.starting_hash_key().parse().ok()?,
                    r.ending_hash_key().parse().ok()?,
                ))
            });
            shards.push(ShardInfo {
                id: shard.shard_id().to_string(),
                parents,
                closed,
                hash_range,
            });
        }
        match out.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
            _ => break,
        }
    }
    Ok(shards)
}
