//! Cold reads: how a fetch reads segment files on a runtime worker without ever waiting for
//! the disk (the threading rule, ARCHITECTURE.md).
//!
//! Most fetches read what was just written, which the page cache holds. A consumer that
//! starts from the beginning of a large log reads what the cache may have dropped, and a
//! `pread` or `sendfile` of such data waits for the disk: on a worker that would stall every
//! connection the worker serves. So a fetch reads in two steps:
//!
//! 1. On the worker, inside [`without_blocking`]: segment reads use `preadv2(RWF_NOWAIT)`,
//!    which answers from the page cache or fails at once, and use a segment file only if it
//!    is already open (an `open(2)` may wait for the disk too). Either miss fails the read
//!    with [`io::ErrorKind::WouldBlock`] ([`is_would_block`]). The stretch of records it
//!    returns is checked with [`resident`] (one `cachestat(2)`, no copy).
//! 2. What missed is read again on the blocking pool: there reads may wait, and
//!    [`warm`] pulls a non-resident stretch into the page cache before the connection
//!    `sendfile`s it.
//!
//! Never imports the network; the fetch handler drives both steps.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use bytes::Bytes;

thread_local! {
    static NO_WAIT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with segment reads that never wait for the disk on this thread: a read that
/// would fails with `WouldBlock` instead (see the module header).
pub fn without_blocking<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_WAIT.with(|n| n.set(self.0));
        }
    }
    let _restore = Restore(NO_WAIT.with(|n| n.replace(true)));
    f()
}

/// Whether reads on this thread must not wait for the disk.
pub(crate) fn no_wait() -> bool {
    NO_WAIT.with(|n| n.get())
}

/// The error of a read that would have waited for the disk.
pub(crate) fn would_block(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::WouldBlock, what)
}

/// Whether `e` is a read that would have waited for the disk.
pub fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// `len` bytes of `file` at `pos` if the page cache holds all of them; `WouldBlock` otherwise.
pub(crate) fn read_cached(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let iov = libc::iovec {
            iov_base: buf[done..].as_mut_ptr().cast(),
            iov_len: len - done,
        };
        // SAFETY: `iov` points into `buf`, live and large enough for `iov_len` bytes, and the
        // descriptor is open for the duration of the call.
        let n = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
                &iov,
                1,
                (pos + done as u64) as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // EAGAIN: not cached. EOPNOTSUPP: the file system cannot tell (treated as cold,
                // so the read moves to the pool rather than risk waiting here).
                Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) => {
                    Err(would_block("segment data not in the page cache"))
                }
                _ => Err(e),
            };
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // A short read may mean the rest is not cached: try the rest (fails with EAGAIN then).
        done += n as usize;
    }
    Ok(Bytes::from(buf))
}

/// Whether the page cache holds every byte of `file` in `[pos, pos + len)`, a stretch within
/// the file. Never waits for the disk (one system call). On a kernel without `cachestat(2)` (before 6.5) the pages are checked with
/// `mincore(2)` on a mapping of the stretch; if neither works the stretch counts as cold.
pub fn resident(file: &File, pos: u64, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    match cachestat_resident(file, pos, len) {
        Some(resident) => resident,
        None => mincore_resident(file, pos, len).unwrap_or(false),
    }
}

const PAGE: u64 = 4096;

fn pages(pos: u64, len: usize) -> u64 {
    let first = pos / PAGE;
    let last = (pos + len as u64 - 1) / PAGE;
    last - first + 1
}

/// `cachestat(2)`: `None` when the kernel lacks it.
fn cachestat_resident(file: &File, pos: u64, len: usize) -> Option<bool> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        const SYS_CACHESTAT: libc::c_long = 451;
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        let start = pos / PAGE * PAGE;
        let range = Range {
            off: start,
            len: pages(pos, len) * PAGE,
        };
        let mut stat = Stat::default();
        // SAFETY: both pointers are to live, properly laid out structs (the kernel's
        // `cachestat_range` and `cachestat`), and the descriptor is open.
        let rc = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                file.as_raw_fd(),
                &range as *const Range,
                &mut stat as *mut Stat,
                0u32,
            )
        };
        if rc != 0 {
            return None;
        }
        // Every page of the range holds file data (the stretch lies within the file), so all
        // of them are cached when the stretch is.
        Some(stat.nr_cache >= pages(pos, len))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (file, pos, len);
        None
    }
}

/// `mincore(2)` on a read-only mapping of the stretch (mapping faults nothing in).
fn mincore_resident(file: &File, pos: u64, len: usize) -> Option<bool> {
    let start = pos / PAGE * PAGE;
    let n = pages(pos, len) as usize;
    let map_len = n * PAGE as usize;
    // SAFETY: a fresh shared read-only mapping of an open file; it is only passed to mincore
    // (never dereferenced) and unmapped before returning.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            start as libc::off_t,
        );
        if addr == libc::MAP_FAILED {
            return None;
        }
        let mut vec = vec![0u8; n];
        let rc = libc::mincore(addr, map_len, vec.as_mut_ptr().cast());
        libc::munmap(addr, map_len);
        if rc != 0 {
            return None;
        }
        Some(vec.iter().all(|b| b & 1 == 1))
    }
}

/// Reads `[pos, pos + len)` of `file` so the page cache holds it (blocking: the pool only).
/// The bytes go through a small buffer and are dropped; what matters is that the following
/// `sendfile` finds them cached.
pub fn warm(file: &File, pos: u64, len: usize) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    crate::threads::may_block("read of cold segment data");
    const CHUNK: usize = 256 * 1024;
    let mut buf = vec![0u8; CHUNK.min(len)];
    let mut done = 0;
    while done < len {
        let want = CHUNK.min(len - done);
        let n = file.read_at(&mut buf[..want], pos + done as u64)?;
        if n == 0 {
            break; // shorter than the stretch: the send reports it
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn cached_data_reads_without_waiting_and_the_stretch_is_resident() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        f.write_all(&data).unwrap();
        let f = File::open(&path).unwrap();
        // Just written: in the page cache.
        assert_eq!(&read_cached(&f, 100, 5000).unwrap()[..], &data[100..5100]);
        assert!(resident(&f, 0, data.len()));
        assert!(resident(&f, 4095, 2));
        assert!(mincore_resident(&f, 0, data.len()).unwrap());
        // Reading past the end is an error, never a hang.
        assert!(read_cached(&f, 19_990, 100).is_err());
    }

    #[test]
    fn dropped_pages_are_not_resident_and_warming_brings_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&path).unwrap();
        // Clean pages can be dropped from the cache on request.
        // SAFETY: plain system call on an open descriptor.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        if resident(&f, 0, 1 << 20) {
            // Some file systems (tmpfs) cannot drop pages: nothing more to check here.
            eprintln!("pages could not be dropped on this file system: cold path not checked");
            return;
        }
        assert!(is_would_block(&read_cached(&f, 0, 4096).unwrap_err()));
        warm(&f, 0, 1 << 20).unwrap();
        assert!(resident(&f, 0, 1 << 20));
        assert_eq!(&read_cached(&f, 0, 16).unwrap()[..], &[7u8; 16]);
    }

    #[test]
    fn the_scope_restores_the_previous_mode() {
        assert!(!no_wait());
        without_blocking(|| {
            assert!(no_wait());
            without_blocking(|| assert!(no_wait()));
            assert!(no_wait());
        });
        assert!(!no_wait());
    }
}
