//! The partition log's write path (Kafka's `UnifiedLog.appendAsLeader`, `appendAsFollower`
//! and `truncateTo`): leader appends (offsets assigned, the leader epoch stamped, sequences
//! and markers checked against the producer state) and follower appends (a leader's batches
//! as they are), transaction markers, segment rolls (a file created outside the state lock,
//! one roller at a time), and truncation of a diverged follower's log.

use std::io;
use std::sync::atomic::Ordering;

use super::{AppendInfo, LogError, LogState, PartitionLog};
use crate::log::batch::{self, BatchHeader, HEADER_BYTES};
use crate::log::flush::closed_io;
use crate::log::producer_state::{ProducerStates, SequenceCheck, VerificationGuard};
use crate::log::segment::Segment;
use crate::log::txn::{self, ControlRecord};

impl PartitionLog {
    /// Appends validated batches as the partition's leader (Kafka's `appendAsLeader`; see
    /// [`batch::validate_batches`]), assigning their offsets and stamping the log's leader
    /// epoch on them. With `log_append_time_ms`, stamps them with that time first. A retried
    /// idempotent batch is not appended again: its original offsets are returned.
    ///
    /// Batches with a producer id go through the producer state: sequence and epoch checks,
    /// a transactional batch opens its producer's transaction, a non-transactional one is
    /// refused while that transaction is open; a control batch holding a transaction marker
    /// ends it (as [`PartitionLog::append_marker`]).
    ///
    /// Rolls a segment first when it must: blocking on disk, call it off the async runtime
    /// The other leader appends: [`PartitionLog::append_shared`] (a shared buffer, never
    /// modified), and a client's [`PartitionLog::append_client`] and
    /// [`PartitionLog::try_append_client`] (which never blocks).
    pub fn append_as_leader(
        &self,
        batches: &mut [u8],
        log_append_time_ms: Option<i64>,
    ) -> Result<AppendInfo, LogError> {
        if let Some(now) = log_append_time_ms {
            batch::stamp_log_append_time(batches, now);
        }
        self.append_rolling(AppendInput::Patch(batches), Verification::NotRequired)
    }

    /// [`PartitionLog::append_as_leader`], by its short name.
    pub fn append(
        &self,
        batches: &mut [u8],
        log_append_time_ms: Option<i64>,
    ) -> Result<AppendInfo, LogError> {
        self.append_as_leader(batches, log_append_time_ms)
    }

    /// As [`PartitionLog::append_as_leader`] (without LogAppendTime), for batches in a buffer
    /// that is shared and must not change (a request frame): instead of being patched in, the
    /// assigned base offsets are written in front of the rest of each batch by one vectored
    /// write. The produce path's record bytes are thus never copied by the broker.
    /// Rolls a segment first when it must (a file created, outside the partition lock):
    /// blocking, call it off the async runtime (a client's produce uses
    /// [`PartitionLog::try_append_client`] on the runtime).
    pub fn append_shared(&self, batches: &[u8]) -> Result<AppendInfo, LogError> {
        self.append_rolling(AppendInput::Shared(batches), Verification::NotRequired)
    }

    /// Before the produce path asks the coordinator to verify `producer_id`'s transaction
    /// for this partition (KIP-890): the guard its append must present, or None when the
    /// producer's transaction is already open here. See [`crate::log::producer_state`].
    pub fn begin_verification(
        &self,
        producer_id: i64,
    ) -> Result<Option<VerificationGuard>, LogError> {
        let now = self.clock.now_ms();
        Ok(self.lock().producers.begin_verification(producer_id, now)?)
    }

    /// A client's produce (Kafka's `AppendOrigin.Client`): as [`PartitionLog::append_shared`]
    /// (`log_append_time_ms` None, the frame shared) or [`PartitionLog::append_as_leader`]
    /// (a batch the broker may patch), and a transactional batch that would open its
    /// producer's transaction here must present the `guard` of a verification still
    /// standing ([`PartitionLog::begin_verification`]); else
    /// [`crate::log::producer_state::SequenceError::NotVerified`] (Kafka's INVALID_TXN_STATE) and nothing appended.
    /// Rolls a segment when it must: blocking, call it off the async runtime, or try
    /// [`PartitionLog::try_append_client`].
    pub fn append_client(
        &self,
        batches: ClientBatches<'_>,
        guard: Option<VerificationGuard>,
    ) -> Result<AppendInfo, LogError> {
        let input = batches.into_input();
        self.append_rolling(input, Verification::Client(guard))
    }

