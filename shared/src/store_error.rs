//! The one error every store reports, whatever holds the data (DynamoDB in `aws`, a map in
//! the in-memory stores), so the core's decisions never see an SDK type.

/// A store could not answer, or holds an item it cannot read. Callers of the
/// lease store cannot tell "lost the lease" from this, and must not: a host that gets it is in
/// state *unknown* (read-only, keeps polling).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {operation} failed: {message}")]
    Unavailable {
        operation: &'static str,
        message: String,
    },
    #[error("item {item} is malformed: {reason}")]
    Corrupt { item: String, reason: String },
}
