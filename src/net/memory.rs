//! An in-memory, single-thread duplex stream: two [`MemoryStream`] ends,
//! each reading what the other writes, with a bounded buffer per direction.
//! A [`Transport`] for tests: dropping or closing one end is a peer that went
//! away (the other reads EOF; its writes fail with BrokenPipe).
//!
//! Invariant: a direction never holds more than its capacity (a writer waits
//! for the reader, as a socket's send buffer makes it).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_lite::{AsyncRead, AsyncWrite};

use super::transport::Transport;

#[derive(Default)]
struct Pipe {
    buf: VecDeque<u8>,
    capacity: usize,
    /// The writing end closed or dropped: EOF once drained.
    write_closed: bool,
    /// The reading end dropped: writes fail.
    read_dropped: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// One end of a [`duplex`].
pub struct MemoryStream {
    incoming: Rc<RefCell<Pipe>>,
    outgoing: Rc<RefCell<Pipe>>,
    name: &'static str,
}

/// Two connected ends, `capacity_bytes` buffered per direction.
pub fn duplex(capacity_bytes: usize) -> (MemoryStream, MemoryStream) {
    let pipe = || {
        Rc::new(RefCell::new(Pipe {
            capacity: capacity_bytes.max(1),
            ..Pipe::default()
        }))
    };
    let (a, b) = (pipe(), pipe());
    (
        MemoryStream {
            incoming: a.clone(),
            outgoing: b.clone(),
            name: "memory-a",
        },
        MemoryStream {
            incoming: b,
            outgoing: a,
            name: "memory-b",
        },
    )
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

impl AsyncRead for MemoryStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = self.incoming.borrow_mut();
        if p.buf.is_empty() {
            if p.write_closed {
                return Poll::Ready(Ok(0));
            }
            p.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(p.buf.len());
        for (dst, src) in buf.iter_mut().zip(p.buf.drain(..n)) {
            *dst = src;
        }
        wake(&mut p.writer);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = self.outgoing.borrow_mut();
        if p.read_dropped || p.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = p.capacity - p.buf.len();
        if room == 0 {
            p.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        p.buf.extend(&buf[..n]);
        debug_assert!(p.buf.len() <= p.capacity);
        wake(&mut p.reader);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut p = self.outgoing.borrow_mut();
        p.write_closed = true;
        wake(&mut p.reader);
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemoryStream {
    fn drop(&mut self) {
        let mut out = self.outgoing.borrow_mut();
        out.write_closed = true;
        wake(&mut out.reader);
        drop(out);
        let mut inc = self.incoming.borrow_mut();
        inc.read_dropped = true;
        wake(&mut inc.writer);
    }
}

impl Transport for MemoryStream {
    fn peer(&self) -> String {
        self.name.to_string()
    }
}
