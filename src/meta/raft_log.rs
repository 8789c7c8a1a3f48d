//! The metadata log's storage: openraft's [`RaftLogStorage`] and [`RaftLogReader`] over
//! segment files, a vote file and two small id files under `<data>/meta/raft/`
//! (ARCHITECTURE.md, "On-disk layout" and "Fsync points and threading").
//!
//! Layout:
//! - `vote`: the [`Vote`] as JSON, replaced atomically (temp, fsync, rename, fsync dir).
//! - `committed`: the last committed [`LogId`] as JSON; a hint, replaced without fsync.
//! - `purged`: the last purged [`LogId`] as JSON, replaced atomically before any segment it
//!   covers is deleted.
//! - `log/<first index, 20 digits>.seg`: entries, each framed as a u32 BE payload length, a
//!   u32 BE CRC32C of the payload, then the payload (the entry as JSON). A segment rolls once
//!   it holds [`SEGMENT_BYTES`].
//!
//! Every entry of the log is kept in memory (readers serve from that copy). Writes go to one
//! thread, `ottla-meta-io`, which owns the files: it takes every queued job, performs them in
//! order, fsyncs once and only then completes them (a `LogFlushed` for an append, a oneshot for
//! the others), so a burst of appends costs one fsync. Opening scans every segment with its
//! CRCs: a torn or corrupt tail of the last segment is cut (the crash interrupted that write),
//! corruption anywhere else refuses to open.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{DefensiveError, ErrorSubject, OptionalSend, StorageIOError, Violation};
use tokio::sync::oneshot;

use super::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::log::fsutil;

/// A segment rolls once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 8 << 20;

/// The name of the writer thread.
const THREAD_NAME: &str = "ottla-meta-io";
/// Length and CRC in front of each entry.
const FRAME_HEADER: usize = 8;
const SEGMENT_SUFFIX: &str = ".seg";

/// The metadata log's storage. Clones share one log (and one writer thread); the thread
/// stops once the last clone is dropped.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer thread's queue; `None` in memory mode.
    io: Option<mpsc::Sender<Job>>,
}

/// The in-memory copy: what readers see.
#[derive(Default)]
struct State {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

impl State {
    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(self.purged)
    }
}

type Done = oneshot::Sender<io::Result<()>>;

/// Work for the writer thread.
enum Job {
    /// Entries (index, JSON) to append; `done` once they are durable.
    Append {
        entries: Vec<(u64, Vec<u8>)>,
        done: LogFlushed<TypeConfig>,
    },
    /// The vote's JSON, replacing the vote file.
    Vote { json: Vec<u8>, done: Done },
    /// The committed id's JSON (a hint: written after the batch, not fsynced).
    Committed { json: Vec<u8> },
    /// Removes the entries from `index` on.
    Truncate { index: u64, done: Done },
    /// Records the purged id (`json`) and deletes the segments all of whose entries are at
    /// or below `index`.
    Purge {
        index: u64,
        json: Vec<u8>,
        done: Done,
    },
    /// Completes once every earlier job is done.
    Sync { done: Done },
    /// Test hook: the writer waits until the sender is dropped or sends.
    #[cfg(test)]
    Hold(mpsc::Receiver<()>),
    /// Test hook: the writer sends its thread's name and keeps the sender until it exits.
    #[cfg(test)]
    Attach(mpsc::Sender<String>),
}

impl LogStore {
    /// Opens the log in `dir` (`<data>/meta/raft`, created if missing), or an empty log kept
    /// only in memory when `dir` is `None`. Blocks (it reads and may repair files): call it
    /// from start-up code or the blocking pool.
    pub fn open(dir: Option<&Path>) -> io::Result<LogStore> {
        Self::open_with_segment_bytes(dir, SEGMENT_BYTES)
    }

