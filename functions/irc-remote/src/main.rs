//! irc-remote: the Function URL other regions' workers call to apply an operation here,
//! exactly once. Wiring only; the contract and the logic live in `tenure::irc`.

use lambda_http::{run, service_fn, Error};
use tenure::aws::{dynamodb_client, load_sdk_config};
use tenure::clock::SystemClock;
use tenure::config::ProcessEnv;
use tenure::identity::PeerIdentityRule;
use tenure::irc::config::RemoteFunctionConfig;
use tenure::irc::inbound::InboundStore;
use tenure::irc::kinds::Kinds;
use tenure::irc::remote_api::RemoteApi;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    tenure::metrics::emf::install_for_lambda("irc-remote")?;
    let config = RemoteFunctionConfig::from_env(&ProcessEnv)?;
    let sdk = load_sdk_config().await;
    let store = InboundStore::new(
        dynamodb_client(&sdk, None),
        config.inbound_table,
        config.leases_table,
        config.hosts_table,
        config.lease,
        Kinds::shipped(),
    );
    let identity = PeerIdentityRule::from_env(&ProcessEnv)?;
    let api = RemoteApi {
        store,
        peers: config.peers,
        identity,
        clock: SystemClock,
    };
    run(service_fn(|request| async {
        Ok::<_, Error>(api.handle_lambda(request).await)
    }))
    .await
}
