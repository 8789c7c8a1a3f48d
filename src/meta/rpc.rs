//! The controller listener's client: Kafka framing (4-byte size, request header, correlation
//! id) over one TCP connection to a peer's controller listener, one request in flight at a
//! time. Used for openraft's RPCs between controllers (ottla-private API keys) and for the
//! broker-to-controller messages Kafka defines (BrokerRegistration, BrokerHeartbeat...).
//!
//! Headers: a Kafka API key uses the request and response header versions kafka-protocol
//! gives for its version; an ottla-private key (≥ [`VOTE`]) uses request header v2 (client id
//! and empty tagged fields) and response header v0 (the correlation id alone). The listener
//! side (`server::controller_listener`) decodes with the same two functions,
//! [`request_header_version`] and [`response_header_version`].

use std::sync::Arc;

use super::connector::{Connector, PeerStream};
use std::io;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// openraft's RequestVote (ottla-private, version 0).
pub const VOTE: i16 = 32000;
/// openraft's AppendEntries (ottla-private, version 0).
pub const APPEND_ENTRIES: i16 = 32001;
/// openraft's InstallSnapshot, one chunk (ottla-private, version 0).
pub const INSTALL_SNAPSHOT: i16 = 32002;
/// A client request forwarded by a broker to the active controller (ottla-private, version 0).
pub const FORWARD: i16 = 32003;

/// The request header version of the ottla-private keys.
pub const PRIVATE_REQUEST_HEADER_VERSION: i16 = 2;
/// The response header version of the ottla-private keys.
pub const PRIVATE_RESPONSE_HEADER_VERSION: i16 = 0;

/// The largest response frame [`RpcClient`] reads unless told otherwise (size prefix excluded).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The first wait before reconnecting after a failure; doubles per consecutive failure.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest wait before reconnecting.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Whether `api_key` is one of ottla's private keys.
pub fn is_private(api_key: i16) -> bool {
    (VOTE..=FORWARD).contains(&api_key)
}

/// The request header version of a request, `None` for a key that is neither a Kafka key nor
/// one of ours.
pub fn request_header_version(api_key: i16, version: i16) -> Option<i16> {
    if is_private(api_key) {
        return Some(PRIVATE_REQUEST_HEADER_VERSION);
    }
    ApiKey::try_from(api_key)
        .ok()
        .map(|k| k.request_header_version(version))
}

/// The response header version of a request's answer, `None` as [`request_header_version`].
pub fn response_header_version(api_key: i16, version: i16) -> Option<i16> {
    if is_private(api_key) {
        return Some(PRIVATE_RESPONSE_HEADER_VERSION);
    }
    ApiKey::try_from(api_key)
        .ok()
        .map(|k| k.response_header_version(version))
}

/// The connection and what the client remembers between calls.
struct State {
    stream: Option<PeerStream>,
    next_correlation_id: i32,
    /// Consecutive failed calls (a success resets it); sets the backoff.
    failures: u32,
    /// No connection attempt before this instant.
    retry_at: Option<Instant>,
    /// Why the last call failed (repeated while backing off).
    last_error: String,
}

