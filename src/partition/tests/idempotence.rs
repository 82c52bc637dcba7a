//! Idempotent producers on a real partition (docs/idempotence.md):
//! duplicates of in-flight and committed batches, refusals, failed writes
//! leaving no phantom state, rebuild from snapshots and the log after
//! restart, corrupt snapshots, truncation.

use super::*;

/// An idempotent batch of `n` records (values tagged like [`batch`]: batch
/// `tag`, so `check_sequence` works when tags follow offsets / 5).
fn pbatch(tag: u64, pid: i64, epoch: i16, seq: i32, n: u32) -> Bytes {
    let mut b = BatchBuilder::new();
    b.set_producer(pid, epoch, seq);
    for i in 0..n {
        let v = format!("{tag}:{i}:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        b.push(1000 + i as i64, None, Some(v.as_bytes()), &[]);
    }
    b.finish()
}

/// Batch `i` of producer 7 epoch 0: 5 records at sequence 5 * i.
fn seq_batch(i: u64) -> Bytes {
    pbatch(i, 7, 0, (5 * i) as i32, 5)
}

async fn open_with(dir: &Path, c: &TopicConfig) -> Rc<Partition> {
    open(dir, c).await
}

async fn append_ok(p: &Rc<Partition>, b: Bytes) -> AppendResult {
    p.append(b).expect("append").wait().await.expect("durable")
}

#[test]
fn duplicates_get_the_original_offsets_in_flight_or_committed() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open_with(dir.path(), &cfg(64 << 20)).await;
        append_ok(&p, seq_batch(0)).await;
        // Two in flight, then retries of both before either is durable.
        let t1 = p.append(seq_batch(1)).expect("append 1");
        let t2 = p.append(seq_batch(2)).expect("append 2");
        let d1 = p.append(seq_batch(1)).expect("dup 1");
        let d2 = p.append(seq_batch(2)).expect("dup 2");
        assert_eq!(d1.result(), t1.result());
        assert_eq!(d2.result(), t2.result());
        assert_eq!(p.log_end_offset(), 15, "duplicates take no offsets");
        // The duplicates resolve with the originals.
        let (r1, r2) = (t1.result(), t2.result());
        assert_eq!(d2.wait().await.expect("dup 2 durable"), r2);
        assert_eq!(d1.wait().await.expect("dup 1 durable"), r1);
        assert_eq!(t1.wait().await.expect("1"), r1);
        assert_eq!(t2.wait().await.expect("2"), r2);
        // Committed duplicate: at once, same offsets.
        let d0 = p.append(seq_batch(0)).expect("dup 0");
        assert_eq!(d0.result().base_offset, 0);
        assert_eq!(d0.wait_all().await.expect("dup 0").last_offset, 4);
        check_sequence(&read_all(&p).await, 0, 15);
        p.close().await.expect("close");
    });
}

#[test]
fn refusals_map_to_their_wire_codes_and_take_no_offsets() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open_with(dir.path(), &cfg(64 << 20)).await;
        append_ok(&p, pbatch(0, 7, 1, 0, 5)).await;
        let code = |r: Result<AppendTicket, PartitionError>| match r {
            Err(e) => e.to_wire().code,
            Ok(t) => panic!("accepted at {:?}", t.result()),
        };
        assert_eq!(
            code(p.append(pbatch(1, 7, 1, 6, 5))),
            ErrorCode::OutOfOrderSequence
        );
        assert_eq!(
            code(p.append(pbatch(1, 7, 0, 5, 5))),
            ErrorCode::InvalidProducerEpoch
        );
        assert_eq!(
            code(p.append(pbatch(1, 7, 2, 5, 5))),
            ErrorCode::OutOfOrderSequence
        );
        assert_eq!(
            code(p.append(pbatch(1, 8, 0, 3, 5))),
            ErrorCode::UnknownProducerId
        );
        assert_eq!(p.log_end_offset(), 5);
        // Non-idempotent batches skip all of it.
        append_ok(&p, batch(1, 5, 0, 10)).await;
        append_ok(&p, batch(2, 5, 0, 10)).await;
        // A new epoch at 0 fences the old one.
        append_ok(&p, pbatch(3, 7, 2, 0, 5)).await;
        assert_eq!(
            code(p.append(pbatch(4, 7, 1, 5, 5))),
            ErrorCode::InvalidProducerEpoch
        );
        p.close().await.expect("close");
    });
}

