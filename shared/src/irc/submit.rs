//! Submitting an operation: validate it, write it PENDING, then enqueue it at once (the fast
//! path). If the enqueue is lost the item is still PENDING and due, and the dispatcher sends
//! it; so a submit that returned an op id never loses the op.

use super::awaiting::{AWAIT_MS_RANGE, AWAIT_SERVING, DEFAULT_AWAIT_MS};
use super::config::RetryPolicy;
use super::ids::{OpId, Region};
use super::item::WorkItem;
use super::kinds::Kinds;
use super::queue::WorkQueue;
use super::store::{NewOp, SubmitOutcome, WorkItemStore};
use crate::clock::Clock;
use crate::StoreError;
use serde_json::Value;
use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Invalid(String),
    #[error("op {0} was already submitted with other content")]
    Conflict(OpId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An operation as a caller describes it.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    /// Given by a caller that wants to retry its submit safely; a new ULID otherwise.
    pub op_id: Option<OpId>,
    pub target_region: Region,
    pub kind: String,
    pub resource: String,
    pub payload: Value,
    /// Follow the op to this remote state (`serving`, for `group.put` only) before it is done.
    pub await_for: Option<String>,
    /// How long the target gives the awaited state (default 10 minutes).
    pub await_ms: Option<u64>,
}

pub struct Submitter<C> {
    pub store: WorkItemStore,
    pub queue: WorkQueue,
    pub kinds: Kinds,
    pub policy: RetryPolicy,
    pub region: Region,
    pub clock: C,
}

impl<C: Clock> Submitter<C> {
    /// Returns the item as stored (the existing one for a retried submit).
    pub async fn submit(&self, request: SubmitRequest) -> Result<WorkItem, SubmitError> {
        crate::ids::GroupId::parse(&request.resource)
            .map_err(|e| SubmitError::Invalid(format!("resource: {e}")))?;
        self.kinds
            .get(&request.kind)
            .and_then(|k| k.check(&request.resource, &request.payload))
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        if !request.payload.is_object() {
            return Err(SubmitError::Invalid("payload must be a JSON object".into()));
        }
        if let Some(condition) = &request.await_for {
            if condition != AWAIT_SERVING || request.kind != "group.put" {
                return Err(SubmitError::Invalid(format!(
                    "await {condition:?}: only group.put can be awaited, and only \"{AWAIT_SERVING}\""
                )));
            }
        } else if request.await_ms.is_some() {
            return Err(SubmitError::Invalid("await_ms needs await".into()));
        }
        if let Some(ms) = request.await_ms.filter(|ms| !AWAIT_MS_RANGE.contains(ms)) {
            return Err(SubmitError::Invalid(format!(
                "await_ms {ms} is not from {} to {}",
                AWAIT_MS_RANGE.start(),
                AWAIT_MS_RANGE.end()
            )));
        }
        let payload = request.payload.to_string();
        let op = NewOp {
            op_id: request.op_id.unwrap_or_default(),
            source_region: self.region.clone(),
            target_region: request.target_region,
            kind: request.kind,
            resource: request.resource,
            payload,
            max_attempts: self.policy.max_attempts,
            await_ms: request
                .await_for
                .as_ref()
                .map(|_| request.await_ms.unwrap_or(DEFAULT_AWAIT_MS)),
            await_for: request.await_for,
        };
        let now = self.clock.now_ms();
        let item = match self
            .store
            .submit(op.clone(), now, self.policy.redispatch_after_ms)
            .await?
        {
            SubmitOutcome::Submitted(item) => item,
            SubmitOutcome::AlreadySubmitted(existing) => {
                let same = existing.kind == op.kind
                    && existing.await_for == op.await_for
                    && existing.resource == op.resource
                    && existing.target_region == op.target_region
                    && serde_json::from_str::<Value>(&existing.payload).ok()
                        == serde_json::from_str::<Value>(&op.payload).ok();
                if !same {
                    return Err(SubmitError::Conflict(existing.op_id));
                }
                existing
            }
        };
        if !item.status.is_terminal() {
            // Dedup on the op id: a retried submit does not enqueue twice within SQS's window.
            if let Err(e) = self.queue.send(&item, item.op_id.as_str()).await {
                warn!(op_id = %item.op_id, error = %e, "fast-path enqueue failed; the dispatcher will send it");
            }
        }
        Ok(item)
    }
}
