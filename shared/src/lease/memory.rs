//! The lease store in memory, built on the protocol's own predicates: every operation takes
//! one lock, evaluates the plan's `condition_holds` on the item as it stands and, if it holds,
//! stores the plan's `apply`. So it is linearizable as DynamoDB is per item (and per
//! transaction), and a missing item or attribute compares false as in DynamoDB. Tests and
//! benchmarks use it where MiniStack is not the point.

use super::host::HostRecord;
use super::protocol::{
    AcquirePlan, HeartbeatPlan, IncarnationChangePlan, ReleasePlan, RenewPlan, RevokePlan,
};
use super::record::LeaseRecord;
use super::store::{
    CreateOutcome, DeleteOutcome, DeletePlan, GroupDefinition, HeartbeatOutcome, LeaseStore,
    MemberUpdate, PutMode, Reads, ReleaseOutcome, RenewOutcome, StoreError, Written,
};
use crate::ids::{GroupId, HostId};
use crate::Millis;
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Tables {
    hosts: BTreeMap<HostId, HostRecord>,
    groups: BTreeMap<GroupId, LeaseRecord>,
    /// Set by [`MemoryLeaseStore::renewer_goes_first`].
    renewer_first: bool,
}

impl Tables {
    fn renew(&mut self, plan: &RenewPlan) -> RenewOutcome {
        match self.hosts.get(&plan.host) {
            Some(host) if plan.condition_holds(Some(host)) => {
                let next = plan.apply(host);
                self.hosts.insert(plan.host.clone(), next);
                RenewOutcome::Renewed {
                    expires_at_ms: plan.new_expires_at_ms,
                }
            }
            _ => RenewOutcome::LostRace,
        }
    }

    /// `ADD attention :g` with the `if_not_exists` defaults of a host item.
    fn notify(&mut self, host: &HostId, group: &GroupId, now: Millis) {
        let record = self
            .hosts
            .entry(host.clone())
            .or_insert_with(|| HostRecord::absent(host.clone()));
        record.attention.insert(group.clone());
        record.updated_at_ms = now;
        record.version += 1;
    }
}

/// Clones share the same tables.
#[derive(Debug, Clone, Default)]
pub struct MemoryLeaseStore {
    tables: Arc<Mutex<Tables>>,
}

impl MemoryLeaseStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves whole items behind (every change is computed
        // before it is stored), so a poisoned lock is still consistent.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a group item as it is, unconditionally (tests: v1-shaped items, fixtures).
    pub fn put_group_item(&self, record: LeaseRecord) {
        self.lock().groups.insert(record.group_id.clone(), record);
    }

    /// Puts a host item as it is, unconditionally (tests).
    pub fn put_host_item(&self, record: HostRecord) {
        self.lock().hosts.insert(record.host_id.clone(), record);
    }

    /// The next `renew` finds the same renewal already written, as when the scheduled renewer
    /// reaches a host between a check's heartbeat and that check's own renewal (tests).
    pub fn renewer_goes_first(&self) {
        self.lock().renewer_first = true;
    }

    pub fn host(&self, host: &HostId) -> Option<HostRecord> {
        self.lock().hosts.get(host).cloned()
    }

    pub fn group(&self, group: &GroupId) -> Option<LeaseRecord> {
        self.lock().groups.get(group).cloned()
    }
}

