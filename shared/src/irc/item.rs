//! The work item: one DynamoDB item per operation in the source region's `WorkItems` table
//! (key `op_id`; GSI `by-status-due` on `status`, `due_at_ms`).

use super::awaiting::RemoteState;
use super::ids::{OpId, Region};
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where an operation is. Terminal: `Succeeded`, `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Submitted; the submit's own enqueue (fast path) is expected to deliver it.
    Pending,
    /// Enqueued again by the dispatcher.
    Dispatched,
    /// A worker holds the claim until `claim_expires_at_ms`.
    InFlight,
    /// The last attempt failed transiently; it will be tried again.
    Retrying,
    /// The target applied it and answered 202: the dispatcher follows it (`remote_state`)
    /// until the target says it is done. No worker claims it.
    WaitingRemote,
    Succeeded,
    Failed,
    /// Cancelled by an operator (`tenurectl ops cancel`): before any attempt, or when the
    /// target's tombstone won, or a wait stopped (the effect, if any, stays).
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Pending,
        Status::Dispatched,
        Status::InFlight,
        Status::Retrying,
        Status::WaitingRemote,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
    ];

    /// The statuses the dispatcher sweeps for due items.
    pub const SWEPT: [Status; 4] = [
        Status::Pending,
        Status::Dispatched,
        Status::Retrying,
        Status::InFlight,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Dispatched => "DISPATCHED",
            Status::InFlight => "IN_FLIGHT",
            Status::Retrying => "RETRYING",
            Status::WaitingRemote => "WAITING_REMOTE",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::Cancelled => "CANCELLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }

    pub fn parse(raw: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(raw))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One change of status, appended by the write that made it (an audit trail for operators:
/// `tenurectl ops status` and `wait` show every step, however brief).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub status: Status,
    pub at_ms: Millis,
}

/// The whole work item. `payload` and `result` are JSON text, so DynamoDB never reshapes them
/// (numbers, empty strings) between submit and the remote call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    pub op_id: OpId,
    pub source_region: Region,
    pub target_region: Region,
    pub kind: String,
    /// The ordering key (the group id for the shipped kinds).
    pub resource: String,
    /// Per (target region, resource) sequence, assigned at submit.
    pub seq: u64,
    pub payload: String,
    pub status: Status,
    #[serde(default)]
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_expires_at_ms: Option<Millis>,
    /// When the dispatcher should step in if nothing else moved the item on.
    pub due_at_ms: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at_ms: Millis,
    pub updated_at_ms: Millis,
    #[serde(default)]
    pub history: Vec<Transition>,
    /// When the backoff of the last failed attempt ends: no claim before it (less the clock
    /// skew), whichever copy of the message, or the dispatcher's re-enqueue, arrives first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<Millis>,
    /// +1 with every status change, from 1 at submit (0: an item from before status events);
    /// each version is one `Operation Status Change` event ([`super::events`]).
    #[serde(default)]
    pub status_version: u64,
    /// The highest version published; `status_version` above it is still to publish.
    #[serde(default)]
    pub published_version: u64,
    /// Why the op waits without an attempt (`region_unavailable`): its target region is
    /// unavailable, or it waits its turn in the region's resume ramp. Removed by a claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// When the current hold began; past `max_hold_ms` the op fails `region_unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since_ms: Option<Millis>,
    /// What the op waits for at the target (`serving`), sent as a v 2 envelope's `await`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub await_for: Option<String>,
    /// How long the target gives the awaited condition, from its 202.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub await_ms: Option<Millis>,
    /// The target's state of an op it answered 202 (IN_PROGRESS, then SUCCEEDED or FAILED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_state: Option<RemoteState>,
    /// Polls of a waiting op that found it unchanged (its poll backoff).
    #[serde(default)]
    pub polls: u32,
    /// An operator asked to cancel it after an attempt: the next claim asks the target for a
    /// tombstone instead of sending the op.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// A claim was made: the op may have reached the target. Set by the first claim and never
    /// cleared, so an attempt given back by a hold does not make a sent op look unsent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sent: bool,
}

/// The `held` reason of an op whose target region is unavailable.
pub const HELD_REGION_UNAVAILABLE: &str = "region_unavailable";

