//! Operations followed to a remote state (IRC v2): an op whose effect is written at once but is
//! done only when the target says so. `group.put` with `"await": "serving"` is done when the
//! group is served in the target region, not when its record is written.
//!
//! Pure: what an awaited op's envelope may say, and what one observation of the target makes
//! of it. The target records the first observation that ends it (IN_PROGRESS -> SUCCEEDED or
//! FAILED, conditionally) and never recomputes it, so every later reader gets the same answer.

use crate::lease::protocol::GrantState;
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The one condition shipped: the group this op wrote is served.
pub const AWAIT_SERVING: &str = "serving";
/// `await_ms` when the envelope gives none.
pub const DEFAULT_AWAIT_MS: Millis = 10 * 60 * 1_000;
/// `await_ms` must lie in this range (1 s to 7 days).
pub const AWAIT_MS_RANGE: std::ops::RangeInclusive<Millis> = 1_000..=7 * 24 * 60 * 60 * 1_000;

/// Where an op stands at its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RemoteState {
    /// Applied; the awaited condition has not been seen yet.
    InProgress,
    Succeeded,
    Failed,
}

impl RemoteState {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteState::InProgress => "IN_PROGRESS",
            RemoteState::Succeeded => "SUCCEEDED",
            RemoteState::Failed => "FAILED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::InProgress, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for RemoteState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What one look at the target found for an op in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A member this op wrote holds a live grant, and the op is still the resource's latest.
    Serving { holder: String },
    /// A later op on the resource was applied: this one ends `superseded` (a success).
    Superseded { by_seq: u64 },
    /// `await_ms` passed before it was served: FAILED `expired`.
    Expired,
    /// Not yet.
    Waiting,
}

/// What the target sees of the resource when it looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sight<'a> {
    pub now: Millis,
    pub deadline_ms: Millis,
    /// This op's seq, and the seq last applied on the resource from its source region.
    pub seq: u64,
    pub applied_seq: Option<u64>,
    /// The hosts this op wrote as the group's members.
    pub members: &'a [String],
    /// The group's grant as it stands (`None`: the group is gone).
    pub grant: Option<&'a GrantState>,
}

/// One observation. A later op decides first (this one can never be served as written), then
/// serving (served now counts, even at the deadline), then the deadline.
pub fn observe(sight: &Sight<'_>) -> Observation {
    if let Some(applied) = sight.applied_seq.filter(|a| *a > sight.seq) {
        return Observation::Superseded { by_seq: applied };
    }
    if let Some(GrantState::Live { holder }) = sight.grant {
        if sight.members.iter().any(|m| m == holder.as_str()) {
            return Observation::Serving {
                holder: holder.to_string(),
            };
        }
    }
    if sight.now >= sight.deadline_ms {
        return Observation::Expired;
    }
    Observation::Waiting
}

/// How long a poller should wait after the `polls`-th look found the op in progress: 1 s,
/// doubling, at most 30 s.
pub fn poll_after_ms(polls: u32) -> Millis {
    1_000u64.saturating_mul(1u64 << polls.min(16)).min(30_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::HostId;

    fn host(h: &str) -> HostId {
        HostId::parse(h).unwrap()
    }

    #[test]
    fn served_by_a_member_it_wrote_is_success_and_by_anyone_else_is_not() {
        let members = vec!["db-1".to_owned(), "db-2".to_owned()];
        let live = GrantState::Live {
            holder: host("db-2"),
        };
        let stranger = GrantState::Live {
            holder: host("db-9"),
        };
        let lapsed = GrantState::Lapsed {
            holder: host("db-1"),
            host_epoch: crate::lease::record::Epoch(3),
        };
        let sight = |grant, now, applied| Sight {
            now,
            deadline_ms: 10_000,
            seq: 4,
            applied_seq: applied,
            members: &members,
            grant,
        };
        assert_eq!(
            observe(&sight(Some(&live), 5_000, Some(4))),
            Observation::Serving {
                holder: "db-2".into()
            }
        );
        assert_eq!(
            observe(&sight(Some(&stranger), 5_000, Some(4))),
            Observation::Waiting
        );
        assert_eq!(
            observe(&sight(Some(&lapsed), 5_000, Some(4))),
            Observation::Waiting
        );
        assert_eq!(
            observe(&sight(Some(&GrantState::Free), 5_000, Some(4))),
            Observation::Waiting
        );
        assert_eq!(observe(&sight(None, 5_000, Some(4))), Observation::Waiting);
        // A later op on the group decides, even while a member serves it.
        assert_eq!(
            observe(&sight(Some(&live), 5_000, Some(5))),
            Observation::Superseded { by_seq: 5 }
        );
        // At the deadline: served counts, not served expires.
        assert_eq!(
            observe(&sight(Some(&live), 10_000, Some(4))),
            Observation::Serving {
                holder: "db-2".into()
            }
        );
        assert_eq!(
            observe(&sight(Some(&GrantState::Free), 10_000, Some(4))),
            Observation::Expired
        );
    }

    #[test]
    fn polls_back_off_from_a_second_to_thirty() {
        let waits: Vec<Millis> = (0..8).map(poll_after_ms).collect();
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(poll_after_ms(u32::MAX), 30_000);
    }

    #[test]
    fn remote_states_round_trip() {
        for s in [
            RemoteState::InProgress,
            RemoteState::Succeeded,
            RemoteState::Failed,
        ] {
            assert_eq!(RemoteState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(RemoteState::parse("DONE"), None);
    }
}
