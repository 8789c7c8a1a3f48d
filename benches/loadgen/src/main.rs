//! ottla-load: a load generator for ottla (or any Kafka broker) on librdkafka, through the
//! rdkafka crate. See benches/README.md.

mod broker;
mod client;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use clap::{Args, Parser, Subcommand};

use broker::Broker;
use client::{
    Acks, Compression, ConsumeSpec, ConsumerResult, E2eShared, Payload, ProduceSpec,
    ProducerResult, SeqSet, HEADER,
};
use report::{Latency, Report};

#[derive(Parser)]
#[command(
    name = "ottla-load",
    version,
    about = "Load generator for ottla on librdkafka"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Producer throughput: send records as fast as the client allows (or at --rate), count
    /// the acknowledged ones.
    Produce(RunArgs),
    /// Consumer throughput: read a topic from the beginning (after --prefill, or an existing
    /// --topic up to its end) with assign() of every partition, no group membership.
    Consume(RunArgs),
    /// End-to-end latency: a consumer reads what producers send at a fixed rate; latency is
    /// receive time minus the send time carried in each record.
    E2e(RunArgs),
    /// Print a markdown table of `--json` lines read from FILES (or stdin).
    Table { files: Vec<PathBuf> },
}

#[derive(Args, Clone)]
struct RunArgs {
    /// A running broker to use (default with --broker-port: 127.0.0.1:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// Start this broker command line (run as `sh -c "exec CMD"`) and stop it (SIGTERM) at
    /// the end; needs --broker-port.
    #[arg(
        long,
        value_name = "CMD",
        requires = "broker_port",
        conflicts_with = "broker_pid"
    )]
    broker_cmd: Option<String>,
    /// The port the started broker listens on (on 127.0.0.1): ready once it accepts a TCP
    /// connection.
    #[arg(long, value_name = "PORT")]
    broker_port: Option<u16>,
    /// Measure the CPU time and peak RSS of this already running broker process.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// Where the started broker's stdout and stderr go (default: a temp file, removed after
    /// a clean run).
    #[arg(long, value_name = "FILE")]
    broker_log: Option<PathBuf>,
    /// Seconds to wait for the started broker to accept connections.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    startup_timeout: f64,

    /// Topic (default: a new unique name per run). Produce, e2e and consume --prefill
    /// delete and recreate it if it exists; consume without --prefill reads it as it is.
    #[arg(long)]
    topic: Option<String>,
    /// Value size in bytes (no key). e2e needs at least 16 (send time, producer, sequence).
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    record_size: usize,
    /// Records to send (produce, e2e) or to prefill (consume); default 1000000, or no
    /// limit with --duration.
    #[arg(long, value_name = "N")]
    records: Option<u64>,
    /// Send for this many seconds (produce, e2e; with --records, whichever ends first).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    #[arg(long, value_enum, default_value = "1")]
    acks: Acks,
    #[arg(long, value_enum, default_value = "none")]
    compression: Compression,
    /// Partitions of the created topic.
    #[arg(long, default_value_t = 1, value_name = "N")]
    partitions: i32,
    /// Producer threads, each with its own client.
    #[arg(long, default_value_t = 1, value_name = "N")]
    producers: usize,
    /// Consumer threads, each with its own client and a share of the partitions.
    #[arg(long, default_value_t = 1, value_name = "N")]
    consumers: usize,
    /// Producer linger.ms (default: librdkafka's, 5).
    #[arg(long, value_name = "MS")]
    linger_ms: Option<u64>,
    /// Producer batch.size in bytes (default: librdkafka's, 1000000).
    #[arg(long, value_name = "BYTES")]
    batch_size: Option<u64>,
    /// Target rate in records per second, over all producers.
    #[arg(long, value_name = "MSGS_PER_S", conflicts_with = "rate_mb")]
    rate: Option<f64>,
    /// Target rate in MB (1e6 bytes) of payload per second, over all producers.
    #[arg(long, value_name = "MB_PER_S")]
    rate_mb: Option<f64>,
    /// consume: first create the topic and produce --records records into it (not measured).
    #[arg(long)]
    prefill: bool,
    /// Value contents.
    #[arg(long, value_enum, default_value = "text")]
    payload: Payload,
    /// Extra librdkafka property of every client, admin included (repeatable): e.g.
    /// `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`, `ssl.ca.location=...`.
    #[arg(long = "client-prop", value_name = "KEY=VALUE")]
    client_props: Vec<String>,
    /// Extra librdkafka producer property (repeatable).
    #[arg(long = "producer-prop", value_name = "KEY=VALUE")]
    producer_props: Vec<String>,
    /// Extra librdkafka consumer property (repeatable).
    #[arg(long = "consumer-prop", value_name = "KEY=VALUE")]
    consumer_props: Vec<String>,
    /// Consumers give up after this many seconds without a record.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    idle_timeout: f64,
    /// Print one JSON object per run on stdout (the summary line goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Produce,
    Consume,
    E2e,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Table { files } => report::print_table(&files).map(|_| ExitCode::SUCCESS),
        Cmd::Produce(a) => run(Mode::Produce, a),
        Cmd::Consume(a) => run(Mode::Consume, a),
        Cmd::E2e(a) => run(Mode::E2e, a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ottla-load: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn cpu_now(broker: Option<&Broker>) -> Option<f64> {
    broker.and_then(|b| b.cpu_seconds().ok())
}

fn cpu_delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

fn join<T>(h: thread::ScopedJoinHandle<'_, Result<T>>, what: &str) -> Result<T> {
    h.join().map_err(|_| anyhow!("{what} thread panicked"))?
}

fn run(mode: Mode, a: RunArgs) -> Result<ExitCode> {
    if a.record_size == 0 {
        bail!("--record-size must be at least 1");
    }
    if mode == Mode::E2e && a.record_size < HEADER {
        bail!("e2e needs --record-size of at least {HEADER} (send time, producer, sequence)");
    }
    if a.partitions < 1 || a.producers < 1 || a.consumers < 1 {
        bail!("--partitions, --producers and --consumers must be at least 1");
    }
    client::set_client_props(&a.client_props)?;
    if mode == Mode::Consume && !a.prefill && a.topic.is_none() {
        bail!("consume needs --prefill or an existing --topic");
    }
    let bootstrap = match (&a.bootstrap, a.broker_port) {
        (Some(b), _) => b.clone(),
        (None, Some(p)) => format!("127.0.0.1:{p}"),
        (None, None) => bail!("give --bootstrap HOST:PORT or --broker-cmd CMD --broker-port PORT"),
    };
    let mut broker = match (&a.broker_cmd, a.broker_pid) {
        (Some(cmd), _) => {
            let b = Broker::spawn(
                cmd,
                a.broker_port.unwrap(),
                a.broker_log.clone(),
                Duration::from_secs_f64(a.startup_timeout),
            )?;
            eprintln!("broker ready in {:.1} ms", b.startup_ms.unwrap_or(0.0));
            Some(b)
        }
        (None, Some(pid)) => Some(Broker::attach(pid)?),
        (None, None) => None,
    };
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let topic = a.topic.clone().unwrap_or_else(|| {
        format!(
            "ottla-load-{}-{}-{unix_ms}",
            mode.name(),
            std::process::id()
        )
    });
    let mut rep = Report {
        workload: mode.name(),
        topic: topic.clone(),
        record_size: a.record_size,
        acks: a.acks.as_str(),
        compression: a.compression.as_str(),
        partitions: a.partitions,
        startup_ms: broker.as_ref().and_then(|b| b.startup_ms),
        ..Default::default()
    };
    let res = match mode {
        Mode::Produce => run_produce(&a, &bootstrap, &topic, broker.as_ref(), &mut rep),
        Mode::Consume => run_consume(&a, &bootstrap, &topic, broker.as_ref(), &mut rep),
        Mode::E2e => run_e2e(&a, &bootstrap, &topic, broker.as_ref(), &mut rep),
    };
    if let Err(e) = res {
        if let Some(b) = &broker {
            eprintln!("run failed{}", b.log_hint());
        }
        return Err(e);
    }
    if let Some(b) = broker.as_mut() {
        rep.broker_peak_rss_mb = b.peak_rss_mb().ok();
        b.stop()?;
    }
    if a.json {
        eprintln!("{}", rep.summary());
        println!("{}", rep.to_json());
    } else {
        println!("{}", rep.summary());
    }
    if rep.missing.unwrap_or(0) > 0 {
        eprintln!(
            "FAIL: {} acknowledged record(s) missing",
            rep.missing.unwrap()
        );
        return Ok(ExitCode::from(2));
    }
    if rep.errors > 0 {
        eprintln!("FAIL: {} error(s)", rep.errors);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `track`: keep the acknowledged sequence numbers; `e2e`: stamp the send time.
fn produce_spec(a: &RunArgs, bootstrap: &str, topic: &str, track: bool, e2e: bool) -> ProduceSpec {
    let n = a.producers as u64;
    let total = match (a.records, a.duration) {
        (Some(r), _) => Some(r),
        (None, Some(_)) => None,
        (None, None) => Some(1_000_000),
    };
    let counts = (0..n)
        .map(|i| total.map(|t| t / n + u64::from(i < t % n)))
        .collect();
    let total_rate = a
        .rate
        .or(a.rate_mb.map(|mb| mb * 1e6 / a.record_size as f64));
    ProduceSpec {
        bootstrap: bootstrap.to_string(),
        topic: topic.to_string(),
        record_size: a.record_size,
        acks: a.acks,
        compression: a.compression,
        linger_ms: a.linger_ms,
        batch_size: a.batch_size,
        props: a.producer_props.clone(),
        payload: a.payload,
        counts,
        duration: a.duration.map(Duration::from_secs_f64),
        rate: total_rate.map(|r| r / n as f64),
        stamp_time: e2e,
        track,
    }
}

struct ProducePhase {
    results: Vec<ProducerResult>,
    secs: f64,
    cpu: Option<f64>,
}

impl ProducePhase {
    fn acked(&self) -> u64 {
        self.results.iter().map(|r| r.acked).sum()
    }
    fn errors(&self) -> u64 {
        self.results.iter().map(|r| r.errors).sum()
    }
    fn report_errors(&self) {
        for r in &self.results {
            if let Some(e) = &r.first_error {
                eprintln!(
                    "producer {}: {} error(s) in {} sent, first: {e}",
                    r.id, r.errors, r.sent
                );
            }
        }
    }
}

fn produce_phase(spec: &ProduceSpec, n: usize, broker: Option<&Broker>) -> Result<ProducePhase> {
    let go = Barrier::new(n + 1);
    thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let go = &go;
                s.spawn(move || spec.run_worker(i as u32, go))
            })
            .collect();
        go.wait();
        let start = Instant::now();
        let cpu0 = cpu_now(broker);
        let results = hs
            .into_iter()
            .map(|h| join(h, "producer"))
            .collect::<Result<Vec<_>>>()?;
        let cpu1 = cpu_now(broker);
        let end = results.iter().map(|r| r.finished).max().unwrap_or(start);
        Ok(ProducePhase {
            results,
            secs: (end - start).as_secs_f64(),
            cpu: cpu_delta(cpu0, cpu1),
        })
    })
}

