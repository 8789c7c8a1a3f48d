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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::meta::client_quotas::{
    CLIENT_ID, CONSUMER_BYTE_RATE, CONTROLLER_MUTATION_RATE, PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE, USER,
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
}

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
    origin: Instant,
}

impl QuotaManager {
    pub fn new(windows: Windows) -> QuotaManager {
        QuotaManager {
            windows,
            enabled: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            limits: RwLock::new((Arc::default(), Arc::new(Default::default()))),
            sensors: Mutex::new(HashMap::new()),
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
        for (entity, values) in quotas.iter() {
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
        let mut sensors = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
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
                        })
                    })
                    .clone();
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

    /// Records `value` on a rate sensor and answers the throttle time (ms) it earns.
    pub fn record(&self, bound: &Bound, value: f64) -> i64 {
        let now = self.now_ms();
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

/// The user a principal's quotas are looked up by: its name (`User:alice` → `alice`).
pub fn quota_user(principal: &str) -> &str {
    principal.strip_prefix("User:").unwrap_or(principal)
}

/// Handler time in percent of one thread (Kafka's `nanosToPercentage`).
pub fn percentage(d: std::time::Duration) -> f64 {
    d.as_nanos() as f64 * 100.0 / 1e9
}

/// A future that adds up the time spent in its `poll`s: the handler's own time on the
/// workers, not its waits (Kafka's request handler thread time).
pub struct Timed<F> {
    inner: F,
    pub spent: std::time::Duration,
}

impl<F> Timed<F> {
    pub fn new(inner: F) -> Timed<F> {
        Timed {
            inner,
            spent: std::time::Duration::ZERO,
        }
    }
}

impl<F: std::future::Future + Unpin> std::future::Future for Timed<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let start = Instant::now();
        let out = std::pin::Pin::new(&mut self.inner).poll(cx);
        self.spent += start.elapsed();
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
    fn the_request_quota_is_in_percent_of_a_thread() {
        assert_eq!(percentage(std::time::Duration::from_millis(10)), 1.0);
    }
}
