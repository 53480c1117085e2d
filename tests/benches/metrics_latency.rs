//! What metrics cost a lease check on the deployed local stack: p50/p99 of sequential host
//! checks through lease-check's Function URL with its EMF metrics on, then off
//! (`TENURE_METRICS=off`), then on again, in one run, so the ratio is measured against
//! neighbours rather than an absolute (the local invoke path dominates and drifts).
//!
//! ```text
//! TENURE_E2E_REGIONS=.local/regions.json cargo bench -p tenure-testkit --bench metrics_latency [-- --checks 300]
//! ```

use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use tenure::clock::{Clock, SystemClock};
use tenure::ids::HostId;
use tenure::lease::client::{HostCheckBody, LeaseCheckClient};
use tenure_testkit::{find, set_function_env, stacks};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn phase(client: &LeaseCheckClient, host: &HostId, checks: usize) -> Result<Vec<Duration>> {
    let body = HostCheckBody {
        healthy: true,
        heartbeat: true,
        ..HostCheckBody::default()
    };
    for _ in 0..20 {
        client.check_host(host, &body).await?;
    }
    let mut took = Vec::with_capacity(checks);
    for _ in 0..checks {
        let started = Instant::now();
        client.check_host(host, &body).await?;
        took.push(started.elapsed());
    }
    took.sort();
    Ok(took)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let checks = args
        .iter()
        .position(|a| a == "--checks")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(300usize);
    let all = stacks("TENURE_E2E_REGIONS")?;
    let stack = find(&all, "us-east-1").context("the us-east-1 stack")?;
    let client = stack.lease_check().await?;
    let host = HostId::parse(&format!("bench-metrics-{}", SystemClock.now_ms()))?;
    let mut rows = Vec::new();
    for (label, metrics) in [("on", None), ("off", Some("off")), ("on again", None)] {
        set_function_env(&stack, "LeaseCheckFunction", &[("TENURE_METRICS", metrics)]).await?;
        let took = phase(&client, &host, checks).await?;
        let (p50, p99) = (percentile(&took, 50.0), percentile(&took, 99.0));
        println!("metrics {label:<8}: {checks} checks, p50 {p50:.2?}, p99 {p99:.2?}");
        rows.push((p50, p99));
    }
    let on_p50 = (rows[0].0 + rows[2].0) / 2;
    let on_p99 = (rows[0].1 + rows[2].1) / 2;
    println!(
        "p50 with metrics / without: {:.3}; p99: {:.3}",
        on_p50.as_secs_f64() / rows[1].0.as_secs_f64(),
        on_p99.as_secs_f64() / rows[1].1.as_secs_f64()
    );
    Ok(())
}
