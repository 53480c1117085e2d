//! The `WorkItems` table. Every change of a work item is one conditional request; a failed
//! condition comes back as a typed outcome carrying the item as it stands.
//!
//! Why nothing is lost or applied twice: an item is written PENDING before anything is
//! enqueued, so every op that exists is either terminal or due for the dispatcher's sweep at
//! `due_at_ms`; only the holder of the current `claim_token` can complete it; and the remote
//! apply is idempotent on `op_id`, so a second attempt after a lost completion gets the stored
//! result instead of a second effect.

use super::awaiting::RemoteState;
use super::claim::hold_refusal;
pub use super::claim::{ClaimOutcome, CompleteOutcome, Completion, HoldOutcome, WorkItemClaims};
use super::ids::{OpId, Region};
use super::item::{CancelStep, HoldStep, Status, Transition, WorkItem, HELD_REGION_UNAVAILABLE};
use crate::aws::{
    condition_held, decode_keyed, decode_opt_item, is_condition_failure, written_or_current, Item,
    StoreError,
};
use crate::aws::{get_consistent, n, s};
use crate::Millis;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;

/// What an `UpdateItem` returned, for [`written_or_current`].
type UpdateResult = Result<
    aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
    aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::update_item::UpdateItemError,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
>;

/// The GSI the dispatcher and `tenurectl ops list` query.
pub const STATUS_INDEX: &str = "by-status-due";

/// A work item's `result` for an end that carries no remote result: `{"outcome", "note"}`.
pub(crate) fn json_note(outcome: &str, note: &str) -> String {
    serde_json::json!({"outcome": outcome, "result": {"note": note}}).to_string()
}

/// `:history`, a one-entry list for `list_append`.
fn step(status: Status, at_ms: Millis) -> AttributeValue {
    AttributeValue::L(vec![AttributeValue::M(HashMap::from([
        ("status".to_owned(), s(status.as_str())),
        ("at_ms".to_owned(), n(at_ms)),
    ]))])
}

/// A status write: the values it carries beside its own (its expression has `{NEXT_VERSION}`,
/// `ADD {ADD_VERSION}` and `{APPEND_HISTORY}`): the op's unpublished shard, `:one`, and the
/// history entry of `status` at `now`.
trait StatusWrite {
    fn status_change(self, op_id: &OpId, status: Status, now: Millis) -> Self;
}

impl StatusWrite for aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
    fn status_change(self, op_id: &OpId, status: Status, now: Millis) -> Self {
        self.expression_attribute_values(":unpublished", unpublished_shard(op_id))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":history", step(status, now))
            .expression_attribute_values(":no_history", AttributeValue::L(vec![]))
    }
}

/// Appends `:history` to the item's trail.
const APPEND_HISTORY: &str = "history = list_append(if_not_exists(history, :no_history), :history)";

/// The sparse GSI of items with a status change not yet published (`events`): its partition
/// key `unpublished` is set by every status write and removed when the item's latest version
/// is published; sorted by `updated_at_ms`, so the sweep reads the longest-waiting first. Keys
/// only: every status write rewrites the item's index entry, so the entry is kept small, and
/// the sweep (the rare path) reads the items themselves.
pub const UNPUBLISHED_INDEX: &str = "by-unpublished";
/// `unpublished` is one of this many shards, so status writes spread over as many index
/// partitions (about 1,000 writes a second each) instead of one.
pub const UNPUBLISHED_SHARDS: u8 = 4;

/// An op's shard of the unpublished index: from the last character of its ULID (random bits).
fn unpublished_shard(op_id: &OpId) -> AttributeValue {
    let last = op_id.as_str().bytes().last().unwrap_or(b'0');
    s(&(last % UNPUBLISHED_SHARDS).to_string())
}
/// The key prefix of the per-(target, resource) sequence counters kept in the same table.
pub const SEQ_KEY_PREFIX: &str = "seq#";
/// Every status write: the next version, and on the index until it is published.
const NEXT_VERSION: &str = "unpublished = :unpublished";
/// ... with `ADD status_version :one` beside it.
const ADD_VERSION: &str = "status_version :one";

