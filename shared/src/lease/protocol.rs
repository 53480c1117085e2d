//! The lease protocol as pure decisions: no clock reads, no I/O. The store executes the plans
//! these functions return as DynamoDB conditional writes; each plan also carries its condition
//! as a predicate ([`AcquirePlan::condition_holds`] and friends) and its effect (`apply`), so
//! the in-memory tests and the model checker run exactly the rule the store sends to DynamoDB.
//!
//! Why no two hosts are writable at once: a holder is granted writes only until
//! `expires_at - clock_skew` (see [`valid_for_ms`]), and a contender acquires only once
//! `expires_at < now - clock_skew` (see [`AcquirePlan::condition_holds`]). With every clock
//! within `clock_skew_ms` of every other, the holder's window closes before any contender's
//! opens. The renewer only moves `expires_at` forward ([`RenewPlan`]), so a window once granted
//! is never cut short under the holder; each transition is a conditional write on one item, so
//! DynamoDB serialises them.

use super::config::LeaseConfig;
use super::record::{Epoch, LeaseRecord, Member};
use crate::ids::{GroupId, HostId};
use crate::Millis;
use serde::{Deserialize, Serialize};

/// What a host is, according to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds a live lease: may write for `valid_for_ms` from when it sent the check.
    Primary,
    /// Does not hold a live lease (another host does, or nobody does yet).
    Secondary,
}

/// The lease-check answer (DESIGN "lease-check answer"): the wire contract hosts rely on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAnswer {
    pub group_id: GroupId,
    pub host_id: HostId,
    pub role: Role,
    pub writable: bool,
    pub epoch: Epoch,
    pub holder: Option<HostId>,
    pub valid_for_ms: Millis,
    pub poll_after_ms: Millis,
    pub draining: bool,
}

/// How long `host` may keep writing, measured from `now` on the function clock: up to
/// `expires_at - clock_skew` for the holder, 0 for everyone else.
pub fn valid_for_ms(record: &LeaseRecord, host: &HostId, now: Millis, cfg: &LeaseConfig) -> Millis {
    if !record.is_held_by(host) {
        return 0;
    }
    record
        .expires_at_ms
        .saturating_sub(cfg.clock_skew_ms)
        .saturating_sub(now)
}

/// What a check answers `host`, from the record as it stands after the check's writes.
pub fn answer(record: &LeaseRecord, host: &HostId, now: Millis, cfg: &LeaseConfig) -> CheckAnswer {
    let valid_for_ms = valid_for_ms(record, host, now, cfg);
    let writable = valid_for_ms > 0;
    let draining = record.member(host).is_some_and(|m| m.draining);
    CheckAnswer {
        group_id: record.group_id.clone(),
        host_id: host.clone(),
        role: if writable {
            Role::Primary
        } else {
            Role::Secondary
        },
        writable,
        epoch: record.epoch,
        holder: record.holder.clone(),
        valid_for_ms,
        poll_after_ms: poll_after_ms(record, host, writable, now, cfg),
        draining,
    }
}

/// The shortest wait a check ever asks for.
const FLOOR_MS: Millis = 10;

/// When the host should check again: every `poll_interval_ms`, except that a secondary that
/// could take over sooner is told to come back the moment it may, so an unplanned failover
/// does not wait out a whole poll interval after the lease lapses.
fn poll_after_ms(
    record: &LeaseRecord,
    host: &HostId,
    writable: bool,
    now: Millis,
    cfg: &LeaseConfig,
) -> Millis {
    let poll = cfg.poll_interval_ms;
    if writable {
        return poll;
    }
    let Some(member) = record.member(host) else {
        return poll;
    };
    if !member.healthy || member.draining {
        return poll;
    }
    // The holder was asked to hand over and will release at its next poll: come back soon,
    // so a planned handover costs about one of the holder's polls, not two polls.
    let holder_draining = record
        .holder
        .as_ref()
        .and_then(|h| record.member(h))
        .is_some_and(|m| m.draining);
    if holder_draining {
        return (poll / 10).max(FLOOR_MS.min(poll));
    }
    let mut chance = acquirable_at_ms(record, cfg);
    if !is_best_candidate(record, host, member.healthy, now, cfg) {
        chance = chance.saturating_add(cfg.heartbeat_timeout_ms);
    }
    chance.saturating_sub(now).clamp(FLOOR_MS.min(poll), poll)
}

/// The earliest function-clock time at which the lease's condition lets anyone acquire it:
/// at once when free (released or never held), else the first millisecond past
/// `expires_at + clock_skew`.
pub fn acquirable_at_ms(record: &LeaseRecord, cfg: &LeaseConfig) -> Millis {
    match record.holder {
        None => record.expires_at_ms,
        Some(_) => record
            .expires_at_ms
            .saturating_add(cfg.clock_skew_ms)
            .saturating_add(1),
    }
}

