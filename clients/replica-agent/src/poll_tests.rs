use super::*;
use tenure::lease::protocol::Watched;
use tenure::lease::service::GroupError;
use tenure::lease::{CheckAnswer, LeaseConfig, Role};

const SEC: u64 = 1_000_000_000;

fn h(s: &str) -> HostId {
    HostId::parse(s).expect("valid host id")
}

fn g(s: &str) -> GroupId {
    GroupId::parse(s).expect("valid group id")
}

fn groups(n: usize) -> Vec<GroupId> {
    (0..n).map(|i| g(&format!("g{i:04}"))).collect()
}

fn config(n: usize) -> AgentConfig {
    AgentConfig::new(h("me"), groups(n), &LeaseConfig::default()).expect("valid config")
}

fn poll(n: usize) -> HostPoll {
    HostPoll::new(
        &config(n),
        Incarnation::parse("inc-1").expect("valid incarnation"),
        0,
    )
}

fn group_answer(group: &GroupId, holder: Option<&str>, epoch: u64, writable: bool) -> GroupEntry {
    GroupEntry::Answer(CheckAnswer {
        group_id: group.clone(),
        host_id: h("me"),
        role: if writable {
            Role::Primary
        } else {
            Role::Secondary
        },
        writable,
        epoch: Epoch(epoch),
        holder: holder.map(h),
        valid_for_ms: if writable { 9_000 } else { 0 },
        poll_after_ms: 500,
        draining: false,
        holder_host_epoch: holder.map(|_| Epoch(0)),
    })
}

fn answer(host_epoch: u64, valid_for_ms: u64, groups: Vec<GroupEntry>) -> HostAnswer {
    HostAnswer {
        host_id: h("me"),
        host_epoch: Epoch(host_epoch),
        valid_for_ms,
        poll_after_ms: 500,
        healthy: true,
        draining: false,
        attention: Vec::new(),
        groups,
        watched: Vec::new(),
    }
}

/// One check at `t` (seconds) answered by `make(body)` at `t` + 10 ms.
fn round(
    p: &mut HostPoll,
    t: u64,
    make: impl FnOnce(&HostCheckBody) -> HostAnswer,
) -> (HostCheckBody, Effects) {
    let mut bodies = p.next_checks(t * SEC, true);
    assert_eq!(bodies.len(), 1, "one check per poll");
    let body = bodies.remove(0);
    let a = make(&body);
    let effects = p.apply(&body, &a, t * SEC, t * SEC + 10_000_000);
    (body, effects)
}

