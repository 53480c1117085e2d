//! Three kvdemo hosts in many groups on one local stack: the scale run (every group has
//! exactly one primary throughout), the failover of every group of a killed host, and the drain
//! of one group among many. Shared by the test command's short run (`tests/many_groups.rs`) and
//! the benchmark (`benches/many_groups.rs`).
//!
//! "Exactly one primary" is proved from the gate logs, which only ever overstate when a host
//! could write: no two hosts' intervals of one group overlap (at most one), and the union of a
//! group's intervals over all hosts covers the measured span with no gap (at least one).

use crate::cluster::{Cluster, ClusterError};
use replica_agent::clock::boot_ns;
use replica_agent::gate_log::{violations, Violation, WritableInterval};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tenure::lease::client::{HostCheckBody, LeaseCheckClient};
use tenure::sigv4::SigV4Client;

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency of lease-check under the hosts' load: a probe host's steady-state check (its own
/// host item read, no group) beside an empty Function URL call (an unknown path, answered 404
/// without touching the store), sampled alternately.
#[derive(Debug, Default)]
pub struct Latency {
    pub check: Vec<Duration>,
    pub empty: Vec<Duration>,
}

impl Latency {
    pub fn summary(&mut self) -> String {
        self.check.sort();
        self.empty.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (c50, c99) = (percentile(&self.check, 50.0), percentile(&self.check, 99.0));
        let (e50, e99) = (percentile(&self.empty, 50.0), percentile(&self.empty, 99.0));
        format!(
            "check p50 {:.1} ms p99 {:.1} ms; empty call p50 {:.1} ms p99 {:.1} ms; ratio p50 {:.2} p99 {:.2} (n={})",
            ms(c50),
            ms(c99),
            ms(e50),
            ms(e99),
            c50.as_secs_f64() / e50.as_secs_f64().max(1e-9),
            c99.as_secs_f64() / e99.as_secs_f64().max(1e-9),
            self.check.len()
        )
    }
}

/// What samples [`Latency`]: a signed lease-check client and a plain signed HTTP client for
/// one stack's Function URL, and the probe host's id, built once.
pub struct Prober {
    client: LeaseCheckClient,
    http: SigV4Client,
    base_url: String,
    region: String,
    host: tenure::ids::HostId,
}

impl Prober {
    pub fn new(
        sdk: &aws_config::SdkConfig,
        access: &crate::fixture::StackAccess,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self {
            client: LeaseCheckClient::new(
                SigV4Client::for_function_urls(sdk)?,
                &access.lease_check_url,
                &access.region,
                Duration::from_secs(5),
            ),
            http: SigV4Client::for_function_urls(sdk)?,
            base_url: access.lease_check_url.trim_end_matches('/').to_owned(),
            region: access.region.clone(),
            host: tenure::ids::HostId::parse(&format!("probe-{}", std::process::id()))?,
        })
    }

    /// One sample of each kind into `latency` (a failed call adds none).
    pub async fn sample(&self, latency: &mut Latency) {
        let body = HostCheckBody {
            healthy: true,
            heartbeat: false,
            ..HostCheckBody::default()
        };
        let started = Instant::now();
        if self.client.check_host(&self.host, &body).await.is_ok() {
            latency.check.push(started.elapsed());
        }
        let url = format!("{}/v1/empty", self.base_url);
        let started = Instant::now();
        if self
            .http
            .send("GET", &url, &self.region, &[], Duration::from_secs(5))
            .await
            .is_ok()
        {
            latency.empty.push(started.elapsed());
        }
    }
}

/// What the gate logs say about a span of a run.
#[derive(Debug)]
pub struct Coverage {
    pub violations: Vec<Violation>,
    /// Groups with some instant in the span where no host could write.
    pub groups_with_gaps: usize,
    /// The longest such instant-to-instant gap.
    pub longest_gap: Duration,
    pub groups: usize,
}

