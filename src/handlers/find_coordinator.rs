//! FindCoordinator (key 10): this node coordinates every group and transactional id.
//! v0-3 ask for one key; v4+ for a batch (`coordinator_keys`).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, Broker, NONE};

/// Kafka's coordinator key types.
const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

fn answer(broker: &Broker, key_type: i8, key: &StrBytes) -> (i16, Option<String>) {
    if key_type != KEY_GROUP && key_type != KEY_TRANSACTION {
        return (
            ResponseError::InvalidRequest.code(),
            Some(format!("unknown coordinator key type {key_type}")),
        );
    }
    if key.is_empty() {
        let error = if key_type == KEY_GROUP {
            ResponseError::InvalidGroupId
        } else {
            ResponseError::InvalidRequest
        };
        return (error.code(), Some("the key is empty".into()));
    }
    let _ = broker;
    (NONE, None)
}

pub fn handle(
    broker: &Broker,
    req: &FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let node = broker.node_id();
    let host = str_bytes(broker.node.host.clone());
    let port = broker.node.port;
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let (error, message) = answer(broker, req.key_type, key);
                // Kafka leaves a v4+ coordinator's message at its default, "" (not null).
                let c = Coordinator::default()
                    .with_key(key.clone())
                    .with_error_code(error)
                    .with_error_message(Some(str_bytes(message.unwrap_or_default())));
                if error == NONE {
                    c.with_node_id(node).with_host(host.clone()).with_port(port)
                } else {
                    c.with_node_id(kafka_protocol::messages::BrokerId(-1))
                        .with_port(-1)
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (error, message) = answer(broker, req.key_type, &req.key);
    let r = FindCoordinatorResponse::default()
        .with_error_code(error)
        // v1-3: Kafka's message is `Errors.message()`, which is "NONE" on success.
        .with_error_message(if version >= 1 {
            Some(str_bytes(message.unwrap_or_else(|| "NONE".into())))
        } else {
            None
        });
    if error == NONE {
        r.with_node_id(node).with_host(host).with_port(port)
    } else {
        r.with_node_id(kafka_protocol::messages::BrokerId(-1))
            .with_port(-1)
    }
}
