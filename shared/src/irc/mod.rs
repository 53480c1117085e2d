//! The inter-region coordinator (IRC), local-remote-local: an operation is written as a work
//! item in the source region ([`store`]), carried by an SQS FIFO queue ([`queue`]) to a worker
//! ([`worker`]) that claims it, calls the target region's irc-remote ([`remote`], SigV4) which
//! applies it exactly once ([`inbound`], [`remote_api`]), and completes the item on its claim
//! token. The dispatcher ([`dispatcher`]) re-enqueues whatever was lost on the way.
//!
//! Nothing lost: an op exists as an item before any message, and every non-terminal item is
//! due for the dispatcher. Nothing applied twice: the remote's idempotency record and effect
//! commit in one transaction. Order per resource: FIFO message groups, and the remote's
//! per-resource sequence condition for ops that overtake each other anyway.
//!
//! Every status change is published as an event ([`events`], [`events_publisher`]). A failing
//! target region fails alone: workers count each call's verdict in the region's health record
//! ([`region_health`]); when the window says the region is unavailable ([`health`]) its ops are
//! held without spending attempts, the dispatcher probes it, and on recovery the held ops come
//! back over a ramp.

pub mod awaiting;
pub mod backoff;
pub mod claim;
pub mod config;
#[cfg(feature = "aws")]
pub mod dispatcher;
pub mod events;
#[cfg(feature = "aws")]
pub mod events_publisher;
pub mod health;
pub mod ids;
#[cfg(feature = "aws")]
pub mod inbound;
pub mod item;
pub mod kinds;
pub mod memory;
pub mod message;
pub mod queue;
pub mod region_health;
pub mod remote;
pub mod remote_api;
#[cfg(feature = "aws")]
pub mod store;
#[cfg(feature = "aws")]
pub mod submit;
pub mod worker;

pub use ids::{OpId, Region};
pub use item::{Status, WorkItem};
