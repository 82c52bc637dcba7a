//! Read and write halves of one stream (a glommio `TcpStream`, or any
//! `AsyncRead + AsyncWrite` transport, e.g. [`super::memory`] in tests).
//!
//! glommio's `TcpStream` has no `split`; its read and write paths keep
//! separate readiness sources, so one task may read while another writes. Both
//! halves share the stream through `Rc<RefCell<_>>`.
//!
//! Invariant: the `RefCell` is borrowed only for the duration of one
//! synchronous `poll_*` call, never across an `.await`, so the two halves can
//! never observe a borrow conflict (everything runs on one thread).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{RxBuf, TcpStream};

/// Splits a stream into a reading and a writing half.
pub fn split<S>(stream: S) -> (ReadHalf<S>, WriteHalf<S>) {
    let shared = Rc::new(RefCell::new(stream));
    (
        ReadHalf {
            stream: shared.clone(),
        },
        WriteHalf { stream: shared },
    )
}

/// The reading half of a split stream.
#[derive(Debug)]
pub struct ReadHalf<S = TcpStream> {
    stream: Rc<RefCell<S>>,
}

/// The writing half of a split stream.
#[derive(Debug)]
pub struct WriteHalf<S = TcpStream> {
    stream: Rc<RefCell<S>>,
}

fn with<S: Unpin, T>(
    stream: &Rc<RefCell<S>>,
    f: impl FnOnce(Pin<&mut S>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match stream.try_borrow_mut() {
        Ok(mut s) => f(Pin::new(&mut *s)),
        // Unreachable by the module invariant; an error beats a panic.
        Err(_) => Poll::Ready(Err(io::Error::other("stream is already borrowed"))),
    }
}

impl<B: RxBuf> ReadHalf<TcpStream<B>> {
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream
            .try_borrow()
            .map_err(|_| io::Error::other("tcp stream is already borrowed"))?
            .peer_addr()
            .map_err(io::Error::other)
    }
}

impl<B: RxBuf> WriteHalf<TcpStream<B>> {
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream
            .try_borrow()
            .map_err(|_| io::Error::other("tcp stream is already borrowed"))?
            .peer_addr()
            .map_err(io::Error::other)
    }

    /// Shuts down both directions of the socket (wakes a pending reader with
    /// EOF). Used when framing can no longer be trusted.
    pub fn shutdown_both(&self) -> io::Result<()> {
        let s = self
            .stream
            .try_borrow()
            .map_err(|_| io::Error::other("tcp stream is already borrowed"))?;
        // The shutdown completes synchronously (a plain syscall); poll it once.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match s.poll_shutdown(&mut cx, std::net::Shutdown::Both) {
            Poll::Ready(r) => r.map_err(io::Error::other),
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadHalf<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        with(&self.stream, |s| s.poll_read(cx, buf))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteHalf<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with(&self.stream, |s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        with(&self.stream, |s| s.poll_write_vectored(cx, bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with(&self.stream, |s| s.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with(&self.stream, |s| s.poll_close(cx))
    }
}
