//! Criterion micro-benchmarks of the broker's hot path (docs/benchmarks.md):
//! request decode + FlatBuffer verify, batch CRC, header parse, full batch
//! validation, segment append, and sparse index lookups.
//!
//! Run with `cargo bench --bench hot_path`. Measurement times are kept short
//! (the whole run takes about a minute) so the numbers are indicative: compare
//! ratios within one run, not absolute values across machines.
//!
//! `segment_append/direct_io` goes through the real `Segment::append` inside a
//! glommio executor onto a temp file (O_DIRECT write, no fdatasync), so it
//! includes the disk; `segment_append/copy_stamp` is the in-memory part of
//! that path alone (copy into a page-aligned buffer, stamp the base offset,
//! parse the header), reproduced here because it is not reachable apart from
//! the file write.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use corelog::io::Io;
use corelog::protocol::batch::{self, BatchBuilder, BatchHeader};
use corelog::protocol::codec::{self, DecodeLimits};
use corelog::protocol::messages::{
    Acks, ProducePartition, ProduceRequest, ProduceTopic, Request, RequestBody, PROTOCOL_VERSION,
};
use corelog::storage::index::{OffsetIndex, TimeIndex};
use corelog::storage::segment::Segment;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Bytes of each record's value in the generated batches.
const VALUE_BYTES: usize = 100;

/// A batch of records with `VALUE_BYTES` values, as close to (and not above)
/// `target_bytes` as whole records allow; at least one record.
fn batch_of_bytes(target_bytes: usize) -> Bytes {
    let value = vec![b'v'; VALUE_BYTES];
    let mut b = BatchBuilder::with_capacity(target_bytes);
    let mut ts = 1_700_000_000_000i64;
    loop {
        let next = b.record_size_bytes(ts, None, Some(&value), &[]);
        if !b.is_empty() && b.size_bytes() + next > target_bytes {
            break;
        }
        b.push(ts, None, Some(&value), &[]);
        ts += 1;
    }
    b.finish()
}

/// A produce request frame carrying one batch for one partition.
fn produce_frame(batch: Bytes) -> Bytes {
    let req = Request {
        correlation_id: 7,
        api_version: PROTOCOL_VERSION,
        client_id: Some("bench".to_string()),
        body: RequestBody::Produce(ProduceRequest {
            acks: Acks::Leader,
            timeout_ms: 30_000,
            topics: vec![ProduceTopic {
                name: "bench-topic".to_string(),
                partitions: vec![ProducePartition {
                    partition: 0,
                    batch,
                }],
            }],
        }),
    };
    codec::encode_request(&req)
}

fn record_count(b: &[u8]) -> u32 {
    BatchHeader::parse(b).map(|h| h.record_count).unwrap_or(0)
}

fn size_label(bytes: usize) -> String {
    if bytes >= MIB {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{}KiB", bytes / KIB)
    }
}

fn bench_decode(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    let mut g = c.benchmark_group("decode_request");
    for (name, target) in [("produce_small", 200), ("produce_1MiB", MIB)] {
        let frame = produce_frame(batch_of_bytes(target));
        assert!(codec::decode_request(&frame, &limits).is_ok());
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &frame, |b, f| {
            b.iter(|| codec::decode_request(black_box(f), &limits))
        });
    }
    g.finish();
}

const BATCH_SIZES: [usize; 3] = [KIB, 64 * KIB, MIB];

fn bench_crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify_crc");
    for size in BATCH_SIZES {
        let batch = batch_of_bytes(size);
        assert!(batch::verify_crc(&batch).is_ok());
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(size_label(size)),
            &batch,
            |b, x| b.iter(|| batch::verify_crc(black_box(x))),
        );
    }
    g.finish();
}

fn bench_header_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_header_parse");
    let batch = batch_of_bytes(64 * KIB);
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| BatchHeader::parse(black_box(&batch)))
    });
    g.finish();
}

fn bench_validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    for size in BATCH_SIZES {
        let batch = batch_of_bytes(size);
        assert!(batch::validate(&batch).is_ok());
        let id = format!("{}_{}rec", size_label(size), record_count(&batch));
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(id), &batch, |b, x| {
            b.iter(|| batch::validate(black_box(x)))
        });
    }
    g.finish();
}

