//! Application metrics: what tenure's functions count, named once.
//!
//! Decisions are counted where they are made (the lease service, the renewer, the IRC worker
//! and dispatcher, irc-remote) through the [`metrics`] facade, so the core stays free of any
//! exporter: in the functions the recorder is CloudWatch Embedded Metric Format on stdout
//! ([`emf`], feature `emf`); in unit tests a local debugging recorder; in a process with no
//! recorder (tenurectl, the demo host) every call is a no-op.
//!
//! Dimensions stay low-cardinality on purpose: the function (added by the recorder), an
//! outcome, a status, a skip reason or a target region. Never a group, host or op id: each
//! distinct value is a CloudWatch metric of its own, billed and kept for 15 months.
//! `docs/operations.md` lists every metric with the alarms that watch it.

use crate::lease::protocol::RenewSkip;
use std::sync::OnceLock;

/// The CloudWatch namespace of every tenure metric.
pub const NAMESPACE: &str = "Tenure";
/// The dimension every metric carries: the Lambda function's name (what the alarms select).
pub const FUNCTION_DIMENSION: &str = "Function";

/// Metric names, one place for the code, the template's alarms and the tests.
pub mod name {
    /// lease-check: host and group checks answered, by `Outcome` ([`super::CheckOutcome`]).
    pub const CHECKS: &str = "Checks";
    /// lease-check: time to answer a check, in the function (ms).
    pub const CHECK_DURATION: &str = "CheckDuration";
    /// Groups acquired (a new grant, group epoch + 1).
    pub const ACQUISITIONS: &str = "Acquisitions";
    /// Groups released by their holder.
    pub const RELEASES: &str = "Releases";
    /// Host leases revoked (host epoch + 1): each one ends every grant of a host.
    pub const REVOCATIONS: &str = "Revocations";
    /// Host leases renewed (by the renewer, or by a host's own check when the renewer is late).
    pub const RENEWALS: &str = "Renewals";
    /// Hosts the renewer did not renew, by `Reason` ([`RenewSkip`]).
    pub const RENEWALS_SKIPPED: &str = "RenewalsSkipped";
    /// Renewals whose condition failed (the host changed between the scan and the write).
    pub const RENEWALS_LOST_RACE: &str = "RenewalsLostRace";
    /// Renewer rounds completed (about 60 s / renew_interval_ms a minute when healthy).
    pub const RENEWER_ROUNDS: &str = "RenewerRounds";
    /// Time one renewer round took (ms).
    pub const RENEWER_ROUND_DURATION: &str = "RenewerRoundDuration";
    /// Hosts scanned in one renewer round.
    pub const RENEWER_HOSTS: &str = "RenewerHosts";
    /// Store requests that failed (not condition failures: those are decisions).
    pub const STORE_ERRORS: &str = "StoreErrors";
    /// The subset of [`STORE_ERRORS`] that DynamoDB throttled.
    pub const STORE_THROTTLES: &str = "StoreThrottles";
    /// IRC operations after an attempt, by `Status` (SUCCEEDED, FAILED, RETRYING).
    pub const IRC_OPS: &str = "IrcOps";
    /// Submit to terminal status of an IRC operation (ms), by `Status`.
    pub const IRC_OP_LATENCY: &str = "IrcOpLatency";
    /// Remote calls made, by `TargetRegion`.
    pub const IRC_ATTEMPTS: &str = "IrcAttempts";
    /// Records held back behind a failed record of their FIFO group, by `TargetRegion`.
    pub const IRC_HELD_OPS: &str = "IrcHeldOps";
    /// Ops held because their target region was unavailable (or in its resume ramp), by
    /// `TargetRegion`: no attempt spent.
    pub const IRC_REGION_HOLDS: &str = "IrcRegionHolds";
    /// A target region opened (its ops held), by `TargetRegion`.
    pub const IRC_REGION_OPENED: &str = "IrcRegionOpened";
    /// The dispatcher's probes of unavailable regions, by `TargetRegion` and `Result`.
    pub const IRC_REGION_PROBES: &str = "IrcRegionProbes";
    /// Target regions unavailable (open) after the dispatcher's probes, sampled every sweep:
    /// one series per stack, so one alarm covers every peer (`IrcRegionUnavailableAlarm`).
    pub const IRC_REGIONS_UNAVAILABLE: &str = "IrcRegionsUnavailable";
    /// Records that can never succeed (bad body, no work item), released for the DLQ.
    pub const IRC_DEAD_LETTERED: &str = "IrcDeadLettered";
    /// Age (since submit) of the oldest RETRYING operation, sampled by each dispatcher sweep (ms).
    pub const IRC_OLDEST_RETRYING_AGE: &str = "IrcOldestRetryingAge";
    /// irc-remote: operations answered, by `Outcome` ([`super::RemoteOutcome`]).
    pub const REMOTE_APPLIES: &str = "RemoteApplies";
    /// lease-history: entries recorded and published, by `Change` (acquired, released, deleted).
    pub const HISTORY_ENTRIES: &str = "HistoryEntries";
    /// lease-history: stream records whose images could not be read (logged, not retried).
    pub const HISTORY_SKIPPED: &str = "HistorySkipped";
    /// irc-events and the dispatcher's sweep: status events published, by `Source` (`stream`
    /// or `sweep`: a sweep's event is one the stream failed to deliver).
    pub const IRC_EVENTS: &str = "IrcEvents";
    /// irc-events: stream records whose images could not be read (logged, not retried).
    pub const IRC_EVENTS_SKIPPED: &str = "IrcEventsSkipped";
}

