//! The lease store: the protocol's plans executed as single conditional writes (or one
//! transaction where a change must also tell other hosts). A failed condition comes back as a
//! typed outcome carrying the item as it stands, never as an error, so callers never match on
//! SDK errors and never act on a second, possibly stale, read.
//!
//! Two implementations: [`super::dynamo::DynamoLeaseStore`] (tables `Hosts` and `Leases`) and
//! [`super::memory::MemoryLeaseStore`], which evaluates the plans' own `condition_holds` and
//! `apply` under one lock: one item, one outcome, serialised as DynamoDB does. The DynamoDB
//! conditions are the spelling of those predicates; keep the two in step.

use super::host::HostRecord;
use super::protocol::{
    AcquirePlan, HeartbeatPlan, IncarnationChangePlan, ReleasePlan, RenewPlan, RevokePlan,
};
use super::record::{Epoch, LeaseRecord, Member};
use crate::ids::{GroupId, HostId};
use crate::Millis;
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::collections::{BTreeMap, BTreeSet};

pub use crate::StoreError;

/// A consistent read of several host and group items (tombstones are returned as such).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    pub hosts: BTreeMap<HostId, HostRecord>,
    pub groups: BTreeMap<GroupId, LeaseRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    Recorded(HostRecord),
    /// Another incarnation is recorded: the caller decides whether to make the second write.
    OtherIncarnation(HostRecord),
}

/// A conditional write's outcome: written (the item after), or refused (the item as it
/// stands, `None` when there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written<T> {
    Done(T),
    LostRace(Option<T>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewOutcome {
    Renewed {
        expires_at_ms: Millis,
    },
    /// The epoch, expiry, health or incarnation moved since the read.
    LostRace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    Released(LeaseRecord),
    UnknownGroup,
    /// The caller does not hold the group at that epoch (stale release).
    NotHolder(LeaseRecord),
}

/// A group definition as tenurectl and the IRC's `group.put` write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDefinition {
    pub group_id: GroupId,
    pub lease_ms: Millis,
    pub members: BTreeMap<HostId, Member>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Refuse if the group exists (a tombstone does not count: its epoch continues).
    Create,
    /// Create or redefine; `holder` and `epoch` are never touched.
    Upsert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    AlreadyExists,
}

/// What a delete expects of the group it tombstones, as read (and revoked) just before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteExpect {
    /// `attribute_not_exists(holder)`.
    Free,
    /// `holder_host_epoch = :hhe`: the grant seen revoked (host epochs never go back).
    RevokedGrant(Epoch),
    /// A v1 lease past its expiry: `expires_at_ms < :not_after`.
    V1Lapsed { not_after_ms: Millis },
}

/// Tombstones a group: `SET deleted = :true REMOVE holder, holder_host_epoch, members` under
/// `epoch = :seen AND` [`DeleteExpect`]. The item stays, so the epoch continues if the group
/// is created again and a fence never sees an epoch go back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletePlan {
    pub seen_epoch: Epoch,
    pub expect: DeleteExpect,
    pub now: Millis,
}

impl DeletePlan {
    pub fn condition_holds(&self, current: &LeaseRecord) -> bool {
        !current.deleted
            && current.epoch == self.seen_epoch
            && match self.expect {
                DeleteExpect::Free => current.holder.is_none(),
                DeleteExpect::RevokedGrant(hhe) => current.holder_host_epoch == Some(hhe),
                DeleteExpect::V1Lapsed { not_after_ms } => {
                    current.holder_host_epoch.is_none() && current.expires_at_ms < not_after_ms
                }
            }
    }

    pub fn apply(&self, current: &LeaseRecord) -> LeaseRecord {
        tombstone(current, self.now)
    }
}

/// A delete decided without reading the group: the IRC's `group.delete`, one write inside the
/// remote's idempotency transaction. Only a free group, or one whose v1 lease lapsed before
/// `not_after_ms`; a v2 grant refuses even when revoked, because telling that needs the host
/// item, which a single write cannot read (`tenurectl groups delete` reads, revokes, deletes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlindDeletePlan {
    pub not_after_ms: Millis,
    pub now: Millis,
}

impl BlindDeletePlan {
    pub fn condition_holds(&self, current: &LeaseRecord) -> bool {
        !current.deleted
            && (current.holder.is_none()
                || (current.holder_host_epoch.is_none()
                    && current.expires_at_ms < self.not_after_ms))
    }

