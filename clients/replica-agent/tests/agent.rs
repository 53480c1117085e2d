//! The host agent against the real lease service on the in-memory store (the protocol's own
//! predicates), on tokio's paused clock: many groups per host, failover of all of them as one,
//! handover of one group, restarts as new incarnations, step-down with an answer in flight,
//! an unreachable lease-check, late answers, and a clock that jumps (a suspended machine).
//! The same agent against the deployed stack on MiniStack is in `tests/local_stack.rs`.

use async_trait::async_trait;
use replica_agent::{
    AgentConfig, DeadlineClock, GrantHook, GrantNotice, GroupRole, HostAgent, HostSource,
    SourceError, WritePermit,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tenure::clock::Clock;
use tenure::ids::{GroupId, HostId, Incarnation};
use tenure::lease::client::HostCheckBody;
use tenure::lease::memory::MemoryLeaseStore;
use tenure::lease::service::{GroupEntry, HostAnswer, HostCheck, LeaseService};
use tenure::lease::{Epoch, LeaseConfig, Member};
use tokio::time::Instant;

const T0_MS: u64 = 1_800_000_000_000;

/// The function's clock: wall milliseconds that follow tokio's (paused) time.
#[derive(Clone)]
struct ServiceClock(Instant);

impl Clock for ServiceClock {
    fn now_ms(&self) -> u64 {
        T0_MS + self.0.elapsed().as_millis() as u64
    }
}

/// A host's deadline clock: tokio's time plus whatever the machine spent suspended.
#[derive(Clone)]
struct HostClock {
    base: Instant,
    suspended_ns: Arc<AtomicU64>,
}

impl HostClock {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            suspended_ns: Arc::default(),
        }
    }
}

impl DeadlineClock for HostClock {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + self.suspended_ns.load(Ordering::SeqCst)
    }
}

type Service = LeaseService<MemoryLeaseStore, ServiceClock>;

/// lease-check in process, with faults: unreachable, or answers delayed.
#[derive(Clone)]
struct InProcess {
    service: Arc<Service>,
    down: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    checks: Arc<AtomicU64>,
    /// What the agent did, in order: `closed <group>` from the grant hook, `release <n>` as a
    /// release reaches lease-check.
    journal: Journal,
}

type Journal = Arc<std::sync::Mutex<Vec<String>>>;

fn journal_lines(journal: &Journal) -> Vec<String> {
    journal.lock().expect("journal lock").clone()
}

#[async_trait]
impl HostSource for InProcess {
    async fn check(&self, host: &HostId, body: &HostCheckBody) -> Result<HostAnswer, SourceError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SourceError("lease-check unreachable".into()));
        }
        self.checks.fetch_add(1, Ordering::SeqCst);
        let request = HostCheck {
            host: host.clone(),
            healthy: body.healthy,
            heartbeat: body.heartbeat,
            incarnation: body.incarnation.clone(),
            groups: body.groups.clone(),
            watch: body.watch.clone(),
            watch_groups: body.watch_groups.clone(),
        };
        let answer = self
            .service
            .check_host(&request)
            .await
            .map_err(|e| SourceError(e.to_string()))?;
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        Ok(answer)
    }

    async fn release(
        &self,
        host: &HostId,
        groups: &[(GroupId, Epoch)],
    ) -> Result<Vec<GroupEntry>, SourceError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SourceError("lease-check unreachable".into()));
        }
        self.journal
            .lock()
            .expect("journal lock")
            .push(format!("release {}", groups.len()));
        self.service
            .release_many(host, groups)
            .await
            .map_err(|e| SourceError(e.to_string()))
    }
}

fn h(s: &str) -> HostId {
    HostId::parse(s).expect("valid host id")
}

fn group_ids(n: usize) -> Vec<GroupId> {
    (0..n)
        .map(|i| GroupId::parse(&format!("g{i:03}")).expect("valid group id"))
        .collect()
}

struct World {
    service: Arc<Service>,
    groups: Vec<GroupId>,
    cfg: LeaseConfig,
}

impl World {
    /// `n` groups, members a (priority 3), b (2), c (1).
    async fn new(n: usize) -> Self {
        let cfg = LeaseConfig::default();
        let service = Arc::new(LeaseService::new(
            MemoryLeaseStore::new(),
            cfg,
            ServiceClock(Instant::now()),
        ));
        let members: BTreeMap<HostId, Member> = [("a", 3), ("b", 2), ("c", 1)]
            .into_iter()
            .map(|(id, p)| (h(id), Member::new(format!("az-{id}"), p)))
            .collect();
        let groups = group_ids(n);
        for g in &groups {
            service
                .create_group(g.clone(), cfg.lease_ms, members.clone())
                .await
                .expect("group created");
        }
        Self {
            service,
            groups,
            cfg,
        }
    }

