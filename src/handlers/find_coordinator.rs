//! FindCoordinator (key 10): the broker that coordinates a group or a transactional id: the
//! leader of its partition of `__consumer_offsets` (groups) or `__transaction_state`
//! (transactional ids), partition `abs(javaHashCode(key)) % partitions` of the topic as the
//! metadata image has it (Kafka's `partitionFor`), with that broker's address from its
//! registration. COORDINATOR_NOT_AVAILABLE while the topic does not exist (its creation is
//! asked for, as Kafka does on the first FindCoordinator) or the partition has no live leader.
//! v0-3 ask for one key; v4+ for a batch (`coordinator_keys`).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, Broker, NONE};
use crate::config::SecurityProtocol;
use crate::coordinator::partitions::partition_for;
use crate::groups::OFFSETS_TOPIC;
use crate::meta::image::MetadataImage;
use crate::txn::coordinator::TRANSACTION_TOPIC;

/// Kafka's coordinator key types.
const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

/// A coordinator found: node id, host, port.
type Found = (i32, String, i32);

/// The leader of `key`'s partition of `topic`, if the image has one alive.
pub fn coordinator_in(
    image: &MetadataImage,
    topic: &str,
    key: &str,
    listener: SecurityProtocol,
) -> Option<Found> {
    let t = image.topic_by_name(topic)?;
    let partition = partition_for(key, t.partitions.len() as i32)?;
    let leader = t.partitions.get(partition as usize)?.leader;
    let broker = image.brokers.get(&leader).filter(|b| !b.fenced)?;
    let endpoint = broker.endpoint(listener)?;
    Some((leader, endpoint.host.clone(), i32::from(endpoint.port)))
}

fn answer(
    broker: &Broker,
    key_type: i8,
    key: &StrBytes,
    listener: SecurityProtocol,
    caller: &super::Caller,
) -> Result<Found, (i16, String)> {
    use crate::security::acl::{AclOperation, ResourceType};
    let denied = match key_type {
        KEY_GROUP => (!caller.allowed(AclOperation::Describe, ResourceType::Group, key.as_str()))
            .then_some(ResponseError::GroupAuthorizationFailed),
        KEY_TRANSACTION => (!caller.allowed(
            AclOperation::Describe,
            ResourceType::TransactionalId,
            key.as_str(),
        ))
        .then_some(ResponseError::TransactionalIdAuthorizationFailed),
        _ => None,
    };
    if let Some(e) = denied {
        return Err((e.code(), e.to_string()));
    }
    let topic = match key_type {
        KEY_GROUP => OFFSETS_TOPIC,
        KEY_TRANSACTION => TRANSACTION_TOPIC,
        other => {
            return Err((
                ResponseError::InvalidRequest.code(),
                format!("unknown coordinator key type {other}"),
            ))
        }
    };
    if key.is_empty() {
        let error = if key_type == KEY_GROUP {
            ResponseError::InvalidGroupId
        } else {
            ResponseError::InvalidRequest
        };
        return Err((error.code(), "the key is empty".into()));
    }
    let image = broker.meta.image();
    if image.topic_by_name(topic).is_none() {
        broker.create_internal_topic(topic);
    }
    coordinator_in(&image, topic, key.as_str(), listener).ok_or_else(|| {
        (
            ResponseError::CoordinatorNotAvailable.code(),
            // Kafka's `Errors.COORDINATOR_NOT_AVAILABLE.message()`.
            "The coordinator is not available.".into(),
        )
    })
}

pub fn handle(
    broker: &Broker,
    req: &FindCoordinatorRequest,
    version: i16,
    listener: SecurityProtocol,
    caller: &super::Caller,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match answer(broker, req.key_type, key, listener, caller) {
                    // Kafka leaves a v4+ coordinator's message at its default, "" (not null).
                    Ok((node, host, port)) => c
                        .with_error_code(NONE)
                        .with_error_message(Some(str_bytes("")))
                        .with_node_id(BrokerId(node))
                        .with_host(str_bytes(host))
                        .with_port(port),
                    Err((error, message)) => c
                        .with_error_code(error)
                        .with_error_message(Some(str_bytes(message)))
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    // v1-3: Kafka's message is `Errors.message()`, which is "NONE" on success.
    let message = |m: String| (version >= 1).then(|| str_bytes(m));
    match answer(broker, req.key_type, &req.key, listener, caller) {
        Ok((node, host, port)) => FindCoordinatorResponse::default()
            .with_error_code(NONE)
            .with_error_message(message("NONE".into()))
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(host))
            .with_port(port),
        Err((error, m)) => FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_error_message(message(m))
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}
