//! The controller listener: where controllers send each other openraft's RPCs and brokers
//! send the controller their registrations, heartbeats and forwarded requests. Kafka framing,
//! as the client listener (the same frame reader and size limit), but routing is the caller's:
//! every request goes to one [`ControllerHandler`], which sees the API key, the version and
//! the body after the request header, and answers the response body (or `None`: the
//! connection closes). The header versions are those of `meta::rpc` (its client is the other
//! end): Kafka's for Kafka keys, request v2 / response v0 for ottla's private keys.
//!
//! A listener of another protocol than PLAINTEXT first takes each connection through TLS,
//! SASL and an authorization check (`controller_auth`).
//!
//! One task per connection, one request at a time on it, answers in request order. Nothing a
//! peer sends can panic the listener: a frame out of bounds, an unknown key or a header that
//! does not decode closes that connection with a log line.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::connection::{next_buffered_frame, read_more, Stream, READ_CHUNK_BYTES};
use super::controller_auth::{authenticate, PeerSecurity};
use crate::meta::rpc::{request_header_version, response_header_version};

/// Answers one request: `(api key, version, body after the request header)` → the response
/// body (its header is the listener's), or `None` to close the connection (the handler logs
/// why).
pub type ControllerHandler =
    Arc<dyn Fn(i16, i16, Bytes) -> BoxFuture<'static, Option<Bytes>> + Send + Sync>;

/// Connections served at once at most; more are closed as soon as accepted (peers are the
/// other controllers and the brokers: a few dozen in any real cluster).
const MAX_CONNECTIONS: usize = 1024;