    fn source(&self) -> InProcess {
        InProcess {
            service: self.service.clone(),
            down: Arc::default(),
            delay_ms: Arc::default(),
            checks: Arc::default(),
            journal: Arc::default(),
        }
    }

    fn agent(&self, host: &str, source: InProcess, incarnation: &str) -> Agent {
        self.agent_with_hook(host, source, incarnation, None)
    }

    fn agent_with_hook(
        &self,
        host: &str,
        source: InProcess,
        incarnation: &str,
        hook: Option<GrantHook>,
    ) -> Agent {
        let config =
            AgentConfig::new(h(host), self.groups.clone(), &self.cfg).expect("valid agent config");
        let clock = HostClock::new();
        Agent {
            agent: HostAgent::start_with(
                source.clone(),
                config,
                || true,
                hook,
                clock.clone(),
                Incarnation::parse(incarnation).expect("valid incarnation"),
            ),
            clock,
            source,
        }
    }
}

struct Agent {
    agent: HostAgent<HostClock>,
    clock: HostClock,
    source: InProcess,
}

impl Agent {
    fn permits(&self, groups: &[GroupId]) -> Vec<Option<WritePermit>> {
        groups.iter().map(|g| self.agent.write_permit(g)).collect()
    }

    fn writable(&self, groups: &[GroupId]) -> usize {
        self.permits(groups).iter().flatten().count()
    }
}

/// Advances time in 50 ms steps for `ms`, asserting after each step that no group has two
/// hosts with a permit.
async fn run_checked(agents: &[&Agent], groups: &[GroupId], ms: u64) {
    for _ in 0..ms / 50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for g in groups {
            let writers = agents
                .iter()
                .filter(|a| a.agent.write_permit(g).is_some())
                .count();
            assert!(writers <= 1, "{g}: {writers} hosts may write");
        }
    }
}

/// Advances until `done` holds (checking one writer per group), failing after `limit_ms`;
/// returns the time it took.
async fn until(
    agents: &[&Agent],
    groups: &[GroupId],
    limit_ms: u64,
    done: impl Fn() -> bool,
) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_millis(limit_ms),
            "not done within {limit_ms} ms"
        );
        run_checked(agents, groups, 50).await;
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn one_host_takes_every_group_and_its_secondaries_look_at_it_once_per_lease() {
    let world = World::new(200).await;
    let groups = world.groups.clone();
    let a = world.agent("a", world.source(), "a-1");
    let b = world.agent("b", world.source(), "b-1");
    let c = world.agent("c", world.source(), "c-1");
    until(&[&a, &b, &c], &groups, 5_000, || a.writable(&groups) == 200).await;
    assert_eq!(b.writable(&groups) + c.writable(&groups), 0);
    assert!(a
        .permits(&groups)
        .iter()
        .flatten()
        .all(|p| p.epoch == Epoch(1)));
    assert_eq!(
        b.agent.state(&groups[0]),
        Some(GroupRole::Secondary {
            holder: Some(h("a")),
            epoch: Epoch(1)
        })
    );
    // Steady state for a minute: one check per poll per host, whatever the group count.
    let before = [&a, &b, &c].map(|x| x.source.checks.load(Ordering::SeqCst));
    run_checked(&[&a, &b, &c], &groups, 60_000).await;
    let after = [&a, &b, &c].map(|x| x.source.checks.load(Ordering::SeqCst));
    for (i, (x, y)) in before.iter().zip(after).enumerate() {
        let polls = y - x;
        // poll 500 ms with 10% jitter: 109..133 polls a minute.
        assert!(
            (100..=140).contains(&polls),
            "host {i}: {polls} checks in 60 s"
        );
    }
    assert_eq!(a.writable(&groups), 200, "a kept every group");
    let status = a.agent.status();
    assert_eq!(status.primaries, 200);
    assert!(status.reachable && !status.silenced);
}

