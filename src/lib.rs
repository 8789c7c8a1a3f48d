//! ottla: a Kafka-wire-protocol-compatible message broker.
//!
//! Layers, top to bottom (nothing imports upwards): `server` (sockets, framing) →
//! `protocol` (headers, versions, routing) → `handlers` (one file per Kafka API) →
//! `cluster` (topics, node identity), `groups` (consumer-group coordinator) and `log`
//! (partition storage). `broker` holds the state all of them share (the server, the
//! handlers and the timers reach it there; nothing imports `handlers` but `protocol`).
//! See ARCHITECTURE.md.

pub mod alloc;
pub mod broker;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod fd_limit;
#[doc(hidden)]
pub mod fuzzing;
pub mod groups;
pub mod handlers;
pub mod log;
pub mod log_every;
pub mod meta;
pub mod protocol;
pub mod quota;
pub mod security;
pub mod server;
pub mod threads;
pub mod txn;
