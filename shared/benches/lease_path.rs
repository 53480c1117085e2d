//! CPU cost of lease-check's request path, without the network: the pure decisions, decoding
//! the DynamoDB item, encoding the answer. Used to compare release profiles (opt-level "s"
//! against 3, see BENCHMARKS.md) and to catch regressions.

use aws_sdk_dynamodb::types::AttributeValue;
use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use tenure::ids::{GroupId, HostId};
use tenure::lease::protocol::{acquire_decision, answer, renew_decision};
use tenure::lease::record::{LeaseRecord, Member};
use tenure::lease::LeaseConfig;

const T0: u64 = 1_800_000_000_000;

fn record() -> LeaseRecord {
    let members: BTreeMap<HostId, Member> = ["host-a", "host-b", "host-c"]
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut m = Member::new(format!("az-{i}"), 3 - i as u32);
            m.last_seen_ms = T0;
            (HostId::parse(h).unwrap(), m)
        })
        .collect();
    let mut r = LeaseRecord::new_group(GroupId::parse("orders-1").unwrap(), 10_000, members, T0);
    r.holder = Some(HostId::parse("host-a").unwrap());
    r.epoch = tenure::lease::Epoch(7);
    r.expires_at_ms = T0 + 10_000;
    r
}

fn lease_path(c: &mut Criterion) {
    let cfg = LeaseConfig::default();
    let rec = record();
    let a = HostId::parse("host-a").unwrap();
    let b = HostId::parse("host-b").unwrap();
    let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(&rec).unwrap();

    c.bench_function("answer_primary", |bench| {
        bench.iter(|| answer(black_box(&rec), black_box(&a), T0 + 1_000, &cfg))
    });
    c.bench_function("acquire_decision_secondary", |bench| {
        bench.iter(|| acquire_decision(black_box(&rec), black_box(&b), true, T0 + 1_000, &cfg))
    });
    c.bench_function("renew_decision", |bench| {
        bench.iter(|| renew_decision(black_box(&rec), T0 + 1_000, &cfg))
    });
    c.bench_function("decode_item", |bench| {
        bench.iter(|| serde_dynamo::from_item::<_, LeaseRecord>(black_box(item.clone())).unwrap())
    });
    c.bench_function("check_path_cpu", |bench| {
        // Decode the item UpdateItem returns, decide, answer, encode: a check minus the network.
        bench.iter(|| {
            let rec: LeaseRecord = serde_dynamo::from_item(black_box(item.clone())).unwrap();
            let _ = acquire_decision(&rec, &a, true, T0 + 1_000, &cfg);
            serde_json::to_vec(&answer(&rec, &a, T0 + 1_000, &cfg)).unwrap()
        })
    });
}

criterion_group!(benches, lease_path);
criterion_main!(benches);
