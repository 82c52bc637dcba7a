//! Hostile input on raw TCP: oversized length prefixes, garbage and truncated
//! FlatBuffers, empty and half frames, lying CRCs and oversized batches. Each
//! gets the documented answer, and the broker keeps serving a well-behaved
//! client running alongside the whole time.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{record, run_client, try_within, value_str, Broker, BrokerOptions};
use corelog::client::{Consumer, Producer, SeekTo};
use corelog::protocol::batch::BatchBuilder;
use corelog::protocol::codec::{decode_response, encode_request, DecodeLimits};
use corelog::protocol::frame::length_prefix;
use corelog::protocol::messages::*;
use corelog::protocol::ErrorCode;
use rand::{Rng, SeedableRng};

const MAX_FRAME_BYTES: u32 = 1 << 20;
const MAX_BATCH_BYTES: u32 = 64 << 10;

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_tables: 1_000_000,
        max_depth: 64,
        max_apparent_size_bytes: 64 << 20,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

fn send_raw(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).expect("write");
}

fn send_frame(s: &mut TcpStream, payload: &[u8]) {
    let mut f = length_prefix(payload.len()).to_vec();
    f.extend_from_slice(payload);
    send_raw(s, &f);
}

/// Reads one response frame; `None` if the broker closed the connection.
fn read_response(s: &mut TcpStream) -> Option<Response> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            return None
        }
        Err(e) => panic!("reading a response failed (timeout?): {e}"),
    }
    let n = u32::from_le_bytes(len) as usize;
    assert!(n <= 64 << 20, "response frame of {n} bytes");
    let mut payload = vec![0u8; n];
    s.read_exact(&mut payload).expect("response payload");
    Some(decode_response(&Bytes::from(payload), &limits()).expect("response decodes"))
}

/// True once the broker has closed the connection (EOF or reset).
fn is_closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

fn request(correlation_id: u32, body: RequestBody) -> Vec<u8> {
    encode_request(&Request {
        correlation_id,
        api_version: PROTOCOL_VERSION,
        client_id: Some("raw-test".into()),
        body,
    })
    .to_vec()
}

fn api_versions(correlation_id: u32) -> Vec<u8> {
    request(
        correlation_id,
        RequestBody::ApiVersions(ApiVersionsRequest::default()),
    )
}

fn produce(correlation_id: u32, topic: &str, batch: Bytes) -> Vec<u8> {
    request(
        correlation_id,
        RequestBody::Produce(ProduceRequest {
            acks: Acks::Leader,
            timeout_ms: 10_000,
            topics: vec![ProduceTopic {
                name: topic.into(),
                partitions: vec![ProducePartition {
                    partition: 0,
                    batch,
                }],
            }],
        }),
    )
}

/// The connection still answers a valid request correctly.
fn assert_usable(s: &mut TcpStream, correlation_id: u32) {
    send_frame(s, &api_versions(correlation_id));
    let r = read_response(s).expect("connection closed after a recoverable error");
    assert_eq!(r.correlation_id, correlation_id);
    assert!(
        r.error.is_none(),
        "valid request answered with {:?}",
        r.error
    );
    assert!(matches!(r.body, Some(ResponseBody::ApiVersions(_))));
}

fn assert_request_error(r: &Response, code: ErrorCode, what: &str) {
    let err = r
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: expected {code:?}, got a success {r:?}"));
    assert_eq!(err.code, code, "{what}: {err}");
    assert!(
        r.body.is_none(),
        "{what}: an error response carries no body"
    );
}

/// The single partition result of a produce response.
fn produce_result(r: &Response) -> Result<u64, corelog::protocol::WireError> {
    if let Some(e) = &r.error {
        return Err(e.clone());
    }
    match &r.body {
        Some(ResponseBody::Produce(p)) => p.topics[0].partitions[0].result.clone(),
        other => panic!("expected a produce response, got {other:?}"),
    }
}

fn one_record_batch(value: &[u8]) -> Bytes {
    let mut b = BatchBuilder::new();
    b.push(1_700_000_000_000, None, Some(value), &[]);
    b.finish()
}

/// A well-behaved client that produces and reads back in a loop until told
/// to stop; returns how many round trips succeeded.
fn spawn_healthy_client(
    broker: &Broker,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
) -> std::thread::JoinHandle<u64> {
    let pcfg = broker.producer_config();
    let ccfg = broker.consumer_config();
    std::thread::spawn(move || {
        run_client(move || async move {
            let topic = "healthy";
            let producer = Producer::connect(pcfg).await.expect("healthy producer");
            let mut consumer = Consumer::connect(ccfg).await.expect("healthy consumer");
            consumer
                .assign(topic, &[0], SeekTo::Earliest)
                .await
                .expect("assign");
            let deadline = Instant::now() + Duration::from_secs(150);
            let mut done = 0u64;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && done < 100_000 {
                let value = format!("healthy-{done}");
                let d = producer
                    .send(record(topic, Some(0), None, &value))
                    .await
                    .expect("healthy send");
                let md = try_within(Duration::from_secs(30), d)
                    .await
                    .expect("healthy delivery timed out")
                    .expect("healthy delivery");
                assert_eq!(md.offset, done, "healthy offsets are contiguous");
                let mut got = None;
                for _ in 0..100 {
                    if let Some(r) = consumer.poll().await.expect("healthy poll").pop() {
                        got = Some(r);
                        break;
                    }
                }
                let r = got.expect("healthy record read back");
                assert_eq!((r.offset, value_str(&r)), (done, value));
                done += 1;
                progress.store(done, Ordering::SeqCst);
            }
            done
        })
    })
}

