//! Lease protocol v2 as pure decisions: no clock reads, no I/O. The store executes the plans
//! these functions return as single conditional DynamoDB writes; each plan also carries its
//! condition as a predicate (`condition_holds`) and its effect (`apply`), so the in-memory
//! store, the tests and the model checker run exactly the rule the store sends to DynamoDB.
//!
//! Records: a host lease per host ([`HostRecord`]: epoch, expiry) and a grant per group
//! ([`LeaseRecord`]: holder, holder's host epoch, fencing epoch). A grant is live iff the
//! holder's host epoch still equals `holder_host_epoch` and its host lease has not expired.
//!
//! Why no two hosts are writable for one group at once (see `docs/protocol.md`):
//! - a holder is answered writable only for its grants at its *current* host epoch, and only
//!   until `expires_at - clock_skew` by the function's clock ([`host_valid_for_ms`]); the host
//!   turns that into a deadline counted from when it *sent* the check;
//! - a contender revokes the holder only once `expires_at < now - clock_skew` by its clock
//!   ([`RevokePlan::condition_holds`]) and acquires only after the revocation is read
//!   ([`GrantState::Revoked`]); with clocks within `clock_skew_ms`, the holder's window has
//!   closed before the revocation is possible;
//! - renewals ([`RenewPlan`]) are conditional on the epoch and only move the expiry forward, so
//!   a renewal and a revocation of one host are serialised by DynamoDB on the host item, and a
//!   window once granted is never cut short;
//! - host epochs never go back, so a revocation once read stays true: no grant taken at an
//!   older host epoch can ever be live again;
//! - acquisitions are conditional on the group's epoch, so of two contenders that read the
//!   same group only one wins, and the group epoch (the fencing token) rises with each.

use super::config::LeaseConfig;
use super::host::HostRecord;
use super::record::{Epoch, LeaseRecord, Member};
use crate::ids::{GroupId, HostId, Incarnation};
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What a host is for one group, according to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds a live grant: may write for `valid_for_ms` from when it sent the check.
    Primary,
    /// Does not hold a live grant (another host does, or nobody does yet).
    Secondary,
}

/// The per-group answer (v1's check answer, which v2's host check repeats per group with
/// `holder_host_epoch`): the wire contract hosts rely on.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_host_epoch: Option<Epoch>,
}

/// The shortest wait a check ever asks for.
pub(crate) const FLOOR_MS: Millis = 10;

/// How long the holder of a host lease may use it, from `now` on the function clock:
/// `max(0, expires_at - clock_skew - now)`. Every grant the host holds at its current epoch
/// shares this window.
pub(crate) fn host_valid_for_ms(host: &HostRecord, now: Millis, cfg: &LeaseConfig) -> Millis {
    host.expires_at_ms
        .saturating_sub(cfg.clock_skew_ms)
        .saturating_sub(now)
}

/// Whether a contender may revoke this host lease at `now`: it ended more than `clock_skew_ms`
/// ago by the contender's clock, so the holder's own window (which closes `clock_skew_ms`
/// before the expiry by its clock) has closed, whatever the two clocks' error within the skew.
pub fn is_revocable(host: &HostRecord, now: Millis, cfg: &LeaseConfig) -> bool {
    host.expires_at_ms < now.saturating_sub(cfg.clock_skew_ms)
}

/// The first millisecond at which [`is_revocable`] holds.
pub(crate) fn revocable_at_ms(host: &HostRecord, cfg: &LeaseConfig) -> Millis {
    host.expires_at_ms
        .saturating_add(cfg.clock_skew_ms)
        .saturating_add(1)
}

/// The state of a group's grant, given its holder's host record (read consistently).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantState {
    /// No holder: acquirable at once.
    Free,
    /// The holder's host epoch is the grant's and its lease has not lapsed past the skew.
    Live { holder: HostId },
    /// The holder's lease lapsed past the skew, but its epoch is still the grant's: it must be
    /// revoked before anyone acquires.
    Lapsed { holder: HostId, host_epoch: Epoch },
    /// The holder's host epoch moved past the grant's: the grant can never be live again.
    Revoked {
        holder: HostId,
        revoked_at_ms: Millis,
    },
    /// Taken under v1 (no `holder_host_epoch`), live until its own `expires_at + skew`.
    V1Held { holder: HostId },
    /// A v1 lease past `expires_at + skew`: acquirable with v1's expiry condition.
    V1Lapsed { holder: HostId },
}

