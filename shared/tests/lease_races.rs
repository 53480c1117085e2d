//! Races between real concurrent writers on MiniStack (a multi-threaded runtime; the racing
//! tasks wait on one `tokio::sync::Barrier` and are released together):
//! - eight contenders for a dead host's twenty groups revoke it exactly once, and each group
//!   ends with exactly one winner (its best live candidate), one acquisition each;
//! - eight contenders past the better-candidate wait all try to acquire every group of a
//!   revoked host: exactly one wins each;
//! - the renewer's renewal racing a contender's revocation of one host: exactly one lands, and
//!   a revoked lease is never left renewed (not at the old epoch, and not at the new one
//!   without a heartbeat after the revocation);
//! - a holder's release racing a contender's revocation and takeover: the contender always
//!   ends as the one holder, the release never frees its grant;
//! - 1,000 random interleavings of v2 operations (checks with and without heartbeats, v1
//!   checks, renewals racing checks, releases, restarts and zombie processes, drains, delete
//!   and re-create) by three hosts on two groups, with a shared fake clock: after every step
//!   group and host epochs never went back, and no two writers (host processes) were ever
//!   answered writable for one group over overlapping windows.

mod support;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use support::*;
use tenure::clock::{Clock, FakeClock};
use tenure::ids::{GroupId, HostId, Incarnation};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::protocol::{renew_decision, revoke_decision, RenewPlan, RenewSkip};
use tenure::lease::record::{Epoch, Member};
use tenure::lease::service::{CheckError, GroupEntry, HostAnswer, HostCheck, LeaseService};
use tenure::lease::store::{HeartbeatOutcome, LeaseStore, RenewOutcome, Written};
use tenure::lease::{CheckAnswer, LeaseConfig};
use tokio::sync::Barrier;

const T0: u64 = 1_800_000_000_000;

type Service = LeaseService<DynamoLeaseStore, FakeClock>;

struct Region {
    service: Arc<Service>,
    clock: FakeClock,
    cfg: LeaseConfig,
}

impl Region {
    async fn new() -> Self {
        let client = dynamodb(None).await;
        let store = store(&client).await;
        let cfg = LeaseConfig::default();
        let clock = FakeClock::at(T0);
        Self {
            service: Arc::new(LeaseService::new(store, cfg, clock.clone())),
            clock,
            cfg,
        }
    }

    fn store(&self) -> &DynamoLeaseStore {
        self.service.store()
    }

    async fn check(&self, request: HostCheck) -> HostAnswer {
        self.service
            .check_host(&request)
            .await
            .unwrap_or_else(|e| panic!("check by {}: {e}", request.host))
    }

    async fn host_epoch(&self, id: &str) -> Epoch {
        self.store()
            .read_host(&host(id))
            .await
            .unwrap()
            .map(|h| h.epoch)
            .unwrap_or_default()
    }

    async fn done(self) {
        drop_lease_tables(self.store()).await;
    }
}

fn check(host_id: &str, heartbeat: bool) -> HostCheck {
    HostCheck {
        host: host(host_id),
        healthy: true,
        heartbeat,
        incarnation: None,
        groups: Vec::new(),
        watch: Vec::new(),
        watch_groups: Vec::new(),
    }
}

fn writable_count(answer: &HostAnswer) -> usize {
    answer
        .groups
        .iter()
        .filter(|e| matches!(e, GroupEntry::Answer(a) if a.writable))
        .count()
}

fn answers(answer: &HostAnswer) -> Vec<CheckAnswer> {
    answer
        .groups
        .iter()
        .filter_map(|e| match e {
            GroupEntry::Answer(a) => Some(a.clone()),
            GroupEntry::Error { .. } => None,
        })
        .collect()
}