#[test]
fn a_failed_write_leaves_no_phantom_state() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open_with(dir.path(), &cfg(64 << 20)).await;
        append_ok(&p, seq_batch(0)).await;
        p.faults().fail_writes.set(1);
        let t1 = p.append(seq_batch(1)).expect("append");
        let dup = p.append(seq_batch(1)).expect("dup while in flight");
        let t2 = p.append(seq_batch(2)).expect("append");
        assert!(t1.wait().await.is_err());
        assert!(
            dup.wait().await.is_err(),
            "a duplicate fails with its original"
        );
        assert!(t2.wait().await.is_err());
        // The retry is appended again (not a duplicate of unwritten offsets).
        assert!(matches!(
            p.append(seq_batch(2)),
            Err(PartitionError::OutOfOrderSequence { expected: 5, .. })
        ));
        let r = append_ok(&p, seq_batch(1)).await;
        assert_eq!(r.base_offset, 5);
        p.faults().fail_fsyncs.set(1);
        assert!(p.append(seq_batch(2)).expect("a").wait().await.is_err());
        assert_eq!(append_ok(&p, seq_batch(2)).await.base_offset, 10);
        check_sequence(&read_all(&p).await, 0, 15);
        p.close().await.expect("close");
    });
}

/// Appends batches 0..count of producer 7 (rolling every few batches).
async fn produce(p: &Rc<Partition>, count: u64) {
    for i in 0..count {
        let r = append_ok(p, seq_batch(i)).await;
        assert_eq!(r.base_offset, 5 * i);
    }
}

/// After reopening: the last five batches are duplicates with their
/// original offsets, the sixth-last is out of order, the next is accepted.
async fn check_rebuilt(p: &Rc<Partition>, count: u64) {
    for i in count - 5..count {
        let t = p.append(seq_batch(i)).expect("duplicate");
        assert_eq!(t.result().base_offset, 5 * i, "batch {i}");
        t.wait().await.expect("duplicate resolves");
    }
    assert_eq!(p.log_end_offset(), 5 * count, "nothing written twice");
    assert!(matches!(
        p.append(seq_batch(count - 6)),
        Err(PartitionError::OutOfOrderSequence { .. })
    ));
    assert_eq!(append_ok(p, seq_batch(count)).await.base_offset, 5 * count);
}

#[test]
fn restart_rebuilds_from_snapshots_and_the_log_tail() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(4096);
        let p = open_with(dir.path(), &c).await;
        produce(&p, 23).await;
        assert!(files(dir.path(), "log").len() >= 3, "rolled");
        let snaps = files(dir.path(), "snapshot");
        assert_eq!(
            snaps.len(),
            files(dir.path(), "log").len() - 1,
            "one per roll"
        );
        // Clean close: a snapshot at the log end too.
        p.close().await.expect("close");
        drop(p);
        assert_eq!(files(dir.path(), "snapshot").len(), snaps.len() + 1);
        let p = open_with(dir.path(), &c).await;
        check_rebuilt(&p, 23).await;
        drop(p); // a crash: no snapshot at the end; roll snapshot + log tail
        let p = open_with(dir.path(), &c).await;
        check_rebuilt(&p, 24).await;
        p.close().await.expect("close");
        drop(p);
        // No snapshot at all (e.g. an old data dir): a full scan.
        for s in files(dir.path(), "snapshot") {
            std::fs::remove_file(s).expect("rm");
        }
        let p = open_with(dir.path(), &c).await;
        check_rebuilt(&p, 25).await;
        p.close().await.expect("close");
    });
}

