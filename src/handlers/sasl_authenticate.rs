//! SaslAuthenticate v0-2: the tokens of the mechanism chosen by SaslHandshake. PLAIN's one
//! token is checked against the user's stored SCRAM credential (PBKDF2 on the blocking
//! pool); SCRAM takes two round trips. A failure answers SASL_AUTHENTICATION_FAILED and the
//! connection closes after the answer, as in Kafka. v1+ answers carry the session lifetime
//! (`connections_max_reauth_ms`, KIP-368). After SaslHandshake v0 the tokens come bare, not
//! in requests ([`raw`]); a failure then just closes the connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};

use super::{str_bytes, NONE};
use crate::broker::Broker;
use crate::log::Records;
use crate::protocol::{Outcome, Response, Session};
use crate::security::oauthbearer::{OAuthServer, OAuthStep};
use crate::security::scram::{Credential, Mechanism, ScramServer};
use crate::security::session::Sasl;

/// What one token's step gives.
enum Step {
    /// A token for the client; the exchange goes on or (`done`) has succeeded.
    Token(Vec<u8>),
    /// Refused: the client's message (logged with the reason).
    Failed(String),
}

/// The answer, and whether the connection closes after it.
pub async fn handle(
    broker: &Broker,
    req: SaslAuthenticateRequest,
    version: i16,
    session: &mut Session,
) -> (SaslAuthenticateResponse, bool) {
    if !session.listener.sasl() {
        let answer = SaslAuthenticateResponse::default()
            .with_error_code(ResponseError::IllegalSaslState.code())
            .with_error_message(Some(str_bytes(
                "SaslAuthenticate on a listener without SASL",
            )));
        return (answer, false);
    }
    match step(broker, &req.auth_bytes, session).await {
        Step::Token(token) => {
            // The final answer carries how long the session lasts (KIP-368).
            let lifetime = match (session.auth.done(), session.auth.expires()) {
                (true, Some(e)) => e.saturating_duration_since(Instant::now()).as_millis() as u64,
                _ => 0,
            };
            let mut answer = SaslAuthenticateResponse::default()
                .with_error_code(NONE)
                .with_auth_bytes(Bytes::from(token));
            if version >= 1 {
                answer = answer.with_session_lifetime_ms(lifetime as i64);
            }
            (answer, false)
        }
        Step::Failed(message) => (
            SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                .with_error_message(Some(str_bytes(message))),
            true,
        ),
    }
}

/// A bare token after SaslHandshake v0: answered with a bare token (4-byte size, bytes).
pub async fn raw(broker: &Arc<Broker>, token: Bytes, session: &mut Session) -> Outcome {
    match step(broker, &token, session).await {
        Step::Token(answer) => {
            let mut frame = BytesMut::with_capacity(4 + answer.len());
            frame.put_i32(answer.len() as i32);
            frame.put_slice(&answer);
            Outcome::Respond(Response {
                parts: vec![Records::Bytes(frame.freeze())],
            })
        }
        Step::Failed(_) => Outcome::Close,
    }
}

