//! The lease use cases. A check is what one host's poll does, end to end. A steady-state
//! check is one request (a heartbeat UpdateItem, or a consistent GetItem when no heartbeat is due); an
//! acquisition adds exactly one conditional UpdateItem.

use super::config::LeaseConfig;
use super::protocol::{self, AcquireDecision, CheckAnswer, Heartbeat, ReleasePlan};
use super::record::{Epoch, LeaseRecord};
use super::store::{
    AcquireOutcome, CreateOutcome, LeaseStore, MemberUpdate, ReleaseOutcome, StoreError,
};
use crate::clock::Clock;
use crate::ids::{GroupId, HostId};
use tracing::info;

/// One check from a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRequest {
    pub host: HostId,
    /// The host's own health verdict; an unhealthy holder is not renewed.
    pub healthy: bool,
    /// Whether to record a heartbeat (a write) or only read.
    pub heartbeat: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    #[error("{host} is not a member of group {group}")]
    NotMember { group: GroupId, host: HostId },
    #[error("host {host} does not hold group {group}'s lease at epoch {epoch} (current epoch {current}, holder {holder})")]
    StaleRelease {
        group: GroupId,
        host: HostId,
        epoch: Epoch,
        current: Epoch,
        holder: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a group definition was refused.
#[derive(Debug, thiserror::Error)]
pub enum CreateGroupError {
    #[error("invalid group lease: {0}")]
    InvalidLease(#[from] super::config::ConfigError),
    #[error("a group needs at least one member")]
    NoMembers,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The lease service for one region: a store, the region's timing and a clock.
#[derive(Debug, Clone)]
pub struct LeaseService<C> {
    store: LeaseStore,
    config: LeaseConfig,
    clock: C,
}

impl<C: Clock> LeaseService<C> {
    pub fn new(store: LeaseStore, config: LeaseConfig, clock: C) -> Self {
        Self {
            store,
            config,
            clock,
        }
    }

    pub fn store(&self) -> &LeaseStore {
        &self.store
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Heartbeat (or read), acquire if the protocol says so, and answer.
    pub async fn check(
        &self,
        group: &GroupId,
        request: &CheckRequest,
    ) -> Result<CheckAnswer, CheckError> {
        let now = self.clock.now_ms();
        let not_member = || CheckError::NotMember {
            group: group.clone(),
            host: request.host.clone(),
        };
        let record = if request.heartbeat {
            let hb = Heartbeat {
                host: request.host.clone(),
                healthy: request.healthy,
                now,
            };
            match self.store.heartbeat(group, &hb).await? {
                MemberUpdate::Recorded(record) => record,
                MemberUpdate::UnknownGroup => return Err(CheckError::UnknownGroup(group.clone())),
                MemberUpdate::NotMember(_) => return Err(not_member()),
            }
        } else {
            match self.store.read(group).await? {
                None => return Err(CheckError::UnknownGroup(group.clone())),
                Some(record) if record.member(&request.host).is_none() => return Err(not_member()),
                Some(record) => record,
            }
        };
        let record = self.maybe_acquire(group, record, request, now).await?;
        // Answer on a fresh reading: a later `now` only shortens the window granted.
        let answer_now = self.clock.now_ms().max(now);
        Ok(protocol::answer(
            &record,
            &request.host,
            answer_now,
            &self.config,
        ))
    }

    async fn maybe_acquire(
        &self,
        group: &GroupId,
        record: LeaseRecord,
        request: &CheckRequest,
        now: u64,
    ) -> Result<LeaseRecord, CheckError> {
        let config = self.config;
        let AcquireDecision::Attempt(plan) =
            protocol::acquire_decision(&record, &request.host, request.healthy, now, &config)
        else {
            return Ok(record);
        };
        match self.store.acquire(group, &plan).await? {
            AcquireOutcome::Acquired(next) => {
                info!(
                    group_id = %group,
                    host_id = %request.host,
                    epoch = next.epoch.0,
                    previous_holder = record.holder.as_ref().map(|h| h.as_str()).unwrap_or(""),
                    expires_at_ms = next.expires_at_ms,
                    "lease acquired"
                );
                Ok(next)
            }
            AcquireOutcome::LostRace(current) => {
                info!(group_id = %group, host_id = %request.host, "lease acquisition lost a race");
                current.ok_or_else(|| CheckError::UnknownGroup(group.clone()))
            }
        }
    }

    /// Step-down by the holder (after it has stopped writing).
    pub async fn release(
        &self,
        group: &GroupId,
        host: &HostId,
        epoch: Epoch,
    ) -> Result<CheckAnswer, CheckError> {
        let now = self.clock.now_ms();
        let plan = ReleasePlan {
            host: host.clone(),
            epoch,
            now,
        };
        match self.store.release(group, &plan).await? {
            ReleaseOutcome::Released(record) => {
                info!(group_id = %group, host_id = %host, epoch = epoch.0, "lease released");
                Ok(protocol::answer(&record, host, now, &self.config))
            }
            ReleaseOutcome::UnknownGroup => Err(CheckError::UnknownGroup(group.clone())),
            ReleaseOutcome::NotHolder(record) if record.member(host).is_none() => {
                Err(CheckError::NotMember {
                    group: group.clone(),
                    host: host.clone(),
                })
            }
            ReleaseOutcome::NotHolder(record) => Err(CheckError::StaleRelease {
                group: group.clone(),
                host: host.clone(),
                epoch,
                current: record.epoch,
                holder: record
                    .holder
                    .map(String::from)
                    .unwrap_or_else(|| "none".into()),
            }),
        }
    }

    /// Creates a replica group, free and at epoch 0, after checking its `lease_ms` against
    /// this region's timing rules (so a group cannot be given a lease the protocol cannot keep
    /// safe or live).
    pub async fn create_group(
        &self,
        group: GroupId,
        lease_ms: u64,
        members: std::collections::BTreeMap<HostId, super::record::Member>,
    ) -> Result<CreateOutcome, CreateGroupError> {
        self.config.check_group_lease(lease_ms)?;
        if members.is_empty() {
            return Err(CreateGroupError::NoMembers);
        }
        let record = LeaseRecord::new_group(group, lease_ms, members, self.clock.now_ms());
        Ok(self.store.create_group(&record).await?)
    }

    /// The group's record as it stands (one consistent read).
    pub async fn get(&self, group: &GroupId) -> Result<LeaseRecord, CheckError> {
        self.store
            .read(group)
            .await?
            .ok_or_else(|| CheckError::UnknownGroup(group.clone()))
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}
