//! Three kvdemo host processes on the deployed local stack (`TENURE_E2E_REGIONS`, written by
//! the test command's deploy): kill -9 of the primary, SIGSTOP past its deadline, and a drain.
//! Each asserts the protocol's bound, that every acknowledged write is still readable, and that the
//! hosts' gate logs (one machine, one boot clock) never show two writable hosts at once.
//! The tests take turns (one lock), so their timing bounds are not measured under each
//! other's load.

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use replica_agent::gate_log::violations;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tenure::lease::client::LeaseCheckClient;
use tenure::lease::LeaseConfig;
use tenure::sigv4::SigV4Client;
use tenure_testkit::cluster::Cluster;
use tenure_testkit::fixture::{Fixture, StackAccess};
use tenure_testkit::stacks;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Setup {
    cluster: Cluster,
    fixture: Fixture,
    /// The fixture's one group.
    group: String,
    cfg: LeaseConfig,
    /// lease-check through its signed Function URL, to measure a round trip in the same run.
    lease_check: LeaseCheckClient,
}

impl Setup {
    async fn new(tag: &str, fault_injection: bool) -> Result<Self> {
        let stack = stacks("TENURE_E2E_REGIONS")?
            .into_iter()
            .next()
            .context("a deployed stack")?;
        let cfg = LeaseConfig::default();
        let access = StackAccess::from_outputs(&stack.endpoint, &stack.region, &stack.outputs)?;
        let sdk = stack.sdk().await;
        let lease_check = LeaseCheckClient::new(
            SigV4Client::for_function_urls(&sdk)?,
            &access.lease_check_url,
            &access.region,
            Duration::from_secs(5),
        );
        let mut fixture = Fixture::create(
            &access,
            &sdk,
            env!("CARGO_BIN_EXE_kvdemo").into(),
            tag,
            cfg,
            cfg.lease_ms,
            1,
        )
        .await?;
        fixture.spec.fault_injection = fault_injection;
        let cluster = Cluster::start(fixture.spec.clone(), &fixture.host_names())?;
        let group = fixture.group.to_string();
        Ok(Self {
            cluster,
            fixture,
            group,
            cfg,
            lease_check,
        })
    }

