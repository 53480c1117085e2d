//! A failing region fails alone (IRC v2), measured on the local stacks
//! (`infra/bench-isolation.sh` deploys them with the fault proxy and runs this).
//!
//! us-east-1 submits `group.put` ops at a steady rate to eu-west-1 and to ap-southeast-2 (one
//! op to each every `--interval-ms`). After `--before-s` of normal running, eu-west-1's
//! irc-remote answers `--status` (503: an outage; 403: a bad deploy) to every request for
//! `--outage-s`, then recovers. Reported:
//!
//! - ap-southeast-2's p50/p99 submit -> SUCCEEDED before the outage and during it, and their
//!   ratio (the goal: p99 within 1.5x): the other region is not held up;
//! - every eu-west-1 op's end (the goal: all SUCCEEDED, none FAILED for the outage) and the
//!   attempts they spent;
//! - requests that reached eu-west-1 while it was open: POSTs (ops sent) and probes (GETs),
//!   against the probe schedule;
//! - time from recovery to the last held op SUCCEEDED (the held backlog drained).

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use tenure::clock::{Clock, SystemClock};
use tenure::irc::region_health::{HealthRecords, RegionHealthTable};
use tenure::irc::submit::SubmitRequest;
use tenure::irc::{OpId, Region, Status, WorkItem};
use tenure_testkit::fault_proxy::{Chaos, FaultProxy};
use tenure_testkit::{irc_submitter, stacks_from};

const FAILING: &str = "eu-west-1";
const HEALTHY: &str = "ap-southeast-2";

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latencies(items: &[&WorkItem]) -> Vec<u64> {
    let mut l: Vec<u64> = items
        .iter()
        .map(|i| i.updated_at_ms.saturating_sub(i.created_at_ms))
        .collect();
    l.sort();
    l
}

struct Settings {
    regions: String,
    proxy_port: u16,
    status: u16,
    before_s: u64,
    outage_s: u64,
    interval_ms: u64,
}

fn settings() -> Result<Settings> {
    let mut s = Settings {
        regions: String::new(),
        proxy_port: 0,
        status: 503,
        before_s: 60,
        outage_s: 180,
        interval_ms: 1_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--regions" => s.regions = value()?,
            "--proxy-port" => s.proxy_port = value()?.parse()?,
            "--status" => s.status = value()?.parse()?,
            "--before-s" => s.before_s = value()?.parse()?,
            "--outage-s" => s.outage_s = value()?.parse()?,
            "--interval-ms" => s.interval_ms = value()?.parse()?,
            "--bench" => {}
            other => bail!(
                "unknown argument {other}; use --regions FILE --proxy-port N [--status 503|403] \
                 [--before-s 60] [--outage-s 180] [--interval-ms 1000]"
            ),
        }
    }
    if s.regions.is_empty() || s.proxy_port == 0 {
        bail!("--regions and --proxy-port are required: run infra/bench-isolation.sh");
    }
    Ok(s)
}