#[test]
fn the_first_checks_read_every_group_500_at_a_time_and_heartbeat_once() {
    let mut p = poll(1_200);
    let bodies = p.next_checks(0, true);
    assert_eq!(bodies.len(), 3);
    assert_eq!(
        bodies.iter().map(|b| b.groups.len()).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    assert_eq!(bodies.iter().filter(|b| b.heartbeat).count(), 1);
    assert!(bodies
        .iter()
        .all(|b| b.incarnation.as_ref() == Some(p.incarnation())));
}

#[test]
fn a_primary_in_steady_state_asks_about_no_group_and_its_window_covers_them_all() {
    let mut p = poll(3);
    let all = groups(3);
    let (_, e) = round(&mut p, 0, |b| {
        answer(
            0,
            9_000,
            b.groups
                .iter()
                .map(|g| group_answer(g, Some("me"), 1, true))
                .collect(),
        )
    });
    assert_eq!(e.open.len(), 3);
    assert_eq!(e.deadline_ns, Some(window_ns(9_000)));
    let (body, e) = round(&mut p, 1, |_| answer(0, 9_000, Vec::new()));
    assert!(body.groups.is_empty(), "nothing to ask: {body:?}");
    assert!(body.watch_groups.is_empty());
    assert!(e.open.is_empty() && e.close.is_empty());
    assert_eq!(e.deadline_ns, Some(SEC + window_ns(9_000)));
    assert!(all.iter().all(|g| p.view(g).is_some_and(|v| v.open)));
}

#[test]
fn a_drain_of_the_whole_host_makes_a_steady_state_primary_read_what_it_holds() {
    let mut p = poll(4);
    let all = groups(4);
    // It holds three of the four; another host holds the last.
    round(&mut p, 0, |b| {
        let entries = b
            .groups
            .iter()
            .map(|g| {
                if *g == all[3] {
                    group_answer(g, Some("other"), 1, false)
                } else {
                    group_answer(g, Some("me"), 1, true)
                }
            })
            .collect();
        answer(0, 9_000, entries)
    });
    let (body, _) = round(&mut p, 1, |_| answer(0, 9_000, Vec::new()));
    assert!(body.groups.is_empty(), "steady state: {body:?}");
    // The host item says draining: the next check asks about the three it holds, once.
    round(&mut p, 2, |_| HostAnswer {
        draining: true,
        ..answer(0, 9_000, Vec::new())
    });
    let (body, _) = round(&mut p, 3, |b| HostAnswer {
        draining: true,
        ..answer(
            0,
            9_000,
            b.groups
                .iter()
                .map(|g| group_answer(g, Some("me"), 1, true))
                .collect(),
        )
    });
    assert_eq!(body.groups, all[..3].to_vec());
    let (body, _) = round(&mut p, 4, |_| HostAnswer {
        draining: true,
        ..answer(0, 9_000, Vec::new())
    });
    assert!(body.groups.is_empty(), "asked once per drain: {body:?}");
}

#[test]
fn heartbeats_go_every_third_of_the_heartbeat_timeout_and_reads_between() {
    let mut p = poll(1);
    let (b0, _) = round(&mut p, 0, |_| answer(0, 9_000, Vec::new()));
    assert!(b0.heartbeat);
    // heartbeat timeout 3 s: every 1 s.
    let b = p.next_checks(SEC / 2, true);
    assert!(!b[0].heartbeat);
    let b = p.next_checks(SEC, true);
    assert!(b[0].heartbeat);
}

#[test]
fn a_secondary_looks_at_a_live_holder_once_per_lease_not_every_poll() {
    let mut p = poll(2);
    round(&mut p, 0, |b| {
        answer(
            0,
            9_000,
            b.groups
                .iter()
                .map(|g| group_answer(g, Some("other"), 3, false))
                .collect(),
        )
    });
    // First look at once, carrying the holder's groups.
    let (body, _) = round(&mut p, 1, |_| {
        let mut a = answer(0, 9_000, Vec::new());
        a.watched.push(Watched {
            host_id: h("other"),
            host_epoch: Epoch(0),
            live: true,
            expires_in_ms: 8_000,
        });
        a
    });
    assert_eq!(body.watch_groups.len(), 1);
    assert_eq!(body.watch_groups[0].host_id, h("other"));
    assert_eq!(body.watch_groups[0].groups.len(), 2);
    // Not again until its lease plus the skew has passed.
    for t in 2..9 {
        let (body, _) = round(&mut p, t, |_| answer(0, 9_000, Vec::new()));
        assert!(body.watch_groups.is_empty(), "look at {t} s: {body:?}");
        assert!(body.groups.is_empty());
    }
    let (body, _) = round(&mut p, 10, |_| answer(0, 9_000, Vec::new()));
    assert_eq!(
        body.watch_groups.len(),
        1,
        "due at the answer (1.01 s) + 8 s + skew"
    );
    assert_eq!(body.watch_groups[0].host_epoch, Some(Epoch(0)));
}

#[test]
fn a_lapsed_holder_s_groups_are_read_at_the_next_check() {
    let mut p = poll(2);
    round(&mut p, 0, |b| {
        answer(
            0,
            9_000,
            b.groups
                .iter()
                .map(|g| group_answer(g, Some("other"), 3, false))
                .collect(),
        )
    });
    round(&mut p, 1, |_| {
        let mut a = answer(0, 9_000, Vec::new());
        a.watched.push(Watched {
            host_id: h("other"),
            host_epoch: Epoch(1),
            live: false,
            expires_in_ms: 0,
        });
        a
    });
    let body = &p.next_checks(2 * SEC, true)[0];
    assert_eq!(body.groups, groups(2));
}

#[test]
fn a_new_host_epoch_closes_every_gate_and_reads_everything() {
    let mut p = poll(2);
    round(&mut p, 0, |b| {
        answer(
            0,
            9_000,
            b.groups
                .iter()
                .map(|g| group_answer(g, Some("me"), 1, true))
                .collect(),
        )
    });
    let (_, e) = round(&mut p, 1, |_| answer(1, 9_000, Vec::new()));
    assert_eq!(e.host_epoch, Epoch(1));
    assert_eq!(e.close, groups(2));
    assert!(e.open.is_empty());
    assert_eq!(p.next_checks(2 * SEC, true)[0].groups, groups(2));
}

#[test]
fn no_window_closes_every_gate_and_opens_none() {
    let mut p = poll(1);
    let (_, e) = round(&mut p, 0, |b| {
        answer(0, 0, vec![group_answer(&b.groups[0], Some("me"), 1, true)])
    });
    assert_eq!(e.deadline_ns, None);
    assert!(e.open.is_empty());
}

#[test]
fn an_answer_to_a_check_sent_before_a_step_down_never_reopens_the_gate() {
    let mut p = poll(1);
    let group = g("g0000");
    round(&mut p, 0, |_| {
        answer(0, 9_000, vec![group_answer(&group, Some("me"), 1, true)])
    });
    // A check leaves at 1 s; the host steps down at 1.5 s; the answer (writable) arrives.
    let body = p.next_checks(SEC, true).remove(0);
    assert_eq!(
        p.step_down(&group, SEC + SEC / 2),
        Some((group.clone(), Epoch(1)))
    );
    let a = answer(0, 9_000, vec![group_answer(&group, Some("me"), 1, true)]);
    let e = p.apply(&body, &a, SEC, 2 * SEC);
    assert!(e.open.is_empty(), "{e:?}");
    assert!(e.release.is_empty());
    // A check sent after the step-down that still finds it ours: the release was lost.
    let (body, e) = round(&mut p, 3, |_| {
        answer(0, 9_000, vec![group_answer(&group, Some("me"), 1, true)])
    });
    assert_eq!(body.groups, vec![group.clone()], "read after the step-down");
    assert!(e.open.is_empty());
    assert_eq!(e.release, vec![(group.clone(), Epoch(1))]);
    // Released: the step-down is over; a later grant opens again.
    round(&mut p, 4, |_| {
        answer(0, 9_000, vec![group_answer(&group, None, 1, false)])
    });
    let (_, e) = round(&mut p, 5, |_| {
        answer(0, 9_000, vec![group_answer(&group, Some("me"), 2, true)])
    });
    assert_eq!(e.open, vec![(group, Epoch(2))]);
}

#[test]
fn a_drained_group_is_closed_and_released() {
    let mut p = poll(1);
    let group = g("g0000");
    round(&mut p, 0, |_| {
        answer(0, 9_000, vec![group_answer(&group, Some("me"), 1, true)])
    });
    let (_, e) = round(&mut p, 1, |_| {
        let mut entry = group_answer(&group, Some("me"), 1, true);
        if let GroupEntry::Answer(a) = &mut entry {
            a.draining = true;
        }
        answer(0, 9_000, vec![entry])
    });
    assert_eq!(e.close, vec![group.clone()]);
    assert_eq!(e.release, vec![(group.clone(), Epoch(1))]);
    assert!(!p.view(&group).is_some_and(|v| v.open));
}

#[test]
fn a_whole_host_step_down_releases_everything_and_reports_unhealthy() {
    let mut p = poll(3);
    round(&mut p, 0, |b| {
        answer(
            0,
            9_000,
            b.groups
                .iter()
                .map(|g| group_answer(g, Some("me"), 1, true))
                .collect(),
        )
    });
    let released = p.step_down_host(SEC);
    assert_eq!(released.len(), 3);
    let (body, e) = round(&mut p, 2, |b| {
        answer(
            0,
            9_000,
            b.groups
                .iter()
                .map(|g| group_answer(g, Some("me"), 1, true))
                .collect(),
        )
    });
    assert!(!body.healthy);
    assert!(e.open.is_empty());
    assert_eq!(e.deadline_ns, None, "a host in standby uses no window");
    p.resume();
    assert!(p.next_checks(3 * SEC, true)[0].healthy);
}

#[test]
fn late_checks_in_a_row_silence_the_heartbeat_until_one_is_on_time() {
    let mut p = poll(1);
    let late = config(1).late_answer;
    for i in 0..3u64 {
        let t = i * 10 * SEC;
        let body = p.next_checks(t, true).remove(0);
        assert!(body.heartbeat, "check {i} still heartbeats");
        p.apply(&body, &answer(0, 9_000, Vec::new()), t, t + nanos(late) + 1);
    }
    assert!(p.silenced());
    let body = p.next_checks(100 * SEC, true).remove(0);
    assert!(!body.heartbeat, "silenced: {body:?}");
    p.apply(
        &body,
        &answer(0, 9_000, Vec::new()),
        100 * SEC,
        100 * SEC + 1,
    );
    assert!(!p.silenced());
    assert!(p.next_checks(102 * SEC, true)[0].heartbeat);
    // Timeouts count too.
    p.timed_out();
    p.timed_out();
    p.timed_out();
    assert!(p.silenced());
}

#[test]
fn every_group_is_read_again_at_the_resync_interval() {
    let mut p = poll(2);
    round(&mut p, 0, |b| {
        answer(
            0,
            9_000,
            b.groups
                .iter()
                .map(|g| group_answer(g, Some("me"), 1, true))
                .collect(),
        )
    });
    assert!(p.next_checks(599 * SEC, true)[0].groups.is_empty());
    assert_eq!(p.next_checks(600 * SEC, true)[0].groups, groups(2));
}

#[test]
fn a_group_that_is_gone_or_no_longer_ours_is_closed_released_and_not_asked_again() {
    let mut p = poll(2);
    let [a, b] = [g("g0000"), g("g0001")];
    round(&mut p, 0, |_| {
        answer(
            0,
            9_000,
            vec![
                group_answer(&a, Some("me"), 1, true),
                group_answer(&b, Some("me"), 4, true),
            ],
        )
    });
    let (_, e) = round(&mut p, 1, |_| {
        let err = |group: &GroupId, code: &str| GroupEntry::Error {
            group_id: group.to_string(),
            error: GroupError {
                code: code.into(),
                message: "x".into(),
            },
        };
        answer(
            0,
            9_000,
            vec![err(&a, "not_member"), err(&b, "store_unavailable")],
        )
    });
    assert_eq!(e.close, vec![a.clone()]);
    assert_eq!(e.release, vec![(a.clone(), Epoch(1))]);
    assert!(
        p.view(&b).is_some_and(|v| v.open),
        "a store error ends no grant"
    );
    assert!(p.view(&a).is_some_and(|v| v.error.is_some()));
    assert!(!p.asking(&a));
}

#[test]
fn a_group_nobody_holds_is_asked_about_at_every_check() {
    let mut p = poll(1);
    let group = g("g0000");
    for t in 0..3 {
        let (body, _) = round(&mut p, t, |_| {
            answer(0, 9_000, vec![group_answer(&group, None, 0, false)])
        });
        assert_eq!(body.groups, vec![group.clone()]);
    }
}

#[test]
fn a_lapsed_holder_s_groups_not_settled_in_the_look_make_the_next_check_urgent() {
    let mut p = poll(3);
    round(&mut p, 0, |b| {
        answer(
            0,
            9_000,
            b.groups
                .iter()
                .map(|g| group_answer(g, Some("other"), 3, false))
                .collect(),
        )
    });
    // The look settles g0000 (now ours) but not the others (more than one call's worth).
    let (_, e) = round(&mut p, 1, |_| {
        let mut a = answer(
            0,
            9_000,
            vec![group_answer(&g("g0000"), Some("me"), 4, true)],
        );
        a.watched.push(Watched {
            host_id: h("other"),
            host_epoch: Epoch(1),
            live: false,
            expires_in_ms: 0,
        });
        a
    });
    assert_eq!(e.open, vec![(g("g0000"), Epoch(4))]);
    assert!(p.urgent());
    let body = p.next_checks(SEC + 1, true).remove(0);
    assert_eq!(body.groups, vec![g("g0001"), g("g0002")]);
    assert!(!p.urgent(), "cleared once the check is planned");
}
