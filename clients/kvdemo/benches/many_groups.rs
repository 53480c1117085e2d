//! Three kvdemo hosts, each in the same N groups (default 1,000), on one deployed local stack
//! (`infra/bench-many.sh` deploys it and runs this):
//!
//! - `scale`: `--seconds` (default 600) of steady state; every group has exactly one primary
//!   throughout (from the gate logs: no overlap, no gap), and lease-check's check latency
//!   against an empty Function URL call under the hosts' load (p50, p99, ratio);
//! - `failover`: `--cycles` (default 10) kill -9 of the host holding every group; the time from
//!   the kill until another host may write all of them, p50/p99, against lease + skew + poll +
//!   one round trip + N / (acquisition rate), the rate and round trip measured in the same run;
//!   the killed host restarts (a new incarnation) and must never be a second writer;
//! - `restart`: `--cycles` kill -9 and immediate restart (a new incarnation) of the host
//!   holding every group: the time until every group has a primary again, how many came back
//!   to the restarted process and how many moved, and no two writers (the new process never
//!   inherits a grant: every epoch it writes at is higher than the group's before the kill);
//! - `drain`: `--cycles` drains of one group among N; the time until another host may write
//!   it, against 2 polls plus the round trips measured in the same run;
//! - `cost`: the request-unit count of part 1 with the real agent: lease-check's and the
//!   renewer's DynamoDB traffic counted on the wire (`tenure_testkit::wire_counter`), per host poll,
//!   with the three hosts in 1, 100 and 1,000 groups, `--cost-seconds` (default 60) each.
//!
//!   infra/bench-many.sh                          # scale, failover, restart, drain
//!   infra/bench-many.sh failover --cycles 3      # a quick look

use anyhow::{bail, ensure, Context, Result};
use rand::Rng;
use std::time::{Duration, Instant};
use tenure::clock::{Clock, SystemClock};
use tenure::ids::{GroupId, HostId, Incarnation};
use tenure::lease::client::{HostCheckBody, LeaseCheckClient};
use tenure::lease::record::Member;
use tenure::lease::LeaseConfig;
use tenure::sigv4::SigV4Client;
use tenure_testkit::cluster::Cluster;
use tenure_testkit::fixture::{Fixture, StackAccess};
use tenure_testkit::many::{
    coverage, gather_on, holder_of_all, inherited_grants, now_ns, percentile, restart_primary,
    until_every_group_held, Latency, Prober,
};
use tenure_testkit::wire_counter::{table_usage, total_usage, WireCounter};
use tenure_testkit::{invoke_async, set_function_env, stacks, stacks_from, Stack};

struct Args {
    modes: Vec<String>,
    groups: usize,
    cycles: usize,
    seconds: u64,
    cost_seconds: u64,
    regions_file: Option<String>,
}

fn args() -> Result<Args> {
    let mut args = Args {
        modes: Vec::new(),
        groups: 1_000,
        cycles: 10,
        seconds: 600,
        cost_seconds: 60,
        regions_file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--groups" => args.groups = it.next().context("--groups N")?.parse()?,
            "--cycles" => args.cycles = it.next().context("--cycles N")?.parse()?,
            "--seconds" => args.seconds = it.next().context("--seconds N")?.parse()?,
            "--cost-seconds" => {
                args.cost_seconds = it.next().context("--cost-seconds N")?.parse()?
            }
            "--regions" => args.regions_file = Some(it.next().context("--regions FILE")?),
            "--bench" => {}
            "scale" | "failover" | "restart" | "drain" | "cost" => args.modes.push(arg),
            other => bail!(
                "unknown argument {other}; use scale|failover|restart|drain|cost, --groups N, --cycles N, --seconds N, --cost-seconds N, --regions FILE"
            ),
        }
    }
    if args.modes.is_empty() {
        args.modes = ["scale", "failover", "restart", "drain"]
            .map(String::from)
            .to_vec();
    }
    ensure!(
        args.groups > 0 && args.cycles > 0,
        "--groups and --cycles must be at least 1"
    );
    Ok(args)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Bench {
    access: StackAccess,
    sdk: aws_config::SdkConfig,
    cfg: LeaseConfig,
    groups: usize,
}

