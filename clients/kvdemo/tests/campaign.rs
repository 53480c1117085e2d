//! The lease fault campaign on the deployed local stack: three kvdemo hosts, each behind its own
//! chaos proxy to MiniStack (2% 500s, 1% lost answers, 2% throttling, 0-30 ms latency on its
//! data-table and lease-check traffic), a writer writing through the primary, and kill -9 /
//! SIGSTOP-past-the-deadline / cut-off-from-lease-check of the primary until
//! `CAMPAIGN_FAILOVERS` failovers (default 10, the test command's short run; the long run is
//! `CAMPAIGN_FAILOVERS=100 cargo test -p kvdemo --test campaign -- --nocapture`). Then: 0
//! overlapping writable intervals, epochs increasing, 0 acknowledged writes lost; prints the
//! failover p50/p99. The group's lease is 6 s (the shortest the default region allows) to keep
//! the short run short.

use anyhow::{ensure, Context, Result};
use kvdemo::cluster::Cluster;
use kvdemo::fixture::{Fixture, StackAccess, HOSTS};
use std::time::Duration;
use tenure::lease::LeaseConfig;
use tenure_e2e::stacks;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_never_yield_two_writers_or_lose_an_acknowledged_write() -> Result<()> {
    let failovers: usize = std::env::var("CAMPAIGN_FAILOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let stack = stacks("TENURE_E2E_REGIONS")?
        .into_iter()
        .next()
        .context("a deployed stack")?;
    let cfg = LeaseConfig::default();
    let lease_ms = 6_000;
    let mut fixture = Fixture::create(
        &StackAccess::from_outputs(&stack.endpoint, &stack.region, &stack.outputs)?,
        &stack.sdk().await,
        env!("CARGO_BIN_EXE_kvdemo").into(),
        "campaign",
        cfg,
        lease_ms,
    )
    .await?;
    fixture.spec.chaos_proxies = true;
    let cluster = Cluster::start(fixture.spec.clone(), &HOSTS)?;
    let store_faults = kvdemo::chaos_proxy::Faults {
        cut_off_lease_check: false,
        error: 0.02,
        lost_answer: 0.01,
        throttle: 0.02,
        max_latency: Duration::from_millis(30),
    };
    let report = kvdemo::campaign::run(
        cluster,
        failovers,
        Duration::from_millis(lease_ms),
        store_faults,
    )
    .await?;
    let bound = lease_ms + cfg.clock_skew_ms + cfg.poll_interval_ms;
    eprintln!(
        "campaign: {} failovers ({} kill -9, {} SIGSTOP, {} cut off from lease-check), failover p50 {} ms \
         p99 {} ms (bound {bound} ms), {} acknowledged writes, {} lost, {} violations; store faults {:?}",
        report.failovers,
        report.kills,
        report.pauses,
        report.cut_offs,
        report.percentile_ms(50.0),
        report.percentile_ms(99.0),
        report.acked_writes,
        report.lost_writes.len(),
        report.violations.len(),
        report.store_faults
    );
    ensure!(report.violations.is_empty(), "{:#?}", report.violations);
    ensure!(
        report.lost_writes.is_empty(),
        "lost: {:?}",
        report.lost_writes
    );
    ensure!(
        report.acked_writes > 0,
        "the writer never got a write acknowledged"
    );
    ensure!(report.failovers >= failovers);
    ensure!(
        failovers < 3 || (report.kills > 0 && report.pauses > 0 && report.cut_offs > 0),
        "every kind of fault should have struck: {report:?}"
    );
    let injected = &report.store_faults;
    ensure!(
        injected.passed > 0 && injected.error + injected.throttle + injected.lost_answer > 0,
        "the chaos proxies saw no traffic or injected no store fault: {injected:?}"
    );
    fixture.drop_table().await;
    Ok(())
}
