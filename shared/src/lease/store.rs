//! The lease protocol's plans executed against DynamoDB. Every change is one conditional
//! request; a failed condition comes back as a typed outcome (with the item as it stands, via
//! `ReturnValuesOnConditionCheckFailure`, so no second read is needed), never as an error.
//! The conditions here are the DynamoDB spelling of the predicates in
//! [`super::protocol`] (`condition_holds`); keep the two in step.

use super::protocol::{AcquirePlan, Heartbeat, ReleasePlan, RenewPlan};
use super::record::LeaseRecord;
use crate::ids::GroupId;
use crate::Millis;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use futures::Stream;
use std::collections::HashMap;

type Item = HashMap<String, AttributeValue>;

use crate::aws::is_condition_failure;
pub use crate::aws::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
/// A write to one member's entry (heartbeat, drain flag).
pub enum MemberUpdate {
    Recorded(LeaseRecord),
    UnknownGroup,
    NotMember(LeaseRecord),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireOutcome {
    Acquired(LeaseRecord),
    /// The condition failed: someone acquired or renewed since the read. Carries the item as
    /// it now stands (absent if the group was deleted meanwhile).
    LostRace(Option<LeaseRecord>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    Renewed {
        expires_at_ms: Millis,
    },
    /// The holder, epoch or expiry moved since the scan.
    LostRace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    Released(LeaseRecord),
    UnknownGroup,
    /// The caller does not hold the lease at that epoch (stale release).
    NotHolder(LeaseRecord),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    UnknownGroup,
    /// The lease is live: a group with a working primary is not deleted.
    LeaseHeld(LeaseRecord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    AlreadyExists,
}

/// The `Leases` table.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    client: Client,
    table: String,
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// Attributes the renewer needs (and nothing else): it reads every group every round.
const RENEWER_PROJECTION: &str = "group_id, holder, epoch, expires_at_ms, lease_ms, members";

impl LeaseStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn key(group: &GroupId) -> Item {
        HashMap::from([("group_id".to_owned(), s(group.as_str()))])
    }

    fn parse_opt(group: &GroupId, item: Option<Item>) -> Result<Option<LeaseRecord>, StoreError> {
        crate::aws::decode_opt_item(group.as_str(), item)
    }

    /// Creates a group's item (epoch 0, free); refuses to overwrite an existing group.
    pub async fn create_group(&self, record: &LeaseRecord) -> Result<CreateOutcome, StoreError> {
        let item: Item = serde_dynamo::to_item(record).map_err(|e| StoreError::Corrupt {
            item: record.group_id.to_string(),
            reason: e.to_string(),
        })?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(group_id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(CreateOutcome::Created),
            Err(err) if is_condition_failure(&err) => Ok(CreateOutcome::AlreadyExists),
            Err(err) => Err(StoreError::from_sdk("PutItem", err)),
        }
    }

    /// A strongly consistent read of the whole item (one GetItem).
    pub async fn read(&self, group: &GroupId) -> Result<Option<LeaseRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(group)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("GetItem", e))?;
        Self::parse_opt(group, out.item)
    }

    /// Records a member's heartbeat and returns the whole item (one UpdateItem).
    pub async fn heartbeat(
        &self,
        group: &GroupId,
        hb: &Heartbeat,
    ) -> Result<MemberUpdate, StoreError> {
        self.update_member(
            group,
            &hb.host,
            "members.#h.last_seen_ms = :now, members.#h.healthy = :v",
            AttributeValue::Bool(hb.healthy),
            hb.now,
        )
        .await
    }

    /// Sets or clears an operator's drain request on a member (one UpdateItem). A draining
    /// primary's agent closes its gate and releases; a draining member never acquires.
    pub async fn set_draining(
        &self,
        group: &GroupId,
        host: &crate::ids::HostId,
        draining: bool,
        now: Millis,
    ) -> Result<MemberUpdate, StoreError> {
        self.update_member(
            group,
            host,
            "members.#h.draining = :v, updated_at_ms = :now",
            AttributeValue::Bool(draining),
            now,
        )
        .await
    }

