//! The renewer loop and the fencing helper against MiniStack.

mod support;

use aws_sdk_dynamodb::types::AttributeValue;
use std::time::{Duration, Instant};
use support::*;
use tenure::clock::FakeClock;
use tenure::lease::fence::{fence_put, fence_update};
use tenure::lease::protocol::RenewSkip;
use tenure::lease::record::Epoch;
use tenure::lease::renewer::{renew_round, run_until, RenewerConfig};
use tenure::lease::service::{CheckRequest, LeaseService};
use tenure::lease::store::LeaseStore;
use tenure::lease::LeaseConfig;

const T0: u64 = 1_800_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_renews_fresh_healthy_holders_and_skips_the_rest() {
    let client = dynamodb(None).await;
    let table = create_table(&client, "group_id").await;
    let store = LeaseStore::new(client.clone(), table.clone());
    let cfg = LeaseConfig::default();
    let clock = FakeClock::at(T0);
    let service = LeaseService::new(store.clone(), cfg, clock.clone());
    // 30 held groups (more than one page of work per segment), 3 of them unhealthy, 3 stale,
    // plus 5 free groups the scan's filter never returns.
    for n in 0..35 {
        let gid = format!("r{n}");
        store
            .create_group(&new_group(&gid, &["a", "b"], cfg.lease_ms, T0))
            .await
            .unwrap();
        if n < 30 {
            let answer = service
                .check(
                    &group_id(&gid),
                    &CheckRequest {
                        host: host("a"),
                        healthy: true,
                        heartbeat: true,
                    },
                )
                .await
                .unwrap();
            assert!(answer.writable);
        }
    }
    clock.set(T0 + 1_000);
    for n in 0..30 {
        let healthy = !(3..6).contains(&n);
        if n >= 6 {
            service
                .check(
                    &group_id(&format!("r{n}")),
                    &CheckRequest {
                        host: host("a"),
                        healthy,
                        heartbeat: true,
                    },
                )
                .await
                .unwrap();
        } else if !healthy {
            service
                .check(
                    &group_id(&format!("r{n}")),
                    &CheckRequest {
                        host: host("a"),
                        healthy: false,
                        heartbeat: true,
                    },
                )
                .await
                .unwrap();
        }
    }
    // Groups 0-2 heard nothing since T0: stale once heartbeat_timeout passes.
    clock.set(T0 + cfg.heartbeat_timeout_ms + 1);
    let renewer = RenewerConfig {
        scan_segments: 3,
        max_in_flight: 8,
        stop_margin_ms: 0,
    };
    let report = renew_round(&store, &cfg, &clock, &renewer).await;
    assert_eq!(report.scanned, 30, "{report:?}");
    assert_eq!(report.renewed, 24, "{report:?}");
    assert_eq!(
        report.skipped.get(&RenewSkip::Stale),
        Some(&3),
        "{report:?}"
    );
    assert_eq!(
        report.skipped.get(&RenewSkip::Unhealthy),
        Some(&3),
        "{report:?}"
    );
    assert_eq!(report.errors, 0);
    let renewed = store.read(&group_id("r10")).await.unwrap().unwrap();
    assert_eq!(
        renewed.expires_at_ms,
        T0 + 1_000 + cfg.lease_ms,
        "anchored on the last heartbeat"
    );
    let stale = store.read(&group_id("r1")).await.unwrap().unwrap();
    assert_eq!(
        stale.expires_at_ms,
        T0 + cfg.lease_ms,
        "a stale holder is not renewed"
    );
    // A second round at the same instant has nothing to move forward.
    let again = renew_round(&store, &cfg, &clock, &renewer).await;
    assert_eq!(again.renewed, 0);
    assert_eq!(again.skipped.get(&RenewSkip::NotForward), Some(&24));
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn the_loop_runs_rounds_until_the_deadline_margin() {
    let client = dynamodb(None).await;
    let table = create_table(&client, "group_id").await;
    let store = LeaseStore::new(client.clone(), table.clone());
    let cfg = LeaseConfig::new(1_500, 300, 100, 600, 200).unwrap();
    let clock = FakeClock::at(T0);
    let renewer = RenewerConfig {
        scan_segments: 2,
        max_in_flight: 4,
        stop_margin_ms: 500,
    };
    let started = Instant::now();
    let report = run_until(
        &store,
        &cfg,
        &clock,
        &renewer,
        started + Duration::from_millis(1_850),
    )
    .await;
    let took = started.elapsed();
    // Ticks at 0, 300, ..., 1200 ms start rounds (650 ms or more left); at 1500 ms only
    // 350 ms is left, under the 500 ms margin.
    assert_eq!(report.rounds, 5, "{report:?}");
    assert!(
        took < Duration::from_millis(1_850),
        "stopped before the deadline: {took:?}"
    );
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn fenced_writes_refuse_an_older_epoch() {
    let client = dynamodb(None).await;
    let table = create_table(&client, "pk").await;
    let put = |epoch: u64, value: &str| {
        fence_put(
            client
                .put_item()
                .table_name(&table)
                .item("pk", AttributeValue::S("k".into()))
                .item("v", AttributeValue::S(value.into())),
            Epoch(epoch),
        )
        .send()
    };
    assert!(put(2, "first").await.is_ok());
    assert!(put(2, "same epoch again").await.is_ok());
    let stale = put(1, "deposed primary").await;
    assert!(
        stale.is_err(),
        "a write with an older epoch must be refused"
    );
    let update = |epoch: u64| {
        fence_update(
            client
                .update_item()
                .table_name(&table)
                .key("pk", AttributeValue::S("k".into()))
                .update_expression("SET v = :v")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":v", AttributeValue::S(format!("update {epoch}"))),
            Epoch(epoch),
        )
        .send()
    };
    assert!(update(1).await.is_err());
    assert!(update(3).await.is_ok());
    assert!(put(2, "now stale").await.is_err());
    let item = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("k".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["v"], AttributeValue::S("update 3".into()));
    assert_eq!(item["fence"], AttributeValue::N("3".into()));
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn a_scheduled_invocation_renews_until_its_deadline() {
    let client = dynamodb(None).await;
    let table = create_table(&client, "group_id").await;
    let store = LeaseStore::new(client.clone(), table.clone());
    let cfg = LeaseConfig::new(1_500, 300, 100, 600, 200).unwrap();
    let clock = tenure::clock::SystemClock;
    let service = LeaseService::new(store.clone(), cfg, clock);
    store
        .create_group(&new_group("sched", &["a"], cfg.lease_ms, 0))
        .await
        .unwrap();
    let first = service
        .check(
            &group_id("sched"),
            &CheckRequest {
                host: host("a"),
                healthy: true,
                heartbeat: true,
            },
        )
        .await
        .unwrap();
    assert!(first.writable);
    let payload: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/schedule-event.json")).unwrap();
    let mut context = lambda_runtime::Context::default();
    context.deadline = tenure::clock::Clock::now_ms(&clock) + 1_500;
    let renewer = RenewerConfig {
        scan_segments: 1,
        max_in_flight: 4,
        stop_margin_ms: 400,
    };
    // The holder keeps heartbeating while the invocation runs, so renewals have work to do.
    let beats = async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            service
                .check(
                    &group_id("sched"),
                    &CheckRequest {
                        host: host("a"),
                        healthy: true,
                        heartbeat: true,
                    },
                )
                .await
                .unwrap();
        }
    };
    let (report, ()) = tokio::join!(
        tenure::lease::renewer::handle_scheduled(
            &store,
            &cfg,
            &clock,
            &renewer,
            lambda_runtime::LambdaEvent::new(payload, context),
        ),
        beats
    );
    let report = report.unwrap();
    assert!(report.rounds >= 3, "{report:?}");
    assert!(report.total.renewed >= 2, "{report:?}");
    let record = store.read(&group_id("sched")).await.unwrap().unwrap();
    assert_eq!(record.epoch, Epoch(1), "renewals never change the epoch");
    drop_table(&client, &table).await;
}
