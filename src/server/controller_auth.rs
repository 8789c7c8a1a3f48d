//! Who may speak on the controller listener: TLS (with the peer's certificate as its
//! principal under mutual TLS) and SASL for `SSL`, `SASL_PLAINTEXT` and `SASL_SSL`
//! controller listeners, then an authorization check, all before the first request reaches
//! the controller's handler. Peers are the other nodes, which log in through
//! `meta::connector` as the inter-broker user: SaslHandshake v1, then SaslAuthenticate v0-2
//! with PLAIN or SCRAM, as on the client listeners (Kafka's `SaslServerAuthenticator`). A
//! failed or late authentication, any other request first, or a principal the authorizer
//! refuses closes the connection with a log line.
//!
//! Credentials come from the metadata image (the SCRAM credentials of the metadata log).
//! While the image has none for a user, that user's `bootstrap_users` entry counts (Kafka's
//! SCRAM credentials bootstrapped at format time, KIP-900): controllers of a new cluster
//! must authenticate each other before there is any metadata log to read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::connection::{next_buffered_frame, read_more, Stream};
use crate::config::SecurityProtocol;
use crate::security::scram::{Credential, Mechanism, ScramServer};
use crate::security::session::ANONYMOUS;
use crate::security::tls::Tls;

/// Refused peers are logged at most every 10 s.
static REFUSED_LOG: crate::log_every::LogLimit = crate::log_every::LogLimit::new();

const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;

/// The user's credential for a mechanism, if it has one.
pub type CredentialLookup = Arc<dyn Fn(&str, Mechanism) -> Option<Credential> + Send + Sync>;
/// Whether `(principal, host)` may use the controller listener.
pub type Admission = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// How a controller listener authenticates and admits its peers.
pub struct PeerSecurity {
    pub protocol: SecurityProtocol,
    /// The server TLS configuration (reloaded on SIGHUP), for `SSL` and `SASL_SSL`.
    pub tls: Option<Arc<Tls>>,
    /// The SASL mechanisms accepted (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    pub mechanisms: Vec<String>,
    pub credentials: CredentialLookup,
    pub admit: Admission,
    /// Largest frame before authentication (`sasl_server_max_receive_size`).
    pub max_receive: usize,
    /// TLS handshake and SASL exchange must end within this (`authentication_timeout_ms`).
    pub timeout: Duration,
}

impl PeerSecurity {
    /// Plain TCP; every peer is `User:ANONYMOUS` and admitted.
    pub fn plaintext() -> PeerSecurity {
        PeerSecurity {
            protocol: SecurityProtocol::Plaintext,
            tls: None,
            mechanisms: Vec::new(),
            credentials: Arc::new(|_, _| None),
            admit: Arc::new(|_, _| true),
            max_receive: 512 * 1024,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A `bootstrap_users` lookup: SCRAM credentials derived from the configured passwords
/// (PBKDF2; call it on the blocking pool).
pub fn bootstrap_credentials(
    users: &[(String, String)],
) -> HashMap<(String, Mechanism), Credential> {
    let mut out = HashMap::new();
    for (name, password) in users {
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            let Ok(salt) = Credential::random_salt() else {
                continue;
            };
            if let Ok(c) = Credential::from_password(m, password, &salt, Mechanism::MIN_ITERATIONS)
            {
                out.insert((name.clone(), m), c);
            }
        }
    }
    out
}

/// Takes an accepted connection through TLS, SASL and the admission check; the stream and
/// what was read past the authentication (`None`, logged, when the peer is refused).
pub async fn authenticate(
    socket: TcpStream,
    peer: SocketAddr,
    security: &PeerSecurity,
) -> Option<(Stream, BytesMut)> {
    let peer_name = peer.to_string();
    let deadline = tokio::time::Instant::now() + security.timeout;
    let (mut stream, certified) = if security.protocol.tls() {
        let Some(tls) = &security.tls else {
            refused(
                &peer_name,
                "",
                "a TLS controller listener without a TLS configuration",
            );
            return None;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let stream = match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                refused(&peer_name, "", &format!("TLS handshake failed: {e}"));
                return None;
            }
            Err(_) => {
                refused(
                    &peer_name,
                    "",
                    "TLS handshake not done in authentication_timeout_ms",
                );
                return None;
            }
        };
        let certified = match stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
        {
            None => None,
            Some(c) => match crate::security::principal::certificate_principal(c) {
                Ok(p) => Some(p),
                Err(e) => {
                    refused(
                        &peer_name,
                        "",
                        &format!("unreadable client certificate: {e}"),
                    );
                    return None;
                }
            },
        };
        (Stream::Tls(Box::new(stream)), certified)
    } else {
        (Stream::Plain(socket), None)
    };
    let mut buf = BytesMut::new();
    let principal = if security.protocol.sasl() {
        let exchange = sasl_exchange(&mut stream, &mut buf, security, &peer_name);
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(_) => {
                refused(
                    &peer_name,
                    "",
                    "not authenticated in authentication_timeout_ms",
                );
                return None;
            }
        }
    } else {
        certified.unwrap_or_else(|| ANONYMOUS.to_string())
    };
    let host = peer.ip().to_string();
    if !(security.admit)(&principal, &host) {
        refused(
            &peer_name,
            &principal,
            "not authorized: CLUSTER_ACTION on the cluster is needed (a super user, say)",
        );
        return None;
    }
    tracing::debug!(peer = %peer_name, %principal, "controller listener: peer authenticated");
    Some((stream, buf))
}

