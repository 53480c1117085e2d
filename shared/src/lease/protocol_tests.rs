use super::*;
use crate::lease::store::{BlindDeletePlan, DeleteExpect, DeletePlan};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Fixtures. Every test runs on `LeaseConfig::default()`: lease 10000, renew 2000, skew 200,
// heartbeat_timeout 3000, poll 500 (checked by the first test).
// ---------------------------------------------------------------------------------------------

/// The function clock of most tests.
const NOW: Millis = 100_000;
/// When the fixture groups were created: long enough before `NOW` that no candidate still
/// waits for a better one because of it.
const CREATED: Millis = 10_000;
/// The epoch every `live` host is at, and the grants `held_by` records.
const HOST_EPOCH: Epoch = Epoch(3);
/// The fencing epoch of every held fixture group.
const GROUP_EPOCH: Epoch = Epoch(7);

fn timing() -> LeaseConfig {
    LeaseConfig::default()
}

fn hid(raw: &str) -> HostId {
    HostId::parse(raw).unwrap()
}

fn gid(raw: &str) -> GroupId {
    GroupId::parse(raw).unwrap()
}

fn inc(raw: &str) -> Incarnation {
    Incarnation::parse(raw).unwrap()
}

/// `value` changed by `change`.
fn tweak<T>(mut value: T, change: impl FnOnce(&mut T)) -> T {
    change(&mut value);
    value
}

/// A host record with only its lease expiry set (everything else as never seen).
fn expiring(id: &str, expires_at_ms: Millis) -> HostRecord {
    tweak(HostRecord::absent(hid(id)), |h| {
        h.expires_at_ms = expires_at_ms
    })
}

/// A host that is an eligible candidate at `NOW`: epoch `HOST_EPOCH` (revoked long ago and
/// seen since), incarnation `i1`, healthy, heard from at `NOW - 100`, lease until `NOW + 8000`
/// (so its window at `NOW` is 7800 and the next renewal moves it to `NOW + 9900`).
fn live(id: &str) -> HostRecord {
    tweak(HostRecord::absent(hid(id)), |h| {
        h.epoch = HOST_EPOCH;
        h.revoked_at_ms = 50_000;
        h.last_seen_ms = NOW - 100;
        h.expires_at_ms = NOW + 8_000;
        h.healthy = true;
        h.incarnation = Some(inc("i1"));
        h.updated_at_ms = NOW - 100;
        h.version = 10;
    })
}

/// A free group `g1` created at `created`, with members of the given priorities.
fn group_created_at(members: &[(&str, u32)], created: Millis) -> LeaseRecord {
    let members = members
        .iter()
        .map(|&(h, priority)| (hid(h), Member::new(format!("az-{h}"), priority)))
        .collect();
    LeaseRecord::new_group(gid("g1"), 10_000, members, created)
}

fn group_of(members: &[(&str, u32)]) -> LeaseRecord {
    group_created_at(members, CREATED)
}

/// `group` granted to `holder` at its host epoch `host_epoch`, at group epoch `GROUP_EPOCH`.
fn held_by(group: LeaseRecord, holder: &str, host_epoch: Epoch) -> LeaseRecord {
    tweak(group, |g| {
        g.holder = Some(hid(holder));
        g.holder_host_epoch = Some(host_epoch);
        g.epoch = GROUP_EPOCH;
    })
}

/// `group` held under v1 by `holder` (no `holder_host_epoch`), its v1 lease ending at
/// `expires_at_ms`.
fn v1_held_by(group: LeaseRecord, holder: &str, expires_at_ms: Millis) -> LeaseRecord {
    tweak(group, |g| {
        g.holder = Some(hid(holder));
        g.holder_host_epoch = None;
        g.expires_at_ms = expires_at_ms;
        g.epoch = GROUP_EPOCH;
    })
}

fn member_mut<'a>(group: &'a mut LeaseRecord, host: &str) -> &'a mut Member {
    group.members.get_mut(&hid(host)).unwrap()
}

fn hosts_of(records: impl IntoIterator<Item = HostRecord>) -> BTreeMap<HostId, HostRecord> {
    records
        .into_iter()
        .map(|h| (h.host_id.clone(), h))
        .collect()
}

fn unhealthy(id: &str) -> HostRecord {
    tweak(live(id), |h| h.healthy = false)
}

#[test]
fn the_default_timing_is_the_one_these_tests_assume() {
    let c = timing();
    assert_eq!(
        (
            c.lease_ms,
            c.renew_interval_ms,
            c.clock_skew_ms,
            c.heartbeat_timeout_ms,
            c.poll_interval_ms
        ),
        (10_000, 2_000, 200, 3_000, 500)
    );
}

// ---------------------------------------------------------------------------------------------
// The holder's window and the contender's revocation, at the skew boundaries.
// ---------------------------------------------------------------------------------------------

#[test]
fn holder_window_is_expiry_minus_skew_minus_now() {
    let h = expiring("h1", 10_000);
    assert_eq!(host_valid_for_ms(&h, 0, &timing()), 9_800);
    assert_eq!(host_valid_for_ms(&h, 9_000, &timing()), 800);
}

#[test]
fn holder_one_ms_before_expiry_minus_skew_has_one_ms_left() {
    let h = expiring("h1", 10_000);
    assert_eq!(host_valid_for_ms(&h, 9_799, &timing()), 1);
}

#[test]
fn holder_window_closes_exactly_at_expiry_minus_skew_and_never_goes_negative() {
    let h = expiring("h1", 10_000);
    assert_eq!(host_valid_for_ms(&h, 9_800, &timing()), 0);
    assert_eq!(host_valid_for_ms(&h, 10_000, &timing()), 0);
    assert_eq!(host_valid_for_ms(&h, 10_201, &timing()), 0);
    assert_eq!(host_valid_for_ms(&h, Millis::MAX, &timing()), 0);
}

#[test]
fn contender_at_or_before_expiry_cannot_revoke() {
    let h = expiring("h1", 10_000);
    for now in [0, 9_799, 9_800, 10_000] {
        assert!(!is_revocable(&h, now, &timing()), "revocable at {now}");
    }
}

#[test]
fn contender_one_ms_before_expiry_plus_skew_cannot_revoke() {
    let h = expiring("h1", 10_000);
    assert!(!is_revocable(&h, 10_199, &timing()));
}

#[test]
fn contender_exactly_at_expiry_plus_skew_cannot_revoke() {
    let h = expiring("h1", 10_000);
    assert!(!is_revocable(&h, 10_200, &timing()));
}

#[test]
fn contender_one_ms_after_expiry_plus_skew_can_revoke() {
    let h = expiring("h1", 10_000);
    assert!(is_revocable(&h, 10_201, &timing()));
    assert!(is_revocable(&h, 1_000_000, &timing()));
}

#[test]
fn revocable_at_ms_is_the_first_millisecond_a_contender_may_revoke() {
    let h = expiring("h1", 10_000);
    let at = revocable_at_ms(&h, &timing());
    assert_eq!(at, 10_201);
    assert!(!is_revocable(&h, at - 1, &timing()));
    assert!(is_revocable(&h, at, &timing()));
}

#[test]
fn holder_window_closes_more_than_two_skews_before_any_contender_may_revoke() {
    let h = expiring("h1", 10_000);
    let c = timing();
    let last_writable_ms = 9_799;
    assert!(host_valid_for_ms(&h, last_writable_ms, &c) > 0);
    assert_eq!(host_valid_for_ms(&h, last_writable_ms + 1, &c), 0);
    assert_eq!(
        revocable_at_ms(&h, &c) - last_writable_ms,
        2 * c.clock_skew_ms + 2
    );
    // A contender whose clock runs a whole skew ahead of the holder's (or even two) still
    // cannot revoke at the holder's last writable millisecond.
    assert!(!is_revocable(&h, last_writable_ms + c.clock_skew_ms, &c));
    assert!(!is_revocable(
        &h,
        last_writable_ms + 2 * c.clock_skew_ms,
        &c
    ));
}

#[test]
fn a_host_never_seen_has_no_window_and_early_clocks_do_not_underflow() {
    let h = HostRecord::absent(hid("h1"));
    for now in [0, 1, 199, 200] {
        assert_eq!(host_valid_for_ms(&h, now, &timing()), 0);
        assert!(!is_revocable(&h, now, &timing()), "revocable at {now}");
    }
    assert!(is_revocable(&h, 201, &timing()));
    assert_eq!(revocable_at_ms(&h, &timing()), 201);
}

// ---------------------------------------------------------------------------------------------
// grant_state
// ---------------------------------------------------------------------------------------------

#[test]
fn a_group_without_holder_is_free() {
    let g = group_of(&[("h1", 1)]);
    assert_eq!(grant_state(&g, None, NOW, &timing()), GrantState::Free);
    assert_eq!(
        grant_state(&g, Some(&live("h1")), NOW, &timing()),
        GrantState::Free
    );
}

#[test]
fn a_grant_at_the_holders_current_epoch_with_time_left_is_live() {
    let g = held_by(group_of(&[("h1", 1)]), "h1", HOST_EPOCH);
    assert_eq!(
        grant_state(&g, Some(&live("h1")), NOW, &timing()),
        GrantState::Live { holder: hid("h1") }
    );
}

#[test]
fn a_grant_stays_live_until_expiry_plus_skew_then_lapses() {
    let g = held_by(group_of(&[("h1", 1)]), "h1", HOST_EPOCH);
    let at_boundary = tweak(live("h1"), |h| h.expires_at_ms = NOW - 200);
    assert_eq!(
        grant_state(&g, Some(&at_boundary), NOW, &timing()),
        GrantState::Live { holder: hid("h1") }
    );
    let past = tweak(live("h1"), |h| h.expires_at_ms = NOW - 201);
    assert_eq!(
        grant_state(&g, Some(&past), NOW, &timing()),
        GrantState::Lapsed {
            holder: hid("h1"),
            host_epoch: HOST_EPOCH
        }
    );
}

