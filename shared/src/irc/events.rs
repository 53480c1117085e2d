//! Status events: every change of an operation's status is published on the source region's
//! default EventBridge bus (source `tenure.irc`, detail-type `Operation Status Change`), so the
//! local control plane hears of each step without polling.
//!
//! How none is lost (`docs/irc.md`, "Status events"): every write that changes an item's
//! status raises its `status_version` by exactly 1 and marks it unpublished (the sparse
//! `by-unpublished` index). The table's stream carries each version to irc-events, which
//! publishes one event per version and then marks the item published up to that version; a
//! stream batch that keeps failing is given up after a few tries, and the dispatcher's sweep
//! publishes whatever stayed unpublished (the item's current version). A function that dies
//! between the write and the publish loses nothing: the write is what the stream carries. A
//! function that dies between the publish and the mark publishes again: consumers see
//! duplicates (same `op_id` and `status_version`), never silence, and order by
//! `status_version` (EventBridge keeps no order); a version the sweep skipped shows as a gap.

use super::ids::{OpId, Region};
use super::item::{Status, WorkItem};
use serde::{Deserialize, Serialize};

pub const EVENT_SOURCE: &str = "tenure.irc";
pub const EVENT_DETAIL_TYPE: &str = "Operation Status Change";

/// The `detail` of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub op_id: OpId,
    pub kind: String,
    pub resource: String,
    pub target_region: Region,
    pub status: Status,
    /// The status before this change; none for the submit.
    pub previous_status: Option<Status>,
    /// What the remote said of an awaited op, when there is one (IRC v2).
    pub remote_state: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// +1 per change: consumers order by it and see a gap as a missing number.
    pub status_version: u64,
}

impl StatusEvent {
    fn of(item: &WorkItem, previous_status: Option<Status>) -> Self {
        Self {
            op_id: item.op_id.clone(),
            kind: item.kind.clone(),
            resource: item.resource.clone(),
            target_region: item.target_region.clone(),
            status: item.status,
            previous_status,
            remote_state: None,
            attempts: item.attempts,
            last_error: item.last_error.clone(),
            status_version: item.status_version,
        }
    }
}

/// The event for the write that turned `old` into `new` (a stream record's images), or none
/// when the write changed no status (marking the item published, an item written before
/// status versions existed).
pub fn event_for(old: Option<&WorkItem>, new: &WorkItem) -> Option<StatusEvent> {
    let before = old.map_or(0, |o| o.status_version);
    (new.status_version > before).then(|| StatusEvent::of(new, old.map(|o| o.status)))
}

/// The event for an item's current version, for the sweep (the stream's record of it is
/// gone): the previous status is the one before the last in its history.
pub fn current_event(item: &WorkItem) -> StatusEvent {
    let previous = item
        .history
        .len()
        .checked_sub(2)
        .and_then(|i| item.history.get(i))
        .map(|t| t.status);
    StatusEvent::of(item, previous)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irc::item::Transition;

    fn at(status: Status, version: u64) -> WorkItem {
        WorkItem {
            status_version: version,
            ..WorkItem::sample(status, 1)
        }
    }

    #[test]
    fn each_new_version_is_an_event_with_the_status_it_left() {
        let submitted = at(Status::Pending, 1);
        let first = event_for(None, &submitted).unwrap();
        assert_eq!(
            (first.status, first.previous_status),
            (Status::Pending, None)
        );
        let claimed = WorkItem {
            op_id: submitted.op_id.clone(),
            ..at(Status::InFlight, 2)
        };
        let second = event_for(Some(&submitted), &claimed).unwrap();
        assert_eq!(
            (second.status, second.previous_status, second.status_version),
            (Status::InFlight, Some(Status::Pending), 2)
        );
        // Marking it published (or any write that leaves the version) is no event.
        assert_eq!(event_for(Some(&claimed), &claimed), None);
        // An item from before status versions: no version, no event.
        assert_eq!(event_for(None, &at(Status::Pending, 0)), None);
    }

    #[test]
    fn the_sweeps_event_takes_the_previous_status_from_the_history() {
        let mut item = at(Status::Retrying, 3);
        item.history = vec![
            Transition {
                status: Status::Pending,
                at_ms: 0,
            },
            Transition {
                status: Status::InFlight,
                at_ms: 1,
            },
            Transition {
                status: Status::Retrying,
                at_ms: 2,
            },
        ];
        let event = current_event(&item);
        assert_eq!(event.previous_status, Some(Status::InFlight));
        assert_eq!(event.status_version, 3);
        item.history.truncate(1);
        assert_eq!(current_event(&item).previous_status, None);
    }

    #[test]
    fn the_detail_has_the_contracts_fields() {
        let mut item = at(Status::Failed, 4);
        item.last_error = Some("HTTP 422 invalid_payload: x".into());
        let detail = serde_json::to_value(event_for(None, &item).unwrap()).unwrap();
        for field in [
            "op_id",
            "kind",
            "resource",
            "target_region",
            "status",
            "previous_status",
            "remote_state",
            "attempts",
            "last_error",
            "status_version",
        ] {
            assert!(detail.get(field).is_some(), "{field} in {detail}");
        }
        assert_eq!(detail["status"], "FAILED");
    }
}