fn run_produce(
    a: &RunArgs,
    bootstrap: &str,
    topic: &str,
    broker: Option<&Broker>,
    rep: &mut Report,
) -> Result<()> {
    client::create_topic(bootstrap, topic, a.partitions)?;
    let spec = produce_spec(a, bootstrap, topic, false, false);
    rep.target_msgs_per_s = spec.rate.map(|r| r * a.producers as f64);
    let ph = produce_phase(&spec, a.producers, broker)?;
    ph.report_errors();
    rep.producers = a.producers;
    rep.records = ph.acked();
    rep.errors = ph.errors();
    rep.secs = ph.secs;
    rep.broker_cpu_s = ph.cpu;
    Ok(())
}

/// Which partitions each of `consumers` consumers reads (round robin); fewer consumers when
/// there are fewer partitions.
fn split<T: Copy>(parts: &[T], consumers: usize) -> Vec<Vec<T>> {
    let c = consumers.min(parts.len()).max(1);
    if consumers > parts.len() {
        eprintln!("only {} partition(s): using {c} consumer(s)", parts.len());
    }
    let mut out = vec![Vec::new(); c];
    for (i, p) in parts.iter().enumerate() {
        out[i % c].push(*p);
    }
    out
}

fn consume_spec(
    a: &RunArgs,
    bootstrap: &str,
    topic: &str,
    throughput: bool,
    track: bool,
) -> ConsumeSpec {
    ConsumeSpec {
        bootstrap: bootstrap.to_string(),
        topic: topic.to_string(),
        group: format!("ottla-load-{}", std::process::id()),
        props: a.consumer_props.clone(),
        throughput,
        track,
        idle_timeout: Duration::from_secs_f64(a.idle_timeout),
    }
}