#[test]
fn a_grant_whose_holder_epoch_moved_past_it_is_revoked_even_if_the_host_was_renewed_since() {
    let g = held_by(group_of(&[("h1", 1)]), "h1", HOST_EPOCH);
    let revoked_and_renewed = tweak(live("h1"), |h| {
        h.epoch = HOST_EPOCH.next();
        h.revoked_at_ms = NOW - 500;
    });
    assert_eq!(
        grant_state(&g, Some(&revoked_and_renewed), NOW, &timing()),
        GrantState::Revoked {
            holder: hid("h1"),
            revoked_at_ms: NOW - 500
        }
    );
    let revoked_and_lapsed = tweak(revoked_and_renewed, |h| h.expires_at_ms = NOW - 5_000);
    assert_eq!(
        grant_state(&g, Some(&revoked_and_lapsed), NOW, &timing()),
        GrantState::Revoked {
            holder: hid("h1"),
            revoked_at_ms: NOW - 500
        }
    );
}

#[test]
fn a_holder_with_no_host_item_reads_as_never_seen_and_is_lapsed() {
    let g = held_by(group_of(&[("h1", 1)]), "h1", Epoch(0));
    assert_eq!(
        grant_state(&g, None, NOW, &timing()),
        GrantState::Lapsed {
            holder: hid("h1"),
            host_epoch: Epoch(0)
        }
    );
}

#[test]
fn a_v1_lease_is_held_until_its_own_expiry_plus_skew_whatever_the_host_record() {
    let g = v1_held_by(group_of(&[("h1", 1)]), "h1", NOW - 200);
    let revoked_host = tweak(live("h1"), |h| {
        h.epoch = Epoch(9);
        h.expires_at_ms = 0;
    });
    for holder_host in [None, Some(&revoked_host)] {
        assert_eq!(
            grant_state(&g, holder_host, NOW, &timing()),
            GrantState::V1Held { holder: hid("h1") }
        );
    }
}

#[test]
fn a_v1_lease_past_its_own_expiry_plus_skew_is_v1_lapsed_even_if_the_host_lease_is_live() {
    let g = v1_held_by(group_of(&[("h1", 1)]), "h1", NOW - 201);
    for holder_host in [None, Some(&live("h1"))] {
        assert_eq!(
            grant_state(&g, holder_host, NOW, &timing()),
            GrantState::V1Lapsed { holder: hid("h1") }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// is_writable
// ---------------------------------------------------------------------------------------------

#[test]
fn the_holder_at_its_current_host_epoch_with_its_incarnation_and_time_left_is_writable() {
    let g = held_by(group_of(&[("h1", 1), ("h2", 1)]), "h1", HOST_EPOCH);
    assert!(is_writable(&g, &live("h1"), &inc("i1"), NOW, &timing()));
}

#[test]
fn another_host_is_never_writable_for_a_group_it_does_not_hold() {
    let g = held_by(group_of(&[("h1", 1), ("h2", 1)]), "h1", HOST_EPOCH);
    assert!(!is_writable(&g, &live("h2"), &inc("i1"), NOW, &timing()));
    let free = group_of(&[("h1", 1)]);
    assert!(!is_writable(&free, &live("h1"), &inc("i1"), NOW, &timing()));
}

#[test]
fn a_grant_from_an_older_host_epoch_is_not_writable() {
    let g = held_by(group_of(&[("h1", 1)]), "h1", Epoch(2));
    assert!(!is_writable(&g, &live("h1"), &inc("i1"), NOW, &timing()));
}

#[test]
fn a_v1_grant_is_not_writable_in_v2() {
    let g = v1_held_by(group_of(&[("h1", 1)]), "h1", NOW + 10_000);
    assert!(!is_writable(&g, &live("h1"), &inc("i1"), NOW, &timing()));
}

#[test]
fn another_incarnation_of_the_holder_is_not_writable() {
    let g = held_by(group_of(&[("h1", 1)]), "h1", HOST_EPOCH);
    assert!(!is_writable(&g, &live("h1"), &inc("i2"), NOW, &timing()));
    let none_recorded = tweak(live("h1"), |h| h.incarnation = None);
    assert!(!is_writable(&g, &none_recorded, &inc("i1"), NOW, &timing()));
}

#[test]
fn a_holder_with_an_incarnation_change_pending_is_not_writable() {
    let g = held_by(group_of(&[("h1", 1)]), "h1", HOST_EPOCH);
    let changed = tweak(live("h1"), |h| h.incarnation_changed = Some(NOW - 50));
    assert!(!is_writable(&g, &changed, &inc("i1"), NOW, &timing()));
}

#[test]
fn the_holder_stops_being_writable_exactly_when_its_window_closes() {
    let g = held_by(group_of(&[("h1", 1)]), "h1", HOST_EPOCH);
    let one_ms_left = tweak(live("h1"), |h| h.expires_at_ms = NOW + 201);
    assert!(is_writable(&g, &one_ms_left, &inc("i1"), NOW, &timing()));
    let closed = tweak(live("h1"), |h| h.expires_at_ms = NOW + 200);
    assert!(!is_writable(&g, &closed, &inc("i1"), NOW, &timing()));
}

// ---------------------------------------------------------------------------------------------
// eligibility
// ---------------------------------------------------------------------------------------------

#[test]
fn a_live_healthy_fresh_member_is_eligible() {
    let g = group_of(&[("h1", 1), ("h2", 2)]);
    assert_eq!(eligibility(&g, &live("h1"), NOW, &timing()), Ok(()));
}

#[test]
fn a_host_that_is_not_a_member_is_not_eligible() {
    let g = group_of(&[("h1", 1)]);
    assert_eq!(
        eligibility(&g, &live("h9"), NOW, &timing()),
        Err(Ineligible::NotMember)
    );
    // Not being a member is reported before anything else wrong with the host.
    assert_eq!(
        eligibility(&g, &unhealthy("h9"), NOW, &timing()),
        Err(Ineligible::NotMember)
    );
}

#[test]
fn a_member_being_drained_is_not_eligible() {
    let mut g = group_of(&[("h1", 1), ("h2", 2)]);
    member_mut(&mut g, "h1").draining = true;
    assert_eq!(
        eligibility(&g, &live("h1"), NOW, &timing()),
        Err(Ineligible::Draining)
    );
    assert_eq!(eligibility(&g, &live("h2"), NOW, &timing()), Ok(()));
}

#[test]
fn a_member_on_a_draining_host_is_not_eligible() {
    let g = group_of(&[("h1", 1)]);
    let draining = tweak(live("h1"), |h| h.draining = true);
    assert_eq!(
        eligibility(&g, &draining, NOW, &timing()),
        Err(Ineligible::Draining)
    );
}

#[test]
fn a_releaser_is_recently_released_until_it_checks_in_heartbeat_timeout_after_the_release() {
    let released_at = NOW - 3_000;
    let mut g = group_of(&[("h1", 1)]);
    member_mut(&mut g, "h1").released_at_ms = Some(released_at);
    let seen_just_before = tweak(live("h1"), |h| h.last_seen_ms = released_at + 2_999);
    assert_eq!(
        eligibility(&g, &seen_just_before, NOW, &timing()),
        Err(Ineligible::RecentlyReleased)
    );
    let seen_at = tweak(live("h1"), |h| h.last_seen_ms = released_at + 3_000);
    assert_eq!(eligibility(&g, &seen_at, NOW, &timing()), Ok(()));
}

#[test]
fn an_unhealthy_member_is_not_eligible() {
    let g = group_of(&[("h1", 1)]);
    assert_eq!(
        eligibility(&g, &unhealthy("h1"), NOW, &timing()),
        Err(Ineligible::Unhealthy)
    );
}

#[test]
fn a_member_not_heard_from_within_heartbeat_timeout_is_stale() {
    let g = group_of(&[("h1", 1)]);
    let stale = tweak(live("h1"), |h| h.last_seen_ms = NOW - 3_001);
    assert_eq!(
        eligibility(&g, &stale, NOW, &timing()),
        Err(Ineligible::Stale)
    );
    let just_fresh = tweak(live("h1"), |h| h.last_seen_ms = NOW - 3_000);
    assert_eq!(eligibility(&g, &just_fresh, NOW, &timing()), Ok(()));
}

#[test]
fn a_member_whose_host_lease_window_is_closed_has_no_host_lease() {
    let g = group_of(&[("h1", 1)]);
    let closed = tweak(live("h1"), |h| h.expires_at_ms = NOW + 200);
    assert_eq!(
        eligibility(&g, &closed, NOW, &timing()),
        Err(Ineligible::NoHostLease)
    );
    let one_ms_left = tweak(live("h1"), |h| h.expires_at_ms = NOW + 201);
    assert_eq!(eligibility(&g, &one_ms_left, NOW, &timing()), Ok(()));
}

#[test]
fn a_member_with_an_incarnation_change_pending_has_no_host_lease() {
    let g = group_of(&[("h1", 1)]);
    let changed = tweak(live("h1"), |h| h.incarnation_changed = Some(NOW - 10));
    assert_eq!(
        eligibility(&g, &changed, NOW, &timing()),
        Err(Ineligible::NoHostLease)
    );
}

// ---------------------------------------------------------------------------------------------
// best_candidate
// ---------------------------------------------------------------------------------------------

#[test]
fn the_highest_priority_eligible_member_is_the_best_candidate() {
    let g = group_of(&[("h1", 1), ("h2", 5), ("h3", 3)]);
    let hosts = hosts_of([live("h1"), live("h2"), live("h3")]);
    assert_eq!(best_candidate(&g, &hosts, NOW, &timing()), Some(&hid("h2")));
}

#[test]
fn equal_priorities_go_to_the_smaller_host_id() {
    let g = group_of(&[("h1", 1), ("h2", 5), ("h3", 5)]);
    let hosts = hosts_of([live("h3"), live("h2"), live("h1")]);
    assert_eq!(best_candidate(&g, &hosts, NOW, &timing()), Some(&hid("h2")));
}

#[test]
fn an_ineligible_member_is_passed_over_whatever_its_priority() {
    let g = group_of(&[("h1", 1), ("h2", 5), ("h3", 5)]);
    let hosts = hosts_of([live("h1"), unhealthy("h2"), live("h3")]);
    assert_eq!(best_candidate(&g, &hosts, NOW, &timing()), Some(&hid("h3")));
}

#[test]
fn members_whose_host_record_was_not_read_are_not_candidates() {
    let g = group_of(&[("h1", 1), ("h2", 5)]);
    let hosts = hosts_of([live("h1")]);
    assert_eq!(best_candidate(&g, &hosts, NOW, &timing()), Some(&hid("h1")));
}

#[test]
fn with_no_eligible_member_there_is_no_best_candidate() {
    let g = group_of(&[("h1", 1), ("h2", 5)]);
    let hosts = hosts_of([unhealthy("h1"), unhealthy("h2")]);
    assert_eq!(best_candidate(&g, &hosts, NOW, &timing()), None);
}

#[test]
fn the_previous_holder_comes_first_when_it_is_eligible() {
    let g = held_by(group_of(&[("h1", 1), ("h2", 5)]), "h1", HOST_EPOCH);
    let hosts = hosts_of([live("h1"), live("h2")]);
    assert_eq!(best_candidate(&g, &hosts, NOW, &timing()), Some(&hid("h1")));
}

#[test]
fn an_ineligible_previous_holder_does_not_come_first() {
    let g = held_by(
        group_of(&[("h1", 1), ("h2", 5), ("h3", 3)]),
        "h1",
        HOST_EPOCH,
    );
    let hosts = hosts_of([unhealthy("h1"), live("h2"), live("h3")]);
    assert_eq!(best_candidate(&g, &hosts, NOW, &timing()), Some(&hid("h2")));
}

#[test]
fn a_previous_holder_that_is_no_longer_a_member_does_not_come_first() {
    let g = held_by(group_of(&[("h1", 1), ("h2", 5)]), "h9", HOST_EPOCH);
    let hosts = hosts_of([live("h1"), live("h2"), live("h9")]);
    assert_eq!(best_candidate(&g, &hosts, NOW, &timing()), Some(&hid("h2")));
}

// ---------------------------------------------------------------------------------------------
// acquire_decision
// ---------------------------------------------------------------------------------------------

#[test]
fn a_free_group_is_acquired_by_the_best_candidate_at_once() {
    let g = group_created_at(&[("h1", 10), ("h2", 5)], NOW - 1);
    let hosts = hosts_of([live("h1"), live("h2")]);
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h1"), &inc("i1"), NOW, &timing()),
        Ok(AcquirePlan {
            host: hid("h1"),
            host_epoch: HOST_EPOCH,
            seen_epoch: Epoch(0),
            expect: AcquireExpect::Free,
            now: NOW,
        })
    );
}

#[test]
fn a_lower_candidate_waits_for_the_better_one_until_free_since_plus_heartbeat_timeout() {
    let free_since = NOW - 1_000;
    let g = group_created_at(&[("h1", 10), ("h2", 5)], free_since);
    let hosts = hosts_of([live("h1"), live("h2")]);
    let wait: Result<AcquirePlan, Wait> = Err(Wait::BetterCandidate {
        best: hid("h1"),
        until_ms: free_since + 3_000,
    });
    for now in [NOW, free_since + 2_999] {
        assert_eq!(
            acquire_decision(&g, &hosts, &hid("h2"), &inc("i1"), now, &timing()),
            wait,
            "at {now}"
        );
    }
    assert_eq!(
        acquire_decision(
            &g,
            &hosts,
            &hid("h2"),
            &inc("i1"),
            free_since + 3_000,
            &timing()
        ),
        Ok(AcquirePlan {
            host: hid("h2"),
            host_epoch: HOST_EPOCH,
            seen_epoch: Epoch(0),
            expect: AcquireExpect::Free,
            now: free_since + 3_000,
        })
    );
}

#[test]
fn a_lower_candidate_does_not_wait_for_an_ineligible_better_one() {
    let g = group_created_at(&[("h1", 10), ("h2", 5)], NOW - 1);
    let hosts = hosts_of([unhealthy("h1"), live("h2")]);
    let plan = acquire_decision(&g, &hosts, &hid("h2"), &inc("i1"), NOW, &timing()).unwrap();
    assert_eq!(plan.host, hid("h2"));
    assert_eq!(plan.expect, AcquireExpect::Free);
}

#[test]
fn a_lapsed_holder_must_be_revoked_before_anyone_acquires() {
    let g = held_by(
        group_of(&[("h1", 10), ("h2", 5), ("h3", 1)]),
        "h3",
        HOST_EPOCH,
    );
    let lapsed = tweak(live("h3"), |h| h.expires_at_ms = NOW - 201);
    let hosts = hosts_of([live("h1"), live("h2"), lapsed]);
    for caller in ["h1", "h2"] {
        assert_eq!(
            acquire_decision(&g, &hosts, &hid(caller), &inc("i1"), NOW, &timing()),
            Err(Wait::NeedsRevocation {
                holder: hid("h3"),
                host_epoch: HOST_EPOCH
            })
        );
    }
}

/// Group held by h3 at `HOST_EPOCH`, h3 revoked at `NOW - 500` and not seen since.
fn revoked_fixture() -> (LeaseRecord, BTreeMap<HostId, HostRecord>) {
    let g = held_by(
        group_of(&[("h1", 10), ("h2", 5), ("h3", 1)]),
        "h3",
        HOST_EPOCH,
    );
    let revoked = tweak(live("h3"), |h| {
        h.epoch = HOST_EPOCH.next();
        h.revoked_at_ms = NOW - 500;
        h.expires_at_ms = NOW - 5_000;
        h.last_seen_ms = NOW - 6_000;
    });
    (g, hosts_of([live("h1"), live("h2"), revoked]))
}

#[test]
fn a_revoked_grant_is_acquired_by_the_best_candidate_expecting_only_the_epoch() {
    let (g, hosts) = revoked_fixture();
    let plan = acquire_decision(&g, &hosts, &hid("h1"), &inc("i1"), NOW, &timing());
    assert_eq!(
        plan,
        Ok(AcquirePlan {
            host: hid("h1"),
            host_epoch: HOST_EPOCH,
            seen_epoch: GROUP_EPOCH,
            expect: AcquireExpect::Revoked,
            now: NOW,
        })
    );
    assert!(plan.unwrap().condition_holds(&g));
}

#[test]
fn after_a_revocation_a_lower_candidate_waits_counted_from_the_hosts_revoked_at_ms() {
    // The group has been "free since" CREATED, long ago: the wait is counted from the
    // revocation, not from that.
    let (g, hosts) = revoked_fixture();
    let revoked_at = NOW - 500;
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h2"), &inc("i1"), NOW, &timing()),
        Err(Wait::BetterCandidate {
            best: hid("h1"),
            until_ms: revoked_at + 3_000
        })
    );
    assert_eq!(
        acquire_decision(
            &g,
            &hosts,
            &hid("h2"),
            &inc("i1"),
            revoked_at + 3_000,
            &timing()
        ),
        Ok(AcquirePlan {
            host: hid("h2"),
            host_epoch: HOST_EPOCH,
            seen_epoch: GROUP_EPOCH,
            expect: AcquireExpect::Revoked,
            now: revoked_at + 3_000,
        })
    );
}

#[test]
fn a_revoked_holder_that_came_back_eligible_takes_its_group_first() {
    let (g, mut hosts) = revoked_fixture();
    // h3 heartbeated after the revocation and was renewed at its new epoch.
    hosts.insert(
        hid("h3"),
        tweak(live("h3"), |h| {
            h.epoch = HOST_EPOCH.next();
            h.revoked_at_ms = NOW - 500;
        }),
    );
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h1"), &inc("i1"), NOW, &timing()),
        Err(Wait::BetterCandidate {
            best: hid("h3"),
            until_ms: NOW - 500 + 3_000
        })
    );
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h3"), &inc("i1"), NOW, &timing()),
        Ok(AcquirePlan {
            host: hid("h3"),
            host_epoch: HOST_EPOCH.next(),
            seen_epoch: GROUP_EPOCH,
            expect: AcquireExpect::Revoked,
            now: NOW,
        })
    );
}

