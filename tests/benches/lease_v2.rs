//! Protocol v2 figures on the deployed local stack (`infra/bench-lease.sh` deploys it and runs
//! this). A bench client plays three hosts through lease-check's Function URL (SigV4), polling
//! as the host agent does: one host check per poll for all its groups, a heartbeat every
//! `heartbeat_timeout_ms / 3`, secondaries looking at each holder once its lease could have
//! lapsed, with that holder's groups in `watch_groups` (read by lease-check only if the look
//! finds the holder lapsed or at another epoch). lease-check's and the renewer's DynamoDB traffic goes through counting proxies
//! (`tenure_testkit::wire_counter`), so the cost is counted on the wire in request units.
//!
//! ```text
//! lease_v2 cost [--seconds 30]        # steady state at 1, 100, 1000 groups; v1 at 1 and 10
//! lease_v2 failover [--groups 1000]   # the host holding every group stops
//! lease_v2 renewer-outage [--seconds 180]
//! ```

use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tenure::clock::{Clock, SystemClock};
use tenure::ids::{GroupId, HostId, Incarnation};
use tenure::lease::client::{HostCheckBody, LeaseCheckClient};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::record::{Epoch, Member};
use tenure::lease::service::{GroupEntry, HostAnswer, LeaseService, WatchGroups};
use tenure::lease::store::LeaseStore;
use tenure::lease::LeaseConfig;
use tenure_testkit::wire_counter::{table_usage, total_usage, Counts, Usage, WireCounter};
use tenure_testkit::{invoke_async, set_function_env, stacks, stacks_from, Stack};

const STORE_ENDPOINT: &str = "AWS_ENDPOINT_URL_DYNAMODB";
const MAX_PER_CALL: usize = 500;

/// One simulated host: what the host agent keeps, and nothing more.
struct BenchHost {
    id: HostId,
    incarnation: Incarnation,
    client: LeaseCheckClient,
    cfg: LeaseConfig,
    /// Every group it is a member of.
    groups: Vec<GroupId>,
    /// The holder each group had at the last answer about it.
    holders: BTreeMap<GroupId, Option<HostId>>,
    /// Groups to ask about at the next poll.
    ask: BTreeSet<GroupId>,
    /// Per watched holder: when the look is due, and the host epoch it was at.
    watch: BTreeMap<HostId, (Instant, Epoch)>,
    /// Groups writable at the last answer, and until when.
    writable: BTreeMap<GroupId, Instant>,
    last_heartbeat: Option<Instant>,
    host_epoch: Option<Epoch>,
    polls: u64,
    calls: u64,
}

impl BenchHost {
    fn new(id: HostId, client: LeaseCheckClient, cfg: LeaseConfig, groups: Vec<GroupId>) -> Self {
        let ask = groups.iter().cloned().collect();
        Self {
            incarnation: Incarnation::parse(&format!("bench-{}", SystemClock.now_ms()))
                .unwrap_or_else(|_| unreachable!()),
            id,
            client,
            cfg,
            groups,
            holders: BTreeMap::new(),
            ask,
            watch: BTreeMap::new(),
            writable: BTreeMap::new(),
            last_heartbeat: None,
            host_epoch: None,
            polls: 0,
            calls: 0,
        }
    }

    /// One poll: as many calls as the groups to ask need (500 per call), usually one.
    /// Returns how long to wait before the next.
    async fn poll(&mut self) -> Result<Duration> {
        let now = Instant::now();
        let heartbeat = self.last_heartbeat.is_none_or(|t| {
            now.duration_since(t) >= Duration::from_millis(self.cfg.heartbeat_timeout_ms / 3)
        });
        // Looks that are due carry the holder's groups (at most 500 in all), read by
        // lease-check only if the holder is found lapsed: a live holder costs one item.
        let mut budget = MAX_PER_CALL;
        let watch_groups: Vec<WatchGroups> = self
            .watch
            .iter()
            .filter(|(_, (due, _))| *due <= now)
            .map(|(h, (_, epoch))| {
                let groups: Vec<GroupId> = self
                    .holders
                    .iter()
                    .filter(|(_, holder)| holder.as_ref() == Some(h))
                    .map(|(g, _)| g.clone())
                    .take(budget)
                    .collect();
                budget -= groups.len();
                WatchGroups {
                    host_id: h.clone(),
                    host_epoch: (epoch.0 != u64::MAX).then_some(*epoch),
                    groups,
                }
            })
            .collect();
        let ask: Vec<GroupId> = self.ask.iter().cloned().collect();
        let mut chunks: Vec<Vec<GroupId>> =
            ask.chunks(MAX_PER_CALL).map(<[GroupId]>::to_vec).collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        let mut wait = Duration::from_millis(self.cfg.poll_interval_ms);
        for (i, groups) in chunks.into_iter().enumerate() {
            let sent = Instant::now();
            let body = HostCheckBody {
                healthy: true,
                heartbeat: heartbeat && i == 0,
                incarnation: Some(self.incarnation.clone()),
                groups,
                watch: Vec::new(),
                watch_groups: if i == 0 {
                    watch_groups.clone()
                } else {
                    Vec::new()
                },
            };
            let answer = self.client.check_host(&self.id, &body).await?;
            self.calls += 1;
            if body.heartbeat {
                self.last_heartbeat = Some(sent);
            }
            wait = wait.min(Duration::from_millis(answer.poll_after_ms));
            self.apply(&answer, sent);
        }
        self.polls += 1;
        Ok(wait)
    }

