use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const T0: Millis = 1_700_000_000_000;

fn cfg() -> LeaseConfig {
    LeaseConfig::default()
}

fn host(id: &str) -> HostId {
    HostId::parse(id).unwrap()
}

/// Group `g` with hosts a, b, c (priorities 3, 2, 1), all heard from at `T0`.
fn group() -> LeaseRecord {
    let mut members = BTreeMap::new();
    for (id, az, priority) in [("a", "az-a", 3), ("b", "az-b", 2), ("c", "az-c", 1)] {
        let mut m = Member::new(az, priority);
        m.last_seen_ms = T0;
        members.insert(host(id), m);
    }
    LeaseRecord::new_group(GroupId::parse("g").unwrap(), 10_000, members, T0)
}

fn plan(d: AcquireDecision) -> AcquirePlan {
    match d {
        AcquireDecision::Attempt(plan) => plan,
        AcquireDecision::Wait(w) => panic!("expected an attempt, got {w:?}"),
    }
}

/// `host` acquires at `now` (asserting the decision and the condition agree).
fn acquire(record: &LeaseRecord, id: &str, now: Millis) -> LeaseRecord {
    let p = plan(acquire_decision(record, &host(id), true, now, &cfg()));
    assert!(p.condition_holds(record), "condition refused {p:?}");
    p.apply(record)
}

fn heartbeat(record: &LeaseRecord, id: &str, now: Millis) -> LeaseRecord {
    Heartbeat {
        host: host(id),
        healthy: true,
        now,
    }
    .apply(record)
}

#[test]
fn first_check_on_a_new_group_acquires_epoch_1() {
    let held = acquire(&group(), "a", T0);
    assert_eq!(held.holder, Some(host("a")));
    assert_eq!(held.epoch, Epoch(1));
    assert_eq!(held.expires_at_ms, T0 + 10_000);
    let ans = answer(&held, &host("a"), T0, &cfg());
    assert_eq!(ans.role, Role::Primary);
    assert!(ans.writable);
    assert_eq!(ans.valid_for_ms, 10_000 - 200);
    assert_eq!(ans.poll_after_ms, 500);
}

#[test]
fn steady_holder_is_renewed_and_stays_primary() {
    let mut rec = acquire(&group(), "a", T0);
    for step in 1..=20u64 {
        let now = T0 + step * 2_000;
        rec = heartbeat(&rec, "a", now - 300);
        match renew_decision(&rec, now, &cfg()) {
            RenewDecision::Renew(p) => {
                assert!(p.condition_holds(&rec));
                assert_eq!(p.new_expires_at_ms, now - 300 + 10_000);
                rec = p.apply(&rec);
            }
            other => panic!("step {step}: {other:?}"),
        }
        let ans = answer(&rec, &host("a"), now, &cfg());
        assert!(ans.writable, "step {step}");
        assert_eq!(ans.epoch, Epoch(1));
        assert_eq!(
            acquire_decision(&rec, &host("b"), true, now, &cfg()),
            AcquireDecision::Wait(Wait::HeldByOther {
                holder: host("a"),
                acquirable_at_ms: rec.expires_at_ms + 201
            })
        );
    }
}

#[test]
fn lapsed_lease_is_taken_over_with_a_higher_epoch() {
    let held = acquire(&group(), "a", T0);
    // a goes silent; b keeps heartbeating; a's lease lapses at T0 + 10s.
    let now = T0 + 10_000 + 200 + 1 + 3_000;
    let rec = heartbeat(&held, "b", now);
    let taken = acquire(&rec, "b", now);
    assert_eq!(taken.holder, Some(host("b")));
    assert_eq!(taken.epoch, Epoch(2));
    assert_eq!(answer(&taken, &host("a"), now, &cfg()).valid_for_ms, 0);
    assert!(answer(&taken, &host("b"), now, &cfg()).writable);
}

#[test]
fn contender_one_ms_before_expiry_plus_skew_is_refused() {
    let held = acquire(&group(), "a", T0);
    let expires = held.expires_at_ms;
    let boundary = expires + cfg().clock_skew_ms;
    for now in [boundary - 1, boundary] {
        assert!(matches!(
            acquire_decision(&held, &host("b"), true, now, &cfg()),
            AcquireDecision::Wait(Wait::HeldByOther { .. })
        ));
        // The store's condition refuses it too, even if a contender skipped the decision.
        let forced = AcquirePlan {
            host: host("b"),
            healthy: true,
            seen_epoch: held.epoch,
            now,
            not_after_ms: now - cfg().clock_skew_ms,
            new_expires_at_ms: now + 10_000,
        };
        assert!(
            !forced.condition_holds(&held),
            "now = boundary - {}",
            boundary - now
        );
    }
}