/// Checks `intervals` over `[from_ns, to_ns)` for every group in `groups`.
pub fn coverage(
    intervals: &[WritableInterval],
    groups: &[String],
    from_ns: u64,
    to_ns: u64,
) -> Coverage {
    let mut by_group: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for i in intervals {
        by_group
            .entry(i.group.as_str())
            .or_default()
            .push((i.start_ns, i.end_ns));
    }
    let mut groups_with_gaps = 0;
    let mut longest = 0u64;
    for g in groups {
        let mut spans = by_group.remove(g.as_str()).unwrap_or_default();
        spans.sort();
        let mut covered_to = from_ns;
        let mut gap = false;
        for (start, end) in spans {
            if end <= covered_to {
                continue;
            }
            if start > covered_to && covered_to < to_ns {
                gap = true;
                longest = longest.max(start.min(to_ns) - covered_to);
            }
            covered_to = covered_to.max(end);
            if covered_to >= to_ns {
                break;
            }
        }
        if covered_to < to_ns {
            gap = true;
            longest = longest.max(to_ns - covered_to);
        }
        groups_with_gaps += usize::from(gap);
    }
    Coverage {
        violations: violations(intervals),
        groups_with_gaps,
        longest_gap: Duration::from_nanos(longest),
        groups: groups.len(),
    }
}

/// Waits until host `i` may write every one of the cluster's groups; the time it took.
pub async fn until_holds_all(
    cluster: &Cluster,
    i: usize,
    within: Duration,
) -> Result<Duration, ClusterError> {
    let started = Instant::now();
    let n = cluster.groups().len() as u64;
    if cluster.wait_for_primaries(i, n, within).await {
        Ok(started.elapsed())
    } else {
        Err(ClusterError::NoPrimary {
            group: format!("all {n} groups"),
            hosts: vec![cluster.hosts[i].name.clone()],
            within,
        })
    }
}

