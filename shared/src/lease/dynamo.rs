//! The lease store on DynamoDB: the owner of tables `Hosts` (key `host_id`) and `Leases` (key
//! `group_id`, index `by-holder`). Each method is the DynamoDB spelling of one plan's
//! `condition_holds`/`apply` in [`super::protocol`] (or [`super::store::DeletePlan`]); keep the
//! two in step. Conditional writes return the item on success (`ALL_NEW`) and as it stands on
//! a failed condition (`ALL_OLD`), so one request both decides and reports.

use super::host::HostRecord;
use super::protocol::{
    AcquireExpect, AcquirePlan, HeartbeatPlan, IncarnationChangePlan, ReleasePlan, RenewPlan,
    RevokePlan,
};
use super::record::LeaseRecord;
use super::store::{
    BlindDeletePlan, CreateOutcome, DeleteExpect, DeleteOutcome, DeletePlan, GroupDefinition,
    HeartbeatOutcome, LeaseStore, MemberUpdate, PutMode, Reads, ReleaseOutcome, RenewOutcome,
    StoreError, Written,
};
use crate::aws::{decode_keyed, decode_opt_item, is_condition_failure, written_or_current, Item};
use crate::aws::{n, s};
use crate::ids::{GroupId, HostId};
use crate::Millis;
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// The name of the `Leases` index on `holder` (sparse: only held groups).
pub(crate) const BY_HOLDER_INDEX: &str = "by-holder";
/// BatchGetItem's limit.
const BATCH_GET_MAX: usize = 100;
/// Batch reads in flight at once for one call.
const BATCH_GET_CONCURRENCY: usize = 8;
/// Attempts of a transaction that meets a concurrent write of one of its items (a host's
/// heartbeat, typically): `TransactionConflictException` is retried with jitter.
const TRANSACTION_ATTEMPTS: u32 = 4;

/// The `if_not_exists` defaults of every write that can create a host item, so every
/// attribute a condition compares exists.
const HOST_DEFAULTS: &str = "epoch = if_not_exists(epoch, :zero), \
     expires_at_ms = if_not_exists(expires_at_ms, :zero), \
     revoked_at_ms = if_not_exists(revoked_at_ms, :zero), \
     version = if_not_exists(version, :zero) + :one";

/// Where a deployed region's lease tables are.
#[derive(Debug, Clone)]
pub struct DynamoLeaseStore {
    client: Client,
    hosts_table: String,
    leases_table: String,
}

impl DynamoLeaseStore {
    pub fn new(
        client: Client,
        hosts_table: impl Into<String>,
        leases_table: impl Into<String>,
    ) -> Self {
        Self {
            client,
            hosts_table: hosts_table.into(),
            leases_table: leases_table.into(),
        }
    }

    pub fn hosts_table(&self) -> &str {
        &self.hosts_table
    }

