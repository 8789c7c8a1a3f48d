//! One client connection: reads size-prefixed frames, hands each to the protocol layer in
//! order, and writes the answers in the same order, all in one task. A frame over
//! `max_frame_bytes` (over `sasl_server_max_receive_size` before a SASL connection has
//! authenticated) or a malformed request closes the connection with a logged reason, as do
//! `connections_max_idle_ms` without a byte either way, `authentication_timeout_ms` without
//! completing SASL, and the request memory budget choosing it to make room (`memory.rs`).
//! Every byte read is reserved in that budget first and given back once its request has
//! been handled.
//!
//! Answers are buffered and flushed when the task is about to wait: before reading more bytes
//! from the socket, before a request whose handler may wait (a fetch waiting for data, a group
//! join...), and when `max_in_flight_requests` answers are pending. So pipelined requests
//! share one write, and no answer waits behind a slow request. Record data still in a segment
//! file goes out with `sendfile(2)` on plain connections: page cache to socket, no copy
//! through the broker; a TLS connection must encrypt it, so it is read (on the blocking pool:
//! it may be a cold read) and written through the TLS stream.
//! A request a client quota throttles (KIP-219) is answered at once with its
//! `throttle_time_ms`, and the connection reads nothing more from that client until the time
//! has passed: a timer of this task, the socket's receive buffer filling meanwhile.
//! (Writing from the connection's own task, rather than handing answers to a writer task,
//! saves a task wake-up and a channel hop per answer: about 5% of the broker's CPU at 50k
//! small requests/s, where thread wake-ups dominate.)

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, Interest, ReadBuf};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use super::memory::Lease;
use crate::broker::Broker;
use crate::log::{FileSlice, Records};
use crate::protocol::{self, Outcome, Response, Session};

/// Bytes read from the socket per call at most (a frame larger than this takes several reads;
/// memory grows with the data actually received, never with the length a client claims).
pub(super) const READ_CHUNK_BYTES: usize = 64 * 1024;

