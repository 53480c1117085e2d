//! End-to-end against the template deployed to MiniStack in two regions: the real Function
//! URL (SigV4), the real release binaries, the real 1-minute schedule.

use anyhow::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tenure::clock::SystemClock;
use tenure::ids::{GroupId, HostId};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::record::Member;
use tenure::lease::service::LeaseService;
use tenure::lease::LeaseConfig;
use tenure::sigv4::SigV4Client;
use tenure_testkit::{stacks, Stack};

fn unique_group(prefix: &str) -> GroupId {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    GroupId::parse(&format!("{prefix}-{ms}")).unwrap()
}

/// A host id of this test's own: in protocol v2 the lease belongs to the host, so tests that
/// run at once must not share host ids (one test's live host would keep another's alive).
fn unique_host(prefix: &str) -> String {
    format!(
        "{}-{}",
        prefix,
        unique_group("h").as_str().trim_start_matches("h-")
    )
}

async fn create_group(stack: &Stack, group: &GroupId, hosts: &[&str]) -> Result<()> {
    let sdk = stack.sdk().await;
    let store = DynamoLeaseStore::new(
        tenure::aws::dynamodb_client(&sdk, None),
        stack.output("HostsTable")?,
        stack.output("LeasesTable")?,
    );
    let service = LeaseService::new(store, LeaseConfig::default(), SystemClock);
    let members: BTreeMap<HostId, Member> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            (
                HostId::parse(h).unwrap(),
                Member::new(format!("az-{i}"), (hosts.len() - i) as u32),
            )
        })
        .collect();
    service.create_group(group.clone(), 10_000, members).await?;
    Ok(())
}

#[tokio::test]
async fn a_check_through_the_function_url_returns_the_contract_json() -> Result<()> {
    for stack in stacks("TENURE_E2E_REGIONS")? {
        let group = unique_group("e2e-check");
        let (host_a, host_b) = (unique_host("check-a"), unique_host("check-b"));
        create_group(&stack, &group, &[&host_a, &host_b]).await?;
        let http = SigV4Client::for_function_urls(&stack.sdk().await)?;
        let base = stack
            .output("LeaseCheckLocalUrl")?
            .trim_end_matches('/')
            .to_owned();
        let post = |path: String, body: Value| {
            let (http, url, region) = (http.clone(), format!("{base}{path}"), stack.region.clone());
            async move {
                let r = http
                    .send(
                        "POST",
                        &url,
                        &region,
                        body.to_string().as_bytes(),
                        Duration::from_secs(10),
                    )
                    .await?;
                anyhow::Ok((r.status, serde_json::from_slice::<Value>(&r.body)?))
            }
        };
        let (status, body) = post(
            format!("/v1/groups/{group}/check"),
            json!({"host_id": host_a}),
        )
        .await?;
        assert_eq!(status, 200, "{}: {body}", stack.region);
        let fields: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            [
                "draining",
                "epoch",
                "group_id",
                "holder",
                "host_id",
                "poll_after_ms",
                "role",
                "valid_for_ms",
                "writable"
            ],
            "the contract's fields and no others"
        );
        assert_eq!(
            (
                body["role"].clone(),
                body["writable"].clone(),
                body["epoch"].clone()
            ),
            (json!("primary"), json!(true), json!(1))
        );
        // A new host's first check renews its own lease (lease_ms from now), so the window is
        // the lease less the skew and the time the check took.
        let valid = body["valid_for_ms"].as_u64().unwrap();
        assert!((9_000..=9_800).contains(&valid), "valid_for_ms {valid}");

        let (status, body) = post(
            format!("/v1/groups/{group}/check"),
            json!({"host_id": host_b, "heartbeat": false}),
        )
        .await?;
        assert_eq!((status, body["role"].clone()), (200, json!("secondary")));
        let (status, body) = post(
            format!("/v1/groups/{group}/check"),
            json!({"host_id": "stranger"}),
        )
        .await?;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (404, json!("not_member"))
        );
        let (status, body) = post(
            format!("/v1/groups/{group}/release"),
            json!({"host_id": host_a, "epoch": 0}),
        )
        .await?;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (409, json!("stale_epoch"))
        );
        let r = http
            .send(
                "POST",
                &format!("{base}/v1/groups/{group}/check"),
                &stack.region,
                b"{not json",
                Duration::from_secs(10),
            )
            .await?;
        let body: Value = serde_json::from_slice(&r.body)?;
        assert_eq!(
            (r.status, body["error"]["code"].clone()),
            (400, json!("malformed_request"))
        );
    }
    Ok(())
}

