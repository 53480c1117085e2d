//! 1,000 random interleavings of check / renew / release from three hosts against MiniStack,
//! with a fake clock driving `now`. Invariants, checked over every interleaving:
//! - the epoch never decreases and rises by exactly 1 per acquisition;
//! - no two hosts are ever granted overlapping writable windows (the `valid_for_ms` windows
//!   the answers grant, cut short where a host released).

mod support;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use support::*;
use tenure::clock::{Clock, FakeClock};
use tenure::lease::protocol::{renew_decision, RenewDecision};
use tenure::lease::record::Epoch;
use tenure::lease::service::{CheckRequest, LeaseService};
use tenure::lease::store::LeaseStore;
use tenure::lease::{CheckAnswer, LeaseConfig};

const T0: u64 = 1_800_000_000_000;
const INTERLEAVINGS: u64 = 1_000;
const STEPS: usize = 12;
const HOSTS: [&str; 3] = ["a", "b", "c"];

/// A granted writable window: host index, [start, end) on the fake clock.
type Window = (usize, u64, u64);

#[derive(Default)]
struct Totals {
    acquisitions: AtomicU64,
    takeovers: AtomicU64,
    releases: AtomicU64,
    renewals: AtomicU64,
}

struct Run {
    service: LeaseService<FakeClock>,
    clock: FakeClock,
    gid: tenure::ids::GroupId,
    windows: Vec<Window>,
    last_answer: [Option<CheckAnswer>; 3],
}

impl Run {
    async fn check(&mut self, i: usize, heartbeat: bool, healthy: bool) {
        let req = CheckRequest {
            host: host(HOSTS[i]),
            healthy,
            heartbeat,
        };
        let answer = self.service.check(&self.gid, &req).await.expect("check");
        self.observe(i, answer);
    }

    fn observe(&mut self, i: usize, answer: CheckAnswer) {
        let now = self.clock.now_ms();
        if answer.writable {
            self.windows.push((i, now, now + answer.valid_for_ms));
        }
        self.last_answer[i] = Some(answer);
    }
}

async fn renew(
    store: &LeaseStore,
    gid: &tenure::ids::GroupId,
    cfg: &LeaseConfig,
    now: u64,
) -> bool {
    let record = store.read(gid).await.expect("read").expect("group");
    match renew_decision(&record, now, cfg) {
        RenewDecision::Renew(plan) => matches!(
            store.renew(gid, &plan).await.expect("renew"),
            tenure::lease::store::RenewOutcome::Renewed { .. }
        ),
        RenewDecision::Skip(_) => false,
    }
}