#[test]
fn a_lapsed_v1_lease_is_acquired_with_the_v1_expiry_condition() {
    let g = v1_held_by(
        group_of(&[("h1", 10), ("h2", 5), ("h3", 1)]),
        "h3",
        NOW - 201,
    );
    let hosts = hosts_of([live("h1"), live("h2")]);
    let plan = acquire_decision(&g, &hosts, &hid("h1"), &inc("i1"), NOW, &timing());
    assert_eq!(
        plan,
        Ok(AcquirePlan {
            host: hid("h1"),
            host_epoch: HOST_EPOCH,
            seen_epoch: GROUP_EPOCH,
            expect: AcquireExpect::V1Lapsed {
                not_after_ms: NOW - 200
            },
            now: NOW,
        })
    );
    assert!(plan.unwrap().condition_holds(&g));
}

#[test]
fn after_a_v1_lease_lapses_a_lower_candidate_waits_from_the_first_revocable_millisecond() {
    let g = v1_held_by(
        group_of(&[("h1", 10), ("h2", 5), ("h3", 1)]),
        "h3",
        NOW - 201,
    );
    let hosts = hosts_of([live("h1"), live("h2")]);
    // Takeable from expires_at + skew + 1 = NOW.
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h2"), &inc("i1"), NOW, &timing()),
        Err(Wait::BetterCandidate {
            best: hid("h1"),
            until_ms: NOW + 3_000
        })
    );
}

#[test]
fn a_v1_lease_not_yet_past_expiry_plus_skew_is_held_by_its_holder() {
    let g = v1_held_by(
        group_of(&[("h1", 10), ("h2", 5), ("h3", 1)]),
        "h3",
        NOW - 200,
    );
    let hosts = hosts_of([live("h1"), live("h2")]);
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h1"), &inc("i1"), NOW, &timing()),
        Err(Wait::HeldByOther { holder: hid("h3") })
    );
}

#[test]
fn the_writable_holder_is_told_it_already_holds() {
    let g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    let hosts = hosts_of([live("h1"), live("h2")]);
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h1"), &inc("i1"), NOW, &timing()),
        Err(Wait::AlreadyHolder)
    );
}

