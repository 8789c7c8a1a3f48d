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
//! - offset commits inside a transaction (TxnOffsetCommit) are a transactional batch of that
//!   producer; its commit/abort marker (a control batch) applies or drops them.
//!
//! Strings are i16 length + UTF-8 (-1 = null). [`OffsetsRecord`] is one record decoded; the
//! group shard (`shard.rs`) replays them.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{Record, TimestampType};

use crate::log::now_ms;

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

/// One record of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    /// A group's committed offset for a partition (`None`: a tombstone). With `producer`,
    /// written inside that producer's transaction: pending until its marker.
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
        producer: Option<(i64, i16)>,
    },
    /// A group's metadata (`None`: a tombstone).
    Group {
        group: String,
        value: Option<GroupRecord>,
    },
    /// A transaction marker: the producer's pending offsets apply (commit) or are dropped.
    Marker {
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    },
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

/// The key and value of a data record (not a marker).
fn encode_key_value(record: &OffsetsRecord) -> io::Result<(Bytes, Option<Bytes>)> {
    let mut key = BytesMut::new();
    match record {
        OffsetsRecord::Offset {
            group,
            topic,
            partition,
            value,
            ..
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
        OffsetsRecord::Group { group, value } => {
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
        OffsetsRecord::Marker { .. } => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a marker is a control batch of its own",
        )),
    }
}

/// Encodes records as one batch (offsets assigned by the log on append): a marker alone as
/// a control batch; offsets inside a transaction as a transactional batch of their producer
/// (all of one producer); anything else as a plain batch.
pub fn encode(records: &[OffsetsRecord]) -> io::Result<Vec<u8>> {
    if let [OffsetsRecord::Marker {
        producer_id,
        producer_epoch,
        commit,
    }] = records
    {
        return Ok(crate::log::txn::encode_marker(
            *producer_id,
            *producer_epoch,
            *commit,
            0,
            now_ms(),
        ));
    }
    let producer = match records.first() {
        Some(OffsetsRecord::Offset { producer, .. }) => *producer,
        _ => None,
    };
    let now = now_ms();
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let same_producer = match r {
                OffsetsRecord::Offset { producer: p, .. } => *p == producer,
                _ => producer.is_none(),
            };
            if !same_producer {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "one batch holds the records of one transaction, or none",
                ));
            }
            let (key, value) = encode_key_value(r)?;
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

/// Decodes one record read from `__consumer_offsets`; `None` for what is not ours (unknown
/// key versions, group metadata inside a transaction, malformed keys).
pub fn decode(r: Record) -> Option<OffsetsRecord> {
    if r.control {
        // Key: version, then ABORT (0) or COMMIT (1); anything else drops the pending offsets.
        let commit = r
            .key
            .as_ref()
            .is_some_and(|k| k.len() >= 4 && (&k[2..4]).get_i16() == 1);
        return Some(OffsetsRecord::Marker {
            producer_id: r.producer_id,
            producer_epoch: r.producer_epoch,
            commit,
        });
    }
    let mut key = r.key?;
    if key.remaining() < 2 {
        return None;
    }
    match key.get_i16() {
        0 | 1 => {
            let (Some(Some(group)), Some(Some(topic))) = (get_str(&mut key), get_str(&mut key))
            else {
                return None;
            };
            if key.remaining() < 4 {
                return None;
            }
            let partition = key.get_i32();
            Some(OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value: r.value.and_then(decode_offset),
                producer: r.transactional.then_some((r.producer_id, r.producer_epoch)),
            })
        }
        2 if !r.transactional => {
            let Some(Some(group)) = get_str(&mut key) else {
                return None;
            };
            Some(OffsetsRecord::Group {
                group,
                value: r.value.and_then(decode_group),
            })
        }
        _ => None,
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
    use crate::coordinator::Runtime;
    use crate::groups::shard::GroupShard;
    use crate::log::{LogConfig, PartitionLog};
    use std::sync::Arc;

    fn offset_record(group: &str, partition: i32, value: Option<CommittedOffset>) -> OffsetsRecord {
        OffsetsRecord::Offset {
            group: group.into(),
            topic: "t".into(),
            partition,
            value,
            producer: None,
        }
    }

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
            encode(&[offset_record(
                group,
                0,
                Some(CommittedOffset {
                    metadata: metadata.to_string(),
                    ..offset.clone()
                }),
            )])
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
        let group = encode(&[OffsetsRecord::Group {
            group: "g".into(),
            value: Some(record),
        }]);
        assert!(group.is_err(), "member id");
    }

    #[test]
    fn commits_and_tombstones_replay() {
        let log = Arc::new(PartitionLog::in_memory(LogConfig::default()));
        let append = |records: &[OffsetsRecord]| {
            let mut batch = encode(records).unwrap();
            log.append(&mut batch, None).unwrap();
        };
        let c = |o| CommittedOffset {
            offset: o,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 9,
        };
        let (a, b) = (c(5), c(7));
        append(&[
            offset_record("g", 0, Some(a.clone())),
            offset_record("g", 1, Some(a.clone())),
            OffsetsRecord::Group {
                group: "g".into(),
                value: Some(GroupRecord {
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
        ]);
        append(&[
            offset_record("g", 0, Some(b.clone())),
            offset_record("g", 1, None),
        ]);
        // A transaction's offsets apply at its commit marker; an aborted one's never.
        let txn = |producer_id: i64, partition: i32, commit: bool| {
            append(&[OffsetsRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition,
                value: Some(c(100 + producer_id)),
                producer: Some((producer_id, 0)),
            }]);
            append(&[OffsetsRecord::Marker {
                producer_id,
                producer_epoch: 0,
                commit,
            }]);
        };
        txn(1, 2, true);
        txn(2, 3, false);
        let config = crate::groups::GroupConfig {
            initial_rebalance_delay_ms: 0,
            min_session_timeout_ms: 1,
            max_session_timeout_ms: 1,
            offsets_retention_ms: -1,
        };
        let rt = Runtime::load(log.clone(), GroupShard::default(), |s| {
            crate::groups::shard::Groups::load(s, config, 0)
        })
        .unwrap();
        rt.read(|s| {
            let offsets = s.offsets().of("g").unwrap();
            assert_eq!(offsets.len(), 2);
            assert_eq!(offsets[&("t".to_string(), 0)], b);
            assert_eq!(offsets[&("t".to_string(), 2)].offset, 101);
            assert!(s.offsets().pending_partitions("g").is_empty());
            let g = s.metadata("g").unwrap();
            assert_eq!(g.generation, 4);
            assert_eq!(g.protocol.as_deref(), Some("range"));
            assert_eq!(g.members.len(), 1);
            assert_eq!(&g.members[0].assignment[..], b"asg");
            assert_eq!(g.members[0].instance_id.as_deref(), Some("i1"));
        });
    }
}
