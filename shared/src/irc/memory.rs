//! In-memory implementations of what the worker talks to: the work-item store's claims
//! ([`MemoryWorkItems`], the same conditions as the DynamoDB store's, under one lock), the
//! queue's redelivery ([`MemoryQueue`], which records what it was asked) and the remote
//! regions ([`ScriptedRemote`], answers scripted per op). The worker's batch rules are unit
//! tested against them; nothing here needs AWS.

use super::claim::{ClaimOutcome, CompleteOutcome, Completion, WorkItemClaims};
use super::ids::OpId;
use super::item::{Status, Transition, WorkItem};
use super::queue::{QueueError, Redelivery};
use super::remote::{Remote, RemoteCall, RemoteOutcome};
use crate::{Millis, StoreError};
use async_trait::async_trait;
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Work items in a map. Every call is one atomic step, as one conditional write is.
#[derive(Debug, Default)]
pub struct MemoryWorkItems {
    items: Mutex<BTreeMap<OpId, WorkItem>>,
    claims: Mutex<Vec<OpId>>,
}

impl MemoryWorkItems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, item: WorkItem) {
        locked(&self.items).insert(item.op_id.clone(), item);
    }

    pub fn get(&self, op_id: &OpId) -> Option<WorkItem> {
        locked(&self.items).get(op_id).cloned()
    }

    /// Every successful claim, in order (which records the worker actually started).
    pub fn claimed(&self) -> Vec<OpId> {
        locked(&self.claims).clone()
    }
}

#[async_trait]
impl WorkItemClaims for MemoryWorkItems {
    async fn claim(
        &self,
        op_id: &OpId,
        token: &str,
        now: Millis,
        claim_ttl_ms: Millis,
        skew_ms: Millis,
    ) -> Result<ClaimOutcome, StoreError> {
        let mut items = locked(&self.items);
        let Some(item) = items.get_mut(op_id) else {
            return Ok(ClaimOutcome::Missing);
        };
        if let Some(refusal) = item.claim_refusal(now, skew_ms) {
            return Ok(ClaimOutcome::refused(item.clone(), refusal));
        }
        let expires = now + claim_ttl_ms;
        item.status = Status::InFlight;
        item.claim_token = Some(token.to_owned());
        item.claim_expires_at_ms = Some(expires);
        item.due_at_ms = expires;
        item.updated_at_ms = now;
        item.attempts += 1;
        item.status_version += 1;
        item.history.push(Transition {
            status: Status::InFlight,
            at_ms: now,
        });
        locked(&self.claims).push(op_id.clone());
        Ok(ClaimOutcome::Claimed(item.clone()))
    }

    async fn complete(
        &self,
        op_id: &OpId,
        token: &str,
        completion: &Completion,
        now: Millis,
    ) -> Result<CompleteOutcome, StoreError> {
        let mut items = locked(&self.items);
        let Some(item) = items.get_mut(op_id) else {
            return Ok(CompleteOutcome::ClaimLost(None));
        };
        if item.status != Status::InFlight || item.claim_token.as_deref() != Some(token) {
            return Ok(CompleteOutcome::ClaimLost(Some(item.clone())));
        }
        let (status, due) = match completion {
            Completion::Succeeded { result } => {
                item.result = Some(result.clone());
                (Status::Succeeded, now)
            }
            Completion::Failed { error } => {
                item.last_error = Some(error.clone());
                (Status::Failed, now)
            }
            Completion::Retry {
                error,
                retry_at_ms,
                due_at_ms,
            } => {
                item.last_error = Some(error.clone());
                item.retry_at_ms = Some(*retry_at_ms);
                (Status::Retrying, *due_at_ms)
            }
        };
        item.status = status;
        item.due_at_ms = due;
        item.updated_at_ms = now;
        item.claim_token = None;
        item.claim_expires_at_ms = None;
        item.status_version += 1;
        item.history.push(Transition { status, at_ms: now });
        Ok(CompleteOutcome::Completed(item.clone()))
    }
}

/// Records every redelivery delay asked for, by receipt handle; can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    delays: Mutex<Vec<(String, i32)>>,
    failing: Mutex<bool>,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// `(receipt handle, seconds)` in the order asked.
    pub fn delays(&self) -> Vec<(String, i32)> {
        locked(&self.delays).clone()
    }

    /// From now on every call fails (SQS unreachable).
    pub fn fail(&self) {
        *locked(&self.failing) = true;
    }
}

#[async_trait]
impl Redelivery for MemoryQueue {
    async fn delay_redelivery(&self, receipt_handle: &str, seconds: i32) -> Result<(), QueueError> {
        locked(&self.delays).push((receipt_handle.to_owned(), seconds));
        if *locked(&self.failing) {
            return Err(QueueError {
                operation: "ChangeMessageVisibility",
                message: "queue unavailable (scripted)".into(),
            });
        }
        Ok(())
    }
}

/// Answers scripted per op id, in order; an op with no script left is applied.
#[derive(Debug, Default)]
pub struct ScriptedRemote {
    scripts: Mutex<BTreeMap<OpId, VecDeque<RemoteCall>>>,
    calls: Mutex<Vec<OpId>>,
}

impl ScriptedRemote {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next calls for `op_id` get these answers.
    pub fn script(&self, op_id: &OpId, answers: impl IntoIterator<Item = RemoteCall>) {
        locked(&self.scripts)
            .entry(op_id.clone())
            .or_default()
            .extend(answers);
    }

    /// Every op called, in order.
    pub fn calls(&self) -> Vec<OpId> {
        locked(&self.calls).clone()
    }

    /// The answer of an op the remote applied.
    pub fn applied() -> RemoteCall {
        RemoteCall::answered(RemoteOutcome::Done {
            outcome: "applied".into(),
            result: json!({}),
        })
    }
}

#[async_trait]
impl Remote for ScriptedRemote {
    async fn call(&self, item: &WorkItem, _timeout: Duration) -> RemoteCall {
        locked(&self.calls).push(item.op_id.clone());
        locked(&self.scripts)
            .get_mut(&item.op_id)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(Self::applied)
    }
}
