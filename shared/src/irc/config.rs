//! The coordinator's settings, read once at start-up; each function takes the part it needs
//! and a bad value stops it with the variable's name.

use super::backoff::Backoff;
use super::health::HealthPolicy;
use super::ids::Region;
use crate::config::{required, u64_or, EnvError, EnvSource};
use crate::fault::FaultSwitch;
use crate::Millis;
use std::collections::{BTreeMap, BTreeSet};

/// How operations are retried and how long a claim lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts (remote calls) before an op fails for good.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// How long a worker's claim lasts: longer than the worker's whole invocation, so a live
    /// worker never loses its claim mid-call.
    pub claim_ttl_ms: Millis,
    /// How long the dispatcher leaves an enqueued item alone before enqueuing it again.
    pub redispatch_after_ms: Millis,
    /// The clock error allowed between two workers (`TENURE_CLOCK_SKEW_MS`, the stack's one
    /// skew): a retry is claimable from its backoff's end less this.
    pub clock_skew_ms: Millis,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Backoff {
                base_ms: 1_000,
                cap_ms: 60_000,
            },
            claim_ttl_ms: 120_000,
            redispatch_after_ms: 60_000,
            clock_skew_ms: 200,
        }
    }
}

fn invalid(name: &'static str, value: impl Into<String>, reason: impl Into<String>) -> EnvError {
    EnvError::Invalid {
        name,
        value: value.into(),
        reason: reason.into(),
    }
}

impl RetryPolicy {
    /// `TENURE_IRC_MAX_ATTEMPTS`, `TENURE_IRC_BACKOFF_BASE_MS`, `TENURE_IRC_BACKOFF_CAP_MS`,
    /// `TENURE_IRC_CLAIM_TTL_MS`, `TENURE_IRC_REDISPATCH_AFTER_MS`, `TENURE_CLOCK_SKEW_MS`.
    pub fn from_env(env: &(impl EnvSource + ?Sized)) -> Result<Self, EnvError> {
        let d = Self::default();
        let max_attempts = u64_or(env, "TENURE_IRC_MAX_ATTEMPTS", d.max_attempts.into())?;
        let max_attempts = u32::try_from(max_attempts)
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                invalid(
                    "TENURE_IRC_MAX_ATTEMPTS",
                    max_attempts.to_string(),
                    "must be 1-100",
                )
            })?;
        let base_ms = u64_or(env, "TENURE_IRC_BACKOFF_BASE_MS", d.backoff.base_ms)?;
        let cap_ms = u64_or(env, "TENURE_IRC_BACKOFF_CAP_MS", d.backoff.cap_ms)?;
        if base_ms == 0 {
            return Err(invalid(
                "TENURE_IRC_BACKOFF_BASE_MS",
                base_ms.to_string(),
                "must be > 0",
            ));
        }
        if cap_ms < base_ms {
            return Err(invalid(
                "TENURE_IRC_BACKOFF_CAP_MS",
                cap_ms.to_string(),
                format!("must be >= TENURE_IRC_BACKOFF_BASE_MS ({base_ms})"),
            ));
        }
        let claim_ttl_ms = u64_or(env, "TENURE_IRC_CLAIM_TTL_MS", d.claim_ttl_ms)?;
        let redispatch_after_ms =
            u64_or(env, "TENURE_IRC_REDISPATCH_AFTER_MS", d.redispatch_after_ms)?;
        for (name, value) in [
            ("TENURE_IRC_CLAIM_TTL_MS", claim_ttl_ms),
            ("TENURE_IRC_REDISPATCH_AFTER_MS", redispatch_after_ms),
        ] {
            if value == 0 {
                return Err(invalid(name, value.to_string(), "must be > 0"));
            }
        }
        let clock_skew_ms = u64_or(env, "TENURE_CLOCK_SKEW_MS", d.clock_skew_ms)?;
        Ok(Self {
            max_attempts,
            backoff: Backoff { base_ms, cap_ms },
            claim_ttl_ms,
            redispatch_after_ms,
            clock_skew_ms,
        })
    }
}