    fn apply(&mut self, answer: &HostAnswer, sent: Instant) {
        if self.host_epoch.is_some_and(|e| e != answer.host_epoch) {
            // Another host epoch: every grant ended; re-read everything.
            self.writable.clear();
            self.ask.extend(self.groups.iter().cloned());
        }
        self.host_epoch = Some(answer.host_epoch);
        // The host lease's window covers every grant held at this host epoch: a primary
        // learns all it needs from its own host item, without asking about its groups.
        let window = sent + Duration::from_millis(answer.valid_for_ms);
        if answer.valid_for_ms == 0 {
            self.writable.clear();
        } else {
            for deadline in self.writable.values_mut() {
                *deadline = window;
            }
        }
        for entry in &answer.groups {
            let GroupEntry::Answer(a) = entry else {
                continue;
            };
            self.ask.remove(&a.group_id);
            self.holders.insert(a.group_id.clone(), a.holder.clone());
            if a.writable {
                self.writable.insert(
                    a.group_id.clone(),
                    sent + Duration::from_millis(a.valid_for_ms),
                );
            } else {
                self.writable.remove(&a.group_id);
            }
            match &a.holder {
                // No live holder yet: ask again at every poll until one has it.
                None => {
                    self.ask.insert(a.group_id.clone());
                }
                Some(h) if *h != self.id => {
                    self.watch
                        .entry(h.clone())
                        .or_insert((sent, Epoch(u64::MAX)));
                }
                Some(_) => {}
            }
        }
        for w in &answer.watched {
            let due = sent + Duration::from_millis(w.expires_in_ms + self.cfg.clock_skew_ms);
            let changed = self
                .watch
                .get(&w.host_id)
                .is_some_and(|(_, e)| e.0 != u64::MAX && *e != w.host_epoch);
            if !w.live || changed {
                // Lapsed (or revoked meanwhile): ask for the groups it held, at once.
                let held: Vec<GroupId> = self
                    .holders
                    .iter()
                    .filter(|(_, h)| h.as_ref() == Some(&w.host_id))
                    .map(|(g, _)| g.clone())
                    .collect();
                self.ask.extend(held);
            }
            self.watch.insert(w.host_id.clone(), (due, w.host_epoch));
        }
        // Holders no group of ours names any more need no watching.
        let named: BTreeSet<&HostId> = self.holders.values().flatten().collect();
        self.watch.retain(|h, _| named.contains(h));
    }

    /// Groups writable now (by the deadlines of the answers).
    fn writable_now(&self) -> usize {
        let now = Instant::now();
        self.writable.values().filter(|d| **d > now).count()
    }
}

struct Bench {
    stack: Stack,
    cfg: LeaseConfig,
    service: LeaseService<DynamoLeaseStore, SystemClock>,
    run: String,
}

impl Bench {
    async fn new(stack: Stack) -> Result<Self> {
        let sdk = stack.sdk().await;
        let store = DynamoLeaseStore::new(
            tenure::aws::dynamodb_client(&sdk, None),
            stack.output("HostsTable")?,
            stack.output("LeasesTable")?,
        );
        let cfg = LeaseConfig::default();
        Ok(Self {
            service: LeaseService::new(store, cfg, SystemClock),
            cfg,
            stack,
            run: format!("{}", SystemClock.now_ms() % 100_000_000),
        })
    }

