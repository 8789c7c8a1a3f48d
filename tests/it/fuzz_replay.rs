//! The fuzz targets' short run on stable, no libFuzzer: every file of the committed seed corpus
//! (`fuzz/corpus/<target>/`) through its target (`ottla::fuzzing`), then a deterministic
//! mutation loop over the corpus: bit flips, random bytes, inserts and deletes, truncation,
//! splices between inputs, interesting integers (-1, i32::MAX, 2^31, varints) at random
//! positions. A panic is a failure (the input is printed, to add to the corpus).
//!
//! `OTTLA_FUZZ_REPLAY_ITERATIONS` (default 20,000 per target) and `OTTLA_FUZZ_REPLAY_SEED`
//! (default fixed) change the loop. The long runs are libFuzzer's: `scripts/fuzz`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ottla::fuzzing::{seeds, Mutator, TARGETS};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// The committed corpus files of `target`, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                data,
            )
        })
        .collect();
    files.sort();
    files
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            let v = v.trim();
            v.strip_prefix("0x")
                .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(default)
}

/// Runs `f` on `input`; on a panic, fails with the input in hex.
fn run(target: &str, what: &str, f: fn(&[u8]), input: &[u8]) {
    if std::panic::catch_unwind(|| f(input)).is_err() {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!(
            "fuzz target {target} panicked on {what} ({} bytes): {hex}",
            input.len()
        );
    }
}

fn replay(target: &str, f: fn(&[u8])) {
    let files = corpus(target);
    assert!(
        files.len() >= 10,
        "{target}: the corpus has {} files",
        files.len()
    );
    let total: usize = files.iter().map(|(_, d)| d.len()).sum();
    assert!(total < 1 << 20, "{target}: the corpus holds {total} bytes");
    let started = Instant::now();
    for (name, data) in &files {
        run(target, name, f, data);
    }
    let iterations = env_number("OTTLA_FUZZ_REPLAY_ITERATIONS", 20_000);
    let seed = env_number("OTTLA_FUZZ_REPLAY_SEED", 0x9e37_79b9_7f4a_7c15);
    let mut m = Mutator::new(seed ^ target.len() as u64);
    for i in 0..iterations {
        let input = &files[m.below(files.len())].1;
        let other = &files[m.below(files.len())].1;
        let mutated = m.mutate(input, other);
        run(
            target,
            &format!("iteration {i} (seed {seed:#x})"),
            f,
            &mutated,
        );
    }
    println!(
        "{target}: {} corpus files, {iterations} mutations in {:.2?}",
        files.len(),
        started.elapsed()
    );
}

#[test]
fn request_decoder() {
    replay("request_decoder", ottla::fuzzing::request_decoder);
}

#[test]
fn record_batches() {
    replay("record_batches", ottla::fuzzing::record_batches);
}

#[test]
fn internal_records() {
    replay("internal_records", ottla::fuzzing::internal_records);
}

#[test]
fn sasl_messages() {
    replay("sasl_messages", ottla::fuzzing::sasl_messages);
}

/// The committed corpus holds every seed the generator writes (by name: some records carry
/// the time they were encoded at), and the fresh seeds pass too. Regenerate the corpus with
/// `cargo run --release --example fuzz_seeds` after changing the seeds (or run this test
/// with `OTTLA_FUZZ_WRITE_CORPUS=1`, which writes the seeds first).
#[test]
fn corpus_is_generated() {
    if std::env::var_os("OTTLA_FUZZ_WRITE_CORPUS").is_some() {
        for (target, _) in TARGETS {
            for (name, data) in seeds::of(target) {
                std::fs::write(corpus_dir(target).join(name), data).expect("write a seed");
            }
        }
    }
    for (target, f) in TARGETS {
        let files = corpus(target);
        for (name, data) in seeds::of(target) {
            assert!(
                files.iter().any(|(n, _)| *n == name),
                "{target}/{name} is missing: regenerate the corpus"
            );
            run(target, &name, f, &data);
        }
    }
}
