//! Model checking lease protocol v2 with stateright, on the decision functions `tenure::lease`
//! ships (`protocol::{acquire_decision, answer, renew_decision, revoke_decision,
//! self_renewal_due, grant_state}` and the plans' own `condition_holds`/`apply`, which are the
//! store's conditions), not a copy of them.
//!
//! The model: two or three hosts (the first with the highest priority) in two groups, host and
//! group items written linearizably, a renewer that is up or down for the whole run. Time is
//! discrete; true time `t` advances by `Tick`. Every function instance reads a clock
//! `t + offset`, the offset chosen by the checker from `0..=clock_skew_ms` (so any two instances differ by at most the
//! skew, the protocol's assumption). A check is three steps, as lease-check runs it:
//! - `Process`: heartbeat (with the incarnation change when another one is recorded), keep
//!   the host's own lease (a new incarnation revokes its own host once the old lease lapsed;
//!   self-renewal when due), revoke lapsed holders of the host's groups, and decide the
//!   acquisitions on that reading;
//! - `Commit`: the acquisitions' conditional writes, then the answers from what the check read
//!   and wrote (another host's steps may come between `Process` and `Commit`, as two requests
//!   of one check do);
//! - `Receive`: the host opens a group's gate until `t_sent + valid_for` on its own clock
//!   (which runs at true rate), or closes it.
//!
//! Requests and replies may be lost or delayed (other steps interleave); a host may have two
//! checks in flight; it may crash, restart as a new incarnation (gates closed), pause (not be
//! scheduled), or release a group (gate closed first, never with a check in flight, as the
//! agent does). A free group may be deleted (a tombstone that keeps the epoch) and created
//! again.
//!
//! Properties: at any true time at most one host may write each group; group epochs rise by
//! one per acquisition and never go back, across delete and re-create; host epochs never go
//! back; someone becomes primary; and, under a fair schedule, a survivor takes over within
//! lease + skew + poll of the holder's last heartbeat. Mutants that must be caught: acquiring
//! without the revocation, decisions without skew margins, and a deadline counted from
//! receipt.
//!
//! Runs: two hosts exhaustively (BFS) to `DEPTH` steps and random deep walks of two and three
//! hosts in the test command; bounded depth-first searches of two and three hosts and a long
//! three-host walk as long runs (`--ignored`). The searches need an optimised build, so they
//! are ignored in debug builds; the test command runs them with
//! `cargo test --release -p tenure --test lease_model`.

use stateright::{Checker, Model, Property};
use std::collections::BTreeMap;
use tenure::ids::{GroupId, HostId, Incarnation};
use tenure::lease::host::HostRecord;
use tenure::lease::protocol::{
    acquire_decision, answer, grant_state, renew_decision, revoke_decision, self_renewal_due,
    AcquirePlan, GrantState, HeartbeatPlan, ReleasePlan,
};
use tenure::lease::record::{Epoch, LeaseRecord, Member};
use tenure::lease::store::{DeleteExpect, DeletePlan};
use tenure::lease::LeaseConfig;

