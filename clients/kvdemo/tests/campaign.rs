//! The lease fault campaign on the deployed local stack: three kvdemo hosts, each serving the
//! same `LEASE_CAMPAIGN_GROUPS` groups (default 100) and each behind its own chaos proxy to
//! MiniStack (2% 500s, 1% lost answers, 2% throttling, 0-30 ms latency on its data-table and
//! lease-check traffic), lease-check and the renewer behind one more with the same faults on
//! their lease-table writes (their `AWS_ENDPOINT_URL_DYNAMODB` points at it for the run, and is
//! removed again after), a writer writing through each group's primary, spread over the
//! groups, and kill -9 / SIGSTOP-past-the-deadline / cut-off-from-lease-check of the first
//! group's primary until `CAMPAIGN_FAILOVERS` failovers (default 10, the test command's short
//! run; the long run is
//! `CAMPAIGN_FAILOVERS=100 cargo test -p kvdemo --test campaign -- --nocapture`). Then, per
//! group: 0 overlapping writable intervals, epochs increasing; and 0 acknowledged writes lost;
//! prints the failover p50/p99. The groups' lease is 6 s (the shortest the default region
//! allows) to keep the short run short.

use anyhow::{ensure, Context, Result};
use std::collections::BTreeMap;
use std::time::Duration;
use tenure::lease::history_store::HistoryStore;
use tenure::lease::LeaseConfig;
use tenure_testkit::checker::compare_history;
use tenure_testkit::cluster::Cluster;
use tenure_testkit::fault_proxy::{Chaos, FaultProxy, Route};
use tenure_testkit::fixture::{Fixture, StackAccess};
use tenure_testkit::{count_from_env, invoke_async, set_function_env, stacks};

/// The functions whose lease-table traffic the campaign sends through a chaos proxy.
const LEASE_FUNCTIONS: [&str; 2] = ["LeaseCheckFunction", "LeaseRenewerFunction"];
/// aws-config's per-service endpoint, which wins over MiniStack's `AWS_ENDPOINT_URL`.
const STORE_ENDPOINT: &str = "AWS_ENDPOINT_URL_DYNAMODB";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_never_yield_two_writers_or_lose_an_acknowledged_write() -> Result<()> {
    let failovers: usize = count_from_env("CAMPAIGN_FAILOVERS", 10);
    let groups: usize = count_from_env("LEASE_CAMPAIGN_GROUPS", 100);
    let stack = stacks("TENURE_E2E_REGIONS")?
        .into_iter()
        .next()
        .context("a deployed stack")?;
    let cfg = LeaseConfig::default();
    // Protocol v2: the host lease (the region's lease_ms) decides a failover, whatever the
    // group's own lease_ms.
    let lease_ms = cfg.lease_ms;
    let mut fixture = Fixture::create(
        &StackAccess::from_outputs(&stack.endpoint, &stack.region, &stack.outputs)?,
        &stack.sdk().await,
        env!("CARGO_BIN_EXE_kvdemo").into(),
        "campaign",
        cfg,
        lease_ms,
        groups,
    )
    .await?;
    let store_faults = Chaos {
        error_before: 0.02,
        error_after: 0.01,
        throttle: 0.02,
        max_latency: Duration::from_millis(30),
        ..Chaos::default()
    };
    // The lease functions' own DynamoDB traffic (conditional acquire, renew, heartbeat writes).
    let lease_store_proxy = FaultProxy::start(Route::Upstream(stack.endpoint.clone()))?;
    lease_store_proxy.set_chaos(store_faults.clone());
    for function in LEASE_FUNCTIONS {
        set_function_env(
            &stack,
            function,
            &[(STORE_ENDPOINT, Some(&lease_store_proxy.url))],
        )
        .await?;
    }
    // The update restarts the functions; the renewer would otherwise wait for its next minute.
    invoke_async(&stack, "LeaseRenewerFunction").await?;
    fixture.spec.chaos_proxies = true;
    let report = async {
        let cluster = Cluster::start(fixture.spec.clone(), &fixture.host_names())?;
        tenure_testkit::campaign::run(
            cluster,
            failovers,
            Duration::from_millis(lease_ms),
            store_faults,
        )
        .await
        .map_err(anyhow::Error::from)
    }
    .await;
    // Back to MiniStack directly, whatever happened, so later tests find the stack as deployed.
    for function in LEASE_FUNCTIONS {
        set_function_env(&stack, function, &[(STORE_ENDPOINT, None)]).await?;
    }
    invoke_async(&stack, "LeaseRenewerFunction").await?;
    let report = report?;
    let lease_store_faults = lease_store_proxy.counts();
    let bound = lease_ms + cfg.clock_skew_ms + cfg.poll_interval_ms;
    eprintln!(
        "campaign, {} groups per host: {} failovers ({} kill -9, {} SIGSTOP, {} cut off from \
         lease-check), failover p50 {} ms p99 {} ms (bound {bound} ms), {} acknowledged writes, \
         {} lost, {} violations; store faults: hosts {:?}, lease functions {lease_store_faults:?}",
        fixture.groups.len(),
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
    let picture = report.timeline(
        &fixture
            .groups
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>(),
    );
    eprintln!(
        "timeline: {} ({})",
        picture.headline(),
        report.timeline_svg.display()
    );
    ensure!(report.violations.is_empty(), "{:#?}", report.violations);
    ensure!(
        picture.overlaps().is_empty(),
        "the picture shows two writers: {:?}",
        picture.overlaps()
    );
    // Every grant a gate opened for is in the leadership history (lease-history follows the
    // Leases stream: give it a moment to catch up).
    let history = HistoryStore::new(
        tenure::aws::dynamodb_client(&stack.sdk().await, None),
        stack.output("LeaseHistoryTable")?,
        stack.output("HostsTable")?,
        86_400_000,
    );
    let started = std::time::Instant::now();
    let agreement = loop {
        let mut entries = BTreeMap::new();
        for group in &fixture.groups {
            entries.insert(group.to_string(), history.list(group, 1_000).await?);
        }
        let agreement = compare_history(&report.intervals, &entries);
        if agreement.missing.is_empty() || started.elapsed() > Duration::from_secs(60) {
            break agreement;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "history: {} gate intervals found in the history, {} missing, {} acquisitions no gate \
         opened for (answers used late or never: paused, killed or cut-off hosts), {} groups \
         out of order",
        agreement.matched,
        agreement.missing.len(),
        agreement.unopened.len(),
        agreement.out_of_order.len()
    );
    ensure!(
        agreement.missing.is_empty(),
        "not in the history: {:#?}",
        agreement.missing
    );
    ensure!(
        agreement.out_of_order.is_empty(),
        "{:?}",
        agreement.out_of_order
    );
    ensure!(agreement.matched > 0, "no gate interval to compare");
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
        injected.passed > 0 && injected.error_before + injected.throttle + injected.error_after > 0,
        "the chaos proxies saw no traffic or injected no store fault: {injected:?}"
    );
    ensure!(
        lease_store_faults.passed > 0,
        "lease-check and the renewer never went through their proxy: {lease_store_faults:?}"
    );
    fixture.drop_table().await;
    Ok(())
}
