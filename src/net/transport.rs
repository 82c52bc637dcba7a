//! The transport seam: what a connection reads and writes, and what a
//! listener accepts. Production uses glommio's TCP types; tests can hand a
//! connection any other [`Transport`] (e.g. [`super::memory::duplex`]) and
//! inject a dropped or stalled peer through the same code path.
//!
//! Must not know: frames, codecs, requests.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};

/// A connected byte stream.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + 'static {
    /// The peer, for logs.
    fn peer(&self) -> String;
    /// Sends small writes at once (TCP_NODELAY); a no-op where meaningless.
    fn set_nodelay(&self) {}
}

impl Transport for TcpStream {
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
    type Stream = TcpStream;

    async fn accept(&self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map_err(io::Error::other)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self).map_err(io::Error::other)
    }
}
