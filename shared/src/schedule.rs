//! The scheduled functions' inputs: the event that started a run (logged, never trusted) and
//! the invocation's deadline (bounds every loop inside the run). Both come from outside the
//! code, so both are total: any JSON is a trigger, any deadline a bounded `Instant`.

use crate::clock::Clock;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde_json::Value;
use std::time::{Duration, Instant};

/// What started a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A SAM `Schedule`: EventBridge's "Scheduled Event" envelope, with its rule and time.
    Schedule {
        rule: Option<String>,
        time: Option<String>,
    },
    /// Anything else: a `ScheduleV2` input, a test's or an operator's invoke.
    Direct,
}

impl Trigger {
    pub fn of(event: &Value) -> Self {
        match serde_json::from_value::<EventBridgeEvent<Value>>(event.clone()) {
            Ok(e) if e.detail_type == "Scheduled Event" => Trigger::Schedule {
                rule: e.resources.and_then(|r| r.into_iter().next()),
                time: e.time.map(|t| t.to_rfc3339()),
            },
            _ => Trigger::Direct,
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Schedule { rule, time } => write!(
                f,
                "schedule {} at {}",
                rule.as_deref().unwrap_or("(no rule)"),
                time.as_deref().unwrap_or("(no time)")
            ),
            Trigger::Direct => f.write_str("direct invoke"),
        }
    }
}

/// No Lambda invocation runs longer than this; a deadline further out is a bad input.
pub const MAX_INVOCATION: Duration = Duration::from_secs(15 * 60);

/// Turns the invocation's deadline (ms since the Unix epoch, from the runtime API) into an
/// `Instant` on the function's own clock, never more than [`MAX_INVOCATION`] ahead: a deadline
/// already past gives now, an absurd one cannot overflow or keep a loop running forever.
pub fn deadline_instant<C: Clock>(deadline_epoch_ms: u64, clock: &C) -> Instant {
    let left = Duration::from_millis(deadline_epoch_ms.saturating_sub(clock.now_ms()));
    Instant::now() + left.min(MAX_INVOCATION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_sam_schedule_envelope_names_its_rule_and_time() {
        let event = json!({"version": "0", "id": "1", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-11-25T22:00:00Z",
            "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:123456789012:rule/r"],
            "detail": {}});
        assert_eq!(
            Trigger::of(&event),
            Trigger::Schedule {
                rule: Some("arn:aws:events:us-east-1:123456789012:rule/r".into()),
                time: Some("2026-11-25T22:00:00+00:00".into())
            }
        );
        assert_eq!(Trigger::of(&json!({"any": "input"})), Trigger::Direct);
        assert_eq!(Trigger::of(&json!(null)), Trigger::Direct);
    }

    #[test]
    fn deadlines_are_bounded_both_ways() {
        let clock = FakeClock::at(1_000_000);
        let now = Instant::now();
        assert!(deadline_instant(0, &clock) <= Instant::now());
        assert!(
            deadline_instant(u64::MAX, &clock) <= now + MAX_INVOCATION + Duration::from_secs(1)
        );
        let in_ten = deadline_instant(1_010_000, &clock);
        assert!(
            in_ten >= now + Duration::from_secs(9)
                && in_ten <= Instant::now() + Duration::from_secs(10)
        );
    }

    proptest! {
        #[test]
        fn any_deadline_and_clock_give_an_instant_within_an_invocation(deadline: u64, now: u64) {
            let before = Instant::now();
            let at = deadline_instant(deadline, &FakeClock::at(now));
            prop_assert!(at >= before && at <= Instant::now() + MAX_INVOCATION);
        }
    }
}
