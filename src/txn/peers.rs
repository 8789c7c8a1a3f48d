//! Connections to other brokers' client listeners, for the broker-to-broker requests of the
//! transaction machinery (WriteTxnMarkers, AddPartitionsToTxn `verify_only`): one
//! [`RpcClient`] per broker, at the endpoint of its registration in the metadata image
//! (replaced when the broker registers another address).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use crate::coordinator::partitions::partition_for;
use crate::meta::node::MetaNode;
use crate::meta::rpc::RpcClient;

pub struct Peers {
    meta: Arc<MetaNode>,
    node_id: i32,
    clients: Mutex<HashMap<i32, Arc<RpcClient>>>,
    connector: Option<Arc<crate::meta::connector::Connector>>,
}

impl Peers {
    pub fn new(meta: Arc<MetaNode>) -> Peers {
        Peers {
            node_id: meta.node_id(),
            meta,
            clients: Mutex::new(HashMap::new()),
            connector: None,
        }
    }

    /// Peers reached through `connector` (`inter_broker_listener`: TLS, SASL).
    pub fn with_connector(
        mut self,
        connector: Option<Arc<crate::meta::connector::Connector>>,
    ) -> Peers {
        self.connector = connector;
        self
    }

    pub fn meta(&self) -> &Arc<MetaNode> {
        &self.meta
    }

    /// This broker's id.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// A client of broker `broker`'s client listener; an error when it is not registered or
    /// fenced.
    pub fn client(&self, broker: i32) -> io::Result<Arc<RpcClient>> {
        let image = self.meta.image();
        let addr = image
            .brokers
            .get(&broker)
            .filter(|b| !b.fenced)
            .and_then(|b| b.peer_addr(self.connector.as_ref().map(|c| c.protocol())))
            .ok_or_else(|| io::Error::other(format!("broker {broker} is not alive")))?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        match clients.get(&broker) {
            Some(c) if c.addr() == addr => Ok(c.clone()),
            _ => {
                let c = Arc::new(
                    RpcClient::new(addr, format!("ottla-broker-{}", self.node_id))
                        .with_connector(self.connector.clone()),
                );
                clients.insert(broker, c.clone());
                Ok(c)
            }
        }
    }

    /// The leader of `key`'s partition of internal topic `topic` (None: no such topic, or no
    /// leader).
    pub fn coordinator_of(&self, topic: &str, key: &str) -> Option<i32> {
        let image = self.meta.image();
        let t = image.topic_by_name(topic)?;
        let p = partition_for(key, t.partitions.len() as i32)?;
        let leader = t.partitions.get(usize::try_from(p).ok()?)?.leader;
        (leader >= 0).then_some(leader)
    }
}
