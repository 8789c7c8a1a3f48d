//! The threading rule, checked while the broker runs: nothing that can block (fsync, file
//! create/delete/rename, directory walks, segment rolls) runs on a tokio worker thread; such
//! work goes to the blocking pool (`spawn_blocking`), where it may also hold a partition's
//! lock only for what must be atomic with the log (ARCHITECTURE.md, "Threading").
//!
//! [`runtime`] builds the broker's runtime with every thread it starts marked as a worker, and
//! [`spawn_blocking`] (the broker's only way onto the blocking pool) clears the mark for the
//! closures it runs. Every blocking storage operation calls [`may_block`]: on a marked thread
//! it counts a violation and logs its kind once. Tests drive workloads on such a runtime and
//! assert that [`violations`] stays zero; in production the count is a cheap tripwire.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

thread_local! {
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
}

tokio::task_local! {
    /// Where the blocking-pool time of work spawned by the current task goes (ns), while
    /// [`charging_blocking_time`] runs it.
    static BLOCKING_CHARGE: Arc<AtomicU64>;
}

static VIOLATIONS: AtomicU64 = AtomicU64::new(0);
static REPORTED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

fn mark_worker() {
    ON_WORKER.with(|w| w.set(true));
}

/// The broker's runtime builder: multi-threaded, every driver enabled, each thread it starts
/// marked as a worker (blocking-pool threads too: [`spawn_blocking`] unmarks its closures).
pub fn runtime() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().on_thread_start(mark_worker);
    builder
}

/// Runs blocking work on the blocking pool (tokio's `spawn_blocking`), the thread unmarked
/// while it runs: the way the broker moves blocking work off the workers.
/// Within [`charging_blocking_time`], the time the closure runs is added to that account.
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let charge = BLOCKING_CHARGE.try_with(Arc::clone).ok();
    tokio::task::spawn_blocking(move || {
        ON_WORKER.with(|w| w.set(false));
        let Some(account) = charge else {
            return f();
        };
        let start = Instant::now();
        let out = f();
        let spent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        account.fetch_add(spent, Ordering::Relaxed);
        out
    })
}

/// Runs `f` (one poll of a request's future, say) with the blocking-pool time of the work
/// it hands to [`spawn_blocking`] added to `account` (ns): the request quota charges a
/// request for its cold reads and password hashing as Kafka's handler threads are charged
/// for doing them inline.
pub fn charging_blocking_time<R>(account: &Arc<AtomicU64>, f: impl FnOnce() -> R) -> R {
    BLOCKING_CHARGE.sync_scope(account.clone(), f)
}

/// Whether the calling thread is one of the runtime's worker threads.
pub fn on_worker() -> bool {
    ON_WORKER.with(|w| w.get())
}

/// Declares that the caller is about to do `what`, which may block. On a worker thread this
/// is a violation of the threading rule: counted, and logged once per kind.
pub fn may_block(what: &'static str) {
    if !on_worker() {
        return;
    }
    VIOLATIONS.fetch_add(1, Ordering::Relaxed);
    let first = REPORTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(what);
    if first {
        tracing::warn!(
            operation = what,
            "blocking operation on a runtime worker thread (threading rule)"
        );
    }
}

/// The kinds of blocking operation that ran on worker threads since the process started.
pub fn violation_kinds() -> Vec<&'static str> {
    REPORTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .copied()
        .collect()
}

/// How many blocking operations ran on worker threads since the process started.
pub fn violations() -> u64 {
    VIOLATIONS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_marked_and_the_blocking_pool_is_not() {
        let rt = runtime().worker_threads(2).build().unwrap();
        let (on_task, on_pool) = rt.block_on(async {
            let task = tokio::spawn(async { on_worker() });
            let pool = spawn_blocking(on_worker);
            (task.await.unwrap(), pool.await.unwrap())
        });
        assert!(on_task, "a spawned task runs on a marked worker");
        assert!(!on_pool, "the blocking pool is not marked");
        assert!(!on_worker(), "nor is the thread that called block_on");
        let before = violations();
        rt.block_on(async {
            tokio::spawn(async { may_block("test: on a worker") })
                .await
                .unwrap();
            spawn_blocking(|| may_block("test: on the pool"))
                .await
                .unwrap();
        });
        assert_eq!(violations() - before, 1);
    }
}
