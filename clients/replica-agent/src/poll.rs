//! What one host's agent knows and decides, without I/O: which groups to ask about, which
//! holders to look at and when, whether to heartbeat, and what an answer changes. The agent
//! task ([`crate::agent`]) sends the checks this plans and enacts the [`Effects`] of each
//! answer on the grants table; everything here is unit tested on plain values.
//!
//! Times are nanoseconds on the deadline clock ([`crate::clock`]). `t_sent` is read before a
//! check leaves; every deadline is `t_sent + valid_for_ms * (1 - DRIFT_ALLOWANCE)`: the function
//! computed `valid_for_ms` from a `now` read after `t_sent`, so the deadline falls no later than
//! `expires_at - clock_skew` on the function's clock, and the allowance covers this host's
//! clock running up to 100 ppm fast.

use crate::config::AgentConfig;
use std::collections::{BTreeMap, BTreeSet};
use tenure::ids::{GroupId, HostId, Incarnation};
use tenure::lease::client::HostCheckBody;
use tenure::lease::service::{GroupEntry, HostAnswer, WatchGroups, MAX_GROUPS_PER_CALL};
use tenure::lease::Epoch;

/// Allowance for this host's clock running fast relative to the function's (100 ppm).
pub const DRIFT_ALLOWANCE: f64 = 1e-4;

const MS: u64 = 1_000_000;

/// What the host last heard about one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupView {
    pub holder: Option<HostId>,
    pub epoch: Epoch,
    /// This host holds the group and its gate is open (until the host window ends).
    pub open: bool,
    /// An operator asked this holder to hand the group over.
    pub draining: bool,
    /// The group's own error at the last answer about it (`unknown_group`, `not_member`..).
    pub error: Option<String>,
    /// When the host stepped down from this group: no answer to a check sent before then may
    /// reopen its gate.
    stepped_down_at_ns: Option<u64>,
}

/// A look at another host that holds some of our groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Look {
    due_ns: u64,
    /// Its host epoch when last looked at; `None` before the first look.
    host_epoch: Option<Epoch>,
}

/// What an answer changes, in the order the agent must enact it (see `agent::enact`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// The host epoch the answer is about (grants of any other host epoch have ended).
    pub host_epoch: Epoch,
    /// The host window's new deadline, or `None`: this incarnation may not write any group.
    pub deadline_ns: Option<u64>,
    /// Gates to open, at these group epochs, under `host_epoch`.
    pub open: Vec<(GroupId, Epoch)>,
    /// Gates to close.
    pub close: Vec<GroupId>,
    /// Groups to release (after their gates are closed): drained, stepped down, or no longer
    /// a member.
    pub release: Vec<(GroupId, Epoch)>,
    /// Groups whose view changed (role, holder or epoch), for subscribers.
    pub changed: Vec<GroupId>,
}

/// One host's knowledge and plans (see the module doc).
#[derive(Debug, Clone)]
pub struct HostPoll {
    host: HostId,
    incarnation: Incarnation,
    skew_ns: u64,
    heartbeat_every_ns: u64,
    resync_every_ns: u64,
    late_answer_ns: u64,
    late_limit: u32,
    groups: BTreeMap<GroupId, GroupView>,
    /// Groups to read at the next check.
    ask: BTreeSet<GroupId>,
    watch: BTreeMap<HostId, Look>,
    last_heartbeat_ns: Option<u64>,
    host_epoch: Option<Epoch>,
    next_resync_ns: u64,
    late_in_a_row: u32,
    /// The whole host stepped down: it reports itself unhealthy and opens no gate.
    standby: bool,
    /// A look found a holder lapsed: its groups are to be read at once, not a poll later.
    urgent: bool,
    /// The host's item says an operator is draining the whole host.
    host_draining: bool,
}

impl HostPoll {
    /// A fresh agent: every group is read at the first check.
    pub fn new(config: &AgentConfig, incarnation: Incarnation, now_ns: u64) -> Self {
        let groups: BTreeMap<GroupId, GroupView> = config
            .groups
            .iter()
            .map(|g| (g.clone(), GroupView::default()))
            .collect();
        Self {
            host: config.host.clone(),
            incarnation,
            skew_ns: config.lease.clock_skew_ms.saturating_mul(MS),
            heartbeat_every_ns: nanos(config.heartbeat_every()),
            resync_every_ns: nanos(config.resync_interval),
            late_answer_ns: nanos(config.late_answer),
            late_limit: config.late_checks_before_silence,
            ask: groups.keys().cloned().collect(),
            groups,
            watch: BTreeMap::new(),
            last_heartbeat_ns: None,
            host_epoch: None,
            next_resync_ns: now_ns.saturating_add(nanos(config.resync_interval)),
            late_in_a_row: 0,
            standby: false,
            urgent: false,
            host_draining: false,
        }
    }

