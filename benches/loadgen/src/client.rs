//! The rdkafka side: client configs, topic setup, producer and consumer workers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

/// Bytes at the start of each value when records are stamped: send time (u64 ns since the
/// Unix epoch, CLOCK_REALTIME), producer index (u32), sequence number within the producer
/// (u32), all little-endian.
pub const HEADER: usize = 16;

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A growable bit set of sequence numbers.
#[derive(Default, Clone)]
pub struct SeqSet {
    bits: Vec<u64>,
}

impl SeqSet {
    /// Returns false if `seq` was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if w >= self.bits.len() {
            self.bits.resize((w + 1).max(self.bits.len() * 2), 0);
        }
        let had = self.bits[w] & (1 << b) != 0;
        self.bits[w] |= 1 << b;
        !had
    }

    /// Adds `other`; returns how many of its members were already here.
    pub fn merge(&mut self, other: &SeqSet) -> u64 {
        if other.bits.len() > self.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        let mut dup = 0;
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            dup += (*a & *b).count_ones() as u64;
            *a |= *b;
        }
        dup
    }

    /// Members of `self` that are not in `other`.
    pub fn count_missing_from(&self, other: &SeqSet) -> u64 {
        self.bits
            .iter()
            .enumerate()
            .map(|(i, a)| (a & !other.bits.get(i).copied().unwrap_or(0)).count_ones() as u64)
            .sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Acks {
    #[value(name = "0")]
    Zero,
    #[value(name = "1")]
    One,
    #[value(name = "all", alias = "-1")]
    All,
}

impl Acks {
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::Zero => "0",
            Acks::One => "1",
            Acks::All => "all",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Payload {
    /// Pseudo-random words: compresses roughly like log lines.
    Text,
    /// Pseudo-random bytes: does not compress.
    Random,
    /// All zero bytes: compresses to almost nothing.
    Zeros,
}

/// A pool of payload bytes that records are sliced from (at a moving offset, so records
/// differ).
fn payload_pool(kind: Payload, len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    match kind {
        Payload::Zeros => vec![0; len],
        Payload::Random => (0..len).map(|_| next() as u8).collect(),
        Payload::Text => {
            const WORDS: &[&str] = &[
                "broker",
                "partition",
                "offset",
                "record",
                "batch",
                "leader",
                "fetch",
                "produce",
                "topic",
                "commit",
                "segment",
                "index",
                "replica",
                "consumer",
                "group",
                "epoch",
                "the",
                "a",
                "of",
                "to",
                "and",
                "in",
                "is",
                "ok",
                "error",
                "latency",
                "ms",
                "user=42",
                "status=200",
                "GET",
                "/api/v1/items",
                "id",
            ];
            let mut v = Vec::with_capacity(len + 32);
            while v.len() < len {
                let w = WORDS[(next() % WORDS.len() as u64) as usize];
                v.extend_from_slice(w.as_bytes());
                v.push(b' ');
            }
            v.truncate(len);
            v
        }
    }
}

/// Forwards librdkafka's warnings and errors to stderr (there is no logger installed).
pub struct LogCtx;

fn log_line(level: RDKafkaLogLevel, fac: &str, msg: &str) {
    if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
        eprintln!("librdkafka {level:?} {fac}: {msg}");
    }
}

fn error_line(error: KafkaError, reason: &str) {
    // Reaching the end of a partition is expected (enable.partition.eof), not an error.
    if !matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
        eprintln!("librdkafka error: {error}: {reason}");
    }
}

impl ClientContext for LogCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log_line(level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        error_line(error, reason);
    }
}

impl ConsumerContext for LogCtx {}

/// Counts delivery reports; the delivery opaque is the record's sequence number.
pub struct ProdCtx {
    acked: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    acked_set: Option<Mutex<SeqSet>>,
}

impl ClientContext for ProdCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log_line(level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        error_line(error, reason);
    }
}

impl ProducerContext for ProdCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                if let Some(set) = &self.acked_set {
                    set.lock().unwrap().insert(seq as u64);
                }
            }
            Err((e, _)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap();
                if first.is_none() {
                    *first = Some(e.to_string());
                }
            }
        }
    }
}

fn parse_props(props: &[String]) -> Result<Vec<(String, String)>> {
    props
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| anyhow!("expected KEY=VALUE, got {p:?}"))
        })
        .collect()
}

