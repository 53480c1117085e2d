//! Leader election by lease, protocol v2: the lease belongs to the host (table `Hosts`), each
//! replica group keeps only a grant (table `Leases`); both change only by conditional writes.
//! `docs/protocol.md` explains the protocol and its safety argument.
//!
//! - [`config`]: timing rules, validated once.
//! - [`host`], [`record`]: the host item and the group item.
//! - [`protocol`]: pure decisions (renew, revoke, acquire, release, best candidate, what a
//!   check answers), each plan with its condition as a predicate.
//! - [`store`]: the store trait; [`dynamo`] (DynamoDB) and [`memory`] (the predicates under
//!   one lock) implement it.
//! - [`service`]: the use cases: host check, release, reads, group definitions.
//! - [`client`]: lease-check over its Function URL, SigV4-signed.
//! - [`api`]: lease-check's HTTP contract (v2 host endpoints and v1 group endpoints).
//! - [`renewer`]: the scheduled renewal loop over hosts.
//! - [`fence`]: the fencing condition for a primary's own writes.
//! - [`history`]: the leadership history entry for each change of a group item;
//!   [`history_store`] stores and publishes them (the `lease-history` function).

pub mod api;
#[cfg(feature = "client")]
pub mod client;
pub mod config;
#[cfg(feature = "aws")]
pub mod dynamo;
#[cfg(feature = "aws")]
pub mod fence;
pub mod history;
#[cfg(feature = "aws")]
pub mod history_store;
pub mod host;
pub mod memory;
pub mod protocol;
pub mod record;
pub mod renewer;
pub mod service;
pub mod store;

pub use config::{ConfigError, LeaseConfig};
pub use protocol::{CheckAnswer, Role};
pub use record::{Epoch, LeaseRecord, Member};
