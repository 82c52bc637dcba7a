//! Framing: a `u32` payload length, then the payload. Corelog's protocol
//! (one FlatBuffer per frame) uses little-endian lengths; Kafka's uses
//! big-endian ([`ByteOrder`]). Pure functions over byte slices;
//! `net::frame_io` does the I/O.
//!
//! Invariant: a declared length above `max_frame_bytes` is rejected before a
//! single byte of the payload is allocated.

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {declared_bytes} bytes exceeds max_frame_bytes ({max_frame_bytes})")]
    TooLarge {
        declared_bytes: u64,
        max_frame_bytes: u32,
    },
    #[error("empty frame")]
    Empty,
}

/// Byte order of a frame's length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ByteOrder {
    /// Corelog's FlatBuffers protocol.
    #[default]
    Little,
    /// Kafka's protocol.
    Big,
}

/// Reads a little-endian length prefix and checks it against the limit.
pub fn check_length(
    prefix: [u8; LENGTH_PREFIX_BYTES],
    max_frame_bytes: u32,
) -> Result<usize, FrameError> {
    check_length_with(prefix, max_frame_bytes, ByteOrder::Little)
}

/// Reads a length prefix of `order` and checks it against the limit.
pub fn check_length_with(
    prefix: [u8; LENGTH_PREFIX_BYTES],
    max_frame_bytes: u32,
    order: ByteOrder,
) -> Result<usize, FrameError> {
    let declared = match order {
        ByteOrder::Little => u32::from_le_bytes(prefix),
        ByteOrder::Big => u32::from_be_bytes(prefix),
    };
    if declared == 0 {
        return Err(FrameError::Empty);
    }
    if declared > max_frame_bytes {
        return Err(FrameError::TooLarge {
            declared_bytes: declared as u64,
            max_frame_bytes,
        });
    }
    Ok(declared as usize)
}

/// The little-endian length prefix for a payload of `len` bytes.
pub fn length_prefix(len: usize) -> [u8; LENGTH_PREFIX_BYTES] {
    length_prefix_with(len, ByteOrder::Little)
}

/// The length prefix of `order` for a payload of `len` bytes (`len` must fit
/// a u32: callers check before framing).
pub fn length_prefix_with(len: usize, order: ByteOrder) -> [u8; LENGTH_PREFIX_BYTES] {
    debug_assert!(u32::try_from(len).is_ok(), "frame of {len} bytes");
    match order {
        ByteOrder::Little => (len as u32).to_le_bytes(),
        ByteOrder::Big => (len as u32).to_be_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_checks() {
        assert_eq!(check_length(length_prefix(10), 10), Ok(10));
        assert_eq!(check_length([0; 4], 10), Err(FrameError::Empty));
        assert_eq!(
            check_length(11u32.to_le_bytes(), 10),
            Err(FrameError::TooLarge {
                declared_bytes: 11,
                max_frame_bytes: 10
            })
        );
        assert_eq!(check_length([0xff; 4], u32::MAX), Ok(u32::MAX as usize));
        let big = length_prefix_with(258, ByteOrder::Big);
        assert_eq!(big, [0, 0, 1, 2]);
        assert_eq!(check_length_with(big, 1000, ByteOrder::Big), Ok(258));
    }
}
