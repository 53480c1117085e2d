//! The lease-renewer: runs on a 1-minute schedule and loops inside the invocation, renewing
//! every host lease (not group: one write per host per round) every `renew_interval_ms` until
//! shortly before the invocation's deadline (EventBridge cannot
//! fire more often than once a minute). Reserved concurrency 1 keeps two loops from
//! overlapping; even if they did, every renewal is conditional and only moves an expiry
//! forward, so overlap costs requests, not safety.

use super::config::LeaseConfig;
use super::protocol::{renew_decision, RenewSkip};
use super::store::{LeaseStore, RenewOutcome};
use crate::clock::Clock;
use crate::config::{u64_or, EnvError, EnvSource};
use crate::metrics;
#[cfg(feature = "lambda")]
use crate::schedule::{deadline_instant, Trigger};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How the renewer spreads its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RenewerConfig {
    /// Parallel scan segments (DynamoDB's TotalSegments).
    pub scan_segments: u32,
    /// Renewal writes in flight at once, across all segments.
    pub max_in_flight: usize,
    /// No round starts with less than this left before the invocation's deadline.
    pub stop_margin_ms: u64,
}

impl Default for RenewerConfig {
    fn default() -> Self {
        Self {
            scan_segments: 4,
            max_in_flight: 64,
            stop_margin_ms: 3_000,
        }
    }
}

impl RenewerConfig {
    /// Reads `TENURE_RENEWER_SEGMENTS` (1-1000), `TENURE_RENEWER_MAX_IN_FLIGHT` (1-1000) and
    /// `TENURE_RENEWER_STOP_MARGIN_MS`.
    pub fn from_env(env: &(impl EnvSource + ?Sized)) -> Result<Self, EnvError> {
        let d = Self::default();
        let bounded = |name: &'static str, default: u64| -> Result<u64, EnvError> {
            let value = u64_or(env, name, default)?;
            if (1..=1000).contains(&value) {
                Ok(value)
            } else {
                Err(EnvError::Invalid {
                    name,
                    value: value.to_string(),
                    reason: "must be between 1 and 1000".into(),
                })
            }
        };
        Ok(Self {
            scan_segments: bounded("TENURE_RENEWER_SEGMENTS", d.scan_segments.into())? as u32,
            max_in_flight: bounded("TENURE_RENEWER_MAX_IN_FLIGHT", d.max_in_flight as u64)?
                as usize,
            stop_margin_ms: u64_or(env, "TENURE_RENEWER_STOP_MARGIN_MS", d.stop_margin_ms)?,
        })
    }
}

/// What one pass over the `Hosts` table did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoundReport {
    pub scanned: u64,
    pub renewed: u64,
    pub lost_race: u64,
    pub skipped: BTreeMap<RenewSkip, u64>,
    pub errors: u64,
}

impl RoundReport {
    fn merge(&mut self, other: &RoundReport) {
        self.scanned += other.scanned;
        self.renewed += other.renewed;
        self.lost_race += other.lost_race;
        self.errors += other.errors;
        for (reason, count) in &other.skipped {
            *self.skipped.entry(*reason).or_default() += count;
        }
    }
}

enum HostResult {
    Renewed,
    LostRace,
    Skipped(RenewSkip),
    Error,
}

/// One pass: scan every host (parallel segments, paginated) and renew those the protocol
/// says to, with at most `max_in_flight` writes outstanding. One write per host, whatever the
/// number of groups it holds.
pub async fn renew_round<S: LeaseStore, C: Clock>(
    store: &S,
    lease: &LeaseConfig,
    clock: &C,
    renewer: &RenewerConfig,
) -> RoundReport {
    let segments = renewer.scan_segments.max(1);
    let per_segment = (renewer.max_in_flight / segments as usize).max(1);
    let passes = (0..segments).map(|segment| async move {
        let mut report = RoundReport::default();
        let results = store
            .scan_hosts(segment, segments)
            .map(|item| async move {
                let host = match item {
                    Ok(host) => host,
                    Err(e) => {
                        warn!(error = %e, segment, "renewer scan failed");
                        return HostResult::Error;
                    }
                };
                let now = clock.now_ms();
                let plan = match renew_decision(&host, now, lease) {
                    Err(reason) => {
                        debug!(host_id = %host.host_id, host_epoch = host.epoch.0, decision = "skipped", reason = ?reason, "renewer decision");
                        return HostResult::Skipped(reason);
                    }
                    Ok(plan) => plan,
                };
                match store.renew(&plan).await {
                    Ok(RenewOutcome::Renewed { expires_at_ms }) => {
                        metrics::renewed();
                        debug!(host_id = %plan.host, host_epoch = plan.epoch.0, decision = "renewed", expires_at_ms, "renewer decision");
                        HostResult::Renewed
                    }
                    Ok(RenewOutcome::LostRace) => {
                        metrics::renewal_lost_race();
                        info!(host_id = %plan.host, host_epoch = plan.epoch.0, decision = "lost_race", "renewer decision");
                        HostResult::LostRace
                    }
                    Err(e) => {
                        warn!(host_id = %plan.host, error = %e, decision = "error", "renewer decision");
                        HostResult::Error
                    }
                }
            })
            .buffer_unordered(per_segment);
        futures::pin_mut!(results);
        while let Some(result) = results.next().await {
            match result {
                HostResult::Error => report.errors += 1,
                other => {
                    report.scanned += 1;
                    match other {
                        HostResult::Renewed => report.renewed += 1,
                        HostResult::LostRace => report.lost_race += 1,
                        HostResult::Skipped(reason) => {
                            *report.skipped.entry(reason).or_default() += 1
                        }
                        HostResult::Error => {}
                    }
                }
            }
        }
        report
    });
    let mut total = RoundReport::default();
    for report in futures::future::join_all(passes).await {
        total.merge(&report);
    }
    total
}

