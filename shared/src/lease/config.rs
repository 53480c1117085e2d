//! Lease timing, validated once. Every timing rule of the lease protocol (`docs/protocol.md`, Timing) is checked here and a
//! violation names the rule and the values, so a bad deployment stops at start-up.

use crate::config::{u64_or, EnvError, EnvSource};
use crate::Millis;
use serde::Serialize;

/// Timing of the lease protocol for one region. `lease_ms` is the default for new groups;
/// each group stores its own, checked by [`LeaseConfig::check_group_lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LeaseConfig {
    pub lease_ms: Millis,
    pub renew_interval_ms: Millis,
    /// The largest clock error between any two function instances.
    pub clock_skew_ms: Millis,
    pub heartbeat_timeout_ms: Millis,
    pub poll_interval_ms: Millis,
}

/// No timing setting may exceed a day. Beyond being absurd for a lease, larger values would let
/// the deadline arithmetic (`now + lease_ms`, the rules' `3 * renew_interval_ms`) overflow; with
/// this bound every sum and product of settings and a wall-clock time stays far below
/// `u64::MAX`. (Found by the `env_config` fuzz target.)
pub(crate) const MAX_SETTING_MS: Millis = 86_400_000;

/// A timing combination that breaks the protocol's safety or liveness argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be > 0")]
    Zero { name: &'static str },
    #[error("{name} ({value}) must be at most {MAX_SETTING_MS} (one day)")]
    TooLarge { name: &'static str, value: Millis },
    #[error("lease_ms ({lease_ms}) must be >= 3 * renew_interval_ms ({renew_interval_ms})")]
    LeaseShorterThanThreeRenewals {
        lease_ms: Millis,
        renew_interval_ms: Millis,
    },
    #[error("clock_skew_ms ({clock_skew_ms}) * 4 must be < lease_ms ({lease_ms})")]
    SkewTooLarge {
        clock_skew_ms: Millis,
        lease_ms: Millis,
    },
    #[error(
        "heartbeat_timeout_ms ({heartbeat_timeout_ms}) must be >= 2 * poll_interval_ms ({poll_interval_ms})"
    )]
    HeartbeatTimeoutTooShort {
        heartbeat_timeout_ms: Millis,
        poll_interval_ms: Millis,
    },
    #[error(
        "poll_interval_ms ({poll_interval_ms}) * 2 must be < lease_ms ({lease_ms}) - 2 * clock_skew_ms ({clock_skew_ms})"
    )]
    PollTooSlowForLease {
        poll_interval_ms: Millis,
        lease_ms: Millis,
        clock_skew_ms: Millis,
    },
    #[error(transparent)]
    Env(#[from] EnvError),
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            lease_ms: 10_000,
            renew_interval_ms: 2_000,
            clock_skew_ms: 200,
            heartbeat_timeout_ms: 3_000,
            poll_interval_ms: 500,
        }
    }
}

