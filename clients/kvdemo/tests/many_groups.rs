//! Scale on one machine, the test command's short run: three kvdemo hosts, each in the same
//! 1,000 groups (`MANY_GROUPS`), on the deployed local stack for 2 minutes (`MANY_SECONDS`;
//! the benchmark `benches/many_groups.rs` runs 10). Every group has exactly one primary
//! throughout, proved from the gate logs: no two hosts could write one group at once, and at
//! every instant from when the first host held them all, some host could write each group.
//! Prints lease-check's check latency against an empty Function URL call, in the same run.

use anyhow::{ensure, Context, Result};
use kvdemo::cluster::Cluster;
use kvdemo::fixture::{Fixture, StackAccess};
use kvdemo::many::{coverage, gather_on, holder_of_all, now_ns, probe, Latency};
use std::time::{Duration, Instant};
use tenure::ids::HostId;
use tenure::lease::client::LeaseCheckClient;
use tenure::lease::LeaseConfig;
use tenure::sigv4::SigV4Client;
use tenure_e2e::stacks;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_in_a_thousand_groups_keep_exactly_one_primary_each() -> Result<()> {
    let groups = env_or("MANY_GROUPS", 1_000) as usize;
    let seconds = env_or("MANY_SECONDS", 120);
    let stack = stacks("TENURE_E2E_REGIONS")?
        .into_iter()
        .next()
        .context("a deployed stack")?;
    let access = StackAccess::from_outputs(&stack.endpoint, &stack.region, &stack.outputs)?;
    let sdk = stack.sdk().await;
    let cfg = LeaseConfig::default();
    let created = Instant::now();
    let fixture = Fixture::create(
        &access,
        &sdk,
        env!("CARGO_BIN_EXE_kvdemo").into(),
        "many",
        cfg,
        cfg.lease_ms,
        groups,
    )
    .await?;
    eprintln!("{groups} groups created in {:?}", created.elapsed());
    let cluster = Cluster::start(fixture.spec.clone(), &fixture.host_names())?;
    let within = Duration::from_secs(60);
    let took = gather_on(&cluster, 0, within).await?;
    eprintln!(
        "{} holds all {groups} groups after {took:?}",
        fixture.hosts[0]
    );
    let from = now_ns();

    let http = SigV4Client::for_function_urls(&sdk)?;
    let client = LeaseCheckClient::new(
        SigV4Client::for_function_urls(&sdk)?,
        &access.lease_check_url,
        &access.region,
        Duration::from_secs(5),
    );
    let probe_host = HostId::parse(&format!("probe-{}", std::process::id()))?;
    let mut latency = Latency::default();
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        probe(
            &client,
            &http,
            &access.lease_check_url,
            &access.region,
            &probe_host,
            &mut latency,
        )
        .await;
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
