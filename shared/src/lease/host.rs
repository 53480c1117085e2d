//! The host record: one DynamoDB item per database host (table `Hosts`, key `host_id`). The
//! lease belongs to the host: one renewal keeps every grant the host holds at its current
//! epoch alive, one revocation (an epoch bump) ends all of them at once, for good.
//!
//! Host items are never deleted, and every write that can create one starts `epoch`,
//! `expires_at_ms` and `revoked_at_ms` at 0 with `if_not_exists`, so every attribute a
//! condition compares exists (DynamoDB treats a comparison with a missing attribute as false).

use super::record::Epoch;
use crate::ids::{GroupId, HostId, Incarnation};
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The incarnation of callers that send none (the v1 endpoints, simple clients): they behave
/// as in v1, a restarted process is the same incarnation.
pub(crate) const DEFAULT_INCARNATION: &str = "default";

/// The default incarnation as an id.
pub(crate) fn default_incarnation() -> Incarnation {
    // The literal is a valid id (checked by a unit test), so this cannot fail.
    Incarnation::parse(DEFAULT_INCARNATION).unwrap_or_else(|_| unreachable!())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostRecord {
    pub host_id: HostId,
    /// +1 on each revocation; never decreases, never reset.
    #[serde(default)]
    pub epoch: Epoch,
    /// The host lease ends here (function clock).
    #[serde(default)]
    pub expires_at_ms: Millis,
    /// The host's last heartbeat and the health it reported.
    #[serde(default)]
    pub last_seen_ms: Millis,
    #[serde(default = "yes")]
    pub healthy: bool,
    /// The whole host is being drained: every group it holds hands over.
    #[serde(default)]
    pub draining: bool,
    /// Groups this host must re-read at its next poll (a DynamoDB string set).
    #[serde(
        default,
        with = "serde_dynamo::string_set",
        skip_serializing_if = "BTreeSet::is_empty"
    )]
    pub attention: BTreeSet<GroupId>,
    /// The agent process that last heartbeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<Incarnation>,
    /// Set (to the time) when a heartbeat came from a new incarnation: no renewal until the
    /// host is revoked, so the grants the old process held lapse before anyone uses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation_changed: Option<Millis>,
    /// When the epoch was last raised.
    #[serde(default)]
    pub revoked_at_ms: Millis,
    #[serde(default)]
    pub updated_at_ms: Millis,
    #[serde(default)]
    pub version: u64,
}

fn yes() -> bool {
    true
}

impl HostRecord {
    /// A host never seen: what every `if_not_exists` default amounts to. A missing host item
    /// reads as this, so decisions never special-case it.
    pub fn absent(host_id: HostId) -> Self {
        Self {
            host_id,
            epoch: Epoch(0),
            expires_at_ms: 0,
            last_seen_ms: 0,
            healthy: true,
            draining: false,
            attention: BTreeSet::new(),
            incarnation: None,
            incarnation_changed: None,
            revoked_at_ms: 0,
            updated_at_ms: 0,
            version: 0,
        }
    }

    /// Whether `incarnation` is the process this record speaks for: the recorded one, with no
    /// change pending. Only such a caller is ever answered writable.
    pub fn speaks_for(&self, incarnation: &Incarnation) -> bool {
        self.incarnation.as_ref() == Some(incarnation) && self.incarnation_changed.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_incarnation_is_a_valid_id() {
        assert!(Incarnation::parse(DEFAULT_INCARNATION).is_ok());
        assert_eq!(default_incarnation().as_str(), DEFAULT_INCARNATION);
    }

    #[cfg(feature = "aws")]
    #[test]
    fn attention_is_stored_as_a_string_set_and_omitted_when_empty() {
        let mut host = HostRecord::absent(HostId::parse("h1").unwrap());
        let item: serde_dynamo::Item = serde_dynamo::to_item(&host).unwrap();
        assert!(!item.contains_key("attention"));
        host.attention.insert(GroupId::parse("g1").unwrap());
        let item: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> =
            serde_dynamo::to_item(&host).unwrap();
        assert_eq!(
            item["attention"],
            aws_sdk_dynamodb::types::AttributeValue::Ss(vec!["g1".into()])
        );
        let back: HostRecord = serde_dynamo::from_item(item).unwrap();
        assert_eq!(back, host);
    }
}
