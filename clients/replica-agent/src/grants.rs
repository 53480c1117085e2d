//! The grants a host's write path reads: one host window shared by every group, one slot per
//! group, all atomics, so `write_permit(group)` takes no lock and allocates nothing.
//!
//! In protocol v2 every grant a host holds at its current host epoch lasts exactly as long as
//! the host lease, so the deadline is the host's, not the group's: one answer extends every
//! open group at once. A slot records the group epoch and the host epoch it was opened under;
//! it permits writes only while that host epoch is the window's and the window is open.
//!
//! Memory order (the safety argument the write path relies on). The poller is the only
//! writer, and it stores in this order:
//! - a new host epoch: window deadline to 0 (closed), then the window's epoch tag, then slots
//!   opened under the new epoch, then the new deadline;
//! - a slot: its group epoch, then its tag (the host epoch it is open under; 0 is closed);
//! - a step-down: the slot's tag to 0 before the release is sent.
//!
//! All stores are Release, all loads Acquire. `permit` loads the slot's tag, then the window's
//! deadline, then the window's tag, then the slot's epoch, then reads the clock. A reader that
//! sees a deadline therefore sees the window tag stored before it (or a later one), so a slot
//! opened under an older host epoch never passes against a newer epoch's deadline; a slot's
//! tag is compared with the window's, so a grant of a revoked host epoch never passes once
//! the window moved on; and the clock is read last, so the deadline is compared with a time no
//! earlier than every load. A mixed read can only pair a deadline with a group epoch this host
//! was answered writable at, and a higher epoch only fences more.

use rustc_hash::FxBuildHasher;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tenure::ids::GroupId;
use tenure::lease::Epoch;

/// Permission to write one group, with the fencing epoch every write must carry (the storage
/// refuses an epoch lower than one it has seen). Valid until `deadline_ns` on the agent's
/// deadline clock ([`crate::BootClock`] in production); take a fresh one for each write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePermit {
    pub epoch: Epoch,
    pub deadline_ns: u64,
}

/// Slot and window tags: a host epoch plus one, so 0 can mean "none".
fn tag(host_epoch: Epoch) -> u64 {
    host_epoch.0.saturating_add(1)
}

#[derive(Default)]
struct Slot {
    epoch: AtomicU64,
    /// `tag(host epoch)` the slot is open under; 0 when closed.
    open_under: AtomicU64,
}

#[derive(Default)]
struct Window {
    tag: AtomicU64,
    /// On the deadline clock; 0 when closed.
    deadline_ns: AtomicU64,
}

/// The host's grants. Groups are fixed when the table is built (the agent's group set).
pub(crate) struct Grants {
    window: Window,
    // FxHash: group ids come from the host's own configuration, not from callers, and the
    // lookup is on every write.
    slots: HashMap<GroupId, Slot, FxBuildHasher>,
}

impl Grants {
    pub(crate) fn new(groups: impl IntoIterator<Item = GroupId>) -> Self {
        Self {
            window: Window::default(),
            slots: groups.into_iter().map(|g| (g, Slot::default())).collect(),
        }
    }

    /// A permit for `group` at `now_ns`, or none. See the module doc for why this is safe.
    #[inline]
    pub(crate) fn permit(&self, group: &GroupId, now: impl FnOnce() -> u64) -> Option<WritePermit> {
        let slot = self.slots.get(group)?;
        let open_under = slot.open_under.load(Ordering::Acquire);
        if open_under == 0 {
            return None;
        }
        let deadline_ns = self.window.deadline_ns.load(Ordering::Acquire);
        if deadline_ns == 0 || self.window.tag.load(Ordering::Acquire) != open_under {
            return None;
        }
        let epoch = Epoch(slot.epoch.load(Ordering::Acquire));
        if now() >= deadline_ns {
            return None;
        }
        Some(WritePermit { epoch, deadline_ns })
    }

    /// The window's deadline if it is open under `host_epoch`.
    pub(crate) fn window(&self) -> Option<(Epoch, u64)> {
        let tag = self.window.tag.load(Ordering::Acquire);
        let deadline = self.window.deadline_ns.load(Ordering::Acquire);
        (tag != 0 && deadline != 0).then(|| (Epoch(tag - 1), deadline))
    }

    /// Moves the window to `host_epoch`; every slot opened under another epoch stops passing
    /// (and is closed), and the window stays closed until [`Grants::extend`].
    pub(crate) fn set_host_epoch(&self, host_epoch: Epoch) {
        let t = tag(host_epoch);
        if self.window.tag.load(Ordering::Acquire) == t {
            return;
        }
        self.window.deadline_ns.store(0, Ordering::Release);
        self.window.tag.store(t, Ordering::Release);
        for slot in self.slots.values() {
            if slot.open_under.load(Ordering::Acquire) != t {
                slot.open_under.store(0, Ordering::Release);
            }
        }
    }

