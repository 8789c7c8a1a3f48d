//! Background work on timers, one independent timer per job so that a long pass of one (a
//! compaction of a large log) never delays another (the periodic flush that `flush.ms`
//! promises, a group's session and rebalance deadlines):
//! - group clock: the group coordinator's deadlines (sessions, rebalances, syncs, offset
//!   retention), every [`COORDINATOR_TICK`];
//! - transaction clock: transaction timeouts, prepared transactions to finish, idle
//!   transactional ids, every [`COORDINATOR_TICK`];
//! - flush: partitions whose unflushed data is older than `flush.ms`, every ≤ 100 ms;
//! - retention (and producer-id expiration), every `log_retention_check_interval_ms`;
//! - cleaner (compaction), every `log_cleaner_backoff_ms`;
//! - ISR: each partition led here drops followers that lag (and adds caught-up ones), every
//!   `replica_lag_time_max_ms / 2`;
//! - high-watermark checkpoint (what a restarted replica starts from), every
//!   `replica_high_watermark_checkpoint_interval_ms`.
//!
//! Every pass runs on the blocking pool (each may write and fsync, or take a coordinator lock
//! a request needs) and never overlaps itself: a timer waits for its pass before ticking again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::broker::Broker;

/// The flush timer's resolution: unflushed data is synced at most this late after `flush.ms`.
const FLUSH_TICK_MAX: Duration = Duration::from_millis(100);
/// How often the coordinators' deadlines are checked: a session or transaction timeout fires
/// at most this late.
const COORDINATOR_TICK: Duration = Duration::from_millis(100);

/// Runs every timer until `stop` turns true; returns once each has finished its pass.
pub async fn run(broker: Arc<Broker>, stop: watch::Receiver<bool>) {
    let config = &broker.config;
    let flush_tick =
        Duration::from_millis(config.flush_interval_ms.max(1) as u64).min(FLUSH_TICK_MAX);
    let retention_every = Duration::from_millis(config.log_retention_check_interval_ms.max(1));
    let cleaner_every = Duration::from_millis(config.log_cleaner_backoff_ms.max(1));
    // Kafka checks for lagging followers every replica.lag.time.max.ms / 2.
    let isr_every = Duration::from_millis((config.replica_lag_time_max_ms / 2).max(1));
    let hw_every =
        Duration::from_millis(config.replica_high_watermark_checkpoint_interval_ms.max(1));
    let timers = [
        every("group clock", COORDINATOR_TICK, &broker, &stop, |b| {
            b.groups.tick()
        }),
        every("transaction clock", COORDINATOR_TICK, &broker, &stop, |b| {
            b.txns.tick(
                &b.topics,
                &b.groups,
                b.config.transactional_id_expiration_ms,
            )
        }),
        every("flush", flush_tick, &broker, &stop, |b| {
            b.topics.flush_due(b.clock.now_ms())
        }),
        every("retention", retention_every, &broker, &stop, |b| {
            let now = b.clock.now_ms();
            b.topics.enforce_retention(now);
            b.topics
                .expire_producers(now, b.config.producer_id_expiration_ms);
        }),
        every("cleaner", cleaner_every, &broker, &stop, |b| {
            b.topics.compact(b.clock.now_ms())
        }),
        every("ISR", isr_every, &broker, &stop, |b| b.check_isrs()),
        every("high-watermark checkpoint", hw_every, &broker, &stop, |b| {
            if let Err(e) = b.topics.checkpoint_high_watermarks() {
                tracing::error!(error = %e, "writing the high-watermark checkpoint failed");
            }
        }),
    ];
    futures::future::join_all(timers).await;
}

/// One timer: every `period` (first after one period), `pass` on the blocking pool; the next
/// tick waits until the pass is over (missed ticks are not caught up).
async fn every(
    name: &'static str,
    period: Duration,
    broker: &Arc<Broker>,
    stop: &watch::Receiver<bool>,
    pass: fn(&Broker),
) {
    let mut stop = stop.clone();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let b = broker.clone();
        if let Err(e) = crate::threads::spawn_blocking(move || pass(&b)).await {
            tracing::error!(timer = name, error = %e, "maintenance pass failed");
        }
    }
}
