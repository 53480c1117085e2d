//! One gate per replica group, for a host that serves several groups (one table each).

use crate::gate::{GateConfig, GateState, LeaseGate, WritePermit};
use crate::v1_source::HttpLeaseSource;
use std::collections::HashMap;
use tenure::ids::{GroupId, HostId};
use tenure::lease::client::LeaseCheckClient;

/// The gates of one host, by group. Each group has its own poller, deadline and epoch.
#[derive(Default)]
pub struct LeaseGates {
    gates: HashMap<GroupId, LeaseGate>,
}

impl LeaseGates {
    /// Starts a gate for each group, all polling lease-check through `client` as `host`.
    pub fn start(
        client: &LeaseCheckClient,
        host: &HostId,
        groups: impl IntoIterator<Item = GroupId>,
        healthy: impl Fn() -> bool + Clone + Send + Sync + 'static,
        config: GateConfig,
    ) -> Self {
        let gates = groups
            .into_iter()
            .map(|group| {
                let source = HttpLeaseSource {
                    client: client.clone(),
                    group: group.clone(),
                    host: host.clone(),
                };
                (group, LeaseGate::start(source, healthy.clone(), config))
            })
            .collect();
        Self { gates }
    }

    /// A permit for a write to `group`, or none (also none for a group this host does not serve).
    #[inline]
    pub fn write_permit(&self, group: &GroupId) -> Option<WritePermit> {
        self.gates.get(group)?.write_permit()
    }

    pub fn state(&self, group: &GroupId) -> Option<GateState> {
        self.gates.get(group).map(LeaseGate::state)
    }

    pub fn gate(&self, group: &GroupId) -> Option<&LeaseGate> {
        self.gates.get(group)
    }

    pub fn groups(&self) -> impl Iterator<Item = &GroupId> {
        self.gates.keys()
    }
}