/// Why a claim is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// SUCCEEDED or FAILED: a duplicate delivery.
    Terminal,
    /// Another worker's claim is live.
    Busy,
    /// The last attempt's backoff has not ended (`retry_at_ms`).
    NotYet,
    /// WAITING_REMOTE: the dispatcher follows it; a stray copy never re-POSTs it.
    Waiting,
}

/// What a hold does ([`WorkItem::hold_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStep {
    Hold,
    /// Held too long: FAILED `region_unavailable`.
    Expire,
    /// Not waiting, or its own backoff ends after the hold: see `claim::hold_refusal`.
    Refuse,
}

/// How a cancel goes, by where the op is ([`WorkItem::cancel_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStep {
    /// Never sent: CANCELLED at once; the target never heard of it.
    NeverSent,
    /// WAITING_REMOTE: CANCELLED at once; the effect stays at the target, the wait stops.
    StopWait,
    /// Sent at least once (or being sent): only the target can say whether it applied, so
    /// `cancel_requested` makes the next attempt ask it for a tombstone.
    AskTarget,
}

impl WorkItem {
    /// Whether a worker whose clock reads `now` may claim the item, and why not. The one rule
    /// both stores apply (the DynamoDB store as its claim's condition, which must say the same).
    ///
    /// `skew_ms` is the clock error allowed between the worker that set `retry_at_ms` and the
    /// one claiming: an early claim by less than that is let through, so a retry is never
    /// started more than `skew_ms` before its backoff ends, and never held longer than its
    /// backoff by a slow clock.
    pub fn claim_refusal(&self, now: Millis, skew_ms: Millis) -> Option<ClaimRefusal> {
        match self.status {
            Status::Succeeded | Status::Failed | Status::Cancelled => Some(ClaimRefusal::Terminal),
            Status::WaitingRemote => Some(ClaimRefusal::Waiting),
            Status::InFlight if self.claim_expires_at_ms.is_some_and(|at| at < now) => None,
            Status::InFlight => Some(ClaimRefusal::Busy),
            Status::Pending | Status::Dispatched | Status::Retrying => self
                .retry_at_ms
                .is_some_and(|at| at > now + skew_ms)
                .then_some(ClaimRefusal::NotYet),
        }
    }

    /// What a hold at `now` until `until_ms` does to the item (the rule both stores apply;
    /// the DynamoDB store's hold and expiry conditions say the same): only a waiting op
    /// (PENDING, DISPATCHED, RETRYING) is held; one held `max_hold_ms` or longer fails
    /// instead; its own later backoff (`retry_at_ms` past `until_ms`) is never shortened.
    pub fn hold_step(&self, now: Millis, until_ms: Millis, max_hold_ms: Millis) -> HoldStep {
        let waiting = matches!(
            self.status,
            Status::Pending | Status::Dispatched | Status::Retrying
        );
        if !waiting {
            HoldStep::Refuse
        } else if self
            .held_since_ms
            .is_some_and(|since| now.saturating_sub(since) >= max_hold_ms)
        {
            HoldStep::Expire
        } else if self.retry_at_ms.is_some_and(|at| at > until_ms) {
            HoldStep::Refuse
        } else {
            HoldStep::Hold
        }
    }

    /// Which cancel applies to the item as it stands (`tenurectl ops cancel`), or `None` when
    /// it has ended and there is nothing to cancel. Each step is one conditional write whose
    /// condition admits the items this rule sends to it, so a cancel that loses a race to a
    /// worker or the dispatcher asks again with the item its failed write returned. (The
    /// ask-target write also admits a never-sent op; it is only tried after the never-sent
    /// write failed, and an op never becomes unsent again: `sent` is never removed.)
    pub fn cancel_step(&self) -> Option<CancelStep> {
        match self.status {
            Status::Succeeded | Status::Failed | Status::Cancelled => None,
            Status::WaitingRemote => Some(CancelStep::StopWait),
            Status::Pending | Status::Dispatched | Status::Retrying
                if self.attempts == 0 && !self.sent =>
            {
                Some(CancelStep::NeverSent)
            }
            Status::Pending | Status::Dispatched | Status::Retrying | Status::InFlight => {
                Some(CancelStep::AskTarget)
            }
        }
    }

