//! What counting costs lease-check: the whole handler path of a steady-state host check (a
//! primary of one group, on the in-memory store) with no recorder, against the same path with
//! the functions' EMF recorder installed and flushed after every request, as lease-check
//! flushes after every invocation (into a sink here; the function writes the same bytes to
//! stdout). Same process, same run: BENCHMARKS.md reports the ratio.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tenure::clock::FakeClock;
use tenure::http::ApiRequest;
use tenure::identity::HostIdentityRule;
use tenure::ids::{GroupId, HostId};
use tenure::lease::api::handle;
use tenure::lease::memory::MemoryLeaseStore;
use tenure::lease::record::Member;
use tenure::lease::service::LeaseService;
use tenure::lease::LeaseConfig;

const T0: u64 = 1_800_000_000_000;

fn metrics_cost(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let service = LeaseService::new(
        MemoryLeaseStore::new(),
        LeaseConfig::default(),
        FakeClock::at(T0),
    );
    let group = GroupId::parse("orders-1").unwrap();
    let members = [("host-a", 2), ("host-b", 1)]
        .into_iter()
        .map(|(h, p)| (HostId::parse(h).unwrap(), Member::new("az", p)))
        .collect();
    runtime
        .block_on(service.create_group(group, 10_000, members))
        .unwrap();
    let body = br#"{"incarnation":"i-1","groups":["orders-1"]}"#;
    let check = || {
        runtime.block_on(handle(
            &service,
            &HostIdentityRule::Off,
            None,
            ApiRequest {
                method: "POST",
                path: "/v1/hosts/host-a/check",
                body: black_box(body),
            },
        ))
    };
    // host-a takes the group; every later check is the steady state.
    assert_eq!(check().status, 200);

    let mut group = c.benchmark_group("host_check");
    group.bench_function("without_metrics", |b| {
        metrics::with_local_recorder(&metrics::NoopRecorder, || b.iter(check))
    });
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(tenure::metrics::NAMESPACE)
        .with_dimension(tenure::metrics::FUNCTION_DIMENSION, "lease-check")
        .init()
        .unwrap();
    group.bench_function("with_emf_metrics_and_flush", |b| {
        b.iter(|| {
            let answer = check();
            let mut documents = Vec::with_capacity(1024);
            collector.flush(&mut documents).unwrap();
            std::io::sink().write_all(black_box(&documents)).unwrap();
            answer
        })
    });
    group.finish();
}

use std::io::Write;

criterion_group!(benches, metrics_cost);
criterion_main!(benches);