/// The hosts answered writable for `group`, across the racers' answers.
fn winners(all: &[HostAnswer], group: &GroupId) -> Vec<HostId> {
    all.iter()
        .flat_map(answers)
        .filter(|a| a.group_id == *group && a.writable)
        .map(|a| a.host_id)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Contenders for a dead host's groups

const CONTENDERS: usize = 8;
const DEAD_GROUPS: usize = 20;

fn contender(j: usize) -> String {
    format!("h{j}")
}

/// Group `i`'s members: "dead" (its holder, highest priority) and the eight contenders, of
/// which h{i % 8} ranks first, so every contender is the best live candidate of some groups.
fn rotated_members(i: usize) -> BTreeMap<HostId, Member> {
    let mut members = BTreeMap::from([(host("dead"), Member::new("az-dead", 100))]);
    for j in 0..CONTENDERS {
        let rank = (j + CONTENDERS - i % CONTENDERS) % CONTENDERS;
        members.insert(
            host(&contender(j)),
            Member::new(format!("az-{j}"), 50 - rank as u32),
        );
    }
    members
}

/// "dead" takes the twenty groups at T0 and is never heard from again; the contenders check in
/// at T0 + 8 s (heartbeat and self-renewal: fresh and leased when they race).
async fn dead_host_with_groups(r: &Region) -> Vec<GroupId> {
    let ids: Vec<GroupId> = (0..DEAD_GROUPS)
        .map(|i| group_id(&format!("dead-{i:02}")))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        r.service
            .create_group(id.clone(), r.cfg.lease_ms, rotated_members(i))
            .await
            .expect("create group");
    }
    let dead = r.check(check("dead", true)).await;
    assert_eq!(writable_count(&dead), DEAD_GROUPS, "{dead:?}");
    r.clock.set(T0 + 8_000);
    for j in 0..CONTENDERS {
        let answer = r.check(check(&contender(j), true)).await;
        assert_eq!(writable_count(&answer), 0, "dead's grants are live at +8 s");
    }
    ids
}

