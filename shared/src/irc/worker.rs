//! irc-worker: one SQS FIFO batch at a time. Per record: decode the body (a bad body fails that
//! record alone and, after the queue's `maxReceiveCount`, reaches the DLQ with the reason
//! logged here), claim the item, call the remote region, complete on the claim token.
//!
//! A record reported failed comes back later; in a FIFO batch every later record of the same
//! message group is reported failed with it, unprocessed, so SQS redelivers them in order.
//!
//! The batch rules are core: they run against [`WorkItemClaims`], [`Redelivery`] and
//! [`Remote`] (the in-memory ones in [`super::memory`] in the unit tests below); the Lambda
//! entry point, which turns SQS's event into [`BatchRecord`]s and the failed ids into
//! `batchItemFailures`, needs the `lambda` feature.

use super::claim::{ClaimOutcome, CompleteOutcome, Completion, HoldOutcome, WorkItemClaims};
use super::config::RetryPolicy;
use super::health::Admission;
use super::ids::OpId;
use super::item::WorkItem;
use super::message::QueueMessage;
use super::queue::Redelivery;
use super::region_health::{HealthMonitor, HealthRecords};
use super::remote::{Remote, RemoteOutcome};
use crate::clock::Clock;
use crate::fault::FaultSwitch;
use crate::metrics;
use rand::Rng;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use std::time::Instant;
use tracing::{error, info, warn};

/// What the worker needs, built once per process.
pub struct Worker<S, Q, R, C, H> {
    pub store: S,
    pub queue: Q,
    pub remote: R,
    pub policy: RetryPolicy,
    pub clock: C,
    /// The target regions' health: holds ops to an unavailable region before any claim.
    pub health: HealthMonitor<H>,
    /// Obey a fault the fault proxy asks for (local fault tests only; [`crate::fault`]).
    pub faults: FaultSwitch,
}

/// One record of a batch, as the worker needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchRecord {
    pub message_id: String,
    /// The FIFO message group; `None` outside a FIFO queue (the record is a group of its own).
    pub group: Option<String>,
    pub body: Option<String>,
    pub receipt_handle: Option<String>,
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
    #[error("its backoff ends in {delay_ms} ms: a copy came early")]
    NotYet { delay_ms: u64 },
    #[error("held: its target region is unavailable or resuming (comes back in {delay_ms} ms)")]
    Held { delay_ms: u64 },
    #[error("not enough time left in the invocation")]
    OutOfTime,
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