/// Whether the lease's own condition allows an acquisition at `now`.
pub fn is_acquirable(record: &LeaseRecord, now: Millis, cfg: &LeaseConfig) -> bool {
    record.holder.is_none() || record.expires_at_ms < now.saturating_sub(cfg.clock_skew_ms)
}

/// A member that may become primary: healthy, not draining, and (unless it is the caller, who
/// is checking right now) heard from within `heartbeat_timeout_ms`.
fn is_live(
    id: &HostId,
    member: &Member,
    caller: &HostId,
    caller_healthy: bool,
    now: Millis,
    cfg: &LeaseConfig,
) -> bool {
    if member.draining {
        return false;
    }
    if id == caller {
        return caller_healthy;
    }
    member.healthy && now.saturating_sub(member.last_seen_ms) <= cfg.heartbeat_timeout_ms
}

/// The member that should take the lease next. The previous holder, if live, comes first, so
/// a renewer outage does not move primaryship between live hosts; then the highest priority
/// (ties broken by the smaller host id, so every host computes the same answer).
pub fn best_candidate<'a>(
    record: &'a LeaseRecord,
    caller: &HostId,
    caller_healthy: bool,
    now: Millis,
    cfg: &LeaseConfig,
) -> Option<&'a HostId> {
    let live = |(id, member): &(&'a HostId, &'a Member)| {
        is_live(id, member, caller, caller_healthy, now, cfg)
    };
    if let Some((holder, member)) = record
        .holder
        .as_ref()
        .and_then(|h| record.members.get_key_value(h))
    {
        if live(&(holder, member)) {
            return Some(holder);
        }
    }
    record
        .members
        .iter()
        .filter(live)
        .max_by(|(a_id, a), (b_id, b)| a.priority.cmp(&b.priority).then(b_id.cmp(a_id)))
        .map(|(id, _)| id)
}

fn is_best_candidate(
    record: &LeaseRecord,
    host: &HostId,
    healthy: bool,
    now: Millis,
    cfg: &LeaseConfig,
) -> bool {
    best_candidate(record, host, healthy, now, cfg) == Some(host)
}

/// Why a host does not try to acquire now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Wait {
    /// The caller already holds a live lease.
    AlreadyHolder,
    /// Another host holds a lease that has not lapsed (past `expires_at + clock_skew`).
    HeldByOther {
        holder: HostId,
        acquirable_at_ms: Millis,
    },
    NotMember,
    Unhealthy,
    Draining,
    /// A better live candidate gets one `heartbeat_timeout_ms` to take over first.
    BetterCandidate {
        best: HostId,
        until_ms: Millis,
    },
}

/// Whether a host tries to acquire, having just read (or heartbeated) the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireDecision {
    Attempt(AcquirePlan),
    Wait(Wait),
}

/// Decides whether `host` should try to acquire the lease at `now`.
pub fn acquire_decision(
    record: &LeaseRecord,
    host: &HostId,
    healthy: bool,
    now: Millis,
    cfg: &LeaseConfig,
) -> AcquireDecision {
    let Some(member) = record.member(host) else {
        return AcquireDecision::Wait(Wait::NotMember);
    };
    if !healthy {
        return AcquireDecision::Wait(Wait::Unhealthy);
    }
    if member.draining {
        return AcquireDecision::Wait(Wait::Draining);
    }
    if let Some(holder) = record
        .holder
        .as_ref()
        .filter(|_| !is_acquirable(record, now, cfg))
    {
        return AcquireDecision::Wait(if holder == host {
            Wait::AlreadyHolder
        } else {
            Wait::HeldByOther {
                holder: holder.clone(),
                acquirable_at_ms: acquirable_at_ms(record, cfg),
            }
        });
    }
    match best_candidate(record, host, healthy, now, cfg) {
        Some(best) if best != host => {
            let until_ms = acquirable_at_ms(record, cfg).saturating_add(cfg.heartbeat_timeout_ms);
            if now < until_ms {
                return AcquireDecision::Wait(Wait::BetterCandidate {
                    best: best.clone(),
                    until_ms,
                });
            }
        }
        _ => {}
    }
    AcquireDecision::Attempt(AcquirePlan {
        host: host.clone(),
        healthy,
        seen_epoch: record.epoch,
        now,
        not_after_ms: now.saturating_sub(cfg.clock_skew_ms),
        new_expires_at_ms: now.saturating_add(record.lease_ms),
    })
}

/// An acquisition, as the store writes it: `SET holder = :h, epoch = epoch + 1,
/// expires_at_ms = :new, members.#h.last_seen_ms = :now` under the condition
/// `epoch = :seen AND (attribute_not_exists(holder) OR expires_at_ms < :not_after)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquirePlan {
    pub host: HostId,
    pub healthy: bool,
    /// The epoch the decision was made on: any acquisition since then makes this plan fail.
    pub seen_epoch: Epoch,
    pub now: Millis,
    /// `now - clock_skew`: a held lease must have expired before this instant.
    pub not_after_ms: Millis,
    pub new_expires_at_ms: Millis,
}

