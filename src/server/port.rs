//! The listen address: one broker per address, every shard of it listening.
//!
//! Owns: the claim on the listen address ([`PortClaim`], held for the
//! broker's lifetime) and each shard's listening socket
//! ([`bind_shard_listener`]).
//!
//! Why: the shards share one address through SO_REUSEPORT, and SO_REUSEPORT
//! would just as well let a second broker of the same user listen there too
//! (the kernel then spreads clients over both at random). So before any shard
//! binds, [`claim`]:
//! 1. binds a probe socket WITHOUT SO_REUSEPORT (with SO_REUSEADDR, so that
//!    TIME_WAIT connections of an earlier run do not count). It fails if
//!    anything listens on the address, whoever owns it, or if another broker
//!    holds its claim there; it also resolves port 0 to a free port. It is
//!    closed at once.
//! 2. binds, and holds until the broker exits, a claim socket with
//!    SO_REUSEPORT and without SO_REUSEADDR, which never listens. Our shards
//!    (SO_REUSEPORT, same user) may bind beside it; another broker's probe may
//!    not (SO_REUSEADDR only matches sockets that set it too), even while this
//!    broker is still recovering partitions and nothing listens yet.
//!
//! Invariants: a taken address gives one message whoever holds it
//! ([`in_use_message`]); the shards bind the resolved address (never port 0),
//! so they all share one port. What remains open is a window of microseconds
//! between the probe's close and the claim's bind, when two brokers started
//! at the same instant could both pass.
//!
//! Must not know: shards, partitions, the protocol.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Backlog of each shard's listening socket, in connections.
pub const LISTEN_BACKLOG: i32 = 1024;

/// The claim socket; the address stays ours while it lives.
#[derive(Debug)]
pub struct PortClaim {
    _socket: Socket,
    addr: SocketAddr,
}

impl PortClaim {
    /// The claimed address (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The one message for an address someone else serves.
pub fn in_use_message(addr: SocketAddr) -> String {
    format!("cannot listen on {addr}: the address is already in use by another process")
}

fn bind_error(addr: SocketAddr, e: io::Error) -> String {
    if e.kind() == io::ErrorKind::AddrInUse {
        in_use_message(addr)
    } else {
        format!("cannot listen on {addr}: {e}")
    }
}

fn tcp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_cloexec(true)?;
    Ok(s)
}

/// Checks that nothing serves `addr` and claims it for this broker (see the
/// module header). Returns the claim, whose address has port 0 resolved.
pub fn claim(addr: SocketAddr) -> Result<PortClaim, String> {
    let probe = tcp_socket(addr).map_err(|e| bind_error(addr, e))?;
    probe
        .set_reuse_address(true)
        .map_err(|e| bind_error(addr, e))?;
    probe
        .bind(&SockAddr::from(addr))
        .map_err(|e| bind_error(addr, e))?;
    let resolved = probe
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| format!("cannot listen on {addr}: cannot read the bound address"))?;
    drop(probe);
    let claim = tcp_socket(resolved).map_err(|e| bind_error(resolved, e))?;
    claim
        .set_reuse_port(true)
        .map_err(|e| bind_error(resolved, e))?;
    claim
        .bind(&SockAddr::from(resolved))
        .map_err(|e| bind_error(resolved, e))?;
    assert_ne!(resolved.port(), 0, "the claimed port is resolved");
    Ok(PortClaim {
        _socket: claim,
        addr: resolved,
    })
}

/// One shard's listening socket on the claimed `addr` (SO_REUSEPORT beside
/// the claim and the other shards; SO_REUSEADDR so that this run's TIME_WAIT
/// connections do not block the next run's probe). Must run on the shard's
/// executor.
pub fn bind_shard_listener(addr: SocketAddr) -> Result<glommio::net::TcpListener, String> {
    assert_ne!(addr.port(), 0, "shards bind the claimed port, never port 0");
    let build = || -> io::Result<Socket> {
        let s = tcp_socket(addr)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&SockAddr::from(addr))?;
        s.listen(LISTEN_BACKLOG)?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let socket = build().map_err(|e| bind_error(addr, e))?;
    // SAFETY: the descriptor is a bound, listening, non-blocking TCP socket
    // that we own and hand over whole (into_raw_fd gives up our ownership).
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_address_cannot_be_claimed_twice() {
        let first = claim("127.0.0.1:0".parse().expect("addr")).expect("first claim");
        assert_ne!(first.addr().port(), 0);
        let err = claim(first.addr()).expect_err("second claim must fail");
        assert_eq!(err, in_use_message(first.addr()));
        drop(first);
    }

    #[test]
    fn a_foreign_reuseport_listener_is_refused() {
        // What a second broker of the same user looks like to the kernel.
        let other = tcp_socket("127.0.0.1:0".parse().expect("addr")).expect("socket");
        other.set_reuse_port(true).expect("reuseport");
        other
            .bind(&SockAddr::from(
                "127.0.0.1:0".parse::<SocketAddr>().expect("addr"),
            ))
            .expect("bind");
        other.listen(8).expect("listen");
        let addr = other.local_addr().expect("addr").as_socket().expect("inet");
        assert_eq!(claim(addr).expect_err("taken"), in_use_message(addr));
    }
}
