//! A bounded cache of open segment files (`.log`, `.index`, `.timeindex`, `.txnindex`).
//!
//! A broker with many partitions cannot keep every segment file open: with 4 files per
//! segment, 100,000 partitions would need 400,000 descriptors. Every segment file is therefore
//! a [`LazyFile`]: a path that is opened on first use and kept open in this cache, which
//! closes the least recently used files (CLOCK: one "referenced" bit per file, a sweeping
//! hand) once more than `capacity` are open. The active segment of a partition being written
//! stays open because it is used; cold segments are opened when read and closed again when
//! others need the room.
//!
//! Eviction never breaks a reader: [`LazyFile::get`] hands out an `Arc<File>`, and a file the
//! cache closed stays open for whoever still holds it (a fetch's `sendfile`, a compaction
//! pass). The cache only drops its own reference. So the process may briefly hold more than
//! `capacity` segment files, by the number in use at that moment.
//!
//! A reopened file is checked to be the same inode as before (a segment file is replaced only
//! by compaction's rename, and before that the old file is [`LazyFile::pin`]ned), and a
//! [`LazyFile::detach`]ed file (its segment deleted) is never reopened, so a stale handle can
//! neither read another file's bytes nor recreate a deleted file.
//!
//! Cost: a hit is one uncontended mutex and an atomic store; a miss is one `open(2)` (a few
//! microseconds for a file in the dentry cache, measured in `benches/partitions.py`'s notes)
//! plus, every `capacity` misses or so, a sweep of the ring under the cache lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

/// Default bound on open segment files (the broker config `max_open_segment_files`).
pub const DEFAULT_MAX_OPEN_SEGMENT_FILES: usize = 4096;

/// How a segment file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read and positional writes (`.log`).
    ReadWrite,
    /// Read and appends (the index files).
    Append,
}

impl Mode {
    fn options(self, create: bool) -> OpenOptions {
        let mut o = OpenOptions::new();
        o.read(true).create(create);
        match self {
            Mode::ReadWrite => o.write(true).truncate(false),
            Mode::Append => o.append(true),
        };
        o
    }

    /// Creates an empty file at `path` (if missing) without keeping it open.
    pub fn create_new(self, path: &Path) -> io::Result<()> {
        self.options(true).open(path).map(drop)
    }
}

/// The cache: how many files are open, and the ring the CLOCK hand sweeps.
pub struct OpenFiles {
    capacity: usize,
    ring: Mutex<Ring>,
    open: AtomicUsize,
    opens: AtomicU64,
    evictions: AtomicU64,
}

#[derive(Default)]
struct Ring {
    slots: Vec<Weak<Slot>>,
    hand: usize,
}

struct Slot {
    path: PathBuf,
    mode: Mode,
    referenced: AtomicBool,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    file: Option<Arc<File>>,
    /// In the ring (open and evictable, or about to be).
    in_ring: bool,
    /// Kept open until dropped: the path no longer names this file (deleted or replaced).
    pinned: bool,
    /// The segment was deleted: never reopen (nor create) the path.
    detached: bool,
    /// The file exists on disk (else the first open creates it).
    exists: bool,
    /// The file's identity once opened: a reopen must find the same file.
    identity: Option<Identity>,
}

/// Device, inode and birth time of a file: inode numbers are reused at once after a
/// deletion (ext4), the birth time (statx, where the file system records it) tells the new
/// file from the old.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    born: Option<std::time::SystemTime>,
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            born: meta.created().ok(),
        }
    }
}

/// Counters of a cache (for tests and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesStats {
    pub open: usize,
    pub opens: u64,
    pub evictions: u64,
}