fn refused(peer: &str, principal: &str, why: &str) {
    if REFUSED_LOG.allow(Duration::from_secs(10)) {
        tracing::warn!(%peer, principal, reason = why, "controller listener: peer refused; closing connection");
    }
}

/// Where the exchange stands.
enum Stage {
    Handshake,
    Chosen(String),
    Scram(Box<ScramServer>, String),
}

/// SaslHandshake v1, then SaslAuthenticate until the mechanism's exchange ends: the
/// principal, or None (answered and logged) when the peer fails.
async fn sasl_exchange(
    stream: &mut Stream,
    buf: &mut BytesMut,
    security: &PeerSecurity,
    peer: &str,
) -> Option<String> {
    let mut stage = Stage::Handshake;
    loop {
        let frame = loop {
            match next_buffered_frame(buf, security.max_receive, peer) {
                Err(()) => return None,
                Ok(Some(frame)) => break frame,
                Ok(None) => {
                    if !read_more(stream, buf, security.max_receive, peer, None).await {
                        return None;
                    }
                }
            }
        };
        let request = super::controller_listener::decode_header(frame, peer)?;
        let mut body = request.body.clone();
        match (request.api_key, &stage) {
            (SASL_HANDSHAKE, Stage::Handshake) if request.version == 1 => {
                let Ok(req) = SaslHandshakeRequest::decode(&mut body, 1) else {
                    refused(peer, "", "bad SaslHandshake request");
                    return None;
                };
                let mechanism = req.mechanism.to_string();
                let known = security.mechanisms.contains(&mechanism);
                let answer = SaslHandshakeResponse::default()
                    .with_error_code(if known {
                        0
                    } else {
                        ResponseError::UnsupportedSaslMechanism.code()
                    })
                    .with_mechanisms(
                        security
                            .mechanisms
                            .iter()
                            .map(|m| StrBytes::from_string(m.clone()))
                            .collect(),
                    );
                respond(stream, &request, &answer, 1, peer).await?;
                if !known {
                    refused(peer, "", &format!("SASL mechanism {mechanism} not enabled"));
                    return None;
                }
                stage = Stage::Chosen(mechanism);
            }
            (SASL_AUTHENTICATE, Stage::Chosen(_) | Stage::Scram(..))
                if (0..=2).contains(&request.version) =>
            {
                let Ok(req) = SaslAuthenticateRequest::decode(&mut body, request.version) else {
                    refused(peer, "", "bad SaslAuthenticate request");
                    return None;
                };
                let (token, principal) = match step(&mut stage, &req.auth_bytes, security).await {
                    Ok(done) => done,
                    Err((user, why)) => {
                        let answer = SaslAuthenticateResponse::default()
                            .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                            .with_error_message(Some(StrBytes::from_static_str(
                                "Authentication failed: invalid credentials",
                            )));
                        let _ = respond(stream, &request, &answer, request.version, peer).await;
                        refused(peer, &user, &why);
                        return None;
                    }
                };
                let answer =
                    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token));
                respond(stream, &request, &answer, request.version, peer).await?;
                if let Some(principal) = principal {
                    return Some(principal);
                }
            }
            (key, _) => {
                refused(
                    peer,
                    "",
                    &format!(
                        "request (API key {key} v{}) before authenticating",
                        request.version
                    ),
                );
                return None;
            }
        }
    }
}

