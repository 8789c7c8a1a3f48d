//! The coordinator runtime: one way to run every state machine that is kept in a log (the
//! transaction coordinator in `__transaction_state`, the group coordinator in
//! `__consumer_offsets`; the metadata image is to follow), after Kafka's `CoordinatorShard` /
//! `CoordinatorRuntime`.
//!
//! A [`Shard`] is the state machine. Its log-held state changes only by [`Shard::replay`] of
//! one of its own records, at load (every record of the log, in order) and after every write alike: one code
//! path, so the state after a restart is the state before it.
//!
//! A write ([`Runtime::write`], or [`Runtime::lock`] then [`ShardGuard::append`]) runs an operation against the current state; the operation
//! returns the records that express its decision and the answer for the client. Under the
//! shard's lock the runtime appends the records to the log (a page-cache write) and replays
//! them, so the next operation already sees them; then, without the lock, the caller waits
//! for the [`Committed`] (today: the flush policy's fsync, group-committed; with replication:
//! the high watermark passing the records) before answering. Operations on one shard are thus
//! serialised without any lock being held across I/O that another request would wait for.
//!
//! Not everything a coordinator knows belongs in its log: members' sessions, answers waiting
//! for other requests, timers. That is the shard's [`Shard::Volatile`] state: operations change
//! it directly (under the same lock), it is never replayed, and [`Runtime::load`] derives it
//! afresh from the replayed state. The log-held state has one writer, replay; an operation
//! that needs to change it says so with records.
//!
//! If appending fails, nothing was written and nothing is replayed. If the wait fails (an
//! fsync error), the state holds records the log may have lost: the error is returned, the
//! log's own failure handling takes over (the partition is unusable from then on), and the
//! shard must not be trusted until it is reloaded. If the wait times out (the in-sync
//! replicas have not fetched the records yet), the state holds records that may still be
//! committed, or truncated if leadership moves (the shard is then resigned and reloaded
//! elsewhere): until they are committed, every write waits for them, including one that
//! appends nothing, so no answer rests on an uncommitted decision.
//!
//! `partitions.rs`: the coordinators of one internal topic, one per partition this broker
//! leads, loaded and resigned as leadership moves, and the routing of keys to them.
//!
//! Never imports the network or the handlers; the log is its only dependency.

pub mod partitions;

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use kafka_protocol::error::ResponseError;
use kafka_protocol::records::Record;

use crate::log::{HwWaitError, PartitionLog};

/// A state machine kept in a log.
pub trait Shard {
    /// One decoded record of the shard's log.
    type Record;

    /// What the shard keeps in memory only (not in its log, so never replayed): operations
    /// change it directly; a load derives it from the replayed state.
    type Volatile;

    /// Decodes a record read from the log; `None` skips it (control records, unknown
    /// versions, records of another kind).
    fn decode(record: Record) -> Option<Self::Record>;

    /// Encodes records as one v2 batch to append.
    fn encode(records: &[Self::Record]) -> io::Result<Vec<u8>>;

    /// Applies one record: the only way the log-held state changes.
    fn replay(&mut self, record: &Self::Record);
}

/// The shard and its in-memory state, under one lock.
struct Held<S: Shard> {
    shard: S,
    volatile: S::Volatile,
    /// What the last append must wait for: the state already holds its records, so an
    /// operation that decides from that state and writes nothing must not be answered before
    /// they are committed either.
    last_write: Option<Committed>,
}

/// A shard and the log that holds it.
pub struct Runtime<S: Shard> {
    held: Mutex<Held<S>>,
    log: Arc<PartitionLog>,
}

/// How long a coordinator's write waits for its replicas (Kafka's
/// `offsets.commit.timeout.ms`, also its transaction coordinator's bound).
pub const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a write must wait for before its answer may be sent. Cloned when several answers
/// wait for the same write.
#[derive(Clone)]
#[must_use = "a write is answered only once it is committed"]
pub struct Committed {
    log: Option<Arc<PartitionLog>>,
    upto: i64,
    /// The leader epoch the records were appended at: committed only while the replica
    /// still leads at it.
    leader_epoch: i32,
    /// The flush policy wants the records fsynced before the answer.
    needs_sync: bool,
}

impl fmt::Debug for Committed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.log {
            Some(_) => write!(f, "Committed(upto {})", self.upto),
            None => f.write_str("Committed(nothing to wait for)"),
        }
    }
}

impl Committed {
    /// Nothing was written: nothing to wait for.
    pub fn nothing() -> Committed {
        Committed {
            log: None,
            upto: 0,
            leader_epoch: 0,
            needs_sync: false,
        }
    }

    /// Whether there is nothing to wait for.
    pub fn is_nothing(&self) -> bool {
        self.log.is_none()
    }

