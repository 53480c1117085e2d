//! Retry delays: exponential with jitter, so retries of many ops after one outage spread out
//! instead of arriving together.

use crate::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_ms: Millis,
    pub cap_ms: Millis,
}

impl Backoff {
    /// The wait before attempt `attempts + 1`, after `attempts` failed ones: uniformly in
    /// `[d/2, d]` where `d = min(cap, base * 2^(attempts-1))` ("equal jitter": never less than
    /// half the exponential step, so the backoff is still visible under jitter).
    pub fn delay_ms(&self, attempts: u32, unit_random: f64) -> Millis {
        let exp = attempts.saturating_sub(1).min(32);
        let d = self
            .base_ms
            .saturating_mul(1u64 << exp)
            .min(self.cap_ms)
            .max(1);
        let r = unit_random.clamp(0.0, 1.0);
        d / 2 + ((d - d / 2) as f64 * r) as Millis
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff {
            base_ms: 1_000,
            cap_ms: 5_000,
        };
        assert_eq!(b.delay_ms(1, 1.0), 1_000);
        assert_eq!(b.delay_ms(2, 1.0), 2_000);
        assert_eq!(b.delay_ms(3, 1.0), 4_000);
        assert_eq!(b.delay_ms(4, 1.0), 5_000);
        assert_eq!(b.delay_ms(60, 0.0), 2_500);
        assert_eq!(b.delay_ms(1, 0.0), 500);
    }

    proptest! {
        #[test]
        fn always_within_half_and_whole_step(attempts in 0u32..100, r in 0.0f64..=1.0, base in 1u64..100_000, cap in 1u64..1_000_000) {
            let b = Backoff { base_ms: base, cap_ms: cap };
            let d = b.delay_ms(attempts, r);
            let step = base.saturating_mul(1u64 << attempts.saturating_sub(1).min(32)).min(cap).max(1);
            prop_assert!(d >= step / 2 && d <= step);
        }
    }
}