/// Everything a producer worker needs.
#[derive(Clone)]
pub struct ProduceSpec {
    pub bootstrap: String,
    pub topic: String,
    pub record_size: usize,
    pub acks: Acks,
    pub compression: Compression,
    pub linger_ms: Option<u64>,
    pub batch_size: Option<u64>,
    pub props: Vec<String>,
    pub payload: Payload,
    /// Record count per producer (None: until `duration`).
    pub counts: Vec<Option<u64>>,
    pub duration: Option<Duration>,
    /// Messages per second, per producer.
    pub rate: Option<f64>,
    /// Write the send time into the header (the producer and sequence are written whenever
    /// the value has room for the 16-byte header).
    pub stamp_time: bool,
    /// Keep the set of acknowledged sequence numbers (for the missing-record check).
    pub track: bool,
}

pub struct ProducerResult {
    pub id: u32,
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub acked_set: Option<SeqSet>,
    pub finished: Instant,
}

impl ProduceSpec {
    fn config(&self, id: u32) -> Result<ClientConfig> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", format!("ottla-load-p{id}"))
            .set("acks", self.acks.as_str())
            .set("compression.type", self.compression.as_str());
        if let Some(l) = self.linger_ms {
            c.set("linger.ms", l.to_string());
        }
        if let Some(b) = self.batch_size {
            c.set("batch.size", b.to_string());
        }
        common_props(&mut c);
        for (k, v) in parse_props(&self.props)? {
            c.set(k, v);
        }
        Ok(c)
    }

    /// One producer thread: builds its client and waits for the topic's metadata, meets the
    /// others at `go` (always, even after a setup error, so nobody waits forever), then
    /// sends and waits for every delivery report.
    pub fn run_worker(&self, id: u32, go: &Barrier) -> Result<ProducerResult> {
        let setup = (|| -> Result<BaseProducer<ProdCtx>> {
            let ctx = ProdCtx {
                acked: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                first_error: Mutex::new(None),
                acked_set: self.track.then(|| Mutex::new(SeqSet::default())),
            };
            let p: BaseProducer<ProdCtx> = self
                .config(id)?
                .create_with_context(ctx)
                .context("creating producer")?;
            p.client()
                .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
                .context("producer metadata")?;
            Ok(p)
        })();
        go.wait();
        let producer = setup?;
        let size = self.record_size;
        let pool = payload_pool(self.payload, 65536 + size, id as u64 + 1);
        let mut buf = vec![0u8; size];
        let count = self.counts[id as usize];
        let start = Instant::now();
        let deadline = self.duration.map(|d| start + d);
        let interval = self.rate.map(|r| 1.0 / r);
        let header = size >= HEADER;
        let (mut seq, mut sent, mut send_errors) = (0u64, 0u64, 0u64);
        let mut first_send_error: Option<String> = None;
        loop {
            if count.is_some_and(|c| seq >= c) {
                break;
            }
            if let Some(d) = deadline {
                if (interval.is_some() || seq % 64 == 0) && Instant::now() >= d {
                    break;
                }
            }
            if let Some(iv) = interval {
                let due = start + Duration::from_secs_f64(seq as f64 * iv);
                let now = Instant::now();
                if due > now {
                    producer.poll(Duration::ZERO);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    continue;
                }
            }
            let off = (seq as usize).wrapping_mul(61) % (pool.len() - size + 1);
            buf.copy_from_slice(&pool[off..off + size]);
            if header {
                buf[8..12].copy_from_slice(&id.to_le_bytes());
                buf[12..16].copy_from_slice(&(seq as u32).to_le_bytes());
                if self.stamp_time {
                    buf[0..8].copy_from_slice(&now_ns().to_le_bytes());
                }
            }
            let mut rec = BaseRecord::<(), [u8], usize>::with_opaque_to(&self.topic, seq as usize)
                .payload(&buf[..]);
            loop {
                match producer.send(rec) {
                    Ok(()) => {
                        sent += 1;
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        rec = r;
                        producer.poll(Duration::from_millis(1));
                    }
                    Err((e, _)) => {
                        send_errors += 1;
                        first_send_error.get_or_insert_with(|| e.to_string());
                        break;
                    }
                }
            }
            seq += 1;
            if seq % 256 == 0 {
                producer.poll(Duration::ZERO);
            }
        }
        // rd_kafka_flush with no wait sends what lingers now; then serve the reports as they
        // come (a 1 ms poll, not flush()'s 100 ms one, so the end time is sharp).
        let _ = producer.flush(Duration::ZERO);
        let drain_deadline = Instant::now() + Duration::from_secs(120);
        while producer.in_flight_count() > 0 && Instant::now() < drain_deadline {
            producer.poll(Duration::from_millis(1));
        }
        let finished = Instant::now();
        let left = producer.in_flight_count().max(0) as u64;
        let ctx = producer.context();
        let first_error = first_send_error.or_else(|| ctx.first_error.lock().unwrap().clone());
        Ok(ProducerResult {
            id,
            sent,
            acked: ctx.acked.load(Ordering::Relaxed),
            errors: ctx.errors.load(Ordering::Relaxed) + send_errors + left,
            first_error: if left > 0 {
                Some(format!("{left} records still in flight after 120 s"))
            } else {
                first_error
            },
            acked_set: ctx.acked_set.as_ref().map(|s| s.lock().unwrap().clone()),
            finished,
        })
    }
}

