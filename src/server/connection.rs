//! One client connection: reads size-prefixed frames, hands each to the protocol layer in
//! order, and writes the answers in the same order from a separate writer task. A frame over
//! `max_frame_bytes` or a malformed request closes the connection with a logged reason.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::handlers::Broker;
use crate::protocol::{self, Outcome};

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
    let (tx, rx) = mpsc::channel::<Bytes>(broker.config.max_in_flight_requests);
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
            Outcome::Respond(bytes) => {
                if tx.send(bytes).await.is_err() {
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

async fn write_responses(
    writer: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    peer: String,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(frame) = rx.recv().await {
        if let Err(e) = writer.write_all(&frame).await {
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
