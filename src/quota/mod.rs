//! Client quotas as Kafka enforces them (KIP-13, KIP-55, KIP-124, KIP-219, KIP-599): the
//! limits of the metadata image's user / client-id quotas resolved per (user, client id) as
//! Kafka's default `ClientQuotaCallback` does, and one sensor per matched entity measuring
//! produce bytes, fetch bytes, request handler time and controller mutations (`rate`).
//! The protocol layer asks for a connection's bounds before each request, records after it,
//! puts the throttle time in the response and has the connection stop reading for that
//! long (KIP-219).
//!
//! No cost without quotas: [`QuotaManager::bounds`] checks one atomic flag and answers None.
//! With quotas, a connection caches its resolved bounds (the sensors, `Arc`s) for its
//! (user, client id) until the quotas change (a generation counter), so a request takes one
//! sensor's own mutex per quota that applies to it, never a shared lock; the registry of
//! sensors is locked only when a connection resolves its bounds.

pub mod rate;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::meta::client_quotas::{
    CLIENT_ID, CONNECTION_CREATION_RATE, CONSUMER_BYTE_RATE, CONTROLLER_MUTATION_RATE, IP,
    PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE, USER,
};
use crate::meta::image::ClientQuotas;
use rate::{SampledRate, TokenBucket, Windows};

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `producer_byte_rate`: bytes of produce requests per second.
    Produce = 0,
    /// `consumer_byte_rate`: bytes of consumer fetch responses per second.
    Fetch = 1,
    /// `request_percentage`: handler time, in percent of one thread.
    Request = 2,
    /// `controller_mutation_rate`: partitions created or deleted per second.
    Mutation = 3,
}

const KINDS: [Kind; 4] = [Kind::Produce, Kind::Fetch, Kind::Request, Kind::Mutation];

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Produce => PRODUCER_BYTE_RATE,
            Kind::Fetch => CONSUMER_BYTE_RATE,
            Kind::Request => REQUEST_PERCENTAGE,
            Kind::Mutation => CONTROLLER_MUTATION_RATE,
        }
    }
}

/// One level of an entity in the lookup: the type absent, its default, or a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    Absent,
    Default,
    Name(String),
}

/// The configured limits of one kind, by (user part, client-id part).
type Limits = HashMap<(Part, Part), f64>;

/// The limit that applies to (user, client id) and the tags of the sensor it is measured
/// on, as Kafka's `DefaultQuotaCallback.quotaMetricTags`: the first configured of
/// users/<user>/clients/<client-id>, users/<user>/clients/<default>, users/<user>,
/// users/<default>/clients/<client-id>, users/<default>/clients/<default>, users/<default>,
/// clients/<client-id>, clients/<default>. A user-only level is shared by all the user's
/// client ids (tag ""), a client-only level by all users.
fn resolve(limits: &Limits, user: &str, client_id: &str) -> Option<(f64, String, String)> {
    if limits.is_empty() {
        return None;
    }
    let u = || Part::Name(user.to_string());
    let c = || Part::Name(client_id.to_string());
    let levels = [
        ((u(), c()), (user, client_id)),
        ((u(), Part::Default), (user, client_id)),
        ((u(), Part::Absent), (user, "")),
        ((Part::Default, c()), (user, client_id)),
        ((Part::Default, Part::Default), (user, client_id)),
        ((Part::Default, Part::Absent), (user, "")),
        ((Part::Absent, c()), ("", client_id)),
        ((Part::Absent, Part::Default), ("", client_id)),
    ];
    levels.into_iter().find_map(|(key, (ut, ct))| {
        limits
            .get(&key)
            .map(|&limit| (limit, ut.to_string(), ct.to_string()))
    })
}

/// The measurement behind one sensor.
#[derive(Debug)]
enum Stat {
    Rate(SampledRate),
    Bucket(TokenBucket),
}

/// A sensor: one per (kind, user tag, client-id tag), shared by every connection it applies
/// to.
#[derive(Debug)]
pub struct Sensor {
    stat: Mutex<Stat>,
    /// When a value was last recorded or the sensor handed to a connection (ms, the
    /// manager's clock): an unused sensor is dropped after [`SENSOR_EXPIRY_MS`].
    last_used_ms: AtomicI64,
}

