//! The lease record: one DynamoDB item per replica group (table `Leases`, key `group_id`).

use crate::ids::{GroupId, HostId};
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Fencing token. +1 on every acquisition; never decreases and is never reset, so storage that
/// refuses an epoch lower than one it has seen refuses every write of a deposed primary.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One replica host of a group, as the lease record sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub az: String,
    #[serde(default)]
    pub priority: u32,
    /// Function-clock time of the host's last heartbeat (0: never seen).
    #[serde(default)]
    pub last_seen_ms: Millis,
    #[serde(default = "default_true")]
    pub healthy: bool,
    /// An operator asked this host to hand over primaryship.
    #[serde(default)]
    pub draining: bool,
}

fn default_true() -> bool {
    true
}

impl Member {
    /// A member as a new group definition writes it: never seen, healthy, not draining.
    pub fn new(az: impl Into<String>, priority: u32) -> Self {
        Self {
            az: az.into(),
            priority,
            last_seen_ms: 0,
            healthy: true,
            draining: false,
        }
    }
}

/// The whole lease item. `holder` is absent when the lease is free.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub group_id: GroupId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<HostId>,
    #[serde(default)]
    pub epoch: Epoch,
    #[serde(default)]
    pub expires_at_ms: Millis,
    pub lease_ms: Millis,
    #[serde(default)]
    pub members: BTreeMap<HostId, Member>,
    #[serde(default)]
    pub updated_at_ms: Millis,
    #[serde(default)]
    pub version: u64,
}

impl LeaseRecord {
    /// A new group as DESIGN's wire contract defines it: epoch 0, no holder, expired at 0.
    pub fn new_group(
        group_id: GroupId,
        lease_ms: Millis,
        members: BTreeMap<HostId, Member>,
        now: Millis,
    ) -> Self {
        Self {
            group_id,
            holder: None,
            epoch: Epoch(0),
            expires_at_ms: 0,
            lease_ms,
            members,
            updated_at_ms: now,
            version: 0,
        }
    }

    pub fn member(&self, host: &HostId) -> Option<&Member> {
        self.members.get(host)
    }

    pub fn is_held_by(&self, host: &HostId) -> bool {
        self.holder.as_ref() == Some(host)
    }
}
