//! Model checking the lease protocol with stateright, on the decision functions `tenure::lease`
//! ships (`protocol::acquire_decision`, `answer`, `renew_decision` and the plans' own
//! `condition_holds`/`apply`, which are the store's conditions), not a copy of them.
//!
//! The model: two hosts (priorities 2 and 1), one lease item written linearizably, a renewer.
//! Time is discrete; true time `t` advances by `Tick`. Every function instance reads a clock
//! `t + offset` with the offset chosen by the checker from `0..=clock_skew_ms` (so any two
//! instances differ by at most the skew, DESIGN's assumption). A check is three steps — the
//! host sends (records `t_sent` on its monotonic clock, which runs at true rate), the function
//! processes (heartbeat, maybe acquire, answer), the host receives (`deadline = t_sent +
//! valid_for`) — and the request or the reply may be lost, or delayed arbitrarily (the checker
//! interleaves other steps). A host may crash (once per run), step down (close the gate, then
//! release), or simply not be scheduled (a pause). A host may write while `t < deadline`.
//!
//! Properties: at any true time at most one host may write; each epoch belongs to one host and
//! a new grant never carries a lower epoch than an earlier grant; someone becomes primary
//! (reachability, and a fair-schedule run below). Mutants must be caught: a deadline counted
//! from receipt instead of send, and a protocol with no skew margins at all.
//!
//! The exhaustive runs take about a minute in release and far longer unoptimised, so they are
//! ignored in debug builds; the test command runs them with
//! `cargo test --release -p tenure --test lease_model`.
//!
//! The model found one real subtlety while it was being written: a host must not release while
//! one of its checks is still in flight, or that check's writable answer could reopen its gate
//! after another host acquired. The agent's poller is sequential (it releases only after the
//! in-flight check returned or timed out, and an answer arriving while stepping down does not
//! reopen the gate), and the model encodes exactly that.

use stateright::{Checker, Model, Property};
use std::collections::BTreeMap;
use tenure::ids::{GroupId, HostId};
use tenure::lease::protocol::{
    acquire_decision, answer, renew_decision, AcquireDecision, Heartbeat, ReleasePlan,
    RenewDecision,
};
use tenure::lease::record::{LeaseRecord, Member};
use tenure::lease::LeaseConfig;