/// Sensors no connection holds and nothing recorded on for this long are dropped (Kafka's
/// quota sensors expire after an hour of inactivity), so a stream of new client ids does not
/// grow the registry without bound.
pub const SENSOR_EXPIRY_MS: i64 = 3_600_000;

/// How often (at most) resolving bounds sweeps the registry for expired sensors.
const SWEEP_EVERY_MS: i64 = 60_000;

impl Sensor {
    fn stat(&self) -> std::sync::MutexGuard<'_, Stat> {
        self.stat.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A quota that applies to a connection's requests: its limit and sensor.
#[derive(Debug, Clone)]
pub struct Bound {
    pub limit: f64,
    sensor: Arc<Sensor>,
}

/// The bounds of one (user, client id), per kind.
#[derive(Debug, Clone, Default)]
pub struct Bounds {
    bounds: [Option<Bound>; 4],
}

impl Bounds {
    pub fn get(&self, kind: Kind) -> Option<&Bound> {
        self.bounds[kind as usize].as_ref()
    }
}

/// What a connection keeps between requests: its resolved bounds, and the throttle the
/// last request earned (the connection stops reading for that long).
#[derive(Debug, Default)]
pub struct SessionQuotas {
    cached: Option<Cached>,
    /// Set by the protocol layer after a request that must be throttled (ms); the connection
    /// takes it (and resets it) after writing the response.
    pub throttle_ms: u64,
}

#[derive(Debug)]
struct Cached {
    generation: u64,
    user: String,
    client_id: String,
    bounds: Bounds,
}

/// The broker's quotas: the limits from the image and the sensors.
pub struct QuotaManager {
    windows: Windows,
    /// Any user / client-id quota configured (the fast path's one check).
    enabled: AtomicBool,
    /// Bumped at every change of the limits: cached bounds of an older one are resolved again.
    generation: AtomicU64,
    /// The image's quota map the limits were built from, and the limits per kind.
    limits: RwLock<(Arc<ClientQuotas>, Arc<[Limits; 4]>)>,
    sensors: Mutex<HashMap<(Kind, String, String), Arc<Sensor>>>,
    /// When the registry was last swept for expired sensors (ms).
    last_sweep_ms: AtomicI64,
    /// `connection_creation_rate` of ip entities (KIP-612): by address, and the default
    /// (`None`); empty when none is set (the accept path's one check is `ip_enabled`).
    ip_limits: RwLock<Arc<HashMap<Option<IpAddr>, f64>>>,
    ip_enabled: AtomicBool,
    /// Connections accepted per address, with the last use (ms) for expiry.
    ip_rates: Mutex<IpRates>,
    origin: Instant,
}

#[derive(Default)]
struct IpRates {
    rates: HashMap<IpAddr, (SampledRate, i64)>,
    last_sweep_ms: i64,
}

impl QuotaManager {
    pub fn new(windows: Windows) -> QuotaManager {
        QuotaManager {
            windows,
            enabled: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            limits: RwLock::new((Arc::default(), Arc::new(Default::default()))),
            sensors: Mutex::new(HashMap::new()),
            last_sweep_ms: AtomicI64::new(0),
            ip_limits: RwLock::new(Arc::default()),
            ip_enabled: AtomicBool::new(false),
            ip_rates: Mutex::new(IpRates::default()),
            origin: Instant::now(),
        }
    }

    pub fn windows(&self) -> Windows {
        self.windows
    }