/// A client of one peer's controller listener (`HOST:PORT`). It connects on the first call,
/// keeps the connection, drops it after any error or timeout, and reconnects on a later call
/// after a backoff (50 ms doubling to 1 s over consecutive failures). Calls are serialized:
/// one request in flight per client.
pub struct RpcClient {
    addr: String,
    client_id: String,
    max_response_bytes: usize,
    /// TLS and SASL of the brokers' own connections (`inter_broker_listener`); None: TCP.
    connector: Option<Arc<Connector>>,
    state: Mutex<State>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("addr", &self.addr)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl RpcClient {
    /// A client of the controller listener at `addr`; nothing is connected yet.
    pub fn new(addr: String, client_id: String) -> RpcClient {
        RpcClient {
            addr,
            client_id,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            connector: None,
            state: Mutex::new(State {
                stream: None,
                next_correlation_id: 0,
                failures: 0,
                retry_at: None,
                last_error: String::new(),
            }),
        }
    }

    /// The same client with another bound on response frames (a larger one is an error and
    /// drops the connection).
    pub fn with_max_response_bytes(mut self, max: usize) -> RpcClient {
        self.max_response_bytes = max;
        self
    }

    /// The same client connecting through `connector` (TLS, SASL) when one is given.
    pub fn with_connector(mut self, connector: Option<Arc<Connector>>) -> RpcClient {
        self.connector = connector;
        self
    }

    /// The address this client calls.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// While this client backs off after a failed call (no connection, no call in flight),
    /// the instant its next call will connect; None when a call would connect at once.
    pub fn backoff_until(&self) -> Option<Instant> {
        let state = self.state.try_lock().ok()?;
        if state.stream.is_some() {
            return None;
        }
        state.retry_at.filter(|at| *at > Instant::now())
    }

    /// Sends one request (`body` is the encoded request after its header) and returns the
    /// response body (after its header). The whole call, waiting for the previous call and
    /// for a connection included, is bounded by `timeout` (`ErrorKind::TimedOut`). Any error
    /// drops the connection; a call made while the backoff lasts beyond its own deadline
    /// fails at once (`ErrorKind::NotConnected`, with the last error).
    pub async fn call(
        &self,
        api_key: i16,
        version: i16,
        body: &[u8],
        timeout: Duration,
    ) -> io::Result<Bytes> {
        let deadline = Instant::now() + timeout;
        let Some(header_version) = request_header_version(api_key, version) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown API key {api_key}"),
            ));
        };
        let response_version = response_header_version(api_key, version).unwrap_or(0);
        let mut state = tokio::time::timeout_at(deadline, self.state.lock())
            .await
            .map_err(|_| timed_out(&self.addr, timeout))?;
        let correlation_id = state.next_correlation_id;
        state.next_correlation_id = state.next_correlation_id.wrapping_add(1);
        let frame = self.request_frame(api_key, version, header_version, correlation_id, body)?;

        // The connection is out of `state` while in use: if this future is dropped mid-call
        // (openraft's own timeout), it closes with it instead of leaving a late answer behind
        // for the next call.
        let mut stream = match state.stream.take() {
            Some(stream) => stream,
            None => {
                if let Some(at) = state.retry_at {
                    if at >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::NotConnected,
                            format!(
                                "{}: backing off after an error: {}",
                                self.addr, state.last_error
                            ),
                        ));
                    }
                    tokio::time::sleep_until(at).await;
                }
                let connect = async {
                    match &self.connector {
                        Some(c) => c.connect(&self.addr).await,
                        None => {
                            let stream = TcpStream::connect(&self.addr).await?;
                            let _ = stream.set_nodelay(true);
                            Ok(PeerStream::Plain(stream))
                        }
                    }
                };
                match tokio::time::timeout_at(deadline, connect).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        let e = io::Error::new(e.kind(), format!("connect to {}: {e}", self.addr));
                        return Err(failed(&mut state, e));
                    }
                    Err(_) => return Err(failed(&mut state, timed_out(&self.addr, timeout))),
                }
            }
        };
        let max = self.max_response_bytes;
        let exchanged = tokio::time::timeout_at(deadline, exchange(&mut stream, &frame, max)).await;
        let frame = match exchanged {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => {
                let e = io::Error::new(e.kind(), format!("{}: {e}", self.addr));
                return Err(failed(&mut state, e));
            }
            Err(_) => return Err(failed(&mut state, timed_out(&self.addr, timeout))),
        };
        state.stream = Some(stream);
        match strip_response_header(frame, response_version, correlation_id) {
            Ok(body) => {
                state.failures = 0;
                state.retry_at = None;
                Ok(body)
            }
            Err(e) => {
                let e = io::Error::new(e.kind(), format!("{}: {e}", self.addr));
                Err(failed(&mut state, e))
            }
        }
    }

    /// The size-prefixed request frame.
    fn request_frame(
        &self,
        api_key: i16,
        version: i16,
        header_version: i16,
        correlation_id: i32,
        body: &[u8],
    ) -> io::Result<BytesMut> {
        let header = RequestHeader::default()
            .with_request_api_key(api_key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut frame = BytesMut::with_capacity(4 + 16 + self.client_id.len() + body.len());
        frame.put_i32(0);
        header
            .encode(&mut frame, header_version)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        frame.put_slice(body);
        let len = i32::try_from(frame.len() - 4).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("request of {} bytes is too large for a frame", body.len()),
            )
        })?;
        frame[0..4].copy_from_slice(&len.to_be_bytes());
        Ok(frame)
    }
}

