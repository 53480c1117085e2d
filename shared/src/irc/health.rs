//! Whether a target region is failing, from the outcomes of recent calls to it (IRC v2, "a
//! failing region fails alone"). Pure: the counts live in time buckets that the workers add
//! to and read (the shared health record is the store's business); this module says what a
//! call's answer counts as and when a window of counts means the region is unavailable.
//!
//! A region opens (is held) on a failure *rate* over a window, not on consecutive failures: a
//! few errors among many successes are the op's or the moment's, not the region's. At low
//! volume, where a rate means little, a handful of failures with no success opens it.

use crate::Millis;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What one call to a region counts as for the region's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallVerdict {
    /// The region answered as the contract says, whatever it said of the op (applied,
    /// duplicate, superseded, or an op-level refusal: 400 about the envelope, 409, 413, 422).
    Healthy,
    /// The region could not or would not serve: 429, 5xx, a timeout or transport failure, a
    /// 2xx without the contract's body, or a refusal about the region rather than the op (401,
    /// 403, 404 or 405 on the route, 400 `region_not_allowed` / `unsupported_version`, a 4xx
    /// without the contract's error body: a bad deploy in the target).
    RegionFailure,
}

/// Reasons a 400 gives that are about the region's set-up, not the op.
const REGION_LEVEL_400: [&str; 2] = ["region_not_allowed", "unsupported_version"];

/// The verdict on an HTTP answer (`None`: no answer at all, a timeout or a transport error).
pub fn verdict(answer: Option<(u16, &[u8])>) -> CallVerdict {
    let Some((status, body)) = answer else {
        return CallVerdict::RegionFailure;
    };
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error_code = parsed
        .as_ref()
        .and_then(|v| v["error"]["code"].as_str())
        .map(str::to_owned);
    match status {
        200..=299 if parsed.as_ref().is_some_and(|v| v["outcome"].is_string()) => {
            CallVerdict::Healthy
        }
        200..=299 => CallVerdict::RegionFailure,
        400 if error_code
            .as_deref()
            .is_some_and(|c| REGION_LEVEL_400.contains(&c)) =>
        {
            CallVerdict::RegionFailure
        }
        401 | 403 | 404 | 405 => CallVerdict::RegionFailure,
        // Any other 4xx is the op's, provided it is the contract's error: a 4xx from something
        // that is not irc-remote (a proxy, a missing route) says nothing about the op.
        400..=499 if status != 429 && error_code.is_some() => CallVerdict::Healthy,
        _ => CallVerdict::RegionFailure,
    }
}

/// When a window of outcomes makes a region unavailable.
///
/// Two windows: the failure *rate* is taken over the last `rate_window_ms` (10 s), the
/// low-volume rule over `window_ms` (30 s). A rate over 30 s opened too late: at one op a
/// second, a window full of the successes from before an outage kept the rate under half for
/// about 20 s, and ops that started with the outage spent their 5 attempts (about 11 s of
/// backoff) and FAILED before the region opened (16 of 261 in the isolation bench). Over 10 s
/// the same outage opens the region in a few seconds, before any op's last attempt. The
/// low-volume rule keeps 30 s, so one op's 5 attempts still fall in one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthPolicy {
    /// The window the low-volume rule looks at, and how long buckets are kept.
    pub window_ms: Millis,
    /// The window the failure rate is taken over (at most `window_ms`).
    pub rate_window_ms: Millis,
    /// Width of one counting bucket.
    pub bucket_ms: Millis,
    /// At least this many failures in the rate window ...
    pub min_failures: u32,
    /// ... and at least this share of the rate window's calls failed.
    pub failure_ratio: f64,
    /// Or, whatever the volume: this many failures and no success in `window_ms`.
    pub failures_without_success: u32,
    /// The first probe of an unavailable region comes this long after it opened; each failed
    /// probe doubles the wait, up to `probe_cap_ms`.
    pub probe_first_ms: Millis,
    pub probe_cap_ms: Millis,
    /// After recovery, held ops come back spread over this long ([`admitted_after_recovery`]).
    pub resume_ramp_ms: Millis,
    /// An op held longer than this fails `region_unavailable`.
    pub max_hold_ms: Millis,
    /// How long a worker trusts the health it read (the record is no hot key).
    pub cache_ms: Millis,
}

