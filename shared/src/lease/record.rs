//! The group record: one DynamoDB item per replica group (table `Leases`, key `group_id`). In
//! protocol v2 it keeps only a *grant*: which host holds the group and at which of that host's
//! epochs. Whether the grant is live is decided by the holder's host record
//! ([`super::host::HostRecord`]), so renewing one host lease keeps every grant of that host
//! alive without touching any group item.

use crate::ids::{GroupId, HostId};
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Fencing token. +1 on every acquisition; never decreases and is never reset (a deleted
/// group leaves a tombstone that keeps it), so storage that refuses an epoch lower than one it
/// has seen refuses every write of a deposed primary. Host epochs use the same type: +1 on
/// every revocation, never reset.
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

/// One replica host of a group, as the group record sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub az: String,
    #[serde(default)]
    pub priority: u32,
    /// An operator asked this host to hand this group over.
    #[serde(default)]
    pub draining: bool,
    /// When this host last released the group: it is no candidate for it again until it has
    /// checked in `heartbeat_timeout_ms` after that, so a release hands over to the next host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at_ms: Option<Millis>,
    /// v1's per-member heartbeat. Read from items written in v1's shape, never written by v2
    /// and never decided on: v2 keeps liveness on the host record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<Millis>,
    /// v1's per-member health (see `last_seen_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
}

impl Member {
    /// A member as a group definition writes it: not draining, never released.
    pub fn new(az: impl Into<String>, priority: u32) -> Self {
        Self {
            az: az.into(),
            priority,
            draining: false,
            released_at_ms: None,
            last_seen_ms: None,
            healthy: None,
        }
    }
}

/// The whole group item. `holder` is absent when the group is free.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub group_id: GroupId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<HostId>,
    /// The holder's host epoch when it acquired. Absent with a holder: a lease taken under v1,
    /// live until its own `expires_at_ms` (see [`super::protocol::GrantState::V1Held`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_host_epoch: Option<Epoch>,
    /// The group's fencing epoch.
    #[serde(default)]
    pub epoch: Epoch,
    /// v1's lease expiry. v2 decides on it only for a group still held under v1.
    #[serde(default)]
    pub expires_at_ms: Millis,
    /// Kept and validated against the region's rules, but informational in v2: the host
    /// lease (the region's `lease_ms`) decides how long a grant lives.
    pub lease_ms: Millis,
    #[serde(default)]
    pub members: BTreeMap<HostId, Member>,
    /// When the group was created or last released: lower-priority candidates wait one
    /// `heartbeat_timeout_ms` from here for a better one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_since_ms: Option<Millis>,
    /// A deleted group: the item stays as a tombstone so its epoch continues if the group is
    /// created again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(default)]
    pub updated_at_ms: Millis,
    #[serde(default)]
    pub version: u64,
}

impl LeaseRecord {
    /// A new group as the wire contract defines it (`docs/protocol.md`): epoch 0, no holder, free since `now`.
    pub fn new_group(
        group_id: GroupId,
        lease_ms: Millis,
        members: BTreeMap<HostId, Member>,
        now: Millis,
    ) -> Self {
        Self {
            group_id,
            holder: None,
            holder_host_epoch: None,
            epoch: Epoch(0),
            expires_at_ms: 0,
            lease_ms,
            members,
            free_since_ms: Some(now),
            deleted: false,
            updated_at_ms: now,
            version: 0,
        }
    }

    pub fn member(&self, host: &HostId) -> Option<&Member> {
        self.members.get(host)
    }

    pub(crate) fn is_held_by(&self, host: &HostId) -> bool {
        self.holder.as_ref() == Some(host)
    }
}
