//! kvdemo: a key-value host in one AZ that writes only with a permit from its `LeaseGate`.
//! Every write is stamped with the permit's epoch and stored with tenure's fencing condition,
//! so the data table itself refuses a deposed primary's late writes; a write is acknowledged
//! only after it is stored. Gate changes go to a JSON-lines log with CLOCK_MONOTONIC
//! timestamps, which every process on one machine shares, so a checker can prove no two hosts
//! were writable at once.

pub mod gate_log;
pub mod http;
pub mod store;
