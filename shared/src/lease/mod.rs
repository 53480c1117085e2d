//! Leader election by lease: one DynamoDB item per replica group, changed only by
//! conditional writes.
//!
//! - [`config`]: timing rules, validated once.
//! - [`record`]: the item.
//! - [`protocol`]: pure decisions (what a check answers, whether to acquire or renew).
//! - [`store`]: those decisions executed as single conditional DynamoDB requests.
//! - [`service`]: the lease use cases: check (heartbeat or read, maybe acquire, answer),
//!   release, get, create a group.
//! - [`client`]: lease-check over its Function URL, SigV4-signed.
//! - [`api`]: lease-check's HTTP contract.
//! - [`renewer`]: the scheduled renewal loop.
//! - [`fence`]: the fencing condition for a primary's own writes.

pub mod api;
pub mod client;
pub mod config;
pub mod fence;
pub mod protocol;
pub mod record;
pub mod renewer;
pub mod service;
pub mod store;

pub use config::{ConfigError, LeaseConfig};
pub use protocol::{CheckAnswer, Role};
pub use record::{Epoch, LeaseRecord, Member};