    /// Milliseconds on the sensors' clock.
    pub fn now_ms(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Takes the image's quotas (nothing to do when it is the map already taken).
    pub fn update(&self, quotas: &Arc<ClientQuotas>) {
        let mut current = self.limits.write().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&current.0, quotas) {
            return;
        }
        let mut limits: [Limits; 4] = Default::default();
        let mut ip_limits = HashMap::new();
        for (entity, values) in quotas.iter() {
            if let [(t, name)] = entity.as_slice() {
                if t == IP {
                    if let Some(v) = values.get(CONNECTION_CREATION_RATE) {
                        // (Validated when stored: a name is an address.)
                        match name {
                            None => {
                                ip_limits.insert(None, v.0);
                            }
                            Some(n) => {
                                if let Ok(ip) = n.parse::<IpAddr>() {
                                    ip_limits.insert(Some(ip), v.0);
                                }
                            }
                        }
                    }
                    continue;
                }
            }
            let part = |t: &str| match entity.iter().find(|(et, _)| et == t) {
                None => Part::Absent,
                Some((_, None)) => Part::Default,
                Some((_, Some(n))) => Part::Name(n.clone()),
            };
            if entity.iter().any(|(t, _)| t != USER && t != CLIENT_ID) {
                continue; // ip quotas limit connections, not requests
            }
            let key = (part(USER), part(CLIENT_ID));
            for kind in KINDS {
                if let Some(v) = values.get(kind.key()) {
                    limits[kind as usize].insert(key.clone(), v.0);
                }
            }
        }
        let any = limits.iter().any(|l| !l.is_empty());
        let ip_any = !ip_limits.is_empty();
        *self.ip_limits.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ip_limits);
        self.ip_enabled.store(ip_any, Ordering::Release);
        if !ip_any {
            *self.ip_rates.lock().unwrap_or_else(|p| p.into_inner()) = IpRates::default();
        }
        *current = (quotas.clone(), Arc::new(limits));
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.enabled.store(any, Ordering::Release);
        if !any {
            // Nothing measures any more: the sensors' history goes (Kafka's expire after
            // an hour of inactivity; a quota set again starts afresh).
            self.sensors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        tracing::info!(
            entities = quotas.len(),
            enforced = any,
            "client quotas updated"
        );
    }

    /// The bounds that apply to a request of `user` (the principal's name) with
    /// `client_id`, or None when no quota is configured at all (one atomic load).
    pub fn bounds(
        &self,
        session: &mut SessionQuotas,
        user: &str,
        client_id: &str,
    ) -> Option<Bounds> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(c) = &session.cached {
            if c.generation == generation && c.user == user && c.client_id == client_id {
                return Some(c.bounds.clone());
            }
        }
        let limits = self
            .limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone();
        let mut bounds = Bounds::default();
        let now = self.now_ms();
        let mut sensors = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
        if now - self.last_sweep_ms.load(Ordering::Relaxed) >= SWEEP_EVERY_MS {
            self.last_sweep_ms.store(now, Ordering::Relaxed);
            expire(&mut sensors, now);
        }
        for kind in KINDS {
            if let Some((limit, ut, ct)) = resolve(&limits[kind as usize], user, client_id) {
                let sensor = sensors
                    .entry((kind, ut, ct))
                    .or_insert_with(|| {
                        Arc::new(Sensor {
                            stat: Mutex::new(match kind {
                                Kind::Mutation => Stat::Bucket(TokenBucket::default()),
                                _ => Stat::Rate(SampledRate::default()),
                            }),
                            last_used_ms: AtomicI64::new(now),
                        })
                    })
                    .clone();
                sensor.last_used_ms.store(now, Ordering::Relaxed);
                bounds.bounds[kind as usize] = Some(Bound { limit, sensor });
            }
        }
        drop(sensors);
        session.cached = Some(Cached {
            generation,
            user: user.to_string(),
            client_id: client_id.to_string(),
            bounds: bounds.clone(),
        });
        Some(bounds)
    }

    /// A connection accepted from `ip`, under the `connection_creation_rate` quota of its
    /// address (or the ip default): 0 when it may be served, else the throttle time (ms)
    /// after which the listener closes it (Kafka's `ConnectionQuotas`: a throttled
    /// connection does not count toward the rate). One atomic load without ip quotas.
    pub fn connection_throttle(&self, ip: IpAddr) -> i64 {
        if !self.ip_enabled.load(Ordering::Acquire) {
            return 0;
        }
        let limits = self
            .ip_limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(limit) = limits.get(&Some(ip)).or_else(|| limits.get(&None)).copied() else {
            return 0;
        };
        let now = self.now_ms();
        let mut ips = self.ip_rates.lock().unwrap_or_else(|p| p.into_inner());
        if now - ips.last_sweep_ms >= SWEEP_EVERY_MS {
            ips.last_sweep_ms = now;
            ips.rates
                .retain(|_, (_, last)| now - *last < SENSOR_EXPIRY_MS);
        }
        let (rate, last) = ips.rates.entry(ip).or_default();
        *last = now;
        if limit <= 0.0 {
            return self.windows.window_ms;
        }
        let throttle = rate.record_and_throttle(&self.windows, 1.0, now, limit);
        if throttle > 0 {
            rate.record(&self.windows, -1.0, now);
        }
        throttle
    }