/// How a check request ended, as the caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// 200.
    Ok,
    /// 4xx for a malformed request, an unknown group or a non-member.
    Rejected,
    /// 403: the caller's identity may not speak for this host.
    Forbidden,
    /// 503: the store could not answer (the host stays in state unknown).
    Unavailable,
    /// 500: an answer that could not be encoded.
    Error,
}

impl CheckOutcome {
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=299 => Self::Ok,
            403 => Self::Forbidden,
            503 => Self::Unavailable,
            400..=499 => Self::Rejected,
            _ => Self::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Forbidden => "forbidden",
            Self::Unavailable => "unavailable",
            Self::Error => "error",
        }
    }
}

/// How irc-remote answered an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteOutcome {
    Applied,
    Duplicate,
    Superseded,
    /// 409: the same op id with another payload, or a state the kind refuses.
    Conflict,
    /// Any other 4xx: a malformed envelope or payload.
    Rejected,
    /// 403: the caller may not speak for its `source_region`.
    Forbidden,
    /// 5xx.
    Unavailable,
}

impl RemoteOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Superseded => "superseded",
            Self::Conflict => "conflict",
            Self::Rejected => "rejected",
            Self::Forbidden => "forbidden",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Gives each metric its CloudWatch unit (EMF carries it beside the name). Called once by the
/// recorder's installer.
pub fn describe() {
    use ::metrics::Unit;
    for counter in [
        name::CHECKS,
        name::ACQUISITIONS,
        name::RELEASES,
        name::REVOCATIONS,
        name::RENEWALS,
        name::RENEWALS_SKIPPED,
        name::RENEWALS_LOST_RACE,
        name::RENEWER_ROUNDS,
        name::STORE_ERRORS,
        name::STORE_THROTTLES,
        name::IRC_OPS,
        name::IRC_ATTEMPTS,
        name::IRC_HELD_OPS,
        name::IRC_REGION_HOLDS,
        name::IRC_REGION_OPENED,
        name::IRC_REGION_PROBES,
        name::IRC_DEAD_LETTERED,
        name::REMOTE_APPLIES,
        name::HISTORY_ENTRIES,
        name::HISTORY_SKIPPED,
        name::IRC_EVENTS,
        name::IRC_EVENTS_SKIPPED,
    ] {
        ::metrics::describe_counter!(counter, Unit::Count, "");
    }
    for duration in [
        name::CHECK_DURATION,
        name::RENEWER_ROUND_DURATION,
        name::IRC_OP_LATENCY,
    ] {
        ::metrics::describe_histogram!(duration, Unit::Milliseconds, "");
    }
    ::metrics::describe_histogram!(name::RENEWER_HOSTS, Unit::Count, "");
    ::metrics::describe_gauge!(name::IRC_OLDEST_RETRYING_AGE, Unit::Milliseconds, "");
    ::metrics::describe_gauge!(name::IRC_REGIONS_UNAVAILABLE, Unit::Count, "");
}

fn count(name: &'static str) {
    ::metrics::counter!(name).increment(1);
}

pub fn check_answered(outcome: CheckOutcome, took_ms: f64) {
    ::metrics::counter!(name::CHECKS, "Outcome" => outcome.as_str()).increment(1);
    ::metrics::histogram!(name::CHECK_DURATION).record(took_ms);
}