/// Runs one check per contender, all released together by a barrier, on their own tasks.
async fn race(r: &Region, request: impl Fn(usize) -> HostCheck) -> Vec<HostAnswer> {
    let barrier = Arc::new(Barrier::new(CONTENDERS));
    let tasks: Vec<_> = (0..CONTENDERS)
        .map(|j| {
            let (service, barrier, request) = (r.service.clone(), barrier.clone(), request(j));
            tokio::spawn(async move {
                barrier.wait().await;
                service.check_host(&request).await
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.expect("racing task").expect("racing check"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_contenders_for_a_dead_hosts_twenty_groups_revoke_it_once_and_each_group_gets_one_winner(
) {
    let r = Region::new().await;
    let ids = dead_host_with_groups(&r).await;
    r.clock.set(T0 + r.cfg.lease_ms + r.cfg.clock_skew_ms + 1);
    let all = race(&r, |j| HostCheck {
        groups: ids.clone(),
        watch: vec![host("dead")],
        ..check(&contender(j), false)
    })
    .await;
    for (i, id) in ids.iter().enumerate() {
        let best = host(&contender(i % CONTENDERS));
        assert_eq!(
            winners(&all, id),
            vec![best.clone()],
            "{id}: exactly one winner, its best live candidate"
        );
        let record = r.store().read_group(id).await.unwrap().unwrap();
        assert_eq!(
            (record.holder, record.epoch, record.holder_host_epoch),
            (Some(best), Epoch(2), Some(Epoch(0))),
            "{id}: one acquisition"
        );
    }
    assert_eq!(
        r.host_epoch("dead").await,
        Epoch(1),
        "eight contenders, one revocation"
    );
    r.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contenders_past_the_wait_all_try_a_revoked_hosts_groups_and_exactly_one_wins_each() {
    let r = Region::new().await;
    let ids = dead_host_with_groups(&r).await;
    // A contender revoked "dead" and went away before acquiring anything.
    let revoked_at = T0 + r.cfg.lease_ms + r.cfg.clock_skew_ms + 1;
    r.clock.set(revoked_at);
    let dead = r.store().read_host(&host("dead")).await.unwrap().unwrap();
    let plan = revoke_decision(&dead, revoked_at, &r.cfg).expect("dead is revocable");
    assert!(matches!(
        r.store().revoke(&plan).await.unwrap(),
        Written::Done(_)
    ));
    // One heartbeat timeout later nobody waits for a better candidate: all eight try all 20.
    r.clock.set(revoked_at + r.cfg.heartbeat_timeout_ms);
    let all = race(&r, |j| HostCheck {
        groups: ids.clone(),
        ..check(&contender(j), true)
    })
    .await;
    for id in &ids {
        let won = winners(&all, id);
        assert_eq!(won.len(), 1, "{id}: exactly one winner: {won:?}");
        let record = r.store().read_group(id).await.unwrap().unwrap();
        assert_eq!(
            (record.holder.as_ref(), record.epoch),
            (Some(&won[0]), Epoch(2)),
            "{id}: the winner holds it, after exactly one acquisition"
        );
    }
    assert_eq!(r.host_epoch("dead").await, Epoch(1), "no second revocation");
    r.done().await;
}

// ---------------------------------------------------------------------------------------------
// Renewal racing revocation

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewal_racing_a_revocation_never_leaves_a_revoked_lease_renewed() {
    const ROUNDS: usize = 60;
    let r = Region::new().await;
    let store = r.store().clone();
    let cfg = r.cfg;
    let expiry = T0 + cfg.lease_ms;
    let (mut renewal_won, mut revocation_won) = (0, 0);
    for round in 0..ROUNDS {
        let id = host(&format!("racer-{round}"));
        // Leased at T0 to `expiry`, then paused past expiry + skew; its heartbeat lands on its
        // return, and the renewer and a contender both act on the record as it stands.
        let heartbeat = |now| tenure::lease::protocol::HeartbeatPlan {
            host: id.clone(),
            healthy: true,
            incarnation: Incarnation::parse("i").unwrap(),
            now,
        };
        assert!(matches!(
            store.heartbeat(&heartbeat(T0)).await.unwrap(),
            HeartbeatOutcome::Recorded(_)
        ));
        let first = RenewPlan {
            host: id.clone(),
            epoch: Epoch(0),
            new_expires_at_ms: expiry,
            now: T0,
        };
        assert!(matches!(
            store.renew(&first).await.unwrap(),
            RenewOutcome::Renewed { .. }
        ));
        let back = expiry + cfg.clock_skew_ms + 500;
        assert!(matches!(
            store.heartbeat(&heartbeat(back)).await.unwrap(),
            HeartbeatOutcome::Recorded(_)
        ));
        let now = back + 100;
        let seen = store.read_host(&id).await.unwrap().unwrap();
        let renewal = renew_decision(&seen, now, &cfg).expect("the renewer renews a fresh host");
        let revocation = revoke_decision(&seen, now, &cfg).expect("a contender revokes it");
        assert!(
            renewal.condition_holds(Some(&seen)) && revocation.condition_holds(Some(&seen)),
            "both conditions hold on the record both read"
        );

        let barrier = Arc::new(Barrier::new(2));
        let renewer = {
            let (store, barrier, plan) = (store.clone(), barrier.clone(), renewal.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.renew(&plan).await
            })
        };
        let contender = {
            let (store, barrier, plan) = (store.clone(), barrier.clone(), revocation.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.revoke(&plan).await
            })
        };
        let renewed = matches!(
            renewer.await.unwrap().unwrap(),
            RenewOutcome::Renewed { .. }
        );
        let revoked = matches!(contender.await.unwrap().unwrap(), Written::Done(_));
        assert!(
            renewed != revoked,
            "round {round}: exactly one of the two writes lands (renewed {renewed}, revoked {revoked})"
        );
        let after = store.read_host(&id).await.unwrap().unwrap();
        if revoked {
            revocation_won += 1;
            assert_eq!(
                (after.epoch, after.expires_at_ms),
                (Epoch(1), expiry),
                "round {round}: revoked, with the expiry untouched by the renewal"
            );
            // The renewer's next round, on the revoked record, does not renew it either: the
            // host has not been heard from since.
            assert_eq!(
                renew_decision(&after, now, &cfg).err(),
                Some(RenewSkip::NotSeenSinceRevocation),
                "round {round}"
            );
            let at_new_epoch = RenewPlan {
                epoch: Epoch(1),
                ..renewal.clone()
            };
            assert_eq!(
                store.renew(&at_new_epoch).await.unwrap(),
                RenewOutcome::LostRace,
                "round {round}: no renewal at the new epoch without a heartbeat after the revocation"
            );
            assert_eq!(
                store.read_host(&id).await.unwrap().unwrap().expires_at_ms,
                expiry
            );
        } else {
            renewal_won += 1;
            assert_eq!(
                (after.epoch, after.expires_at_ms),
                (Epoch(0), renewal.new_expires_at_ms),
                "round {round}: renewed at the old epoch and not revoked"
            );
            assert!(
                revoke_decision(&after, now, &cfg).is_none(),
                "round {round}: a renewed lease is no longer revocable"
            );
        }
    }
    eprintln!("renewal won {renewal_won} rounds, revocation {revocation_won}");
    r.done().await;
}

// ---------------------------------------------------------------------------------------------
// Release racing revocation

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_racing_a_revocation_and_takeover_never_frees_the_new_holders_grant() {
    const ROUNDS: usize = 30;
    let r = Region::new().await;
    let names = |k: usize| (format!("rel-{k}"), format!("old-{k}"), format!("new-{k}"));
    // Round k: old-k takes rel-k at T0 and stops heartbeating; new-k checks in at T0 + 8 s.
    for k in 0..ROUNDS {
        let (g, old, new) = names(k);
        r.service
            .create_group(
                group_id(&g),
                r.cfg.lease_ms,
                new_group(&g, &[old.as_str(), new.as_str()], r.cfg.lease_ms, T0).members,
            )
            .await
            .unwrap();
        let held = r
            .check(HostCheck {
                groups: vec![group_id(&g)],
                ..check(&old, true)
            })
            .await;
        assert_eq!(writable_count(&held), 1, "{held:?}");
    }
    r.clock.set(T0 + 8_000);
    for k in 0..ROUNDS {
        r.check(check(&names(k).2, true)).await;
    }
    // The old holders have lapsed past the skew; each one's agent releases just as its
    // contender revokes it and takes over.
    r.clock.set(T0 + r.cfg.lease_ms + r.cfg.clock_skew_ms + 1);
    let (mut released_first, mut acquired_first) = (0, 0);
    for k in 0..ROUNDS {
        let (g, old, new) = names(k);
        let barrier = Arc::new(Barrier::new(2));
        let holder = {
            let (service, barrier, g, old) =
                (r.service.clone(), barrier.clone(), group_id(&g), host(&old));
            tokio::spawn(async move {
                barrier.wait().await;
                service.release(&g, &old, Epoch(1)).await
            })
        };
        let contender = {
            let (service, barrier) = (r.service.clone(), barrier.clone());
            let request = HostCheck {
                groups: vec![group_id(&g)],
                watch: vec![host(&old)],
                ..check(&new, false)
            };
            tokio::spawn(async move {
                barrier.wait().await;
                service.check_host(&request).await
            })
        };
        let release = holder.await.unwrap();
        let took = contender.await.unwrap().expect("the contender's check");
        assert_eq!(
            winners(std::slice::from_ref(&took), &group_id(&g)),
            vec![host(&new)],
            "round {k}: the contender takes the group whichever write lands first: {took:?}"
        );
        let record = r.store().read_group(&group_id(&g)).await.unwrap().unwrap();
        assert_eq!(
            (record.holder, record.epoch, record.holder_host_epoch),
            (Some(host(&new)), Epoch(2), Some(Epoch(0))),
            "round {k}: one acquisition, and the release never freed the new grant"
        );
        match release {
            Ok(answer) => {
                released_first += 1;
                assert!(!answer.writable, "round {k}: {answer:?}");
            }
            Err(CheckError::StaleRelease { current, .. }) => {
                acquired_first += 1;
                assert_eq!(
                    current,
                    Epoch(2),
                    "round {k}: refused only because the contender acquired first"
                );
            }
            Err(other) => panic!("round {k}: the release failed otherwise: {other}"),
        }
        assert!(r.host_epoch(&old).await <= Epoch(1), "round {k}");
    }
    eprintln!("released first in {released_first} rounds, acquired first in {acquired_first}");
    r.done().await;
}

// ---------------------------------------------------------------------------------------------
// Random interleavings

const INTERLEAVINGS: u64 = 1_000;
const BATCH: u64 = 100;
const IN_FLIGHT: usize = 16;
const STEPS: usize = 16;
const HOSTS: [&str; 3] = ["a", "b", "c"];

/// A writer: one agent process, (host index, incarnation number). Two processes of one host are
/// two writers: a restarted host must not write while its old process may still.
type Writer = (usize, u32);

#[derive(Default)]
struct Totals {
    acquisitions: AtomicU64,
    takeovers: AtomicU64,
    revocations: AtomicU64,
    releases: AtomicU64,
    renewals: AtomicU64,
    restarts: AtomicU64,
    deletes: AtomicU64,
}

impl Totals {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} acquisitions, {} takeovers, {} revocations, {} releases, {} renewals, {} restarts, {} deletes",
            get(&self.acquisitions),
            get(&self.takeovers),
            get(&self.revocations),
            get(&self.releases),
            get(&self.renewals),
            get(&self.restarts),
            get(&self.deletes)
        )
    }
}

/// What the interleaving has been told and has seen, and the invariants over it.
struct Model {
    seed: u64,
    groups: [GroupId; 2],
    /// Per writer and group: the end (fake time) of the latest writable window it was granted.
    open: BTreeMap<(Writer, usize), u64>,
    /// Per writer and group: the epoch of its latest writable answer (what it would release).
    held_epoch: BTreeMap<(Writer, usize), Epoch>,
    group_epochs: [Epoch; 2],
    holders: [Option<HostId>; 2],
    host_epochs: [Epoch; 3],
    trace: Vec<String>,
}

impl Model {
    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {}: {what}\ntrace (replay with TENURE_INTERLEAVING_SEED={}):\n{}",
            self.seed,
            self.seed,
            self.trace.join("\n")
        )
    }

    /// Records the answers `writer` got to a check sent at `now`; fails if a writable one
    /// overlaps another writer's window on the same group.
    fn observe(&mut self, writer: Writer, now: u64, answers: &[CheckAnswer]) {
        for a in answers {
            let Some(g) = self.groups.iter().position(|id| *id == a.group_id) else {
                continue;
            };
            if !a.writable {
                continue;
            }
            if let Some(((other, _), end)) = self
                .open
                .iter()
                .find(|((other, og), end)| *og == g && *other != writer && **end > now)
            {
                self.fail(format!(
                    "{writer:?} answered writable for {} at +{} ms (epoch {}, for {} ms) while \
                     {other:?}'s window runs to +{} ms",
                    a.group_id,
                    now - T0,
                    a.epoch,
                    a.valid_for_ms,
                    end - T0
                ));
            }
            let end = self.open.entry((writer, g)).or_insert(0);
            *end = (*end).max(now + a.valid_for_ms);
            self.held_epoch.insert((writer, g), a.epoch);
        }
    }

    /// The writer closed its gate on group `g` at `now` (before releasing it).
    fn close(&mut self, writer: Writer, g: usize, now: u64) {
        if let Some(end) = self.open.get_mut(&(writer, g)) {
            *end = (*end).min(now);
        }
    }
}

