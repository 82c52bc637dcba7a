//! Framing: `u32` little-endian payload length, then the payload (one
//! FlatBuffer). Pure functions over byte slices; `net::frame_io` does the I/O.
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

/// Reads a length prefix and checks it against the limit.
pub fn check_length(
    prefix: [u8; LENGTH_PREFIX_BYTES],
    max_frame_bytes: u32,
) -> Result<usize, FrameError> {
    let declared = u32::from_le_bytes(prefix);
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

/// The length prefix for a payload of `len` bytes.
pub fn length_prefix(len: usize) -> [u8; LENGTH_PREFIX_BYTES] {
    (len as u32).to_le_bytes()
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
    }
}