#[test]
fn a_live_grant_of_another_host_is_held_by_other() {
    let g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h2", HOST_EPOCH);
    let hosts = hosts_of([live("h1"), live("h2")]);
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h1"), &inc("i1"), NOW, &timing()),
        Err(Wait::HeldByOther { holder: hid("h2") })
    );
}

#[test]
fn a_holder_that_may_not_write_its_live_grant_is_not_told_it_already_holds() {
    // A new incarnation of the holder, and the holder inside the 2 * skew gap between its
    // window closing and the grant becoming revocable: neither may write, neither may take
    // the group again; the decision names the holder (itself) as the one holding it.
    let g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    let hosts = hosts_of([live("h1"), live("h2")]);
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h1"), &inc("i2"), NOW, &timing()),
        Err(Wait::HeldByOther { holder: hid("h1") })
    );
    let closing = hosts_of([tweak(live("h1"), |h| h.expires_at_ms = NOW), live("h2")]);
    assert_eq!(
        acquire_decision(&g, &closing, &hid("h1"), &inc("i1"), NOW, &timing()),
        Err(Wait::HeldByOther { holder: hid("h1") })
    );
}

#[test]
fn a_caller_whose_incarnation_is_not_the_recorded_one_cannot_acquire() {
    let g = group_created_at(&[("h1", 10)], NOW - 1);
    let hosts = hosts_of([live("h1")]);
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h1"), &inc("i2"), NOW, &timing()),
        Err(Wait::Ineligible {
            why: Ineligible::NoHostLease
        })
    );
    let none_recorded = hosts_of([tweak(live("h1"), |h| h.incarnation = None)]);
    assert_eq!(
        acquire_decision(&g, &none_recorded, &hid("h1"), &inc("i1"), NOW, &timing()),
        Err(Wait::Ineligible {
            why: Ineligible::NoHostLease
        })
    );
}

#[test]
fn an_ineligible_caller_is_told_why() {
    let mut g = group_created_at(&[("h1", 10), ("h2", 5)], NOW - 1);
    member_mut(&mut g, "h1").draining = true;
    let hosts = hosts_of([live("h1"), live("h2"), live("h9")]);
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h1"), &inc("i1"), NOW, &timing()),
        Err(Wait::Ineligible {
            why: Ineligible::Draining
        })
    );
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h9"), &inc("i1"), NOW, &timing()),
        Err(Wait::Ineligible {
            why: Ineligible::NotMember
        })
    );
}

#[test]
fn a_caller_whose_own_record_is_missing_from_hosts_reads_as_never_seen_and_cannot_acquire() {
    let g = group_created_at(&[("h1", 10)], NOW - 1);
    let hosts = BTreeMap::new();
    assert_eq!(
        acquire_decision(&g, &hosts, &hid("h1"), &inc("i1"), NOW, &timing()),
        Err(Wait::Ineligible {
            why: Ineligible::Stale
        })
    );
}

#[test]
fn a_releaser_is_not_a_candidate_right_after_release_so_the_next_candidate_acquires_at_once() {
    let g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    let released = ReleasePlan {
        host: hid("h1"),
        epoch: GROUP_EPOCH,
        now: NOW,
    }
    .apply(&g);
    let hosts = hosts_of([live("h1"), live("h2")]);
    assert_eq!(
        acquire_decision(
            &released,
            &hosts,
            &hid("h2"),
            &inc("i1"),
            NOW + 1,
            &timing()
        ),
        Ok(AcquirePlan {
            host: hid("h2"),
            host_epoch: HOST_EPOCH,
            seen_epoch: GROUP_EPOCH,
            expect: AcquireExpect::Free,
            now: NOW + 1,
        })
    );
    assert_eq!(
        acquire_decision(
            &released,
            &hosts,
            &hid("h1"),
            &inc("i1"),
            NOW + 1,
            &timing()
        ),
        Err(Wait::Ineligible {
            why: Ineligible::RecentlyReleased
        })
    );
}

// ---------------------------------------------------------------------------------------------
// AcquirePlan
// ---------------------------------------------------------------------------------------------

fn acquire_plan(host: &str, seen_epoch: Epoch, expect: AcquireExpect) -> AcquirePlan {
    AcquirePlan {
        host: hid(host),
        host_epoch: HOST_EPOCH,
        seen_epoch,
        expect,
        now: NOW,
    }
}

#[test]
fn acquire_holds_on_the_group_it_was_decided_on() {
    let g = group_of(&[("h1", 1), ("h2", 1)]);
    assert!(acquire_plan("h1", Epoch(0), AcquireExpect::Free).condition_holds(&g));
}

#[test]
fn acquire_is_refused_when_the_group_epoch_moved() {
    let g = tweak(group_of(&[("h1", 1)]), |g| g.epoch = Epoch(1));
    assert!(!acquire_plan("h1", Epoch(0), AcquireExpect::Free).condition_holds(&g));
    assert!(!acquire_plan("h1", Epoch(0), AcquireExpect::Revoked).condition_holds(&g));
}

#[test]
fn acquire_is_refused_for_a_host_that_is_no_longer_a_member() {
    let g = group_of(&[("h1", 1)]);
    assert!(!acquire_plan("h9", Epoch(0), AcquireExpect::Free).condition_holds(&g));
    assert!(!acquire_plan("h9", Epoch(0), AcquireExpect::Revoked).condition_holds(&g));
}

#[test]
fn acquire_expecting_a_free_group_is_refused_when_a_holder_appeared() {
    // Same epoch, a holder anyway: the `attribute_not_exists(holder)` part alone refuses it.
    let g = tweak(group_of(&[("h1", 1), ("h2", 1)]), |g| {
        g.holder = Some(hid("h2"));
        g.holder_host_epoch = Some(HOST_EPOCH);
    });
    assert!(!acquire_plan("h1", Epoch(0), AcquireExpect::Free).condition_holds(&g));
    // Expecting a revoked grant, the holder is expected.
    assert!(acquire_plan("h1", Epoch(0), AcquireExpect::Revoked).condition_holds(&g));
}

#[test]
fn acquire_of_a_lapsed_v1_lease_is_refused_when_renewed_or_upgraded() {
    let g = v1_held_by(group_of(&[("h1", 1), ("h2", 1)]), "h2", NOW - 201);
    let plan = acquire_plan(
        "h1",
        GROUP_EPOCH,
        AcquireExpect::V1Lapsed {
            not_after_ms: NOW - 200,
        },
    );
    assert!(plan.condition_holds(&g));
    let renewed = tweak(g.clone(), |g| g.expires_at_ms = NOW - 200);
    assert!(!plan.condition_holds(&renewed));
    let upgraded = tweak(g, |g| g.holder_host_epoch = Some(HOST_EPOCH));
    assert!(!plan.condition_holds(&upgraded));
}

#[test]
fn acquire_is_refused_on_a_tombstone() {
    let g = tweak(group_of(&[("h1", 1)]), |g| g.deleted = true);
    assert!(!acquire_plan("h1", Epoch(0), AcquireExpect::Free).condition_holds(&g));
}

#[test]
fn acquire_bumps_the_group_epoch_and_records_the_holders_host_epoch() {
    let g = held_by(group_of(&[("h1", 1), ("h2", 1)]), "h2", Epoch(1));
    let plan = acquire_plan("h1", GROUP_EPOCH, AcquireExpect::Revoked);
    let next = plan.apply(&g);
    assert_eq!(next.holder, Some(hid("h1")));
    assert_eq!(next.holder_host_epoch, Some(HOST_EPOCH));
    assert_eq!(next.epoch, GROUP_EPOCH.next());
    assert_eq!(next.updated_at_ms, NOW);
    assert_eq!(next.version, g.version + 1);
    assert_eq!(next.members, g.members);
    // The same plan cannot win twice.
    assert!(!plan.condition_holds(&next));
}

// ---------------------------------------------------------------------------------------------
// ReleasePlan
// ---------------------------------------------------------------------------------------------

fn release_plan(host: &str, epoch: Epoch) -> ReleasePlan {
    ReleasePlan {
        host: hid(host),
        epoch,
        now: NOW,
    }
}

#[test]
fn release_holds_for_the_holder_at_the_current_epoch() {
    let g = held_by(group_of(&[("h1", 1), ("h2", 1)]), "h1", HOST_EPOCH);
    assert!(release_plan("h1", GROUP_EPOCH).condition_holds(&g));
}

#[test]
fn a_release_at_a_stale_epoch_is_refused() {
    let g = held_by(group_of(&[("h1", 1), ("h2", 1)]), "h1", HOST_EPOCH);
    assert!(!release_plan("h1", Epoch(6)).condition_holds(&g));
    assert!(!release_plan("h1", GROUP_EPOCH.next()).condition_holds(&g));
}

#[test]
fn a_release_by_a_host_that_does_not_hold_is_refused() {
    let g = held_by(group_of(&[("h1", 1), ("h2", 1)]), "h1", HOST_EPOCH);
    assert!(!release_plan("h2", GROUP_EPOCH).condition_holds(&g));
    let free = tweak(group_of(&[("h1", 1)]), |g| g.epoch = GROUP_EPOCH);
    assert!(!release_plan("h1", GROUP_EPOCH).condition_holds(&free));
    let tombstone = tweak(g, |g| g.deleted = true);
    assert!(!release_plan("h1", GROUP_EPOCH).condition_holds(&tombstone));
}

#[test]
fn release_frees_the_group_and_marks_the_releaser() {
    let g = held_by(group_of(&[("h1", 1), ("h2", 1)]), "h1", HOST_EPOCH);
    let next = release_plan("h1", GROUP_EPOCH).apply(&g);
    assert_eq!(next.holder, None);
    assert_eq!(next.holder_host_epoch, None);
    assert_eq!(next.free_since_ms, Some(NOW));
    assert_eq!(next.members[&hid("h1")].released_at_ms, Some(NOW));
    assert_eq!(next.members[&hid("h2")].released_at_ms, None);
    assert_eq!(next.epoch, GROUP_EPOCH, "a release does not move the epoch");
    assert_eq!(next.updated_at_ms, NOW);
    assert_eq!(next.version, g.version + 1);
    assert_eq!(grant_state(&next, None, NOW, &timing()), GrantState::Free);
}

