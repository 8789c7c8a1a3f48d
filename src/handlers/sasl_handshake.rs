//! SaslHandshake v0-1: the client names its SASL mechanism. Answered with the enabled
//! mechanisms; an unsupported one gets UNSUPPORTED_SASL_MECHANISM and the connection closes
//! after the answer (Kafka's `SaslServerAuthenticator`). On a listener without SASL (or out
//! of order) the answer is ILLEGAL_SASL_STATE, as Kafka's `KafkaApis` gives.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};

use super::{str_bytes, NONE};
use crate::broker::Broker;
use crate::protocol::Session;
use crate::security::session::Sasl;

/// The answer, and whether the connection closes after it.
pub fn handle(
    broker: &Broker,
    req: &SaslHandshakeRequest,
    version: i16,
    session: &mut Session,
) -> (SaslHandshakeResponse, bool) {
    let enabled = &broker.config.sasl_enabled_mechanisms;
    let answer = SaslHandshakeResponse::default()
        .with_mechanisms(enabled.iter().map(|m| str_bytes(m.clone())).collect());
    let name = req.mechanism.as_str();
    if !session.listener.sasl() {
        return (
            answer.with_error_code(ResponseError::IllegalSaslState.code()),
            false,
        );
    }
    let chosen = Sasl::from_name(name).filter(|_| enabled.iter().any(|m| m == name));
    let Some(sasl) = chosen else {
        tracing::info!(peer = %session.peer, mechanism = name,
            "closing connection: unsupported SASL mechanism requested");
        return (
            answer.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
            true,
        );
    };
    match session.auth.handshake(sasl, version == 0) {
        Ok(()) => (answer.with_error_code(NONE), false),
        Err(why) => {
            tracing::info!(peer = %session.peer, mechanism = name, why, "closing connection: SaslHandshake refused");
            (
                answer.with_error_code(ResponseError::IllegalSaslState.code()),
                true,
            )
        }
    }
}
