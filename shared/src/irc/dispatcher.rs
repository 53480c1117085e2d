//! irc-dispatcher: the safety net behind the submit's fast-path enqueue. On a schedule, and in
//! a loop inside each invocation, it finds items whose `due_at_ms` passed — PENDING or
//! DISPATCHED whose message was lost, RETRYING whose redelivery was lost, IN_FLIGHT whose
//! worker died (the claim's expiry is its due time) — marks each DISPATCHED (conditionally, so
//! concurrent sweeps enqueue it once) and enqueues it. Each sweep also publishes the status
//! events irc-events did not ([`super::events`]), and first probes the target regions that are
//! unavailable ([`super::region_health::probe_round`]); their due items are left alone.

use super::awaiting::{poll_after_ms, RemoteState};
use super::config::RetryPolicy;
use super::events_publisher::StatusPublisher;
use super::health::HealthPolicy;
use super::ids::Region;
use super::item::{Status, WorkItem};
use super::queue::WorkQueue;
use super::region_health::{probe_round, RegionHealthTable};
use super::remote::{classify, RemoteClient, RemoteOutcome};
use super::store::FollowUp;
use super::store::WorkItemStore;
use crate::clock::Clock;
use crate::metrics;
use futures::StreamExt;
use serde::Serialize;
use std::time::Duration;
use std::time::Instant;
use tracing::{info, warn};

pub struct Dispatcher<C> {
    pub store: WorkItemStore,
    pub queue: WorkQueue,
    pub policy: RetryPolicy,
    pub clock: C,
    /// The target regions' health records, and how they are judged.
    pub health: RegionHealthTable,
    pub health_policy: HealthPolicy,
    /// irc-remote in each target region: probes of unavailable regions and polls of waiting
    /// ops (`GET /v1/operations/{id}`, signed).
    pub remote: RemoteClient,
    /// The target regions it probes (those with an endpoint).
    pub regions: Vec<Region>,
    /// Time between sweeps inside one invocation.
    pub sweep_interval: Duration,
    /// Publishes status changes left unpublished (the stream's safety net).
    pub events: StatusPublisher,
}

/// A status change is left to irc-events (the stream) this long before the sweep publishes
/// it: the stream delivers in well under a second, and retries a failing batch for a while.
pub const EVENTS_GRACE_MS: crate::Millis = 60_000;

/// What one sweep (or one invocation) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub sweeps: u64,
    pub found: u64,
    pub enqueued: u64,
    /// Moved on between the query and the conditional mark (another sweep or a worker).
    pub skipped: u64,
    /// Status events published because the stream had not.
    pub events: u64,
    /// Due items left alone because their target region is unavailable (their messages are
    /// held in the queue; they are enqueued once it recovers if theirs were lost).
    pub held: u64,
    /// Probes of unavailable regions.
    pub probes: u64,
    /// Polls of waiting ops.
    pub polls: u64,
    pub errors: u64,
}

/// A probe gets this long (a region that drops traffic costs the sweep at most this).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// A poll of a waiting op gets this long; this many run at once.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(3);
const FOLLOW_CONCURRENCY: usize = 8;

/// What a poll's answer makes of a waiting op: ended by a final answer, otherwise polled again
/// after [`poll_after_ms`] of the polls so far (1 s doubling to 30 s).
pub(crate) fn follow_up_for(
    item: &WorkItem,
    outcome: RemoteOutcome,
    now: crate::Millis,
) -> FollowUp {
    match outcome {
        RemoteOutcome::Done { outcome, result } => FollowUp::Ended {
            status: Status::Succeeded,
            field: "result",
            text: serde_json::json!({"outcome": outcome, "result": result}).to_string(),
            remote_state: RemoteState::Succeeded,
        },
        RemoteOutcome::Permanent(error) => FollowUp::Ended {
            status: Status::Failed,
            field: "last_error",
            text: error,
            remote_state: RemoteState::Failed,
        },
        RemoteOutcome::Accepted { .. } | RemoteOutcome::Transient(_) | RemoteOutcome::Cancelled => {
            FollowUp::Poll {
                next_at_ms: now + poll_after_ms(item.polls + 1),
            }
        }
    }
}

/// Items per status per sweep.
const PAGE: i32 = 100;
/// No sweep starts with less than this left before the invocation's deadline.
const STOP_MARGIN: Duration = Duration::from_secs(3);

