//! What the agent tells the host's own monitoring, through the `metrics` facade: the host
//! application installs the exporter it uses (Prometheus, StatsD, OpenTelemetry...); without
//! one every call is a no-op. Labels stay low-cardinality: groups are counted by role, never
//! named (a host in 1,000 groups would otherwise export 1,000 series a metric).

use crate::agent::GroupRole;

/// Checks sent to lease-check (counter).
pub const CHECKS: &str = "tenure_agent_checks_total";
/// Checks with no usable answer in time (counter).
pub const CHECK_FAILURES: &str = "tenure_agent_check_failures_total";
/// Send to answer of each answered check, seconds (histogram).
pub const CHECK_DURATION: &str = "tenure_agent_check_duration_seconds";
/// The host epoch of the last answer (gauge).
pub const HOST_EPOCH: &str = "tenure_agent_host_epoch";
/// Time left before the host window closes, seconds, as of the last poll; 0 when closed (gauge).
pub const DEADLINE_REMAINING: &str = "tenure_agent_deadline_remaining_seconds";
/// Whether the last check was answered, 1 or 0 (gauge).
pub const REACHABLE: &str = "tenure_agent_reachable";
/// Groups by `role` (primary, secondary, unknown) (gauge).
pub const GROUPS: &str = "tenure_agent_groups";

pub(crate) fn check_sent() {
    metrics::counter!(CHECKS).increment(1);
}

pub(crate) fn check_answered(took_ns: u64) {
    metrics::histogram!(CHECK_DURATION).record(took_ns as f64 / 1e9);
}

pub(crate) fn check_failed() {
    metrics::counter!(CHECK_FAILURES).increment(1);
}

/// The host's state after a poll.
pub(crate) fn host_state<'a>(
    host_epoch: Option<u64>,
    deadline_remaining_ns: u64,
    reachable: bool,
    roles: impl Iterator<Item = &'a GroupRole>,
) {
    if let Some(epoch) = host_epoch {
        metrics::gauge!(HOST_EPOCH).set(epoch as f64);
    }
    metrics::gauge!(DEADLINE_REMAINING).set(deadline_remaining_ns as f64 / 1e9);
    metrics::gauge!(REACHABLE).set(if reachable { 1.0 } else { 0.0 });
    let (mut primary, mut secondary, mut unknown) = (0u64, 0u64, 0u64);
    for role in roles {
        match role {
            GroupRole::Primary { .. } => primary += 1,
            GroupRole::Secondary { .. } => secondary += 1,
            GroupRole::Unknown { .. } => unknown += 1,
        }
    }
    metrics::gauge!(GROUPS, "role" => "primary").set(primary as f64);
    metrics::gauge!(GROUPS, "role" => "secondary").set(secondary as f64);
    metrics::gauge!(GROUPS, "role" => "unknown").set(unknown as f64);
}
