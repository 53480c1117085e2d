//! The lease use cases of protocol v2: a host's check (heartbeat or read, keep its own lease,
//! consume attention, revoke lapsed holders, acquire, answer), release, host and group reads,
//! and the group definitions operators and the IRC write. The v1 per-group endpoints are
//! answered by the same code, as a host check asking about one group.
//!
//! Steady state, a check is one request: a heartbeat `UpdateItem`, or one consistent
//! `BatchGetItem` of the host's own item plus the holders it watches. Groups are read only
//! when asked for (start-up, attention, a watched holder that changed), and written only to
//! acquire or release.

use super::config::LeaseConfig;
use super::host::{default_incarnation, HostRecord};
use super::protocol::{
    self, acquire_decision, grant_state, host_valid_for_ms, renew_decision, revoke_decision,
    self_renewal_due, CheckAnswer, GrantState, HeartbeatPlan, ReleasePlan, Watched,
};
use super::record::{Epoch, LeaseRecord, Member};
use super::store::{
    CreateOutcome, DeleteExpect, DeleteOutcome, DeletePlan, GroupDefinition, HeartbeatOutcome,
    LeaseStore, MemberUpdate, PutMode, ReleaseOutcome, RenewOutcome, StoreError, Written,
};
use crate::clock::Clock;
use crate::ids::{GroupId, HostId, Incarnation};
use crate::metrics;
use crate::Millis;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info, warn};

/// Most group ids one check or release may name (the wire contract, `docs/protocol.md`).
pub const MAX_GROUPS_PER_CALL: usize = 500;
/// Most hosts one check may watch.
pub(crate) const MAX_WATCH_PER_CALL: usize = 500;
/// Most members of one group: a group definition is one transaction with an attention write
/// per member, and a transaction holds at most 100 items.
pub(crate) const MAX_MEMBERS: usize = 99;
/// Acquisitions (and revocations) in flight at once inside one check.
const WRITES_IN_FLIGHT: usize = 16;
/// Heartbeat attempts when two incarnations keep overwriting each other.
const HEARTBEAT_ATTEMPTS: usize = 3;

/// One v2 check from a host (`POST /v1/hosts/{host_id}/check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCheck {
    pub host: HostId,
    /// The host's own health verdict; an unhealthy host is not renewed.
    pub healthy: bool,
    /// Write a heartbeat now (the agent sends it every `heartbeat_timeout_ms / 3`), or read.
    pub heartbeat: bool,
    /// The agent process; `None` is the fixed default incarnation (v1 behaviour).
    pub incarnation: Option<Incarnation>,
    /// Groups to read (and acquire if the protocol says so).
    pub groups: Vec<GroupId>,
    /// Hosts to look at (holders of the caller's groups whose lease may have lapsed).
    pub watch: Vec<HostId>,
    /// Holders to look at together with the caller's groups they hold: those groups are read
    /// and settled in this same check only if the holder turns out lapsed (or at another
    /// epoch than the one given), so a look at a live holder reads one item and a dead one's
    /// groups are taken over without another round trip.
    pub watch_groups: Vec<WatchGroups>,
}

/// One entry of [`HostCheck::watch_groups`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchGroups {
    pub host_id: HostId,
    /// The holder's host epoch as the caller last saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_epoch: Option<Epoch>,
    pub groups: Vec<GroupId>,
}

