use super::*;

fn json_like(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        v.extend_from_slice(
            format!(
                "{{\"id\":{i},\"user\":\"user-{}\",\"event\":\"click\",\"ok\":true}}",
                i % 97
            )
            .as_bytes(),
        );
    }
    v
}

#[test]
fn every_codec_round_trips() {
    let raw = json_like(5000);
    for c in Compression::ALL {
        let z = compress(c, &raw);
        if c != Compression::None {
            assert!(z.len() < raw.len() / 2, "{c} compresses JSON-like data");
        }
        assert_eq!(
            decompress(c, &z, raw.len()).expect("round trip"),
            raw,
            "{c}"
        );
        assert_eq!(
            decompress(c, &compress(c, b""), 0).expect("empty"),
            b"",
            "{c}"
        );
    }
}

#[test]
fn names_and_codes() {
    for c in Compression::ALL {
        assert_eq!(c.to_string().parse::<Compression>(), Ok(c));
        assert_eq!(Compression::from_code(c.code()), Some(c));
    }
    assert_eq!("ZSTD".parse::<Compression>(), Ok(Compression::Zstd));
    assert!("brotli".parse::<Compression>().is_err());
    for code in 5..8 {
        assert_eq!(Compression::from_code(code), None);
    }
}

#[test]
fn gzip_is_rfc1952() {
    let z = compress(Compression::Gzip, b"hello");
    assert_eq!(&z[..3], &[0x1f, 0x8b, 8]);
}

#[test]
fn snappy_writes_the_xerial_framing() {
    let raw = json_like(2000);
    assert!(raw.len() > XERIAL_BLOCK_BYTES);
    let z = compress(Compression::Snappy, &raw);
    // Magic \x82SNAPPY\0, version 1, compatible version 1 (big-endian).
    assert_eq!(&z[..16], b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01");
    // Then [u32 BE length][raw snappy block] for each 32 KiB chunk.
    let len = u32::from_be_bytes(z[16..20].try_into().expect("4")) as usize;
    let first = snap::raw::Decoder::new()
        .decompress_vec(&z[20..20 + len])
        .expect("raw block");
    assert_eq!(first, &raw[..XERIAL_BLOCK_BYTES]);
}

#[test]
fn snappy_reads_raw_blocks_too() {
    let raw = json_like(100);
    let block = snap::raw::Encoder::new().compress_vec(&raw).expect("c");
    assert_eq!(
        decompress(Compression::Snappy, &block, raw.len()).expect("raw"),
        raw
    );
}

#[test]
fn lz4_writes_the_frame_kafka_writes() {
    let z = compress(Compression::Lz4, &json_like(100));
    assert_eq!(&z[..4], &[0x04, 0x22, 0x4d, 0x18], "frame magic");
    // FLG: version 01, independent blocks, no block/content checksum, no
    // content size (Kafka's FLG()); BD: 64 KiB blocks (Kafka's BD()).
    assert_eq!(z[4], 0x60);
    assert_eq!(z[5], 0x40);
    // Header checksum: second byte of xxh32(FLG..BD, seed 0), the 0x82 of
    // every Kafka LZ4 batch ("04 22 4d 18 60 40 82").
    assert_eq!(z[6], 0x82);
}

#[test]
fn lz4_dependent_blocks_are_refused() {
    let mut z = compress(Compression::Lz4, &json_like(100));
    z[4] &= !LZ4_FLG_BLOCK_INDEPENDENCE;
    assert!(matches!(
        decompress(Compression::Lz4, &z, 1 << 20),
        Err(DecompressError::Corrupt { .. })
    ));
}

#[test]
fn bombs_are_refused_at_the_limit() {
    let raw = vec![0u8; 4 << 20];
    for c in Compression::ALL {
        let z = compress(c, &raw);
        assert_eq!(
            decompress(c, &z, 1 << 20),
            Err(DecompressError::TooLarge {
                codec: c,
                max_bytes: 1 << 20
            }),
            "{c}"
        );
        // Exactly at the limit is fine.
        assert_eq!(decompress(c, &z, raw.len()).map(|v| v.len()), Ok(raw.len()));
    }
}

#[test]
fn snappy_declared_length_is_checked_before_allocating() {
    // A raw snappy block declaring 2^32-1 bytes of output with no data.
    let lie = [0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(matches!(
        decompress(Compression::Snappy, &lie, 1 << 20),
        Err(DecompressError::TooLarge { .. })
    ));
}

#[test]
fn hostile_inputs_are_errors_not_panics() {
    let raw = json_like(3000);
    for c in Compression::ALL.into_iter().skip(1) {
        let z = compress(c, &raw);
        // Truncations at many points.
        for cut in (0..z.len()).step_by((z.len() / 50).max(1)) {
            let _ = decompress(c, &z[..cut], raw.len());
        }
        assert!(
            decompress(c, &z[..z.len() / 2], raw.len()).is_err(),
            "{c} truncated"
        );
        // Bit flips (some may still decode; none may panic).
        for i in (0..z.len()).step_by((z.len() / 64).max(1)) {
            let mut b = z.clone();
            b[i] ^= 0x5a;
            let _ = decompress(c, &b, raw.len());
        }
        assert!(
            decompress(c, b"garbage that is no frame at all", 1 << 20).is_err(),
            "{c}"
        );
    }
}
