//! Three kvdemo host processes on the deployed local stack (`TENURE_E2E_REGIONS`, written by
//! the test command's deploy): kill -9 the primary, a secondary takes over within
//! lease + skew + poll, every acknowledged write is still readable, and the hosts' gate logs
//! (one machine, one monotonic clock) never show two writable hosts at once.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tenure::clock::SystemClock;
use tenure::ids::HostId;
use tenure::lease::record::Member;
use tenure::lease::service::LeaseService;
use tenure::lease::store::LeaseStore;
use tenure::lease::LeaseConfig;
use tenure_e2e::stacks;

struct HostProcess {
    name: String,
    child: Child,
    addr: String,
    log: std::path::PathBuf,
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn status(http: &reqwest::Client, host: &HostProcess) -> Option<String> {
    let bytes = http
        .get(format!("http://{}/status", host.addr))
        .send()
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let body: Value = serde_json::from_slice(&bytes).ok()?;
    body["state"].as_str().map(str::to_owned)
}

async fn wait_for_primary(
    http: &reqwest::Client,
    hosts: &[&HostProcess],
    within: Duration,
) -> Result<usize> {
    let started = Instant::now();
    loop {
        for (i, h) in hosts.iter().enumerate() {
            if status(http, h).await.as_deref() == Some("primary") {
                return Ok(i);
            }
        }
        if started.elapsed() > within {
            bail!("no primary among {} hosts within {within:?}", hosts.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_primary_fails_over_without_losing_acknowledged_writes() -> Result<()> {
    let stack = stacks("TENURE_E2E_REGIONS")?
        .into_iter()
        .next()
        .context("a stack")?;
    let sdk = stack.sdk().await;
    let dynamodb = tenure::aws::dynamodb_client(&sdk, None);
    let suffix = format!(
        "{}-{}",
        std::process::id(),
        tenure::clock::Clock::now_ms(&SystemClock)
    );
    let table = format!("kvdemo-data-{suffix}");
    tenure::aws::ensure_table(&dynamodb, &table, "key")
        .await
        .map_err(anyhow::Error::msg)?;
    let cfg = LeaseConfig::default();
    let group = tenure::ids::GroupId::parse(&format!("kv-{suffix}"))?;
    let service = LeaseService::new(
        LeaseStore::new(dynamodb.clone(), stack.output("LeasesTable")?),
        cfg,
        SystemClock,
    );
    let members: BTreeMap<HostId, Member> = [("host-a", 3), ("host-b", 2), ("host-c", 1)]
        .iter()
        .map(|(h, p)| {
            (
                HostId::parse(h).unwrap(),
                Member::new(format!("az-{h}"), *p),
            )
        })
        .collect();
    service
        .create_group(group.clone(), cfg.lease_ms, members)
        .await?;

    let dir = std::env::temp_dir().join(format!("kvdemo-{suffix}"));
    std::fs::create_dir_all(&dir)?;
    let mut hosts = Vec::new();
    for name in ["host-a", "host-b", "host-c"] {
        let log = dir.join(format!("{name}.gate.jsonl"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvdemo"))
            .args([
                "--group",
                group.as_str(),
                "--host",
                name,
                "--lease-check-url",
                stack.output("LeaseCheckLocalUrl")?,
            ])
            .args(["--data-table", &table, "--gate-log"])
            .arg(&log)
            .env("AWS_ENDPOINT_URL", &stack.endpoint)
            .env("AWS_REGION", &stack.region)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .context("kvdemo did not say where it listens")?
            .to_owned();
        hosts.push(HostProcess {
            name: name.to_owned(),
            child,
            addr,
            log,
        });
    }
    let http = reqwest::Client::new();
    let all: Vec<&HostProcess> = hosts.iter().collect();
    let first = wait_for_primary(&http, &all, Duration::from_secs(15)).await?;

    let mut acked: Vec<(String, String)> = Vec::new();
    let put_all = |http: reqwest::Client, addr: String, from: usize| async move {
        let mut done = Vec::new();
        for n in from..from + 20 {
            let (key, value) = (format!("k{n}"), format!("v{n}"));
            let r = http
                .put(format!("http://{addr}/kv/{key}"))
                .body(value.clone())
                .send()
                .await?;
            if r.status().as_u16() == 200 {
                done.push((key, value));
            }
        }
        anyhow::Ok(done)
    };
    acked.extend(put_all(http.clone(), hosts[first].addr.clone(), 0).await?);
    assert_eq!(acked.len(), 20, "the primary acknowledges writes");
    // A secondary refuses writes.
    let other = (first + 1) % 3;
    let refused = http
        .put(format!("http://{}/kv/x", hosts[other].addr))
        .body("x")
        .send()
        .await?;
    assert_eq!(refused.status().as_u16(), 503);

    let killed_name = hosts[first].name.clone();
    let killed = Instant::now();
    let killed_ns = kvdemo::gate_log::monotonic_ns();
    hosts[first].child.kill()?; // SIGKILL
    hosts[first].child.wait()?;
    let survivors: Vec<&HostProcess> = hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, h)| h)
        .collect();
    let next = wait_for_primary(&http, &survivors, Duration::from_secs(30)).await?;
    let failover = killed.elapsed();
    let bound = Duration::from_millis(cfg.lease_ms + cfg.clock_skew_ms + cfg.poll_interval_ms);
    eprintln!(
        "kill -9 of {killed_name}: {} primary after {failover:?} (bound {bound:?})",
        survivors[next].name
    );
    assert!(
        failover <= bound,
        "failover took {failover:?}, bound {bound:?}"
    );

    acked.extend(put_all(http.clone(), survivors[next].addr.clone(), 20).await?);
    assert_eq!(acked.len(), 40);
    for (key, value) in &acked {
        let bytes = http
            .get(format!("http://{}/kv/{key}", survivors[0].addr))
            .send()
            .await?
            .bytes()
            .await?;
        let r: Value = serde_json::from_slice(&bytes)?;
        assert_eq!(
            r["value"].as_str(),
            Some(value.as_str()),
            "acknowledged write {key} lost"
        );
    }

    // Writable intervals from the gate logs: [primary line, next line of that host), the
    // killed host's last interval ending at the kill.
    let end_ns = kvdemo::gate_log::monotonic_ns();
    let mut intervals: Vec<(String, u64, u64, u64)> = Vec::new();
    for h in &hosts {
        let lines: Vec<Value> = std::fs::read_to_string(&h.log)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        for (i, l) in lines.iter().enumerate() {
            if l["state"] == "primary" {
                let start = l["t_ns"].as_u64().unwrap_or(0);
                let end = lines.get(i + 1).and_then(|n| n["t_ns"].as_u64()).unwrap_or(
                    if h.name == killed_name {
                        killed_ns
                    } else {
                        end_ns
                    },
                );
                intervals.push((h.name.clone(), start, end, l["epoch"].as_u64().unwrap_or(0)));
            }
        }
    }
    intervals.sort_by_key(|i| i.1);
    assert!(intervals.len() >= 2, "{intervals:?}");
    for pair in intervals.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.0 == b.0 || a.2 <= b.1,
            "overlapping writable intervals: {a:?} {b:?}"
        );
        assert!(b.3 >= a.3, "epochs go backwards: {a:?} {b:?}");
    }
    let _ = dynamodb.delete_table().table_name(&table).send().await;
    Ok(())
}
