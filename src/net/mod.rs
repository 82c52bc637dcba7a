//! Framed TCP I/O on glommio sockets, shared by `server` and `client`.
//!
//! - [`split`]: read and write halves of one glommio `TcpStream` without a
//!   Mutex (single-threaded `Rc<RefCell<_>>`, borrowed only inside `poll_*`).
//! - [`frame_io`]: read/write one length-prefixed frame with the
//!   `protocol::frame` limits (length checked before any allocation).

pub mod frame_io;
pub mod split;

pub use frame_io::{read_frame, write_frame, FrameIoError};
pub use split::{split, ReadHalf, WriteHalf};