    /// `SET <set>, version = version + 1` on an existing member (`#h`), with `:v` and `:now`
    /// bound, returning the whole item.
    async fn update_member(
        &self,
        group: &GroupId,
        host: &crate::ids::HostId,
        set: &str,
        value: AttributeValue,
        now: Millis,
    ) -> Result<MemberUpdate, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(group)))
            .update_expression(format!(
                "SET {set}, version = if_not_exists(version, :zero) + :one"
            ))
            .condition_expression("attribute_exists(members.#h)")
            .expression_attribute_names("#h", host.as_str())
            .expression_attribute_values(":v", value)
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        Ok(match written_or_current(group, result)? {
            Ok(record) => MemberUpdate::Recorded(record),
            Err(Some(record)) => MemberUpdate::NotMember(record),
            Err(None) => MemberUpdate::UnknownGroup,
        })
    }

    /// Takes the lease (epoch + 1) if nobody acquired or renewed it since the caller's read.
    pub async fn acquire(
        &self,
        group: &GroupId,
        plan: &AcquirePlan,
    ) -> Result<AcquireOutcome, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(group)))
            .update_expression(
                "SET holder = :h, epoch = epoch + :one, expires_at_ms = :exp, \
                 members.#h.last_seen_ms = :now, members.#h.healthy = :ok, \
                 updated_at_ms = :now, version = if_not_exists(version, :zero) + :one",
            )
            .condition_expression(
                "attribute_exists(members.#h) AND epoch = :seen \
                 AND (attribute_not_exists(holder) OR expires_at_ms < :not_after)",
            )
            .expression_attribute_names("#h", plan.host.as_str())
            .expression_attribute_values(":h", s(plan.host.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":exp", n(plan.new_expires_at_ms))
            .expression_attribute_values(":now", n(plan.now))
            .expression_attribute_values(":ok", AttributeValue::Bool(plan.healthy))
            .expression_attribute_values(":seen", n(plan.seen_epoch.0))
            .expression_attribute_values(":not_after", n(plan.not_after_ms))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        Ok(match written_or_current(group, result)? {
            Ok(record) => AcquireOutcome::Acquired(record),
            Err(current) => AcquireOutcome::LostRace(current),
        })
    }

    /// Moves the expiry forward for the same holder and epoch (one UpdateItem, no read back).
    pub async fn renew(
        &self,
        group: &GroupId,
        plan: &RenewPlan,
    ) -> Result<RenewOutcome, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(group)))
            .update_expression(
                "SET expires_at_ms = :new, updated_at_ms = :now, \
                 version = if_not_exists(version, :zero) + :one",
            )
            .condition_expression("holder = :h AND epoch = :e AND expires_at_ms < :new")
            .expression_attribute_values(":new", n(plan.new_expires_at_ms))
            .expression_attribute_values(":now", n(plan.now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":h", s(plan.holder.as_str()))
            .expression_attribute_values(":e", n(plan.epoch.0))
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

    /// Frees the lease if the caller holds it at that epoch (one UpdateItem).
    pub async fn release(
        &self,
        group: &GroupId,
        plan: &ReleasePlan,
    ) -> Result<ReleaseOutcome, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(group)))
            .update_expression(
                "REMOVE holder SET expires_at_ms = :now, updated_at_ms = :now, \
                 version = if_not_exists(version, :zero) + :one",
            )
            .condition_expression("holder = :h AND epoch = :e")
            .expression_attribute_values(":now", n(plan.now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":h", s(plan.host.as_str()))
            .expression_attribute_values(":e", n(plan.epoch.0))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        Ok(match written_or_current(group, result)? {
            Ok(record) => ReleaseOutcome::Released(record),
            Err(Some(record)) => ReleaseOutcome::NotHolder(record),
            Err(None) => ReleaseOutcome::UnknownGroup,
        })
    }

    /// Deletes a group whose lease is free or lapsed (`attribute_not_exists(holder) OR
    /// expires_at_ms < :now - :skew`), so a live primary is never deleted from under it.
    pub async fn delete_group(
        &self,
        group: &GroupId,
        now: Millis,
        clock_skew_ms: Millis,
    ) -> Result<DeleteOutcome, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(group)))
            .condition_expression(
                "attribute_exists(group_id) AND \
                 (attribute_not_exists(holder) OR expires_at_ms < :not_after)",
            )
            .expression_attribute_values(":not_after", n(now.saturating_sub(clock_skew_ms)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(SdkError::ServiceError(e)) => match e.err() {
                aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(ccf) => {
                    Ok(match Self::parse_opt(group, ccf.item().cloned())? {
                        Some(record) => DeleteOutcome::LeaseHeld(record),
                        None => DeleteOutcome::UnknownGroup,
                    })
                }
                _ => Err(StoreError::from_sdk("DeleteItem", SdkError::ServiceError(e))),
            },
            Err(err) => Err(StoreError::from_sdk("DeleteItem", err)),
        }
    }

    /// Every group, whole, page by page (for operators' listings, not the hot path).
    pub fn scan_all(&self) -> impl Stream<Item = Result<LeaseRecord, StoreError>> + Send + 'static {
        scan_records(self.client.scan().table_name(&self.table))
    }

    /// Every held lease in one parallel-scan segment, page by page (the SDK paginates),
    /// reading only what the renewer needs. Eventually consistent: a stale `last_seen_ms` only
    /// makes a renewal shorter or fail its condition, never unsafe.
    pub fn scan_held(
        &self,
        segment: i32,
        total_segments: i32,
    ) -> impl Stream<Item = Result<LeaseRecord, StoreError>> + Send + 'static {
        scan_records(
            self.client
                .scan()
                .table_name(&self.table)
                .segment(segment)
                .total_segments(total_segments)
                .projection_expression(RENEWER_PROJECTION)
                .filter_expression("attribute_exists(holder)"),
        )
    }
}

/// [`crate::aws::written_or_current`] for a lease record, which always exists after a write.
fn written_or_current<R: std::fmt::Debug>(
    group: &GroupId,
    result: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError, R>,
    >,
) -> Result<Result<LeaseRecord, Option<LeaseRecord>>, StoreError> {
    match crate::aws::written_or_current(group.as_str(), "UpdateItem", result)? {
        Ok(Some(record)) => Ok(Ok(record)),
        Ok(None) => Err(StoreError::Corrupt {
            item: group.to_string(),
            reason: "UpdateItem returned no attributes".into(),
        }),
        Err(current) => Ok(Err(current)),
    }
}

/// Runs a scan to the end, page by page, decoding each item as a lease record.
fn scan_records(
    scan: aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder,
) -> impl Stream<Item = Result<LeaseRecord, StoreError>> + Send + 'static {
    let pages = scan.into_paginator().items().send();
    futures::stream::unfold(pages, |mut pages| async move {
        let item = pages.next().await?;
        let parsed = item
            .map_err(|e| StoreError::from_sdk("Scan", e))
            .and_then(|item| crate::aws::decode_keyed("group_id", item));
        Some((parsed, pages))
    })
}