    pub fn host(&self) -> &HostId {
        &self.host
    }

    pub fn incarnation(&self) -> &Incarnation {
        &self.incarnation
    }

    pub fn host_epoch(&self) -> Option<Epoch> {
        self.host_epoch
    }

    pub fn view(&self, group: &GroupId) -> Option<&GroupView> {
        self.groups.get(group)
    }

    pub fn views(&self) -> impl Iterator<Item = (&GroupId, &GroupView)> {
        self.groups.iter()
    }

    /// Late checks in a row have silenced the heartbeat.
    pub fn silenced(&self) -> bool {
        self.late_in_a_row >= self.late_limit
    }

    pub fn standby(&self) -> bool {
        self.standby
    }

    /// The checks to send now: usually one; more only when over 500 groups must be read
    /// (start-up, resync, a dead holder's groups). The first carries the heartbeat (when due)
    /// and the looks that are due, each with the groups that holder has, which lease-check
    /// reads only if the holder turns out lapsed.
    pub fn next_checks(&mut self, now_ns: u64, healthy: bool) -> Vec<HostCheckBody> {
        self.urgent = false;
        if now_ns >= self.next_resync_ns {
            self.ask.extend(self.groups.keys().cloned());
            self.next_resync_ns = now_ns.saturating_add(self.resync_every_ns);
        }
        let heartbeat = !self.silenced()
            && self
                .last_heartbeat_ns
                .is_none_or(|t| now_ns.saturating_sub(t) >= self.heartbeat_every_ns);
        let mut budget = MAX_GROUPS_PER_CALL;
        let mut watch_groups = Vec::new();
        for (holder, look) in &self.watch {
            if look.due_ns > now_ns || budget == 0 {
                continue;
            }
            let groups: Vec<GroupId> = self
                .groups
                .iter()
                .filter(|(g, v)| v.holder.as_ref() == Some(holder) && !self.ask.contains(*g))
                .map(|(g, _)| g.clone())
                .take(budget)
                .collect();
            budget -= groups.len();
            watch_groups.push(WatchGroups {
                host_id: holder.clone(),
                host_epoch: look.host_epoch,
                groups,
            });
        }
        let ask: Vec<GroupId> = self.ask.iter().cloned().collect();
        let mut chunks: Vec<Vec<GroupId>> = ask
            .chunks(MAX_GROUPS_PER_CALL)
            .map(<[GroupId]>::to_vec)
            .collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, groups)| HostCheckBody {
                healthy: healthy && !self.standby,
                heartbeat: heartbeat && i == 0,
                incarnation: Some(self.incarnation.clone()),
                groups,
                watch: Vec::new(),
                watch_groups: if i == 0 {
                    std::mem::take(&mut watch_groups)
                } else {
                    Vec::new()
                },
            })
            .collect()
    }

    /// A check sent at `t_sent_ns` found no answer within the request timeout. A timeout
    /// counts as a late check: lease-check may have recorded its heartbeat all the same.
    pub fn timed_out(&mut self) {
        self.late_in_a_row = self.late_in_a_row.saturating_add(1);
    }

    /// Applies the answer to a check sent at `t_sent_ns` with `body`, received at
    /// `t_received_ns`.
    pub fn apply(
        &mut self,
        body: &HostCheckBody,
        answer: &HostAnswer,
        t_sent_ns: u64,
        t_received_ns: u64,
    ) -> Effects {
        if t_received_ns.saturating_sub(t_sent_ns) > self.late_answer_ns {
            self.late_in_a_row = self.late_in_a_row.saturating_add(1);
        } else {
            self.late_in_a_row = 0;
        }
        if body.heartbeat {
            self.last_heartbeat_ns = Some(t_sent_ns);
        }
        let mut effects = Effects {
            host_epoch: answer.host_epoch,
            ..Effects::default()
        };
        if self.host_epoch.is_some_and(|e| e != answer.host_epoch) {
            // Another host epoch: every grant of the old one ended. Read everything again.
            self.close_open_gates(&mut effects.close);
            self.ask.extend(self.groups.keys().cloned());
        }
        self.host_epoch = Some(answer.host_epoch);
        effects.deadline_ns = (answer.valid_for_ms > 0 && !self.standby)
            .then(|| t_sent_ns.saturating_add(window_ns(answer.valid_for_ms)));
        if effects.deadline_ns.is_none() {
            // No window now (a lapsing lease, a process that may not use it): every gate
            // closes, and the groups are read again, so they reopen once a window is back.
            self.close_open_gates(&mut effects.close);
        }
        effects.changed.extend(effects.close.iter().cloned());
        if answer.draining && !self.host_draining {
            // The whole host is being drained (`tenurectl lease drain --host`). A steady-state
            // primary asks about no group, so nothing else would tell it before the resync:
            // read every group it holds; each answer says whether to hand that one over.
            let held = self
                .groups
                .iter()
                .filter(|(_, v)| v.open || v.holder.as_ref() == Some(&self.host))
                .map(|(g, _)| g.clone());
            self.ask.extend(held);
        }
        self.host_draining = answer.draining;
        for entry in &answer.groups {
            match entry {
                GroupEntry::Answer(a) => self.apply_group(a, t_sent_ns, &mut effects),
                GroupEntry::Error { group_id, error } => {
                    let Ok(group) = GroupId::parse(group_id) else {
                        continue;
                    };
                    let Some(view) = self.groups.get_mut(&group) else {
                        continue;
                    };
                    view.error = Some(format!("{}: {}", error.code, error.message));
                    match error.code.as_str() {
                        // Gone, or this host is no longer a member: hand a grant over.
                        "unknown_group" | "not_member" => {
                            self.ask.remove(&group);
                            if view.open || view.holder.as_ref() == Some(&self.host) {
                                view.open = false;
                                effects.close.push(group.clone());
                                effects.release.push((group.clone(), view.epoch));
                            }
                            view.holder = None;
                            effects.changed.push(group);
                        }
                        // Transient (the store): ask again at the next check.
                        _ => {}
                    }
                }
            }
        }
        let answered: BTreeSet<GroupId> = answer
            .groups
            .iter()
            .filter_map(|e| match e {
                GroupEntry::Answer(a) => Some(a.group_id.clone()),
                GroupEntry::Error { .. } => None,
            })
            .collect();
        for w in &answer.watched {
            // lease-check read its clock before this answer arrived, so the holder's lease ends
            // no later than `t_received + expires_in` here; a look sooner than that plus the
            // skew would find it not yet revocable and cost another round.
            let due = t_received_ns
                .saturating_add(w.expires_in_ms.saturating_mul(MS))
                .saturating_add(self.skew_ns);
            let moved = self
                .watch
                .get(&w.host_id)
                .and_then(|l| l.host_epoch)
                .is_some_and(|e| e != w.host_epoch);
            if !w.live || moved {
                // Lapsed (or revoked meanwhile): read the groups it held at once.
                let held: Vec<GroupId> = self
                    .groups
                    .iter()
                    .filter(|(_, v)| v.holder.as_ref() == Some(&w.host_id))
                    .map(|(g, _)| g.clone())
                    .collect();
                // Groups the look carried were settled in this check; the rest are urgent.
                self.urgent |= held.iter().any(|g| !answered.contains(g));
                self.ask.extend(held);
            }
            self.watch.insert(
                w.host_id.clone(),
                Look {
                    due_ns: due,
                    host_epoch: Some(w.host_epoch),
                },
            );
        }
        // Holders no group of ours names any more need no looking at.
        let named: BTreeSet<&HostId> = self
            .groups
            .values()
            .filter_map(|v| v.holder.as_ref())
            .collect();
        self.watch.retain(|h, _| named.contains(h));
        effects.changed.sort();
        effects.changed.dedup();
        effects
    }

    fn apply_group(
        &mut self,
        a: &tenure::lease::CheckAnswer,
        t_sent_ns: u64,
        effects: &mut Effects,
    ) {
        let Some(view) = self.groups.get_mut(&a.group_id) else {
            return;
        };
        self.ask.remove(&a.group_id);
        let before = view.clone();
        view.error = None;
        view.holder = a.holder.clone();
        view.epoch = a.epoch;
        view.draining = a.draining;
        let ours = a.writable && a.holder.as_ref() == Some(&self.host);
        let stepped_down = view.stepped_down_at_ns;
        match (ours, stepped_down) {
            // An answer to a check sent before the step-down never reopens the gate; the
            // group is read again by a check sent after it.
            (true, Some(at)) if t_sent_ns <= at => {
                self.ask.insert(a.group_id.clone());
            }
            // Still ours after the step-down: the release was lost; release again (and read
            // it again to see this one land).
            (true, Some(_)) => {
                effects.release.push((a.group_id.clone(), a.epoch));
                self.ask.insert(a.group_id.clone());
            }
            (true, None) if a.draining || self.standby => {
                if view.open {
                    effects.close.push(a.group_id.clone());
                }
                view.open = false;
                view.stepped_down_at_ns = Some(t_sent_ns);
                effects.release.push((a.group_id.clone(), a.epoch));
                self.ask.insert(a.group_id.clone());
            }
            (true, None) => {
                if effects.deadline_ns.is_some() {
                    view.open = true;
                    effects.open.push((a.group_id.clone(), a.epoch));
                } else {
                    // Ours, but no window to use it with: read it again at the next check.
                    self.ask.insert(a.group_id.clone());
                }
            }
            (false, _) => {
                if view.open {
                    effects.close.push(a.group_id.clone());
                }
                view.open = false;
                if stepped_down.is_some_and(|at| t_sent_ns > at) {
                    view.stepped_down_at_ns = None;
                }
            }
        }
        match &a.holder {
            // No holder yet: ask again at every check until someone has it.
            None => {
                self.ask.insert(a.group_id.clone());
            }
            Some(h) if *h != self.host => {
                self.watch.entry(h.clone()).or_insert(Look {
                    due_ns: t_sent_ns,
                    host_epoch: a.holder_host_epoch,
                });
            }
            Some(_) => {}
        }
        if (before.open, &before.holder, before.epoch) != (view.open, &view.holder, view.epoch) {
            effects.changed.push(a.group_id.clone());
        }
    }

    /// Closes every open gate (recorded in `close`) and asks about those groups again.
    fn close_open_gates(&mut self, close: &mut Vec<GroupId>) {
        for (g, v) in self.groups.iter_mut() {
            if v.open {
                v.open = false;
                close.push(g.clone());
                self.ask.insert(g.clone());
            }
        }
    }

    /// The host window passed without a fresh answer: every gate is closed (the grants table
    /// already refuses them), and the groups are read at the next check, which reopens the
    /// ones still held (so the reopening goes through the grant hook like any other).
    pub fn window_expired(&mut self) -> Vec<GroupId> {
        let mut closed = Vec::new();
        self.close_open_gates(&mut closed);
        closed
    }

    /// The host steps down from `group` (its gate is already closed): what to release, if it
    /// holds it. Answers to checks sent before `now_ns` will not reopen the gate.
    pub fn step_down(&mut self, group: &GroupId, now_ns: u64) -> Option<(GroupId, Epoch)> {
        let host = self.host.clone();
        let view = self.groups.get_mut(group)?;
        view.stepped_down_at_ns = Some(now_ns);
        let held = view.open || view.holder.as_ref() == Some(&host);
        view.open = false;
        // Read it at the next check, to see the release landed (or send it again).
        self.ask.insert(group.clone());
        held.then(|| (group.clone(), view.epoch))
    }

    /// The whole host steps down: every held group is released and the host reports itself
    /// unhealthy, so it acquires nothing, until [`HostPoll::resume`].
    pub fn step_down_host(&mut self, now_ns: u64) -> Vec<(GroupId, Epoch)> {
        self.standby = true;
        let groups: Vec<GroupId> = self.groups.keys().cloned().collect();
        groups
            .iter()
            .filter_map(|g| self.step_down(g, now_ns))
            .collect()
    }

    pub fn resume(&mut self) {
        self.standby = false;
    }

    /// The earliest time a look is due, so the agent does not sleep past it.
    pub fn next_look_ns(&self) -> Option<u64> {
        self.watch.values().map(|l| l.due_ns).min()
    }

    /// A look found a holder lapsed with groups still to read: the next check should go now.
    pub fn urgent(&self) -> bool {
        self.urgent
    }

    /// Whether a group is still to be read (no answer about it yet since it was asked for).
    pub fn asking(&self, group: &GroupId) -> bool {
        self.ask.contains(group)
    }
}

/// `valid_for_ms` as a window in nanoseconds, less the drift allowance.
pub fn window_ns(valid_for_ms: u64) -> u64 {
    let ns = valid_for_ms.saturating_mul(MS) as f64;
    (ns * (1.0 - DRIFT_ALLOWANCE)) as u64
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "poll_tests.rs"]
mod tests;