/// An accepted connection, after its TLS handshake when its listener has TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The reading and writing halves (a plain socket's without a lock between them).
    pub(super) fn split(self) -> (Reader, Writer) {
        match self {
            Stream::Plain(socket) => {
                let (r, w) = socket.into_split();
                (Reader::Plain(r), Writer::Plain(w))
            }
            Stream::Tls(tls) => {
                let (r, w) = tokio::io::split(*tls);
                (Reader::Tls(r), Writer::Tls(w))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The reading half of a [`Stream`].
pub(super) enum Reader {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The writing half of a [`Stream`].
pub(super) enum Writer {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Reader::Plain(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_flush(cx),
            Writer::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Answers written but not yet flushed.
struct Output {
    writer: BufWriter<Writer>,
    pending: usize,
}

impl Output {
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.pending > 0 {
            self.writer.flush().await?;
            self.pending = 0;
        }
        Ok(())
    }

    async fn write(&mut self, response: Response) -> std::io::Result<()> {
        for part in response.parts {
            match part {
                Records::Bytes(bytes) => self.writer.write_all(&bytes).await?,
                Records::File(slice) => match self.writer.get_ref() {
                    Writer::Plain(_) => {
                        self.writer.flush().await?;
                        if let Writer::Plain(socket) = self.writer.get_ref() {
                            send_file(socket, &slice).await?;
                        }
                    }
                    Writer::Tls(_) => {
                        let bytes = read_slice(slice).await?;
                        self.writer.write_all(&bytes).await?;
                    }
                },
            }
        }
        self.pending += 1;
        Ok(())
    }
}

pub async fn serve(
    stream: Stream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut lease: Lease,
    mut stop: watch::Receiver<bool>,
    mut session: Session,
) {
    let peer_name = peer.to_string();
    tracing::debug!(peer = %peer_name, listener = session.listener.name(), "connection opened");
    let (mut reader, writer) = stream.split();
    let mut out = Output {
        writer: BufWriter::with_capacity(64 * 1024, writer),
        pending: 0,
    };
    let config = &broker.config;
    let max_pending = config.max_in_flight_requests;
    let idle = Duration::from_millis(config.connections_max_idle_ms);
    let auth_deadline =
        tokio::time::Instant::now() + Duration::from_millis(config.authentication_timeout_ms);
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        // Before authenticating, a SASL connection may send only small frames.
        let authenticated = session.auth.authenticated();
        let max_frame = if authenticated {
            config.max_frame_bytes
        } else {
            config
                .max_frame_bytes
                .min(config.sasl_server_max_receive_size)
        };
        let frame = match next_buffered_frame(&mut buf, max_frame, &peer_name) {
            Err(()) => break,
            Ok(Some(frame)) => frame,
            Ok(None) => {
                // What is buffered now belongs to a frame not yet complete.
                lease.set_unfinished(buf.len());
                if let Err(e) = out.flush().await {
                    tracing::debug!(peer = %peer_name, error = %e, "write failed");
                    break;
                }
                let timeout = if authenticated {
                    tokio::time::Instant::now() + idle
                } else {
                    auth_deadline.min(tokio::time::Instant::now() + idle)
                };
                let more = tokio::select! {
                    more = read_more(&mut reader, &mut buf, max_frame, &peer_name, Some(&mut lease)) => more,
                    _ = stop.changed() => false,
                    _ = tokio::time::sleep_until(timeout) => {
                        if !authenticated && timeout == auth_deadline {
                            tracing::info!(peer = %peer_name, timeout_ms = config.authentication_timeout_ms,
                                "closing connection: not authenticated in time (authentication_timeout_ms)");
                        } else {
                            tracing::info!(peer = %peer_name, idle_ms = idle.as_millis() as u64,
                                "closing idle connection (connections_max_idle_ms)");
                        }
                        false
                    }
                };
                if !more {
                    break;
                }
                continue;
            }
        };
        if out.pending >= max_pending || (out.pending > 0 && may_wait(&frame)) {
            if let Err(e) = out.flush().await {
                tracing::debug!(peer = %peer_name, error = %e, "write failed");
                break;
            }
        }
        let size = frame.len() + 4;
        let outcome = protocol::handle(&broker, frame, &mut session).await;
        // The request is handled: its bytes go back to the budget.
        lease.release(size);
        match outcome {
            Outcome::Respond(response) => {
                if let Err(e) = out.write(response).await {
                    tracing::debug!(peer = %peer_name, error = %e, "write failed");
                    break;
                }
            }
            Outcome::RespondAndClose(response) => {
                let _ = out.write(response).await;
                break;
            }
            Outcome::NoResponse => {}
            Outcome::Close => break,
        }
        let throttle_ms = std::mem::take(&mut session.quota.throttle_ms);
        if throttle_ms > 0 {
            // KIP-219: the answer (with its throttle time) goes out now, then nothing more
            // is read from this client until the throttle has passed (Kafka mutes the
            // channel). A timer on this connection's task: no thread waits.
            if let Err(e) = out.flush().await {
                tracing::debug!(peer = %peer_name, error = %e, "write failed");
                break;
            }
            let until = tokio::time::Instant::now() + Duration::from_millis(throttle_ms);
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = stop.changed() => break,
            }
        }
    }
    if out.flush().await.is_ok() {
        let _ = out.writer.shutdown().await;
    }
    tracing::debug!(peer = %peer_name, "connection closed");
}

/// Whether answering this request may wait on something other than the broker's own work
/// (data to arrive, other group members, a coordinator timeout): answers already made are
/// flushed first, so they never wait behind it.
fn may_wait(frame: &Bytes) -> bool {
    let Some(&[hi, lo]) = frame.get(..2) else {
        return false; // too short for a header: refused without waiting
    };
    let key = i16::from_be_bytes([hi, lo]);
    !matches!(
        ApiKey::try_from(key),
        Ok(ApiKey::Produce
            | ApiKey::Metadata
            | ApiKey::ApiVersions
            | ApiKey::ListOffsets
            | ApiKey::FindCoordinator
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::Heartbeat
            | ApiKey::DescribeConfigs
            | ApiKey::DescribeCluster
            | ApiKey::DescribeTopicPartitions)
    )
}

/// The next complete frame in `buf`, if there is one. `Err` on a frame size out of bounds
/// (logged): the connection closes.
pub(super) fn next_buffered_frame(
    buf: &mut BytesMut,
    max_frame: usize,
    peer: &str,
) -> Result<Option<Bytes>, ()> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = (&buf[..4]).get_i32();
    if len < 0 || len as usize > max_frame {
        tracing::warn!(%peer, len, max_frame, "closing connection: request frame size out of bounds");
        return Err(());
    }
    let len = len as usize;
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Reads more bytes into `buf`, reserved first in `lease` when given (at most what was
/// reserved is read). `false` at end of stream, on an error (logged) or when the budget
/// chose this connection to close.
pub(super) async fn read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max_frame: usize,
    peer: &str,
    mut lease: Option<&mut Lease>,
) -> bool {
    let wanted = if buf.len() >= 4 {
        let len = ((&buf[..4]).get_i32().max(0) as usize).min(max_frame);
        (4 + len)
            .saturating_sub(buf.len())
            .clamp(1, READ_CHUNK_BYTES)
    } else {
        READ_CHUNK_BYTES
    };
    if let Some(lease) = lease.as_deref_mut() {
        if lease.reserve(wanted).await.is_err() {
            return false; // evicted (logged by the budget)
        }
    }
    // A large frame's buffer is sized for the whole frame at once: address space only (see
    // `alloc.rs`), resident as the bytes arrive, and never copied as it grows.
    let frame_end =
        (buf.len() >= 4).then(|| 4 + ((&buf[..4]).get_i32().max(0) as usize).min(max_frame));
    match frame_end {
        Some(end) if end >= crate::alloc::HUGE_BYTES => buf.reserve(end - buf.len()),
        _ => buf.reserve(wanted),
    }
    let read = match lease.as_deref() {
        Some(lease) => {
            let mut limited = (&mut *reader).take(wanted as u64);
            tokio::select! {
                r = limited.read_buf(buf) => r,
                _ = lease.evicted() => return false,
            }
        }
        None => reader.read_buf(buf).await,
    };
    if let Some(lease) = lease {
        lease.release(wanted - read.as_ref().map_or(0, |n| (*n).min(wanted)));
    }
    match read {
        Ok(0) => {
            if !buf.is_empty() {
                tracing::warn!(%peer, pending = buf.len(), "connection ended inside a request frame");
            }
            false
        }
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "read failed");
            false
        }
    }
}

/// A stretch of a segment file read into memory, on the blocking pool (for TLS, which must
/// encrypt what it sends).
async fn read_slice(slice: FileSlice) -> std::io::Result<Vec<u8>> {
    crate::threads::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0; slice.len];
        slice.file.read_exact_at(&mut bytes, slice.pos)?;
        Ok(bytes)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

/// Sends a stretch of a segment file with `sendfile(2)`, waiting for the socket as needed.
async fn send_file(socket: &OwnedWriteHalf, slice: &FileSlice) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let stream: &TcpStream = socket.as_ref();
    let socket_fd = stream.as_raw_fd();
    let file_fd = slice.file.as_raw_fd();
    let mut offset = slice.pos as libc::off_t;
    let mut left = slice.len;
    while left > 0 {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the duration of the call (the socket is
            // borrowed, the file held by `slice`), and `offset` is a valid off_t.
            let n = unsafe { libc::sendfile(socket_fd, file_fd, &mut offset, left) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                // The file is shorter than the stretch: the frame cannot be completed, and the
                // client must not read a short frame as a whole one.
                tracing::error!(
                    pos = slice.pos,
                    len = slice.len,
                    "segment file ended inside a fetch response; closing connection"
                );
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(n) => left -= n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