/// Decides the grant's state. `holder_host` is the holder's host record (absent items read as
/// [`HostRecord::absent`]); it is ignored for a free group or a v1 lease.
pub fn grant_state(
    group: &LeaseRecord,
    holder_host: Option<&HostRecord>,
    now: Millis,
    cfg: &LeaseConfig,
) -> GrantState {
    let Some(holder) = group.holder.clone() else {
        return GrantState::Free;
    };
    let Some(grant_epoch) = group.holder_host_epoch else {
        return if group.expires_at_ms < now.saturating_sub(cfg.clock_skew_ms) {
            GrantState::V1Lapsed { holder }
        } else {
            GrantState::V1Held { holder }
        };
    };
    let absent = HostRecord::absent(holder.clone());
    let host = holder_host.unwrap_or(&absent);
    if host.epoch > grant_epoch {
        GrantState::Revoked {
            holder,
            revoked_at_ms: host.revoked_at_ms,
        }
    } else if is_revocable(host, now, cfg) {
        GrantState::Lapsed {
            holder,
            host_epoch: host.epoch,
        }
    } else {
        GrantState::Live { holder }
    }
}

/// Whether `host` may be answered writable for `group`: it holds the grant at its current host
/// epoch, the caller's incarnation is the one the host record speaks for, and the host lease
/// still has time left.
pub(crate) fn is_writable(
    group: &LeaseRecord,
    host: &HostRecord,
    incarnation: &Incarnation,
    now: Millis,
    cfg: &LeaseConfig,
) -> bool {
    group.is_held_by(&host.host_id)
        && group.holder_host_epoch == Some(host.epoch)
        && host.speaks_for(incarnation)
        && host_valid_for_ms(host, now, cfg) > 0
}

/// Why a member is not a candidate for a group right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ineligible {
    NotMember,
    /// An operator is draining this member (or its whole host).
    Draining,
    /// It released the group less than `heartbeat_timeout_ms` before its last check-in.
    RecentlyReleased,
    Unhealthy,
    /// No heartbeat within `heartbeat_timeout_ms`.
    Stale,
    /// Its host lease has no time left (or a new incarnation is waiting for it to lapse).
    NoHostLease,
}

/// Whether `host` may take `group`: a member not draining it on a host not draining, that has
/// not released it within `heartbeat_timeout_ms` of its last check-in, healthy, heard from
/// within `heartbeat_timeout_ms`, with a live host lease of its own.
pub(crate) fn eligibility(
    group: &LeaseRecord,
    host: &HostRecord,
    now: Millis,
    cfg: &LeaseConfig,
) -> Result<(), Ineligible> {
    let member = group.member(&host.host_id).ok_or(Ineligible::NotMember)?;
    if member.draining || host.draining {
        return Err(Ineligible::Draining);
    }
    if let Some(released) = member.released_at_ms {
        if host.last_seen_ms < released.saturating_add(cfg.heartbeat_timeout_ms) {
            return Err(Ineligible::RecentlyReleased);
        }
    }
    if !host.healthy {
        return Err(Ineligible::Unhealthy);
    }
    if now.saturating_sub(host.last_seen_ms) > cfg.heartbeat_timeout_ms {
        return Err(Ineligible::Stale);
    }
    if host.incarnation_changed.is_some() || host_valid_for_ms(host, now, cfg) == 0 {
        return Err(Ineligible::NoHostLease);
    }
    Ok(())
}