/// One group in a host check's answer: the v1 answer plus `holder_host_epoch`, or an error
/// for that group alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroupEntry {
    Answer(CheckAnswer),
    Error {
        /// The id as the caller sent it (it may not be a valid id).
        group_id: String,
        error: GroupError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupError {
    pub code: String,
    pub message: String,
}

/// The v2 check's answer (the wire contract of `POST /v1/hosts/{host_id}/check`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAnswer {
    pub host_id: HostId,
    pub host_epoch: Epoch,
    /// The host lease's window, shared by every grant the host holds at `host_epoch`; 0 when
    /// this incarnation may not use it.
    pub valid_for_ms: Millis,
    pub poll_after_ms: Millis,
    pub healthy: bool,
    pub draining: bool,
    /// Groups taken from the host's attention set in this check (each also in `groups`).
    pub attention: Vec<GroupId>,
    pub groups: Vec<GroupEntry>,
    pub watched: Vec<Watched>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    #[error("{host} is not a member of group {group}")]
    NotMember { group: GroupId, host: HostId },
    #[error("host {host} does not hold group {group} at epoch {epoch} (current epoch {current}, holder {holder})")]
    StaleRelease {
        group: GroupId,
        host: HostId,
        epoch: Epoch,
        current: Epoch,
        holder: String,
    },
    #[error("group {group} has a live grant (holder {holder}); drain it first")]
    LeaseHeld { group: GroupId, holder: HostId },
    #[error("{0}")]
    TooMany(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CheckError {
    /// The wire code of this error (also used per group inside a host check).
    pub fn code(&self) -> &'static str {
        match self {
            CheckError::UnknownGroup(_) => "unknown_group",
            CheckError::NotMember { .. } => "not_member",
            CheckError::StaleRelease { .. } => "stale_epoch",
            CheckError::LeaseHeld { .. } => "lease_held",
            CheckError::TooMany(_) => "too_many",
            CheckError::Store(_) => "store_unavailable",
        }
    }

    fn entry(self, group: &GroupId) -> GroupEntry {
        GroupEntry::Error {
            group_id: group.to_string(),
            error: GroupError {
                code: self.code().to_owned(),
                message: self.to_string(),
            },
        }
    }
}

/// Why a group definition was refused.
#[derive(Debug, thiserror::Error)]
pub enum CreateGroupError {
    #[error("invalid group lease: {0}")]
    InvalidLease(#[from] super::config::ConfigError),
    #[error("a group needs at least one member")]
    NoMembers,
    #[error("a group has at most {MAX_MEMBERS} members, got {0}")]
    TooManyMembers(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A host's record and what it holds, for `GET /v1/hosts/{host_id}` and operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostView {
    pub host: HostRecord,
    pub now_ms: Millis,
    pub expires_in_ms: Millis,
    /// The host lease has not lapsed past the skew (it cannot be revoked yet).
    pub live: bool,
    /// From the `by-holder` index (eventually consistent).
    pub groups: Vec<HeldGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldGroup {
    pub group_id: GroupId,
    pub epoch: Epoch,
    pub holder_host_epoch: Option<Epoch>,
    /// The grant is at the host's current epoch.
    pub current: bool,
}

/// What a check works on: the records it read or wrote, by key.
struct Working {
    hosts: BTreeMap<HostId, HostRecord>,
    groups: BTreeMap<GroupId, LeaseRecord>,
}

/// The lease service for one region: a store, the region's timing and a clock.
#[derive(Debug, Clone)]
pub struct LeaseService<S, C> {
    store: S,
    config: LeaseConfig,
    clock: C,
}

impl<S: LeaseStore, C: Clock> LeaseService<S, C> {
    pub fn new(store: S, config: LeaseConfig, clock: C) -> Self {
        Self {
            store,
            config,
            clock,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    pub fn now_ms(&self) -> Millis {
        self.clock.now_ms()
    }

    /// The v2 host check.
    pub async fn check_host(&self, request: &HostCheck) -> Result<HostAnswer, CheckError> {
        if request.groups.len() > MAX_GROUPS_PER_CALL {
            return Err(CheckError::TooMany(format!(
                "at most {MAX_GROUPS_PER_CALL} groups per check, got {}",
                request.groups.len()
            )));
        }
        let watched_hosts = request.watch.len() + request.watch_groups.len();
        if watched_hosts > MAX_WATCH_PER_CALL {
            return Err(CheckError::TooMany(format!(
                "at most {MAX_WATCH_PER_CALL} watched hosts per check, got {watched_hosts}"
            )));
        }
        let conditional: usize = request.watch_groups.iter().map(|w| w.groups.len()).sum();
        if conditional > MAX_GROUPS_PER_CALL {
            return Err(CheckError::TooMany(format!(
                "at most {MAX_GROUPS_PER_CALL} groups in watch_groups per check, got {conditional}"
            )));
        }
        let now = self.clock.now_ms();
        let host = &request.host;
        let incarnation = request
            .incarnation
            .clone()
            .unwrap_or_else(default_incarnation);
        let looked_at: Vec<HostId> = request
            .watch
            .iter()
            .chain(request.watch_groups.iter().map(|w| &w.host_id))
            .cloned()
            .collect();
        let others: Vec<HostId> = looked_at.iter().filter(|h| *h != host).cloned().collect();
        let (me, reads) = if request.heartbeat {
            let me = self
                .heartbeat(host, request.healthy, &incarnation, now)
                .await?;
            (me, self.store.read(&others, &request.groups).await?)
        } else {
            let mut hosts = others.clone();
            hosts.push(host.clone());
            let mut reads = self.store.read(&hosts, &request.groups).await?;
            let me = reads
                .hosts
                .remove(host)
                .unwrap_or_else(|| HostRecord::absent(host.clone()));
            (me, reads)
        };
        let me = self.keep_own_lease(me, &incarnation, now).await?;
        let mut work = Working {
            hosts: reads.hosts,
            groups: reads.groups,
        };
        // Attention is consumed in this order: remove the ids, then read those groups, then
        // answer them. A change after the removal adds the id again; a change before the read
        // is in what is read; so no hint is lost.
        let attention: BTreeSet<GroupId> = if me.speaks_for(&incarnation) {
            me.attention.clone()
        } else {
            BTreeSet::new()
        };
        if !attention.is_empty() {
            self.store.consume_attention(host, &attention, now).await?;
            let ids: Vec<GroupId> = attention.iter().cloned().collect();
            work.groups.extend(self.store.read(&[], &ids).await?.groups);
        }
        let mut me = me;
        me.attention.retain(|g| !attention.contains(g));
        let draining = me.draining;
        let host_epoch = me.epoch;
        let usable = me.speaks_for(&incarnation);
        work.hosts.insert(host.clone(), me);
        let mut wanted: Vec<GroupId> = request.groups.clone();
        wanted.extend(attention.iter().cloned());
        // The groups of watched holders found lapsed or at another epoch.
        let triggered: Vec<GroupId> = request
            .watch_groups
            .iter()
            .filter(|w| {
                let record = work
                    .hosts
                    .get(&w.host_id)
                    .cloned()
                    .unwrap_or_else(|| HostRecord::absent(w.host_id.clone()));
                protocol::is_revocable(&record, now, &self.config)
                    || w.host_epoch.is_some_and(|e| e != record.epoch)
            })
            .flat_map(|w| w.groups.iter().cloned())
            .filter(|g| !work.groups.contains_key(g))
            .collect();
        if !triggered.is_empty() {
            work.groups
                .extend(self.store.read(&[], &triggered).await?.groups);
            wanted.extend(triggered);
        }
        wanted.sort();
        wanted.dedup();
        let entries = self
            .settle(host, &incarnation, &wanted, &mut work, now)
            .await;
        let answer_now = self.clock.now_ms().max(now);
        let me = &work.hosts[host];
        let valid_for_ms = if usable {
            host_valid_for_ms(me, answer_now, &self.config)
        } else {
            0
        };
        let unfinished = entries.iter().any(
            |e| matches!(e, GroupEntry::Error { error, .. } if error.code == "store_unavailable"),
        );
        let poll_after_ms = if unfinished {
            0
        } else {
            entries
                .iter()
                .filter_map(|e| match e {
                    GroupEntry::Answer(a) => Some(a.poll_after_ms),
                    GroupEntry::Error { .. } => None,
                })
                .min()
                .unwrap_or(self.config.poll_interval_ms)
                .min(self.config.poll_interval_ms)
        };
        let watched: Vec<Watched> = looked_at
            .iter()
            .map(|h| {
                let record = work
                    .hosts
                    .get(h)
                    .cloned()
                    .unwrap_or_else(|| HostRecord::absent(h.clone()));
                protocol::watched(&record, answer_now, &self.config)
            })
            .collect();
        // A watched holder found lapsed: the caller comes back at once with that holder's
        // groups, so the check that revokes and acquires follows without a poll's wait.
        let poll_after_ms = if watched.iter().any(|w| !w.live) {
            0
        } else {
            poll_after_ms
        };
        Ok(HostAnswer {
            host_id: host.clone(),
            host_epoch: work.hosts[host].epoch.max(host_epoch),
            valid_for_ms,
            poll_after_ms,
            healthy: work.hosts[host].healthy,
            draining,
            attention: attention.into_iter().collect(),
            groups: entries,
            watched,
        })
    }

    /// The v1 check (`POST /v1/groups/{group_id}/check`): a host check asking for one group,
    /// with the default incarnation, heartbeating the host only when its heartbeat is due, so
    /// a host polling many groups through v1 does not make its host item a hot key.
    pub async fn check_group(
        &self,
        group: &GroupId,
        host: &HostId,
        healthy: bool,
        heartbeat: bool,
    ) -> Result<CheckAnswer, CheckError> {
        let now = self.clock.now_ms();
        let incarnation = default_incarnation();
        let mut reads = self
            .store
            .read(std::slice::from_ref(host), std::slice::from_ref(group))
            .await?;
        let record = live_group(group, reads.groups.get(group))?;
        if record.member(host).is_none() && !record.is_held_by(host) {
            return Err(CheckError::NotMember {
                group: group.clone(),
                host: host.clone(),
            });
        }
        let mut me = reads
            .hosts
            .remove(host)
            .unwrap_or_else(|| HostRecord::absent(host.clone()));
        if heartbeat && self.heartbeat_due(&me, healthy, &incarnation, now) {
            me = self.heartbeat(host, healthy, &incarnation, now).await?;
        }
        let me = self.keep_own_lease(me, &incarnation, now).await?;
        let mut work = Working {
            hosts: BTreeMap::from([(host.clone(), me)]),
            groups: reads.groups,
        };
        let entries = self
            .settle(
                host,
                &incarnation,
                std::slice::from_ref(group),
                &mut work,
                now,
            )
            .await;
        match entries.into_iter().next() {
            Some(GroupEntry::Answer(answer)) => Ok(answer),
            _ => {
                // The one group failed to settle: a store error (the only per-group failure
                // left after the checks above).
                Err(CheckError::Store(StoreError::Unavailable {
                    operation: "check",
                    message: format!("group {group} could not be settled"),
                }))
            }
        }
    }

    fn heartbeat_due(
        &self,
        me: &HostRecord,
        healthy: bool,
        incarnation: &Incarnation,
        now: Millis,
    ) -> bool {
        me.version == 0
            || me.healthy != healthy
            || me.incarnation.as_ref() != Some(incarnation)
            || now.saturating_sub(me.last_seen_ms) >= self.config.heartbeat_timeout_ms / 3
    }

    /// The heartbeat, and the second write when another incarnation is recorded.
    async fn heartbeat(
        &self,
        host: &HostId,
        healthy: bool,
        incarnation: &Incarnation,
        now: Millis,
    ) -> Result<HostRecord, CheckError> {
        let plan = HeartbeatPlan {
            host: host.clone(),
            healthy,
            incarnation: incarnation.clone(),
            now,
        };
        for _ in 0..HEARTBEAT_ATTEMPTS {
            let recorded = match self.store.heartbeat(&plan).await? {
                HeartbeatOutcome::Recorded(record) => return Ok(record),
                HeartbeatOutcome::OtherIncarnation(current) => current.incarnation,
            };
            let Some(recorded) = recorded else { continue };
            match self
                .store
                .change_incarnation(&plan.change_from(recorded.clone()))
                .await?
            {
                Written::Done(record) => {
                    info!(host_id = %host, previous = %recorded, incarnation = %incarnation,
                          "new incarnation: no renewals until the host is revoked");
                    return Ok(record);
                }
                Written::LostRace(_) => continue,
            }
        }
        Err(CheckError::Store(StoreError::Unavailable {
            operation: "heartbeat",
            message: format!(
                "host {host}'s incarnation kept changing under {HEARTBEAT_ATTEMPTS} attempts"
            ),
        }))
    }

    /// Keeps the caller's own host lease: a new incarnation revokes its own host once the old
    /// lease lapsed; a host whose renewer is overdue renews itself (one extra request, only
    /// then).
    async fn keep_own_lease(
        &self,
        mut me: HostRecord,
        incarnation: &Incarnation,
        now: Millis,
    ) -> Result<HostRecord, CheckError> {
        let cfg = &self.config;
        if me.incarnation.as_ref() == Some(incarnation) && me.incarnation_changed.is_some() {
            if let Some(plan) = revoke_decision(&me, now, cfg) {
                me = match self.store.revoke(&plan).await? {
                    Written::Done(next) => {
                        info!(host_id = %me.host_id, host_epoch = next.epoch.0,
                              "new incarnation revoked its own host");
                        metrics::revoked();
                        // A renewal needs a heartbeat after the revocation (`last_seen_ms >
                        // revoked_at_ms`): one more write, only on a restart, so this check can
                        // already take its groups again.
                        let after = self.clock.now_ms().max(now + 1);
                        self.heartbeat(&next.host_id, next.healthy, incarnation, after)
                            .await?
                    }
                    Written::LostRace(current) => current.unwrap_or(me),
                };
            }
        }
        if me.speaks_for(incarnation) && self_renewal_due(&me, now, cfg) {
            if let Ok(plan) = renew_decision(&me, now, cfg) {
                match self.store.renew(&plan).await? {
                    RenewOutcome::Renewed { .. } => {
                        metrics::renewed();
                        me = plan.apply(&me);
                    }
                    // Most often the scheduled renewer wrote the same renewal between this
                    // check's heartbeat and here. Answering from the copy read before it would
                    // tell a freshly renewed host its lease has lapsed (not writable, no
                    // acquisition) until its next poll; one more read, only on a lost race,
                    // answers from what the table holds. Safe: the answer still comes from
                    // one strongly consistent read of the host taken after the heartbeat.
                    RenewOutcome::LostRace => {
                        if let Some(current) = self.store.read_host(&me.host_id).await? {
                            me = current;
                        }
                    }
                }
            }
        }
        Ok(me)
    }

    /// Reads what deciding the `wanted` groups needs (their holders' and members' host
    /// records), revokes lapsed holders, acquires what the protocol says to, and answers
    /// each group. Failures are per group.
    async fn settle(
        &self,
        caller: &HostId,
        incarnation: &Incarnation,
        wanted: &[GroupId],
        work: &mut Working,
        now: Millis,
    ) -> Vec<GroupEntry> {
        let cfg = &self.config;
        let mut failed: BTreeMap<GroupId, CheckError> = BTreeMap::new();
        let mut live: Vec<GroupId> = Vec::new();
        for id in wanted {
            match live_group(id, work.groups.get(id)) {
                Err(e) => {
                    failed.insert(id.clone(), e);
                }
                Ok(g) if g.member(caller).is_none() && !g.is_held_by(caller) => {
                    failed.insert(
                        id.clone(),
                        CheckError::NotMember {
                            group: id.clone(),
                            host: caller.clone(),
                        },
                    );
                }
                Ok(_) => live.push(id.clone()),
            }
        }
        // The host records the decisions need, in two rounds: the holders first; then the
        // members, only of groups that may change hands (no live grant) or are being drained,
        // so a steady-state check reads none.
        let holders: BTreeSet<HostId> = live
            .iter()
            .filter_map(|id| work.groups[id].holder.clone())
            .collect();
        if let Err(e) = self.read_missing_hosts(holders, work).await {
            for id in live.drain(..) {
                failed.insert(id, CheckError::Store(e.clone()));
            }
        }
        let caller_draining = work.hosts.get(caller).is_some_and(|h| h.draining);
        let members: BTreeSet<HostId> = live
            .iter()
            .filter(|id| {
                let g = &work.groups[*id];
                let holder_host = g.holder.as_ref().and_then(|h| work.hosts.get(h));
                let settled = matches!(
                    grant_state(g, holder_host, now, cfg),
                    GrantState::Live { .. } | GrantState::V1Held { .. }
                );
                let drained = g.is_held_by(caller)
                    && (caller_draining || g.member(caller).is_none_or(|m| m.draining));
                !settled || drained
            })
            .flat_map(|id| work.groups[id].members.keys().cloned())
            .collect();
        if let Err(e) = self.read_missing_hosts(members, work).await {
            for id in live.drain(..) {
                failed.insert(id, CheckError::Store(e.clone()));
            }
        }
        self.revoke_lapsed_holders(&live, work, now).await;
        self.acquire_where_due(caller, incarnation, &live, work, &mut failed, now)
            .await;
        let answer_now = self.clock.now_ms().max(now);
        wanted
            .iter()
            .map(|id| match failed.remove(id) {
                Some(e) => e.entry(id),
                None => GroupEntry::Answer(protocol::answer(
                    &work.groups[id],
                    &work.hosts,
                    caller,
                    incarnation,
                    answer_now,
                    cfg,
                )),
            })
            .collect()
    }

    /// Reads the host records among `ids` that `work` does not have yet (absent items stay
    /// absent: decisions read them as [`HostRecord::absent`]).
    async fn read_missing_hosts(
        &self,
        mut ids: BTreeSet<HostId>,
        work: &mut Working,
    ) -> Result<(), StoreError> {
        ids.retain(|h| !work.hosts.contains_key(h));
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<HostId> = ids.into_iter().collect();
        match self.store.read(&ids, &[]).await {
            Ok(reads) => {
                work.hosts.extend(reads.hosts);
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "reading host records failed");
                Err(e)
            }
        }
    }

    /// One revocation per lapsed holder, whatever the number of its groups asked about.
    async fn revoke_lapsed_holders(&self, live: &[GroupId], work: &mut Working, now: Millis) {
        let cfg = &self.config;
        let lapsed: BTreeSet<HostId> = live
            .iter()
            .filter_map(|id| {
                let g = &work.groups[id];
                let holder_host = g.holder.as_ref().and_then(|h| work.hosts.get(h));
                match grant_state(g, holder_host, now, cfg) {
                    GrantState::Lapsed { holder, .. } => Some(holder),
                    _ => None,
                }
            })
            .collect();
        let plans: Vec<_> = lapsed
            .iter()
            .filter_map(|h| {
                let record = work
                    .hosts
                    .get(h)
                    .cloned()
                    .unwrap_or_else(|| HostRecord::absent(h.clone()));
                revoke_decision(&record, now, cfg)
            })
            .collect();
        let outcomes: Vec<_> = futures::stream::iter(plans)
            .map(|plan| async move {
                let outcome = self.store.revoke(&plan).await;
                (plan, outcome)
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        for (plan, outcome) in outcomes {
            match outcome {
                Ok(Written::Done(next)) => {
                    info!(host_id = %plan.host, host_epoch = next.epoch.0, "host lease revoked");
                    metrics::revoked();
                    work.hosts.insert(plan.host.clone(), next);
                }
                Ok(Written::LostRace(Some(current))) => {
                    work.hosts.insert(plan.host.clone(), current);
                }
                Ok(Written::LostRace(None)) => {}
                Err(e) => warn!(host_id = %plan.host, error = %e, "revocation failed"),
            }
        }
    }

    async fn acquire_where_due(
        &self,
        caller: &HostId,
        incarnation: &Incarnation,
        live: &[GroupId],
        work: &mut Working,
        failed: &mut BTreeMap<GroupId, CheckError>,
        now: Millis,
    ) {
        let cfg = &self.config;
        let plans: Vec<_> = live
            .iter()
            .filter(|id| !failed.contains_key(*id))
            .filter_map(|id| {
                acquire_decision(&work.groups[id], &work.hosts, caller, incarnation, now, cfg)
                    .ok()
                    .map(|plan| (id.clone(), plan))
            })
            .collect();
        let outcomes: Vec<_> = futures::stream::iter(plans)
            .map(|(id, plan)| async move {
                let outcome = self.store.acquire(&id, &plan).await;
                (id, plan, outcome)
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        for (id, plan, outcome) in outcomes {
            match outcome {
                Ok(Written::Done(next)) => {
                    info!(group_id = %id, host_id = %caller, epoch = next.epoch.0,
                          host_epoch = plan.host_epoch.0,
                          previous_holder = work.groups[&id].holder.as_ref().map(|h| h.as_str()).unwrap_or(""),
                          "group acquired");
                    metrics::acquired();
                    work.groups.insert(id, next);
                }
                Ok(Written::LostRace(Some(current))) => {
                    info!(group_id = %id, host_id = %caller, "acquisition lost a race");
                    work.groups.insert(id, current);
                }
                Ok(Written::LostRace(None)) => {
                    failed.insert(id.clone(), CheckError::UnknownGroup(id));
                }
                Err(e) => {
                    warn!(group_id = %id, error = %e, "acquisition failed");
                    failed.insert(id, CheckError::Store(e));
                }
            }
        }
    }

    /// Step-down of several groups by their holder (`POST /v1/hosts/{host_id}/release`), one
    /// transaction per group; each answers for itself.
    pub async fn release_many(
        &self,
        host: &HostId,
        groups: &[(GroupId, Epoch)],
    ) -> Result<Vec<GroupEntry>, CheckError> {
        if groups.len() > MAX_GROUPS_PER_CALL {
            return Err(CheckError::TooMany(format!(
                "at most {MAX_GROUPS_PER_CALL} groups per release, got {}",
                groups.len()
            )));
        }
        Ok(futures::stream::iter(groups.iter().cloned())
            .map(|(group, epoch)| async move {
                match self.release(&group, host, epoch).await {
                    Ok(answer) => GroupEntry::Answer(answer),
                    Err(e) => e.entry(&group),
                }
            })
            .buffered(WRITES_IN_FLIGHT)
            .collect()
            .await)
    }

    /// Step-down by the holder, after it has closed the group's gate. Every other member is
    /// told (attention) in the same transaction, and the releaser is no candidate for
    /// `heartbeat_timeout_ms`, so the next live candidate acquires at its very next check.
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
        let current = self.store.read_group(group).await?;
        let notify = current
            .as_ref()
            .map(|g| plan.notified(g))
            .unwrap_or_default();
        match self.store.release(group, &plan, &notify).await? {
            ReleaseOutcome::Released(record) => {
                info!(group_id = %group, host_id = %host, epoch = epoch.0, "group released");
                metrics::released();
                Ok(protocol::answer(
                    &record,
                    &BTreeMap::new(),
                    host,
                    &default_incarnation(),
                    now,
                    &self.config,
                ))
            }
            ReleaseOutcome::UnknownGroup => Err(CheckError::UnknownGroup(group.clone())),
            ReleaseOutcome::NotHolder(record)
                if record.member(host).is_none() && !record.is_held_by(host) =>
            {
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

    /// The group's record as it stands (one consistent read), with its holder's host record.
    pub async fn get_group(
        &self,
        group: &GroupId,
    ) -> Result<(LeaseRecord, Option<HostRecord>), CheckError> {
        let record = live_group(group, self.store.read_group(group).await?.as_ref())?.clone();
        let holder = match &record.holder {
            Some(h) => self.store.read_host(h).await?,
            None => None,
        };
        Ok((record, holder))
    }

    /// The host record (consistent) and the groups it holds (`by-holder`, eventual).
    pub async fn get_host(&self, host: &HostId) -> Result<HostView, CheckError> {
        let now = self.clock.now_ms();
        let record = self
            .store
            .read_host(host)
            .await?
            .unwrap_or_else(|| HostRecord::absent(host.clone()));
        let groups = self
            .store
            .groups_held_by(host)
            .await?
            .into_iter()
            .map(|g| HeldGroup {
                current: g.holder_host_epoch == Some(record.epoch),
                group_id: g.group_id,
                epoch: g.epoch,
                holder_host_epoch: g.holder_host_epoch,
            })
            .collect();
        Ok(HostView {
            expires_in_ms: record.expires_at_ms.saturating_sub(now),
            live: !protocol::is_revocable(&record, now, &self.config),
            now_ms: now,
            host: record,
            groups,
        })
    }

    /// Creates a replica group, free, its epoch continuing from a tombstone if there is one,
    /// after checking its `lease_ms` against this region's timing rules.
    pub async fn create_group(
        &self,
        group: GroupId,
        lease_ms: u64,
        members: BTreeMap<HostId, Member>,
    ) -> Result<CreateOutcome, CreateGroupError> {
        self.put_group(group, lease_ms, members, PutMode::Create)
            .await
    }

    /// Creates or redefines a group (`group.put`): `holder` and `epoch` are never touched.
    pub async fn put_group(
        &self,
        group: GroupId,
        lease_ms: u64,
        members: BTreeMap<HostId, Member>,
        mode: PutMode,
    ) -> Result<CreateOutcome, CreateGroupError> {
        self.config.check_group_lease(lease_ms)?;
        if members.is_empty() {
            return Err(CreateGroupError::NoMembers);
        }
        if members.len() > MAX_MEMBERS {
            return Err(CreateGroupError::TooManyMembers(members.len()));
        }
        let definition = GroupDefinition {
            group_id: group,
            lease_ms,
            members,
        };
        Ok(self
            .store
            .put_group(&definition, mode, self.clock.now_ms())
            .await?)
    }

    /// Deletes a group that has no live grant: a lapsed holder is revoked first; a live one
    /// is refused (`lease_held`). The item stays as a tombstone that keeps the epoch.
    pub async fn delete_group(&self, group: &GroupId) -> Result<(), CheckError> {
        let cfg = &self.config;
        for _ in 0..3 {
            let now = self.clock.now_ms();
            let (record, holder_host) = match self.get_group(group).await {
                Ok(found) => found,
                Err(e) => return Err(e),
            };
            let mut holder_host = holder_host;
            let mut state = grant_state(&record, holder_host.as_ref(), now, cfg);
            if let GrantState::Lapsed { .. } = state {
                if let Some(plan) = holder_host
                    .as_ref()
                    .and_then(|h| revoke_decision(h, now, cfg))
                {
                    match self.store.revoke(&plan).await? {
                        Written::Done(next) => {
                            metrics::revoked();
                            holder_host = Some(next);
                        }
                        Written::LostRace(Some(next)) => holder_host = Some(next),
                        Written::LostRace(None) => {}
                    }
                }
                state = grant_state(&record, holder_host.as_ref(), now, cfg);
            }
            let expect = match state {
                GrantState::Free => DeleteExpect::Free,
                GrantState::Revoked { .. } => match record.holder_host_epoch {
                    Some(hhe) => DeleteExpect::RevokedGrant(hhe),
                    None => DeleteExpect::Free,
                },
                GrantState::V1Lapsed { .. } => DeleteExpect::V1Lapsed {
                    not_after_ms: now.saturating_sub(cfg.clock_skew_ms),
                },
                GrantState::Live { holder }
                | GrantState::V1Held { holder }
                | GrantState::Lapsed { holder, .. } => {
                    return Err(CheckError::LeaseHeld {
                        group: group.clone(),
                        holder,
                    })
                }
            };
            let plan = DeletePlan {
                seen_epoch: record.epoch,
                expect,
                now,
            };
            match self.store.delete_group(group, &plan).await? {
                DeleteOutcome::Deleted => {
                    info!(group_id = %group, epoch = record.epoch.0, "group deleted (tombstone keeps the epoch)");
                    return Ok(());
                }
                DeleteOutcome::UnknownGroup => return Err(CheckError::UnknownGroup(group.clone())),
                DeleteOutcome::Changed(_) => continue,
            }
        }
        Err(CheckError::Store(StoreError::Unavailable {
            operation: "delete",
            message: format!("group {group} kept changing; try again"),
        }))
    }

    /// Sets or clears an operator's drain of one member of a group.
    pub async fn set_draining(
        &self,
        group: &GroupId,
        host: &HostId,
        draining: bool,
    ) -> Result<LeaseRecord, CheckError> {
        match self
            .store
            .set_member_draining(group, host, draining, self.clock.now_ms())
            .await?
        {
            MemberUpdate::Recorded(record) => Ok(record),
            MemberUpdate::UnknownGroup => Err(CheckError::UnknownGroup(group.clone())),
            MemberUpdate::NotMember(_) => Err(CheckError::NotMember {
                group: group.clone(),
                host: host.clone(),
            }),
        }
    }

    /// Drains (or undrains) a whole host: it stays a live secondary, is no candidate for any
    /// group, and as a primary hands each group over at its next check once another member
    /// can take it.
    pub async fn set_host_draining(
        &self,
        host: &HostId,
        draining: bool,
    ) -> Result<HostRecord, CheckError> {
        Ok(self
            .store
            .set_host_draining(host, draining, self.clock.now_ms())
            .await?)
    }
}

/// A group that exists and is not a tombstone.
fn live_group<'a>(
    id: &GroupId,
    record: Option<&'a LeaseRecord>,
) -> Result<&'a LeaseRecord, CheckError> {
    record
        .filter(|g| !g.deleted)
        .ok_or_else(|| CheckError::UnknownGroup(id.clone()))
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