/// The whole invocation: a round every `renew_interval_ms` until less than `stop_margin_ms`
/// is left before `deadline`. Rounds start on a fixed cadence; a slow round delays the next
/// one rather than queueing a burst.
pub async fn run_until<S: LeaseStore, C: Clock>(
    store: &S,
    lease: &LeaseConfig,
    clock: &C,
    renewer: &RenewerConfig,
    deadline: Instant,
) -> RunReport {
    let mut ticker = tokio::time::interval(Duration::from_millis(lease.renew_interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let margin = Duration::from_millis(renewer.stop_margin_ms);
    let mut run = RunReport::default();
    loop {
        ticker.tick().await;
        if deadline.saturating_duration_since(Instant::now()) < margin {
            break;
        }
        let started = Instant::now();
        let round = renew_round(store, lease, clock, renewer).await;
        let took_ms = started.elapsed().as_millis() as u64;
        info!(round = run.rounds + 1, took_ms, scanned = round.scanned, renewed = round.renewed, lost_race = round.lost_race, errors = round.errors, skipped = ?round.skipped, "renewer round");
        if took_ms > lease.renew_interval_ms {
            warn!(
                took_ms,
                renew_interval_ms = lease.renew_interval_ms,
                "renewer round overran the renew interval"
            );
        }
        metrics::renewer_round(took_ms as f64, round.scanned);
        for (reason, hosts) in &round.skipped {
            metrics::renewal_skipped(*reason, *hosts);
        }
        // One flush a round: the rounds-per-minute alarm sees each round when it happens, and
        // a loop that stalls stops producing data points.
        metrics::flush();
        run.rounds += 1;
        run.total.merge(&round);
    }
    run
}

/// What one invocation did (returned as the invocation's result, for the logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    pub rounds: u64,
    pub total: RoundReport,
}

/// The scheduled entry point. The event's content is only logged (a SAM `Schedule` sends an
/// EventBridge envelope, `ScheduleV2` its raw `Input`); any JSON starts a run.
#[cfg(feature = "lambda")]
pub async fn handle_scheduled<S: LeaseStore, C: Clock>(
    store: &S,
    lease: &LeaseConfig,
    clock: &C,
    renewer: &RenewerConfig,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<RunReport, std::convert::Infallible> {
    let deadline = deadline_instant(event.context.deadline, clock);
    info!(trigger = %Trigger::of(&event.payload), "renewer run starts");
    let report = run_until(store, lease, clock, renewer, deadline).await;
    info!(
        rounds = report.rounds,
        renewed = report.total.renewed,
        lost_race = report.total.lost_race,
        errors = report.total.errors,
        "renewer invocation done"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::ids::HostId;
    use crate::lease::host::HostRecord;
    use crate::lease::memory::MemoryLeaseStore;
    use crate::metrics::testing::counted;

    fn host(id: &str, healthy: bool, last_seen_ms: u64) -> HostRecord {
        let mut record = HostRecord::absent(HostId::parse(id).unwrap());
        record.healthy = healthy;
        record.last_seen_ms = last_seen_ms;
        record
    }

    #[test]
    fn each_round_is_counted_with_its_renewals_and_skips_by_reason() {
        let now = 1_800_000_000_000;
        let clock = FakeClock::at(now);
        let lease = LeaseConfig::default();
        let store = MemoryLeaseStore::new();
        store.put_host_item(host("a", true, now - 100));
        store.put_host_item(host("b", true, now - 100));
        store.put_host_item(host("c", false, now - 100));
        store.put_host_item(host("d", true, now - lease.heartbeat_timeout_ms - 1));
        let renewer = RenewerConfig {
            stop_margin_ms: 1,
            ..RenewerConfig::default()
        };
        // The first tick is immediate; the second comes after renew_interval_ms, past this
        // deadline: exactly one round.
        let deadline = Instant::now() + Duration::from_millis(lease.renew_interval_ms / 2);

        let (run, counts) = counted(run_until(&store, &lease, &clock, &renewer, deadline));

        assert_eq!(run.rounds, 1);
        assert_eq!(counts["RenewerRounds"], 1);
        assert_eq!(counts["RenewerRoundDuration"], 1, "one duration sample");
        assert_eq!(counts["RenewerHosts"], 1, "one hosts-per-round sample");
        assert_eq!(counts["Renewals"], 2);
        assert_eq!(counts["RenewalsSkipped{Reason=unhealthy}"], 1);
        assert_eq!(counts["RenewalsSkipped{Reason=stale}"], 1);
    }
}
