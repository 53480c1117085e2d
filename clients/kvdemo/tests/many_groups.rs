//! Scale on one machine, the test command's short run: three kvdemo hosts, each in the same
//! 1,000 groups (`MANY_GROUPS`), on the deployed local stack for 2 minutes (`MANY_SECONDS`;
//! the benchmark `benches/many_groups.rs` runs 10). Every group has exactly one primary
//! throughout, proved from the gate logs: no two hosts could write one group at once, and at
//! every instant from when the first host held them all, some host could write each group.
//! Prints lease-check's check latency against an empty Function URL call, in the same run.
//!
//! Then a restart of the primary's process (kill -9 and start again at once, a new
//! incarnation): its groups come back to it at new epochs or move, never with two writers.
//! The tests take turns (one lock), so the scale run is not measured under the other's load.

use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};
use tenure::lease::LeaseConfig;
use tenure_testkit::cluster::Cluster;
use tenure_testkit::fixture::{Fixture, StackAccess};
use tenure_testkit::many::{
    coverage, gather_on, holder_of_all, inherited_grants, now_ns, restart_primary, Latency, Prober,
};
use tenure_testkit::stacks;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `groups` groups of three kvdemo hosts on the deployed stack, and how to reach it.
async fn fixture(
    tag: &str,
    cfg: LeaseConfig,
    groups: usize,
) -> Result<(Fixture, StackAccess, aws_config::SdkConfig)> {
    let stack = stacks("TENURE_E2E_REGIONS")?
        .into_iter()
        .next()
        .context("a deployed stack")?;
    let access = StackAccess::from_outputs(&stack.endpoint, &stack.region, &stack.outputs)?;
    let sdk = stack.sdk().await;
    let fixture = Fixture::create(
        &access,
        &sdk,
        env!("CARGO_BIN_EXE_kvdemo").into(),
        tag,
        cfg,
        cfg.lease_ms,
        groups,
    )
    .await?;
    Ok((fixture, access, sdk))
}

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_in_a_thousand_groups_keep_exactly_one_primary_each() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let groups = env_or("MANY_GROUPS", 1_000) as usize;
    let seconds = env_or("MANY_SECONDS", 120);
    let cfg = LeaseConfig::default();
    let created = Instant::now();
    let (fixture, access, sdk) = fixture("many", cfg, groups).await?;
    eprintln!("{groups} groups created in {:?}", created.elapsed());
    let cluster = Cluster::start(fixture.spec.clone(), &fixture.host_names())?;
    let within = Duration::from_secs(60);
    let took = gather_on(&cluster, 0, within).await?;
    eprintln!(
        "{} holds all {groups} groups after {took:?}",
        fixture.hosts[0]
    );
    let from = now_ns();

    let prober = Prober::new(&sdk, &access).map_err(|e| anyhow::anyhow!(e))?;
    let mut latency = Latency::default();
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        prober.sample(&mut latency).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        holder_of_all(&cluster).await == Some(0),
        "the first host no longer holds every group"
    );
    let to = now_ns();
    let intervals = cluster.writable_intervals()?;
    let report = coverage(&intervals, cluster.groups(), from, to);
    eprintln!(
        "scale: {} hosts x {groups} groups for {seconds} s: {} violations, {} groups with a gap (longest {:?}); {}",
        cluster.hosts.len(),
        report.violations.len(),
        report.groups_with_gaps,
        report.longest_gap,
        latency.summary()
    );
    ensure!(report.violations.is_empty(), "{:#?}", report.violations);
    ensure!(
        report.groups_with_gaps == 0,
        "{} of {groups} groups had an instant with no writable host (longest {:?})",
        report.groups_with_gaps,
        report.longest_gap
    );
    ensure!(
        !latency.check.is_empty() && !latency.empty.is_empty(),
        "no latency samples"
    );
    drop(cluster);
    fixture.drop_table().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_primary_process_gets_no_grant_it_did_not_acquire_afresh() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let groups = env_or("RESTART_GROUPS", 100) as usize;
    let cfg = LeaseConfig::default();
    let (fixture, _, _) = fixture("restart", cfg, groups).await?;
    let mut cluster = Cluster::start(fixture.spec.clone(), &fixture.host_names())?;
    let within = Duration::from_millis(3 * cfg.lease_ms + 30_000);
    gather_on(&cluster, 0, within).await?;
    // Past a heartbeat, so the kill lands on a host whose lease is being renewed.
    tokio::time::sleep(Duration::from_millis(cfg.heartbeat_timeout_ms)).await;
    let killed_at = now_ns();
    let restart = restart_primary(&mut cluster, 0, within).await?;
    eprintln!(
        "restart of {} (a new incarnation) holding {groups} groups: every group held again after {:.0} ms; {} came back to it, {} moved",
        fixture.hosts[0],
        restart.took.as_secs_f64() * 1e3,
        restart.came_back,
        restart.moved
    );
    let intervals = cluster.writable_intervals()?;
    let found = replica_agent::gate_log::violations(&intervals);
    ensure!(found.is_empty(), "{found:#?}");
    // Whatever the new incarnation writes, it writes at an epoch it acquired itself: higher
    // than any epoch of that group before the kill.
    let host = fixture.hosts[0].as_str();
    let inherited = inherited_grants(&intervals, host, killed_at);
    ensure!(
        inherited.is_empty(),
        "{host} inherited grants: {inherited:#?}"
    );
    let regained = intervals
        .iter()
        .filter(|i| i.host == host && i.start_ns > killed_at)
        .map(|i| i.group.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    ensure!(
        regained as u64 >= restart.came_back,
        "the gate log shows {regained} groups reopened, the host holds {}",
        restart.came_back
    );
    // Not before the old lease could have lapsed: the new process never uses the old grants.
    // A live host's lease never has less than two renew intervals left, less a poll (its own
    // check renews it when the renewer is late), so none lapses that soon after the kill.
    ensure!(
        restart.took >= Duration::from_millis(2 * cfg.renew_interval_ms - cfg.poll_interval_ms),
        "every group was held again after {:?}, before the old lease could lapse",
        restart.took
    );
    drop(cluster);
    fixture.drop_table().await;
    Ok(())
}
