//! Partition logs: record batches in segments with sparse offset and time indexes, on disk or
//! in memory. This module knows nothing of the network or of Kafka requests; it stores opaque
//! v2 record batches and answers offset questions about them.

pub mod batch;
pub mod cleaner;
pub mod codec;
pub mod cold;
mod config;
pub mod epoch_cache;
mod flush;
pub mod fsutil;
pub mod index;
mod loader;
mod local_log;
pub mod open_files;
pub mod partition;
pub mod producer_state;
mod retention;
pub mod segment;
pub mod store;
pub mod txn;
pub mod validate;

pub use cleaner::CompactionReport;
pub use config::LogConfig;
pub use flush::Checkpoint;
pub use partition::{
    now_ms, AppendInfo, ClientBatches, HwWaitError, Isolation, LogError, PartitionLog, ReadInfo,
};
pub use retention::RetentionReport;
pub use store::{FileSlice, Records};
pub use txn::AbortedTxn;