    /// As [`PartitionLog::append_client`], but never blocks: [`LogError::RollNeeded`]
    /// (nothing appended) when a segment must be rolled first.
    pub fn try_append_client(
        &self,
        batches: ClientBatches<'_>,
        guard: Option<VerificationGuard>,
    ) -> Result<AppendInfo, LogError> {
        let mut input = batches.into_input();
        self.append_batches(
            &mut input,
            self.rolling_on_runtime(),
            Verification::Client(guard),
        )
    }

    /// Appends a leader's batches as they are (a follower's fetch): offsets, leader epochs,
    /// producer ids and control batches unchanged; the first batch at or after the log end.
    /// The producer state, the aborted-transaction index and the leader-epoch cache are
    /// rebuilt from what is appended; sequences are not checked (the leader did). Rolls when
    /// it must: call it off the async runtime.
    pub fn append_as_follower(&self, batches: &[u8]) -> Result<AppendInfo, LogError> {
        self.append_rolling(AppendInput::Follower(batches), Verification::NotRequired)
    }

    /// Ends `producer_id`'s transaction in this partition (the transaction coordinator's
    /// WriteTxnMarkers): appends a control batch (transactional + control attributes) whose
    /// one record has key (version 0, type ABORT = 0 | COMMIT = 1) and value (version 0,
    /// `coordinator_epoch`). Returns the marker's offset. On abort the transaction (producer
    /// id, first offset, marker offset) goes to the aborted-transaction index. A marker for a
    /// producer with no ongoing transaction here is written all the same (as Kafka does), and
    /// indexes nothing.
    ///
    /// Refused (as Kafka's transaction versions 0/1): a producer epoch older than the
    /// producer's (`SequenceError::StaleEpoch`), a coordinator epoch older than the last
    /// marker's (`SequenceError::CoordinatorFenced`).
    ///
    /// Flush policy: when it wants the marker durable (`flush.messages`, `fsync = "always"`),
    /// this fsyncs before returning (group-committed, see [`PartitionLog::sync_to`]), so it
    /// may block: call it off the async runtime. [`PartitionLog::append_marker_unsynced`]
    /// leaves that to the caller.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<i64, LogError> {
        let info =
            self.append_marker_unsynced(producer_id, producer_epoch, commit, coordinator_epoch)?;
        if info.needs_sync {
            self.sync_to(info.last_offset + 1)?;
        }
        Ok(info.base_offset)
    }

    /// As [`PartitionLog::append_marker`] without the fsync: when `needs_sync` is set, call
    /// [`PartitionLog::sync_to`] with `last_offset + 1` before relying on the marker.
    pub fn append_marker_unsynced(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        if producer_id < 0 || producer_epoch < 0 {
            return Err(LogError::InvalidMarker(
                "a marker needs a producer id and epoch",
            ));
        }
        let mut marker = txn::encode_marker(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            self.clock.now_ms(),
        );
        self.append(&mut marker, None)
    }

    /// How an append on the async runtime may roll: inline in memory mode (nothing blocks);
    /// on disk never, nor write into a segment file that is not open ([`Rolling::Runtime`]).
    fn rolling_on_runtime(&self) -> Rolling {
        if self.dir.is_none() {
            Rolling::Inline
        } else {
            Rolling::Runtime
        }
    }

    /// An append that rolls when it must, with the new segment's files created outside the
    /// partition lock: appends are tried without rolling; when a roll is needed, the next
    /// segment (based at the log end) is created unlocked, then installed under the lock if
    /// the log end has not moved meanwhile (else it is removed and the append tried again).
    /// `roll_lock` makes this partition's rolls one at a time, so the created file is ours.
    fn append_rolling(
        &self,
        mut input: AppendInput<'_>,
        verification: Verification,
    ) -> Result<AppendInfo, LogError> {
        let Some(dir) = &self.dir else {
            // A memory segment is no file: rolling never blocks.
            return self.append_batches(&mut input, Rolling::Inline, verification);
        };
        let _rolls = self.roll_lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // The active segment's file may have been closed by the open-files cache: it is
            // reopened here, not under the partition lock.
            let active = self.lock().local.active().store().clone();
            crate::threads::may_block("opening a segment file");
            active.prepare()?;
            match self.append_batches(&mut input, Rolling::Refuse, verification) {
                Err(LogError::RollNeeded) => {}
                done => return done,
            }
            let base = self.log_end_offset();
            // A deleted log's directory may be another topic's by now: no file is created for
            // it (deletion takes `roll_lock` too, so it cannot close the log from here on).
            self.check_usable()?;
            crate::threads::may_block("creating a segment");
            let segment = match Segment::open_on_disk(dir, base, self.clock.now_ms(), &self.files) {
                Ok(segment) => segment,
                Err(e) => {
                    self.fail("rolling a segment", &e);
                    return Err(e.into());
                }
            };
            let sealed = {
                let mut state = self.lock();
                if let Err(e) = self.check_usable() {
                    // Closed by a stop meanwhile: the file was never used.
                    drop(state);
                    segment.delete_files()?;
                    return Err(e);
                }
                match state.local.install_rolled(segment) {
                    Ok(sealed) => {
                        // The new file's directory entry is made durable by the next sync_to,
                        // before any append into it is acknowledged as durable.
                        self.dir_dirty.store(true, Ordering::Release);
                        Some(sealed)
                    }
                    Err(segment) => {
                        drop(state);
                        // Appends moved the end meanwhile (the batch fitted after all): this
                        // file was never used.
                        segment.delete_files()?;
                        None
                    }
                }
            };
            if let Some((store, size)) = sealed {
                // The old segment's reserved blocks are given back outside the lock; its data
                // is fsynced by the next sync (the flush policy's, or the periodic flush).
                if let Err(e) = store.seal(size) {
                    tracing::warn!(error = %e, "giving back a rolled segment's reserved blocks failed");
                }
            }
        }
    }

    fn append_batches(
        &self,
        input: &mut AppendInput<'_>,
        rolling: Rolling,
        verification: Verification,
    ) -> Result<AppendInfo, LogError> {
        let (info, index_error, hw_moved) = {
            let mut parsed: Vec<(BatchHeader, Option<ControlRecord>)> =
                batches_with_control(input.bytes()).collect();
            let mut state = self.lock();
            self.check_usable()?;
            if matches!(rolling, Rolling::Runtime) && !state.local.active().store().is_ready() {
                // The open-files cache closed the active segment's file: reopening it may
                // block, so the append moves to the blocking pool (nothing appended).
                return Err(LogError::RollNeeded);
            }
            let follower = matches!(input, AppendInput::Follower(_));
            if !follower && !state.leading {
                return Err(LogError::NotLeader);
            }
            let mut tracked = false;
            for (h, control) in &parsed {
                if !h.has_producer_id() {
                    continue;
                }
                tracked = true;
                if follower {
                    // The leader checked sequences and markers; a follower takes its batches.
                    continue;
                }
                if h.is_control() {
                    if let Some(c) = control.filter(|c| c.marker().is_some()) {
                        state.producers.check_marker(
                            h.producer_id,
                            h.producer_epoch,
                            c.coordinator_epoch,
                        )?;
                    }
                } else if let SequenceCheck::Duplicate {
                    base_offset,
                    last_offset,
                } = state.producers.check(h)?
                {
                    return Ok(AppendInfo {
                        base_offset,
                        last_offset,
                        log_start_offset: state.log_start_offset,
                        needs_sync: state.config.flush_messages <= 1,
                        leader_epoch: state.leader_epoch,
                    });
                } else if let Verification::Client(guard) = verification {
                    // Under the same lock as the append: a marker that ended the verified
                    // transaction meanwhile has cleared the guard.
                    state.producers.check_verified(h, guard)?;
                }
            }
            let log_end = state.local.log_end_offset();
            if follower {
                check_follower_offsets(&parsed, log_end)?;
            }
            let incoming_offsets: i64 = match (follower, parsed.last()) {
                (true, Some((last, _))) => last.last_offset() + 1 - log_end,
                _ => parsed
                    .iter()
                    .map(|(h, _)| h.last_offset_delta as i64 + 1)
                    .sum(),
            };
            let config = state.config;
            if state.local.roll_needed(
                &config,
                input.bytes().len() as u64,
                incoming_offsets,
                self.clock.now_ms(),
            ) {
                match rolling {
                    Rolling::Refuse | Rolling::Runtime => return Err(LogError::RollNeeded),
                    Rolling::Inline => {
                        if let Err(e) = self.roll(&mut state, self.clock.now_ms()) {
                            self.fail("rolling a segment", &e);
                            return Err(e.into());
                        }
                    }
                }
            }
            let leader_epoch = state.leader_epoch;
            let (base_offset, next) = if follower {
                // As the leader wrote them: offsets and epochs unchanged.
                let first = parsed.first().map_or(log_end, |(h, _)| h.base_offset);
                let last = parsed.last().map_or(log_end, |(h, _)| h.last_offset() + 1);
                (first, last)
            } else {
                let base_offset = state.local.log_end_offset();
                let mut next = base_offset;
                for (h, _) in &mut parsed {
                    h.base_offset = next;
                    h.partition_leader_epoch = leader_epoch;
                    next += h.last_offset_delta as i64 + 1;
                }
                (base_offset, next)
            };
            let interval = state.config.index_interval_bytes;
            let flush_messages = state.config.flush_messages;
            let active = state.local.active_mut();
            let headers: Vec<BatchHeader> = parsed.iter().map(|(h, _)| *h).collect();
            let written = match &mut *input {
                AppendInput::Patch(batches) => {
                    batch::assign_offsets(batches, base_offset);
                    batch::stamp_leader_epoch(batches, leader_epoch);
                    active.append(batches, &headers, false, interval)
                }
                AppendInput::Shared(batches) => active.append(batches, &headers, true, interval),
                AppendInput::Follower(batches) => active.append(batches, &headers, false, interval),
            };
            if let Err(e) = written {
                // Leave no partial bytes behind: the next append overwrites from the old end.
                let _ = active.store().truncate(active.size_bytes());
                self.fail("appending to the log", &e);
                return Err(e.into());
            }
            debug_assert_eq!(active.next_offset(), next);
            for h in &headers {
                state.epochs.assign(h.partition_leader_epoch, h.base_offset);
            }
            let hw_moved = state.hw_follows_log_end && Self::raise_hw(&mut state, next);
            let mut index_error = None;
            if tracked {
                for (h, control) in parsed {
                    let Some(done) = state.producers.replay(&h, control) else {
                        continue;
                    };
                    if done.last_offset >= state.high_watermark {
                        state
                            .unreplicated_txns
                            .insert((done.first_offset, done.last_offset));
                    }
                    if done.aborted {
                        let entry = done.index_entry(&state.producers);
                        if let Err(e) = state.local.active_mut().txn_index_mut().append(entry) {
                            index_error = Some(e);
                        }
                    }
                }
            }
            let log_start_offset = state.log_start_offset;
            drop(state);
            let mut flush = self.lock_flush();
            flush
                .dirty_since_ms
                .get_or_insert_with(|| self.clock.now_ms());
            let info = AppendInfo {
                base_offset,
                last_offset: next - 1,
                log_start_offset,
                needs_sync: next - flush.durable >= flush_messages,
                leader_epoch,
            };
            (info, index_error, hw_moved)
        };
        if hw_moved {
            self.hw_advanced.notify_waiters();
        }
        self.appended.notify_waiters();
        match index_error {
            // The marker is in the log and the state in memory is right; the index file is
            // not (an unclean start rebuilds it from the log).
            Some(e) => Err(e.into()),
            None => Ok(info),
        }
    }

    /// Rolls the active segment where it stands (under the state lock): in memory, or by
    /// retention on the blocking pool. Refused once the log is closed.
    pub(in crate::log) fn roll(&self, state: &mut LogState, now: i64) -> io::Result<()> {
        if self.is_closed() {
            // A deleted topic's log: its directory may be another topic's by now.
            return Err(closed_io());
        }
        state.local.roll(self.dir.as_deref(), &self.files, now)?;
        if self.dir.is_some() {
            // The new file's directory entry is made durable by the next sync_to, before any
            // append into it is acknowledged as durable.
            self.dir_dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Empties the log and starts it afresh at `offset`, above its end (Kafka's
    /// `truncateFullyAndStartAt`: a follower whose log ends below its leader's log start can
    /// only fetch from there): a new empty segment at `offset`, every older segment deleted,
    /// the producer state and the leader-epoch cache emptied, the log start, high watermark
    /// and last stable offset at `offset`. Blocking (files created and deleted): call it off
    /// the async runtime. Refused (OffsetOutOfRange) for an offset below the log end.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        let _rolls = self.roll_lock.lock().unwrap_or_else(|p| p.into_inner());
        let removed = {
            let mut state = self.lock();
            self.check_usable()?;
            let log_end = state.local.log_end_offset();
            if offset < log_end {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: state.log_start_offset,
                    log_end,
                });
            }
            crate::threads::may_block("restarting a log further on");
            let now = self.clock.now_ms();
            if let Err(e) = state
                .local
                .roll_at(self.dir.as_deref(), &self.files, now, offset)
            {
                self.fail("restarting the log", &e);
                return Err(e.into());
            }
            if self.dir.is_some() {
                self.dir_dirty.store(true, Ordering::Release);
            }
            let removed = state.local.drop_below(offset);
            state.producers = ProducerStates::default();
            state.unreplicated_txns.clear();
            state.epochs = Default::default();
            state.log_start_offset = offset;
            state.high_watermark = offset;
            removed
        };
        self.write_checkpoint(false)?;
        for s in &removed {
            s.detach_files()?;
            s.delete_files()?;
        }
        Ok(())
    }

    /// Cuts the log at `offset` (a follower whose log diverged from its new leader's): every
    /// batch that ends at or after `offset` goes, the one holding `offset` too (the log end
    /// becomes its base). Segments wholly above are deleted; the producer state is rebuilt
    /// from what remains; the leader-epoch cache, the high watermark and the durable point
    /// come down with the end, and the recovery point with them (the log start too, if the
    /// cut batch began below it). Returns the new log end.
    /// Blocking (files cut and deleted): call it off the async runtime.
    pub fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        let _rolls = self.roll_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (removed, new_end) = {
            let mut state = self.lock();
            self.check_usable()?;
            let log_end = state.local.log_end_offset();
            if offset >= log_end {
                // Nothing to cut, but an epoch this replica began as leader without writing
                // (cached at the log end) goes: the leader it follows now never knew it, and
                // its last fetched epoch is that of its last batch (Kafka does the same).
                state.epochs.truncate_from_end(log_end);
                return Ok(log_end);
            }
            if offset < state.log_start_offset {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: state.log_start_offset,
                    log_end,
                });
            }
            crate::threads::may_block("truncating a log");
            let interval = state.config.index_interval_bytes;
            let removed = match state.local.truncate_to(offset, interval) {
                Ok(removed) => removed,
                Err(e) => {
                    self.fail("truncating the log", &e);
                    return Err(e.into());
                }
            };
            let new_end = state.local.log_end_offset();
            let mut producers = ProducerStates::default();
            for segment in state.local.segments() {
                segment.for_each_batch_header(&mut |h, c| {
                    producers.replay(h, c);
                })?;
            }
            state.producers = producers;
            state
                .unreplicated_txns
                .retain(|&(_, marker)| marker < new_end);
            state.epochs.truncate_from_end(new_end);
            state.high_watermark = state.high_watermark.min(new_end);
            // The batch holding `offset` may start below the log start (DeleteRecords into
            // the middle of a batch): the log then starts where it ends, as in Kafka.
            state.log_start_offset = state.log_start_offset.min(new_end);
            (removed, new_end)
        };
        {
            let mut flush = self.lock_flush();
            flush.durable = flush.durable.min(new_end);
        }
        // The recovery point comes down with the durable point.
        self.write_checkpoint(false)?;
        for s in &removed {
            s.detach_files()?;
            s.delete_files()?;
        }
        Ok(new_end)
    }
}