struct Interleaving {
    service: Service,
    clock: FakeClock,
    cfg: LeaseConfig,
    hosts: [HostId; 3],
    /// The incarnation each host's agent runs now (c sends none: the default incarnation).
    incarnation: [u32; 3],
    /// Group B's definition, for re-creation after a delete.
    members_b: BTreeMap<HostId, Member>,
    model: Model,
}

impl Interleaving {
    fn incarnation_id(&self, i: usize, n: u32) -> Option<Incarnation> {
        (i < 2)
            .then(|| Incarnation::parse(&format!("s{}-{}-{n}", self.model.seed, HOSTS[i])).unwrap())
    }

    fn request(&self, writer: Writer, rng: &mut StdRng) -> HostCheck {
        let (i, n) = writer;
        let groups = self
            .model
            .groups
            .iter()
            .filter(|_| rng.random_bool(0.5))
            .cloned()
            .collect();
        let watch = (0..3)
            .filter(|j| *j != i && rng.random_bool(0.3))
            .map(|j| self.hosts[j].clone())
            .collect();
        HostCheck {
            host: self.hosts[i].clone(),
            healthy: rng.random_bool(0.9),
            heartbeat: rng.random_bool(0.6),
            incarnation: self.incarnation_id(i, n),
            groups,
            watch,
            watch_groups: Vec::new(),
        }
    }

