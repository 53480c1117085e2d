//! Gate changes as JSON lines: `{"t_ns", "host", "state", "epoch"}`, `t_ns` from
//! CLOCK_MONOTONIC (one clock for every process on the machine).

use replica_agent::GateState;
use std::io::Write;

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

/// One log line for a state.
pub fn line(host: &str, state: &GateState) -> String {
    let (name, epoch) = match state {
        GateState::Primary { epoch, .. } => ("primary", Some(epoch.0)),
        GateState::Secondary { epoch, .. } => ("secondary", Some(epoch.0)),
        GateState::Unknown { .. } => ("unknown", None),
    };
    serde_json::json!({"t_ns": monotonic_ns(), "host": host, "state": name, "epoch": epoch})
        .to_string()
}

/// Appends every change of `changes` to `path`, flushing each line (a kill -9 loses nothing
/// already written).
pub async fn follow(
    path: std::path::PathBuf,
    host: String,
    mut changes: tokio::sync::watch::Receiver<GateState>,
) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    loop {
        let state = changes.borrow_and_update().clone();
        writeln!(file, "{}", line(&host, &state))?;
        file.flush()?;
        if changes.changed().await.is_err() {
            return Ok(());
        }
    }
}
