//! An attempt's claim on a work item: how a claim and a completion can come out, and the
//! trait the worker claims and completes through ([`WorkItemClaims`]). The DynamoDB store
//! ([`super::store::WorkItemStore`], feature `aws`) and the in-memory one
//! ([`super::memory::MemoryWorkItems`]) implement it with the same conditions.

use super::ids::OpId;
use super::item::WorkItem;
use crate::{Millis, StoreError};
use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(WorkItem),
    /// Already SUCCEEDED or FAILED: a duplicate delivery.
    Terminal(WorkItem),
    /// Another worker holds a live claim.
    Busy(WorkItem),
    Missing,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Succeeded { result: String },
    Failed { error: String },
    Retry { error: String, due_at_ms: Millis },
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
    /// Claims the item for one attempt: from PENDING, DISPATCHED or RETRYING, or from
    /// IN_FLIGHT whose claim expired (its worker died). Counts the attempt; the claim's expiry
    /// becomes `due_at_ms`, so the dispatcher finds the item again if this worker dies too.
    async fn claim(
        &self,
        op_id: &OpId,
        token: &str,
        now: Millis,
        claim_ttl_ms: Millis,
    ) -> Result<ClaimOutcome, StoreError>;

    /// Ends an attempt; only the holder of `token` can (status IN_FLIGHT with that token).
    async fn complete(
        &self,
        op_id: &OpId,
        token: &str,
        completion: &Completion,
        now: Millis,
    ) -> Result<CompleteOutcome, StoreError>;
}