async fn interleaving(seed: u64, store: LeaseStore, cfg: LeaseConfig, totals: &Totals) {
    let mut rng = StdRng::seed_from_u64(seed);
    let gid = format!("il-{seed}");
    store
        .create_group(&new_group(&gid, &HOSTS, cfg.lease_ms, T0))
        .await
        .expect("create group");
    let clock = FakeClock::at(T0);
    let mut run = Run {
        service: LeaseService::new(store.clone(), cfg, clock.clone()),
        clock: clock.clone(),
        gid: group_id(&gid),
        windows: Vec::new(),
        last_answer: [None, None, None],
    };
    let mut epoch = Epoch(0);
    let mut holder = None;
    let mut trace = Vec::new();
    for _ in 0..STEPS {
        let i = rng.random_range(0..3);
        let step = rng.random_range(0..100);
        let healthy = rng.random_bool(0.9);
        let heartbeat = rng.random_bool(0.6);
        match step {
            0..=24 => {
                let by = rng.random_range(0..1_500);
                clock.advance(by);
                trace.push(format!("advance {by}"));
            }
            25..=54 => {
                run.check(i, heartbeat, healthy).await;
                trace.push(format!("check {} hb={heartbeat} ok={healthy}", HOSTS[i]));
            }
            55..=69 => {
                // Two hosts check at the same instant: a real race on the item.
                let j = (i + 1 + rng.random_range(0..2)) % 3;
                let (ri, rj) = (
                    CheckRequest {
                        host: host(HOSTS[i]),
                        healthy,
                        heartbeat,
                    },
                    CheckRequest {
                        host: host(HOSTS[j]),
                        healthy: true,
                        heartbeat: !heartbeat,
                    },
                );
                let (ai, aj) = tokio::join!(
                    run.service.check(&run.gid, &ri),
                    run.service.check(&run.gid, &rj)
                );
                run.observe(i, ai.expect("check"));
                run.observe(j, aj.expect("check"));
                trace.push(format!("race {} {}", HOSTS[i], HOSTS[j]));
            }
            70..=84 => {
                // The renewer racing a check.
                let req = CheckRequest {
                    host: host(HOSTS[i]),
                    healthy,
                    heartbeat,
                };
                let now = clock.now_ms();
                let (renewed, answer) = tokio::join!(
                    renew(&store, &run.gid, &cfg, now),
                    run.service.check(&run.gid, &req)
                );
                run.observe(i, answer.expect("check"));
                if renewed {
                    totals.renewals.fetch_add(1, Ordering::Relaxed);
                }
                trace.push(format!("renew+check {}", HOSTS[i]));
            }
            _ => {
                // Step-down with the epoch of the host's last answer (maybe stale).
                let Some(last) = run.last_answer[i].clone() else {
                    continue;
                };
                let now = clock.now_ms();
                if let Ok(answer) = run
                    .service
                    .release(&run.gid, &host(HOSTS[i]), last.epoch)
                    .await
                {
                    // The host closed its gate before releasing: its windows end here.
                    for w in run.windows.iter_mut().filter(|w| w.0 == i) {
                        w.2 = w.2.min(now);
                    }
                    totals.releases.fetch_add(1, Ordering::Relaxed);
                    run.last_answer[i] = Some(answer);
                }
                trace.push(format!("release {} e{}", HOSTS[i], last.epoch));
            }
        }
        let record = store.read(&run.gid).await.expect("read").expect("group");
        assert!(
            record.epoch == epoch || record.epoch == epoch.next(),
            "seed {seed}: epoch went {epoch} -> {} after {trace:?}",
            record.epoch
        );
        if record.epoch != epoch {
            totals.acquisitions.fetch_add(1, Ordering::Relaxed);
            if holder.is_some() && holder != record.holder {
                totals.takeovers.fetch_add(1, Ordering::Relaxed);
            }
        } else if record.holder.is_some() {
            assert_eq!(
                record.holder, holder,
                "seed {seed}: holder changed without a new epoch after {trace:?}"
            );
        }
        epoch = record.epoch;
        holder = record.holder.clone().or(holder);
    }
    for (n, a) in run.windows.iter().enumerate() {
        for b in &run.windows[n + 1..] {
            assert!(
                a.0 == b.0 || a.2 <= b.1 || b.2 <= a.1,
                "seed {seed}: overlapping writable windows {a:?} {b:?} after {trace:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_interleavings_never_grant_overlapping_windows() {
    let client = dynamodb(None).await;
    let table = create_table(&client, "group_id").await;
    let store = LeaseStore::new(client.clone(), table.clone());
    // A 2 s lease so that lapses and takeovers are common within a dozen steps.
    let cfg = LeaseConfig::new(2_000, 500, 100, 600, 200).unwrap();
    let totals = Totals::default();
    futures::stream::iter(0..INTERLEAVINGS)
        .map(|seed| interleaving(seed, store.clone(), cfg, &totals))
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let (acq, take, rel, ren) = (
        totals.acquisitions.load(Ordering::Relaxed),
        totals.takeovers.load(Ordering::Relaxed),
        totals.releases.load(Ordering::Relaxed),
        totals.renewals.load(Ordering::Relaxed),
    );
    eprintln!("{INTERLEAVINGS} interleavings: {acq} acquisitions, {take} takeovers, {rel} releases, {ren} renewals");
    // The histories must actually exercise the protocol, or the invariants prove nothing.
    assert!(acq >= INTERLEAVINGS, "too few acquisitions: {acq}");
    assert!(take >= 50, "too few takeovers: {take}");
    assert!(rel >= 50, "too few releases: {rel}");
    assert!(ren >= 50, "too few renewals: {ren}");
    drop_table(&client, &table).await;
}