/// librdkafka properties every client of the run gets (`--client-prop`: security settings),
/// set once at start.
pub static CLIENT_PROPS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// Parses and records the `--client-prop` settings.
pub fn set_client_props(props: &[String]) -> Result<()> {
    let parsed = parse_props(props)?;
    let _ = CLIENT_PROPS.set(parsed);
    Ok(())
}

fn common_props(c: &mut ClientConfig) {
    for (k, v) in CLIENT_PROPS.get().into_iter().flatten() {
        c.set(k, v);
    }
}

pub fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    common_props(&mut c);
    c.create().context("creating admin client")
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?
        .block_on(f))
}

/// Creates `topic` with `partitions` partitions (the broker's default replication factor); if it exists, deletes and
/// creates it again. Then waits until its metadata shows every partition with a leader.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin = admin(bootstrap)?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    // -1: the broker's `default_replication_factor` (1 on a single node; what a cluster is
    // started with otherwise, as benches/replication.py does).
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let t0 = Instant::now();
    loop {
        let res = block_on(admin.create_topics([&new], &opts))??;
        match res.into_iter().next() {
            Some(Ok(_)) => break,
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
                if t0.elapsed() > Duration::from_secs(30) {
                    bail!("topic {topic} still exists 30 s after deleting it");
                }
                eprintln!("topic {topic} exists: deleting it");
                block_on(admin.delete_topics(&[topic], &opts))??;
                std::thread::sleep(Duration::from_millis(200));
            }
            Some(Err((_, e))) => bail!("creating topic {topic}: {e}"),
            None => bail!("creating topic {topic}: empty response"),
        }
    }
    wait_for_topic(&admin, topic, Some(partitions))?;
    Ok(())
}