impl Bench {
    async fn fixture(&self, tag: &str) -> Result<Fixture> {
        self.fixture_of(tag, self.groups).await
    }

    async fn fixture_of(&self, tag: &str, groups: usize) -> Result<Fixture> {
        Ok(Fixture::create(
            &self.access,
            &self.sdk,
            env!("CARGO_BIN_EXE_kvdemo").into(),
            tag,
            self.cfg,
            self.cfg.lease_ms,
            groups,
        )
        .await?)
    }

    fn client(&self) -> Result<LeaseCheckClient> {
        Ok(LeaseCheckClient::new(
            SigV4Client::for_function_urls(&self.sdk)?,
            &self.access.lease_check_url,
            &self.access.region,
            Duration::from_secs(10),
        ))
    }

    /// Round trips (empty Function URL calls and probe checks) measured now.
    async fn latency(&self, samples: usize) -> Result<Latency> {
        let prober = Prober::new(&self.sdk, &self.access).map_err(|e| anyhow::anyhow!(e))?;
        let mut latency = Latency::default();
        for _ in 0..samples {
            prober.sample(&mut latency).await;
        }
        Ok(latency)
    }

    /// Acquisitions per second through lease-check, measured as part 1 does: one host that is
    /// the only member of N free groups acquires them all in its checks (500 per call).
    async fn acquisition_rate(&self) -> Result<f64> {
        let fixture_host = HostId::parse(&format!(
            "rate-{}-{}",
            std::process::id(),
            SystemClock.now_ms()
        ))?;
        let service = tenure::lease::service::LeaseService::new(
            tenure::lease::dynamo::DynamoLeaseStore::new(
                tenure::aws::dynamodb_client(&self.sdk, None),
                self.access.hosts_table.clone(),
                self.access.leases_table.clone(),
            ),
            self.cfg,
            SystemClock,
        );
        let members: std::collections::BTreeMap<HostId, Member> =
            [(fixture_host.clone(), Member::new("az-rate", 1))].into();
        let groups: Vec<GroupId> = (0..self.groups)
            .map(|i| GroupId::parse(&format!("{fixture_host}-{i:04}")))
            .collect::<Result<_, _>>()?;
        for g in &groups {
            service
                .create_group(g.clone(), self.cfg.lease_ms, members.clone())
                .await?;
        }
        let client = self.client()?;
        let incarnation = Incarnation::parse("rate-1")?;
        // First check: the host's lease; then one timed round of checks acquiring everything.
        client
            .check_host(
                &fixture_host,
                &HostCheckBody {
                    healthy: true,
                    heartbeat: true,
                    incarnation: Some(incarnation.clone()),
                    ..HostCheckBody::default()
                },
            )
            .await?;
        let started = Instant::now();
        let mut acquired = 0;
        for chunk in groups.chunks(500) {
            let answer = client
                .check_host(
                    &fixture_host,
                    &HostCheckBody {
                        healthy: true,
                        heartbeat: false,
                        incarnation: Some(incarnation.clone()),
                        groups: chunk.to_vec(),
                        ..HostCheckBody::default()
                    },
                )
                .await?;
            acquired += answer
                .groups
                .iter()
                .filter(
                    |e| matches!(e, tenure::lease::service::GroupEntry::Answer(a) if a.writable),
                )
                .count();
        }
        let took = started.elapsed();
        ensure!(
            acquired == groups.len(),
            "acquired {acquired} of {}",
            groups.len()
        );
        Ok(groups.len() as f64 / took.as_secs_f64())
    }
}

