//! A real full disk: the broker's data dir lives on a small ext4 file system
//! made for this test (an image file on a loop device, under
//! `CARGO_TARGET_TMPDIR`), and producers with acks run until it is full.
//!
//! Proves, end to end through the real binary and client: the producer gets
//! a clear "storage full" error (wire code `StorageFull`), the broker stays
//! up, keeps serving fetches of everything acknowledged and answers for other
//! topics; once space is freed (delete-records + retention) produces succeed
//! again on the same partitions; after a restart nothing acknowledged at or
//! above the log start is missing.
//!
//! Needs root and a loop device (mkfs.ext4, losetup, mount). Without them the
//! test prints `SKIPPED` and why, and passes. The mount and the loop device
//! are released by a `Drop` guard, also when the test fails.
//!
//! Bounded: the producing loops stop on time and count limits; every wait is
//! bounded by the harness. No timing assertions.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{consume_all, run_client, try_within, value_str, Broker, BrokerOptions};
use corelog::client::{Admin, ClientError, Producer, ProducerConfig};

/// Size of the test file system, in MiB (ext4 keeps ~4 MiB for its journal
/// and metadata).
const FS_MIB: u64 = 64;
/// Bytes of each record's value (about 30 records per 64 KiB).
const VALUE_BYTES: usize = 2000;
/// Most records one fill phase sends (64 MiB / 2 KB is ~32k).
const MAX_RECORDS_PER_FILL: u64 = 200_000;
/// A fill phase stops after this many refused records.
const FAILURES_TO_STOP: usize = 64;
/// A fill phase gives up after this long.
const FILL_LIMIT: Duration = Duration::from_secs(240);

