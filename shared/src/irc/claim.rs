//! An attempt's claim on a work item: how a claim and a completion can come out, and the
//! trait the worker claims and completes through ([`WorkItemClaims`]). The DynamoDB store
//! ([`super::store::WorkItemStore`], feature `aws`) and the in-memory one
//! ([`super::memory::MemoryWorkItems`]) implement it with the same conditions.

use super::ids::OpId;
use super::item::{ClaimRefusal, Status, WorkItem};
use crate::{Millis, StoreError};
use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(WorkItem),
    /// Already SUCCEEDED or FAILED: a duplicate delivery.
    Terminal(WorkItem),
    /// Another worker holds a live claim.
    Busy(WorkItem),
    /// WAITING_REMOTE: the dispatcher follows it; the message is a stray copy.
    Waiting(WorkItem),
    /// The last attempt's backoff has not ended (`retry_at_ms`): a copy of the message, or the
    /// dispatcher's re-enqueue, came early. Nothing was written; no attempt was spent.
    NotYet(WorkItem),
    Missing,
}

impl ClaimOutcome {
    /// The outcome for an item whose claim was refused for `refusal`.
    pub fn refused(item: WorkItem, refusal: ClaimRefusal) -> Self {
        match refusal {
            ClaimRefusal::Terminal => ClaimOutcome::Terminal(item),
            ClaimRefusal::Busy => ClaimOutcome::Busy(item),
            ClaimRefusal::NotYet => ClaimOutcome::NotYet(item),
            ClaimRefusal::Waiting => ClaimOutcome::Waiting(item),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Succeeded {
        result: String,
    },
    Failed {
        error: String,
    },
    /// RETRYING: claimable from `retry_at_ms` (the backoff's end), due for the dispatcher at
    /// `due_at_ms` (later: the message's own redelivery is expected first).
    ///
    /// `region_hold`: the attempt failed because its target region is unavailable (this
    /// failure opened it, or found it open). The attempt is given back (`attempts` - 1) and the
    /// op is held (`held`, `held_since_ms`) until `retry_at_ms`, the region's next probe: a
    /// region's outage is the region's, and must not use up the op's attempts.
    Retry {
        error: String,
        retry_at_ms: Millis,
        due_at_ms: Millis,
        region_hold: bool,
    },
    /// WAITING_REMOTE: the target applied it and answered 202; the dispatcher polls it from
    /// `poll_at_ms` (`remote_state` IN_PROGRESS).
    Waiting {
        poll_at_ms: Millis,
    },
    /// CANCELLED: the target's tombstone won, or the wait was stopped.
    Cancelled {
        reason: String,
    },
}

/// How a hold came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Held until `retry_at_ms`: no attempt, no status change, no event.
    Held(WorkItem),
    /// It had been held longer than `max_hold_ms`: now FAILED `region_unavailable`.
    Expired(WorkItem),
    /// Not holdable as it stands: finished, claimed, or its own backoff ends after the hold.
    Refused(ClaimOutcome),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteOutcome {
    Completed(WorkItem),
    /// The claim expired and someone else claimed the item; this attempt's outcome is dropped
    /// (the remote is idempotent, so the newer attempt gets the same result).
    ClaimLost(Option<WorkItem>),
}

/// What the worker needs of the work-item store: one conditional write each.
#[async_trait]
pub trait WorkItemClaims: Send + Sync {
    /// Claims the item for one attempt: from PENDING, DISPATCHED or RETRYING once its
    /// `retry_at_ms` is at most `skew_ms` away, or from IN_FLIGHT whose claim expired (its
    /// worker died); the rule is [`WorkItem::claim_refusal`]. Counts the attempt; the claim's
    /// expiry becomes `due_at_ms`, so the dispatcher finds the item again if this worker dies
    /// too.
    async fn claim(
        &self,
        op_id: &OpId,
        token: &str,
        now: Millis,
        claim_ttl_ms: Millis,
        skew_ms: Millis,
    ) -> Result<ClaimOutcome, StoreError>;

    /// Holds a waiting op (PENDING, DISPATCHED or RETRYING) until `until_ms` without claiming
    /// it: `held`, `held_since_ms` (kept from the hold's start), `retry_at_ms = until_ms`,
    /// `due_at_ms`; no attempt, no status change. An op held since `now - max_hold_ms` or
    /// earlier fails `region_unavailable` instead. A `retry_at_ms` later than `until_ms` (its
    /// own backoff) is never shortened: refused as [`ClaimOutcome::NotYet`].
    async fn hold(
        &self,
        op_id: &OpId,
        now: Millis,
        until_ms: Millis,
        due_at_ms: Millis,
        max_hold_ms: Millis,
    ) -> Result<HoldOutcome, StoreError>;

    /// Ends an attempt; only the holder of `token` can (status IN_FLIGHT with that token).
    async fn complete(
        &self,
        op_id: &OpId,
        token: &str,
        completion: &Completion,
        now: Millis,
    ) -> Result<CompleteOutcome, StoreError>;
}

/// Why a hold was refused, from the item as it stands (the rule both stores apply).
pub fn hold_refusal(item: WorkItem, until_ms: Millis) -> HoldOutcome {
    match item.status {
        Status::Succeeded | Status::Failed | Status::Cancelled => {
            HoldOutcome::Refused(ClaimOutcome::Terminal(item))
        }
        Status::WaitingRemote => HoldOutcome::Refused(ClaimOutcome::Waiting(item)),
        Status::Pending | Status::Dispatched | Status::Retrying
            if item.retry_at_ms.is_some_and(|at| at > until_ms) =>
        {
            HoldOutcome::Refused(ClaimOutcome::NotYet(item))
        }
        _ => HoldOutcome::Refused(ClaimOutcome::Busy(item)),
    }
}
