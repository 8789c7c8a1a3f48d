//! libFuzzer target: see `ottla::fuzzing::sasl_messages`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The broker's allocator, as in the server binary: a request claiming 2^31 elements reserves
// address space (mmap NORESERVE) instead of aborting the process (see `ottla::alloc`).
#[global_allocator]
static GLOBAL: ottla::alloc::Allocator = ottla::alloc::Allocator;

fuzz_target!(|data: &[u8]| ottla::fuzzing::sasl_messages(data));
