//! Leadership history: each change of a group's grant, with why the previous grant ended.
//!
//! Derived from the Leases table's change stream (old and new image of a group item), not
//! written by the check: an acquisition stays one conditional write, and a revocation, which
//! ends every grant of a host with one write to its host item, writes no group item at all.
//! Its groups' entries come with their next acquisition, which names the host epoch the
//! revocation ended. The stream delivers one item's changes in order and retries until they
//! are processed, so no change is missed; entries are keyed by `(group_id, seq)` so a retry
//! writes the same entry again, never a second one.
//!
//! Pure: the function that runs it (`lease-history`) reads the stream, asks the host's drain
//! state where a release's reason needs it, stores the entry and publishes it.

use super::record::{Epoch, LeaseRecord};
use crate::ids::{GroupId, HostId};
use crate::Millis;
use serde::{Deserialize, Serialize};

/// What happened to the grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Acquired,
    Released,
    Deleted,
}

/// Why the grant before an acquisition ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum PreviousEnd {
    /// The group had never been held.
    FirstHolder,
    /// Its holder released it (a planned step-down).
    Released { holder: HostId, epoch: Epoch },
    /// Its holder released it because an operator drained the member or the host.
    Drained { holder: HostId, epoch: Epoch },
    /// Its holder's host lease lapsed and was revoked: `host_epoch` is the host epoch the
    /// revocation ended (the grant's `holder_host_epoch`).
    Revoked {
        holder: HostId,
        epoch: Epoch,
        host_epoch: Epoch,
    },
    /// A lease taken under protocol v1 ran out (its own `expires_at_ms`).
    Expired { holder: HostId, epoch: Epoch },
    /// The group was free with no release on record: created again after a delete.
    Unheld { epoch: Epoch },
}

/// One entry of a group's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub group_id: GroupId,
    /// Orders a group's entries: `4 * epoch` for the acquisition at `epoch`, `4 * epoch + 1`
    /// for its release, `4 * epoch + 2` for a delete of the group at that epoch. The table's
    /// sort key, unique per group.
    pub seq: u64,
    pub change: Change,
    /// The group's fencing epoch of the grant this entry is about.
    pub epoch: Epoch,
    /// The new holder (acquired), or the holder that released (released, deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<HostId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_host_epoch: Option<Epoch>,
    /// For an acquisition: how the grant before it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousEnd>,
    /// For a release: whether an operator's drain asked for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
    /// When the change was written (the item's `updated_at_ms`, on the function's clock).
    pub at_ms: Millis,
}

impl HistoryEntry {
    fn seq_of(change: Change, epoch: Epoch) -> u64 {
        let base = epoch.0.saturating_mul(4);
        match change {
            Change::Acquired => base,
            Change::Released => base.saturating_add(1),
            // A delete may follow the release of the same grant: a slot of its own.
            Change::Deleted => base.saturating_add(2),
        }
    }
}

/// The member that released the group most recently, as a free item records it: its
/// `released_at_ms` is the item's `free_since_ms`.
fn last_releaser(free: &LeaseRecord) -> Option<&HostId> {
    let since = free.free_since_ms?;
    free.members
        .iter()
        .find(|(_, m)| m.released_at_ms == Some(since))
        .map(|(h, _)| h)
}

/// The host whose drain state decides between "released" and "drained" for this change, if
/// any: the releaser of a release, or of the release an acquisition follows. The caller reads
/// that host's `draining` flag (a host drain is on the host item, not the group's).
pub fn drain_question(old: Option<&LeaseRecord>, new: &LeaseRecord) -> Option<HostId> {
    let old = old?;
    match (&old.holder, &new.holder) {
        (Some(h), None) if old.epoch == new.epoch && !new.deleted => Some(h.clone()),
        (None, Some(_)) if old.epoch != new.epoch => last_releaser(old).cloned(),
        _ => None,
    }
}

