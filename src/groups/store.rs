//! Persistence of group state in the internal compacted topic `__consumer_offsets`, in Kafka's
//! own record formats (so Kafka's tools could read it):
//! - offset commit: key `OffsetCommitKey` v1 (version i16 = 1, group, topic, partition i32),
//!   value `OffsetCommitValue` v3 (version i16 = 3, offset i64, leader epoch i32, metadata,
//!   commit timestamp i64);
//! - group metadata: key `GroupMetadataKey` v2 (version i16 = 2, group), value
//!   `GroupMetadataValue` v3 (protocol type, generation i32, protocol?, leader?, state timestamp
//!   i64, members: written empty — members rejoin after a restart);
//! - a null value (tombstone) deletes the key: compaction then drops it.
//!
//! Strings are i16 length + UTF-8 (-1 = null). On start the whole partition is replayed.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{Record, TimestampType};

use crate::log::{now_ms, PartitionLog};

/// What a group has committed for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// The group-level facts kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupRecord {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// The members of a stable group (empty otherwise), so that after a restart they carry on
    /// without a rebalance, as with Kafka.
    pub members: Vec<MemberRecord>,
}

/// One member as persisted (Kafka's GroupMetadataValue v3 member fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// One change to persist.
pub enum Change<'a> {
    Offset {
        group: &'a str,
        topic: &'a str,
        partition: i32,
        value: Option<&'a CommittedOffset>,
    },
    Group {
        group: &'a str,
        value: Option<&'a GroupRecord>,
    },
}

/// Everything replayed from the log.
#[derive(Default)]
pub struct Replayed {
    pub offsets: HashMap<String, HashMap<(String, i32), CommittedOffset>>,
    pub groups: HashMap<String, GroupRecord>,
    /// Transactional offset commits without a marker yet: producer id -> records.
    pub pending: HashMap<i64, Vec<(Bytes, Option<Bytes>)>>,
}

/// Longest string the internal topics' records hold: Kafka's strings there have an i16
/// length. Requests carrying a longer one are refused (INVALID_REQUEST) before they get here.
pub const INTERNAL_STRING_MAX_BYTES: usize = i16::MAX as usize;

/// Whether `s` fits an internal record's i16-length string.
pub fn fits_internal_string(s: &str) -> bool {
    s.len() <= INTERNAL_STRING_MAX_BYTES
}

/// Writes an i16-length string (-1 = null). A longer string is an error: never truncated,
/// never a wrapped length.
pub fn put_str(buf: &mut BytesMut, s: Option<&str>) -> io::Result<()> {
    match s {
        Some(s) => {
            let len = i16::try_from(s.len()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a string of {} bytes does not fit an internal record (at most {INTERNAL_STRING_MAX_BYTES})",
                        s.len()
                    ),
                )
            })?;
            buf.put_i16(len);
            buf.put_slice(s.as_bytes());
        }
        None => buf.put_i16(-1),
    }
    Ok(())
}

/// Writes an i32-length byte field; longer than `i32::MAX` is an error.
fn put_bytes(buf: &mut BytesMut, b: &[u8]) -> io::Result<()> {
    let len = i32::try_from(b.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bytes too long for a record"))?;
    buf.put_i32(len);
    buf.put_slice(b);
    Ok(())
}

fn get_str(buf: &mut Bytes) -> Option<Option<String>> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 {
        return Some(None);
    }
    if buf.remaining() < len as usize {
        return None;
    }
    let s = buf.split_to(len as usize);
    Some(Some(String::from_utf8_lossy(&s).into_owned()))
}

fn encode_change(change: &Change<'_>) -> io::Result<(Bytes, Option<Bytes>)> {
    let mut key = BytesMut::new();
    match change {
        Change::Offset {
            group,
            topic,
            partition,
            value,
        } => {
            key.put_i16(1);
            put_str(&mut key, Some(group))?;
            put_str(&mut key, Some(topic))?;
            key.put_i32(*partition);
            let value = match value {
                None => None,
                Some(v) => {
                    let mut b = BytesMut::new();
                    b.put_i16(3);
                    b.put_i64(v.offset);
                    b.put_i32(v.leader_epoch);
                    put_str(&mut b, Some(&v.metadata))?;
                    b.put_i64(v.commit_timestamp_ms);
                    Some(b.freeze())
                }
            };
            Ok((key.freeze(), value))
        }
        Change::Group { group, value } => {
            key.put_i16(2);
            put_str(&mut key, Some(group))?;
            let value = match value {
                None => None,
                Some(g) => {
                    let mut b = BytesMut::new();
                    b.put_i16(3);
                    put_str(&mut b, Some(&g.protocol_type))?;
                    b.put_i32(g.generation);
                    put_str(&mut b, g.protocol.as_deref())?;
                    put_str(&mut b, g.leader.as_deref())?;
                    b.put_i64(now_ms());
                    let members = i32::try_from(g.members.len()).map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidInput, "too many group members")
                    })?;
                    b.put_i32(members);
                    for m in &g.members {
                        put_str(&mut b, Some(&m.member_id))?;
                        put_str(&mut b, m.instance_id.as_deref())?;
                        put_str(&mut b, Some(&m.client_id))?;
                        put_str(&mut b, Some(&m.client_host))?;
                        b.put_i32(m.rebalance_timeout_ms);
                        b.put_i32(m.session_timeout_ms);
                        put_bytes(&mut b, &m.subscription)?;
                        put_bytes(&mut b, &m.assignment)?;
                    }
                    Some(b.freeze())
                }
            };
            Ok((key.freeze(), value))
        }
    }
}