#[tokio::test(start_paused = true)]
async fn a_dead_host_s_groups_move_as_one_within_the_bound() {
    let world = World::new(300).await;
    let groups = world.groups.clone();
    let a = world.agent("a", world.source(), "a-1");
    let b = world.agent("b", world.source(), "b-1");
    let c = world.agent("c", world.source(), "c-1");
    until(&[&a, &b, &c], &groups, 5_000, || a.writable(&groups) == 300).await;
    run_checked(&[&a, &b, &c], &groups, 3_000).await;
    // a dies (its process is gone: no more checks, its gates with it).
    let died = Instant::now();
    drop(a);
    let took = until(&[&b, &c], &groups, 20_000, || b.writable(&groups) == 300).await;
    let cfg = world.cfg;
    // Its last heartbeat was at most a heartbeat interval before it died.
    let bound = cfg.lease_ms + cfg.clock_skew_ms + cfg.poll_interval_ms + 200;
    assert!(
        took <= Duration::from_millis(bound),
        "took {took:?}, bound {bound} ms from death"
    );
    assert_eq!(c.writable(&groups), 0, "c (priority 1) stays secondary");
    assert!(b
        .permits(&groups)
        .iter()
        .flatten()
        .all(|p| p.epoch == Epoch(2)));
    let view = world.service.get_host(&h("a")).await.expect("host a");
    assert_eq!(
        view.host.epoch,
        Epoch(1),
        "one revocation for all 300 groups"
    );
    assert!(died.elapsed() >= Duration::from_millis(cfg.lease_ms - cfg.heartbeat_timeout_ms));
}

#[tokio::test(start_paused = true)]
async fn stepping_down_from_one_group_hands_it_over_at_the_next_check() {
    let world = World::new(50).await;
    let groups = world.groups.clone();
    let a = world.agent("a", world.source(), "a-1");
    let b = world.agent("b", world.source(), "b-1");
    until(&[&a, &b], &groups, 5_000, || a.writable(&groups) == 50).await;
    run_checked(&[&a, &b], &groups, 2_000).await;
    let one = groups[7].clone();
    a.agent.step_down(&one).await.expect("released");
    assert_eq!(
        a.agent.write_permit(&one),
        None,
        "closed before the release"
    );
    let took = until(&[&a, &b], &groups, 3_000, || {
        b.agent.write_permit(&one).is_some()
    })
    .await;
    assert!(
        took <= Duration::from_millis(2 * world.cfg.poll_interval_ms + 200),
        "{took:?}"
    );
    assert_eq!(a.writable(&groups), 49, "a keeps the others");
    assert_eq!(b.agent.write_permit(&one).map(|p| p.epoch), Some(Epoch(2)));
    // a is not a candidate again for the heartbeat timeout, and b keeps it after that.
    run_checked(&[&a, &b], &groups, 10_000).await;
    assert!(b.agent.write_permit(&one).is_some());
}

#[tokio::test(start_paused = true)]
async fn an_answer_in_flight_during_a_step_down_never_reopens_the_gate() {
    let world = World::new(3).await;
    let groups = world.groups.clone();
    // Answers take 300 ms: the first check (which asks about every group and acquires them)
    // is in flight when the host steps down from one of them.
    let source = world.source();
    source.delay_ms.store(300, Ordering::SeqCst);
    let a = world.agent("a", source, "a-1");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let one = groups[0].clone();
    a.agent.step_down(&one).await.expect("stepped down");
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(a.agent.write_permit(&one), None, "the gate reopened");
    }
    assert_eq!(a.writable(&groups[1..]), 2, "the other groups opened");
}

/// A handover's close must be on record before the next holder can open (the gate-log checker
/// proves "never two writers" from it): every stepped-down group's `Closed` notice reaches the
/// hook before its release reaches lease-check.
#[tokio::test(start_paused = true)]
async fn the_hook_hears_of_every_close_before_the_release_is_sent() {
    let world = World::new(30).await;
    let groups = world.groups.clone();
    let source = world.source();
    let journal = source.journal.clone();
    let hook_journal = journal.clone();
    let hook: GrantHook = Arc::new(move |notice: &GrantNotice<'_>| {
        if let GrantNotice::Closed { group } = notice {
            hook_journal
                .lock()
                .expect("journal lock")
                .push(format!("closed {group}"));
        }
    });
    let a = world.agent_with_hook("a", source, "a-1", Some(hook));
    until(&[&a], &groups, 5_000, || a.writable(&groups) == 30).await;
    a.agent.step_down(&groups[3]).await.expect("released");
    assert_eq!(
        journal_lines(&journal),
        [format!("closed {}", groups[3]), "release 1".to_string()]
    );
    a.agent.step_down_host().await.expect("released");
    let lines = journal_lines(&journal);
    let tail = &lines[2..];
    let first_release = tail
        .iter()
        .position(|l| l.starts_with("release"))
        .expect("the host's groups were released");
    assert!(
        first_release >= 29,
        "every open group closes first: {tail:?}"
    );
    assert_eq!(
        tail[first_release..],
        [format!("release {first_release}")],
        "one release, of the groups just closed"
    );
}

