//! The lease table's I/O: every read and conditional write the protocol
//! makes (`decide.rs` says which and when). Each write bumps `leaseCounter`
//! and is conditional on the counter the writer last saw, so a write based
//! on a stale view fails instead of overwriting (the fencing token). Only
//! single-item conditional writes are used: no transactions, no index, so
//! any DynamoDB implementation with conditional writes serves.
//!
//! A failed condition is `Ok(None)` (or `Refused` from `renew`), not an
//! error: it is how an instance learns that the lease moved on. Every
//! conditional update asks for the item as it stands when its condition
//! fails (`ReturnValuesOnConditionCheckFailure = ALL_OLD`), so a refused
//! renewal is understood without a second call where the table answers it
//! (DynamoDB, moto; dynalite does not, and then the lease is read).

use super::item::{self, Lease};
use crate::checkpoint::Position;
use anyhow::Context;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The expression attribute names the protocol uses.
const NAMES: [(&str, &str); 9] = [
    ("#k", item::LEASE_KEY),
    ("#o", item::OWNER),
    ("#n", item::COUNTER),
    ("#c", item::CHECKPOINT),
    ("#s", item::SUB_SEQUENCE),
    ("#co", item::CHECKPOINT_OWNER),
    ("#sw", item::OWNER_SWITCHES),
    ("#r", item::RENEWED_MS),
    ("#t", item::START_MS),
];