impl Default for HealthPolicy {
    /// At least 10 failures and half the calls over 10 s, or 5 failures and no success over
    /// 30 s (DESIGN's example has 20 and 30 s for the rate; the type's doc says why not).
    fn default() -> Self {
        Self {
            window_ms: 30_000,
            rate_window_ms: 10_000,
            bucket_ms: 2_000,
            min_failures: 10,
            failure_ratio: 0.5,
            failures_without_success: 5,
            probe_first_ms: 5_000,
            probe_cap_ms: 60_000,
            resume_ramp_ms: 30_000,
            max_hold_ms: 24 * 60 * 60 * 1_000,
            cache_ms: 1_000,
        }
    }
}

/// A target region's standing, as its health record keeps it. Only two writers change it:
/// a worker opens it (closed -> open, conditional, so one opening wins and sets the probe
/// schedule) and the dispatcher closes it after a probe that found the region alive
/// (conditional on the opening it probed, so a close never undoes a newer opening).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionState {
    pub open: bool,
    /// When it last opened (0: never).
    #[serde(default)]
    pub opened_at_ms: Millis,
    /// When it last closed after being open: held ops come back over the ramp from then.
    #[serde(default)]
    pub recovered_at_ms: Option<Millis>,
    /// Failed probes since it opened.
    #[serde(default)]
    pub probes: u32,
    #[serde(default)]
    pub next_probe_at_ms: Millis,
    /// What opened it (the failure that tipped the window).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A region's state and its counts within the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionHealth {
    pub state: RegionState,
    pub buckets: Vec<Bucket>,
}

/// Whether an op to a region may be attempted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Attempt,
    /// Not before `until_ms`: the region is open (its next probe), or it recovered and this
    /// op's turn in the ramp has not come.
    Hold {
        until_ms: Millis,
    },
}

impl HealthPolicy {
    /// Whether the op `op_id` to a region in `state` may be attempted at `now`.
    pub fn admission(&self, state: &RegionState, op_id: &str, now: Millis) -> Admission {
        if state.open {
            // A probe that is late (the dispatcher runs every few seconds) must not make the
            // hold look over: hold at least a second.
            return Admission::Hold {
                until_ms: state.next_probe_at_ms.max(now + 1_000),
            };
        }
        match state.recovered_at_ms {
            Some(recovered) if now < recovered + self.resume_ramp_ms => {
                let since = now.saturating_sub(recovered);
                if admitted_after_recovery(op_id, since, self.resume_ramp_ms) {
                    Admission::Attempt
                } else {
                    Admission::Hold {
                        until_ms: recovered + ramp_point(op_id, self.resume_ramp_ms),
                    }
                }
            }
            _ => Admission::Attempt,
        }
    }

    /// When the probe after `probes` failed ones is due, counting from `now`.
    pub fn next_probe_at(&self, probes: u32, now: Millis) -> Millis {
        now + next_probe_in_ms(probes, self.probe_first_ms, self.probe_cap_ms)
    }

    /// How long a held message stays invisible: until the hold ends, but at least a hundredth
    /// of the time the op has been held, so a day-long hold costs a few hundred receives (the
    /// queue's `maxReceiveCount` allows them) however often the region is probed.
    pub fn hold_visibility_ms(
        &self,
        now: Millis,
        until_ms: Millis,
        held_since_ms: Millis,
    ) -> Millis {
        until_ms
            .saturating_sub(now)
            .max(now.saturating_sub(held_since_ms) / 100)
            .clamp(1_000, 12 * 60 * 60 * 1_000)
    }
}

/// Calls counted in one bucket, `[start_ms, start_ms + bucket_ms)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub start_ms: Millis,
    pub successes: u32,
    pub failures: u32,
}

/// Calls to a region within a window, by verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    pub successes: u64,
    pub failures: u64,
}

impl HealthPolicy {
    /// The start of the bucket `at_ms` falls in.
    pub fn bucket_of(&self, at_ms: Millis) -> Millis {
        at_ms - at_ms % self.bucket_ms.max(1)
    }

    /// The calls counted in `buckets` over the `window_ms` ending at `now`. Buckets older than
    /// the window (or from the future: another clock's) are left out.
    pub fn window_counts(&self, buckets: &[Bucket], now: Millis, window_ms: Millis) -> CallCounts {
        let since = now.saturating_sub(window_ms);
        buckets
            .iter()
            .filter(|b| b.start_ms + self.bucket_ms > since && b.start_ms <= now)
            .fold(CallCounts::default(), |c, b| CallCounts {
                successes: c.successes + u64::from(b.successes),
                failures: c.failures + u64::from(b.failures),
            })
    }