/// The history entry for one change of a group item (`old` is `None` for a new item), or
/// `None` for a change that moves no grant (a heartbeat of v1 fields, membership, a drain
/// flag, attention). `host_draining` answers [`drain_question`].
pub fn entry_for(
    old: Option<&LeaseRecord>,
    new: &LeaseRecord,
    host_draining: bool,
) -> Option<HistoryEntry> {
    let entry = |change: Change,
                 epoch: Epoch,
                 holder: Option<HostId>,
                 holder_host_epoch: Option<Epoch>| HistoryEntry {
        group_id: new.group_id.clone(),
        seq: HistoryEntry::seq_of(change, epoch),
        change,
        epoch,
        holder,
        holder_host_epoch,
        previous: None,
        drained: false,
        at_ms: new.updated_at_ms,
    };
    if new.deleted {
        return match old {
            Some(o) if !o.deleted => Some(entry(
                Change::Deleted,
                o.epoch,
                o.holder.clone(),
                o.holder_host_epoch,
            )),
            _ => None,
        };
    }
    if let Some(holder) = &new.holder {
        if old.is_some_and(|o| o.epoch == new.epoch) {
            return None;
        }
        let previous = match old {
            None => PreviousEnd::FirstHolder,
            Some(o) => match (&o.holder, o.holder_host_epoch) {
                (Some(h), Some(host_epoch)) => PreviousEnd::Revoked {
                    holder: h.clone(),
                    epoch: o.epoch,
                    host_epoch,
                },
                (Some(h), None) => PreviousEnd::Expired {
                    holder: h.clone(),
                    epoch: o.epoch,
                },
                (None, _) => match last_releaser(o) {
                    Some(h) if host_draining || o.member(h).is_some_and(|m| m.draining) => {
                        PreviousEnd::Drained {
                            holder: h.clone(),
                            epoch: o.epoch,
                        }
                    }
                    Some(h) => PreviousEnd::Released {
                        holder: h.clone(),
                        epoch: o.epoch,
                    },
                    None if o.epoch == Epoch(0) => PreviousEnd::FirstHolder,
                    None => PreviousEnd::Unheld { epoch: o.epoch },
                },
            },
        };
        let mut acquired = entry(
            Change::Acquired,
            new.epoch,
            Some(holder.clone()),
            new.holder_host_epoch,
        );
        acquired.previous = Some(previous);
        return Some(acquired);
    }
    let old = old?;
    let releaser = old.holder.as_ref()?;
    if old.epoch != new.epoch {
        return None;
    }
    let mut released = entry(
        Change::Released,
        old.epoch,
        Some(releaser.clone()),
        old.holder_host_epoch,
    );
    released.drained = host_draining || old.member(releaser).is_some_and(|m| m.draining);
    Some(released)
}

