//! The group coordinator (classic consumer-group protocol, as Kafka's `GroupCoordinator`):
//! membership, rebalances, and committed offsets, kept in `__consumer_offsets` and run on the
//! coordinator runtime (`crate::coordinator`), as the transaction coordinator is.
//!
//! - `state.rs`: the state machine of one group (members, rebalances; pure transitions that
//!   take `now`, no I/O, no lock); what a transition wants done besides the change it
//!   returns as `Effects` (answers for waiting members, the group's metadata to store).
//! - `offsets.rs`: committed offsets, transactional offsets awaiting their marker, commit
//!   screening, offset retention.
//! - `store.rs`: Kafka's record formats of `__consumer_offsets`, `OffsetsRecord` decoded.
//! - `shard.rs`: `GroupShard`, the log-held state (each group's last stored metadata, its
//!   offsets), changed only by replaying records, at load and after each write alike; and
//!   `Groups`, the shard's in-memory state (the groups' state machines, the timer).
//! - `timer.rs`: each group's next deadline in time order: the tick visits only due groups.
//! - `coordinator.rs`: `GroupCoordinator`, the calls the handlers make.
//! - `coordinators.rs`: `GroupCoordinators`, one coordinator per `__consumer_offsets`
//!   partition this broker leads (loaded and resigned as leadership moves), and the routing of
//!   a group id to its coordinator (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS).
//!
//! What is a record: a group's metadata when the state machine asks for it (a stable group's
//! generation, protocol, leader and members with their assignments, written by the leader's
//! SyncGroup and a static member's rejoin; an emptied group), committed offsets, offsets inside
//! a transaction, transaction markers, and tombstones (DeleteGroups, OffsetDelete, expired
//! offsets). Replay applies them to `GroupShard` only. What is in memory only: the membership
//! between stored points (joins in progress, generations of a rebalance not yet synced),
//! heartbeats and session deadlines, member ids handed out, waiting answers, the timer. A load
//! derives the in-memory groups from the replayed state (a stable group's members carry on and
//! must heartbeat within their session timeout), so replay never has to reconcile with state
//! an operation already changed: the two never overlap.
//!
//! Every call takes the shard lock once: the transition, the append of its records (a
//! page-cache write; blocking only when it rolls a segment, so the writing calls run on the
//! blocking pool) and their replay happen under it; the answers of other members' waiting
//! JoinGroup/SyncGroup requests are sent after it is released, and the wait for durability
//! (`Durability`, the runtime's `Committed`: the flush policy's fsync, then the high watermark passing the records, i.e. every in-sync replica has them) happens in the
//! handler, on the blocking pool, with no lock held. No lock is held across an `.await`.

pub mod coordinator;
pub mod coordinators;
pub mod offsets;
pub mod shard;
pub mod state;
pub mod store;
pub mod timer;

pub use coordinator::GroupCoordinator;
pub use coordinators::GroupCoordinators;
pub use offsets::{OffsetToCommit, OFFSET_METADATA_MAX_BYTES};
pub use state::{
    ClientInfo, GroupDescription, GroupState, JoinRequest, JoinResult, MemberDescription, Reply,
    SyncRequest, SyncResult, PENDING_MEMBERS_MAX, PENDING_MEMBERS_PER_GROUP_MAX,
};
pub use store::{CommittedOffset, GroupRecord, MemberRecord};

use crate::coordinator::Committed;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Kafka's "no error" code.
pub const NONE: i16 = 0;

/// What an answer built on a write to `__consumer_offsets` must wait for: nothing, the write's
/// commit (the flush policy wants it durable before it is acknowledged), or nothing at all
/// because the write failed.
#[derive(Debug, Clone, Default)]
pub enum Durability {
    #[default]
    Done,
    Pending(Committed),
    /// The write failed: what the client is answered.
    Failed(kafka_protocol::error::ResponseError),
}

/// Coordinator settings (from the broker config).
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub offsets_retention_ms: i64,
}

#[cfg(test)]
mod tests;
