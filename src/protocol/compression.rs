//! Compression codecs of a record batch's records section (docs/compression.md).
//!
//! Owns: [`Compression`] (Kafka's codec numbers 0-4 in attribute bits 0-2),
//! [`compress`] and the bounded [`decompress`], with Kafka's framings byte for
//! byte: gzip (RFC 1952), snappy in the xerial framing Java's and librdkafka's
//! producers write (raw snappy accepted on read), the LZ4 frame format as
//! Kafka's `KafkaLZ4BlockOutputStream` writes it (independent 64 KiB blocks,
//! no checksums; its reader refuses dependent blocks, so this one does too),
//! zstd frames.
//!
//! Invariants: decompression never holds more than `max_bytes` of output
//! (plus the codecs' own bounded window/block buffers): every decoder is a
//! streaming reader behind a cap, and a snappy block's declared length is
//! checked before anything is allocated for it. Hostile input gives an error,
//! never a panic.
//!
//! Must not know: the batch header layout (the batch module calls in with the
//! records section), I/O, connections.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

/// Default for `limits.max_decompressed_batch_bytes` (broker) and the
/// consumer's `max_decompressed_batch_bytes`: 64 MiB of records after
/// decompression.
pub const DEFAULT_MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Kafka's compression codec (attribute bits 0-2 of a batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// Kafka's codec number.
    pub fn code(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec of attribute bits 0-2; `None` for 5-7 (not defined by Kafka).
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown compression {s:?} (none, gzip, snappy, lz4, zstd)"))
    }
}

impl serde::Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a records section did not decompress.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error(
        "{codec} records decompress to more than {max_bytes} bytes (max_decompressed_batch_bytes)"
    )]
    TooLarge {
        codec: Compression,
        max_bytes: usize,
    },
    #[error("{codec} records do not decompress: {reason}")]
    Corrupt { codec: Compression, reason: String },
}

/// The xerial snappy stream header: magic, version 1, compatible version 1.
pub const XERIAL_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];
/// Uncompressed bytes per xerial block, as Java's `SnappyOutputStream`
/// writes by default (32 KiB).
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;
/// The LZ4 frame magic number (little-endian on the wire).
const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];
/// FLG bit 5: blocks are independent (Kafka's reader requires it).
const LZ4_FLG_BLOCK_INDEPENDENCE: u8 = 0x20;
/// zstd's default window-log limit (`ZSTD_WINDOWLOG_LIMIT_DEFAULT`): frames
/// asking a larger window are refused, which bounds the decoder's memory.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Compresses a records section with `codec` in Kafka's framing. `None`
/// returns the bytes unchanged.
pub fn compress(codec: Compression, raw: &[u8]) -> Vec<u8> {
    match codec {
        Compression::None => raw.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(raw.len() / 2 + 64),
                flate2::Compression::default(),
            );
            e.write_all(raw).expect("writing to a Vec cannot fail");
            e.finish().expect("writing to a Vec cannot fail")
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER.len() + raw.len() / 2 + 64);
            out.extend_from_slice(&XERIAL_HEADER);
            let mut enc = snap::raw::Encoder::new();
            for chunk in raw.chunks(XERIAL_BLOCK_BYTES) {
                let block = enc
                    .compress_vec(chunk)
                    .expect("a 32 KiB chunk is within snappy's input limit");
                let len = u32::try_from(block.len()).expect("a compressed 32 KiB chunk fits u32");
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .block_checksums(false)
                .content_checksum(false);
            let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(
                info,
                Vec::with_capacity(raw.len() / 2 + 64),
            );
            e.write_all(raw).expect("writing to a Vec cannot fail");
            e.finish().expect("writing to a Vec cannot fail")
        }
        Compression::Zstd => {
            // Level 3: zstd's and Kafka's default.
            zstd::stream::encode_all(raw, 3).expect("writing to a Vec cannot fail")
        }
    }
}

/// Decompresses a records section, refusing output past `max_bytes`
/// (`TooLarge`) without ever holding more than `max_bytes` + one read chunk.
pub fn decompress(
    codec: Compression,
    data: &[u8],
    max_bytes: usize,
) -> Result<Vec<u8>, DecompressError> {
    let corrupt = |reason: String| DecompressError::Corrupt { codec, reason };
    match codec {
        Compression::None => {
            if data.len() > max_bytes {
                return Err(DecompressError::TooLarge { codec, max_bytes });
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => read_capped(codec, flate2::read::GzDecoder::new(data), max_bytes),
        Compression::Snappy => snappy_decompress(data, max_bytes),
        Compression::Lz4 => {
            if data.len() < 7 || data[..4] != LZ4_MAGIC {
                return Err(corrupt("not an LZ4 frame (bad magic)".into()));
            }
            if data[4] & LZ4_FLG_BLOCK_INDEPENDENCE == 0 {
                return Err(corrupt(
                    "LZ4 frame with dependent blocks (Kafka writes and reads independent blocks only)"
                        .into(),
                ));
            }
            read_capped(codec, lz4_flex::frame::FrameDecoder::new(data), max_bytes)
        }
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| corrupt(e.to_string()))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| corrupt(e.to_string()))?;
            read_capped(codec, d, max_bytes)
        }
    }
}

/// Reads `r` to its end into a Vec of at most `max_bytes`.
fn read_capped(
    codec: Compression,
    r: impl Read,
    max_bytes: usize,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    let cap = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    r.take(cap)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Corrupt {
            codec,
            reason: e.to_string(),
        })?;
    if out.len() > max_bytes {
        return Err(DecompressError::TooLarge { codec, max_bytes });
    }
    Ok(out)
}

/// Xerial-framed snappy (`[header][u32 BE length][raw block]...`), or one raw
/// snappy block when the header is absent (as Java's `SnappyInputStream` and
/// librdkafka accept).
fn snappy_decompress(data: &[u8], max_bytes: usize) -> Result<Vec<u8>, DecompressError> {
    let codec = Compression::Snappy;
    let corrupt = |reason: String| DecompressError::Corrupt { codec, reason };
    let mut dec = snap::raw::Decoder::new();
    let mut out = Vec::new();
    let mut append_block = |out: &mut Vec<u8>, block: &[u8]| -> Result<(), DecompressError> {
        let n = snap::raw::decompress_len(block).map_err(|e| corrupt(e.to_string()))?;
        if n > max_bytes.saturating_sub(out.len()) {
            return Err(DecompressError::TooLarge { codec, max_bytes });
        }
        let at = out.len();
        out.resize(at + n, 0);
        let wrote = dec
            .decompress(block, &mut out[at..])
            .map_err(|e| corrupt(e.to_string()))?;
        if wrote != n {
            return Err(corrupt(format!(
                "block declares {n} bytes, decodes to {wrote}"
            )));
        }
        Ok(())
    };
    if !data.starts_with(&XERIAL_HEADER[..8]) {
        append_block(&mut out, data)?;
        return Ok(out);
    }
    if data.len() < XERIAL_HEADER.len() {
        return Err(corrupt("truncated xerial header".into()));
    }
    let mut pos = XERIAL_HEADER.len();
    while pos < data.len() {
        let len_bytes: [u8; 4] = data
            .get(pos..pos + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| corrupt(format!("truncated block length at byte {pos}")))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        pos += 4;
        let block = pos
            .checked_add(len)
            .and_then(|end| data.get(pos..end))
            .ok_or_else(|| corrupt(format!("block of {len} bytes runs past the data")))?;
        pos += len;
        append_block(&mut out, block)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