#[test]
fn a_holder_that_is_no_longer_a_member_may_release_and_is_not_added_back() {
    let g = tweak(
        held_by(group_of(&[("h1", 1), ("h2", 1)]), "h1", HOST_EPOCH),
        |g| {
            g.members.remove(&hid("h1"));
        },
    );
    let plan = release_plan("h1", GROUP_EPOCH);
    assert!(plan.condition_holds(&g));
    let next = plan.apply(&g);
    assert_eq!(next.holder, None);
    assert_eq!(next.free_since_ms, Some(NOW));
    assert!(!next.members.contains_key(&hid("h1")));
    assert_eq!(plan.notified(&g), vec![hid("h2")]);
}

#[test]
fn a_release_notifies_every_other_member() {
    let g = held_by(
        group_of(&[("h1", 1), ("h2", 1), ("h3", 1)]),
        "h2",
        HOST_EPOCH,
    );
    assert_eq!(
        release_plan("h2", GROUP_EPOCH).notified(&g),
        vec![hid("h1"), hid("h3")]
    );
}

// ---------------------------------------------------------------------------------------------
// HeartbeatPlan, IncarnationChangePlan
// ---------------------------------------------------------------------------------------------

fn heartbeat(incarnation: &str, healthy: bool) -> HeartbeatPlan {
    HeartbeatPlan {
        host: hid("h1"),
        healthy,
        incarnation: inc(incarnation),
        now: NOW,
    }
}

#[test]
fn a_heartbeat_to_an_absent_record_is_accepted() {
    assert!(heartbeat("i1", true).condition_holds(None));
    let no_incarnation = tweak(live("h1"), |h| h.incarnation = None);
    assert!(heartbeat("i1", true).condition_holds(Some(&no_incarnation)));
}

#[test]
fn a_heartbeat_from_the_recorded_incarnation_is_accepted() {
    assert!(heartbeat("i1", true).condition_holds(Some(&live("h1"))));
}

#[test]
fn a_heartbeat_from_another_incarnation_is_refused() {
    assert!(!heartbeat("i2", true).condition_holds(Some(&live("h1"))));
}

#[test]
fn a_first_heartbeat_creates_the_record_with_the_defaults() {
    let created = heartbeat("i1", false).apply(None);
    let expected = tweak(HostRecord::absent(hid("h1")), |h| {
        h.last_seen_ms = NOW;
        h.healthy = false;
        h.incarnation = Some(inc("i1"));
        h.version = 1;
    });
    assert_eq!(created, expected);
    assert_eq!(created.epoch, Epoch(0));
    assert_eq!(created.expires_at_ms, 0);
    assert_eq!(created.revoked_at_ms, 0);
    assert_eq!(created.incarnation_changed, None);
}

#[test]
fn a_heartbeat_keeps_the_lease_epoch_and_drain() {
    let before = tweak(live("h1"), |h| {
        h.draining = true;
        h.attention.insert(gid("g1"));
    });
    let after = tweak(heartbeat("i1", false), |p| p.now = NOW + 1).apply(Some(&before));
    assert_eq!(after.last_seen_ms, NOW + 1);
    assert!(!after.healthy);
    assert_eq!(after.epoch, before.epoch);
    assert_eq!(after.expires_at_ms, before.expires_at_ms);
    assert_eq!(after.revoked_at_ms, before.revoked_at_ms);
    assert!(after.draining);
    assert_eq!(after.attention, before.attention);
    assert_eq!(after.version, before.version + 1);
}

#[test]
fn an_incarnation_change_holds_only_on_the_incarnation_it_replaces() {
    let plan = heartbeat("i2", true).change_from(inc("i1"));
    assert_eq!(plan.recorded, inc("i1"));
    assert!(plan.condition_holds(Some(&live("h1"))));
    let already_changed = tweak(live("h1"), |h| h.incarnation = Some(inc("i3")));
    assert!(!plan.condition_holds(Some(&already_changed)));
    assert!(!plan.condition_holds(None));
}

#[test]
fn an_incarnation_change_records_the_new_incarnation_and_sets_incarnation_changed() {
    let before = live("h1");
    let after = heartbeat("i2", true)
        .change_from(inc("i1"))
        .apply(Some(&before));
    assert_eq!(after.incarnation, Some(inc("i2")));
    assert_eq!(after.incarnation_changed, Some(NOW));
    assert_eq!(after.last_seen_ms, NOW);
    assert_eq!(after.epoch, before.epoch);
    assert_eq!(after.expires_at_ms, before.expires_at_ms);
    assert_eq!(after.version, before.version + 1);
    // Neither process may write or renew now; the new one's heartbeats are accepted.
    assert!(!after.speaks_for(&inc("i1")));
    assert!(!after.speaks_for(&inc("i2")));
    assert_eq!(
        renew_decision(&after, NOW, &timing()),
        Err(RenewSkip::IncarnationChanged)
    );
    assert!(heartbeat("i2", true).condition_holds(Some(&after)));
    assert!(!heartbeat("i1", true).condition_holds(Some(&after)));
}

#[test]
fn a_new_incarnation_lives_on_at_a_new_epoch_with_no_grants() {
    let g = held_by(group_of(&[("h1", 1)]), "h1", HOST_EPOCH);
    let changed = heartbeat("i2", true)
        .change_from(inc("i1"))
        .apply(Some(&live("h1")));
    // The old lease (until NOW + 8000) must lapse past the skew before the revocation.
    assert_eq!(revoke_decision(&changed, NOW + 8_200, &timing()), None);
    let later = NOW + 8_201;
    let revoke = revoke_decision(&changed, later, &timing()).unwrap();
    assert!(revoke.condition_holds(Some(&changed)));
    let revoked = revoke.apply(Some(&changed));
    assert_eq!(revoked.incarnation_changed, None);
    assert_eq!(revoked.epoch, HOST_EPOCH.next());
    // Not renewed until it has heartbeated since the revocation.
    assert_eq!(
        renew_decision(&revoked, later, &timing()),
        Err(RenewSkip::NotSeenSinceRevocation)
    );
    let seen = tweak(heartbeat("i2", true), |p| p.now = later + 1).apply(Some(&revoked));
    let renewal = renew_decision(&seen, later + 1, &timing()).unwrap();
    assert_eq!(renewal.epoch, HOST_EPOCH.next());
    let renewed = renewal.apply(&seen);
    // The old grant never comes back, for either incarnation.
    assert_eq!(
        grant_state(&g, Some(&renewed), later + 1, &timing()),
        GrantState::Revoked {
            holder: hid("h1"),
            revoked_at_ms: later
        }
    );
    assert!(!is_writable(&g, &renewed, &inc("i2"), later + 1, &timing()));
    assert!(!is_writable(&g, &renewed, &inc("i1"), later + 1, &timing()));
}

// ---------------------------------------------------------------------------------------------
// renew_decision, RenewPlan, self_renewal_due
// ---------------------------------------------------------------------------------------------

#[test]
fn a_fresh_healthy_host_is_renewed_to_its_last_heartbeat_plus_lease() {
    assert_eq!(
        renew_decision(&live("h1"), NOW, &timing()),
        Ok(RenewPlan {
            host: hid("h1"),
            epoch: HOST_EPOCH,
            new_expires_at_ms: NOW - 100 + 10_000,
            now: NOW,
        })
    );
}

#[test]
fn a_draining_host_is_still_renewed() {
    let draining = tweak(live("h1"), |h| h.draining = true);
    assert!(renew_decision(&draining, NOW, &timing()).is_ok());
}

#[test]
fn an_unhealthy_host_is_not_renewed() {
    assert_eq!(
        renew_decision(&unhealthy("h1"), NOW, &timing()),
        Err(RenewSkip::Unhealthy)
    );
}

#[test]
fn a_host_not_heard_from_within_heartbeat_timeout_is_not_renewed() {
    let stale = tweak(live("h1"), |h| {
        h.last_seen_ms = NOW - 3_001;
        h.expires_at_ms = NOW;
    });
    assert_eq!(
        renew_decision(&stale, NOW, &timing()),
        Err(RenewSkip::Stale)
    );
    let just_fresh = tweak(stale, |h| h.last_seen_ms = NOW - 3_000);
    assert_eq!(
        renew_decision(&just_fresh, NOW, &timing()).map(|p| p.new_expires_at_ms),
        Ok(NOW + 7_000)
    );
}

#[test]
fn a_host_not_seen_since_its_revocation_is_not_renewed() {
    let revoked = tweak(live("h1"), |h| h.revoked_at_ms = h.last_seen_ms);
    assert_eq!(
        renew_decision(&revoked, NOW, &timing()),
        Err(RenewSkip::NotSeenSinceRevocation)
    );
    assert_eq!(
        renew_decision(&HostRecord::absent(hid("h1")), NOW, &timing()),
        Err(RenewSkip::NotSeenSinceRevocation)
    );
}

#[test]
fn a_host_with_an_incarnation_change_pending_is_not_renewed() {
    let changed = tweak(live("h1"), |h| h.incarnation_changed = Some(NOW - 10));
    assert_eq!(
        renew_decision(&changed, NOW, &timing()),
        Err(RenewSkip::IncarnationChanged)
    );
}

#[test]
fn a_renewal_that_would_not_move_the_expiry_forward_is_skipped() {
    let already = tweak(live("h1"), |h| h.expires_at_ms = h.last_seen_ms + 10_000);
    assert_eq!(
        renew_decision(&already, NOW, &timing()),
        Err(RenewSkip::NotForward)
    );
    let ahead = tweak(live("h1"), |h| h.expires_at_ms = h.last_seen_ms + 12_000);
    assert_eq!(
        renew_decision(&ahead, NOW, &timing()),
        Err(RenewSkip::NotForward)
    );
}

#[test]
fn a_renewal_holds_on_the_record_it_was_decided_on() {
    let host = live("h1");
    let plan = renew_decision(&host, NOW, &timing()).unwrap();
    assert!(plan.condition_holds(Some(&host)));
}

#[test]
fn a_renewal_is_refused_at_another_epoch() {
    let host = live("h1");
    let plan = renew_decision(&host, NOW, &timing()).unwrap();
    let revoked = tweak(host, |h| h.epoch = HOST_EPOCH.next());
    assert!(!plan.condition_holds(Some(&revoked)));
    assert!(!plan.condition_holds(None));
}

