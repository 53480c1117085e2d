//! The cost of asking the host agent for a permit on the write path, one group looked up
//! among 1,000 (goal: < 50 ns), next to the cost of the CLOCK_BOOTTIME read it contains,
//! measured in the same run.
//!
//!   cargo bench -p replica-agent --bench write_permit

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion};
use replica_agent::{AgentConfig, BootClock, DeadlineClock, HostAgent, HostSource, SourceError};
use std::hint::black_box;
use tenure::ids::{GroupId, HostId};
use tenure::lease::client::HostCheckBody;
use tenure::lease::service::{GroupEntry, HostAnswer};
use tenure::lease::{CheckAnswer, Epoch, LeaseConfig, Role};

const GROUPS: usize = 1_000;

/// Answers "primary of every group asked about, host lease good for an hour", so every gate
/// stays open during the measurement.
struct AlwaysPrimary;

#[async_trait]
impl HostSource for AlwaysPrimary {
    async fn check(&self, host: &HostId, body: &HostCheckBody) -> Result<HostAnswer, SourceError> {
        let valid_for_ms = 3_600_000;
        Ok(HostAnswer {
            host_id: host.clone(),
            host_epoch: Epoch(0),
            valid_for_ms,
            poll_after_ms: 1_000,
            healthy: true,
            draining: false,
            attention: Vec::new(),
            groups: body
                .groups
                .iter()
                .map(|g| {
                    GroupEntry::Answer(CheckAnswer {
                        group_id: g.clone(),
                        host_id: host.clone(),
                        role: Role::Primary,
                        writable: true,
                        epoch: Epoch(1),
                        holder: Some(host.clone()),
                        valid_for_ms,
                        poll_after_ms: 1_000,
                        draining: false,
                        holder_host_epoch: Some(Epoch(0)),
                    })
                })
                .collect(),
            watched: Vec::new(),
        })
    }

    async fn release(
        &self,
        _host: &HostId,
        _groups: &[(GroupId, Epoch)],
    ) -> Result<Vec<GroupEntry>, SourceError> {
        Ok(Vec::new())
    }
}

fn write_permit(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let groups: Vec<GroupId> = (0..GROUPS)
        .map(|i| GroupId::parse(&format!("orders-{i:04}")).expect("valid group id"))
        .collect();
    let host = HostId::parse("db-host-1").expect("valid host id");
    let config = AgentConfig::new(host, groups.clone(), &LeaseConfig::default())
        .expect("valid agent config");
    let probe = groups[GROUPS / 2].clone();
    let absent = GroupId::parse("not-served").expect("valid group id");
    let agent = runtime.block_on(async {
        let agent = HostAgent::start(AlwaysPrimary, config, || true, None);
        while groups.iter().any(|g| agent.write_permit(g).is_none()) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        agent
    });
    c.bench_function("baseline_clock_boottime", |b| {
        b.iter(|| black_box(BootClock.now_ns()))
    });
    c.bench_function("baseline_std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    c.bench_function("write_permit_open_1_of_1000", |b| {
        b.iter(|| black_box(agent.write_permit(black_box(&probe))))
    });
    c.bench_function("write_permit_not_served", |b| {
        b.iter(|| black_box(agent.write_permit(black_box(&absent))))
    });
    runtime.block_on(async { agent.step_down(&probe).await.ok() });
    c.bench_function("write_permit_closed_1_of_1000", |b| {
        b.iter(|| black_box(agent.write_permit(black_box(&probe))))
    });
}

criterion_group!(benches, write_permit);
criterion_main!(benches);