    pub fn apply(&self, current: &LeaseRecord) -> LeaseRecord {
        tombstone(current, self.now)
    }
}

/// The tombstone both deletes leave: the item stays with its epoch, without holder or members.
fn tombstone(current: &LeaseRecord, now: Millis) -> LeaseRecord {
    let mut next = current.clone();
    next.deleted = true;
    next.holder = None;
    next.holder_host_epoch = None;
    next.members.clear();
    next.updated_at_ms = now;
    next.version += 1;
    next
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    UnknownGroup,
    /// The group changed since it was read (acquired, released, renewed under v1).
    Changed(LeaseRecord),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberUpdate {
    Recorded(LeaseRecord),
    UnknownGroup,
    NotMember(LeaseRecord),
}

/// The tables `Hosts` and `Leases`. Reads are strongly consistent unless they say otherwise.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Hosts and groups in as few consistent batch reads as the store allows (100 items each).
    async fn read(&self, hosts: &[HostId], groups: &[GroupId]) -> Result<Reads, StoreError>;

    async fn read_host(&self, host: &HostId) -> Result<Option<HostRecord>, StoreError> {
        Ok(self
            .read(std::slice::from_ref(host), &[])
            .await?
            .hosts
            .remove(host))
    }

    async fn read_group(&self, group: &GroupId) -> Result<Option<LeaseRecord>, StoreError> {
        Ok(self
            .read(&[], std::slice::from_ref(group))
            .await?
            .groups
            .remove(group))
    }

    async fn heartbeat(&self, plan: &HeartbeatPlan) -> Result<HeartbeatOutcome, StoreError>;

    async fn change_incarnation(
        &self,
        plan: &IncarnationChangePlan,
    ) -> Result<Written<HostRecord>, StoreError>;

    async fn renew(&self, plan: &RenewPlan) -> Result<RenewOutcome, StoreError>;

    async fn revoke(&self, plan: &RevokePlan) -> Result<Written<HostRecord>, StoreError>;

    /// `DELETE attention :ids` on the host: removes exactly these ids, so an id added again
    /// after this write stays for the next check.
    async fn consume_attention(
        &self,
        host: &HostId,
        ids: &BTreeSet<GroupId>,
        now: Millis,
    ) -> Result<(), StoreError>;

    async fn acquire(
        &self,
        group: &GroupId,
        plan: &AcquirePlan,
    ) -> Result<Written<LeaseRecord>, StoreError>;

    /// The release and `ADD attention` on `notify`'s host items, in one transaction.
    async fn release(
        &self,
        group: &GroupId,
        plan: &ReleasePlan,
        notify: &[HostId],
    ) -> Result<ReleaseOutcome, StoreError>;

    /// Writes a group definition and `ADD attention` on each member's host item, in one
    /// transaction; `epoch` continues (`if_not_exists`), a tombstone is revived.
    async fn put_group(
        &self,
        definition: &GroupDefinition,
        mode: PutMode,
        now: Millis,
    ) -> Result<CreateOutcome, StoreError>;

    async fn delete_group(
        &self,
        group: &GroupId,
        plan: &DeletePlan,
    ) -> Result<DeleteOutcome, StoreError>;

    /// Sets or clears an operator's drain of one member, with `ADD attention :g` on that host.
    async fn set_member_draining(
        &self,
        group: &GroupId,
        host: &HostId,
        draining: bool,
        now: Millis,
    ) -> Result<MemberUpdate, StoreError>;

    /// Sets or clears the drain of a whole host (creating its item if it has none).
    async fn set_host_draining(
        &self,
        host: &HostId,
        draining: bool,
        now: Millis,
    ) -> Result<HostRecord, StoreError>;

    /// Every host in one parallel-scan segment (eventually consistent: a stale read only makes
    /// a renewal fail its condition or come out shorter, never unsafe).
    fn scan_hosts(
        &self,
        segment: u32,
        total_segments: u32,
    ) -> BoxStream<'static, Result<HostRecord, StoreError>>;

    /// Every group item, tombstones included (operators' listings, resync; not the hot path).
    fn scan_groups(&self) -> BoxStream<'static, Result<LeaseRecord, StoreError>>;

    /// The groups `host` holds, from the `by-holder` index: eventually consistent, for `GET`
    /// and operators, never for a decision.
    async fn groups_held_by(&self, host: &HostId) -> Result<Vec<LeaseRecord>, StoreError>;
}
