//! The metadata layer: a Raft log (openraft) of [`records::MetaRecord`]s, replicated across
//! the controller quorum, applied on every node to an immutable [`image::MetadataImage`].
//! Handlers read the image; the active controller (the raft leader) is the only writer of the
//! log. See ARCHITECTURE.md, "Cluster: the metadata quorum".

pub mod broker_lifecycle;
pub mod client_quotas;
pub mod connector;
pub mod controller;
pub mod election;
pub mod image;
pub mod network;
pub mod node;
pub mod raft_log;
pub mod reassign;
pub mod records;
pub mod rpc;
pub mod service;
pub mod state_machine;
#[cfg(test)]
mod transport_tests;

use std::io::Cursor;

pub use records::{MetaBatch, MetaRecord, MetaReply};

openraft::declare_raft_types!(
    /// openraft's types for the metadata log: entries carry a [`MetaBatch`]; node ids are
    /// Kafka node ids (≥ 0); a node's address is its controller listener.
    pub TypeConfig:
        D = MetaBatch,
        R = MetaReply,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The metadata log's raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// openraft's storage error, as our storage reports it.
pub type StorageError = openraft::StorageError<u64>;
/// A log entry of the metadata log.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id (term and leader, index).
pub type LogId = openraft::LogId<u64>;
/// A vote.
pub type Vote = openraft::Vote<u64>;
