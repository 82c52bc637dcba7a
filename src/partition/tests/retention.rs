//! Retention, delete-records and live config tests (docs/storage.md,
//! "Retention"). Passes are triggered directly (`delete_expired`), never by
//! waiting on the timer.

use super::*;
use std::time::Duration;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Appends `count` batches of 5 records with timestamps from `ts`.
async fn fill_at(p: &Rc<Partition>, count: u64, ts: i64) {
    let mut tickets = Vec::new();
    for i in 0..count {
        tickets.push(p.append(batch(i, 5, ts, 300)).expect("append"));
    }
    for t in tickets {
        t.wait().await.expect("durable");
    }
}

fn total_log_bytes(p: &Partition) -> u64 {
    p.log.segments().iter().map(|s| s.log_bytes()).sum()
}

#[test]
fn retention_by_time_deletes_old_sealed_segments_only() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = TopicConfig {
            retention_ms: 24 * 3600 * 1000,
            ..cfg(4096)
        };
        let p = open(dir.path(), &c).await;
        fill_at(&p, 20, 1000).await; // timestamps from 1970: expired
        let segs = p.log.segments().len();
        assert!(segs > 2, "small segments roll: {segs}");
        let deleted = p.delete_expired().await;
        assert_eq!(deleted, segs - 1, "every sealed segment goes");
        let active = p.log.active();
        assert_eq!(p.log_start_offset(), active.base_offset());
        assert_eq!(files(dir.path(), "log").len(), 1, "active segment stays");
        let all = read_all(&p).await;
        assert_eq!(all.first().map(|r| r.0), Some(active.base_offset()));
        // Below the log start: refused with the valid range.
        let err = p.fetch(0, 1024).await.expect_err("below log start");
        assert!(
            matches!(err, PartitionError::OffsetOutOfRange { .. }),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains(&format!("[{}, ", p.log_start_offset())));
        assert_eq!(
            p.list_offset(OffsetSpec::Earliest)
                .await
                .expect("earliest")
                .0,
            p.log_start_offset()
        );
        // A second pass finds nothing: the active segment is never deleted.
        assert_eq!(p.delete_expired().await, 0);
        p.close().await.expect("close");
    });
}

#[test]
fn recent_segments_are_kept_by_time() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(4096)).await;
        fill_at(&p, 20, now_ms()).await;
        assert!(p.log.segments().len() > 2);
        assert_eq!(p.delete_expired().await, 0);
        assert_eq!(p.log_start_offset(), 0);
        p.close().await.expect("close");
    });
}

#[test]
fn retention_by_bytes_keeps_at_least_the_bound() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = TopicConfig {
            retention_bytes: Some(10_000),
            ..cfg(4096)
        };
        let p = open(dir.path(), &c).await;
        fill_at(&p, 40, now_ms()).await;
        let before = total_log_bytes(&p);
        assert!(before > 20_000, "{before}");
        let deleted = p.delete_expired().await;
        assert!(deleted > 0);
        let after = total_log_bytes(&p);
        assert!(after >= 10_000, "kept {after}");
        let first = p.log.segments()[0].log_bytes();
        assert!(
            after - first < 10_000,
            "deleted as much as allowed: {after} - {first}"
        );
        assert_eq!(p.log_start_offset(), p.log.segments()[0].base_offset());
        assert_eq!(files(dir.path(), "log").len(), p.log.segments().len());
        let all = read_all(&p).await;
        check_sequence(&all, p.log_start_offset(), p.high_watermark());
        p.close().await.expect("close");
    });
}

#[test]
fn active_segment_is_never_deleted() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = TopicConfig {
            retention_ms: 1,
            retention_bytes: Some(1),
            ..cfg(1 << 20)
        };
        let p = open(dir.path(), &c).await;
        fill_at(&p, 5, 1000).await;
        assert_eq!(p.log.segments().len(), 1);
        assert_eq!(p.delete_expired().await, 0);
        assert_eq!(read_all(&p).await.len(), 25);
        p.close().await.expect("close");
    });
}

#[test]
fn delete_records_persists_across_reopen() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(4096)).await;
        fill_at(&p, 30, now_ms()).await;
        let hw = p.high_watermark();
        let err = p.delete_records(hw + 1).await.expect_err("past hw");
        assert!(matches!(err, PartitionError::OffsetOutOfRange { .. }));
        let mid = p.log.segments()[2].base_offset() + 2; // inside segment 2
        assert_eq!(p.delete_records(mid).await.expect("delete"), mid);
        assert_eq!(p.log_start_offset(), mid);
        // Segments entirely below are gone; the one holding `mid` stays.
        assert_eq!(p.log.segments()[0].base_offset(), mid - 2);
        let err = p.fetch(mid - 1, 1024).await.expect_err("below start");
        assert!(err.to_string().contains(&format!("[{mid}, ")), "{err}");
        let all = read_all(&p).await;
        assert_eq!(all.first().map(|r| r.0), Some(mid));
        // Going backwards changes nothing.
        assert_eq!(p.delete_records(1).await.expect("noop"), mid);
        p.close().await.expect("close");
        drop(p);

        let p = open(dir.path(), &cfg(4096)).await;
        assert_eq!(p.log_start_offset(), mid);
        assert_eq!(
            p.list_offset(OffsetSpec::Earliest)
                .await
                .expect("earliest")
                .0,
            mid
        );
        assert!(p.fetch(mid - 1, 1024).await.is_err());
        let all = read_all(&p).await;
        check_sequence(&all, mid, hw);
        // Timestamp lookups never answer below the log start.
        let (off, _) = p
            .list_offset(OffsetSpec::Timestamp(0))
            .await
            .expect("by time");
        assert_eq!(off, mid);
        p.close().await.expect("close");
    });
}