/// `tenurectl lease drain --host`: only the host item changes, and a steady-state primary asks
/// about no group; the agent must still hand every group over within a few polls, not at the
/// 10-minute resync.
#[tokio::test(start_paused = true)]
async fn a_drain_of_the_whole_host_hands_every_group_over_within_a_few_polls() {
    let world = World::new(40).await;
    let groups = world.groups.clone();
    let a = world.agent("a", world.source(), "a-1");
    let b = world.agent("b", world.source(), "b-1");
    until(&[&a, &b], &groups, 5_000, || a.writable(&groups) == 40).await;
    run_checked(&[&a, &b], &groups, 2_000).await;
    world
        .service
        .set_host_draining(&h("a"), true)
        .await
        .expect("host drained");
    let took = until(&[&a, &b], &groups, 10_000, || b.writable(&groups) == 40).await;
    // Seen at a's next check, its groups read at the one after, released, and taken at b's
    // next check: three polls, plus jitter.
    assert!(
        took <= Duration::from_millis(4 * world.cfg.poll_interval_ms),
        "{took:?}"
    );
    assert_eq!(a.writable(&groups), 0);
    // A draining host acquires nothing, and b keeps everything.
    run_checked(&[&a, &b], &groups, 10_000).await;
    assert_eq!(b.writable(&groups), 40);
}

#[tokio::test(start_paused = true)]
async fn a_whole_host_step_down_moves_everything_and_resume_makes_it_a_candidate() {
    let world = World::new(40).await;
    let groups = world.groups.clone();
    let a = world.agent("a", world.source(), "a-1");
    let b = world.agent("b", world.source(), "b-1");
    until(&[&a, &b], &groups, 5_000, || a.writable(&groups) == 40).await;
    a.agent.step_down_host().await.expect("released");
    assert_eq!(a.writable(&groups), 0);
    until(&[&a, &b], &groups, 3_000, || b.writable(&groups) == 40).await;
    assert!(a.agent.status().standby);
    a.agent.resume();
    run_checked(&[&a, &b], &groups, 2_000).await;
    assert!(!a.agent.status().standby);
    assert_eq!(b.writable(&groups), 40, "b keeps what it holds");
}