    /// Blocks until the records are committed: durable by the flush policy and below the
    /// high watermark, i.e. on every in-sync replica (Kafka's coordinators write with
    /// acks=all), within [`COMMIT_TIMEOUT`], while this replica still leads at the epoch of
    /// the write. Call it off the async runtime. A timeout is `io::ErrorKind::TimedOut`;
    /// [`not_committed`] gives the error code a client gets.
    pub fn wait(self) -> io::Result<()> {
        match self.log {
            Some(log) => {
                if self.needs_sync {
                    log.sync_to(self.upto)?;
                }
                log.wait_high_watermark(self.upto, self.leader_epoch, COMMIT_TIMEOUT)
                    .map_err(|e| match e {
                        HwWaitError::TimedOut => io::Error::new(io::ErrorKind::TimedOut, e),
                        e => io::Error::other(e),
                    })
            }
            None => Ok(()),
        }
    }
}

/// What a client is answered when a coordinator's write was not committed, as Kafka 4's
/// coordinators map it: a timeout waiting for the in-sync replicas is
/// COORDINATOR_NOT_AVAILABLE; a lost leadership (the write may be truncated) or a storage
/// failure is NOT_COORDINATOR. Both make clients find the coordinator again and retry.
pub fn not_committed(error: &io::Error) -> ResponseError {
    if error.kind() == io::ErrorKind::TimedOut {
        ResponseError::CoordinatorNotAvailable
    } else {
        ResponseError::NotCoordinator
    }
}

/// Why a write failed.
#[derive(Debug)]
pub enum WriteError<E> {
    /// The operation refused (its own error; nothing was written).
    Refused(E),
    /// Encoding or appending the records failed (nothing was written).
    Storage(io::Error),
}

/// The shard locked for one operation: read the log-held state, change the in-memory state,
/// append records (replayed at once). Dropping it lets the next operation in; wait for the
/// [`Committed`] of its appends only after that.
pub struct ShardGuard<'a, S: Shard> {
    held: MutexGuard<'a, Held<S>>,
    log: &'a Arc<PartitionLog>,
}

impl<S: Shard> ShardGuard<'_, S> {
    /// The log-held state.
    pub fn shard(&self) -> &S {
        &self.held.shard
    }

    /// The in-memory state.
    pub fn volatile(&mut self) -> &mut S::Volatile {
        &mut self.held.volatile
    }

    /// Both: the log-held state to read, the in-memory state to change.
    pub fn parts(&mut self) -> (&S, &mut S::Volatile) {
        let held = &mut *self.held;
        (&held.shard, &mut held.volatile)
    }

    /// Appends `records` as one batch and replays them. Blocking when the append must roll a
    /// segment: call it off the async runtime. On an error nothing was written or replayed.
    pub fn append(&mut self, records: &[S::Record]) -> io::Result<Committed> {
        if records.is_empty() {
            return Ok(Committed::nothing());
        }
        let mut batch = S::encode(records)?;
        let info = self
            .log
            .append(&mut batch, None)
            .map_err(|e| io::Error::other(e.to_string()))?;
        for r in records {
            self.held.shard.replay(r);
        }
        let committed = Committed {
            log: Some(self.log.clone()),
            upto: info.last_offset + 1,
            leader_epoch: info.leader_epoch,
            needs_sync: info.needs_sync,
        };
        self.held.last_write = Some(committed.clone());
        Ok(committed)
    }

    /// What the state this guard shows waits for: the last append while it is not below the
    /// high watermark (or, when the flush policy wants it, not yet fsynced), else nothing.
    fn pending(&mut self) -> Committed {
        match &self.held.last_write {
            Some(c)
                if c.upto > self.log.high_watermark()
                    || (c.needs_sync && c.upto > self.log.durable_offset()) =>
            {
                c.clone()
            }
            _ => {
                self.held.last_write = None;
                Committed::nothing()
            }
        }
    }
}

impl<S: Shard> Runtime<S> {
    /// Loads `shard` by replaying every record of `log`, then derives the in-memory state
    /// from what was replayed.
    pub fn load(
        log: Arc<PartitionLog>,
        mut shard: S,
        volatile: impl FnOnce(&S) -> S::Volatile,
    ) -> io::Result<Runtime<S>> {
        log.for_each_record(|r| {
            if let Some(record) = S::decode(r) {
                shard.replay(&record);
            }
        })?;
        let volatile = volatile(&shard);
        Ok(Runtime {
            held: Mutex::new(Held {
                shard,
                volatile,
                last_write: None,
            }),
            log,
        })
    }

