//! The broker-wide request memory budget (Kafka's `queued.max.request.bytes` memory pool):
//! every byte a connection reads from its socket is reserved here first and given back once
//! the request it belongs to has been handled, so the bytes of requests being read or waiting
//! are bounded whatever clients claim or send. A connection that cannot reserve waits: it
//! stops reading its socket (TCP flow control pushes back on the client).
//!
//! A budget spent on requests that never finish would stall every client (60 connections
//! sending 30 MiB of frames that claim 90 MiB, then nothing): when a reservation has to wait,
//! the connection holding the most bytes of an unfinished frame (other than the one waiting)
//! is told to close, logged with its peer and size; its bytes come back and the others go
//! on. Complete requests are never evicted: they are being handled and give their bytes back
//! when done.
//!
//! Reservations are per read (at most one read chunk, 64 KiB), so no connection reserves what
//! it has not received: memory follows the bytes that arrived, never the lengths announced.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

/// The budget. Shared by every client connection of the broker.
pub struct RequestMemory {
    total: usize,
    free: Semaphore,
    /// Per connection: bytes of its unfinished frame held, and how to tell it to close.
    holders: Mutex<HashMap<u64, Holder>>,
    next_id: AtomicU64,
}

struct Holder {
    unfinished: usize,
    peer: String,
    evict: Arc<Notify>,
    /// Told to close to make room.
    evicted: bool,
}

/// When the allocator's free memory was last given back (ms since `TRIM_EPOCH` + 1; 0: never).
static LAST_TRIM_MS: AtomicU64 = AtomicU64::new(0);
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
static TRIM_EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Gives the allocator's free memory back (on the blocking pool), at most once per
/// `TRIM_EVERY`: what evicted connections freed is scattered over glibc's arenas, which keep
/// it resident otherwise (the budget bounds live bytes, this keeps RSS near them).
fn trim_soon() {
    // Milliseconds since the first call, plus one (0: never trimmed).
    let now = TRIM_EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1;
    let last = LAST_TRIM_MS.load(Ordering::Relaxed);
    let due = last == 0 || now >= last + TRIM_EVERY.as_millis() as u64;
    if !due
        || LAST_TRIM_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn_blocking(crate::alloc::release_free_memory);
    }
}

impl RequestMemory {
    pub fn new(total: usize) -> Arc<RequestMemory> {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(RequestMemory {
            total,
            free: Semaphore::new(total),
            holders: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        })
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.total - self.free.available_permits()
    }

    /// A lease for one connection (returns what it holds when dropped).
    pub fn lease(self: &Arc<Self>, peer: &str) -> Lease {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        self.holders_lock().insert(
            id,
            Holder {
                unfinished: 0,
                peer: peer.to_string(),
                evict: evict.clone(),
                evicted: false,
            },
        );
        Lease {
            memory: self.clone(),
            id,
            held: 0,
            evict,
        }
    }

    fn holders_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Holder>> {
        self.holders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the connection holding the most bytes of an unfinished frame, other than
    /// `waiting`, to close. Returns whether one was told.
    fn evict_largest(&self, waiting: u64) -> bool {
        let mut holders = self.holders_lock();
        let Some((_, h)) = holders
            .iter_mut()
            .filter(|(id, h)| **id != waiting && h.unfinished > 0 && !h.evicted)
            .max_by_key(|(_, h)| h.unfinished)
        else {
            return false;
        };
        h.evicted = true;
        tracing::warn!(peer = %h.peer, unfinished_bytes = h.unfinished, budget = self.total,
            "closing connection: it holds the most bytes of an unfinished request while the request memory budget (queued_max_request_bytes) is spent");
        // `notify_one` stores a permit: the connection sees it even if it is not waiting now.
        h.evict.notify_one();
        true
    }
}

/// Why a reservation failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The budget chose this connection to close.
    Evicted,
}

/// One connection's share of the budget.
pub struct Lease {
    memory: Arc<RequestMemory>,
    id: u64,
    held: usize,
    evict: Arc<Notify>,
}

impl Lease {
    /// Reserves `bytes` (about to be read), waiting while the budget is spent; the wait ends
    /// with `Refused::Evicted` if this connection is chosen to make room.
    pub async fn reserve(&mut self, bytes: usize) -> Result<(), Refused> {
        let bytes = bytes.min(self.memory.total);
        if bytes == 0 {
            return Ok(());
        }
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        let permit = match self.memory.free.try_acquire_many(n) {
            Ok(p) => p,
            Err(_) => {
                self.memory.evict_largest(self.id);
                tokio::select! {
                    p = self.memory.free.acquire_many(n) => match p {
                        Ok(p) => p,
                        // The semaphore is never closed.
                        Err(_) => return Err(Refused::Evicted),
                    },
                    _ = self.evict.notified() => return Err(Refused::Evicted),
                }
            }
        };
        permit.forget();
        self.held += bytes;
        Ok(())
    }

    /// Gives back `bytes` of what this connection holds (read less than reserved, or a
    /// request handled).
    pub fn release(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.memory.free.add_permits(bytes);
    }

    /// Bytes this connection holds.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Records how many bytes of an unfinished frame the connection holds now (0: none), the
    /// measure eviction goes by.
    pub fn set_unfinished(&self, bytes: usize) {
        if let Some(h) = self.memory.holders_lock().get_mut(&self.id) {
            h.unfinished = bytes;
        }
    }

    /// Resolves when the budget chose this connection to close.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let evicted = self
            .memory
            .holders_lock()
            .remove(&self.id)
            .is_some_and(|h| h.evicted);
        let held = self.held;
        self.release(held);
        if evicted {
            trim_soon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reservations_wait_for_the_budget_and_the_largest_unfinished_frame_is_evicted() {
        let memory = RequestMemory::new(100);
        let mut a = memory.lease("a");
        let mut b = memory.lease("b");
        let mut c = memory.lease("c");
        a.reserve(60).await.unwrap();
        a.set_unfinished(60);
        b.reserve(30).await.unwrap();
        b.set_unfinished(30);
        assert_eq!(memory.in_use(), 90);
        // c must wait: a holds the most of an unfinished frame and is told to close.
        let waiting = tokio::spawn(async move {
            let r = c.reserve(40).await;
            (r, c)
        });
        tokio::time::timeout(Duration::from_secs(5), a.evicted())
            .await
            .expect("a evicted");
        drop(a);
        let (r, c) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("c reserved")
            .unwrap();
        assert_eq!(r, Ok(()));
        assert_eq!(c.held(), 40);
        assert_eq!(memory.in_use(), 70);
        // A finished request is not evicted: its bytes come back when it is handled.
        b.set_unfinished(0);
        b.release(30);
        drop(c);
        assert_eq!(memory.in_use(), 0);
        // A reservation above the whole budget is capped at it (never waits forever).
        let mut d = memory.lease("d");
        d.reserve(1000).await.unwrap();
        assert_eq!(d.held(), 100);
        d.release(1000);
        assert_eq!(memory.in_use(), 0);
    }
}