#[test]
fn contender_one_ms_after_expiry_plus_skew_wins() {
    let held = acquire(&group(), "a", T0);
    // Make a stale so that b (priority 2) is the best live candidate.
    let mut rec = held.clone();
    rec.members.get_mut(&host("a")).unwrap().last_seen_ms = T0 - 60_000;
    let now = rec.expires_at_ms + cfg().clock_skew_ms + 1;
    let rec = heartbeat(&rec, "b", now);
    let taken = acquire(&rec, "b", now);
    assert_eq!((taken.holder, taken.epoch), (Some(host("b")), Epoch(2)));
}

#[test]
fn holder_window_closes_before_any_contender_window_opens() {
    let held = acquire(&group(), "a", T0);
    let skew = cfg().clock_skew_ms;
    let last_writable = T0 + answer(&held, &host("a"), T0, &cfg()).valid_for_ms - 1;
    let first_acquirable = acquirable_at_ms(&held, &cfg());
    // Even with a's clock slow by skew and b's fast by skew, the windows stay apart.
    assert!(last_writable + skew < first_acquirable - skew);
}

#[test]
fn release_then_immediate_acquire() {
    let held = acquire(&group(), "a", T0);
    let now = T0 + 1_000;
    let release = ReleasePlan {
        host: host("a"),
        epoch: Epoch(1),
        now,
    };
    assert!(release.condition_holds(&held));
    let free = release.apply(&held);
    assert_eq!(free.holder, None);
    assert_eq!(
        free.epoch,
        Epoch(1),
        "release never resets the fencing token"
    );
    // a released and is draining its way out; b (next best) takes over in the same millisecond.
    let mut free = free;
    free.members.get_mut(&host("a")).unwrap().draining = true;
    let taken = acquire(&free, "b", now);
    assert_eq!((taken.holder, taken.epoch), (Some(host("b")), Epoch(2)));
}

#[test]
fn release_with_a_stale_epoch_or_by_a_non_holder_is_refused() {
    let held = acquire(&group(), "a", T0);
    let now = T0 + 1;
    assert!(!ReleasePlan {
        host: host("a"),
        epoch: Epoch(0),
        now
    }
    .condition_holds(&held));
    assert!(!ReleasePlan {
        host: host("b"),
        epoch: Epoch(1),
        now
    }
    .condition_holds(&held));
}

#[test]
fn highest_priority_live_member_is_best() {
    let rec = group();
    assert_eq!(
        best_candidate(&rec, &host("c"), true, T0, &cfg()),
        Some(&host("a"))
    );
    // a silent for longer than heartbeat_timeout: b is best.
    let later = T0 + cfg().heartbeat_timeout_ms + 1;
    let rec = heartbeat(&heartbeat(&rec, "b", later), "c", later);
    assert_eq!(
        best_candidate(&rec, &host("c"), true, later, &cfg()),
        Some(&host("b"))
    );
    // b unhealthy: c.
    let mut rec = rec;
    rec.members.get_mut(&host("b")).unwrap().healthy = false;
    assert_eq!(
        best_candidate(&rec, &host("c"), true, later, &cfg()),
        Some(&host("c"))
    );
}

#[test]
fn equal_priorities_break_ties_by_host_id() {
    let mut rec = group();
    for m in rec.members.values_mut() {
        m.priority = 1;
    }
    assert_eq!(
        best_candidate(&rec, &host("c"), true, T0, &cfg()),
        Some(&host("a"))
    );
}

#[test]
fn lower_priority_candidate_waits_one_extra_heartbeat_timeout() {
    let held = acquire(&group(), "a", T0);
    let mut rec = held;
    rec.holder = Some(host("gone"));
    rec.members.insert(host("gone"), Member::new("az-x", 9));
    // a (best, live) has not taken over yet; c must give it heartbeat_timeout first.
    let open = acquirable_at_ms(&rec, &cfg());
    let rec = heartbeat(&rec, "a", open);
    let until = open + cfg().heartbeat_timeout_ms;
    assert_eq!(
        acquire_decision(&rec, &host("c"), true, until - 1, &cfg()),
        AcquireDecision::Wait(Wait::BetterCandidate {
            best: host("a"),
            until_ms: until
        })
    );
    let p = plan(acquire_decision(&rec, &host("c"), true, until, &cfg()));
    assert!(p.condition_holds(&rec));
    // The best candidate itself does not wait.
    assert!(matches!(
        acquire_decision(&rec, &host("a"), true, open, &cfg()),
        AcquireDecision::Attempt(_)
    ));
}