    /// `n` groups with three members (priorities 3, 2, 1), written directly (not counted).
    async fn groups(&self, tag: &str, n: usize, hosts: &[HostId; 3]) -> Result<Vec<GroupId>> {
        let ids: Vec<GroupId> = (0..n)
            .map(|i| GroupId::parse(&format!("b{}-{tag}-{i:04}", self.run)))
            .collect::<Result<_, _>>()?;
        let members: BTreeMap<HostId, Member> = hosts
            .iter()
            .zip([3, 2, 1])
            .map(|(h, p)| (h.clone(), Member::new(format!("az-{p}"), p)))
            .collect();
        futures::future::try_join_all(ids.chunks(50).map(|chunk| {
            let members = members.clone();
            async move {
                for g in chunk {
                    self.service
                        .create_group(g.clone(), self.cfg.lease_ms, members.clone())
                        .await?;
                }
                anyhow::Ok(())
            }
        }))
        .await?;
        Ok(ids)
    }

    fn hosts(&self, tag: &str) -> Result<[HostId; 3]> {
        Ok([
            HostId::parse(&format!("b{}-{tag}-a", self.run))?,
            HostId::parse(&format!("b{}-{tag}-b", self.run))?,
            HostId::parse(&format!("b{}-{tag}-c", self.run))?,
        ])
    }

    async fn bench_hosts(&self, hosts: &[HostId; 3], groups: &[GroupId]) -> Result<Vec<BenchHost>> {
        let mut out = Vec::new();
        for h in hosts {
            out.push(BenchHost::new(
                h.clone(),
                self.stack.lease_check().await?,
                self.cfg,
                groups.to_vec(),
            ));
        }
        Ok(out)
    }

    /// Points lease-check and the renewer at counting proxies (restored by [`Self::restore`]).
    async fn count(&self) -> Result<(WireCounter, WireCounter)> {
        let check = WireCounter::start(&self.stack.endpoint)?;
        let renewer = WireCounter::start(&self.stack.endpoint)?;
        set_function_env(
            &self.stack,
            "LeaseCheckFunction",
            &[(STORE_ENDPOINT, Some(&check.url))],
        )
        .await?;
        set_function_env(
            &self.stack,
            "LeaseRenewerFunction",
            &[(STORE_ENDPOINT, Some(&renewer.url))],
        )
        .await?;
        // The update stops the renewer's loop; start it again rather than wait for the minute.
        invoke_async(&self.stack, "LeaseRenewerFunction").await?;
        Ok((check, renewer))
    }

    async fn restore(&self) -> Result<()> {
        for function in ["LeaseCheckFunction", "LeaseRenewerFunction"] {
            set_function_env(&self.stack, function, &[(STORE_ENDPOINT, None)]).await?;
        }
        invoke_async(&self.stack, "LeaseRenewerFunction").await
    }
}

/// Polls every host on its own schedule until `until` says stop; returns the polls made.
async fn run_hosts(
    hosts: &mut [BenchHost],
    duration: Duration,
    mut each: impl FnMut(&[BenchHost]) -> Result<()>,
) -> Result<()> {
    let started = Instant::now();
    let mut next: Vec<Instant> = vec![Instant::now(); hosts.len()];
    while started.elapsed() < duration {
        let now = Instant::now();
        for (i, host) in hosts.iter_mut().enumerate() {
            if next[i] <= now {
                let wait = host
                    .poll()
                    .await
                    .with_context(|| format!("{} poll", host.id))?;
                next[i] = Instant::now() + wait;
            }
        }
        each(hosts)?;
        let soonest = next.iter().min().copied().unwrap_or(now);
        tokio::time::sleep(soonest.saturating_duration_since(Instant::now())).await;
    }
    Ok(())
}

fn per(usage: &Usage, n: f64) -> (f64, f64, f64) {
    (
        usage.requests as f64 / n,
        usage.read_units / n,
        usage.write_units / n,
    )
}

fn line(counts: &Counts, hosts_table: &str, leases_table: &str) -> (Usage, Usage, Usage) {
    (
        total_usage(counts),
        table_usage(counts, hosts_table),
        table_usage(counts, leases_table),
    )
}

