//! tenure: lease-based leader election for replica groups, on DynamoDB conditional writes.
//!
//! The crate is the whole of the logic; the Lambda functions under `functions/` only wire it.
//! - [`lease`]: the lease protocol (pure decisions), its DynamoDB store, the lease-check API
//!   and the renewer loop.
//! - [`irc`]: the inter-region coordinator (work items, queue, worker, dispatcher, remote
//!   apply).
//! - [`clock`]: the one place time is read, so tests and the model checker can drive it.
//! - [`ids`]: validated identifiers shared by every wire contract.
//! - [`identity`]: which IAM caller may act for which host or region.
//! - [`metrics`]: what the functions count (CloudWatch EMF in Lambda, feature `emf`).
//! - [`telemetry`]: request counting for cost figures.
//! - [`timeline`]: a failover as a picture (SVG): who could write each group when.
//!
//! Features keep the AWS SDK and the Lambda runtime out of the core, so a database host that
//! embeds `replica-agent` compiles only the protocol and a SigV4 client: `client` (SigV4 HTTP
//! clients), `aws` (DynamoDB and SQS adapters; implies `client`), `events` (Lambda's event
//! types), `lambda` (the handlers; implies `aws` and `events`, and is the default).

// The core: no AWS SDK, no Lambda runtime (`cargo build -p tenure --no-default-features`).
pub mod clock;
pub mod config;
pub mod fault;
pub mod http;
pub mod identity;
pub mod ids;
pub mod irc;
pub mod lease;
pub mod metrics;
mod store_error;
pub mod stream;
pub mod timeline;

// Behind features (shared/Cargo.toml): `client` the SigV4 HTTP clients, `aws` the DynamoDB
// and SQS adapters, `events` Lambda's event types, `lambda` the function handlers.
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
pub mod event_bus;
#[cfg(feature = "events")]
pub mod schedule;
#[cfg(feature = "client")]
pub mod sigv4;
#[cfg(feature = "aws")]
pub mod telemetry;

pub use store_error::StoreError;

/// Milliseconds since the Unix epoch, on a function's clock.
pub type Millis = u64;