/// Waits until the metadata of `topic` has (the given number of) partitions, all with a
/// leader; returns the partition count.
pub fn wait_for_topic(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: Option<i32>,
) -> Result<i32> {
    let t0 = Instant::now();
    loop {
        let md = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(5));
        if let Ok(md) = &md {
            if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
                let n = t.partitions().len() as i32;
                if t.error().is_none()
                    && n > 0
                    && partitions.is_none_or(|p| p == n)
                    && t.partitions()
                        .iter()
                        .all(|p| p.leader() >= 0 && p.error().is_none())
                {
                    return Ok(n);
                }
            }
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("topic {topic} has no usable metadata after 30 s (last: {md:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (low, high) watermarks of each partition 0..n.
pub fn watermarks(bootstrap: &str, topic: &str) -> Result<Vec<(i64, i64)>> {
    let admin = admin(bootstrap)?;
    let n = wait_for_topic(&admin, topic, None)?;
    (0..n)
        .map(|p| {
            admin
                .inner()
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .with_context(|| format!("watermarks of {topic}/{p}"))
        })
        .collect()
}

#[derive(Clone)]
pub struct ConsumeSpec {
    pub bootstrap: String,
    pub topic: String,
    pub group: String,
    pub props: Vec<String>,
    /// Fetch settings for bulk reads (consume); librdkafka defaults otherwise (e2e).
    pub throughput: bool,
    /// Values carry the 16-byte header: collect (producer, sequence) sets.
    pub track: bool,
    /// Give up after this long without a record.
    pub idle_timeout: Duration,
}

#[derive(Default)]
pub struct ConsumerResult {
    pub records: u64,
    pub bytes: u64,
    pub errors: u64,
    /// Records seen twice (same offset, or same producer and sequence).
    pub duplicates: u64,
    /// Offsets skipped between two records read (compaction or transaction markers can
    /// explain them in a topic we did not write).
    pub gaps: u64,
    /// Offsets below the high watermark never reached (the consumer gave up).
    pub short: u64,
    /// Per producer index: the sequence numbers received.
    pub seen: HashMap<u32, SeqSet>,
    pub latency_us: Option<Histogram<u64>>,
    pub last_record: Option<Instant>,
}

/// Shared state of an end-to-end run.
#[derive(Default)]
pub struct E2eShared {
    pub producers_done: AtomicBool,
    pub acked: AtomicU64,
    pub received: AtomicU64,
    pub abort: AtomicBool,
}

impl ConsumeSpec {
    fn create(&self, id: usize) -> Result<BaseConsumer<LogCtx>> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", format!("ottla-load-c{id}"))
            // librdkafka's assign() needs a group id; nothing joins or commits.
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true");
        if self.throughput {
            c.set("fetch.wait.max.ms", "100")
                .set("fetch.max.bytes", "67108864")
                .set("max.partition.fetch.bytes", "8388608")
                .set("queued.min.messages", "1000000")
                .set("queued.max.messages.kbytes", "1048576");
        }
        common_props(&mut c);
        for (k, v) in parse_props(&self.props)? {
            c.set(k, v);
        }
        let consumer: BaseConsumer<LogCtx> =
            c.create_with_context(LogCtx).context("creating consumer")?;
        consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .context("consumer metadata")?;
        Ok(consumer)
    }

    fn assign(&self, consumer: &BaseConsumer<LogCtx>, parts: &[(i32, i64, i64)]) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for &(p, low, _) in parts {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(low))?;
        }
        consumer.assign(&tpl).context("assign")?;
        Ok(())
    }

    /// Reads `parts` (partition, low, high) from low up to high; timing starts at `go`.
    pub fn run_bulk(
        &self,
        id: usize,
        parts: &[(i32, i64, i64)],
        go: &Barrier,
    ) -> Result<ConsumerResult> {
        let setup = self.create(id);
        go.wait();
        let consumer = setup?;
        self.assign(&consumer, parts)?;
        let maxp = parts.iter().map(|p| p.0).max().unwrap_or(0) as usize;
        // Per partition: next expected offset and target (high).
        let mut next: Vec<i64> = vec![i64::MAX; maxp + 1];
        let mut high: Vec<i64> = vec![0; maxp + 1];
        let mut pending = 0usize;
        for &(p, low, h) in parts {
            next[p as usize] = low;
            high[p as usize] = h;
            if h > low {
                pending += 1;
            }
        }
        let mut r = ConsumerResult::default();
        // Clock reads only when finishing or idle: they are not free in a VM.
        let mut idle_since: Option<Instant> = None;
        let mut finished = (pending == 0).then(Instant::now);
        while pending > 0 {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let p = m.partition() as usize;
                    let off = m.offset();
                    let v = m.payload().unwrap_or(&[]);
                    r.records += 1;
                    r.bytes += v.len() as u64;
                    if p >= next.len() || off < next[p] {
                        r.duplicates += 1;
                    } else {
                        if off > next[p] {
                            // A gap: offsets a compacted or transactional log may skip.
                            r.gaps += (off - next[p]) as u64;
                        }
                        let was_pending = next[p] < high[p];
                        next[p] = off + 1;
                        if was_pending && next[p] >= high[p] {
                            pending -= 1;
                            if pending == 0 {
                                finished = Some(Instant::now());
                            }
                        }
                    }
                    if self.track && v.len() >= HEADER {
                        let pid = u32::from_le_bytes(v[8..12].try_into().unwrap());
                        let seq = u32::from_le_bytes(v[12..16].try_into().unwrap());
                        r.seen.entry(pid).or_default().insert(seq as u64);
                    }
                    idle_since = None;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    r.errors += 1;
                    eprintln!("consumer {id}: {e}");
                }
                None => {
                    let now = Instant::now();
                    if now - *idle_since.get_or_insert(now) > self.idle_timeout {
                        eprintln!(
                            "consumer {id}: no record for {:?}, giving up with {pending} partition(s) unfinished",
                            self.idle_timeout
                        );
                        break;
                    }
                }
            }
        }
        r.last_record = finished.or(idle_since).or_else(|| Some(Instant::now()));
        for &(p, _, h) in parts {
            r.short += (h - next[p as usize].min(h)).max(0) as u64;
        }
        Ok(r)
    }

    /// End-to-end consumer: assigns `parts` from offset 0 of the fresh topic, waits until
    /// each partition reports EOF (fetching is under way), meets the main thread at `ready`,
    /// then records now - send time of each record until every acknowledged record is in
    /// (or nothing came for the idle timeout after the producers finished).
    pub fn run_e2e(
        &self,
        id: usize,
        parts: &[i32],
        ready: &Barrier,
        shared: &E2eShared,
    ) -> Result<ConsumerResult> {
        let setup = (|| -> Result<BaseConsumer<LogCtx>> {
            let c = self.create(id)?;
            let tp: Vec<(i32, i64, i64)> = parts.iter().map(|&p| (p, 0, 0)).collect();
            self.assign(&c, &tp)?;
            let mut eof = vec![false; parts.iter().copied().max().unwrap_or(0) as usize + 1];
            let t0 = Instant::now();
            while parts.iter().any(|&p| !eof[p as usize]) {
                if t0.elapsed() > Duration::from_secs(15) {
                    bail!("consumer {id}: no partition EOF within 15 s of assign");
                }
                match c.poll(Duration::from_millis(50)) {
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        if let Some(e) = eof.get_mut(p as usize) {
                            *e = true;
                        }
                    }
                    Some(Ok(_)) => bail!("consumer {id}: a record in a fresh topic"),
                    Some(Err(e)) => eprintln!("consumer {id}: {e}"),
                    None => {}
                }
            }
            Ok(c)
        })();
        if setup.is_err() {
            shared.abort.store(true, Ordering::SeqCst);
        }
        ready.wait();
        let consumer = setup?;
        let mut r = ConsumerResult {
            latency_us: Some(Histogram::new_with_bounds(1, 3_600_000_000, 3)?),
            ..Default::default()
        };
        let hist = r.latency_us.as_mut().unwrap();
        let mut idle_since: Option<Instant> = None;
        loop {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let now = now_ns();
                    let v = m.payload().unwrap_or(&[]);
                    r.records += 1;
                    r.bytes += v.len() as u64;
                    if v.len() >= HEADER {
                        let sent = u64::from_le_bytes(v[0..8].try_into().unwrap());
                        let pid = u32::from_le_bytes(v[8..12].try_into().unwrap());
                        let seq = u32::from_le_bytes(v[12..16].try_into().unwrap());
                        if r.seen.entry(pid).or_default().insert(seq as u64) {
                            hist.saturating_record(now.saturating_sub(sent) / 1000);
                            shared.received.fetch_add(1, Ordering::Relaxed);
                        } else {
                            r.duplicates += 1;
                        }
                    }
                    idle_since = None;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    r.errors += 1;
                    eprintln!("consumer {id}: {e}");
                }
                None => {
                    idle_since.get_or_insert_with(Instant::now);
                }
            }
            if shared.producers_done.load(Ordering::Acquire) {
                if shared.received.load(Ordering::Relaxed) >= shared.acked.load(Ordering::Relaxed) {
                    break;
                }
                if idle_since.is_some_and(|t| t.elapsed() > self.idle_timeout) {
                    eprintln!(
                        "consumer {id}: nothing for {:?} after the producers finished: stopping",
                        self.idle_timeout
                    );
                    break;
                }
            }
            if shared.abort.load(Ordering::Relaxed) {
                break;
            }
        }
        r.last_record = Some(Instant::now());
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqset_insert_merge_missing() {
        let mut a = SeqSet::default();
        assert!(a.insert(0));
        assert!(a.insert(1000));
        assert!(!a.insert(1000));
        let mut b = SeqSet::default();
        b.insert(1000);
        b.insert(5);
        // a = {0, 1000}, b = {5, 1000}: 0 is missing from b, 5 from a.
        assert_eq!(a.count_missing_from(&b), 1);
        assert_eq!(b.count_missing_from(&a), 1);
        assert_eq!(a.count_missing_from(&SeqSet::default()), 2);
        let dup = a.merge(&b);
        assert_eq!(dup, 1);
        assert_eq!(b.count_missing_from(&a), 0);
        assert_eq!(a.count_missing_from(&b), 1);
    }

    #[test]
    fn payload_pools() {
        for kind in [Payload::Text, Payload::Random, Payload::Zeros] {
            assert_eq!(payload_pool(kind, 1000, 1).len(), 1000);
        }
        assert_ne!(
            payload_pool(Payload::Random, 64, 1),
            payload_pool(Payload::Random, 64, 2)
        );
    }
}