    pub fn leases_table(&self) -> &str {
        &self.leases_table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn host_key(host: &HostId) -> Item {
        HashMap::from([("host_id".to_owned(), s(host.as_str()))])
    }

    fn group_key(group: &GroupId) -> Item {
        HashMap::from([("group_id".to_owned(), s(group.as_str()))])
    }

    fn notify_item(
        &self,
        host: &HostId,
        group: &GroupId,
        now: Millis,
    ) -> Result<TransactWriteItem, StoreError> {
        attention_write(&self.hosts_table, host, group, now)
    }

    /// Runs a transaction, retrying conflicts with concurrent writes. `Ok(Err(reasons))` when
    /// a condition failed: per item, the item as it stood if its condition failed.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<Option<Option<Item>>>>, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(Ok(())),
                Err(err) => err,
            };
            if let SdkError::ServiceError(service) = &err {
                if let TransactWriteItemsError::TransactionCanceledException(cancel) = service.err()
                {
                    let reasons: Vec<Option<Option<Item>>> = cancel
                        .cancellation_reasons()
                        .iter()
                        .map(|r| {
                            (r.code() == Some("ConditionalCheckFailed")).then(|| r.item().cloned())
                        })
                        .collect();
                    if reasons.iter().any(Option::is_some) {
                        return Ok(Err(reasons));
                    }
                    let conflict = cancel
                        .cancellation_reasons()
                        .iter()
                        .any(|r| r.code() == Some("TransactionConflict"));
                    if conflict && attempt < TRANSACTION_ATTEMPTS {
                        tokio::time::sleep(jitter(attempt)).await;
                        continue;
                    }
                }
                if service.err().code() == Some("TransactionConflictException")
                    && attempt < TRANSACTION_ATTEMPTS
                {
                    tokio::time::sleep(jitter(attempt)).await;
                    continue;
                }
            }
            return Err(StoreError::from_sdk("TransactWriteItems", err));
        }
    }

    async fn read_chunk(
        &self,
        hosts: Vec<HostId>,
        groups: Vec<GroupId>,
    ) -> Result<Reads, StoreError> {
        let mut request: HashMap<String, KeysAndAttributes> = HashMap::new();
        let keys = |keys: Vec<Item>| {
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| internal("BatchGetItem", e))
        };
        if !hosts.is_empty() {
            request.insert(
                self.hosts_table.clone(),
                keys(hosts.iter().map(Self::host_key).collect())?,
            );
        }
        if !groups.is_empty() {
            request.insert(
                self.leases_table.clone(),
                keys(groups.iter().map(Self::group_key).collect())?,
            );
        }
        let mut reads = Reads::default();
        let mut attempt = 0;
        while !request.is_empty() {
            attempt += 1;
            let out = self
                .client
                .batch_get_item()
                .set_request_items(Some(request))
                .send()
                .await
                .map_err(|e| StoreError::from_sdk("BatchGetItem", e))?;
            for (table, items) in out.responses.unwrap_or_default() {
                for item in items {
                    if table == self.hosts_table {
                        let host: HostRecord = decode_keyed("host_id", item)?;
                        reads.hosts.insert(host.host_id.clone(), host);
                    } else {
                        let group: LeaseRecord = decode_keyed("group_id", item)?;
                        reads.groups.insert(group.group_id.clone(), group);
                    }
                }
            }
            request = out.unprocessed_keys.unwrap_or_default();
            if !request.is_empty() {
                if attempt >= 6 {
                    return Err(StoreError::Unavailable {
                        operation: "BatchGetItem",
                        message: "keys left unprocessed after 6 attempts (throttled)".into(),
                    });
                }
                tokio::time::sleep(jitter(attempt)).await;
            }
        }
        Ok(reads)
    }

    fn scan(
        &self,
        scan: aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder,
    ) -> BoxStream<'static, Result<Item, StoreError>> {
        let pages = scan.into_paginator().items().send();
        Box::pin(futures::stream::unfold(pages, |mut pages| async move {
            let item = pages.next().await?;
            Some((item.map_err(|e| StoreError::from_sdk("Scan", e)), pages))
        }))
    }
}

/// The writes that define a group, for one transaction: the group item (lease, members; never
/// `holder` or `epoch`, so a live grant keeps running and a tombstone's epoch continues) and
/// `ADD attention` on every member, so each reads the group at its next poll. The store's
/// `put_group` and the IRC's `group.put` (inside the remote's idempotency transaction) both
/// write through this, so the `Leases` table's expressions live in this module alone.
pub(crate) fn group_definition_writes(
    leases_table: &str,
    hosts_table: &str,
    definition: &GroupDefinition,
    mode: PutMode,
    now: Millis,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    let members =
        serde_dynamo::to_attribute_value(&definition.members).map_err(|e| StoreError::Corrupt {
            item: definition.group_id.to_string(),
            reason: e.to_string(),
        })?;
    let free_since = match mode {
        PutMode::Create => ":now",
        PutMode::Upsert => "if_not_exists(free_since_ms, :now)",
    };
    let mut put = Update::builder()
        .table_name(leases_table)
        .set_key(Some(DynamoLeaseStore::group_key(&definition.group_id)))
        .update_expression(format!(
            "SET lease_ms = :lease, members = :members, updated_at_ms = :now, \
             free_since_ms = {free_since}, epoch = if_not_exists(epoch, :zero), \
             expires_at_ms = if_not_exists(expires_at_ms, :zero), \
             version = if_not_exists(version, :zero) + :one REMOVE deleted"
        ))
        .expression_attribute_values(":lease", n(definition.lease_ms))
        .expression_attribute_values(":members", members)
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":one", n(1));
    if mode == PutMode::Create {
        put = put
            .condition_expression("attribute_not_exists(group_id) OR deleted = :true")
            .expression_attribute_values(":true", AttributeValue::Bool(true));
    }
    let put = put.build().map_err(|e| internal("Update", e))?;
    let mut items = vec![TransactWriteItem::builder().update(put).build()];
    for host in definition.members.keys() {
        items.push(attention_write(
            hosts_table,
            host,
            &definition.group_id,
            now,
        )?);
    }
    Ok(items)
}