    /// [`LogStore::open`] with segments rolling at `segment_bytes` instead of
    /// [`SEGMENT_BYTES`].
    pub fn open_with_segment_bytes(dir: Option<&Path>, segment_bytes: u64) -> io::Result<LogStore> {
        let Some(dir) = dir else {
            return Ok(LogStore {
                shared: Arc::new(Shared {
                    state: Mutex::new(State::default()),
                    io: None,
                }),
            });
        };
        let (state, writer) = load(dir, segment_bytes.max(1))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || writer.run(rx))?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                io: Some(tx),
            }),
        })
    }

    /// Whether the log is pristine: no vote, no entry, nothing purged (a node that never took
    /// part in a cluster).
    pub fn is_pristine(&self) -> bool {
        let state = self.lock();
        state.vote.is_none() && state.entries.is_empty() && state.purged.is_none()
    }

    /// Waits until every write queued before this call is done (and durable): a barrier for
    /// shutdown and tests. Also carries a writer failure, if there was one.
    pub async fn sync(&self) -> Result<(), StorageError> {
        if self.shared.io.is_none() {
            return Ok(());
        }
        let (done, rx) = oneshot::channel();
        self.send(Job::Sync { done }).map_err(|e| write_error(&e))?;
        wait(rx).await.map_err(|e| write_error(&e))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job (called with the state lock held, so the thread sees jobs in the order
    /// the in-memory copy changed).
    fn send(&self, job: Job) -> io::Result<()> {
        match &self.shared.io {
            Some(tx) => tx.send(job).map_err(|_| writer_gone()),
            None => Ok(()),
        }
    }

    #[cfg(test)]
    fn attach_to_writer(&self) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel();
        let _ = self.send(Job::Attach(tx));
        rx
    }

    #[cfg(test)]
    fn hold_writer(&self) -> mpsc::Sender<()> {
        let (tx, rx) = mpsc::channel();
        let _ = self.send(Job::Hold(rx));
        tx
    }
}

async fn wait(rx: oneshot::Receiver<io::Result<()>>) -> io::Result<()> {
    rx.await.map_err(|_| writer_gone())?
}

fn writer_gone() -> io::Error {
    io::Error::other("the metadata log's writer thread has stopped")
}

fn write_error(e: &io::Error) -> StorageError {
    StorageIOError::write_logs(e).into()
}

fn vote_error(e: &io::Error) -> StorageError {
    StorageIOError::write_vote(e).into()
}

fn json<T: serde::Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

