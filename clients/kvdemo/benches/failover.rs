//! Failover benchmark on the deployed local stacks (`infra/bench-failover.sh` deploys them and
//! runs this): for each lease length, `--cycles` kill -9 cycles and `--cycles` drains of three
//! kvdemo host processes, then, on the same MiniStack and in the same run, the peer crate
//! `dynamodb-lease` at its minimum TTL (2 s): a holder process killed with SIGKILL while a
//! contender is blocked in `acquire`. Prints p50/p90/p99/max per scenario and the ratio of
//! tenure's p99 at the 2 s lease to the peer's p99.
//!
//! Every time is from the kill (or the drain request) to the moment the new primary answers
//! (tenure: a survivor's `/groups/{group}/status` says primary, polled every 10 ms; peer:
//! `acquire` returns).
//! Kills land at a random moment (uniform over one renew interval) after the system settled.
//!
//!   infra/bench-failover.sh              # 20 cycles each
//!   CYCLES=5 infra/bench-failover.sh     # a quick look

use anyhow::{bail, Context, Result};
use rand::Rng;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tenure::clock::{Clock, SystemClock};
use tenure::lease::LeaseConfig;
use tenure_testkit::cluster::Cluster;
use tenure_testkit::fixture::{Fixture, StackAccess};
use tenure_testkit::many::percentile;
use tenure_testkit::{stacks, Stack};

const PEER_KEY: &str = "bench-lease";

struct Args {
    cycles: usize,
    regions_file: Option<String>,
    peer_holder: Option<String>,
}

fn args() -> Result<Args> {
    let mut args = Args {
        cycles: 20,
        regions_file: None,
        peer_holder: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--cycles" => args.cycles = it.next().context("--cycles N")?.parse()?,
            "--regions" => args.regions_file = Some(it.next().context("--regions FILE")?),
            "--peer-holder" => args.peer_holder = Some(it.next().context("--peer-holder TABLE")?),
            "--bench" => {}
            other => bail!("unknown argument {other}; use --cycles N, --regions FILE"),
        }
    }
    if args.cycles == 0 {
        bail!("--cycles must be at least 1");
    }
    Ok(args)
}

struct Summary {
    name: String,
    samples: Vec<Duration>,
}

impl Summary {
    fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            samples: Vec::new(),
        }
    }
    fn p(&self, p: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        percentile(&s, p)
    }
    fn print(&self, bound: Option<Duration>) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{:<36} n={:<3} p50 {:>6.0} ms  p90 {:>6.0} ms  p99 {:>6.0} ms  max {:>6.0} ms{}",
            self.name,
            self.samples.len(),
            ms(self.p(50.0)),
            ms(self.p(90.0)),
            ms(self.p(99.0)),
            ms(self.p(100.0)),
            bound.map_or(String::new(), |b| format!("  (bound {:.0} ms)", ms(b)))
        );
    }
}

fn random_phase(cfg: &LeaseConfig) -> Duration {
    Duration::from_millis(rand::rng().random_range(0..cfg.renew_interval_ms))
}

