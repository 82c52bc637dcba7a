//! The transport seam: what a connection reads and writes, and what a
//! listener accepts. Production uses glommio's TCP types; tests can hand a
//! connection any other [`Transport`] (e.g. [`super::memory::duplex`]) and
//! inject a dropped or stalled peer through the same code path.
//!
//! Sockets are read through a receive buffer of [`SOCKET_RX_BUFFER_BYTES`]
//! ([`NetStream`]): a small request's length prefix and body arrive in one
//! `recv` (or one io_uring receive into the buffer, which glommio uses once
//! a connection goes quiet between requests, so a request/response client
//! costs no `EAGAIN` either); a read at least as large as the buffer goes
//! straight to the socket, so large frames are not copied twice.
//!
//! Must not know: frames, codecs, requests.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{Preallocated, RxBuf, TcpListener, TcpStream};

/// Receive buffer per connection, in bytes: holds a small produce request
/// (the issue-13 setups send 10-16 KiB) with its length prefix.
pub const SOCKET_RX_BUFFER_BYTES: usize = 32 * 1024;

/// A TCP stream read through a [`SOCKET_RX_BUFFER_BYTES`] receive buffer.
pub type NetStream = TcpStream<Preallocated>;

/// Wraps a connected stream in the receive buffer (both ends use it).
pub fn buffered(stream: TcpStream) -> NetStream {
    stream.buffered_with(Preallocated::new(SOCKET_RX_BUFFER_BYTES))
}

/// A connected byte stream.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + 'static {
    /// The peer, for logs.
    fn peer(&self) -> String;
    /// Sends small writes at once (TCP_NODELAY); a no-op where meaningless.
    fn set_nodelay(&self) {}
}

impl<B: RxBuf + Unpin + 'static> Transport for TcpStream<B> {
    fn peer(&self) -> String {
        self.peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    }

    fn set_nodelay(&self) {
        let _ = TcpStream::set_nodelay(self, true);
    }
}

/// Accepts connections.
pub trait Acceptor: 'static {
    type Stream: Transport;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + '_;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Acceptor for TcpListener {
    type Stream = NetStream;

    async fn accept(&self) -> io::Result<NetStream> {
        TcpListener::accept(self)
            .await
            .map(buffered)
            .map_err(io::Error::other)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self).map_err(io::Error::other)
    }
}