impl<C: Clock> Dispatcher<C> {
    pub async fn sweep(&self) -> SweepReport {
        let mut report = SweepReport {
            sweeps: 1,
            ..SweepReport::default()
        };
        let round = probe_round(
            &self.health,
            &self.remote,
            &self.health_policy,
            &self.regions,
            self.clock.now_ms(),
            PROBE_TIMEOUT,
        )
        .await;
        report.probes += round.probes;
        report.errors += round.errors;
        metrics::irc_regions_unavailable(round.unavailable.len());
        for status in Status::SWEPT {
            let now = self.clock.now_ms();
            let items = match self.store.due(status, now, PAGE).await {
                Ok(items) => items,
                Err(e) => {
                    warn!(%status, error = %e, "sweep query failed");
                    report.errors += 1;
                    continue;
                }
            };
            if status == Status::Retrying {
                self.sample_oldest_retrying(now).await;
            }
            for item in items {
                report.found += 1;
                if round.unavailable.contains(&item.target_region) {
                    report.held += 1;
                    continue;
                }
                match self
                    .store
                    .mark_dispatched(&item, now, self.policy.redispatch_after_ms)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        report.skipped += 1;
                        continue;
                    }
                    Err(e) => {
                        warn!(op_id = %item.op_id, error = %e, "could not mark dispatched");
                        report.errors += 1;
                        continue;
                    }
                }
                // Marked first: if this send is lost, the item is due again after
                // redispatch_after_ms and the next sweep sends it.
                let dedup = format!("{}-{now}", item.op_id);
                match self.queue.send(&item, &dedup).await {
                    Ok(()) => {
                        report.enqueued += 1;
                        info!(op_id = %item.op_id, was = %item.status, attempts = item.attempts, "re-enqueued");
                    }
                    Err(e) => {
                        warn!(op_id = %item.op_id, error = %e, "enqueue failed; due again later");
                        report.errors += 1;
                    }
                }
            }
        }
        self.follow_waiting(&round.unavailable, &mut report).await;
        match self
            .events
            .sweep(self.clock.now_ms(), EVENTS_GRACE_MS, PAGE)
            .await
        {
            Ok(published) => report.events += published as u64,
            Err(e) => {
                warn!(error = %e, "could not publish unpublished status changes; next sweep");
                report.errors += 1;
            }
        }
        report
    }

    /// Polls the waiting ops that are due (`GET /v1/operations/{op_id}` at their target),
    /// a few at a time, and writes each only when something changed (otherwise only its next
    /// poll's time). Ops of an unavailable region wait with it.
    async fn follow_waiting(
        &self,
        unavailable: &std::collections::BTreeSet<Region>,
        report: &mut SweepReport,
    ) {
        let now = self.clock.now_ms();
        let items = match self.store.due(Status::WaitingRemote, now, PAGE).await {
            Ok(items) => items,
            Err(e) => {
                warn!(error = %e, "could not query the waiting operations");
                report.errors += 1;
                return;
            }
        };
        let (held, due): (Vec<WorkItem>, Vec<WorkItem>) = items
            .into_iter()
            .partition(|i| unavailable.contains(&i.target_region));
        report.held += held.len() as u64;
        let results: Vec<Result<bool, crate::StoreError>> =
            futures::stream::iter(due.iter().map(|item| async move {
                // An operator's cancel that reached the op while its attempt was in flight,
                // and the attempt came back 202: no attempt is left to carry the request, so
                // the wait stops here (the effect stays at the target, as any stopped wait).
                if item.cancel_requested {
                    let now = self.clock.now_ms();
                    let outcome = self
                        .store
                        .cancel(&item.op_id, now, self.policy.redispatch_after_ms)
                        .await?;
                    let stopped = matches!(outcome, super::store::CancelOutcome::Cancelled(_));
                    info!(op_id = %item.op_id, stopped, "a cancel requested during its attempt: the wait stops");
                    return Ok(true);
                }
                let answer = self
                    .remote
                    .status(&item.target_region, &item.op_id, FOLLOW_TIMEOUT)
                    .await;
                let outcome = match answer {
                    Ok(response) => classify(response.status, &response.body),
                    Err(call) => call.outcome,
                };
                let follow_up = follow_up_for(item, outcome, self.clock.now_ms());
                if let FollowUp::Ended { status, .. } = &follow_up {
                    info!(op_id = %item.op_id, %status, polls = item.polls, "the target finished a waiting op");
                }
                self.store.follow(item, &follow_up, self.clock.now_ms()).await
            }))
            .buffer_unordered(FOLLOW_CONCURRENCY)
            .collect()
            .await;
        for result in results {
            report.polls += 1;
            if let Err(e) = result {
                warn!(error = %e, "could not record a poll");
                report.errors += 1;
            }
        }
    }

    /// Samples the age of the oldest RETRYING operation for its alarm (one query a sweep). Up to
    /// [`PAGE`] items are read: with more retrying than that the figure is a lower bound, and
    /// the alarm has long fired by then.
    async fn sample_oldest_retrying(&self, now: crate::Millis) {
        match self.store.list(Status::Retrying, PAGE).await {
            Ok(items) => metrics::irc_oldest_retrying_age(oldest_age_ms(&items, now) as f64),
            Err(e) => warn!(error = %e, "could not read the retrying operations"),
        }
    }

    /// Sweeps every `sweep_interval` until less than a few seconds are left before `deadline`.
    pub async fn run_until(&self, deadline: Instant) -> SweepReport {
        let mut ticker = tokio::time::interval(self.sweep_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut total = SweepReport::default();
        loop {
            ticker.tick().await;
            if deadline.saturating_duration_since(Instant::now()) < STOP_MARGIN {
                break;
            }
            let r = self.sweep().await;
            metrics::flush();
            if r.found > 0 || r.errors > 0 || r.events > 0 || r.probes > 0 || r.polls > 0 {
                info!(
                    found = r.found,
                    enqueued = r.enqueued,
                    skipped = r.skipped,
                    held = r.held,
                    probes = r.probes,
                    polls = r.polls,
                    events = r.events,
                    errors = r.errors,
                    "dispatcher sweep"
                );
            }
            total.sweeps += r.sweeps;
            total.found += r.found;
            total.enqueued += r.enqueued;
            total.skipped += r.skipped;
            total.held += r.held;
            total.probes += r.probes;
            total.polls += r.polls;
            total.events += r.events;
            total.errors += r.errors;
        }
        total
    }

    /// The scheduled entry point (the event's content is only logged).
    #[cfg(feature = "lambda")]
    pub async fn handle_scheduled(
        &self,
        event: lambda_runtime::LambdaEvent<serde_json::Value>,
    ) -> Result<SweepReport, std::convert::Infallible> {
        let deadline = crate::schedule::deadline_instant(event.context.deadline, &self.clock);
        info!(trigger = %crate::schedule::Trigger::of(&event.payload), "dispatcher run starts");
        let report = self.run_until(deadline).await;
        info!(
            sweeps = report.sweeps,
            enqueued = report.enqueued,
            errors = report.errors,
            "dispatcher invocation done"
        );
        Ok(report)
    }
}