/// `range` as a pair of bounds, or `None` when it holds no index (`BTreeMap::range` panics
/// on some of those).
fn bounds<RB: RangeBounds<u64>>(range: &RB) -> Option<(Bound<u64>, Bound<u64>)> {
    let start = range.start_bound().cloned();
    let end = range.end_bound().cloned();
    let lo = match start {
        Bound::Included(s) => s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let empty = match end {
        Bound::Included(e) => e < lo,
        Bound::Excluded(e) => e <= lo,
        Bound::Unbounded => false,
    };
    (!empty).then_some((Bound::Included(lo), end))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let Some(range) = bounds(&range) else {
            return Ok(Vec::new());
        };
        let state = self.lock();
        Ok(state.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let state = self.lock();
        Ok(LogState {
            last_purged_log_id: state.purged,
            last_log_id: state.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let rx = {
            let mut state = self.lock();
            state.vote = Some(*vote);
            if self.shared.io.is_none() {
                return Ok(());
            }
            let json = json(vote).map_err(|e| vote_error(&e))?;
            let (done, rx) = oneshot::channel();
            self.send(Job::Vote { json, done })
                .map_err(|e| vote_error(&e))?;
            rx
        };
        wait(rx).await.map_err(|e| vote_error(&e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut state = self.lock();
        state.committed = committed;
        if self.shared.io.is_some() {
            let json = json(&committed).map_err(|e| write_error(&e))?;
            self.send(Job::Committed { json })
                .map_err(|e| write_error(&e))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut entries: Vec<Entry> = entries.into_iter().collect();
        let mut state = self.lock();
        // Entries at or below the purged id are covered by a snapshot already: dropped.
        if let Some(p) = state.purged {
            entries.retain(|e| e.log_id.index > p.index);
        }
        let mut encoded = Vec::with_capacity(entries.len());
        if self.shared.io.is_some() {
            for e in &entries {
                let bytes = json(e).map_err(|err| {
                    StorageError::from(StorageIOError::write_log_entry(e.log_id, &err))
                })?;
                encoded.push((e.log_id.index, bytes));
            }
        }
        // Entries must follow the log without a hole; an append that overlaps the tail
        // replaces it (openraft truncates first, so this is only a safety net).
        let first = entries.first().map(|e| e.log_id.index);
        let overlaps = first.filter(|&f| state.entries.range(f..).next().is_some());
        let mut prev = match overlaps {
            Some(f) => state
                .entries
                .range(..f)
                .next_back()
                .map(|(_, e)| e.log_id)
                .or(state.purged),
            None => state.last_log_id(),
        };
        for e in &entries {
            if let Some(p) = prev {
                if e.log_id.index != p.index + 1 {
                    return Err(DefensiveError::new(
                        ErrorSubject::Logs,
                        Violation::LogsNonConsecutive {
                            prev: Some(p),
                            next: e.log_id,
                        },
                    )
                    .into());
                }
            }
            prev = Some(e.log_id);
        }
        if let Some(f) = overlaps {
            let _ = state.entries.split_off(&f);
        }
        for e in entries {
            state.entries.insert(e.log_id.index, e);
        }
        if self.shared.io.is_none() {
            drop(state);
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.send(Job::Append {
            entries: encoded,
            done: callback,
        })
        .map_err(|e| write_error(&e))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let rx = {
            let mut state = self.lock();
            let _ = state.entries.split_off(&log_id.index);
            if self.shared.io.is_none() {
                return Ok(());
            }
            let (done, rx) = oneshot::channel();
            self.send(Job::Truncate {
                index: log_id.index,
                done,
            })
            .map_err(|e| write_error(&e))?;
            rx
        };
        wait(rx).await.map_err(|e| write_error(&e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let rx = {
            let mut state = self.lock();
            if state.purged.is_some_and(|p| p.index >= log_id.index) {
                return Ok(());
            }
            state.purged = Some(log_id);
            state.entries = match log_id.index.checked_add(1) {
                Some(next) => state.entries.split_off(&next),
                None => BTreeMap::new(),
            };
            if self.shared.io.is_none() {
                return Ok(());
            }
            let json = json(&log_id).map_err(|e| write_error(&e))?;
            let (done, rx) = oneshot::channel();
            self.send(Job::Purge {
                index: log_id.index,
                json,
                done,
            })
            .map_err(|e| write_error(&e))?;
            rx
        };
        wait(rx).await.map_err(|e| write_error(&e))
    }
}

// ---------------------------------------------------------------------------------------
// On disk.

/// One segment file as the writer knows it.
struct Segment {
    /// The index of its first entry (its name).
    first: u64,
    path: PathBuf,
    /// Byte offset of entry `first + i` at `offsets[i]`.
    offsets: Vec<u64>,
    /// Bytes in the file.
    len: u64,
}

impl Segment {
    /// Index of its last entry (`None` if it holds none).
    fn last(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first + self.offsets.len() as u64 - 1)
    }

    fn next(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

/// The writer thread's state: it alone touches the files after `open`.
struct Writer {
    dir: PathBuf,
    log_dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// The last segment's file, opened on first use and positioned at its end.
    active: Option<File>,
    /// The active file has writes not fsynced yet.
    active_dirty: bool,
    /// The log directory has entries (created files) not fsynced yet.
    dir_dirty: bool,
    /// The first error: once the files are in doubt every later job fails.
    failed: Option<String>,
    /// Test hook: dropped when the thread exits.
    #[cfg(test)]
    attached: Vec<mpsc::Sender<String>>,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}{SEGMENT_SUFFIX}")
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Creates `dir` and the missing directories above it, each made durable in its parent.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsutil::sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Reads a JSON file, `None` if it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a segment's scan found.
pub(crate) struct Scan {
    /// The valid entries with their offsets, in file order.
    pub(crate) entries: Vec<(u64, Entry)>,
    /// Bytes up to the end of the last valid entry.
    pub(crate) good_len: u64,
    /// Why the scan stopped before the end of the file.
    pub(crate) problem: Option<String>,
}

fn scan_segment(path: &Path) -> io::Result<Scan> {
    Ok(scan_bytes(&std::fs::read(path)?))
}

/// Scans a segment file's bytes: entries (length, CRC32C, JSON) up to the first torn, corrupt
/// or undecodable one.
pub(crate) fn scan_bytes(data: &[u8]) -> Scan {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    let problem = loop {
        let rest = &data[pos..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < FRAME_HEADER {
            break Some(format!("a torn entry header at byte {pos}"));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(payload) = rest.get(FRAME_HEADER..FRAME_HEADER + len) else {
            break Some(format!(
                "a torn entry at byte {pos} ({len} bytes announced)"
            ));
        };
        if crc32c::crc32c(payload) != crc {
            break Some(format!("a CRC mismatch at byte {pos}"));
        }
        let entry: Entry = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => break Some(format!("an undecodable entry at byte {pos}: {e}")),
        };
        entries.push((pos as u64, entry));
        pos += FRAME_HEADER + len;
    };
    Scan {
        entries,
        good_len: pos as u64,
        problem,
    }
}

/// Reads (and repairs) the directory: the in-memory state and the writer that owns the files.
fn load(dir: &Path, segment_bytes: u64) -> io::Result<(State, Writer)> {
    crate::threads::may_block("metadata log open");
    create_dir_durably(dir)?;
    let log_dir = dir.join("log");
    create_dir_durably(&log_dir)?;
    let vote: Option<Vote> = read_json(&dir.join("vote"))?;
    let purged: Option<LogId> = read_json(&dir.join("purged"))?;
    let committed: Option<LogId> = match read_json::<Option<LogId>>(&dir.join("committed")) {
        Ok(c) => c.flatten(),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable committed hint of the metadata log, ignored");
            None
        }
    };

    let mut names = Vec::new();
    for dirent in std::fs::read_dir(&log_dir)? {
        let dirent = dirent?;
        let name = dirent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(first) if stem.len() == 20 => names.push(first),
            _ => tracing::warn!(file = %name, "stray file in the metadata log, ignored"),
        }
    }
    names.sort_unstable();

    let mut segments: Vec<Segment> = Vec::new();
    let mut entries = BTreeMap::new();
    let mut dir_dirty = false;
    let purged_index = purged.map(|p| p.index);
    for (i, &first) in names.iter().enumerate() {
        let path = log_dir.join(segment_name(first));
        let last_segment = i + 1 == names.len();
        let scan = scan_segment(&path)?;
        if let Some(problem) = &scan.problem {
            if !last_segment {
                return Err(invalid(format!(
                    "metadata log segment {} is corrupt ({problem}) and is not the last \
                     segment: refusing to open the metadata log",
                    path.display()
                )));
            }
            tracing::warn!(
                segment = %path.display(),
                problem = %problem,
                kept_bytes = scan.good_len,
                kept_entries = scan.entries.len(),
                "cutting the torn tail of the metadata log"
            );
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            f.set_len(scan.good_len)?;
            f.sync_all()?;
        }
        if scan.entries.is_empty() {
            if !last_segment {
                return Err(invalid(format!(
                    "metadata log segment {} holds no entry and is not the last segment: \
                     refusing to open the metadata log",
                    path.display()
                )));
            }
            std::fs::remove_file(&path)?;
            dir_dirty = true;
            continue;
        }
        let mut offsets = Vec::with_capacity(scan.entries.len());
        for (n, (offset, entry)) in scan.entries.into_iter().enumerate() {
            if entry.log_id.index != first + n as u64 {
                return Err(invalid(format!(
                    "metadata log segment {} holds entry {} at position {n}: refusing to \
                     open the metadata log",
                    path.display(),
                    entry.log_id.index
                )));
            }
            offsets.push(offset);
            if purged_index.is_none_or(|p| entry.log_id.index > p) {
                entries.insert(entry.log_id.index, entry);
            }
        }
        segments.push(Segment {
            first,
            path,
            offsets,
            len: scan.good_len,
        });
    }
    // The kept entries follow the purged id without a hole.
    let mut prev = purged_index;
    for &index in entries.keys() {
        if let Some(p) = prev {
            if index != p + 1 {
                return Err(invalid(format!(
                    "the metadata log in {} has a hole after index {p} (next entry {index}): \
                     refusing to open it",
                    log_dir.display()
                )));
            }
        }
        prev = Some(index);
    }
    let mut writer = Writer {
        dir: dir.to_path_buf(),
        log_dir,
        segment_bytes,
        segments,
        active: None,
        active_dirty: false,
        dir_dirty,
        failed: None,
        #[cfg(test)]
        attached: Vec::new(),
    };
    // Finish a purge a crash interrupted: segments wholly at or below the purged id go.
    if let Some(p) = purged_index {
        writer.delete_purged(p)?;
    }
    if writer.dir_dirty {
        fsutil::sync_dir(&writer.log_dir)?;
        writer.dir_dirty = false;
    }
    let state = State {
        entries,
        vote,
        committed,
        purged,
    };
    Ok((state, writer))
}

/// How a job of a batch completes once the batch is done.
enum Completion {
    Flushed(LogFlushed<TypeConfig>),
    Done(Done),
}

impl Writer {
    /// The thread's loop: until every sender is gone, take all queued jobs, do them in order,
    /// fsync once, complete them.
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(job) = rx.recv() {
            let mut batch = vec![job];
            while let Ok(job) = rx.try_recv() {
                batch.push(job);
            }
            self.batch(batch);
        }
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "metadata log: final flush failed");
        }
    }

    fn batch(&mut self, jobs: Vec<Job>) {
        let mut completions = Vec::with_capacity(jobs.len());
        let mut committed = None;
        let mut result = Ok(());
        for job in jobs {
            let (step, completion) = match job {
                Job::Append { entries, done } => {
                    (self.append(&entries), Some(Completion::Flushed(done)))
                }
                Job::Vote { json, done } => (self.write_vote(&json), Some(Completion::Done(done))),
                Job::Committed { json } => {
                    committed = Some(json);
                    (Ok(()), None)
                }
                Job::Truncate { index, done } => {
                    (self.truncate(index), Some(Completion::Done(done)))
                }
                Job::Purge { index, json, done } => {
                    (self.purge(index, &json), Some(Completion::Done(done)))
                }
                Job::Sync { done } => (Ok(()), Some(Completion::Done(done))),
                #[cfg(test)]
                Job::Hold(rx) => {
                    let _ = rx.recv();
                    (Ok(()), None)
                }
                #[cfg(test)]
                Job::Attach(tx) => {
                    let name = std::thread::current().name().unwrap_or("").to_string();
                    let _ = tx.send(name);
                    self.attached.push(tx);
                    (Ok(()), None)
                }
            };
            completions.extend(completion);
            if let Err(e) = step {
                if self.failed.is_none() {
                    self.failed = Some(e.to_string());
                }
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        if result.is_ok() {
            result = self.flush();
        }
        if let (Ok(()), Some(json)) = (&result, committed) {
            // A hint: a failure only costs a longer catch-up after a restart.
            if let Err(e) = fsutil::replace_unsynced(&self.dir.join("committed"), &json) {
                tracing::warn!(error = %e, "metadata log: could not write the committed hint");
            }
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "metadata log write failed; the log refuses writes from now on");
            if self.failed.is_none() {
                self.failed = Some(e.to_string());
            }
        }
        for completion in completions {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            match completion {
                Completion::Flushed(cb) => cb.log_io_completed(r),
                Completion::Done(tx) => {
                    let _ = tx.send(r);
                }
            }
        }
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(e) => Err(io::Error::other(format!(
                "an earlier metadata log write failed: {e}"
            ))),
            None => Ok(()),
        }
    }

    /// Makes everything written so far durable.
    fn flush(&mut self) -> io::Result<()> {
        if self.active_dirty {
            if let Some(f) = &self.active {
                f.sync_data()?;
            }
            self.active_dirty = false;
        }
        if self.dir_dirty {
            fsutil::sync_dir(&self.log_dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// The active (last) segment's file, positioned at its end.
    fn active_file(&mut self) -> io::Result<&mut File> {
        let len = match self.segments.last() {
            Some(s) => s.len,
            None => return Err(io::Error::other("no active segment")),
        };
        if self.active.is_none() {
            let path = match self.segments.last() {
                Some(s) => s.path.clone(),
                None => return Err(io::Error::other("no active segment")),
            };
            let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
            f.seek(SeekFrom::Start(len))?;
            self.active = Some(f);
        }
        self.active
            .as_mut()
            .ok_or_else(|| io::Error::other("no active segment"))
    }

    /// Starts a new segment whose first entry is `first`.
    fn roll(&mut self, first: u64) -> io::Result<()> {
        self.flush()?;
        self.active = None;
        let path = self.log_dir.join(segment_name(first));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        self.active = Some(f);
        self.dir_dirty = true;
        self.segments.push(Segment {
            first,
            path,
            offsets: Vec::new(),
            len: 0,
        });
        Ok(())
    }

    fn append(&mut self, entries: &[(u64, Vec<u8>)]) -> io::Result<()> {
        self.check()?;
        let mut frame = Vec::new();
        for (index, payload) in entries {
            let index = *index;
            if self
                .segments
                .last()
                .and_then(Segment::last)
                .is_some_and(|last| index <= last)
            {
                self.truncate(index)?;
            }
            let roll = match self.segments.last() {
                None => true,
                Some(s) => s.len >= self.segment_bytes || s.next() != index,
            };
            if roll {
                self.roll(index)?;
            }
            let len = u32::try_from(payload.len())
                .map_err(|_| io::Error::other("metadata log entry too large"))?;
            frame.clear();
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
            frame.extend_from_slice(payload);
            self.active_file()?.write_all(&frame)?;
            self.active_dirty = true;
            if let Some(s) = self.segments.last_mut() {
                s.offsets.push(s.len);
                s.len += frame.len() as u64;
            }
        }
        Ok(())
    }

    fn write_vote(&mut self, json: &[u8]) -> io::Result<()> {
        self.check()?;
        // Writes are durable in the order they were asked for.
        self.flush()?;
        fsutil::write_atomically(&self.dir.join("vote"), json)
    }

    /// Removes the entries from `index` on, durably: later segments are deleted (newest
    /// first), then the one holding `index` is cut and fsynced.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        self.check()?;
        let mut deleted = false;
        while self.segments.last().is_some_and(|s| s.first >= index) {
            if let Some(s) = self.segments.pop() {
                self.active = None;
                self.active_dirty = false;
                std::fs::remove_file(&s.path)?;
                deleted = true;
            }
        }
        if deleted {
            fsutil::sync_dir(&self.log_dir)?;
            self.dir_dirty = false;
        }
        let cut = match self.segments.last() {
            Some(s) if s.last().is_some_and(|last| last >= index) => {
                s.offsets[(index - s.first) as usize]
            }
            _ => return Ok(()),
        };
        let f = self.active_file()?;
        f.set_len(cut)?;
        f.seek(SeekFrom::Start(cut))?;
        f.sync_all()?;
        if let Some(s) = self.segments.last_mut() {
            s.offsets.truncate((index - s.first) as usize);
            s.len = cut;
        }
        Ok(())
    }

    /// Records the purged id, then deletes the segments it covers whole.
    fn purge(&mut self, index: u64, json: &[u8]) -> io::Result<()> {
        self.check()?;
        self.flush()?;
        fsutil::write_atomically(&self.dir.join("purged"), json)?;
        self.delete_purged(index)?;
        self.flush()
    }

    /// Deletes the segments all of whose entries are at or below `index` (oldest first).
    fn delete_purged(&mut self, index: u64) -> io::Result<()> {
        let keep_from = self
            .segments
            .iter()
            .position(|s| s.last().is_none_or(|last| last > index))
            .unwrap_or(self.segments.len());
        if keep_from == 0 {
            return Ok(());
        }
        if keep_from == self.segments.len() {
            self.active = None;
            self.active_dirty = false;
        }
        for s in self.segments.drain(..keep_from) {
            std::fs::remove_file(&s.path)?;
        }
        self.dir_dirty = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