/// Drops the connection, arms the backoff and returns the error.
fn failed(state: &mut State, error: io::Error) -> io::Error {
    state.stream = None;
    state.failures = state.failures.saturating_add(1);
    let shift = state.failures.saturating_sub(1).min(10);
    let wait = BACKOFF_MIN.saturating_mul(1 << shift).min(BACKOFF_MAX);
    state.retry_at = Some(Instant::now() + wait);
    state.last_error = error.to_string();
    error
}

fn timed_out(addr: &str, timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{addr}: no answer within {timeout:?}"),
    )
}

/// Writes the request frame and reads the response frame (without its size prefix). Memory
/// grows with the bytes actually received, never with the size the peer claims, and a size
/// over `max` is refused before reading it.
async fn exchange(stream: &mut PeerStream, frame: &[u8], max: usize) -> io::Result<Bytes> {
    stream.write_all(frame).await?;
    let len = stream.read_i32().await?;
    if len < 4 || len as usize > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("response frame size {len} out of bounds (4..={max})"),
        ));
    }
    let len = len as usize;
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    let read = (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut buf)
        .await?;
    if read < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("connection ended inside a response frame ({read} of {len} bytes)"),
        ));
    }
    Ok(Bytes::from(buf))
}

/// Checks the correlation id and returns what follows the response header.
fn strip_response_header(mut frame: Bytes, version: i16, expected: i32) -> io::Result<Bytes> {
    let header = if version == 0 {
        if frame.len() < 4 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response shorter than its header",
            ));
        }
        frame.get_i32()
    } else {
        ResponseHeader::decode(&mut frame, version)
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad response header: {e}"),
                )
            })?
            .correlation_id
    };
    if header != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("response correlation id {header}, expected {expected}"),
        ));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use tokio::net::TcpListener;
    use tokio::sync::watch;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::server::controller_auth::PeerSecurity;
    use crate::server::controller_listener::{serve, ControllerHandler};

    /// Echoes `key, version, body`; FORWARD sleeps first (a slow peer); key 32002 answers
    /// 2 KiB.
    fn handler() -> ControllerHandler {
        Arc::new(|key, version, body: Bytes| {
            Box::pin(async move {
                if key == FORWARD {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
                if key == INSTALL_SNAPSHOT {
                    return Some(Bytes::from(vec![7u8; 2048]));
                }
                let mut out = BytesMut::new();
                out.put_i16(key);
                out.put_i16(version);
                out.put_slice(&body);
                Some(out.freeze())
            })
        })
    }

    struct Listener {
        addr: SocketAddr,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    }

    impl Listener {
        async fn start(addr: &str, max_frame: usize) -> Listener {
            let listener = TcpListener::bind(addr).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, rx) = watch::channel(false);
            let task = tokio::spawn(serve(
                listener,
                handler(),
                max_frame,
                Arc::new(PeerSecurity::plaintext()),
                rx,
            ));
            Listener { addr, stop, task }
        }

        async fn stop(self) {
            self.stop.send(true).unwrap();
            self.task.await.unwrap();
        }
    }

    fn echoed(key: i16, version: i16, body: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(key);
        out.put_i16(version);
        out.put_slice(body);
        out.freeze()
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn calls_round_trip_with_private_and_kafka_headers() {
        let server = Listener::start("127.0.0.1:0", 1 << 20).await;
        let client = RpcClient::new(server.addr.to_string(), "node-1".into());
        // Several calls on one connection: the correlation ids move on together.
        for i in 0..3u8 {
            let body = [i; 5];
            assert_eq!(
                client.call(VOTE, 0, &body, SECOND).await.unwrap(),
                echoed(VOTE, 0, &body)
            );
        }
        // BrokerHeartbeat v1: request header v2, response header v1 (tagged fields).
        assert_eq!(
            client.call(63, 1, b"hb", SECOND).await.unwrap(),
            echoed(63, 1, b"hb")
        );
        // Metadata v1: request header v1, response header v0.
        assert_eq!(
            client.call(3, 1, b"md", SECOND).await.unwrap(),
            echoed(3, 1, b"md")
        );
        assert_eq!(
            client.call(APPEND_ENTRIES, 0, b"", SECOND).await.unwrap(),
            echoed(APPEND_ENTRIES, 0, b"")
        );
        let unknown = client.call(31000, 0, b"", SECOND).await.unwrap_err();
        assert_eq!(unknown.kind(), io::ErrorKind::InvalidInput);
        server.stop().await;
    }

    #[tokio::test]
    async fn the_client_reconnects_after_the_server_restarts() {
        let server = Listener::start("127.0.0.1:0", 1 << 20).await;
        let addr = server.addr;
        let client = RpcClient::new(addr.to_string(), "node-1".into());
        assert!(client.call(VOTE, 0, b"a", SECOND).await.is_ok());
        server.stop().await;
        assert!(client.call(VOTE, 0, b"b", SECOND).await.is_err());
        // Nothing listens: refused, then the backoff refuses at once a call whose deadline
        // comes first.
        assert!(client.call(VOTE, 0, b"c", SECOND).await.is_err());
        let backing_off = client
            .call(VOTE, 0, b"d", Duration::from_millis(1))
            .await
            .unwrap_err();
        assert!(
            matches!(
                backing_off.kind(),
                io::ErrorKind::NotConnected | io::ErrorKind::TimedOut
            ),
            "{backing_off}"
        );
        let server = Listener::start(&addr.to_string(), 1 << 20).await;
        let started = Instant::now();
        loop {
            match client.call(VOTE, 0, b"e", SECOND).await {
                Ok(body) => {
                    assert_eq!(body, echoed(VOTE, 0, b"e"));
                    break;
                }
                Err(e) => {
                    assert!(started.elapsed() < 5 * SECOND, "no reconnection: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn a_call_times_out_and_the_next_one_uses_a_new_connection() {
        let server = Listener::start("127.0.0.1:0", 1 << 20).await;
        let client = RpcClient::new(server.addr.to_string(), "node-1".into());
        let started = Instant::now();
        let e = client
            .call(FORWARD, 0, b"slow", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(started.elapsed() < 2 * SECOND);
        // The late answer to the slow call never reaches the next one (a new connection,
        // after the backoff).
        assert_eq!(
            client.call(VOTE, 0, b"next", 2 * SECOND).await.unwrap(),
            echoed(VOTE, 0, b"next")
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn a_call_dropped_mid_flight_leaves_no_answer_behind() {
        let server = Listener::start("127.0.0.1:0", 1 << 20).await;
        let client = RpcClient::new(server.addr.to_string(), "node-1".into());
        assert!(client.call(VOTE, 0, b"warm", SECOND).await.is_ok());
        // The caller gives up first (as openraft's own timeout does) and drops the call.
        let dropped = tokio::time::timeout(
            Duration::from_millis(100),
            client.call(FORWARD, 0, b"slow", 10 * SECOND),
        )
        .await;
        assert!(dropped.is_err());
        // The next call does not read the abandoned call's answer (nor wait for it).
        assert_eq!(
            client.call(VOTE, 0, b"next", SECOND).await.unwrap(),
            echoed(VOTE, 0, b"next")
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn oversize_frames_fail_the_call_not_the_client() {
        let server = Listener::start("127.0.0.1:0", 1024).await;
        // A request over the listener's limit: it closes the connection.
        let client = RpcClient::new(server.addr.to_string(), "node-1".into());
        assert!(client.call(VOTE, 0, &[0; 2000], SECOND).await.is_err());
        assert!(client.call(VOTE, 0, b"ok", 2 * SECOND).await.is_ok());
        // A response over the client's limit: refused before it is read.
        let small =
            RpcClient::new(server.addr.to_string(), "node-1".into()).with_max_response_bytes(1024);
        let e = small
            .call(INSTALL_SNAPSHOT, 0, b"", SECOND)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(small.call(VOTE, 0, b"ok", 2 * SECOND).await.is_ok());
        server.stop().await;
    }
}
