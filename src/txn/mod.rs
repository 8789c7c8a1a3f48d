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
//! - `verify.rs`: whether a partition is in a producer's ongoing transaction, at its
//!   coordinator (here, or AddPartitionsToTxn `verify_only` to the coordinator's broker).
//! - `peers.rs`: the connections to other brokers both use.

pub mod coordinator;
pub mod coordinators;
pub mod markers;
pub mod peers;
pub mod producer_ids;
pub mod verify;

pub use coordinators::TxnCoordinators;