#[test]
fn a_renewal_is_refused_when_it_would_not_extend_the_lease() {
    let host = live("h1");
    let plan = renew_decision(&host, NOW, &timing()).unwrap();
    let same = tweak(host.clone(), |h| h.expires_at_ms = plan.new_expires_at_ms);
    assert!(!plan.condition_holds(Some(&same)));
    let further = tweak(host, |h| h.expires_at_ms = plan.new_expires_at_ms + 1);
    assert!(
        !plan.condition_holds(Some(&further)),
        "would shrink the lease"
    );
}

#[test]
fn a_renewal_is_refused_when_health_or_incarnation_changed_since_the_read() {
    let host = live("h1");
    let plan = renew_decision(&host, NOW, &timing()).unwrap();
    assert!(!plan.condition_holds(Some(&unhealthy("h1"))));
    let changed = tweak(host.clone(), |h| h.incarnation_changed = Some(NOW));
    assert!(!plan.condition_holds(Some(&changed)));
    let not_seen = tweak(host, |h| h.revoked_at_ms = h.last_seen_ms);
    assert!(!plan.condition_holds(Some(&not_seen)));
}

#[test]
fn a_renewal_sets_only_the_expiry() {
    let host = live("h1");
    let plan = renew_decision(&host, NOW, &timing()).unwrap();
    let next = plan.apply(&host);
    let expected = tweak(host.clone(), |h| {
        h.expires_at_ms = NOW + 9_900;
        h.updated_at_ms = NOW;
        h.version = host.version + 1;
    });
    assert_eq!(next, expected);
}

#[test]
fn self_renewal_is_due_within_two_renew_intervals_of_the_end() {
    let at_two_intervals = tweak(live("h1"), |h| h.expires_at_ms = NOW + 4_000);
    assert!(self_renewal_due(&at_two_intervals, NOW, &timing()));
    let lapsed = tweak(live("h1"), |h| h.expires_at_ms = NOW - 1);
    assert!(self_renewal_due(&lapsed, NOW, &timing()));
    let one_ms_more = tweak(live("h1"), |h| h.expires_at_ms = NOW + 4_001);
    assert!(!self_renewal_due(&one_ms_more, NOW, &timing()));
}

// ---------------------------------------------------------------------------------------------
// revoke_decision, RevokePlan
// ---------------------------------------------------------------------------------------------

#[test]
fn no_revocation_before_expiry_plus_skew() {
    let at_boundary = tweak(live("h1"), |h| h.expires_at_ms = NOW - 200);
    assert_eq!(revoke_decision(&at_boundary, NOW, &timing()), None);
    assert_eq!(revoke_decision(&live("h1"), NOW, &timing()), None);
}

#[test]
fn a_revocation_past_expiry_plus_skew_expects_the_epoch_and_expiry_read() {
    let lapsed = tweak(live("h1"), |h| h.expires_at_ms = NOW - 201);
    let plan = revoke_decision(&lapsed, NOW, &timing());
    assert_eq!(
        plan,
        Some(RevokePlan {
            host: hid("h1"),
            seen_epoch: HOST_EPOCH,
            seen_absent: false,
            not_after_ms: NOW - 200,
            now: NOW,
        })
    );
    assert!(plan.unwrap().condition_holds(Some(&lapsed)));
}

#[test]
fn a_revocation_is_refused_on_a_renewed_host() {
    let lapsed = tweak(live("h1"), |h| h.expires_at_ms = NOW - 201);
    let plan = revoke_decision(&lapsed, NOW, &timing()).unwrap();
    let renewed = tweak(lapsed.clone(), |h| h.expires_at_ms = NOW + 9_900);
    assert!(!plan.condition_holds(Some(&renewed)));
    let renewed_to_the_boundary = tweak(lapsed, |h| h.expires_at_ms = NOW - 200);
    assert!(!plan.condition_holds(Some(&renewed_to_the_boundary)));
}

#[test]
fn a_revocation_is_refused_on_an_already_revoked_host() {
    let lapsed = tweak(live("h1"), |h| h.expires_at_ms = NOW - 201);
    let plan = revoke_decision(&lapsed, NOW, &timing()).unwrap();
    let revoked = plan.apply(Some(&lapsed));
    assert!(!plan.condition_holds(Some(&revoked)));
    assert!(
        !plan.condition_holds(None),
        "the item was read, so it exists"
    );
}

#[test]
fn a_revocation_bumps_the_epoch_sets_revoked_at_and_clears_incarnation_changed() {
    let lapsed = tweak(live("h1"), |h| {
        h.expires_at_ms = NOW - 201;
        h.incarnation_changed = Some(NOW - 5_000);
    });
    let next = revoke_decision(&lapsed, NOW, &timing())
        .unwrap()
        .apply(Some(&lapsed));
    assert_eq!(next.epoch, HOST_EPOCH.next());
    assert_eq!(next.revoked_at_ms, NOW);
    assert_eq!(next.incarnation_changed, None);
    assert_eq!(next.expires_at_ms, lapsed.expires_at_ms);
    assert_eq!(next.incarnation, lapsed.incarnation);
    assert_eq!(next.last_seen_ms, lapsed.last_seen_ms);
    assert_eq!(next.updated_at_ms, NOW);
    assert_eq!(next.version, lapsed.version + 1);
}

#[test]
fn after_a_revocation_no_grant_at_the_old_epoch_is_live_or_renewable() {
    let g = held_by(group_of(&[("h1", 1)]), "h1", HOST_EPOCH);
    let lapsed = tweak(live("h1"), |h| {
        h.expires_at_ms = NOW - 201;
        h.last_seen_ms = NOW - 100;
    });
    let old_renewal = renew_decision(&lapsed, NOW, &timing()).unwrap();
    let revoked = revoke_decision(&lapsed, NOW, &timing())
        .unwrap()
        .apply(Some(&lapsed));
    assert!(!old_renewal.condition_holds(Some(&revoked)));
    assert_eq!(
        grant_state(&g, Some(&revoked), NOW, &timing()),
        GrantState::Revoked {
            holder: hid("h1"),
            revoked_at_ms: NOW
        }
    );
}

#[test]
fn an_absent_host_is_revoked_expecting_no_item() {
    let absent = HostRecord::absent(hid("h9"));
    let plan = revoke_decision(&absent, NOW, &timing()).unwrap();
    assert_eq!(
        plan,
        RevokePlan {
            host: hid("h9"),
            seen_epoch: Epoch(0),
            seen_absent: true,
            not_after_ms: NOW - 200,
            now: NOW,
        }
    );
    assert!(plan.condition_holds(None));
    // An item written since (a heartbeat creates it) refuses the revocation.
    let written = tweak(heartbeat("i1", true), |p| p.host = hid("h9")).apply(None);
    assert!(!plan.condition_holds(Some(&written)));
    let next = plan.apply(None);
    assert_eq!(next.host_id, hid("h9"));
    assert_eq!(next.epoch, Epoch(1));
    assert_eq!(next.revoked_at_ms, NOW);
    assert_eq!(next.version, 1);
}

// ---------------------------------------------------------------------------------------------
// watch_due, watched
// ---------------------------------------------------------------------------------------------

#[test]
fn a_watch_is_due_at_send_time_plus_expires_in_plus_skew() {
    let sent_at = 1_000;
    assert!(!watch_due(sent_at, 5_000, 6_199, &timing()));
    assert!(watch_due(sent_at, 5_000, 6_200, &timing()));
    assert!(watch_due(sent_at, 0, 1_200, &timing()));
    assert!(!watch_due(sent_at, 0, 1_199, &timing()));
}

#[test]
fn a_watched_host_reports_its_epoch_liveness_and_time_to_expiry() {
    let h = tweak(live("h1"), |h| h.expires_at_ms = NOW + 300);
    assert_eq!(
        watched(&h, NOW, &timing()),
        Watched {
            host_id: hid("h1"),
            host_epoch: HOST_EPOCH,
            live: true,
            expires_in_ms: 300
        }
    );
}

#[test]
fn a_watched_host_is_live_until_revocable() {
    let at_boundary = tweak(live("h1"), |h| h.expires_at_ms = NOW - 200);
    let w = watched(&at_boundary, NOW, &timing());
    assert!(w.live);
    assert_eq!(w.expires_in_ms, 0);
    let lapsed = tweak(live("h1"), |h| h.expires_at_ms = NOW - 201);
    let w = watched(&lapsed, NOW, &timing());
    assert!(!w.live);
    assert_eq!(w.expires_in_ms, 0);
}

// ---------------------------------------------------------------------------------------------
// answer
// ---------------------------------------------------------------------------------------------

fn ask(group: &LeaseRecord, hosts: &BTreeMap<HostId, HostRecord>, caller: &str) -> CheckAnswer {
    answer(group, hosts, &hid(caller), &inc("i1"), NOW, &timing())
}

#[test]
fn the_writable_holder_is_answered_primary_for_its_host_window() {
    let g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    let hosts = hosts_of([live("h1"), live("h2")]);
    assert_eq!(
        ask(&g, &hosts, "h1"),
        CheckAnswer {
            group_id: gid("g1"),
            host_id: hid("h1"),
            role: Role::Primary,
            writable: true,
            epoch: GROUP_EPOCH,
            holder: Some(hid("h1")),
            valid_for_ms: 7_800,
            poll_after_ms: 500,
            draining: false,
            holder_host_epoch: Some(HOST_EPOCH),
        }
    );
}

#[test]
fn another_member_is_answered_secondary_with_no_window() {
    let g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    let hosts = hosts_of([live("h1"), live("h2")]);
    assert_eq!(
        ask(&g, &hosts, "h2"),
        CheckAnswer {
            group_id: gid("g1"),
            host_id: hid("h2"),
            role: Role::Secondary,
            writable: false,
            epoch: GROUP_EPOCH,
            holder: Some(hid("h1")),
            valid_for_ms: 0,
            poll_after_ms: 500,
            draining: false,
            holder_host_epoch: Some(HOST_EPOCH),
        }
    );
}