/// The member that should take the group next: the previous holder if it is itself eligible
/// (so a renewer outage or a revocation does not move primaryship between live hosts for
/// nothing), else the highest priority among eligible members, ties to the smaller host id (so
/// every caller computes the same answer). Members whose host record is not in `hosts` are not
/// eligible.
pub(crate) fn best_candidate<'a>(
    group: &'a LeaseRecord,
    hosts: &BTreeMap<HostId, HostRecord>,
    now: Millis,
    cfg: &LeaseConfig,
) -> Option<&'a HostId> {
    let eligible = |id: &HostId| {
        hosts
            .get(id)
            .is_some_and(|h| eligibility(group, h, now, cfg).is_ok())
    };
    if let Some((holder, _)) = group
        .holder
        .as_ref()
        .and_then(|h| group.members.get_key_value(h))
    {
        if eligible(holder) {
            return Some(holder);
        }
    }
    group
        .members
        .iter()
        .filter(|(id, _)| eligible(id))
        .max_by(|(a_id, a), (b_id, b)| a.priority.cmp(&b.priority).then(b_id.cmp(a_id)))
        .map(|(id, _)| id)
}

/// When the group became takeable: free since (release or creation), or its holder was
/// revoked, or a v1 lease lapsed. A candidate that is not the best waits one
/// `heartbeat_timeout_ms` from here, not from when it first saw the group.
fn takeable_since_ms(group: &LeaseRecord, state: &GrantState, cfg: &LeaseConfig) -> Millis {
    match state {
        GrantState::Revoked { revoked_at_ms, .. } => *revoked_at_ms,
        GrantState::V1Lapsed { .. } => group
            .expires_at_ms
            .saturating_add(cfg.clock_skew_ms)
            .saturating_add(1),
        _ => group.free_since_ms.unwrap_or(group.updated_at_ms),
    }
}

/// Why a host does not try to acquire a group now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Wait {
    /// The caller already holds the grant at its current host epoch.
    AlreadyHolder,
    /// Another host holds a grant that is live (or a v1 lease not yet past its expiry).
    HeldByOther { holder: HostId },
    /// The holder's lease lapsed: it must be revoked first (the check does, then decides again).
    NeedsRevocation { holder: HostId, host_epoch: Epoch },
    /// The caller cannot take it (see [`Ineligible`]).
    Ineligible { why: Ineligible },
    /// A better eligible candidate gets one `heartbeat_timeout_ms` to take over first.
    BetterCandidate { best: HostId, until_ms: Millis },
}

/// Decides whether `caller` acquires `group` now. `hosts` must hold the caller's own record
/// (after this check's heartbeat) and, for the best-candidate rule, every member's it could
/// read; `holder_host` is the holder's.
pub fn acquire_decision(
    group: &LeaseRecord,
    hosts: &BTreeMap<HostId, HostRecord>,
    caller: &HostId,
    incarnation: &Incarnation,
    now: Millis,
    cfg: &LeaseConfig,
) -> Result<AcquirePlan, Wait> {
    let absent = HostRecord::absent(caller.clone());
    let me = hosts.get(caller).unwrap_or(&absent);
    let holder_host = group.holder.as_ref().and_then(|h| hosts.get(h));
    let state = grant_state(group, holder_host, now, cfg);
    match &state {
        GrantState::Live { holder } | GrantState::V1Held { holder } => {
            return Err(
                if holder == caller && is_writable(group, me, incarnation, now, cfg) {
                    Wait::AlreadyHolder
                } else {
                    Wait::HeldByOther {
                        holder: holder.clone(),
                    }
                },
            );
        }
        GrantState::Lapsed { holder, host_epoch } => {
            return Err(Wait::NeedsRevocation {
                holder: holder.clone(),
                host_epoch: *host_epoch,
            })
        }
        GrantState::Free | GrantState::Revoked { .. } | GrantState::V1Lapsed { .. } => {}
    }
    eligibility(group, me, now, cfg).map_err(|why| Wait::Ineligible { why })?;
    if !me.speaks_for(incarnation) {
        return Err(Wait::Ineligible {
            why: Ineligible::NoHostLease,
        });
    }
    if let Some(best) = best_candidate(group, hosts, now, cfg).filter(|b| *b != caller) {
        let until_ms =
            takeable_since_ms(group, &state, cfg).saturating_add(cfg.heartbeat_timeout_ms);
        if now < until_ms {
            return Err(Wait::BetterCandidate {
                best: best.clone(),
                until_ms,
            });
        }
    }
    Ok(AcquirePlan {
        host: caller.clone(),
        host_epoch: me.epoch,
        seen_epoch: group.epoch,
        expect: match state {
            GrantState::Free => AcquireExpect::Free,
            GrantState::V1Lapsed { .. } => AcquireExpect::V1Lapsed {
                not_after_ms: now.saturating_sub(cfg.clock_skew_ms),
            },
            _ => AcquireExpect::Revoked,
        },
        now,
    })
}

