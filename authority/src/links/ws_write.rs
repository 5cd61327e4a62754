//! Writing encoded frames to an agent's WebSocket without copying them.
//!
//! tungstenite copies every outgoing payload into its own write buffer, and a `Vec` keeps its
//! capacity: after a catch-up of 256-entry batch frames each link held ~15 KiB of buffer for
//! the rest of its life, about half the authority's memory after a reconnect storm of 10,000
//! agents. Batch and snapshot frames are already encoded once and shared by every link
//! (`Bytes`), so a link writes the WebSocket header (RFC 6455 §5.2: final, binary, unmasked
//! from a server) and the shared payload in one vectored write, and holds nothing of its own.
//!
//! Reading stays with tungstenite. It may queue a pong or a close reply while reading (and
//! leave it half written on a full socket), so [`write_frames`] first flushes tungstenite's
//! buffer: frames never interleave. Between writes the link task does not read, so nothing
//! else writes to the socket while a frame is half sent.

use bytes::Bytes;
use futures::SinkExt;
use std::io::{self, IoSlice};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;

/// Most `iovec`s handed to one write (Linux's `IOV_MAX` is 1,024).
const MAX_SLICES: usize = 64;

/// The header of one final, unmasked, binary WebSocket frame carrying `len` bytes, and how
/// many of its bytes are used.
pub fn binary_header(len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | 0x2; // FIN, opcode binary
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if let Ok(short) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&short.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// Writes each payload as one binary frame, in order, then flushes. Whatever tungstenite had
/// queued (a pong, a close reply) goes first. Memory held: one header per frame. Fails with
/// `TimedOut` when the socket takes nothing for `stall` (a dead or stuck agent); a large
/// snapshot to a slow but live agent takes as long as it needs.
pub async fn write_frames<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    frames: &[Bytes],
    stall: Duration,
) -> io::Result<()> {
    within(stall, async { ws.flush().await.map_err(io::Error::other) }).await?;
    let sock = ws.get_mut();
    // On the stack: a link writes per revocation, and this must not allocate each time.
    let mut headers = [([0u8; 10], 0usize); MAX_SLICES / 2];
    for group in frames.chunks(MAX_SLICES / 2) {
        for (h, f) in headers.iter_mut().zip(group) {
            *h = binary_header(f.len());
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        for (i, (f, (h, n))) in group.iter().zip(&headers).enumerate() {
            slices[2 * i] = IoSlice::new(&h[..*n]);
            slices[2 * i + 1] = IoSlice::new(f);
        }
        write_all_slices(sock, &mut slices[..2 * group.len()], stall).await?;
    }
    within(stall, sock.flush()).await
}

async fn within<T>(stall: Duration, f: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    let mut f = std::pin::pin!(f);
    // Nearly every write finds room at once: only one that waits needs a timer (creating one
    // reads the clock and the runtime's handle, three times per frame).
    if let std::task::Poll::Ready(r) = futures::poll!(f.as_mut()) {
        return r;
    }
    tokio::time::timeout(stall, f).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

async fn write_all_slices<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut slices: &mut [IoSlice<'_>],
    stall: Duration,
) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0); // skip empty leading slices
    while !slices.is_empty() {
        let n = within(stall, w.write_vectored(slices)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::Message;

    #[test]
    fn headers_match_tungstenite_framing_at_every_length_boundary() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = vec![7u8; len];
            let mut theirs = Vec::new();
            Frame::message(payload.clone(), OpCode::Data(Data::Binary), true)
                .format(&mut theirs)
                .expect("format into a Vec");
            let (h, n) = binary_header(len);
            let mut ours = h[..n].to_vec();
            ours.extend_from_slice(&payload);
            assert_eq!(ours, theirs, "length {len}");
        }
    }

    /// A socket that takes at most `step` bytes per write, so every frame is written in pieces,
    /// and is full (`Pending`) for its first `full_for` writes.
    struct Trickle {
        inner: tokio::io::DuplexStream,
        step: usize,
        full_for: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            if self.full_for > 0 {
                self.full_for -= 1;
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            let n = buf.len().min(self.step);
            std::pin::Pin::new(&mut self.inner).poll_write(cx, &buf[..n])
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn a_client_reads_every_frame_whole_through_short_writes_and_a_queued_pong() {
        let (a, b) = tokio::io::duplex(1 << 10);
        let trickle = Trickle { inner: a, step: 7, full_for: 1 };
        let mut server = WebSocketStream::from_raw_socket(trickle, Role::Server, None).await;
        let mut cfg = WebSocketConfig::default();
        cfg.max_frame_size = Some(1 << 20);
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, Some(cfg)).await;
        let frames: Vec<Bytes> = [0usize, 5, 125, 126, 300, 65_535, 65_536, 100_000]
            .iter()
            .map(|&n| Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>()))
            .collect();
        // The client pings first: the server queues a pong while reading and finds the socket
        // full, so the pong is still queued when the frames are written. It must go out first.
        client.send(Message::Ping(Bytes::from_static(b"p"))).await.expect("ping");
        client.send(Message::Binary(Bytes::from_static(b"go"))).await.expect("go");
        let (_, received) = tokio::join!(
            async {
                while !matches!(server.next().await, Some(Ok(Message::Binary(_)))) {}
                write_frames(&mut server, &frames, std::time::Duration::from_secs(5)).await.expect("write");
            },
            async {
                let first = client.next().await.expect("open").expect("frame");
                assert_eq!(first, Message::Pong(Bytes::from_static(b"p")), "the queued pong goes first");
                let mut got = Vec::new();
                while got.len() < frames.len() {
                    match client.next().await.expect("open").expect("frame") {
                        Message::Binary(b) => got.push(b),
                        other => panic!("unexpected {other:?}"),
                    }
                }
                got
            }
        );
        assert_eq!(received, frames);
    }
}
