//! Recovery rules, truncation, replica appends, leader epochs and the high
//! watermark's waiters (docs/storage.md, "Recovery", "Acknowledged damage",
//! "Leader epochs"). "Crash" = drop without close (no index files, no
//! recovery point written at close).

use super::*;
use std::time::Duration;

/// (position, header) of every batch in a segment file.
fn batches_in(path: &Path) -> Vec<(u64, batch::BatchHeader)> {
    let data = std::fs::read(path).expect("read segment");
    let mut out = Vec::new();
    let mut pos = 0u64;
    for b in batch::batches(&data) {
        let (h, bytes) = b.expect("segment batch parses");
        out.push((pos, h));
        pos += bytes.len() as u64;
    }
    out
}

fn patch(path: &Path, pos: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    f.seek(SeekFrom::Start(pos)).expect("seek");
    f.write_all(bytes).expect("patch");
    f.sync_all().expect("sync");
}

async fn try_open(dir: &Path) -> Result<Rc<Partition>, PartitionError> {
    Partition::open(
        TopicPartition::new("t", 0),
        dir.to_path_buf(),
        cfg(64 << 20),
        LIMITS,
    )
    .await
}

const MAGIC_AT: u64 = batch::offsets::MAGIC as u64;

#[test]
fn unknown_magic_refuses_open_and_leaves_the_file() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(64 << 20)).await;
        fill(&p, 6, 100).await;
        p.close().await.expect("close");
        drop(p);
        let log = last_log(dir.path());
        let found = batches_in(&log);
        // Every batch says magic 3 (magic is outside the CRC).
        for (pos, _) in &found {
            patch(&log, pos + MAGIC_AT, &[3]);
        }
        let before = std::fs::read(&log).expect("read");
        let Err(e) = try_open(dir.path()).await else {
            panic!("a log of another format must not open");
        };
        let msg = e.to_string();
        assert!(
            msg.contains("unknown format") && msg.contains("magic 3"),
            "{msg}"
        );
        assert!(
            std::fs::read(&log).expect("read") == before,
            "file untouched"
        );

        // Only the last batch in another format, after a crash (the scan
        // reaches it): refused too, never truncated as a torn tail.
        for (pos, _) in &found {
            patch(&log, pos + MAGIC_AT, &[batch::MAGIC]);
        }
        for idx in files(dir.path(), "index") {
            std::fs::remove_file(idx).expect("rm index");
        }
        let (last_pos, _) = *found.last().expect("a batch");
        patch(&log, last_pos + MAGIC_AT, &[9]);
        let before = std::fs::read(&log).expect("read");
        let Err(e) = try_open(dir.path()).await else {
            panic!("a foreign batch must not open");
        };
        assert!(e.to_string().contains("magic 9"), "{e}");
        assert!(
            std::fs::read(&log).expect("read") == before,
            "file untouched"
        );

        // Another partition opens and works meanwhile.
        let other = tempfile::tempdir().expect("tempdir");
        let q = open(other.path(), &cfg(64 << 20)).await;
        fill(&q, 2, 10).await;
        q.close().await.expect("close");
    });
}

/// Fills 9 batches of 5, checkpoints the recovery point (45), crashes.
async fn fill_checkpoint_crash(dir: &Path) -> PathBuf {
    let p = open(dir, &cfg(64 << 20)).await;
    fill(&p, 9, 100).await;
    p.checkpoint_recovery_point().await.expect("checkpoint");
    assert_eq!(p.recovery_point(), 45);
    drop(p);
    last_log(dir)
}