#[tokio::main]
async fn main() -> Result<()> {
    let s = settings()?;
    let all = stacks_from(std::path::Path::new(&s.regions))?;
    let proxy = FaultProxy::for_irc(s.proxy_port, &all)?;
    let source = all
        .iter()
        .find(|st| st.region == "us-east-1")
        .context("no us-east-1 stack")?;
    let (submitter, store) = irc_submitter(source).await?;
    let health = RegionHealthTable::new(
        tenure::aws::dynamodb_client(&source.sdk().await, None),
        source.output("RegionHealthTable")?,
    );
    let run = SystemClock.now_ms();
    let request = |target: &str, n: u64| -> Result<SubmitRequest> {
        let group = format!("iso-{run}-{target}-{}", n % 20);
        Ok(SubmitRequest {
            op_id: None,
            target_region: Region::parse(target)?,
            kind: "group.put".into(),
            resource: group.clone(),
            payload: json!({"group_id": group, "lease_ms": 10_000 + n,
                            "members": [{"host_id": "a", "az": "az1", "priority": 1}]}),
            await_for: None,
            await_ms: None,
        })
    };

    // Phases, by submit time (this machine's clock, as the items' created_at_ms).
    let started = Instant::now();
    let outage_from = Duration::from_secs(s.before_s);
    let outage_to = outage_from + Duration::from_secs(s.outage_s);
    let stop_submitting = outage_to + Duration::from_secs(30);
    let mut ops: Vec<(OpId, &str, Duration)> = Vec::new();
    let (mut outage_ms, mut recovered_ms) = (None, None);
    let (mut posts_open, mut gets_open) = (0, 0);
    let mut opened_at: Option<Instant> = None;
    let mut n = 0;
    eprintln!(
        "steady ops to {FAILING} and {HEALTHY} every {} ms; {FAILING} answers {} from {} s to {} s",
        s.interval_ms,
        s.status,
        outage_from.as_secs(),
        outage_to.as_secs()
    );
    let failing = Region::parse(FAILING)?;
    while started.elapsed() < stop_submitting {
        let at = started.elapsed();
        if outage_ms.is_none() && at >= outage_from {
            proxy.set_chaos(Chaos {
                target_region: Some(FAILING.into()),
                error_before: 1.0,
                error_statuses: vec![s.status],
                ..Chaos::default()
            });
            outage_ms = Some(SystemClock.now_ms());
            eprintln!("\n{FAILING} down ({})", s.status);
        }
        if opened_at.is_none() && outage_ms.is_some() && health.read(&failing, 0).await?.state.open
        {
            opened_at = Some(Instant::now());
            posts_open = proxy.requests_to(FAILING, "POST");
            gets_open = proxy.requests_to(FAILING, "GET");
            eprintln!(
                "\n{FAILING} open after {:?}",
                started.elapsed() - outage_from
            );
        }
        if recovered_ms.is_none() && at >= outage_to {
            proxy.set_chaos(Chaos::default());
            recovered_ms = Some(SystemClock.now_ms());
            if opened_at.is_some() {
                posts_open = proxy.requests_to(FAILING, "POST") - posts_open;
                gets_open = proxy.requests_to(FAILING, "GET") - gets_open;
            }
            eprintln!("\n{FAILING} back");
        }
        for target in [FAILING, HEALTHY] {
            let item = submitter.submit(request(target, n)?).await?;
            ops.push((item.op_id, target, at));
        }
        n += 1;
        eprint!("\r  {} ops submitted at {:>4} s ", ops.len(), at.as_secs());
        tokio::time::sleep(Duration::from_millis(s.interval_ms)).await;
    }
    eprintln!("\nwaiting for every op to end");
    let ids: Vec<OpId> = ops.iter().map(|(id, _, _)| id.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    let items: Vec<WorkItem> = loop {
        let read: Vec<Option<WorkItem>> = stream::iter(ids.clone())
            .map(|id| {
                let store = &store;
                async move { store.get(&id).await.ok().flatten() }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let done = read
            .iter()
            .filter(|i| i.as_ref().is_some_and(|i| i.status.is_terminal()))
            .count();
        eprint!("\r  {done} of {} ended ", ids.len());
        if done == ids.len() {
            break read.into_iter().flatten().collect();
        }
        if Instant::now() > deadline {
            bail!("{} ops still going after 10 minutes", ids.len() - done);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    eprintln!();
    let outage_ms = outage_ms.context("the outage never started")?;
    let recovered_ms = recovered_ms.context("the outage never ended")?;
    let of = |target: &str| -> Vec<&WorkItem> {
        items
            .iter()
            .filter(|i| i.target_region.as_str() == target)
            .collect()
    };
    let healthy = of(HEALTHY);
    let before: Vec<&WorkItem> = healthy
        .iter()
        .copied()
        .filter(|i| i.created_at_ms < outage_ms)
        .collect();
    let during: Vec<&WorkItem> = healthy
        .iter()
        .copied()
        .filter(|i| i.created_at_ms >= outage_ms && i.created_at_ms < recovered_ms)
        .collect();
    let (lb, ld) = (latencies(&before), latencies(&during));
    println!(
        "\n{HEALTHY} before the outage  n={:<4} p50 {:>5} ms  p99 {:>5} ms",
        lb.len(),
        percentile(&lb, 50.0),
        percentile(&lb, 99.0)
    );
    println!(
        "{HEALTHY} during the outage  n={:<4} p50 {:>5} ms  p99 {:>5} ms  (p99 ratio {:.2})",
        ld.len(),
        percentile(&ld, 50.0),
        percentile(&ld, 99.0),
        percentile(&ld, 99.0) as f64 / percentile(&lb, 99.0).max(1) as f64
    );
    let failing_items = of(FAILING);
    let count = |st: Status| failing_items.iter().filter(|i| i.status == st).count();
    let unhealthy_not_ok = healthy
        .iter()
        .filter(|i| i.status != Status::Succeeded)
        .count();
    println!(
        "{FAILING}: {} ops, {} SUCCEEDED, {} FAILED{}",
        failing_items.len(),
        count(Status::Succeeded),
        count(Status::Failed),
        failing_items
            .iter()
            .find(|i| i.status == Status::Failed)
            .and_then(|i| i.last_error.clone())
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    let mut attempts: Vec<u64> = failing_items
        .iter()
        .map(|i| u64::from(i.attempts))
        .collect();
    attempts.sort();
    println!(
        "{FAILING}: attempts per op p50 {} max {}, total {}",
        percentile(&attempts, 50.0),
        attempts.last().copied().unwrap_or(0),
        attempts.iter().sum::<u64>()
    );
    match opened_at {
        Some(at) => {
            let open_for = at.elapsed().min(Duration::from_secs(s.outage_s));
            println!(
                "while open (about {} s): {posts_open} ops sent to {FAILING}, {gets_open} probes \
                 (schedule 5, 10, 20, 40 s, then every 60 s)",
                open_for.as_secs()
            );
        }
        None => println!("{FAILING} never opened"),
    }
    let drained = failing_items
        .iter()
        .filter(|i| i.created_at_ms < recovered_ms)
        .map(|i| i.updated_at_ms)
        .max()
        .unwrap_or(recovered_ms);
    println!(
        "held backlog drained {:.1} s after recovery",
        drained.saturating_sub(recovered_ms) as f64 / 1e3
    );
    if unhealthy_not_ok > 0 {
        bail!("{unhealthy_not_ok} ops to {HEALTHY} did not succeed");
    }
    Ok(())
}
