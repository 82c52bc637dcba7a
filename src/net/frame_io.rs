//! Reading and writing one length-prefixed frame (see `protocol::frame`).
//!
//! Invariants: the declared length is checked against `max_frame_bytes`
//! before the payload buffer is allocated, and the buffer's initialized
//! (touched, resident) part then grows with the bytes that actually arrive
//! (from [`INITIAL_PAYLOAD_BYTES`], doubling, inside one allocation of the
//! declared length's address space, so growing never copies), so a peer
//! that claims a large frame and stalls holds only about what it sent,
//! not the length it claimed; EOF exactly at a frame boundary is
//! a clean close (`Ok(None)`), EOF anywhere else is `UnexpectedEof`;
//! `write_frame` / [`write_frame_parts`] hand prefix and payload buffers to
//! the socket as vectored writes (one syscall, one segment for small frames
//! with TCP_NODELAY), never joining the buffers (record bytes of a fetch
//! response are written from where they are); after a frame is read its
//! length is within `max_frame_bytes` (asserted).

use std::io::{self, IoSlice};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::frame::{
    check_length_with, length_prefix, length_prefix_with, ByteOrder, FrameError,
    LENGTH_PREFIX_BYTES,
};

#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    /// The peer declared a frame above the limit (or an empty one). The
    /// stream is no longer in sync: close it after reporting.
    #[error(transparent)]
    TooLarge(FrameError),
    #[error("connection closed in the middle of a frame ({read_bytes} of {expected_bytes} bytes)")]
    UnexpectedEof {
        read_bytes: usize,
        expected_bytes: usize,
    },
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Payload bytes allocated before any payload has arrived, in bytes; the
/// buffer doubles (up to the declared length) each time it fills. Found by
/// tests/flood.rs: allocating the declared length up front let 64
/// connections that each claimed `max_frame_bytes` and stalled hold
/// 64 x `max_frame_bytes`, and the broker's RSS grew round after round.
pub const INITIAL_PAYLOAD_BYTES: usize = 64 * 1024;

/// Reads until `buf` is full. Returns the bytes read (less than `buf.len()`
/// only at EOF).
async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads one frame (little-endian length). `Ok(None)` is a clean EOF before
/// the first byte of a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: u32,
) -> Result<Option<Bytes>, FrameIoError> {
    read_frame_with(reader, max_frame_bytes, ByteOrder::Little).await
}

/// Reads one frame whose length prefix is in `order`.
pub async fn read_frame_with<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: u32,
    order: ByteOrder,
) -> Result<Option<Bytes>, FrameIoError> {
    match read_frame_len(reader, max_frame_bytes, order).await? {
        Some(len) => read_frame_body(reader, len, max_frame_bytes, &mut Unbudgeted)
            .await
            .map(Some),
        None => Ok(None),
    }
}

/// Memory for a frame's payload buffer, reserved before the buffer is
/// allocated or grown (a server's request budget).
pub trait PayloadMemory {
    /// Resolves once `bytes` more may be held.
    fn reserve(&mut self, bytes: usize) -> impl std::future::Future<Output = ()>;
}

/// No budget: every reservation is granted at once.
pub struct Unbudgeted;

impl PayloadMemory for Unbudgeted {
    async fn reserve(&mut self, _bytes: usize) {}
}

/// Reads a frame's length prefix and checks it (first half of
/// [`read_frame_with`], for a reader that reserves memory for the payload
/// before reading it). `Ok(None)` is a clean EOF before the first byte.
pub async fn read_frame_len<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: u32,
    order: ByteOrder,
) -> Result<Option<usize>, FrameIoError> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let n = read_full(reader, &mut prefix).await?;
    if n == 0 {
        return Ok(None);
    }
    if n < LENGTH_PREFIX_BYTES {
        return Err(FrameIoError::UnexpectedEof {
            read_bytes: n,
            expected_bytes: LENGTH_PREFIX_BYTES,
        });
    }
    let len = check_length_with(prefix, max_frame_bytes, order).map_err(FrameIoError::TooLarge)?;
    Ok(Some(len))
}