/// One SaslAuthenticate token: the answer token, and the principal once the exchange has
/// succeeded; Err((user, reason)) when it fails.
async fn step(
    stage: &mut Stage,
    token: &[u8],
    security: &PeerSecurity,
) -> Result<(Vec<u8>, Option<String>), (String, String)> {
    match std::mem::replace(stage, Stage::Handshake) {
        Stage::Handshake => Err((String::new(), "a token before SaslHandshake".into())),
        Stage::Chosen(mechanism) => match Mechanism::from_name(&mechanism) {
            None => {
                // PLAIN: the password against the user's SCRAM credential.
                let auth = crate::security::plain::parse(token)
                    .map_err(|e| (String::new(), e.to_string()))?;
                let user = auth.username.clone();
                let found = [Mechanism::Sha512, Mechanism::Sha256]
                    .into_iter()
                    .find_map(|m| (security.credentials)(&user, m).map(|c| (m, c)));
                let Some((m, credential)) = found else {
                    return Err((user, "no credential".into()));
                };
                let password = auth.password;
                let matches = crate::threads::spawn_blocking(move || {
                    credential.verify_password(m, &password)
                })
                .await
                .unwrap_or(false);
                if !matches {
                    return Err((user, "wrong password".into()));
                }
                Ok((Vec::new(), Some(format!("User:{user}"))))
            }
            Some(m) => {
                let mut server = ScramServer::new(m).map_err(|e| (String::new(), e.to_string()))?;
                let first = server
                    .client_first(token)
                    .map_err(|e| (String::new(), e.to_string()))?;
                if first.token_auth {
                    return Err((first.username, "delegation tokens are not supported".into()));
                }
                let credential = (security.credentials)(&first.username, m);
                let answer = server
                    .server_first(credential)
                    .map_err(|e| (first.username.clone(), e.to_string()))?;
                *stage = Stage::Scram(Box::new(server), first.username);
                Ok((answer, None))
            }
        },
        Stage::Scram(mut server, named) => {
            let (answer, user) = server
                .client_final(token)
                .map_err(|e| (named, e.to_string()))?;
            Ok((answer, Some(format!("User:{user}"))))
        }
    }
}