    fn describe(request: &HostCheck, writer: Writer) -> String {
        format!(
            "{writer:?} check hb={} ok={} groups={:?} watch={:?}",
            request.heartbeat,
            request.healthy,
            request
                .groups
                .iter()
                .map(|g| g.as_str())
                .collect::<Vec<_>>(),
            request.watch.iter().map(|h| h.as_str()).collect::<Vec<_>>()
        )
    }

    fn answered(&self, writer: Writer, result: Result<HostAnswer, CheckError>) -> Vec<CheckAnswer> {
        match result {
            Ok(answer) => answers(&answer),
            Err(e) => self.model.fail(format!("{writer:?}'s check failed: {e}")),
        }
    }

    async fn check(&mut self, writer: Writer, rng: &mut StdRng) {
        let now = self.clock.now_ms();
        let request = self.request(writer, rng);
        self.model.trace.push(format!(
            "+{} {}",
            now - T0,
            Self::describe(&request, writer)
        ));
        let result = self.service.check_host(&request).await;
        let got = self.answered(writer, result);
        self.model.observe(writer, now, &got);
    }

    /// c's v1 check of one group (c uses the default incarnation, as v1 callers do).
    async fn v1_check(&mut self, g: usize, rng: &mut StdRng) {
        let now = self.clock.now_ms();
        let (healthy, heartbeat) = (rng.random_bool(0.9), rng.random_bool(0.6));
        self.model.trace.push(format!(
            "+{} (2, 0) v1 check {} hb={heartbeat} ok={healthy}",
            now - T0,
            self.model.groups[g]
        ));
        let result = self
            .service
            .check_group(&self.model.groups[g], &self.hosts[2], healthy, heartbeat)
            .await;
        match result {
            Ok(answer) => self.model.observe((2, 0), now, &[answer]),
            Err(e) => self.model.fail(format!("c's v1 check failed: {e}")),
        }
    }

