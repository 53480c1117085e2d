//! Reads gate logs back and proves from them that no two hosts could write one group at once
//! and that each new primaryship has a higher epoch.
//!
//! A host's writable intervals are built conservatively: an interval starts at a grant line
//! (logged before the gate opened) and ends at the grant's deadline, cut short only by a later
//! role-change line away from primary (logged after the gate closed) or by the host's death.
//! Both ends can only overstate the real window, so "no overlap" here implies no overlap in
//! fact.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A gate log that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
}

/// One line of a gate log (see the module above for the kinds).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GateEvent {
    pub t_ns: u64,
    pub host: String,
    pub state: String,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub epoch: Option<u64>,
    #[serde(default)]
    pub host_epoch: Option<u64>,
    #[serde(default)]
    pub deadline_ns: Option<u64>,
}

/// When one host could write one group, and with which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritableInterval {
    pub host: String,
    pub group: String,
    pub epoch: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two hosts could write one group at once.
    Overlap(WritableInterval, WritableInterval),
    /// A later primaryship of a group did not have a higher epoch.
    EpochNotIncreasing(WritableInterval, WritableInterval),
}

/// Reads one host's log.
pub fn read_log(path: &Path) -> Result<Vec<GateEvent>, CheckError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CheckError::Read {
        path: name.clone(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| CheckError::Parse {
                path: name.clone(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// A gate open from `start_ns` (its `open` line) until a later line moved the group away from
/// primary, under one host epoch.
struct OpenGate {
    group: String,
    epoch: u64,
    host_epoch: u64,
    start_ns: u64,
    end_ns: u64,
}

/// One process's writable intervals, every group, from its events in log order; `died_ns`
/// ends everything (a killed process writes nothing more).
///
/// A group may be written while its gate is open and the host window of the host epoch it was
/// opened under lasts. Gates open at their `open` line (logged before the gate opens) and close
/// at the first later line about the group that is not `primary` (logged after the gate
/// closed). A window line (logged before the window is extended) makes its host epoch's window
/// usable from its `t_ns` to its `deadline_ns`. The writable time of a gate is its open span
/// intersected with the union of its host epoch's window spans: every end can only overstate
/// the real window, so "no overlap" here implies no overlap in fact.
pub fn writable_intervals(events: &[GateEvent], died_ns: Option<u64>) -> Vec<WritableInterval> {
    let end_of_time = died_ns.unwrap_or(u64::MAX);
    let mut windows: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    let mut open: BTreeMap<String, OpenGate> = BTreeMap::new();
    let mut gates: Vec<OpenGate> = Vec::new();
    for e in events {
        match (e.state.as_str(), &e.group) {
            ("window", _) => {
                if let (Some(h), Some(d)) = (e.host_epoch, e.deadline_ns) {
                    windows.entry(h).or_default().push((e.t_ns, d));
                }
            }
            ("open", Some(group)) => {
                let (Some(epoch), Some(host_epoch)) = (e.epoch, e.host_epoch) else {
                    continue;
                };
                match open.get(group) {
                    Some(g) if g.epoch == epoch && g.host_epoch == host_epoch => {}
                    _ => {
                        if let Some(mut previous) = open.remove(group) {
                            previous.end_ns = e.t_ns;
                            gates.push(previous);
                        }
                        open.insert(
                            group.clone(),
                            OpenGate {
                                group: group.clone(),
                                epoch,
                                host_epoch,
                                start_ns: e.t_ns,
                                end_ns: end_of_time,
                            },
                        );
                    }
                }
            }
            ("primary", _) => {}
            (_, Some(group)) => {
                if let Some(mut gate) = open.remove(group) {
                    gate.end_ns = e.t_ns;
                    gates.push(gate);
                }
            }
            _ => {}
        }
    }
    gates.extend(open.into_values());
    let mut out = Vec::new();
    for gate in gates {
        let end = gate.end_ns.min(end_of_time);
        let spans = merged(
            windows
                .get(&gate.host_epoch)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        );
        for (from, to) in spans {
            let (start, stop) = (from.max(gate.start_ns), to.min(end));
            if start < stop {
                out.push(WritableInterval {
                    host: events.first().map(|e| e.host.clone()).unwrap_or_default(),
                    group: gate.group.clone(),
                    epoch: gate.epoch,
                    start_ns: start,
                    end_ns: stop,
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.group, a.start_ns).cmp(&(&b.group, b.start_ns)));
    out
}

/// The intervals as a picture (`tenure::timeline`): one row per group, a bar per host's
/// writable interval, grey where nobody could write, red where two hosts could.
pub fn timeline(title: &str, intervals: &[WritableInterval]) -> tenure::timeline::Timeline {
    let mut timeline =
        tenure::timeline::Timeline::new(title, "writable, from the hosts' gate logs");
    for i in intervals {
        timeline.add(
            i.group.clone(),
            tenure::timeline::Span {
                holder: i.host.clone(),
                epoch: i.epoch,
                start_ns: i.start_ns,
                end_ns: i.end_ns,
            },
        );
    }
    timeline
}

/// The union of `[from, to)` spans, as disjoint spans in order.
fn merged(spans: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut sorted = spans.to_vec();
    sorted.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (from, to) in sorted {
        match out.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => out.push((from, to)),
        }
    }
    out
}

/// Per group: every pair of intervals of different hosts that overlap, and every later
/// primaryship whose epoch is not higher than an earlier one's.
pub fn violations(intervals: &[WritableInterval]) -> Vec<Violation> {
    let mut by_group: BTreeMap<&str, Vec<WritableInterval>> = BTreeMap::new();
    for i in intervals {
        by_group.entry(&i.group).or_default().push(i.clone());
    }
    by_group
        .into_values()
        .flat_map(|group| group_violations(&group))
        .collect()
}

fn group_violations(intervals: &[WritableInterval]) -> Vec<Violation> {
    let mut sorted = intervals.to_vec();
    sorted.sort_by_key(|i| (i.start_ns, i.end_ns));
    let mut found = Vec::new();
    for (n, a) in sorted.iter().enumerate() {
        for b in &sorted[n + 1..] {
            if b.start_ns >= a.end_ns {
                break;
            }
            if a.host != b.host {
                found.push(Violation::Overlap(a.clone(), b.clone()));
            }
        }
    }
    // One primaryship per epoch: the first interval of each epoch, in time order.
    let mut first_of_epoch: BTreeMap<u64, &WritableInterval> = BTreeMap::new();
    for i in &sorted {
        first_of_epoch.entry(i.epoch).or_insert(i);
    }
    let mut by_start: Vec<&WritableInterval> = first_of_epoch.into_values().collect();
    by_start.sort_by_key(|i| i.start_ns);
    for pair in by_start.windows(2) {
        if pair[1].epoch <= pair[0].epoch {
            found.push(Violation::EpochNotIncreasing(
                pair[0].clone(),
                pair[1].clone(),
            ));
        }
    }
    // An epoch that reappears at a later time under another host.
    for (n, a) in sorted.iter().enumerate() {
        if let Some(b) = sorted[n + 1..]
            .iter()
            .find(|b| b.epoch == a.epoch && b.host != a.host)
        {
            found.push(Violation::EpochNotIncreasing(a.clone(), b.clone()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(host: &str, t: u64, host_epoch: u64, deadline: u64) -> GateEvent {
        GateEvent {
            t_ns: t,
            host: host.into(),
            state: "window".into(),
            group: None,
            epoch: None,
            host_epoch: Some(host_epoch),
            deadline_ns: Some(deadline),
        }
    }

    fn open(host: &str, t: u64, group: &str, epoch: u64, host_epoch: u64) -> GateEvent {
        GateEvent {
            t_ns: t,
            host: host.into(),
            state: "open".into(),
            group: Some(group.into()),
            epoch: Some(epoch),
            host_epoch: Some(host_epoch),
            deadline_ns: None,
        }
    }

    fn role(host: &str, t: u64, group: &str, state: &str) -> GateEvent {
        GateEvent {
            t_ns: t,
            host: host.into(),
            state: state.into(),
            group: Some(group.into()),
            epoch: Some(1),
            host_epoch: None,
            deadline_ns: None,
        }
    }

    fn interval(host: &str, group: &str, epoch: u64, start: u64, end: u64) -> WritableInterval {
        WritableInterval {
            host: host.into(),
            group: group.into(),
            epoch,
            start_ns: start,
            end_ns: end,
        }
    }

    #[test]
    fn one_window_covers_every_open_group_and_a_role_change_cuts_one_short() {
        let events = [
            open("a", 10, "g1", 1, 0),
            open("a", 10, "g2", 4, 0),
            window("a", 11, 0, 100),
            role("a", 12, "g1", "primary"),
            window("a", 50, 0, 150),
            role("a", 120, "g1", "secondary"),
        ];
        assert_eq!(
            writable_intervals(&events, None),
            vec![
                interval("a", "g1", 1, 11, 120),
                interval("a", "g2", 4, 11, 150)
            ]
        );
    }

    #[test]
    fn a_closed_line_ends_the_gate_before_its_window_does() {
        let events = [
            open("a", 10, "g1", 1, 0),
            window("a", 11, 0, 100),
            role("a", 40, "g1", "closed"),
        ];
        let b = [open("b", 50, "g1", 2, 0), window("b", 50, 0, 200)];
        let mut all = writable_intervals(&events, None);
        assert_eq!(all, vec![interval("a", "g1", 1, 11, 40)]);
        all.extend(writable_intervals(&b, None));
        assert!(violations(&all).is_empty());
    }

    #[test]
    fn a_window_logged_before_a_gate_opened_covers_it_from_its_open_line() {
        let events = [window("a", 5, 0, 100), open("a", 40, "g1", 2, 0)];
        assert_eq!(
            writable_intervals(&events, None),
            vec![interval("a", "g1", 2, 40, 100)]
        );
    }

    #[test]
    fn a_gate_of_an_old_host_epoch_gets_nothing_from_a_new_epoch_s_window() {
        let events = [
            open("a", 10, "g1", 1, 0),
            window("a", 10, 0, 100),
            window("a", 200, 1, 300),
        ];
        assert_eq!(
            writable_intervals(&events, None),
            vec![interval("a", "g1", 1, 10, 100)]
        );
    }

    #[test]
    fn a_paused_host_is_writable_only_until_its_last_deadline() {
        let a = writable_intervals(
            &[
                open("a", 10, "g1", 1, 0),
                window("a", 10, 0, 100),
                window("a", 50, 0, 150),
                role("a", 900, "g1", "unknown"),
            ],
            None,
        );
        let b = writable_intervals(
            &[open("b", 400, "g1", 2, 0), window("b", 400, 0, 500)],
            None,
        );
        assert_eq!(a[0].end_ns, 150);
        assert!(violations(&[a, b].concat()).is_empty());
    }

    #[test]
    fn overlapping_hosts_in_one_group_are_reported_and_other_groups_are_not() {
        let a = writable_intervals(&[open("a", 10, "g1", 1, 0), window("a", 10, 0, 100)], None);
        let b = writable_intervals(
            &[
                open("b", 90, "g1", 2, 0),
                open("b", 90, "g2", 1, 0),
                window("b", 90, 0, 200),
            ],
            None,
        );
        let found = violations(&[a, b].concat());
        assert!(
            matches!(found.as_slice(), [Violation::Overlap(x, y)] if x.host == "a" && y.host == "b" && x.group == "g1"),
            "{found:?}"
        );
    }

    #[test]
    fn the_timeline_draws_each_interval_and_the_gap_between_hosts() {
        let mut all =
            writable_intervals(&[open("a", 10, "g1", 1, 0), window("a", 10, 0, 100)], None);
        all.extend(writable_intervals(
            &[open("b", 150, "g1", 2, 0), window("b", 150, 0, 300)],
            None,
        ));
        let picture = timeline("t", &all);
        assert_eq!(picture.span_count(), 2);
        assert_eq!(
            picture
                .gaps()
                .iter()
                .map(|g| (g.start_ns, g.end_ns))
                .collect::<Vec<_>>(),
            vec![(100, 150)]
        );
        assert!(picture.overlaps().is_empty());
    }

    #[test]
    fn death_ends_every_interval() {
        let a = writable_intervals(
            &[open("a", 10, "g1", 1, 0), window("a", 10, 0, 100)],
            Some(40),
        );
        assert_eq!(a[0].end_ns, 40);
        let b = writable_intervals(&[open("b", 50, "g1", 2, 0), window("b", 50, 0, 60)], None);
        assert!(violations(&[a, b].concat()).is_empty());
    }

    #[test]
    fn a_later_primaryship_with_a_lower_or_equal_epoch_is_reported() {
        let a = vec![interval("a", "g1", 5, 10, 100)];
        let b = vec![interval("b", "g1", 4, 200, 300)];
        assert!(matches!(
            violations(&[a.clone(), b].concat()).as_slice(),
            [Violation::EpochNotIncreasing(..)]
        ));
        let c = vec![interval("c", "g1", 5, 200, 300)];
        assert!(!violations(&[a.clone(), c].concat()).is_empty());
        let other_group = vec![interval("c", "g2", 1, 200, 300)];
        assert!(violations(&[a, other_group].concat()).is_empty());
    }

    #[test]
    fn the_same_host_regaining_a_group_needs_a_new_epoch_only_after_a_gap() {
        let a = writable_intervals(
            &[
                open("a", 10, "g1", 1, 0),
                window("a", 10, 0, 100),
                role("a", 100, "g1", "unknown"),
                open("a", 300, "g1", 2, 0),
                window("a", 300, 0, 400),
            ],
            None,
        );
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(violations(&a).is_empty());
    }
}