/// What an acquisition expects of the group besides its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcquireExpect {
    /// `attribute_not_exists(holder)`.
    Free,
    /// Nothing more: the revocation was read, and host epochs never go back.
    Revoked,
    /// `attribute_not_exists(holder_host_epoch) AND expires_at_ms < :not_after` (upgrade).
    V1Lapsed { not_after_ms: Millis },
}

/// An acquisition, as the store writes it: `SET holder = :h, holder_host_epoch = :eh,
/// epoch = epoch + 1` under `epoch = :seen AND attribute_exists(members.#h)` (and
/// [`AcquireExpect`]). The epoch condition stops two contenders who read the same group from
/// both winning.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AcquirePlan {
    pub host: HostId,
    /// The caller's host epoch: the grant is live exactly while the host stays at it.
    pub host_epoch: Epoch,
    /// The group epoch the decision was made on.
    pub seen_epoch: Epoch,
    pub expect: AcquireExpect,
    pub now: Millis,
}

impl AcquirePlan {
    pub fn condition_holds(&self, current: &LeaseRecord) -> bool {
        !current.deleted
            && current.members.contains_key(&self.host)
            && current.epoch == self.seen_epoch
            && match self.expect {
                AcquireExpect::Free => current.holder.is_none(),
                AcquireExpect::Revoked => true,
                AcquireExpect::V1Lapsed { not_after_ms } => {
                    current.holder_host_epoch.is_none() && current.expires_at_ms < not_after_ms
                }
            }
    }

    pub fn apply(&self, current: &LeaseRecord) -> LeaseRecord {
        let mut next = current.clone();
        next.holder = Some(self.host.clone());
        next.holder_host_epoch = Some(self.host_epoch);
        next.epoch = current.epoch.next();
        next.updated_at_ms = self.now;
        next.version += 1;
        next
    }
}

/// A step-down by the holder's agent after it closed the group's gate: `REMOVE holder,
/// holder_host_epoch SET free_since_ms = :now, members.#h.released_at_ms = :now` under
/// `holder = :h AND epoch = :e`, with `ADD attention :g` on every other member's host in the
/// same transaction, so the next candidate hears of it at its next poll and takes it at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasePlan {
    pub host: HostId,
    pub epoch: Epoch,
    pub now: Millis,
}

impl ReleasePlan {
    pub fn condition_holds(&self, current: &LeaseRecord) -> bool {
        !current.deleted && current.is_held_by(&self.host) && current.epoch == self.epoch
    }

    pub fn apply(&self, current: &LeaseRecord) -> LeaseRecord {
        let mut next = current.clone();
        next.holder = None;
        next.holder_host_epoch = None;
        next.free_since_ms = Some(self.now);
        if let Some(member) = next.members.get_mut(&self.host) {
            member.released_at_ms = Some(self.now);
        }
        next.updated_at_ms = self.now;
        next.version += 1;
        next
    }

    /// The hosts told of the release (every member but the releaser).
    pub fn notified(&self, group: &LeaseRecord) -> Vec<HostId> {
        group
            .members
            .keys()
            .filter(|h| **h != self.host)
            .cloned()
            .collect()
    }
}

/// A host's heartbeat: `SET last_seen_ms = :now, healthy = :ok, incarnation = :inc` (and
/// `if_not_exists` defaults) under `attribute_not_exists(incarnation) OR incarnation = :inc`.
/// A heartbeat of the host's own fields by its own process: nobody else writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatPlan {
    pub host: HostId,
    pub healthy: bool,
    pub incarnation: Incarnation,
    pub now: Millis,
}

impl HeartbeatPlan {
    pub fn condition_holds(&self, current: Option<&HostRecord>) -> bool {
        current
            .and_then(|h| h.incarnation.as_ref())
            .is_none_or(|inc| *inc == self.incarnation)
    }