    async fn two_checks(&mut self, i: usize, j: usize, rng: &mut StdRng) {
        let now = self.clock.now_ms();
        let (wi, wj) = ((i, self.incarnation[i]), (j, self.incarnation[j]));
        let (ri, rj) = (self.request(wi, rng), self.request(wj, rng));
        self.model.trace.push(format!(
            "+{} at once: {} | {}",
            now - T0,
            Self::describe(&ri, wi),
            Self::describe(&rj, wj)
        ));
        let (ai, aj) = tokio::join!(self.service.check_host(&ri), self.service.check_host(&rj));
        let (gi, gj) = (self.answered(wi, ai), self.answered(wj, aj));
        self.model.observe(wi, now, &gi);
        self.model.observe(wj, now, &gj);
    }

    /// The renewer's round over this interleaving's hosts (the Hosts table is shared by all
    /// interleavings, each on its own clock, so `renew_round`'s scan is not used here): the
    /// same decision and write per host, racing a check.
    async fn renew_racing_a_check(&mut self, writer: Writer, rng: &mut StdRng) -> u64 {
        let now = self.clock.now_ms();
        let request = self.request(writer, rng);
        self.model.trace.push(format!(
            "+{} renewer round, racing {}",
            now - T0,
            Self::describe(&request, writer)
        ));
        let store = self.service.store();
        let renew = async {
            let reads = store.read(&self.hosts, &[]).await.expect("renewer read");
            let mut renewed = 0;
            for record in reads.hosts.values() {
                if let Ok(plan) = renew_decision(record, now, &self.cfg) {
                    if let RenewOutcome::Renewed { .. } = store.renew(&plan).await.expect("renew") {
                        renewed += 1;
                    }
                }
            }
            renewed
        };
        let (renewed, result) = tokio::join!(renew, self.service.check_host(&request));
        let got = self.answered(writer, result);
        self.model.observe(writer, now, &got);
        renewed
    }

    /// The writer's agent closes its gate on the group and releases it, with the epoch of its
    /// latest writable answer for it (which may be stale). An agent only releases what it held.
    async fn release(&mut self, writer: Writer, g: usize) -> bool {
        let Some(epoch) = self.model.held_epoch.get(&(writer, g)).copied() else {
            return false;
        };
        let now = self.clock.now_ms();
        self.model.close(writer, g, now);
        self.model.trace.push(format!(
            "+{} {writer:?} releases {} at epoch {epoch}",
            now - T0,
            self.model.groups[g]
        ));
        let result = self
            .service
            .release(&self.model.groups[g], &self.hosts[writer.0], epoch)
            .await;
        match result {
            Ok(_) => true,
            Err(
                CheckError::StaleRelease { .. }
                | CheckError::NotMember { .. }
                | CheckError::UnknownGroup(_),
            ) => false,
            Err(e) => self.model.fail(format!("{writer:?}'s release failed: {e}")),
        }
    }