pub fn acquired() {
    count(name::ACQUISITIONS);
}

pub fn released() {
    count(name::RELEASES);
}

pub fn revoked() {
    count(name::REVOCATIONS);
}

pub fn renewed() {
    count(name::RENEWALS);
}

pub fn renewal_lost_race() {
    count(name::RENEWALS_LOST_RACE);
}

pub fn renewal_skipped(reason: RenewSkip, hosts: u64) {
    ::metrics::counter!(name::RENEWALS_SKIPPED, "Reason" => reason.as_str()).increment(hosts);
}

pub fn renewer_round(took_ms: f64, hosts: u64) {
    count(name::RENEWER_ROUNDS);
    ::metrics::histogram!(name::RENEWER_ROUND_DURATION).record(took_ms);
    ::metrics::histogram!(name::RENEWER_HOSTS).record(hosts as f64);
}

/// A store request failed; `throttled` when DynamoDB refused it for capacity.
pub fn store_error(throttled: bool) {
    count(name::STORE_ERRORS);
    if throttled {
        count(name::STORE_THROTTLES);
    }
}

/// An IRC attempt ended with the op in `status` (`"SUCCEEDED"`, `"FAILED"`, `"RETRYING"`);
/// `latency_ms` (submit to now) is recorded for terminal statuses.
pub fn irc_op(status: &'static str, latency_ms: Option<f64>) {
    ::metrics::counter!(name::IRC_OPS, "Status" => status).increment(1);
    if let Some(ms) = latency_ms {
        ::metrics::histogram!(name::IRC_OP_LATENCY, "Status" => status).record(ms);
    }
}

pub fn irc_attempt(target_region: &str) {
    ::metrics::counter!(name::IRC_ATTEMPTS, "TargetRegion" => target_region.to_owned())
        .increment(1);
}

pub fn irc_held(target_region: &str) {
    ::metrics::counter!(name::IRC_HELD_OPS, "TargetRegion" => target_region.to_owned())
        .increment(1);
}

/// A worker found an op's target region unavailable and held the op (no attempt spent).
pub fn irc_region_hold(target_region: &str) {
    ::metrics::counter!(name::IRC_REGION_HOLDS, "TargetRegion" => target_region.to_owned())
        .increment(1);
}

/// A target region's failures opened it: its ops are held until a probe finds it alive.
pub fn irc_region_opened(target_region: &str) {
    ::metrics::counter!(name::IRC_REGION_OPENED, "TargetRegion" => target_region.to_owned())
        .increment(1);
}

/// How many target regions are unavailable after a sweep's probes.
pub fn irc_regions_unavailable(regions: usize) {
    ::metrics::gauge!(name::IRC_REGIONS_UNAVAILABLE).set(regions as f64);
}

/// The dispatcher probed an unavailable region (`alive`: it answered as the contract says).
pub fn irc_region_probe(target_region: &str, alive: bool) {
    ::metrics::counter!(name::IRC_REGION_PROBES, "TargetRegion" => target_region.to_owned(),
        "Result" => if alive { "alive" } else { "failed" })
    .increment(1);
}

pub fn irc_dead_lettered() {
    count(name::IRC_DEAD_LETTERED);
}

pub fn irc_oldest_retrying_age(age_ms: f64) {
    ::metrics::gauge!(name::IRC_OLDEST_RETRYING_AGE).set(age_ms);
}

pub fn remote_answered(outcome: RemoteOutcome) {
    ::metrics::counter!(name::REMOTE_APPLIES, "Outcome" => outcome.as_str()).increment(1);
}

pub fn history_entry(change: &'static str) {
    ::metrics::counter!(name::HISTORY_ENTRIES, "Change" => change).increment(1);
}

pub fn history_skipped() {
    count(name::HISTORY_SKIPPED);
}

/// `n` status events published, from the stream or by the sweep.
pub fn irc_events(source: &'static str, n: usize) {
    ::metrics::counter!(name::IRC_EVENTS, "Source" => source).increment(n as u64);
}

pub fn irc_events_skipped() {
    count(name::IRC_EVENTS_SKIPPED);
}

/// What writes the counts out: installed once by a function's `main` ([`emf::install`]);
/// without one, [`flush`] does nothing.
static FLUSH: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

/// Writes out what was counted since the last flush. The Lambda entry points call it at the
/// end of each invocation, and the scheduled loops after each round, so a loop that stalls
/// stops producing data points (which is what the renewer's alarm watches for).
pub fn flush() {
    if let Some(flush) = FLUSH.get() {
        flush();
    }
}

