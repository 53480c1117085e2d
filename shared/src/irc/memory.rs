//! In-memory implementations of what the worker talks to: the work-item store's claims
//! ([`MemoryWorkItems`], the same conditions as the DynamoDB store's, under one lock), the
//! queue's redelivery ([`MemoryQueue`], which records what it was asked) and the remote
//! regions ([`ScriptedRemote`], answers scripted per op). The worker's batch rules are unit
//! tested against them; nothing here needs AWS.

use super::awaiting::RemoteState;
use super::claim::{
    hold_refusal, ClaimOutcome, CompleteOutcome, Completion, HoldOutcome, WorkItemClaims,
};
use super::health::{Bucket, CallVerdict, RegionHealth, RegionState};
use super::ids::{OpId, Region};
use super::item::{HoldStep, Status, Transition, WorkItem, HELD_REGION_UNAVAILABLE};
use super::queue::{QueueError, Redelivery};
use super::region_health::HealthRecords;
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
        item.held = None;
        item.held_since_ms = None;
        item.status = Status::InFlight;
        item.claim_token = Some(token.to_owned());
        item.claim_expires_at_ms = Some(expires);
        item.due_at_ms = expires;
        item.updated_at_ms = now;
        item.attempts += 1;
        item.sent = true;
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
                region_hold,
            } => {
                item.last_error = Some(error.clone());
                item.retry_at_ms = Some(*retry_at_ms);
                if *region_hold {
                    item.attempts = item.attempts.saturating_sub(1);
                    item.held = Some(HELD_REGION_UNAVAILABLE.to_owned());
                    item.held_since_ms = Some(now);
                }
                (Status::Retrying, *due_at_ms)
            }
            Completion::Waiting { poll_at_ms } => {
                item.remote_state = Some(RemoteState::InProgress);
                item.polls = 0;
                (Status::WaitingRemote, *poll_at_ms)
            }
            Completion::Cancelled { reason } => {
                item.result = Some(reason.clone());
                (Status::Cancelled, now)
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

    async fn hold(
        &self,
        op_id: &OpId,
        now: Millis,
        until_ms: Millis,
        due_at_ms: Millis,
        max_hold_ms: Millis,
    ) -> Result<HoldOutcome, StoreError> {
        let mut items = locked(&self.items);
        let Some(item) = items.get_mut(op_id) else {
            return Ok(HoldOutcome::Refused(ClaimOutcome::Missing));
        };
        match item.hold_step(now, until_ms, max_hold_ms) {
            HoldStep::Refuse => Ok(hold_refusal(item.clone(), until_ms)),
            HoldStep::Hold => {
                item.held = Some(HELD_REGION_UNAVAILABLE.to_owned());
                item.held_since_ms.get_or_insert(now);
                item.retry_at_ms = Some(until_ms);
                item.due_at_ms = due_at_ms;
                Ok(HoldOutcome::Held(item.clone()))
            }
            HoldStep::Expire => {
                item.status = Status::Failed;
                item.last_error = Some(format!("{HELD_REGION_UNAVAILABLE}: held too long"));
                item.held = None;
                item.due_at_ms = now;
                item.updated_at_ms = now;
                item.status_version += 1;
                item.history.push(Transition {
                    status: Status::Failed,
                    at_ms: now,
                });
                Ok(HoldOutcome::Expired(item.clone()))
            }
        }
    }
}

/// Health records in a map, one atomic step per call, with the table's conditions.
#[derive(Debug, Default)]
pub struct MemoryHealth {
    regions: Mutex<BTreeMap<Region, RegionHealth>>,
    reads: Mutex<u32>,
}

impl MemoryHealth {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn state(&self, region: &Region) -> RegionState {
        locked(&self.regions)
            .get(region)
            .map(|h| h.state.clone())
            .unwrap_or_default()
    }

    /// Reads so far (the cache's effect).
    pub fn reads(&self) -> u32 {
        *locked(&self.reads)
    }
}

#[async_trait]
impl HealthRecords for MemoryHealth {
    async fn read(&self, region: &Region, since_ms: Millis) -> Result<RegionHealth, StoreError> {
        *locked(&self.reads) += 1;
        let mut h = locked(&self.regions)
            .get(region)
            .cloned()
            .unwrap_or_default();
        h.buckets.retain(|b| b.start_ms >= since_ms);
        Ok(h)
    }

    async fn count(
        &self,
        region: &Region,
        verdict: CallVerdict,
        bucket_start_ms: Millis,
        _expires_at_ms: Millis,
    ) -> Result<(), StoreError> {
        let mut regions = locked(&self.regions);
        let h = regions.entry(region.clone()).or_default();
        let i = match h.buckets.iter().position(|b| b.start_ms == bucket_start_ms) {
            Some(i) => i,
            None => {
                h.buckets.push(Bucket {
                    start_ms: bucket_start_ms,
                    ..Bucket::default()
                });
                h.buckets.sort_by_key(|b| b.start_ms);
                h.buckets
                    .iter()
                    .position(|b| b.start_ms == bucket_start_ms)
                    .unwrap_or(0)
            }
        };
        match verdict {
            CallVerdict::Healthy => h.buckets[i].successes += 1,
            CallVerdict::RegionFailure => h.buckets[i].failures += 1,
        }
        Ok(())
    }

    async fn open(
        &self,
        region: &Region,
        now: Millis,
        next_probe_at_ms: Millis,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut regions = locked(&self.regions);
        let state = &mut regions.entry(region.clone()).or_default().state;
        if state.open {
            return Ok(false);
        }
        state.open = true;
        state.opened_at_ms = now;
        state.probes = 0;
        state.next_probe_at_ms = next_probe_at_ms;
        state.reason = Some(reason.to_owned());
        Ok(true)
    }

    async fn probed(
        &self,
        region: &Region,
        seen: &RegionState,
        alive: bool,
        now: Millis,
        next_probe_at_ms: Millis,
    ) -> Result<bool, StoreError> {
        let mut regions = locked(&self.regions);
        let state = &mut regions.entry(region.clone()).or_default().state;
        if !state.open || state.opened_at_ms != seen.opened_at_ms || state.probes != seen.probes {
            return Ok(false);
        }
        if alive {
            state.open = false;
            state.recovered_at_ms = Some(now);
        } else {
            state.probes += 1;
            state.next_probe_at_ms = next_probe_at_ms;
        }
        Ok(true)
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

    /// Scripted like a call; unscripted, the tombstone wins.
    async fn cancel(&self, item: &WorkItem, _timeout: Duration) -> RemoteCall {
        locked(&self.calls).push(item.op_id.clone());
        locked(&self.scripts)
            .get_mut(&item.op_id)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| RemoteCall::answered(RemoteOutcome::Cancelled))
    }
}
