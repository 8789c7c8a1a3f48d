//! Byte storage behind one segment: a file on disk or a growable buffer in memory.
//!
//! The two implementations are the only difference between disk and memory mode; everything
//! above (indexes, offsets, reads, recovery) is shared.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::cold;
use super::open_files::{LazyFile, Mode, OpenFiles};

/// Slices per `pwritev` call at most (Linux's IOV_MAX).
const IOV_MAX: usize = 1024;

/// A stretch of a segment file, handed to the network layer so record bytes go from the page
/// cache to the socket without passing through the broker's memory (`sendfile`). The open
/// file keeps the bytes readable even if retention deletes the segment meanwhile; segment
/// files are append-only while the broker runs, so the stretch never changes.
#[derive(Clone, Debug)]
pub struct FileSlice {
    pub file: Arc<File>,
    pub pos: u64,
    pub len: usize,
}

impl FileSlice {
    /// Whether the page cache holds the whole stretch (never waits; see [`cold`]).
    pub fn is_resident(&self) -> bool {
        cold::resident(&self.file, self.pos, self.len)
    }

    /// Brings the stretch into the page cache (blocking: the pool only).
    pub fn warm(&self) -> io::Result<()> {
        cold::warm(&self.file, self.pos, self.len)
    }

    /// The bytes, read into memory (tests, and callers that need to look at them).
    pub fn read(&self) -> io::Result<Bytes> {
        read_exact(&self.file, self.pos, self.len)
    }
}

/// `len` bytes of `file` at `pos`, in a new buffer.
fn read_exact(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, pos)?;
    Ok(Bytes::from(buf))
}

/// Record bytes as a read returns them: in memory, or a stretch of a segment file.
#[derive(Clone, Debug)]
pub enum Records {
    Bytes(Bytes),
    File(FileSlice),
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Records::Bytes(b) => b.len(),
            Records::File(f) => f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in memory (reads a file stretch).
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        match self {
            Records::Bytes(b) => Ok(b.clone()),
            Records::File(f) => f.read(),
        }
    }
}

/// Append-only byte storage of one segment. Positions are byte offsets from the start.
pub trait SegmentStore: Send + Sync {
    /// Writes `data` at `pos` (the current end).
    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()>;
    /// Writes the slices one after the other at `pos` (the current end), in one call where
    /// the store can (`pwritev`).
    fn write_vectored_at(&self, pos: u64, data: &mut [io::IoSlice<'_>]) -> io::Result<()>;
    /// Reads exactly `len` bytes at `pos`.
    fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;
    /// The `len` bytes at `pos` for sending: a file stretch on disk (nothing read), the bytes
    /// in memory mode.
    fn records(&self, pos: u64, len: usize) -> io::Result<Records>;
    /// Whether a write can start without opening anything (the file is open).
    fn is_ready(&self) -> bool {
        true
    }
    /// Opens what a write needs (blocking: may `open(2)` the file; call it off the runtime
    /// and outside the partition lock).
    fn prepare(&self) -> io::Result<()> {
        Ok(())
    }
    /// Reads `[pos, pos + len)` into the page cache (blocking; nothing to do in memory).
    fn prefetch(&self, _pos: u64, _len: usize) -> io::Result<()> {
        Ok(())
    }
    /// Makes everything written so far durable.
    fn sync(&self) -> io::Result<()>;
    /// The segment takes no more appends (rolled, or the broker is stopping): gives back space
    /// reserved beyond `len`.
    fn seal(&self, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// Cuts the store to `len` bytes (recovery of a torn tail).
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// Bytes currently stored.
    fn stored_bytes(&self) -> io::Result<u64>;
    /// The stored bytes may not be durable (an unclean start scanned them): the next `sync`
    /// must not be skipped.
    fn mark_unsynced(&self) {}
    /// Keeps the bytes readable for the holders of this store although the file's name is
    /// about to be reused or removed (see `open_files`).
    fn pin(&self) -> io::Result<()> {
        Ok(())
    }
    /// The segment was deleted: its file is never reopened or recreated through this store.
    fn detach(&self) {}
}

/// A segment's `.log` file. Reads and writes are positional (`pread`/`pwrite`), so readers
/// never contend with the appender for a file cursor.
///
/// Appends reserve disk blocks ahead of the data (`fallocate` with `FALLOC_FL_KEEP_SIZE`, so
/// the file's length stays that of the data): ext4 then maps each page of an append to an
/// allocated block instead of reserving delayed allocation page by page, which measured about
/// a fifth of the broker's CPU when producing. The reservation grows with the segment (as much
/// as is stored, from 1 MB to 8 MB ahead) and is given back when the segment is sealed.
pub struct FileStore {
    file: LazyFile,
    /// End of the reserved range (`u64::MAX` once the file system refused to reserve).
    reserved: AtomicU64,
    /// Written (or cut) since the last successful sync: a sync of a clean store is skipped,
    /// so syncing every partition does not open every cold segment file.
    dirty: AtomicBool,
}

/// Reservation ahead of the data, least and most.
const RESERVE_MIN_BYTES: u64 = 1 << 20;
const RESERVE_MAX_BYTES: u64 = 8 << 20;

impl FileStore {
    /// Reserves blocks up to at least `end` (best effort: a refusal only costs speed).
    fn reserve(&self, file: &File, end: u64) {
        let reserved = self.reserved.load(Ordering::Relaxed);
        if end <= reserved {
            return;
        }
        let ahead = end.clamp(RESERVE_MIN_BYTES, RESERVE_MAX_BYTES);
        let to = end + ahead;
        // SAFETY: plain system call on an open descriptor.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                reserved as libc::off_t,
                (to - reserved) as libc::off_t,
            )
        };
        if rc == 0 {
            self.reserved.store(to, Ordering::Relaxed);
        } else if io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP) {
            self.reserved.store(u64::MAX, Ordering::Relaxed);
        }
    }