impl LeaseConfig {
    /// Builds a configuration, refusing any combination the timing rules forbid.
    pub fn new(
        lease_ms: Millis,
        renew_interval_ms: Millis,
        clock_skew_ms: Millis,
        heartbeat_timeout_ms: Millis,
        poll_interval_ms: Millis,
    ) -> Result<Self, ConfigError> {
        let config = Self {
            lease_ms,
            renew_interval_ms,
            clock_skew_ms,
            heartbeat_timeout_ms,
            poll_interval_ms,
        };
        for (name, value) in [
            ("renew_interval_ms", renew_interval_ms),
            ("heartbeat_timeout_ms", heartbeat_timeout_ms),
            ("poll_interval_ms", poll_interval_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { name });
            }
        }
        for (name, value) in [
            ("lease_ms", lease_ms),
            ("renew_interval_ms", renew_interval_ms),
            ("clock_skew_ms", clock_skew_ms),
            ("heartbeat_timeout_ms", heartbeat_timeout_ms),
            ("poll_interval_ms", poll_interval_ms),
        ] {
            if value > MAX_SETTING_MS {
                return Err(ConfigError::TooLarge { name, value });
            }
        }
        if heartbeat_timeout_ms < 2 * poll_interval_ms {
            return Err(ConfigError::HeartbeatTimeoutTooShort {
                heartbeat_timeout_ms,
                poll_interval_ms,
            });
        }
        config.check_group_lease(lease_ms)?;
        Ok(config)
    }

    /// Reads `TENURE_LEASE_MS`, `TENURE_RENEW_INTERVAL_MS`, `TENURE_CLOCK_SKEW_MS`,
    /// `TENURE_HEARTBEAT_TIMEOUT_MS` and `TENURE_POLL_INTERVAL_MS` (each optional, defaulting
    /// to the documented defaults) and validates the result.
    pub fn from_env(env: &(impl EnvSource + ?Sized)) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Self::new(
            u64_or(env, "TENURE_LEASE_MS", defaults.lease_ms)?,
            u64_or(env, "TENURE_RENEW_INTERVAL_MS", defaults.renew_interval_ms)?,
            u64_or(env, "TENURE_CLOCK_SKEW_MS", defaults.clock_skew_ms)?,
            u64_or(
                env,
                "TENURE_HEARTBEAT_TIMEOUT_MS",
                defaults.heartbeat_timeout_ms,
            )?,
            u64_or(env, "TENURE_POLL_INTERVAL_MS", defaults.poll_interval_ms)?,
        )
    }

    /// Checks a group's own `lease_ms` against the rules that involve it, with this region's
    /// renew interval, skew and poll settings (done when a group is created or changed).
    pub fn check_group_lease(&self, lease_ms: Millis) -> Result<(), ConfigError> {
        if lease_ms == 0 {
            return Err(ConfigError::Zero { name: "lease_ms" });
        }
        if lease_ms > MAX_SETTING_MS {
            return Err(ConfigError::TooLarge {
                name: "lease_ms",
                value: lease_ms,
            });
        }
        if lease_ms < 3 * self.renew_interval_ms {
            return Err(ConfigError::LeaseShorterThanThreeRenewals {
                lease_ms,
                renew_interval_ms: self.renew_interval_ms,
            });
        }
        if self.clock_skew_ms.saturating_mul(4) >= lease_ms {
            return Err(ConfigError::SkewTooLarge {
                clock_skew_ms: self.clock_skew_ms,
                lease_ms,
            });
        }
        if self.poll_interval_ms.saturating_mul(2)
            >= lease_ms.saturating_sub(2 * self.clock_skew_ms)
        {
            return Err(ConfigError::PollTooSlowForLease {
                poll_interval_ms: self.poll_interval_ms,
                lease_ms,
                clock_skew_ms: self.clock_skew_ms,
            });
        }
        Ok(())
    }

    /// The same region settings with another lease length (a group's own), validated.
    pub fn with_lease(&self, lease_ms: Millis) -> Result<Self, ConfigError> {
        self.check_group_lease(lease_ms)?;
        Ok(Self { lease_ms, ..*self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_beyond_a_day_are_refused_instead_of_overflowing() {
        let err = LeaseConfig::new(10_000, u64::MAX, 200, 3_000, 500).unwrap_err();
        assert_eq!(
            err,
            ConfigError::TooLarge {
                name: "renew_interval_ms",
                value: u64::MAX
            }
        );
        let d = LeaseConfig::default();
        assert!(matches!(
            d.check_group_lease(u64::MAX),
            Err(ConfigError::TooLarge { .. })
        ));
        assert!(LeaseConfig::new(u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX).is_err());
    }

    proptest::proptest! {
        // Any five values: a config or an error, never a panic; an accepted config obeys the
        // rules in exact arithmetic.
        #[test]
        fn any_settings_give_a_valid_config_or_an_error(
            lease in proptest::prelude::any::<u64>(),
            renew in proptest::prelude::any::<u64>(),
            skew in proptest::prelude::any::<u64>(),
            heartbeat in proptest::prelude::any::<u64>(),
            poll in proptest::prelude::any::<u64>(),
        ) {
            if let Ok(c) = LeaseConfig::new(lease, renew, skew, heartbeat, poll) {
                let (l, r, s, h, p) = (c.lease_ms as u128, c.renew_interval_ms as u128,
                    c.clock_skew_ms as u128, c.heartbeat_timeout_ms as u128, c.poll_interval_ms as u128);
                proptest::prop_assert!(l >= 3 * r && 4 * s < l && h >= 2 * p && 2 * p < l - 2 * s);
            }
        }
    }

    #[test]
    fn defaults_are_valid() {
        let d = LeaseConfig::default();
        assert_eq!(
            LeaseConfig::new(10_000, 2_000, 200, 3_000, 500),
            Ok(d),
            "the documented defaults must pass the timing rules"
        );
    }

    #[test]
    fn lease_shorter_than_three_renewals_is_refused_with_values() {
        let err = LeaseConfig::new(6_000, 2_500, 200, 3_000, 500).unwrap_err();
        assert_eq!(
            err.to_string(),
            "lease_ms (6000) must be >= 3 * renew_interval_ms (2500)"
        );
    }

    #[test]
    fn skew_of_a_quarter_lease_is_refused() {
        assert_eq!(
            LeaseConfig::new(8_000, 2_000, 2_000, 3_000, 500),
            Err(ConfigError::SkewTooLarge {
                clock_skew_ms: 2_000,
                lease_ms: 8_000
            })
        );
        assert!(LeaseConfig::new(8_000, 2_000, 1_999, 3_000, 500).is_ok());
    }

    #[test]
    fn heartbeat_timeout_below_two_polls_is_refused() {
        assert_eq!(
            LeaseConfig::new(10_000, 2_000, 200, 999, 500),
            Err(ConfigError::HeartbeatTimeoutTooShort {
                heartbeat_timeout_ms: 999,
                poll_interval_ms: 500
            })
        );
        assert!(LeaseConfig::new(10_000, 2_000, 200, 1_000, 500).is_ok());
    }

    #[test]
    fn poll_too_slow_for_the_lease_is_refused() {
        // 2 * 2000 = 4000 is not < 4400 - 400 = 4000.
        let err = LeaseConfig::new(4_400, 1_400, 200, 4_000, 2_000).unwrap_err();
        assert!(
            matches!(err, ConfigError::PollTooSlowForLease { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("poll_interval_ms (2000)"));
    }

    #[test]
    fn zero_intervals_are_refused() {
        assert_eq!(
            LeaseConfig::new(10_000, 0, 200, 3_000, 500),
            Err(ConfigError::Zero {
                name: "renew_interval_ms"
            })
        );
        assert_eq!(
            LeaseConfig::default().check_group_lease(0),
            Err(ConfigError::Zero { name: "lease_ms" })
        );
    }

    #[test]
    fn a_two_second_lease_is_valid_with_a_fast_renewer() {
        let cfg = LeaseConfig::new(2_000, 500, 100, 600, 200).unwrap();
        assert_eq!(cfg.lease_ms, 2_000);
    }

    #[test]
    fn group_lease_is_checked_with_region_settings() {
        let region = LeaseConfig::default();
        assert!(region.with_lease(6_000).is_ok());
        assert!(matches!(
            region.with_lease(5_999),
            Err(ConfigError::LeaseShorterThanThreeRenewals { .. })
        ));
    }

    #[test]
    fn environment_overrides_defaults_and_is_validated() {
        let env: &[(&str, &str)] = &[
            ("TENURE_LEASE_MS", "20000"),
            ("TENURE_POLL_INTERVAL_MS", "1000"),
        ];
        let cfg = LeaseConfig::from_env(env).unwrap();
        assert_eq!((cfg.lease_ms, cfg.poll_interval_ms), (20_000, 1_000));
        let bad: &[(&str, &str)] = &[("TENURE_LEASE_MS", "ten")];
        assert!(matches!(
            LeaseConfig::from_env(bad),
            Err(ConfigError::Env(EnvError::Invalid { .. }))
        ));
        let unsafe_combo: &[(&str, &str)] = &[("TENURE_CLOCK_SKEW_MS", "5000")];
        assert!(matches!(
            LeaseConfig::from_env(unsafe_combo),
            Err(ConfigError::SkewTooLarge { .. })
        ));
    }
}

/// What the lease functions read at start-up: the tables and the timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseFunctionConfig {
    pub hosts_table: String,
    pub leases_table: String,
    pub lease: LeaseConfig,
}

impl LeaseFunctionConfig {
    /// `TENURE_HOSTS_TABLE` and `TENURE_LEASES_TABLE` (required) and the timing of
    /// [`LeaseConfig::from_env`].
    pub fn from_env(env: &(impl EnvSource + ?Sized)) -> Result<Self, ConfigError> {
        Ok(Self {
            hosts_table: crate::config::required(env, "TENURE_HOSTS_TABLE")?,
            leases_table: crate::config::required(env, "TENURE_LEASES_TABLE")?,
            lease: LeaseConfig::from_env(env)?,
        })
    }
}
