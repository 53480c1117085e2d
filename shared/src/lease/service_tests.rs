//! The v2 use cases on the in-memory store (the protocol's own predicates under one lock), with
//! a fake clock: many groups failing over as one, handover at the next check, incarnations,
//! renewer outage, attention, drain, delete and re-create, upgrade from v1. The same behaviour
//! against DynamoDB (MiniStack) is in `shared/tests/`.

use super::*;
use crate::clock::FakeClock;
use crate::lease::memory::MemoryLeaseStore;

const T0: Millis = 1_800_000_000_000;

type Service = LeaseService<MemoryLeaseStore, FakeClock>;

fn host(id: &str) -> HostId {
    HostId::parse(id).unwrap()
}

fn group(id: &str) -> GroupId {
    GroupId::parse(id).unwrap()
}

fn inc(id: &str) -> Incarnation {
    Incarnation::parse(id).unwrap()
}

fn setup() -> (Service, FakeClock) {
    let clock = FakeClock::at(T0);
    (
        LeaseService::new(
            MemoryLeaseStore::new(),
            LeaseConfig::default(),
            clock.clone(),
        ),
        clock,
    )
}

/// Members a (priority 3), b (2), c (1).
fn abc() -> BTreeMap<HostId, Member> {
    [("a", 3), ("b", 2), ("c", 1)]
        .into_iter()
        .map(|(h, p)| (host(h), Member::new(format!("az-{h}"), p)))
        .collect()
}

fn request(h: &str, incarnation: &str, heartbeat: bool, groups: &[GroupId]) -> HostCheck {
    HostCheck {
        host: host(h),
        healthy: true,
        heartbeat,
        incarnation: Some(inc(incarnation)),
        groups: groups.to_vec(),
        watch: Vec::new(),
        watch_groups: Vec::new(),
    }
}

fn answers(answer: &HostAnswer) -> BTreeMap<GroupId, CheckAnswer> {
    answer
        .groups
        .iter()
        .filter_map(|e| match e {
            GroupEntry::Answer(a) => Some((a.group_id.clone(), a.clone())),
            GroupEntry::Error { .. } => None,
        })
        .collect()
}

fn writable_count(answer: &HostAnswer) -> usize {
    answers(answer).values().filter(|a| a.writable).count()
}

async fn create(service: &Service, ids: &[GroupId]) {
    for g in ids {
        service
            .create_group(g.clone(), 10_000, abc())
            .await
            .unwrap();
    }
}

fn groups(n: usize) -> Vec<GroupId> {
    (0..n).map(|i| group(&format!("g{i:03}"))).collect()
}

/// The renewer reaching a new host between its check's heartbeat and the check's own renewal
/// (seen on MiniStack: the first check of a host answered "lapsed" and took nothing).
#[tokio::test]
async fn a_check_whose_renewal_loses_to_the_renewer_answers_from_the_renewed_lease() {
    let (service, _clock) = setup();
    let ids = groups(3);
    create(&service, &ids).await;
    service.store().renewer_goes_first();
    let a = service
        .check_host(&request("a", "a1", true, &ids))
        .await
        .unwrap();
    assert!(a.valid_for_ms > 0, "{a:?}");
    assert_eq!(writable_count(&a), 3, "{a:?}");
    assert!(answers(&a).values().all(|g| g.epoch == Epoch(1)));
}

