//! How a node opens its connections to the other brokers' Kafka listeners (followers'
//! fetches, transaction markers; Kafka's `inter.broker.listener.name`) and to the controller
//! listeners (raft RPCs, registrations, forwarded requests; the protocol of
//! `controller_listen`): TCP, then TLS when the protocol has it (presenting the node's own
//! certificate if the peer asks for one), then SASL when it has that (SaslHandshake v1 and
//! SaslAuthenticate v2, with SCRAM or PLAIN). What comes out is a stream the caller then
//! speaks the Kafka protocol over, as on a PLAINTEXT connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{Config, SecurityProtocol};
use crate::security::scram::{Mechanism, ScramClient};

/// Failed authentications to peers are logged at most every 10 s.
static AUTH_FAILED_LOG: crate::log_every::LogLimit = crate::log_every::LogLimit::new();

/// Largest SASL answer read from a peer.
const MAX_SASL_FRAME: usize = 64 * 1024;

/// A connection to a peer: plain TCP or TLS over it.
pub enum PeerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The SASL login of the brokers' own connections.
#[derive(Clone)]
struct Login {
    mechanism: String,
    username: String,
    password: String,
}

/// What the brokers' own connections to each other speak (`inter_broker_listener`).
pub struct Connector {
    protocol: SecurityProtocol,
    tls: Option<tokio_rustls::TlsConnector>,
    login: Option<Login>,
    client_id: String,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl Connector {
    /// The connector `inter_broker_listener` asks for; None for PLAINTEXT (or unset), where
    /// a connection is plain TCP. Reads the CA file (at start-up).
    pub fn from_config(config: &Config) -> Result<Option<Arc<Connector>>, String> {
        match config.inter_broker_protocol()? {
            None => Ok(None),
            Some(protocol) => Connector::build(
                config,
                protocol,
                &config.inter_broker_sasl_mechanism,
                config
                    .inter_broker_sasl_username
                    .clone()
                    .zip(config.inter_broker_sasl_password.clone()),
                format!("ottla-broker-{}", config.node_id),
            ),
        }
    }

    /// The connector of connections to controller listeners (the raft RPCs, brokers'
    /// registrations and forwarded requests): the protocol of `controller_listen`, with
    /// `controller_sasl_mechanism`. None for PLAINTEXT or without a controller listener.
    pub fn for_controller(config: &Config) -> Result<Option<Arc<Connector>>, String> {
        match config.controller_listener()? {
            None => Ok(None),
            Some((protocol, _)) => Connector::build(
                config,
                protocol,
                config.controller_mechanism(),
                config.controller_login(),
                format!("ottla-node-{}", config.node_id),
            ),
        }
    }

    fn build(
        config: &Config,
        protocol: SecurityProtocol,
        mechanism: &str,
        credentials: Option<(String, String)>,
        client_id: String,
    ) -> Result<Option<Arc<Connector>>, String> {
        if protocol == SecurityProtocol::Plaintext {
            return Ok(None);
        }
        let tls = if protocol.tls() {
            let ca = config
                .inter_broker_tls_ca_file
                .as_ref()
                .or(config.tls_client_ca_file.as_ref())
                .ok_or("inter_broker_tls_ca_file is needed")?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in crate::security::tls::read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS protocol versions: {e}"))?
                .with_root_certificates(roots);
            // The node's own certificate, sent when a peer asks for one (a listener with
            // `tls_client_auth`), as Kafka's brokers present their keystore's.
            let client = match crate::security::tls::TlsFiles::from_config(config) {
                Some(files) => builder.with_client_cert_resolver(files.client_certificate()?),
                None => builder.with_no_client_auth(),
            };
            Some(tokio_rustls::TlsConnector::from(Arc::new(client)))
        } else {
            None
        };
        let login = match credentials {
            Some((username, password)) if protocol.sasl() => Some(Login {
                mechanism: mechanism.to_string(),
                username,
                password,
            }),
            None if protocol.sasl() => return Err("a SASL user and password are needed".into()),
            _ => None,
        };
        Ok(Some(Arc::new(Connector {
            protocol,
            tls,
            login,
            client_id,
        })))
    }

    /// The listener protocol whose endpoints peers are reached at.
    pub fn protocol(&self) -> SecurityProtocol {
        self.protocol
    }

    /// Connects to `addr` (`HOST:PORT`), with TLS and SASL as configured.
    pub async fn connect(&self, addr: &str) -> io::Result<PeerStream> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let mut stream = match &self.tls {
            None => PeerStream::Plain(tcp),
            Some(tls) => {
                let host = addr
                    .rsplit_once(':')
                    .map_or(addr, |(h, _)| h)
                    .trim_matches(|c| c == '[' || c == ']')
                    .to_string();
                let name = ServerName::try_from(host)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                PeerStream::Tls(Box::new(tls.connect(name, tcp).await?))
            }
        };
        if let Some(login) = &self.login {
            if let Err(e) = self.authenticate(&mut stream, login).await {
                // A configuration error operators must see (wrong password, mechanism not
                // enabled, user without a credential), at most every 10 s.
                if AUTH_FAILED_LOG.allow(std::time::Duration::from_secs(10)) {
                    tracing::warn!(peer = addr, user = %login.username, mechanism = %login.mechanism,
                        protocol = self.protocol.name(), client_id = %self.client_id,
                        error = %e, "cannot authenticate to a peer (inter_broker_listener, controller_listen)");
                }
                return Err(e);
            }
        }
        Ok(stream)
    }