#[test]
fn set_config_takes_effect_on_a_live_partition() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(1 << 20)).await;
        fill_at(&p, 10, 1000).await;
        assert_eq!(p.log.segments().len(), 1);
        // Smaller segments: the writer rolls from now on.
        p.set_config(cfg(4096));
        assert_eq!(p.config().segment_bytes, 4096);
        fill_at(&p, 20, 1000).await;
        let segs = p.log.segments().len();
        assert!(segs > 2, "{segs}");
        // Effectively infinite retention keeps 1970 data; shrinking it deletes.
        p.set_config(TopicConfig {
            retention_ms: u64::MAX,
            ..cfg(4096)
        });
        assert_eq!(p.delete_expired().await, 0);
        p.set_config(TopicConfig {
            retention_ms: 1000,
            ..cfg(4096)
        });
        assert_eq!(p.delete_expired().await, segs - 1);
        // Flush policy switch: interval acks after the write.
        p.set_config(TopicConfig {
            flush: FlushPolicy::Interval { interval_ms: 5 },
            ..cfg(4096)
        });
        let syncs = p.fdatasync_count();
        fill_at(&p, 1, now_ms()).await;
        let mut rounds = 0;
        while p.fdatasync_count() == syncs {
            rounds += 1;
            assert!(rounds < 10_000, "interval sync never ran");
            crate::timer::sleep_once(Duration::from_millis(1)).await;
        }
        p.close().await.expect("close");
    });
}

#[test]
fn small_appends_zero_ahead_and_close_trims_the_zeros() {
    use crate::storage::segment::ZERO_AHEAD_BYTES;
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(1 << 30)).await;
        fill_at(&p, 1, now_ms()).await;
        let log = files(dir.path(), "log").pop().expect("segment");
        // One data page, then the zeros written ahead of the next appends
        // (so they overwrite instead of extending the file).
        let bytes = std::fs::read(&log).expect("read log");
        assert_eq!(bytes.len() as u64, 4096 + ZERO_AHEAD_BYTES);
        assert!(bytes[4096..].iter().all(|&b| b == 0), "zeroed ahead");
        // Later small appends land inside the zeros: the size stays.
        fill_at(&p, 1, now_ms()).await;
        let len = std::fs::metadata(&log).expect("stat").len();
        assert_eq!(len, 4096 + ZERO_AHEAD_BYTES, "the second append overwrote");
        // flush=always: the overwrite went through the write-through handle,
        // so it was durable when it completed and needs no fdatasync.
        let needed = p.log.active().sync_if_needed().await.expect("sync");
        assert!(!needed, "a write-through append left the file unsynced");
        let data_pages = total_log_bytes(&p).div_ceil(4096) * 4096;
        p.close().await.expect("close");
        drop(p);
        // A clean close trims the file to its data's last page.
        let len = std::fs::metadata(&log).expect("stat").len();
        assert_eq!(len, data_pages, "close trims the zeros");
        // A crash before the trim leaves zeros past the data: recovery
        // reads them as padding, not as a torn tail (indexes removed as a
        // crash leaves them stale).
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .expect("open log");
            f.write_all(&vec![0u8; ZERO_AHEAD_BYTES as usize])
                .expect("append zeros");
        }
        for f in files(dir.path(), "index")
            .into_iter()
            .chain(files(dir.path(), "timeindex"))
        {
            std::fs::remove_file(f).expect("rm index");
        }
        let p = open(dir.path(), &cfg(1 << 30)).await;
        assert_eq!(p.high_watermark(), 10);
        assert_eq!(read_all(&p).await.len(), 10);
        fill_at(&p, 1, now_ms()).await;
        assert_eq!(read_all(&p).await.len(), 15);
        p.close().await.expect("close");
    });
}

#[test]
fn bad_or_too_large_checkpoint_is_handled_at_open() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), &cfg(4096)).await;
        fill_at(&p, 4, now_ms()).await;
        let hw = p.high_watermark();
        p.close().await.expect("close");
        drop(p);
        let ckpt = dir.path().join("log-start-offset");
        std::fs::write(&ckpt, format!("{}\n", hw + 100)).expect("write");
        let p = open(dir.path(), &cfg(4096)).await;
        assert_eq!(p.log_start_offset(), hw, "capped at the log end");
        p.close().await.expect("close");
        drop(p);
        std::fs::write(&ckpt, "garbage").expect("write");
        let p = open(dir.path(), &cfg(4096)).await;
        assert_eq!(p.log_start_offset(), 0, "unreadable checkpoint ignored");
        p.close().await.expect("close");
    });
}
