//! A fresh replica group on a deployed stack, for the failover tests, the fault campaign and
//! the failover benchmark: its own data table, a group of [`HOSTS`] (priorities 3, 2, 1) and the
//! [`ClusterSpec`] to start their processes with. Names carry a tag, the pid and the time, so
//! runs never share state.

use crate::cluster::{ClusterError, ClusterSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tenure::clock::{Clock, SystemClock};
use tenure::ids::{GroupId, HostId};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::record::Member;
use tenure::lease::service::LeaseService;
use tenure::lease::LeaseConfig;

/// The hosts of every fixture group, highest priority first.
pub const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];

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
    pub group: GroupId,
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
    /// Creates the data table and the group (lease `group_lease_ms`), with `lease` as the
    /// region's settings the hosts get.
    pub async fn create(
        stack: &StackAccess,
        sdk: &aws_config::SdkConfig,
        binary: PathBuf,
        tag: &str,
        lease: LeaseConfig,
        group_lease_ms: u64,
    ) -> Result<Self, ClusterError> {
        let dynamodb = tenure::aws::dynamodb_client(sdk, None);
        let suffix = format!("{tag}-{}-{}", std::process::id(), SystemClock.now_ms());
        let table = format!("kvdemo-{suffix}");
        tenure::aws::ensure_table(&dynamodb, &table, "key")
            .await
            .map_err(setup_error)?;
        let group = GroupId::parse(&format!("kv-{suffix}")).map_err(setup_error)?;
        let service = LeaseService::new(
            DynamoLeaseStore::new(
                dynamodb.clone(),
                stack.hosts_table.clone(),
                stack.leases_table.clone(),
            ),
            lease,
            SystemClock,
        );
        let mut members = BTreeMap::new();
        for (host, priority) in HOSTS.iter().zip([3, 2, 1]) {
            members.insert(
                HostId::parse(host).map_err(setup_error)?,
                Member::new(format!("az-{host}"), priority),
            );
        }
        service
            .create_group(group.clone(), group_lease_ms, members)
            .await
            .map_err(setup_error)?;
        let dir = std::env::temp_dir().join(format!("kvdemo-{suffix}"));
        std::fs::create_dir_all(&dir).map_err(setup_error)?;
        let spec = ClusterSpec {
            binary,
            group: group.to_string(),
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
            group,
            service,
            dynamodb,
            table,
            spec,
        })
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