#[test]
fn bit_flip_before_the_recovery_point_is_reported_not_truncated() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = fill_checkpoint_crash(dir.path()).await;
        let found = batches_in(&log);
        // Flip a bit in the records of batch 3 (offsets 15..20).
        let (pos3, h3) = found[3];
        assert_eq!(h3.base_offset, 15);
        let mut b = [0u8; 1];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(&log).expect("open");
            f.seek(SeekFrom::Start(pos3 + 70)).expect("seek");
            f.read_exact(&mut b).expect("read");
        }
        patch(&log, pos3 + 70, &[b[0] ^ 0x10]);
        let damaged = std::fs::read(&log).expect("read");

        for round in 0..2 {
            let p = try_open(dir.path())
                .await
                .expect("opens, serving the intact part");
            let d = p.recovery().acked_damage.clone().expect("damage reported");
            assert_eq!((d.offset, d.position), (15, pos3), "round {round}");
            assert_eq!(p.recovery().bytes_truncated, 0);
            assert_eq!(p.high_watermark(), 15);
            check_sequence(&read_all(&p).await, 0, 15);
            for off in [15, 17, 30, 44] {
                assert!(
                    matches!(
                        p.fetch(off, 1 << 20).await,
                        Err(PartitionError::CorruptData { .. })
                    ),
                    "offset {off} is refused"
                );
            }
            let refused = p.append(batch(9, 5, 0, 10));
            assert!(
                matches!(refused, Err(PartitionError::CorruptData { .. })),
                "appends are refused on acknowledged damage"
            );
            assert_eq!(
                refused.err().map(|e| e.to_wire().code),
                Some(ErrorCode::CorruptData)
            );
            p.close().await.expect("close");
            drop(p);
            assert!(
                std::fs::read(&log).expect("read") == damaged,
                "nothing truncated or rewritten (round {round})"
            );
            assert_eq!(
                checkpoint::parse_offset(
                    &std::fs::read(dir.path().join(checkpoint::RECOVERY_POINT)).expect("rp")
                ),
                Some(45),
                "the recovery point is kept while the damage stands"
            );
        }

        // The operator action (docs/storage.md): drop the recovery point.
        std::fs::remove_file(dir.path().join(checkpoint::RECOVERY_POINT)).expect("rm rp");
        let p = try_open(dir.path()).await.expect("open");
        assert!(p.recovery().acked_damage.is_none());
        assert!(p.recovery().bytes_truncated > 0, "now cut as a tail");
        assert_eq!(p.log_end_offset(), 15);
        let t = p.append(batch(3, 5, 0, 10)).expect("append");
        assert_eq!(t.wait().await.expect("durable").base_offset, 15);
        check_sequence(&read_all(&p).await, 0, 20);
        p.close().await.expect("close");
    });
}

#[test]
fn torn_tail_past_the_recovery_point_is_cut() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = fill_checkpoint_crash(dir.path()).await;
        // More batches after the recovery point, then a crash.
        let p = open(dir.path(), &cfg(64 << 20)).await;
        assert_eq!(p.recovery_point(), 45);
        for i in 9..12 {
            let t = p.append(batch(i, 5, 0, 100)).expect("append");
            t.wait().await.expect("durable");
        }
        drop(p);
        let (last_pos, last) = *batches_in(&log).last().expect("a batch");
        assert_eq!(last.base_offset, 55);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .expect("open");
        f.set_len(last_pos + 80).expect("tear");
        drop(f);
        let p = try_open(dir.path()).await.expect("open");
        assert!(p.recovery().acked_damage.is_none());
        assert_eq!(p.recovery().bytes_truncated, 80);
        assert_eq!(p.log_end_offset(), 55);
        check_sequence(&read_all(&p).await, 0, 55);
        p.close().await.expect("close");
        assert_eq!(p.recovery_point(), 55, "clean close checkpoints the end");
    });
}

#[test]
fn files_ending_before_the_recovery_point_are_damage() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = fill_checkpoint_crash(dir.path()).await;
        let (pos8, _) = *batches_in(&log).last().expect("a batch");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .expect("open");
        f.set_len(pos8).expect("lose the last batch");
        drop(f);
        let p = try_open(dir.path()).await.expect("open");
        let d = p
            .recovery()
            .acked_damage
            .clone()
            .expect("missing data reported");
        assert_eq!(d.offset, 40);
        assert!(d.reason.contains("missing"), "{}", d.reason);
        assert!(p.append(batch(8, 5, 0, 10)).is_err(), "appends refused");
        p.close().await.expect("close");
    });
}