/// Waits until every group has a primary among the running hosts (their primaries add up to
/// the cluster's groups); the time it took.
pub async fn until_every_group_held(
    cluster: &Cluster,
    within: Duration,
) -> Result<Duration, ClusterError> {
    let started = Instant::now();
    let n = cluster.groups().len() as u64;
    loop {
        let mut held = 0;
        for i in 0..cluster.hosts.len() {
            if cluster.hosts[i].is_running() {
                held += cluster.primaries(i).await.unwrap_or(0);
            }
        }
        if held >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            return Err(ClusterError::NoPrimary {
                group: format!("{} of {n} groups", n - held),
                hosts: cluster.hosts.iter().map(|h| h.name.clone()).collect(),
                within,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Brings every group to host `i`: once each group has a primary, every other host that holds
/// some steps down as a whole (releasing them, so `i`, the best candidate left, acquires them)
/// and resumes once `i` holds them all. At start-up the hosts race: a better candidate that
/// has not acted within `heartbeat_timeout_ms` of a group becoming free loses it to the next,
/// so a start may split the groups.
pub async fn gather_on(
    cluster: &Cluster,
    i: usize,
    within: Duration,
) -> Result<Duration, ClusterError> {
    let started = Instant::now();
    until_every_group_held(cluster, within).await?;
    let mut stepped_down = Vec::new();
    for j in 0..cluster.hosts.len() {
        if j != i && cluster.primaries(j).await.unwrap_or(0) > 0 {
            cluster.step_down_host(j).await?;
            stepped_down.push(j);
        }
    }
    until_holds_all(cluster, i, within).await?;
    for j in stepped_down {
        cluster.resume_host(j).await?;
    }
    Ok(started.elapsed())
}

/// What a restart of a primary's process did to its groups.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    /// From the kill until every group had a primary again.
    pub took: Duration,
    /// Groups the restarted process (a new incarnation) acquired afresh.
    pub came_back: u64,
    /// Groups another host acquired.
    pub moved: u64,
}

/// kill -9 of host `i` and an immediate restart as a new incarnation (same host id, same gate
/// log): the new process must not inherit a grant, so its groups come back to it at new epochs
/// once the old incarnation's lease has lapsed, or move to another host. Waits until every
/// group has a primary again.
pub async fn restart_primary(
    cluster: &mut Cluster,
    i: usize,
    within: Duration,
) -> Result<Restart, ClusterError> {
    let started = Instant::now();
    cluster.kill(i)?;
    cluster.restart(i)?;
    until_every_group_held(cluster, within).await?;
    let took = started.elapsed();
    let came_back = cluster.primaries(i).await.unwrap_or(0);
    let n = cluster.groups().len() as u64;
    Ok(Restart {
        took,
        came_back,
        moved: n.saturating_sub(came_back),
    })
}

/// `host`'s writable intervals after its kill at `killed_at` whose epoch is not above the
/// highest any host had for that group before the kill: grants a restarted process inherited
/// (there must be none; every grant of a new incarnation is acquired afresh, epoch + 1).
pub fn inherited_grants<'a>(
    intervals: &'a [WritableInterval],
    host: &str,
    killed_at: u64,
) -> Vec<&'a WritableInterval> {
    let mut before: BTreeMap<&str, u64> = BTreeMap::new();
    for w in intervals.iter().filter(|w| w.start_ns < killed_at) {
        let e = before.entry(w.group.as_str()).or_default();
        *e = (*e).max(w.epoch);
    }
    intervals
        .iter()
        .filter(|w| w.host == host && w.start_ns > killed_at)
        .filter(|w| w.epoch <= before.get(w.group.as_str()).copied().unwrap_or(0))
        .collect()
}

/// The running host that holds every group, if one does.
pub async fn holder_of_all(cluster: &Cluster) -> Option<usize> {
    let n = cluster.groups().len() as u64;
    for i in 0..cluster.hosts.len() {
        if cluster.hosts[i].is_running() && cluster.primaries(i).await == Some(n) {
            return Some(i);
        }
    }
    None
}

/// Boot-clock time now, for spans of [`coverage`].
pub fn now_ns() -> u64 {
    boot_ns()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(host: &str, group: &str, start: u64, end: u64) -> WritableInterval {
        WritableInterval {
            host: host.into(),
            group: group.into(),
            epoch: if host == "a" { 1 } else { 2 },
            start_ns: start,
            end_ns: end,
        }
    }

    #[test]
    fn a_restarted_host_reopening_at_its_old_epoch_inherited_the_grant() {
        let at = |host: &str, epoch, start| WritableInterval {
            host: host.into(),
            group: "g".into(),
            epoch,
            start_ns: start,
            end_ns: start + 10,
        };
        let afresh = [at("a", 4, 0), at("a", 5, 100)];
        assert!(inherited_grants(&afresh, "a", 50).is_empty());
        let inherited = [at("a", 4, 0), at("a", 4, 100)];
        assert_eq!(inherited_grants(&inherited, "a", 50), vec![&inherited[1]]);
        // Another host's later epoch counts too: coming back below it is inheriting.
        let moved_and_back = [at("a", 4, 0), at("b", 6, 20), at("a", 5, 100)];
        assert_eq!(
            inherited_grants(&moved_and_back, "a", 50),
            vec![&moved_and_back[2]]
        );
    }

    #[test]
    fn a_group_covered_by_successive_hosts_has_no_gap() {
        let groups = vec!["g".to_owned()];
        let c = coverage(
            &[interval("a", "g", 0, 60), interval("b", "g", 60, 200)],
            &groups,
            10,
            150,
        );
        assert!(c.violations.is_empty());
        assert_eq!((c.groups_with_gaps, c.longest_gap), (0, Duration::ZERO));
    }

    #[test]
    fn an_instant_without_a_writer_is_a_gap_and_its_length_is_reported() {
        let groups = vec!["g".to_owned(), "h".to_owned()];
        let c = coverage(
            &[
                interval("a", "g", 0, 50),
                interval("b", "g", 80, 200),
                interval("a", "h", 0, 120),
            ],
            &groups,
            10,
            150,
        );
        assert_eq!(c.groups_with_gaps, 2, "g has a hole, h ends early");
        assert_eq!(c.longest_gap, Duration::from_nanos(30));
    }

    #[test]
    fn a_group_nobody_ever_held_is_one_long_gap() {
        let groups = vec!["never".to_owned()];
        let c = coverage(&[], &groups, 0, 1_000);
        assert_eq!(c.groups_with_gaps, 1);
        assert_eq!(c.longest_gap, Duration::from_nanos(1_000));
    }
}