    /// Records `value` on a rate sensor and answers the throttle time (ms) it earns.
    pub fn record(&self, bound: &Bound, value: f64) -> i64 {
        let now = self.now_ms();
        bound.sensor.last_used_ms.store(now, Ordering::Relaxed);
        match &mut *bound.sensor.stat() {
            Stat::Rate(r) => r.record_and_throttle(&self.windows, value, now, bound.limit),
            Stat::Bucket(b) => {
                b.record(&self.windows, bound.limit, value, now);
                b.throttle(&self.windows, bound.limit, now)
            }
        }
    }

    /// Takes back a recorded value (a throttled fetch answers without its records, Kafka's
    /// `unrecordQuotaSensor`).
    pub fn unrecord(&self, bound: &Bound, value: f64) {
        let now = self.now_ms();
        if let Stat::Rate(r) = &mut *bound.sensor.stat() {
            r.record(&self.windows, -value, now);
        }
    }

    /// The most bytes a fetch may return without being throttled whatever came before
    /// (Kafka's `maxValueInQuotaWindow`: limit × (samples - 1) × window).
    pub fn max_in_window(&self, bound: &Bound) -> f64 {
        bound.limit * (self.windows.samples as f64 - 1.0) * (self.windows.window_ms as f64 / 1000.0)
    }

    /// A strict controller mutation check (KIP-599, for the request versions that can
    /// answer THROTTLING_QUOTA_EXCEEDED): Err(throttle ms) when the bucket is already
    /// overdrawn, else the permits are taken (it may go below zero).
    pub fn take_mutations_strict(&self, bound: &Bound, permits: f64) -> Result<(), i64> {
        let now = self.now_ms();
        match &mut *bound.sensor.stat() {
            Stat::Bucket(b) => {
                let throttle = b.throttle(&self.windows, bound.limit, now);
                if throttle > 0 {
                    return Err(throttle);
                }
                b.record(&self.windows, bound.limit, permits, now);
                Ok(())
            }
            Stat::Rate(_) => Ok(()),
        }
    }

    /// The throttle a mutation sensor asks for now (ms).
    pub fn mutation_throttle(&self, bound: &Bound) -> i64 {
        let now = self.now_ms();
        match &mut *bound.sensor.stat() {
            Stat::Bucket(b) => b.throttle(&self.windows, bound.limit, now),
            Stat::Rate(_) => 0,
        }
    }
}

/// Drops the sensors no connection holds (the registry's is the only reference) that were
/// not used for [`SENSOR_EXPIRY_MS`].
fn expire(sensors: &mut HashMap<(Kind, String, String), Arc<Sensor>>, now: i64) {
    let before = sensors.len();
    sensors.retain(|_, s| {
        Arc::strong_count(s) > 1 || now - s.last_used_ms.load(Ordering::Relaxed) < SENSOR_EXPIRY_MS
    });
    if sensors.len() < before {
        tracing::debug!(
            expired = before - sensors.len(),
            left = sensors.len(),
            "quota sensors expired"
        );
    }
}

/// The user a principal's quotas are looked up by: its name (`User:alice` → `alice`).
pub fn quota_user(principal: &str) -> &str {
    principal.strip_prefix("User:").unwrap_or(principal)
}

/// Handler time in percent of one thread (Kafka's `nanosToPercentage`).
pub fn percentage(d: std::time::Duration) -> f64 {
    d.as_nanos() as f64 * 100.0 / 1e9
}

/// A future that adds up the time spent in its `poll`s (the handler's own time on the
/// workers, not its waits) and the blocking-pool time of the work it hands to
/// `threads::spawn_blocking`: Kafka's request handler thread time.
pub struct Timed<F> {
    inner: F,
    polled: std::time::Duration,
    blocking_ns: Arc<AtomicU64>,
}

impl<F> Timed<F> {
    pub fn new(inner: F) -> Timed<F> {
        Timed {
            inner,
            polled: std::time::Duration::ZERO,
            blocking_ns: Arc::default(),
        }
    }

    /// The time charged so far: polls plus blocking work.
    pub fn spent(&self) -> std::time::Duration {
        self.polled + std::time::Duration::from_nanos(self.blocking_ns.load(Ordering::Relaxed))
    }
}