#[test]
fn truncate_to_cuts_segments_and_batches_durably() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(16 * 1024);
        let p = open(dir.path(), &c).await;
        p.set_leader_epoch(1).await.expect("epoch 1");
        fill(&p, 40, 400).await; // 200 offsets over several segments
        p.set_leader_epoch(3).await.expect("epoch 3");
        fill(&p, 20, 400).await; // 200..300 in epoch 3
        let segs_before = files(dir.path(), "log").len();
        assert!(segs_before >= 4, "{segs_before} segments");
        // Cut mid-batch in an early segment: the whole batch goes.
        let end = p.truncate_to(52).await.expect("truncate");
        assert_eq!(end, 50);
        assert_eq!(
            (p.log_end_offset(), p.high_watermark(), p.written_offset()),
            (50, 50, 50)
        );
        assert!(p.flushed_offset() <= 50 && p.recovery_point() <= 50);
        assert!(files(dir.path(), "log").len() < segs_before);
        assert_eq!(p.leader_epochs(), vec![(1, 0)], "epoch 3 started later");
        check_sequence(&read_all(&p).await, 0, 50);
        assert!(matches!(p.truncate_to(0).await, Ok(0)));
        // Appends continue at the new end, in the current epoch.
        fill(&p, 4, 400).await;
        check_sequence(&read_all(&p).await, 0, 20);
        assert_eq!(p.leader_epochs(), vec![(3, 0)]);
        drop(p); // crash
        let p = open(dir.path(), &c).await;
        check_sequence(&read_all(&p).await, 0, 20);
        assert_eq!((p.leader_epoch(), p.leader_epochs()), (3, vec![(3, 0)]));
        p.close().await.expect("close");
    });
}

#[test]
fn replica_appends_keep_the_leaders_offsets_and_bytes() {
    run(|| async {
        let (dl, df) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let c = cfg(64 * 1024);
        let leader = open(dl.path(), &c).await;
        fill(&leader, 10, 300).await;
        leader.set_leader_epoch(2).await.expect("epoch");
        fill(&leader, 10, 300).await;
        let follower = open(df.path(), &c).await;
        let mut next = 0;
        while next < leader.high_watermark() {
            let d = leader.fetch_replica(next, 4096).await.expect("fetch");
            for item in batch::batches(&d.records.to_bytes()) {
                let (h, b) = item.expect("batch");
                let t = follower
                    .append_replica(Bytes::copy_from_slice(b))
                    .expect("replica append");
                assert_eq!(t.result().base_offset, h.base_offset);
                t.wait_all().await.expect("durable");
                next = h.next_offset();
            }
        }
        assert_eq!(follower.log_end_offset(), 100);
        assert_eq!(follower.leader_epochs(), leader.leader_epochs());
        assert_eq!(follower.leader_epoch(), 2);
        assert_eq!(
            follower.end_offset_for_epoch(1),
            Some((0, 50)),
            "OffsetsForLeaderEpoch"
        );
        // The same bytes, offsets and epochs stamped.
        let (a, b) = (
            leader.fetch(0, 1 << 20).await.expect("fetch"),
            follower.fetch(0, 1 << 20).await.expect("fetch"),
        );
        assert!(a.records == b.records, "replica bytes differ");
        let epochs: Vec<u32> = batch::batches(&a.records.to_bytes())
            .map(|r| r.expect("batch").0.leader_epoch)
            .collect();
        assert_eq!(epochs.first(), Some(&0));
        assert_eq!(epochs.last(), Some(&2));
        // A gap, an overlap, an older epoch: refused.
        let d = leader.fetch(50, 1).await.expect("fetch");
        let gap = follower.append_replica(d.records.to_bytes());
        assert!(matches!(gap, Err(PartitionError::ReplicaMismatch { .. })));
        let mut older = BytesMut::from(&batch(0, 5, 0, 10)[..]);
        batch::stamp(
            &mut older,
            Stamp {
                base_offset: 100,
                leader_epoch: 1,
            },
        );
        assert!(matches!(
            follower.append_replica(older.freeze()),
            Err(PartitionError::ReplicaMismatch { .. })
        ));
        assert_eq!(follower.log_end_offset(), 100);
        leader.close().await.expect("close");
        follower.close().await.expect("close");
    });
}