/// Merges the consumers' (producer -> sequence set) maps; returns the merged map and the
/// number of records seen by more than one consumer.
fn merge_seen(results: &[ConsumerResult]) -> (std::collections::HashMap<u32, SeqSet>, u64) {
    let mut all: std::collections::HashMap<u32, SeqSet> = Default::default();
    let mut dup = 0;
    for r in results {
        for (pid, set) in &r.seen {
            dup += all.entry(*pid).or_default().merge(set);
        }
    }
    (all, dup)
}

/// Acknowledged (producer, sequence) pairs that no consumer saw.
fn missing_acked(
    producers: &[ProducerResult],
    seen: &std::collections::HashMap<u32, SeqSet>,
) -> u64 {
    let empty = SeqSet::default();
    producers
        .iter()
        .filter_map(|p| {
            p.acked_set
                .as_ref()
                .map(|acked| acked.count_missing_from(seen.get(&p.id).unwrap_or(&empty)))
        })
        .sum()
}

fn run_consume(
    a: &RunArgs,
    bootstrap: &str,
    topic: &str,
    broker: Option<&Broker>,
    rep: &mut Report,
) -> Result<()> {
    let track = a.prefill && a.record_size >= HEADER;
    let prefill = if a.prefill {
        client::create_topic(bootstrap, topic, a.partitions)?;
        let mut a2 = a.clone();
        a2.duration = None;
        a2.rate = None;
        a2.rate_mb = None;
        let spec = produce_spec(&a2, bootstrap, topic, track, false);
        let ph = produce_phase(&spec, a.producers, None)?;
        ph.report_errors();
        eprintln!(
            "prefilled {} records of {} B in {:.2} s ({:.0} msgs/s)",
            ph.acked(),
            a.record_size,
            ph.secs,
            ph.acked() as f64 / ph.secs.max(1e-9)
        );
        if ph.errors() > 0 {
            bail!("prefill had {} delivery error(s)", ph.errors());
        }
        Some(ph)
    } else {
        None
    };
    let wm = client::watermarks(bootstrap, topic)?;
    rep.partitions = wm.len() as i32;
    let parts: Vec<(i32, i64, i64)> = wm
        .iter()
        .enumerate()
        .map(|(p, &(lo, hi))| (p as i32, lo, hi))
        .collect();
    let expected: u64 = parts
        .iter()
        .map(|&(_, lo, hi)| (hi - lo).max(0) as u64)
        .sum();
    let shares = split(&parts, a.consumers);
    let spec = consume_spec(a, bootstrap, topic, true, track);
    let go = Barrier::new(shares.len() + 1);
    let (results, secs, cpu) = thread::scope(|s| -> Result<_> {
        let hs: Vec<_> = shares
            .iter()
            .enumerate()
            .map(|(i, share)| {
                let (go, spec) = (&go, &spec);
                s.spawn(move || spec.run_bulk(i, share, go))
            })
            .collect();
        go.wait();
        let start = Instant::now();
        let cpu0 = cpu_now(broker);
        let results = hs
            .into_iter()
            .map(|h| join(h, "consumer"))
            .collect::<Result<Vec<_>>>()?;
        let cpu1 = cpu_now(broker);
        let end = results
            .iter()
            .filter_map(|r| r.last_record)
            .max()
            .unwrap_or(start);
        Ok((results, (end - start).as_secs_f64(), cpu_delta(cpu0, cpu1)))
    })?;
    let consumed: u64 = results.iter().map(|r| r.records).sum();
    let gaps: u64 = results.iter().map(|r| r.gaps).sum();
    let short: u64 = results.iter().map(|r| r.short).sum();
    let mut duplicates: u64 = results.iter().map(|r| r.duplicates).sum();
    let mut missing = short;
    if gaps > 0 {
        eprintln!("{gaps} offset(s) skipped between records read");
    }
    if let Some(ph) = &prefill {
        // Our own topic: every offset holds one of our records.
        missing += gaps;
        if track {
            let (seen, dup) = merge_seen(&results);
            duplicates += dup;
            missing = missing.max(missing_acked(&ph.results, &seen));
        }
        if expected < ph.acked() {
            eprintln!(
                "the topic holds {expected} records but {} were acknowledged",
                ph.acked()
            );
            missing = missing.max(ph.acked() - expected);
        }
    }
    eprintln!("consumed {consumed} of {expected} records");
    if prefill.is_none() && consumed > 0 {
        // Not our records: report their mean size (payload = records x record_size).
        let bytes: u64 = results.iter().map(|r| r.bytes).sum();
        rep.record_size = (bytes as f64 / consumed as f64).round() as usize;
    }
    rep.consumers = shares.len();
    rep.records = consumed;
    rep.secs = secs;
    rep.broker_cpu_s = cpu;
    rep.missing = Some(missing);
    rep.duplicates = Some(duplicates);
    rep.errors = results.iter().map(|r| r.errors).sum();
    Ok(())
}

