//! kvdemo host: `kvdemo --group G --host H --listen 127.0.0.1:PORT --lease-check-url URL
//! --data-table T --gate-log FILE`. AWS settings from the usual environment.

use anyhow::{Context, Result};
use clap::Parser;
use kvdemo::gate_log::GateLog;
use kvdemo::http::{router, Host};
use kvdemo::store::KvStore;
use replica_agent::{GateConfig, HttpLeaseSource, LeaseGate};
use std::sync::Arc;
use std::time::Duration;
use tenure::ids::{GroupId, HostId};
use tenure::lease::client::LeaseCheckClient;
use tenure::lease::LeaseConfig;
use tenure::sigv4::SigV4Client;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    group: String,
    #[arg(long)]
    host: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// lease-check's Function URL (or its local form).
    #[arg(long)]
    lease_check_url: String,
    #[arg(long)]
    data_table: String,
    #[arg(long)]
    gate_log: std::path::PathBuf,
    /// Create the data table if it does not exist (local demos).
    #[arg(long)]
    create_table: bool,
    /// Honour `?delay_ms=` on PUT (tests and fault campaigns only).
    #[arg(long)]
    fault_injection: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let group = GroupId::parse(&args.group)?;
    let host = HostId::parse(&args.host)?;
    let lease = LeaseConfig::from_env(&tenure::config::ProcessEnv)?;
    let sdk = tenure::aws::load_sdk_config().await;
    let region = sdk
        .region()
        .context("no AWS region: set AWS_REGION")?
        .to_string();
    let client = LeaseCheckClient::new(
        SigV4Client::for_function_urls(&sdk)?,
        &args.lease_check_url,
        &region,
        Duration::from_secs(2),
    );
    let store = KvStore::new(tenure::aws::dynamodb_client(&sdk, None), args.data_table);
    if args.create_table {
        store.ensure_table().await?;
    }
    let gate_log = GateLog::open(&args.gate_log, host.to_string())
        .with_context(|| format!("opening the gate log {}", args.gate_log.display()))?;
    let gate = LeaseGate::start_with_grant_hook(
        HttpLeaseSource {
            client,
            group,
            host: host.clone(),
        },
        || true,
        GateConfig::from_lease(&lease),
        Some(gate_log.grant_hook()),
    );
    tokio::spawn(gate_log.follow(gate.subscribe()));
    tokio::spawn(kvdemo::raise_fence_on_gain(store.clone(), gate.subscribe()));
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    // The test harness and the demo read the bound address from this line.
    println!("listening {}", listener.local_addr()?);
    axum::serve(
        listener,
        router(Arc::new(Host {
            name: host.to_string(),
            gate,
            store,
            fault_injection: args.fault_injection,
        })),
    )
    .await?;
    Ok(())
}