#[tokio::test]
async fn a_dead_host_is_revoked_once_and_all_its_groups_move_in_one_check() {
    let (service, clock) = setup();
    let ids = groups(50);
    create(&service, &ids).await;
    // Everyone checks in; a (priority 3) takes all 50 groups.
    let a = service
        .check_host(&request("a", "a1", true, &ids))
        .await
        .unwrap();
    assert_eq!(writable_count(&a), 50);
    service
        .check_host(&request("b", "b1", true, &ids))
        .await
        .unwrap();
    // a dies. b keeps heartbeating (its own lease renews itself) and asks again past a's
    // expiry + skew.
    let cfg = *service.config();
    let mut now = T0;
    while now < T0 + cfg.lease_ms + cfg.clock_skew_ms {
        now += cfg.poll_interval_ms;
        clock.set(now);
        service
            .check_host(&request("b", "b1", true, &[]))
            .await
            .unwrap();
    }
    clock.set(T0 + cfg.lease_ms + cfg.clock_skew_ms + 1);
    let b = service
        .check_host(&request("b", "b1", true, &ids))
        .await
        .unwrap();
    assert_eq!(writable_count(&b), 50, "{b:?}");
    assert!(answers(&b)
        .values()
        .all(|g| g.epoch == Epoch(2) && g.holder_host_epoch == Some(Epoch(0))));
    let a_host = service.store().host(&host("a")).unwrap();
    assert_eq!(
        a_host.epoch,
        Epoch(1),
        "one revocation for all of a's groups"
    );
    // a comes back: at host epoch 1 it holds none of them.
    let back = service
        .check_host(&request("a", "a1", true, &ids))
        .await
        .unwrap();
    assert_eq!(back.host_epoch, Epoch(1));
    assert_eq!(writable_count(&back), 0);
}

#[tokio::test]
async fn after_a_release_the_next_candidate_acquires_at_its_very_next_check() {
    let (service, clock) = setup();
    let g = group("orders");
    create(&service, std::slice::from_ref(&g)).await;
    for h in ["a", "b", "c"] {
        service
            .check_host(&request(h, h, true, std::slice::from_ref(&g)))
            .await
            .unwrap();
    }
    let held = service.get_group(&g).await.unwrap().0;
    assert_eq!(held.holder, Some(host("a")));
    clock.set(T0 + 100);
    service.release(&g, &host("a"), held.epoch).await.unwrap();
    // b learns of it from its attention set (it asks about no group) and takes it at once,
    // though a, which released, is healthy and has the higher priority.
    clock.set(T0 + 150);
    let b = service
        .check_host(&request("b", "b", false, &[]))
        .await
        .unwrap();
    assert_eq!(b.attention, vec![g.clone()]);
    let answer = &answers(&b)[&g];
    assert!(answer.writable, "{answer:?}");
    assert_eq!(answer.epoch, held.epoch.next());
    // The attention is consumed: the next check has none.
    let again = service
        .check_host(&request("b", "b", false, &[]))
        .await
        .unwrap();
    assert!(again.attention.is_empty() && again.groups.is_empty());
}

#[tokio::test]
async fn a_lower_candidate_waits_one_heartbeat_timeout_from_the_release() {
    let (service, clock) = setup();
    let g = group("orders");
    create(&service, std::slice::from_ref(&g)).await;
    for h in ["a", "b", "c"] {
        service
            .check_host(&request(h, h, true, std::slice::from_ref(&g)))
            .await
            .unwrap();
    }
    let epoch = service.get_group(&g).await.unwrap().0.epoch;
    service.release(&g, &host("a"), epoch).await.unwrap();
    // c (priority 1) asks first: b is a better live candidate, so c waits.
    let c = service
        .check_host(&request("c", "c", false, std::slice::from_ref(&g)))
        .await
        .unwrap();
    assert!(!answers(&c)[&g].writable);
    let cfg = *service.config();
    clock.set(T0 + cfg.heartbeat_timeout_ms);
    // b has gone quiet meanwhile (its last heartbeat at T0), so past the wait c takes it.
    let c = service
        .check_host(&request("c", "c", true, std::slice::from_ref(&g)))
        .await
        .unwrap();
    assert!(answers(&c)[&g].writable, "{c:?}");
}

