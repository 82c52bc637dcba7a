//! Framed TCP I/O on glommio sockets, shared by `server` and `client`.
//! TODO(helper: protocol+client): `split` (read/write halves of one
//! glommio TcpStream without a Mutex) and `frame_io` (read/write one frame with
//! `protocol::frame` limits).