/// CloudWatch Embedded Metric Format on stdout, through `metrics_cloudwatch_embedded`.
#[cfg(feature = "emf")]
pub mod emf {
    use super::{FLUSH, FUNCTION_DIMENSION, NAMESPACE};
    use std::io::Write;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot install the metrics recorder: {0}")]
    pub struct InstallError(String);

    /// Installs the EMF recorder for this process, every metric dimensioned by `function`
    /// (the Lambda function's name, which the template's alarms select on).
    ///
    /// Each flush renders every document into one buffer and writes it to stdout in one
    /// locked write: the documents are whole JSON lines, never interleaved with a log line
    /// another task writes meanwhile (CloudWatch extracts metrics only from a log event that is
    /// exactly one EMF object with a top-level `_aws`).
    pub fn install(function: &str) -> Result<(), InstallError> {
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(NAMESPACE)
            .with_dimension(FUNCTION_DIMENSION, function.to_owned())
            .init()
            .map_err(|e| InstallError(e.to_string()))?;
        super::describe();
        FLUSH
            .set(Box::new(move || {
                let mut documents = Vec::new();
                let written = collector.flush(&mut documents).and_then(|()| {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&documents)?;
                    out.flush()
                });
                if let Err(e) = written {
                    tracing::warn!(error = %e, "could not write metrics");
                }
            }))
            .map_err(|_| InstallError("a flush is already installed".into()))
    }

    /// [`install`] with the function's name from `AWS_LAMBDA_FUNCTION_NAME` (set by Lambda),
    /// or `fallback` outside Lambda. `TENURE_METRICS=off` installs nothing (every count is a
    /// no-op): what the cost benchmark compares against, not a setting for a real stack,
    /// whose alarms need the metrics.
    pub fn install_for_lambda(fallback: &str) -> Result<(), InstallError> {
        if std::env::var("TENURE_METRICS").is_ok_and(|v| v == "off") {
            tracing::warn!(
                "TENURE_METRICS=off: no metrics are written, and the alarms on them see nothing"
            );
            return Ok(());
        }
        let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| {
            tracing::warn!(
                fallback,
                "AWS_LAMBDA_FUNCTION_NAME is not set; metrics carry the fallback name"
            );
            fallback.to_owned()
        });
        install(&name)
    }
}

/// Unit tests' view of what code counted: run it under a local recorder, read the counts.
#[cfg(test)]
pub(crate) mod testing {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use std::collections::BTreeMap;

    /// Counter totals and histogram sample counts, keyed `Name` or `Name{Label=value,...}`.
    pub(crate) type Counted = BTreeMap<String, u64>;

    /// Runs `future` to completion on this thread under a fresh recorder.
    pub(crate) fn counted<F: std::future::Future>(future: F) -> (F::Output, Counted) {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let output = ::metrics::with_local_recorder(&recorder, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
                .block_on(future)
        });
        let mut counts = Counted::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = if labels.is_empty() {
                key.name().to_owned()
            } else {
                format!("{}{{{}}}", key.name(), labels.join(","))
            };
            let n = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(g) => g.into_inner() as u64,
            };
            counts.insert(name, n);
        }
        (output, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::counted;
    use super::*;

    #[test]
    fn check_outcomes_follow_the_status_code() {
        assert_eq!(CheckOutcome::of_status(200), CheckOutcome::Ok);
        assert_eq!(CheckOutcome::of_status(404), CheckOutcome::Rejected);
        assert_eq!(CheckOutcome::of_status(403), CheckOutcome::Forbidden);
        assert_eq!(CheckOutcome::of_status(503), CheckOutcome::Unavailable);
        assert_eq!(CheckOutcome::of_status(500), CheckOutcome::Error);
    }

    #[test]
    fn a_throttle_counts_as_a_store_error_and_a_throttle() {
        let ((), counts) = counted(async {
            store_error(true);
            store_error(false);
        });
        assert_eq!(counts[name::STORE_ERRORS], 2);
        assert_eq!(counts[name::STORE_THROTTLES], 1);
    }

    #[test]
    fn skip_reasons_are_named_as_in_json() {
        use RenewSkip::*;
        for reason in [
            Unhealthy,
            Stale,
            NotSeenSinceRevocation,
            IncarnationChanged,
            NotForward,
        ] {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::json!(reason.as_str())
            );
        }
    }
}
