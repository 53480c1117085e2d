//! Checks the hosts' gate logs (`replica_agent::gate_log`, which proves no two hosts could
//! write at once) against the leadership history that lease-history keeps.

use replica_agent::gate_log::WritableInterval;
use std::collections::BTreeMap;

/// How the gate logs and the leadership history (`LeaseHistory`) agree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryAgreement {
    /// Gate intervals whose grant (group, epoch, holder) the history has.
    pub matched: usize,
    /// Gate intervals the history lacks: a grant changed without a trace. Must be none.
    pub missing: Vec<WritableInterval>,
    /// Acquisitions no gate ever opened for: the holder acquired in a check whose answer it
    /// never used (it arrived after the host's deadline, the host was paused or killed before
    /// reading it, or the grant was revoked before the next poll). Counted, not an error.
    pub unopened: Vec<(String, u64, String)>,
    /// Groups whose history is not in epoch order with non-decreasing times.
    pub out_of_order: Vec<String>,
}

/// Compares every writable interval of the gate logs with the history of its group (each
/// group's entries as `tenurectl lease history` lists them, oldest first).
pub fn compare_history(
    intervals: &[WritableInterval],
    history: &BTreeMap<String, Vec<tenure::lease::history::HistoryEntry>>,
) -> HistoryAgreement {
    use tenure::lease::history::Change;
    let mut agreement = HistoryAgreement::default();
    let acquisitions = |group: &str| -> Vec<(u64, String)> {
        history
            .get(group)
            .into_iter()
            .flatten()
            .filter(|e| e.change == Change::Acquired)
            .map(|e| {
                (
                    e.epoch.0,
                    e.holder.as_ref().map(|h| h.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    };
    let mut opened: std::collections::BTreeSet<(String, u64, String)> = Default::default();
    for interval in intervals {
        let grant = (interval.epoch, interval.host.clone());
        if acquisitions(&interval.group).contains(&grant) {
            agreement.matched += 1;
        } else {
            agreement.missing.push(interval.clone());
        }
        opened.insert((
            interval.group.clone(),
            interval.epoch,
            interval.host.clone(),
        ));
    }
    for (group, entries) in history {
        let ordered = entries
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].epoch <= w[1].epoch && w[0].at_ms <= w[1].at_ms);
        if !ordered {
            agreement.out_of_order.push(group.clone());
        }
        for (epoch, holder) in acquisitions(group) {
            if !opened.contains(&(group.clone(), epoch, holder.clone())) {
                agreement.unopened.push((group.clone(), epoch, holder));
            }
        }
    }
    agreement
}

#[cfg(test)]
mod history_tests {
    use super::*;
    use tenure::ids::{GroupId, HostId};
    use tenure::lease::history::{Change, HistoryEntry};
    use tenure::lease::Epoch;

    fn interval(host: &str, epoch: u64, start_ns: u64) -> WritableInterval {
        WritableInterval {
            host: host.into(),
            group: "g".into(),
            epoch,
            start_ns,
            end_ns: start_ns + 10,
        }
    }

    fn acquired(holder: &str, epoch: u64, at_ms: u64) -> HistoryEntry {
        HistoryEntry {
            group_id: GroupId::parse("g").unwrap(),
            seq: epoch * 4,
            change: Change::Acquired,
            epoch: Epoch(epoch),
            holder: Some(HostId::parse(holder).unwrap()),
            holder_host_epoch: Some(Epoch(0)),
            previous: None,
            drained: false,
            at_ms,
        }
    }

    #[test]
    fn gate_intervals_are_matched_missing_or_the_history_has_more() {
        let intervals = [
            interval("a", 1, 0),
            interval("b", 2, 100),
            interval("c", 4, 200),
        ];
        let history = BTreeMap::from([(
            "g".to_owned(),
            vec![
                acquired("a", 1, 10),
                acquired("b", 2, 20),
                acquired("a", 3, 30),
            ],
        )]);
        let agreement = compare_history(&intervals, &history);
        assert_eq!(agreement.matched, 2);
        assert_eq!(agreement.missing, vec![interval("c", 4, 200)]);
        assert_eq!(
            agreement.unopened,
            vec![("g".to_owned(), 3, "a".to_owned())]
        );
        assert!(agreement.out_of_order.is_empty());
        let shuffled = BTreeMap::from([(
            "g".to_owned(),
            vec![acquired("b", 2, 20), acquired("a", 1, 10)],
        )]);
        assert_eq!(
            compare_history(&[], &shuffled).out_of_order,
            vec!["g".to_owned()]
        );
    }
}
