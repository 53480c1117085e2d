//! The work item: one DynamoDB item per operation in the source region's `WorkItems` table
//! (key `op_id`; GSI `by-status-due` on `status`, `due_at_ms`).

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
    Succeeded,
    Failed,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Dispatched,
        Status::InFlight,
        Status::Retrying,
        Status::Succeeded,
        Status::Failed,
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
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed)
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
