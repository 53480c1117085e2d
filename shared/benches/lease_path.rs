//! CPU cost of lease-check's request path, without the network: the pure decisions, decoding
//! the DynamoDB items, encoding the answer. Used to compare release profiles (opt-level "s"
//! against 3, see BENCHMARKS.md) and to catch regressions.

use aws_sdk_dynamodb::types::AttributeValue;
use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use tenure::ids::{GroupId, HostId, Incarnation};
use tenure::lease::host::HostRecord;
use tenure::lease::protocol::{acquire_decision, answer, renew_decision};
use tenure::lease::record::{Epoch, LeaseRecord, Member};
use tenure::lease::LeaseConfig;

const T0: u64 = 1_800_000_000_000;

fn host(id: &str, incarnation: &Incarnation) -> HostRecord {
    let mut h = HostRecord::absent(HostId::parse(id).unwrap());
    h.epoch = Epoch(2);
    h.last_seen_ms = T0;
    h.expires_at_ms = T0 + 10_000;
    h.incarnation = Some(incarnation.clone());
    h.version = 9;
    h
}

fn group() -> LeaseRecord {
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
    let mut r = LeaseRecord::new_group(GroupId::parse("orders-1").unwrap(), 10_000, members, T0);
    r.holder = Some(HostId::parse("host-a").unwrap());
    r.holder_host_epoch = Some(Epoch(2));
    r.epoch = Epoch(7);
    r
}

fn lease_path(c: &mut Criterion) {
    let cfg = LeaseConfig::default();
    let inc = Incarnation::parse("i-1").unwrap();
    let rec = group();
    let a = HostId::parse("host-a").unwrap();
    let b = HostId::parse("host-b").unwrap();
    let hosts: BTreeMap<HostId, HostRecord> = ["host-a", "host-b", "host-c"]
        .iter()
        .map(|h| (HostId::parse(h).unwrap(), host(h, &inc)))
        .collect();
    let host_item: HashMap<String, AttributeValue> = serde_dynamo::to_item(&hosts[&a]).unwrap();
    let group_item: HashMap<String, AttributeValue> = serde_dynamo::to_item(&rec).unwrap();

    c.bench_function("answer_primary", |bench| {
        bench.iter(|| {
            answer(
                black_box(&rec),
                &hosts,
                black_box(&a),
                &inc,
                T0 + 1_000,
                &cfg,
            )
        })
    });
    c.bench_function("acquire_decision_secondary", |bench| {
        bench.iter(|| {
            acquire_decision(
                black_box(&rec),
                &hosts,
                black_box(&b),
                &inc,
                T0 + 1_000,
                &cfg,
            )
        })
    });
    c.bench_function("renew_decision", |bench| {
        bench.iter(|| renew_decision(black_box(&hosts[&a]), T0 + 1_000, &cfg))
    });
    c.bench_function("decode_host_item", |bench| {
        bench.iter(|| {
            serde_dynamo::from_item::<_, HostRecord>(black_box(host_item.clone())).unwrap()
        })
    });
    c.bench_function("decode_group_item", |bench| {
        bench.iter(|| {
            serde_dynamo::from_item::<_, LeaseRecord>(black_box(group_item.clone())).unwrap()
        })
    });
    c.bench_function("check_path_cpu", |bench| {
        // Decode the host item a heartbeat returns, decide, answer one group, encode: a v1
        // group check minus the network.
        bench.iter(|| {
            let me: HostRecord = serde_dynamo::from_item(black_box(host_item.clone())).unwrap();
            let rec: LeaseRecord = serde_dynamo::from_item(black_box(group_item.clone())).unwrap();
            let hosts = BTreeMap::from([(me.host_id.clone(), me)]);
            let _ = acquire_decision(&rec, &hosts, &a, &inc, T0 + 1_000, &cfg);
            serde_json::to_vec(&answer(&rec, &hosts, &a, &inc, T0 + 1_000, &cfg)).unwrap()
        })
    });
}

criterion_group!(benches, lease_path);
criterion_main!(benches);