    /// Whether the buckets within the window ending at `now` say the region is unavailable:
    /// by the failure rate over `rate_window_ms`, or by failures without a success over
    /// `window_ms`.
    pub fn unavailable(&self, buckets: &[Bucket], now: Millis) -> bool {
        let rate = self.window_counts(buckets, now, self.rate_window_ms.min(self.window_ms));
        let calls = rate.successes + rate.failures;
        let by_rate = rate.failures >= u64::from(self.min_failures)
            && calls > 0
            && rate.failures as f64 >= self.failure_ratio * calls as f64;
        let silence = self.window_counts(buckets, now, self.window_ms);
        let by_silence =
            silence.successes == 0 && silence.failures >= u64::from(self.failures_without_success);
        by_rate || by_silence
    }

    /// Adds one call's verdict at `at_ms` to `buckets`, dropping buckets that left the window.
    pub fn record(&self, buckets: &mut Vec<Bucket>, verdict: CallVerdict, at_ms: Millis) {
        let start = self.bucket_of(at_ms);
        buckets.retain(|b| b.start_ms + self.window_ms + self.bucket_ms > at_ms);
        let index = match buckets.iter().position(|b| b.start_ms == start) {
            Some(i) => i,
            None => {
                let i = buckets.partition_point(|b| b.start_ms < start);
                buckets.insert(
                    i,
                    Bucket {
                        start_ms: start,
                        ..Bucket::default()
                    },
                );
                i
            }
        };
        let bucket = &mut buckets[index];
        match verdict {
            CallVerdict::Healthy => bucket.successes += 1,
            CallVerdict::RegionFailure => bucket.failures += 1,
        }
    }
}

/// After a region recovers, its held ops come back over `ramp_ms`, not all at once: an op is
/// admitted once the time since recovery passes its own point in the ramp, a hash of its id.
/// The same op always gets the same point, so every worker agrees without talking; the points
/// spread evenly, so the backlog returns at a steady rate.
pub fn admitted_after_recovery(op_id: &str, since_recovery_ms: Millis, ramp_ms: Millis) -> bool {
    ramp_ms == 0 || ramp_point(op_id, ramp_ms) <= since_recovery_ms
}

/// The op's point in a ramp of `ramp_ms` (> 0), from a stable hash of its id.
fn ramp_point(op_id: &str, ramp_ms: Millis) -> Millis {
    // FNV-1a: stable across processes and releases (std's hasher is neither).
    let hash = op_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash % ramp_ms.max(1)
}

