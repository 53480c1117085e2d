//! The lease fault campaign: every host serves every group of the cluster; a writer keeps
//! writing, spread over the groups, through whichever host is primary of each, while the
//! campaign injects faults into the primary of the first group — kill -9 (restarted
//! afterwards), SIGSTOP past its deadline (then SIGCONT), or, when the hosts run behind chaos
//! proxies, cutting it off from lease-check (healed after the takeover) — until it has seen the
//! asked number of failovers. All along, the proxies inject store faults (500s, lost answers,
//! throttling, latency) into every host's DynamoDB and lease-check traffic; they are healed
//! before the read-back. Then it checks the hosts' gate logs (one machine, one boot clock) and
//! the data table: per group, no overlapping writable intervals and epochs increasing; every
//! acknowledged write readable.

use crate::cluster::{Cluster, ClusterError};
use crate::fault_proxy::{Chaos, FaultCounts};
use rand::Rng;
use replica_agent::clock::boot_ns;
use replica_agent::gate_log::{timeline, violations, Violation, WritableInterval};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Kill,
    Pause,
    CutOffFromLeaseCheck,
}

#[derive(Debug)]
pub struct CampaignReport {
    pub failovers: usize,
    pub kills: usize,
    pub pauses: usize,
    pub cut_offs: usize,
    /// Requests through the hosts' proxies, by fault, summed over hosts.
    pub store_faults: FaultCounts,
    /// Fault to new primary, sorted.
    pub failover_ms: Vec<u64>,
    pub acked_writes: usize,
    pub lost_writes: Vec<String>,
    pub violations: Vec<Violation>,
    /// Every host's writable intervals, from the gate logs (what the history is checked
    /// against).
    pub intervals: Vec<WritableInterval>,
    /// Each fault as it struck: when (the gate logs' clock), what, and which host.
    pub faults: Vec<(u64, Fault, String)>,
    /// The picture of the struck group and a few others (`timeline`), written beside the gate
    /// logs.
    pub timeline_svg: PathBuf,
}

/// Groups in the campaign's picture: the struck one and the next few.
const TIMELINE_GROUPS: usize = 5;

impl CampaignReport {
    /// The struck group (the first) and the next few as a picture, each fault a line across
    /// them.
    pub fn timeline(&self, groups: &[String]) -> tenure::timeline::Timeline {
        let shown: Vec<WritableInterval> = self
            .intervals
            .iter()
            .filter(|i| groups.iter().take(TIMELINE_GROUPS).any(|g| g == &i.group))
            .cloned()
            .collect();
        let mut picture = timeline(
            &format!(
                "Lease fault campaign: {} failovers of {}'s primary",
                self.failovers,
                groups.first().map_or("-", String::as_str)
            ),
            &shown,
        );
        for (at_ns, fault, host) in &self.faults {
            let what = match fault {
                Fault::Kill => "kill -9",
                Fault::Pause => "SIGSTOP",
                Fault::CutOffFromLeaseCheck => "cut off",
            };
            picture.mark(*at_ns, format!("{what} {host}"));
        }
        picture
    }

    pub fn percentile_ms(&self, p: f64) -> u64 {
        if self.failover_ms.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * self.failover_ms.len() as f64).ceil() as usize;
        self.failover_ms[rank.clamp(1, self.failover_ms.len()) - 1]
    }
}

