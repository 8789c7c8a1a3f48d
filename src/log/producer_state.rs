//! Idempotent-producer state of one partition: for each producer id, its epoch and the
//! sequence ranges and offsets of its last few batches. A retried batch is recognised and
//! answered with its original offsets instead of being appended twice; a gap in sequences or a
//! stale epoch is refused as Kafka does.
//!
//! A clean shutdown saves the state beside the segments (`producer.snapshot`); otherwise it is
//! rebuilt from batch headers when the log is opened. Expiry of idle producers (`producer.id.expiration.ms`) comes with the
//! transactions issue.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::batch::BatchHeader;

/// Batches remembered per producer: clients keep at most 5 in flight per partition.
pub const BATCHES_REMEMBERED: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct BatchSeq {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchSeq>,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data in sequence: append it.
    Append,
    /// A retry of a batch already in the log, at these offsets.
    Duplicate { base_offset: i64, last_offset: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer epoch {got} is older than the current epoch {current}")]
    StaleEpoch { got: i16, current: i16 },
    #[error("out of order sequence number: expected {expected}, got {got}")]
    OutOfOrder { expected: i32, got: i32 },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_sequence(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

impl ProducerStates {
    /// Checks an idempotent batch (see [`BatchHeader::is_idempotent`]) before it is appended.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // Unknown producer (new, or its state predates this log): accept its sequence.
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                got: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            // A bumped epoch starts its sequences again at 0.
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        let last_sequence = h.last_sequence();
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == h.base_sequence && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map(|b| next_sequence(b.last_sequence))
            .unwrap_or(h.base_sequence);
        if h.base_sequence != expected {
            return Err(SequenceError::OutOfOrder {
                expected,
                got: h.base_sequence,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records an appended idempotent batch (`h` carries its assigned base offset).
    pub fn record(&mut self, h: &BatchHeader) {
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchSeq {
            first_sequence: h.base_sequence,
            last_sequence: h.last_sequence(),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            total_bytes: 100,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let mut s = ProducerStates::default();
        let first = header(7, 0, 0, 3, 10);
        assert_eq!(s.check(&first), Ok(SequenceCheck::Append));
        s.record(&first);
        assert_eq!(
            s.check(&header(7, 0, 0, 3, -1)),
            Ok(SequenceCheck::Duplicate {
                base_offset: 10,
                last_offset: 12
            })
        );
        assert_eq!(
            s.check(&header(7, 0, 4, 1, -1)),
            Err(SequenceError::OutOfOrder {
                expected: 3,
                got: 4
            })
        );
        let second = header(7, 0, 3, 2, 13);
        assert_eq!(s.check(&second), Ok(SequenceCheck::Append));
        s.record(&second);
        assert_eq!(s.check(&header(7, 1, 0, 1, -1)), Ok(SequenceCheck::Append));
        s.record(&header(7, 1, 0, 1, 15));
        assert!(matches!(
            s.check(&header(7, 0, 5, 1, -1)),
            Err(SequenceError::StaleEpoch { .. })
        ));
        assert_eq!(s.check(&header(8, 0, 42, 1, -1)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn sequences_wrap() {
        let h = header(1, 0, i32::MAX - 1, 3, 0);
        assert_eq!(h.last_sequence(), 0);
        let mut s = ProducerStates::default();
        s.record(&h);
        assert_eq!(s.check(&header(1, 0, 1, 1, -1)), Ok(SequenceCheck::Append));
    }
}