/// How long ago the oldest of `items` was submitted (0 for none: nothing is waiting).
fn oldest_age_ms(items: &[WorkItem], now: crate::Millis) -> u64 {
    items
        .iter()
        .map(|i| now.saturating_sub(i.created_at_ms))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retrying(created_at_ms: u64) -> WorkItem {
        WorkItem {
            created_at_ms,
            updated_at_ms: created_at_ms,
            ..WorkItem::sample(Status::Retrying, 2)
        }
    }

    #[test]
    fn a_poll_ends_a_waiting_op_only_on_a_final_answer_and_backs_off_otherwise() {
        let mut item = WorkItem::sample(Status::WaitingRemote, 1);
        item.polls = 2;
        let done = RemoteOutcome::Done {
            outcome: "applied".into(),
            result: serde_json::json!({"serving": {"holder": "db-1"}}),
        };
        assert!(matches!(
            follow_up_for(&item, done, 0),
            FollowUp::Ended { status: Status::Succeeded, remote_state: RemoteState::Succeeded, ref text, .. }
                if text.contains("db-1")
        ));
        assert!(matches!(
            follow_up_for(
                &item,
                RemoteOutcome::Permanent("remote state FAILED (expired): x".into()),
                0
            ),
            FollowUp::Ended {
                status: Status::Failed,
                remote_state: RemoteState::Failed,
                ..
            }
        ));
        for waiting in [
            RemoteOutcome::Accepted {
                poll_after_ms: 1_000,
            },
            RemoteOutcome::Transient("HTTP 503".into()),
        ] {
            assert_eq!(
                follow_up_for(&item, waiting, 10_000),
                FollowUp::Poll {
                    next_at_ms: 10_000 + 8_000
                }
            );
        }
    }

    #[test]
    fn the_oldest_retrying_age_is_that_of_the_earliest_submit_and_zero_for_none() {
        let items = [retrying(9_000), retrying(4_000), retrying(7_000)];
        assert_eq!(oldest_age_ms(&items, 10_000), 6_000);
        assert_eq!(oldest_age_ms(&[], 10_000), 0);
    }
}
