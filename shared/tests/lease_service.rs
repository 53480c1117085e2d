//! The lease service on DynamoDB (`LeaseService<DynamoLeaseStore, FakeClock>` on MiniStack):
//! what protocol v2 promises a host, with the DynamoDB requests counted on the wire
//! (`RequestCounter`). Steady state is one request per check whatever the number of groups a
//! host is in; a v1 check from a primary is one `BatchGetItem`; a release hands over at the
//! next candidate's very next check; a new group goes to its best live candidate; a dead
//! holder is revoked once and all its groups move in one check; a new incarnation never
//! inherits grants; a renewer outage does not stop a checking host's writes; a group with a
//! live grant is never deleted, and its epoch survives deletion and re-creation.
//!
//! The same behaviour on the in-memory store is unit-tested in `src/lease/service_tests.rs`;
//! the renewer's own cost is in `lease_renewer.rs`.

mod support;

use std::collections::BTreeMap;
use support::*;
use tenure::clock::FakeClock;
use tenure::ids::{GroupId, Incarnation};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::protocol::RenewSkip;
use tenure::lease::record::Epoch;
use tenure::lease::renewer::{renew_round, RenewerConfig, RoundReport};
use tenure::lease::service::{
    CheckError, CreateGroupError, GroupEntry, HostAnswer, HostCheck, LeaseService,
};
use tenure::lease::store::{CreateOutcome, LeaseStore};
use tenure::lease::{CheckAnswer, LeaseConfig};
use tenure::telemetry::RequestCounter;

const T0: u64 = 1_800_000_000_000;

/// One region: a service on fresh tables, its fake clock, and the requests it sends.
struct Region {
    service: LeaseService<DynamoLeaseStore, FakeClock>,
    clock: FakeClock,
    counter: RequestCounter,
    cfg: LeaseConfig,
}

impl Region {
    async fn new() -> Self {
        let counter = RequestCounter::new();
        let client = dynamodb(Some(counter.clone())).await;
        let store = store(&client).await;
        let cfg = LeaseConfig::default();
        let clock = FakeClock::at(T0);
        Self {
            service: LeaseService::new(store, cfg, clock.clone()),
            clock,
            counter,
            cfg,
        }
    }

    fn store(&self) -> &DynamoLeaseStore {
        self.service.store()
    }

    /// A group whose members' priorities descend in the order given.
    async fn create(&self, id: &str, hosts: &[&str]) {
        let members = new_group(id, hosts, self.cfg.lease_ms, T0).members;
        let outcome = self
            .service
            .create_group(group_id(id), self.cfg.lease_ms, members)
            .await
            .unwrap_or_else(|e| panic!("create {id}: {e}"));
        assert_eq!(outcome, CreateOutcome::Created, "create {id}");
    }

    async fn check(&self, request: HostCheck) -> HostAnswer {
        self.service
            .check_host(&request)
            .await
            .unwrap_or_else(|e| panic!("check by {}: {e}", request.host))
    }

    async fn renew_round(&self) -> RoundReport {
        let renewer = RenewerConfig {
            scan_segments: 2,
            max_in_flight: 8,
            stop_margin_ms: 0,
        };
        renew_round(self.store(), &self.cfg, &self.clock, &renewer).await
    }

    async fn host_epoch(&self, id: &str) -> Epoch {
        self.store()
            .read_host(&host(id))
            .await
            .unwrap()
            .map(|h| h.epoch)
            .unwrap_or_default()
    }

    /// The old lease of a host that last heartbeated (and was renewed) at `seen`.
    fn revocable_after(&self, seen: u64) -> u64 {
        seen + self.cfg.lease_ms + self.cfg.clock_skew_ms
    }

    async fn done(self) {
        drop_lease_tables(self.store()).await;
    }
}

/// A healthy check by `host_id` with the default incarnation, asking for nothing but its
/// attention; set `groups`, `watch` or `incarnation` with struct update syntax.
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