#[test]
fn another_incarnation_of_the_holder_is_answered_secondary() {
    let g = held_by(group_of(&[("h1", 10)]), "h1", HOST_EPOCH);
    let hosts = hosts_of([live("h1")]);
    let a = answer(&g, &hosts, &hid("h1"), &inc("i2"), NOW, &timing());
    assert_eq!(a.role, Role::Secondary);
    assert!(!a.writable);
    assert_eq!(a.valid_for_ms, 0);
}

#[test]
fn a_draining_holder_with_a_successor_is_told_to_drain_and_still_writes() {
    let mut g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    member_mut(&mut g, "h1").draining = true;
    let hosts = hosts_of([live("h1"), live("h2")]);
    assert!(has_successor(&g, &hosts, &hid("h1"), NOW, &timing()));
    let a = ask(&g, &hosts, "h1");
    assert!(a.draining);
    assert_eq!(a.role, Role::Primary);
    assert!(a.writable);
    assert_eq!(a.valid_for_ms, 7_800);
}

#[test]
fn a_draining_holder_without_a_successor_keeps_writing_and_is_not_told_to_drain() {
    let mut g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    member_mut(&mut g, "h1").draining = true;
    for hosts in [
        hosts_of([live("h1"), unhealthy("h2")]),
        hosts_of([live("h1")]),
    ] {
        assert!(!has_successor(&g, &hosts, &hid("h1"), NOW, &timing()));
        let a = ask(&g, &hosts, "h1");
        assert!(!a.draining);
        assert_eq!(a.role, Role::Primary);
        assert!(a.writable);
        assert_eq!(a.valid_for_ms, 7_800);
    }
}

#[test]
fn a_holder_on_a_draining_host_is_told_to_drain_only_with_a_successor() {
    let g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    let draining = tweak(live("h1"), |h| h.draining = true);
    let with_successor = hosts_of([draining.clone(), live("h2")]);
    assert!(ask(&g, &with_successor, "h1").draining);
    let without = hosts_of([draining, unhealthy("h2")]);
    let a = ask(&g, &without, "h1");
    assert!(!a.draining);
    assert!(a.writable);
}

#[test]
fn a_holder_that_is_no_longer_a_member_is_answered_primary_and_told_to_drain() {
    let g = tweak(
        held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH),
        |g| {
            g.members.remove(&hid("h1"));
        },
    );
    // Even with nobody to take over: the group was redefined without it.
    let hosts = hosts_of([live("h1"), unhealthy("h2")]);
    assert!(has_successor(&g, &hosts, &hid("h1"), NOW, &timing()));
    let a = ask(&g, &hosts, "h1");
    assert_eq!(a.role, Role::Primary);
    assert!(a.writable);
    assert!(a.draining);
    assert_eq!(a.valid_for_ms, 7_800);
}

#[test]
fn a_draining_member_that_does_not_hold_is_told_draining() {
    let mut g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    member_mut(&mut g, "h2").draining = true;
    let hosts = hosts_of([live("h1"), live("h2")]);
    let a = ask(&g, &hosts, "h2");
    assert!(a.draining);
    assert_eq!(a.role, Role::Secondary);
}

#[test]
fn a_secondary_of_a_live_holder_comes_back_when_the_holder_becomes_revocable() {
    let g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    let holder = tweak(live("h1"), |h| h.expires_at_ms = NOW + 100);
    let hosts = hosts_of([holder.clone(), live("h2")]);
    let a = ask(&g, &hosts, "h2");
    assert_eq!(a.role, Role::Secondary);
    assert_eq!(a.poll_after_ms, revocable_at_ms(&holder, &timing()) - NOW);
    assert_eq!(a.poll_after_ms, 301);
}

#[test]
fn a_secondary_poll_after_is_clamped_up_to_the_floor() {
    let g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    // Revocable in 6 ms: still live now, so the secondary waits, but no less than the floor.
    let holder = tweak(live("h1"), |h| h.expires_at_ms = NOW - 195);
    let hosts = hosts_of([holder.clone(), live("h2")]);
    assert_eq!(
        grant_state(&g, Some(&holder), NOW, &timing()),
        GrantState::Live { holder: hid("h1") }
    );
    assert_eq!(ask(&g, &hosts, "h2").poll_after_ms, FLOOR_MS);
}

#[test]
fn a_secondary_poll_after_is_clamped_down_to_the_poll_interval() {
    let g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    let holder = tweak(live("h1"), |h| h.expires_at_ms = NOW + 5_000);
    let hosts = hosts_of([holder, live("h2")]);
    assert_eq!(ask(&g, &hosts, "h2").poll_after_ms, 500);
}

#[test]
fn the_best_candidate_for_a_free_group_comes_back_at_once_and_a_lower_one_when_its_wait_ends() {
    let g = group_created_at(&[("h1", 10), ("h2", 5)], NOW - 2_900);
    let hosts = hosts_of([live("h1"), live("h2")]);
    assert_eq!(ask(&g, &hosts, "h1").poll_after_ms, FLOOR_MS);
    assert_eq!(ask(&g, &hosts, "h2").poll_after_ms, 100);
}

#[test]
fn a_secondary_of_a_draining_holder_comes_back_within_a_tenth_of_a_poll() {
    let mut g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    member_mut(&mut g, "h1").draining = true;
    let hosts = hosts_of([live("h1"), live("h2")]);
    assert_eq!(ask(&g, &hosts, "h2").poll_after_ms, 50);
}

#[test]
fn an_ineligible_secondary_polls_at_the_poll_interval() {
    let g = held_by(group_of(&[("h1", 10), ("h2", 5)]), "h1", HOST_EPOCH);
    let holder = tweak(live("h1"), |h| h.expires_at_ms = NOW + 100);
    let hosts = hosts_of([holder, unhealthy("h2")]);
    assert_eq!(ask(&g, &hosts, "h2").poll_after_ms, 500);
}

// ---------------------------------------------------------------------------------------------
// DeletePlan
// ---------------------------------------------------------------------------------------------

fn delete_plan(expect: DeleteExpect) -> DeletePlan {
    DeletePlan {
        seen_epoch: GROUP_EPOCH,
        expect,
        now: NOW,
    }
}

#[test]
fn deleting_a_free_group_holds_only_while_it_is_free_at_the_epoch_read() {
    let g = tweak(group_of(&[("h1", 1)]), |g| g.epoch = GROUP_EPOCH);
    let plan = delete_plan(DeleteExpect::Free);
    assert!(plan.condition_holds(&g));
    assert!(!plan.condition_holds(&held_by(g.clone(), "h1", HOST_EPOCH)));
    assert!(!plan.condition_holds(&tweak(g.clone(), |g| g.epoch = GROUP_EPOCH.next())));
    assert!(
        !plan.condition_holds(&plan.apply(&g)),
        "already a tombstone"
    );
}

#[test]
fn deleting_a_revoked_grant_expects_that_grant() {
    let g = held_by(group_of(&[("h1", 1)]), "h1", HOST_EPOCH);
    assert!(delete_plan(DeleteExpect::RevokedGrant(HOST_EPOCH)).condition_holds(&g));
    assert!(!delete_plan(DeleteExpect::RevokedGrant(Epoch(2))).condition_holds(&g));
    let free = tweak(g.clone(), |g| {
        g.holder = None;
        g.holder_host_epoch = None;
    });
    assert!(!delete_plan(DeleteExpect::RevokedGrant(HOST_EPOCH)).condition_holds(&free));
    let reacquired = tweak(g, |g| {
        g.holder_host_epoch = Some(HOST_EPOCH.next());
        g.epoch = GROUP_EPOCH.next();
    });
    assert!(!delete_plan(DeleteExpect::RevokedGrant(HOST_EPOCH)).condition_holds(&reacquired));
}

#[test]
fn deleting_a_v1_lease_requires_it_to_have_lapsed_before_not_after() {
    let plan = delete_plan(DeleteExpect::V1Lapsed {
        not_after_ms: NOW - 200,
    });
    let lapsed = v1_held_by(group_of(&[("h1", 1)]), "h1", NOW - 201);
    assert!(plan.condition_holds(&lapsed));
    let at_boundary = v1_held_by(group_of(&[("h1", 1)]), "h1", NOW - 200);
    assert!(!plan.condition_holds(&at_boundary));
    let upgraded = tweak(lapsed, |g| g.holder_host_epoch = Some(HOST_EPOCH));
    assert!(!plan.condition_holds(&upgraded));
}

#[test]
fn a_blind_delete_takes_only_a_free_group_or_a_lapsed_v1_lease_whatever_the_epoch() {
    let plan = BlindDeletePlan {
        not_after_ms: NOW - 200,
        now: NOW,
    };
    let free = group_of(&[("h1", 1)]);
    assert!(plan.condition_holds(&free));
    // No epoch was read: any epoch will do.
    assert!(plan.condition_holds(&tweak(free.clone(), |g| g.epoch = Epoch(40))));
    assert!(plan.condition_holds(&v1_held_by(free.clone(), "h1", NOW - 201)));
    assert!(!plan.condition_holds(&v1_held_by(free.clone(), "h1", NOW - 200)));
    // A v2 grant refuses even if its host was revoked: telling that needs the host item.
    assert!(!plan.condition_holds(&held_by(free.clone(), "h1", HOST_EPOCH)));
    let tombstone = plan.apply(&free);
    assert!(!plan.condition_holds(&tombstone), "already a tombstone");
    assert_eq!(
        tombstone,
        delete_plan(DeleteExpect::Free).apply(&free),
        "both deletes leave the same tombstone"
    );
}

#[test]
fn a_delete_leaves_a_tombstone_that_keeps_the_epoch_and_clears_holder_and_members() {
    let g = held_by(group_of(&[("h1", 1), ("h2", 2)]), "h1", HOST_EPOCH);
    let tombstone = delete_plan(DeleteExpect::RevokedGrant(HOST_EPOCH)).apply(&g);
    assert!(tombstone.deleted);
    assert_eq!(tombstone.epoch, GROUP_EPOCH);
    assert_eq!(tombstone.holder, None);
    assert_eq!(tombstone.holder_host_epoch, None);
    assert!(tombstone.members.is_empty());
    assert_eq!(tombstone.group_id, gid("g1"));
    assert_eq!(tombstone.lease_ms, g.lease_ms);
    assert_eq!(tombstone.updated_at_ms, NOW);
    assert_eq!(tombstone.version, g.version + 1);
    // Nothing can be acquired or released on it.
    assert!(!acquire_plan("h1", GROUP_EPOCH, AcquireExpect::Revoked).condition_holds(&tombstone));
    assert!(!release_plan("h1", GROUP_EPOCH).condition_holds(&tombstone));
}