    /// One lease-check round trip now (the median of five reads of a host item through the
    /// Function URL): the "one round trip" of the failover bounds, measured in the same run.
    async fn round_trip(&self) -> Result<Duration> {
        let mut samples = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            self.lease_check.get_host(&self.fixture.hosts[0]).await?;
            samples.push(started.elapsed());
        }
        samples.sort();
        Ok(samples[2])
    }

    /// PUTs `keys` through host `i`, returning those acknowledged.
    async fn put_many(
        &self,
        i: usize,
        keys: std::ops::Range<usize>,
    ) -> Result<Vec<(String, String)>> {
        let mut acked = Vec::new();
        for n in keys {
            let (key, value) = (format!("k{n}"), format!("v{n}"));
            if self.cluster.put(i, &self.group, &key, &value).await?.0 == 200 {
                acked.push((key, value));
            }
        }
        Ok(acked)
    }

    /// Every acknowledged write is readable through host `i`.
    async fn assert_readable(&self, i: usize, acked: &[(String, String)]) -> Result<()> {
        for (key, value) in acked {
            let (status, body) = self.cluster.get(i, &self.group, key).await?;
            ensure!(
                status == 200 && body["value"].as_str() == Some(value.as_str()),
                "acknowledged write {key} lost: {status} {body}"
            );
        }
        Ok(())
    }

    fn assert_never_two_writable(&self) -> Result<()> {
        let intervals = self.cluster.writable_intervals()?;
        ensure!(
            !intervals.is_empty(),
            "the gate logs show no primary at all"
        );
        let found = violations(&intervals);
        ensure!(found.is_empty(), "gate logs: {found:#?}");
        Ok(())
    }

    /// Items of the group stored with `epoch`, by key (stored as `{group}/{key}`; the fence
    /// items, `#fence/{group}`, excluded).
    async fn keys_stored_with(&self, epoch: u64) -> Result<BTreeSet<String>> {
        let prefix = format!("{}/", self.group);
        let items = self
            .fixture
            .dynamodb
            .scan()
            .table_name(&self.fixture.table)
            .consistent_read(true)
            .send()
            .await?
            .items
            .unwrap_or_default();
        Ok(items
            .iter()
            .filter(|item| {
                matches!(item.get("epoch"), Some(AttributeValue::N(n)) if n == &epoch.to_string())
            })
            .filter_map(|item| match item.get("key") {
                Some(AttributeValue::S(k)) if !k.starts_with('#') => {
                    k.strip_prefix(prefix.as_str()).map(str::to_owned)
                }
                _ => None,
            })
            .collect())
    }

    async fn cleanup(self) {
        self.fixture.drop_table().await;
    }

    fn others(&self, i: usize) -> Vec<usize> {
        (0..self.fixture.hosts.len()).filter(|&j| j != i).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_primary_fails_over_without_losing_acknowledged_writes() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = Setup::new("kill", false).await?;
    let first = s
        .cluster
        .wait_for_primary(&s.group, &[0, 1, 2], Duration::from_secs(15))
        .await?;
    let mut acked = s.put_many(first, 0..20).await?;
    ensure!(acked.len() == 20, "the primary acknowledges writes");
    let other = (first + 1) % 3;
    // Each host's agent exports its roles for a Prometheus scrape.
    let primary_metrics = s.cluster.metrics_text(first).await?;
    ensure!(
        primary_metrics.contains("tenure_agent_groups{role=\"primary\"} 1")
            && primary_metrics.contains("tenure_agent_checks_total"),
        "{primary_metrics}"
    );
    let secondary_metrics = s.cluster.metrics_text(other).await?;
    ensure!(
        secondary_metrics.contains("tenure_agent_groups{role=\"secondary\"} 1")
            && secondary_metrics.contains("tenure_agent_groups{role=\"primary\"} 0"),
        "{secondary_metrics}"
    );
    let (refused, body) = s.cluster.put(other, &s.group, "x", "x").await?;
    ensure!(
        refused == 503,
        "a secondary refuses writes: {refused} {body}"
    );

    let round_trip = s.round_trip().await?;
    let killed = Instant::now();
    s.cluster.kill(first)?;
    let next = s
        .cluster
        .wait_for_primary(&s.group, &s.others(first), Duration::from_secs(30))
        .await?;
    let failover = killed.elapsed();
    // The failover bound: lease + skew + poll + one round trip, from the last heartbeat (the kill
    // comes at or after it).
    let bound =
        Duration::from_millis(s.cfg.lease_ms + s.cfg.clock_skew_ms + s.cfg.poll_interval_ms)
            + round_trip;
    eprintln!(
        "kill -9 of {}: {} primary after {failover:?} (bound {bound:?})",
        s.fixture.hosts[first], s.fixture.hosts[next]
    );
    ensure!(
        failover <= bound,
        "failover took {failover:?}, bound {bound:?}"
    );

    acked.extend(s.put_many(next, 20..40).await?);
    ensure!(acked.len() == 40, "the new primary acknowledges writes");
    s.assert_readable(next, &acked).await?;
    s.assert_never_two_writable()?;
    s.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_paused_past_its_deadline_comes_back_read_only_and_its_late_write_is_refused(
) -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let s = Setup::new("stop", true).await?;
    let old = s
        .cluster
        .wait_for_primary(&s.group, &[0, 1, 2], Duration::from_secs(15))
        .await?;
    let old_epoch = s
        .cluster
        .role(old, &s.group)
        .await
        .and_then(|st| st.epoch)
        .context("epoch")?;
    let mut acked = s.put_many(old, 0..5).await?;
    ensure!(acked.len() == 5);

    // A write that takes its permit now and stores 1.5 s later: the process is stopped in
    // between, so the store happens long after the lease moved on.
    let late = {
        let path = format!("/groups/{}/kv/late?delay_ms=1500", s.group);
        let request = s
            .cluster
            .http()
            .put(s.cluster.url(old, &path))
            .timeout(Duration::from_secs(120))
            .body("late");
        tokio::spawn(async move {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
            anyhow::Ok((status, body))
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.cluster.pause(old)?;
    let paused = Instant::now();
    let new = s
        .cluster
        .wait_for_primary(&s.group, &s.others(old), Duration::from_secs(30))
        .await?;
    eprintln!(
        "SIGSTOP of {}: {} primary after {:?}",
        s.fixture.hosts[old],
        s.fixture.hosts[new],
        paused.elapsed()
    );
    acked.extend(s.put_many(new, 5..10).await?);
    ensure!(acked.len() == 10, "the new primary acknowledges writes");

    s.cluster.resume(old)?;
    // Back from the pause: read-only at once (its deadline passed while it was stopped).
    let back = s
        .cluster
        .role(old, &s.group)
        .await
        .context("the resumed host answers")?;
    ensure!(
        back.state != "primary",
        "resumed host still says primary: {back:?}"
    );
    let (status, body) = s.cluster.put(old, &s.group, "after-resume", "x").await?;
    ensure!(
        status == 503,
        "resumed host accepted a write: {status} {body}"
    );
    // The write it was in the middle of is refused by the fence, not stored.
    let (status, body) = late.await??;
    ensure!(
        status == 409 && body["error"]["code"] == "stale_epoch",
        "the paused write: {status} {body}"
    );
    let (status, _) = s.cluster.get(new, &s.group, "late").await?;
    ensure!(status == 404, "the paused primary's late write was stored");
    let old_keys = s.keys_stored_with(old_epoch).await?;
    let acked_before: BTreeSet<String> = acked[..5].iter().map(|(k, _)| k.clone()).collect();
    ensure!(
        old_keys == acked_before,
        "stored with the old epoch {old_epoch}: {old_keys:?}, acknowledged before the pause: {acked_before:?}"
    );
    s.assert_readable(new, &acked).await?;
    s.assert_never_two_writable()?;
    s.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_primary_hands_over_within_two_polls() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let s = Setup::new("drain", false).await?;
    let old = s
        .cluster
        .wait_for_primary(&s.group, &[0, 1, 2], Duration::from_secs(15))
        .await?;
    // Let every host heartbeat, so all are live candidates.
    tokio::time::sleep(Duration::from_millis(s.cfg.heartbeat_timeout_ms / 2)).await;
    let mut acked = s.put_many(old, 0..5).await?;
    let host = s.fixture.hosts[old].clone();
    let round_trip = s.round_trip().await?;
    let started = Instant::now();
    let f = &s.fixture;
    f.service.set_draining(&f.group, &host, true).await?;
    let new = s
        .cluster
        .wait_for_primary(&s.group, &s.others(old), Duration::from_secs(10))
        .await?;
    let handover = started.elapsed();
    // Two polls (the holder hears of the drain, then the next host acquires) plus the round
    // trips: the holder's check, its release, the next host's check.
    let bound = Duration::from_millis(2 * s.cfg.poll_interval_ms) + round_trip * 3;
    eprintln!(
        "drain of {}: {} primary after {handover:?} (bound {bound:?})",
        s.fixture.hosts[old], s.fixture.hosts[new]
    );
    ensure!(
        handover <= bound,
        "handover took {handover:?}, bound {bound:?}"
    );
    let back = s
        .cluster
        .role(old, &s.group)
        .await
        .context("the drained host answers")?;
    if back.state == "primary" {
        bail!("the drained host is still primary");
    }
    acked.extend(s.put_many(new, 5..10).await?);
    ensure!(acked.len() == 10);
    let f = &s.fixture;
    f.service.set_draining(&f.group, &host, false).await?;
    s.assert_readable(new, &acked).await?;
    s.assert_never_two_writable()?;
    s.cleanup().await;
    Ok(())
}
