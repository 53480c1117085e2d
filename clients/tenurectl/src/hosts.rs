//! `tenurectl hosts list|show`: the database hosts' leases as an operator needs to see them
//! when a failover is slow or a host will not take over: is the lease live, when did the host
//! last check in, which process (incarnation) speaks for it, which groups it holds.

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use std::collections::BTreeMap;
use tenure::clock::SystemClock;
use tenure::ids::HostId;
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::host::HostRecord;
use tenure::lease::protocol::is_revocable;
use tenure::lease::record::LeaseRecord;
use tenure::lease::service::{HostView, LeaseService};
use tenure::lease::store::LeaseStore;
use tenure::lease::LeaseConfig;

/// Segments of the parallel scan of the Hosts table.
const SCAN_SEGMENTS: u32 = 4;

/// "live, ends in 812 ms", "lapsed 3,200 ms ago", "none".
pub(crate) fn lease_text(host: &HostRecord, now: u64, cfg: &LeaseConfig) -> String {
    if host.expires_at_ms == 0 {
        "none".into()
    } else if !is_revocable(host, now, cfg) {
        format!("live, {} ms", host.expires_at_ms.saturating_sub(now))
    } else {
        format!("lapsed {} ms ago", now.saturating_sub(host.expires_at_ms))
    }
}

pub(crate) fn ago(t: u64, now: u64) -> String {
    if t == 0 {
        "never".into()
    } else {
        format!("{} ms ago", now.saturating_sub(t))
    }
}

/// A host's epoch, lease, last check-in, incarnation, health, drain and revocation, a line
/// each (`hosts show`, `watch host`).
pub(crate) fn host_lines(h: &HostRecord, now: u64, cfg: &LeaseConfig) -> String {
    let mut out = format!(
        "epoch        {}\nlease        {}\nlast seen    {}\nincarnation  {}{}\nhealthy      {}\ndraining     {}\n",
        h.epoch,
        lease_text(h, now, cfg),
        ago(h.last_seen_ms, now),
        h.incarnation.as_ref().map_or("-", |i| i.as_str()),
        if h.incarnation_changed.is_some() {
            " (changed: its lease is not renewed until it lapses)"
        } else {
            ""
        },
        h.healthy,
        h.draining,
    );
    if h.revoked_at_ms > 0 {
        out.push_str(&format!("revoked      {}\n", ago(h.revoked_at_ms, now)));
    }
    out
}

/// A host as JSON: its record plus `lease_live`, `expires_in_ms`, `last_seen_ago_ms` and the
/// number of groups it holds at its current epoch.
fn host_json(host: &HostRecord, held: usize, now: u64, cfg: &LeaseConfig) -> serde_json::Value {
    let mut view = json!(host);
    view["lease_live"] = json!(!is_revocable(host, now, cfg));
    view["expires_in_ms"] = json!(host.expires_at_ms as i64 - now as i64);
    view["last_seen_ago_ms"] = json!(now.saturating_sub(host.last_seen_ms));
    view["groups_held"] = json!(held);
    view
}

/// Every host, with the groups each holds at its current host epoch (one scan of each table).
pub async fn list(
    store: &DynamoLeaseStore,
    cfg: &LeaseConfig,
    now: u64,
    json_output: bool,
) -> Result<()> {
    let mut hosts: Vec<HostRecord> = futures::stream::iter(0..SCAN_SEGMENTS)
        .map(|segment| store.scan_hosts(segment, SCAN_SEGMENTS))
        .flatten_unordered(None)
        .try_collect()
        .await?;
    hosts.sort_by(|a, b| a.host_id.cmp(&b.host_id));
    let groups: Vec<LeaseRecord> = store
        .scan_groups()
        .try_filter(|g| futures::future::ready(!g.deleted))
        .try_collect()
        .await?;
    let epochs: BTreeMap<&HostId, _> = hosts.iter().map(|h| (&h.host_id, h.epoch)).collect();
    let mut held: BTreeMap<&HostId, usize> = BTreeMap::new();
    for g in &groups {
        if let (Some(holder), Some(at)) = (&g.holder, g.holder_host_epoch) {
            if epochs.get(holder) == Some(&at) {
                *held.entry(holder).or_default() += 1;
            }
        }
    }
    let held_by = |h: &HostRecord| held.get(&h.host_id).copied().unwrap_or(0);
    if json_output {
        let all: Vec<_> = hosts
            .iter()
            .map(|h| host_json(h, held_by(h), now, cfg))
            .collect();
        println!("{}", json!(all));
        return Ok(());
    }
    println!(
        "{:<28} {:>6} {:<22} {:<16} {:<28} {:>7} {:>8} {:>6}",
        "HOST", "EPOCH", "LEASE", "LAST SEEN", "INCARNATION", "HEALTHY", "DRAINING", "GROUPS"
    );
    for h in &hosts {
        println!(
            "{:<28} {:>6} {:<22} {:<16} {:<28} {:>7} {:>8} {:>6}",
            h.host_id,
            h.epoch,
            lease_text(h, now, cfg),
            ago(h.last_seen_ms, now),
            h.incarnation.as_ref().map_or("-", |i| i.as_str()),
            h.healthy,
            h.draining,
            held_by(h)
        );
    }
    Ok(())
}

/// One host's record and the groups it holds (from the `by-holder` index).
pub async fn show(
    service: &LeaseService<DynamoLeaseStore, SystemClock>,
    host: &HostId,
    json_output: bool,
) -> Result<()> {
    let view: HostView = service.get_host(host).await?;
    let cfg = service.config();
    let h = &view.host;
    let now = view.now_ms;
    if json_output {
        let mut out = host_json(
            h,
            view.groups.iter().filter(|g| g.current).count(),
            now,
            cfg,
        );
        out["groups"] = json!(view.groups);
        println!("{out}");
        return Ok(());
    }
    println!("host         {}", h.host_id);
    print!("{}", host_lines(h, now, cfg));
    println!();
    println!(
        "{:<40} {:>8} {:>11} {:>8}",
        "GROUP", "EPOCH", "HOST EPOCH", "CURRENT"
    );
    for g in &view.groups {
        println!(
            "{:<40} {:>8} {:>11} {:>8}",
            g.group_id,
            g.epoch,
            g.holder_host_epoch
                .map_or_else(|| "-".to_owned(), |e| e.to_string()),
            g.current
        );
    }
    if view.groups.is_empty() {
        println!("(holds no group)");
    }
    Ok(())
}