#[tokio::test]
async fn a_new_incarnation_never_inherits_grants_and_reacquires_after_the_old_lease_lapses() {
    let (service, clock) = setup();
    let g = group("orders");
    create(&service, std::slice::from_ref(&g)).await;
    let first = service
        .check_host(&request("a", "old", true, std::slice::from_ref(&g)))
        .await
        .unwrap();
    assert!(answers(&first)[&g].writable);
    let epoch = answers(&first)[&g].epoch;
    // The process restarts with a new incarnation: not writable, and no renewal any more.
    clock.set(T0 + 100);
    let restarted = service
        .check_host(&request("a", "new", true, std::slice::from_ref(&g)))
        .await
        .unwrap();
    assert!(!answers(&restarted)[&g].writable);
    assert_eq!(restarted.valid_for_ms, 0);
    let record = service.store().host(&host("a")).unwrap();
    assert!(record.incarnation_changed.is_some());
    assert!(renew_decision(&record, T0 + 200, service.config()).is_err());
    // The old process, if it still ran, is not writable either.
    let old = service
        .check_host(&request("a", "old", true, std::slice::from_ref(&g)))
        .await
        .unwrap();
    assert!(!answers(&old)[&g].writable);
    // Past the old lease and the skew, the new incarnation revokes its own host, renews, and
    // takes the group afresh at a higher group epoch.
    let cfg = *service.config();
    let mut now = T0 + cfg.lease_ms + cfg.clock_skew_ms + 1;
    let mut regained = None;
    for _ in 0..10 {
        clock.set(now);
        let answer = service
            .check_host(&request("a", "new", true, std::slice::from_ref(&g)))
            .await
            .unwrap();
        if answers(&answer)[&g].writable {
            regained = Some(answer);
            break;
        }
        now += cfg.poll_interval_ms;
    }
    let regained = regained.expect("the new incarnation becomes primary");
    assert_eq!(regained.host_epoch, Epoch(1));
    assert_eq!(answers(&regained)[&g].epoch, epoch.next());
}

#[tokio::test]
async fn with_the_renewer_down_a_live_host_keeps_writing_at_the_same_epoch() {
    let (service, clock) = setup();
    let g = group("orders");
    create(&service, std::slice::from_ref(&g)).await;
    let cfg = *service.config();
    let mut now = T0;
    let first = service
        .check_host(&request("a", "a", true, std::slice::from_ref(&g)))
        .await
        .unwrap();
    let epoch = answers(&first)[&g].epoch;
    // Three lease lengths with no renewer at all: heartbeat every heartbeat_timeout / 3,
    // read-only checks in between, as the agent polls.
    let mut last_heartbeat = now;
    while now < T0 + 3 * cfg.lease_ms {
        now += cfg.poll_interval_ms;
        clock.set(now);
        let heartbeat = now - last_heartbeat >= cfg.heartbeat_timeout_ms / 3;
        if heartbeat {
            last_heartbeat = now;
        }
        let answer = service
            .check_host(&request("a", "a", heartbeat, std::slice::from_ref(&g)))
            .await
            .unwrap();
        let a = &answers(&answer)[&g];
        assert!(
            a.writable
                && a.valid_for_ms
                    > 2 * cfg.renew_interval_ms - cfg.clock_skew_ms - cfg.poll_interval_ms,
            "at {}: {a:?}",
            now - T0
        );
        assert_eq!((answer.host_epoch, a.epoch), (Epoch(0), epoch));
    }
}

#[tokio::test]
async fn a_drained_holder_keeps_writing_until_someone_can_take_over() {
    let (service, _clock) = setup();
    let g = group("orders");
    create(&service, std::slice::from_ref(&g)).await;
    service
        .check_host(&request("a", "a", true, std::slice::from_ref(&g)))
        .await
        .unwrap();
    service.set_draining(&g, &host("a"), true).await.unwrap();
    // b and c have never checked in: nobody can take over, so a is not told to drain.
    let alone = service
        .check_host(&request("a", "a", true, &[]))
        .await
        .unwrap();
    assert_eq!(
        alone.attention,
        vec![g.clone()],
        "the drain is in a's attention"
    );
    let a = &answers(&alone)[&g];
    assert!(a.writable && !a.draining, "{a:?}");
    // Once b is live, a is told to hand over.
    service
        .check_host(&request("b", "b", true, &[]))
        .await
        .unwrap();
    let told = service
        .check_host(&request("a", "a", true, std::slice::from_ref(&g)))
        .await
        .unwrap();
    assert!(answers(&told)[&g].draining);
}