/// A small ext4 file system on a loop device, mounted for the test.
struct TestFs {
    root: PathBuf,
    mnt: PathBuf,
    loop_dev: Option<String>,
    mounted: bool,
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Unmounts and detaches what an earlier run that was killed (so its `Drop`
/// never ran) left behind: `full-disk-<pid>` dirs whose process is gone.
fn clean_stale_runs(tmp: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("full-disk-") else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        let dir = e.path();
        let mnt = dir.join("mnt").to_string_lossy().into_owned();
        let _ = run("umount", &["-l", &mnt]);
        let img = dir.join("fs.img").to_string_lossy().into_owned();
        if let Ok(list) = run("losetup", &["-j", &img]) {
            for line in list.lines() {
                if let Some((dev, _)) = line.split_once(':') {
                    let _ = run("losetup", &["-d", dev]);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("full_disk: cleaned up a stale run in {}", dir.display());
    }
}

impl TestFs {
    /// Makes and mounts the file system, or says why it cannot.
    fn make(size_mib: u64) -> Result<TestFs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root (needed for losetup/mount)".into());
        }
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        clean_stale_runs(&tmp);
        let root = tmp.join(format!("full-disk-{}", std::process::id()));
        let mnt = root.join("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| format!("create {}: {e}", mnt.display()))?;
        let mut fs = TestFs {
            root,
            mnt,
            loop_dev: None,
            mounted: false,
        };
        let img = fs.root.join("fs.img");
        let img_s = img.to_string_lossy().into_owned();
        let f = std::fs::File::create(&img).map_err(|e| format!("create image: {e}"))?;
        f.set_len(size_mib << 20)
            .map_err(|e| format!("size image: {e}"))?;
        drop(f);
        // -m 0: no blocks reserved for root (the broker runs as root here).
        run("mkfs.ext4", &["-q", "-F", "-m", "0", &img_s])?;
        let dev = run("losetup", &["--find", "--show", &img_s])?;
        fs.loop_dev = Some(dev.clone());
        run("mount", &[&dev, &fs.mnt.to_string_lossy()])?;
        fs.mounted = true;
        Ok(fs)
    }

    /// Writes a file outside the data dir until the file system is full;
    /// returns its size in bytes.
    fn fill_rest(&self) -> u64 {
        use std::io::Write;
        let path = self.mnt.join("ballast");
        let mut f = std::fs::File::create(&path).expect("create ballast");
        let chunk = vec![0xA5u8; 4096];
        let mut n = 0u64;
        // Bounded by the file system's size.
        while n <= FS_MIB << 20 {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k as u64,
            }
        }
        let _ = f.sync_all();
        n
    }

    fn mnt(&self) -> &Path {
        &self.mnt
    }

    /// (total, available) bytes of the file system.
    fn space(&self) -> (u64, u64) {
        let c = std::ffi::CString::new(self.mnt.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: statvfs fills the zeroed struct; the path is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs {}", self.mnt.display());
        (
            st.f_blocks as u64 * st.f_frsize as u64,
            st.f_bavail as u64 * st.f_frsize as u64,
        )
    }
}

impl Drop for TestFs {
    fn drop(&mut self) {
        if self.mounted {
            let mnt = self.mnt.to_string_lossy().into_owned();
            let mut ok = false;
            for _ in 0..50 {
                if run("umount", &[&mnt]).is_ok() {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !ok {
                eprintln!("full_disk: umount {mnt} failed; detaching lazily");
                let _ = run("umount", &["-l", &mnt]);
            }
        }
        if let Some(dev) = self.loop_dev.take() {
            if let Err(e) = run("losetup", &["-d", &dev]) {
                eprintln!("full_disk: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Value of record `seq` of a fill phase tagged `tag`.
fn value(tag: &str, seq: u64) -> String {
    let head = format!("{tag}-{seq:08}-");
    let fill = (b'a' + (seq % 26) as u8) as char;
    let mut v = String::with_capacity(VALUE_BYTES);
    v.push_str(&head);
    while v.len() < VALUE_BYTES {
        v.push(fill);
    }
    v
}

/// What one fill phase saw.
#[derive(Default)]
struct FillReport {
    /// (partition, offset, value) acknowledged.
    acked: Vec<(u32, u64, String)>,
    /// Records refused, with the error.
    failures: Vec<String>,
    /// Wire codes of the refusals, counted.
    codes: BTreeMap<String, usize>,
    sent: u64,
}

/// Produces `tag`-records round robin to `partitions` partitions of `topic`
/// until `FAILURES_TO_STOP` records were refused (or `max` were sent, or
/// the time limit passed).
async fn fill(
    pcfg: ProducerConfig,
    topic: String,
    partitions: u32,
    tag: String,
    max: u64,
) -> FillReport {
    let report = Rc::new(RefCell::new(FillReport::default()));
    let producer = Producer::connect(pcfg).await.expect("producer connect");
    let deadline = Instant::now() + FILL_LIMIT;
    let mut window = VecDeque::new();
    let mut seq = 0u64;
    while seq < max
        && Instant::now() < deadline
        && report.borrow().failures.len() < FAILURES_TO_STOP
    {
        let p = (seq % partitions as u64) as u32;
        let v = value(&tag, seq);
        let rec = common::record(&topic, Some(p), None, &v);
        let d = match try_within(Duration::from_secs(30), producer.send(rec)).await {
            Some(Ok(d)) => d,
            Some(Err(e)) => panic!("send refused locally: {e}"),
            None => panic!("send did not return within 30 s"),
        };
        seq += 1;
        let report = report.clone();
        window.push_back(glommio::spawn_local(async move {
            match try_within(Duration::from_secs(60), d).await {
                Some(Ok(md)) => {
                    assert_eq!(md.partition, p);
                    report.borrow_mut().acked.push((p, md.offset, v));
                }
                Some(Err(e)) => {
                    let code = match &e {
                        ClientError::Broker(w) => format!("{:?}", w.code),
                        other => format!("client: {other}"),
                    };
                    let mut r = report.borrow_mut();
                    *r.codes.entry(code).or_default() += 1;
                    r.failures.push(e.to_string());
                }
                None => panic!("delivery of seq {seq} did not resolve within 60 s"),
            }
        }));
        if window.len() >= 256 {
            if let Some(t) = window.pop_front() {
                t.await;
            }
        }
    }
    for t in window {
        t.await;
    }
    let _ = try_within(Duration::from_secs(10), producer.close()).await;
    let mut r = Rc::try_unwrap(report)
        .map(RefCell::into_inner)
        .unwrap_or_default();
    r.sent = seq;
    r
}

fn fill_phase(broker: &Broker, topic: &str, partitions: u32, tag: &str, max: u64) -> FillReport {
    let pcfg = ProducerConfig {
        linger_ms: 2,
        batch_bytes: 64 * 1024,
        // The fill must see StorageFull, not retry it until the delivery
        // timeout (an idempotent producer retries a full disk).
        idempotence: false,
        ..broker.producer_config()
    };
    let (t, g) = (topic.to_string(), tag.to_string());
    run_client(move || async move { fill(pcfg, t, partitions, g, max).await })
}

/// Reads `topic` from its log start to its high watermark: offset → value
/// per partition.
fn read_all(broker: &Broker, topic: &str) -> BTreeMap<u32, BTreeMap<u64, String>> {
    let cfg = broker.consumer_config();
    let t = topic.to_string();
    let recs =
        run_client(move || async move { consume_all(cfg, &t, Duration::from_secs(120)).await });
    recs.into_iter()
        .map(|(p, rs)| (p, rs.iter().map(|r| (r.offset, value_str(r))).collect()))
        .collect()
}

/// Every acknowledged record at or above its partition's log start is
/// served with its value; returns how many were checked.
fn check_acked(
    acked: &[(u32, u64, String)],
    served: &BTreeMap<u32, BTreeMap<u64, String>>,
    log_start: &BTreeMap<u32, u64>,
) -> usize {
    let mut n = 0;
    for (p, off, v) in acked {
        if *off < log_start.get(p).copied().unwrap_or(0) {
            continue;
        }
        match served.get(p).and_then(|m| m.get(off)) {
            Some(got) if got == v => n += 1,
            Some(got) => panic!(
                "{p}/{off}: acknowledged {:?}… but served {:?}…",
                &v[..20],
                &got[..20.min(got.len())]
            ),
            None => panic!("{p}/{off}: acknowledged record {:?}… is missing", &v[..20]),
        }
    }
    n
}

fn log_starts(broker: &Broker, topic: &str) -> BTreeMap<u32, u64> {
    let cfg = broker.client_config();
    let t = topic.to_string();
    run_client(move || async move {
        let admin = Admin::connect(cfg).await.expect("admin");
        let info = admin.describe_topic(&t).await.expect("describe");
        info.partitions
            .iter()
            .map(|p| (p.partition, p.log_start_offset))
            .collect()
    })
}

fn high_watermarks(broker: &Broker, topic: &str) -> BTreeMap<u32, u64> {
    let cfg = broker.client_config();
    let t = topic.to_string();
    run_client(move || async move { common::high_watermarks(cfg, &t).await })
}

/// Where the refused writes failed: the segment data write, or an index
/// write during a segment roll.
fn refused_where(r: &FillReport) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for f in &r.failures {
        let k = if f.contains(".index:") || f.contains(".timeindex:") {
            "index write (roll)"
        } else if f.contains(".log:") {
            "segment write"
        } else {
            "other"
        };
        *m.entry(k).or_default() += 1;
    }
    m
}

/// Asserts every refusal of a fill phase is the clear storage-full error.
fn assert_storage_full(phase: &str, r: &FillReport) {
    assert!(!r.failures.is_empty(), "{phase}: the disk never filled up");
    for f in &r.failures {
        assert!(
            f.to_lowercase().contains("storage full") && f.contains("No space left on device"),
            "{phase}: refusal is not a clear storage-full error: {f}"
        );
    }
    assert_eq!(
        r.codes.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["StorageFull"],
        "{phase}: refusals by wire code"
    );
}

#[test]
fn full_disk_refuses_produces_keeps_serving_and_recovers() {
    let fs = match TestFs::make(FS_MIB) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!(
                "full_disk: SKIPPED: cannot make a {FS_MIB} MiB ext4 file system on a loop device: {why}"
            );
            return;
        }
    };
    let (total, avail) = fs.space();
    eprintln!(
        "full_disk: {} MiB file system at {}, {} MiB available",
        total >> 20,
        fs.mnt().display(),
        avail >> 20
    );
    // Declared after `fs`, so it is dropped (killed) before the unmount.
    let mut broker = Broker::start_in(
        BrokerOptions {
            config_toml: Some("[shard]\nretention_check_interval_ms = 200\n".into()),
            ..BrokerOptions::default()
        },
        Some(fs.mnt().join("data")),
    );
    let topic = "fill";
    let parts = 2u32;
    broker.cli_ok(
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            &parts.to_string(),
            "--config",
            "segment_bytes=1048576",
        ],
        "",
    );
    broker.cli_ok(&["topic", "create", "other", "--partitions", "1"], "");
    let other = fill_phase(&broker, "other", 1, "other", 50);
    assert_eq!(other.acked.len(), 50, "other topic: {:?}", other.failures);

    // 1. Fill the disk.
    let began = Instant::now();
    let r1 = fill_phase(&broker, topic, parts, "a", MAX_RECORDS_PER_FILL);
    let (_, avail_full) = fs.space();
    eprintln!(
        "full_disk: phase 1: {} sent, {} acked ({} MiB of values), refused {:?} at {:?}, {} KiB left, {:.1?}",
        r1.sent,
        r1.acked.len(),
        (r1.acked.len() * VALUE_BYTES) >> 20,
        r1.codes,
        refused_where(&r1),
        avail_full >> 10,
        began.elapsed()
    );
    eprintln!(
        "full_disk: first refusal: {}",
        r1.failures.first().map(String::as_str).unwrap_or("none")
    );
    assert_storage_full("phase 1", &r1);
    assert!(broker.is_running(), "broker died on a full disk");
    // Take the last free blocks too (the broker's own refusals may have
    // left a few), so nothing below can count on a spare block.
    let ballast = fs.fill_rest();
    eprintln!(
        "full_disk: ballast file took the last {ballast} bytes; {} bytes free",
        fs.space().1
    );

    // 2. Everything acknowledged is served on the full disk; the other topic
    //    answers too (fetch, and a produce refused with the same clear error).
    let served = read_all(&broker, topic);
    let n = check_acked(&r1.acked, &served, &BTreeMap::new());
    let held: usize = served.values().map(BTreeMap::len).sum();
    assert_eq!(
        held, n,
        "the partitions hold exactly the acknowledged records"
    );
    eprintln!("full_disk: all {n} acknowledged records served back on the full disk");
    assert_eq!(read_all(&broker, "other")[&0].len(), 50);
    let o2 = fill_phase(&broker, "other", 1, "other2", 10);
    eprintln!(
        "full_disk: produce to another topic on the full disk: {} acked, refused {:?}",
        o2.acked.len(),
        o2.codes
    );

    // 3. Free space: delete-records up to the middle, retention deletes the
    //    sealed segments below it; produces succeed again.
    let hw = high_watermarks(&broker, topic);
    let cfg = broker.client_config();
    let before: BTreeMap<u32, u64> = hw.iter().map(|(p, h)| (*p, h / 2)).collect();
    let b2 = before.clone();
    let t = topic.to_string();
    let dr = run_client(move || async move {
        let admin = Admin::connect(cfg).await.expect("admin");
        let mut out = Vec::new();
        for (p, off) in b2 {
            out.push((
                p,
                admin
                    .delete_records(&t, p, off)
                    .await
                    .map_err(|e| e.to_string()),
            ));
        }
        out
    });
    eprintln!("full_disk: delete-records on the full disk: {dr:?}");
    for (p, r) in &dr {
        assert_eq!(
            r.as_ref().ok(),
            Some(&before[p]),
            "delete-records {p} on a full disk"
        );
    }
    let mut waited = 0;
    while fs.space().1 < 8 << 20 && waited < 300 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    eprintln!(
        "full_disk: {} MiB free after delete-records + retention",
        fs.space().1 >> 20
    );
    let r2 = fill_phase(&broker, topic, parts, "b", 1000);
    assert!(
        r2.failures.is_empty(),
        "produce after freeing space: {:?}",
        &r2.failures[..r2.failures.len().min(3)]
    );
    assert_eq!(r2.acked.len(), 1000);

    // 4. Fill it again, then restart (graceful) on the full disk.
    let r3 = fill_phase(&broker, topic, parts, "c", MAX_RECORDS_PER_FILL);
    eprintln!(
        "full_disk: phase 3: {} acked, refused {:?} at {:?}",
        r3.acked.len(),
        r3.codes,
        refused_where(&r3)
    );
    assert_storage_full("phase 3", &r3);
    let st = broker.stop();
    eprintln!("full_disk: broker stopped on a full disk: {st}");
    broker.start_again();

    let log_start = log_starts(&broker, topic);
    assert_eq!(log_start, before, "log start survives the restart");
    let served = read_all(&broker, topic);
    let mut n = 0;
    for r in [&r1, &r2, &r3] {
        n += check_acked(&r.acked, &served, &log_start);
    }
    let held: usize = served.values().map(BTreeMap::len).sum();
    assert_eq!(
        held, n,
        "after restart the partitions hold exactly the acknowledged records at or above log start"
    );
    eprintln!("full_disk: after restart all {n} acknowledged records at or above the log start are served");
    broker.stop();
}
