//! The host's gate audit log, JSON lines on CLOCK_MONOTONIC (one clock for every process on
//! the machine, so a checker can compare hosts):
//!
//! - `{"t_ns","host","state":"grant","epoch","deadline_ns"}` for every grant, written *before*
//!   the gate opens on it (the agent's grant hook), so the log never understates when the host
//!   could write: a grant is usable from at latest `t_ns` until `deadline_ns`;
//! - `{"t_ns","host","state":"primary"|"secondary"|"unknown","epoch"}` for every change of
//!   role, written after the gate changed (a close is logged no earlier than it happened).
//!
//! Every line is flushed as it is written, so a kill -9 loses nothing already logged.

use replica_agent::{GateState, GrantHook, WritePermit};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing::error;

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we own; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A permit's deadline on CLOCK_MONOTONIC. The tokio clock is read before CLOCK_MONOTONIC, so
/// the result is never earlier than the real deadline.
pub fn deadline_ns(permit: &WritePermit) -> u64 {
    let now = tokio::time::Instant::now();
    let mono = monotonic_ns();
    let left = permit.deadline.saturating_duration_since(now).as_nanos();
    mono.saturating_add(u64::try_from(left).unwrap_or(u64::MAX))
}

/// One role-change line.
pub fn line(host: &str, state: &GateState) -> String {
    let (name, epoch) = match state {
        GateState::Primary { epoch, .. } => ("primary", Some(epoch.0)),
        GateState::Secondary { epoch, .. } => ("secondary", Some(epoch.0)),
        GateState::Unknown { .. } => ("unknown", None),
    };
    serde_json::json!({"t_ns": monotonic_ns(), "host": host, "state": name, "epoch": epoch})
        .to_string()
}

/// One grant line.
pub fn grant_line(host: &str, permit: &WritePermit) -> String {
    let deadline = deadline_ns(permit);
    serde_json::json!({
        "t_ns": monotonic_ns(),
        "host": host,
        "state": "grant",
        "epoch": permit.epoch.0,
        "deadline_ns": deadline,
    })
    .to_string()
}

/// The log file of one host.
pub struct GateLog {
    host: String,
    file: Mutex<std::fs::File>,
}

impl GateLog {
    pub fn open(path: &std::path::Path, host: impl Into<String>) -> std::io::Result<Arc<Self>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Arc::new(Self {
            host: host.into(),
            file: Mutex::new(file),
        }))
    }

    fn append(&self, line: &str) -> std::io::Result<()> {
        // A poisoned lock only means another writer panicked mid-line; keep appending.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(file, "{line}")?;
        file.flush()
    }

    /// The hook to give `LeaseGate::start_with_grant_hook`.
    pub fn grant_hook(self: &Arc<Self>) -> GrantHook {
        let log = self.clone();
        Arc::new(move |permit: &WritePermit| {
            if let Err(e) = log.append(&grant_line(&log.host, permit)) {
                error!(error = %e, "could not write the gate log");
            }
        })
    }

    /// Appends every change of `changes` until the gate is dropped.
    pub async fn follow(
        self: Arc<Self>,
        mut changes: tokio::sync::watch::Receiver<GateState>,
    ) -> std::io::Result<()> {
        loop {
            let state = changes.borrow_and_update().clone();
            self.append(&line(&self.host, &state))?;
            if changes.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}