async fn cost(bench: &Bench, seconds: u64) -> Result<()> {
    let hosts_table = bench.stack.output("HostsTable")?.to_owned();
    let leases_table = bench.stack.output("LeasesTable")?.to_owned();
    let (check, renewer) = bench.count().await?;
    let window = Duration::from_secs(seconds);
    println!("\n### v2 steady state, three hosts, {seconds} s per size (lease-check's DynamoDB traffic per host per poll)\n");
    println!("| groups per host | polls | invocations per poll | requests per poll | read units per poll | write units per poll | of which group items (RU+WU) | renewer writes per round | resync of all groups (RU, every 5 min) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut per_poll = BTreeMap::new();
    for n in [1usize, 100, 1000] {
        let tag = format!("c{n}");
        let ids = bench.hosts(&tag)?;
        let groups = bench.groups(&tag, n, &ids).await?;
        let mut hosts = bench.bench_hosts(&ids, &groups).await?;
        // Start-up: every host reads its groups, the best candidate acquires them.
        run_hosts(&mut hosts, Duration::from_secs(6), |_| Ok(())).await?;
        let held: usize = hosts.iter().map(BenchHost::writable_now).sum();
        ensure!(held == n, "{n} groups: {held} writable after start-up");
        for h in hosts.iter_mut() {
            (h.polls, h.calls) = (0, 0);
        }
        check.take();
        renewer.take();
        let started = Instant::now();
        run_hosts(&mut hosts, window, |_| Ok(())).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let polls: u64 = hosts.iter().map(|h| h.polls).sum();
        let calls: u64 = hosts.iter().map(|h| h.calls).sum();
        let counts = check.take();
        let (total, _, groups_usage) = line(&counts, &hosts_table, &leases_table);
        let (req, ru, wu) = per(&total, polls as f64);
        let renewer_counts = renewer.take();
        let renewals = renewer_counts
            .get(&("UpdateItem".to_owned(), hosts_table.clone()))
            .map_or(0, |u| u.requests);
        // Each round scans with TENURE_RENEWER_SEGMENTS (4 in the template) segments.
        let scans = renewer_counts
            .get(&("Scan".to_owned(), hosts_table.clone()))
            .map_or(0, |u| u.requests);
        let rounds = (scans as f64 / 4.0).max(1.0);
        let _ = elapsed;
        // The slow resync: one check asking for every group (500 per call).
        let before = check.peek();
        let resync_ru = {
            let host = &hosts[1];
            let client = &host.client;
            for chunk in groups.chunks(MAX_PER_CALL) {
                client
                    .check_host(
                        &host.id,
                        &HostCheckBody {
                            healthy: true,
                            heartbeat: false,
                            incarnation: Some(host.incarnation.clone()),
                            groups: chunk.to_vec(),
                            watch: Vec::new(),
                            watch_groups: Vec::new(),
                        },
                    )
                    .await?;
            }
            let after = check.take();
            let _ = before;
            total_usage(&after).read_units
        };
        println!(
            "| {n} | {polls} | {:.2} | {req:.2} | {ru:.2} | {wu:.2} | {:.2} | {:.2} ({renewals} in {rounds:.0} rounds; 3 live hosts) | {resync_ru:.0} |",
            calls as f64 / polls as f64,
            (groups_usage.read_units + groups_usage.write_units) / polls as f64,
            renewals as f64 / rounds,
        );
        per_poll.insert(n, (req, ru, wu));
        if n == 1000 {
            eprintln!("lease-check traffic at {n} groups, by operation and table: {counts:#?}");
        }
        // Stop these hosts; their leases lapse in the background.
        drop(hosts);
    }
    // v1: one host polling one group per call, as the v1 agent does.
    println!("\n### v1 endpoints (one call per group per poll), one host's traffic\n");
    println!("| groups | polls | invocations per poll | requests per poll | read units per poll | write units per poll |");
    println!("|---|---|---|---|---|---|");
    for n in [1usize, 10] {
        let tag = format!("v{n}");
        let ids = bench.hosts(&tag)?;
        let groups = bench.groups(&tag, n, &ids).await?;
        let client = bench.stack.lease_check().await?;
        check.take();
        let started = Instant::now();
        let mut polls = 0u64;
        while started.elapsed() < window {
            let poll = Instant::now();
            for g in &groups {
                for h in &ids {
                    client.check(g, h, true, true).await?;
                }
            }
            polls += 1;
            tokio::time::sleep(
                Duration::from_millis(bench.cfg.poll_interval_ms).saturating_sub(poll.elapsed()),
            )
            .await;
        }
        let total = total_usage(&check.take());
        let host_polls = polls * ids.len() as u64;
        let (req, ru, wu) = per(&total, host_polls as f64);
        println!("| {n} | {host_polls} | {n} | {req:.2} | {ru:.2} | {wu:.2} |");
    }
    bench.restore().await?;
    let live = live_hosts(bench).await?;
    println!(
        "\nlive hosts in the Hosts table at the end (the renewer renews each once a round): {live}"
    );
    Ok(())
}

async fn live_hosts(bench: &Bench) -> Result<usize> {
    use futures::TryStreamExt;
    let now = SystemClock.now_ms();
    let hosts: Vec<_> = bench.service.store().scan_hosts(0, 1).try_collect().await?;
    Ok(hosts
        .iter()
        .filter(|h| {
            h.expires_at_ms > now
                && now.saturating_sub(h.last_seen_ms) <= bench.cfg.heartbeat_timeout_ms
        })
        .count())
}

async fn failover(bench: &Bench, n: usize) -> Result<()> {
    let (check, _renewer) = bench.count().await?;
    let ids = bench.hosts("f")?;
    let groups = bench.groups("f", n, &ids).await?;
    let mut hosts = bench.bench_hosts(&ids, &groups).await?;
    run_hosts(&mut hosts, Duration::from_secs(8), |_| Ok(())).await?;
    ensure!(
        hosts[0].writable_now() == n,
        "host a holds {} of {n}",
        hosts[0].writable_now()
    );
    run_hosts(&mut hosts, Duration::from_secs(5), |_| Ok(())).await?;
    // Round trip of a steady-state check, measured now.
    let rtt = {
        let mut samples = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            hosts[2].poll().await?;
            samples.push(t.elapsed());
        }
        samples.sort();
        samples[samples.len() / 2]
    };
    let a = hosts.remove(0);
    let last_heartbeat = a.last_heartbeat.context("a heartbeated")?;
    let stopped = Instant::now();
    drop(a);
    check.take();
    let mut done_at = None;
    let mut takeover_calls: Vec<(Duration, usize)> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) && done_at.is_none() {
        for h in hosts.iter_mut() {
            let before = h.writable_now();
            let t = Instant::now();
            h.poll().await?;
            let gained = h.writable_now().saturating_sub(before);
            if gained > 0 {
                takeover_calls.push((t.elapsed(), gained));
            }
        }
        let writable: usize = hosts.iter().map(BenchHost::writable_now).sum();
        if writable == n {
            done_at = Some(Instant::now());
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let done_at = done_at.context("the groups were not all taken over within 60 s")?;
    let counts = check.take();
    let revocations = counts
        .get(&(
            "UpdateItem".to_owned(),
            bench.stack.output("HostsTable")?.to_owned(),
        ))
        .map_or(0, |u| u.requests);
    let acquired: usize = takeover_calls.iter().map(|(_, g)| g).sum();
    let busy: Duration = takeover_calls.iter().map(|(d, _)| *d).sum();
    let rate = acquired as f64 / busy.as_secs_f64().max(1e-3);
    let c = &bench.cfg;
    let bound_ms = c.lease_ms
        + c.clock_skew_ms
        + c.poll_interval_ms
        + rtt.as_millis() as u64
        + (n as f64 / rate * 1000.0) as u64;
    println!("\n### failover of {n} groups through lease-check\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| from the holder's last heartbeat to the last group acquired | {} ms |",
        done_at.duration_since(last_heartbeat).as_millis()
    );
    println!(
        "| from the stop to the last group acquired | {} ms |",
        done_at.duration_since(stopped).as_millis()
    );
    println!("| acquisition rate inside the takeover checks | {rate:.0} groups/s ({acquired} in {busy:?}) |");
    println!(
        "| steady-state check round trip (median of 20) | {} ms |",
        rtt.as_millis()
    );
    println!("| bound: lease + skew + poll + round trip + {n} / rate | {bound_ms} ms |");
    println!("| lease-check writes to Hosts during the takeover (revocation + heartbeats) | {revocations} |");
    let within = done_at.duration_since(last_heartbeat).as_millis() as u64 <= bound_ms;
    println!(
        "| within the bound | {} |",
        if within { "yes" } else { "NO" }
    );
    bench.restore().await?;
    Ok(())
}

async fn renewer_outage(bench: &Bench, seconds: u64) -> Result<()> {
    let ids = bench.hosts("r")?;
    let groups = bench.groups("r", 100, &ids).await?;
    let mut hosts = bench.bench_hosts(&ids, &groups).await?;
    run_hosts(&mut hosts, Duration::from_secs(8), |_| Ok(())).await?;
    for h in hosts.iter_mut() {
        h.polls = 0;
    }
    let epochs_before = group_epochs(bench, &groups).await?;
    let host_epochs_before = host_epochs(bench, &ids).await?;
    // The renewer cannot reach DynamoDB for the whole window: every renewal fails.
    set_function_env(
        &bench.stack,
        "LeaseRenewerFunction",
        &[(STORE_ENDPOINT, Some("http://127.0.0.1:9"))],
    )
    .await?;
    invoke_async(&bench.stack, "LeaseRenewerFunction").await?;
    let mut min_writable = usize::MAX;
    let started = Instant::now();
    let outcome = run_hosts(&mut hosts, Duration::from_secs(seconds), |hosts| {
        // From the second poll round on: the configuration change above pauses the hosts'
        // polling for a while, so their first answers in the loop reopen their gates.
        if hosts.iter().all(|h| h.polls >= 2) {
            let writable: usize = hosts.iter().map(BenchHost::writable_now).sum();
            min_writable = min_writable.min(writable);
        }
        Ok(())
    })
    .await;
    set_function_env(
        &bench.stack,
        "LeaseRenewerFunction",
        &[(STORE_ENDPOINT, None)],
    )
    .await?;
    invoke_async(&bench.stack, "LeaseRenewerFunction").await?;
    outcome?;
    let epochs_after = group_epochs(bench, &groups).await?;
    let host_epochs_after = host_epochs(bench, &ids).await?;
    let changed = epochs_before
        .iter()
        .filter(|(g, e)| epochs_after.get(*g) != Some(e))
        .count();
    let hosts_revoked = host_epochs_before
        .iter()
        .filter(|(h, e)| host_epochs_after.get(*h) != Some(e))
        .count();
    println!(
        "\n### renewer outage: {} s with every renewal failing, three hosts in 100 groups\n",
        started.elapsed().as_secs()
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| grant changes (group epochs moved) | {changed} of {} |",
        groups.len()
    );
    println!("| host leases lapsed (host epochs moved) | {hosts_revoked} of 3 |");
    println!(
        "| fewest groups writable at any moment | {min_writable} of {} |",
        groups.len()
    );
    if changed != 0 || hosts_revoked != 0 || min_writable != groups.len() {
        bail!("the renewer outage cost writes");
    }
    Ok(())
}

async fn group_epochs(bench: &Bench, groups: &[GroupId]) -> Result<BTreeMap<GroupId, Epoch>> {
    let mut out = BTreeMap::new();
    for chunk in groups.chunks(100) {
        for (g, r) in bench.service.store().read(&[], chunk).await?.groups {
            out.insert(g, r.epoch);
        }
    }
    Ok(out)
}

async fn host_epochs(bench: &Bench, hosts: &[HostId]) -> Result<BTreeMap<HostId, Epoch>> {
    Ok(bench
        .service
        .store()
        .read(hosts, &[])
        .await?
        .hosts
        .into_iter()
        .map(|(h, r)| (h, r.epoch))
        .collect())
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let command = args.first().cloned().unwrap_or_else(|| "cost".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stacks = match arg(&args, "--regions") {
            Some(file) => stacks_from(std::path::Path::new(&file))?,
            None => stacks("TENURE_BENCH_REGIONS")?,
        };
        let stack = stacks.into_iter().next().context("a deployed stack")?;
        let bench = Bench::new(stack).await?;
        let number = |name: &str, default: u64| -> Result<u64> {
            arg(&args, name).map_or(Ok(default), |v| {
                v.parse().with_context(|| format!("{name} {v}"))
            })
        };
        let result = match command.as_str() {
            "cost" => cost(&bench, number("--seconds", 30)?).await,
            "failover" => failover(&bench, number("--groups", 1000)? as usize).await,
            "renewer-outage" => renewer_outage(&bench, number("--seconds", 180)?).await,
            other => bail!("unknown command {other}: cost, failover or renewer-outage"),
        };
        if result.is_err() {
            let _ = bench.restore().await;
        }
        result
    })
}
