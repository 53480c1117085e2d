//! tenure: lease-based leader election for replica groups, on DynamoDB conditional writes.
//!
//! The crate is the whole of the logic; the Lambda functions under `functions/` only wire it.
//! - [`lease`]: the lease protocol (pure decisions), its DynamoDB store, the lease-check API
//!   and the renewer loop.
//! - [`irc`]: the inter-region coordinator (work items, queue, worker, dispatcher, remote
//!   apply).
//! - [`clock`]: the one place time is read, so tests and the model checker can drive it.
//! - [`ids`]: validated identifiers shared by every wire contract.
//! - [`telemetry`]: request counting for cost figures.

pub mod aws;
pub mod clock;
pub mod config;
pub mod http;
pub mod ids;
pub mod irc;
pub mod lease;
pub mod schedule;
pub mod sigv4;
pub mod telemetry;

/// Milliseconds since the Unix epoch, on a function's clock.
pub type Millis = u64;
