//! Producer ids and the transaction coordinator.
//! The per-partition sequence state of idempotent producers lives with the log
//! (`log::producer_state`), where appends are checked under the partition lock.

pub mod coordinator;
pub mod producer_ids;