fn incarnation(id: &str) -> Option<Incarnation> {
    Some(Incarnation::parse(id).unwrap())
}

fn entry<'a>(answer: &'a HostAnswer, group: &str) -> &'a CheckAnswer {
    answer
        .groups
        .iter()
        .find_map(|e| match e {
            GroupEntry::Answer(a) if a.group_id.as_str() == group => Some(a),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no answer for {group} in {answer:?}"))
}

fn error_code<'a>(answer: &'a HostAnswer, group: &str) -> &'a str {
    answer
        .groups
        .iter()
        .find_map(|e| match e {
            GroupEntry::Error { group_id, error } if group_id == group => Some(error.code.as_str()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no error entry for {group} in {answer:?}"))
}

fn writable_count(answer: &HostAnswer) -> usize {
    answer
        .groups
        .iter()
        .filter(|e| matches!(e, GroupEntry::Answer(a) if a.writable))
        .count()
}

fn requests(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(op, n)| (op.to_string(), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_in_a_thousand_groups_checks_with_one_request_in_the_steady_state() {
    let r = Region::new().await;
    for i in 0..1_000 {
        r.create(&format!("g{i:04}"), &["a", "b"]).await;
    }
    // a's first check heartbeats, renews itself, and takes every group from its attention.
    let first = r.check(check("a", true)).await;
    assert_eq!(
        first.attention.len(),
        1_000,
        "every new group is in a's attention"
    );
    assert_eq!(
        writable_count(&first),
        1_000,
        "a is the best live candidate of every group"
    );

    // Steady state, not due for a heartbeat: one consistent read of its own host item.
    r.clock.set(T0 + r.cfg.poll_interval_ms);
    r.counter.take();
    let steady = r.check(check("a", false)).await;
    assert_eq!(
        r.counter.take(),
        requests(&[("BatchGetItem", 1)]),
        "a steady-state check is one request, whatever the number of groups"
    );
    assert_eq!((steady.host_epoch, steady.groups.len()), (Epoch(0), 0));
    assert!(steady.attention.is_empty(), "{steady:?}");
    assert!(
        steady.valid_for_ms > 0,
        "the host lease covers all 1,000 grants: {steady:?}"
    );

    // A heartbeat check: the heartbeat write alone.
    let heartbeat_at = T0 + 1_500;
    r.clock.set(heartbeat_at);
    let beat = r.check(check("a", true)).await;
    assert_eq!(
        r.counter.take(),
        requests(&[("UpdateItem", 1)]),
        "a heartbeat check is one request"
    );
    assert!(beat.valid_for_ms > 0, "{beat:?}");

    // The v1 endpoint from the primary: host and group in one BatchGetItem ...
    r.clock.set(heartbeat_at + 100);
    let v1 = r
        .service
        .check_group(&group_id("g0007"), &host("a"), true, true)
        .await
        .unwrap();
    assert_eq!(
        r.counter.take(),
        requests(&[("BatchGetItem", 1)]),
        "a v1 check from a primary whose heartbeat is not due is one BatchGetItem"
    );
    assert!(v1.writable && v1.epoch == Epoch(1), "{v1:?}");
    // ... plus the heartbeat once it is due.
    r.clock.set(heartbeat_at + r.cfg.heartbeat_timeout_ms / 3);
    let v1 = r
        .service
        .check_group(&group_id("g0008"), &host("a"), true, true)
        .await
        .unwrap();
    assert_eq!(
        r.counter.take(),
        requests(&[("BatchGetItem", 1), ("UpdateItem", 1)]),
        "the v1 check heartbeats the host only when its heartbeat is due"
    );
    assert!(v1.writable, "{v1:?}");
    r.done().await;
}

#[tokio::test]
async fn after_a_release_the_next_candidate_acquires_at_its_very_next_check() {
    let r = Region::new().await;
    r.create("g", &["a", "b"]).await;
    let a = r
        .check(HostCheck {
            groups: vec![group_id("g")],
            ..check("a", true)
        })
        .await;
    assert!(entry(&a, "g").writable, "{a:?}");
    let b = r.check(check("b", true)).await;
    let seen = entry(&b, "g");
    assert!(!seen.writable && seen.holder == Some(host("a")), "{seen:?}");

    let released_at = r.clock.advance(100);
    let released = r
        .service
        .release(&group_id("g"), &host("a"), Epoch(1))
        .await
        .unwrap();
    assert!(
        !released.writable && released.holder.is_none(),
        "{released:?}"
    );

    // b's very next check, a read in the same millisecond: the release is in its attention.
    let took = r.check(check("b", false)).await;
    assert_eq!(
        took.attention,
        vec![group_id("g")],
        "the release told b in the same transaction"
    );
    let g = entry(&took, "g");
    assert!(
        g.writable,
        "b acquires at once, without waiting a heartbeat_timeout: {took:?}"
    );
    assert_eq!(
        (g.epoch, g.holder.clone(), g.holder_host_epoch),
        (Epoch(2), Some(host("b")), Some(Epoch(0)))
    );
    assert_eq!(tenure::clock::Clock::now_ms(&r.clock), released_at);

    // The releaser is no candidate again right away.
    r.clock.advance(r.cfg.poll_interval_ms);
    let back = r
        .check(HostCheck {
            groups: vec![group_id("g")],
            ..check("a", true)
        })
        .await;
    let g = entry(&back, "g");
    assert!(!g.writable && g.holder == Some(host("b")), "{g:?}");
    r.done().await;
}

#[tokio::test]
async fn a_new_group_is_taken_by_its_best_live_candidate() {
    let r = Region::new().await;
    for h in ["a", "b", "c"] {
        r.check(check(h, true)).await;
    }
    r.clock.advance(10);
    r.create("g", &["b", "a", "c"]).await; // b first, then a, then c
    r.clock.advance(10);
    for h in ["a", "c"] {
        let answer = r.check(check(h, false)).await;
        let g = entry(&answer, "g");
        assert!(
            !g.writable && g.holder.is_none(),
            "{h} leaves the new group to b, its best live candidate: {g:?}"
        );
        assert!(g.poll_after_ms <= r.cfg.poll_interval_ms, "{g:?}");
    }
    let b = r.check(check("b", false)).await;
    let g = entry(&b, "g");
    assert!(g.writable, "{b:?}");
    assert_eq!((g.epoch, g.holder.clone()), (Epoch(1), Some(host("b"))));

    // The best member by priority has never been heard from: the best *live* one takes it.
    r.create("g2", &["zed", "a", "c"]).await;
    let a = r.check(check("a", false)).await;
    let g2 = entry(&a, "g2");
    assert!(g2.writable, "a is the best live candidate of g2: {a:?}");
    assert_eq!(g2.epoch, Epoch(1));
    let c = r.check(check("c", false)).await;
    assert!(!entry(&c, "g2").writable, "{c:?}");
    r.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_revokes_a_dead_holder_once_and_takes_all_its_groups() {
    let r = Region::new().await;
    let n = 50;
    let ids: Vec<GroupId> = (0..n).map(|i| group_id(&format!("d{i:02}"))).collect();
    for id in &ids {
        r.create(id.as_str(), &["a", "b"]).await;
    }
    let a = r.check(check("a", true)).await;
    assert_eq!(writable_count(&a), n, "{a:?}");
    let b = r.check(check("b", true)).await;
    assert_eq!(writable_count(&b), 0, "{b:?}");

    // a dies at T0. b keeps heartbeating and the renewer keeps renewing b.
    for s in 1..=10 {
        r.clock.set(T0 + s * 1_000);
        r.check(check("b", true)).await;
        r.renew_round().await;
    }
    let asks = HostCheck {
        groups: ids.clone(),
        watch: vec![host("a")],
        ..check("b", false)
    };
    r.clock.set(r.revocable_after(T0));
    let early = r.check(asks.clone()).await;
    assert_eq!(
        writable_count(&early),
        0,
        "at expiry + skew the dead holder may still be writing"
    );
    assert_eq!(
        r.host_epoch("a").await,
        Epoch(0),
        "not revoked at expiry + skew"
    );
    assert!(early.watched[0].live, "{early:?}");

    r.clock.set(r.revocable_after(T0) + 1);
    r.counter.take();
    let took = r.check(asks).await;
    let sent = r.counter.take();
    assert_eq!(
        writable_count(&took),
        n,
        "b takes every group in one check: {took:?}"
    );
    for id in &ids {
        let g = entry(&took, id.as_str());
        assert_eq!(
            (g.epoch, g.holder.clone(), g.holder_host_epoch),
            (Epoch(2), Some(host("b")), Some(Epoch(0))),
            "{id}"
        );
    }
    assert_eq!(
        r.host_epoch("a").await,
        Epoch(1),
        "one revocation, however many groups"
    );
    assert_eq!(
        sent,
        requests(&[("BatchGetItem", 1), ("UpdateItem", n as u64 + 1)]),
        "one read, one revocation, one acquisition per group"
    );
    assert_eq!(
        (took.watched[0].host_epoch, took.watched[0].live),
        (Epoch(1), false),
        "{took:?}"
    );
    r.done().await;
}

/// a holds `g` under incarnation "old"; from T0 + 1 s its agent runs as "new" and checks every
/// second (b, the other member, is never heard from). Returns once the clock is at the old
/// lease's expiry + skew, with "new" never answered writable and never renewed.
async fn restarted_primary() -> Region {
    let r = Region::new().await;
    r.create("g", &["a", "b"]).await;
    let old = r
        .check(HostCheck {
            incarnation: incarnation("old"),
            groups: vec![group_id("g")],
            ..check("a", true)
        })
        .await;
    assert!(entry(&old, "g").writable, "{old:?}");
    let expiry = T0 + r.cfg.lease_ms;
    let new = HostCheck {
        incarnation: incarnation("new"),
        groups: vec![group_id("g")],
        ..check("a", true)
    };
    let times: Vec<u64> = (1..=10)
        .map(|s| T0 + s * 1_000)
        .chain([expiry + r.cfg.clock_skew_ms])
        .collect();
    for now in times {
        r.clock.set(now);
        let answer = r.check(new.clone()).await;
        let g = entry(&answer, "g");
        assert!(
            !g.writable && answer.valid_for_ms == 0,
            "a new incarnation never inherits grants (at +{} ms): {answer:?}",
            now - T0
        );
        assert_eq!(
            answer.host_epoch,
            Epoch(0),
            "not revocable before expiry + skew"
        );
        let round = r.renew_round().await;
        assert_eq!(
            (
                round.renewed,
                round.skipped.get(&RenewSkip::IncarnationChanged)
            ),
            (0, Some(&1)),
            "no renewal while the incarnation changed: {round:?}"
        );
    }
    let record = r.store().read_host(&host("a")).await.unwrap().unwrap();
    assert_eq!(record.expires_at_ms, expiry, "{record:?}");
    assert!(record.incarnation_changed.is_some(), "{record:?}");
    r
}

#[tokio::test]
async fn a_new_incarnation_of_the_primary_revokes_its_own_host_once_the_old_lease_lapsed_and_reacquires(
) {
    let r = restarted_primary().await;
    let new = |heartbeat| HostCheck {
        incarnation: incarnation("new"),
        groups: vec![group_id("g")],
        ..check("a", heartbeat)
    };
    // Past the old lease and the skew, its own check (a read) revokes its host.
    r.clock.set(r.revocable_after(T0) + 1);
    let revoking = r.check(new(false)).await;
    assert_eq!(revoking.host_epoch, Epoch(1), "{revoking:?}");
    let record = r.store().read_host(&host("a")).await.unwrap().unwrap();
    assert_eq!(record.epoch, Epoch(1), "{record:?}");
    assert!(record.incarnation_changed.is_none(), "{record:?}");
    // By its next heartbeat it has renewed at the new epoch and taken the group afresh.
    r.clock.advance(r.cfg.heartbeat_timeout_ms / 3);
    let back = r.check(new(true)).await;
    let g = entry(&back, "g");
    assert!(g.writable && back.valid_for_ms > 0, "{back:?}");
    assert_eq!(
        (g.epoch, g.holder_host_epoch, back.host_epoch),
        (Epoch(2), Some(Epoch(1)), Epoch(1)),
        "group epoch + 1, at the new host epoch"
    );
    r.done().await;
}

/// `docs/protocol.md` (Traps: incarnations): once the old lease has lapsed past the skew, the new incarnation's
/// check revokes its own host and renewals resume at the new epoch; the groups are then
/// acquired afresh. The check that revokes is itself a check by a live, healthy, heard-from
/// host, so it should come back writable.
#[tokio::test]
async fn the_check_that_revokes_a_new_incarnations_own_host_also_reacquires_its_groups() {
    let r = restarted_primary().await;
    r.clock.set(r.revocable_after(T0) + 1);
    let answer = r
        .check(HostCheck {
            incarnation: incarnation("new"),
            groups: vec![group_id("g")],
            ..check("a", true)
        })
        .await;
    assert_eq!(answer.host_epoch, Epoch(1), "{answer:?}");
    let g = entry(&answer, "g");
    assert!(
        g.writable && answer.valid_for_ms > 0,
        "the check that revoked its own host should renew at the new epoch and re-acquire \
         (its heartbeat and the revocation carry the same millisecond, and renew needs \
         last_seen_ms > revoked_at_ms): {answer:?}"
    );
    assert_eq!((g.epoch, g.holder_host_epoch), (Epoch(2), Some(Epoch(1))));
    r.done().await;
}

#[tokio::test]
async fn with_no_renewer_for_three_lease_lengths_a_checking_host_stays_writable_at_the_same_epoch()
{
    let r = Region::new().await;
    r.create("g", &["a", "b"]).await;
    let asks = |heartbeat| HostCheck {
        groups: vec![group_id("g")],
        ..check("a", heartbeat)
    };
    let first = r.check(asks(true)).await;
    assert!(entry(&first, "g").writable, "{first:?}");
    let mut now = T0;
    let mut last_heartbeat = T0;
    let mut self_renewals = 0;
    r.counter.take();
    // No renew_round at all: heartbeat every heartbeat_timeout / 3, reads in between.
    while now < T0 + 3 * r.cfg.lease_ms {
        now = r.clock.advance(r.cfg.poll_interval_ms);
        let heartbeat = now - last_heartbeat >= r.cfg.heartbeat_timeout_ms / 3;
        if heartbeat {
            last_heartbeat = now;
        }
        let answer = r.check(asks(heartbeat)).await;
        let writes = r.counter.take().get("UpdateItem").copied().unwrap_or(0);
        self_renewals += writes.saturating_sub(u64::from(heartbeat));
        let g = entry(&answer, "g");
        assert!(
            g.writable && g.valid_for_ms > r.cfg.poll_interval_ms,
            "at +{} ms the window must reach past the next poll: {answer:?}",
            now - T0
        );
        assert_eq!(
            (answer.host_epoch, g.epoch),
            (Epoch(0), Epoch(1)),
            "self-renewal keeps the same host and group epochs"
        );
    }
    // The host renews itself only when its lease is within two renew intervals of ending.
    let most = 3 * r.cfg.lease_ms / (r.cfg.lease_ms - 2 * r.cfg.renew_interval_ms) + 1;
    assert!(
        (1..=most).contains(&self_renewals),
        "{self_renewals} self-renewals in three lease lengths (at most {most})"
    );
    r.done().await;
}

#[tokio::test]
async fn delete_refuses_a_live_grant_revokes_a_lapsed_holder_first_and_a_recreated_group_continues_its_epoch(
) {
    let r = Region::new().await;
    r.create("g", &["a", "b"]).await;
    let g = group_id("g");
    let a = r
        .check(HostCheck {
            groups: vec![g.clone()],
            ..check("a", true)
        })
        .await;
    let before = entry(&a, "g").epoch;
    assert_eq!(before, Epoch(1));
    match r.service.delete_group(&g).await {
        Err(CheckError::LeaseHeld { holder, .. }) => assert_eq!(holder, host("a")),
        other => panic!("deleting a group with a live grant must fail with LeaseHeld: {other:?}"),
    }
    let (record, _) = r.service.get_group(&g).await.unwrap();
    assert_eq!(
        record.holder,
        Some(host("a")),
        "the refused delete changed nothing"
    );

    // a dies; once its lease lapsed past the skew, the delete revokes it first.
    r.clock.set(r.revocable_after(T0) + 1);
    r.service
        .delete_group(&g)
        .await
        .expect("a lapsed holder is revoked, then the group deleted");
    assert_eq!(
        r.host_epoch("a").await,
        Epoch(1),
        "the delete revoked the lapsed holder"
    );
    let tombstone = r.store().read_group(&g).await.unwrap().unwrap();
    assert!(
        tombstone.deleted && tombstone.epoch == before,
        "{tombstone:?}"
    );
    assert!(matches!(
        r.service.get_group(&g).await,
        Err(CheckError::UnknownGroup(_))
    ));
    let asked = r
        .check(HostCheck {
            groups: vec![g.clone()],
            ..check("b", true)
        })
        .await;
    assert_eq!(error_code(&asked, "g"), "unknown_group");

    // Created again: the epoch continues, and the next acquisition is above it.
    r.create("g", &["a", "b"]).await;
    let (again, _) = r.service.get_group(&g).await.unwrap();
    assert_eq!(again.epoch, before, "re-creation continues the epoch");
    let b = r
        .check(HostCheck {
            groups: vec![g.clone()],
            ..check("b", true)
        })
        .await;
    let taken = entry(&b, "g");
    assert!(taken.writable, "{b:?}");
    assert!(
        taken.epoch > before,
        "{taken:?}: the fencing epoch never goes back across delete and re-create"
    );
    r.done().await;
}

#[tokio::test]
async fn a_group_definition_that_breaks_the_region_rules_is_refused() {
    let r = Region::new().await;
    let members = new_group("x", &["a"], 10_000, T0).members;
    let refused = r
        .service
        .create_group(group_id("short"), 5_999, members.clone())
        .await;
    assert!(
        matches!(refused, Err(CreateGroupError::InvalidLease(_))),
        "{refused:?}"
    );
    assert_eq!(
        r.store().read_group(&group_id("short")).await.unwrap(),
        None
    );
    let empty = r
        .service
        .create_group(group_id("empty"), 10_000, BTreeMap::new())
        .await;
    assert!(
        matches!(empty, Err(CreateGroupError::NoMembers)),
        "{empty:?}"
    );
    assert_eq!(
        r.service
            .create_group(group_id("ok"), 6_000, members.clone())
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    let record = r
        .store()
        .read_group(&group_id("ok"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.lease_ms, record.epoch, record.holder),
        (6_000, Epoch(0), None)
    );
    assert_eq!(
        r.service
            .create_group(group_id("ok"), 6_000, members)
            .await
            .unwrap(),
        CreateOutcome::AlreadyExists
    );
    r.done().await;
}