/// Only the names an expression uses (DynamoDB refuses unused ones).
fn names_in(expressions: &[&str]) -> HashMap<String, String> {
    NAMES
        .iter()
        .filter(|(alias, _)| {
            expressions.iter().any(|e| {
                e.match_indices(alias).any(|(at, _)| {
                    let next = e[at + alias.len()..].chars().next();
                    !next.is_some_and(|c| c.is_ascii_alphanumeric())
                })
            })
        })
        .map(|(alias, name)| (alias.to_string(), name.to_string()))
        .collect()
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The positions a write stores with it, if any.
pub type Positions<'a> = Option<&'a BTreeMap<String, Position>>;

/// What a conditional write did.
#[derive(Debug)]
pub enum Written {
    /// It took effect: the item as written.
    Done(Lease),
    /// Its condition failed: the item as it stood, when the table said so
    /// (None: not answered, or no such item).
    Refused(Option<Lease>),
}

impl Written {
    /// The item as written, if the write took effect.
    fn done(self) -> Option<Lease> {
        match self {
            Written::Done(lease) => Some(lease),
            Written::Refused(_) => None,
        }
    }
}

pub struct LeaseTable {
    client: Client,
    name: String,
}

impl LeaseTable {
    pub fn new(client: Client, name: String) -> Self {
        LeaseTable { client, name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks that the table exists with `leaseKey` (a string) as its hash
    /// key; creates it (on-demand) when missing and `create` allows.
    pub async fn ensure(&self, create: bool) -> anyhow::Result<()> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await;
        match described {
            Ok(out) => {
                let table = out
                    .table
                    .context("DescribeTable answered without a table")?;
                let keys = table.key_schema();
                let is_lease_key = keys.len() == 1
                    && keys[0].attribute_name() == item::LEASE_KEY
                    && keys[0].key_type() == &KeyType::Hash;
                anyhow::ensure!(
                    is_lease_key,
                    "table {} exists but its key is not `{}` (a string hash key)",
                    self.name,
                    item::LEASE_KEY
                );
                return self.wait_active().await;
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) => {}
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot describe table {}: {}",
                    self.name,
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                ));
            }
        }
        anyhow::ensure!(
            create,
            "table {} does not exist (create it with a string hash key `{}`, or set checkpoint.create_table = true)",
            self.name,
            item::LEASE_KEY
        );
        let created = self
            .client
            .create_table()
            .table_name(&self.name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(item::LEASE_KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(item::LEASE_KEY)
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .send()
            .await;
        match created {
            Ok(_) => tracing::info!(table = %self.name, "created the lease table"),
            // Another instance created it first.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot create table {}: {}",
                    self.name,
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                ));
            }
        }
        self.wait_active().await
    }

    async fn wait_active(&self) -> anyhow::Result<()> {
        for _ in 0..120 {
            let out = self
                .client
                .describe_table()
                .table_name(&self.name)
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot describe table {}: {}",
                        self.name,
                        aws_sdk_dynamodb::error::DisplayErrorContext(e)
                    )
                })?;
            let status = out.table.and_then(|t| t.table_status);
            if matches!(status, Some(TableStatus::Active) | None) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::bail!("table {} did not become ACTIVE within 60 s", self.name)
    }

    /// Every lease, and every stored `latest` moment (stream, pipeline, ms).
    pub async fn scan(&self) -> anyhow::Result<(Vec<Lease>, Vec<(String, String, i64)>)> {
        let mut leases = Vec::new();
        let mut starts = Vec::new();
        let mut start_key: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.name)
                .consistent_read(true)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot scan table {}: {}",
                        self.name,
                        aws_sdk_dynamodb::error::DisplayErrorContext(e)
                    )
                })?;
            for it in out.items() {
                if let Some(lease) = item::parse(it) {
                    leases.push(lease);
                } else if let Some(start) = item::parse_start(it) {
                    starts.push(start);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start_key = Some(key),
                _ => break,
            }
        }
        Ok((leases, starts))
    }

    /// One lease, read consistently.
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Lease>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .key(item::LEASE_KEY, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read lease {key} from {}: {}",
                    self.name,
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
        Ok(out.item.as_ref().and_then(item::parse))
    }

    /// The item as it stood when a write on `key` was refused: as the
    /// refusal told (`Written::Refused(Some)`), else read now.
    pub async fn stood(&self, key: &str, told: Option<Lease>) -> anyhow::Result<Option<Lease>> {
        match told {
            Some(lease) => Ok(Some(lease)),
            None => self.get(key).await,
        }
    }

    /// Creates the lease of a shard unless it exists; true if created.
    pub async fn create(
        &self,
        stream: &str,
        shard: &str,
        parents: &[String],
    ) -> anyhow::Result<bool> {
        let key = item::lease_key(stream, shard);
        let mut put = self
            .client
            .put_item()
            .table_name(&self.name)
            .item(item::LEASE_KEY, s(&key))
            .item(item::STREAM, s(stream))
            .item(item::SHARD, s(shard))
            .item(item::COUNTER, n(0))
            .item(item::OWNER_SWITCHES, n(0))
            .condition_expression("attribute_not_exists(#k)")
            .set_expression_attribute_names(Some(names_in(&["#k"])));
        if !parents.is_empty() {
            put = put.item(item::PARENTS, AttributeValue::Ss(parents.to_vec()));
        }
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed_put(&e) => Ok(false),
            Err(e) => Err(anyhow::anyhow!(
                "cannot create lease {key} in {}: {}",
                self.name,
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )),
        }
    }

    /// A conditional UpdateItem answering the item as written, or as it
    /// stood when the condition failed.
    async fn update(
        &self,
        key: &str,
        update: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> anyhow::Result<Written> {
        let out = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(item::LEASE_KEY, s(key))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names_in(&[update, condition])))
            .set_expression_attribute_values(Some(
                values
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(out) => match out.attributes.as_ref().and_then(item::parse) {
                Some(lease) => Ok(Written::Done(lease)),
                None => anyhow::bail!(
                    "UpdateItem of lease {key} in {} answered no lease item",
                    self.name
                ),
            },
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let stood = match e.into_err() {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                        c.item().and_then(item::parse)
                    }
                    _ => None,
                };
                Ok(Written::Refused(stood))
            }
            Err(e) => Err(anyhow::anyhow!(
                "cannot update lease {key} in {}: {}",
                self.name,
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )),
        }
    }

    /// The SET clauses and values that store `positions`.
    fn with_positions(
        set: &mut String,
        values: &mut Vec<(&str, AttributeValue)>,
        positions: Positions<'_>,
    ) {
        if let Some(positions) = positions {
            let (checkpoint, subs) = item::checkpoint_maps(positions);
            set.push_str(", #c = :cp, #s = :sub, #sw = :zero");
            values.push((":cp", checkpoint));
            values.push((":sub", subs));
            values.push((":zero", n(0)));
        }
    }

    /// Renews a lease held at `held`, storing `positions` with it. As the
    /// owner: only while no handoff is under way; as `checkpointOwner`
    /// (draining for a handoff): whoever owns it.
    pub async fn renew(
        &self,
        key: &str,
        held: u64,
        me: &str,
        positions: Positions<'_>,
        draining: bool,
    ) -> anyhow::Result<Written> {
        let mut set = "SET #n = :next, #r = :now".to_string();
        let mut values = vec![
            (":held", n(held)),
            (":next", n(held + 1)),
            (":now", n(now_ms())),
            (":me", s(me)),
        ];
        Self::with_positions(&mut set, &mut values, positions);
        let condition = if draining {
            "#n = :held AND #co = :me"
        } else {
            "#n = :held AND #o = :me AND attribute_not_exists(#co)"
        };
        self.update(key, &set, condition, values).await
    }

    /// Takes a lease seen at `seen` (free, expired, or a stalled handoff).
    pub async fn take(&self, key: &str, seen: u64, me: &str) -> anyhow::Result<Option<Lease>> {
        self.update(
            key,
            "SET #o = :me, #n = :next, #r = :now, #sw = if_not_exists(#sw, :zero) + :one REMOVE #co",
            "#n = :seen",
            vec![
                (":seen", n(seen)),
                (":next", n(seen + 1)),
                (":now", n(now_ms())),
                (":me", s(me)),
                (":zero", n(0)),
                (":one", n(1)),
            ],
        )
        .await
        .map(Written::done)
    }

    /// Starts a handoff: `me` owns the lease, `from` drains it and writes
    /// its final positions.
    pub async fn steal(
        &self,
        key: &str,
        seen: u64,
        from: &str,
        me: &str,
    ) -> anyhow::Result<Option<Lease>> {
        self.update(
            key,
            "SET #o = :me, #co = :from, #n = :next, #r = :now, #sw = if_not_exists(#sw, :zero) + :one",
            "#n = :seen AND #o = :from AND attribute_not_exists(#co)",
            vec![
                (":seen", n(seen)),
                (":next", n(seen + 1)),
                (":now", n(now_ms())),
                (":me", s(me)),
                (":from", s(from)),
                (":zero", n(0)),
                (":one", n(1)),
            ],
        )
        .await
        .map(Written::done)
    }

    /// Ends a handoff from the old owner's side: its final positions, and
    /// `checkpointOwner` cleared so the new owner starts from them.
    pub async fn finish_handoff(
        &self,
        key: &str,
        held: u64,
        me: &str,
        positions: &BTreeMap<String, Position>,
    ) -> anyhow::Result<Written> {
        let mut set = "SET #n = :next, #r = :now".to_string();
        let mut values = vec![
            (":held", n(held)),
            (":next", n(held + 1)),
            (":now", n(now_ms())),
            (":me", s(me)),
        ];
        Self::with_positions(&mut set, &mut values, Some(positions));
        set.push_str(" REMOVE #co");
        self.update(key, &set, "#n = :held AND #co = :me", values)
            .await
    }

    /// Lets a lease go (shutdown, or its shard finished), with its final
    /// positions: peers take it at their next scan, without waiting for expiry.
    pub async fn release(
        &self,
        key: &str,
        held: u64,
        me: &str,
        positions: &BTreeMap<String, Position>,
    ) -> anyhow::Result<Written> {
        let mut set = "SET #n = :next, #r = :now".to_string();
        let mut values = vec![
            (":held", n(held)),
            (":next", n(held + 1)),
            (":now", n(now_ms())),
            (":me", s(me)),
        ];
        Self::with_positions(&mut set, &mut values, Some(positions));
        set.push_str(" REMOVE #o");
        self.update(
            key,
            &set,
            "#n = :held AND #o = :me AND attribute_not_exists(#co)",
            values,
        )
        .await
    }

    /// Stores where `latest` starts for `pipeline` on `stream` unless a
    /// moment is stored already; answers the moment in force.
    pub async fn store_start(&self, stream: &str, pipeline: &str, ms: i64) -> anyhow::Result<i64> {
        let key = item::start_key(stream, pipeline);
        let put = self
            .client
            .put_item()
            .table_name(&self.name)
            .item(item::LEASE_KEY, s(&key))
            .item(item::START_MS, n(ms))
            .condition_expression("attribute_not_exists(#k)")
            .set_expression_attribute_names(Some(names_in(&["#k"])))
            .send()
            .await;
        match put {
            Ok(_) => Ok(ms),
            Err(e) if is_condition_failed_put(&e) => {
                let out = self
                    .client
                    .get_item()
                    .table_name(&self.name)
                    .key(item::LEASE_KEY, s(&key))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "cannot read {key} from {}: {}",
                            self.name,
                            aws_sdk_dynamodb::error::DisplayErrorContext(e)
                        )
                    })?;
                out.item
                    .as_ref()
                    .and_then(item::parse_start)
                    .map(|(_, _, ms)| ms)
                    .with_context(|| format!("{key} in {} has no {}", self.name, item::START_MS))
            }
            Err(e) => Err(anyhow::anyhow!(
                "cannot store {key} in {}: {}",
                self.name,
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )),
        }
    }
}

fn is_condition_failed_put(
    e: &SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError>,
) -> bool {
    e.as_service_error()
        .is_some_and(|e| e.is_conditional_check_failed_exception())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_names_an_expression_uses_are_sent() {
        let names = names_in(&["SET #n = :next REMOVE #co", "#n = :held AND #o = :me"]);
        let mut aliases: Vec<&str> = names.keys().map(String::as_str).collect();
        aliases.sort();
        assert_eq!(
            aliases,
            ["#co", "#n", "#o"],
            "#c is a prefix of #co, not a use"
        );
    }
}
