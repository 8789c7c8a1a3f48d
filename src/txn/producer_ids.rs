//! Allocates producer ids for InitProducerId. Ids are never reused: on disk, the end of the
//! current block of ids is persisted (`meta/producer_id_block`) before any id of that block is
//! handed out, so a restart continues after it.

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::cluster::topics::write_atomically;

/// Ids reserved per write of the block file.
pub const BLOCK_SIZE: i64 = 1000;

struct Next {
    next: i64,
    block_end: i64,
}

pub struct ProducerIdAllocator {
    state: Mutex<Next>,
    file: Option<PathBuf>,
}

impl ProducerIdAllocator {
    /// `data_dir` of `None`: memory mode, ids restart at 0 with the process.
    pub fn open(data_dir: Option<PathBuf>) -> io::Result<ProducerIdAllocator> {
        let file = data_dir.map(|d| d.join("meta").join("producer_id_block"));
        let start = match &file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => text.trim().parse::<i64>().map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e),
            },
            None => 0,
        };
        Ok(ProducerIdAllocator {
            state: Mutex::new(Next {
                next: start,
                block_end: start,
            }),
            file,
        })
    }

    /// A fresh producer id.
    pub fn allocate(&self) -> io::Result<i64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.next >= s.block_end {
            let end = s.next + BLOCK_SIZE;
            if let Some(path) = &self.file {
                write_atomically(path, end.to_string().as_bytes())?;
            }
            s.block_end = end;
        }
        let id = s.next;
        s.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(Some(dir.path().to_path_buf())).unwrap();
        assert_eq!(a.allocate().unwrap(), 0);
        assert_eq!(a.allocate().unwrap(), 1);
        let b = ProducerIdAllocator::open(Some(dir.path().to_path_buf())).unwrap();
        assert_eq!(b.allocate().unwrap(), BLOCK_SIZE);
        let m = ProducerIdAllocator::open(None).unwrap();
        assert_eq!(m.allocate().unwrap(), 0);
    }
}
