//! irc-events: fed by the WorkItems table's stream; publishes each status change of an
//! operation on the default event bus (`tenure.irc`, `Operation Status Change`). Wiring only;
//! the logic lives in `tenure::irc::events`.

use lambda_runtime::{run, service_fn, Error};
use tenure::aws::{dynamodb_client, load_sdk_config};
use tenure::config::{required, ProcessEnv};
use tenure::event_bus::EventBus;
use tenure::irc::events_publisher::StatusPublisher;
use tenure::irc::store::WorkItemStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    tenure::metrics::emf::install_for_lambda("irc-events")?;
    let table = required(&ProcessEnv, "TENURE_WORK_ITEMS_TABLE")?;
    let sdk = load_sdk_config().await;
    let publisher = StatusPublisher {
        store: WorkItemStore::new(dynamodb_client(&sdk, None), table),
        bus: EventBus::new(aws_sdk_eventbridge::Client::new(&sdk)),
    };
    run(service_fn(|event| publisher.handle_event(event))).await
}
