//! `LeaseGate`: the write gate a replica host embeds. A background task polls lease-check and
//! turns each answer into a deadline on this host's monotonic clock, measured from when the
//! request was *sent*; the host may write only while a permit is available, and every permit
//! carries the fencing epoch its writes must be stamped with.
//!
//! Safety rests on one rule: `deadline = t_sent + valid_for_ms * (1 - 1e-4)`. The function
//! computed `valid_for_ms` from a `now` read after `t_sent`, so the deadline falls no later
//! than `expires_at - clock_skew` on the function's clock (the 1e-4 covers this host's clock
//! running up to 100 ppm fast). No answer, a slow answer or an error never extends it.

mod gate;
mod gates;
mod source;

pub use gate::{GateConfig, GateState, GrantHook, LeaseGate, WritePermit};
pub use gates::LeaseGates;
pub use source::{HttpLeaseSource, LeaseSource, SourceError};