    /// An op from us-east-1 to eu-west-1 on resource `g`, in `status` after `attempts`
    /// attempts (5 allowed), created at 0: the unit tests' one fixture.
    #[cfg(test)]
    pub(crate) fn sample(status: Status, attempts: u32) -> Self {
        use super::ids::OpId;
        let region = |r: &str| Region::parse(r).unwrap_or_else(|e| panic!("{r}: {e}"));
        WorkItem {
            op_id: OpId::new(),
            source_region: region("us-east-1"),
            target_region: region("eu-west-1"),
            kind: "group.put".into(),
            resource: "g".into(),
            seq: 1,
            payload: "{}".into(),
            status,
            attempts,
            max_attempts: 5,
            claim_token: None,
            claim_expires_at_ms: None,
            due_at_ms: 0,
            result: None,
            last_error: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            history: Vec::new(),
            retry_at_ms: None,
            status_version: 1,
            published_version: 0,
            held: None,
            held_since_ms: None,
            await_for: None,
            await_ms: None,
            remote_state: None,
            polls: 0,
            cancel_requested: false,
            sent: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_not_claimed_before_its_backoff_ends_less_the_skew() {
        let mut item = WorkItem::sample(Status::Retrying, 1);
        item.retry_at_ms = Some(10_000);
        assert_eq!(item.claim_refusal(9_000, 200), Some(ClaimRefusal::NotYet));
        assert_eq!(item.claim_refusal(9_800, 200), None);
        item.status = Status::Dispatched;
        assert_eq!(item.claim_refusal(9_000, 200), Some(ClaimRefusal::NotYet));
        item.retry_at_ms = None;
        assert_eq!(item.claim_refusal(0, 0), None);
        item.status = Status::InFlight;
        item.claim_expires_at_ms = Some(5_000);
        assert_eq!(item.claim_refusal(5_000, 0), Some(ClaimRefusal::Busy));
        assert_eq!(item.claim_refusal(5_001, 0), None);
        item.status = Status::Failed;
        assert_eq!(item.claim_refusal(0, 0), Some(ClaimRefusal::Terminal));
    }

    #[test]
    fn only_a_waiting_op_is_held_and_a_long_hold_fails_before_a_backoff_is_kept() {
        let mut item = WorkItem::sample(Status::Retrying, 1);
        assert_eq!(item.hold_step(1_000, 5_000, 60_000), HoldStep::Hold);
        item.retry_at_ms = Some(9_000);
        assert_eq!(item.hold_step(1_000, 5_000, 60_000), HoldStep::Refuse);
        item.held_since_ms = Some(0);
        assert_eq!(item.hold_step(59_999, 65_000, 60_000), HoldStep::Hold);
        assert_eq!(item.hold_step(60_000, 65_000, 60_000), HoldStep::Expire);
        assert_eq!(item.hold_step(60_000, 5_000, 60_000), HoldStep::Expire);
        for status in [
            Status::InFlight,
            Status::WaitingRemote,
            Status::Succeeded,
            Status::Cancelled,
        ] {
            item.status = status;
            assert_eq!(item.hold_step(60_000, 65_000, 60_000), HoldStep::Refuse);
        }
    }

    #[test]
    fn a_cancel_stops_what_never_left_or_only_waits_and_asks_the_target_otherwise() {
        for status in [Status::Pending, Status::Dispatched, Status::Retrying] {
            let mut item = WorkItem::sample(status, 0);
            assert_eq!(item.cancel_step(), Some(CancelStep::NeverSent));
            // An attempt given back by a hold: attempts 0 again, but the op may have arrived.
            item.sent = true;
            assert_eq!(item.cancel_step(), Some(CancelStep::AskTarget));
            let item = WorkItem::sample(status, 1);
            assert_eq!(item.cancel_step(), Some(CancelStep::AskTarget));
        }
        let in_flight = WorkItem::sample(Status::InFlight, 1);
        assert_eq!(in_flight.cancel_step(), Some(CancelStep::AskTarget));
        let waiting = WorkItem::sample(Status::WaitingRemote, 1);
        assert_eq!(waiting.cancel_step(), Some(CancelStep::StopWait));
        for status in [Status::Succeeded, Status::Failed, Status::Cancelled] {
            assert_eq!(WorkItem::sample(status, 1).cancel_step(), None);
        }
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(Status::parse("in_flight"), Some(Status::InFlight));
        assert_eq!(Status::parse("DONE"), None);
    }
}