    async fn authenticate(&self, stream: &mut PeerStream, login: &Login) -> io::Result<()> {
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_string(login.mechanism.clone()));
        let answer: SaslHandshakeResponse = self
            .call(stream, ApiKey::SaslHandshake, 1, 0, &handshake)
            .await?;
        if answer.error_code != 0 {
            return Err(refused(format!(
                "SaslHandshake for {} refused with error {} (enabled: {:?})",
                login.mechanism, answer.error_code, answer.mechanisms
            )));
        }
        match Mechanism::from_name(&login.mechanism) {
            None => {
                // PLAIN: authzid NUL username NUL password.
                let token = format!("\0{}\0{}", login.username, login.password);
                self.authenticate_step(stream, token.into_bytes(), 1)
                    .await?;
            }
            Some(m) => {
                let client = ScramClient::new(m, &login.username, &login.password)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                let server_first = self.authenticate_step(stream, client.first(), 1).await?;
                let (client_final, expected) = client
                    .finish(&server_first)
                    .map_err(|e| refused(e.to_string()))?;
                let server_final = self.authenticate_step(stream, client_final, 2).await?;
                ScramClient::check_final(&server_final, &expected)
                    .map_err(|_| refused("the peer did not prove it knows the credential"))?;
            }
        }
        Ok(())
    }

    async fn authenticate_step(
        &self,
        stream: &mut PeerStream,
        token: Vec<u8>,
        correlation_id: i32,
    ) -> io::Result<Bytes> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let answer: SaslAuthenticateResponse = self
            .call(
                stream,
                ApiKey::SaslAuthenticate,
                2,
                correlation_id,
                &request,
            )
            .await?;
        if answer.error_code != 0 {
            return Err(refused(format!(
                "SaslAuthenticate refused with error {}: {}",
                answer.error_code,
                answer.error_message.as_deref().unwrap_or("")
            )));
        }
        Ok(answer.auth_bytes)
    }

    /// One request and its answer on a connection being set up.
    async fn call<Req: Encodable, Resp: Decodable>(
        &self,
        stream: &mut PeerStream,
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        request: &Req,
    ) -> io::Result<Resp> {
        let invalid = |e: anyhow::Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header
            .encode(&mut frame, api.request_header_version(version))
            .map_err(invalid)?;
        request.encode(&mut frame, version).map_err(invalid)?;
        let len = (frame.len() - 4) as i32;
        frame[0..4].copy_from_slice(&len.to_be_bytes());
        stream.write_all(&frame).await?;
        let len = stream.read_i32().await?;
        if len < 4 || len as usize > MAX_SASL_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("answer frame of {len} bytes during authentication"),
            ));
        }
        let mut body = vec![0; len as usize];
        stream.read_exact(&mut body).await?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(invalid)?;
        if header.correlation_id != correlation_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "answer to another request during authentication",
            ));
        }
        Resp::decode(&mut body, version).map_err(invalid)
    }
}

fn refused(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, message.into())
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