async fn tenure_cycles(
    stack: &Stack,
    cfg: LeaseConfig,
    label: &str,
    cycles: usize,
) -> Result<(Summary, Summary, Duration)> {
    let fixture = Fixture::create(
        &StackAccess::from_outputs(&stack.endpoint, &stack.region, &stack.outputs)?,
        &stack.sdk().await,
        env!("CARGO_BIN_EXE_kvdemo").into(),
        "bench",
        cfg,
        cfg.lease_ms,
        1,
    )
    .await?;
    let (service, group, hosts) = (&fixture.service, &fixture.group, &fixture.hosts);
    // The group's name, for the cluster's per-group calls.
    let name = group.as_str();
    let mut cluster = Cluster::start(fixture.spec.clone(), &fixture.host_names())?;
    let all = [0, 1, 2];
    let settle = Duration::from_millis(cfg.heartbeat_timeout_ms);
    let within = Duration::from_millis(3 * cfg.lease_ms + 10_000);

    let mut kills = Summary::new(format!("tenure kill -9, {label}"));
    for cycle in 0..cycles {
        cluster.wait_for_primary(name, &all, within).await?;
        // Everyone has heartbeated; the kill lands at a random phase of the renewals.
        tokio::time::sleep(settle + random_phase(&cfg)).await;
        let primary = cluster.wait_for_primary(name, &all, within).await?;
        let started = Instant::now();
        cluster.kill(primary)?;
        let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != primary).collect();
        let next = cluster.wait_for_primary(name, &survivors, within).await?;
        let took = started.elapsed();
        kills.samples.push(took);
        eprintln!(
            "  {label} kill {}/{cycles}: {} -> {} in {took:?}",
            cycle + 1,
            hosts[primary],
            hosts[next]
        );
        cluster.restart(primary)?;
        if !cluster
            .wait_for_state(primary, name, "secondary", within)
            .await
        {
            bail!("{} did not come back as secondary", hosts[primary]);
        }
    }

    let mut drains = Summary::new(format!("tenure drain, {label}"));
    for cycle in 0..cycles {
        cluster.wait_for_primary(name, &all, within).await?;
        // Past the previous step-down's hold-off, everyone live, random phase.
        tokio::time::sleep(settle * 2 + random_phase(&cfg)).await;
        let primary = cluster.wait_for_primary(name, &all, within).await?;
        let host = &hosts[primary];
        let started = Instant::now();
        service.set_draining(group, host, true).await?;
        let others: Vec<usize> = all.iter().copied().filter(|&i| i != primary).collect();
        let next = cluster.wait_for_primary(name, &others, within).await?;
        let took = started.elapsed();
        drains.samples.push(took);
        eprintln!(
            "  {label} drain {}/{cycles}: {} -> {} in {took:?}",
            cycle + 1,
            hosts[primary],
            hosts[next]
        );
        service.set_draining(group, host, false).await?;
    }

    let found = replica_agent::gate_log::violations(&cluster.writable_intervals()?);
    if !found.is_empty() {
        bail!("{label}: the gate logs show a safety violation: {found:#?}");
    }
    drop(cluster);
    fixture.drop_table().await;
    let round_trip = check_round_trip(stack).await?;
    Ok((kills, drains, round_trip))
}

/// p50 of 30 steady-state checks of a probe host (its own host item, no group) through the
/// signed Function URL: the round trip the bounds add, measured in the same run.
async fn check_round_trip(stack: &Stack) -> Result<Duration> {
    let access = StackAccess::from_outputs(&stack.endpoint, &stack.region, &stack.outputs)?;
    let sdk = stack.sdk().await;
    let prober =
        tenure_testkit::many::Prober::new(&sdk, &access).map_err(|e| anyhow::anyhow!(e))?;
    let mut latency = tenure_testkit::many::Latency::default();
    for _ in 0..30 {
        prober.sample(&mut latency).await;
    }
    latency.check.sort();
    if latency.check.is_empty() {
        bail!("no probe check answered in {}", stack.region);
    }
    Ok(percentile(&latency.check, 50.0))
}

async fn peer_client(sdk: &aws_config::SdkConfig, table: &str) -> Result<dynamodb_lease::Client> {
    dynamodb_lease::Client::builder()
        .table_name(table)
        .lease_ttl_seconds(2)
        .build_and_check_db(aws_sdk_dynamodb::Client::new(sdk))
        .await
}

/// The peer's holder process: acquire, say so, hold (extending in the background) until killed.
async fn peer_holder(table: &str) -> Result<()> {
    let sdk = tenure::aws::load_sdk_config().await;
    let client = peer_client(&sdk, table).await?;
    let _lease = client.acquire(PEER_KEY).await?;
    println!("acquired");
    std::future::pending::<()>().await;
    Ok(())
}

