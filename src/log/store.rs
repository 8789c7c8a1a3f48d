//! Byte storage behind one segment: a file on disk or a growable buffer in memory.
//!
//! The two implementations are the only difference between disk and memory mode; everything
//! above (indexes, offsets, reads, recovery) is shared.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

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
    /// The bytes, read into memory (tests, and callers that need to look at them).
    pub fn read(&self) -> io::Result<Bytes> {
        let mut buf = vec![0u8; self.len];
        self.file.read_exact_at(&mut buf, self.pos)?;
        Ok(Bytes::from(buf))
    }
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
    /// Makes everything written so far durable.
    fn sync(&self) -> io::Result<()>;
    /// Cuts the store to `len` bytes (recovery of a torn tail).
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// Bytes currently stored.
    fn stored_bytes(&self) -> io::Result<u64>;
}

/// A segment's `.log` file. Reads and writes are positional (`pread`/`pwrite`), so readers
/// never contend with the appender for a file cursor.
pub struct FileStore {
    file: Arc<File>,
}

impl FileStore {
    pub fn open(path: &Path) -> io::Result<FileStore> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(FileStore {
            file: Arc::new(file),
        })
    }
}

impl SegmentStore for FileStore {
    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, pos)
    }

    fn write_vectored_at(&self, mut pos: u64, mut data: &mut [io::IoSlice<'_>]) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        while !data.is_empty() {
            let count = data.len().min(IOV_MAX) as libc::c_int;
            // SAFETY: `IoSlice` is ABI-compatible with `iovec` (std guarantees it on Unix), the
            // slices are live borrows, and `count` does not exceed their number.
            let n = unsafe {
                libc::pwritev(
                    self.file.as_raw_fd(),
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
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(Bytes::from(buf))
    }

    fn records(&self, pos: u64, len: usize) -> io::Result<Records> {
        Ok(Records::File(FileSlice {
            file: self.file.clone(),
            pos,
            len,
        }))
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn stored_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
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
