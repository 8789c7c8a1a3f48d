//! Small file-system helpers shared by the storage code.

use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `data`: write a temporary file, fsync it, rename it over, fsync the
/// directory. A crash leaves either the old or the new contents, never a mix.
pub fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    crate::threads::may_block("atomic file replacement");
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent", path.display())))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    crate::threads::may_block("directory fsync");
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces `path` with `data` by rename (write a temporary file, rename it over), without
/// fsync: the caller makes it durable later with [`sync_filesystem`] (one sync for many files
/// instead of two fsyncs each).
pub fn replace_unsynced(path: &Path, data: &[u8]) -> io::Result<()> {
    crate::threads::may_block("file replacement");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Makes everything written to the file system holding `dir` durable (`syncfs(2)`): data,
/// inodes and directory entries.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    crate::threads::may_block("file system sync");
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dir)?;
    // SAFETY: plain system call on an open descriptor.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The size of the file system holding `path` and the bytes an unprivileged process may still
/// use there (`statvfs(2)`: `f_blocks` and `f_bavail` times `f_frsize`, as Java's
/// `FileStore.getTotalSpace` / `getUsableSpace` read them). Blocking: it may wait on the disk
/// (or a network file system).
pub fn volume_space(path: &Path) -> io::Result<(u64, u64)> {
    crate::threads::may_block("file system stat");
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs only writes the struct it is given; all-zero is a valid value of it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a live statvfs struct.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((
        (st.f_blocks as u64).saturating_mul(frsize),
        (st.f_bavail as u64).saturating_mul(frsize),
    ))
}
