//! Background work on timers: the group coordinator's clock (session and rebalance timeouts),
//! the periodic flush, retention and compaction. Each pass
//! runs on the blocking pool (it does file I/O) and never overlaps itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::broker::Broker;
use crate::log::now_ms;

/// The flush timer's resolution: unflushed data is synced at most this late after `flush.ms`.
const FLUSH_TICK_MAX: Duration = Duration::from_millis(100);

pub async fn run(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let config = &broker.config;
    let flush_tick =
        Duration::from_millis(config.flush_interval_ms.max(1) as u64).min(FLUSH_TICK_MAX);
    let retention_every = Duration::from_millis(config.log_retention_check_interval_ms);
    let cleaner_every = Duration::from_millis(config.log_cleaner_backoff_ms);
    let mut ticker = tokio::time::interval(flush_tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_retention = Instant::now() + retention_every;
    let mut next_cleaning = Instant::now() + cleaner_every;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let now = Instant::now();
        let retention = now >= next_retention;
        let cleaning = now >= next_cleaning;
        if retention {
            next_retention = now + retention_every;
        }
        if cleaning {
            next_cleaning = now + cleaner_every;
        }
        broker.groups.tick();
        let b = broker.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            b.txns.tick(
                &b.topics,
                &b.groups,
                b.config.transactional_id_expiration_ms,
            );
            b.topics.flush_due(now);
            if retention {
                b.topics.enforce_retention(now);
                b.topics
                    .expire_producers(now, b.config.producer_id_expiration_ms);
            }
            if cleaning {
                b.topics.compact(now);
            }
        });
        if let Err(e) = pass.await {
            tracing::error!(error = %e, "storage maintenance pass failed");
        }
    }
}