async fn peer_cycles(stack: &Stack, cycles: usize) -> Result<Summary> {
    let sdk = stack.sdk().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!(
        "peer-leases-{}-{}",
        std::process::id(),
        SystemClock.now_ms()
    );
    tenure::aws::ensure_table(&tenure::aws::dynamodb_client(&sdk, None), &table, "key")
        .await
        .map_err(anyhow::Error::msg)?;
    dynamodb
        .update_time_to_live()
        .table_name(&table)
        .time_to_live_specification(
            aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                .attribute_name("lease_expiry")
                .enabled(true)
                .build()?,
        )
        .send()
        .await?;
    let contender = peer_client(&sdk, &table).await?;
    let mut summary = Summary::new("dynamodb-lease SIGKILL, 2 s TTL");
    for cycle in 0..cycles {
        let mut holder = Command::new(std::env::current_exe()?)
            .args(["--peer-holder", &table])
            .env("AWS_ENDPOINT_URL", &stack.endpoint)
            .env("AWS_REGION", &stack.region)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(holder.stdout.take().context("holder stdout")?).read_line(&mut line)?;
        if line.trim() != "acquired" {
            let _ = holder.kill();
            bail!("peer holder did not acquire: {line:?}");
        }
        // The contender blocks in acquire (retrying every second) while the holder extends
        // every second; the kill lands at a random phase of both.
        let waiting = {
            let contender = contender.clone();
            tokio::spawn(async move { contender.acquire(PEER_KEY).await })
        };
        tokio::time::sleep(Duration::from_millis(
            1_000 + rand::rng().random_range(0..1_000),
        ))
        .await;
        if waiting.is_finished() {
            bail!("the contender acquired while the holder was alive");
        }
        let started = Instant::now();
        holder.kill()?;
        let _ = holder.wait();
        let lease = waiting.await??;
        let took = started.elapsed();
        summary.samples.push(took);
        eprintln!(
            "  peer kill {}/{cycles}: contender acquired in {took:?}",
            cycle + 1
        );
        lease.release().await?;
    }
    let _ = dynamodb.delete_table().table_name(&table).send().await;
    Ok(summary)
}

fn find(stacks: &[Stack], region: &str) -> Result<Stack> {
    stacks
        .iter()
        .find(|s| s.region == region)
        .cloned()
        .with_context(|| format!("no stack in {region}: run infra/bench-failover.sh"))
}

fn main() -> Result<()> {
    let args = args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(table) = &args.peer_holder {
        return runtime.block_on(peer_holder(table));
    }
    runtime.block_on(async {
        let stacks = match &args.regions_file {
            Some(file) => tenure_testkit::stacks_from(std::path::Path::new(file))?,
            None => stacks("TENURE_BENCH_REGIONS")?,
        };
        let default = find(&stacks, "us-east-1")?;
        let fast = find(&stacks, "us-west-2")?;
        // Must match samconfig.toml's local-fast-us-west-2 parameters.
        let fast_cfg = LeaseConfig::new(2_000, 500, 100, 1_000, 200)?;
        let default_cfg = LeaseConfig::default();
        // The failover bounds (`docs/protocol.md`): lease + skew + poll + one check round trip for a kill; 2 polls
        // plus 3 check round trips (the holder's, its release, the successor's) for a drain.
        let bound = |c: &LeaseConfig, rtt: Duration| {
            Duration::from_millis(c.lease_ms + c.clock_skew_ms + c.poll_interval_ms) + rtt
        };
        let polls =
            |c: &LeaseConfig, rtt: Duration| Duration::from_millis(2 * c.poll_interval_ms) + rtt * 3;
        let started = Instant::now();
        eprintln!("failover bench: {} cycles per scenario", args.cycles);
        let peer = peer_cycles(&fast, args.cycles).await?;
        let (kill_2, drain_2, rtt_2) =
            tenure_cycles(&fast, fast_cfg, "2 s lease", args.cycles).await?;
        let (kill_10, drain_10, rtt_10) =
            tenure_cycles(&default, default_cfg, "10 s lease", args.cycles).await?;
        println!();
        println!(
            "check round trip (p50 of 30, same run): {:.0} ms at the 10 s lease's stack, {:.0} ms at the 2 s lease's",
            rtt_10.as_secs_f64() * 1e3,
            rtt_2.as_secs_f64() * 1e3
        );
        kill_10.print(Some(bound(&default_cfg, rtt_10)));
        drain_10.print(Some(polls(&default_cfg, rtt_10)));
        kill_2.print(Some(bound(&fast_cfg, rtt_2)));
        drain_2.print(Some(polls(&fast_cfg, rtt_2)));
        peer.print(None);
        let ratio = kill_2.p(99.0).as_secs_f64() / peer.p(99.0).as_secs_f64();
        println!(
            "tenure p99 at a 2 s lease / dynamodb-lease p99 at a 2 s TTL = {ratio:.2} (goal <= 0.80){}",
            if ratio <= 0.8 { "" } else { "  GOAL MISSED" }
        );
        println!("total {:.0} s", started.elapsed().as_secs_f64());
        anyhow::Ok(())
    })
}
