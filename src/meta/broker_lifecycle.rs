//! Broker registration and heartbeats on the wire: Kafka's BrokerRegistration (key 62, v0-4)
//! and BrokerHeartbeat (key 63, v0-1), as KRaft brokers send them to the active controller's
//! listener. A broker colocated with the active controller skips the wire; the decisions are
//! the controller's either way ([`super::controller`]).

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::broker_registration_request::Listener;
use kafka_protocol::messages::{
    ApiKey, BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerId, BrokerRegistrationRequest,
    BrokerRegistrationResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::controller::{ControllerError, ControllerRequest, ControllerResponse, ControllerResult};
use super::records::Endpoint;

/// The versions this node sends.
pub const REGISTRATION_VERSION: i16 = 4;
pub const HEARTBEAT_VERSION: i16 = 1;
pub const REGISTRATION_KEY: i16 = ApiKey::BrokerRegistration as i16;
pub const HEARTBEAT_KEY: i16 = ApiKey::BrokerHeartbeat as i16;

fn encode(message: &impl Encodable, version: i16) -> Result<Bytes, ControllerError> {
    let mut out = BytesMut::new();
    message
        .encode(&mut out, version)
        .map_err(|e| ControllerError::Internal(format!("cannot encode: {e}")))?;
    Ok(out.freeze())
}

/// The wire form of a registration or heartbeat request: (api key, version, body). None for
/// other requests (they travel as forwarded JSON).
pub fn to_wire(request: &ControllerRequest) -> Option<Result<(i16, i16, Bytes), ControllerError>> {
    match request {
        ControllerRequest::RegisterBroker {
            id,
            cluster_id,
            incarnation,
            previous_epoch,
            endpoints,
            rack,
        } => {
            let r = BrokerRegistrationRequest::default()
                .with_broker_id(BrokerId(*id))
                .with_cluster_id(StrBytes::from_string(cluster_id.clone()))
                .with_incarnation_id(*incarnation)
                .with_listeners(
                    endpoints
                        .iter()
                        .map(|e| {
                            Listener::default()
                                .with_name(StrBytes::from_string(e.name.clone()))
                                .with_host(StrBytes::from_string(e.host.clone()))
                                .with_port(e.port)
                                .with_security_protocol(e.security_protocol)
                        })
                        .collect(),
                )
                .with_rack(rack.clone().map(StrBytes::from_string))
                .with_previous_broker_epoch(previous_epoch.unwrap_or(-1));
            Some(
                encode(&r, REGISTRATION_VERSION)
                    .map(|b| (REGISTRATION_KEY, REGISTRATION_VERSION, b)),
            )
        }
        ControllerRequest::Heartbeat {
            id,
            epoch,
            applied,
            want_shutdown,
        } => {
            let r = BrokerHeartbeatRequest::default()
                .with_broker_id(BrokerId(*id))
                .with_broker_epoch(*epoch)
                .with_current_metadata_offset(*applied as i64)
                .with_want_fence(false)
                .with_want_shut_down(*want_shutdown);
            Some(encode(&r, HEARTBEAT_VERSION).map(|b| (HEARTBEAT_KEY, HEARTBEAT_VERSION, b)))
        }
        _ => None,
    }
}

fn error_from_code(code: i16) -> ControllerError {
    match ResponseError::try_from_code(code) {
        Some(ResponseError::StaleBrokerEpoch) => ControllerError::StaleBrokerEpoch,
        Some(ResponseError::BrokerIdNotRegistered) => ControllerError::BrokerNotRegistered,
        Some(ResponseError::NotController) => ControllerError::NotController(None),
        Some(ResponseError::InconsistentClusterId) => ControllerError::InconsistentClusterId,
        Some(e) => ControllerError::Internal(format!("the controller answered {e:?}")),
        None => ControllerError::Internal(format!("the controller answered error {code}")),
    }
}

fn code_of(e: &ControllerError) -> i16 {
    match e {
        ControllerError::StaleBrokerEpoch => ResponseError::StaleBrokerEpoch.code(),
        ControllerError::BrokerNotRegistered => ResponseError::BrokerIdNotRegistered.code(),
        ControllerError::NotController(_) => ResponseError::NotController.code(),
        ControllerError::InconsistentClusterId => ResponseError::InconsistentClusterId.code(),
        ControllerError::Timeout => ResponseError::RequestTimedOut.code(),
        _ => ResponseError::UnknownServerError.code(),
    }
}

/// Decodes the controller's answer to [`to_wire`]'s request. The index to wait for is the
/// registration's epoch (its record's log index), 0 for a heartbeat.
pub fn from_wire(api_key: i16, version: i16, mut body: Bytes) -> (ControllerResult, u64) {
    let undecodable = |e: anyhow::Error| {
        (
            Err(ControllerError::Internal(format!(
                "undecodable controller answer: {e}"
            ))),
            0,
        )
    };
    if api_key == REGISTRATION_KEY {
        match BrokerRegistrationResponse::decode(&mut body, version) {
            Ok(r) if r.error_code == 0 => (
                Ok(ControllerResponse::Registered {
                    epoch: r.broker_epoch,
                }),
                u64::try_from(r.broker_epoch).unwrap_or(0),
            ),
            Ok(r) => (Err(error_from_code(r.error_code)), 0),
            Err(e) => undecodable(e),
        }
    } else {
        match BrokerHeartbeatResponse::decode(&mut body, version) {
            Ok(r) if r.error_code == 0 => (
                Ok(ControllerResponse::Heartbeat {
                    fenced: r.is_fenced,
                    shutdown_ok: r.should_shut_down,
                }),
                0,
            ),
            Ok(r) => (Err(error_from_code(r.error_code)), 0),
            Err(e) => undecodable(e),
        }
    }
}

/// The controller listener's side: decodes a registration or heartbeat into a controller
/// request. None if the body cannot be decoded (the connection is closed).
pub fn request_from_wire(api_key: i16, version: i16, mut body: Bytes) -> Option<ControllerRequest> {
    if api_key == REGISTRATION_KEY {
        let r = BrokerRegistrationRequest::decode(&mut body, version).ok()?;
        Some(ControllerRequest::RegisterBroker {
            id: r.broker_id.0,
            cluster_id: r.cluster_id.to_string(),
            incarnation: r.incarnation_id,
            previous_epoch: (version >= 3 && r.previous_broker_epoch >= 0)
                .then_some(r.previous_broker_epoch),
            endpoints: r
                .listeners
                .iter()
                .map(|l| Endpoint {
                    name: l.name.to_string(),
                    host: l.host.to_string(),
                    port: l.port,
                    security_protocol: l.security_protocol,
                })
                .collect(),
            rack: r.rack.map(|r| r.to_string()),
        })
    } else {
        let r = BrokerHeartbeatRequest::decode(&mut body, version).ok()?;
        Some(ControllerRequest::Heartbeat {
            id: r.broker_id.0,
            epoch: r.broker_epoch,
            applied: u64::try_from(r.current_metadata_offset).unwrap_or(0),
            want_shutdown: r.want_shut_down,
        })
    }
}

/// Encodes the controller's answer in the request's API.
pub fn response_to_wire(api_key: i16, version: i16, result: &ControllerResult) -> Option<Bytes> {
    if api_key == REGISTRATION_KEY {
        let r = match result {
            Ok(ControllerResponse::Registered { epoch }) => {
                BrokerRegistrationResponse::default().with_broker_epoch(*epoch)
            }
            Ok(_) => BrokerRegistrationResponse::default()
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_broker_epoch(-1),
            Err(e) => BrokerRegistrationResponse::default()
                .with_error_code(code_of(e))
                .with_broker_epoch(-1),
        };
        encode(&r, version).ok()
    } else {
        let r = match result {
            Ok(ControllerResponse::Heartbeat {
                fenced,
                shutdown_ok,
            }) => BrokerHeartbeatResponse::default()
                .with_is_caught_up(!*fenced)
                .with_is_fenced(*fenced)
                .with_should_shut_down(*shutdown_ok),
            Ok(_) => BrokerHeartbeatResponse::default()
                .with_error_code(ResponseError::UnknownServerError.code()),
            Err(e) => BrokerHeartbeatResponse::default()
                .with_error_code(code_of(e))
                .with_is_fenced(true),
        };
        encode(&r, version).ok()
    }
}
