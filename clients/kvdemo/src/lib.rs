//! kvdemo: a key-value host in one AZ that writes only with a permit from its `LeaseGate`.
//! Every write is stamped with the permit's epoch and stored with tenure's fencing condition,
//! so the data table itself refuses a deposed primary's late writes; a write is acknowledged
//! only after it is stored. Gate changes go to a JSON-lines log with CLOCK_MONOTONIC
//! timestamps, which every process on one machine shares, so a checker can prove no two hosts
//! were writable at once.

pub mod campaign;
pub mod chaos_proxy;
pub mod checker;
pub mod cluster;
pub mod fixture;
pub mod gate_log;
pub mod http;
pub mod store;

use replica_agent::GateState;
use tenure::lease::Epoch;
use tracing::{info, warn};

/// Raises the data table's group fence each time this host gains the lease, so the deposed
/// primary's late writes are refused from the first moment, not only after this host's first
/// write. Retries while the table is unreachable; stops if a newer epoch already raised it.
pub async fn raise_fence_on_gain(
    store: store::KvStore,
    mut changes: tokio::sync::watch::Receiver<GateState>,
) {
    let mut raised = Epoch(0);
    loop {
        let gained = match &*changes.borrow_and_update() {
            GateState::Primary { epoch, .. } if *epoch > raised => Some(*epoch),
            _ => None,
        };
        if let Some(epoch) = gained {
            for attempt in 1..=5u32 {
                match store.raise_fence(epoch).await {
                    Ok(()) => {
                        info!(epoch = epoch.0, "group fence raised");
                        break;
                    }
                    Err(e @ store::KvError::FenceAhead { .. }) => {
                        warn!(error = %e, "not raising the fence");
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, attempt, "could not raise the fence; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(
                            100 * u64::from(attempt),
                        ))
                        .await;
                    }
                }
            }
            raised = epoch;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}