// ---------------------------------------------------------------------------------------------
// member_groups
// ---------------------------------------------------------------------------------------------

#[test]
fn member_groups_lists_the_groups_a_host_is_a_member_of() {
    let g1 = group_of(&[("h1", 1), ("h2", 1)]);
    let g2 = tweak(group_of(&[("h2", 1)]), |g| g.group_id = gid("g2"));
    let g3 = tweak(group_of(&[("h1", 1)]), |g| g.group_id = gid("g3"));
    assert_eq!(
        member_groups([&g1, &g2, &g3], &hid("h1")),
        BTreeSet::from([gid("g1"), gid("g3")])
    );
    assert_eq!(member_groups([&g1, &g2, &g3], &hid("h9")), BTreeSet::new());
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// A clock `error` (at most the skew) ahead of or behind `now`.
fn other_clock(now: Millis, error: Millis, ahead: bool) -> Millis {
    if ahead {
        now + error
    } else {
        now - error
    }
}

proptest! {
    #[test]
    fn for_any_clocks_within_skew_a_holders_window_and_a_contenders_revocation_never_overlap(
        holder_now in 20_000u64..1_000_000_000_000,
        expiry_offset in 0u64..20_000,
        skew in 0u64..=2_000,
        error in 0u64..=2_000,
        contender_ahead in any::<bool>(),
    ) {
        let cfg = LeaseConfig { clock_skew_ms: skew, ..LeaseConfig::default() };
        let error = error.min(skew);
        let host = expiring("h1", holder_now - 10_000 + expiry_offset);
        let contender_now = other_clock(holder_now, error, contender_ahead);
        let window_open = host_valid_for_ms(&host, holder_now, &cfg) > 0;
        let revocable = is_revocable(&host, contender_now, &cfg);
        prop_assert!(
            !(window_open && revocable),
            "holder at {} writable, contender at {} may revoke (expiry {}, skew {})",
            holder_now, contender_now, host.expires_at_ms, skew
        );
    }

    #[test]
    fn revocable_at_ms_is_exactly_the_first_revocable_millisecond(
        expires_at in 0u64..1_000_000_000_000,
        skew in 0u64..=2_000,
    ) {
        let cfg = LeaseConfig { clock_skew_ms: skew, ..LeaseConfig::default() };
        let host = expiring("h1", expires_at);
        let at = revocable_at_ms(&host, &cfg);
        prop_assert!(is_revocable(&host, at, &cfg));
        prop_assert!(!is_revocable(&host, at - 1, &cfg));
        prop_assert_eq!(host_valid_for_ms(&host, at - 1, &cfg), 0);
    }

    #[test]
    fn a_host_answered_writable_is_live_to_every_contender_within_skew(
        now in 20_000u64..1_000_000,
        expiry_offset in 0u64..20_000,
        error in 0u64..=200,
        contender_ahead in any::<bool>(),
    ) {
        let cfg = timing();
        let host = tweak(live("h1"), |h| h.expires_at_ms = now - 10_000 + expiry_offset);
        let group = held_by(group_of(&[("h1", 1), ("h2", 1)]), "h1", HOST_EPOCH);
        let contender_now = other_clock(now, error, contender_ahead);
        if is_writable(&group, &host, &inc("i1"), now, &cfg) {
            prop_assert_eq!(
                grant_state(&group, Some(&host), contender_now, &cfg),
                GrantState::Live { holder: hid("h1") }
            );
            prop_assert!(revoke_decision(&host, contender_now, &cfg).is_none());
            let hosts = hosts_of([host.clone(), live("h2")]);
            prop_assert_eq!(
                acquire_decision(&group, &hosts, &hid("h2"), &inc("i1"), contender_now, &cfg),
                Err(Wait::HeldByOther { holder: hid("h1") })
            );
        }
    }

    #[test]
    fn a_renewal_keeps_the_epoch_and_only_moves_the_expiry_forward(
        now in 100_000u64..1_000_000,
        seen_back in 0u64..5_000,
        expiry_offset in 0u64..30_000,
        revoked_back in 0u64..10_000,
        healthy in any::<bool>(),
        changed in any::<bool>(),
    ) {
        let cfg = timing();
        let host = tweak(live("h1"), |h| {
            h.last_seen_ms = now - seen_back;
            h.expires_at_ms = now + expiry_offset - 15_000;
            h.revoked_at_ms = now - revoked_back;
            h.healthy = healthy;
            h.incarnation_changed = changed.then_some(now - 1);
        });
        if let Ok(plan) = renew_decision(&host, now, &cfg) {
            prop_assert!(plan.condition_holds(Some(&host)));
            let next = plan.apply(&host);
            prop_assert_eq!(next.epoch, host.epoch);
            prop_assert!(next.expires_at_ms > host.expires_at_ms);
            prop_assert_eq!(next.expires_at_ms, host.last_seen_ms + cfg.lease_ms);
            prop_assert!(!plan.condition_holds(Some(&next)), "a renewal applies once");
        }
    }

    #[test]
    fn a_renewal_and_a_revocation_decided_on_one_record_never_both_take_effect(
        now in 100_000u64..1_000_000,
        seen_back in 0u64..=3_000,
        expiry_offset in 0u64..30_000,
        error in 0u64..=200,
        contender_ahead in any::<bool>(),
    ) {
        let cfg = timing();
        let host = tweak(live("h1"), |h| {
            h.last_seen_ms = now - seen_back;
            h.expires_at_ms = now + expiry_offset - 20_000;
            h.revoked_at_ms = 1_000;
        });
        let contender_now = other_clock(now, error, contender_ahead);
        if let (Ok(renew), Some(revoke)) = (
            renew_decision(&host, now, &cfg),
            revoke_decision(&host, contender_now, &cfg),
        ) {
            prop_assert!(renew.condition_holds(Some(&host)));
            prop_assert!(revoke.condition_holds(Some(&host)));
            let revoked = revoke.apply(Some(&host));
            prop_assert!(!renew.condition_holds(Some(&revoked)), "renewed after the revocation");
            let renewed = renew.apply(&host);
            prop_assert!(!revoke.condition_holds(Some(&renewed)), "revoked after the renewal");
        }
    }

    #[test]
    fn of_contenders_that_read_the_same_group_at_most_one_acquires(
        priorities in prop::collection::vec(0u32..3, 3),
        healthy in prop::collection::vec(any::<bool>(), 3),
        takeable_for in 0u64..6_000,
        state in 0u8..3,
    ) {
        let cfg = timing();
        let ids = ["h1", "h2", "h3"];
        let members: Vec<(&str, u32)> = ids.iter().copied().zip(priorities.iter().copied()).collect();
        let mut group = group_created_at(&members, NOW - takeable_for);
        group.epoch = GROUP_EPOCH;
        let mut hosts = hosts_of(
            ids.iter()
                .zip(&healthy)
                .map(|(id, ok)| tweak(live(id), |h| h.healthy = *ok)),
        );
        match state {
            0 => {}
            1 => {
                // Held by h4, revoked `takeable_for` ago and not back.
                group.members.insert(hid("h4"), Member::new("az-h4", 9));
                group.holder = Some(hid("h4"));
                group.holder_host_epoch = Some(HOST_EPOCH);
                hosts.insert(hid("h4"), tweak(live("h4"), |h| {
                    h.epoch = HOST_EPOCH.next();
                    h.revoked_at_ms = NOW - takeable_for;
                    h.expires_at_ms = NOW - 5_000;
                    h.last_seen_ms = NOW - 6_000;
                }));
            }
            _ => {
                // A v1 lease of h4 that became takeable `takeable_for` ago.
                group.holder = Some(hid("h4"));
                group.expires_at_ms = NOW - takeable_for - 201;
            }
        }
        let plans: Vec<AcquirePlan> = ids
            .iter()
            .filter_map(|id| acquire_decision(&group, &hosts, &hid(id), &inc("i1"), NOW, &cfg).ok())
            .collect();
        if let Some(best) = best_candidate(&group, &hosts, NOW, &cfg) {
            prop_assert!(plans.iter().any(|p| &p.host == best), "the best candidate {} may not acquire", best);
        }
        for a in &plans {
            prop_assert!(a.condition_holds(&group));
            let after = a.apply(&group);
            prop_assert_eq!(after.holder.as_ref(), Some(&a.host));
            prop_assert_eq!(after.holder_host_epoch, Some(hosts[&a.host].epoch));
            prop_assert_eq!(after.epoch, group.epoch.next());
            for b in &plans {
                prop_assert!(!b.condition_holds(&after), "{} and {} both acquired", a.host, b.host);
            }
        }
    }

    #[test]
    fn the_best_candidate_is_the_highest_priority_eligible_member_ties_to_the_smaller_id(
        priorities in prop::collection::vec(0u32..3, 4),
        healthy in prop::collection::vec(any::<bool>(), 4),
    ) {
        let ids = ["h1", "h2", "h3", "h4"];
        let members: Vec<(&str, u32)> = ids.iter().copied().zip(priorities.iter().copied()).collect();
        let group = group_of(&members);
        let hosts = hosts_of(
            ids.iter()
                .zip(&healthy)
                .map(|(id, ok)| tweak(live(id), |h| h.healthy = *ok)),
        );
        let mut expected: Option<(u32, &str)> = None;
        for ((id, p), ok) in ids.iter().zip(&priorities).zip(&healthy) {
            if *ok && expected.is_none_or(|(best, _)| *p > best) {
                expected = Some((*p, *id));
            }
        }
        let expected = expected.map(|(_, id)| hid(id));
        prop_assert_eq!(best_candidate(&group, &hosts, NOW, &timing()), expected.as_ref());
    }
}