/// How long after the `probes`-th failed probe the dispatcher probes an unavailable region
/// again: `first_ms`, doubling, at most `cap_ms`.
pub fn next_probe_in_ms(probes: u32, first_ms: Millis, cap_ms: Millis) -> Millis {
    first_ms.saturating_mul(1u64 << probes.min(20)).min(cap_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn error(code: &str) -> Vec<u8> {
        serde_json::json!({"error": {"code": code, "message": "m"}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn op_level_answers_are_healthy_and_region_level_ones_are_failures() {
        let ok = br#"{"op_id":"x","outcome":"applied","result":{}}"#;
        assert_eq!(verdict(Some((200, ok))), CallVerdict::Healthy);
        for op_level in [
            (409, "op_id_conflict"),
            (413, "too_large"),
            (422, "invalid_operation"),
            (400, "malformed_request"),
        ] {
            assert_eq!(
                verdict(Some((op_level.0, &error(op_level.1)))),
                CallVerdict::Healthy,
                "{op_level:?}"
            );
        }
        for region_level in [
            (400, error("region_not_allowed")),
            (400, error("unsupported_version")),
            (401, error("unauthorized")),
            (403, error("not_this_region")),
            (404, error("not_found")),
            (405, error("method_not_allowed")),
            (429, error("throttled")),
            (500, error("internal")),
            (503, error("store_unavailable")),
            (418, b"<html>a proxy</html>".to_vec()),
            (200, b"not json".to_vec()),
        ] {
            assert_eq!(
                verdict(Some((region_level.0, &region_level.1))),
                CallVerdict::RegionFailure,
                "{}",
                region_level.0
            );
        }
        assert_eq!(verdict(None), CallVerdict::RegionFailure);
    }

    fn counted(policy: &HealthPolicy, calls: &[(Millis, CallVerdict)]) -> Vec<Bucket> {
        let mut buckets = Vec::new();
        for (at, v) in calls {
            policy.record(&mut buckets, *v, *at);
        }
        buckets
    }

    #[test]
    fn a_failure_rate_opens_the_region_and_a_few_failures_among_many_calls_do_not() {
        let p = HealthPolicy::default();
        let many: Vec<(Millis, CallVerdict)> = (0..100)
            .map(|n| {
                let v = if n % 10 == 0 {
                    CallVerdict::RegionFailure
                } else {
                    CallVerdict::Healthy
                };
                (n * 200, v)
            })
            .collect();
        assert!(!p.unavailable(&counted(&p, &many), 20_000), "10 % failing");
        let most: Vec<(Millis, CallVerdict)> = (0..60)
            .map(|n| {
                let v = if n % 3 == 0 {
                    CallVerdict::Healthy
                } else {
                    CallVerdict::RegionFailure
                };
                (n * 400, v)
            })
            .collect();
        assert!(
            p.unavailable(&counted(&p, &most), 24_000),
            "two of three failing"
        );
        // The rate counts the last 10 s only: the same failures followed by 10 s of
        // successes do not keep it open.
        let mut recovered = most.clone();
        recovered.extend((0..25).map(|n| (24_000 + n * 400, CallVerdict::Healthy)));
        assert!(!p.unavailable(&counted(&p, &recovered), 34_000));
    }

    /// The isolation bench's case: one op a second, all succeeding for a minute, then all
    /// failing, each op retried after 0.75, 1.5, 3 s: the region opens within a few seconds,
    /// before the first failing op's fifth attempt (7.5 s at the earliest).
    #[test]
    fn a_steady_stream_that_starts_failing_opens_before_any_op_runs_out_of_attempts() {
        let p = HealthPolicy::default();
        let mut buckets = Vec::new();
        for t in (0..60_000).step_by(1_000) {
            p.record(&mut buckets, CallVerdict::Healthy, t);
        }
        let mut failures: Vec<Millis> = Vec::new();
        for op in 0..10u64 {
            let start = 60_000 + op * 1_000;
            failures.extend([start, start + 750, start + 2_250, start + 5_250]);
        }
        failures.sort();
        let opened = failures
            .iter()
            .find(|&&at| {
                p.record(&mut buckets, CallVerdict::RegionFailure, at);
                p.unavailable(&buckets, at)
            })
            .copied();
        let opened = opened.expect("it opens");
        assert!(
            opened < 60_000 + 7_500,
            "opened {} ms into the outage",
            opened - 60_000
        );
    }

    #[test]
    fn at_low_volume_five_failures_and_no_success_open_it_and_one_success_does_not() {
        let p = HealthPolicy::default();
        let five: Vec<(Millis, CallVerdict)> = (0..5)
            .map(|n| (n * 1_000, CallVerdict::RegionFailure))
            .collect();
        assert!(p.unavailable(&counted(&p, &five), 5_000));
        assert!(!p.unavailable(&counted(&p, &five[..4]), 5_000));
        let mut with_success = five.clone();
        with_success.push((2_500, CallVerdict::Healthy));
        assert!(!p.unavailable(&counted(&p, &with_success), 5_000));
        // The same failures, once they left the window, open nothing.
        assert!(!p.unavailable(&counted(&p, &five), 40_000));
    }

    #[test]
    fn held_ops_come_back_spread_over_the_ramp_and_all_of_them_by_its_end() {
        let ids: Vec<String> = (0..1_000)
            .map(|n| format!("01M96TFCYVTBEAE12B6N2B{n:04}"))
            .collect();
        let admitted = |at: Millis| {
            ids.iter()
                .filter(|id| admitted_after_recovery(id, at, 60_000))
                .count()
        };
        assert_eq!(admitted(60_000), 1_000);
        let (quarter, half) = (admitted(15_000), admitted(30_000));
        assert!(
            (150..=350).contains(&quarter),
            "{quarter} of 1000 after a quarter of the ramp"
        );
        assert!(
            (400..=600).contains(&half),
            "{half} of 1000 after half the ramp"
        );
        assert!(admitted(0) < 30);
        // The same op, the same answer, every time; no ramp admits everything.
        assert_eq!(
            admitted_after_recovery(&ids[7], 30_000, 60_000),
            admitted_after_recovery(&ids[7], 30_000, 60_000)
        );
        assert!(admitted_after_recovery(&ids[7], 0, 0));
    }

    #[test]
    fn probes_back_off_to_a_cap() {
        assert_eq!(next_probe_in_ms(0, 5_000, 60_000), 5_000);
        assert_eq!(next_probe_in_ms(1, 5_000, 60_000), 10_000);
        assert_eq!(next_probe_in_ms(3, 5_000, 60_000), 40_000);
        assert_eq!(next_probe_in_ms(4, 5_000, 60_000), 60_000);
        assert_eq!(next_probe_in_ms(200, 5_000, 60_000), 60_000);
    }

    #[test]
    fn an_open_region_holds_until_its_probe_and_a_recovered_one_admits_by_the_ramp() {
        let p = HealthPolicy::default();
        let open = RegionState {
            open: true,
            opened_at_ms: 1_000,
            next_probe_at_ms: 6_000,
            ..RegionState::default()
        };
        assert_eq!(
            p.admission(&open, "x", 2_000),
            Admission::Hold { until_ms: 6_000 }
        );
        // The probe is late: hold a second more, never "until the past".
        assert_eq!(
            p.admission(&open, "x", 9_000),
            Admission::Hold { until_ms: 10_000 }
        );
        assert_eq!(
            p.admission(&RegionState::default(), "x", 9_000),
            Admission::Attempt
        );

        let recovered = RegionState {
            recovered_at_ms: Some(100_000),
            ..RegionState::default()
        };
        let ids: Vec<String> = (0..200).map(|n| format!("op-{n}")).collect();
        let mut held = 0;
        for id in &ids {
            match p.admission(&recovered, id, 100_000 + p.resume_ramp_ms / 2) {
                Admission::Attempt => {}
                Admission::Hold { until_ms } => {
                    held += 1;
                    // Held exactly until its own point, and admitted from then on.
                    assert!(until_ms > 100_000 + p.resume_ramp_ms / 2);
                    assert!(until_ms < 100_000 + p.resume_ramp_ms);
                    assert_eq!(p.admission(&recovered, id, until_ms), Admission::Attempt);
                }
            }
            assert_eq!(
                p.admission(&recovered, id, 100_000 + p.resume_ramp_ms),
                Admission::Attempt
            );
        }
        assert!(
            (50..150).contains(&held),
            "{held} of 200 held half-way through the ramp"
        );
    }

    #[test]
    fn a_long_hold_comes_back_less_often() {
        let p = HealthPolicy::default();
        // Early on: until the probe (at least a second).
        assert_eq!(p.hold_visibility_ms(10_000, 15_000, 9_000), 5_000);
        assert_eq!(p.hold_visibility_ms(10_000, 10_000, 9_000), 1_000);
        // Held for 10 hours: every 6 minutes, whatever the probe schedule.
        let hours = 10 * 3_600_000;
        assert_eq!(p.hold_visibility_ms(hours, hours + 60_000, 0), hours / 100);
        // A day's hold at most a few hundred receives.
        let (mut now, mut receives) = (0, 0);
        while now < p.max_hold_ms {
            now += p.hold_visibility_ms(now, now + p.probe_cap_ms, 0);
            receives += 1;
        }
        assert!(receives < 450, "{receives} receives in a day");
    }

    proptest! {
        /// Buckets stay few (the window's worth and one more), ordered and in the window.
        #[test]
        fn buckets_stay_bounded_and_ordered(times in proptest::collection::vec(0u64..200_000, 1..300)) {
            let p = HealthPolicy::default();
            let mut sorted = times.clone();
            sorted.sort();
            let mut buckets = Vec::new();
            for at in &sorted {
                p.record(&mut buckets, CallVerdict::RegionFailure, *at);
                prop_assert!(buckets.len() as u64 <= p.window_ms / p.bucket_ms + 2);
                prop_assert!(buckets.windows(2).all(|w| w[0].start_ms < w[1].start_ms));
            }
            let last = *sorted.last().unwrap();
            let in_window: u64 = sorted.iter().filter(|t| p.bucket_of(**t) + p.bucket_ms > last.saturating_sub(p.window_ms)).count() as u64;
            let counted: u64 = buckets.iter().map(|b| u64::from(b.failures)).sum();
            prop_assert!(counted >= in_window);
        }
    }
}
