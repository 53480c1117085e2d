//! irc-worker: one SQS FIFO batch at a time. Per record: decode the body (a bad body fails that
//! record alone and, after the queue's `maxReceiveCount`, reaches the DLQ with the reason
//! logged here), claim the item, call the remote region, complete on the claim token.
//!
//! A record reported failed comes back later; in a FIFO batch every later record of the same
//! message group is reported failed with it, unprocessed, so SQS redelivers them in order.

use super::config::RetryPolicy;
use super::ids::OpId;
use super::item::WorkItem;
use super::message::QueueMessage;
use super::queue::WorkQueue;
use super::remote::{RemoteClient, RemoteOutcome};
use super::store::{ClaimOutcome, CompleteOutcome, Completion, WorkItemStore};
use crate::clock::Clock;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use rand::Rng;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use std::time::Instant;
use tracing::{error, info, warn};

/// What the worker needs, built once per process.
pub struct Worker<C> {
    pub store: WorkItemStore,
    pub queue: WorkQueue,
    pub remote: RemoteClient,
    pub policy: RetryPolicy,
    pub clock: C,
    /// Honour [`super::remote::FAULT_HEADER`] `exit-after-apply` (local fault tests only).
    pub fault_injection: bool,
}

/// Time kept back from the invocation's deadline: completing the item and answering SQS.
const DEADLINE_MARGIN: Duration = Duration::from_secs(3);
/// A record is not started with less than this left for its remote call.
const MIN_CALL_TIME: Duration = Duration::from_millis(500);

/// Why a record is reported failed (it comes back later, or goes to the DLQ).
#[derive(Debug, thiserror::Error)]
enum RecordFailure {
    #[error("bad message: {0}")]
    BadMessage(String),
    #[error("no work item {0}")]
    Missing(OpId),
    #[error("retrying in {delay_ms} ms: {error}")]
    Retry { delay_ms: u64, error: String },
    #[error("not enough time left in the invocation")]
    OutOfTime,
    #[error(transparent)]
    Store(#[from] crate::aws::StoreError),
}

impl<C: Clock> Worker<C> {
    /// The whole batch. `deadline` is the invocation's end.
    ///
    /// Records of different FIFO message groups are independent, so their groups run
    /// concurrently; inside a group records run in order, and once one fails every later
    /// record of that group is reported failed unprocessed (SQS redelivers them in order).
    /// Records without a group id (not from a FIFO queue) each form a group of their own.
    pub async fn handle_batch(&self, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        let mut groups: Vec<(Option<String>, Vec<&SqsMessage>)> = Vec::new();
        for record in &event.records {
            let group = record.attributes.get("MessageGroupId").cloned();
            match groups.iter_mut().find(|(g, _)| g.is_some() && *g == group) {
                Some((_, records)) => records.push(record),
                None => groups.push((group, vec![record])),
            }
        }
        let failed = futures::future::join_all(
            groups
                .iter()
                .map(|(group, records)| self.handle_group(group.as_deref(), records, deadline)),
        )
        .await;
        let failed: HashSet<String> = failed.into_iter().flatten().collect();
        let mut response = SqsBatchResponse::default();
        // Report in the batch's order.
        for record in &event.records {
            let id = record.message_id.clone().unwrap_or_default();
            if failed.contains(&id) {
                response.batch_item_failures.push(failure(&id));
            }
        }
        response
    }

    /// One message group's records in order; returns the message ids to report failed.
    async fn handle_group(
        &self,
        group: Option<&str>,
        records: &[&SqsMessage],
        deadline: Instant,
    ) -> Vec<String> {
        let mut failed = Vec::new();
        for record in records {
            let id = record.message_id.clone().unwrap_or_default();
            if !failed.is_empty() {
                info!(message_id = %id, group = ?group, "held back behind a failed record of its group");
                failed.push(id);
                continue;
            }
            if let Err(reason) = self.handle_record(record, deadline).await {
                match &reason {
                    RecordFailure::BadMessage(_) | RecordFailure::Missing(_) => {
                        error!(message_id = %id, reason = %reason, "record failed; it reaches the DLQ after maxReceiveCount");
                        // It can never succeed: let SQS count its receives without waiting
                        // out the visibility timeout each time, so it reaches the DLQ fast.
                        if let Some(receipt) = record.receipt_handle.as_deref() {
                            if let Err(e) = self.queue.delay_redelivery(receipt, 0).await {
                                warn!(message_id = %id, error = %e, "could not release the bad message");
                            }
                        }
                    }
                    _ => {
                        warn!(message_id = %id, reason = %reason, "record failed; SQS delivers it again")
                    }
                }
                failed.push(id);
            }
        }
        failed
    }