#[tokio::test]
async fn delete_refuses_a_live_grant_and_a_recreated_group_continues_its_epoch() {
    let (service, clock) = setup();
    let g = group("orders");
    create(&service, std::slice::from_ref(&g)).await;
    let a = service
        .check_host(&request("a", "a", true, std::slice::from_ref(&g)))
        .await
        .unwrap();
    let epoch = answers(&a)[&g].epoch;
    assert!(matches!(
        service.delete_group(&g).await,
        Err(CheckError::LeaseHeld { .. })
    ));
    // a dies; past its lease and the skew the delete revokes it and tombstones the group.
    let cfg = *service.config();
    clock.set(T0 + cfg.lease_ms + cfg.clock_skew_ms + 1);
    service.delete_group(&g).await.unwrap();
    assert_eq!(service.store().host(&host("a")).unwrap().epoch, Epoch(1));
    assert!(matches!(
        service.get_group(&g).await,
        Err(CheckError::UnknownGroup(_))
    ));
    assert!(matches!(
        service.delete_group(&g).await,
        Err(CheckError::UnknownGroup(_))
    ));
    // Created again: the epoch continues, so a fence never sees it go back.
    create(&service, std::slice::from_ref(&g)).await;
    let b = service
        .check_host(&request("b", "b", true, std::slice::from_ref(&g)))
        .await
        .unwrap();
    let again = &answers(&b)[&g];
    assert!(again.writable);
    assert!(again.epoch > epoch, "{again:?} after epoch {epoch}");
}

#[tokio::test]
async fn a_group_held_under_v1_is_taken_only_after_its_own_lease_lapses() {
    let (service, clock) = setup();
    let g = group("legacy");
    let mut v1 = LeaseRecord::new_group(g.clone(), 10_000, abc(), T0);
    v1.holder = Some(host("a"));
    v1.epoch = Epoch(4);
    v1.expires_at_ms = T0 + 5_000;
    service.store().put_group_item(v1);
    let b = service
        .check_host(&request("b", "b", true, std::slice::from_ref(&g)))
        .await
        .unwrap();
    assert!(!answers(&b)[&g].writable);
    let cfg = *service.config();
    // b keeps its own lease alive meanwhile (its own checks renew it).
    clock.set(T0 + 3_000);
    service
        .check_host(&request("b", "b", true, &[]))
        .await
        .unwrap();
    clock.set(T0 + 5_000 + cfg.clock_skew_ms);
    let b = service
        .check_host(&request("b", "b", true, std::slice::from_ref(&g)))
        .await
        .unwrap();
    assert!(!answers(&b)[&g].writable, "not before expires_at + skew");
    // a never checks in under v2, so b, the best live candidate, takes it past the skew and
    // a's extra heartbeat timeout.
    clock.set(T0 + 5_000 + cfg.clock_skew_ms + 1 + cfg.heartbeat_timeout_ms);
    let b = service
        .check_host(&request("b", "b", true, std::slice::from_ref(&g)))
        .await
        .unwrap();
    let taken = &answers(&b)[&g];
    assert!(taken.writable, "{taken:?}");
    assert_eq!(
        (taken.epoch, taken.holder_host_epoch),
        (Epoch(5), Some(Epoch(0)))
    );
}