/// A group's tombstone (see [`DeletePlan`]): the item stays, with its epoch, so a group created
/// again continues from it and a fence never sees an epoch go back.
const TOMBSTONE: &str = "SET deleted = :true, updated_at_ms = :now, \
     version = if_not_exists(version, :zero) + :one REMOVE holder, holder_host_epoch, members";

fn tombstone_values(now: Millis) -> Item {
    HashMap::from([
        (":true".to_owned(), AttributeValue::Bool(true)),
        (":now".to_owned(), n(now)),
        (":zero".to_owned(), n(0)),
        (":one".to_owned(), n(1)),
    ])
}

/// [`DeletePlan::condition_holds`] spelt for DynamoDB, with its values.
fn delete_condition(plan: &DeletePlan) -> (String, Item) {
    let mut values = tombstone_values(plan.now);
    values.insert(":seen".to_owned(), n(plan.seen_epoch.0));
    let mut condition = String::from(
        "attribute_exists(group_id) AND attribute_not_exists(deleted) AND epoch = :seen",
    );
    match plan.expect {
        DeleteExpect::Free => condition.push_str(" AND attribute_not_exists(holder)"),
        DeleteExpect::RevokedGrant(hhe) => {
            condition.push_str(" AND holder_host_epoch = :hhe");
            values.insert(":hhe".to_owned(), n(hhe.0));
        }
        DeleteExpect::V1Lapsed { not_after_ms } => {
            condition.push_str(
                " AND attribute_not_exists(holder_host_epoch) AND expires_at_ms < :not_after",
            );
            values.insert(":not_after".to_owned(), n(not_after_ms));
        }
    }
    (condition, values)
}

/// [`BlindDeletePlan::condition_holds`] spelt for DynamoDB.
pub(crate) const BLIND_DELETE_CONDITION: &str = "attribute_exists(group_id) AND attribute_not_exists(deleted) \
     AND (attribute_not_exists(holder) OR (attribute_not_exists(holder_host_epoch) AND expires_at_ms < :not_after))";

/// The IRC's `group.delete` as one transaction item (see [`BlindDeletePlan`]).
pub(crate) fn blind_delete_write(
    leases_table: &str,
    group: &GroupId,
    plan: &BlindDeletePlan,
) -> Result<TransactWriteItem, StoreError> {
    let mut values = tombstone_values(plan.now);
    values.insert(":not_after".to_owned(), n(plan.not_after_ms));
    let update = Update::builder()
        .table_name(leases_table)
        .set_key(Some(DynamoLeaseStore::group_key(group)))
        .update_expression(TOMBSTONE)
        .condition_expression(BLIND_DELETE_CONDITION)
        .set_expression_attribute_values(Some(values))
        .build()
        .map_err(|e| internal("Update", e))?;
    Ok(TransactWriteItem::builder().update(update).build())
}

/// `ADD attention :g` on a host item (with the host defaults), as one transaction item: how a
/// change that a host must react to quickly reaches it at its next poll.
pub(crate) fn attention_write(
    hosts_table: &str,
    host: &HostId,
    group: &GroupId,
    now: Millis,
) -> Result<TransactWriteItem, StoreError> {
    let update = Update::builder()
        .table_name(hosts_table)
        .set_key(Some(DynamoLeaseStore::host_key(host)))
        .update_expression(format!(
            "ADD attention :g SET updated_at_ms = :now, {HOST_DEFAULTS}"
        ))
        .expression_attribute_values(":g", AttributeValue::Ss(vec![group.to_string()]))
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":one", n(1))
        .build()
        .map_err(|e| internal("Update", e))?;
    Ok(TransactWriteItem::builder().update(update).build())
}