impl OpenFiles {
    /// A cache keeping at most `capacity` files open (at least 1).
    pub fn new(capacity: usize) -> Arc<OpenFiles> {
        Arc::new(OpenFiles {
            capacity: capacity.max(1),
            ring: Mutex::new(Ring::default()),
            open: AtomicUsize::new(0),
            opens: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    /// The process-wide cache of [`DEFAULT_MAX_OPEN_SEGMENT_FILES`] used by logs opened
    /// without one of their own (tests, tools).
    pub fn shared_default() -> Arc<OpenFiles> {
        static SHARED: OnceLock<Arc<OpenFiles>> = OnceLock::new();
        SHARED
            .get_or_init(|| OpenFiles::new(DEFAULT_MAX_OPEN_SEGMENT_FILES))
            .clone()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn stats(&self) -> OpenFilesStats {
        OpenFilesStats {
            open: self.open.load(Ordering::Relaxed),
            opens: self.opens.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a newly opened file to the ring and closes others while too many are open. The
    /// closed files' last references (unless a reader holds them) drop after the lock.
    fn insert(&self, slot: Weak<Slot>) {
        let mut closed = Vec::new();
        {
            let mut ring = self.ring();
            ring.slots.push(slot);
            // Two passes clear every referenced bit and then find a victim; pinned and busy
            // files may leave it over capacity, which the next insert retries.
            let mut budget = 2 * ring.slots.len() + 1;
            while self.open.load(Ordering::Relaxed) > self.capacity
                && budget > 0
                && !ring.slots.is_empty()
            {
                budget -= 1;
                if ring.hand >= ring.slots.len() {
                    ring.hand = 0;
                }
                let at = ring.hand;
                let Some(victim) = ring.slots[at].upgrade() else {
                    ring.slots.swap_remove(at);
                    continue;
                };
                if victim.referenced.swap(false, Ordering::Relaxed) {
                    ring.hand += 1;
                    continue;
                }
                // Lock order: ring, then a slot (nothing holds a slot while taking the ring).
                let mut st = victim.lock();
                if st.pinned || st.file.is_none() {
                    st.in_ring = false;
                    ring.slots.swap_remove(at);
                    continue;
                }
                closed.extend(st.file.take());
                st.in_ring = false;
                drop(st);
                ring.slots.swap_remove(at);
                self.open.fetch_sub(1, Ordering::Relaxed);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(closed);
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One segment file, opened on demand through an [`OpenFiles`] cache.
pub struct LazyFile {
    slot: Arc<Slot>,
    cache: Arc<OpenFiles>,
}

impl LazyFile {
    /// A file at `path`, not opened yet. `exists`: the file is on disk (otherwise the first
    /// [`LazyFile::get`] creates it).
    pub fn new(path: PathBuf, mode: Mode, exists: bool, cache: &Arc<OpenFiles>) -> LazyFile {
        LazyFile {
            slot: Arc::new(Slot {
                path,
                mode,
                referenced: AtomicBool::new(false),
                state: Mutex::new(SlotState {
                    exists,
                    ..SlotState::default()
                }),
            }),
            cache: cache.clone(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.slot.path
    }

    /// Whether the file exists on disk (it has been created, and not detached).
    pub fn exists(&self) -> bool {
        let st = self.slot.lock();
        st.exists && !st.detached
    }

    /// The open file, if the cache holds it open now (never opens it).
    pub fn if_open(&self) -> Option<Arc<File>> {
        self.slot.lock().file.clone()
    }

    /// The open file: from the cache, or opened (created if it does not exist yet) and added
    /// to it. Blocking only for the `open(2)` of a miss.
    pub fn get(&self) -> io::Result<Arc<File>> {
        let mut st = self.slot.lock();
        if let Some(f) = &st.file {
            self.slot.referenced.store(true, Ordering::Relaxed);
            return Ok(f.clone());
        }
        if st.detached {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} was deleted", self.slot.path.display()),
            ));
        }
        crate::threads::may_block("open of a segment or index file");
        let file = self.slot.mode.options(!st.exists).open(&self.slot.path)?;
        let identity = Identity::of(&file.metadata()?);
        if st.identity.is_some_and(|id| id != identity) {
            return Err(io::Error::other(format!(
                "{} was replaced while its segment was open",
                self.slot.path.display()
            )));
        }
        st.identity = Some(identity);
        st.exists = true;
        let file = Arc::new(file);
        st.file = Some(file.clone());
        let add = !st.in_ring && !st.pinned;
        st.in_ring |= add;
        drop(st);
        self.slot.referenced.store(true, Ordering::Relaxed);
        self.cache.open.fetch_add(1, Ordering::Relaxed);
        self.cache.opens.fetch_add(1, Ordering::Relaxed);
        if add {
            self.cache.insert(Arc::downgrade(&self.slot));
        }
        Ok(file)
    }

    /// Keeps the file open for as long as this handle lives, whatever the cache needs: its
    /// path is about to name another file or none (compaction's swap, deletion), and holders
    /// of this handle must go on reading what they read before. A file not created yet stays
    /// uncreated.
    pub fn pin(&self) -> io::Result<()> {
        if !self.slot.lock().exists {
            return Ok(());
        }
        self.get()?;
        self.slot.lock().pinned = true;
        Ok(())
    }

    /// The segment is gone: the path is never opened or created again through this handle
    /// (an open or pinned file stays readable).
    pub fn detach(&self) {
        self.slot.lock().detached = true;
    }
}

impl Drop for LazyFile {
    fn drop(&mut self) {
        if self.slot.lock().file.take().is_some() {
            self.cache.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn at_most_capacity_files_stay_open_and_evicted_ones_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cache = OpenFiles::new(3);
        let files: Vec<LazyFile> = (0..10)
            .map(|i| {
                LazyFile::new(
                    dir.path().join(format!("{i}")),
                    Mode::ReadWrite,
                    false,
                    &cache,
                )
            })
            .collect();
        assert_eq!(cache.stats().open, 0, "nothing is opened before use");
        assert!(!dir.path().join("0").exists(), "nor created");
        for (i, f) in files.iter().enumerate() {
            f.get().unwrap().write_all_at(&[i as u8; 4], 0).unwrap();
            assert!(cache.stats().open <= 3);
        }
        assert_eq!(cache.stats().evictions, 7);
        // Every file reads back its own bytes, reopened as needed.
        for _ in 0..2 {
            for (i, f) in files.iter().enumerate() {
                let mut buf = [0u8; 4];
                f.get().unwrap().read_exact_at(&mut buf, 0).unwrap();
                assert_eq!(buf, [i as u8; 4]);
                assert!(cache.stats().open <= 3);
            }
        }
        drop(files);
        assert_eq!(cache.stats().open, 0);
    }

    #[test]
    fn a_reader_keeps_an_evicted_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = OpenFiles::new(1);
        let a = LazyFile::new(dir.path().join("a"), Mode::Append, false, &cache);
        let b = LazyFile::new(dir.path().join("b"), Mode::Append, false, &cache);
        let held = a.get().unwrap();
        (&*held).write_all(b"abc").unwrap();
        b.get().unwrap();
        assert!(a.if_open().is_none(), "a was evicted");
        let mut buf = [0u8; 3];
        held.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abc", "the reader's handle still works");
    }

    #[test]
    fn detached_and_replaced_files_are_not_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let cache = OpenFiles::new(1);
        let path = dir.path().join("seg");
        let a = LazyFile::new(path.clone(), Mode::ReadWrite, false, &cache);
        a.get().unwrap().write_all_at(b"old", 0).unwrap();
        // Replaced behind its back while evicted: refused, never the other file's bytes.
        LazyFile::new(dir.path().join("other"), Mode::ReadWrite, false, &cache)
            .get()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"new").unwrap();
        assert!(a.get().is_err());
        // Pinned before the replacement: keeps reading the old file.
        std::fs::remove_file(&path).unwrap();
        let b = LazyFile::new(path.clone(), Mode::ReadWrite, false, &cache);
        b.get().unwrap().write_all_at(b"old", 0).unwrap();
        b.pin().unwrap();
        LazyFile::new(dir.path().join("x"), Mode::ReadWrite, false, &cache)
            .get()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"new").unwrap();
        let mut buf = [0u8; 3];
        b.get().unwrap().read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"old");
        // Detached and never created: stays uncreated.
        let c = LazyFile::new(dir.path().join("never"), Mode::Append, false, &cache);
        c.detach();
        assert!(c.get().is_err());
        assert!(!dir.path().join("never").exists());
    }
}
