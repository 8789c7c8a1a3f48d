//! Cluster metadata: who this broker is (node id, cluster id, advertised address) and which
//! topics and partitions exist. A single node is a cluster of one: it leads every partition.
//! Replication and a Raft metadata log (openraft) will grow here behind the same API.

pub mod topic_config;
pub mod topics;

use crate::config::Config;
pub use topics::{Topic, TopicError, TopicRegistry};

/// This broker as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub cluster_id: String,
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
