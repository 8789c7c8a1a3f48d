//! Partition logs: record batches in segments with sparse offset and time indexes, on disk or
//! in memory. This module knows nothing of the network or of Kafka requests; it stores opaque
//! v2 record batches and answers offset questions about them.

pub mod batch;
pub mod cleaner;
pub mod codec;
pub mod cold;
pub mod epoch_cache;
pub mod fsutil;
pub mod index;
pub mod open_files;
pub mod partition;
pub mod producer_state;
pub mod segment;
pub mod store;
pub mod txn;
pub mod validate;

pub use partition::{
    now_ms, AppendInfo, CompactionReport, Isolation, LogConfig, LogError, PartitionLog, ReadInfo,
    RetentionReport,
};
pub use store::{FileSlice, Records};
pub use txn::AbortedTxn;