fn internal(operation: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        operation,
        message: format!("request could not be built: {e}"),
    }
}

/// Full jitter over an exponential step: 10, 20, 40 ms ... ceilings.
fn jitter(attempt: u32) -> Duration {
    let ceiling = 10u64 << attempt.min(6);
    Duration::from_millis(rand::random_range(1..=ceiling))
}

fn host_written(
    host: &HostId,
    result: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError, impl std::fmt::Debug>,
    >,
) -> Result<Written<HostRecord>, StoreError> {
    Ok(
        match written_or_current(host.as_str(), "UpdateItem", result)? {
            Ok(Some(record)) => Written::Done(record),
            Ok(None) => {
                return Err(StoreError::Corrupt {
                    item: host.to_string(),
                    reason: "UpdateItem returned no attributes".into(),
                })
            }
            Err(current) => Written::LostRace(current),
        },
    )
}

fn group_written(
    group: &GroupId,
    result: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError, impl std::fmt::Debug>,
    >,
) -> Result<Written<LeaseRecord>, StoreError> {
    Ok(
        match written_or_current(group.as_str(), "UpdateItem", result)? {
            Ok(Some(record)) => Written::Done(record),
            Ok(None) => {
                return Err(StoreError::Corrupt {
                    item: group.to_string(),
                    reason: "UpdateItem returned no attributes".into(),
                })
            }
            Err(current) => Written::LostRace(current),
        },
    )
}

#[async_trait]
impl LeaseStore for DynamoLeaseStore {
    async fn read(&self, hosts: &[HostId], groups: &[GroupId]) -> Result<Reads, StoreError> {
        let hosts: BTreeSet<&HostId> = hosts.iter().collect();
        let groups: BTreeSet<&GroupId> = groups.iter().collect();
        let mut keys: Vec<(Option<HostId>, Option<GroupId>)> =
            hosts.into_iter().map(|h| (Some(h.clone()), None)).collect();
        keys.extend(groups.into_iter().map(|g| (None, Some(g.clone()))));
        if keys.is_empty() {
            return Ok(Reads::default());
        }
        let chunks: Vec<(Vec<HostId>, Vec<GroupId>)> = keys
            .chunks(BATCH_GET_MAX)
            .map(|chunk| {
                (
                    chunk.iter().filter_map(|(h, _)| h.clone()).collect(),
                    chunk.iter().filter_map(|(_, g)| g.clone()).collect(),
                )
            })
            .collect();
        let mut reads = Reads::default();
        let mut results = futures::stream::iter(chunks)
            .map(|(h, g)| self.read_chunk(h, g))
            .buffer_unordered(BATCH_GET_CONCURRENCY);
        while let Some(chunk) = results.next().await {
            let chunk = chunk?;
            reads.hosts.extend(chunk.hosts);
            reads.groups.extend(chunk.groups);
        }
        Ok(reads)
    }