impl<S, Q, R, C, H> Worker<S, Q, R, C, H>
where
    S: WorkItemClaims,
    Q: Redelivery,
    R: Remote,
    C: Clock,
    H: HealthRecords,
{
    /// The whole batch; returns the message ids to report failed, in the batch's order.
    /// `deadline` is the invocation's end.
    ///
    /// Records of different FIFO message groups are independent, so their groups run
    /// concurrently; inside a group records run in order, and once one fails every later
    /// record of that group is reported failed unprocessed (SQS redelivers them in order).
    /// Records without a group id (not from a FIFO queue) each form a group of their own.
    pub async fn handle_batch(&self, records: &[BatchRecord], deadline: Instant) -> Vec<String> {
        let mut groups: Vec<(Option<&str>, Vec<&BatchRecord>)> = Vec::new();
        for record in records {
            let group = record.group.as_deref();
            match groups.iter_mut().find(|(g, _)| g.is_some() && *g == group) {
                Some((_, members)) => members.push(record),
                None => groups.push((group, vec![record])),
            }
        }
        let failed = futures::future::join_all(
            groups
                .iter()
                .map(|(group, members)| self.handle_group(*group, members, deadline)),
        )
        .await;
        let failed: HashSet<String> = failed.into_iter().flatten().collect();
        records
            .iter()
            .filter(|r| failed.contains(&r.message_id))
            .map(|r| r.message_id.clone())
            .collect()
    }

    /// One message group's records in order; returns the message ids to report failed.
    async fn handle_group(
        &self,
        group: Option<&str>,
        records: &[&BatchRecord],
        deadline: Instant,
    ) -> Vec<String> {
        let mut failed = Vec::new();
        for record in records {
            let id = record.message_id.clone();
            if !failed.is_empty() {
                info!(message_id = %id, group = ?group, "held back behind a failed record of its group");
                let target = QueueMessage::decode(record.body.as_deref())
                    .map(|m| m.target_region.to_string())
                    .unwrap_or_else(|_| "unknown".to_owned());
                metrics::irc_held(&target);
                // Visible again at once: SQS keeps it behind the failed record anyway (one
                // message of a FIFO group in flight at a time), so it follows that record as
                // soon as it returns instead of after the queue's visibility timeout.
                self.redeliver_after(record, 0).await;
                failed.push(id);
                continue;
            }
            if let Err(reason) = self.handle_record(record, deadline).await {
                match &reason {
                    RecordFailure::BadMessage(_) | RecordFailure::Missing(_) => {
                        error!(message_id = %id, reason = %reason, "record failed; it reaches the DLQ after maxReceiveCount");
                        metrics::irc_dead_lettered();
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
        record: &BatchRecord,
        deadline: Instant,
    ) -> Result<(), RecordFailure> {
        let message = QueueMessage::decode(record.body.as_deref())
            .map_err(|e| RecordFailure::BadMessage(e.to_string()))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let call_time = left.saturating_sub(DEADLINE_MARGIN);
        if call_time < MIN_CALL_TIME {
            return Err(RecordFailure::OutOfTime);
        }
        let now = self.clock.now_ms();
        if let Admission::Hold { until_ms } = self
            .health
            .admission(&message.target_region, message.op_id.as_str(), now)
            .await
        {
            return self.hold(record, &message, now, until_ms).await;
        }
        let token = OpId::new().to_string();
        let item = match self
            .store
            .claim(
                &message.op_id,
                &token,
                now,
                self.policy.claim_ttl_ms,
                self.policy.clock_skew_ms,
            )
            .await?
        {
            ClaimOutcome::Claimed(item) => item,
            ClaimOutcome::Missing => return Err(RecordFailure::Missing(message.op_id)),
            ClaimOutcome::Terminal(item) => {
                info!(op_id = %item.op_id, status = %item.status, "duplicate delivery of a finished op");
                return Ok(());
            }
            ClaimOutcome::Waiting(item) => {
                info!(op_id = %item.op_id, "a copy of an op the target is working on; the dispatcher follows it");
                return Ok(());
            }
            ClaimOutcome::Busy(item) => {
                info!(op_id = %item.op_id, status = %item.status, "op is claimed elsewhere; the dispatcher resumes it if that worker dies");
                return Ok(());
            }
            ClaimOutcome::NotYet(item) => {
                // Put back, not deleted: it is this op's turn in its FIFO group once the
                // backoff ends, and the records behind it wait with it (reported failed too).
                let delay_ms = item.retry_at_ms.unwrap_or(now).saturating_sub(now);
                info!(op_id = %item.op_id, status = %item.status, delay_ms, "a copy came before the backoff ended; put back until then");
                self.redeliver_after(record, delay_ms).await;
                return Err(RecordFailure::NotYet { delay_ms });
            }
        };
        metrics::irc_attempt(item.target_region.as_str());
        // An operator asked to cancel it after an attempt: ask the target for a tombstone
        // instead of sending it, so a cancel never hides an effect that happened.
        let call = if item.cancel_requested {
            self.remote.cancel(&item, call_time).await
        } else {
            self.remote.call(&item, call_time).await
        };
        self.faults
            .after_remote_apply(call.fault, item.op_id.as_str());
        // What the call says of its region counts before the completion: the failure that
        // opens the region (or finds it open) holds the op and gives its attempt back.
        let region_hold_until = match call.verdict {
            Some(verdict) => self
                .health
                .observe(
                    &item.target_region,
                    verdict,
                    self.clock.now_ms(),
                    &describe(&call.outcome),
                )
                .await
                .map(|open| open.next_probe_at_ms.max(self.clock.now_ms() + 1_000)),
            None => None,
        };
        let completion = self.completion(&item, call.outcome, region_hold_until);
        let outcome = self
            .store
            .complete(&item.op_id, &token, &completion, self.clock.now_ms())
            .await?;
        if let CompleteOutcome::Completed(done) = &outcome {
            let latency_ms = done
                .status
                .is_terminal()
                .then(|| done.updated_at_ms.saturating_sub(done.created_at_ms) as f64);
            metrics::irc_op(done.status.as_str(), latency_ms);
        }
        match (&outcome, &completion) {
            (CompleteOutcome::ClaimLost(current), _) => {
                warn!(op_id = %item.op_id, current = ?current.as_ref().map(|i| i.status), "claim lost before completing; the newer attempt decides");
                Ok(())
            }
            (
                CompleteOutcome::Completed(done),
                Completion::Retry {
                    region_hold: true,
                    retry_at_ms,
                    ..
                },
            ) => {
                let now = self.clock.now_ms();
                let delay_ms = self
                    .health
                    .policy
                    .hold_visibility_ms(now, *retry_at_ms, now);
                metrics::irc_region_hold(done.target_region.as_str());
                info!(op_id = %done.op_id, attempts = done.attempts, delay_ms, "its region is unavailable: held, the attempt given back");
                self.redeliver_after(record, delay_ms).await;
                Err(RecordFailure::Held { delay_ms })
            }
            (
                CompleteOutcome::Completed(done),
                Completion::Retry {
                    error, retry_at_ms, ..
                },
            ) => {
                let delay_ms = retry_at_ms.saturating_sub(self.clock.now_ms());
                info!(op_id = %done.op_id, attempts = done.attempts, delay_ms, %error, "attempt failed; retrying");
                self.redeliver_after(record, delay_ms).await;
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

    /// Holds the record's op without claiming it (its region is unavailable, or it waits its
    /// turn in the region's resume ramp): one conditional write, no attempt, no status change.
    /// The message goes back until the hold ends and the records behind it in its FIFO group
    /// wait behind it, so nothing is reordered.
    async fn hold(
        &self,
        record: &BatchRecord,
        message: &QueueMessage,
        now: crate::Millis,
        until_ms: crate::Millis,
    ) -> Result<(), RecordFailure> {
        let policy = &self.health.policy;
        let due = until_ms + self.policy.redispatch_after_ms;
        let outcome = self
            .store
            .hold(&message.op_id, now, until_ms, due, policy.max_hold_ms)
            .await?;
        match outcome {
            HoldOutcome::Held(item) => {
                metrics::irc_region_hold(item.target_region.as_str());
                let delay_ms =
                    policy.hold_visibility_ms(now, until_ms, item.held_since_ms.unwrap_or(now));
                info!(op_id = %item.op_id, target = %item.target_region, until_ms, delay_ms, "held: its region is unavailable or resuming");
                self.redeliver_after(record, delay_ms).await;
                Err(RecordFailure::Held { delay_ms })
            }
            HoldOutcome::Expired(item) => {
                let latency_ms = item.updated_at_ms.saturating_sub(item.created_at_ms) as f64;
                metrics::irc_op(item.status.as_str(), Some(latency_ms));
                warn!(op_id = %item.op_id, target = %item.target_region, error = ?item.last_error, "held longer than max_hold_ms: FAILED");
                Ok(())
            }
            HoldOutcome::Refused(ClaimOutcome::Missing) => {
                Err(RecordFailure::Missing(message.op_id.clone()))
            }
            HoldOutcome::Refused(ClaimOutcome::NotYet(item)) => {
                let delay_ms = item.retry_at_ms.unwrap_or(now).saturating_sub(now);
                self.redeliver_after(record, delay_ms).await;
                Err(RecordFailure::NotYet { delay_ms })
            }
            // Finished, or claimed by a live worker: as the claim would have found it.
            HoldOutcome::Refused(other) => {
                info!(op_id = %message.op_id, outcome = ?other, "not held: finished or claimed elsewhere");
                Ok(())
            }
        }
    }

    /// Makes the record's message visible again in `delay_ms` (rounded up to seconds). If that
    /// fails the queue's visibility timeout applies, and a copy that comes early is refused by
    /// the claim.
    async fn redeliver_after(&self, record: &BatchRecord, delay_ms: u64) {
        if let Some(receipt) = record.receipt_handle.as_deref() {
            let seconds = i32::try_from(delay_ms.div_ceil(1_000)).unwrap_or(i32::MAX);
            if let Err(e) = self.queue.delay_redelivery(receipt, seconds).await {
                warn!(message_id = %record.message_id, error = %e, "could not set the redelivery delay; the queue's visibility timeout applies");
            }
        }
    }

    /// What the item becomes after an attempt with `outcome`.
    fn completion(
        &self,
        item: &WorkItem,
        outcome: RemoteOutcome,
        region_hold_until: Option<crate::Millis>,
    ) -> Completion {
        completion_for(
            item,
            outcome,
            &self.policy,
            self.clock.now_ms(),
            rand::rng().random_range(0.0..=1.0),
            region_hold_until,
        )
    }
}

/// An outcome in a few words, as the reason a region opened.
fn describe(outcome: &RemoteOutcome) -> String {
    match outcome {
        RemoteOutcome::Done { outcome, .. } => outcome.clone(),
        RemoteOutcome::Accepted { .. } => "accepted".into(),
        RemoteOutcome::Cancelled => "cancelled".into(),
        RemoteOutcome::Permanent(e) | RemoteOutcome::Transient(e) => e.chars().take(200).collect(),
    }
}

/// The pure rule behind [`Worker::completion`]: 2xx succeeds, a permanent refusal fails at
/// once, a transient one retries after the backoff until `max_attempts` attempts were made.
/// A retry is due for the dispatcher only `redispatch_after_ms` after its backoff, since the
/// message's own redelivery is expected first.
///
/// `region_hold_until`: the target region is unavailable after this call (its next probe).
/// A transient failure then holds the op until that probe and gives the attempt back, even
/// on its last attempt: the outage is the region's, and `max_hold_ms` bounds the wait.
pub(crate) fn completion_for(
    item: &WorkItem,
    outcome: RemoteOutcome,
    policy: &RetryPolicy,
    now: crate::Millis,
    unit_random: f64,
    region_hold_until: Option<crate::Millis>,
) -> Completion {
    match outcome {
        RemoteOutcome::Done { outcome, result } => Completion::Succeeded {
            result: json!({"outcome": outcome, "result": result}).to_string(),
        },
        RemoteOutcome::Accepted { .. } if item.cancel_requested => Completion::Cancelled {
            reason: "cancelled while the target worked on it: its effect was applied there; \
                     only the wait stopped"
                .into(),
        },
        RemoteOutcome::Accepted { poll_after_ms } => Completion::Waiting {
            poll_at_ms: now + poll_after_ms.clamp(1_000, 30_000),
        },
        RemoteOutcome::Cancelled => Completion::Cancelled {
            reason:
                "cancelled: the target recorded a tombstone first; the op will never apply there"
                    .into(),
        },
        RemoteOutcome::Permanent(error) => Completion::Failed { error },
        RemoteOutcome::Transient(error) if region_hold_until.is_some() => {
            let retry_at_ms = region_hold_until.unwrap_or(now);
            Completion::Retry {
                error,
                retry_at_ms,
                due_at_ms: retry_at_ms + policy.redispatch_after_ms,
                region_hold: true,
            }
        }
        RemoteOutcome::Transient(error) if item.attempts >= item.max_attempts => {
            Completion::Failed {
                error: format!("gave up after {} attempts: {error}", item.attempts),
            }
        }
        RemoteOutcome::Transient(error) => {
            let retry_at_ms = now + policy.backoff.delay_ms(item.attempts, unit_random);
            Completion::Retry {
                error,
                retry_at_ms,
                due_at_ms: retry_at_ms + policy.redispatch_after_ms,
                region_hold: false,
            }
        }
    }
}

#[cfg(feature = "lambda")]
mod sqs_entry {
    use super::*;
    use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};

    impl From<&SqsMessage> for BatchRecord {
        fn from(m: &SqsMessage) -> Self {
            BatchRecord {
                message_id: m.message_id.clone().unwrap_or_default(),
                group: m.attributes.get("MessageGroupId").cloned(),
                body: m.body.clone(),
                receipt_handle: m.receipt_handle.clone(),
            }
        }
    }

    impl<S, Q, R, C, H> Worker<S, Q, R, C, H>
    where
        S: WorkItemClaims,
        Q: Redelivery,
        R: Remote,
        C: Clock,
        H: HealthRecords,
    {
        /// An SQS batch: the failed records as `batchItemFailures` (ReportBatchItemFailures).
        pub async fn handle_sqs(&self, event: &SqsEvent, deadline: Instant) -> SqsBatchResponse {
            let records: Vec<BatchRecord> = event.records.iter().map(BatchRecord::from).collect();
            let mut response = SqsBatchResponse::default();
            for id in self.handle_batch(&records, deadline).await {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
            response
        }

        /// The Lambda entry point's body: the invocation's deadline comes from its context.
        pub async fn handle_event(
            &self,
            event: lambda_runtime::LambdaEvent<SqsEvent>,
        ) -> Result<SqsBatchResponse, std::convert::Infallible> {
            let deadline = crate::schedule::deadline_instant(event.context.deadline, &self.clock);
            let response = self.handle_sqs(&event.payload, deadline).await;
            crate::metrics::flush();
            Ok(response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irc::item::Status;

    fn item(attempts: u32) -> WorkItem {
        WorkItem {
            max_attempts: 3,
            claim_token: Some("t".into()),
            claim_expires_at_ms: Some(10),
            due_at_ms: 10,
            ..WorkItem::sample(Status::InFlight, attempts)
        }
    }

    #[test]
    fn outcomes_become_terminal_or_retry_with_backoff() {
        let policy = RetryPolicy::default();
        let done = RemoteOutcome::Done {
            outcome: "applied".into(),
            result: json!({"x": 1}),
        };
        assert!(
            matches!(completion_for(&item(1), done, &policy, 0, 0.5, None),
            Completion::Succeeded { result } if result.contains("applied"))
        );
        assert_eq!(
            completion_for(
                &item(1),
                RemoteOutcome::Permanent("HTTP 422 x: y".into()),
                &policy,
                0,
                0.5,
                None
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
            None,
        ) {
            Completion::Retry {
                retry_at_ms,
                due_at_ms,
                ..
            } => {
                assert_eq!(retry_at_ms, 1_000 + 1_000);
                assert_eq!(due_at_ms, retry_at_ms + policy.redispatch_after_ms)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            completion_for(&item(3), RemoteOutcome::Transient("HTTP 503".into()), &policy, 0, 0.5, None),
            Completion::Failed { error } if error.starts_with("gave up after 3 attempts")
        ));
    }
}

/// The batch rules against the in-memory store, queue and remote.
#[cfg(test)]
mod batch_tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::irc::health::HealthPolicy;
    use crate::irc::item::Status;
    use crate::irc::memory::{MemoryHealth, MemoryQueue, MemoryWorkItems, ScriptedRemote};
    use crate::irc::remote::RemoteCall;
    use crate::irc::{OpId, Region};

    type TestWorker = Worker<MemoryWorkItems, MemoryQueue, ScriptedRemote, FakeClock, MemoryHealth>;

    fn worker() -> TestWorker {
        Worker {
            store: MemoryWorkItems::new(),
            queue: MemoryQueue::new(),
            remote: ScriptedRemote::new(),
            policy: RetryPolicy::default(),
            clock: FakeClock::at(1_000_000),
            health: HealthMonitor::new(MemoryHealth::new(), HealthPolicy::default()),
            faults: FaultSwitch::OFF,
        }
    }

    fn eu() -> Region {
        Region::parse("eu-west-1").unwrap()
    }

    /// A PENDING item for `resource`, stored, and its record in message group `resource`.
    fn op(worker: &TestWorker, resource: &str) -> (OpId, BatchRecord) {
        let op_id = OpId::new();
        worker.store.insert(WorkItem {
            op_id: op_id.clone(),
            resource: resource.into(),
            ..WorkItem::sample(Status::Pending, 0)
        });
        let record = BatchRecord {
            message_id: format!("m-{op_id}"),
            group: Some(format!("eu-west-1#{resource}")),
            body: Some(QueueMessage::new(op_id.clone(), eu()).encode()),
            receipt_handle: Some(format!("r-{op_id}")),
        };
        (op_id, record)
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn status(worker: &TestWorker, op_id: &OpId) -> Status {
        worker.store.get(op_id).map(|i| i.status).unwrap()
    }

    fn transient() -> RemoteCall {
        RemoteCall::answered(RemoteOutcome::Transient("HTTP 503".into()))
    }

    #[tokio::test]
    async fn a_failed_record_holds_back_the_rest_of_its_group_unclaimed() {
        let w = worker();
        let (a1, ra1) = op(&w, "a");
        let (a2, ra2) = op(&w, "a");
        let (a3, ra3) = op(&w, "a");
        let (b1, rb1) = op(&w, "b");
        w.remote.script(&a1, [transient()]);
        let batch = [ra1.clone(), ra2.clone(), rb1.clone(), ra3.clone()];

        let failed = w.handle_batch(&batch, deadline()).await;

        // a1 failed, a2 and a3 behind it, in the batch's order; b1, another group, went on.
        assert_eq!(failed, vec![ra1.message_id, ra2.message_id, ra3.message_id]);
        assert_eq!(status(&w, &a1), Status::Retrying);
        assert_eq!(status(&w, &a2), Status::Pending);
        assert_eq!(status(&w, &a3), Status::Pending);
        assert_eq!(status(&w, &b1), Status::Succeeded);
        // The held-back records were neither claimed nor sent: no attempt spent on them.
        let claimed = w.store.claimed();
        assert!(claimed.contains(&a1) && claimed.contains(&b1));
        assert!(!claimed.contains(&a2) && !claimed.contains(&a3));
        assert!(!w.remote.calls().contains(&a2));
        assert_eq!(w.store.get(&a2).unwrap().attempts, 0);
    }

    #[tokio::test]
    async fn records_of_one_group_are_applied_in_batch_order() {
        let w = worker();
        let records: Vec<(OpId, BatchRecord)> = (0..5).map(|_| op(&w, "a")).collect();
        let batch: Vec<BatchRecord> = records.iter().map(|(_, r)| r.clone()).collect();

        assert!(w.handle_batch(&batch, deadline()).await.is_empty());

        let order: Vec<OpId> = records.into_iter().map(|(id, _)| id).collect();
        assert_eq!(w.remote.calls(), order);
    }

    #[tokio::test]
    async fn records_without_a_group_never_hold_each_other_back() {
        let w = worker();
        let (x, mut rx) = op(&w, "x");
        let (y, mut ry) = op(&w, "y");
        rx.group = None;
        ry.group = None;
        w.remote.script(&x, [transient()]);

        let failed = w.handle_batch(&[rx.clone(), ry], deadline()).await;

        assert_eq!(failed, vec![rx.message_id]);
        assert_eq!(status(&w, &x), Status::Retrying);
        assert_eq!(status(&w, &y), Status::Succeeded);
    }

    #[tokio::test]
    async fn a_bad_body_fails_alone_and_is_released_for_the_dlq_at_once() {
        let w = worker();
        let bad = BatchRecord {
            message_id: "bad".into(),
            group: Some("eu-west-1#a".into()),
            body: Some("{not json".into()),
            receipt_handle: Some("r-bad".into()),
        };
        let (a, ra) = op(&w, "a");
        let (b, rb) = op(&w, "b");

        let failed = w.handle_batch(&[bad, ra.clone(), rb], deadline()).await;

        // The bad record holds back its own group (order kept), not the other one.
        assert_eq!(failed, vec!["bad".to_owned(), ra.message_id]);
        assert_eq!(status(&w, &a), Status::Pending);
        assert_eq!(status(&w, &b), Status::Succeeded);
        // Released for the DLQ, and `a`, behind it, visible again at once (SQS keeps it
        // behind the bad record).
        assert_eq!(
            w.queue.delays(),
            vec![("r-bad".to_owned(), 0), (format!("r-{a}"), 0)]
        );
    }

    #[tokio::test]
    async fn a_message_for_a_missing_item_fails_for_the_dlq() {
        let w = worker();
        let record = BatchRecord {
            message_id: "ghost".into(),
            group: Some("eu-west-1#g".into()),
            body: Some(QueueMessage::new(OpId::new(), eu()).encode()),
            receipt_handle: Some("r-ghost".into()),
        };
        assert_eq!(w.handle_batch(&[record], deadline()).await, vec!["ghost"]);
        assert_eq!(w.queue.delays(), vec![("r-ghost".to_owned(), 0)]);
    }

    #[tokio::test]
    async fn a_transient_failure_retries_after_its_backoff_not_the_visibility_timeout() {
        let w = worker();
        let (a, ra) = op(&w, "a");
        w.remote.script(&a, [transient()]);

        assert_eq!(
            w.handle_batch(std::slice::from_ref(&ra), deadline()).await,
            vec![ra.message_id]
        );

        let item = w.store.get(&a).unwrap();
        assert_eq!((item.status, item.attempts), (Status::Retrying, 1));
        // Backoff of attempt 1 is at most 1 s: the message comes back within a second or two.
        let delays = w.queue.delays();
        assert_eq!(delays.len(), 1);
        assert_eq!(delays[0].0, format!("r-{a}"));
        assert!((0..=2).contains(&delays[0].1), "{delays:?}");
    }

    #[tokio::test]
    async fn a_copy_that_comes_before_the_backoff_ends_is_put_back_without_spending_an_attempt() {
        let w = worker();
        let (a, ra) = op(&w, "a");
        let (a2, ra2) = op(&w, "a");
        w.remote.script(&a, [transient()]);
        w.handle_batch(std::slice::from_ref(&ra), deadline()).await;
        let retry_at = w.store.get(&a).unwrap().retry_at_ms.unwrap();
        let calls = w.remote.calls().len();

        // Another copy (the dispatcher's re-enqueue, or a redelivery) arrives 1 ms later, with
        // the next record of its group behind it.
        w.clock.advance(1);
        let failed = w.handle_batch(&[ra.clone(), ra2.clone()], deadline()).await;

        assert_eq!(failed, vec![ra.message_id.clone(), ra2.message_id]);
        let item = w.store.get(&a).unwrap();
        assert_eq!((item.status, item.attempts), (Status::Retrying, 1));
        assert_eq!(w.remote.calls().len(), calls, "no remote call");
        assert_eq!(
            status(&w, &a2),
            Status::Pending,
            "its group waits behind it"
        );
        // Put back until the backoff ends (rounded up to whole seconds), not deleted.
        let left_ms = retry_at - w.clock.now_ms();
        let delays = w.queue.delays();
        assert_eq!(
            delays[delays.len() - 2..],
            [
                (
                    format!("r-{a}"),
                    i32::try_from(left_ms.div_ceil(1_000)).unwrap()
                ),
                (format!("r-{a2}"), 0)
            ]
        );

        // Once the backoff is over (less the skew) the copy is claimed.
        w.clock.set(retry_at - w.policy.clock_skew_ms);
        assert!(w
            .handle_batch(&[ra, op(&w, "b").1], deadline())
            .await
            .is_empty());
        assert_eq!(w.store.get(&a).unwrap().attempts, 2);
    }

    #[test]
    fn a_batch_counts_attempts_statuses_held_records_and_dead_letters() {
        let w = worker();
        let (a1, ra1) = op(&w, "a");
        let (_a2, ra2) = op(&w, "a");
        let (_b1, rb1) = op(&w, "b");
        w.remote.script(&a1, [transient()]);
        let bad = BatchRecord {
            message_id: "bad".into(),
            group: Some("eu-west-1#c".into()),
            body: Some("not json".into()),
            receipt_handle: Some("r-bad".into()),
        };

        let (failed, counts) =
            crate::metrics::testing::counted(w.handle_batch(&[ra1, ra2, rb1, bad], deadline()));

        assert_eq!(failed.len(), 3, "a1, a2 behind it, and the bad record");
        assert_eq!(counts["IrcAttempts{TargetRegion=eu-west-1}"], 2);
        assert_eq!(counts["IrcOps{Status=RETRYING}"], 1);
        assert_eq!(counts["IrcOps{Status=SUCCEEDED}"], 1);
        assert_eq!(
            counts["IrcOpLatency{Status=SUCCEEDED}"], 1,
            "one latency sample"
        );
        assert!(!counts.contains_key("IrcOpLatency{Status=RETRYING}"));
        assert_eq!(counts["IrcHeldOps{TargetRegion=eu-west-1}"], 1);
        assert_eq!(counts["IrcDeadLettered"], 1);
    }

    fn ap() -> Region {
        Region::parse("ap-southeast-2").unwrap()
    }

    /// Opens eu-west-1 in the health records, its first probe 5 s from now.
    async fn open_eu(w: &TestWorker) -> crate::Millis {
        let next = w.clock.now_ms() + 5_000;
        assert!(w
            .health
            .records
            .open(&eu(), w.clock.now_ms(), next, "HTTP 503")
            .await
            .unwrap());
        next
    }

    #[tokio::test]
    async fn an_open_region_holds_its_ops_unclaimed_and_other_regions_go_on() {
        let w = worker();
        let next_probe = open_eu(&w).await;
        let (a1, ra1) = op(&w, "a");
        let (a2, ra2) = op(&w, "a");
        let (x, mut rx) = op(&w, "x");
        w.store.insert(WorkItem {
            target_region: ap(),
            ..w.store.get(&x).unwrap()
        });
        rx.body = Some(QueueMessage::new(x.clone(), ap()).encode());
        rx.group = Some("ap-southeast-2#x".into());

        let failed = w
            .handle_batch(&[ra1.clone(), ra2.clone(), rx], deadline())
            .await;

        assert_eq!(failed, vec![ra1.message_id, ra2.message_id]);
        let held = w.store.get(&a1).unwrap();
        assert_eq!(
            (held.status, held.attempts, held.status_version),
            (Status::Pending, 0, 1),
            "no claim, no attempt, no status change, no event"
        );
        assert_eq!(held.held.as_deref(), Some("region_unavailable"));
        assert_eq!(held.retry_at_ms, Some(next_probe));
        assert_eq!(status(&w, &a2), Status::Pending);
        assert_eq!(
            status(&w, &x),
            Status::Succeeded,
            "another region is not held up"
        );
        assert_eq!(w.remote.calls(), vec![x]);
        // a1 back when the probe is due; a2, behind it in its group, visible at once (SQS
        // keeps it behind a1).
        assert_eq!(
            w.queue.delays(),
            vec![(format!("r-{a1}"), 5), (format!("r-{a2}"), 0)]
        );
    }

    #[tokio::test]
    async fn the_failure_that_opens_a_region_gives_its_attempt_back_even_the_last_one() {
        let w = worker();
        let ops: Vec<(OpId, BatchRecord)> = (0..5).map(|n| op(&w, &format!("r{n}"))).collect();
        for (id, _) in &ops {
            w.store.insert(WorkItem {
                attempts: 4,
                ..w.store.get(id).unwrap()
            });
            w.remote.script(id, [transient()]);
        }
        for (_, record) in &ops {
            w.handle_batch(std::slice::from_ref(record), deadline())
                .await;
        }
        // Four failures among no successes: not yet open; each of those ops had its 5th and
        // last attempt, so they failed.
        for (id, _) in &ops[..4] {
            assert_eq!(status(&w, id), Status::Failed);
        }
        // The fifth opened the region: held, its attempt given back, not FAILED.
        let last = w.store.get(&ops[4].0).unwrap();
        assert_eq!((last.status, last.attempts), (Status::Retrying, 4));
        assert_eq!(last.held.as_deref(), Some("region_unavailable"));
        let state = w.health.records.state(&eu());
        assert!(state.open);
        assert_eq!(last.retry_at_ms, Some(state.next_probe_at_ms));
    }

    #[tokio::test]
    async fn a_hold_longer_than_max_hold_fails_the_op_region_unavailable() {
        let w = worker();
        open_eu(&w).await;
        let (a, ra) = op(&w, "a");
        w.handle_batch(std::slice::from_ref(&ra), deadline()).await;
        assert!(w.store.get(&a).unwrap().held.is_some());

        w.clock.advance(w.health.policy.max_hold_ms);
        // Still open (its probes keep failing).
        let next = w.clock.now_ms() + 60_000;
        let seen = w.health.records.state(&eu());
        w.health
            .records
            .probed(&eu(), &seen, false, w.clock.now_ms(), next)
            .await
            .unwrap();
        assert!(
            w.handle_batch(&[ra], deadline()).await.is_empty(),
            "deleted"
        );
        let failed = w.store.get(&a).unwrap();
        assert_eq!((failed.status, failed.attempts), (Status::Failed, 0));
        assert!(failed.last_error.unwrap().starts_with("region_unavailable"));
        assert!(w.remote.calls().is_empty());
    }

    #[tokio::test]
    async fn after_recovery_held_ops_come_back_over_the_ramp_each_at_its_own_time() {
        let w = worker();
        let next_probe = open_eu(&w).await;
        let ops: Vec<(OpId, BatchRecord)> = (0..40).map(|n| op(&w, &format!("r{n}"))).collect();
        for (_, r) in &ops {
            w.handle_batch(std::slice::from_ref(r), deadline()).await;
        }
        assert!(w.remote.calls().is_empty());
        // The probe finds it alive.
        w.clock.set(next_probe);
        let seen = w.health.records.state(&eu());
        w.health
            .records
            .probed(&eu(), &seen, true, next_probe, 0)
            .await
            .unwrap();
        w.clock.advance(w.health.policy.cache_ms);

        // Half-way through the ramp, some are admitted and the rest are held to their point.
        w.clock.advance(w.health.policy.resume_ramp_ms / 2);
        for (_, r) in &ops {
            w.handle_batch(std::slice::from_ref(r), deadline()).await;
        }
        let done = ops
            .iter()
            .filter(|(id, _)| status(&w, id) == Status::Succeeded)
            .count();
        assert!((8..=32).contains(&done), "{done} of 40 admitted half-way");
        for (id, _) in &ops {
            let item = w.store.get(id).unwrap();
            if item.status != Status::Succeeded {
                assert_eq!(item.attempts, 0);
                assert!(
                    item.retry_at_ms.unwrap()
                        <= next_probe + w.health.policy.resume_ramp_ms + 1_000
                );
            }
        }
        // After the ramp, everything.
        w.clock.advance(w.health.policy.resume_ramp_ms);
        for (_, r) in &ops {
            w.handle_batch(std::slice::from_ref(r), deadline()).await;
        }
        assert!(ops
            .iter()
            .all(|(id, _)| status(&w, id) == Status::Succeeded));
        assert_eq!(w.remote.calls().len(), 40, "one call each");
    }

    #[tokio::test]
    async fn a_worker_reads_a_regions_health_about_once_a_second() {
        let w = worker();
        let records: Vec<BatchRecord> = (0..20).map(|n| op(&w, &format!("r{n}")).1).collect();
        w.handle_batch(&records, deadline()).await;
        assert_eq!(w.health.records.reads(), 1);
        w.clock.advance(w.health.policy.cache_ms);
        w.handle_batch(&[op(&w, "z").1], deadline()).await;
        assert_eq!(w.health.records.reads(), 2);
    }

    #[tokio::test]
    async fn a_202_leaves_the_op_to_the_dispatcher_and_a_stray_copy_never_reposts_it() {
        let w = worker();
        let (a, ra) = op(&w, "a");
        let (a2, ra2) = op(&w, "a");
        w.remote.script(
            &a,
            [RemoteCall::answered(RemoteOutcome::Accepted {
                poll_after_ms: 1_000,
            })],
        );

        // Acknowledged (deleted), and the next op of its group goes on.
        assert!(w
            .handle_batch(&[ra.clone(), ra2], deadline())
            .await
            .is_empty());
        let waiting = w.store.get(&a).unwrap();
        assert_eq!(
            (waiting.status, waiting.attempts, waiting.remote_state),
            (
                Status::WaitingRemote,
                1,
                Some(crate::irc::awaiting::RemoteState::InProgress)
            )
        );
        assert_eq!(
            waiting.due_at_ms,
            w.clock.now_ms() + 1_000,
            "the dispatcher's first poll"
        );
        assert_eq!(status(&w, &a2), Status::Succeeded);

        // A stray copy (a redelivery, a re-enqueue) is acknowledged without a call.
        let calls = w.remote.calls().len();
        assert!(w.handle_batch(&[ra], deadline()).await.is_empty());
        assert_eq!(w.remote.calls().len(), calls);
        assert_eq!(w.store.get(&a).unwrap().attempts, 1);
    }

    #[tokio::test]
    async fn a_cancel_requested_op_asks_the_target_for_a_tombstone_instead_of_sending_it() {
        let w = worker();
        let (won, r_won) = op(&w, "a");
        let (late, r_late) = op(&w, "b");
        let (waiting, r_waiting) = op(&w, "c");
        for id in [&won, &late, &waiting] {
            w.store.insert(WorkItem {
                cancel_requested: true,
                ..w.store.get(id).unwrap()
            });
        }
        // The tombstone wins for `won` (the default); `late` had been applied; `waiting` is in
        // progress at the target.
        w.remote.script(&late, [ScriptedRemote::applied()]);
        w.remote.script(
            &waiting,
            [RemoteCall::answered(RemoteOutcome::Accepted {
                poll_after_ms: 1_000,
            })],
        );

        assert!(w
            .handle_batch(&[r_won, r_late, r_waiting], deadline())
            .await
            .is_empty());

        assert_eq!(status(&w, &won), Status::Cancelled);
        assert_eq!(
            status(&w, &late),
            Status::Succeeded,
            "a late cancel never hides the effect"
        );
        let stopped = w.store.get(&waiting).unwrap();
        assert_eq!(stopped.status, Status::Cancelled);
        assert!(stopped.result.unwrap().contains("effect was applied"));
    }

    #[tokio::test]
    async fn a_permanent_refusal_fails_the_op_and_lets_the_group_go_on() {
        let w = worker();
        let (a1, ra1) = op(&w, "a");
        let (a2, ra2) = op(&w, "a");
        w.remote.script(
            &a1,
            [RemoteCall::answered(RemoteOutcome::Permanent(
                "HTTP 422 invalid_payload: x".into(),
            ))],
        );

        assert!(w.handle_batch(&[ra1, ra2], deadline()).await.is_empty());

        let failed = w.store.get(&a1).unwrap();
        assert_eq!(failed.status, Status::Failed);
        assert_eq!(
            failed.last_error.as_deref(),
            Some("HTTP 422 invalid_payload: x")
        );
        assert_eq!(status(&w, &a2), Status::Succeeded);
    }

    #[tokio::test]
    async fn a_duplicate_delivery_of_a_finished_or_claimed_op_does_nothing() {
        let w = worker();
        let (done, r_done) = op(&w, "a");
        let (busy, r_busy) = op(&w, "b");
        assert!(w
            .handle_batch(std::slice::from_ref(&r_done), deadline())
            .await
            .is_empty());
        // Another worker holds a live claim on `busy`.
        w.store
            .claim(&busy, "other", 1_000_000, 60_000, 0)
            .await
            .unwrap();
        let calls_before = w.remote.calls().len();

        assert!(w
            .handle_batch(&[r_done, r_busy], deadline())
            .await
            .is_empty());

        assert_eq!(w.remote.calls().len(), calls_before);
        assert_eq!(w.store.get(&done).unwrap().attempts, 1);
        let held = w.store.get(&busy).unwrap();
        assert_eq!(held.claim_token.as_deref(), Some("other"));
        assert_eq!(held.attempts, 1);
    }

    #[tokio::test]
    async fn an_expired_claim_is_taken_over_and_the_stale_completion_dropped() {
        let w = worker();
        let (a, ra) = op(&w, "a");
        // A worker claimed it long ago and died; its claim has expired.
        w.store.claim(&a, "dead", 0, 10, 0).await.unwrap();

        assert!(w.handle_batch(&[ra], deadline()).await.is_empty());

        let item = w.store.get(&a).unwrap();
        assert_eq!((item.status, item.attempts), (Status::Succeeded, 2));
        // The dead worker's completion, arriving late, changes nothing.
        let late = w
            .store
            .complete(
                &a,
                "dead",
                &Completion::Failed {
                    error: "late".into(),
                },
                2_000_000,
            )
            .await
            .unwrap();
        assert!(
            matches!(late, CompleteOutcome::ClaimLost(Some(i)) if i.status == Status::Succeeded)
        );
    }

    #[tokio::test]
    async fn with_no_time_left_records_are_failed_unclaimed() {
        let w = worker();
        let (a, ra) = op(&w, "a");
        let failed = w
            .handle_batch(std::slice::from_ref(&ra), Instant::now())
            .await;
        assert_eq!(failed, vec![ra.message_id]);
        assert!(w.store.claimed().is_empty());
        assert_eq!(w.store.get(&a).unwrap().attempts, 0);
    }

    #[tokio::test]
    async fn a_queue_that_cannot_set_the_delay_still_reports_the_record_failed() {
        let w = worker();
        let (a, ra) = op(&w, "a");
        w.remote.script(&a, [transient()]);
        w.queue.fail();
        assert_eq!(
            w.handle_batch(std::slice::from_ref(&ra), deadline()).await,
            vec![ra.message_id]
        );
        assert_eq!(status(&w, &a), Status::Retrying);
    }
}