/// Reads the `len`-byte payload of a frame whose prefix
/// [`read_frame_len`] checked, reserving every byte of its buffer from
/// `memory` before allocating it (as the buffer grows with what arrives).
pub async fn read_frame_body<R: AsyncRead + Unpin, M: PayloadMemory>(
    reader: &mut R,
    len: usize,
    max_frame_bytes: u32,
    memory: &mut M,
) -> Result<Bytes, FrameIoError> {
    assert!(
        len <= max_frame_bytes as usize,
        "frame length {len} was not checked against max_frame_bytes ({max_frame_bytes})"
    );
    let initial = len.min(INITIAL_PAYLOAD_BYTES);
    memory.reserve(initial).await;
    // The whole length as address space, touched (zeroed) only as the bytes
    // arrive: growing never moves what was read (no realloc copy), and the
    // pages past the initialized part are not resident until written.
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    buf.resize(initial, 0);
    let mut filled = 0;
    while filled < len {
        if filled == buf.len() {
            let grown = buf.len().saturating_mul(2).min(len);
            memory.reserve(grown - buf.len()).await;
            buf.resize(grown, 0);
            debug_assert!(buf.capacity() >= len, "the payload buffer never moves");
        }
        let n = read_full(reader, &mut buf[filled..]).await?;
        if n == 0 {
            return Err(FrameIoError::UnexpectedEof {
                read_bytes: LENGTH_PREFIX_BYTES + filled,
                expected_bytes: LENGTH_PREFIX_BYTES + len,
            });
        }
        filled += n;
    }
    assert!(
        filled == len && buf.len() == len && len <= max_frame_bytes as usize,
        "frame of {len} bytes read as {filled} (max_frame_bytes {max_frame_bytes})"
    );
    Ok(Bytes::from(buf))
}

/// Writes one frame: a length prefix of `order` for the sum of `parts`, then
/// every part, with vectored writes (the parts are never joined).
pub async fn write_frame_parts<W: AsyncWrite + Unpin>(
    writer: &mut W,
    order: ByteOrder,
    parts: &[Bytes],
) -> io::Result<()> {
    let payload_bytes: usize = parts.iter().map(Bytes::len).sum();
    if u32::try_from(payload_bytes).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {payload_bytes} bytes does not fit a u32 length"),
        ));
    }
    let prefix = length_prefix_with(payload_bytes, order);
    let total = LENGTH_PREFIX_BYTES + payload_bytes;
    // Slices still to write: the prefix, then every non-empty part.
    let mut pending: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
    pending.push(&prefix);
    pending.extend(parts.iter().filter(|p| !p.is_empty()).map(|p| &p[..]));
    let mut first = 0;
    let mut written = 0;
    /// Most slices handed to one writev (IOV_MAX is 1024 on Linux).
    const MAX_IOV: usize = 64;
    while first < pending.len() {
        let end = pending.len().min(first + MAX_IOV);
        let slices: Vec<IoSlice<'_>> = pending[first..end]
            .iter()
            .map(|s| IoSlice::new(s))
            .collect();
        let n = match writer.write_vectored(&slices).await {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        written += n;
        // Drop the slices fully written and advance into a partial one.
        let mut left = n;
        while left > 0 {
            let s = pending[first];
            if left >= s.len() {
                left -= s.len();
                first += 1;
            } else {
                pending[first] = &s[left..];
                left = 0;
            }
        }
        while first < pending.len() && pending[first].is_empty() {
            first += 1;
        }
    }
    assert_eq!(written, total, "wrote {written} of a {total}-byte frame");
    writer.flush().await
}

