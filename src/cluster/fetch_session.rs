//! Incremental fetch sessions (KIP-227), as Kafka's `FetchSession`, `FetchSessionCache` and
//! `FetchManager.newContext` keep them: a consumer (or follower) that fetches many partitions
//! sends them all once (a full fetch, epoch 0) and gets a session id; its next fetches (epoch
//! 1, 2, ...) carry only the partitions added or changed and those to forget, and the answer
//! leaves out the partitions with nothing new (no records, same high watermark and log
//! start, no error). Pure state: no I/O, no `.await`; the fetch handler reads the partitions.
//!
//! The cache holds at most `max_incremental_fetch_session_cache_slots` sessions (Kafka's
//! default 1000) in 8 shards; a full cache evicts as Kafka does: first a session unused for
//! two minutes, else the smallest (fewest partitions) evictable one when the newcomer is
//! larger, followers' (privileged) sessions only by other followers unless old. ottla also
//! bounds the partitions cached over all sessions (`max_incremental_fetch_session_partitions`):
//! past it a full fetch gets no session (id 0, as Kafka answers when its cache is full) and
//! an incremental fetch that would grow past it closes its session (answered whole, id 0:
//! the client starts again with a full fetch).
//!
//! Locks: a shard's, then a session's (never the other way round); each held for a short CPU
//! section, never across an `.await`. Sessions are not bound to a connection or a principal
//! (Kafka's rule): a reconnecting client keeps its session, and every fetch is authorized
//! anew over every partition it reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kafka_protocol::error::ResponseError;
use uuid::Uuid;

/// Kafka's shard count (`NumFetchSessionCacheShards`).
pub const SHARDS: usize = 8;

/// Kafka's `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`: a session unused this long may always
/// be evicted; one younger than this at its last use is safe from eviction by size.
pub const MIN_EVICTION_MS: i64 = 120_000;

/// Session ids of shard `s` are in `[max(1, s·R), (s+1)·R)`.
const ID_RANGE: i32 = i32::MAX / SHARDS as i32;

/// The session epoch after `epoch` (Kafka's `FetchMetadata.nextEpoch`).
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        -1
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// A topic as a session names it: by id (v13+) or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Id(Uuid),
    Name(Arc<str>),
}

/// What a fetch asks of one partition (cached by the session between requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    pub current_leader_epoch: i32,
    pub last_fetched_epoch: i32,
    /// The fetcher's own log start (followers; -1 from consumers).
    pub log_start_offset: i64,
}

/// What a session last sent of a partition (-1: nothing yet, or an error since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

impl Sent {
    pub const NOTHING: Sent = Sent {
        high_watermark: -1,
        log_start_offset: -1,
    };
}

/// One partition a fetch reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub topic: TopicKey,
    pub partition: i32,
    pub params: FetchParams,
    /// What its session had sent of it when the fetch began ([`Sent::NOTHING`] outside an
    /// incremental fetch).
    pub sent: Sent,
}

/// What the answer says of one partition, as far as the session's inclusion rule goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub has_records: bool,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub error_code: i16,
    pub preferred_read_replica: i32,
    pub diverging_epoch: i32,
}

/// A partition as a session keys it.
pub type Key = (TopicKey, i32);

#[derive(Debug)]
struct Cached {
    key: Key,
    params: FetchParams,
    /// The high watermark last sent (-1 after an error: sent again once it clears).
    high_watermark: i64,
    /// The log start offset last sent.
    local_log_start: i64,
}

/// One session: its partitions in order (the order reads follow; partitions that returned
/// records move to the end, so a partition cut off by `max_bytes` is read earlier next time).
/// The order holds the entries (a snapshot walks it without hashing); the index finds a
/// key's place in it.
#[derive(Debug)]
pub struct Session {
    id: i32,
    by_id: bool,
    /// The epoch the next incremental request must carry.
    epoch: i32,
    index: HashMap<Key, u64>,
    order: BTreeMap<u64, Cached>,
    next_seq: u64,
}