/// An operation to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOp {
    pub op_id: OpId,
    pub source_region: Region,
    pub target_region: Region,
    pub kind: String,
    pub resource: String,
    /// JSON text.
    pub payload: String,
    pub max_attempts: u32,
    /// Follow the op to this remote state (`serving`), within `await_ms` of the target's 202.
    pub await_for: Option<String>,
    pub await_ms: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    Submitted(WorkItem),
    /// An op with this id exists already (a retried submit): nothing was written.
    AlreadySubmitted(WorkItem),
}

/// What a poll of a waiting op found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUp {
    /// Still in progress at the target: poll again at `next_at_ms`.
    Poll { next_at_ms: Millis },
    /// The target ended it: SUCCEEDED (`field` = `result`) or FAILED (`last_error`).
    Ended {
        status: Status,
        field: &'static str,
        text: String,
        remote_state: RemoteState,
    },
}

/// How `tenurectl ops cancel` came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// CANCELLED now: never sent, or a wait stopped.
    Cancelled(WorkItem),
    /// Sent before: the next attempt asks the target for a tombstone.
    Requested(WorkItem),
    /// Already finished (or it finished first): nothing changed.
    Finished(WorkItem),
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    Requeued(WorkItem),
    NotFailed(WorkItem),
    Missing,
}

#[derive(Debug, Clone)]
pub struct WorkItemStore {
    client: Client,
    table: String,
}

