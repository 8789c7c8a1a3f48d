//! The process's open-file limit (RLIMIT_NOFILE). Many distributions start processes with a
//! soft limit of 1,024 and a much higher hard limit; the broker raises its soft limit to the
//! hard one at start (what Kafka's service scripts leave to the operator), so that partitions'
//! segment files and connections have room. The segment-file cache is then sized below it.

use std::io;

/// The limit before and after the raise: `(from, to)` soft limits.
pub fn raise_to_hard() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls writing/reading a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let from = lim.rlim_cur;
    if lim.rlim_cur >= lim.rlim_max {
        return Ok((from, from));
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((from, lim.rlim_max))
}

/// How many segment files to keep open at most, given the configured bound and the
/// open-file limit: at most half the limit, the rest left to connections and other files.
pub fn segment_file_budget(configured: usize, nofile: u64) -> usize {
    let half = usize::try_from(nofile / 2).unwrap_or(usize::MAX);
    configured.min(half).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_at_most_half_the_limit() {
        assert_eq!(segment_file_budget(4096, 1024), 512);
        assert_eq!(segment_file_budget(4096, 1 << 20), 4096);
        assert_eq!(segment_file_budget(4096, 10), 16);
    }
}
