//! The high-watermark checkpoint (Kafka's `replication-offset-checkpoint`): one file in the
//! data directory, `high-watermark.checkpoint`, giving every local replica's high watermark
//! as last written. A restarted replica starts from it (clamped to its log), never from its
//! log end: its log may hold records that were never committed (appended as a leader that
//! was then deposed, or fetched beyond what its leader had committed), and a high watermark
//! over them would let it answer acks=all retries and consumers with records a new leader
//! never had. A checkpoint a few seconds old is safe, only lower: followers learn the current
//! one from their leader's fetch answers, a leader from its followers' fetches, and a leader
//! alone in its ISR moves it to its log end at once.
//!
//! Format, one line each, keyed by topic id (a recreated topic of the same name starts
//! afresh):
//!
//! ```text
//! ottla-high-watermarks v1
//! <topic id> <partition> <high watermark>
//! ```
//!
//! Written atomically (temporary file, fsync, rename, directory fsync) by the maintenance
//! timer every `replica_high_watermark_checkpoint_interval_ms` when it changed, and at a
//! clean stop; on the blocking pool (it fsyncs).

use std::collections::HashMap;
use std::io;
use std::path::Path;

use uuid::Uuid;

/// The file's name in the data directory.
pub const FILE: &str = "high-watermark.checkpoint";
const HEADER: &str = "ottla-high-watermarks v1";

/// Replica (topic id, partition) -> high watermark.
pub type HighWatermarks = HashMap<(Uuid, i32), i64>;

/// The checkpoint in `data_dir`; empty when there is none. A line that does not parse is
/// skipped (logged): its replica starts from its log start, which is safe.
pub fn read(data_dir: &Path) -> HighWatermarks {
    let path = data_dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e,
                "cannot read the high-watermark checkpoint: replicas start from their log start");
            return HashMap::new();
        }
    };
    parse(&text).unwrap_or_else(|line| {
        tracing::warn!(file = %path.display(), line,
            "the high-watermark checkpoint does not parse: replicas start from their log start");
        HashMap::new()
    })
}

/// The checkpoint's entries, or the first line that does not parse.
pub(crate) fn parse(text: &str) -> Result<HighWatermarks, String> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(text.lines().next().unwrap_or_default().to_string());
    }
    let mut out = HashMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let entry = match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some(id), Some(p), Some(hw), None) => {
                match (Uuid::parse_str(id), p.parse::<i32>(), hw.parse::<i64>()) {
                    (Ok(id), Ok(p), Ok(hw)) => Some(((id, p), hw)),
                    _ => None,
                }
            }
            _ => None,
        };
        let (key, hw) = entry.ok_or_else(|| line.to_string())?;
        out.insert(key, hw);
    }
    Ok(out)
}

/// The file's contents for `entries` (sorted, so equal checkpoints are equal texts).
pub fn format(entries: &[(Uuid, i32, i64)]) -> String {
    let mut sorted = entries.to_vec();
    sorted.sort_unstable();
    let mut text = String::with_capacity(HEADER.len() + 1 + sorted.len() * 48);
    text.push_str(HEADER);
    text.push('\n');
    for (id, p, hw) in sorted {
        text.push_str(&format!("{id} {p} {hw}\n"));
    }
    text
}

/// Replaces the checkpoint with `text` (atomically, durable on return). Blocking.
pub fn write(data_dir: &Path, text: &str) -> io::Result<()> {
    crate::log::fsutil::write_atomically(&data_dir.join(FILE), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_skips_nothing() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let text = format(&[(b, 1, 7), (a, 0, 42), (a, 2, 0)]);
        assert!(text.starts_with("ottla-high-watermarks v1\n"));
        let back = parse(&text).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[&(a, 0)], 42);
        assert_eq!(back[&(a, 2)], 0);
        assert_eq!(back[&(b, 1)], 7);
        assert_eq!(format(&[(a, 2, 0), (b, 1, 7), (a, 0, 42)]), text, "sorted");
    }

    #[test]
    fn a_damaged_file_is_refused_whole() {
        let a = Uuid::new_v4();
        assert!(parse("something else\n").is_err());
        assert!(parse(&format!("ottla-high-watermarks v1\n{a} 0\n")).is_err());
        assert!(parse(&format!("ottla-high-watermarks v1\n{a} x 3\n")).is_err());
        assert_eq!(parse("ottla-high-watermarks v1\n").unwrap().len(), 0);
    }

    #[test]
    fn reads_what_it_wrote_and_nothing_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).is_empty());
        let a = Uuid::new_v4();
        write(dir.path(), &format(&[(a, 3, 99)])).unwrap();
        assert_eq!(read(dir.path())[&(a, 3)], 99);
        std::fs::write(dir.path().join(FILE), "garbage").unwrap();
        assert!(read(dir.path()).is_empty());
    }
}