#[tokio::test]
async fn unknown_and_foreign_groups_fail_alone_in_a_host_check() {
    let (service, _clock) = setup();
    let mine = group("mine");
    create(&service, std::slice::from_ref(&mine)).await;
    service
        .create_group(
            group("theirs"),
            10_000,
            BTreeMap::from([(host("z"), Member::new("az", 1))]),
        )
        .await
        .unwrap();
    let answer = service
        .check_host(&request(
            "a",
            "a",
            true,
            &[mine.clone(), group("theirs"), group("nope")],
        ))
        .await
        .unwrap();
    let codes: Vec<String> = answer
        .groups
        .iter()
        .map(|e| match e {
            GroupEntry::Answer(a) => format!("{}:{}", a.group_id, a.writable),
            GroupEntry::Error { group_id, error } => format!("{group_id}:{}", error.code),
        })
        .collect();
    assert_eq!(
        codes,
        ["mine:true", "nope:unknown_group", "theirs:not_member"]
    );
}

#[tokio::test]
async fn a_check_may_name_at_most_500_groups() {
    let (service, _clock) = setup();
    let err = service
        .check_host(&request("a", "a", true, &groups(501)))
        .await
        .unwrap_err();
    assert!(matches!(err, CheckError::TooMany(_)), "{err}");
}

#[tokio::test]
async fn a_look_at_a_live_holder_reads_no_group_and_a_lapsed_ones_groups_move_in_that_check() {
    let (service, clock) = setup();
    let ids = groups(20);
    create(&service, &ids).await;
    service
        .check_host(&request("a", "a", true, &ids))
        .await
        .unwrap();
    service
        .check_host(&request("b", "b", true, &ids))
        .await
        .unwrap();
    let look = |epoch: Option<Epoch>| HostCheck {
        watch_groups: vec![WatchGroups {
            host_id: host("a"),
            host_epoch: epoch,
            groups: ids.clone(),
        }],
        ..request("b", "b", true, &[])
    };
    // a is live: the look answers only the watched entry, no group is read or answered.
    let live = service.check_host(&look(Some(Epoch(0)))).await.unwrap();
    assert!(live.groups.is_empty(), "{live:?}");
    assert_eq!(live.watched.len(), 1);
    assert!(live.watched[0].live);
    // a dies; past its lease and the skew the same look revokes it and takes every group.
    let cfg = *service.config();
    let mut now = T0;
    while now < T0 + cfg.lease_ms + cfg.clock_skew_ms {
        now += 1_000;
        clock.set(now);
        service
            .check_host(&request("b", "b", true, &[]))
            .await
            .unwrap();
    }
    clock.set(T0 + cfg.lease_ms + cfg.clock_skew_ms + 1);
    let taken = service.check_host(&look(Some(Epoch(0)))).await.unwrap();
    assert_eq!(writable_count(&taken), 20, "{taken:?}");
    assert!(!taken.watched[0].live);
}

#[test]
fn a_failover_counts_one_revocation_and_an_acquisition_per_group_and_a_release_one_release() {
    let (service, clock) = setup();
    let ids = groups(3);
    let cfg = *service.config();
    let ((), counts) = crate::metrics::testing::counted(async {
        create(&service, &ids).await;
        service
            .check_host(&request("a", "a1", true, &ids))
            .await
            .unwrap();
        service
            .check_host(&request("b", "b1", true, &ids))
            .await
            .unwrap();
        // a dies; b keeps its own lease by checking, then finds a lapsed.
        let mut now = T0;
        while now <= T0 + cfg.lease_ms + cfg.clock_skew_ms {
            now += cfg.poll_interval_ms;
            clock.set(now);
            service
                .check_host(&request("b", "b1", true, &[]))
                .await
                .unwrap();
        }
        let b = service
            .check_host(&request("b", "b1", true, &ids))
            .await
            .unwrap();
        assert_eq!(writable_count(&b), 3);
        let held = service.get_group(&ids[0]).await.unwrap().0;
        service
            .release(&ids[0], &host("b"), held.epoch)
            .await
            .unwrap();
    });
    assert_eq!(counts["Acquisitions"], 6, "3 by a, then 3 by b");
    assert_eq!(
        counts["Revocations"], 1,
        "one revocation ends all of a's grants"
    );
    assert_eq!(counts["Releases"], 1);
    assert!(counts["Renewals"] >= 1, "b renewed itself with no renewer");
}
