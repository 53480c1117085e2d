//! The agent's settings, validated once at start (as client-go's `LeaderElectionConfig` is):
//! a setting that could let a grant outlive its lease, or a check never finish inside its
//! window, is refused with the reason instead of being discovered in production.

use std::collections::BTreeSet;
use std::time::Duration;
use tenure::ids::{GroupId, HostId};
use tenure::lease::LeaseConfig;

/// Why an [`AgentConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentConfigError {
    #[error("group {0} is listed twice")]
    DuplicateGroup(GroupId),
    #[error("request_timeout ({timeout:?}) must be shorter than the usable lease window ({window:?}): an answer later than that is useless")]
    TimeoutTooLong { timeout: Duration, window: Duration },
    #[error("jitter must be in [0, 0.5], got {0}")]
    Jitter(String),
    #[error("resync_interval ({resync:?}) must be at least the poll interval ({poll:?})")]
    ResyncTooShort { resync: Duration, poll: Duration },
    #[error("late_checks_before_silence must be at least 1")]
    NoLateChecks,
    #[error("late_answer ({late:?}) must be positive and at most request_timeout ({timeout:?})")]
    LateAnswer { late: Duration, timeout: Duration },
}

/// How one host's agent polls lease-check for all its groups.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub host: HostId,
    /// Every group this host serves a replica of (fixed for the agent's life).
    pub groups: Vec<GroupId>,
    /// The region's lease timing, as lease-check runs it (`TENURE_LEASE_*`).
    pub lease: LeaseConfig,
    /// A check not answered within this is a failure (no fresh answer).
    pub request_timeout: Duration,
    /// The longest wait between checks after failures.
    pub max_backoff: Duration,
    /// Each wait is scaled by a random factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// Every group is read again this often (and at start), in case a notice was missed.
    pub resync_interval: Duration,
    /// An answer slower than this counts as late.
    pub late_answer: Duration,
    /// After this many late (or timed-out) checks in a row the agent stops heartbeating, so
    /// its lease lapses and its groups move to a host whose checks arrive in time; it
    /// heartbeats again after the first answer on time.
    pub late_checks_before_silence: u32,
}

impl AgentConfig {
    /// The defaults for `lease`: a request timeout of a quarter of the usable window (at most
    /// 2 s), resync every 10 minutes, silence after 3 late checks (late = half the timeout).
    pub fn new(
        host: HostId,
        groups: Vec<GroupId>,
        lease: &LeaseConfig,
    ) -> Result<Self, AgentConfigError> {
        let window = usable_window(lease);
        let request_timeout = (window / 4).clamp(Duration::from_millis(1), Duration::from_secs(2));
        let config = Self {
            host,
            groups,
            lease: *lease,
            request_timeout,
            max_backoff: Duration::from_secs(5),
            jitter: 0.1,
            resync_interval: Duration::from_secs(600),
            late_answer: request_timeout / 2,
            late_checks_before_silence: 3,
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), AgentConfigError> {
        let mut seen = BTreeSet::new();
        for g in &self.groups {
            if !seen.insert(g) {
                return Err(AgentConfigError::DuplicateGroup(g.clone()));
            }
        }
        let window = usable_window(&self.lease);
        if self.request_timeout >= window || self.request_timeout.is_zero() {
            return Err(AgentConfigError::TimeoutTooLong {
                timeout: self.request_timeout,
                window,
            });
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            return Err(AgentConfigError::Jitter(self.jitter.to_string()));
        }
        if self.resync_interval < self.poll_interval() {
            return Err(AgentConfigError::ResyncTooShort {
                resync: self.resync_interval,
                poll: self.poll_interval(),
            });
        }
        if self.late_checks_before_silence == 0 {
            return Err(AgentConfigError::NoLateChecks);
        }
        if self.late_answer.is_zero() || self.late_answer > self.request_timeout {
            return Err(AgentConfigError::LateAnswer {
                late: self.late_answer,
                timeout: self.request_timeout,
            });
        }
        Ok(())
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.lease.poll_interval_ms)
    }

    /// A heartbeat (a write) at least this often; the protocol's `heartbeat_timeout_ms / 3`.
    pub fn heartbeat_every(&self) -> Duration {
        Duration::from_millis(self.lease.heartbeat_timeout_ms / 3)
    }
}

/// The longest a grant can be used for after one answer: the lease less the skew margin.
fn usable_window(lease: &LeaseConfig) -> Duration {
    Duration::from_millis(lease.lease_ms.saturating_sub(lease.clock_skew_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostId {
        HostId::parse("h1").expect("valid host id")
    }

    fn groups(n: usize) -> Vec<GroupId> {
        (0..n)
            .map(|i| GroupId::parse(&format!("g{i}")).expect("valid group id"))
            .collect()
    }

    #[test]
    fn defaults_fit_the_region_timing() {
        let lease = LeaseConfig::default();
        let c = AgentConfig::new(host(), groups(3), &lease).expect("defaults are valid");
        assert!(c.request_timeout < Duration::from_millis(lease.lease_ms));
        assert_eq!(
            c.heartbeat_every(),
            Duration::from_millis(lease.heartbeat_timeout_ms / 3)
        );
        assert!(c.late_answer <= c.request_timeout);
    }

    #[test]
    fn every_bad_setting_is_refused_with_its_reason() {
        let lease = LeaseConfig::default();
        let good = AgentConfig::new(host(), groups(2), &lease).expect("valid");
        let mut twice = good.clone();
        twice.groups.push(twice.groups[0].clone());
        assert!(matches!(
            twice.validate(),
            Err(AgentConfigError::DuplicateGroup(_))
        ));
        let mut slow = good.clone();
        slow.request_timeout = Duration::from_millis(lease.lease_ms);
        assert!(matches!(
            slow.validate(),
            Err(AgentConfigError::TimeoutTooLong { .. })
        ));
        let mut jitter = good.clone();
        jitter.jitter = 0.9;
        assert!(matches!(
            jitter.validate(),
            Err(AgentConfigError::Jitter(_))
        ));
        let mut resync = good.clone();
        resync.resync_interval = Duration::from_millis(1);
        assert!(matches!(
            resync.validate(),
            Err(AgentConfigError::ResyncTooShort { .. })
        ));
        let mut none = good.clone();
        none.late_checks_before_silence = 0;
        assert_eq!(none.validate(), Err(AgentConfigError::NoLateChecks));
        let mut late = good;
        late.late_answer = late.request_timeout * 2;
        assert!(matches!(
            late.validate(),
            Err(AgentConfigError::LateAnswer { .. })
        ));
    }
}