    async fn drain(&mut self, g: usize, i: usize, draining: bool) {
        self.model.trace.push(format!(
            "+{} drain {} of {} = {draining}",
            self.clock.now_ms() - T0,
            HOSTS[i],
            self.model.groups[g]
        ));
        let result = self
            .service
            .set_draining(&self.model.groups[g], &self.hosts[i], draining)
            .await;
        match result {
            Ok(_) | Err(CheckError::NotMember { .. }) => {}
            Err(e) => self.model.fail(format!("drain failed: {e}")),
        }
    }

    /// Deletes group B when it has no live grant and defines it again at once.
    async fn delete_and_recreate(&mut self) -> bool {
        let b = self.model.groups[1].clone();
        self.model.trace.push(format!(
            "+{} delete and re-create {b}",
            self.clock.now_ms() - T0
        ));
        let deleted = self.service.delete_group(&b).await;
        match deleted {
            Ok(()) => {
                let created = self
                    .service
                    .create_group(b, self.cfg.lease_ms, self.members_b.clone())
                    .await;
                if let Err(e) = created {
                    self.model.fail(format!("re-create failed: {e}"));
                }
                true
            }
            Err(CheckError::LeaseHeld { .. }) => false,
            Err(e) => self.model.fail(format!("delete failed: {e}")),
        }
    }

    /// The invariants on the store after a step: no epoch went back. Returns the step's
    /// acquisitions, takeovers and revocations.
    async fn settle(&mut self) -> (u64, u64, u64) {
        let read = self
            .service
            .store()
            .read(&self.hosts, &self.model.groups)
            .await;
        let reads = match read {
            Ok(reads) => reads,
            Err(e) => self.model.fail(format!("read failed: {e}")),
        };
        let (mut acquisitions, mut takeovers, mut revocations) = (0, 0, 0);
        let groups = self.model.groups.clone();
        for (g, id) in groups.iter().enumerate() {
            let Some(record) = reads.groups.get(id) else {
                self.model.fail(format!("group {id} vanished"));
            };
            let before = self.model.group_epochs[g];
            if record.epoch < before {
                self.model.fail(format!(
                    "group {id} epoch went back {before} -> {}",
                    record.epoch
                ));
            }
            if record.epoch > before {
                acquisitions += record.epoch.0 - before.0;
                if record.holder.is_some()
                    && self.model.holders[g].is_some()
                    && record.holder != self.model.holders[g]
                {
                    takeovers += 1;
                }
            }
            self.model.group_epochs[g] = record.epoch;
            if record.holder.is_some() {
                self.model.holders[g] = record.holder.clone();
            }
        }
        for (i, id) in self.hosts.iter().enumerate() {
            let epoch = reads.hosts.get(id).map(|h| h.epoch).unwrap_or_default();
            let before = self.model.host_epochs[i];
            if epoch < before {
                self.model
                    .fail(format!("host {id} epoch went back {before} -> {epoch}"));
            }
            revocations += epoch.0 - before.0;
            self.model.host_epochs[i] = epoch;
        }
        (acquisitions, takeovers, revocations)
    }
}