    pub fn apply(&self, current: Option<&HostRecord>) -> HostRecord {
        let mut next = current
            .cloned()
            .unwrap_or_else(|| HostRecord::absent(self.host.clone()));
        next.last_seen_ms = self.now;
        next.healthy = self.healthy;
        next.incarnation = Some(self.incarnation.clone());
        next.version += 1;
        next
    }

    /// The second write when another incarnation is recorded (see [`IncarnationChangePlan`]).
    pub fn change_from(&self, recorded: Incarnation) -> IncarnationChangePlan {
        IncarnationChangePlan {
            heartbeat: self.clone(),
            recorded,
        }
    }
}

/// A heartbeat from a new incarnation: the heartbeat's `SET` plus `incarnation_changed =
/// :now`, under `incarnation = :recorded`. From then on the host is not renewed (nor answered
/// writable) until it has been revoked, so grants the old process may still be using lapse
/// before any process uses them again: a restarted agent never inherits grants, and two
/// processes claiming one host id never both write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncarnationChangePlan {
    pub heartbeat: HeartbeatPlan,
    pub recorded: Incarnation,
}

impl IncarnationChangePlan {
    pub fn condition_holds(&self, current: Option<&HostRecord>) -> bool {
        current.and_then(|h| h.incarnation.as_ref()) == Some(&self.recorded)
    }

    pub fn apply(&self, current: Option<&HostRecord>) -> HostRecord {
        let mut next = self.heartbeat.apply(current);
        next.incarnation_changed = Some(self.heartbeat.now);
        next
    }
}

/// Why a host lease is not renewed this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewSkip {
    Unhealthy,
    /// No heartbeat within `heartbeat_timeout_ms`.
    Stale,
    /// No heartbeat since the host was revoked.
    NotSeenSinceRevocation,
    /// A new incarnation is waiting for the old grants to lapse.
    IncarnationChanged,
    /// `last_seen + lease_ms` would not move the expiry forward.
    NotForward,
}

impl RenewSkip {
    /// The name in logs and the `Reason` dimension of the `RenewalsSkipped` metric (the same
    /// as its JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            RenewSkip::Unhealthy => "unhealthy",
            RenewSkip::Stale => "stale",
            RenewSkip::NotSeenSinceRevocation => "not_seen_since_revocation",
            RenewSkip::IncarnationChanged => "incarnation_changed",
            RenewSkip::NotForward => "not_forward",
        }
    }
}

/// Decides whether a host lease is extended (by the renewer, or by the host's own check when
/// the renewer is overdue). The new expiry is anchored on the host's own last heartbeat, so a
/// dead host's lease ends at most `lease_ms` after it was last heard from, however late the
/// renewal runs. A draining host is still renewed: it stays a live secondary.
pub fn renew_decision(
    host: &HostRecord,
    now: Millis,
    cfg: &LeaseConfig,
) -> Result<RenewPlan, RenewSkip> {
    if !host.healthy {
        return Err(RenewSkip::Unhealthy);
    }
    if host.incarnation_changed.is_some() {
        return Err(RenewSkip::IncarnationChanged);
    }
    if host.last_seen_ms <= host.revoked_at_ms {
        return Err(RenewSkip::NotSeenSinceRevocation);
    }
    if now.saturating_sub(host.last_seen_ms) > cfg.heartbeat_timeout_ms {
        return Err(RenewSkip::Stale);
    }
    let new_expires_at_ms = host.last_seen_ms.saturating_add(cfg.lease_ms);
    if new_expires_at_ms <= host.expires_at_ms {
        return Err(RenewSkip::NotForward);
    }
    Ok(RenewPlan {
        host: host.host_id.clone(),
        epoch: host.epoch,
        new_expires_at_ms,
        now,
    })
}

/// Whether a host's own check should renew its lease: the lease ends within two renew
/// intervals, so the renewer has missed at least one round. After a deploy, before the
/// renewer's first tick, this is what keeps leases from churning.
pub fn self_renewal_due(host: &HostRecord, now: Millis, cfg: &LeaseConfig) -> bool {
    host.expires_at_ms <= now.saturating_add(2 * cfg.renew_interval_ms)
}