fn run_e2e(
    a: &RunArgs,
    bootstrap: &str,
    topic: &str,
    broker: Option<&Broker>,
    rep: &mut Report,
) -> Result<()> {
    client::create_topic(bootstrap, topic, a.partitions)?;
    if a.rate.is_none() && a.rate_mb.is_none() {
        eprintln!("no --rate or --rate-mb: producing flat out, latency includes queueing");
    }
    let pspec = produce_spec(a, bootstrap, topic, true, true);
    rep.target_msgs_per_s = pspec.rate.map(|r| r * a.producers as f64);
    let cspec = consume_spec(a, bootstrap, topic, false, true);
    let parts: Vec<i32> = (0..a.partitions).collect();
    let shares = split(&parts, a.consumers);
    let shared = E2eShared::default();
    let ready = Barrier::new(shares.len() + 1);
    let go = Barrier::new(a.producers + 1);
    let (producers, consumers, secs, cpu) = thread::scope(|s| -> Result<_> {
        let chs: Vec<_> = shares
            .iter()
            .enumerate()
            .map(|(i, share)| {
                let (ready, cspec, shared) = (&ready, &cspec, &shared);
                s.spawn(move || cspec.run_e2e(i, share, ready, shared))
            })
            .collect();
        ready.wait();
        if shared.abort.load(Ordering::SeqCst) {
            shared.producers_done.store(true, Ordering::Release);
            for h in chs {
                join(h, "consumer")?;
            }
            bail!("a consumer failed to start");
        }
        let phs: Vec<_> = (0..a.producers)
            .map(|i| {
                let (go, pspec) = (&go, &pspec);
                s.spawn(move || pspec.run_worker(i as u32, go))
            })
            .collect();
        go.wait();
        let start = Instant::now();
        let cpu0 = cpu_now(broker);
        let presults: Vec<Result<ProducerResult>> =
            phs.into_iter().map(|h| join(h, "producer")).collect();
        let acked: u64 = presults.iter().flatten().map(|r| r.acked).sum();
        shared.acked.store(acked, Ordering::Relaxed);
        shared.producers_done.store(true, Ordering::Release);
        let cresults = chs
            .into_iter()
            .map(|h| join(h, "consumer"))
            .collect::<Result<Vec<_>>>()?;
        let cpu1 = cpu_now(broker);
        let presults = presults.into_iter().collect::<Result<Vec<_>>>()?;
        let end = presults.iter().map(|r| r.finished).max().unwrap_or(start);
        Ok((
            presults,
            cresults,
            (end - start).as_secs_f64(),
            cpu_delta(cpu0, cpu1),
        ))
    })?;
    let ph = ProducePhase {
        results: producers,
        secs,
        cpu,
    };
    ph.report_errors();
    let (seen, dup) = merge_seen(&consumers);
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for c in &consumers {
        if let Some(h) = &c.latency_us {
            hist.add(h)?;
        }
    }
    let received: u64 = consumers.iter().map(|c| c.records).sum();
    eprintln!("e2e: {} acknowledged, {received} received", ph.acked());
    let ms = |us: u64| us as f64 / 1000.0;
    rep.latency = (!hist.is_empty()).then(|| Latency {
        p50_ms: ms(hist.value_at_quantile(0.50)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p999_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
    });
    rep.producers = a.producers;
    rep.consumers = shares.len();
    rep.records = ph.acked();
    rep.secs = ph.secs;
    rep.broker_cpu_s = ph.cpu;
    rep.missing = Some(missing_acked(&ph.results, &seen));
    rep.duplicates = Some(consumers.iter().map(|c| c.duplicates).sum::<u64>() + dup);
    rep.errors = ph.errors() + consumers.iter().map(|c| c.errors).sum::<u64>();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_duplicates_across_consumers() {
        let mut acked = SeqSet::default();
        (0..100).for_each(|i| {
            acked.insert(i);
        });
        let producer = ProducerResult {
            id: 7,
            sent: 100,
            acked: 100,
            errors: 0,
            first_error: None,
            acked_set: Some(acked),
            finished: Instant::now(),
        };
        let mut c1 = ConsumerResult::default();
        let mut c2 = ConsumerResult::default();
        (0..60).for_each(|i| {
            c1.seen.entry(7).or_default().insert(i);
        });
        (50..98).for_each(|i| {
            c2.seen.entry(7).or_default().insert(i);
        });
        let (seen, dup) = merge_seen(&[c1, c2]);
        assert_eq!(dup, 10);
        assert_eq!(missing_acked(&[producer], &seen), 2);
    }

    #[test]
    fn split_round_robin() {
        assert_eq!(split(&[0, 1, 2, 3, 4], 2), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(split(&[0, 1], 5), vec![vec![0], vec![1]]);
    }

    #[test]
    fn counts_and_rates_per_producer() {
        let cli = Cli::parse_from([
            "ottla-load",
            "produce",
            "--bootstrap",
            "x:1",
            "--records",
            "10",
            "--producers",
            "3",
            "--rate-mb",
            "1",
            "--record-size",
            "1000",
        ]);
        let Cmd::Produce(a) = cli.cmd else { panic!() };
        let spec = produce_spec(&a, "x:1", "t", false, false);
        assert_eq!(spec.counts, vec![Some(4), Some(3), Some(3)]);
        assert!((spec.rate.unwrap() - 1000.0 / 3.0).abs() < 1e-9);
        let cli = Cli::parse_from(["ottla-load", "e2e", "--bootstrap", "x:1", "--duration", "2"]);
        let Cmd::E2e(a) = cli.cmd else { panic!() };
        assert_eq!(produce_spec(&a, "x:1", "t", true, true).counts, vec![None]);
    }
}
