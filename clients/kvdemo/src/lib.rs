//! kvdemo: a key-value host in one AZ, serving a key space per replica group, that writes a
//! group only with a permit from its host agent (`replica_agent::HostAgent`, one poller for
//! all the host's groups). Every write is stamped with the permit's epoch and stored with the
//! group's fencing condition, so the data table itself refuses a deposed primary's late
//! writes; a write is acknowledged only after it is stored. Gate changes go to the agent's
//! gate log (`replica_agent::gate_log`), so a checker can prove no two hosts could write one
//! group at once.

//!
//! Only the demo host lives here; what drives it in tests and benches (clusters of host
//! processes, the fault proxy, campaigns) is the test kit,
//! `tenure-testkit` under `tests/kit/`.

pub mod http;
pub mod store;

use replica_agent::{GroupRole, HostAgent};
use std::collections::HashMap;
use std::sync::Arc;
use tenure::ids::GroupId;
use tenure::lease::Epoch;
use tokio::sync::{broadcast, Semaphore};
use tracing::{info, warn};

/// Fence raises in flight at once (a host gaining 1,000 groups raises 1,000 fences).
const FENCES_IN_FLIGHT: usize = 32;

/// Raises a group's fence in the data table each time this host gains it, so the deposed
/// primary's late writes are refused from the first moment, not only after this host's first
/// write. Retries while the table is unreachable; stops if a newer epoch already raised it.
/// A subscriber that lagged re-reads every group's role.
pub async fn raise_fences_on_gain(store: store::KvStore, agent: Arc<HostAgent>) {
    let mut changes = agent.subscribe();
    let mut raised: HashMap<GroupId, Epoch> = HashMap::new();
    let permits = Arc::new(Semaphore::new(FENCES_IN_FLIGHT));
    // Whatever was gained before this task subscribed.
    let mut pending: Vec<(GroupId, Epoch)> = gained(&agent);
    loop {
        for (group, epoch) in pending.drain(..) {
            if raised.get(&group).is_some_and(|r| *r >= epoch) {
                continue;
            }
            raised.insert(group.clone(), epoch);
            let (store, permits) = (store.clone(), permits.clone());
            tokio::spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                raise_fence(&store, &group, epoch).await;
            });
        }
        match changes.recv().await {
            Ok(event) => {
                if let GroupRole::Primary { epoch, .. } = event.role {
                    pending.push((event.group, epoch));
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => pending = gained(&agent),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn gained(agent: &HostAgent) -> Vec<(GroupId, Epoch)> {
    agent
        .groups()
        .into_iter()
        .filter_map(|g| match agent.state(&g) {
            Some(GroupRole::Primary { epoch, .. }) => Some((g, epoch)),
            _ => None,
        })
        .collect()
}

async fn raise_fence(store: &store::KvStore, group: &GroupId, epoch: Epoch) {
    for attempt in 1..=5u32 {
        match store.raise_fence(group, epoch).await {
            Ok(()) => {
                info!(%group, epoch = epoch.0, "group fence raised");
                return;
            }
            Err(e @ store::KvError::FenceAhead { .. }) => {
                warn!(error = %e, "not raising the fence");
                return;
            }
            Err(e) => {
                warn!(error = %e, attempt, "could not raise the fence; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                    .await;
            }
        }
    }
}