/// Waits (bounded) until the healthy client has completed more than `past`
/// round trips; returns the count seen.
fn wait_for_progress(progress: &AtomicU64, past: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = progress.load(Ordering::SeqCst);
        if n > past {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "the healthy client is stuck at {n} round trips"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn malformed_and_oversized_frames_leave_the_broker_serving() {
    let broker = Broker::start_with(BrokerOptions {
        config_toml: Some(format!(
            "[limits]\nmax_frame_bytes = {MAX_FRAME_BYTES}\nmax_batch_bytes = {MAX_BATCH_BYTES}\n"
        )),
        ..BrokerOptions::default()
    });
    broker.create_topic("healthy", 1);
    broker.create_topic("raw", 1);
    let addr = broker.addr();

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let healthy = spawn_healthy_client(&broker, stop.clone(), progress.clone());
    // Let the healthy client get going, so the abuse below overlaps it.
    let before = wait_for_progress(&progress, 0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);

    // 1. A length prefix above max_frame_bytes: MessageTooLarge, then close.
    for declared in [MAX_FRAME_BYTES + 1, u32::MAX] {
        let mut s = connect(addr);
        send_raw(&mut s, &declared.to_le_bytes());
        let r = read_response(&mut s).expect("an error response before closing");
        assert_eq!(r.correlation_id, 0);
        assert_request_error(&r, ErrorCode::MessageTooLarge, "oversized frame");
        let msg = &r.error.as_ref().expect("error").message;
        assert!(
            msg.contains(&declared.to_string()) && msg.contains(&MAX_FRAME_BYTES.to_string()),
            "the message names both sizes: {msg}"
        );
        assert!(
            is_closed(&mut s),
            "connection closes after an oversized frame"
        );
    }

    // 2. Garbage inside a well-formed frame: InvalidRequest, connection kept.
    let mut s = connect(addr);
    for (i, len) in [1usize, 7, 64, 1000].into_iter().enumerate() {
        let mut garbage = vec![0u8; len];
        rng.fill(&mut garbage[..]);
        send_frame(&mut s, &garbage);
        let r = read_response(&mut s).expect("an error response");
        assert_request_error(&r, ErrorCode::InvalidRequest, "garbage frame");
        assert_usable(&mut s, 100 + i as u32);
    }

    // 3. A truncated FlatBuffer: InvalidRequest, connection kept.
    let full = request(
        9,
        RequestBody::Metadata(MetadataRequest {
            topics: vec!["raw".into(), "healthy".into()],
        }),
    );
    send_frame(&mut s, &full[..full.len() / 2]);
    let r = read_response(&mut s).expect("an error response");
    assert_request_error(&r, ErrorCode::InvalidRequest, "truncated flatbuffer");
    assert_usable(&mut s, 200);

    // 4. A produce whose batch CRC lies: CorruptBatch for that partition.
    let mut bad = one_record_batch(b"honest value").to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    send_frame(&mut s, &produce(300, "raw", Bytes::from(bad)));
    let r = read_response(&mut s).expect("produce response");
    assert_eq!(r.correlation_id, 300);
    match produce_result(&r) {
        Err(e) => assert_eq!(e.code, ErrorCode::CorruptBatch, "{e}"),
        Ok(off) => panic!("a batch with a bad CRC was stored at offset {off}"),
    }

    // 5. A batch above max_batch_bytes (inside a legal frame): MessageTooLarge.
    let big = vec![b'x'; MAX_BATCH_BYTES as usize + 1024];
    send_frame(&mut s, &produce(301, "raw", one_record_batch(&big)));
    let r = read_response(&mut s).expect("produce response");
    match produce_result(&r) {
        Err(e) => assert_eq!(e.code, ErrorCode::MessageTooLarge, "{e}"),
        Ok(off) => panic!("an oversized batch was stored at offset {off}"),
    }

    // The refused batches took no offsets; a good one lands at 0.
    send_frame(&mut s, &produce(302, "raw", one_record_batch(b"good")));
    let r = read_response(&mut s).expect("produce response");
    assert_eq!(r.correlation_id, 302);
    assert_eq!(produce_result(&r).expect("good batch"), 0);
    drop(s);

    // 6. A zero-length frame: InvalidRequest; framing is still in sync, so
    // the connection stays usable.
    let mut s = connect(addr);
    send_raw(&mut s, &0u32.to_le_bytes());
    let r = read_response(&mut s).expect("an error response to an empty frame");
    assert_request_error(&r, ErrorCode::InvalidRequest, "zero-length frame");
    assert_usable(&mut s, 350);
    drop(s);

    // 7. Half a frame, then disconnect.
    let mut s = connect(addr);
    send_raw(&mut s, &100u32.to_le_bytes());
    send_raw(&mut s, &[7u8; 50]);
    drop(s);

    // 8. A connection that sends nothing and leaves.
    drop(connect(addr));

    // The broker still serves new connections and the healthy client.
    let mut s = connect(addr);
    assert_usable(&mut s, 400);
    // The healthy client kept going through all of it.
    let after = wait_for_progress(&progress, before + 10);
    stop.store(true, Ordering::SeqCst);
    let round_trips = healthy.join().expect("healthy client succeeded throughout");
    assert!(round_trips >= after, "the healthy client made progress");

    let mut broker = broker;
    assert!(broker.is_running(), "broker process is alive");
    let out = broker.cli_ok(
        &[
            "consume",
            "raw",
            "--partition",
            "0",
            "--from-beginning",
            "--count",
            "1",
        ],
        "",
    );
    assert_eq!(out.stdout.trim(), "good");
}
