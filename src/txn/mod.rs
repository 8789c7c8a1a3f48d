//! Producer ids and the transaction coordinators.
//! The per-partition sequence state of idempotent producers lives with the log
//! (`log::producer_state`), where appends are checked under the partition lock.
//!
//! - `producer_ids.rs`: producer-id blocks from the active controller.
//! - `coordinator.rs`: `TxnCoordinator`, the transactional ids of one `__transaction_state`
//!   partition.
//! - `coordinators.rs`: `TxnCoordinators`, one coordinator per `__transaction_state` partition
//!   this broker leads, and the routing of a transactional id to its coordinator.
//! - `markers.rs`: where a transaction's markers go (here, or WriteTxnMarkers to the leader).

pub mod coordinator;
pub mod coordinators;
pub mod markers;
pub mod producer_ids;

pub use coordinators::TxnCoordinators;