impl<F: std::future::Future + Unpin> std::future::Future for Timed<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let start = Instant::now();
        let this = &mut *self;
        let out = crate::threads::charging_blocking_time(&this.blocking_ns, || {
            std::pin::Pin::new(&mut this.inner).poll(cx)
        });
        this.polled += start.elapsed();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::records::QuotaValue;

    type Entity<'a> = &'a [(&'a str, Option<&'a str>)];

    fn quotas(entries: &[(Entity<'_>, &str, f64)]) -> Arc<ClientQuotas> {
        let mut q = ClientQuotas::new();
        for (entity, key, value) in entries {
            let mut e: Vec<(String, Option<String>)> = entity
                .iter()
                .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
                .collect();
            e.sort();
            q.entry(e)
                .or_default()
                .insert(key.to_string(), QuotaValue(*value));
        }
        Arc::new(q)
    }

    fn limit(m: &QuotaManager, user: &str, client: &str, kind: Kind) -> Option<f64> {
        m.bounds(&mut SessionQuotas::default(), user, client)
            .and_then(|b| b.get(kind).map(|b| b.limit))
    }

    #[test]
    fn resolution_follows_kafkas_order() {
        let m = QuotaManager::new(Windows::new(11, 1));
        let levels: [(Entity<'_>, f64); 8] = [
            (&[("user", Some("u")), ("client-id", Some("c"))], 1.0),
            (&[("user", Some("u")), ("client-id", None)], 2.0),
            (&[("user", Some("u"))], 3.0),
            (&[("user", None), ("client-id", Some("c"))], 4.0),
            (&[("user", None), ("client-id", None)], 5.0),
            (&[("user", None)], 6.0),
            (&[("client-id", Some("c"))], 7.0),
            (&[("client-id", None)], 8.0),
        ];
        // Remove the most specific level one by one: the next one applies.
        for first in 0..levels.len() {
            let entries: Vec<(Entity<'_>, &str, f64)> = levels[first..]
                .iter()
                .map(|(e, v)| (*e, PRODUCER_BYTE_RATE, *v))
                .collect();
            m.update(&quotas(&entries));
            assert_eq!(limit(&m, "u", "c", Kind::Produce), Some(first as f64 + 1.0));
            assert_eq!(limit(&m, "u", "c", Kind::Fetch), None);
        }
        // Another user and client: only the defaults apply.
        assert_eq!(limit(&m, "v", "d", Kind::Produce), Some(8.0));
        m.update(&quotas(&[(
            &[("user", Some("u"))],
            CONSUMER_BYTE_RATE,
            9.0,
        )]));
        assert_eq!(limit(&m, "v", "d", Kind::Fetch), None);
        assert!(m.bounds(&mut SessionQuotas::default(), "v", "d").is_some());
        m.update(&quotas(&[]));
        assert!(m.bounds(&mut SessionQuotas::default(), "u", "c").is_none());
    }

    #[test]
    fn sensors_are_shared_by_the_entity_they_match() {
        let m = QuotaManager::new(Windows::new(11, 1));
        m.update(&quotas(&[
            (&[("user", Some("u"))], PRODUCER_BYTE_RATE, 1000.0),
            (&[("client-id", None)], PRODUCER_BYTE_RATE, 1000.0),
        ]));
        let mut s1 = SessionQuotas::default();
        let mut s2 = SessionQuotas::default();
        let a = m.bounds(&mut s1, "u", "one").unwrap();
        let b = m.bounds(&mut s2, "u", "two").unwrap();
        let pa = a.get(Kind::Produce).unwrap();
        let pb = b.get(Kind::Produce).unwrap();
        assert!(
            Arc::ptr_eq(&pa.sensor, &pb.sensor),
            "users/<user> is one sensor"
        );
        let c = m.bounds(&mut SessionQuotas::default(), "x", "one").unwrap();
        let d = m.bounds(&mut SessionQuotas::default(), "y", "two").unwrap();
        assert!(
            !Arc::ptr_eq(
                &c.get(Kind::Produce).unwrap().sensor,
                &d.get(Kind::Produce).unwrap().sensor
            ),
            "clients/<default> is one sensor per client id"
        );
        // 10 s worth at once is within; more is throttled.
        assert_eq!(m.record(pa, 10_000.0), 0);
        assert!(m.record(pb, 1000.0) > 0);
        // The cache follows a change of the quotas.
        m.update(&quotas(&[(
            &[("user", Some("u"))],
            PRODUCER_BYTE_RATE,
            5.0,
        )]));
        assert_eq!(
            m.bounds(&mut s1, "u", "one")
                .unwrap()
                .get(Kind::Produce)
                .unwrap()
                .limit,
            5.0
        );
    }

    #[test]
    fn unused_sensors_expire_after_an_hour() {
        let m = QuotaManager::new(Windows::new(11, 1));
        m.update(&quotas(&[(
            &[("client-id", None)],
            PRODUCER_BYTE_RATE,
            1000.0,
        )]));
        // A thousand client ids come and go; one connection stays.
        let start = m.now_ms();
        for i in 0..1000 {
            m.bounds(&mut SessionQuotas::default(), "u", &format!("client-{i}"));
        }
        let mut held = SessionQuotas::default();
        let kept = m.bounds(&mut held, "u", "stays").unwrap();
        let count = || m.sensors.lock().unwrap().len();
        assert_eq!(count(), 1001);
        let now = m.now_ms();
        expire(&mut m.sensors.lock().unwrap(), start + SENSOR_EXPIRY_MS - 1);
        assert_eq!(count(), 1001, "not an hour yet");
        expire(&mut m.sensors.lock().unwrap(), now + SENSOR_EXPIRY_MS);
        assert_eq!(count(), 1, "only the held one is left");
        // The held sensor is the one its connection records on.
        let again = m.bounds(&mut held, "u", "stays").unwrap();
        assert!(Arc::ptr_eq(
            &kept.get(Kind::Produce).unwrap().sensor,
            &again.get(Kind::Produce).unwrap().sensor
        ));
        drop((kept, again, held));
        // Dropped by its last connection and unused for an hour: gone too.
        expire(&mut m.sensors.lock().unwrap(), now + 2 * SENSOR_EXPIRY_MS);
        assert_eq!(count(), 0);
    }

    #[tokio::test]
    async fn blocking_work_is_charged_to_the_request_that_spawned_it() {
        let work = || {
            crate::threads::spawn_blocking(|| {
                std::thread::sleep(std::time::Duration::from_millis(30))
            })
        };
        let mut timed = Timed::new(Box::pin(async move {
            work().await.unwrap();
            work().await.unwrap();
        }));
        (&mut timed).await;
        assert!(
            timed.spent() >= std::time::Duration::from_millis(60),
            "{:?}",
            timed.spent()
        );
        // Outside a timed request nothing is charged, and nothing breaks.
        let untimed = Timed::new(Box::pin(async {}));
        work().await.unwrap();
        assert_eq!(untimed.blocking_ns.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn connection_creation_rate_per_address_and_default() {
        let m = QuotaManager::new(Windows::new(11, 1));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(m.connection_throttle(a), 0, "no quota");
        m.update(&quotas(&[
            (&[("ip", Some("10.0.0.1"))], CONNECTION_CREATION_RATE, 2.0),
            (&[("ip", None)], CONNECTION_CREATION_RATE, 100.0),
        ]));
        // 2/s measured over at least 10 windows of 1 s (Kafka's `Rate`): 20 at once pass,
        // the 21st is throttled for (2.1 - 2) / 2 × 10 s.
        for i in 0..20 {
            assert_eq!(m.connection_throttle(a), 0, "connection {i}");
        }
        let t = m.connection_throttle(a);
        assert_eq!(t, 500, "the 21st is throttled");
        // A throttled connection does not count: the next one gets the same answer.
        assert_eq!(m.connection_throttle(a), t);
        // Another address has the default.
        for _ in 0..50 {
            assert_eq!(m.connection_throttle(b), 0);
        }
        // User quotas do not limit connections; ip quotas do not limit requests.
        assert!(m.bounds(&mut SessionQuotas::default(), "u", "c").is_none());
        m.update(&quotas(&[(
            &[("user", Some("u"))],
            PRODUCER_BYTE_RATE,
            1.0,
        )]));
        assert_eq!(m.connection_throttle(a), 0);
    }

    #[test]
    fn the_request_quota_is_in_percent_of_a_thread() {
        assert_eq!(percentage(std::time::Duration::from_millis(10)), 1.0);
    }
}