#[test]
fn leader_epoch_checkpoint_survives_reopen() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(64 << 20);
        let p = open(dir.path(), &c).await;
        assert_eq!(p.leader_epoch(), 0);
        fill(&p, 2, 10).await;
        p.set_leader_epoch(4).await.expect("epoch");
        assert!(matches!(
            p.set_leader_epoch(3).await,
            Err(PartitionError::StaleLeaderEpoch { .. })
        ));
        fill(&p, 2, 10).await;
        p.set_leader_epoch(7).await.expect("epoch with no data yet");
        assert_eq!(p.leader_epochs(), vec![(0, 0), (4, 10), (7, 20)]);
        drop(p); // crash: the checkpoint was written when each epoch began
        let p = open(dir.path(), &c).await;
        assert_eq!(p.leader_epochs(), vec![(0, 0), (4, 10), (7, 20)]);
        assert_eq!(p.leader_epoch(), 7);
        let t = p.append(batch(4, 5, 0, 10)).expect("append");
        t.wait().await.expect("durable");
        let d = p.fetch(20, 1 << 20).await.expect("fetch");
        let (h, _) = batch::batches(&d.records.to_bytes())
            .next()
            .expect("a batch")
            .expect("valid");
        assert_eq!((h.base_offset, h.leader_epoch), (20, 7));
        p.close().await.expect("close");
    });
}

#[test]
fn high_watermark_wakes_waiters_by_offset_and_acks_all_waits_for_it() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(64 << 20)).await;
        let far = Instant::now() + Duration::from_secs(600);
        let woken = Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for off in [0u64, 4, 5, 9] {
            let (p, woken) = (p.clone(), woken.clone());
            tasks.push(glommio::spawn_local(async move {
                p.wait_for_data(off, far).await;
                woken.borrow_mut().push((off, p.high_watermark()));
            }));
        }
        glommio::yield_if_needed().await;
        assert_eq!(p.data_waiter_count(), 4);
        let t = p.append(batch(0, 5, 1, 10)).expect("append");
        let r = t.wait_all().await.expect("acks=all");
        assert_eq!(r.last_offset, 4);
        assert!(p.high_watermark() > r.last_offset);
        // Only the waiters below the new high watermark (0 and 4) woke.
        for _ in 0..100 {
            if woken.borrow().len() == 2 {
                break;
            }
            glommio::executor().yield_now().await;
        }
        assert_eq!(*woken.borrow(), vec![(0, 5), (4, 5)]);
        assert_eq!(p.data_waiter_count(), 2);
        // Local durability (acks=leader) and the high watermark agree on
        // one node; and the order holds at every step.
        let t = p.append(batch(1, 5, 1, 10)).expect("append");
        let r = t.wait().await.expect("acks=leader");
        assert!(p.flushed_offset() > r.last_offset);
        assert!(p.high_watermark() > r.last_offset);
        for t in tasks {
            t.await;
        }
        assert_eq!(woken.borrow().len(), 4);
        p.close().await.expect("close");
        assert_eq!(
            p.append(batch(2, 1, 0, 1)).err().map(|e| e.to_wire().code),
            Some(ErrorCode::UnknownTopicOrPartition),
            "a closed partition is not NotLeader"
        );
    });
}
