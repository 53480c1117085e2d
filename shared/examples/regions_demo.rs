//! The two-region demo (run by `infra/demo.sh` after `infra/local-regions.sh deploy`): in each
//! region's deployed stack, create a replica group, have three hosts check through the real
//! Function URL (SigV4-signed), and watch the group's epoch stay put from the first check on:
//! before the renewer's first schedule tick the hosts' own checks keep their leases, after it
//! the renewer does (one write per host).
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
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::record::Member;
use tenure::lease::service::LeaseService;
use tenure::lease::LeaseConfig;
use tenure::sigv4::SigV4Client;

struct Region {
    name: String,
    client: LeaseCheckClient,
    service: LeaseService<DynamoLeaseStore, SystemClock>,
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
    let hosts_table = outputs["HostsTable"].as_str().context("HostsTable")?;
    Ok(Region {
        name: name.to_owned(),
        client: LeaseCheckClient::new(
            SigV4Client::for_function_urls(&sdk)?,
            url,
            name,
            Duration::from_secs(5),
        ),
        service: LeaseService::new(
            DynamoLeaseStore::new(dynamodb_client(&sdk, None), hosts_table, table),
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
            r.service.store().leases_table()
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
    println!("\nhosts keep polling (heartbeat every 1 s) for longer than a renewer schedule tick;");
    println!("the group epoch must not move: before the renewer's first tick the hosts' own checks renew their leases.");
    let started = Instant::now();
    let first: BTreeMap<String, u64> = {
        let mut first = BTreeMap::new();
        for r in &regions {
            first.insert(r.name.clone(), r.client.get(&group).await?.epoch.0);
        }
        first
    };
    let mut min_left: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_print = Instant::now();
    while started.elapsed() < Duration::from_secs(75) {
        for r in &regions {
            for host in &hosts {
                r.client.check(&group, host, true, true).await?;
            }
            let view = r.client.get_view(&group).await?;
            let epoch = view["epoch"].as_u64().unwrap_or(0);
            let left = view["expires_in_ms"].as_u64().unwrap_or(0);
            if epoch != first[&r.name] {
                bail!(
                    "{}: the group epoch moved {} -> {epoch}: a lease churned",
                    r.name,
                    first[&r.name]
                );
            }
            if view["grant_live"] != Value::Bool(true) {
                bail!("{}: the primary's grant lapsed: {view}", r.name);
            }
            let m = min_left.entry(r.name.clone()).or_insert(u64::MAX);
            *m = (*m).min(left);
            if last_print.elapsed() > Duration::from_secs(10) {
                println!(
                    "{:>6.1}s {}: holder {} at epoch {epoch}, its host lease ends in {left} ms",
                    started.elapsed().as_secs_f64(),
                    r.name,
                    view["holder"].as_str().unwrap_or("-"),
                );
            }
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    for r in &regions {
        let record = r.client.get(&group).await?;
        println!(
            "{}: after {:.0} s the group is still held by {} at epoch {} (unchanged); the holder's host lease never had less than {} ms left",
            r.name,
            started.elapsed().as_secs_f64(),
            record.holder.as_ref().map(|h| h.as_str()).unwrap_or("-"),
            record.epoch,
            min_left[&r.name],
        );
    }
    Ok(())
}
