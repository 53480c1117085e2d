//! kvdemo host: `kvdemo --host H --groups G1,G2,.. --listen 127.0.0.1:PORT --lease-check-url
//! URL --data-table T --gate-log FILE` (or `--groups-file F`, one group id per line). AWS
//! settings from the usual environment; lease timing from `TENURE_*`.

use anyhow::{bail, Context, Result};
use clap::Parser;
use kvdemo::http::{router, Host};
use kvdemo::store::KvStore;
use replica_agent::gate_log::GateLog;
use replica_agent::{AgentConfig, HostAgent};
use std::sync::Arc;
use std::time::Duration;
use tenure::ids::{GroupId, HostId};
use tenure::lease::client::LeaseCheckClient;
use tenure::lease::LeaseConfig;
use tenure::sigv4::SigV4Client;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    host: String,
    /// The groups this host serves, comma-separated.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// A file with one group id per line (added to `--groups`).
    #[arg(long)]
    groups_file: Option<std::path::PathBuf>,
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

fn groups(args: &Args) -> Result<Vec<GroupId>> {
    let mut raw: Vec<String> = args.groups.clone();
    if let Some(path) = &args.groups_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the groups file {}", path.display()))?;
        raw.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    }
    if raw.is_empty() {
        bail!("no groups: give --groups or --groups-file");
    }
    raw.iter()
        .map(|g| GroupId::parse(g).with_context(|| format!("group id {g:?}")))
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let groups = groups(&args)?;
    let host = HostId::parse(&args.host)?;
    let lease = LeaseConfig::from_env(&tenure::config::ProcessEnv)?;
    let config = AgentConfig::new(host.clone(), groups, &lease)?;
    let sdk = tenure::aws::load_sdk_config().await;
    let region = sdk
        .region()
        .context("no AWS region: set AWS_REGION")?
        .to_string();
    let client = LeaseCheckClient::new(
        SigV4Client::for_function_urls(&sdk)?,
        &args.lease_check_url,
        &region,
        config.request_timeout + Duration::from_millis(100),
    );
    let store = KvStore::new(tenure::aws::dynamodb_client(&sdk, None), args.data_table);
    if args.create_table {
        store.ensure_table().await?;
    }
    let gate_log = GateLog::open(&args.gate_log, host.to_string())
        .with_context(|| format!("opening the gate log {}", args.gate_log.display()))?;
    // The host application picks the agent's exporter: Prometheus text at GET /metrics.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let agent = Arc::new(HostAgent::start(
        client,
        config,
        || true,
        Some(gate_log.grant_hook()),
    ));
    tokio::spawn(gate_log.follow(agent.subscribe()));
    tokio::spawn(kvdemo::raise_fences_on_gain(store.clone(), agent.clone()));
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    // The test harness and the demo read the bound address from this line.
    println!("listening {}", listener.local_addr()?);
    axum::serve(
        listener,
        router(Arc::new(Host {
            name: host.to_string(),
            agent,
            store,
            fault_injection: args.fault_injection,
            metrics,
        })),
    )
    .await?;
    Ok(())
}