const T0: u64 = 100;
const HOSTS: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mutant {
    None,
    /// The host counts its window from when the answer arrived, not when it asked.
    DeadlineFromReceipt,
    /// No clock-skew margin on either side (answer and acquisition).
    NoSkewMargins,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Reply {
    t_sent: u64,
    writable: bool,
    valid_for: u64,
    epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Host {
    crashed: bool,
    request: Option<u64>,
    reply: Option<Reply>,
    /// (deadline in true time, epoch)
    grant: Option<(u64, u64)>,
    releasing: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct State {
    t: u64,
    record: LeaseRecord,
    hosts: Vec<Host>,
    crashes: u8,
    /// epoch -> host index, for every grant a host received.
    owners: BTreeMap<u64, usize>,
    /// Highest epoch granted so far, and whether a grant ever went below it.
    max_granted: u64,
    epoch_went_back: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Action {
    Tick,
    Send(usize),
    Process(usize, u64),
    LoseRequest(usize),
    Receive(usize),
    LoseReply(usize),
    Crash(usize),
    StepDown(usize),
    Release(usize, u64),
    Renew(u64),
}

struct LeaseModel {
    cfg: LeaseConfig,
    max_t: u64,
    mutant: Mutant,
}

impl LeaseModel {
    fn new(mutant: Mutant, ticks: u64) -> Self {
        Self {
            // lease 9, renew every 3, skew 2, heartbeat timeout 2, poll 1: the smallest timing
            // DESIGN's rules accept with a skew of 2 ticks, so a lapse and a takeover fit in
            // few steps.
            cfg: LeaseConfig::new(9, 3, 2, 2, 1).expect("valid model timing"),
            max_t: T0 + ticks,
            mutant,
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

    fn host_id(i: usize) -> HostId {
        HostId::parse(HOSTS[i]).expect("valid host id")
    }
}

fn writable(state: &State, i: usize) -> bool {
    let h = &state.hosts[i];
    !h.crashed && h.grant.is_some_and(|(deadline, _)| state.t < deadline)
}

impl Model for LeaseModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let members: BTreeMap<HostId, Member> = HOSTS
            .iter()
            .enumerate()
            .map(|(i, _)| {
                (
                    Self::host_id(i),
                    Member::new(format!("az{i}"), 2 - i as u32),
                )
            })
            .collect();
        let group = GroupId::parse("g").expect("valid group id");
        vec![State {
            t: T0,
            record: LeaseRecord::new_group(group, self.cfg.lease_ms, members, T0),
            hosts: vec![Host::default(); HOSTS.len()],
            crashes: 0,
            owners: BTreeMap::new(),
            max_granted: 0,
            epoch_went_back: false,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if s.t < self.max_t {
            actions.push(Action::Tick);
        }
        let offsets = 0..=self.cfg.clock_skew_ms;
        for (i, h) in s.hosts.iter().enumerate() {
            if h.crashed {
                continue;
            }
            if h.request.is_none() && h.reply.is_none() && h.releasing.is_none() {
                actions.push(Action::Send(i));
            }
            if h.request.is_some() {
                offsets
                    .clone()
                    .for_each(|o| actions.push(Action::Process(i, o)));
                actions.push(Action::LoseRequest(i));
            }
            if h.reply.is_some() {
                actions.push(Action::Receive(i));
                actions.push(Action::LoseReply(i));
            }
            if writable(s, i) && h.releasing.is_none() {
                actions.push(Action::StepDown(i));
            }
            // The agent's poller is sequential: it releases only once the check it had in
            // flight has come back (or timed out, i.e. the reply was dropped); that answer,
            // arriving while stepping down, does not reopen the gate.
            if h.releasing.is_some() && h.request.is_none() && h.reply.is_none() {
                offsets
                    .clone()
                    .for_each(|o| actions.push(Action::Release(i, o)));
            }
            if s.crashes == 0 {
                actions.push(Action::Crash(i));
            }
        }
        if s.record.holder.is_some() {
            offsets.for_each(|o| actions.push(Action::Renew(o)));
        }
    }

    fn next_state(&self, s: &State, action: Action) -> Option<State> {
        let mut n = s.clone();
        let cfg = self.decision_cfg();
        match action {
            Action::Tick => n.t += 1,
            Action::Send(i) => n.hosts[i].request = Some(s.t),
            Action::LoseRequest(i) => n.hosts[i].request = None,
            Action::LoseReply(i) => n.hosts[i].reply = None,
            Action::Process(i, offset) => {
                let t_sent = n.hosts[i].request.take()?;
                let now = s.t + offset;
                let host = Self::host_id(i);
                // The check as lease-check runs it: heartbeat, maybe acquire, answer.
                let hb = Heartbeat {
                    host: host.clone(),
                    healthy: true,
                    now,
                };
                if hb.condition_holds(&n.record) {
                    n.record = hb.apply(&n.record);
                }
                if let AcquireDecision::Attempt(plan) =
                    acquire_decision(&n.record, &host, true, now, &cfg)
                {
                    if plan.condition_holds(&n.record) {
                        n.record = plan.apply(&n.record);
                    }
                }
                let a = answer(&n.record, &host, now, &cfg);
                n.hosts[i].reply = Some(Reply {
                    t_sent,
                    writable: a.writable,
                    valid_for: a.valid_for_ms,
                    epoch: a.epoch.0,
                });
            }
            Action::Receive(i) => {
                let reply = n.hosts[i].reply.take()?;
                if reply.writable && n.hosts[i].releasing.is_none() {
                    let base = match self.mutant {
                        Mutant::DeadlineFromReceipt => s.t,
                        _ => reply.t_sent,
                    };
                    // The agent's deadline; its 1e-4 drift allowance is below one model tick.
                    n.hosts[i].grant = Some((base + reply.valid_for, reply.epoch));
                    if *n.owners.entry(reply.epoch).or_insert(i) != i || reply.epoch < n.max_granted
                    {
                        n.epoch_went_back = true;
                    }
                    n.max_granted = n.max_granted.max(reply.epoch);
                } else {
                    n.hosts[i].grant = None;
                }
            }
            Action::Crash(i) => {
                n.hosts[i] = Host {
                    crashed: true,
                    ..Host::default()
                };
                n.crashes += 1;
            }
            Action::StepDown(i) => {
                // Close the gate first, then release.
                let (_, epoch) = n.hosts[i].grant.take()?;
                n.hosts[i].releasing = Some(epoch);
            }
            Action::Release(i, offset) => {
                let epoch = n.hosts[i].releasing.take()?;
                let plan = ReleasePlan {
                    host: Self::host_id(i),
                    epoch: tenure::lease::Epoch(epoch),
                    now: s.t + offset,
                };
                if plan.condition_holds(&n.record) {
                    n.record = plan.apply(&n.record);
                }
            }
            Action::Renew(offset) => {
                if let RenewDecision::Renew(plan) = renew_decision(&n.record, s.t + offset, &cfg) {
                    if plan.condition_holds(&n.record) {
                        n.record = plan.apply(&n.record);
                    }
                }
            }
        }
        Some(n)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("at most one host may write", |_, s: &State| {
                (0..s.hosts.len()).filter(|&i| writable(s, i)).count() <= 1
            }),
            Property::always("epochs only grow, one host per epoch", |_, s: &State| {
                !s.epoch_went_back
            }),
            Property::sometimes("someone becomes primary", |_, s: &State| {
                (0..s.hosts.len()).any(|i| writable(s, i))
            }),
        ]
    }
}

/// Explores every interleaving up to `depth` steps, breadth first (exhaustive to the depth).
fn check(mutant: Mutant, ticks: u64, depth: usize) -> impl Checker<LeaseModel> {
    LeaseModel::new(mutant, ticks)
        .checker()
        .threads(2)
        .target_max_depth(depth)
        .spawn_bfs()
        .join()
}

/// Depth first: stops at the first counterexample, for the mutants.
fn hunt(mutant: Mutant, ticks: u64, depth: usize) -> impl Checker<LeaseModel> {
    LeaseModel::new(mutant, ticks)
        .checker()
        .threads(2)
        .target_max_depth(depth)
        .spawn_dfs()
        .join()
}

// Depth 15 explores every interleaving of up to 15 steps (ticks, sends, processing at each
// clock offset, losses, receipts, crash, step-down, release, renewals): enough for a lease to
// lapse and another host to take over (9 ticks + a check by each host).
const DEPTH: usize = 15;

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "exhaustive: run with --release (infra/test.sh does)"
)]
fn the_shipped_protocol_never_has_two_writers() {
    let checker = check(Mutant::None, DEPTH as u64, DEPTH);
    eprintln!(
        "lease model: {} states ({} unique) explored to depth {DEPTH}",
        checker.state_count(),
        checker.unique_state_count()
    );
    checker.assert_properties();
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "exhaustive: run with --release (infra/test.sh does)"
)]
fn a_deadline_counted_from_receipt_is_caught() {
    let checker = hunt(Mutant::DeadlineFromReceipt, 20, 20);
    let path = checker
        .discovery("at most one host may write")
        .expect("the checker finds two writers when the deadline starts at receipt");
    eprintln!(
        "counterexample (deadline from receipt): {:?}",
        path.into_actions()
    );
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "exhaustive: run with --release (infra/test.sh does)"
)]
fn no_skew_margins_are_caught() {
    let checker = hunt(Mutant::NoSkewMargins, 20, 20);
    let path = checker
        .discovery("at most one host may write")
        .expect("the checker finds two writers without skew margins");
    eprintln!(
        "counterexample (no skew margins): {:?}",
        path.into_actions()
    );
}

/// Liveness under a fair schedule: every live host checks each tick (send, process on a
/// correct clock, receive); with host `a` crashed after it became primary, `b` takes over
/// within lease + skew + poll.
#[test]
fn with_fair_scheduling_a_live_host_becomes_primary() {
    let model = LeaseModel::new(Mutant::None, 60);
    let mut s = model.init_states().remove(0);
    let step = |s: &State, a: Action| model.next_state(s, a).expect("enabled");
    let round = |s: &mut State| {
        for i in 0..HOSTS.len() {
            if !s.hosts[i].crashed {
                *s = step(s, Action::Send(i));
                *s = step(s, Action::Process(i, 1));
                *s = step(s, Action::Receive(i));
            }
        }
        *s = step(s, Action::Renew(1));
        *s = step(s, Action::Tick);
    };
    round(&mut s);
    assert!(
        writable(&s, 0),
        "a (priority 2) is primary after one round: {s:?}"
    );
    s = step(&s, Action::Crash(0));
    let crashed_at = s.t;
    while !writable(&s, 1) {
        assert!(
            s.t <= crashed_at + 9 + 2 + 1 + 1,
            "b never took over: {s:?}"
        );
        round(&mut s);
    }
}