/// Writes one frame: the length prefix and `payload`, vectored.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, payload: &[u8]) -> io::Result<()> {
    if u32::try_from(payload.len()).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes does not fit a u32 length", payload.len()),
        ));
    }
    let prefix = length_prefix(payload.len());
    let total = LENGTH_PREFIX_BYTES + payload.len();
    let mut written = 0;
    while written < total {
        let n = if written < LENGTH_PREFIX_BYTES {
            let bufs = [IoSlice::new(&prefix[written..]), IoSlice::new(payload)];
            writer.write_vectored(&bufs).await
        } else {
            writer
                .write(&payload[written - LENGTH_PREFIX_BYTES..])
                .await
        };
        match n {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::split::split;
    use glommio::net::{TcpListener, TcpStream};
    use glommio::LocalExecutorBuilder;

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        LocalExecutorBuilder::default()
            .spawn(move || async move { f().await })
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn frames_over_loopback() {
        run(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = glommio::spawn_local(async move {
                let s = listener.accept().await.expect("accept");
                let (mut r, mut w) = split(s);
                // Echo frames back until clean EOF.
                let mut count = 0;
                while let Some(f) = read_frame(&mut r, 1 << 20).await.expect("read") {
                    write_frame(&mut w, &f).await.expect("write");
                    count += 1;
                }
                count
            });
            let c = TcpStream::connect(addr).await.expect("connect");
            c.set_nodelay(true).expect("nodelay");
            let (mut r, mut w) = split(c);
            let big = vec![7u8; 300_000];
            let payloads: Vec<Vec<u8>> = vec![b"hello".to_vec(), big, vec![1]];
            for p in &payloads {
                write_frame(&mut w, p).await.expect("write");
            }
            for p in &payloads {
                let f = read_frame(&mut r, 1 << 20)
                    .await
                    .expect("read")
                    .expect("frame");
                assert_eq!(&f[..], &p[..]);
            }
            w.close().await.expect("close");
            assert_eq!(read_frame(&mut r, 1 << 20).await.expect("eof"), None);
            assert_eq!(server.await, 3);
        });
    }

    /// A reader that hands out `data` then EOF, recording the largest
    /// buffer it was offered.
    struct Offered<'a> {
        data: &'a [u8],
        largest_buf_bytes: usize,
    }

    impl AsyncRead for Offered<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.largest_buf_bytes = self.largest_buf_bytes.max(buf.len());
            let n = buf.len().min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            std::task::Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn a_claimed_length_is_not_allocated_before_it_arrives() {
        // Regression (tests/flood.rs stallers): 8 MiB claimed, 10 bytes sent.
        let claimed = 8usize << 20;
        let mut input = (claimed as u32).to_le_bytes().to_vec();
        input.extend_from_slice(&[1u8; 10]);
        let mut r = Offered {
            data: &input,
            largest_buf_bytes: 0,
        };
        let e = futures_lite::future::block_on(read_frame(&mut r, claimed as u32))
            .expect_err("truncated");
        assert!(matches!(
            e,
            FrameIoError::UnexpectedEof {
                read_bytes: 14,
                expected_bytes
            } if expected_bytes == claimed + 4
        ));
        assert!(r.largest_buf_bytes <= INITIAL_PAYLOAD_BYTES);

        // A whole large frame still arrives intact, growing as it comes.
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut input = (payload.len() as u32).to_le_bytes().to_vec();
        input.extend_from_slice(&payload);
        let mut r = Offered {
            data: &input,
            largest_buf_bytes: 0,
        };
        let f = futures_lite::future::block_on(read_frame(&mut r, 1 << 20))
            .expect("read")
            .expect("frame");
        assert_eq!(&f[..], &payload[..]);
        assert!(r.largest_buf_bytes < payload.len());
    }

    #[test]
    fn too_large_and_truncated() {
        run(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = glommio::spawn_local(async move {
                let s = listener.accept().await.expect("accept");
                let (mut r, _w) = split(s);
                let e = read_frame(&mut r, 16).await.expect_err("too large");
                assert!(matches!(
                    e,
                    FrameIoError::TooLarge(FrameError::TooLarge {
                        declared_bytes: 1000,
                        max_frame_bytes: 16
                    })
                ));
                let s = listener.accept().await.expect("accept");
                let (mut r, _w) = split(s);
                let e = read_frame(&mut r, 16).await.expect_err("truncated");
                assert!(matches!(
                    e,
                    FrameIoError::UnexpectedEof {
                        read_bytes: 6,
                        expected_bytes: 14
                    }
                ));
            });
            let c = TcpStream::connect(addr).await.expect("connect");
            let (_r, mut w) = split(c);
            w.write_all(&1000u32.to_le_bytes()).await.expect("write");
            let c = TcpStream::connect(addr).await.expect("connect");
            let (_r2, mut w2) = split(c);
            w2.write_all(&10u32.to_le_bytes()).await.expect("write");
            w2.write_all(b"ab").await.expect("write");
            w2.close().await.expect("close");
            server.await;
            drop(w);
        });
    }
}