async fn interleaving(seed: u64, store: DynamoLeaseStore, cfg: LeaseConfig, totals: &Totals) {
    let mut rng = StdRng::seed_from_u64(seed);
    let clock = FakeClock::at(T0);
    let service = LeaseService::new(store, cfg, clock.clone());
    let hosts = HOSTS.map(|h| host(&format!("s{seed}-{h}")));
    let groups = [
        group_id(&format!("s{seed}-A")),
        group_id(&format!("s{seed}-B")),
    ];
    let names = hosts.clone().map(String::from);
    // A: a (priority 3), b, c. B: b (2), c: a is no member of B and asks for it anyway.
    let members_a = new_group(
        "x",
        &[names[0].as_str(), names[1].as_str(), names[2].as_str()],
        cfg.lease_ms,
        T0,
    )
    .members;
    let members_b = new_group(
        "x",
        &[names[1].as_str(), names[2].as_str()],
        cfg.lease_ms,
        T0,
    )
    .members;
    for (g, members) in [(&groups[0], &members_a), (&groups[1], &members_b)] {
        service
            .create_group(g.clone(), cfg.lease_ms, members.clone())
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: create {g}: {e}"));
    }
    let mut run = Interleaving {
        service,
        clock: clock.clone(),
        cfg,
        hosts,
        incarnation: [0; 3],
        members_b,
        model: Model {
            seed,
            groups,
            open: BTreeMap::new(),
            held_epoch: BTreeMap::new(),
            group_epochs: [Epoch(0); 2],
            holders: [None, None],
            host_epochs: [Epoch(0); 3],
            trace: Vec::new(),
        },
    };
    for _ in 0..STEPS {
        let i: usize = rng.random_range(0..3);
        let g: usize = rng.random_range(0..2);
        let current = (i, run.incarnation[i]);
        match rng.random_range(0..100u32) {
            0..=21 => {
                let by: u64 = if rng.random_bool(0.3) {
                    rng.random_range(600..=3_000)
                } else {
                    rng.random_range(0..600)
                };
                let now = clock.advance(by);
                run.model
                    .trace
                    .push(format!("+{} (advanced {by})", now - T0));
            }
            22..=49 => {
                if i == 2 && rng.random_bool(0.3) {
                    run.v1_check(g, &mut rng).await;
                } else {
                    run.check(current, &mut rng).await;
                }
            }
            50..=61 => {
                let j = (i + rng.random_range(1..3)) % 3;
                run.two_checks(i, j, &mut rng).await;
            }
            62..=71 => {
                let renewed = run.renew_racing_a_check(current, &mut rng).await;
                Totals::add(&totals.renewals, renewed);
            }
            72..=83 => {
                if run.release(current, g).await {
                    Totals::add(&totals.releases, 1);
                }
            }
            84..=87 if i < 2 => {
                run.incarnation[i] += 1;
                run.model.trace.push(format!(
                    "+{} {} restarts as incarnation {}",
                    clock.now_ms() - T0,
                    HOSTS[i],
                    run.incarnation[i]
                ));
                Totals::add(&totals.restarts, 1);
            }
            88..=91 if i < 2 && run.incarnation[i] > 0 => {
                // The previous process still runs (paused, then back) and polls.
                run.check((i, run.incarnation[i] - 1), &mut rng).await;
            }
            92..=95 => {
                let draining = rng.random_bool(0.5);
                run.drain(g, i, draining).await;
            }
            96..=99 => {
                if run.delete_and_recreate().await {
                    Totals::add(&totals.deletes, 1);
                }
            }
            _ => run.check(current, &mut rng).await,
        }
        let (acquisitions, takeovers, revocations) = run.settle().await;
        Totals::add(&totals.acquisitions, acquisitions);
        Totals::add(&totals.takeovers, takeovers);
        Totals::add(&totals.revocations, revocations);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_random_interleavings_never_grant_overlapping_windows_nor_move_an_epoch_back() {
    let client = dynamodb(None).await;
    let store = store(&client).await;
    // A 2 s lease and a 600 ms heartbeat timeout, so lapses, revocations and takeovers are
    // common within sixteen steps.
    let cfg = LeaseConfig::new(2_000, 500, 100, 600, 200).unwrap();
    let totals = Totals::default();
    let seeds: Vec<u64> = match std::env::var("TENURE_INTERLEAVING_SEED") {
        Ok(seed) => vec![seed.parse().expect("TENURE_INTERLEAVING_SEED is a number")],
        Err(_) => (0..INTERLEAVINGS).collect(),
    };
    for batch in seeds.chunks(BATCH as usize) {
        futures::stream::iter(batch.iter().copied())
            .map(|seed| interleaving(seed, store.clone(), cfg, &totals))
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
        eprintln!(
            "interleavings {}..={}: {}",
            batch[0],
            batch[batch.len() - 1],
            totals.summary()
        );
    }
    if seeds.len() as u64 == INTERLEAVINGS {
        // The histories must exercise the protocol, or the invariants prove nothing.
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let summary = totals.summary();
        assert!(get(&totals.acquisitions) >= INTERLEAVINGS, "{summary}");
        assert!(get(&totals.takeovers) >= 50, "{summary}");
        assert!(get(&totals.revocations) >= 20, "{summary}");
        assert!(get(&totals.releases) >= 50, "{summary}");
        assert!(get(&totals.renewals) >= 50, "{summary}");
        assert!(get(&totals.restarts) >= 50, "{summary}");
        assert!(get(&totals.deletes) >= 10, "{summary}");
    }
    drop_lease_tables(&store).await;
}
