//! Awaited operations (IRC v2), measured on the local stacks (`infra/bench-irc.sh awaited`):
//! `group.put` with `await: serving` from us-east-1 to eu-west-1, for a new group whose one
//! member has never checked in. Once the op is WAITING_REMOTE, the bench waits a random 0-8 s
//! (so the dispatcher's poll backoff is caught at different points), then the member checks in
//! at eu-west-1's lease-check and becomes primary. Reported: the time from that check's answer
//! (writable) to the op's SUCCEEDED write (`updated_at_ms`, this machine's clock), p50/p90/p99,
//! and the polls each op took. `--ops` ops (default 40), 8 at a time.

use anyhow::{bail, ensure, Context, Result};
use futures::stream::{self, StreamExt};
use rand::Rng;
use serde_json::json;
use std::time::{Duration, Instant};
use tenure::clock::{Clock, SystemClock};
use tenure::ids::{GroupId, HostId};
use tenure::irc::submit::SubmitRequest;
use tenure::irc::{Region, Status};
use tenure::lease::service::GroupEntry;
use tenure::lease::LeaseConfig;
use tenure_testkit::{find, healthy_check, irc_submitter, stacks_from};

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut ops = 40usize;
    let mut regions_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ops" => ops = args.next().context("--ops N")?.parse()?,
            "--regions" => regions_file = Some(args.next().context("--regions FILE")?),
            "--bench" => {}
            other => bail!("unknown argument {other}; use --ops N --regions FILE"),
        }
    }
    let all = stacks_from(std::path::Path::new(
        &regions_file.context("--regions FILE: run infra/bench-irc.sh awaited")?,
    ))?;
    let (source, target) = (find(&all, "us-east-1")?, find(&all, "eu-west-1")?);
    let (submitter, store) = irc_submitter(&source).await?;
    let check = target.lease_check().await?;
    let run = SystemClock.now_ms();
    let one = |n: usize| {
        let (submitter, store, check) = (&submitter, &store, &check);
        async move {
            let group = format!("await-{run}-{n}");
            let host = format!("aw-{run}-{n}");
            let item = submitter
                .submit(SubmitRequest {
                    op_id: None,
                    target_region: Region::parse("eu-west-1")?,
                    kind: "group.put".into(),
                    resource: group.clone(),
                    payload: json!({"group_id": group, "lease_ms": LeaseConfig::default().lease_ms,
                                    "members": [{"host_id": host, "az": "euw1-az1", "priority": 1}]}),
                    await_for: Some("serving".into()),
                    await_ms: Some(300_000),
                })
                .await?;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let now = store.get(&item.op_id).await?.context("op")?;
                if now.status == Status::WaitingRemote {
                    break;
                }
                ensure!(!now.status.is_terminal(), "ended before served: {now:?}");
                ensure!(Instant::now() < deadline, "never WAITING_REMOTE");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let pause = rand::rng().random_range(0..8_000);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let answer = check
                .check_host(
                    &HostId::parse(&host)?,
                    &healthy_check(&[GroupId::parse(&group)?]),
                )
                .await?;
            let primary_at = SystemClock.now_ms();
            ensure!(
                answer
                    .groups
                    .iter()
                    .any(|g| matches!(g, GroupEntry::Answer(a) if a.writable)),
                "not primary: {answer:?}"
            );
            // The host keeps checking in, as a live host does (its lease lasts 10 s from its
            // last check), until the op ends.
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut last_check = Instant::now();
            loop {
                let now = store.get(&item.op_id).await?.context("op")?;
                if now.status.is_terminal() {
                    ensure!(now.status == Status::Succeeded, "{now:?}");
                    return Ok::<_, anyhow::Error>((
                        now.updated_at_ms.saturating_sub(primary_at),
                        now.polls,
                    ));
                }
                ensure!(Instant::now() < deadline, "never SUCCEEDED: {now:?}");
                if last_check.elapsed() >= Duration::from_secs(1) {
                    check
                        .check_host(
                            &HostId::parse(&host)?,
                            &healthy_check(&[GroupId::parse(&group)?]),
                        )
                        .await?;
                    last_check = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let results: Vec<Result<(u64, u32)>> = stream::iter(0..ops)
        .map(one)
        .buffer_unordered(8)
        .collect()
        .await;
    let mut latency = Vec::new();
    let mut polls = Vec::new();
    for r in results {
        let (l, p) = r?;
        latency.push(l);
        polls.push(u64::from(p));
    }
    latency.sort();
    polls.sort();
    println!(
        "awaited group.put, member primary -> SUCCEEDED  n={}  p50 {} ms  p90 {} ms  p99 {} ms  max {} ms",
        latency.len(),
        percentile(&latency, 50.0),
        percentile(&latency, 90.0),
        percentile(&latency, 99.0),
        latency.last().copied().unwrap_or(0)
    );
    println!(
        "polls that found it unchanged: p50 {}  max {}",
        percentile(&polls, 50.0),
        polls.last().copied().unwrap_or(0)
    );
    Ok(())
}
