//! How fast one renewer round goes against the local stack, by scan segments and writes in
//! flight, compared in the same run with a sequential baseline (1 segment, 1 write in flight).
//!
//!   TENURE_TEST_ENDPOINT=http://127.0.0.1:4566 cargo bench -p tenure --bench renewer_round
//!
//! `RENEWER_BENCH_GROUPS` (default 2000) sets the table size. Needs MiniStack (`infra/ministack.sh start`).

use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Instant;
use tenure::clock::FakeClock;
use tenure::ids::{GroupId, HostId};
use tenure::lease::protocol::AcquirePlan;
use tenure::lease::record::{Epoch, LeaseRecord, Member};
use tenure::lease::renewer::{renew_round, RenewerConfig};
use tenure::lease::store::LeaseStore;
use tenure::lease::LeaseConfig;

const T0: u64 = 1_800_000_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoint = std::env::var("TENURE_TEST_ENDPOINT").map_err(|_| {
        anyhow::anyhow!("set TENURE_TEST_ENDPOINT (start MiniStack with infra/ministack.sh start)")
    })?;
    let groups: u64 = std::env::var("RENEWER_BENCH_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    let counter = tenure::telemetry::RequestCounter::new();
    let client = tenure::aws::dynamodb_client(&sdk, Some(counter.clone()));
    let table = format!("tenure-bench-renewer-{}", std::process::id());
    tenure::aws::ensure_table(&client, &table, "group_id")
        .await
        .map_err(anyhow::Error::msg)?;
    let store = LeaseStore::new(client.clone(), &table);
    let cfg = LeaseConfig::default();
    let host = HostId::parse("host-a")?;
    eprintln!("loading {groups} held groups...");
    futures::stream::iter(0..groups)
        .map(|n| {
            let (store, host) = (store.clone(), host.clone());
            async move {
                let members: BTreeMap<HostId, Member> = ["host-a", "host-b", "host-c"]
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        (
                            HostId::parse(h).unwrap(),
                            Member::new(format!("az-{i}"), 3 - i as u32),
                        )
                    })
                    .collect();
                let gid = GroupId::parse(&format!("bench-{n:06}")).unwrap();
                store
                    .create_group(&LeaseRecord::new_group(
                        gid.clone(),
                        cfg.lease_ms,
                        members,
                        T0,
                    ))
                    .await
                    .unwrap();
                let plan = AcquirePlan {
                    host,
                    healthy: true,
                    seen_epoch: Epoch(0),
                    now: T0,
                    not_after_ms: T0,
                    new_expires_at_ms: T0 + cfg.lease_ms,
                };
                store.acquire(&gid, &plan).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;

    let clock = FakeClock::at(T0 + 1);
    let configs = [(1u32, 1usize), (1, 16), (4, 16), (4, 64), (8, 64)];
    let mut baseline = None;
    println!(
        "| segments | writes in flight | groups | round (ms) | groups/s | vs baseline | requests |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (segments, in_flight) in configs {
        // Give every holder a fresh heartbeat so the round has real renewals to make.
        let beat = clock.advance(1_000);
        futures::stream::iter(0..groups)
            .map(|n| {
                let store = store.clone();
                let hb = tenure::lease::protocol::Heartbeat {
                    host: host.clone(),
                    healthy: true,
                    now: beat,
                };
                async move {
                    let gid = GroupId::parse(&format!("bench-{n:06}")).unwrap();
                    store.heartbeat(&gid, &hb).await.unwrap();
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
        counter.take();
        let renewer = RenewerConfig {
            scan_segments: segments,
            max_in_flight: in_flight,
            stop_margin_ms: 0,
        };
        let started = Instant::now();
        let report = renew_round(&store, &cfg, &clock, &renewer).await;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(report.renewed, groups, "{report:?}");
        let rate = groups as f64 / secs;
        let base = *baseline.get_or_insert(rate);
        let requests: u64 = counter.take().values().sum();
        println!(
            "| {segments} | {in_flight} | {groups} | {:.0} | {rate:.0} | {:.2}x | {requests} |",
            secs * 1_000.0,
            rate / base
        );
    }
    client.delete_table().table_name(&table).send().await?;
    Ok(())
}