#[test]
fn live_previous_holder_reacquires_first_after_a_renewer_outage() {
    // a holds with priority 1 (lowest); the renewer is down, so the lease lapses while a is live.
    let mut rec = group();
    rec.members.get_mut(&host("a")).unwrap().priority = 0;
    let rec = acquire(&rec, "a", T0);
    let now = rec.expires_at_ms + cfg().clock_skew_ms + 1;
    let rec = heartbeat(&heartbeat(&rec, "a", now - 100), "b", now - 100);
    assert!(matches!(
        acquire_decision(&rec, &host("b"), true, now, &cfg()),
        AcquireDecision::Wait(Wait::BetterCandidate { .. })
    ));
    let again = acquire(&rec, "a", now);
    assert_eq!((again.holder, again.epoch), (Some(host("a")), Epoch(2)));
}

#[test]
fn unhealthy_draining_and_non_members_do_not_acquire() {
    let rec = group();
    assert_eq!(
        acquire_decision(&rec, &host("a"), false, T0, &cfg()),
        AcquireDecision::Wait(Wait::Unhealthy)
    );
    assert_eq!(
        acquire_decision(&rec, &host("zz"), true, T0, &cfg()),
        AcquireDecision::Wait(Wait::NotMember)
    );
    let mut draining = rec;
    draining.members.get_mut(&host("a")).unwrap().draining = true;
    assert_eq!(
        acquire_decision(&draining, &host("a"), true, T0, &cfg()),
        AcquireDecision::Wait(Wait::Draining)
    );
}

#[test]
fn two_contenders_on_the_same_read_cannot_both_win() {
    let held = acquire(&group(), "a", T0);
    let now = held.expires_at_ms + cfg().clock_skew_ms + cfg().heartbeat_timeout_ms + 1;
    let rec = heartbeat(&heartbeat(&held, "b", now), "c", now);
    let pb = plan(acquire_decision(&rec, &host("b"), true, now, &cfg()));
    let pc = plan(acquire_decision(&rec, &host("c"), true, now, &cfg()));
    let after_b = pb.apply(&rec);
    assert!(
        !pc.condition_holds(&after_b),
        "the epoch condition serialises contenders"
    );
}

#[test]
fn renew_with_a_stale_epoch_is_refused() {
    let held = acquire(&group(), "a", T0);
    let now = T0 + 2_000;
    let rec = heartbeat(&held, "a", now);
    let RenewDecision::Renew(p) = renew_decision(&rec, now, &cfg()) else {
        panic!("expected a renewal");
    };
    // Meanwhile the lease lapsed and a re-acquired with epoch 2.
    let mut reacquired = rec.clone();
    reacquired.epoch = Epoch(2);
    assert!(!p.condition_holds(&reacquired));
    // Or another host took over.
    let mut other = rec;
    other.holder = Some(host("b"));
    assert!(!p.condition_holds(&other));
}

#[test]
fn renewer_skips_stale_unhealthy_draining_and_free_leases() {
    let held = acquire(&group(), "a", T0);
    let c = cfg();
    assert_eq!(
        renew_decision(&held, T0 + c.heartbeat_timeout_ms + 1, &c),
        RenewDecision::Skip(RenewSkip::Stale)
    );
    let mut unhealthy = held.clone();
    unhealthy.members.get_mut(&host("a")).unwrap().healthy = false;
    assert_eq!(
        renew_decision(&unhealthy, T0, &c),
        RenewDecision::Skip(RenewSkip::Unhealthy)
    );
    let mut draining = held.clone();
    draining.members.get_mut(&host("a")).unwrap().draining = true;
    assert_eq!(
        renew_decision(&draining, T0, &c),
        RenewDecision::Skip(RenewSkip::Draining)
    );
    assert_eq!(
        renew_decision(&group(), T0, &c),
        RenewDecision::Skip(RenewSkip::NoHolder)
    );
    // No heartbeat since the acquisition: last_seen + lease == expires_at, nothing to extend.
    assert_eq!(
        renew_decision(&held, T0 + 1, &c),
        RenewDecision::Skip(RenewSkip::NotForward)
    );
}

#[test]
fn renewal_never_shrinks_a_granted_lease() {
    let held = acquire(&group(), "a", T0);
    let p = RenewPlan {
        holder: host("a"),
        epoch: Epoch(1),
        new_expires_at_ms: held.expires_at_ms - 1,
        now: T0,
    };
    assert!(!p.condition_holds(&held));
}