async fn scale(bench: &Bench, seconds: u64) -> Result<()> {
    let fixture = bench.fixture("scale").await?;
    let cluster = Cluster::start(fixture.spec.clone(), &fixture.host_names())?;
    let took = gather_on(&cluster, 0, Duration::from_secs(120)).await?;
    eprintln!(
        "scale: {} holds all {} groups after {took:?}",
        fixture.hosts[0], bench.groups
    );
    let from = now_ns();
    let prober = Prober::new(&bench.sdk, &bench.access).map_err(|e| anyhow::anyhow!(e))?;
    let mut latency = Latency::default();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut next_report = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        prober.sample(&mut latency).await;
        if Instant::now() >= next_report {
            eprintln!(
                "  scale: {:.0} s of {seconds}",
                seconds as f64
                    - until
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
            );
            next_report += Duration::from_secs(60);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let to = now_ns();
    let report = coverage(&cluster.writable_intervals()?, cluster.groups(), from, to);
    println!(
        "scale: 3 hosts x {} groups, {seconds} s: {} overlapping writable intervals, {} groups with an instant of no writer (longest {:.0} ms); {}",
        bench.groups,
        report.violations.len(),
        report.groups_with_gaps,
        ms(report.longest_gap),
        latency.summary()
    );
    ensure!(
        report.violations.is_empty() && report.groups_with_gaps == 0,
        "scale run failed"
    );
    drop(cluster);
    fixture.drop_table().await;
    Ok(())
}

async fn failover(bench: &Bench, cycles: usize) -> Result<()> {
    let cfg = bench.cfg;
    let fixture = bench.fixture("many-kill").await?;
    let mut cluster = Cluster::start(fixture.spec.clone(), &fixture.host_names())?;
    let within = Duration::from_millis(3 * cfg.lease_ms + 60_000);
    gather_on(&cluster, 0, within).await?;
    let mut samples = Vec::new();
    // Per cycle: the new holder, the kill and the moment it held every group (boot clock).
    let mut takeovers: Vec<(usize, u64, u64)> = Vec::new();
    for cycle in 0..cycles {
        // Everyone has heartbeated; the kill lands at a random phase of the renewals.
        tokio::time::sleep(
            Duration::from_millis(cfg.heartbeat_timeout_ms)
                + Duration::from_millis(rand::rng().random_range(0..cfg.renew_interval_ms)),
        )
        .await;
        let holder = holder_of_all(&cluster)
            .await
            .context("no host holds every group")?;
        let started = Instant::now();
        let killed_at = cluster.kill(holder)?;
        let survivors: Vec<usize> = (0..3).filter(|&i| i != holder).collect();
        let next = loop {
            if let Some(i) = holder_of_all(&cluster).await {
                break i;
            }
            ensure!(
                started.elapsed() < within,
                "no survivor took all groups in {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let took = started.elapsed();
        ensure!(survivors.contains(&next), "the killed host holds them?");
        samples.push(took);
        takeovers.push((next, killed_at, killed_at + took.as_nanos() as u64));
        eprintln!(
            "  failover {}/{cycles}: {} -> {}: all {} groups in {:.0} ms",
            cycle + 1,
            fixture.hosts[holder],
            fixture.hosts[next],
            bench.groups,
            ms(took)
        );
        // The killed host comes back as a new incarnation.
        cluster.restart(holder)?;
    }
    let found = replica_agent::gate_log::violations(&cluster.writable_intervals()?);
    // How long each takeover's acquisitions took, from the new holder's gate log: its first
    // and last `open` line between the kill and the moment it held every group.
    let mut spreads = Vec::new();
    for &(next, from, to) in &takeovers {
        let opens: Vec<u64> = replica_agent::gate_log::read_log(&cluster.hosts[next].log)?
            .into_iter()
            .filter(|e| e.state == "open" && e.t_ns > from && e.t_ns <= to)
            .map(|e| e.t_ns)
            .collect();
        if let (Some(first), Some(last)) = (opens.iter().min(), opens.iter().max()) {
            spreads.push(Duration::from_nanos(last - first));
        }
    }
    spreads.sort();
    drop(cluster);
    fixture.drop_table().await;
    let mut latency = bench.latency(50).await?;
    let rtt = {
        latency.empty.sort();
        percentile(&latency.empty, 50.0)
    };
    let rate = bench.acquisition_rate().await?;
    samples.sort();
    let bound = Duration::from_millis(cfg.lease_ms + cfg.clock_skew_ms + cfg.poll_interval_ms)
        + rtt
        + Duration::from_secs_f64(bench.groups as f64 / rate);
    println!(
        "failover of {} groups (kill -9 of their holder), n={cycles}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; bound lease {} + skew {} + poll {} + RTT {:.0} + {} / {:.0} groups/s = {:.0} ms; {} overlapping writable intervals",
        bench.groups,
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(percentile(&samples, 100.0)),
        cfg.lease_ms,
        cfg.clock_skew_ms,
        cfg.poll_interval_ms,
        ms(rtt),
        bench.groups,
        rate,
        ms(bound),
        found.len()
    );
    let spread = percentile(&spreads, 50.0);
    let observed_rate = bench.groups as f64 / spread.as_secs_f64().max(1e-3);
    let bound_observed =
        Duration::from_millis(cfg.lease_ms + cfg.clock_skew_ms + cfg.poll_interval_ms)
            + rtt
            + spread;
    println!(
        "  the takeovers' own acquisitions (first to last `open` of the new holder) took p50 {:.0} ms ({observed_rate:.0} groups/s, beside the new holder's fence raises); with that rate the bound is {:.0} ms",
        ms(spread),
        ms(bound_observed)
    );
    ensure!(found.is_empty(), "{found:#?}");
    Ok(())
}

async fn restart(bench: &Bench, cycles: usize) -> Result<()> {
    let cfg = bench.cfg;
    let fixture = bench.fixture("many-restart").await?;
    let mut cluster = Cluster::start(fixture.spec.clone(), &fixture.host_names())?;
    let within = Duration::from_millis(3 * cfg.lease_ms + 60_000);
    gather_on(&cluster, 0, within).await?;
    let mut samples = Vec::new();
    let (mut came_back, mut moved) = (0, 0);
    // Per cycle: the restarted host and its kill (boot clock).
    let mut kills: Vec<(usize, u64)> = Vec::new();
    for cycle in 0..cycles {
        tokio::time::sleep(
            Duration::from_millis(cfg.heartbeat_timeout_ms)
                + Duration::from_millis(rand::rng().random_range(0..cfg.renew_interval_ms)),
        )
        .await;
        let holder = match holder_of_all(&cluster).await {
            Some(i) => i,
            // The last restart split the groups: gather them again.
            None => {
                gather_on(&cluster, 0, within).await?;
                0
            }
        };
        kills.push((holder, now_ns()));
        let outcome = restart_primary(&mut cluster, holder, within).await?;
        eprintln!(
            "  restart {}/{cycles}: {}: every group held again in {:.0} ms, {} came back, {} moved",
            cycle + 1,
            fixture.hosts[holder],
            ms(outcome.took),
            outcome.came_back,
            outcome.moved
        );
        samples.push(outcome.took);
        came_back += outcome.came_back;
        moved += outcome.moved;
    }
    let intervals = cluster.writable_intervals()?;
    let found = replica_agent::gate_log::violations(&intervals);
    let inherited: usize = kills
        .iter()
        .map(|&(i, at)| inherited_grants(&intervals, fixture.hosts[i].as_str(), at).len())
        .sum();
    drop(cluster);
    fixture.drop_table().await;
    samples.sort();
    println!(
        "restart of the process holding all {} groups (kill -9, started again at once: a new incarnation), n={cycles}: every group held again p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (lease {} ms); {came_back} groups came back to the restarted process, {moved} moved; {} reopened at an epoch not above the one before the kill; {} overlapping writable intervals",
        bench.groups,
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(percentile(&samples, 100.0)),
        cfg.lease_ms,
        inherited,
        found.len()
    );
    ensure!(found.is_empty(), "{found:#?}");
    ensure!(inherited == 0, "a restarted process inherited grants");
    Ok(())
}

async fn drain(bench: &Bench, cycles: usize) -> Result<()> {
    let cfg = bench.cfg;
    let fixture = bench.fixture("many-drain").await?;
    let cluster = Cluster::start(fixture.spec.clone(), &fixture.host_names())?;
    let within = Duration::from_secs(60);
    until_every_group_held(&cluster, within).await?;
    for i in 0..3 {
        eprintln!(
            "  drain: {} holds {} groups",
            fixture.hosts[i],
            cluster.primaries(i).await.unwrap_or(0)
        );
    }
    let mut samples = Vec::new();
    for cycle in 0..cycles {
        tokio::time::sleep(Duration::from_millis(
            rand::rng().random_range(0..cfg.poll_interval_ms),
        ))
        .await;
        let group = &fixture.groups[(cycle * 97 + 13) % fixture.groups.len()];
        let name = group.as_str();
        let holder = cluster.wait_for_primary(name, &[0, 1, 2], within).await?;
        let started = Instant::now();
        fixture
            .service
            .set_draining(group, &fixture.hosts[holder], true)
            .await?;
        let others: Vec<usize> = (0..3).filter(|&i| i != holder).collect();
        let next = cluster.wait_for_primary(name, &others, within).await?;
        let took = started.elapsed();
        samples.push(took);
        eprintln!(
            "  drain {}/{cycles}: {name} {} -> {} in {:.0} ms",
            cycle + 1,
            fixture.hosts[holder],
            fixture.hosts[next],
            ms(took)
        );
        fixture
            .service
            .set_draining(group, &fixture.hosts[holder], false)
            .await?;
    }
    let found = replica_agent::gate_log::violations(&cluster.writable_intervals()?);
    drop(cluster);
    fixture.drop_table().await;
    let mut latency = bench.latency(50).await?;
    latency.check.sort();
    let rtt = percentile(&latency.check, 50.0);
    samples.sort();
    let bound = Duration::from_millis(2 * cfg.poll_interval_ms) + rtt * 3;
    println!(
        "drain of one group among {}, n={cycles}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; bound 2 polls ({} ms) + 3 check round trips ({:.0} ms each) = {:.0} ms; {} overlapping writable intervals",
        bench.groups,
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(percentile(&samples, 100.0)),
        2 * cfg.poll_interval_ms,
        ms(rtt),
        ms(bound),
        found.len()
    );
    ensure!(found.is_empty(), "{found:#?}");
    Ok(())
}

const STORE_ENDPOINT: &str = "AWS_ENDPOINT_URL_DYNAMODB";

/// Polls and checks sent by each running host so far (from `GET /status`).
async fn host_counters(cluster: &Cluster) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for i in 0..cluster.hosts.len() {
        let status = cluster
            .host_status(i)
            .await
            .with_context(|| format!("{} does not answer", cluster.hosts[i].name))?;
        out.push((
            status["polls"].as_u64().unwrap_or(0),
            status["checks"].as_u64().unwrap_or(0),
        ));
    }
    Ok(out)
}

async fn cost(bench: &Bench, stack: &Stack, seconds: u64) -> Result<()> {
    let (hosts_table, leases_table) = (&bench.access.hosts_table, &bench.access.leases_table);
    let check = WireCounter::start(&stack.endpoint)?;
    let renewer = WireCounter::start(&stack.endpoint)?;
    set_function_env(
        stack,
        "LeaseCheckFunction",
        &[(STORE_ENDPOINT, Some(&check.url))],
    )
    .await?;
    set_function_env(
        stack,
        "LeaseRenewerFunction",
        &[(STORE_ENDPOINT, Some(&renewer.url))],
    )
    .await?;
    invoke_async(stack, "LeaseRenewerFunction").await?;
    println!("\n### three kvdemo hosts (the real agent), {seconds} s per size: lease-check's DynamoDB traffic per host poll\n");
    println!("| groups per host | polls | checks per poll | requests per poll | read units per poll | write units per poll | of which group items (RU+WU) | renewer writes per round |");
    println!("|---|---|---|---|---|---|---|---|");
    let result = async {
        for n in [1usize, 100, 1_000] {
            let fixture = bench.fixture_of(&format!("cost{n}"), n).await?;
            let cluster = Cluster::start(fixture.spec.clone(), &fixture.host_names())?;
            gather_on(&cluster, 0, Duration::from_secs(120)).await?;
            // Past start-up: every secondary has had its first look at the holder.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let before = host_counters(&cluster).await?;
            check.take();
            renewer.take();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let after = host_counters(&cluster).await?;
            let counts = check.take();
            let renewer_counts = renewer.take();
            let (polls, checks) = before.iter().zip(&after).fold((0, 0), |(p, c), (b, a)| {
                (p + a.0 - b.0, c + a.1 - b.1)
            });
            let total = total_usage(&counts);
            let groups_usage = table_usage(&counts, leases_table);
            let renewals = renewer_counts
                .get(&("UpdateItem".to_owned(), hosts_table.clone()))
                .map_or(0, |u| u.requests);
            // Each round scans with 4 segments (TENURE_RENEWER_SEGMENTS in the template).
            let scans = renewer_counts
                .get(&("Scan".to_owned(), hosts_table.clone()))
                .map_or(0, |u| u.requests);
            let rounds = (scans as f64 / 4.0).max(1.0);
            let per = |x: f64| x / polls.max(1) as f64;
            println!(
                "| {n} | {polls} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} ({renewals} in {rounds:.0} rounds; all live hosts in the table) |",
                checks as f64 / polls.max(1) as f64,
                per(total.requests as f64),
                per(total.read_units),
                per(total.write_units),
                per(groups_usage.read_units + groups_usage.write_units),
                renewals as f64 / rounds,
            );
            let found = replica_agent::gate_log::violations(&cluster.writable_intervals()?);
            ensure!(found.is_empty(), "{found:#?}");
            drop(cluster);
            fixture.drop_table().await;
        }
        anyhow::Ok(())
    }
    .await;
    for function in ["LeaseCheckFunction", "LeaseRenewerFunction"] {
        set_function_env(stack, function, &[(STORE_ENDPOINT, None)]).await?;
    }
    invoke_async(stack, "LeaseRenewerFunction").await?;
    result
}

fn main() -> Result<()> {
    let args = args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stacks = match &args.regions_file {
            Some(file) => stacks_from(std::path::Path::new(file))?,
            None => stacks("TENURE_BENCH_REGIONS")?,
        };
        let stack = stacks
            .iter()
            .find(|s| s.region == "us-east-1")
            .cloned()
            .context("no stack in us-east-1: run infra/bench-many.sh")?;
        let bench = Bench {
            access: StackAccess::from_outputs(&stack.endpoint, &stack.region, &stack.outputs)?,
            sdk: stack.sdk().await,
            cfg: LeaseConfig::default(),
            groups: args.groups,
        };
        let started = Instant::now();
        for mode in &args.modes {
            match mode.as_str() {
                "scale" => scale(&bench, args.seconds).await?,
                "failover" => failover(&bench, args.cycles).await?,
                "restart" => restart(&bench, args.cycles).await?,
                "drain" => drain(&bench, args.cycles).await?,
                "cost" => cost(&bench, &stack, args.cost_seconds).await?,
                _ => unreachable!("modes are checked in args()"),
            }
        }
        println!("total {:.0} s", started.elapsed().as_secs_f64());
        anyhow::Ok(())
    })
}