    async fn handle_record(
        &self,
        record: &SqsMessage,
        deadline: Instant,
    ) -> Result<(), RecordFailure> {
        let message = QueueMessage::decode(record.body.as_deref())
            .map_err(|e| RecordFailure::BadMessage(e.to_string()))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let call_time = left.saturating_sub(DEADLINE_MARGIN);
        if call_time < MIN_CALL_TIME {
            return Err(RecordFailure::OutOfTime);
        }
        let token = OpId::new().to_string();
        let now = self.clock.now_ms();
        let item = match self
            .store
            .claim(&message.op_id, &token, now, self.policy.claim_ttl_ms)
            .await?
        {
            ClaimOutcome::Claimed(item) => item,
            ClaimOutcome::Missing => return Err(RecordFailure::Missing(message.op_id)),
            ClaimOutcome::Terminal(item) => {
                info!(op_id = %item.op_id, status = %item.status, "duplicate delivery of a finished op");
                return Ok(());
            }
            ClaimOutcome::Busy(item) => {
                info!(op_id = %item.op_id, status = %item.status, "op is claimed elsewhere; the dispatcher resumes it if that worker dies");
                return Ok(());
            }
        };
        let call = self.remote.call(&item, call_time).await;
        if self.fault_injection && call.fault.as_deref() == Some("exit-after-apply") {
            error!(op_id = %item.op_id, "fault injection: worker exits after the remote applied, before completing");
            std::process::exit(1);
        }
        let completion = self.completion(&item, call.outcome);
        let outcome = self
            .store
            .complete(&item.op_id, &token, &completion, self.clock.now_ms())
            .await?;
        match (&outcome, &completion) {
            (CompleteOutcome::ClaimLost(current), _) => {
                warn!(op_id = %item.op_id, current = ?current.as_ref().map(|i| i.status), "claim lost before completing; the newer attempt decides");
                Ok(())
            }
            (CompleteOutcome::Completed(done), Completion::Retry { error, due_at_ms }) => {
                let delay_ms = due_at_ms
                    .saturating_sub(self.policy.redispatch_after_ms)
                    .saturating_sub(self.clock.now_ms());
                info!(op_id = %done.op_id, attempts = done.attempts, delay_ms, %error, "attempt failed; retrying");
                if let Some(receipt) = record.receipt_handle.as_deref() {
                    let seconds = i32::try_from(delay_ms.div_ceil(1_000)).unwrap_or(i32::MAX);
                    if let Err(e) = self.queue.delay_redelivery(receipt, seconds).await {
                        warn!(op_id = %done.op_id, error = %e, "could not set the retry delay; the queue's visibility timeout applies");
                    }
                }
                Err(RecordFailure::Retry {
                    delay_ms,
                    error: error.clone(),
                })
            }
            (CompleteOutcome::Completed(done), _) => {
                info!(op_id = %done.op_id, status = %done.status, attempts = done.attempts, "op finished");
                Ok(())
            }
        }
    }

    /// What the item becomes after an attempt with `outcome`.
    pub fn completion(&self, item: &WorkItem, outcome: RemoteOutcome) -> Completion {
        completion_for(
            item,
            outcome,
            &self.policy,
            self.clock.now_ms(),
            rand::rng().random_range(0.0..=1.0),
        )
    }
}

/// The pure rule behind [`Worker::completion`]: 2xx succeeds, a permanent refusal fails at
/// once, a transient one retries after the backoff until `max_attempts` attempts were made.
/// A retry is due for the dispatcher only `redispatch_after_ms` after its backoff, since the
/// message's own redelivery is expected first.
pub fn completion_for(
    item: &WorkItem,
    outcome: RemoteOutcome,
    policy: &RetryPolicy,
    now: crate::Millis,
    unit_random: f64,
) -> Completion {
    match outcome {
        RemoteOutcome::Done { outcome, result } => Completion::Succeeded {
            result: json!({"outcome": outcome, "result": result}).to_string(),
        },
        RemoteOutcome::Permanent(error) => Completion::Failed { error },
        RemoteOutcome::Transient(error) if item.attempts >= item.max_attempts => {
            Completion::Failed {
                error: format!("gave up after {} attempts: {error}", item.attempts),
            }
        }
        RemoteOutcome::Transient(error) => Completion::Retry {
            error,
            due_at_ms: now
                + policy.backoff.delay_ms(item.attempts, unit_random)
                + policy.redispatch_after_ms,
        },
    }
}

fn failure(message_id: &str) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = message_id.to_owned();
    f
}

impl<C: Clock> Worker<C> {
    /// The Lambda entry point's body: the invocation's deadline comes from its context.
    pub async fn handle_event(
        &self,
        event: lambda_runtime::LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, std::convert::Infallible> {
        let deadline = crate::schedule::deadline_instant(event.context.deadline, &self.clock);
        Ok(self.handle_batch(event.payload, deadline).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irc::item::Status;
    use crate::irc::{OpId, Region};

    fn item(attempts: u32) -> WorkItem {
        WorkItem {
            op_id: OpId::new(),
            source_region: Region::parse("us-east-1").unwrap(),
            target_region: Region::parse("eu-west-1").unwrap(),
            kind: "group.put".into(),
            resource: "g".into(),
            seq: 1,
            payload: "{}".into(),
            status: Status::InFlight,
            attempts,
            max_attempts: 3,
            claim_token: Some("t".into()),
            claim_expires_at_ms: Some(10),
            due_at_ms: 10,
            result: None,
            last_error: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            history: Vec::new(),
        }
    }

    #[test]
    fn outcomes_become_terminal_or_retry_with_backoff() {
        let policy = RetryPolicy::default();
        let done = RemoteOutcome::Done {
            outcome: "applied".into(),
            result: json!({"x": 1}),
        };
        assert!(matches!(completion_for(&item(1), done, &policy, 0, 0.5),
            Completion::Succeeded { result } if result.contains("applied")));
        assert_eq!(
            completion_for(
                &item(1),
                RemoteOutcome::Permanent("HTTP 422 x: y".into()),
                &policy,
                0,
                0.5
            ),
            Completion::Failed {
                error: "HTTP 422 x: y".into()
            }
        );
        // Attempt 2 failed transiently: backoff step 2 s, in [1 s, 2 s], then the dispatcher's grace.
        match completion_for(
            &item(2),
            RemoteOutcome::Transient("HTTP 500".into()),
            &policy,
            1_000,
            0.0,
        ) {
            Completion::Retry { due_at_ms, .. } => {
                assert_eq!(due_at_ms, 1_000 + 1_000 + policy.redispatch_after_ms)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            completion_for(&item(3), RemoteOutcome::Transient("HTTP 503".into()), &policy, 0, 0.5),
            Completion::Failed { error } if error.starts_with("gave up after 3 attempts")
        ));
    }
}
