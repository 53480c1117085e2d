//! Proves from the hosts' gate logs (see [`crate::gate_log`]) that no two hosts could write at
//! once and that each new primaryship has a higher epoch.
//!
//! A host's writable intervals are built conservatively: an interval starts at a grant line
//! (logged before the gate opened) and ends at the grant's deadline, cut short only by a later
//! role-change line away from primary (logged after the gate closed) or by the host's death.
//! Both ends can only overstate the real window, so "no overlap" here implies no overlap in
//! fact.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

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

/// One line of a gate log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GateEvent {
    pub t_ns: u64,
    pub host: String,
    pub state: String,
    pub epoch: Option<u64>,
    pub deadline_ns: Option<u64>,
}

/// When one host could write, and with which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritableInterval {
    pub host: String,
    pub epoch: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two hosts could write at once.
    Overlap(WritableInterval, WritableInterval),
    /// A later primaryship did not have a higher epoch.
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

/// One host's writable intervals from its events in log order; `died_ns` ends everything (a
/// killed process writes nothing more).
pub fn writable_intervals(events: &[GateEvent], died_ns: Option<u64>) -> Vec<WritableInterval> {
    let mut out = Vec::new();
    let mut open: Option<WritableInterval> = None;
    for event in events {
        match (event.state.as_str(), event.epoch, event.deadline_ns) {
            ("grant", Some(epoch), Some(deadline)) => match open.as_mut() {
                // The same primaryship, extended while it was still open.
                Some(current) if current.epoch == epoch && event.t_ns <= current.end_ns => {
                    current.end_ns = current.end_ns.max(deadline);
                }
                _ => {
                    out.extend(open.take());
                    open = Some(WritableInterval {
                        host: event.host.clone(),
                        epoch,
                        start_ns: event.t_ns,
                        end_ns: deadline,
                    });
                }
            },
            ("primary", _, _) | ("grant", _, _) => {}
            // secondary / unknown: the gate closed no later than this line.
            _ => {
                if let Some(mut current) = open.take() {
                    current.end_ns = current.end_ns.min(event.t_ns);
                    out.push(current);
                }
            }
        }
    }
    out.extend(open);
    if let Some(died) = died_ns {
        out.retain(|i| i.start_ns < died);
        for i in &mut out {
            i.end_ns = i.end_ns.min(died);
        }
    }
    out
}

/// Every pair of intervals of different hosts that overlap, and every later primaryship whose
/// epoch is not higher than an earlier one's.
pub fn violations(intervals: &[WritableInterval]) -> Vec<Violation> {
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

    fn grant(host: &str, t: u64, epoch: u64, deadline: u64) -> GateEvent {
        GateEvent {
            t_ns: t,
            host: host.into(),
            state: "grant".into(),
            epoch: Some(epoch),
            deadline_ns: Some(deadline),
        }
    }

    fn role(host: &str, t: u64, state: &str) -> GateEvent {
        GateEvent {
            t_ns: t,
            host: host.into(),
            state: state.into(),
            epoch: Some(1),
            deadline_ns: None,
        }
    }

    #[test]
    fn grants_of_one_primaryship_merge_and_a_role_change_cuts_them_short() {
        let events = [
            grant("a", 10, 1, 100),
            role("a", 11, "primary"),
            grant("a", 50, 1, 150),
            role("a", 120, "secondary"),
        ];
        assert_eq!(
            writable_intervals(&events, None),
            vec![WritableInterval {
                host: "a".into(),
                epoch: 1,
                start_ns: 10,
                end_ns: 120
            }]
        );
    }

    #[test]
    fn a_paused_host_is_writable_only_until_its_last_deadline() {
        // Stopped after the grant at 50; its next line (after SIGCONT) comes at 900.
        let a = writable_intervals(
            &[
                grant("a", 10, 1, 100),
                grant("a", 50, 1, 150),
                role("a", 900, "unknown"),
            ],
            None,
        );
        let b = writable_intervals(&[grant("b", 400, 2, 500)], None);
        assert_eq!(a[0].end_ns, 150);
        assert!(violations(&[a, b].concat()).is_empty());
    }

    #[test]
    fn overlapping_hosts_are_reported() {
        let a = writable_intervals(&[grant("a", 10, 1, 100)], None);
        let b = writable_intervals(&[grant("b", 90, 2, 200)], None);
        let found = violations(&[a, b].concat());
        assert!(
            matches!(found.as_slice(), [Violation::Overlap(x, y)] if x.host == "a" && y.host == "b")
        );
    }

    #[test]
    fn death_ends_every_interval() {
        let a = writable_intervals(&[grant("a", 10, 1, 100)], Some(40));
        assert_eq!(a[0].end_ns, 40);
        let b = writable_intervals(&[grant("b", 50, 2, 60)], None);
        assert!(violations(&[a, b].concat()).is_empty());
    }

    #[test]
    fn a_later_primaryship_with_a_lower_or_equal_epoch_is_reported() {
        let a = writable_intervals(&[grant("a", 10, 5, 100)], None);
        let b = writable_intervals(&[grant("b", 200, 4, 300)], None);
        assert!(matches!(
            violations(&[a.clone(), b].concat()).as_slice(),
            [Violation::EpochNotIncreasing(..)]
        ));
        let c = writable_intervals(&[grant("c", 200, 5, 300)], None);
        assert!(!violations(&[a, c].concat()).is_empty());
    }

    #[test]
    fn the_same_host_regaining_the_lease_needs_a_new_epoch_only_after_a_gap() {
        let a = writable_intervals(
            &[
                grant("a", 10, 1, 100),
                role("a", 100, "unknown"),
                grant("a", 300, 2, 400),
            ],
            None,
        );
        assert_eq!(a.len(), 2);
        assert!(violations(&a).is_empty());
    }
}