/// A renewal, as the store writes it: `SET expires_at_ms = :new` under `epoch = :e AND
/// expires_at_ms < :new AND healthy = :true AND last_seen_ms > revoked_at_ms AND
/// attribute_not_exists(incarnation_changed)`: never at another epoch, never shrinking a
/// window already granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewPlan {
    pub host: HostId,
    pub epoch: Epoch,
    pub new_expires_at_ms: Millis,
    pub now: Millis,
}

impl RenewPlan {
    pub fn condition_holds(&self, current: Option<&HostRecord>) -> bool {
        current.is_some_and(|h| {
            h.epoch == self.epoch
                && h.expires_at_ms < self.new_expires_at_ms
                && h.healthy
                && h.last_seen_ms > h.revoked_at_ms
                && h.incarnation_changed.is_none()
        })
    }

    pub fn apply(&self, current: &HostRecord) -> HostRecord {
        let mut next = current.clone();
        next.expires_at_ms = self.new_expires_at_ms;
        next.updated_at_ms = self.now;
        next.version += 1;
        next
    }
}

/// Decides whether the host lease may be revoked at `now` (see [`is_revocable`]).
pub fn revoke_decision(host: &HostRecord, now: Millis, cfg: &LeaseConfig) -> Option<RevokePlan> {
    is_revocable(host, now, cfg).then(|| RevokePlan {
        host: host.host_id.clone(),
        seen_epoch: host.epoch,
        seen_absent: host.version == 0 && host.last_seen_ms == 0 && host.expires_at_ms == 0,
        not_after_ms: now.saturating_sub(cfg.clock_skew_ms),
        now,
    })
}

/// A revocation, as the store writes it: `SET epoch = epoch + 1, revoked_at_ms = :now REMOVE
/// incarnation_changed` under `epoch = :e AND expires_at_ms < :not_after`. Afterwards no grant
/// the host had at `:e` can ever be live again. Whoever revokes (a contender, or the host's
/// own new incarnation) also clears `incarnation_changed`: no grant exists at the new epoch,
/// so the flag's work is done and renewals may resume for the incarnation recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokePlan {
    pub host: HostId,
    pub seen_epoch: Epoch,
    /// The host item was never written (`attribute_not_exists(host_id)` instead).
    pub seen_absent: bool,
    pub not_after_ms: Millis,
    pub now: Millis,
}

impl RevokePlan {
    pub fn condition_holds(&self, current: Option<&HostRecord>) -> bool {
        match current {
            None => self.seen_absent,
            Some(h) => {
                !self.seen_absent
                    && h.epoch == self.seen_epoch
                    && h.expires_at_ms < self.not_after_ms
            }
        }
    }

    pub fn apply(&self, current: Option<&HostRecord>) -> HostRecord {
        let mut next = current
            .cloned()
            .unwrap_or_else(|| HostRecord::absent(self.host.clone()));
        next.epoch = next.epoch.next();
        next.revoked_at_ms = self.now;
        next.incarnation_changed = None;
        next.updated_at_ms = self.now;
        next.version += 1;
        next
    }
}

/// Whether a secondary's look at a watched holder is due: it was told the holder's lease ends
/// in `expires_in_ms` by an answer to a check it sent at `sent_at` (its own clock), so the
/// holder becomes revocable no earlier than `sent_at + expires_in_ms + clock_skew_ms`.
/// Anchoring at send time makes the secondary look early, never late.
pub fn watch_due(sent_at: Millis, expires_in_ms: Millis, now: Millis, cfg: &LeaseConfig) -> bool {
    now >= sent_at
        .saturating_add(expires_in_ms)
        .saturating_add(cfg.clock_skew_ms)
}

/// What a watched host looks like to a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    pub host_id: HostId,
    pub host_epoch: Epoch,
    /// Its lease has not lapsed past the skew (it cannot be revoked yet).
    pub live: bool,
    pub expires_in_ms: Millis,
}

pub fn watched(host: &HostRecord, now: Millis, cfg: &LeaseConfig) -> Watched {
    Watched {
        host_id: host.host_id.clone(),
        host_epoch: host.epoch,
        live: !is_revocable(host, now, cfg),
        expires_in_ms: host.expires_at_ms.saturating_sub(now),
    }
}

