//! Fresh replica groups on a deployed stack, for the failover tests, the fault campaign and
//! the failover benchmark: their own data table, `n` groups of three hosts (priorities 3, 2, 1,
//! every host in every group) and the [`ClusterSpec`] to start their processes with. Group and
//! host names carry a tag, the pid and the time, so runs never share state (in protocol v2 a
//! host's lease is shared by all its groups, so two fixtures must not share a host).

use crate::cluster::{ClusterError, ClusterSpec};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tenure::clock::{Clock, SystemClock};
use tenure::ids::{GroupId, HostId};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::record::Member;
use tenure::lease::service::LeaseService;
use tenure::lease::LeaseConfig;

/// The hosts of every fixture group, highest priority first (each name gets the fixture's
/// suffix).
pub const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];

/// Groups created at once.
const CREATES_IN_FLIGHT: usize = 16;

/// Where a deployed regional stack is.
#[derive(Debug, Clone)]
pub struct StackAccess {
    /// The AWS endpoint (MiniStack).
    pub endpoint: String,
    pub region: String,
    pub leases_table: String,
    pub hosts_table: String,
    pub lease_check_url: String,
}

impl StackAccess {
    /// From a stack's outputs as `infra/local-regions.sh` writes them.
    pub fn from_outputs(
        endpoint: &str,
        region: &str,
        outputs: &serde_json::Value,
    ) -> Result<Self, ClusterError> {
        let output = |key: &str| {
            outputs[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| setup_error(format!("the stack in {region} has no output {key}")))
        };
        Ok(Self {
            endpoint: endpoint.to_owned(),
            region: region.to_owned(),
            leases_table: output("LeasesTable")?,
            hosts_table: output("HostsTable")?,
            lease_check_url: output("LeaseCheckLocalUrl")?,
        })
    }
}

pub struct Fixture {
    /// The first of `groups` (the one group of single-group tests).
    pub group: GroupId,
    pub groups: Vec<GroupId>,
    /// The three hosts' ids, highest priority first.
    pub hosts: Vec<HostId>,
    pub service: LeaseService<DynamoLeaseStore, SystemClock>,
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The hosts' data table.
    pub table: String,
    /// No fault injection and no chaos proxies; set them before starting the cluster.
    pub spec: ClusterSpec,
}

fn setup_error(message: impl ToString) -> ClusterError {
    ClusterError::Start {
        host: "fixture".into(),
        message: message.to_string(),
    }
}

impl Fixture {
    /// Creates the data table and `groups` groups (lease `group_lease_ms`), with `lease` as
    /// the region's settings the hosts get.
    pub async fn create(
        stack: &StackAccess,
        sdk: &aws_config::SdkConfig,
        binary: PathBuf,
        tag: &str,
        lease: LeaseConfig,
        group_lease_ms: u64,
        groups: usize,
    ) -> Result<Self, ClusterError> {
        let dynamodb = tenure::aws::dynamodb_client(sdk, None);
        let suffix = format!("{tag}-{}-{}", std::process::id(), SystemClock.now_ms());
        let table = format!("kvdemo-{suffix}");
        tenure::aws::ensure_table(&dynamodb, &table, "key")
            .await
            .map_err(setup_error)?;
        let group_ids: Vec<GroupId> = (0..groups.max(1))
            .map(|i| GroupId::parse(&format!("kv-{suffix}-{i:04}")))
            .collect::<Result<_, _>>()
            .map_err(setup_error)?;
        let hosts: Vec<HostId> = HOSTS
            .iter()
            .map(|h| HostId::parse(&format!("{h}-{suffix}")))
            .collect::<Result<_, _>>()
            .map_err(setup_error)?;
        let service = LeaseService::new(
            DynamoLeaseStore::new(
                dynamodb.clone(),
                stack.hosts_table.clone(),
                stack.leases_table.clone(),
            ),
            lease,
            SystemClock,
        );
        let members: BTreeMap<HostId, Member> = hosts
            .iter()
            .zip(HOSTS.iter().zip([3, 2, 1]))
            .map(|(id, (name, priority))| (id.clone(), Member::new(format!("az-{name}"), priority)))
            .collect();
        let created: Vec<_> = futures::stream::iter(group_ids.iter().cloned())
            .map(|g| {
                let (members, service) = (members.clone(), &service);
                async move { service.create_group(g, group_lease_ms, members).await }
            })
            .buffer_unordered(CREATES_IN_FLIGHT)
            .collect()
            .await;
        for result in created {
            result.map_err(setup_error)?;
        }
        let dir = std::env::temp_dir().join(format!("kvdemo-{suffix}"));
        std::fs::create_dir_all(&dir).map_err(setup_error)?;
        let spec = ClusterSpec {
            binary,
            groups: group_ids.iter().map(ToString::to_string).collect(),
            lease_check_url: stack.lease_check_url.clone(),
            data_table: table.clone(),
            endpoint: stack.endpoint.clone(),
            region: stack.region.clone(),
            lease,
            dir,
            fault_injection: false,
            chaos_proxies: false,
        };
        Ok(Self {
            group: group_ids[0].clone(),
            groups: group_ids,
            hosts,
            service,
            dynamodb,
            table,
            spec,
        })
    }

    /// The hosts' names, highest priority first, for [`crate::cluster::Cluster::start`].
    pub fn host_names(&self) -> Vec<&str> {
        self.hosts.iter().map(HostId::as_str).collect()
    }

    /// Drops the data table (the group stays: it is small, and a later look may want it).
    pub async fn drop_table(&self) {
        let _ = self
            .dynamodb
            .delete_table()
            .table_name(&self.table)
            .send()
            .await;
    }
}