    /// The file if the cache holds it open; `WouldBlock` otherwise (an `open(2)` may wait for
    /// the disk, see [`cold`]).
    fn open_file_no_wait(&self) -> io::Result<Arc<File>> {
        self.file
            .if_open()
            .ok_or_else(|| cold::would_block("segment file not open"))
    }

    fn written(&self) -> io::Result<Arc<File>> {
        let file = self.file.get()?;
        self.dirty.store(true, Ordering::Release);
        Ok(file)
    }
}

impl FileStore {
    /// The segment file at `path`, created (empty) if missing, opened through `files` when
    /// used. Returns the store and the file's length.
    pub fn open(path: &Path, files: &Arc<OpenFiles>) -> io::Result<(FileStore, u64)> {
        let len = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Mode::ReadWrite.create_new(path)?;
                0
            }
            Err(e) => return Err(e),
        };
        let store = FileStore {
            file: LazyFile::new(path.to_path_buf(), Mode::ReadWrite, true, files),
            reserved: AtomicU64::new(len),
            dirty: AtomicBool::new(false),
        };
        Ok((store, len))
    }
}

impl SegmentStore for FileStore {
    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        let file = self.written()?;
        self.reserve(&file, pos + data.len() as u64);
        file.write_all_at(data, pos)
    }

    fn write_vectored_at(&self, mut pos: u64, mut data: &mut [io::IoSlice<'_>]) -> io::Result<()> {
        let file = self.written()?;
        self.reserve(
            &file,
            pos + data.iter().map(|s| s.len() as u64).sum::<u64>(),
        );
        while !data.is_empty() {
            let count = data.len().min(IOV_MAX) as libc::c_int;
            // SAFETY: `IoSlice` is ABI-compatible with `iovec` (std guarantees it on Unix), the
            // slices are live borrows, and `count` does not exceed their number.
            let n = unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    data.as_ptr().cast::<libc::iovec>(),
                    count,
                    pos as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            pos += n as u64;
            io::IoSlice::advance_slices(&mut data, n as usize);
        }
        Ok(())
    }

    fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        if cold::no_wait() {
            return cold::read_cached(&*self.open_file_no_wait()?, pos, len);
        }
        crate::threads::may_block("read of a segment file");
        read_exact(&*self.file.get()?, pos, len)
    }

    fn records(&self, pos: u64, len: usize) -> io::Result<Records> {
        let file = if cold::no_wait() {
            self.open_file_no_wait()?
        } else {
            self.file.get()?
        };
        Ok(Records::File(FileSlice { file, pos, len }))
    }

    fn is_ready(&self) -> bool {
        self.file.if_open().is_some()
    }

    fn prepare(&self) -> io::Result<()> {
        self.file.get().map(drop)
    }

    fn prefetch(&self, pos: u64, len: usize) -> io::Result<()> {
        cold::warm(&*self.file.get()?, pos, len)
    }

    fn sync(&self) -> io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        crate::threads::may_block("fsync of a segment");
        // A file closed by the cache since it was written is reopened: fsync covers the
        // inode's dirty pages whichever descriptor wrote them.
        let synced = self.file.get().and_then(|f| f.sync_data());
        if synced.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        synced
    }

    fn mark_unsynced(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    fn seal(&self, len: u64) -> io::Result<()> {
        let reserved = self.reserved.swap(len, Ordering::Relaxed);
        if reserved == u64::MAX || reserved <= len {
            return Ok(());
        }
        // ext4 frees blocks reserved past the end on a truncation to the same length (a hole
        // punched past the end would be ignored).
        self.written()?.set_len(len)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.written()?.set_len(len)
    }

    fn stored_bytes(&self) -> io::Result<u64> {
        // A stat by path when the file is not open: counting bytes opens nothing.
        match self.file.if_open() {
            Some(f) => Ok(f.metadata()?.len()),
            None => Ok(std::fs::metadata(self.file.path())?.len()),
        }
    }

    fn pin(&self) -> io::Result<()> {
        self.file.pin()
    }

    fn detach(&self) {
        self.file.detach()
    }
}