/// Runs the next step of the exchange on `token`.
async fn step(broker: &Broker, token: &[u8], session: &mut Session) -> Step {
    let peer = session.peer.clone();
    let fail = |mechanism: &str, user: &str, why: String, message: String| {
        tracing::warn!(%peer, mechanism, user, reason = %why, "SASL authentication failed");
        Step::Failed(message)
    };
    if let Some(mut server) = session.auth.take_oauth() {
        // The client acknowledged the error challenge: the exchange fails.
        let why = match server.step(token) {
            Err(e) => e.to_string(),
            Ok(_) => "an exchange past its challenge".into(),
        };
        return fail("OAUTHBEARER", "", why, OAUTH_FAILED.into());
    }
    if let Some((sasl, raw)) = session.auth.chosen() {
        return match sasl {
            Sasl::Plain => plain(broker, token, session, fail).await,
            Sasl::OAuthBearer => {
                let Some(validator) = broker.oauth_validator() else {
                    return fail(
                        "OAUTHBEARER",
                        "",
                        "no validator".into(),
                        OAUTH_FAILED.into(),
                    );
                };
                let now = crate::meta::network::wall_clock_ms();
                let mut server = OAuthServer::new(validator, now);
                match server.step(token) {
                    Ok(OAuthStep::Done(valid)) => {
                        // The session ends with the token at the latest (KIP-368).
                        let left = Duration::from_millis((valid.lifetime_ms - now).max(0) as u64);
                        let expires = match expiry(broker) {
                            Some(e) => e.min(Instant::now() + left),
                            None => Instant::now() + left,
                        };
                        match session.auth.succeed(&valid.principal, Some(expires)) {
                            Ok(()) => Step::Token(Vec::new()),
                            Err(why) => {
                                fail("OAUTHBEARER", &valid.principal, why, OAUTH_FAILED.into())
                            }
                        }
                    }
                    Ok(OAuthStep::Challenge(challenge)) => {
                        session.auth.continue_oauth(server, raw);
                        Step::Token(challenge)
                    }
                    Err(e) => fail("OAUTHBEARER", "", e.to_string(), OAUTH_FAILED.into()),
                }
            }
            Sasl::Scram(m) => {
                let mut server = match ScramServer::new(m) {
                    Ok(s) => s,
                    Err(e) => return fail(m.name(), "", e.to_string(), scram_failed(m)),
                };
                let first = match server.client_first(token) {
                    Ok(f) => f,
                    Err(e) => return fail(m.name(), "", e.to_string(), scram_failed(m)),
                };
                if first.token_auth {
                    return fail(
                        m.name(),
                        &first.username,
                        "delegation tokens are not supported".into(),
                        scram_failed(m),
                    );
                }
                let credential = stored(broker, &first.username, m);
                match server.server_first(credential) {
                    Ok(answer) => {
                        session
                            .auth
                            .continue_scram(server, raw, first.username.clone());
                        Step::Token(answer)
                    }
                    Err(e) => fail(m.name(), &first.username, e.to_string(), scram_failed(m)),
                }
            }
        };
    }
    if let Some((mut server, named)) = session.auth.take_scram() {
        let m = server.mechanism();
        return match server.client_final(token) {
            Ok((answer, user)) => match session.auth.succeed(&user, expiry(broker)) {
                Ok(()) => {
                    tracing::debug!(%peer, user, mechanism = m.name(), "authenticated");
                    Step::Token(answer)
                }
                Err(why) => fail(m.name(), &user, why, scram_failed(m)),
            },
            Err(e) => fail(m.name(), &named, e.to_string(), scram_failed(m)),
        };
    }
    fail(
        "",
        "",
        "a token outside an exchange".into(),
        "Unexpected SASL token".into(),
    )
}

/// SASL/PLAIN: `[authzid] NUL user NUL password`, checked against the user's SCRAM
/// credential.
async fn plain(
    broker: &Broker,
    token: &[u8],
    session: &mut Session,
    fail: impl Fn(&str, &str, String, String) -> Step,
) -> Step {
    const MESSAGE: &str = "Authentication failed: Invalid username or password";
    let auth = match crate::security::plain::parse(token) {
        Ok(a) => a,
        Err(e) => return fail("PLAIN", "", e.to_string(), e.to_string()),
    };
    let credential = [Mechanism::Sha512, Mechanism::Sha256]
        .into_iter()
        .find_map(|m| stored(broker, &auth.username, m).map(|c| (m, c)));
    let Some((m, credential)) = credential else {
        return fail(
            "PLAIN",
            &auth.username,
            "no credential".into(),
            MESSAGE.into(),
        );
    };
    let user = auth.username.clone();
    let password = auth.password;
    // PBKDF2 with thousands of iterations: milliseconds of CPU, off the runtime's workers.
    let matches = crate::threads::spawn_blocking(move || credential.verify_password(m, &password))
        .await
        .unwrap_or(false);
    if !matches {
        return fail("PLAIN", &user, "wrong password".into(), MESSAGE.into());
    }
    match session.auth.succeed(&user, expiry(broker)) {
        Ok(()) => Step::Token(Vec::new()),
        Err(why) => fail("PLAIN", &user, why, MESSAGE.into()),
    }
}

/// The message for a failed OAUTHBEARER exchange (Kafka sends the challenge's JSON).
const OAUTH_FAILED: &str = "Authentication failed: {\"status\":\"invalid_token\"}";

/// Kafka's message for a failed SCRAM exchange.
fn scram_failed(m: Mechanism) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
        m.name()
    )
}

/// The user's stored credential for `m`.
fn stored(broker: &Broker, user: &str, m: Mechanism) -> Option<Credential> {
    broker.meta.image().scram_credential(user, m)
}

/// When a session authenticated now ends (`connections_max_reauth_ms`).
fn expiry(broker: &Broker) -> Option<Instant> {
    match broker.config.connections_max_reauth_ms {
        0 => None,
        ms => Some(Instant::now() + Duration::from_millis(ms)),
    }
}
