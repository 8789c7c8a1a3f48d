//! Writes the fuzz targets' seed corpus: `cargo run --release --example fuzz_seeds [DIR]`
//! (default `fuzz/corpus/`) replaces `DIR/<target>/` with the seeds of
//! `ottla::fuzzing::seeds`. An example of the main crate rather than a bin of `fuzz/`, so that
//! it builds on stable with the library already built.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"));
    for (target, _) in ottla::fuzzing::TARGETS {
        let out = dir.join(target);
        if out.exists() {
            std::fs::remove_dir_all(&out)?;
        }
        std::fs::create_dir_all(&out)?;
        let seeds = ottla::fuzzing::seeds::of(target);
        let bytes: usize = seeds.iter().map(|(_, b)| b.len()).sum();
        for (name, data) in &seeds {
            std::fs::write(out.join(name), data)?;
        }
        println!("{target}: {} seeds, {bytes} bytes", seeds.len());
    }
    Ok(())
}