#[tokio::test(start_paused = true)]
async fn a_restarted_process_never_inherits_its_predecessor_s_grants() {
    let world = World::new(20).await;
    let groups = world.groups.clone();
    let a1 = world.agent("a", world.source(), "a-1");
    let b = world.agent("b", world.source(), "b-1");
    until(&[&a1, &b], &groups, 5_000, || a1.writable(&groups) == 20).await;
    drop(a1);
    // The new process starts at once, with a new incarnation.
    let a2 = world.agent("a", world.source(), "a-2");
    run_checked(&[&a2, &b], &groups, 1_000).await;
    assert_eq!(a2.writable(&groups), 0, "no grant of a-1 is a-2's");
    // The groups end up with one writer, at a higher epoch than a-1 had.
    until(&[&a2, &b], &groups, 20_000, || {
        a2.writable(&groups) + b.writable(&groups) == 20
    })
    .await;
    for g in &groups {
        let permit = a2.agent.write_permit(g).or(b.agent.write_permit(g));
        assert!(
            permit.is_some_and(|p| p.epoch > Epoch(1)),
            "{g}: {permit:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn unreachable_lease_check_closes_gates_at_the_deadline_and_never_says_lost() {
    let world = World::new(5).await;
    let groups = world.groups.clone();
    let a = world.agent("a", world.source(), "a-1");
    until(&[&a], &groups, 5_000, || a.writable(&groups) == 5).await;
    let deadline = a.permits(&groups)[0].map(|p| p.deadline_ns);
    a.source.down.store(true, Ordering::SeqCst);
    // Writable until the deadline it has, not a moment longer.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(a.writable(&groups), 5);
    let Some(deadline) = deadline else {
        panic!("a had a deadline")
    };
    while a.clock.now_ns() < deadline + 600_000_000 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if a.clock.now_ns() >= deadline {
            assert_eq!(a.writable(&groups), 0, "writable past the deadline");
        }
    }
    assert!(matches!(
        a.agent.state(&groups[0]),
        Some(GroupRole::Unknown { .. })
    ));
    assert!(!a.agent.status().reachable);
    // Back: primary again (its lease lapsed meanwhile, so at a new host epoch).
    a.source.down.store(false, Ordering::SeqCst);
    until(&[&a], &groups, 10_000, || a.writable(&groups) == 5).await;
}

#[tokio::test(start_paused = true)]
async fn a_clock_that_jumps_closes_the_gates_at_once() {
    let world = World::new(2).await;
    let groups = world.groups.clone();
    let a = world.agent("a", world.source(), "a-1");
    until(&[&a], &groups, 5_000, || a.writable(&groups) == 2).await;
    // The machine was suspended for 20 s: the deadline clock moved, tokio's did not.
    a.clock
        .suspended_ns
        .fetch_add(20_000_000_000, Ordering::SeqCst);
    assert_eq!(
        a.writable(&groups),
        0,
        "a permit after the machine slept past its lease"
    );
}

#[tokio::test(start_paused = true)]
async fn late_answers_stop_the_heartbeat_so_a_timely_host_takes_over() {
    let world = World::new(10).await;
    let groups = world.groups.clone();
    let a = world.agent("a", world.source(), "a-1");
    let b = world.agent("b", world.source(), "b-1");
    until(&[&a, &b], &groups, 5_000, || a.writable(&groups) == 10).await;
    // a's answers now arrive late (1.5 s of a 2 s timeout; late is 1 s).
    a.source.delay_ms.store(1_500, Ordering::SeqCst);
    until(&[&a, &b], &groups, 30_000, || b.writable(&groups) == 10).await;
    assert!(a.agent.status().silenced);
    assert_eq!(a.writable(&groups), 0);
}

/// What the agent exported through the `metrics` facade, by metric and labels.
fn exported(snapshotter: &metrics_util::debugging::Snapshotter) -> BTreeMap<String, f64> {
    use metrics_util::debugging::DebugValue;
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = if labels.is_empty() {
                key.name().to_owned()
            } else {
                format!("{}{{{}}}", key.name(), labels.join(","))
            };
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(samples) => samples.len() as f64,
            };
            (name, value)
        })
        .collect()
}

#[test]
fn the_agent_exports_roles_epoch_deadline_and_check_latency_and_failures() {
    use replica_agent::metrics::*;
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a paused runtime");
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let world = World::new(3).await;
            let groups = world.groups.clone();
            let a = world.agent("a", world.source(), "a-1");
            until(&[&a], &groups, 5_000, || a.writable(&groups) == 3).await;
            run_checked(&[&a], &groups, 1_000).await;
            let healthy = exported(&snapshotter);
            assert_eq!(healthy[&format!("{GROUPS}{{role=primary}}")], 3.0);
            assert_eq!(healthy[&format!("{GROUPS}{{role=unknown}}")], 0.0);
            assert_eq!(healthy[REACHABLE], 1.0);
            assert_eq!(healthy[HOST_EPOCH], 0.0);
            let left = healthy[DEADLINE_REMAINING];
            assert!(
                left > 0.0 && left <= world.cfg.lease_ms as f64 / 1e3,
                "{left}"
            );
            // Polls are jittered, so the count in a window varies; what must hold is that
            // every check lease-check received was counted, and that the window held more
            // than the first (a poll waits 500 ms +- 10%).
            let received = a.source.checks.load(Ordering::SeqCst) as f64;
            assert_eq!(healthy[CHECKS], received);
            assert!(received >= 2.0, "{received} checks");
            assert_eq!(
                healthy[CHECK_DURATION], received,
                "a latency sample per answer"
            );
            assert!(!healthy.contains_key(CHECK_FAILURES));

            // lease-check unreachable past the deadline: failures, read-only, unknown.
            a.source.down.store(true, Ordering::SeqCst);
            run_checked(&[&a], &groups, world.cfg.lease_ms + 1_000).await;
            let cut_off = exported(&snapshotter);
            assert!(cut_off[CHECK_FAILURES] >= 1.0);
            assert_eq!(cut_off[REACHABLE], 0.0);
            assert_eq!(cut_off[&format!("{GROUPS}{{role=unknown}}")], 3.0);
            assert_eq!(cut_off[&format!("{GROUPS}{{role=primary}}")], 0.0);
            assert_eq!(cut_off[DEADLINE_REMAINING], 0.0);
        })
    });
}
