//! Cluster metadata: who this broker is (node id, cluster id, advertised address) and which
//! topics and partitions exist, and this broker's part in each partition (`partition.rs`). A
//! single node is a cluster of one: it leads every partition.
//! Replication and a Raft metadata log (openraft) will grow here behind the same API.

pub mod fetch_session;
pub mod fetcher;
pub mod hw_checkpoint;
pub mod partition;
pub mod placement;
pub mod topic_config;
pub mod topics;

use std::path::{Path, PathBuf};

use crate::config::Config;
pub use partition::{Leadership, Partition, PartitionError, Role};
pub use topics::{Topic, TopicError, TopicRef, TopicRegistry};

/// `<data_dir>/meta/clean_shutdown`: written last by a graceful shutdown (after every log was
/// synced), removed as soon as the next start has opened the logs. Its presence lets that
/// start skip the recovery scan; the broker epoch it holds is the proof of a clean shutdown
/// the next registration sends (Kafka's `.kafka_cleanshutdown` and `PreviousBrokerEpoch`,
/// KIP-966: without it the controller takes this broker's replicas out of every ISR and ELR).
pub fn clean_shutdown_marker(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("clean_shutdown")
}

/// Whether the previous run left the marker, and the broker epoch it recorded (-1: none, a
/// marker of an earlier version); it is removed (durably) by [`forget_clean_shutdown`] once
/// the logs are open.
pub fn was_clean_shutdown(data_dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(clean_shutdown_marker(data_dir)).ok()?;
    Some(
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("epoch="))
            .and_then(|e| e.parse().ok())
            .unwrap_or(-1),
    )
}

pub fn forget_clean_shutdown(data_dir: &Path) -> std::io::Result<()> {
    let marker = clean_shutdown_marker(data_dir);
    match std::fs::remove_file(&marker) {
        Ok(()) => crate::log::fsutil::sync_dir(&data_dir.join("meta")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the marker with this broker's epoch (0: never registered, e.g. a controller-only
/// node).
pub fn mark_clean_shutdown(data_dir: &Path, broker_epoch: i64) -> std::io::Result<()> {
    crate::log::fsutil::write_atomically(
        &clean_shutdown_marker(data_dir),
        format!("clean epoch={broker_epoch}\n").as_bytes(),
    )
}

/// This broker as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: i32,
    /// The first listener's advertised address.
    pub host: String,
    pub port: i32,
    /// Every listener's advertised endpoint, as registered (besides `INTER_BROKER`).
    pub endpoints: Vec<crate::meta::records::Endpoint>,
    pub cluster_id: String,
    /// `broker_rack`, reported in Metadata and DescribeCluster.
    pub rack: Option<String>,
}

/// Where the active controller replicates the metadata log to a broker-only node: its
/// `controller_listen`, with the host this broker advertises to clients when that listener
/// binds every address (`0.0.0.0`, `::`).
pub fn observer_addr(config: &Config, advertised_host: &str) -> Option<String> {
    let listen = config.controller_addr()?;
    let (host, port) = listen.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(match host {
        "" | "0.0.0.0" | "::" => {
            if advertised_host.contains(':') {
                format!("[{advertised_host}]:{port}")
            } else {
                format!("{advertised_host}:{port}")
            }
        }
        _ => listen,
    })
}

/// The cluster id: configured, else stored in `<data_dir>/meta/cluster_id`, else new.
pub fn resolve_cluster_id(config: &Config) -> std::io::Result<String> {
    if let Some(id) = &config.cluster_id {
        return Ok(id.clone());
    }
    if config.memory {
        return Ok(new_cluster_id());
    }
    let path = config.data_dir.join("meta").join("cluster_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = new_cluster_id();
            topics::write_atomically(&path, id.as_bytes())?;
            Ok(id)
        }
    }
}

/// Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 characters).
fn new_cluster_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits: u128 = u128::from_be_bytes(bytes);
    let mut out = String::with_capacity(22);
    for _ in 0..22 {
        out.push(ALPHABET[(bits & 63) as usize] as char);
        bits >>= 6;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observer_is_reached_at_its_controller_listener() {
        let with = |listen: &str| Config {
            controller_listen: Some(listen.to_string()),
            ..Config::default()
        };
        assert_eq!(
            observer_addr(&with("10.0.0.4:9093"), "broker4").as_deref(),
            Some("10.0.0.4:9093")
        );
        // A listener on every address is reached at the host advertised to clients.
        assert_eq!(
            observer_addr(&with("0.0.0.0:9093"), "broker4").as_deref(),
            Some("broker4:9093")
        );
        assert_eq!(
            observer_addr(&with("[::]:9093"), "fd00::4").as_deref(),
            Some("[fd00::4]:9093")
        );
        assert_eq!(observer_addr(&Config::default(), "h"), None);
    }
}