    async fn heartbeat(&self, plan: &HeartbeatPlan) -> Result<HeartbeatOutcome, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.hosts_table)
            .set_key(Some(Self::host_key(&plan.host)))
            .update_expression(format!(
                "SET last_seen_ms = :now, healthy = :ok, incarnation = :inc, {HOST_DEFAULTS}"
            ))
            .condition_expression("attribute_not_exists(incarnation) OR incarnation = :inc")
            .expression_attribute_values(":now", n(plan.now))
            .expression_attribute_values(":ok", AttributeValue::Bool(plan.healthy))
            .expression_attribute_values(":inc", s(plan.incarnation.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        Ok(match host_written(&plan.host, result)? {
            Written::Done(record) => HeartbeatOutcome::Recorded(record),
            Written::LostRace(current) => HeartbeatOutcome::OtherIncarnation(
                current.unwrap_or_else(|| HostRecord::absent(plan.host.clone())),
            ),
        })
    }

    async fn change_incarnation(
        &self,
        plan: &IncarnationChangePlan,
    ) -> Result<Written<HostRecord>, StoreError> {
        let hb = &plan.heartbeat;
        let result = self
            .client
            .update_item()
            .table_name(&self.hosts_table)
            .set_key(Some(Self::host_key(&hb.host)))
            .update_expression(format!(
                "SET last_seen_ms = :now, healthy = :ok, incarnation = :inc, \
                 incarnation_changed = :now, {HOST_DEFAULTS}"
            ))
            .condition_expression("incarnation = :recorded")
            .expression_attribute_values(":now", n(hb.now))
            .expression_attribute_values(":ok", AttributeValue::Bool(hb.healthy))
            .expression_attribute_values(":inc", s(hb.incarnation.as_str()))
            .expression_attribute_values(":recorded", s(plan.recorded.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        host_written(&hb.host, result)
    }

    async fn renew(&self, plan: &RenewPlan) -> Result<RenewOutcome, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.hosts_table)
            .set_key(Some(Self::host_key(&plan.host)))
            .update_expression(
                "SET expires_at_ms = :new, updated_at_ms = :now, version = version + :one",
            )
            .condition_expression(
                "epoch = :e AND expires_at_ms < :new AND healthy = :true \
                 AND last_seen_ms > revoked_at_ms AND attribute_not_exists(incarnation_changed)",
            )
            .expression_attribute_values(":new", n(plan.new_expires_at_ms))
            .expression_attribute_values(":now", n(plan.now))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":e", n(plan.epoch.0))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .send()
            .await;
        match result {
            Ok(_) => Ok(RenewOutcome::Renewed {
                expires_at_ms: plan.new_expires_at_ms,
            }),
            Err(err) if is_condition_failure(&err) => Ok(RenewOutcome::LostRace),
            Err(err) => Err(StoreError::from_sdk("UpdateItem", err)),
        }
    }

    async fn revoke(&self, plan: &RevokePlan) -> Result<Written<HostRecord>, StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.hosts_table)
            .set_key(Some(Self::host_key(&plan.host)))
            .update_expression(
                "SET epoch = if_not_exists(epoch, :zero) + :one, revoked_at_ms = :now, \
                 updated_at_ms = :now, expires_at_ms = if_not_exists(expires_at_ms, :zero), \
                 last_seen_ms = if_not_exists(last_seen_ms, :zero), \
                 version = if_not_exists(version, :zero) + :one \
                 REMOVE incarnation_changed",
            )
            .expression_attribute_values(":now", n(plan.now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1));
        update = if plan.seen_absent {
            update.condition_expression("attribute_not_exists(host_id)")
        } else {
            update
                .condition_expression("epoch = :e AND expires_at_ms < :not_after")
                .expression_attribute_values(":e", n(plan.seen_epoch.0))
                .expression_attribute_values(":not_after", n(plan.not_after_ms))
        };
        let result = update
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        host_written(&plan.host, result)
    }

    async fn consume_attention(
        &self,
        host: &HostId,
        ids: &BTreeSet<GroupId>,
        now: Millis,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client
            .update_item()
            .table_name(&self.hosts_table)
            .set_key(Some(Self::host_key(host)))
            .update_expression(format!(
                "DELETE attention :ids SET updated_at_ms = :now, {HOST_DEFAULTS}"
            ))
            .expression_attribute_values(
                ":ids",
                AttributeValue::Ss(ids.iter().map(|g| g.to_string()).collect()),
            )
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("UpdateItem", e))?;
        Ok(())
    }

    async fn acquire(
        &self,
        group: &GroupId,
        plan: &AcquirePlan,
    ) -> Result<Written<LeaseRecord>, StoreError> {
        let mut condition = String::from("attribute_exists(members.#h) AND epoch = :seen");
        let mut update = self
            .client
            .update_item()
            .table_name(&self.leases_table)
            .set_key(Some(Self::group_key(group)))
            .update_expression(
                "SET holder = :h, holder_host_epoch = :eh, epoch = epoch + :one, \
                 updated_at_ms = :now, version = if_not_exists(version, :zero) + :one",
            )
            .expression_attribute_names("#h", plan.host.as_str())
            .expression_attribute_values(":h", s(plan.host.as_str()))
            .expression_attribute_values(":eh", n(plan.host_epoch.0))
            .expression_attribute_values(":seen", n(plan.seen_epoch.0))
            .expression_attribute_values(":now", n(plan.now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1));
        match plan.expect {
            AcquireExpect::Free => condition.push_str(" AND attribute_not_exists(holder)"),
            AcquireExpect::Revoked => {}
            AcquireExpect::V1Lapsed { not_after_ms } => {
                condition.push_str(
                    " AND attribute_not_exists(holder_host_epoch) AND expires_at_ms < :not_after",
                );
                update = update.expression_attribute_values(":not_after", n(not_after_ms));
            }
        }
        let result = update
            .condition_expression(condition)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        group_written(group, result)
    }

    async fn release(
        &self,
        group: &GroupId,
        plan: &ReleasePlan,
        notify: &[HostId],
    ) -> Result<ReleaseOutcome, StoreError> {
        // The member entry is written only for a member (a SET on a missing map path is an
        // error); one read tells which, and the condition checks it did not change.
        let Some(current) = self.read_group(group).await?.filter(|g| !g.deleted) else {
            return Ok(ReleaseOutcome::UnknownGroup);
        };
        if !plan.condition_holds(&current) {
            return Ok(ReleaseOutcome::NotHolder(current));
        }
        let member = current.members.contains_key(&plan.host);
        let (set_member, member_condition) = if member {
            (
                ", members.#h.released_at_ms = :now",
                " AND attribute_exists(members.#h)",
            )
        } else {
            ("", " AND attribute_not_exists(members.#h)")
        };
        let release = Update::builder()
            .table_name(&self.leases_table)
            .set_key(Some(Self::group_key(group)))
            .update_expression(format!(
                "REMOVE holder, holder_host_epoch SET free_since_ms = :now, updated_at_ms = :now, \
                 version = if_not_exists(version, :zero) + :one{set_member}"
            ))
            .condition_expression(format!("holder = :h AND epoch = :e{member_condition}"))
            .expression_attribute_names("#h", plan.host.as_str())
            .expression_attribute_values(":h", s(plan.host.as_str()))
            .expression_attribute_values(":e", n(plan.epoch.0))
            .expression_attribute_values(":now", n(plan.now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| internal("Update", e))?;
        let mut items = vec![TransactWriteItem::builder().update(release).build()];
        for host in notify.iter().filter(|h| **h != plan.host) {
            items.push(self.notify_item(host, group, plan.now)?);
        }
        match self.transact(items).await? {
            Ok(()) => Ok(ReleaseOutcome::Released(plan.apply(&current))),
            Err(reasons) => {
                let item = reasons.into_iter().next().flatten().flatten();
                Ok(
                    match decode_opt_item::<LeaseRecord>(group.as_str(), item)? {
                        Some(now) if !now.deleted => ReleaseOutcome::NotHolder(now),
                        _ => ReleaseOutcome::UnknownGroup,
                    },
                )
            }
        }
    }

    async fn put_group(
        &self,
        definition: &GroupDefinition,
        mode: PutMode,
        now: Millis,
    ) -> Result<CreateOutcome, StoreError> {
        let items =
            group_definition_writes(&self.leases_table, &self.hosts_table, definition, mode, now)?;
        Ok(match self.transact(items).await? {
            Ok(()) => CreateOutcome::Created,
            Err(_) => CreateOutcome::AlreadyExists,
        })
    }

    async fn delete_group(
        &self,
        group: &GroupId,
        plan: &DeletePlan,
    ) -> Result<DeleteOutcome, StoreError> {
        let (condition, values) = delete_condition(plan);
        let update = self
            .client
            .update_item()
            .table_name(&self.leases_table)
            .set_key(Some(Self::group_key(group)))
            .update_expression(TOMBSTONE)
            .set_expression_attribute_values(Some(values));
        let result = update
            .condition_expression(condition)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        Ok(match group_written(group, result)? {
            Written::Done(_) => DeleteOutcome::Deleted,
            Written::LostRace(Some(current)) if !current.deleted => DeleteOutcome::Changed(current),
            Written::LostRace(_) => DeleteOutcome::UnknownGroup,
        })
    }

    async fn set_member_draining(
        &self,
        group: &GroupId,
        host: &HostId,
        draining: bool,
        now: Millis,
    ) -> Result<MemberUpdate, StoreError> {
        let drain = Update::builder()
            .table_name(&self.leases_table)
            .set_key(Some(Self::group_key(group)))
            .update_expression(
                "SET members.#h.draining = :v, updated_at_ms = :now, \
                 version = if_not_exists(version, :zero) + :one",
            )
            .condition_expression("attribute_exists(members.#h)")
            .expression_attribute_names("#h", host.as_str())
            .expression_attribute_values(":v", AttributeValue::Bool(draining))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| internal("Update", e))?;
        let items = vec![
            TransactWriteItem::builder().update(drain).build(),
            self.notify_item(host, group, now)?,
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(match self.read_group(group).await? {
                Some(record) => MemberUpdate::Recorded(record),
                None => MemberUpdate::UnknownGroup,
            }),
            Err(reasons) => {
                let item = reasons.into_iter().next().flatten().flatten();
                Ok(
                    match decode_opt_item::<LeaseRecord>(group.as_str(), item)? {
                        Some(record) if !record.deleted => MemberUpdate::NotMember(record),
                        _ => MemberUpdate::UnknownGroup,
                    },
                )
            }
        }
    }

    async fn set_host_draining(
        &self,
        host: &HostId,
        draining: bool,
        now: Millis,
    ) -> Result<HostRecord, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.hosts_table)
            .set_key(Some(Self::host_key(host)))
            .update_expression(format!(
                "SET draining = :v, updated_at_ms = :now, {HOST_DEFAULTS}"
            ))
            .expression_attribute_values(":v", AttributeValue::Bool(draining))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("UpdateItem", e))?;
        decode_opt_item(host.as_str(), out.attributes)?.ok_or_else(|| StoreError::Corrupt {
            item: host.to_string(),
            reason: "UpdateItem returned no attributes".into(),
        })
    }

    fn scan_hosts(
        &self,
        segment: u32,
        total_segments: u32,
    ) -> BoxStream<'static, Result<HostRecord, StoreError>> {
        let scan = self
            .client
            .scan()
            .table_name(&self.hosts_table)
            .segment(segment as i32)
            .total_segments(total_segments.max(1) as i32);
        Box::pin(
            self.scan(scan)
                .and_then(|item| async move { decode_keyed("host_id", item) }),
        )
    }

    fn scan_groups(&self) -> BoxStream<'static, Result<LeaseRecord, StoreError>> {
        let scan = self.client.scan().table_name(&self.leases_table);
        Box::pin(
            self.scan(scan)
                .and_then(|item| async move { decode_keyed("group_id", item) }),
        )
    }

    async fn groups_held_by(&self, host: &HostId) -> Result<Vec<LeaseRecord>, StoreError> {
        // The index keeps keys only; the groups it names are then read (consistently) and
        // kept if they are still held by `host`.
        let pages = self
            .client
            .query()
            .table_name(&self.leases_table)
            .index_name(BY_HOLDER_INDEX)
            .key_condition_expression("holder = :h")
            .expression_attribute_values(":h", s(host.as_str()))
            .into_paginator()
            .items()
            .send();
        let ids: Vec<GroupId> = futures::stream::unfold(pages, |mut pages| async move {
            let item = pages.next().await?;
            Some((item.map_err(|e| StoreError::from_sdk("Query", e)), pages))
        })
        .try_filter_map(|item| async move {
            Ok(match item.get("group_id") {
                Some(AttributeValue::S(id)) => GroupId::parse(id).ok(),
                _ => None,
            })
        })
        .try_collect()
        .await?;
        let groups = self.read(&[], &ids).await?.groups;
        Ok(groups
            .into_values()
            .filter(|g| g.is_held_by(host) && !g.deleted)
            .collect())
    }
}

/// Creates a `Leases` table with its `by-holder` index (keys only), as the template defines
/// it, and waits until table and index are active: for tests and local tools. An existing table
/// is kept.
pub async fn ensure_leases_table(client: &Client, table: &str) -> Result<(), String> {
    crate::aws::ensure_table_with_indexes(client, table, "group_id", &[(BY_HOLDER_INDEX, "holder")])
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_under_its_ceiling() {
        for attempt in 1..10 {
            let d = jitter(attempt);
            assert!(
                d >= Duration::from_millis(1) && d <= Duration::from_millis(640),
                "{d:?}"
            );
        }
    }
}
