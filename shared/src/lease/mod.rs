//! Leader election by lease: one DynamoDB item per replica group, changed only by
//! conditional writes.
//!
//! - [`config`]: timing rules, validated once.
//! - [`record`]: the item.
//! - [`protocol`]: pure decisions (what a check answers, whether to acquire or renew).
//! - [`store`]: those decisions executed as single conditional DynamoDB requests.
//! - [`check`]: the lease-check use case (heartbeat or read, maybe acquire, answer).
//! - [`api`]: lease-check's HTTP contract.
//! - [`renewer`]: the scheduled renewal loop.
//! - [`fence`]: the fencing condition for a primary's own writes.

pub mod api;
pub mod check;
pub mod client;
pub mod config;
pub mod fence;
pub mod protocol;
pub mod record;
pub mod renewer;
pub mod store;

pub use config::{ConfigError, LeaseConfig};
pub use protocol::{CheckAnswer, Role};
pub use record::{Epoch, LeaseRecord, Member};
