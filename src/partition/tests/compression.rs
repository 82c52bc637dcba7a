//! Compressed batches in a partition: stored and served as they came,
//! timestamp lookup inside them, hostile ones refused with the right code.

use super::*;
use crate::protocol::compression::Compression;

fn compressed(codec: Compression, ts: i64, values: &[&[u8]]) -> Bytes {
    let mut b = BatchBuilder::new();
    for (i, v) in values.iter().enumerate() {
        b.push(ts + i as i64, None, Some(v), &[]);
    }
    b.finish_compressed(codec)
}

#[test]
fn compressed_batches_are_stored_and_served_as_they_came() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(64 * 1024)).await;
        let mut sent = Vec::new();
        for (i, codec) in Compression::ALL.into_iter().enumerate() {
            let b = compressed(codec, 1000 * (i as i64 + 1), &[b"a", b"bb", b"ccc"]);
            sent.push(b.clone());
            p.append(b).expect("append").wait().await.expect("ok");
        }
        let d = p.fetch(0, 1 << 20).await.expect("fetch");
        let records = d.records.to_bytes();
        let got: Vec<_> = batch::batches(&records)
            .map(|r| r.expect("batch"))
            .collect();
        assert_eq!(got.len(), sent.len());
        for (i, ((h, bytes), want)) in got.iter().zip(&sent).enumerate() {
            assert_eq!(h.base_offset, 3 * i as u64);
            // Same bytes after the stamped fields: no recompression.
            assert_eq!(bytes[batch::CRC_START..], want[batch::CRC_START..]);
            batch::validate(bytes).expect("still valid");
        }
        // Timestamp lookup reads inside compressed batches.
        let at = |t| p.list_offset(OffsetSpec::Timestamp(t));
        assert_eq!(at(2001).await.expect("ts"), (4, 2001));
        assert_eq!(at(5002).await.expect("ts"), (14, 5002));
        assert_eq!(at(4003).await.expect("ts"), (12, 5000));
        p.close().await.expect("close");
    });
}

#[test]
fn hostile_compressed_batches_are_refused() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(64 * 1024)).await;
        // LIMITS.max_decompressed_batch_bytes is 4 MiB: 8 MiB of zeros is a bomb.
        let zeros = vec![0u8; 1 << 20];
        let bomb = compressed(Compression::Zstd, 0, &[&zeros[..]; 8]);
        assert!(bomb.len() < LIMITS.max_batch_bytes as usize);
        let Err(err) = p.append(bomb) else {
            panic!("bomb accepted")
        };
        assert_eq!(err.to_wire().code, ErrorCode::MessageTooLarge, "{err}");
        assert!(
            err.to_string().contains("max_decompressed_batch_bytes"),
            "{err}"
        );
        // A frame that does not decompress: CorruptBatch.
        let mut bad = compressed(Compression::Lz4, 0, &[b"x"]).to_vec();
        let n = bad.len();
        bad[n - 6..].copy_from_slice(b"broken");
        batch::set_crc(&mut bad);
        let Err(err) = p.append(Bytes::from(bad)) else {
            panic!("bad frame accepted")
        };
        assert_eq!(err.to_wire().code, ErrorCode::CorruptBatch, "{err}");
        // The partition keeps taking good batches.
        p.append(compressed(Compression::Gzip, 0, &[b"ok"]))
            .expect("append")
            .wait()
            .await
            .expect("ok");
        assert_eq!(p.high_watermark(), 1);
        p.close().await.expect("close");
    });
}