/// What a check answers `caller` about one group, from the records as they stand after the
/// check's writes. `hosts` holds the caller's record and whatever member records the check
/// read; `drain_has_taker` says whether a draining holder has an eligible successor (with none
/// it keeps writing and is not told to drain).
pub fn answer(
    group: &LeaseRecord,
    hosts: &BTreeMap<HostId, HostRecord>,
    caller: &HostId,
    incarnation: &Incarnation,
    now: Millis,
    cfg: &LeaseConfig,
) -> CheckAnswer {
    let absent = HostRecord::absent(caller.clone());
    let me = hosts.get(caller).unwrap_or(&absent);
    let writable = is_writable(group, me, incarnation, now, cfg);
    let valid_for_ms = if writable {
        host_valid_for_ms(me, now, cfg)
    } else {
        0
    };
    let asked_to_hand_over =
        me.draining || group.member(caller).is_none_or(|m: &Member| m.draining);
    let draining =
        asked_to_hand_over && (!writable || has_successor(group, hosts, caller, now, cfg));
    CheckAnswer {
        group_id: group.group_id.clone(),
        host_id: caller.clone(),
        role: if writable {
            Role::Primary
        } else {
            Role::Secondary
        },
        writable,
        epoch: group.epoch,
        holder: group.holder.clone(),
        valid_for_ms,
        poll_after_ms: poll_after_ms(group, hosts, caller, writable, now, cfg),
        draining,
        holder_host_epoch: group.holder_host_epoch,
    }
}

/// Whether someone other than `holder` could take the group now (a drain waits for one). A
/// holder that is no longer a member always hands over: its group was redefined without it.
pub(crate) fn has_successor(
    group: &LeaseRecord,
    hosts: &BTreeMap<HostId, HostRecord>,
    holder: &HostId,
    now: Millis,
    cfg: &LeaseConfig,
) -> bool {
    group.member(holder).is_none()
        || group.members.keys().any(|id| {
            id != holder
                && hosts
                    .get(id)
                    .is_some_and(|h| eligibility(group, h, now, cfg).is_ok())
        })
}

/// When the caller should ask about this group again: every `poll_interval_ms`, except that a
/// secondary that could take over sooner is told to come back the moment it may, so an
/// unplanned failover does not wait out a whole poll interval after the lease lapses.
fn poll_after_ms(
    group: &LeaseRecord,
    hosts: &BTreeMap<HostId, HostRecord>,
    caller: &HostId,
    writable: bool,
    now: Millis,
    cfg: &LeaseConfig,
) -> Millis {
    let poll = cfg.poll_interval_ms;
    let floor = FLOOR_MS.min(poll);
    if writable {
        return poll;
    }
    let Some(me) = hosts.get(caller) else {
        return poll;
    };
    if eligibility(group, me, now, cfg).is_err() {
        return poll;
    }
    let holder_host = group.holder.as_ref().and_then(|h| hosts.get(h));
    let state = grant_state(group, holder_host, now, cfg);
    // The holder was asked to hand over and will release at its next poll: come back soon,
    // so a planned handover costs about one of the holder's polls, not two.
    let holder_draining = group
        .holder
        .as_ref()
        .and_then(|h| group.member(h))
        .is_some_and(|m| m.draining)
        || holder_host.is_some_and(|h| h.draining);
    if holder_draining {
        return (poll / 10).max(floor);
    }
    let mut chance = match &state {
        GrantState::Live { .. } => holder_host.map_or(now, |h| revocable_at_ms(h, cfg)),
        GrantState::V1Held { .. } => group
            .expires_at_ms
            .saturating_add(cfg.clock_skew_ms)
            .saturating_add(1),
        _ => now,
    };
    if best_candidate(group, hosts, now, cfg) != Some(caller) {
        chance = chance
            .max(takeable_since_ms(group, &state, cfg).saturating_add(cfg.heartbeat_timeout_ms));
    }
    chance.saturating_sub(now).clamp(floor, poll)
}

/// The groups `host` is a member of, among `groups`.
pub fn member_groups<'a>(
    groups: impl IntoIterator<Item = &'a LeaseRecord>,
    host: &HostId,
) -> BTreeSet<GroupId> {
    groups
        .into_iter()
        .filter(|g| g.members.contains_key(host))
        .map(|g| g.group_id.clone())
        .collect()
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
