//! How fast one renewer round goes against the local stack, by scan segments and writes in
//! flight, compared in the same run with a sequential baseline (1 segment, 1 write in flight).
//! Protocol v2 renews hosts, not groups: a round is one write per host.
//!
//!   TENURE_TEST_ENDPOINT=http://127.0.0.1:4566 cargo bench -p tenure --bench renewer_round
//!
//! `RENEWER_BENCH_HOSTS` (default 2000) sets the table size. Needs MiniStack (`infra/ministack.sh start`).

use futures::StreamExt;
use std::time::Instant;
use tenure::clock::FakeClock;
use tenure::ids::{HostId, Incarnation};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::protocol::HeartbeatPlan;
use tenure::lease::renewer::{renew_round, RenewerConfig};
use tenure::lease::store::LeaseStore;
use tenure::lease::LeaseConfig;

const T0: u64 = 1_800_000_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoint = std::env::var("TENURE_TEST_ENDPOINT").map_err(|_| {
        anyhow::anyhow!("set TENURE_TEST_ENDPOINT (start MiniStack with infra/ministack.sh start)")
    })?;
    let hosts: u64 = std::env::var("RENEWER_BENCH_HOSTS")
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
    tenure::aws::ensure_table(&client, &table, "host_id")
        .await
        .map_err(anyhow::Error::msg)?;
    let store = DynamoLeaseStore::new(client.clone(), &table, "unused-leases");
    let cfg = LeaseConfig::default();
    let incarnation = Incarnation::parse("bench")?;
    let beat_all = |now: u64| {
        let (store, incarnation) = (store.clone(), incarnation.clone());
        async move {
            futures::stream::iter(0..hosts)
                .map(|n| {
                    let store = store.clone();
                    let plan = HeartbeatPlan {
                        host: HostId::parse(&format!("bench-{n:06}")).unwrap(),
                        healthy: true,
                        incarnation: incarnation.clone(),
                        now,
                    };
                    async move {
                        store.heartbeat(&plan).await.unwrap();
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<()>>()
                .await
        }
    };
    eprintln!("loading {hosts} hosts...");
    beat_all(T0).await;

    let clock = FakeClock::at(T0 + 1);
    let configs = [(1u32, 1usize), (1, 16), (4, 16), (4, 64), (8, 64)];
    let mut baseline = None;
    println!(
        "| segments | writes in flight | hosts | round (ms) | hosts/s | vs baseline | requests |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (segments, in_flight) in configs {
        // Give every host a fresh heartbeat so the round has real renewals to make.
        beat_all(clock.advance(1_000)).await;
        counter.take();
        let renewer = RenewerConfig {
            scan_segments: segments,
            max_in_flight: in_flight,
            stop_margin_ms: 0,
        };
        let started = Instant::now();
        let report = renew_round(&store, &cfg, &clock, &renewer).await;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(report.renewed, hosts, "{report:?}");
        let rate = hosts as f64 / secs;
        let base = *baseline.get_or_insert(rate);
        let requests: u64 = counter.take().values().sum();
        println!(
            "| {segments} | {in_flight} | {hosts} | {:.0} | {rate:.0} | {:.2}x | {requests} |",
            secs * 1_000.0,
            rate / base
        );
    }
    client.delete_table().table_name(&table).send().await?;
    Ok(())
}
