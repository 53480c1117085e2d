//! The cost of asking the gate for a permit on the write path (goal: < 50 ns), next to the
//! cost of the monotonic clock read it contains, measured in the same run.
//!
//!   cargo bench -p replica-agent --bench v1_write_permit

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion};
use replica_agent::{GateConfig, LeaseGate, LeaseSource, SourceError};
use std::hint::black_box;
use tenure::ids::{GroupId, HostId};
use tenure::lease::{CheckAnswer, Epoch, LeaseConfig, Role};

/// Always answers "primary for an hour", so the gate stays open during the measurement.
struct AlwaysPrimary;

#[async_trait]
impl LeaseSource for AlwaysPrimary {
    async fn check(&self, _healthy: bool, _heartbeat: bool) -> Result<CheckAnswer, SourceError> {
        Ok(CheckAnswer {
            group_id: GroupId::parse("g").map_err(|e| SourceError(e.to_string()))?,
            host_id: HostId::parse("h").map_err(|e| SourceError(e.to_string()))?,
            role: Role::Primary,
            writable: true,
            epoch: Epoch(1),
            holder: HostId::parse("h").ok(),
            valid_for_ms: 3_600_000,
            poll_after_ms: 500,
            draining: false,
            holder_host_epoch: None,
        })
    }
    async fn release(&self, _epoch: Epoch) -> Result<(), SourceError> {
        Ok(())
    }
}

fn write_permit(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let gate = runtime.block_on(async {
        let gate = LeaseGate::start(
            AlwaysPrimary,
            || true,
            GateConfig::from_lease(&LeaseConfig::default()),
        );
        while gate.write_permit().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        gate
    });
    c.bench_function("baseline_tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    c.bench_function("baseline_std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    c.bench_function("write_permit_open_gate", |b| {
        b.iter(|| black_box(gate.write_permit()))
    });
    runtime.block_on(async { gate.step_down().await.ok() });
    c.bench_function("write_permit_closed_gate", |b| {
        b.iter(|| black_box(gate.write_permit()))
    });
}

criterion_group!(benches, write_permit);
criterion_main!(benches);
