//! Framed I/O over a transport, shared by `server` and `client`.
//!
//! - [`transport`]: the seam: [`Transport`] (a connected stream) and
//!   [`Acceptor`] (a listener); glommio TCP implements both.
//! - [`memory`]: an in-memory duplex [`Transport`] for tests.
//! - [`split`]: read and write halves of one stream without a Mutex
//!   (single-threaded `Rc<RefCell<_>>`, borrowed only inside `poll_*`).
//! - [`frame_io`]: read/write one length-prefixed frame with the
//!   `protocol::frame` limits (length checked before any allocation);
//!   responses are written as a list of buffers, vectored, never joined.
//!
//! Must not know: what a frame contains (codecs, requests, shards).

pub mod frame_io;
pub mod memory;
pub mod split;
pub mod transport;

pub use frame_io::{read_frame, write_frame, FrameIoError};
pub use split::{split, ReadHalf, WriteHalf};
pub use transport::{buffered, Acceptor, NetStream, Transport, SOCKET_RX_BUFFER_BYTES};