/// Encodes changes as one record batch (offsets assigned by the log on append).
pub fn encode_batch(changes: &[Change<'_>]) -> io::Result<Vec<u8>> {
    encode_batch_as(changes, None)
}

/// Like [`encode_batch`]; with a producer `(id, epoch)` the batch is transactional: it takes
/// effect only when that producer's commit marker follows (TxnOffsetCommit).
pub fn encode_batch_as(
    changes: &[Change<'_>],
    producer: Option<(i64, i16)>,
) -> io::Result<Vec<u8>> {
    let now = now_ms();
    let records: Vec<Record> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (key, value) = encode_change(c)?;
            Ok(Record {
                transactional: producer.is_some(),
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: producer.map_or(-1, |p| p.0),
                producer_epoch: producer.map_or(-1, |p| p.1),
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The base sequence stays -1 (no sequence checks: the coordinator writes it);
                // the encoder needs offset - sequence constant within a batch.
                sequence: i as i32 - 1,
                timestamp: now,
                key: Some(key),
                value,
                headers: Default::default(),
            })
        })
        .collect::<io::Result<_>>()?;
    crate::log::batch::encode_records(&records)
}

/// Appends changes to the log. Returns the offset to sync to when the flush policy wants the
/// write durable before it is acknowledged.
pub fn append(log: &PartitionLog, changes: &[Change<'_>]) -> io::Result<Option<i64>> {
    append_as(log, changes, None)
}

/// [`append`], transactional for `producer` when given.
pub fn append_as(
    log: &PartitionLog,
    changes: &[Change<'_>],
    producer: Option<(i64, i16)>,
) -> io::Result<Option<i64>> {
    if changes.is_empty() {
        return Ok(None);
    }
    let mut batch = encode_batch_as(changes, producer)?;
    let info = log
        .append(&mut batch, None)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(info.needs_sync.then_some(info.last_offset + 1))
}

/// Reads the whole log and rebuilds the state (later records win; tombstones delete).
pub fn replay(log: &Arc<PartitionLog>) -> io::Result<Replayed> {
    let mut state = Replayed::default();
    log.for_each_record(|r| {
        if r.control {
            // A transaction marker: apply (COMMIT, type 1) or drop (ABORT, type 0) the
            // producer's pending offset commits.
            let commit = r
                .key
                .as_ref()
                .filter(|k| k.len() >= 4)
                .map(|k| (&k[2..4]).get_i16() == 1)
                .unwrap_or(false);
            if let Some(records) = state.pending.remove(&r.producer_id) {
                if commit {
                    for (key, value) in records {
                        apply(&mut state, key, value);
                    }
                }
            }
            return;
        }
        if let Some(key) = r.key {
            if r.transactional {
                state
                    .pending
                    .entry(r.producer_id)
                    .or_default()
                    .push((key, r.value));
            } else {
                apply(&mut state, key, r.value);
            }
        }
    })?;
    Ok(state)
}

/// Applies one offset/group record to `state` (used to sort out pending transactional ones).
pub fn apply_public(state: &mut Replayed, key: Bytes, value: Option<Bytes>) {
    apply(state, key, value)
}

fn apply(state: &mut Replayed, mut key: Bytes, value: Option<Bytes>) {
    if key.remaining() < 2 {
        return;
    }
    match key.get_i16() {
        0 | 1 => {
            let (Some(Some(group)), Some(Some(topic))) = (get_str(&mut key), get_str(&mut key))
            else {
                return;
            };
            if key.remaining() < 4 {
                return;
            }
            let partition = key.get_i32();
            let offsets = state.offsets.entry(group).or_default();
            match value.and_then(decode_offset) {
                Some(v) => {
                    offsets.insert((topic, partition), v);
                }
                None => {
                    offsets.remove(&(topic, partition));
                }
            }
        }
        2 => {
            let Some(Some(group)) = get_str(&mut key) else {
                return;
            };
            match value.and_then(decode_group) {
                Some(g) => {
                    state.groups.insert(group, g);
                }
                None => {
                    state.groups.remove(&group);
                }
            }
        }
        _ => {}
    }
}

fn decode_offset(mut v: Bytes) -> Option<CommittedOffset> {
    if v.remaining() < 2 {
        return None;
    }
    let version = v.get_i16();
    if v.remaining() < 8 {
        return None;
    }
    let offset = v.get_i64();
    let leader_epoch = if version >= 3 && v.remaining() >= 4 {
        v.get_i32()
    } else {
        -1
    };
    let metadata = get_str(&mut v)?.unwrap_or_default();
    let commit_timestamp_ms = if v.remaining() >= 8 { v.get_i64() } else { 0 };
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn decode_group(mut v: Bytes) -> Option<GroupRecord> {
    if v.remaining() < 2 {
        return None;
    }
    let _version = v.get_i16();
    let protocol_type = get_str(&mut v)?.unwrap_or_default();
    if v.remaining() < 4 {
        return None;
    }
    let generation = v.get_i32();
    let protocol = get_str(&mut v)?;
    let leader = get_str(&mut v)?;
    let mut members = Vec::new();
    if v.remaining() >= 12 {
        let _state_timestamp = v.get_i64();
        let n = v.get_i32();
        for _ in 0..n.max(0) {
            let member_id = get_str(&mut v)??;
            let instance_id = get_str(&mut v)?;
            let client_id = get_str(&mut v)?.unwrap_or_default();
            let client_host = get_str(&mut v)?.unwrap_or_default();
            if v.remaining() < 12 {
                return None;
            }
            let rebalance_timeout_ms = v.get_i32();
            let session_timeout_ms = v.get_i32();
            let mut bytes = || -> Option<Bytes> {
                if v.remaining() < 4 {
                    return None;
                }
                let len = v.get_i32().max(0) as usize;
                (v.remaining() >= len).then(|| v.split_to(len))
            };
            let subscription = bytes()?;
            let assignment = bytes()?;
            members.push(MemberRecord {
                member_id,
                instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription,
                assignment,
            });
        }
    }
    Some(GroupRecord {
        protocol_type,
        generation,
        protocol,
        leader,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;

    #[test]
    fn strings_longer_than_i16_are_an_error_never_truncated() {
        let long = "g".repeat(i16::MAX as usize + 1);
        let longest = "g".repeat(i16::MAX as usize);
        let offset = CommittedOffset {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        };
        let change = |group: &str, metadata: &str| {
            encode_batch(&[Change::Offset {
                group,
                topic: "t",
                partition: 0,
                value: Some(&CommittedOffset {
                    metadata: metadata.to_string(),
                    ..offset.clone()
                }),
            }])
        };
        assert!(change(&long, "").is_err(), "group id");
        assert!(change("g", &long).is_err(), "metadata");
        assert!(change(&longest, "").is_ok());
        let record = GroupRecord {
            protocol_type: "consumer".into(),
            members: vec![MemberRecord {
                member_id: long.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let group = encode_batch(&[Change::Group {
            group: "g",
            value: Some(&record),
        }]);
        assert!(group.is_err(), "member id");
    }

    #[test]
    fn commits_and_tombstones_replay() {
        let log = Arc::new(PartitionLog::in_memory(LogConfig::default()));
        let c = |o| CommittedOffset {
            offset: o,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 9,
        };
        let (a, b) = (c(5), c(7));
        append(
            &log,
            &[
                Change::Offset {
                    group: "g",
                    topic: "t",
                    partition: 0,
                    value: Some(&a),
                },
                Change::Offset {
                    group: "g",
                    topic: "t",
                    partition: 1,
                    value: Some(&a),
                },
                Change::Group {
                    group: "g",
                    value: Some(&GroupRecord {
                        protocol_type: "consumer".into(),
                        generation: 4,
                        protocol: Some("range".into()),
                        leader: Some("m1".into()),
                        members: vec![MemberRecord {
                            member_id: "m1".into(),
                            instance_id: Some("i1".into()),
                            client_id: "c".into(),
                            client_host: "/127.0.0.1".into(),
                            rebalance_timeout_ms: 300_000,
                            session_timeout_ms: 10_000,
                            subscription: Bytes::from_static(b"sub"),
                            assignment: Bytes::from_static(b"asg"),
                        }],
                    }),
                },
            ],
        )
        .unwrap();
        append(
            &log,
            &[
                Change::Offset {
                    group: "g",
                    topic: "t",
                    partition: 0,
                    value: Some(&b),
                },
                Change::Offset {
                    group: "g",
                    topic: "t",
                    partition: 1,
                    value: None,
                },
            ],
        )
        .unwrap();
        let r = replay(&log).unwrap();
        assert_eq!(r.offsets["g"].len(), 1);
        assert_eq!(r.offsets["g"][&("t".to_string(), 0)], b);
        assert_eq!(r.groups["g"].generation, 4);
        assert_eq!(r.groups["g"].protocol.as_deref(), Some("range"));
        assert_eq!(r.groups["g"].members.len(), 1);
        assert_eq!(&r.groups["g"].members[0].assignment[..], b"asg");
        assert_eq!(r.groups["g"].members[0].instance_id.as_deref(), Some("i1"));
    }
}
