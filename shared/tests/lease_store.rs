//! The lease store against a real DynamoDB implementation (MiniStack): conditional writes,
//! races between concurrent writers, request counts.

mod support;

use std::sync::Arc;
use support::*;
use tenure::clock::FakeClock;
use tenure::lease::protocol::{AcquirePlan, RenewPlan};
use tenure::lease::record::Epoch;
use tenure::lease::service::{CheckRequest, LeaseService};
use tenure::lease::store::{AcquireOutcome, CreateOutcome, LeaseStore, RenewOutcome};
use tenure::lease::LeaseConfig;
use tenure::telemetry::RequestCounter;
use tokio::sync::Barrier;

const T0: u64 = 1_800_000_000_000;

async fn setup(counter: Option<RequestCounter>) -> (aws_sdk_dynamodb::Client, LeaseStore) {
    let client = dynamodb(counter).await;
    let table = create_table(&client, "group_id").await;
    (client.clone(), LeaseStore::new(client, table))
}

fn check(host_id: &str, heartbeat: bool) -> CheckRequest {
    CheckRequest {
        host: host(host_id),
        healthy: true,
        heartbeat,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_contenders_for_a_lapsed_lease_exactly_one_wins() {
    let (client, store) = setup(None).await;
    let cfg = LeaseConfig::default();
    let hosts: Vec<String> = (0..8).map(|i| format!("h{i}")).collect();
    let mut names: Vec<&str> = vec!["old"];
    names.extend(hosts.iter().map(String::as_str));
    store
        .create_group(&new_group("g8", &names, cfg.lease_ms, T0))
        .await
        .unwrap();
    let clock = FakeClock::at(T0);
    let service = Arc::new(LeaseService::new(store.clone(), cfg, clock.clone()));
    // "old" takes the lease, then goes silent past expiry + skew + one heartbeat timeout, so
    // every contender is allowed to try (lower priorities have waited their extra timeout).
    let first = service
        .check(&group_id("g8"), &check("old", true))
        .await
        .unwrap();
    assert!(first.writable);
    clock.set(T0 + cfg.lease_ms + cfg.clock_skew_ms + cfg.heartbeat_timeout_ms + 1);

    let barrier = Arc::new(Barrier::new(hosts.len()));
    let tasks: Vec<_> = hosts
        .iter()
        .map(|h| {
            let (service, barrier, h) = (service.clone(), barrier.clone(), h.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                service.check(&group_id("g8"), &check(&h, false)).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let answer = task.await.unwrap().unwrap();
        if answer.writable {
            winners.push(answer);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one contender may win: {winners:?}"
    );
    let record = store.read(&group_id("g8")).await.unwrap().unwrap();
    assert_eq!(record.epoch, Epoch(2), "the epoch rises by exactly 1");
    assert_eq!(record.holder.as_ref(), Some(&winners[0].host_id));
    drop_table(&client, store.table()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renew_racing_an_acquire_never_both_succeed() {
    let (client, store) = setup(None).await;
    let cfg = LeaseConfig::default();
    let mut outcomes = (0, 0);
    for round in 0..40 {
        let gid = format!("race-{round}");
        store
            .create_group(&new_group(&gid, &["a", "b"], cfg.lease_ms, T0))
            .await
            .unwrap();
        let held = match store
            .acquire(
                &group_id(&gid),
                &AcquirePlan {
                    host: host("a"),
                    healthy: true,
                    seen_epoch: Epoch(0),
                    now: T0,
                    not_after_ms: T0 - cfg.clock_skew_ms,
                    new_expires_at_ms: T0 + cfg.lease_ms,
                },
            )
            .await
            .unwrap()
        {
            AcquireOutcome::Acquired(record) => record,
            other => panic!("{other:?}"),
        };
        let expires = held.expires_at_ms;
        // Both conditions hold on the stored item; whichever lands first must defeat the other.
        let now = expires + cfg.clock_skew_ms + 100;
        let renew = RenewPlan {
            holder: host("a"),
            epoch: held.epoch,
            new_expires_at_ms: expires + 500,
            now,
        };
        let acquire = AcquirePlan {
            host: host("b"),
            healthy: true,
            seen_epoch: held.epoch,
            now,
            not_after_ms: now - cfg.clock_skew_ms,
            new_expires_at_ms: now + cfg.lease_ms,
        };
        assert!(renew.condition_holds(&held) && acquire.condition_holds(&held));
        let (s1, s2, g) = (store.clone(), store.clone(), group_id(&gid));
        let g2 = g.clone();
        let (r, a) = tokio::join!(
            tokio::spawn(async move { s1.renew(&g, &renew).await }),
            tokio::spawn(async move { s2.acquire(&g2, &acquire).await })
        );
        let renewed = matches!(r.unwrap().unwrap(), RenewOutcome::Renewed { .. });
        let acquired = matches!(a.unwrap().unwrap(), AcquireOutcome::Acquired(_));
        assert!(
            renewed != acquired,
            "round {round}: renewed={renewed} acquired={acquired}"
        );
        let record = store.read(&group_id(&gid)).await.unwrap().unwrap();
        if acquired {
            outcomes.1 += 1;
            assert_eq!((record.holder, record.epoch), (Some(host("b")), Epoch(2)));
        } else {
            outcomes.0 += 1;
            assert_eq!((record.holder, record.epoch), (Some(host("a")), Epoch(1)));
            assert_eq!(record.expires_at_ms, expires + 500);
        }
    }
    eprintln!(
        "renew won {} rounds, acquire won {}",
        outcomes.0, outcomes.1
    );
    drop_table(&client, store.table()).await;
}

#[tokio::test]
async fn a_steady_state_check_costs_one_request_and_an_acquisition_two() {
    let counter = RequestCounter::new();
    let (client, store) = setup(Some(counter.clone())).await;
    let cfg = LeaseConfig::default();
    store
        .create_group(&new_group("cost", &["a", "b"], cfg.lease_ms, T0))
        .await
        .unwrap();
    let clock = FakeClock::at(T0);
    let service = LeaseService::new(store.clone(), cfg, clock.clone());
    let g = group_id("cost");

    counter.take();
    let acquired = service.check(&g, &check("a", true)).await.unwrap();
    assert!(acquired.writable);
    assert_eq!(
        counter.take(),
        [("UpdateItem".to_string(), 2)].into(),
        "heartbeat + acquire"
    );

    clock.advance(500);
    let steady = service.check(&g, &check("a", true)).await.unwrap();
    assert!(steady.writable);
    assert_eq!(
        counter.take(),
        [("UpdateItem".to_string(), 1)].into(),
        "heartbeat only"
    );

    clock.advance(500);
    let read_only = service.check(&g, &check("a", false)).await.unwrap();
    assert!(read_only.writable);
    assert_eq!(
        counter.take(),
        [("GetItem".to_string(), 1)].into(),
        "no heartbeat due"
    );

    let secondary = service.check(&g, &check("b", true)).await.unwrap();
    assert!(!secondary.writable);
    assert_eq!(
        counter.take(),
        [("UpdateItem".to_string(), 1)].into(),
        "a secondary's check"
    );

    // A takeover through the read path: one GetItem, one conditional UpdateItem.
    clock.advance(cfg.lease_ms + cfg.clock_skew_ms + cfg.heartbeat_timeout_ms + 1);
    let took = service.check(&g, &check("b", false)).await.unwrap();
    assert!(took.writable);
    assert_eq!(
        counter.take(),
        [("GetItem".to_string(), 1), ("UpdateItem".to_string(), 1)].into()
    );
    drop_table(&client, store.table()).await;
}

#[tokio::test]
async fn create_group_refuses_to_overwrite() {
    let (client, store) = setup(None).await;
    let record = new_group("dup", &["a"], 10_000, T0);
    assert_eq!(
        store.create_group(&record).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(
        store.create_group(&record).await.unwrap(),
        CreateOutcome::AlreadyExists
    );
    assert_eq!(store.read(&group_id("dup")).await.unwrap(), Some(record));
    drop_table(&client, store.table()).await;
}

#[tokio::test]
async fn release_by_a_stale_epoch_is_refused_and_a_released_lease_is_taken_at_once() {
    let (client, store) = setup(None).await;
    let cfg = LeaseConfig::default();
    store
        .create_group(&new_group("rel", &["b", "a"], cfg.lease_ms, T0))
        .await
        .unwrap();
    let clock = FakeClock::at(T0);
    let service = LeaseService::new(store.clone(), cfg, clock.clone());
    let g = group_id("rel");
    let a = service.check(&g, &check("a", true)).await.unwrap();
    assert_eq!(a.epoch, Epoch(1));
    let stale = service.release(&g, &host("a"), Epoch(0)).await;
    assert!(
        matches!(
            stale,
            Err(tenure::lease::service::CheckError::StaleRelease { .. })
        ),
        "{stale:?}"
    );
    let released = service.release(&g, &host("a"), Epoch(1)).await.unwrap();
    assert!(!released.writable && released.holder.is_none());
    // Same millisecond: b (the higher priority, now live) acquires without waiting for
    // expiry + skew.
    let b = service.check(&g, &check("b", true)).await.unwrap();
    assert!(b.writable);
    assert_eq!(b.epoch, Epoch(2), "release never resets the fencing token");
    drop_table(&client, store.table()).await;
}

#[tokio::test]
async fn a_group_lease_that_breaks_the_region_rules_is_refused() {
    let (client, store) = setup(None).await;
    let service = LeaseService::new(store.clone(), LeaseConfig::default(), FakeClock::at(T0));
    let members = new_group("x", &["a"], 10_000, T0).members;
    let refused = service
        .create_group(group_id("short"), 5_999, members.clone())
        .await;
    assert!(
        matches!(
            refused,
            Err(tenure::lease::service::CreateGroupError::InvalidLease(_))
        ),
        "{refused:?}"
    );
    assert_eq!(store.read(&group_id("short")).await.unwrap(), None);
    let empty = service
        .create_group(group_id("empty"), 10_000, Default::default())
        .await;
    assert!(matches!(
        empty,
        Err(tenure::lease::service::CreateGroupError::NoMembers)
    ));
    let created = service
        .create_group(group_id("ok"), 6_000, members)
        .await
        .unwrap();
    assert_eq!(created, CreateOutcome::Created);
    let record = store.read(&group_id("ok")).await.unwrap().unwrap();
    assert_eq!(
        (record.lease_ms, record.epoch, record.holder),
        (6_000, Epoch(0), None)
    );
    drop_table(&client, store.table()).await;
}
