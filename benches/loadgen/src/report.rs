//! One run's numbers: the summary line, the JSON object, and the markdown table.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{json, Value};

#[derive(Default)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Default)]
pub struct Report {
    pub workload: &'static str,
    pub topic: String,
    pub record_size: usize,
    pub records: u64,
    pub acks: &'static str,
    pub compression: &'static str,
    pub partitions: i32,
    pub producers: usize,
    pub consumers: usize,
    pub secs: f64,
    pub target_msgs_per_s: Option<f64>,
    pub latency: Option<Latency>,
    pub broker_cpu_s: Option<f64>,
    pub broker_peak_rss_mb: Option<f64>,
    pub startup_ms: Option<f64>,
    pub missing: Option<u64>,
    pub duplicates: Option<u64>,
    pub errors: u64,
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    pub fn payload_bytes(&self) -> f64 {
        self.records as f64 * self.record_size as f64
    }

    pub fn msgs_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.records as f64 / self.secs
        } else {
            0.0
        }
    }

    pub fn mb_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.payload_bytes() / 1e6 / self.secs
        } else {
            0.0
        }
    }

    pub fn cpu_s_per_gb(&self) -> Option<f64> {
        let gb = self.payload_bytes() / 1e9;
        self.broker_cpu_s.filter(|_| gb > 0.0).map(|c| c / gb)
    }

    pub fn to_json(&self) -> Value {
        let lat = |f: fn(&Latency) -> f64| self.latency.as_ref().map(|l| r3(f(l)));
        json!({
            "workload": self.workload,
            "topic": self.topic,
            "record_size": self.record_size,
            "records": self.records,
            "acks": self.acks,
            "compression": self.compression,
            "partitions": self.partitions,
            "producers": self.producers,
            "consumers": self.consumers,
            "secs": r3(self.secs),
            "msgs_per_s": self.msgs_per_s().round(),
            "mb_per_s": r2(self.mb_per_s()),
            "target_msgs_per_s": self.target_msgs_per_s.map(f64::round),
            "p50_ms": lat(|l| l.p50_ms),
            "p99_ms": lat(|l| l.p99_ms),
            "p999_ms": lat(|l| l.p999_ms),
            "max_ms": lat(|l| l.max_ms),
            "broker_cpu_s": self.broker_cpu_s.map(r2),
            "cpu_s_per_gb": self.cpu_s_per_gb().map(r2),
            "broker_peak_rss_mb": self.broker_peak_rss_mb.map(|m| m.round()),
            "startup_ms": self.startup_ms.map(r2),
            "missing": self.missing,
            "duplicates": self.duplicates,
            "errors": self.errors,
        })
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {} B x {} acks={} {} partitions={} producers={} consumers={}: {:.2} s, {:.0} msgs/s, {:.1} MB/s",
            self.workload,
            self.record_size,
            self.records,
            self.acks,
            self.compression,
            self.partitions,
            self.producers,
            self.consumers,
            self.secs,
            self.msgs_per_s(),
            self.mb_per_s()
        );
        if let Some(t) = self.target_msgs_per_s {
            s += &format!(" (target {t:.0} msgs/s)");
        }
        if let Some(l) = &self.latency {
            s += &format!(
                " | latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        }
        if let Some(c) = self.broker_cpu_s {
            s += &format!(" | broker {c:.2} CPU-s");
            if let Some(g) = self.cpu_s_per_gb() {
                s += &format!(" ({g:.2} CPU-s/GB)");
            }
        }
        if let Some(m) = self.broker_peak_rss_mb {
            s += &format!(", peak RSS {m:.0} MiB");
        }
        if let Some(t) = self.startup_ms {
            s += &format!(", startup {t:.1} ms");
        }
        if let Some(m) = self.missing {
            s += &format!(" | missing {m}");
        }
        if let Some(d) = self.duplicates.filter(|&d| d > 0) {
            s += &format!(", duplicates {d}");
        }
        if self.errors > 0 {
            s += &format!(", errors {}", self.errors);
        }
        s
    }
}

fn cell(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(0.0);
            if n.is_f64() && f.fract() != 0.0 {
                format!("{f}")
            } else {
                format!("{}", f as i64)
            }
        }
        Some(other) => other.to_string(),
    }
}

/// Prints a markdown table of the JSON lines in `files` (stdin when none).
pub fn print_table(files: &[PathBuf]) -> Result<()> {
    let mut rows = Vec::new();
    let mut read = |r: &mut dyn BufRead| -> Result<()> {
        for line in r.lines() {
            let line = line?;
            let line = line.trim();
            if line.starts_with('{') {
                rows.push(serde_json::from_str::<Value>(line).context("parsing a JSON line")?);
            }
        }
        Ok(())
    };
    if files.is_empty() {
        read(&mut std::io::stdin().lock())?;
    } else {
        for f in files {
            let file =
                std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
            read(&mut std::io::BufReader::new(file))?;
        }
    }
    let cols: &[(&str, &str)] = &[
        ("workload", "workload"),
        ("record_size", "size B"),
        ("acks", "acks"),
        ("compression", "comp."),
        ("partitions", "parts"),
        ("producers", "prod."),
        ("consumers", "cons."),
        ("records", "records"),
        ("secs", "s"),
        ("msgs_per_s", "msgs/s"),
        ("mb_per_s", "MB/s"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("p999_ms", "p99.9 ms"),
        ("max_ms", "max ms"),
        ("broker_cpu_s", "broker CPU-s"),
        ("cpu_s_per_gb", "CPU-s/GB"),
        ("broker_peak_rss_mb", "peak RSS MiB"),
        ("startup_ms", "startup ms"),
        ("missing", "missing"),
    ];
    println!(
        "| {} |",
        cols.iter().map(|c| c.1).collect::<Vec<_>>().join(" | ")
    );
    println!("|{}", "---|".repeat(cols.len()));
    for r in &rows {
        println!(
            "| {} |",
            cols.iter()
                .map(|c| cell(r, c.0))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(())
}
