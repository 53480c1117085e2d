//! The agent a database host embeds: one poller per host for all its replica groups
//! (protocol v2, [`HostAgent`]), and a write gate per group that the host's write path reads
//! without a lock ([`HostAgent::write_permit`]).
//!
//! Safety rests on one rule: a grant's deadline is `t_sent + valid_for_ms * (1 - 1e-4)` on a
//! clock that counts suspended time ([`BootClock`]), where `t_sent` is read before the check
//! leaves. The function computed `valid_for_ms` from a `now` read after `t_sent`, so the
//! deadline falls no later than the host lease's end less the clock skew on the function's
//! clock. No answer, a slow answer or an error never extends it; an answer to a check sent
//! before a step-down never reopens a gate.
//!
//! [`LeaseGate`] is the protocol v1 gate of one host in one group, kept for hosts not yet
//! moved to the host agent.

mod agent;
pub mod clock;
mod config;
mod gate;
pub mod gate_log;
mod gates;
mod grants;
pub mod metrics;
pub mod poll;
mod source;
mod v1_source;

pub use agent::{
    new_incarnation, GrantHook, GrantNotice, GroupEvent, GroupRole, HostAgent, HostStatus,
};
pub use clock::{BootClock, DeadlineClock, ManualClock};
pub use config::{AgentConfig, AgentConfigError};
pub use gate::{
    GateConfig, GateState, GrantHook as V1GrantHook, LeaseGate, WritePermit as V1WritePermit,
};
pub use gates::LeaseGates;
pub use grants::WritePermit;
pub use source::{HostSource, SourceError};
pub use v1_source::{HttpLeaseSource, LeaseSource};