impl Session {
    fn new(id: i32, by_id: bool) -> Session {
        Session {
            id,
            by_id,
            epoch: 1,
            index: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    /// The epoch the next incremental request must carry.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Cached> {
        let seq = self.index.get(key)?;
        self.order.get_mut(seq)
    }

    /// Adds a partition at the end, or updates its request side in place.
    fn upsert(&mut self, key: Key, params: FetchParams, hw: i64, log_start: i64) {
        if let Some(c) = self.get_mut(&key) {
            c.params = params;
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.index.insert(key.clone(), seq);
        self.order.insert(
            seq,
            Cached {
                key,
                params,
                high_watermark: hw,
                local_log_start: log_start,
            },
        );
    }

    fn forget(&mut self, key: &Key) {
        if let Some(seq) = self.index.remove(key) {
            self.order.remove(&seq);
        }
    }

    fn move_to_end(&mut self, key: &Key) {
        let seq = self.next_seq;
        if let Some(old) = self.index.get_mut(key) {
            if let Some(c) = self.order.remove(old) {
                *old = seq;
                self.next_seq += 1;
                self.order.insert(seq, c);
            }
        }
    }

    /// The partitions in session order, with their cached parameters and what was sent.
    fn snapshot(&self) -> Vec<Requested> {
        self.order
            .values()
            .map(|c| Requested {
                topic: c.key.0.clone(),
                partition: c.key.1,
                params: c.params,
                sent: Sent {
                    high_watermark: c.high_watermark,
                    log_start_offset: c.local_log_start,
                },
            })
            .collect()
    }
}

/// A session's bookkeeping in its shard, as of its last use (Kafka's `touch`).
struct Entry {
    session: Arc<Mutex<Session>>,
    privileged: bool,
    creation_ms: i64,
    last_used_ms: i64,
    cached_size: usize,
    /// Evictable by a privileged newcomer: unprivileged, or older than [`MIN_EVICTION_MS`]
    /// at its last use.
    by_privileged: bool,
    /// Evictable by any newcomer: older than [`MIN_EVICTION_MS`] at its last use.
    by_all: bool,
}

impl Entry {
    fn touch(&mut self, now_ms: i64, size: usize) {
        self.last_used_ms = now_ms;
        self.cached_size = size;
        let old = now_ms - self.creation_ms > MIN_EVICTION_MS;
        self.by_privileged = !self.privileged || old;
        self.by_all = old;
    }
}

#[derive(Default)]
struct Shard {
    entries: HashMap<i32, Entry>,
}

/// What a fetch request says of its session.
#[derive(Debug, Clone, Copy)]
pub struct SessionMeta {
    pub version: i16,
    pub session_id: i32,
    pub epoch: i32,
    /// Sent by a follower (its session is privileged in eviction).
    pub privileged: bool,
}

/// How a fetch is served (Kafka's `FetchContext`s).
pub enum Context {
    /// A session-level error: no partitions, session id 0.
    Error(ResponseError),
    /// These partitions, answered whole, session id 0.
    Sessionless(Vec<Requested>),
    /// A full fetch asking for a session: answered whole; a session is created with these
    /// partitions when the answer is committed.
    Full {
        privileged: bool,
        by_id: bool,
        parts: Vec<Requested>,
    },
    /// An incremental fetch of a session: every partition of the session is read, the
    /// answer leaves out those with nothing new.
    Incremental {
        session: Arc<Mutex<Session>>,
        /// The session's epoch after this request: another request used the session
        /// meanwhile when it is not that any more.
        epoch_after: i32,
        parts: Vec<Requested>,
    },
}

impl Context {
    /// The partitions this fetch reads, in order.
    pub fn parts(&self) -> &[Requested] {
        match self {
            Context::Error(_) => &[],
            Context::Sessionless(parts)
            | Context::Full { parts, .. }
            | Context::Incremental { parts, .. } => parts,
        }
    }
}

/// Counters, for logs and the metrics endpoint (Kafka's `FetchSessionCache` metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub sessions: usize,
    pub partitions: usize,
    pub evictions: u64,
}

pub struct FetchSessionCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    next_shard: AtomicUsize,
    /// Partitions cached over all sessions, as of their last use.
    cached_partitions: AtomicUsize,
    max_partitions: usize,
    evictions: AtomicU64,
    random: ring::rand::SystemRandom,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FetchSessionCache {
    /// A cache of `slots` sessions (Kafka's `max.incremental.fetch.session.cache.slots`; 0 to
    /// 7 creates none) holding at most `max_partitions` partitions over all of them.
    pub fn new(slots: usize, max_partitions: usize) -> FetchSessionCache {
        FetchSessionCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: slots / SHARDS,
            next_shard: AtomicUsize::new(0),
            cached_partitions: AtomicUsize::new(0),
            max_partitions,
            evictions: AtomicU64::new(0),
            random: ring::rand::SystemRandom::new(),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            sessions: self.shards.iter().map(|s| lock(s).entries.len()).sum(),
            partitions: self.cached_partitions.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    fn shard_of(id: i32) -> Option<usize> {
        if id <= 0 {
            return None;
        }
        let s = (id / ID_RANGE) as usize;
        // Ids at the very top of the range belong to no shard (Kafka never issues them).
        (s < SHARDS).then_some(s)
    }

    fn remove_entry(&self, shard: &mut Shard, id: i32) -> Option<Entry> {
        let e = shard.entries.remove(&id)?;
        self.cached_partitions
            .fetch_sub(e.cached_size, Ordering::Relaxed);
        Some(e)
    }

    /// Removes session `id`, if it exists (a full fetch naming it, or a close).
    pub fn remove(&self, id: i32) {
        if let Some(s) = Self::shard_of(id) {
            let mut shard = lock(&self.shards[s]);
            self.remove_entry(&mut shard, id);
        }
    }

    /// Classifies a fetch (Kafka's `FetchManager.newContext`). `topics` are the request's
    /// partitions, `forgotten` its forgotten ones; `by_id` is whether the request names
    /// topics by id (v13+); `privileged` whether a follower sends it. An incremental
    /// request updates its session here, before any read, and advances its epoch.
    pub fn new_context(
        &self,
        meta: SessionMeta,
        topics: Vec<Requested>,
        forgotten: Vec<(TopicKey, i32)>,
        now_ms: i64,
    ) -> Context {
        let SessionMeta {
            version,
            session_id,
            epoch,
            privileged,
        } = meta;
        let by_id = version >= 13;
        if version < 7 {
            return Context::Sessionless(topics);
        }
        if epoch == 0 || epoch == -1 {
            if session_id != 0 {
                self.remove(session_id);
            }
            return if epoch == -1 || self.per_shard == 0 {
                Context::Sessionless(topics)
            } else {
                Context::Full {
                    privileged,
                    by_id,
                    parts: topics,
                }
            };
        }
        let Some(s) = Self::shard_of(session_id) else {
            return Context::Error(ResponseError::FetchSessionIdNotFound);
        };
        let mut shard = lock(&self.shards[s]);
        let Some(entry) = shard.entries.get(&session_id) else {
            return Context::Error(ResponseError::FetchSessionIdNotFound);
        };
        let session_arc = entry.session.clone();
        let mut session = lock(&session_arc);
        if session.epoch != epoch {
            return Context::Error(ResponseError::InvalidFetchSessionEpoch);
        }
        if session.by_id != by_id {
            return Context::Error(ResponseError::FetchSessionTopicIdError);
        }
        let added = topics.len();
        for r in &topics {
            // A partition new to the session has sent nothing yet: -1 marks it unsent.
            session.upsert((r.topic.clone(), r.partition), r.params, -1, -1);
        }
        for key in &forgotten {
            session.forget(key);
        }
        let size = session.len();
        let entry_size = shard.entries.get(&session_id).map_or(0, |e| e.cached_size);
        let total = self.cached_partitions.load(Ordering::Relaxed);
        let over = added > 0 && total - entry_size.min(total) + size > self.max_partitions;
        if session.is_empty() || over {
            // Nothing left to keep (Kafka answers the request's partitions without a
            // session), or past the partitions bound (the session's partitions answered
            // whole, id 0: the client starts again with a full fetch).
            let parts = if over { session.snapshot() } else { topics };
            drop(session);
            self.remove_entry(&mut shard, session_id);
            return Context::Sessionless(parts);
        }
        session.epoch = next_epoch(session.epoch);
        let epoch_after = session.epoch;
        let parts = session.snapshot();
        drop(session);
        if let Some(entry) = shard.entries.get_mut(&session_id) {
            let before = entry.cached_size;
            entry.touch(now_ms, size);
            self.cached_partitions.fetch_add(size, Ordering::Relaxed);
            self.cached_partitions.fetch_sub(before, Ordering::Relaxed);
        }
        Context::Incremental {
            session: session_arc,
            epoch_after,
            parts,
        }
    }

    /// Creates a session for a full fetch's answer: its partitions in answer order, with
    /// what was sent of each. The new session's id, or 0 when the cache has no room (the
    /// chosen shard is full and nothing in it may be evicted, or the partitions bound).
    pub fn create(
        &self,
        privileged: bool,
        by_id: bool,
        parts: Vec<(Requested, i64, i64)>,
        now_ms: i64,
    ) -> i32 {
        // The shard turns on every full answer, created or not (Kafka's counter).
        let s = self.next_shard.fetch_add(1, Ordering::Relaxed) % SHARDS;
        if self.per_shard == 0 || parts.is_empty() {
            return 0;
        }
        let size = parts.len();
        let mut shard = lock(&self.shards[s]);
        if shard.entries.len() >= self.per_shard
            && !self.try_evict(&mut shard, privileged, size, now_ms)
        {
            return 0;
        }
        if self.cached_partitions.load(Ordering::Relaxed) + size > self.max_partitions {
            return 0;
        }
        let Some(id) = self.new_id(&shard, s) else {
            return 0;
        };
        let mut session = Session::new(id, by_id);
        for (r, hw, log_start) in parts {
            session.upsert((r.topic, r.partition), r.params, hw, log_start);
        }
        let size = session.len();
        let mut entry = Entry {
            session: Arc::new(Mutex::new(session)),
            privileged,
            creation_ms: now_ms,
            last_used_ms: now_ms,
            cached_size: 0,
            by_privileged: false,
            by_all: false,
        };
        entry.touch(now_ms, size);
        self.cached_partitions.fetch_add(size, Ordering::Relaxed);
        shard.entries.insert(id, entry);
        id
    }

    fn new_id(&self, shard: &Shard, s: usize) -> Option<i32> {
        use ring::rand::SecureRandom;
        let low = (s as i32 * ID_RANGE).max(1);
        let span = (ID_RANGE - (low - s as i32 * ID_RANGE)) as u32;
        for _ in 0..64 {
            let mut b = [0u8; 4];
            self.random.fill(&mut b).ok()?;
            let id = low + (u32::from_le_bytes(b) % span) as i32;
            if !shard.entries.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Kafka's `tryEvict`: the least recently used session when unused for
    /// [`MIN_EVICTION_MS`]; else the smallest evictable one, when the newcomer (its
    /// privilege, then its size) is worth more.
    fn try_evict(&self, shard: &mut Shard, privileged: bool, size: usize, now_ms: i64) -> bool {
        let stale = shard
            .entries
            .iter()
            .map(|(&id, e)| (e.last_used_ms, id))
            .min();
        let Some((last_used, id)) = stale else {
            return false;
        };
        if now_ms - last_used > MIN_EVICTION_MS {
            self.remove_entry(shard, id);
            self.evictions.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let candidate = shard
            .entries
            .iter()
            .filter(|(_, e)| {
                if privileged {
                    e.by_privileged
                } else {
                    e.by_all
                }
            })
            .map(|(&id, e)| (e.privileged, e.cached_size, id))
            .min();
        let Some(smallest) = candidate else {
            return false;
        };
        // The newcomer's key is (privileged, size, 0): a tie in size does not evict.
        if (privileged, size, 0) < smallest {
            return false;
        }
        self.remove_entry(shard, smallest.2);
        self.evictions.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Kafka's inclusion rule (`CachedPartition.maybeUpdateResponseData`): whether an
/// incremental answer carries this partition, given what its session had sent of it.
pub fn includes(r: &Requested, a: &Answered) -> bool {
    a.has_records
        || a.high_watermark != r.sent.high_watermark
        || a.log_start_offset != r.sent.log_start_offset
        || a.preferred_read_replica != -1
        || a.error_code != 0
        || a.diverging_epoch >= 0
}

/// Whether no other request used the session since this one's context: else the answer
/// is INVALID_FETCH_SESSION_EPOCH (and what a context's snapshot says the session had
/// sent is still what it had sent).
pub fn current(session: &Session, epoch_after: i32) -> bool {
    session.epoch == epoch_after
}

/// The session takes what an incremental answer sends (`sent`: its included partitions,
/// in answer order): their high watermark and log start (-1 for an error), and those
/// that carried records move to the end of its order. False (nothing changed) when the
/// session is not [`current`].
pub fn commit<'a>(
    session: &mut Session,
    epoch_after: i32,
    sent: impl IntoIterator<Item = (&'a Requested, &'a Answered)>,
) -> bool {
    if !current(session, epoch_after) {
        return false;
    }
    let mut rotate = Vec::new();
    for (r, a) in sent {
        let key = (r.topic.clone(), r.partition);
        if let Some(c) = session.get_mut(&key) {
            c.high_watermark = if a.error_code != 0 {
                -1
            } else {
                a.high_watermark
            };
            c.local_log_start = a.log_start_offset;
        }
        if a.has_records {
            rotate.push(key);
        }
    }
    for key in &rotate {
        session.move_to_end(key);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(version: i16, session_id: i32, epoch: i32, privileged: bool) -> SessionMeta {
        SessionMeta {
            version,
            session_id,
            epoch,
            privileged,
        }
    }

    fn name(t: &str) -> TopicKey {
        TopicKey::Name(Arc::from(t))
    }

    fn req(t: &str, p: i32, offset: i64) -> Requested {
        Requested {
            topic: name(t),
            partition: p,
            params: FetchParams {
                fetch_offset: offset,
                max_bytes: 1 << 20,
                current_leader_epoch: -1,
                last_fetched_epoch: -1,
                log_start_offset: -1,
            },
            sent: Sent::NOTHING,
        }
    }

    fn quiet(hw: i64) -> Answered {
        Answered {
            has_records: false,
            high_watermark: hw,
            log_start_offset: 0,
            error_code: 0,
            preferred_read_replica: -1,
            diverging_epoch: -1,
        }
    }

    fn full(cache: &FetchSessionCache, parts: &[Requested], now: i64, privileged: bool) -> i32 {
        cache.create(
            privileged,
            false,
            parts.iter().map(|r| (r.clone(), 10, 0)).collect(),
            now,
        )
    }

    fn incremental(
        cache: &FetchSessionCache,
        id: i32,
        epoch: i32,
        topics: Vec<Requested>,
        forgotten: Vec<(TopicKey, i32)>,
    ) -> Context {
        cache.new_context(meta(12, id, epoch, false), topics, forgotten, 1_000)
    }

    fn keys(parts: &[Requested]) -> Vec<(String, i32)> {
        parts
            .iter()
            .map(|r| match &r.topic {
                TopicKey::Name(n) => (n.to_string(), r.partition),
                TopicKey::Id(id) => (id.to_string(), r.partition),
            })
            .collect()
    }

    #[test]
    fn epochs_wrap_to_one_and_stay_final() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(5), 6);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(-1), -1);
        assert_eq!(next_epoch(-7), -1);
    }

    #[test]
    fn requests_are_classified_as_kafka_does() {
        let cache = FetchSessionCache::new(1000, 1_000_000);
        let parts = vec![req("a", 0, 0)];
        assert!(matches!(
            cache.new_context(meta(6, 5, 3, false), parts.clone(), vec![], 0),
            Context::Sessionless(_)
        ));
        assert!(matches!(
            cache.new_context(meta(12, 0, -1, false), parts.clone(), vec![], 0),
            Context::Sessionless(_)
        ));
        assert!(matches!(
            cache.new_context(meta(12, 0, 0, false), parts.clone(), vec![], 0),
            Context::Full { by_id: false, .. }
        ));
        assert!(matches!(
            cache.new_context(meta(13, 77, 0, true), parts.clone(), vec![], 0),
            Context::Full {
                by_id: true,
                privileged: true,
                ..
            }
        ));
        for (id, epoch) in [(0, 1), (0, -2), (12345, 1), (-5, 1), (i32::MAX, 1)] {
            assert!(
                matches!(
                    cache.new_context(meta(12, id, epoch, false), parts.clone(), vec![], 0),
                    Context::Error(ResponseError::FetchSessionIdNotFound)
                ),
                "({id}, {epoch})"
            );
        }
        // No slots: full fetches are served without sessions.
        let none = FetchSessionCache::new(7, 1_000_000);
        assert!(matches!(
            none.new_context(meta(12, 0, 0, false), parts.clone(), vec![], 0),
            Context::Sessionless(_)
        ));
        assert_eq!(full(&none, &parts, 0, false), 0);
    }

    #[test]
    fn a_session_takes_adds_updates_and_forgets_and_checks_its_epoch() {
        let cache = FetchSessionCache::new(1000, 1_000_000);
        let id = full(
            &cache,
            &[req("a", 0, 0), req("a", 1, 0), req("b", 0, 0)],
            0,
            false,
        );
        assert!(id > 0);
        assert_eq!(cache.stats().sessions, 1);
        assert_eq!(cache.stats().partitions, 3);
        // Epoch 2 before 1: refused, the session unchanged.
        assert!(matches!(
            incremental(&cache, id, 2, vec![], vec![]),
            Context::Error(ResponseError::InvalidFetchSessionEpoch)
        ));
        // A v13 request on a name session.
        assert!(matches!(
            cache.new_context(meta(13, id, 1, false), vec![], vec![], 0),
            Context::Error(ResponseError::FetchSessionTopicIdError)
        ));
        let Context::Incremental {
            parts, epoch_after, ..
        } = incremental(
            &cache,
            id,
            1,
            vec![req("a", 1, 5), req("c", 0, 0)],
            vec![(name("b"), 0)],
        )
        else {
            panic!("incremental");
        };
        assert_eq!(epoch_after, 2);
        assert_eq!(
            keys(&parts),
            [("a".into(), 0), ("a".into(), 1), ("c".into(), 0)],
            "updated in place, added at the end, forgotten gone"
        );
        assert_eq!(parts[1].params.fetch_offset, 5);
        assert_eq!(cache.stats().partitions, 3);
        // The same epoch again (a retried duplicate): refused.
        assert!(matches!(
            incremental(&cache, id, 1, vec![], vec![]),
            Context::Error(ResponseError::InvalidFetchSessionEpoch)
        ));
        assert!(matches!(
            incremental(&cache, id, 2, vec![], vec![]),
            Context::Incremental { epoch_after: 3, .. }
        ));
        // A full fetch naming the session closes it.
        assert!(matches!(
            cache.new_context(meta(12, id, -1, false), vec![], vec![], 0),
            Context::Sessionless(_)
        ));
        assert_eq!(cache.stats().sessions, 0);
        assert_eq!(cache.stats().partitions, 0);
        assert!(matches!(
            incremental(&cache, id, 3, vec![], vec![]),
            Context::Error(ResponseError::FetchSessionIdNotFound)
        ));
    }

    #[test]
    fn a_session_emptied_is_closed_and_the_request_answered_without_it() {
        let cache = FetchSessionCache::new(1000, 1_000_000);
        let id = full(&cache, &[req("a", 0, 0)], 0, false);
        let Context::Sessionless(parts) = incremental(
            &cache,
            id,
            1,
            vec![req("z", 3, 0)],
            vec![(name("a"), 0), (name("z"), 3)],
        ) else {
            panic!("sessionless");
        };
        assert_eq!(keys(&parts), [("z".into(), 3)]);
        assert_eq!(cache.stats().sessions, 0);
    }

    /// What an incremental answer would send, and the session taking it.
    fn answer(
        session: &Arc<Mutex<Session>>,
        epoch_after: i32,
        parts: &[Requested],
        answered: &[Answered],
    ) -> Option<Vec<bool>> {
        let mut s = lock(session);
        if !current(&s, epoch_after) {
            return None;
        }
        let included: Vec<bool> = parts
            .iter()
            .zip(answered)
            .map(|(r, a)| includes(r, a))
            .collect();
        let sent = parts
            .iter()
            .zip(answered)
            .zip(&included)
            .filter(|(_, &i)| i)
            .map(|(pa, _)| pa);
        assert!(commit(&mut s, epoch_after, sent));
        Some(included)
    }

    #[test]
    fn answers_leave_out_quiet_partitions_and_rotate_those_with_records() {
        let cache = FetchSessionCache::new(1000, 1_000_000);
        let parts = [
            req("a", 0, 0),
            req("a", 1, 0),
            req("a", 2, 0),
            req("a", 3, 0),
        ];
        let id = full(&cache, &parts, 0, false);
        let Context::Incremental {
            session,
            epoch_after,
            parts,
        } = incremental(&cache, id, 1, vec![], vec![])
        else {
            panic!("incremental");
        };
        // The full fetch sent high watermark 10 and log start 0 of each.
        assert!(parts.iter().all(|r| r.sent
            == Sent {
                high_watermark: 10,
                log_start_offset: 0
            }));
        let answered = [
            Answered {
                has_records: true,
                ..quiet(11)
            },
            quiet(10),
            Answered {
                error_code: 6,
                ..quiet(-1)
            },
            quiet(12),
        ];
        assert_eq!(
            answer(&session, epoch_after, &parts, &answered),
            Some(vec![true, false, true, true])
        );
        // p0 carried records: it reads last now.
        let Context::Incremental {
            session,
            epoch_after,
            parts,
        } = incremental(&cache, id, 2, vec![], vec![])
        else {
            panic!("incremental");
        };
        assert_eq!(
            keys(&parts),
            [
                ("a".into(), 1),
                ("a".into(), 2),
                ("a".into(), 3),
                ("a".into(), 0)
            ]
        );
        // Nothing changed since: only the erroneous partition (its cached HW is -1) again;
        // a log start move is news.
        let again = [
            quiet(10),
            Answered {
                error_code: 0,
                ..quiet(10)
            },
            Answered {
                log_start_offset: 4,
                ..quiet(12)
            },
            quiet(11),
        ];
        assert_eq!(
            answer(&session, epoch_after, &parts, &again),
            Some(vec![false, true, true, false])
        );
        // A preferred replica or a diverging epoch is news too; an LSO change alone is not
        // (it is not compared, as in Kafka).
        let r = &parts[0];
        assert!(includes(
            r,
            &Answered {
                preferred_read_replica: 2,
                ..quiet(10)
            }
        ));
        assert!(includes(
            r,
            &Answered {
                diverging_epoch: 3,
                ..quiet(10)
            }
        ));
        assert!(!includes(r, &quiet(10)));
        // Another request used the session meanwhile: nothing is taken.
        let Context::Incremental { .. } = incremental(&cache, id, 3, vec![], vec![]) else {
            panic!("incremental");
        };
        assert_eq!(answer(&session, epoch_after, &parts, &again), None);
    }

    #[test]
    fn session_ids_fall_in_their_shards_ranges() {
        let cache = FetchSessionCache::new(1000, 1_000_000);
        for i in 0..40 {
            let id = full(&cache, &[req("a", 0, 0)], 0, false);
            let shard = i % SHARDS;
            assert!(id >= (shard as i32 * ID_RANGE).max(1) && id < (shard as i32 + 1) * ID_RANGE);
            assert_eq!(FetchSessionCache::shard_of(id), Some(shard));
        }
        assert_eq!(FetchSessionCache::shard_of(8 * ID_RANGE), None);
        assert_eq!(FetchSessionCache::shard_of(0), None);
    }

    #[test]
    fn a_full_cache_evicts_as_kafka_does() {
        // 16 slots: 2 per shard, filled round-robin.
        let cache = FetchSessionCache::new(16, 1_000_000);
        for i in 0..16 {
            let parts: Vec<Requested> = (0..(i % 3 + 2)).map(|p| req("t", p, 0)).collect();
            assert!(full(&cache, &parts, 1_000, false) > 0);
        }
        assert_eq!(cache.stats().sessions, 16);
        // Young sessions are safe from eviction by size: a large newcomer gets no session.
        let big: Vec<Requested> = (0..50).map(|p| req("t", p, 0)).collect();
        assert_eq!(full(&cache, &big, 2_000, false), 0);
        assert_eq!(cache.stats().sessions, 16);

        // One slot per shard; session a in shard 0, touched once older than two minutes.
        let cache = FetchSessionCache::new(8, 1_000_000);
        let later = MIN_EVICTION_MS + 1;
        let a = full(&cache, &[req("t", 0, 0), req("t", 1, 0)], 0, false);
        assert!(matches!(
            cache.new_context(meta(12, a, 1, false), vec![], vec![], later),
            Context::Incremental { .. }
        ));
        cache.next_shard.store(0, Ordering::Relaxed);
        let two: Vec<Requested> = (0..2).map(|p| req("v", p, 0)).collect();
        assert_eq!(full(&cache, &two, later, false), 0, "equal size: kept");
        cache.next_shard.store(0, Ordering::Relaxed);
        let three: Vec<Requested> = (0..3).map(|p| req("v", p, 0)).collect();
        let b = full(&cache, &three, later, false);
        assert!(b > 0, "larger: the smaller evicted");
        assert_eq!(cache.stats().evictions, 1);
        assert!(matches!(
            cache.new_context(meta(12, a, 2, false), vec![], vec![], later),
            Context::Error(ResponseError::FetchSessionIdNotFound)
        ));
        // Unused for two minutes: evicted whatever its size.
        cache.next_shard.store(0, Ordering::Relaxed);
        let c = full(
            &cache,
            &[req("w", 0, 0)],
            later + MIN_EVICTION_MS + 1,
            false,
        );
        assert!(c > 0);
        assert_eq!(cache.stats().evictions, 2);
        assert_eq!(cache.stats().sessions, 1);
    }

    #[test]
    fn followers_sessions_yield_only_to_followers_once_old_or_to_staleness() {
        let cache = FetchSessionCache::new(8, 1_000_000);
        let late = MIN_EVICTION_MS + 10;
        let f = full(&cache, &[req("t", 0, 0)], 0, true);
        assert!(matches!(
            cache.new_context(meta(12, f, 1, true), vec![], vec![], 10),
            Context::Incremental { .. }
        ));
        let big: Vec<Requested> = (0..5).map(|p| req("c", p, 0)).collect();
        // Young at its last use: neither a consumer's nor a follower's larger session takes
        // its place.
        cache.next_shard.store(0, Ordering::Relaxed);
        assert_eq!(full(&cache, &big, 20, false), 0);
        cache.next_shard.store(0, Ordering::Relaxed);
        assert_eq!(full(&cache, &big, 30, true), 0);
        // Touched once two minutes old: a consumer still cannot evict it by size (a
        // privileged session is worth more), a follower with more partitions can.
        assert!(matches!(
            cache.new_context(meta(12, f, 2, true), vec![], vec![], late),
            Context::Incremental { .. }
        ));
        cache.next_shard.store(0, Ordering::Relaxed);
        assert_eq!(full(&cache, &big, late + 1, false), 0);
        cache.next_shard.store(0, Ordering::Relaxed);
        assert!(full(&cache, &big, late + 2, true) > 0);
        assert_eq!(cache.stats().evictions, 1);
    }

    #[test]
    fn the_partitions_bound_refuses_sessions_and_closes_one_that_grows_past_it() {
        let cache = FetchSessionCache::new(1000, 5);
        let four: Vec<Requested> = (0..4).map(|p| req("t", p, 0)).collect();
        let id = full(&cache, &four, 0, false);
        assert!(id > 0);
        let three: Vec<Requested> = (0..3).map(|p| req("u", p, 0)).collect();
        assert_eq!(full(&cache, &three, 0, false), 0, "4 + 3 > 5");
        // Growing to 5 is fine; to 6, the session closes and its partitions are read whole.
        assert!(matches!(
            incremental(&cache, id, 1, vec![req("t", 4, 0)], vec![]),
            Context::Incremental { .. }
        ));
        let Context::Sessionless(parts) = incremental(&cache, id, 2, vec![req("t", 5, 0)], vec![])
        else {
            panic!("closed");
        };
        assert_eq!(parts.len(), 6);
        assert_eq!(
            cache.stats(),
            CacheStats {
                sessions: 0,
                partitions: 0,
                evictions: 0
            }
        );
    }

    /// Random fulls, incrementals (right and wrong epochs, adds, forgets), closes and the
    /// clock moving: the cache's accounting holds (the partitions counted are the sessions'
    /// partitions, within both bounds), every live session expects the epoch its client
    /// would send next, and nothing panics.
    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Full {
                privileged: bool,
                n: i32,
            },
            Incremental {
                which: usize,
                wrong_epoch: bool,
                add: Vec<i32>,
                forget: Vec<i32>,
            },
            Close {
                which: usize,
            },
            Tick {
                ms: i64,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (any::<bool>(), 1..12i32).prop_map(|(privileged, n)| Op::Full { privileged, n }),
                (
                    0..8usize,
                    proptest::bool::weighted(0.1),
                    proptest::collection::vec(0..16i32, 0..4),
                    proptest::collection::vec(0..16i32, 0..4)
                )
                    .prop_map(|(which, wrong_epoch, add, forget)| {
                        Op::Incremental {
                            which,
                            wrong_epoch,
                            add,
                            forget,
                        }
                    }),
                (0..8usize).prop_map(|which| Op::Close { which }),
                (0..200_000i64).prop_map(|ms| Op::Tick { ms }),
            ]
        }

        fn check(cache: &FetchSessionCache, slots: usize, max_partitions: usize) {
            let mut sessions = 0;
            let mut counted = 0;
            for shard in &cache.shards {
                let shard = lock(shard);
                assert!(shard.entries.len() <= slots / SHARDS);
                for (id, e) in &shard.entries {
                    let s = lock(&e.session);
                    assert_eq!(s.id(), *id);
                    assert_eq!(e.cached_size, s.len(), "touched at its last change");
                    assert_eq!(s.index.len(), s.order.len());
                    counted += e.cached_size;
                    sessions += 1;
                }
            }
            let stats = cache.stats();
            assert_eq!((stats.sessions, stats.partitions), (sessions, counted));
            assert!(counted <= max_partitions);
        }

        proptest! {
            #[test]
            fn the_cache_keeps_its_books(ops in proptest::collection::vec(op(), 1..80)) {
                let (slots, max_partitions) = (16, 40);
                let cache = FetchSessionCache::new(slots, max_partitions);
                // The client side: (session id, the epoch it sends next).
                let mut clients: Vec<(i32, i32)> = Vec::new();
                let mut now = 0i64;
                for op in ops {
                    match op {
                        Op::Full { privileged, n } => {
                            let parts: Vec<Requested> = (0..n).map(|p| req("t", p, 0)).collect();
                            let id = cache.create(privileged, false, parts.iter().map(|r| (r.clone(), 0, 0)).collect(), now);
                            if id != 0 {
                                prop_assert!(FetchSessionCache::shard_of(id).is_some());
                                clients.push((id, 1));
                            }
                        }
                        Op::Incremental { which, wrong_epoch, add, forget } => {
                            let Some(&(id, epoch)) = clients.get(which % clients.len().max(1)) else {
                                continue;
                            };
                            let sent = if wrong_epoch { epoch + 1 } else { epoch };
                            let adds = add.iter().map(|&p| req("t", p, 1)).collect();
                            let forgets = forget.iter().map(|&p| (name("t"), p)).collect();
                            match cache.new_context(meta(12, id, sent, false), adds, forgets, now) {
                                Context::Incremental { epoch_after, parts, .. } => {
                                    prop_assert!(!wrong_epoch);
                                    prop_assert_eq!(epoch_after, next_epoch(epoch));
                                    prop_assert!(!parts.is_empty());
                                    clients.retain(|c| c.0 != id);
                                    clients.push((id, epoch_after));
                                }
                                Context::Error(ResponseError::InvalidFetchSessionEpoch) => {
                                    prop_assert!(wrong_epoch);
                                }
                                // Evicted, emptied or past the bound: the client starts afresh.
                                Context::Error(ResponseError::FetchSessionIdNotFound)
                                | Context::Sessionless(_) => clients.retain(|c| c.0 != id),
                                _ => prop_assert!(false, "unexpected context"),
                            }
                        }
                        Op::Close { which } => {
                            if let Some(&(id, _)) = clients.get(which % clients.len().max(1)) {
                                cache.remove(id);
                                clients.retain(|c| c.0 != id);
                            }
                        }
                        Op::Tick { ms } => now += ms,
                    }
                    check(&cache, slots, max_partitions);
                }
            }
        }
    }
}
