//! ottla's integration tests, in one test binary (one crate: each file a module), so that
//! `cargo test` compiles and links the broker's generic code once rather than once per file.
//! `cargo test --test it MODULE::` runs one file's tests (e.g. `cargo test --test it
//! cluster_three::`). `common` is the in-process test broker and client, `cluster` the
//! harness of real-process clusters.
//!
//! The broker's own allocator, as the server binary has it (`ottla::alloc`: a request that
//! claims gigabytes is address space until its bytes arrive; `bad_input` and the fuzz
//! replays depend on it).

#[global_allocator]
static GLOBAL: ottla::alloc::Allocator = ottla::alloc::Allocator;

mod cluster;
mod common;

mod acl_cluster_apis;
mod bad_input;
mod client_quotas;
mod cluster_config;
mod cluster_coordinators;
mod cluster_replication;
mod cluster_roles;
mod cluster_three;
mod coordinators;
mod describe_log_dirs;
mod fetch_sessions;
mod fuzz_replay;
mod fuzz_requests;
mod groups;
mod limits_and_durability;
mod log_model;
mod migration;
mod offset_for_leader_epoch;
mod partition_scale;
mod partitions;
mod produce_records;
mod protocol;
mod rskafka_client;
mod sim_replication;
mod threading;
mod txn_log;
