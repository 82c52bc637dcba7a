//! "The produce and fetch paths allocate per batch, not per record": counts
//! heap allocations (a counting `#[global_allocator]`, per thread) made by
//! request decode, batch validation, and a partition append + fetch of one
//! batch, and checks that a batch of 10,000 records costs no more allocations
//! than a batch of 10 (plus a small constant). Deterministic: counts, no time.
//!
//! Counts are per thread (the test thread, or the glommio executor thread in
//! the partition test): allocations on helper threads are not seen.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;

use corelog::config::TopicConfig;
use corelog::partition::{Partition, PartitionLimits};
use corelog::protocol::batch::{self, BatchBuilder};
use corelog::protocol::codec::{self, DecodeLimits};
use corelog::protocol::messages::{
    Acks, ProducePartition, ProduceRequest, ProduceTopic, Request, RequestBody, PROTOCOL_VERSION,
};
use corelog::protocol::TopicPartition;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    // try_with: the slot may already be gone while a thread exits.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; counting
// uses a const thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (alloc, alloc_zeroed, realloc) made on this thread by `f`.
fn count<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCS.with(Cell::get);
    let out = f();
    (ALLOCS.with(Cell::get) - before, out)
}

/// Small records, so 10,000 of them stay well under the batch limit.
fn batch(records: u32) -> Bytes {
    batch_with_headers(records, &[])
}

fn batch_with_headers(records: u32, headers: &[(&[u8], Option<&[u8]>)]) -> Bytes {
    let mut b = BatchBuilder::with_capacity(records as usize * 48);
    for i in 0..records {
        let v = i.to_le_bytes();
        b.push(1_700_000_000_000 + i as i64, Some(b"k"), Some(&v), headers);
    }
    b.finish()
}

fn produce_frame(batch: Bytes) -> Bytes {
    let req = Request {
        correlation_id: 1,
        api_version: PROTOCOL_VERSION,
        client_id: Some("alloc-test".to_string()),
        body: RequestBody::Produce(ProduceRequest {
            acks: Acks::Leader,
            timeout_ms: 30_000,
            topics: vec![ProduceTopic {
                name: "t".to_string(),
                partitions: vec![ProducePartition {
                    partition: 0,
                    batch,
                }],
            }],
        }),
    };
    codec::encode_request(&req)
}

const FEW: u32 = 10;
const MANY: u32 = 10_000;
/// Allowed difference in allocations between the MANY and the FEW case
/// (amortized Vec growth and the like), in allocations.
const SLACK: u64 = 4;

fn assert_flat(what: &str, few: u64, many: u64, slack: u64) {
    println!("{what}: {FEW} records -> {few} allocations, {MANY} records -> {many} allocations");
    assert!(
        many <= few + slack,
        "{what} allocates per record: {few} allocations for {FEW} records, {many} for {MANY}"
    );
}

#[test]
fn decode_request_allocates_per_batch() {
    let limits = DecodeLimits::default();
    let batches = [batch(FEW), batch(MANY)];
    let frames = batches.clone().map(produce_frame);
    let mut counts = [0u64; 2];
    for (i, f) in frames.iter().enumerate() {
        // Once to warm up anything lazily initialized, then counted.
        codec::decode_request(f, &limits).expect("decode");
        let (n, r) = count(|| codec::decode_request(f, &limits));
        let req = r.expect("decode");
        let RequestBody::Produce(p) = &req.body else {
            panic!("decoded a non-produce request");
        };
        assert_eq!(p.topics[0].partitions[0].batch, batches[i]);
        counts[i] = n;
    }
    assert_flat("codec::decode_request", counts[0], counts[1], SLACK);
}

#[test]
fn validate_allocates_per_batch_even_with_headers() {
    let headers: &[(&[u8], Option<&[u8]>)] = &[(b"trace", Some(b"abc")), (b"src", None)];
    let batches = [
        batch_with_headers(FEW, headers),
        batch_with_headers(MANY, headers),
    ];
    let mut counts = [0u64; 2];
    for (i, b) in batches.iter().enumerate() {
        let (n, r) = count(|| batch::validate(b));
        assert_eq!(r.expect("valid").record_count, [FEW, MANY][i]);
        counts[i] = n;
    }
    assert_flat(
        "batch::validate (2 headers/record)",
        counts[0],
        counts[1],
        SLACK,
    );
}

#[test]
fn validate_allocates_per_batch() {
    let batches = [batch(FEW), batch(MANY)];
    let mut counts = [0u64; 2];
    for (i, b) in batches.iter().enumerate() {
        let (n, r) = count(|| batch::validate(b));
        assert_eq!(r.expect("valid").record_count, [FEW, MANY][i]);
        counts[i] = n;
    }
    assert_flat("batch::validate", counts[0], counts[1], SLACK);
}

#[test]
fn partition_append_and_fetch_allocate_per_batch() {
    let out = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(|| async move {
            let dir = tempfile::tempdir().expect("temp dir");
            let p = Partition::open(
                TopicPartition::new("t", 0),
                dir.path().to_path_buf(),
                TopicConfig::default(),
                PartitionLimits {
                    max_batch_bytes: 1 << 20,
                    max_decompressed_batch_bytes: 4 << 20,
                    retention_check_interval_ms: 3_600_000,
                    recovery_scan: corelog::config::RecoveryScan::Active,
                    producer_id_expiration_ms: 86_400_000,
                },
            )
            .await
            .expect("open partition");
            // Warm up: the first append and fetch set up the writer task,
            // the segment and buffers.
            append_fetch(&p, batch(FEW)).await;
            append_fetch(&p, batch(FEW)).await;
            // Background work of the partition (writer turns, checkpoint
            // completions) lands in one window or the next depending on
            // scheduling, a few allocations either way: compare the most a
            // small batch took with the least a large one took. An
            // allocation per record would show in every large run.
            let mut few = (0, 0);
            for _ in 0..3 {
                let (a, f) = append_fetch(&p, batch(FEW)).await;
                few = (few.0.max(a), few.1.max(f));
            }
            let mut many = (u64::MAX, u64::MAX);
            for _ in 0..2 {
                let (a, f) = append_fetch(&p, batch(MANY)).await;
                many = (many.0.min(a), many.1.min(f));
            }
            p.close().await.expect("close");
            (few, many)
        })
        .expect("spawn executor")
        .join()
        .expect("executor thread");
    let ((few_append, few_fetch), (many_append, many_fetch)) = out;
    assert_flat("Partition::append + wait", few_append, many_append, SLACK);
    assert_flat("Partition::fetch", few_fetch, many_fetch, SLACK);
}

/// Appends `b`, waits until durable, fetches it back; returns the
/// allocations of (append + wait, fetch).
async fn append_fetch(p: &Rc<Partition>, b: Bytes) -> (u64, u64) {
    let len = b.len();
    let before = ALLOCS.with(Cell::get);
    let ticket = p.append(b).expect("append");
    let res = ticket.wait().await.expect("durable");
    let mid = ALLOCS.with(Cell::get);
    let data = p.fetch(res.base_offset, len as u32).await.expect("fetch");
    let after = ALLOCS.with(Cell::get);
    let records = data.records.to_bytes();
    let (h, fetched) = batch::batches(&records)
        .next()
        .expect("one batch")
        .expect("batch parses");
    assert_eq!(h.base_offset, res.base_offset);
    assert_eq!(fetched.len(), len);
    (mid - before, after - mid)
}
