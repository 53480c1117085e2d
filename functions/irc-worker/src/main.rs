//! irc-worker: SQS FIFO batches (ReportBatchItemFailures); claims each op, calls the target
//! region's irc-remote, completes the op. Wiring only; the logic lives in `tenure::irc`.

use lambda_runtime::{run, service_fn, Error};
use tenure::aws::{dynamodb_client, load_sdk_config};
use tenure::clock::SystemClock;
use tenure::config::ProcessEnv;
use tenure::irc::config::WorkerFunctionConfig;
use tenure::irc::queue::WorkQueue;
use tenure::irc::region_health::{HealthMonitor, RegionHealthTable};
use tenure::irc::remote::RemoteClient;
use tenure::irc::store::WorkItemStore;
use tenure::irc::worker::Worker;
use tenure::sigv4::SigV4Client;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    tenure::metrics::emf::install_for_lambda("irc-worker")?;
    let config = WorkerFunctionConfig::from_env(&ProcessEnv)?;
    let sdk = load_sdk_config().await;
    let dynamodb = dynamodb_client(&sdk, None);
    let worker = Worker {
        store: WorkItemStore::new(dynamodb.clone(), config.work_items_table),
        queue: WorkQueue::new(aws_sdk_sqs::Client::new(&sdk), config.queue_url),
        remote: RemoteClient::new(SigV4Client::for_function_urls(&sdk)?, config.endpoints),
        policy: config.policy,
        clock: SystemClock,
        health: HealthMonitor::new(
            RegionHealthTable::new(dynamodb, config.region_health_table),
            config.health,
        ),
        faults: config.faults,
    };
    run(service_fn(|event| worker.handle_event(event))).await
}