#[test]
fn corrupt_or_future_snapshots_are_ignored_and_deleted() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(4096);
        let p = open_with(dir.path(), &c).await;
        produce(&p, 20).await;
        p.close().await.expect("close");
        drop(p);
        let snaps = files(dir.path(), "snapshot");
        let latest = snaps.last().expect("a snapshot").clone();
        let mut bytes = std::fs::read(&latest).expect("read");
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        std::fs::write(&latest, &bytes).expect("corrupt");
        // A snapshot from the future (past the log end) misleads nothing.
        let future = dir.path().join(checkpoint::snapshot_name(1_000_000));
        std::fs::write(&future, std::fs::read(&snaps[0]).expect("read")).expect("future");
        let p = open_with(dir.path(), &c).await;
        assert!(!latest.exists(), "corrupt snapshot deleted");
        assert!(!future.exists(), "future snapshot deleted");
        check_rebuilt(&p, 20).await;
        p.close().await.expect("close");
    });
}

#[test]
fn truncation_rebuilds_state_to_the_new_end() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(4096);
        let p = open_with(dir.path(), &c).await;
        produce(&p, 12).await;
        assert_eq!(p.truncate_to(50).await.expect("truncate"), 50);
        // Batches 10 and 11 are gone: 9 is the last, 10 is appended anew.
        let t = p.append(seq_batch(9)).expect("dup");
        assert_eq!(t.result().base_offset, 45);
        assert!(matches!(
            p.append(seq_batch(11)),
            Err(PartitionError::OutOfOrderSequence { .. })
        ));
        assert_eq!(append_ok(&p, seq_batch(10)).await.base_offset, 50);
        assert!(files(dir.path(), "snapshot")
            .iter()
            .all(|s| checkpoint::parse_snapshot_name(
                &s.file_name().expect("name").to_string_lossy()
            )
            .is_some_and(|o| o <= 50)));
        p.close().await.expect("close");
    });
}

#[test]
fn snapshots_go_with_their_segments() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(4096);
        let p = open_with(dir.path(), &c).await;
        produce(&p, 20).await;
        let before = files(dir.path(), "snapshot").len();
        p.delete_records(60).await.expect("delete records");
        p.delete_expired().await;
        let first = files(dir.path(), "log")[0].clone();
        let first_base: u64 = first
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("base");
        let snaps = files(dir.path(), "snapshot");
        assert!(snaps.len() < before);
        for s in &snaps {
            let o = checkpoint::parse_snapshot_name(&s.file_name().expect("n").to_string_lossy());
            assert!(
                o.is_some_and(|o| o >= first_base),
                "{s:?} below {first_base}"
            );
        }
        // The state survives (the latest snapshot is at the active segment).
        check_rebuilt(&p, 20).await;
        p.close().await.expect("close");
        drop(p);
        let p = open_with(dir.path(), &c).await;
        check_rebuilt(&p, 21).await;
        p.close().await.expect("close");
    });
}

#[test]
fn expired_producers_are_forgotten() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = crate::io::Clock::sim(1_000_000);
        let io = Io::new(crate::io::Disk::Real, clock.clone());
        let limits = PartitionLimits {
            producer_id_expiration_ms: 60_000,
            ..LIMITS
        };
        let p = Partition::open_on(
            io,
            TopicPartition::new("t", 0),
            dir.path().to_path_buf(),
            cfg(64 << 20),
            limits,
            &cache::BatchCache::new(1 << 20),
        )
        .await
        .expect("open");
        append_ok(&p, seq_batch(0)).await;
        clock.advance(Duration::from_millis(59_999));
        append_ok(&p, seq_batch(1)).await;
        clock.advance(Duration::from_millis(60_000));
        assert!(matches!(
            p.append(seq_batch(2)),
            Err(PartitionError::UnknownProducerId { sequence: 10, .. })
        ));
        p.expire_producers();
        assert!(p.producers.appended.borrow().is_empty());
        assert!(p.producers.durable.borrow().is_empty());
        // A new epoch at 0 starts it again.
        append_ok(&p, pbatch(2, 7, 1, 0, 5)).await;
        p.close().await.expect("close");
    });
}