/// Writes one answer (header as the listener's) and flushes it; None when the write fails.
async fn respond<R: Encodable>(
    stream: &mut Stream,
    request: &super::controller_listener::Request,
    answer: &R,
    version: i16,
    peer: &str,
) -> Option<()> {
    let mut body = BytesMut::new();
    if let Err(e) = answer.encode(&mut body, version) {
        tracing::error!(%peer, error = %e, "controller listener: cannot encode a SASL answer");
        return None;
    }
    let header = super::controller_listener::response_header(request, body.len(), peer)?;
    let written = async {
        stream.write_all(&header).await?;
        stream.write_all(&body).await?;
        stream.flush().await
    };
    match written.await {
        Ok(()) => Some(()),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "write failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::meta::connector::Connector;
    use crate::server::controller_listener::{serve, ControllerHandler};
    use bytes::{Buf, BufMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::watch;

    /// Answers the body it got.
    fn echo() -> ControllerHandler {
        Arc::new(|_, _, body: Bytes| Box::pin(async move { Some(body) }))
    }

    /// A SASL_PLAINTEXT controller listener knowing `broker:pw` (bootstrap user), admitting
    /// only `User:broker`.
    async fn start(mechanisms: &[&str]) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let known = bootstrap_credentials(&[("broker".into(), "pw".into())]);
        let security = PeerSecurity {
            protocol: SecurityProtocol::SaslPlaintext,
            mechanisms: mechanisms.iter().map(|m| m.to_string()).collect(),
            credentials: Arc::new(move |u, m| known.get(&(u.to_string(), m)).cloned()),
            admit: Arc::new(|principal, _| principal == "User:broker"),
            timeout: Duration::from_millis(500),
            ..PeerSecurity::plaintext()
        };
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, echo(), 1 << 20, Arc::new(security), rx));
        (addr, tx)
    }

    fn connector(mechanism: &str, user: &str, password: &str) -> Arc<Connector> {
        let config = Config {
            controller_listen: Some("SASL_PLAINTEXT://127.0.0.1:9093".into()),
            controller_sasl_mechanism: Some(mechanism.into()),
            inter_broker_sasl_username: Some(user.into()),
            inter_broker_sasl_password: Some(password.into()),
            ..Config::default()
        };
        Connector::for_controller(&config).unwrap().unwrap()
    }

    /// One private-key request (header v2) and its answer's body, on an open stream.
    async fn echo_call<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        stream: &mut S,
        body: &[u8],
    ) -> std::io::Result<Vec<u8>> {
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        frame.put_i16(32000);
        frame.put_i16(0);
        frame.put_i32(5);
        frame.put_i16(-1);
        frame.put_u8(0);
        frame.put_slice(body);
        let len = (frame.len() - 4) as i32;
        frame[0..4].copy_from_slice(&len.to_be_bytes());
        stream.write_all(&frame).await?;
        let len = stream.read_i32().await?;
        let mut answer = vec![0; len as usize];
        stream.read_exact(&mut answer).await?;
        let mut answer = Bytes::from(answer);
        assert_eq!(answer.get_i32(), 5, "correlation id");
        Ok(answer.to_vec())
    }

    #[tokio::test]
    async fn scram_and_plain_peers_are_served_after_authenticating() {
        let (addr, _stop) = start(&["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]).await;
        for m in ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] {
            let mut stream = connector(m, "broker", "pw")
                .connect(&addr.to_string())
                .await
                .unwrap_or_else(|e| panic!("{m}: {e}"));
            assert_eq!(echo_call(&mut stream, b"raft").await.unwrap(), b"raft");
            assert_eq!(echo_call(&mut stream, b"again").await.unwrap(), b"again");
        }
    }

    #[tokio::test]
    async fn wrong_passwords_unknown_users_and_mechanisms_are_refused() {
        let (addr, _stop) = start(&["SCRAM-SHA-512"]).await;
        for (m, user, password) in [
            ("SCRAM-SHA-512", "broker", "wrong"),
            ("SCRAM-SHA-512", "nobody", "pw"),
            ("PLAIN", "broker", "pw"),
        ] {
            let err = connector(m, user, password)
                .connect(&addr.to_string())
                .await
                .err()
                .unwrap_or_else(|| panic!("{m} {user}/{password} was let in"));
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{m}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn a_principal_not_admitted_is_closed_after_authenticating() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let known = bootstrap_credentials(&[("other".into(), "pw".into())]);
        let security = PeerSecurity {
            protocol: SecurityProtocol::SaslPlaintext,
            mechanisms: vec!["SCRAM-SHA-512".into()],
            credentials: Arc::new(move |u, m| known.get(&(u.to_string(), m)).cloned()),
            admit: Arc::new(|principal, _| principal == "User:broker"),
            ..PeerSecurity::plaintext()
        };
        let (_tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, echo(), 1 << 20, Arc::new(security), rx));
        // The exchange succeeds (the client cannot tell), then the listener closes.
        let mut stream = connector("SCRAM-SHA-512", "other", "pw")
            .connect(&addr.to_string())
            .await
            .unwrap();
        assert!(echo_call(&mut stream, b"raft").await.is_err());
    }

    #[tokio::test]
    async fn requests_before_authenticating_and_silent_peers_are_closed() {
        let (addr, _stop) = start(&["SCRAM-SHA-512"]).await;
        // A raft RPC straight away.
        let mut socket = TcpStream::connect(addr).await.unwrap();
        assert!(echo_call(&mut socket, b"raft").await.is_err());
        // A frame over the pre-authentication limit (`sasl_server_max_receive_size`).
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(&(1i32 << 20).to_be_bytes()).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest));
        assert!(read.await.is_ok_and(|r| r.is_ok_and(|n| n == 0)));
        // Nothing at all: closed after the authentication timeout.
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest));
        assert!(read.await.is_ok_and(|r| r.is_ok_and(|n| n == 0)));
    }
}
