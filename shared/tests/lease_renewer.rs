//! The lease-renewer over hosts, against MiniStack: a round renews each fresh, healthy host
//! once (anchored on its last heartbeat) and skips the rest with the reason; a round writes
//! exactly one item per live host however many groups it holds, and touches no group; the loop
//! runs rounds until its deadline margin; a scheduled invocation renews until its deadline.

mod support;

use std::time::{Duration, Instant};
use support::*;
use tenure::clock::{Clock, FakeClock, SystemClock};
use tenure::ids::Incarnation;
use tenure::lease::protocol::{HeartbeatPlan, RenewSkip, RevokePlan};
use tenure::lease::record::Epoch;
use tenure::lease::renewer::{handle_scheduled, renew_round, run_until, RenewerConfig};
use tenure::lease::service::{GroupEntry, HostCheck, LeaseService};
use tenure::lease::store::{HeartbeatOutcome, LeaseStore, Written};
use tenure::lease::LeaseConfig;
use tenure::telemetry::RequestCounter;

const T0: u64 = 1_800_000_000_000;

fn inc(id: &str) -> Incarnation {
    Incarnation::parse(id).unwrap()
}

async fn heartbeat<S: LeaseStore>(store: &S, id: &str, incarnation: &str, healthy: bool, now: u64) {
    let plan = HeartbeatPlan {
        host: host(id),
        healthy,
        incarnation: inc(incarnation),
        now,
    };
    match store.heartbeat(&plan).await.expect("heartbeat") {
        HeartbeatOutcome::Recorded(_) => {}
        HeartbeatOutcome::OtherIncarnation(current) => panic!("{id}: {current:?}"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_renews_fresh_healthy_hosts_and_skips_the_rest_with_the_reason() {
    let client = dynamodb(None).await;
    let store = store(&client).await;
    let cfg = LeaseConfig::default();
    let seen = T0 + 1_000;
    // 24 fresh healthy hosts (more than one page of work per segment at 8 in flight) ...
    for n in 0..24 {
        heartbeat(&store, &format!("ok{n}"), "i", true, seen).await;
    }
    // ... 3 that report unhealthy, 3 last heard from at T0 (stale at the round) ...
    for n in 0..3 {
        heartbeat(&store, &format!("sick{n}"), "i", false, seen).await;
        heartbeat(&store, &format!("stale{n}"), "i", true, T0).await;
    }
    // ... one whose agent restarted (a new incarnation waits for the old lease) ...
    heartbeat(&store, "restarted", "i-1", true, seen).await;
    let change = HeartbeatPlan {
        host: host("restarted"),
        healthy: true,
        incarnation: inc("i-2"),
        now: seen,
    }
    .change_from(inc("i-1"));
    assert!(matches!(
        store.change_incarnation(&change).await.unwrap(),
        Written::Done(_)
    ));
    // ... and one revoked after its last heartbeat.
    heartbeat(&store, "revoked", "i", true, seen).await;
    let revoke = RevokePlan {
        host: host("revoked"),
        seen_epoch: Epoch(0),
        seen_absent: false,
        not_after_ms: seen + 1_000 - cfg.clock_skew_ms,
        now: seen + 1_000,
    };
    assert!(matches!(
        store.revoke(&revoke).await.unwrap(),
        Written::Done(_)
    ));

    let clock = FakeClock::at(T0 + cfg.heartbeat_timeout_ms + 1);
    let renewer = RenewerConfig {
        scan_segments: 3,
        max_in_flight: 8,
        stop_margin_ms: 0,
    };
    let report = renew_round(&store, &cfg, &clock, &renewer).await;
    assert_eq!(
        (report.scanned, report.renewed, report.errors),
        (32, 24, 0),
        "{report:?}"
    );
    for (reason, count) in [
        (RenewSkip::Unhealthy, 3),
        (RenewSkip::Stale, 3),
        (RenewSkip::IncarnationChanged, 1),
        (RenewSkip::NotSeenSinceRevocation, 1),
    ] {
        assert_eq!(
            report.skipped.get(&reason),
            Some(&count),
            "{reason:?}: {report:?}"
        );
    }
    let renewed = store.read_host(&host("ok7")).await.unwrap().unwrap();
    assert_eq!(
        (renewed.expires_at_ms, renewed.epoch),
        (seen + cfg.lease_ms, Epoch(0)),
        "anchored on the last heartbeat, at the same epoch"
    );
    let stale = store.read_host(&host("stale1")).await.unwrap().unwrap();
    assert_eq!(stale.expires_at_ms, 0, "a stale host is not renewed");

    // A second round at the same instant has nothing to move forward.
    let again = renew_round(&store, &cfg, &clock, &renewer).await;
    assert_eq!(again.renewed, 0, "{again:?}");
    assert_eq!(
        again.skipped.get(&RenewSkip::NotForward),
        Some(&24),
        "{again:?}"
    );
    drop_lease_tables(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_writes_one_item_per_live_host_however_many_groups_it_holds() {
    let counter = RequestCounter::new();
    let client = dynamodb(Some(counter.clone())).await;
    let store = store(&client).await;
    let cfg = LeaseConfig::default();
    let clock = FakeClock::at(T0);
    let service = LeaseService::new(store.clone(), cfg, clock.clone());
    let groups = 200;
    for i in 0..groups {
        let id = format!("g{i:03}");
        service
            .create_group(
                group_id(&id),
                cfg.lease_ms,
                new_group(&id, &["a", "b"], cfg.lease_ms, T0).members,
            )
            .await
            .unwrap();
    }
    let writable = |answer: &tenure::lease::service::HostAnswer| {
        answer
            .groups
            .iter()
            .filter(|e| matches!(e, GroupEntry::Answer(a) if a.writable))
            .count()
    };
    // a holds all 200 groups, b is a secondary of all 200, c is in none and goes stale.
    let a = service.check_host(&check("a", true)).await.unwrap();
    assert_eq!(writable(&a), groups, "{a:?}");
    let b = service.check_host(&check("b", true)).await.unwrap();
    assert_eq!(writable(&b), 0);
    service.check_host(&check("c", true)).await.unwrap();
    clock.set(T0 + 3_000);
    service.check_host(&check("a", true)).await.unwrap();
    service.check_host(&check("b", true)).await.unwrap();
    clock.set(T0 + 3_500);

    counter.take();
    let renewer = RenewerConfig {
        scan_segments: 4,
        max_in_flight: 16,
        stop_margin_ms: 0,
    };
    let report = renew_round(&store, &cfg, &clock, &renewer).await;
    let sent = counter.take();
    assert_eq!((report.scanned, report.renewed), (3, 2), "{report:?}");
    assert_eq!(
        report.skipped.get(&RenewSkip::Stale),
        Some(&1),
        "{report:?}"
    );
    assert_eq!(
        sent.get("UpdateItem"),
        Some(&2),
        "one write per live host, however many groups it holds: {sent:?}"
    );
    assert!(
        sent.get("Scan").is_some_and(|n| *n >= 4),
        "at least one scan page per segment: {sent:?}"
    );
    assert_eq!(
        sent.len(),
        2,
        "a round only scans Hosts and writes host items: {sent:?}"
    );
    let a_record = store.read_host(&host("a")).await.unwrap().unwrap();
    assert_eq!(a_record.expires_at_ms, T0 + 3_000 + cfg.lease_ms);
    let held = store.read_group(&group_id("g123")).await.unwrap().unwrap();
    assert_eq!(
        (held.holder, held.epoch, held.holder_host_epoch),
        (Some(host("a")), Epoch(1), Some(Epoch(0))),
        "a renewal never touches a group"
    );
    drop_lease_tables(&store).await;
}

#[tokio::test]
async fn the_loop_runs_rounds_until_the_deadline_margin() {
    let client = dynamodb(None).await;
    let store = store(&client).await;
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
    drop_lease_tables(&store).await;
}

#[tokio::test]
async fn a_scheduled_invocation_renews_until_its_deadline() {
    let client = dynamodb(None).await;
    let store = store(&client).await;
    let cfg = LeaseConfig::new(1_500, 300, 100, 600, 200).unwrap();
    let clock = SystemClock;
    let service = LeaseService::new(store.clone(), cfg, clock);
    service
        .create_group(
            group_id("sched"),
            cfg.lease_ms,
            new_group("sched", &["a"], cfg.lease_ms, 0).members,
        )
        .await
        .unwrap();
    let asks = || HostCheck {
        groups: vec![group_id("sched")],
        ..check("a", true)
    };
    let first = service.check_host(&asks()).await.unwrap();
    assert!(
        matches!(&first.groups[..], [GroupEntry::Answer(a)] if a.writable),
        "{first:?}"
    );
    let first_expiry = store
        .read_host(&host("a"))
        .await
        .unwrap()
        .unwrap()
        .expires_at_ms;
    let payload: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/schedule-event.json")).unwrap();
    let mut context = lambda_runtime::Context::default();
    context.deadline = clock.now_ms() + 1_500;
    let renewer = RenewerConfig {
        scan_segments: 1,
        max_in_flight: 4,
        stop_margin_ms: 400,
    };
    // The host keeps heartbeating while the invocation runs, so renewals have work to do.
    let beats = async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            service.check_host(&asks()).await.unwrap();
        }
    };
    let (report, ()) = tokio::join!(
        handle_scheduled(
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
    let record = store.read_host(&host("a")).await.unwrap().unwrap();
    assert_eq!(
        record.epoch,
        Epoch(0),
        "renewals never change the host epoch"
    );
    assert!(record.expires_at_ms > first_expiry, "{record:?}");
    let group = store.read_group(&group_id("sched")).await.unwrap().unwrap();
    assert_eq!(group.epoch, Epoch(1), "nor the group epoch");
    drop_lease_tables(&store).await;
}