/// How target regions' health is judged and their ops held: `TENURE_IRC_MAX_HOLD_MS`,
/// `TENURE_IRC_PROBE_FIRST_MS`, `TENURE_IRC_PROBE_CAP_MS`, `TENURE_IRC_RESUME_RAMP_MS` (the
/// window and thresholds are DESIGN's and fixed).
pub fn health_policy(env: &(impl EnvSource + ?Sized)) -> Result<HealthPolicy, EnvError> {
    let d = HealthPolicy::default();
    let max_hold_ms = u64_or(env, "TENURE_IRC_MAX_HOLD_MS", d.max_hold_ms)?;
    let probe_first_ms = u64_or(env, "TENURE_IRC_PROBE_FIRST_MS", d.probe_first_ms)?;
    let probe_cap_ms = u64_or(env, "TENURE_IRC_PROBE_CAP_MS", d.probe_cap_ms)?;
    let resume_ramp_ms = u64_or(env, "TENURE_IRC_RESUME_RAMP_MS", d.resume_ramp_ms)?;
    for (name, value) in [
        ("TENURE_IRC_MAX_HOLD_MS", max_hold_ms),
        ("TENURE_IRC_PROBE_FIRST_MS", probe_first_ms),
    ] {
        if value == 0 {
            return Err(invalid(name, value.to_string(), "must be > 0"));
        }
    }
    if probe_cap_ms < probe_first_ms {
        return Err(invalid(
            "TENURE_IRC_PROBE_CAP_MS",
            probe_cap_ms.to_string(),
            format!("must be >= TENURE_IRC_PROBE_FIRST_MS ({probe_first_ms})"),
        ));
    }
    Ok(HealthPolicy {
        max_hold_ms,
        probe_first_ms,
        probe_cap_ms,
        resume_ramp_ms,
        ..d
    })
}

/// `AWS_REGION`: the region this function runs in.
pub fn this_region(env: &(impl EnvSource + ?Sized)) -> Result<Region, EnvError> {
    let raw = required(env, "AWS_REGION")?;
    Region::parse(&raw).map_err(|e| invalid("AWS_REGION", raw, e.to_string()))
}

/// `TENURE_REGION_ENDPOINTS`: JSON object region -> irc-remote base URL.
pub(crate) fn region_endpoints(
    env: &(impl EnvSource + ?Sized),
) -> Result<BTreeMap<Region, String>, EnvError> {
    const NAME: &str = "TENURE_REGION_ENDPOINTS";
    let raw = env.get(NAME).unwrap_or_else(|| "{}".into());
    let map: BTreeMap<String, String> = serde_json::from_str(&raw).map_err(|e| {
        invalid(
            NAME,
            raw.clone(),
            format!("not a JSON object of strings ({e})"),
        )
    })?;
    map.into_iter()
        .map(|(region, url)| {
            let region =
                Region::parse(&region).map_err(|e| invalid(NAME, raw.clone(), e.to_string()))?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(
                    NAME,
                    raw.clone(),
                    format!("{region}: {url:?} is not an http(s) URL"),
                ));
            }
            Ok((region, url))
        })
        .collect()
}

/// `TENURE_PEER_REGIONS`: comma-separated regions this stack exchanges operations with.
pub(crate) fn peer_regions(env: &(impl EnvSource + ?Sized)) -> Result<BTreeSet<Region>, EnvError> {
    const NAME: &str = "TENURE_PEER_REGIONS";
    let raw = required(env, NAME)?;
    raw.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| Region::parse(r).map_err(|e| invalid(NAME, raw.clone(), e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let env: &[(&str, &str)] = &[];
        assert_eq!(RetryPolicy::from_env(env), Ok(RetryPolicy::default()));
        let env: &[(&str, &str)] = &[
            ("TENURE_IRC_MAX_ATTEMPTS", "3"),
            ("TENURE_IRC_BACKOFF_BASE_MS", "200"),
        ];
        let p = RetryPolicy::from_env(env).unwrap();
        assert_eq!((p.max_attempts, p.backoff.base_ms), (3, 200));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("TENURE_IRC_MAX_ATTEMPTS", "0"),
            ("TENURE_IRC_BACKOFF_BASE_MS", "0"),
            ("TENURE_IRC_BACKOFF_CAP_MS", "10"),
            ("TENURE_IRC_CLAIM_TTL_MS", "x"),
            ("TENURE_IRC_CLAIM_TTL_MS", "0"),
            ("TENURE_IRC_REDISPATCH_AFTER_MS", "0"),
        ] {
            let bad = [(name, value)];
            let err = RetryPolicy::from_env(&bad[..]).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn endpoints_and_peers_are_validated() {
        let env: &[(&str, &str)] = &[
            (
                "TENURE_REGION_ENDPOINTS",
                r#"{"eu-west-1":"https://x.lambda-url.eu-west-1.on.aws/"}"#,
            ),
            ("TENURE_PEER_REGIONS", "us-east-1, eu-west-1"),
        ];
        assert_eq!(region_endpoints(env).unwrap().len(), 1);
        assert_eq!(peer_regions(env).unwrap().len(), 2);
        let bad: &[(&str, &str)] = &[("TENURE_REGION_ENDPOINTS", r#"{"eu-west-1":"ftp://x"}"#)];
        assert!(region_endpoints(bad).is_err());
        let bad: &[(&str, &str)] = &[("TENURE_REGION_ENDPOINTS", "[]")];
        assert!(region_endpoints(bad).is_err());
        let bad: &[(&str, &str)] = &[("TENURE_PEER_REGIONS", "us-east-1,Mars")];
        assert!(peer_regions(bad).is_err());
    }
}

fn flag(env: &(impl EnvSource + ?Sized), name: &'static str) -> Result<bool, EnvError> {
    match env.get(name).as_deref().map(str::trim) {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(invalid(name, other, "must be true or false")),
    }
}

/// irc-remote: where it applies operations and from whom it takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFunctionConfig {
    pub inbound_table: String,
    pub leases_table: String,
    pub hosts_table: String,
    pub lease: crate::lease::LeaseConfig,
    pub peers: BTreeSet<Region>,
}

impl RemoteFunctionConfig {
    pub fn from_env(
        env: &(impl EnvSource + ?Sized),
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self {
            inbound_table: required(env, "TENURE_INBOUND_OPS_TABLE")?,
            leases_table: required(env, "TENURE_LEASES_TABLE")?,
            hosts_table: required(env, "TENURE_HOSTS_TABLE")?,
            lease: crate::lease::LeaseConfig::from_env(env)?,
            peers: peer_regions(env)?,
        })
    }
}

/// irc-worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerFunctionConfig {
    pub work_items_table: String,
    pub queue_url: String,
    /// `TENURE_REGION_HEALTH_TABLE`.
    pub region_health_table: String,
    pub endpoints: BTreeMap<Region, String>,
    pub policy: RetryPolicy,
    pub health: HealthPolicy,
    /// `TENURE_IRC_FAULT_INJECTION=true` (local fault tests only; see [`crate::fault`]).
    pub faults: FaultSwitch,
}

impl WorkerFunctionConfig {
    pub fn from_env(env: &(impl EnvSource + ?Sized)) -> Result<Self, EnvError> {
        Ok(Self {
            work_items_table: required(env, "TENURE_WORK_ITEMS_TABLE")?,
            queue_url: required(env, "TENURE_IRC_QUEUE_URL")?,
            region_health_table: required(env, "TENURE_REGION_HEALTH_TABLE")?,
            endpoints: region_endpoints(env)?,
            policy: RetryPolicy::from_env(env)?,
            health: health_policy(env)?,
            faults: FaultSwitch::new(flag(env, "TENURE_IRC_FAULT_INJECTION")?),
        })
    }
}

/// irc-dispatcher, and anything that submits (tenurectl, tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSideConfig {
    pub work_items_table: String,
    pub queue_url: String,
    pub policy: RetryPolicy,
    /// Time between the dispatcher's sweeps inside one invocation.
    pub sweep_interval_ms: Millis,
}

