//! Which connections the client listeners take: at most `max_connections_per_ip` at once
//! from one address (with per-address overrides; Kafka's `max.connections.per.ip` and
//! `max.connections.per.ip.overrides`: further ones are closed as soon as accepted), and at
//! most `max_connection_creation_rate` new connections per second (KIP-612: beyond it the
//! listener waits before accepting the next one, so a client reconnecting in a loop cannot
//! take the broker's CPU).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::log_every::LogLimit;

static REFUSED_LOG: LogLimit = LogLimit::new();
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Admission {
    per_ip: usize,
    overrides: HashMap<IpAddr, usize>,
    open: Mutex<HashMap<IpAddr, usize>>,
    /// The token bucket of new connections: (tokens, last refill), `rate` per second.
    rate: u32,
    bucket: Mutex<(f64, Instant)>,
}

impl Admission {
    pub fn new(per_ip: usize, overrides: HashMap<IpAddr, usize>, rate: u32) -> Arc<Admission> {
        Arc::new(Admission {
            per_ip,
            overrides,
            open: Mutex::new(HashMap::new()),
            rate,
            bucket: Mutex::new((f64::from(rate), Instant::now())),
        })
    }

    fn open_lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a connection from `ip` if its address is under its limit; the guard uncounts it
    /// when dropped. None: refuse it (logged, at most every few seconds).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpGuard> {
        let limit = self.overrides.get(&ip).copied().unwrap_or(self.per_ip);
        let mut open = self.open_lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            if REFUSED_LOG.allow(REFUSED_LOG_EVERY) {
                tracing::warn!(%ip, open = *n, limit,
                    "closing connection: too many connections from this address (max_connections_per_ip)");
            }
            return None;
        }
        *n += 1;
        Some(IpGuard {
            admission: self.clone(),
            ip,
        })
    }

    /// How long to wait before accepting the next connection (zero when under the rate);
    /// takes the token when there is one.
    pub fn creation_delay(&self) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let rate = f64::from(self.rate);
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *bucket;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            Duration::ZERO
        } else {
            *bucket = (tokens, now);
            Duration::from_secs_f64((1.0 - tokens) / rate)
        }
    }

    /// Open connections from `ip`.
    #[cfg(test)]
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open_lock().get(&ip).copied().unwrap_or(0)
    }
}

/// One admitted connection, counted against its address until dropped.
pub struct IpGuard {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut open = self.admission.open_lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_address_and_overrides() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let admission = Admission::new(2, HashMap::from([(b, 0)]), 0);
        let g1 = admission.admit(a).expect("first");
        let _g2 = admission.admit(a).expect("second");
        assert!(admission.admit(a).is_none(), "third over the limit");
        assert!(admission.admit(b).is_none(), "override 0");
        drop(g1);
        assert_eq!(admission.open_from(a), 1);
        assert!(admission.admit(a).is_some(), "room again");
    }

    #[test]
    fn creation_rate_spaces_accepts_beyond_the_burst() {
        let admission = Admission::new(usize::MAX, HashMap::new(), 10);
        for _ in 0..10 {
            assert_eq!(admission.creation_delay(), Duration::ZERO, "the burst");
        }
        let wait = admission.creation_delay();
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        let unlimited = Admission::new(usize::MAX, HashMap::new(), 0);
        assert_eq!(unlimited.creation_delay(), Duration::ZERO);
    }
}