/// The old and new group item of one Leases stream record (DynamoDB's JSON for each image;
/// an absent or empty image is `None`), or why they cannot be read.
pub fn images(
    record: &serde_json::Value,
) -> Result<(Option<LeaseRecord>, Option<LeaseRecord>), String> {
    crate::stream::images(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::record::Member;
    use std::collections::BTreeMap;

    const T0: Millis = 1_800_000_000_000;

    fn host(id: &str) -> HostId {
        HostId::parse(id).unwrap()
    }

    fn free_group() -> LeaseRecord {
        let members: BTreeMap<HostId, Member> = [("a", 2), ("b", 1)]
            .into_iter()
            .map(|(h, p)| (host(h), Member::new("az", p)))
            .collect();
        LeaseRecord::new_group(GroupId::parse("orders").unwrap(), 10_000, members, T0)
    }

    fn acquired(mut g: LeaseRecord, by: &str, host_epoch: u64, at: Millis) -> LeaseRecord {
        g.holder = Some(host(by));
        g.holder_host_epoch = Some(Epoch(host_epoch));
        g.epoch = g.epoch.next();
        g.updated_at_ms = at;
        g
    }

    fn released(mut g: LeaseRecord, at: Millis) -> LeaseRecord {
        let h = g.holder.take().unwrap();
        g.holder_host_epoch = None;
        g.free_since_ms = Some(at);
        g.members.get_mut(&h).unwrap().released_at_ms = Some(at);
        g.updated_at_ms = at;
        g
    }

    #[test]
    fn the_first_acquisition_has_no_previous_holder() {
        let g = free_group();
        let a = acquired(g.clone(), "a", 0, T0 + 5);
        let e = entry_for(Some(&g), &a, false).unwrap();
        assert_eq!(e.change, Change::Acquired);
        assert_eq!((e.epoch, e.seq, e.at_ms), (Epoch(1), 4, T0 + 5));
        assert_eq!(e.holder, Some(host("a")));
        assert_eq!(e.previous, Some(PreviousEnd::FirstHolder));
    }

    #[test]
    fn a_takeover_after_a_revocation_names_the_host_epoch_it_ended() {
        let a = acquired(free_group(), "a", 3, T0);
        let b = acquired(a.clone(), "b", 0, T0 + 11_000);
        let e = entry_for(Some(&a), &b, false).unwrap();
        assert_eq!(e.seq, 8);
        assert_eq!(
            e.previous,
            Some(PreviousEnd::Revoked {
                holder: host("a"),
                epoch: Epoch(1),
                host_epoch: Epoch(3)
            })
        );
        // The holder that comes back at its next host epoch: revoked, too.
        let again = acquired(b.clone(), "b", 1, T0 + 30_000);
        assert!(matches!(
            entry_for(Some(&b), &again, false).unwrap().previous,
            Some(PreviousEnd::Revoked {
                host_epoch: Epoch(0),
                ..
            })
        ));
    }

    #[test]
    fn a_release_has_its_own_entry_and_the_next_acquisition_names_it() {
        let a = acquired(free_group(), "a", 0, T0);
        let free = released(a.clone(), T0 + 100);
        let r = entry_for(Some(&a), &free, false).unwrap();
        assert_eq!((r.change, r.seq, r.epoch), (Change::Released, 5, Epoch(1)));
        assert_eq!(r.holder, Some(host("a")));
        assert!(!r.drained);
        assert_eq!(drain_question(Some(&a), &free), Some(host("a")));
        let b = acquired(free.clone(), "b", 0, T0 + 150);
        assert_eq!(drain_question(Some(&free), &b), Some(host("a")));
        assert_eq!(
            entry_for(Some(&free), &b, false).unwrap().previous,
            Some(PreviousEnd::Released {
                holder: host("a"),
                epoch: Epoch(1)
            })
        );
        // A host drain (on the host item) makes both a drain.
        assert!(entry_for(Some(&a), &free, true).unwrap().drained);
        assert!(matches!(
            entry_for(Some(&free), &b, true).unwrap().previous,
            Some(PreviousEnd::Drained { .. })
        ));
    }

    #[test]
    fn a_member_drain_is_read_from_the_group_itself() {
        let mut a = acquired(free_group(), "a", 0, T0);
        a.members.get_mut(&host("a")).unwrap().draining = true;
        let free = released(a.clone(), T0 + 100);
        assert!(entry_for(Some(&a), &free, false).unwrap().drained);
    }

    #[test]
    fn a_v1_lease_that_ran_out_is_expired() {
        let mut v1 = acquired(free_group(), "a", 0, T0);
        v1.holder_host_epoch = None;
        let b = acquired(v1.clone(), "b", 0, T0 + 20_000);
        assert_eq!(
            entry_for(Some(&v1), &b, false).unwrap().previous,
            Some(PreviousEnd::Expired {
                holder: host("a"),
                epoch: Epoch(1)
            })
        );
    }

    #[test]
    fn changes_that_move_no_grant_have_no_entry() {
        let a = acquired(free_group(), "a", 0, T0);
        let mut drained = a.clone();
        drained.members.get_mut(&host("b")).unwrap().draining = true;
        drained.version += 1;
        assert_eq!(entry_for(Some(&a), &drained, false), None);
        let g = free_group();
        assert_eq!(entry_for(None, &g, false), None, "a new free group");
    }

    #[test]
    fn a_delete_and_a_recreated_group_keep_the_sequence() {
        let a = acquired(free_group(), "a", 0, T0);
        let free = released(a.clone(), T0 + 1);
        let mut tomb = free.clone();
        tomb.deleted = true;
        tomb.members.clear();
        let r = entry_for(Some(&a), &free, false).unwrap();
        let d = entry_for(Some(&free), &tomb, false).unwrap();
        assert_eq!((d.change, d.seq), (Change::Deleted, 6));
        assert!(
            r.seq < d.seq,
            "the delete after a release has a slot of its own"
        );
        assert_eq!(entry_for(Some(&tomb), &tomb, false), None);
        // Created again: the epoch continues; its first holder follows an unheld group.
        let mut again = free_group();
        again.epoch = tomb.epoch;
        let b = acquired(again.clone(), "b", 0, T0 + 50);
        let e = entry_for(Some(&again), &b, false).unwrap();
        assert_eq!(e.seq, 8);
        assert_eq!(e.previous, Some(PreviousEnd::Unheld { epoch: Epoch(1) }));
    }

    #[test]
    fn stream_records_give_both_images() {
        let record = serde_json::json!({
            "eventID": "1",
            "eventName": "MODIFY",
            "dynamodb": {
                "Keys": {"group_id": {"S": "orders"}},
                "OldImage": {"group_id": {"S": "orders"}, "epoch": {"N": "1"}, "lease_ms": {"N": "10000"},
                             "holder": {"S": "a"}, "holder_host_epoch": {"N": "3"}},
                "NewImage": {"group_id": {"S": "orders"}, "epoch": {"N": "2"}, "lease_ms": {"N": "10000"},
                             "holder": {"S": "b"}, "holder_host_epoch": {"N": "0"},
                             "updated_at_ms": {"N": "1800000000000"}},
                "SizeBytes": 10
            }
        });
        let (old, new) = images(&record).unwrap();
        let entry = entry_for(old.as_ref(), &new.unwrap(), false).unwrap();
        assert_eq!(entry.holder, Some(host("b")));
        assert!(matches!(
            entry.previous,
            Some(PreviousEnd::Revoked {
                host_epoch: Epoch(3),
                ..
            })
        ));
        let insert = serde_json::json!({"dynamodb": {"NewImage": {"group_id": {"S": "g"}, "lease_ms": {"N": "1"}}}});
        assert!(images(&insert).unwrap().0.is_none());
        let broken = serde_json::json!({"dynamodb": {"NewImage": {"group_id": {"N": "1"}}}});
        assert!(images(&broken).unwrap_err().contains("NewImage"));
    }

    #[test]
    fn entries_keep_their_json_shape() {
        let a = acquired(free_group(), "a", 3, T0);
        let b = acquired(a.clone(), "b", 0, T0 + 11_000);
        let json = serde_json::to_value(entry_for(Some(&a), &b, false).unwrap()).unwrap();
        assert_eq!(json["change"], "acquired");
        assert_eq!(json["previous"]["reason"], "revoked");
        assert_eq!(json["previous"]["host_epoch"], 3);
        assert_eq!(json["holder"], "b");
    }
}
