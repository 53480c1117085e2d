//! The host's gate audit log, JSON lines on CLOCK_BOOTTIME (the agent's deadline clock, one
//! clock for every process on the machine, so a checker can compare hosts):
//!
//! - `{"t_ns","host","state":"window","host_epoch","deadline_ns"}` before the host window is
//!   extended (the agent's grant hook): every group open under `host_epoch` may be written
//!   from at latest `t_ns` until `deadline_ns`;
//! - `{"t_ns","host","state":"open","group","epoch","host_epoch"}` before a group's gate opens
//!   (the grant hook);
//! - `{"t_ns","host","state":"closed","group"}` after a group's gate closed and before its
//!   release is sent (the grant hook), so a handover's close precedes the next holder's open;
//! - `{"t_ns","host","state":"primary"|"secondary"|"unknown","group","epoch"}` for every
//!   change of a group's role, written after the gate changed (a close is logged no earlier
//!   than it happened).
//!
//! So the log never understates when the host could write ([`check`] reads it back and proves
//! it). Every line is flushed as it is written, so a kill -9 loses nothing already logged.
//! Processes on one machine share the clock, so the logs of several hosts compare directly:
//! that is how the demo and the fault campaigns prove no two hosts could write one group at
//! once, and what the failover timeline is drawn from.

pub mod check;

pub use check::{
    read_log, timeline, violations, writable_intervals, CheckError, GateEvent, Violation,
    WritableInterval,
};

use crate::clock::boot_ns;
use crate::{GrantHook, GrantNotice, GroupEvent, GroupRole};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use tracing::{error, warn};

/// One line for a grant notice.
pub fn grant_line(host: &str, notice: &GrantNotice<'_>) -> String {
    match notice {
        GrantNotice::Window {
            host_epoch,
            deadline_ns,
        } => serde_json::json!({
            "t_ns": boot_ns(),
            "host": host,
            "state": "window",
            "host_epoch": host_epoch.0,
            "deadline_ns": deadline_ns,
        }),
        GrantNotice::Open {
            group,
            epoch,
            host_epoch,
        } => serde_json::json!({
            "t_ns": boot_ns(),
            "host": host,
            "state": "open",
            "group": group,
            "epoch": epoch.0,
            "host_epoch": host_epoch.0,
        }),
        GrantNotice::Closed { group } => serde_json::json!({
            "t_ns": boot_ns(),
            "host": host,
            "state": "closed",
            "group": group,
        }),
    }
    .to_string()
}

/// One role-change line.
pub fn role_line(host: &str, event: &GroupEvent) -> String {
    let (name, epoch) = match &event.role {
        GroupRole::Primary { epoch, .. } => ("primary", Some(epoch.0)),
        GroupRole::Secondary { epoch, .. } => ("secondary", Some(epoch.0)),
        GroupRole::Unknown { .. } => ("unknown", None),
    };
    serde_json::json!({
        "t_ns": boot_ns(),
        "host": host,
        "state": name,
        "group": event.group,
        "epoch": epoch,
    })
    .to_string()
}

/// The log file of one host.
pub struct GateLog {
    host: String,
    file: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl GateLog {
    pub fn open(path: &std::path::Path, host: impl Into<String>) -> std::io::Result<Arc<Self>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Arc::new(Self {
            host: host.into(),
            file: Mutex::new(std::io::BufWriter::new(file)),
        }))
    }

    fn append(&self, lines: &[String]) -> std::io::Result<()> {
        // A poisoned lock only means another writer panicked mid-line; keep appending.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        for line in lines {
            writeln!(file, "{line}")?;
        }
        file.flush()
    }

    /// The hook to give `HostAgent::start`: each notice is on disk before the gate opens.
    pub fn grant_hook(self: &Arc<Self>) -> GrantHook {
        let log = self.clone();
        Arc::new(move |notice: &GrantNotice<'_>| {
            if let Err(e) = log.append(&[grant_line(&log.host, notice)]) {
                error!(error = %e, "could not write the gate log");
            }
        })
    }

    /// Appends every role change until the agent is dropped. A subscriber that lagged has
    /// missed changes: it says so, and the checker (which only ever overstates) still holds,
    /// because a missed close only makes an interval end later.
    pub async fn follow(self: Arc<Self>, mut changes: broadcast::Receiver<GroupEvent>) {
        loop {
            match changes.recv().await {
                Ok(event) => {
                    let mut lines = vec![role_line(&self.host, &event)];
                    // Whatever else is already waiting goes in the same write.
                    while let Ok(event) = changes.try_recv() {
                        lines.push(role_line(&self.host, &event));
                    }
                    if let Err(e) = self.append(&lines) {
                        error!(error = %e, "could not write the gate log");
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "gate log fell behind the agent's role changes");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
