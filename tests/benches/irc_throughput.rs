//! Inter-region coordinator latency and throughput on the local stacks (`infra/bench-irc.sh`
//! deploys them and runs this): submit -> SUCCEEDED latency of ops submitted one at a time
//! (the baseline), then a batch of `--ops` (default 500) group.put ops over 50 resources
//! submitted 16 at a time, from us-east-1 to each of `--targets` in turn (default eu-west-1;
//! `infra/bench-irc.sh` passes every other deployed region).
//!
//! Latency is read from each item itself: `updated_at_ms` of its SUCCEEDED write minus its
//! `created_at_ms` (both from this machine's clock), so polling adds nothing to it.
//! Throughput is ops / (last completion - first submit).

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use tenure::clock::{Clock, SystemClock};
use tenure::irc::store::WorkItemStore;
use tenure::irc::submit::SubmitRequest;
use tenure::irc::{OpId, Region, Status, WorkItem};
use tenure_testkit::{irc_submitter, stacks, stacks_from};

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn wait_all(store: &WorkItemStore, ids: &[OpId], within: Duration) -> Result<Vec<WorkItem>> {
    let started = Instant::now();
    let mut done: Vec<WorkItem> = Vec::new();
    let mut pending: Vec<OpId> = ids.to_vec();
    while !pending.is_empty() {
        if started.elapsed() > within {
            bail!("{} ops not terminal after {within:?}", pending.len());
        }
        let checked: Vec<(OpId, Option<WorkItem>)> = stream::iter(pending.clone())
            .map(|id| async move {
                let item = store.get(&id).await.ok().flatten();
                (id, item)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        pending.clear();
        for (id, item) in checked {
            match item {
                Some(i) if i.status.is_terminal() => done.push(i),
                _ => pending.push(id),
            }
        }
        eprint!("\r  {} of {} terminal   ", done.len(), ids.len());
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    eprintln!();
    Ok(done)
}

fn report(label: &str, items: &[WorkItem]) -> Result<()> {
    let failed = items
        .iter()
        .filter(|i| i.status != Status::Succeeded)
        .count();
    if failed > 0 {
        bail!("{label}: {failed} ops did not succeed");
    }
    let mut latency: Vec<u64> = items
        .iter()
        .map(|i| i.updated_at_ms.saturating_sub(i.created_at_ms))
        .collect();
    latency.sort();
    let first = items.iter().map(|i| i.created_at_ms).min().unwrap_or(0);
    let last = items.iter().map(|i| i.updated_at_ms).max().unwrap_or(0);
    let span_s = (last.saturating_sub(first)) as f64 / 1e3;
    println!(
        "{label:<34} n={:<4} p50 {:>6} ms  p90 {:>6} ms  p99 {:>6} ms  max {:>6} ms  {:>6.1} ops/s",
        items.len(),
        percentile(&latency, 50.0),
        percentile(&latency, 90.0),
        percentile(&latency, 99.0),
        latency.last().copied().unwrap_or(0),
        items.len() as f64 / span_s.max(0.001)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut ops = 500usize;
    let mut regions_file = None;
    let mut targets = vec!["eu-west-1".to_owned()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ops" => ops = args.next().context("--ops N")?.parse()?,
            "--regions" => regions_file = Some(args.next().context("--regions FILE")?),
            "--targets" => {
                targets = args
                    .next()
                    .context("--targets REGION,REGION")?
                    .split(',')
                    .map(str::to_owned)
                    .collect()
            }
            "--bench" => {}
            other => bail!("unknown argument {other}; use --ops N, --regions FILE, --targets R,R"),
        }
    }
    let all = match regions_file {
        Some(f) => stacks_from(std::path::Path::new(&f))?,
        None => stacks("TENURE_BENCH_REGIONS")?,
    };
    let source = all
        .iter()
        .find(|s| s.region == "us-east-1")
        .context("no us-east-1 stack: run infra/bench-irc.sh")?;
    let (submitter, store) = irc_submitter(source).await?;
    let run = SystemClock.now_ms();
    let request = |n: usize| -> Result<SubmitRequest> {
        let group = format!("bench-{run}-{}", n % 50);
        Ok(SubmitRequest {
            op_id: None,
            target_region: Region::parse(&targets[n % targets.len()])?,
            kind: "group.put".into(),
            resource: group.clone(),
            payload: json!({"group_id": group, "lease_ms": 10_000 + n as u64,
                            "members": [{"host_id": "a", "az": "euw1-az1", "priority": 1}]}),
            await_for: None,
            await_ms: None,
        })
    };

    eprintln!("baseline: 20 ops one at a time");
    let mut single = Vec::new();
    for n in 0..20 {
        let item = submitter.submit(request(100_000 + n)?).await?;
        single.extend(wait_all(&store, &[item.op_id], Duration::from_secs(60)).await?);
    }

    eprintln!(
        "batch: {ops} ops to {}, 16 submits in flight",
        targets.join(" and ")
    );
    let started = Instant::now();
    let ids: Vec<OpId> = stream::iter(0..ops)
        .map(|n| {
            let submitter = &submitter;
            async move { Ok::<_, anyhow::Error>(submitter.submit(request(n)?).await?.op_id) }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let submitted_in = started.elapsed();
    let batch = wait_all(&store, &ids, Duration::from_secs(600)).await?;
    println!();
    report("one at a time (baseline)", &single)?;
    report(
        &format!("batch of {ops} to {} regions", targets.len()),
        &batch,
    )?;
    println!(
        "submitting the batch took {:.1} s ({:.0} submits/s)",
        submitted_in.as_secs_f64(),
        ops as f64 / submitted_in.as_secs_f64()
    );
    Ok(())
}