/// Serves `listener` until `stop` turns true (or its sender is dropped): then stops
/// accepting, ends the open connections (a request being handled is abandoned; its peer sees
/// the connection close) and returns, closing the listening socket.
pub async fn serve(
    listener: TcpListener,
    handler: ControllerHandler,
    max_frame_bytes: usize,
    security: Arc<PeerSecurity>,
    mut stop: watch::Receiver<bool>,
) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    while !*stop.borrow_and_update() {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = connections.join_next() => continue,
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        match accepted {
            Ok((socket, peer)) => {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, listener = %local, max = MAX_CONNECTIONS,
                        "controller listener: too many connections; closing the new one");
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let handler = handler.clone();
                let stop = stop.clone();
                let security = security.clone();
                connections.spawn(async move {
                    if let Some((stream, buf)) = authenticate(socket, peer, &security).await {
                        serve_connection(stream, buf, peer, handler, max_frame_bytes, stop).await;
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // Usually EMFILE: back off briefly instead of spinning.
                tracing::warn!(listener = %local, error = %e, "controller listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    tracing::debug!(listener = %local, "controller listener stopped");
}

async fn serve_connection(
    stream: Stream,
    mut buf: BytesMut,
    peer: SocketAddr,
    handler: ControllerHandler,
    max_frame: usize,
    mut stop: watch::Receiver<bool>,
) {
    let peer_name = peer.to_string();
    tracing::debug!(peer = %peer_name, "controller connection opened");
    let (mut reader, writer) = stream.split();
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    let mut unflushed = false;
    buf.reserve(READ_CHUNK_BYTES);
    loop {
        let frame = match next_buffered_frame(&mut buf, max_frame, &peer_name) {
            Err(()) => break,
            Ok(Some(frame)) => frame,
            Ok(None) => {
                if unflushed {
                    if let Err(e) = writer.flush().await {
                        tracing::debug!(peer = %peer_name, error = %e, "write failed");
                        break;
                    }
                    unflushed = false;
                }
                let more = tokio::select! {
                    more = read_more(&mut reader, &mut buf, max_frame, &peer_name, None) => more,
                    _ = stop.changed() => false,
                };
                if !more {
                    break;
                }
                continue;
            }
        };
        let Some(mut request) = decode_header(frame, &peer_name) else {
            break;
        };
        let body = std::mem::take(&mut request.body);
        let Some(body) = handler(request.api_key, request.version, body).await else {
            tracing::debug!(peer = %peer_name, api_key = request.api_key, version = request.version,
                correlation_id = request.correlation_id, "controller listener: request refused; closing connection");
            break;
        };
        let Some(header) = response_header(&request, body.len(), &peer_name) else {
            break;
        };
        let written = match writer.write_all(&header).await {
            Ok(()) => writer.write_all(&body).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::debug!(peer = %peer_name, error = %e, "write failed");
            break;
        }
        unflushed = true;
    }
    if !unflushed || writer.flush().await.is_ok() {
        let _ = writer.shutdown().await;
    }
    tracing::debug!(peer = %peer_name, "controller connection closed");
}

/// A request frame split at its header.
pub(super) struct Request {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
    pub body: Bytes,
}

/// Decodes the request header; `None` (logged) when the frame is not a request we can read.
pub(super) fn decode_header(frame: Bytes, peer: &str) -> Option<Request> {
    if frame.len() < 8 {
        tracing::warn!(%peer, len = frame.len(), "controller listener: request shorter than a header; closing connection");
        return None;
    }
    let api_key = (&frame[0..2]).get_i16();
    let version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    let Some(header_version) = request_header_version(api_key, version) else {
        tracing::warn!(%peer, api_key, version, correlation_id, "controller listener: unknown API key; closing connection");
        return None;
    };
    let mut body = frame;
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
        RequestHeader::decode(&mut body, header_version)
    }))
    .unwrap_or_else(|_| Err(anyhow::anyhow!("decoder panicked on malformed input")));
    if let Err(e) = decoded {
        tracing::warn!(%peer, api_key, version, correlation_id, header_version, error = %e,
            "controller listener: bad request header; closing connection");
        return None;
    }
    Some(Request {
        api_key,
        version,
        correlation_id,
        body,
    })
}

/// The size prefix and response header of an answer of `body_len` bytes.
pub(super) fn response_header(request: &Request, body_len: usize, peer: &str) -> Option<BytesMut> {
    let version = response_header_version(request.api_key, request.version).unwrap_or(0);
    let mut out = BytesMut::with_capacity(16);
    out.put_i32(0);
    if let Err(e) = ResponseHeader::default()
        .with_correlation_id(request.correlation_id)
        .encode(&mut out, version)
    {
        tracing::error!(%peer, api_key = request.api_key, error = %e, "controller listener: cannot encode a response header; closing connection");
        return None;
    }
    let Ok(len) = i32::try_from(out.len() - 4 + body_len) else {
        tracing::error!(%peer, api_key = request.api_key, body_len, "controller listener: response too large for a frame; closing connection");
        return None;
    };
    out[0..4].copy_from_slice(&len.to_be_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    /// Echoes the body, prefixed with the API key and version.
    fn echo() -> ControllerHandler {
        Arc::new(|key, version, body: Bytes| {
            Box::pin(async move {
                let mut out = BytesMut::new();
                out.put_i16(key);
                out.put_i16(version);
                out.put_slice(&body);
                Some(out.freeze())
            })
        })
    }

    async fn start(max_frame: usize) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(
            listener,
            echo(),
            max_frame,
            Arc::new(PeerSecurity::plaintext()),
            rx,
        ));
        (addr, tx)
    }

    /// A request frame with header v2, as `meta::rpc` sends for private keys.
    fn frame(key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_i32(0);
        out.put_i16(key);
        out.put_i16(version);
        out.put_i32(correlation_id);
        out.put_i16(1);
        out.put_slice(b"c");
        out.put_u8(0); // no tagged fields
        out.put_slice(body);
        let len = (out.len() - 4) as i32;
        out[0..4].copy_from_slice(&len.to_be_bytes());
        out.to_vec()
    }

    /// Reads until the peer closes; returns what came.
    async fn read_to_close(socket: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the listener did not close the connection");
        got
    }

    async fn good_request_works(addr: SocketAddr) {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(&frame(32000, 0, 7, b"hello"))
            .await
            .unwrap();
        let len = socket.read_i32().await.unwrap();
        let mut answer = vec![0; len as usize];
        socket.read_exact(&mut answer).await.unwrap();
        let mut expected = BytesMut::new();
        expected.put_i32(7); // response header v0
        expected.put_i16(32000);
        expected.put_i16(0);
        expected.put_slice(b"hello");
        assert_eq!(answer, expected.to_vec());
    }

    #[tokio::test]
    async fn garbage_and_truncated_frames_close_the_connection_only() {
        let (addr, _stop) = start(1024).await;
        good_request_works(addr).await;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("negative size", (-5i32).to_be_bytes().to_vec()),
            ("size over the limit", 4096i32.to_be_bytes().to_vec()),
            ("shorter than a header", [0, 0, 0, 3, 1, 2, 3].to_vec()),
            ("unknown key", frame(31999, 0, 1, b"x")),
            ("unknown key, negative", frame(-1, 0, 1, b"x")),
            ("random bytes", {
                let mut v = vec![0, 0, 0, 40];
                v.extend((0..40u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
                v
            }),
            ("client id longer than the frame", {
                let mut f = frame(32001, 0, 1, b"");
                f[12..14].copy_from_slice(&500i16.to_be_bytes());
                f
            }),
            ("tagged field longer than the frame", {
                let mut f = frame(32001, 0, 1, b"");
                let last = f.len() - 1;
                f[last] = 1; // one tagged field, whose tag and size are missing
                f
            }),
            ("Kafka key without a client id", {
                let mut f = frame(63, 1, 1, b"");
                f.truncate(12);
                let len = (f.len() - 4) as i32;
                f[0..4].copy_from_slice(&len.to_be_bytes());
                f
            }),
        ];
        for (name, bytes) in cases {
            let mut socket = TcpStream::connect(addr).await.unwrap();
            socket.write_all(&bytes).await.unwrap();
            let got = read_to_close(&mut socket).await;
            assert!(got.is_empty(), "{name}: got an answer {got:?}");
        }
        // A frame cut short, then the end of the stream.
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let whole = frame(32000, 0, 1, b"truncated body");
        socket.write_all(&whole[..whole.len() - 3]).await.unwrap();
        socket.shutdown().await.unwrap();
        assert!(read_to_close(&mut socket).await.is_empty());
        // The listener still serves.
        good_request_works(addr).await;
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_and_kafka_keys_get_their_header() {
        let (addr, _stop) = start(1024).await;
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let mut both = frame(32001, 0, 1, b"one");
        // BrokerHeartbeat v1: flexible, so response header v1 (correlation id, tagged fields).
        both.extend(frame(63, 1, 2, b"two"));
        socket.write_all(&both).await.unwrap();
        let len = socket.read_i32().await.unwrap();
        let mut first = vec![0; len as usize];
        socket.read_exact(&mut first).await.unwrap();
        assert_eq!(&first[..4], &1i32.to_be_bytes());
        assert_eq!(&first[8..], b"one");
        let len = socket.read_i32().await.unwrap();
        let mut second = vec![0; len as usize];
        socket.read_exact(&mut second).await.unwrap();
        assert_eq!(&second[..4], &2i32.to_be_bytes());
        assert_eq!(second[4], 0, "empty tagged fields");
        assert_eq!(&second[5..7], &63i16.to_be_bytes());
        assert_eq!(&second[9..], b"two");
    }

    #[tokio::test]
    async fn stop_closes_the_listener_and_its_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let served = tokio::spawn(serve(
            listener,
            echo(),
            1024,
            Arc::new(PeerSecurity::plaintext()),
            rx,
        ));
        good_request_works(addr).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .unwrap()
            .unwrap();
        assert!(read_to_close(&mut idle).await.is_empty());
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
