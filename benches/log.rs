//! Micro-benchmarks of the produce/fetch hot paths in the log layer:
//! batch validation (CRC32C), the CRC32C and the offset patch on their own, append (offset
//! patch + store write + index), append with an fsync per append (`fsync = "always"`, one
//! appender: group commit cannot help), read, and an offset-index lookup.
//! Run: `cargo bench --bench log`.

mod common;

use common::batch;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ottla::log::batch::{assign_offsets, validate_batches};
use ottla::log::open_files::{LazyFile, Mode, OpenFiles};
use ottla::log::{LogConfig, PartitionLog};

fn benches(c: &mut Criterion) {
    let b = batch(160, 100, 1_700_000_000_000); // ~16 KB, a typical librdkafka batch
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(b.len() as u64));
    g.bench_function("validate_16k_batch", |bench| {
        bench.iter(|| validate_batches(&b, 1 << 20).expect("valid"))
    });
    // What validation checksums: the batch from its attributes field (byte 21) on.
    g.bench_function("crc32c_16k", |bench| {
        bench.iter(|| crc32c::crc32c(std::hint::black_box(&b[21..])))
    });
    let mut patched = b.clone();
    let mut next = 0;
    g.bench_function("assign_offsets_16k_batch", |bench| {
        bench.iter(|| next = assign_offsets(std::hint::black_box(&mut patched), next))
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = PartitionLog::open(dir.path(), LogConfig::default(), false).expect("open");
    g.bench_function("append_16k_disk", |bench| {
        bench.iter(|| {
            let mut copy = b.clone();
            disk.append(&mut copy, None).expect("append")
        })
    });
    let dir_sync = tempfile::tempdir().expect("tempdir");
    let synced = PartitionLog::open(
        dir_sync.path(),
        LogConfig {
            flush_messages: 1,
            ..LogConfig::default()
        },
        false,
    )
    .expect("open");
    g.bench_function("append_16k_disk_fsync_each", |bench| {
        bench.iter(|| {
            let mut copy = b.clone();
            let info = synced.append(&mut copy, None).expect("append");
            synced.sync_to(info.last_offset + 1).expect("sync")
        })
    });
    let mem = PartitionLog::in_memory(LogConfig {
        segment_bytes: 64 << 20,
        ..LogConfig::default()
    });
    for _ in 0..2000 {
        mem.append(&mut b.clone(), None).expect("append");
    }
    let end = mem.log_end_offset();
    let mut offset = 0;
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("read_1mb_memory", |bench| {
        bench.iter(|| {
            offset = (offset + 7919) % end;
            mem.read(offset, 1 << 20, true).expect("read")
        })
    });
    g.finish();

    // Offset index: 100k entries (a 400 MB segment at the default 4 KB interval).
    let mut index = ottla::log::index::OffsetIndex::default();
    for i in 0..100_000u32 {
        index.append(i * 40 + 39, i * 4096).expect("append");
    }
    let mut target = 0u32;
    c.bench_function("index_lookup_100k_entries", |bench| {
        bench.iter(|| {
            target = (target + 7919) % 4_000_000;
            index.floor_position(target)
        })
    });
    // The open-file cache: a hit (file open), and a miss (2,000 files through a cache of 100:
    // every get opens a file and closes the least recently used one).
    let dir = tempfile::tempdir().expect("temp dir");
    let hot = OpenFiles::new(4096);
    let cold = OpenFiles::new(100);
    let lazy = |cache: &std::sync::Arc<OpenFiles>, i: usize| {
        LazyFile::new(
            dir.path().join(format!("{i:020}.log")),
            Mode::ReadWrite,
            false,
            cache,
        )
    };
    let hits: Vec<LazyFile> = (0..1).map(|i| lazy(&hot, i)).collect();
    let misses: Vec<LazyFile> = (0..2000).map(|i| lazy(&cold, i)).collect();
    c.bench_function("open_files_hit", |bench| {
        bench.iter(|| hits[0].get().expect("open"))
    });
    let mut next = 0usize;
    c.bench_function("open_files_miss_open_and_evict", |bench| {
        bench.iter(|| {
            next = (next + 1) % misses.len();
            misses[next].get().expect("open")
        })
    });
}

criterion_group!(log_benches, benches);
criterion_main!(log_benches);