impl QueueSideConfig {
    pub fn from_env(env: &(impl EnvSource + ?Sized)) -> Result<Self, EnvError> {
        let sweep_interval_ms = u64_or(env, "TENURE_IRC_SWEEP_INTERVAL_MS", 2_000)?;
        if sweep_interval_ms == 0 {
            return Err(invalid("TENURE_IRC_SWEEP_INTERVAL_MS", "0", "must be > 0"));
        }
        Ok(Self {
            work_items_table: required(env, "TENURE_WORK_ITEMS_TABLE")?,
            queue_url: required(env, "TENURE_IRC_QUEUE_URL")?,
            policy: RetryPolicy::from_env(env)?,
            sweep_interval_ms,
        })
    }
}

/// irc-dispatcher: the queue side, and the regions it probes.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatcherFunctionConfig {
    pub queue_side: QueueSideConfig,
    pub region_health_table: String,
    pub endpoints: BTreeMap<Region, String>,
    pub health: HealthPolicy,
}

impl DispatcherFunctionConfig {
    pub fn from_env(env: &(impl EnvSource + ?Sized)) -> Result<Self, EnvError> {
        Ok(Self {
            queue_side: QueueSideConfig::from_env(env)?,
            region_health_table: required(env, "TENURE_REGION_HEALTH_TABLE")?,
            endpoints: region_endpoints(env)?,
            health: health_policy(env)?,
        })
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;

    #[test]
    fn hold_settings_default_and_are_checked() {
        let none: &[(&str, &str)] = &[];
        assert_eq!(health_policy(none), Ok(HealthPolicy::default()));
        let set: &[(&str, &str)] = &[
            ("TENURE_IRC_MAX_HOLD_MS", "60000"),
            ("TENURE_IRC_PROBE_FIRST_MS", "1000"),
            ("TENURE_IRC_PROBE_CAP_MS", "4000"),
            ("TENURE_IRC_RESUME_RAMP_MS", "0"),
        ];
        let p = health_policy(set).unwrap();
        assert_eq!(
            (
                p.max_hold_ms,
                p.probe_first_ms,
                p.probe_cap_ms,
                p.resume_ramp_ms
            ),
            (60_000, 1_000, 4_000, 0)
        );
        for bad in [
            [("TENURE_IRC_MAX_HOLD_MS", "0")],
            [("TENURE_IRC_PROBE_CAP_MS", "10")],
            [("TENURE_IRC_PROBE_FIRST_MS", "soon")],
        ] {
            let err = health_policy(&bad[..]).unwrap_err();
            assert!(err.to_string().contains(bad[0].0), "{err}");
        }
    }
}