impl WorkItemStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn parse(item: Item) -> Result<WorkItem, StoreError> {
        decode_keyed("op_id", item)
    }

    /// The next sequence number for `resource` in `target`: an atomic counter item in the same
    /// table (key `seq#target#resource`, no `status`, so the GSI never sees it).
    async fn next_seq(&self, target: &Region, resource: &str) -> Result<u64, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("op_id", s(&format!("{SEQ_KEY_PREFIX}{target}#{resource}")))
            .update_expression("ADD next_seq :one")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("UpdateItem(seq)", e))?;
        match out.attributes.as_ref().and_then(|a| a.get("next_seq")) {
            Some(AttributeValue::N(v)) => v.parse().map_err(|_| StoreError::Corrupt {
                item: format!("{SEQ_KEY_PREFIX}{target}#{resource}"),
                reason: format!("next_seq {v} is not a number"),
            }),
            _ => Err(StoreError::Corrupt {
                item: format!("{SEQ_KEY_PREFIX}{target}#{resource}"),
                reason: "no next_seq returned".into(),
            }),
        }
    }

    /// Writes the op PENDING (condition `attribute_not_exists(op_id)`), due for the dispatcher
    /// `redispatch_after_ms` from now in case the caller's enqueue is lost.
    pub async fn submit(
        &self,
        op: NewOp,
        now: Millis,
        redispatch_after_ms: Millis,
    ) -> Result<SubmitOutcome, StoreError> {
        if let Some(existing) = self.get(&op.op_id).await? {
            return Ok(SubmitOutcome::AlreadySubmitted(existing));
        }
        let seq = self.next_seq(&op.target_region, &op.resource).await?;
        let item = WorkItem {
            op_id: op.op_id,
            source_region: op.source_region,
            target_region: op.target_region,
            kind: op.kind,
            resource: op.resource,
            seq,
            payload: op.payload,
            status: Status::Pending,
            attempts: 0,
            max_attempts: op.max_attempts,
            claim_token: None,
            claim_expires_at_ms: None,
            due_at_ms: now + redispatch_after_ms,
            result: None,
            last_error: None,
            created_at_ms: now,
            updated_at_ms: now,
            history: vec![Transition {
                status: Status::Pending,
                at_ms: now,
            }],
            retry_at_ms: None,
            status_version: 1,
            published_version: 0,
            held: None,
            held_since_ms: None,
            await_for: op.await_for,
            await_ms: op.await_ms,
            remote_state: None,
            polls: 0,
            cancel_requested: false,
            sent: false,
        };
        let mut attributes: Item =
            serde_dynamo::to_item(&item).map_err(|e| StoreError::Corrupt {
                item: item.op_id.to_string(),
                reason: e.to_string(),
            })?;
        attributes.insert("unpublished".to_owned(), unpublished_shard(&item.op_id));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attributes))
            .condition_expression("attribute_not_exists(op_id)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(SubmitOutcome::Submitted(item)),
            Err(e) if is_condition_failure(&e) => match self.get(&item.op_id).await? {
                Some(existing) => Ok(SubmitOutcome::AlreadySubmitted(existing)),
                None => Err(StoreError::Unavailable {
                    operation: "PutItem",
                    message: "op exists and vanished".into(),
                }),
            },
            Err(e) => Err(StoreError::from_sdk("PutItem", e)),
        }
    }

    /// A strongly consistent read.
    pub async fn get(&self, op_id: &OpId) -> Result<Option<WorkItem>, StoreError> {
        let item = get_consistent(&self.client, &self.table, "op_id", op_id.as_str()).await?;
        decode_opt_item(op_id.as_str(), item)
    }

    /// Claims the item for one attempt, in one request that returns it: from PENDING,
    /// DISPATCHED or RETRYING, or from IN_FLIGHT whose claim expired (its worker died).
    /// `attempts` counts the attempt; `due_at_ms` becomes the claim's expiry, so the
    /// dispatcher finds the item again if this worker dies too.
    pub async fn claim(
        &self,
        op_id: &OpId,
        token: &str,
        now: Millis,
        claim_ttl_ms: Millis,
        skew_ms: Millis,
    ) -> Result<ClaimOutcome, StoreError> {
        let expires = now + claim_ttl_ms;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("op_id", s(op_id.as_str()))
            .update_expression(format!(
                "SET #status = :in_flight, claim_token = :token, claim_expires_at_ms = :expires, \
                 due_at_ms = :expires, updated_at_ms = :now, {NEXT_VERSION}, {APPEND_HISTORY} \
                 , sent = :sent REMOVE held, held_since_ms ADD attempts :one, {ADD_VERSION}"
            ))
            .expression_attribute_values(":sent", AttributeValue::Bool(true))
            .status_change(op_id, Status::InFlight, now)
            // `WorkItem::claim_refusal`, as a condition: no claim before the backoff's end less
            // the skew, whichever message copy (or re-enqueue) arrives first.
            .condition_expression(
                "attribute_exists(op_id) AND ((#status IN (:pending, :dispatched, :retrying) \
                 AND (attribute_not_exists(retry_at_ms) OR retry_at_ms <= :not_before)) \
                 OR (#status = :in_flight AND claim_expires_at_ms < :now))",
            )
            .expression_attribute_values(":not_before", n(now + skew_ms))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":in_flight", s(Status::InFlight.as_str()))
            .expression_attribute_values(":pending", s(Status::Pending.as_str()))
            .expression_attribute_values(":dispatched", s(Status::Dispatched.as_str()))
            .expression_attribute_values(":retrying", s(Status::Retrying.as_str()))
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":expires", n(expires))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        Ok(
            match written_or_current(op_id.as_str(), "UpdateItem(claim)", result)? {
                Ok(Some(item)) => ClaimOutcome::Claimed(item),
                Ok(None) | Err(None) => ClaimOutcome::Missing,
                // Refused: why, by the same rule. An item that passes the rule as read now lost
                // a race with another claim between the condition and this read: busy.
                Err(Some(item)) => match item.claim_refusal(now, skew_ms) {
                    Some(refusal) => ClaimOutcome::refused(item, refusal),
                    None => ClaimOutcome::Busy(item),
                },
            },
        )
    }

    /// Ends an attempt; only the holder of `token` can.
    pub async fn complete(
        &self,
        op_id: &OpId,
        token: &str,
        completion: &Completion,
        now: Millis,
    ) -> Result<CompleteOutcome, StoreError> {
        let mut remote_state: Option<RemoteState> = None;
        let (status, field, text, due, retry_at, region_hold) = match completion {
            Completion::Succeeded { result } => (
                Status::Succeeded,
                "result",
                result.clone(),
                now,
                None,
                false,
            ),
            Completion::Failed { error } => (
                Status::Failed,
                "last_error",
                error.clone(),
                now,
                None,
                false,
            ),
            Completion::Retry {
                error,
                retry_at_ms,
                due_at_ms,
                region_hold,
            } => (
                Status::Retrying,
                "last_error",
                error.clone(),
                *due_at_ms,
                Some(*retry_at_ms),
                *region_hold,
            ),
            Completion::Waiting { poll_at_ms } => {
                remote_state = Some(RemoteState::InProgress);
                let note = "accepted: the target applied it; waiting for the awaited state";
                (
                    Status::WaitingRemote,
                    "result",
                    json_note("accepted", note),
                    *poll_at_ms,
                    None,
                    false,
                )
            }
            Completion::Cancelled { reason } => (
                Status::Cancelled,
                "result",
                json_note("cancelled", reason),
                now,
                None,
                false,
            ),
        };
        let text = &text;
        // A retry's backoff end goes with it; a terminal item keeps the last one (harmless:
        // nothing claims a terminal item). A region hold gives the attempt back.
        let mut set_retry_at = match (retry_at.is_some(), region_hold) {
            (true, true) => ", retry_at_ms = :retry_at, held = :held, held_since_ms = :now",
            (true, false) => ", retry_at_ms = :retry_at",
            _ => "",
        }
        .to_owned();
        if remote_state.is_some() {
            set_retry_at.push_str(", remote_state = :remote_state, polls = :zero");
        }
        let give_back = if region_hold {
            ", attempts :minus_one"
        } else {
            ""
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("op_id", s(op_id.as_str()))
            .update_expression(format!(
                "SET #status = :status, #field = :text, due_at_ms = :due, updated_at_ms = :now{set_retry_at}, \
                 {NEXT_VERSION}, {APPEND_HISTORY} REMOVE claim_token, claim_expires_at_ms \
                 ADD {ADD_VERSION}{give_back}"
            ))
            .status_change(op_id, status, now)
            .condition_expression("#status = :in_flight AND claim_token = :token")
            .expression_attribute_names("#status", "status")
            // `result` is a DynamoDB reserved word.
            .expression_attribute_names("#field", field)
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":text", s(text))
            .expression_attribute_values(":due", n(due))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":in_flight", s(Status::InFlight.as_str()))
            .expression_attribute_values(":token", s(token))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(at) = retry_at {
            update = update.expression_attribute_values(":retry_at", n(at));
        }
        if region_hold {
            update = update
                .expression_attribute_values(":held", s(HELD_REGION_UNAVAILABLE))
                .expression_attribute_values(":minus_one", AttributeValue::N("-1".into()));
        }
        if let Some(state) = remote_state {
            update = update
                .expression_attribute_values(":remote_state", s(state.as_str()))
                .expression_attribute_values(":zero", n(0));
        }
        let result = update.send().await;
        Ok(
            match written_or_current(op_id.as_str(), "UpdateItem(complete)", result)? {
                Ok(Some(item)) => CompleteOutcome::Completed(item),
                Ok(None) => CompleteOutcome::ClaimLost(None),
                Err(current) => CompleteOutcome::ClaimLost(current),
            },
        )
    }

    /// Holds a waiting op without claiming it ([`WorkItemClaims::hold`]). One conditional
    /// write; no status change, so no history entry, no version, no event.
    pub async fn hold(
        &self,
        op_id: &OpId,
        now: Millis,
        until_ms: Millis,
        due_at_ms: Millis,
        max_hold_ms: Millis,
    ) -> Result<HoldOutcome, StoreError> {
        let expired_before = now.saturating_sub(max_hold_ms);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("op_id", s(op_id.as_str()))
            .update_expression(
                "SET held = :held, held_since_ms = if_not_exists(held_since_ms, :now), \
                 retry_at_ms = :until, due_at_ms = :due",
            )
            // Waiting, its own backoff not later than the hold, and not held too long already.
            .condition_expression(
                "#status IN (:pending, :dispatched, :retrying) \
                 AND (attribute_not_exists(retry_at_ms) OR retry_at_ms <= :until) \
                 AND (attribute_not_exists(held_since_ms) OR held_since_ms > :expired_before)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":held", s(HELD_REGION_UNAVAILABLE))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":due", n(due_at_ms))
            .expression_attribute_values(":expired_before", n(expired_before))
            .expression_attribute_values(":pending", s(Status::Pending.as_str()))
            .expression_attribute_values(":dispatched", s(Status::Dispatched.as_str()))
            .expression_attribute_values(":retrying", s(Status::Retrying.as_str()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match written_or_current::<WorkItem, _>(op_id.as_str(), "UpdateItem(hold)", result)? {
            Ok(Some(item)) => Ok(HoldOutcome::Held(item)),
            Ok(None) | Err(None) => Ok(HoldOutcome::Refused(ClaimOutcome::Missing)),
            Err(Some(item)) if item.hold_step(now, until_ms, max_hold_ms) == HoldStep::Expire => {
                self.expire_hold(item, now, expired_before).await
            }
            Err(Some(item)) => Ok(hold_refusal(item, until_ms)),
        }
    }

    /// FAILED `region_unavailable`, on the condition that the op is still waiting and held
    /// since `expired_before` or earlier.
    async fn expire_hold(
        &self,
        item: WorkItem,
        now: Millis,
        expired_before: Millis,
    ) -> Result<HoldOutcome, StoreError> {
        let op_id = &item.op_id;
        let error = format!(
            "{HELD_REGION_UNAVAILABLE}: {} was unavailable for the whole hold ({} s)",
            item.target_region,
            now.saturating_sub(item.held_since_ms.unwrap_or(now)) / 1_000
        );
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("op_id", s(op_id.as_str()))
            .update_expression(format!(
                "SET #status = :failed, last_error = :error, due_at_ms = :now, updated_at_ms = :now, \
                 {NEXT_VERSION}, {APPEND_HISTORY} REMOVE held ADD {ADD_VERSION}"
            ))
            .condition_expression(
                "#status IN (:pending, :dispatched, :retrying) AND held_since_ms <= :expired_before",
            )
            .expression_attribute_names("#status", "status")
            .status_change(op_id, Status::Failed, now)
            .expression_attribute_values(":failed", s(Status::Failed.as_str()))
            .expression_attribute_values(":error", s(&error))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":expired_before", n(expired_before))
            .expression_attribute_values(":pending", s(Status::Pending.as_str()))
            .expression_attribute_values(":dispatched", s(Status::Dispatched.as_str()))
            .expression_attribute_values(":retrying", s(Status::Retrying.as_str()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match written_or_current::<WorkItem, _>(op_id.as_str(), "UpdateItem(hold expired)", result)?
        {
            Ok(Some(item)) => Ok(HoldOutcome::Expired(item)),
            Ok(None) | Err(None) => Ok(HoldOutcome::Refused(ClaimOutcome::Missing)),
            Err(Some(current)) => Ok(hold_refusal(current, now)),
        }
    }

    /// A poll of a WAITING_REMOTE op found `follow_up`. Unchanged: only the next poll's time
    /// (`due_at_ms`) and `polls` move, no version, no event. Ended: SUCCEEDED or FAILED with the
    /// target's answer, one status change. Conditional on the op still waiting as read, so a
    /// cancel or another poller in between wins. `false` when the condition did not hold.
    pub async fn follow(
        &self,
        item: &WorkItem,
        follow_up: &FollowUp,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let op_id = &item.op_id;
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("op_id", s(op_id.as_str()))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":waiting", s(Status::WaitingRemote.as_str()));
        let request = match follow_up {
            FollowUp::Poll { next_at_ms } => request
                .update_expression("SET due_at_ms = :next ADD polls :one")
                .condition_expression("#status = :waiting AND due_at_ms = :seen_due")
                .expression_attribute_values(":seen_due", n(item.due_at_ms))
                .expression_attribute_values(":next", n(*next_at_ms))
                .expression_attribute_values(":one", n(1)),
            FollowUp::Ended {
                status,
                field,
                text,
                remote_state,
            } => request
                .update_expression(format!(
                    "SET #status = :status, #field = :text, remote_state = :remote_state, \
                     due_at_ms = :now, updated_at_ms = :now, {NEXT_VERSION}, {APPEND_HISTORY} \
                     ADD {ADD_VERSION}"
                ))
                .condition_expression("#status = :waiting")
                .expression_attribute_names("#field", *field)
                .expression_attribute_values(":status", s(status.as_str()))
                .expression_attribute_values(":text", s(text))
                .expression_attribute_values(":remote_state", s(remote_state.as_str()))
                .expression_attribute_values(":now", n(now))
                .status_change(op_id, *status, now),
        };
        condition_held("UpdateItem(follow)", request.send().await)
    }

    /// An operator's cancel ([`CancelOutcome`]): CANCELLED at once if the op was never sent
    /// (no claim ever took it) or is waiting on the target (the wait stops, the effect stays);
    /// otherwise the next attempt asks the target for a tombstone instead
    /// (`cancel_requested`, due now). Each step is one conditional write.
    pub async fn cancel(
        &self,
        op_id: &OpId,
        now: Millis,
        redispatch_after_ms: Millis,
    ) -> Result<CancelOutcome, StoreError> {
        // The first write is the never-sent cancel, made blind: a fresh op needs no read. A
        // failed condition returns the item as it stands and `cancel_step` names the write
        // that applies to it. An op only moves on (never sent -> sent -> waiting -> ended), so
        // a cancel racing a worker needs at most three writes: a cancel request that loses to
        // the worker's 202 stops the wait instead.
        let mut step = CancelStep::NeverSent;
        let mut in_flight_due: Option<Millis> = None;
        for _ in 0..3 {
            let (operation, result) = match step {
                CancelStep::NeverSent => (
                    "UpdateItem(cancel)",
                    self.cancel_never_sent(op_id, now).await,
                ),
                CancelStep::StopWait => (
                    "UpdateItem(cancel wait)",
                    self.cancel_wait(op_id, now).await,
                ),
                CancelStep::AskTarget => {
                    // A claimed op keeps the dispatcher's step-in time of its claim; any other
                    // is re-enqueued soon, so the request reaches the target without waiting
                    // out a backoff.
                    let due = in_flight_due.unwrap_or(now + redispatch_after_ms.min(5_000));
                    (
                        "UpdateItem(cancel request)",
                        self.request_cancel(op_id, now, due).await,
                    )
                }
            };
            let current =
                match written_or_current::<WorkItem, _>(op_id.as_str(), operation, result)? {
                    Ok(Some(item)) if step == CancelStep::AskTarget => {
                        return Ok(CancelOutcome::Requested(item))
                    }
                    Ok(Some(item)) => return Ok(CancelOutcome::Cancelled(item)),
                    Ok(None) | Err(None) => return Ok(CancelOutcome::Missing),
                    Err(Some(item)) => item,
                };
            match current.cancel_step() {
                None => return Ok(CancelOutcome::Finished(current)),
                Some(next) => {
                    in_flight_due =
                        (current.status == Status::InFlight).then_some(current.due_at_ms);
                    step = next;
                }
            }
        }
        Err(StoreError::Unavailable {
            operation: "UpdateItem(cancel)",
            message: format!("op {op_id} kept changing under the cancel; run it again"),
        })
    }

    /// CANCELLED if no claim ever set `sent` (and, for items from before it, no attempt).
    async fn cancel_never_sent(&self, op_id: &OpId, now: Millis) -> UpdateResult {
        self.to_cancelled(
            op_id,
            now,
            "#status IN (:pending, :dispatched, :retrying) AND attempts = :zero \
             AND attribute_not_exists(sent)",
            "cancelled before it was ever sent",
        )
        .expression_attribute_values(":pending", s(Status::Pending.as_str()))
        .expression_attribute_values(":dispatched", s(Status::Dispatched.as_str()))
        .expression_attribute_values(":retrying", s(Status::Retrying.as_str()))
        .expression_attribute_values(":zero", n(0))
        .send()
        .await
    }

    /// CANCELLED if WAITING_REMOTE: the effect stays at the target, the wait stops.
    async fn cancel_wait(&self, op_id: &OpId, now: Millis) -> UpdateResult {
        self.to_cancelled(
            op_id,
            now,
            "#status = :waiting",
            "cancelled while the target worked on it: its effect was applied there; only the wait stopped",
        )
        .expression_attribute_values(":waiting", s(Status::WaitingRemote.as_str()))
        .send()
        .await
    }

    /// `cancel_requested` on an op that may have reached the target: its next claim asks the
    /// target for a tombstone; claimable now, re-enqueued by `due_at_ms`.
    async fn request_cancel(&self, op_id: &OpId, now: Millis, due_at_ms: Millis) -> UpdateResult {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("op_id", s(op_id.as_str()))
            .update_expression(
                "SET cancel_requested = :true, retry_at_ms = :now, due_at_ms = :due REMOVE held, held_since_ms",
            )
            .condition_expression("#status IN (:pending, :dispatched, :retrying, :in_flight)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":due", n(due_at_ms))
            .expression_attribute_values(":pending", s(Status::Pending.as_str()))
            .expression_attribute_values(":dispatched", s(Status::Dispatched.as_str()))
            .expression_attribute_values(":retrying", s(Status::Retrying.as_str()))
            .expression_attribute_values(":in_flight", s(Status::InFlight.as_str()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
    }

    /// The CANCELLED status write on `condition`, with `note` as its result.
    fn to_cancelled(
        &self,
        op_id: &OpId,
        now: Millis,
        condition: &str,
        note: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("op_id", s(op_id.as_str()))
            .update_expression(format!(
                "SET #status = :cancelled, #result = :note, due_at_ms = :now, updated_at_ms = :now, \
                 {NEXT_VERSION}, {APPEND_HISTORY} REMOVE held, held_since_ms ADD {ADD_VERSION}"
            ))
            .condition_expression(condition.to_owned())
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#result", "result")
            .expression_attribute_values(":cancelled", s(Status::Cancelled.as_str()))
            .expression_attribute_values(":note", s(&json_note("cancelled", note)))
            .expression_attribute_values(":now", n(now))
            .status_change(op_id, Status::Cancelled, now)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }

    /// Items in `status` due at or before `now` (the dispatcher's sweep), oldest due first.
    pub async fn due(
        &self,
        status: Status,
        now: Millis,
        limit: i32,
    ) -> Result<Vec<WorkItem>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(STATUS_INDEX)
            .key_condition_expression("#status = :status AND due_at_ms <= :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":now", n(now))
            .limit(limit)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("Query(by-status-due)", e))?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(Self::parse)
            .collect()
    }

    /// Every item in `status`, newest due first, up to `limit` (for operators).
    pub async fn list(&self, status: Status, limit: i32) -> Result<Vec<WorkItem>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(STATUS_INDEX)
            .key_condition_expression("#status = :status")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .scan_index_forward(false)
            .limit(limit)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("Query(by-status-due)", e))?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(Self::parse)
            .collect()
    }

    /// Marks a swept item DISPATCHED before the dispatcher enqueues it, on the condition that
    /// it has not moved since the sweep read it, so two dispatchers never both enqueue it. An
    /// expired claim is dropped here (a late completion by its worker then fails).
    pub async fn mark_dispatched(
        &self,
        item: &WorkItem,
        now: Millis,
        redispatch_after_ms: Millis,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("op_id", s(item.op_id.as_str()))
            .update_expression(format!(
                "SET #status = :dispatched, due_at_ms = :due, updated_at_ms = :now, \
                 {NEXT_VERSION}, {APPEND_HISTORY} REMOVE claim_token, claim_expires_at_ms \
                 ADD {ADD_VERSION}"
            ))
            .status_change(&item.op_id, Status::Dispatched, now)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":dispatched", s(Status::Dispatched.as_str()))
            .expression_attribute_values(":due", n(now + redispatch_after_ms))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":seen_status", s(item.status.as_str()))
            .expression_attribute_values(":seen_due", n(item.due_at_ms));
        let mut condition = "#status = :seen_status AND due_at_ms = :seen_due".to_owned();
        if let Some(token) = &item.claim_token {
            condition.push_str(" AND claim_token = :seen_token");
            request = request.expression_attribute_values(":seen_token", s(token));
        }
        condition_held(
            "UpdateItem(dispatch)",
            request.condition_expression(condition).send().await,
        )
    }

    /// FAILED -> PENDING with a fresh attempt budget (operator retry).
    pub async fn retry(
        &self,
        op_id: &OpId,
        now: Millis,
        redispatch_after_ms: Millis,
    ) -> Result<RetryOutcome, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("op_id", s(op_id.as_str()))
            .update_expression(format!(
                "SET #status = :pending, attempts = :zero, due_at_ms = :due, updated_at_ms = :now, \
                 {NEXT_VERSION}, {APPEND_HISTORY} ADD {ADD_VERSION}"
            ))
            .status_change(op_id, Status::Pending, now)
            .condition_expression("#status = :failed")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":pending", s(Status::Pending.as_str()))
            .expression_attribute_values(":failed", s(Status::Failed.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":due", n(now + redispatch_after_ms))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        Ok(
            match written_or_current(op_id.as_str(), "UpdateItem(retry)", result)? {
                Ok(Some(item)) => RetryOutcome::Requeued(item),
                Err(Some(item)) => RetryOutcome::NotFailed(item),
                Ok(None) | Err(None) => RetryOutcome::Missing,
            },
        )
    }
    /// Records that `version` of the item was published: `published_version` becomes it and
    /// the item leaves the unpublished index, on the condition that `version` is still the
    /// item's latest (a newer status write keeps it on the index for its own event) and was
    /// not recorded already. `false` when the condition did not hold.
    pub async fn mark_published(&self, op_id: &OpId, version: u64) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("op_id", s(op_id.as_str()))
            .update_expression("SET published_version = :version REMOVE unpublished")
            .condition_expression(
                "status_version = :version AND \
                 (attribute_not_exists(published_version) OR published_version < :version)",
            )
            .expression_attribute_values(":version", n(version))
            .send()
            .await;
        condition_held("UpdateItem(published)", result)
    }

    /// Items with a status change unpublished since at or before `changed_before` (the
    /// sweep's safety net behind the stream): up to `limit` per shard of the index, each read
    /// back whole (consistent), longest-waiting first.
    pub async fn unpublished(
        &self,
        changed_before: Millis,
        limit: i32,
    ) -> Result<Vec<WorkItem>, StoreError> {
        let mut keys: Vec<(Millis, String)> = Vec::new();
        for shard in 0..UNPUBLISHED_SHARDS {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(UNPUBLISHED_INDEX)
                .key_condition_expression("unpublished = :unpublished AND updated_at_ms <= :before")
                .expression_attribute_values(":unpublished", s(&shard.to_string()))
                .expression_attribute_values(":before", n(changed_before))
                .limit(limit)
                .send()
                .await
                .map_err(|e| StoreError::from_sdk("Query(by-unpublished)", e))?;
            for key in out.items.unwrap_or_default() {
                let at = match key.get("updated_at_ms") {
                    Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
                    _ => 0,
                };
                if let Some(AttributeValue::S(op_id)) = key.get("op_id") {
                    keys.push((at, op_id.clone()));
                }
            }
        }
        keys.sort();
        let mut items = Vec::with_capacity(keys.len());
        for (_, op_id) in keys {
            let item = get_consistent(&self.client, &self.table, "op_id", &op_id).await?;
            // Gone, or published since the index was read: nothing to do.
            if let Some(item) = decode_opt_item(&op_id, item)? {
                items.push(item);
            }
        }
        Ok(items)
    }
}

#[async_trait::async_trait]
impl WorkItemClaims for WorkItemStore {
    async fn claim(
        &self,
        op_id: &OpId,
        token: &str,
        now: Millis,
        claim_ttl_ms: Millis,
        skew_ms: Millis,
    ) -> Result<ClaimOutcome, StoreError> {
        WorkItemStore::claim(self, op_id, token, now, claim_ttl_ms, skew_ms).await
    }

    async fn complete(
        &self,
        op_id: &OpId,
        token: &str,
        completion: &Completion,
        now: Millis,
    ) -> Result<CompleteOutcome, StoreError> {
        WorkItemStore::complete(self, op_id, token, completion, now).await
    }

    async fn hold(
        &self,
        op_id: &OpId,
        now: Millis,
        until_ms: Millis,
        due_at_ms: Millis,
        max_hold_ms: Millis,
    ) -> Result<HoldOutcome, StoreError> {
        WorkItemStore::hold(self, op_id, now, until_ms, due_at_ms, max_hold_ms).await
    }
}
