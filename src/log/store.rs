//! Byte storage behind one segment: a file on disk or a growable buffer in memory.
//!
//! The two implementations are the only difference between disk and memory mode; everything
//! above (indexes, offsets, reads, recovery) is shared.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::RwLock;

use bytes::Bytes;

/// Append-only byte storage of one segment. Positions are byte offsets from the start.
pub trait SegmentStore: Send + Sync {
    /// Writes `data` at `pos` (the current end).
    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()>;
    /// Reads exactly `len` bytes at `pos`.
    fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;
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
    file: File,
}

impl FileStore {
    pub fn open(path: &Path) -> io::Result<FileStore> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(FileStore { file })
    }
}

impl SegmentStore for FileStore {
    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, pos)
    }

    fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(Bytes::from(buf))
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
