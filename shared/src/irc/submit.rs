//! Submitting an operation: validate it, write it PENDING, then enqueue it at once (the fast
//! path). If the enqueue is lost the item is still PENDING and due, and the dispatcher sends
//! it; so a submit that returned an op id never loses the op.

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
        let payload = request.payload.to_string();
        let op = NewOp {
            op_id: request.op_id.unwrap_or_default(),
            source_region: self.region.clone(),
            target_region: request.target_region,
            kind: request.kind,
            resource: request.resource,
            payload,
            max_attempts: self.policy.max_attempts,
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
