//! The group coordinator as a [`Shard`]: what `__consumer_offsets` holds ([`GroupShard`]:
//! every group's last stored metadata, committed offsets, transactional offsets awaiting their
//! marker), changed only by replaying its records; and what lives in memory only ([`Groups`],
//! the shard's volatile state: the membership state machines with their sessions and waiting
//! answers, and the timer), derived from the replayed state at load and changed directly by
//! the operations.

use std::collections::HashMap;
use std::io;

use kafka_protocol::records::Record;

use super::offsets::{Offsets, Retention};
use super::state::{Group, GroupState};
use super::store::{self, GroupRecord, OffsetsRecord};
use super::timer::Deadlines;
use super::GroupConfig;
use crate::coordinator::Shard;

/// The groups as `__consumer_offsets` has them.
#[derive(Debug, Default)]
pub struct GroupShard {
    /// Each group's last stored metadata (a tombstone removes it).
    metadata: HashMap<String, GroupRecord>,
    offsets: Offsets,
}

impl GroupShard {
    pub fn offsets(&self) -> &Offsets {
        &self.offsets
    }

    /// A group's last stored metadata.
    pub fn metadata(&self, group: &str) -> Option<&GroupRecord> {
        self.metadata.get(group)
    }

    /// Whether the log holds anything of the group (metadata, offsets committed or pending).
    pub fn holds(&self, group: &str) -> bool {
        self.metadata.contains_key(group) || self.offsets.holds_any(group)
    }
}

impl Shard for GroupShard {
    type Record = OffsetsRecord;
    type Volatile = Groups;

    fn decode(record: Record) -> Option<OffsetsRecord> {
        store::decode(record)
    }

    fn encode(records: &[OffsetsRecord]) -> io::Result<Vec<u8>> {
        store::encode(records)
    }

    fn replay(&mut self, record: &OffsetsRecord) {
        match record {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
                producer: None,
            } => self.offsets.put(group, topic, *partition, value.clone()),
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
                producer: Some((producer_id, _)),
            } => self
                .offsets
                .put_pending(*producer_id, group, topic, *partition, value.clone()),
            OffsetsRecord::Group { group, value } => match value {
                Some(v) => {
                    self.metadata.insert(group.clone(), v.clone());
                }
                None => {
                    self.metadata.remove(group);
                }
            },
            OffsetsRecord::Marker {
                producer_id,
                commit,
                ..
            } => self.offsets.end_txn(*producer_id, *commit),
        }
    }
}

/// The groups in memory: membership, sessions, waiting answers, and when each group next
/// needs the clock.
pub struct Groups {
    pub live: HashMap<String, Group>,
    /// Each group's next deadline.
    deadlines: Deadlines,
    pub config: GroupConfig,
    next_join_order: u64,
}

impl Groups {
    /// The groups as the replayed log describes them, at `now`.
    pub fn load(shard: &GroupShard, config: GroupConfig, now: i64) -> Groups {
        let mut live = HashMap::new();
        for (id, record) in &shard.metadata {
            live.insert(id.clone(), Group::from_record(id, record, now));
        }
        for id in shard.offsets.groups() {
            live.entry(id.clone())
                .or_insert_with(|| Group::new(id, now));
        }
        let mut groups = Groups {
            live,
            deadlines: Deadlines::default(),
            config,
            next_join_order: 0,
        };
        // Groups whose records were all tombstoned (DeleteGroups, expired offsets) are gone.
        let ids: Vec<String> = groups.live.keys().cloned().collect();
        for id in &ids {
            if groups.holds_nothing(shard, id) {
                groups.live.remove(id);
            } else {
                groups.reschedule(shard, id);
            }
        }
        if !groups.live.is_empty() {
            tracing::info!(groups = groups.live.len(), "loaded consumer groups");
        }
        groups
    }

    /// The next rank among joiners.
    pub fn join_order(&mut self) -> u64 {
        self.next_join_order += 1;
        self.next_join_order
    }

    /// Member ids handed out and awaiting their join, over all groups.
    pub fn pending_members(&self) -> usize {
        self.live.values().map(|g| g.pending.len()).sum()
    }

    /// The offset retention of an empty group (`None` unless empty).
    pub fn retention(&self, group: &Group) -> Option<Retention> {
        (group.state == GroupState::Empty).then_some(Retention {
            retention_ms: self.config.offsets_retention_ms,
            simple: group.protocol_type.is_none(),
            empty_since_ms: group.empty_since_ms,
        })
    }

    /// Nothing to keep: an empty membership and nothing in the log.
    pub fn holds_nothing(&self, shard: &GroupShard, id: &str) -> bool {
        self.live
            .get(id)
            .is_some_and(|g| g.membership_is_empty() && !shard.offsets.holds_any(id))
    }

    /// The earliest moment the clock must look at a group (what the tick acts on).
    fn next_deadline(&self, shard: &GroupShard, id: &str) -> Option<i64> {
        let group = self.live.get(id)?;
        if self.holds_nothing(shard, id) {
            // Due at once: the next tick forgets it.
            return Some(i64::MIN);
        }
        let expiry = self
            .retention(group)
            .zip(shard.offsets.of(id))
            .and_then(|(r, offsets)| r.deadline(offsets));
        match (group.next_deadline(), expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Recomputes a group's next deadline (after any change to it or to its offsets).
    pub fn reschedule(&mut self, shard: &GroupShard, id: &str) {
        let at = self.next_deadline(shard, id);
        self.deadlines.set(id, at);
    }

    /// The groups whose deadline has come.
    pub fn pop_due(&mut self, now: i64) -> Vec<String> {
        self.deadlines.pop_due(now)
    }

    /// How many groups have a deadline.
    pub fn scheduled(&self) -> usize {
        self.deadlines.len()
    }
}