impl AcquirePlan {
    /// The write's condition. The epoch check stops two contenders who read the same record
    /// from both winning; the expiry check stops a contender whose read was overtaken by a
    /// renewal (same epoch, later expiry).
    pub fn condition_holds(&self, current: &LeaseRecord) -> bool {
        current.members.contains_key(&self.host)
            && current.epoch == self.seen_epoch
            && (current.holder.is_none() || current.expires_at_ms < self.not_after_ms)
    }

    /// The record after the write. The acquisition is also a heartbeat.
    pub fn apply(&self, current: &LeaseRecord) -> LeaseRecord {
        let mut next = current.clone();
        next.holder = Some(self.host.clone());
        next.epoch = current.epoch.next();
        next.expires_at_ms = self.new_expires_at_ms;
        if let Some(member) = next.members.get_mut(&self.host) {
            member.last_seen_ms = self.now;
            member.healthy = self.healthy;
        }
        next.updated_at_ms = self.now;
        next.version += 1;
        next
    }
}

/// Why the renewer leaves a group alone this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewSkip {
    NoHolder,
    HolderNotMember,
    Unhealthy,
    Draining,
    /// The holder has not heartbeated within `heartbeat_timeout_ms`.
    Stale,
    /// `last_seen + lease_ms` would not move the expiry forward.
    NotForward,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewDecision {
    Renew(RenewPlan),
    Skip(RenewSkip),
}

/// Decides whether the renewer extends this group's lease. The new expiry is anchored on the
/// holder's own last heartbeat, so a dead holder's lease ends at most `lease_ms` after it was
/// last heard from, however late the renewer runs.
pub fn renew_decision(record: &LeaseRecord, now: Millis, cfg: &LeaseConfig) -> RenewDecision {
    let Some(holder) = &record.holder else {
        return RenewDecision::Skip(RenewSkip::NoHolder);
    };
    let Some(member) = record.member(holder) else {
        return RenewDecision::Skip(RenewSkip::HolderNotMember);
    };
    if !member.healthy {
        return RenewDecision::Skip(RenewSkip::Unhealthy);
    }
    if member.draining {
        return RenewDecision::Skip(RenewSkip::Draining);
    }
    if now.saturating_sub(member.last_seen_ms) > cfg.heartbeat_timeout_ms {
        return RenewDecision::Skip(RenewSkip::Stale);
    }
    let new_expires_at_ms = member.last_seen_ms.saturating_add(record.lease_ms);
    if new_expires_at_ms <= record.expires_at_ms {
        return RenewDecision::Skip(RenewSkip::NotForward);
    }
    RenewDecision::Renew(RenewPlan {
        holder: holder.clone(),
        epoch: record.epoch,
        new_expires_at_ms,
        now,
    })
}

/// A renewal, as the store writes it: `SET expires_at_ms = :new` under
/// `holder = :h AND epoch = :e AND expires_at_ms < :new` — never for another holder or epoch,
/// and never shrinking a window the holder was already granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewPlan {
    pub holder: HostId,
    pub epoch: Epoch,
    pub new_expires_at_ms: Millis,
    pub now: Millis,
}

impl RenewPlan {
    pub fn condition_holds(&self, current: &LeaseRecord) -> bool {
        current.is_held_by(&self.holder)
            && current.epoch == self.epoch
            && current.expires_at_ms < self.new_expires_at_ms
    }

    pub fn apply(&self, current: &LeaseRecord) -> LeaseRecord {
        let mut next = current.clone();
        next.expires_at_ms = self.new_expires_at_ms;
        next.updated_at_ms = self.now;
        next.version += 1;
        next
    }
}

/// A step-down, made by the holder after it has stopped writing: `REMOVE holder,
/// SET expires_at_ms = :now` under `holder = :h AND epoch = :e`. A free lease may be acquired
/// at once, which is what makes a planned handover take about one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasePlan {
    pub host: HostId,
    pub epoch: Epoch,
    pub now: Millis,
}

impl ReleasePlan {
    pub fn condition_holds(&self, current: &LeaseRecord) -> bool {
        current.is_held_by(&self.host) && current.epoch == self.epoch
    }

    pub fn apply(&self, current: &LeaseRecord) -> LeaseRecord {
        let mut next = current.clone();
        next.holder = None;
        next.expires_at_ms = self.now;
        next.updated_at_ms = self.now;
        next.version += 1;
        next
    }
}

/// A member's heartbeat: `SET members.#h.last_seen_ms = :now, members.#h.healthy = :ok`
/// under `attribute_exists(members.#h)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub host: HostId,
    pub healthy: bool,
    pub now: Millis,
}

impl Heartbeat {
    pub fn condition_holds(&self, current: &LeaseRecord) -> bool {
        current.members.contains_key(&self.host)
    }

    pub fn apply(&self, current: &LeaseRecord) -> LeaseRecord {
        let mut next = current.clone();
        if let Some(member) = next.members.get_mut(&self.host) {
            member.last_seen_ms = self.now;
            member.healthy = self.healthy;
        }
        next.version += 1;
        next
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