const T0: u64 = 100;
/// Host names; a model uses the first `LeaseModel::hosts` of them (priorities n, n-1, ..).
const HOSTS: [&str; 3] = ["a", "b", "c"];
const GROUPS: [&str; 2] = ["g0", "g1"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mutant {
    None,
    /// A contender acquires a lapsed holder's group without revoking the holder first.
    AcquireWithoutRevocation,
    /// The decisions assume no clock error (skew 0) while clocks still differ by one tick.
    NoSkewMargins,
    /// The host counts its window from when the answer arrived, not when it asked.
    DeadlineFromReceipt,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Answer {
    writable: bool,
    valid_for: u64,
    epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Stage {
    Sent,
    /// Processed: the acquisitions still to write, the check's reading of the records.
    Processed {
        now: u64,
        plans: Vec<(usize, AcquirePlan)>,
        hosts: BTreeMap<HostId, HostRecord>,
    },
    Answered(Vec<Answer>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Check {
    t_sent: u64,
    heartbeat: bool,
    incarnation: u8,
    stage: Stage,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Agent {
    crashed: bool,
    incarnation: u8,
    checks: Vec<Check>,
    /// Per group: (deadline in true time, epoch) while the gate is open.
    gates: [Option<(u64, u64)>; 2],
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct State {
    t: u64,
    hosts: BTreeMap<HostId, HostRecord>,
    groups: [LeaseRecord; 2],
    agents: Vec<Agent>,
    renewer_up: bool,
    /// Faults left to inject (bounded so the space stays finite).
    crashes: u8,
    restarts: u8,
    deletes: u8,
    /// Highest group epoch ever seen, per group, and whether one ever went back.
    max_group_epoch: [u64; 2],
    group_epoch_went_back: bool,
    host_epoch_went_back: bool,
    /// Per group: epoch -> the host whose gate opened at it.
    owners: [BTreeMap<u64, usize>; 2],
    two_owners_of_an_epoch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Action {
    Tick,
    Send(usize, bool),
    Process(usize, usize, u64),
    Commit(usize, usize),
    Receive(usize, usize),
    Lose(usize, usize),
    Renew(u64),
    Release(usize, usize, u64),
    Crash(usize),
    Restart(usize),
    Delete(usize, u64),
    Create(usize),
}

struct LeaseModel {
    cfg: LeaseConfig,
    /// How many hosts (members of both groups): 2 in the test command, 3 in the long runs.
    hosts: usize,
    max_t: u64,
    mutant: Mutant,
    renewer: &'static [bool],
}

fn host_id(i: usize) -> HostId {
    HostId::parse(HOSTS[i]).expect("valid host id")
}

fn group_id(g: usize) -> GroupId {
    GroupId::parse(GROUPS[g]).expect("valid group id")
}

fn incarnation(n: u8) -> Incarnation {
    Incarnation::parse(&format!("i{n}")).expect("valid incarnation")
}

/// The first `hosts` hosts, one per zone, the first with the highest priority.
fn members(hosts: usize) -> BTreeMap<HostId, Member> {
    (0..hosts)
        .map(|i| {
            (
                host_id(i),
                Member::new(format!("az{i}"), (hosts - i) as u32),
            )
        })
        .collect()
}

fn writable(s: &State, i: usize, g: usize) -> bool {
    let a = &s.agents[i];
    !a.crashed && a.gates[g].is_some_and(|(deadline, _)| s.t < deadline)
}

impl LeaseModel {
    fn new(mutant: Mutant, ticks: u64, renewer: &'static [bool]) -> Self {
        Self::with_hosts(2, mutant, ticks, renewer)
    }

    fn with_hosts(hosts: usize, mutant: Mutant, ticks: u64, renewer: &'static [bool]) -> Self {
        assert!((2..=HOSTS.len()).contains(&hosts), "2 to 3 hosts");
        Self {
            hosts,
            // lease 9, renew every 3, skew 2, heartbeat timeout 2, poll 1: the smallest timing
            // the rules accept with a skew of two ticks (with one tick, whole-tick clocks
            // leave a margin of their own and hide a missing skew margin).
            cfg: LeaseConfig::new(9, 3, 2, 2, 1).expect("valid model timing"),
            max_t: T0 + ticks,
            mutant,
            renewer,
        }
    }

    /// The timing the decisions see: the shipped one, or the mutant's without skew.
    fn decision_cfg(&self) -> LeaseConfig {
        match self.mutant {
            Mutant::NoSkewMargins => LeaseConfig {
                clock_skew_ms: 0,
                ..self.cfg
            },
            _ => self.cfg,
        }
    }

    /// What lease-check does before the acquisitions' writes (see the module doc).
    fn process(&self, s: &mut State, i: usize, check: &Check, now: u64) -> Stage {
        let cfg = self.decision_cfg();
        let me_id = host_id(i);
        let inc = incarnation(check.incarnation);
        if check.heartbeat {
            let plan = HeartbeatPlan {
                host: me_id.clone(),
                healthy: true,
                incarnation: inc.clone(),
                now,
            };
            let current = s.hosts.get(&me_id);
            let next = if plan.condition_holds(current) {
                plan.apply(current)
            } else {
                let recorded = current.and_then(|h| h.incarnation.clone());
                match recorded {
                    Some(r) => plan.change_from(r).apply(current),
                    None => plan.apply(current),
                }
            };
            s.hosts.insert(me_id.clone(), next);
        }
        // Keep its own lease.
        let me = s
            .hosts
            .get(&me_id)
            .cloned()
            .unwrap_or_else(|| HostRecord::absent(me_id.clone()));
        if me.incarnation.as_ref() == Some(&inc) && me.incarnation_changed.is_some() {
            if let Some(plan) = revoke_decision(&me, now, &cfg) {
                if plan.condition_holds(Some(&me)) {
                    let revoked = plan.apply(Some(&me));
                    // The heartbeat after the revocation, so a renewal may follow.
                    let hb = HeartbeatPlan {
                        host: me_id.clone(),
                        healthy: true,
                        incarnation: inc.clone(),
                        now: now + 1,
                    };
                    s.hosts.insert(me_id.clone(), hb.apply(Some(&revoked)));
                }
            }
        }
        let me = s.hosts.get(&me_id).cloned();
        if let Some(me) = me.filter(|m| m.speaks_for(&inc) && self_renewal_due(m, now, &cfg)) {
            if let Ok(plan) = renew_decision(&me, now, &cfg) {
                if plan.condition_holds(Some(&me)) {
                    s.hosts.insert(me_id.clone(), plan.apply(&me));
                }
            }
        }
        // Revoke lapsed holders (the mutant skips it and acquires anyway).
        for g in 0..GROUPS.len() {
            let group = &s.groups[g];
            let holder = group.holder.clone();
            let Some(holder) = holder else { continue };
            let holder_host = s.hosts.get(&holder).cloned();
            if let GrantState::Lapsed { .. } = grant_state(group, holder_host.as_ref(), now, &cfg) {
                if self.mutant == Mutant::AcquireWithoutRevocation {
                    continue;
                }
                let record = holder_host.unwrap_or_else(|| HostRecord::absent(holder.clone()));
                if let Some(plan) = revoke_decision(&record, now, &cfg) {
                    if plan.condition_holds(s.hosts.get(&holder)) {
                        let next = plan.apply(s.hosts.get(&holder));
                        s.hosts.insert(holder, next);
                    }
                }
            }
        }
        // Decide the acquisitions on this reading.
        let view = s.hosts.clone();
        let mut plans = Vec::new();
        for g in 0..GROUPS.len() {
            let group = &s.groups[g];
            if group.deleted {
                continue;
            }
            let mut decision_view = view.clone();
            if self.mutant == Mutant::AcquireWithoutRevocation {
                // Treat a lapsed holder as if it had been revoked, without writing it.
                if let Some(holder) = &group.holder {
                    let holder_host = view.get(holder);
                    if let GrantState::Lapsed { .. } = grant_state(group, holder_host, now, &cfg) {
                        let mut pretend = holder_host
                            .cloned()
                            .unwrap_or_else(|| HostRecord::absent(holder.clone()));
                        pretend.epoch = pretend.epoch.next();
                        decision_view.insert(holder.clone(), pretend);
                    }
                }
            }
            if let Ok(plan) = acquire_decision(group, &decision_view, &me_id, &inc, now, &cfg) {
                plans.push((g, plan));
            }
        }
        Stage::Processed {
            now,
            plans,
            hosts: view,
        }
    }

    /// The acquisitions' writes, then the answers from the check's own reading.
    fn commit(
        &self,
        s: &mut State,
        i: usize,
        inc: &Incarnation,
        now: u64,
        plans: &[(usize, AcquirePlan)],
        hosts: &BTreeMap<HostId, HostRecord>,
    ) -> Vec<Answer> {
        let cfg = self.decision_cfg();
        let mut seen: Vec<LeaseRecord> = s.groups.to_vec();
        for (g, plan) in plans {
            if plan.condition_holds(&s.groups[*g]) {
                let next = plan.apply(&s.groups[*g]);
                if next.epoch.0 != s.max_group_epoch[*g] + 1 {
                    s.group_epoch_went_back = true;
                }
                s.max_group_epoch[*g] = s.max_group_epoch[*g].max(next.epoch.0);
                s.groups[*g] = next.clone();
                seen[*g] = next;
            }
        }
        (0..GROUPS.len())
            .map(|g| {
                let a = answer(&seen[g], hosts, &host_id(i), inc, now, &cfg);
                Answer {
                    writable: a.writable && !seen[g].deleted,
                    valid_for: a.valid_for_ms,
                    epoch: a.epoch.0,
                }
            })
            .collect()
    }
}

/// Bookkeeping no decision reads (`updated_at_ms`, and `version` beyond "written at all") is
/// set to one value, so states that differ only in it are one state for the checker.
fn normalise(s: &mut State) {
    for h in s.hosts.values_mut() {
        h.updated_at_ms = 0;
        h.version = 1;
    }
    for g in s.groups.iter_mut() {
        g.updated_at_ms = 0;
        g.version = 1;
    }
    let hosts = &mut s.hosts;
    for agent in s.agents.iter_mut() {
        for check in agent.checks.iter_mut() {
            if let Stage::Processed { hosts: view, .. } = &mut check.stage {
                for h in view.values_mut() {
                    h.updated_at_ms = 0;
                    h.version = 1;
                }
            }
        }
    }
    let _ = hosts;
}

impl Model for LeaseModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        self.renewer
            .iter()
            .map(|&renewer_up| State {
                t: T0,
                hosts: BTreeMap::new(),
                groups: [0, 1]
                    .map(|g| LeaseRecord::new_group(group_id(g), 9, members(self.hosts), T0)),
                agents: vec![Agent::default(); self.hosts],
                renewer_up,
                crashes: 1,
                restarts: 1,
                deletes: 1,
                max_group_epoch: [0, 0],
                group_epoch_went_back: false,
                host_epoch_went_back: false,
                owners: [BTreeMap::new(), BTreeMap::new()],
                two_owners_of_an_epoch: false,
            })
            .collect()
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if s.t < self.max_t {
            actions.push(Action::Tick);
        }
        for (i, agent) in s.agents.iter().enumerate() {
            if agent.crashed {
                if s.restarts > 0 {
                    actions.push(Action::Restart(i));
                }
                continue;
            }
            // Two checks in flight, heartbeats and reads.
            if agent.checks.len() < 2 {
                actions.push(Action::Send(i, true));
                actions.push(Action::Send(i, false));
            }
            for (c, check) in agent.checks.iter().enumerate() {
                match check.stage {
                    Stage::Sent => {
                        for offset in 0..=self.cfg.clock_skew_ms {
                            actions.push(Action::Process(i, c, offset));
                        }
                    }
                    Stage::Processed { .. } => actions.push(Action::Commit(i, c)),
                    Stage::Answered(_) => actions.push(Action::Receive(i, c)),
                }
                actions.push(Action::Lose(i, c));
            }
            if agent.checks.is_empty() {
                for g in 0..GROUPS.len() {
                    if agent.gates[g].is_some() {
                        actions.push(Action::Release(i, g, 0));
                    }
                }
            }
            if s.crashes > 0 {
                actions.push(Action::Crash(i));
            }
            if s.restarts > 0 {
                actions.push(Action::Restart(i));
            }
        }
        if s.renewer_up {
            for offset in 0..=self.cfg.clock_skew_ms {
                actions.push(Action::Renew(offset));
            }
        }
        for g in 0..GROUPS.len() {
            if s.groups[g].deleted {
                actions.push(Action::Create(g));
            } else if s.deletes > 0 {
                actions.push(Action::Delete(g, 0));
            }
        }
    }

    fn next_state(&self, s: &State, action: Action) -> Option<State> {
        let mut n = s.clone();
        let cfg = self.decision_cfg();
        let epochs_before: BTreeMap<HostId, Epoch> =
            s.hosts.iter().map(|(h, r)| (h.clone(), r.epoch)).collect();
        match action {
            Action::Tick => n.t += 1,
            Action::Send(i, heartbeat) => {
                let incarnation = n.agents[i].incarnation;
                n.agents[i].checks.push(Check {
                    t_sent: s.t,
                    heartbeat,
                    incarnation,
                    stage: Stage::Sent,
                });
            }
            Action::Process(i, c, offset) => {
                let check = n.agents[i].checks[c].clone();
                let stage = self.process(&mut n, i, &check, s.t + offset);
                n.agents[i].checks[c].stage = stage;
            }
            Action::Commit(i, c) => {
                let check = n.agents[i].checks[c].clone();
                let Stage::Processed { now, plans, hosts } = &check.stage else {
                    return None;
                };
                let answers = self.commit(
                    &mut n,
                    i,
                    &incarnation(check.incarnation),
                    *now,
                    plans,
                    hosts,
                );
                n.agents[i].checks[c].stage = Stage::Answered(answers);
            }
            Action::Receive(i, c) => {
                let check = n.agents[i].checks.remove(c);
                let Stage::Answered(answers) = check.stage else {
                    return None;
                };
                if check.incarnation != n.agents[i].incarnation {
                    // An answer to the previous process: nobody is there to use it.
                    return Some(n);
                }
                let start = match self.mutant {
                    Mutant::DeadlineFromReceipt => s.t,
                    _ => check.t_sent,
                };
                for (g, a) in answers.iter().enumerate() {
                    if a.writable && a.valid_for > 0 {
                        n.agents[i].gates[g] = Some((start + a.valid_for, a.epoch));
                        let owner = *n.owners[g].entry(a.epoch).or_insert(i);
                        if owner != i {
                            n.two_owners_of_an_epoch = true;
                        }
                    } else {
                        n.agents[i].gates[g] = None;
                    }
                }
            }
            Action::Lose(i, c) => {
                n.agents[i].checks.remove(c);
            }
            Action::Renew(offset) => {
                let now = s.t + offset;
                for (h, record) in s.hosts.iter() {
                    if let Ok(plan) = renew_decision(record, now, &cfg) {
                        if plan.condition_holds(n.hosts.get(h)) {
                            let next = plan.apply(&n.hosts[h]);
                            n.hosts.insert(h.clone(), next);
                        }
                    }
                }
            }
            Action::Release(i, g, offset) => {
                // Close the gate first, then release (no check of this host in flight).
                let (_, epoch) = n.agents[i].gates[g].take()?;
                let plan = ReleasePlan {
                    host: host_id(i),
                    epoch: Epoch(epoch),
                    now: s.t + offset,
                };
                if plan.condition_holds(&n.groups[g]) {
                    n.groups[g] = plan.apply(&n.groups[g]);
                }
            }
            Action::Crash(i) => {
                n.crashes -= 1;
                n.agents[i].crashed = true;
                n.agents[i].gates = [None, None];
            }
            Action::Restart(i) => {
                n.restarts -= 1;
                let next = n.agents[i].incarnation + 1;
                n.agents[i] = Agent {
                    incarnation: next,
                    ..Agent::default()
                };
            }
            Action::Delete(g, offset) => {
                let now = s.t + offset;
                let group = &n.groups[g];
                let holder_host = group.holder.as_ref().and_then(|h| n.hosts.get(h));
                let expect = match grant_state(group, holder_host, now, &cfg) {
                    GrantState::Free => DeleteExpect::Free,
                    GrantState::Revoked { .. } => {
                        DeleteExpect::RevokedGrant(group.holder_host_epoch?)
                    }
                    _ => return None,
                };
                let plan = DeletePlan {
                    seen_epoch: group.epoch,
                    expect,
                    now,
                };
                if !plan.condition_holds(group) {
                    return None;
                }
                n.deletes -= 1;
                n.groups[g] = plan.apply(group);
            }
            Action::Create(g) => {
                // As the store's put_group: members back, epoch kept, free since now.
                let mut next = n.groups[g].clone();
                next.deleted = false;
                next.members = members(self.hosts);
                next.free_since_ms = Some(s.t);
                next.version += 1;
                n.groups[g] = next;
            }
        }
        for (h, before) in epochs_before {
            if n.hosts.get(&h).is_none_or(|r| r.epoch < before) {
                n.host_epoch_went_back = true;
            }
        }
        normalise(&mut n);
        Some(n)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("at most one host may write a group", |_, s: &State| {
                (0..GROUPS.len())
                    .all(|g| (0..s.agents.len()).filter(|&i| writable(s, i, g)).count() <= 1)
            }),
            Property::always(
                "group epochs rise by one and never go back",
                |_, s: &State| !s.group_epoch_went_back && !s.two_owners_of_an_epoch,
            ),
            Property::always("host epochs never go back", |_, s: &State| {
                !s.host_epoch_went_back
            }),
            Property::sometimes("someone becomes primary", |_, s: &State| {
                (0..s.agents.len()).any(|i| writable(s, i, 0))
            }),
        ]
    }
}

/// Every interleaving up to `depth` steps, breadth first (exhaustive to the depth).
fn check(
    mutant: Mutant,
    ticks: u64,
    depth: usize,
    renewer: &'static [bool],
) -> impl Checker<LeaseModel> {
    LeaseModel::new(mutant, ticks, renewer)
        .checker()
        .threads(2)
        .target_max_depth(depth)
        .spawn_bfs()
        .join()
}

fn report(name: &str, checker: &impl Checker<LeaseModel>, started: std::time::Instant) {
    eprintln!(
        "lease model v2 {name}: {} states ({} unique) in {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        started.elapsed().as_secs_f64()
    );
}

/// Every interleaving of up to `DEPTH` steps of two hosts in two groups (ticks, two
/// checks in flight, processing at each clock offset, commits, receipts, losses, renewals,
/// releases, a crash, a restart, a delete and re-create), the renewer up and down.
const DEPTH: usize = 8;

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "exhaustive: run with --release (infra/test.sh does)"
)]
fn the_shipped_protocol_never_has_two_writers() {
    let started = std::time::Instant::now();
    let checker = check(Mutant::None, DEPTH as u64, DEPTH, &[false, true]);
    report(&format!("BFS to depth {DEPTH}"), &checker, started);
    checker.assert_properties();
}

/// Random walks through the whole model, every fault enabled, far deeper than the exhaustive
/// search: lapses, revocations, takeovers, restarts, deletes, the renewer up and down. Checks
/// the same properties on every state it visits, for `seconds`.
fn simulate(hosts: usize, seconds: u64, seed: u64) {
    let started = std::time::Instant::now();
    let checker = LeaseModel::with_hosts(hosts, Mutant::None, 40, &[false, true])
        .checker()
        .threads(2)
        .target_max_depth(400)
        .timeout(std::time::Duration::from_secs(seconds))
        .spawn_simulation(seed, stateright::UniformChooser)
        .join();
    report(
        &format!("{hosts} hosts, simulation, walks to depth 400 over 40 ticks"),
        &checker,
        started,
    );
    assert_safe(&checker);
    assert!(checker.discovery("someone becomes primary").is_some());
}

/// The safety properties hold on every state the checker visited (with the path if not).
fn assert_safe(checker: &impl Checker<LeaseModel>) {
    for name in [
        "at most one host may write a group",
        "group epochs rise by one and never go back",
        "host epochs never go back",
    ] {
        assert!(
            checker.discovery(name).is_none(),
            "{name}: {:?}",
            checker.discovery(name).map(|p| p.into_actions())
        );
    }
}

#[test]
#[cfg_attr(debug_assertions, ignore = "run with --release (infra/test.sh does)")]
fn random_deep_walks_never_find_two_writers() {
    simulate(2, tenure_depth("LEASE_MODEL_SIMULATION_S", 30) as u64, 7);
}

#[test]
#[cfg_attr(debug_assertions, ignore = "run with --release (infra/test.sh does)")]
fn random_deep_walks_of_three_hosts_never_find_two_writers() {
    simulate(3, tenure_depth("LEASE_MODEL_SIMULATION_S", 30) as u64, 11);
}

/// The long run for three hosts (`--ignored`): random walks for `LEASE_MODEL_LONG_S` seconds.
#[test]
#[ignore = "long run: cargo test --release -p tenure --test lease_model -- --ignored"]
fn three_hosts_long_simulation() {
    simulate(3, tenure_depth("LEASE_MODEL_LONG_S", 600) as u64, 13);
}

/// The long run for two hosts (`--ignored`): depth first, deeper than BFS fits in memory here
/// (see `bounded_depth_first_search`).
#[test]
#[ignore = "long run: cargo test --release -p tenure --test lease_model -- --ignored"]
fn the_shipped_protocol_never_has_two_writers_deeper() {
    bounded_depth_first_search(2, tenure_depth("LEASE_MODEL_DEPTH", 13));
}

/// The long run for three hosts (`--ignored`), depth first to `LEASE_MODEL_DFS_DEPTH` steps.
#[test]
#[ignore = "long run: cargo test --release -p tenure --test lease_model -- --ignored"]
fn three_hosts_bounded_depth_first_search() {
    bounded_depth_first_search(3, tenure_depth("LEASE_MODEL_DFS_DEPTH", 11));
}

/// Depth first to `depth` steps, every fault enabled, the renewer up and down. Depth first
/// keeps only fingerprints of the states it has seen (BFS keeps whole states queued and runs
/// out of memory a level deeper); the price is that a state first met deep is not expanded
/// again when met shallower, so this is a bounded search, not an exhaustive one to the depth.
fn bounded_depth_first_search(hosts: usize, depth: usize) {
    let started = std::time::Instant::now();
    let checker = LeaseModel::with_hosts(hosts, Mutant::None, depth as u64, &[false, true])
        .checker()
        .threads(2)
        .target_max_depth(depth)
        .spawn_dfs()
        .join();
    report(
        &format!("{hosts} hosts, DFS to depth {depth}"),
        &checker,
        started,
    );
    checker.assert_properties();
}

fn tenure_depth(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `script` on the model with `mutant` from its initial state (renewer down), and says
/// whether some state along it had two writers of one group.
fn two_writers_on(mutant: Mutant, script: &[Action]) -> bool {
    let model = LeaseModel::new(mutant, 40, &[false]);
    let mut s = model.init_states().remove(0);
    let mut violated = false;
    for action in script {
        s = model
            .next_state(&s, action.clone())
            .unwrap_or_else(|| panic!("{action:?} is not enabled in {s:?}"));
        violated |= (0..GROUPS.len())
            .any(|g| (0..s.agents.len()).filter(|&i| writable(&s, i, g)).count() > 1);
    }
    violated
}

/// One full check of host `i`, processed at clock offset `offset`.
fn full_check(i: usize, offset: u64) -> Vec<Action> {
    vec![
        Action::Send(i, true),
        Action::Process(i, 0, offset),
        Action::Commit(i, 0),
        Action::Receive(i, 0),
    ]
}

/// a takes both groups at T0; b checks every tick (keeping its own lease) on a clock
/// `b_offset` ahead; a is silent; `at(t)` may add steps at each tick.
fn schedule(b_offset: u64, ticks: u64, mut at: impl FnMut(u64) -> Vec<Action>) -> Vec<Action> {
    let mut steps = full_check(0, 0);
    steps.extend(full_check(1, 0));
    for t in 1..=ticks {
        steps.push(Action::Tick);
        steps.extend(at(t));
        steps.extend(full_check(1, b_offset));
    }
    steps
}

// Each mutant is also caught on a written-out schedule, the shortest story of its bug: the
// shipped protocol keeps one writer on the very same steps. (The random walks find each one
// too, `random_deep_walks_find_every_mutant`; a breadth-first search of the mutants does not
// fit in memory here at the depth a takeover needs.)

#[test]
fn a_deadline_counted_from_receipt_is_caught() {
    // a's answer is delayed 5 ticks: counted from receipt it outlives a's lease.
    let mut steps = full_check(0, 0);
    steps.truncate(3); // sent, processed, committed: the reply is in flight
    steps.extend(full_check(1, 0));
    for t in 1..=12u64 {
        steps.push(Action::Tick);
        if t == 5 {
            steps.push(Action::Receive(0, 0));
        }
        steps.extend(full_check(1, if t >= 10 { 2 } else { 0 }));
    }
    assert!(two_writers_on(Mutant::DeadlineFromReceipt, &steps));
    assert!(!two_writers_on(Mutant::None, &steps));
}

#[test]
fn decisions_without_skew_margins_are_caught() {
    // b's clock runs 2 ahead of a's: without margins b revokes and takes over while a's
    // window, computed on a clock 2 behind, is still open.
    let steps = schedule(2, 12, |_| Vec::new());
    assert!(two_writers_on(Mutant::NoSkewMargins, &steps));
    assert!(!two_writers_on(Mutant::None, &steps));
}

#[test]
fn acquiring_without_the_revocation_is_caught() {
    // a pauses past its lease; b reads it lapsed and decides to take g0 and g1; a resumes,
    // renews its own lease and is answered writable; then b's acquisitions land.
    let mut steps = schedule(0, 11, |_| Vec::new());
    steps.extend([
        Action::Tick,
        Action::Send(1, true),
        Action::Process(1, 0, 0),
    ]);
    steps.extend(full_check(0, 0));
    steps.extend([Action::Commit(1, 0), Action::Receive(1, 0)]);
    assert!(two_writers_on(Mutant::AcquireWithoutRevocation, &steps));
    assert!(!two_writers_on(Mutant::None, &steps));
}

/// One round of a fair schedule: every live host checks (send, process on a clock one tick
/// ahead, commit, receive), then time advances a tick.
fn fair_round(model: &LeaseModel, s: &mut State) {
    let step = |s: &State, a: Action| model.next_state(s, a).expect("enabled");
    for i in 0..s.agents.len() {
        if !s.agents[i].crashed {
            *s = step(s, Action::Send(i, true));
            *s = step(s, Action::Process(i, 0, 1));
            *s = step(s, Action::Commit(i, 0));
            *s = step(s, Action::Receive(i, 0));
        }
    }
    *s = step(s, Action::Tick);
}

/// Runs fair rounds until host `i` may write both groups; fails if that is later than `bound`.
fn rounds_until_primary_of_both(model: &LeaseModel, s: &mut State, i: usize, bound: u64) {
    while !(writable(s, i, 0) && writable(s, i, 1)) {
        assert!(s.t <= bound, "host {i} did not take over by {bound}: {s:?}");
        fair_round(model, s);
    }
}

/// Liveness under a fair schedule, the renewer down: after `a` becomes primary of both groups
/// and crashes, `b` holds both within lease + skew + poll (+ one tick for the round) of `a`'s
/// last heartbeat.
#[test]
fn with_fair_scheduling_a_survivor_takes_over_within_the_bound() {
    let model = LeaseModel::new(Mutant::None, 60, &[false]);
    let mut s = model.init_states().remove(0);
    fair_round(&model, &mut s);
    assert!(
        writable(&s, 0, 0) && writable(&s, 0, 1),
        "a (priority 2) is primary of both after one round: {s:?}"
    );
    for _ in 0..8 {
        fair_round(&model, &mut s);
        assert!(
            writable(&s, 0, 0) && writable(&s, 0, 1),
            "a keeps both with the renewer down: {s:?}"
        );
    }
    let last_heartbeat = s.t - 1;
    s = model.next_state(&s, Action::Crash(0)).expect("enabled");
    let c = model.cfg;
    let bound = last_heartbeat + c.lease_ms + c.clock_skew_ms + c.poll_interval_ms + 1;
    rounds_until_primary_of_both(&model, &mut s, 1, bound);
    assert_eq!(
        s.hosts[&host_id(0)].epoch,
        Epoch(1),
        "one revocation for both groups"
    );
}

/// Three hosts, the renewer up: `a` crashes, `b` (next in priority) takes both groups within
/// the bound and `c` stays secondary; then `b` crashes and `c` takes both within the bound.
/// Each failover revokes the dead host once, and the epochs rise by one per acquisition.
#[test]
fn with_three_hosts_each_survivor_takes_over_in_turn() {
    let model = LeaseModel::with_hosts(3, Mutant::None, 80, &[true]);
    let mut s = model.init_states().remove(0);
    s.crashes = 2;
    let c = model.cfg;
    let takeover = c.lease_ms + c.clock_skew_ms + c.poll_interval_ms + 1;
    let renew = |s: &mut State| {
        *s = model.next_state(s, Action::Renew(0)).expect("enabled");
    };
    for _ in 0..6 {
        renew(&mut s);
        fair_round(&model, &mut s);
    }
    assert!(
        writable(&s, 0, 0) && writable(&s, 0, 1),
        "a holds both: {s:?}"
    );
    for dead in [0, 1] {
        let last_heartbeat = s.t - 1;
        s = model.next_state(&s, Action::Crash(dead)).expect("enabled");
        let heir = dead + 1;
        while !(writable(&s, heir, 0) && writable(&s, heir, 1)) {
            assert!(
                s.t <= last_heartbeat + takeover,
                "host {heir} did not take over from {dead} in time: {s:?}"
            );
            renew(&mut s);
            fair_round(&model, &mut s);
            assert!(
                (0..2).all(|g| (0..3).filter(|&i| writable(&s, i, g)).count() <= 1),
                "two writers: {s:?}"
            );
            if dead == 0 {
                assert!(
                    !writable(&s, 2, 0) && !writable(&s, 2, 1),
                    "c stays secondary"
                );
            }
        }
        assert_eq!(
            s.hosts[&host_id(dead)].epoch,
            Epoch(1),
            "one revocation of {dead}"
        );
        for g in 0..2 {
            assert_eq!(
                s.groups[g].epoch,
                Epoch(heir as u64 + 1),
                "epoch per acquisition"
            );
            assert_eq!(s.groups[g].holder, Some(host_id(heir)));
        }
    }
}

/// The random walks have teeth: with every fault enabled they find each mutant's two
/// writers, at two and at three hosts, well within the time the shipped protocol is walked
/// for. Stops at the first failure and reports how long the search took.
#[test]
#[cfg_attr(debug_assertions, ignore = "run with --release (infra/test.sh does)")]
fn random_deep_walks_find_every_mutant() {
    for hosts in [2, 3] {
        for mutant in [
            Mutant::NoSkewMargins,
            Mutant::DeadlineFromReceipt,
            Mutant::AcquireWithoutRevocation,
        ] {
            let started = std::time::Instant::now();
            let checker = LeaseModel::with_hosts(hosts, mutant, 40, &[false, true])
                .checker()
                .threads(2)
                .target_max_depth(400)
                .finish_when(stateright::HasDiscoveries::AnyOf(
                    ["at most one host may write a group"].into(),
                ))
                // The search stops at the first discovery (about 16 M states, 30 s on an idle
                // 2-core machine for the slowest mutant); the limit only bounds a search that
                // finds nothing. 60 s was too tight while the binary's other walks share the
                // cores: one CI run walked 15.2 M states in 60 s and stopped short.
                .timeout(std::time::Duration::from_secs(240))
                .spawn_simulation(5, stateright::UniformChooser)
                .join();
            report(
                &format!("{hosts} hosts, {mutant:?}, simulation"),
                &checker,
                started,
            );
            assert!(
                checker
                    .discovery("at most one host may write a group")
                    .is_some(),
                "{mutant:?} not found by random walks of {hosts} hosts in 60 s"
            );
        }
    }
}