/// Segment files are replaced once they reach this size, so a run writes a
/// bounded amount of disk per segment.
const SEGMENT_CAP_BYTES: u64 = 64 * MIB as u64;

fn bench_segment_append(c: &mut Criterion) {
    let batch_bytes = 64 * KIB;
    let batch = batch_of_bytes(batch_bytes);
    let records = record_count(&batch) as u64;
    let mut g = c.benchmark_group("segment_append");
    g.throughput(Throughput::Bytes(batch.len() as u64));

    // The in-memory part: tail (a partial page) + batch copied into one
    // 4 KiB-aligned buffer, base offset stamped, header re-parsed.
    let tail = vec![0u8; 1000];
    let mut next_offset = 0u64;
    g.bench_function("copy_stamp/64KiB", |b| {
        b.iter(|| {
            let mut buf = AlignedBuf::new(tail.len() + batch.len());
            let bytes = buf.as_mut_slice();
            bytes[..tail.len()].copy_from_slice(&tail);
            let dst = &mut bytes[tail.len()..tail.len() + batch.len()];
            dst.copy_from_slice(&batch);
            batch::set_base_offset(dst, next_offset);
            let h = BatchHeader::parse(dst).map(|h| h.next_offset());
            next_offset = h.unwrap_or(next_offset + records);
            black_box(buf)
        })
    });

    // The real append path, through glommio onto a temp file.
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("glommio executor");
    let dir = tempfile::tempdir().expect("temp dir");
    g.bench_function("direct_io/64KiB", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let io = Io::real();
                let mut seg = Segment::create(dir.path(), 0, 4096, io.clone())
                    .await
                    .expect("create segment");
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    if seg.log_bytes() >= SEGMENT_CAP_BYTES {
                        drop(seg);
                        seg = Segment::create(dir.path(), 0, 4096, io.clone())
                            .await
                            .expect("recreate segment");
                    }
                    let stamp = corelog::protocol::batch::Stamp {
                        base_offset: seg.next_offset(),
                        leader_epoch: 0,
                    };
                    let item = [(batch.clone(), Some(stamp))];
                    let start = Instant::now();
                    seg.append(&item, false).await.expect("append");
                    elapsed += start.elapsed();
                }
                elapsed
            })
        })
    });
    g.finish();
}

/// A zeroed, 4 KiB-aligned heap buffer (what `alloc_dma_buffer` hands out).
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let layout =
            std::alloc::Layout::from_size_align(len.next_multiple_of(4096), 4096).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation failed");
        Self { ptr, layout }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for layout.size() bytes for the buffer's life.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Entries in each index: one per 4 KiB of log is a ~400 MiB segment.
const INDEX_ENTRIES: u32 = 100_000;
/// Lookups per iteration (spread over the whole index).
const LOOKUPS: usize = 1024;

fn bench_index(c: &mut Criterion) {
    let mut oi = OffsetIndex::default();
    let mut ti = TimeIndex::default();
    for i in 0..INDEX_ENTRIES {
        oi.push(i * 10, i * 4096);
        ti.maybe_push(1_700_000_000_000 + i as i64 * 5, i * 10);
    }
    // Deterministic pseudo-random targets (an LCG), so branch prediction
    // does not learn the search path.
    let mut x = 12345u64;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    let rel_targets: Vec<u32> = (0..LOOKUPS)
        .map(|_| (next() % (INDEX_ENTRIES as u64 * 10)) as u32)
        .collect();
    let ts_targets: Vec<i64> = (0..LOOKUPS)
        .map(|_| 1_700_000_000_000 + (next() % (INDEX_ENTRIES as u64 * 5)) as i64)
        .collect();

    let mut g = c.benchmark_group("index_lookup_100k");
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    g.bench_function("offset", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for &t in &rel_targets {
                acc = acc.wrapping_add(oi.lookup(black_box(t)) as u64);
            }
            acc
        })
    });
    g.bench_function("time", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for &t in &ts_targets {
                acc = acc.wrapping_add(ti.lookup(black_box(t)) as u64);
            }
            acc
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = hot_path;
    config = config();
    targets = bench_decode, bench_crc, bench_header_parse, bench_validate,
        bench_segment_append, bench_index
}
criterion_main!(hot_path);
