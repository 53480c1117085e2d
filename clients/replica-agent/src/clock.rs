//! The clock a host's write deadlines are measured on.
//!
//! A deadline is `t_sent + valid_for`: it is safe only if the clock it is compared against
//! keeps running whenever real time passes. `CLOCK_MONOTONIC` (what `std::time::Instant` and
//! tokio's `Instant` read on Linux) stops while the machine or VM is suspended, so a host
//! suspended past its lease would wake with a deadline that, on that clock, has not passed,
//! while another host already holds its groups. `CLOCK_BOOTTIME` counts suspended time too,
//! so [`BootClock`] is the one production uses; tests drive [`ManualClock`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Nanoseconds on a clock that never stops while real time passes (see the module doc).
pub trait DeadlineClock: Send + Sync + 'static {
    fn now_ns(&self) -> u64;
}

/// `CLOCK_BOOTTIME`: monotonic, and counts time suspended. Every process on one machine
/// reads the same clock, so gate logs of several hosts on one machine compare directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootClock;

impl DeadlineClock for BootClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        boot_ns()
    }
}

/// `CLOCK_BOOTTIME` now, in nanoseconds (vDSO on Linux: no system call).
#[inline]
pub fn boot_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    // Both fields are non-negative for this clock; a boot time past u64 nanoseconds is
    // 584 years away.
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// A clock tests move by hand, shared by clones (a suspended machine is one big `advance`).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new(start_ns: u64) -> Self {
        Self(Arc::new(AtomicU64::new(start_ns)))
    }

    pub fn advance_ns(&self, ns: u64) {
        self.0.fetch_add(ns, Ordering::SeqCst);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.advance_ns(ms.saturating_mul(1_000_000));
    }
}

impl DeadlineClock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(id: rustix::time::ClockId) -> u64 {
        let t = rustix::time::clock_gettime(id);
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }

    /// The production clock is CLOCK_BOOTTIME: its reading falls between two direct reads
    /// of CLOCK_BOOTTIME. On a machine that has ever been suspended (or a VM restored from a
    /// snapshot) CLOCK_MONOTONIC is behind by the time suspended and would fail this; where
    /// the two agree to the microsecond, the second test tells them apart by their origin.
    #[test]
    fn boot_clock_reads_clock_boottime() {
        let before = read(rustix::time::ClockId::Boottime);
        let now = BootClock.now_ns();
        let after = read(rustix::time::ClockId::Boottime);
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }

    /// `/proc/uptime` is the kernel's CLOCK_BOOTTIME in seconds: the boot clock agrees with
    /// it to its resolution (10 ms, plus the read), and it never runs behind CLOCK_MONOTONIC.
    #[test]
    fn boot_clock_agrees_with_proc_uptime_and_is_not_behind_monotonic() {
        let uptime = std::fs::read_to_string("/proc/uptime").expect("Linux has /proc/uptime");
        let now = BootClock.now_ns();
        let seconds: f64 = uptime
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .expect("/proc/uptime starts with the uptime in seconds");
        let uptime_ns = (seconds * 1e9) as u64;
        assert!(
            now + 20_000_000 >= uptime_ns && now <= uptime_ns + 1_000_000_000,
            "boot clock {now} ns against /proc/uptime {uptime_ns} ns"
        );
        let monotonic = read(rustix::time::ClockId::Monotonic);
        assert!(BootClock.now_ns() >= monotonic);
    }

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = ManualClock::new(5);
        let other = clock.clone();
        assert_eq!(clock.now_ns(), 5);
        other.advance_ms(2);
        assert_eq!(clock.now_ns(), 2_000_005);
    }
}