/// Whether an append may roll a segment where it stands (memory mode; the blocking pool) or
/// must answer [`LogError::RollNeeded`] instead (the async runtime).
#[derive(Clone, Copy)]
enum Rolling {
    /// Roll under the lock (memory mode: no file to create).
    Inline,
    /// Answer [`LogError::RollNeeded`] instead of rolling (the roll is done by the caller,
    /// the file created outside the lock).
    Refuse,
    /// As `Refuse`, and also when the active segment's file is not open (on the async
    /// runtime, where opening it must not happen).
    Runtime,
}

/// A client's batches (see [`PartitionLog::append_client`]).
pub enum ClientBatches<'a> {
    /// In a shared frame, never modified ([`PartitionLog::append_shared`]).
    Shared(&'a [u8]),
    /// The broker's copy, patched in place; stamped with LogAppendTime when given.
    Owned(&'a mut [u8], Option<i64>),
}

impl<'a> ClientBatches<'a> {
    fn into_input(self) -> AppendInput<'a> {
        match self {
            ClientBatches::Shared(b) => AppendInput::Shared(b),
            ClientBatches::Owned(b, log_append_time_ms) => {
                if let Some(now) = log_append_time_ms {
                    batch::stamp_log_append_time(b, now);
                }
                AppendInput::Patch(b)
            }
        }
    }
}

