//! Committed offsets: what each group has committed per partition, and what transactions have
//! committed for it that awaits their marker; screening a commit; offset retention. Plain data:
//! the group shard (`shard.rs`) changes it only by replaying `__consumer_offsets` records.

use std::collections::{HashMap, HashSet};

use kafka_protocol::error::ResponseError;

use super::store::CommittedOffset;
use super::NONE;

/// Largest offset-commit metadata string (Kafka's `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

/// One group's offsets by (topic, partition).
pub type PartitionOffsets = HashMap<(String, i32), CommittedOffset>;

/// A transaction's offsets for one group (`None`: a tombstone), until its marker.
type PendingOffsets = HashMap<(String, i32), Option<CommittedOffset>>;

/// An offset to commit: topic, partition, offset, whether the partition exists.
pub type OffsetToCommit = (String, i32, CommittedOffset, bool);

/// Every group's committed offsets, and the transactional ones pending their marker.
#[derive(Debug, Default)]
pub struct Offsets {
    committed: HashMap<String, PartitionOffsets>,
    /// producer id -> group -> offsets, until the producer's marker applies or drops them.
    pending: HashMap<i64, HashMap<String, PendingOffsets>>,
}

impl Offsets {
    /// A committed offset, or its tombstone (`None`).
    pub fn put(
        &mut self,
        group: &str,
        topic: &str,
        partition: i32,
        value: Option<CommittedOffset>,
    ) {
        let key = (topic.to_string(), partition);
        match value {
            Some(v) => {
                self.committed
                    .entry(group.to_string())
                    .or_default()
                    .insert(key, v);
            }
            None => {
                if let Some(offsets) = self.committed.get_mut(group) {
                    offsets.remove(&key);
                    if offsets.is_empty() {
                        self.committed.remove(group);
                    }
                }
            }
        }
    }

    /// An offset committed inside `producer_id`'s transaction.
    pub fn put_pending(
        &mut self,
        producer_id: i64,
        group: &str,
        topic: &str,
        partition: i32,
        value: Option<CommittedOffset>,
    ) {
        self.pending
            .entry(producer_id)
            .or_default()
            .entry(group.to_string())
            .or_default()
            .insert((topic.to_string(), partition), value);
    }

    /// `producer_id`'s transaction ended: its pending offsets apply (commit) or are dropped.
    pub fn end_txn(&mut self, producer_id: i64, commit: bool) {
        let Some(groups) = self.pending.remove(&producer_id) else {
            return;
        };
        if commit {
            for (group, offsets) in groups {
                for ((topic, partition), value) in offsets {
                    self.put(&group, &topic, partition, value);
                }
            }
        }
    }

    /// The groups `producer_id`'s open transaction has offsets for.
    pub fn pending_groups(&self, producer_id: i64) -> Vec<String> {
        self.pending
            .get(&producer_id)
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A group's committed offsets.
    pub fn of(&self, group: &str) -> Option<&PartitionOffsets> {
        self.committed.get(group)
    }

    /// The partitions for which a group has transactional offsets not yet committed or
    /// aborted.
    pub fn pending_partitions(&self, group: &str) -> HashSet<(String, i32)> {
        self.pending
            .values()
            .filter_map(|groups| groups.get(group))
            .flat_map(|offsets| offsets.keys().cloned())
            .collect()
    }

    /// Whether a group has any offset, committed or pending.
    pub fn holds_any(&self, group: &str) -> bool {
        self.committed.contains_key(group) || self.pending.values().any(|g| g.contains_key(group))
    }

    /// Every group with an offset, committed or pending.
    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.committed
            .keys()
            .chain(self.pending.values().flat_map(|g| g.keys()))
    }
}

/// The per-partition errors of a commit (in order) and the offsets accepted: those of existing
/// partitions whose metadata is within the limit.
pub fn screen(offsets: Vec<OffsetToCommit>) -> (Vec<i16>, Vec<(String, i32, CommittedOffset)>) {
    let mut errors = Vec::with_capacity(offsets.len());
    let mut accepted = Vec::new();
    for (topic, partition, offset, exists) in offsets {
        if !exists {
            errors.push(ResponseError::UnknownTopicOrPartition.code());
        } else if offset.metadata.len() > OFFSET_METADATA_MAX_BYTES {
            errors.push(ResponseError::OffsetMetadataTooLarge.code());
        } else {
            errors.push(NONE);
            accepted.push((topic, partition, offset));
        }
    }
    (errors, accepted)
}

/// How long an empty group's offsets are kept (`offsets.retention.minutes`): counted from the
/// commit for a group that never had members (a "simple" group, no protocol type), else from
/// the moment the group became empty.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub retention_ms: i64,
    pub simple: bool,
    pub empty_since_ms: i64,
}

impl Retention {
    fn since(&self, o: &CommittedOffset) -> i64 {
        if self.simple {
            o.commit_timestamp_ms
        } else {
            self.empty_since_ms
        }
    }

    /// The first moment one of `offsets` has expired (`None`: none ever will).
    pub fn deadline(&self, offsets: &PartitionOffsets) -> Option<i64> {
        if self.retention_ms < 0 {
            return None;
        }
        offsets
            .values()
            .map(|o| {
                self.since(o)
                    .saturating_add(self.retention_ms)
                    .saturating_add(1)
            })
            .min()
    }

    /// The partitions whose offset has expired at `now`.
    pub fn expired(&self, offsets: &PartitionOffsets, now: i64) -> Vec<(String, i32)> {
        if self.retention_ms < 0 {
            return Vec::new();
        }
        offsets
            .iter()
            .filter(|(_, o)| now - self.since(o) > self.retention_ms)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64, ts: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: ts,
        }
    }

    #[test]
    fn pending_offsets_apply_on_commit_and_vanish_on_abort() {
        let mut o = Offsets::default();
        o.put("g", "t", 0, Some(at(1, 0)));
        o.put_pending(7, "g", "t", 0, Some(at(5, 0)));
        o.put_pending(8, "g", "t", 1, Some(at(9, 0)));
        assert_eq!(o.pending_partitions("g").len(), 2);
        o.end_txn(8, false);
        o.end_txn(7, true);
        let g = o.of("g").unwrap();
        assert_eq!(g[&("t".to_string(), 0)].offset, 5);
        assert!(!g.contains_key(&("t".to_string(), 1)));
        assert!(o.pending_partitions("g").is_empty());
        o.put("g", "t", 0, None);
        assert!(!o.holds_any("g"), "the last tombstone forgets the group");
    }

    #[test]
    fn retention_counts_from_the_commit_or_from_emptiness() {
        let mut offsets = PartitionOffsets::new();
        offsets.insert(("t".into(), 0), at(1, 100));
        let simple = Retention {
            retention_ms: 50,
            simple: true,
            empty_since_ms: 1_000,
        };
        assert_eq!(simple.deadline(&offsets), Some(151));
        assert!(simple.expired(&offsets, 150).is_empty());
        assert_eq!(simple.expired(&offsets, 151).len(), 1);
        let consumer = Retention {
            simple: false,
            ..simple
        };
        assert_eq!(consumer.deadline(&offsets), Some(1_051));
        let forever = Retention {
            retention_ms: -1,
            ..simple
        };
        assert_eq!(forever.deadline(&offsets), None);
    }
}