    /// The log behind the shard.
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// Locks the shard for one operation.
    pub fn lock(&self) -> ShardGuard<'_, S> {
        ShardGuard {
            // A panic inside an operation leaves the state as its last replay left it.
            held: self.held.lock().unwrap_or_else(|p| p.into_inner()),
            log: &self.log,
        }
    }

    /// Reads the log-held state (no write, no wait).
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(self.lock().shard())
    }

    /// Runs `op` on the current state; appends and replays the records it returns, under the
    /// shard lock; returns its answer and what to wait for before sending it. Blocking when the
    /// append must roll a segment: call it off the async runtime.
    ///
    /// An operation that writes nothing still waits for the last write when that is not yet
    /// committed (as Kafka's `CoordinatorRuntime` completes an empty write at the last written
    /// offset): its answer was decided from a state that holds those records. Without that, a
    /// client retrying a request whose write timed out (an EndTxn, an AddPartitionsToTxn)
    /// would be told it succeeded while the records could still be truncated away.
    pub fn write<R, E>(
        &self,
        op: impl FnOnce(&S) -> Result<(Vec<S::Record>, R), E>,
    ) -> Result<(R, Committed), WriteError<E>> {
        let mut guard = self.lock();
        let (records, answer) = op(guard.shard()).map_err(WriteError::Refused)?;
        let committed = if records.is_empty() {
            guard.pending()
        } else {
            guard.append(&records).map_err(WriteError::Storage)?
        };
        Ok((answer, committed))
    }

    /// [`Runtime::write`], then [`Committed::wait`]: the answer once its records are committed.
    pub fn write_and_wait<R, E>(
        &self,
        op: impl FnOnce(&S) -> Result<(Vec<S::Record>, R), E>,
    ) -> Result<R, WriteError<E>> {
        let (answer, committed) = self.write(op)?;
        committed.wait().map_err(WriteError::Storage)?;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;
    use bytes::Bytes;

    /// A counter kept in a log: each record adds its value.
    #[derive(Default)]
    struct Sum(i64);

    impl Shard for Sum {
        type Record = i64;
        type Volatile = ();
        fn decode(r: Record) -> Option<i64> {
            let v = r.value?;
            Some(i64::from_be_bytes(v[..].try_into().ok()?))
        }
        fn encode(records: &[i64]) -> io::Result<Vec<u8>> {
            let records: Vec<Record> = records
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let value = Bytes::copy_from_slice(&v.to_be_bytes());
                    crate::log::batch::plain_record(i, None, Some(value), 0)
                })
                .collect();
            crate::log::batch::encode_records(&records)
        }
        fn replay(&mut self, r: &i64) {
            self.0 += r;
        }
    }

    fn add(rt: &Runtime<Sum>, v: i64) -> Result<i64, WriteError<&'static str>> {
        rt.write_and_wait(|s: &Sum| {
            if s.0 + v < 0 {
                return Err("would go negative");
            }
            Ok((vec![v], s.0 + v))
        })
    }

    #[test]
    fn writes_replay_at_once_and_load_replays_the_same() {
        let log = Arc::new(PartitionLog::in_memory(LogConfig {
            flush_messages: 1,
            ..LogConfig::default()
        }));
        let rt = Runtime::load(log.clone(), Sum::default(), |_| ()).unwrap();
        assert_eq!(add(&rt, 5).unwrap(), 5);
        assert_eq!(add(&rt, -2).unwrap(), 3);
        assert!(matches!(add(&rt, -4), Err(WriteError::Refused(_))));
        assert_eq!(rt.read(|s| s.0), 3);
        assert_eq!(
            log.log_end_offset(),
            2,
            "a refused operation writes nothing"
        );
        // A read-only answer writes nothing and waits for nothing.
        let (answer, committed) = rt.write(|s: &Sum| Ok::<_, ()>((Vec::new(), s.0))).unwrap();
        assert_eq!(answer, 3);
        committed.wait().unwrap();
        assert_eq!(log.log_end_offset(), 2);
        // Loading the same log gives the same state.
        let again = Runtime::load(log, Sum::default(), |_| ()).unwrap();
        assert_eq!(again.read(|s| s.0), 3);
    }

    #[test]
    fn an_answer_that_writes_nothing_waits_for_the_uncommitted_write_it_saw() {
        let log = Arc::new(PartitionLog::in_memory(LogConfig::default()));
        log.set_hw_follows_log_end(false); // a leader whose followers have not fetched yet
        let rt = Runtime::load(log.clone(), Sum::default(), |_| ()).unwrap();
        let (_, first) = rt.write(|s: &Sum| Ok::<_, ()>((vec![5], s.0 + 5))).unwrap();
        assert!(!first.is_nothing());
        // Its wait timed out (the client retries); the retry finds the state already changed
        // and writes nothing, but must not be answered before the first write is committed.
        let (seen, retry) = rt.write(|s: &Sum| Ok::<_, ()>((Vec::new(), s.0))).unwrap();
        assert_eq!(seen, 5);
        assert_eq!(format!("{retry:?}"), "Committed(upto 1)");
        assert!(log.advance_high_watermark(1));
        let (_, after) = rt.write(|s: &Sum| Ok::<_, ()>((Vec::new(), s.0))).unwrap();
        assert!(after.is_nothing(), "committed: nothing left to wait for");
        after.wait().unwrap();
        retry.wait().unwrap();
    }
}