/// Whether a leader append checks KIP-890 verification (Kafka's append origins).
#[derive(Debug, Clone, Copy)]
enum Verification {
    /// The broker's own writes (coordinators, markers) and followers.
    NotRequired,
    /// A client's produce, with the guard its verification took (None: none taken).
    Client(Option<VerificationGuard>),
}

/// Batches to append: patched in place, or shared (see [`PartitionLog::append_shared`]).
enum AppendInput<'a> {
    Patch(&'a mut [u8]),
    Shared(&'a [u8]),
    /// A follower's: the leader's batches with their offsets and epochs, written unchanged.
    Follower(&'a [u8]),
}

impl AppendInput<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            AppendInput::Patch(b) => b,
            AppendInput::Shared(b) => b,
            AppendInput::Follower(b) => b,
        }
    }
}

/// A follower's batches must continue the log: the first at or after its end (a compacted
/// leader's log may leave gaps), each after the one before.
fn check_follower_offsets(
    parsed: &[(BatchHeader, Option<ControlRecord>)],
    log_end: i64,
) -> Result<(), LogError> {
    let mut next = log_end;
    for (h, _) in parsed {
        if h.base_offset < next {
            return Err(LogError::UnexpectedOffset {
                expected_at_least: next,
                got: h.base_offset,
            });
        }
        // A batch whose offsets would pass i64::MAX cannot continue any log.
        next = h.next_offset().ok_or(LogError::UnexpectedOffset {
            expected_at_least: next,
            got: h.base_offset,
        })?;
    }
    Ok(())
}

/// The whole batches in `buf`, each with its control record when it is a control batch.
fn batches_with_control(
    buf: &[u8],
) -> impl Iterator<Item = (BatchHeader, Option<ControlRecord>)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let h = BatchHeader::parse(buf.get(pos..)?)?;
        let body = buf
            .get(pos + HEADER_BYTES..pos + h.total_bytes)
            .unwrap_or_default();
        pos += h.total_bytes;
        Some((h, txn::parse_control_record(&h, body)))
    })
}
