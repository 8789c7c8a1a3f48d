//! One client connection: reads size-prefixed frames, hands each to the protocol layer in
//! order, and writes the answers in the same order from a separate writer task. A frame over
//! `max_frame_bytes` or a malformed request closes the connection with a logged reason.
//!
//! The writer buffers encoded bytes (pipelined answers share a write) and sends record data
//! that is still in a segment file with `sendfile(2)`: page cache to socket, no copy through
//! the broker.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::handlers::Broker;
use crate::log::{FileSlice, Records};
use crate::protocol::{self, Outcome, Response};

/// Bytes read from the socket per call at most (a frame larger than this takes several reads;
/// memory grows with the data actually received, never with the length a client claims).
const READ_CHUNK_BYTES: usize = 64 * 1024;

pub async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut stop: watch::Receiver<bool>,
) {
    let peer_name = peer.to_string();
    tracing::debug!(peer = %peer_name, "connection opened");
    let (mut reader, writer) = socket.into_split();
    let (tx, rx) = mpsc::channel::<Response>(broker.config.max_in_flight_requests);
    let writer_task = tokio::spawn(write_responses(writer, rx, peer_name.clone()));
    let max_frame = broker.config.max_frame_bytes;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut reader, &mut buf, max_frame, &peer_name) => f,
            _ = stop.changed() => break,
        };
        let Some(frame) = frame else { break };
        match protocol::handle_frame(&broker, frame, &peer_name).await {
            Outcome::Respond(response) => {
                if tx.send(response).await.is_err() {
                    break;
                }
            }
            Outcome::NoResponse => {}
            Outcome::Close => break,
        }
    }
    drop(tx);
    let _ = writer_task.await;
    tracing::debug!(peer = %peer_name, "connection closed");
}

/// Reads the next frame. `None` at end of stream or on a framing error (logged).
async fn read_frame(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    max_frame: usize,
    peer: &str,
) -> Option<Bytes> {
    loop {
        if buf.len() >= 4 {
            let len = (&buf[..4]).get_i32();
            if len < 0 || len as usize > max_frame {
                tracing::warn!(%peer, len, max_frame, "closing connection: request frame size out of bounds");
                return None;
            }
            let len = len as usize;
            if buf.len() >= 4 + len {
                buf.advance(4);
                return Some(buf.split_to(len).freeze());
            }
            buf.reserve((4 + len - buf.len()).min(READ_CHUNK_BYTES));
        } else {
            buf.reserve(READ_CHUNK_BYTES);
        }
        match reader.read_buf(buf).await {
            Ok(0) => {
                if !buf.is_empty() {
                    tracing::warn!(%peer, pending = buf.len(), "connection ended inside a request frame");
                }
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(%peer, error = %e, "read failed");
                return None;
            }
        }
    }
}

async fn write_responses(writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Response>, peer: String) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(response) = rx.recv().await {
        if let Err(e) = write_response(&mut writer, response).await {
            tracing::debug!(%peer, error = %e, "write failed");
            return;
        }
        // Flush when nothing else is queued: pipelined answers share one write.
        if rx.is_empty() {
            if let Err(e) = writer.flush().await {
                tracing::debug!(%peer, error = %e, "flush failed");
                return;
            }
        }
    }
    let _ = writer.shutdown().await;
}

async fn write_response(
    writer: &mut BufWriter<OwnedWriteHalf>,
    response: Response,
) -> std::io::Result<()> {
    for part in response.parts {
        match part {
            Records::Bytes(bytes) => writer.write_all(&bytes).await?,
            Records::File(slice) => {
                writer.flush().await?;
                send_file(writer.get_ref(), &slice).await?;
            }
        }
    }
    Ok(())
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