#[async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn read(&self, hosts: &[HostId], groups: &[GroupId]) -> Result<Reads, StoreError> {
        let t = self.lock();
        Ok(Reads {
            hosts: hosts
                .iter()
                .filter_map(|h| t.hosts.get(h).map(|r| (h.clone(), r.clone())))
                .collect(),
            groups: groups
                .iter()
                .filter_map(|g| t.groups.get(g).map(|r| (g.clone(), r.clone())))
                .collect(),
        })
    }

    async fn heartbeat(&self, plan: &HeartbeatPlan) -> Result<HeartbeatOutcome, StoreError> {
        let mut t = self.lock();
        let current = t.hosts.get(&plan.host);
        if !plan.condition_holds(current) {
            return Ok(HeartbeatOutcome::OtherIncarnation(
                current
                    .cloned()
                    .unwrap_or_else(|| HostRecord::absent(plan.host.clone())),
            ));
        }
        let next = plan.apply(current);
        t.hosts.insert(plan.host.clone(), next.clone());
        Ok(HeartbeatOutcome::Recorded(next))
    }

    async fn change_incarnation(
        &self,
        plan: &IncarnationChangePlan,
    ) -> Result<Written<HostRecord>, StoreError> {
        let mut t = self.lock();
        let host = &plan.heartbeat.host;
        let current = t.hosts.get(host);
        if !plan.condition_holds(current) {
            return Ok(Written::LostRace(current.cloned()));
        }
        let next = plan.apply(current);
        t.hosts.insert(host.clone(), next.clone());
        Ok(Written::Done(next))
    }

    async fn renew(&self, plan: &RenewPlan) -> Result<RenewOutcome, StoreError> {
        let mut t = self.lock();
        if std::mem::take(&mut t.renewer_first) {
            t.renew(plan);
        }
        Ok(t.renew(plan))
    }

    async fn revoke(&self, plan: &RevokePlan) -> Result<Written<HostRecord>, StoreError> {
        let mut t = self.lock();
        let current = t.hosts.get(&plan.host);
        if !plan.condition_holds(current) {
            return Ok(Written::LostRace(current.cloned()));
        }
        let next = plan.apply(current);
        t.hosts.insert(plan.host.clone(), next.clone());
        Ok(Written::Done(next))
    }

    async fn consume_attention(
        &self,
        host: &HostId,
        ids: &BTreeSet<GroupId>,
        now: Millis,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut t = self.lock();
        let record = t
            .hosts
            .entry(host.clone())
            .or_insert_with(|| HostRecord::absent(host.clone()));
        record.attention.retain(|g| !ids.contains(g));
        record.updated_at_ms = now;
        record.version += 1;
        Ok(())
    }

    async fn acquire(
        &self,
        group: &GroupId,
        plan: &AcquirePlan,
    ) -> Result<Written<LeaseRecord>, StoreError> {
        let mut t = self.lock();
        match t.groups.get(group) {
            Some(current) if plan.condition_holds(current) => {
                let next = plan.apply(current);
                t.groups.insert(group.clone(), next.clone());
                Ok(Written::Done(next))
            }
            current => Ok(Written::LostRace(current.cloned())),
        }
    }

    async fn release(
        &self,
        group: &GroupId,
        plan: &ReleasePlan,
        notify: &[HostId],
    ) -> Result<ReleaseOutcome, StoreError> {
        let mut t = self.lock();
        let Some(current) = t.groups.get(group).filter(|g| !g.deleted) else {
            return Ok(ReleaseOutcome::UnknownGroup);
        };
        if !plan.condition_holds(current) {
            return Ok(ReleaseOutcome::NotHolder(current.clone()));
        }
        let next = plan.apply(current);
        t.groups.insert(group.clone(), next.clone());
        for host in notify.iter().filter(|h| **h != plan.host) {
            t.notify(host, group, plan.now);
        }
        Ok(ReleaseOutcome::Released(next))
    }

    async fn put_group(
        &self,
        definition: &GroupDefinition,
        mode: PutMode,
        now: Millis,
    ) -> Result<CreateOutcome, StoreError> {
        let mut t = self.lock();
        let id = &definition.group_id;
        let existing = t.groups.get(id).cloned();
        if mode == PutMode::Create && existing.as_ref().is_some_and(|g| !g.deleted) {
            return Ok(CreateOutcome::AlreadyExists);
        }
        let mut next = existing.clone().unwrap_or_else(|| {
            LeaseRecord::new_group(id.clone(), definition.lease_ms, Default::default(), now)
        });
        next.lease_ms = definition.lease_ms;
        next.members = definition.members.clone();
        next.deleted = false;
        // As the DynamoDB store writes it: `:now` on create, `if_not_exists` on upsert.
        if mode == PutMode::Create || next.free_since_ms.is_none() {
            next.free_since_ms = Some(now);
        }
        next.updated_at_ms = now;
        next.version += 1;
        t.groups.insert(id.clone(), next);
        for host in definition.members.keys() {
            t.notify(host, id, now);
        }
        Ok(CreateOutcome::Created)
    }

    async fn delete_group(
        &self,
        group: &GroupId,
        plan: &DeletePlan,
    ) -> Result<DeleteOutcome, StoreError> {
        let mut t = self.lock();
        match t.groups.get(group) {
            None => Ok(DeleteOutcome::UnknownGroup),
            Some(g) if g.deleted => Ok(DeleteOutcome::UnknownGroup),
            Some(current) if plan.condition_holds(current) => {
                let next = plan.apply(current);
                t.groups.insert(group.clone(), next);
                Ok(DeleteOutcome::Deleted)
            }
            Some(current) => Ok(DeleteOutcome::Changed(current.clone())),
        }
    }

    async fn set_member_draining(
        &self,
        group: &GroupId,
        host: &HostId,
        draining: bool,
        now: Millis,
    ) -> Result<MemberUpdate, StoreError> {
        let mut t = self.lock();
        let Some(current) = t.groups.get(group).filter(|g| !g.deleted).cloned() else {
            return Ok(MemberUpdate::UnknownGroup);
        };
        if !current.members.contains_key(host) {
            return Ok(MemberUpdate::NotMember(current));
        }
        let mut next = current;
        if let Some(m) = next.members.get_mut(host) {
            m.draining = draining;
        }
        next.updated_at_ms = now;
        next.version += 1;
        t.groups.insert(group.clone(), next.clone());
        t.notify(host, group, now);
        Ok(MemberUpdate::Recorded(next))
    }

    async fn set_host_draining(
        &self,
        host: &HostId,
        draining: bool,
        now: Millis,
    ) -> Result<HostRecord, StoreError> {
        let mut t = self.lock();
        let record = t
            .hosts
            .entry(host.clone())
            .or_insert_with(|| HostRecord::absent(host.clone()));
        record.draining = draining;
        record.updated_at_ms = now;
        record.version += 1;
        Ok(record.clone())
    }

    fn scan_hosts(
        &self,
        segment: u32,
        total_segments: u32,
    ) -> BoxStream<'static, Result<HostRecord, StoreError>> {
        let total = total_segments.max(1) as usize;
        let hosts: Vec<_> = self
            .lock()
            .hosts
            .values()
            .enumerate()
            .filter(|(i, _)| i % total == segment as usize)
            .map(|(_, h)| Ok(h.clone()))
            .collect();
        Box::pin(futures::stream::iter(hosts))
    }

    fn scan_groups(&self) -> BoxStream<'static, Result<LeaseRecord, StoreError>> {
        let groups: Vec<_> = self.lock().groups.values().cloned().map(Ok).collect();
        Box::pin(futures::stream::iter(groups))
    }

    async fn groups_held_by(&self, host: &HostId) -> Result<Vec<LeaseRecord>, StoreError> {
        Ok(self
            .lock()
            .groups
            .values()
            .filter(|g| g.is_held_by(host))
            .cloned()
            .collect())
    }
}
