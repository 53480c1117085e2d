//! The lease demo (run by `infra/demo.sh`): three replica hosts of one group check the lease
//! through the library against the local stack; the primary dies and a secondary takes over;
//! the new primary steps down and hands over. Prints a timeline with measured times.
//!
//! Reaches AWS through the default chain: `AWS_ENDPOINT_URL` points it at MiniStack.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tenure::aws::{dynamodb_client, load_sdk_config};
use tenure::clock::{Clock, SystemClock};
use tenure::ids::{GroupId, HostId};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::record::Member;
use tenure::lease::renewer::{renew_round, RenewerConfig};
use tenure::lease::service::LeaseService;
use tenure::lease::{CheckAnswer, LeaseConfig};

const TABLE: &str = "tenure-demo-leases";
const HOSTS_TABLE: &str = "tenure-demo-hosts";

fn show(t0: Instant, answer: &CheckAnswer) {
    println!(
        "  {:>7.3}s  {:<7} {:<9} writable={:<5} epoch={} holder={:<7} valid_for={}ms",
        t0.elapsed().as_secs_f64(),
        answer.host_id,
        format!("{:?}", answer.role).to_lowercase(),
        answer.writable,
        answer.epoch,
        answer.holder.as_ref().map(|h| h.as_str()).unwrap_or("-"),
        answer.valid_for_ms
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let sdk = load_sdk_config().await;
    let client = dynamodb_client(&sdk, None);
    for (table, key) in [(TABLE, "group_id"), (HOSTS_TABLE, "host_id")] {
        tenure::aws::ensure_table(&client, table, key)
            .await
            .map_err(|e| anyhow!("{e} (is MiniStack running? infra/ministack.sh start)"))?;
    }
    // A 2 s lease so the takeover is quick to watch; the protocol is the same at 10 s.
    let cfg = LeaseConfig::new(2_000, 500, 100, 600, 200)?;
    let store = DynamoLeaseStore::new(client, HOSTS_TABLE, TABLE);
    let service = LeaseService::new(store.clone(), cfg, SystemClock);
    let group = GroupId::parse(&format!("demo-{}", SystemClock.now_ms()))?;
    let hosts: Vec<HostId> = ["host-a", "host-b", "host-c"]
        .iter()
        .map(|h| HostId::parse(h))
        .collect::<Result<_, _>>()?;
    let members: BTreeMap<HostId, Member> = hosts
        .iter()
        .zip(["az-a", "az-b", "az-c"])
        .enumerate()
        .map(|(i, (h, az))| (h.clone(), Member::new(az, 3 - i as u32)))
        .collect();
    service
        .create_group(group.clone(), cfg.lease_ms, members)
        .await?;
    println!(
        "group {group}: lease {} ms, skew {} ms, poll {} ms",
        cfg.lease_ms, cfg.clock_skew_ms, cfg.poll_interval_ms
    );

    let t0 = Instant::now();

    println!("\n1. three hosts check in (host-a has the highest priority and checks first)");
    for host in &hosts {
        show(t0, &service.check_group(&group, host, true, true).await?);
    }
    println!(
        "\n2. steady state: hosts poll, the renewer extends the hosts' leases (one write per host)"
    );
    let renewer = RenewerConfig {
        scan_segments: 1,
        max_in_flight: 4,
        stop_margin_ms: 0,
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(cfg.renew_interval_ms)).await;
        for host in &hosts {
            service.check_group(&group, host, true, true).await?;
        }
        let round = renew_round(&store, &cfg, &SystemClock, &renewer).await;
        let (record, holder) = service.get_group(&group).await?;
        println!(
            "  {:>7.3}s  renewer: renewed {} host lease(s); group epoch {}, holder's host lease ends in {} ms",
            t0.elapsed().as_secs_f64(),
            round.renewed,
            record.epoch,
            holder.map_or(0, |h| h.expires_at_ms.saturating_sub(SystemClock.now_ms()))
        );
    }
    println!("\n3. host-a dies (stops checking); host-b and host-c keep polling");
    let last_heartbeat = Instant::now();
    service.check_group(&group, &hosts[0], true, true).await?;
    let new_primary = loop {
        let mut writable = None;
        for host in &hosts[1..] {
            let answer = service.check_group(&group, host, true, true).await?;
            if answer.writable {
                show(t0, &answer);
                writable = Some(answer);
            }
        }
        renew_round(&store, &cfg, &SystemClock, &renewer).await;
        if let Some(answer) = writable {
            break answer;
        }
        if last_heartbeat.elapsed() > Duration::from_secs(30) {
            bail!("no takeover within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(cfg.poll_interval_ms / 5)).await;
    };
    println!(
        "  takeover by {} at epoch {}: {} ms after host-a's last heartbeat (bound: lease + skew + poll = {} ms)",
        new_primary.host_id,
        new_primary.epoch,
        last_heartbeat.elapsed().as_millis(),
        cfg.lease_ms + cfg.clock_skew_ms + cfg.poll_interval_ms
    );
    println!(
        "\n4. planned handover: an operator drains {}",
        new_primary.host_id
    );
    let drain_at = Instant::now();
    service
        .set_draining(&group, &new_primary.host_id, true)
        .await?;
    // The primary's next poll sees `draining`; it stops writing, then releases.
    let seen = service
        .check_group(&group, &new_primary.host_id, true, true)
        .await?;
    show(t0, &seen);
    if !seen.draining {
        bail!("the drain request did not reach the primary");
    }
    let released = service
        .release(&group, &new_primary.host_id, seen.epoch)
        .await?;
    show(t0, &released);
    let successor = hosts[1..]
        .iter()
        .find(|h| **h != new_primary.host_id)
        .context("a third host")?;
    let answer = service.check_group(&group, successor, true, true).await?;
    show(t0, &answer);
    if !answer.writable {
        bail!("{successor} did not take over after the release");
    }
    println!(
        "  handover: {} ms from the drain request to {}'s writable answer, epoch {} \
         (a live host polls every {} ms, so about one poll in practice)",
        drain_at.elapsed().as_millis(),
        successor,
        answer.epoch,
        cfg.poll_interval_ms
    );
    let (record, _) = service.get_group(&group).await?;
    println!(
        "\nfinal record: holder {:?}, epoch {} (one per acquisition, never reset)",
        record.holder.map(String::from),
        record.epoch
    );
    Ok(())
}
