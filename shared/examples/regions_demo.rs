//! The two-region demo (run by `infra/demo.sh` after `infra/local-regions.sh deploy`): in each
//! region's deployed stack, create a replica group, have three hosts check through the real
//! Function URL (SigV4-signed), and watch the scheduled lease-renewer keep the primary's lease
//! alive across a schedule tick without the epoch moving.
//!
//! Reads `.local/regions.json` (or `TENURE_REGIONS_FILE`); reaches AWS through the default
//! chain with `AWS_ENDPOINT_URL` pointing at MiniStack.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tenure::aws::dynamodb_client;
use tenure::clock::{Clock, SystemClock};
use tenure::ids::{GroupId, HostId};
use tenure::lease::client::LeaseCheckClient;
use tenure::lease::record::Member;
use tenure::lease::service::LeaseService;
use tenure::lease::store::LeaseStore;
use tenure::lease::LeaseConfig;
use tenure::sigv4::SigV4Client;

struct Region {
    name: String,
    client: LeaseCheckClient,
    service: LeaseService<SystemClock>,
}

async fn region(name: &str, outputs: &Value) -> Result<Region> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(name.to_owned()))
        .load()
        .await;
    let url = outputs["LeaseCheckLocalUrl"]
        .as_str()
        .context("LeaseCheckLocalUrl")?;
    let table = outputs["LeasesTable"].as_str().context("LeasesTable")?;
    Ok(Region {
        name: name.to_owned(),
        client: LeaseCheckClient::new(
            SigV4Client::for_function_urls(&sdk)?,
            url,
            name,
            Duration::from_secs(5),
        ),
        service: LeaseService::new(
            LeaseStore::new(dynamodb_client(&sdk, None), table),
            LeaseConfig::default(),
            SystemClock,
        ),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let path =
        std::env::var("TENURE_REGIONS_FILE").unwrap_or_else(|_| ".local/regions.json".into());
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("{path}: run infra/local-regions.sh deploy first"))?,
    )?;
    let hosts: Vec<HostId> = ["host-a", "host-b", "host-c"]
        .iter()
        .map(|h| HostId::parse(h))
        .collect::<Result<_, _>>()?;
    let group = GroupId::parse(&format!("orders-{}", SystemClock.now_ms()))?;
    let mut regions = Vec::new();
    for (name, outputs) in file["regions"].as_object().context("regions")? {
        let r = region(name, outputs).await?;
        let members: BTreeMap<HostId, Member> = hosts
            .iter()
            .zip(["a", "b", "c"])
            .enumerate()
            .map(|(i, (h, az))| (h.clone(), Member::new(format!("{name}{az}"), 3 - i as u32)))
            .collect();
        r.service
            .create_group(group.clone(), 10_000, members)
            .await?;
        println!(
            "{name}: created group {group} (lease 10 s) in {}",
            r.service.store().table()
        );
        for host in &hosts {
            let a = r.client.check(&group, host, true, true).await?;
            println!(
                "{name}: {host} -> role={:?} writable={} epoch={} holder={} valid_for={}ms (signed POST to the Function URL)",
                a.role, a.writable, a.epoch, a.holder.as_ref().map(|h| h.as_str()).unwrap_or("-"), a.valid_for_ms
            );
        }
        regions.push(r);
    }
    println!("\nhosts keep polling (heartbeat every 1 s); only the renewer moves expires_at without a new epoch.");
    println!("waiting for the lease-renewer's schedule (1 minute) and one more tick after its first renewal...");
    let started = Instant::now();
    let mut first_renewal: BTreeMap<String, (Instant, u64)> = BTreeMap::new();
    let mut last: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    loop {
        for r in &regions {
            for host in &hosts {
                r.client.check(&group, host, true, true).await?;
            }
            let record = r.client.get(&group).await?;
            let now = SystemClock.now_ms();
            let (epoch, expires) = (record.epoch.0, record.expires_at_ms);
            if let Some((last_epoch, last_expires)) = last.get(&r.name).copied() {
                if epoch != last_epoch {
                    if first_renewal.contains_key(&r.name) {
                        bail!(
                            "{}: epoch moved {last_epoch} -> {epoch} after the renewer took over",
                            r.name
                        );
                    }
                    println!("{:>6.1}s {}: lease re-acquired by the live holder at epoch {epoch} (renewer not running yet)", started.elapsed().as_secs_f64(), r.name);
                } else if expires > last_expires && !first_renewal.contains_key(&r.name) {
                    println!(
                        "{:>6.1}s {}: renewer extended the lease (epoch {epoch}, expires in {} ms)",
                        started.elapsed().as_secs_f64(),
                        r.name,
                        expires.saturating_sub(now)
                    );
                    first_renewal.insert(r.name.clone(), (Instant::now(), epoch));
                }
            }
            last.insert(r.name.clone(), (epoch, expires));
        }
        let done = regions.iter().all(|r| {
            first_renewal
                .get(&r.name)
                .is_some_and(|(at, _)| at.elapsed() > Duration::from_secs(65))
        });
        if done {
            break;
        }
        if started.elapsed() > Duration::from_secs(240) {
            bail!("the scheduled renewer did not keep the lease across a tick within 240 s");
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    for r in &regions {
        let record = r.client.get(&group).await?;
        let (_, epoch) = first_renewal[&r.name];
        println!(
            "{}: after more than one schedule tick the lease is still held by {} at epoch {} (unchanged since the renewer's first renewal: {}), expires in {} ms",
            r.name,
            record.holder.as_ref().map(|h| h.as_str()).unwrap_or("-"),
            record.epoch,
            epoch,
            record.expires_at_ms.saturating_sub(SystemClock.now_ms())
        );
    }
    Ok(())
}