/// Memory mode: the segment's bytes live in a buffer; nothing touches the disk.
#[derive(Default)]
pub struct MemStore {
    data: RwLock<Vec<u8>>,
}

impl MemStore {
    fn poisoned() -> io::Error {
        io::Error::other("memory segment lock poisoned")
    }
}

impl SegmentStore for MemStore {
    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        let mut stored = self.data.write().map_err(|_| Self::poisoned())?;
        stored.truncate(pos as usize);
        stored.extend_from_slice(data);
        Ok(())
    }

    fn write_vectored_at(&self, pos: u64, data: &mut [io::IoSlice<'_>]) -> io::Result<()> {
        let mut stored = self.data.write().map_err(|_| Self::poisoned())?;
        stored.truncate(pos as usize);
        for slice in data.iter() {
            stored.extend_from_slice(slice);
        }
        Ok(())
    }

    fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let data = self.data.read().map_err(|_| Self::poisoned())?;
        let start = pos as usize;
        match data.get(start..start + len) {
            Some(slice) => Ok(Bytes::copy_from_slice(slice)),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of a memory segment",
            )),
        }
    }

    fn records(&self, pos: u64, len: usize) -> io::Result<Records> {
        self.read_at(pos, len).map(Records::Bytes)
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut data = self.data.write().map_err(|_| Self::poisoned())?;
        data.truncate(len as usize);
        Ok(())
    }

    fn stored_bytes(&self) -> io::Result<u64> {
        Ok(self.data.read().map_err(|_| Self::poisoned())?.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn reservation_keeps_the_length_and_sealing_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let (store, _) = FileStore::open(&path, &OpenFiles::shared_default()).unwrap();
        store.write_at(0, &[7u8; 1000]).unwrap();
        let mut parts = [io::IoSlice::new(&[1u8; 10]), io::IoSlice::new(&[2u8; 20])];
        store.write_vectored_at(1000, &mut parts).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1030, "the length is the data's");
        let reserved = meta.blocks() * 512 >= RESERVE_MIN_BYTES;
        store.seal(1030).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1030);
        if reserved {
            assert!(
                meta.blocks() * 512 < RESERVE_MIN_BYTES,
                "sealing frees the reservation"
            );
        }
        let data = store.read_at(0, 1030).unwrap();
        assert_eq!(&data[..1000], &[7u8; 1000][..]);
        assert_eq!(&data[1000..1010], &[1u8; 10][..]);
        assert_eq!(&data[1010..], &[2u8; 20][..]);
    }
}