    /// Extends (or shortens) the window of the current host epoch to `deadline_ns`.
    pub(crate) fn extend(&self, deadline_ns: u64) {
        self.window
            .deadline_ns
            .store(deadline_ns.max(1), Ordering::Release);
    }

    /// Closes the window: no group passes until it is extended again.
    pub(crate) fn close_window(&self) {
        self.window.deadline_ns.store(0, Ordering::Release);
    }

    /// Opens `group` at `epoch` under the window's current host epoch. Unknown groups are
    /// ignored (the table holds the agent's groups only).
    pub(crate) fn open(&self, group: &GroupId, epoch: Epoch) {
        let Some(slot) = self.slots.get(group) else {
            return;
        };
        slot.epoch.store(epoch.0, Ordering::Release);
        slot.open_under
            .store(self.window.tag.load(Ordering::Acquire), Ordering::Release);
    }

    pub(crate) fn close(&self, group: &GroupId) {
        if let Some(slot) = self.slots.get(group) {
            slot.open_under.store(0, Ordering::Release);
        }
    }

    pub(crate) fn close_all(&self) {
        self.close_window();
        for slot in self.slots.values() {
            slot.open_under.store(0, Ordering::Release);
        }
    }

    /// Whether `group` is open (ignoring the deadline).
    pub(crate) fn is_open(&self, group: &GroupId) -> bool {
        self.slots
            .get(group)
            .is_some_and(|s| s.open_under.load(Ordering::Acquire) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> GroupId {
        GroupId::parse(s).expect("valid group id")
    }

    fn table() -> Grants {
        Grants::new([g("g1"), g("g2")])
    }

    #[test]
    fn nothing_passes_until_a_window_and_a_slot_are_open() {
        let t = table();
        assert_eq!(t.permit(&g("g1"), || 10), None);
        t.set_host_epoch(Epoch(0));
        t.open(&g("g1"), Epoch(4));
        assert_eq!(t.permit(&g("g1"), || 10), None, "window still closed");
        t.extend(100);
        assert_eq!(
            t.permit(&g("g1"), || 10),
            Some(WritePermit {
                epoch: Epoch(4),
                deadline_ns: 100
            })
        );
        assert_eq!(t.permit(&g("g2"), || 10), None, "g2 never opened");
        assert_eq!(t.permit(&g("other"), || 10), None, "not this host's group");
    }

    #[test]
    fn the_deadline_is_the_windows_and_ends_every_group_at_once() {
        let t = table();
        t.set_host_epoch(Epoch(2));
        t.open(&g("g1"), Epoch(1));
        t.open(&g("g2"), Epoch(7));
        t.extend(100);
        assert!(t.permit(&g("g1"), || 99).is_some());
        assert!(t.permit(&g("g2"), || 99).is_some());
        assert_eq!(t.permit(&g("g1"), || 100), None);
        assert_eq!(t.permit(&g("g2"), || 100), None);
        t.extend(200);
        assert_eq!(t.permit(&g("g2"), || 150).map(|p| p.deadline_ns), Some(200));
    }

    #[test]
    fn a_new_host_epoch_closes_every_grant_of_the_old_one() {
        let t = table();
        t.set_host_epoch(Epoch(0));
        t.open(&g("g1"), Epoch(3));
        t.extend(1_000);
        t.set_host_epoch(Epoch(1));
        assert_eq!(t.permit(&g("g1"), || 10), None);
        t.extend(1_000);
        assert_eq!(
            t.permit(&g("g1"), || 10),
            None,
            "g1 was opened under epoch 0"
        );
        assert!(!t.is_open(&g("g1")));
        t.open(&g("g1"), Epoch(4));
        assert_eq!(t.permit(&g("g1"), || 10).map(|p| p.epoch), Some(Epoch(4)));
        assert_eq!(t.window(), Some((Epoch(1), 1_000)));
    }

    #[test]
    fn closing_a_slot_or_the_window_stops_permits_at_once() {
        let t = table();
        t.set_host_epoch(Epoch(0));
        t.open(&g("g1"), Epoch(1));
        t.open(&g("g2"), Epoch(1));
        t.extend(1_000);
        t.close(&g("g1"));
        assert_eq!(t.permit(&g("g1"), || 10), None);
        assert!(t.permit(&g("g2"), || 10).is_some());
        t.close_window();
        assert_eq!(t.permit(&g("g2"), || 10), None);
        t.extend(1_000);
        assert!(t.permit(&g("g2"), || 10).is_some());
        t.close_all();
        assert_eq!(t.permit(&g("g2"), || 10), None);
        assert_eq!(t.window(), None);
    }
}
