//! The one harness every MiniStack-backed test shares: find or start MiniStack, build clients
//! pointed at it, create uniquely named tables, clean up.
//!
//! Endpoint: `TENURE_TEST_ENDPOINT` if set (the test command sets it; any DynamoDB-compatible
//! emulator works, e.g. moto), else a MiniStack this harness starts from the project's
//! `.venv` on a free port and stops when the test process exits. If neither is possible the
//! test fails and says which command installs it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use tenure::ids::{GroupId, HostId};
use tenure::lease::dynamo::DynamoLeaseStore;
use tenure::lease::record::{LeaseRecord, Member};
use tenure::telemetry::RequestCounter;

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn healthy(endpoint: &str) -> bool {
    Command::new("curl")
        .args(["-fs", "-o", "/dev/null", "--max-time", "2"])
        .arg(format!("{endpoint}/_ministack/health"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        || Command::new("curl")
            .args(["-fs", "-o", "/dev/null", "--max-time", "2"])
            .arg(endpoint)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}

fn start_own_ministack() -> String {
    let root = project_root();
    let script = root.join("infra/ministack.sh");
    if !root.join(".venv/bin/ministack").exists() {
        panic!(
            "MiniStack is not installed and TENURE_TEST_ENDPOINT is not set.\n\
             Install it with `infra/setup.sh` (or run the README's test command, `infra/test.sh`),\n\
             or point TENURE_TEST_ENDPOINT at a running emulator."
        );
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port for MiniStack: {e}"));
    let status = Command::new(&script)
        .args(["start", "--port", &port.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "infra/ministack.sh start failed; see .local/ministack-{port}/ministack.log"
    );
    // Stop it when this test process exits, however it exits.
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {script} stop --port {port} >/dev/null",
        pid = std::process::id(),
        script = script.display()
    );
    let _ = Command::new("setsid").args(["sh", "-c", &watchdog]).spawn();
    format!("http://127.0.0.1:{port}")
}

/// The emulator's endpoint, started on first use.
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| match std::env::var("TENURE_TEST_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            assert!(
                healthy(&endpoint),
                "TENURE_TEST_ENDPOINT={endpoint} does not answer. Start MiniStack with \
                 `infra/ministack.sh start` (after `infra/setup.sh`), or unset the variable \
                 to let the tests start their own."
            );
            endpoint
        }
        _ => start_own_ministack(),
    })
}

pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "tenure-tests",
        ))
        .load()
        .await
}

pub async fn dynamodb(counter: Option<RequestCounter>) -> aws_sdk_dynamodb::Client {
    tenure::aws::dynamodb_client(&sdk_config().await, counter)
}

/// A table name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// A `Leases` table (key `group_id`), created for one test and deleted by [`drop_table`].
pub async fn create_table(client: &aws_sdk_dynamodb::Client, key: &str) -> String {
    let name = unique_name("tenure-test");
    tenure::aws::ensure_table(client, &name, key)
        .await
        .unwrap_or_else(|e| panic!("{e} (endpoint {})", endpoint()));
    name
}

pub async fn drop_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    let _ = client.delete_table().table_name(name).send().await;
}

/// The lease tables as `template.yaml` defines them, uniquely named and ACTIVE: `Hosts` (key
/// `host_id`) and `Leases` (key `group_id`, with the `by-holder` index on `holder`, keys only).
/// Returns `(hosts_table, leases_table)`; [`drop_lease_tables`] deletes them.
pub async fn lease_tables(client: &aws_sdk_dynamodb::Client) -> (String, String) {
    let hosts = create_table(client, "host_id").await;
    let leases = unique_name("tenure-test-leases");
    tenure::lease::dynamo::ensure_leases_table(client, &leases)
        .await
        .unwrap_or_else(|e| panic!("{e} (endpoint {})", endpoint()));
    (hosts, leases)
}

/// A DynamoDB lease store on fresh lease tables (see [`lease_tables`]).
pub async fn store(client: &aws_sdk_dynamodb::Client) -> DynamoLeaseStore {
    let (hosts, leases) = lease_tables(client).await;
    DynamoLeaseStore::new(client.clone(), hosts, leases)
}

/// Deletes both tables of a store made by [`store`].
pub async fn drop_lease_tables(store: &DynamoLeaseStore) {
    drop_table(store.client(), store.hosts_table()).await;
    drop_table(store.client(), store.leases_table()).await;
}

pub fn host(id: &str) -> HostId {
    HostId::parse(id).unwrap()
}

pub fn group_id(id: &str) -> GroupId {
    GroupId::parse(id).unwrap()
}

/// A new group with the given hosts; priorities descend in the order given.
pub fn new_group(id: &str, hosts: &[&str], lease_ms: u64, now: u64) -> LeaseRecord {
    let members: BTreeMap<HostId, Member> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            (
                host(h),
                Member::new(format!("az-{i}"), (hosts.len() - i) as u32),
            )
        })
        .collect();
    LeaseRecord::new_group(group_id(id), lease_ms, members, now)
}