#[test]
fn secondary_is_told_to_poll_when_the_lease_can_first_be_taken() {
    let held = acquire(&group(), "a", T0);
    let open = acquirable_at_ms(&held, &cfg());
    // a is the best candidate (live previous holder), so b's chance is open + heartbeat_timeout.
    let held = heartbeat(&held, "a", open - 200);
    let b = answer(&held, &host("b"), open - 100, &cfg());
    assert_eq!(b.role, Role::Secondary);
    assert_eq!(b.poll_after_ms, 500);
    let mut silent = held.clone();
    silent.members.get_mut(&host("a")).unwrap().last_seen_ms = 0;
    let b = answer(&silent, &host("b"), open - 100, &cfg());
    assert_eq!(b.poll_after_ms, 100, "b is best once a is silent");
    assert_eq!(answer(&silent, &host("b"), T0, &cfg()).poll_after_ms, 500);
}

#[test]
fn secondaries_poll_fast_while_the_holder_is_draining() {
    let mut held = acquire(&group(), "a", T0);
    assert_eq!(answer(&held, &host("b"), T0 + 1, &cfg()).poll_after_ms, 500);
    held.members.get_mut(&host("a")).unwrap().draining = true;
    assert_eq!(answer(&held, &host("b"), T0 + 1, &cfg()).poll_after_ms, 50);
    // The draining holder itself keeps its normal pace (it releases at its next poll).
    assert_eq!(answer(&held, &host("a"), T0 + 1, &cfg()).poll_after_ms, 500);
}

#[test]
fn answer_reports_draining_and_holder() {
    let mut held = acquire(&group(), "a", T0);
    held.members.get_mut(&host("a")).unwrap().draining = true;
    let ans = answer(&held, &host("a"), T0 + 1, &cfg());
    assert!(ans.draining);
    assert_eq!(ans.holder, Some(host("a")));
    let json = serde_json::to_value(&ans).unwrap();
    assert_eq!(json["role"], "primary");
    assert_eq!(json["epoch"], 1);
}

/// One step of a random single-clock history.
#[derive(Debug, Clone)]
enum Step {
    Advance(Millis),
    Check {
        host: usize,
        heartbeat: bool,
        healthy: bool,
    },
    Renew,
    Release {
        host: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u64..4_000).prop_map(Step::Advance),
        (0usize..3, any::<bool>(), prop::bool::weighted(0.9)).prop_map(
            |(host, heartbeat, healthy)| Step::Check {
                host,
                heartbeat,
                healthy
            }
        ),
        Just(Step::Renew),
        (0usize..3).prop_map(|host| Step::Release { host }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    // Invariant: over any history, the epoch never decreases, rises by exactly 1 per
    // acquisition, and no two hosts' granted writable windows overlap.
    #[test]
    fn epochs_never_decrease_and_windows_never_overlap(steps in prop::collection::vec(step(), 1..80)) {
        let hosts = [host("a"), host("b"), host("c")];
        let c = cfg();
        let mut rec = group();
        let mut now = T0;
        // Per host: the end (exclusive) of the last writable window it was granted.
        let mut granted: Vec<(usize, Millis, Millis)> = Vec::new();
        for s in steps {
            let before = rec.epoch;
            match s {
                Step::Advance(by) => now += by,
                Step::Check { host: i, heartbeat: hb, healthy } => {
                    if hb {
                        rec = Heartbeat { host: hosts[i].clone(), healthy, now }.apply(&rec);
                    }
                    if let AcquireDecision::Attempt(p) = acquire_decision(&rec, &hosts[i], healthy, now, &c) {
                        if p.condition_holds(&rec) {
                            rec = p.apply(&rec);
                            prop_assert_eq!(rec.epoch, before.next());
                        }
                    }
                    let ans = answer(&rec, &hosts[i], now, &c);
                    if ans.writable {
                        granted.push((i, now, now + ans.valid_for_ms));
                    }
                }
                Step::Renew => {
                    if let RenewDecision::Renew(p) = renew_decision(&rec, now, &c) {
                        prop_assert!(p.condition_holds(&rec));
                        let old = rec.expires_at_ms;
                        rec = p.apply(&rec);
                        prop_assert!(rec.expires_at_ms > old);
                    }
                }
                Step::Release { host: i } => {
                    let p = ReleasePlan { host: hosts[i].clone(), epoch: rec.epoch, now };
                    if p.condition_holds(&rec) {
                        // The host closes its gate before it releases.
                        for w in granted.iter_mut().filter(|w| w.0 == i) {
                            w.2 = w.2.min(now);
                        }
                        rec = p.apply(&rec);
                    }
                }
            }
            prop_assert!(rec.epoch >= before);
        }
        for (n, a) in granted.iter().enumerate() {
            for b in &granted[n + 1..] {
                if a.0 != b.0 {
                    prop_assert!(a.2 <= b.1 || b.2 <= a.1, "overlap {:?} {:?}", a, b);
                }
            }
        }
    }
}
