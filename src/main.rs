//! The `ottla` command: parses flags, layers the configuration and runs the broker.

use std::path::PathBuf;

use clap::Parser;
use serde::Serialize;

use ottla::config::Config;
use ottla::server::Server;

#[global_allocator]
static GLOBAL: ottla::alloc::Allocator = ottla::alloc::Allocator;

/// A Kafka-compatible message broker. Settings come from defaults < ottla.toml (or --config)
/// < OTTLA_* environment variables (e.g. OTTLA_NUM_PARTITIONS=3) < these flags.
#[derive(Debug, Parser, Serialize)]
#[command(name = "ottla", version, about, long_about = None)]
struct Cli {
    /// Read settings from this TOML file instead of ./ottla.toml.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Listen on [PROTOCOL://]HOST:PORT (repeatable), PROTOCOL one of PLAINTEXT (the
    /// default), SSL, SASL_PLAINTEXT, SASL_SSL. `localhost` means 127.0.0.1 and [::1].
    /// [default: localhost:9092]
    #[arg(long, value_name = "[PROTOCOL://]HOST:PORT")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    listen: Vec<String>,
    /// Address given to clients in metadata, [PROTOCOL://]HOST:PORT, one per listener
    /// protocol (repeatable) [default: each listener's own address].
    #[arg(long, value_name = "[PROTOCOL://]HOST:PORT")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    advertise: Vec<String>,
    /// PEM certificate chain of the SSL and SASL_SSL listeners (reloaded on SIGHUP).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key_file: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates (mutual TLS).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_client_ca_file: Option<PathBuf>,
    /// Client certificates: none, requested or required [default: none].
    #[arg(long, value_name = "none|requested|required")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_client_auth: Option<String>,
    /// SASL mechanisms of SASL listeners [default: PLAIN,SCRAM-SHA-256,SCRAM-SHA-512].
    #[arg(long, value_name = "MECHANISM,...", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sasl_enabled_mechanisms: Vec<String>,
    /// A user to create at startup with SCRAM credentials, NAME:PASSWORD (repeatable; only
    /// when the user has no credential yet).
    #[arg(long = "bootstrap-user", value_name = "NAME:PASSWORD")]
    #[serde(rename = "bootstrap_users", skip_serializing_if = "Vec::is_empty")]
    bootstrap_user: Vec<String>,
    /// Data directory [default: ./ottla-data].
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// Keep everything in memory (nothing written to disk, nothing survives a restart).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    memory: bool,
    /// Partitions of auto-created topics and of topics created without a count [default: 1].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    num_partitions: Option<i32>,
    /// Create unknown topics on first use [default: true].
    #[arg(long, value_name = "true|false")]
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_create_topics: Option<bool>,
    /// Largest record batch accepted, in bytes [default: 1048588].
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    message_max_bytes: Option<i32>,
    /// Largest request frame accepted, in bytes [default: 104857600].
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_frame_bytes: Option<usize>,
    /// Most simultaneous client connections [default: 10000].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,
    /// This broker's node id [default: 1].
    #[arg(long, value_name = "ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<i32>,
    /// What this node runs: broker, controller, or both (combined mode)
    /// [default: broker,controller].
    #[arg(long, value_name = "ROLES", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    process_roles: Vec<String>,
    /// The controller's listener, needed with the controller role once voters are set;
    /// PROTOCOL (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) is every controller listener's.
    #[arg(long, value_name = "[PROTOCOL://]HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    controller_listen: Option<String>,
    /// The controller quorum, e.g. 1@h1:9093,2@h2:9093,3@h3:9093 [default: none, a cluster
    /// of one].
    #[arg(long, value_name = "ID@HOST:PORT,...", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    controller_quorum_voters: Vec<String>,
    /// This broker's rack, reported to clients in metadata [default: none].
    #[arg(long, value_name = "RACK")]
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_rack: Option<String>,
    /// Replication factor of topics created without one [default: 1].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    default_replication_factor: Option<i16>,
    /// Default min.insync.replicas of topics: acks=all needs this many in-sync replicas
    /// [default: 1].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    min_insync_replicas: Option<i32>,
    /// When produced data is fsynced: `interval` (page cache, then every
    /// flush_interval_ms) or `always` (before every acknowledgement, group-committed)
    /// [default: interval].
    #[arg(long, value_name = "interval|always")]
    #[serde(skip_serializing_if = "Option::is_none")]
    fsync: Option<String>,
    /// Periodic fsync of unflushed data, in ms (Kafka's log.flush.interval.ms) [default: 1000].
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    flush_interval_ms: Option<i64>,
    /// How often retention runs, in ms [default: 5000].
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_retention_check_interval_ms: Option<u64>,
    /// How often the log cleaner (compaction) runs, in ms [default: 15000].
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_cleaner_backoff_ms: Option<u64>,
    /// How long the first rebalance of an empty group waits for more members, in ms
    /// (Kafka's default is 3000) [default: 0].
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    group_initial_rebalance_delay_ms: Option<i64>,
    /// Cluster id [default: generated once and kept in the data directory].
    #[arg(long, value_name = "ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_id: Option<String>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and the tools that read them get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref(), &cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ottla: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match ottla::fd_limit::raise_to_hard() {
        Ok((from, to)) => {
            tracing::info!(from, to, "open-file limit (RLIMIT_NOFILE)");
            let budget = ottla::fd_limit::segment_file_budget(config.max_open_segment_files, to);
            if budget < config.max_open_segment_files {
                tracing::warn!(
                    configured = config.max_open_segment_files,
                    used = budget,
                    limit = to,
                    "max_open_segment_files lowered to half the open-file limit"
                );
                config.max_open_segment_files = budget;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let runtime = match ottla::threads::runtime().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ottla: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ottla: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        eprintln!("{}", server.ready_line());
        server.run(shutdown_signal()).await;
        std::process::ExitCode::SUCCESS
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