/// The renewer is scheduled every minute and loops inside each invocation, renewing the host
/// lease about every `renew_interval_ms` (2 s); a host's own check renews it only when it is
/// within two renew intervals of its end (about every 6 s). So 30 or more renewals over more
/// than 60 s, with the grant never lapsing and neither epoch moving, are the renewer's, and span
/// at least two invocations (ticks), since each invocation lasts under 60 s.
#[tokio::test]
async fn the_scheduled_renewer_keeps_a_lease_across_two_ticks() -> Result<()> {
    let all = stacks("TENURE_E2E_REGIONS")?;
    let mut runs = Vec::new();
    for stack in all {
        runs.push(tokio::spawn(async move {
            let group = unique_group("e2e-renew");
            let host = HostId::parse(&unique_host("renew"))?;
            create_group(&stack, &group, &[host.as_str()]).await?;
            let lease = stack.lease_check().await?;
            let first = lease.check(&group, &host, true, true).await?;
            assert!(first.writable);
            let started = Instant::now();
            let mut last = (first.epoch, 0u64);
            let mut renewals: Vec<Instant> = Vec::new();
            loop {
                let answer = lease.check(&group, &host, true, true).await?;
                let record = lease.get(&group).await?;
                let host_view = lease.get_host(&host).await?;
                let expires_at_ms = host_view["host"]["expires_at_ms"].as_u64().unwrap_or(0);
                assert_eq!(
                    host_view["host"]["epoch"], 0,
                    "{}: the host was revoked",
                    stack.region
                );
                if !renewals.is_empty() {
                    assert_eq!(
                        record.epoch, last.0,
                        "{}: the epoch moved while the renewer ran",
                        stack.region
                    );
                    assert!(
                        answer.writable,
                        "{}: the lease lapsed while the renewer ran",
                        stack.region
                    );
                }
                if record.epoch == last.0 && expires_at_ms > last.1 && last.1 != 0 {
                    renewals.push(Instant::now());
                }
                last = (record.epoch, expires_at_ms);
                if let (Some(a), Some(b)) = (renewals.first(), renewals.last()) {
                    if b.duration_since(*a) > Duration::from_secs(62) {
                        return anyhow::Ok(renewals.len());
                    }
                }
                assert!(
                    started.elapsed() < Duration::from_secs(200),
                    "{}: renewals seen: {} over {:?}",
                    stack.region,
                    renewals.len(),
                    renewals
                        .first()
                        .zip(renewals.last())
                        .map(|(a, b)| b.duration_since(*a))
                );
                tokio::time::sleep(Duration::from_millis(1_000)).await;
            }
        }));
    }
    for run in runs {
        let renewals = run.await??;
        assert!(
            renewals >= 30,
            "expected a renewal about every 2 s, saw {renewals}"
        );
    }
    Ok(())
}

/// Two hosts' `LeaseGate`s on the deployed stack: one becomes primary; when it dies (its gate
/// is dropped, so it stops checking) the other becomes primary with a higher epoch, no sooner
/// than the first one's deadline and within lease + skew + poll of its last heartbeat.
#[tokio::test]
async fn lease_gates_fail_over_through_the_deployed_stack() -> Result<()> {
    use replica_agent::{GateConfig, GateState, HttpLeaseSource, LeaseGate};
    let stack = stacks("TENURE_E2E_REGIONS")?
        .into_iter()
        .next()
        .expect("a stack");
    let group = unique_group("e2e-gate");
    let (host_a, host_b) = (unique_host("gate-a"), unique_host("gate-b"));
    create_group(&stack, &group, &[&host_a, &host_b]).await?;
    let cfg = LeaseConfig::default();
    let gate = |host: &str| {
        let stack = stack.clone();
        let (group, host) = (group.clone(), HostId::parse(host).unwrap());
        async move {
            let source = HttpLeaseSource {
                client: stack.lease_check().await?,
                group,
                host,
            };
            anyhow::Ok(LeaseGate::start(
                source,
                || true,
                GateConfig::from_lease(&cfg),
            ))
        }
    };
    let a = gate(&host_a).await?;
    let started = Instant::now();
    while a.write_permit().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "host-a never became primary"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = gate(&host_b).await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        matches!(b.state(), GateState::Secondary { .. }),
        "{:?}",
        b.state()
    );
    assert!(b.write_permit().is_none());
    let a_permit = a.write_permit().expect("host-a still primary");
    let killed = Instant::now();
    drop(a);
    let mut changes = b.subscribe();
    let b_permit = loop {
        if let Some(p) = b.write_permit() {
            break p;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no failover: {:?}",
            b.state()
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
    };
    let took = killed.elapsed();
    assert!(
        b_permit.epoch > a_permit.epoch,
        "{b_permit:?} after {a_permit:?}"
    );
    // host-b's window opens only after host-a's last granted window closed.
    assert!(
        Instant::now() >= a_permit.deadline.into_std(),
        "overlapping writable windows"
    );
    let bound = Duration::from_millis(cfg.lease_ms + cfg.clock_skew_ms + cfg.poll_interval_ms);
    assert!(took <= bound, "failover took {took:?}, bound {bound:?}");
    eprintln!("failover through the deployed stack: {took:?} (bound from the kill: {bound:?})");
    Ok(())
}

/// One host serving two groups gets a gate (and an epoch) per group, and no permit for a
/// group it does not serve.
#[tokio::test]
async fn one_host_holds_a_gate_per_group() -> Result<()> {
    use replica_agent::{GateConfig, LeaseGates};
    let stack = stacks("TENURE_E2E_REGIONS")?
        .into_iter()
        .next()
        .expect("a stack");
    let (g1, g2) = (unique_group("e2e-multi-1"), unique_group("e2e-multi-2"));
    let (host_a, host_b) = (unique_host("multi-a"), unique_host("multi-b"));
    create_group(&stack, &g1, &[&host_a]).await?;
    create_group(&stack, &g2, &[&host_a, &host_b]).await?;
    let gates = LeaseGates::start(
        &stack.lease_check().await?,
        &HostId::parse(&host_a)?,
        [g1.clone(), g2.clone()],
        || true,
        GateConfig::from_lease(&LeaseConfig::default()),
    );
    let started = Instant::now();
    while gates.write_permit(&g1).is_none() || gates.write_permit(&g2).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?} {:?}",
            gates.state(&g1),
            gates.state(&g2)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gates.groups().count(), 2);
    assert!(gates.write_permit(&unique_group("not-served")).is_none());
    Ok(())
}