/// Runs until `failovers` failovers happened. `lease` bounds how long a paused host stays
/// stopped (past its deadline) and how long a failover may take. `store_faults` is set on every
/// host's proxy for the whole run (hosts without proxies get no store faults and are never cut
/// off).
pub async fn run(
    cluster: Cluster,
    failovers: usize,
    lease: Duration,
    store_faults: Chaos,
) -> Result<CampaignReport, ClusterError> {
    let proxied = cluster.hosts.iter().all(|h| h.proxy.is_some());
    for proxy in cluster.hosts.iter().filter_map(|h| h.proxy.as_ref()) {
        proxy.set_chaos(store_faults.clone());
    }
    let cluster = Arc::new(RwLock::new(cluster));
    let hosts = cluster.read().await.hosts.len();
    let groups: Vec<String> = cluster.read().await.groups().to_vec();
    let Some(probe) = groups.first().cloned() else {
        return Err(ClusterError::Start {
            host: "-".into(),
            message: "a campaign needs at least one group".into(),
        });
    };
    let all: Vec<usize> = (0..hosts).collect();
    let within = lease * 3 + Duration::from_secs(10);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (cluster, stop, groups) = (cluster.clone(), stop.clone(), groups.clone());
        tokio::spawn(async move {
            let mut acked: Vec<(String, String, String)> = Vec::new();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let c = cluster.read().await;
                let group = &groups[rand::rng().random_range(0..groups.len())];
                for i in 0..c.hosts.len() {
                    if !c.hosts[i].is_running() {
                        continue;
                    }
                    let (key, value) = (format!("c{n}"), format!("v{n}"));
                    let put =
                        tokio::time::timeout(Duration::from_secs(1), c.put(i, group, &key, &value));
                    if let Ok(Ok((200, _))) = put.await {
                        acked.push((group.clone(), key, value));
                        n += 1;
                    }
                }
                drop(c);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };
    let mut report = CampaignReport {
        failovers: 0,
        kills: 0,
        pauses: 0,
        cut_offs: 0,
        store_faults: FaultCounts::default(),
        failover_ms: Vec::new(),
        acked_writes: 0,
        lost_writes: Vec::new(),
        violations: Vec::new(),
        intervals: Vec::new(),
        faults: Vec::new(),
        timeline_svg: PathBuf::new(),
    };
    let first_fault = rand::rng().random_range(0..3);
    while report.failovers < failovers {
        cluster
            .read()
            .await
            .wait_for_primary(&probe, &all, within)
            .await?;
        // Let the others heartbeat, then strike at a random moment.
        let settle = Duration::from_millis(rand::rng().random_range(3_000..5_000));
        tokio::time::sleep(settle).await;
        let primary = cluster
            .read()
            .await
            .wait_for_primary(&probe, &all, within)
            .await?;
        let faults: &[Fault] = if proxied {
            &[Fault::Kill, Fault::Pause, Fault::CutOffFromLeaseCheck]
        } else {
            &[Fault::Kill, Fault::Pause]
        };
        // Round robin from a random start: even a short run meets every fault.
        let fault = faults[(first_fault + report.failovers) % faults.len()];
        let others: Vec<usize> = all.iter().copied().filter(|&i| i != primary).collect();
        let started = Instant::now();
        let host = cluster.read().await.hosts[primary].name.clone();
        report.faults.push((boot_ns(), fault, host));
        match fault {
            Fault::Kill => {
                cluster.write().await.kill(primary)?;
                report.kills += 1;
            }
            Fault::Pause => {
                cluster.read().await.pause(primary)?;
                report.pauses += 1;
            }
            Fault::CutOffFromLeaseCheck => {
                if let Some(proxy) = &cluster.read().await.hosts[primary].proxy {
                    proxy.set_chaos(Chaos {
                        cut_off_lease_check: true,
                        ..store_faults.clone()
                    });
                }
                report.cut_offs += 1;
            }
        }
        let next = cluster
            .read()
            .await
            .wait_for_primary(&probe, &others, within)
            .await?;
        report
            .failover_ms
            .push(started.elapsed().as_millis() as u64);
        report.failovers += 1;
        tracing::info!(
            ?fault,
            primary,
            next,
            ms = started.elapsed().as_millis() as u64,
            "failover"
        );
        match fault {
            Fault::Kill => cluster.write().await.restart(primary)?,
            Fault::Pause => {
                // Keep it stopped a little past the takeover, then let it run on.
                tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..1_000))).await;
                cluster.read().await.resume(primary)?;
            }
            Fault::CutOffFromLeaseCheck => {
                tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..1_000))).await;
                if let Some(proxy) = &cluster.read().await.hosts[primary].proxy {
                    proxy.set_chaos(store_faults.clone());
                }
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = writer.await.unwrap_or_default();
    let c = cluster.read().await;
    // Heal the store before reading back: a read refused by an injected fault is not a loss.
    for proxy in c.hosts.iter().filter_map(|h| h.proxy.as_ref()) {
        report.store_faults.merge(&proxy.counts());
        proxy.set_chaos(Chaos::default());
    }
    // Reads go to the store directly (strongly consistent): any running host will do.
    let reader = c.wait_for_primary(&probe, &all, within).await?;
    for (group, key, value) in &acked {
        match c.get(reader, group, key).await {
            Ok((200, body)) if body["value"].as_str() == Some(value.as_str()) => {}
            _ => report.lost_writes.push(format!("{group}/{key}")),
        }
    }
    report.acked_writes = acked.len();
    report.intervals = c.writable_intervals()?;
    report.violations = violations(&report.intervals);
    report.failover_ms.sort();
    report.timeline_svg = c.dir().join("campaign-timeline.svg");
    std::fs::write(&report.timeline_svg, report.timeline(&groups).to_svg()).map_err(|source| {
        ClusterError::Write {
            path: report.timeline_svg.display().to_string(),
            source,
        }
    })?;
    Ok(report)
}
