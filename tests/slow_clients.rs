//! Slow and half-open clients on a 1-shard broker: a client that sends half
//! a frame and stalls, one that pipelines many big fetches and never reads
//! the responses, and one that connects and says nothing.
//!
//! 1. With long timeouts, none of them stalls the shard: a healthy client
//!    on the same shard produces and reads back correctly meanwhile, and the
//!    stalled connections are still open afterwards (the never-reading one
//!    then reads every response intact).
//! 2. With short timeouts (`connection_idle_timeout_ms`,
//!    `frame_read_timeout_ms`), the broker closes all three (the client sees
//!    EOF or a reset), and a healthy client still works.
//!
//! Every wait is bounded; nothing asserts on timing.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{record, run_client, try_within, value_str, Broker, BrokerOptions};
use corelog::client::{Consumer, Producer, ProducerConfig, SeekTo};
use corelog::protocol::codec::{decode_response, encode_request, DecodeLimits};
use corelog::protocol::frame::length_prefix;
use corelog::protocol::messages::*;

/// Pipelined fetches the never-reading client sends.
const FETCHES: u32 = 24;
/// Bytes each of them asks for.
const FETCH_BYTES: u32 = 1 << 20;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

fn frame(correlation_id: u32, body: RequestBody) -> Vec<u8> {
    let payload = encode_request(&Request {
        correlation_id,
        api_version: PROTOCOL_VERSION,
        client_id: Some("slow-test".into()),
        body,
    });
    let mut f = length_prefix(payload.len()).to_vec();
    f.extend_from_slice(&payload);
    f
}

fn fetch_frame(correlation_id: u32, topic: &str) -> Vec<u8> {
    frame(
        correlation_id,
        RequestBody::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: FETCH_BYTES,
            topics: vec![FetchTopic {
                name: topic.into(),
                partitions: vec![FetchPartition {
                    partition: 0,
                    fetch_offset: 0,
                    max_bytes: FETCH_BYTES,
                }],
            }],
        }),
    )
}

/// The three misbehaving clients.
struct BadClients {
    half_frame: TcpStream,
    never_reads: TcpStream,
    silent: TcpStream,
}

fn start_bad_clients(addr: SocketAddr, big_topic: &str) -> BadClients {
    // Half a frame: a length prefix promising 1000 bytes, then 10 of them.
    let mut half_frame = connect(addr);
    let mut f = length_prefix(1000).to_vec();
    f.extend_from_slice(&[7u8; 10]);
    half_frame.write_all(&f).expect("half frame");
    // Many big fetches, pipelined, never read.
    let mut never_reads = connect(addr);
    let mut all = Vec::new();
    for i in 0..FETCHES {
        all.extend(fetch_frame(i + 1, big_topic));
    }
    never_reads.write_all(&all).expect("pipelined fetches");
    let silent = connect(addr);
    BadClients {
        half_frame,
        never_reads,
        silent,
    }
}

/// Fills partition 0 of `topic` with about `bytes` of 1 KiB records.
fn fill(broker: &Broker, topic: &str, bytes: usize) {
    let pcfg = ProducerConfig {
        linger_ms: 5,
        ..broker.producer_config()
    };
    let t = topic.to_string();
    run_client(move || async move {
        let producer = Producer::connect(pcfg).await.expect("connect");
        let value = "v".repeat(1024);
        let mut last = None;
        for _ in 0..bytes / 1024 {
            last = Some(
                producer
                    .send(record(&t, Some(0), None, &value))
                    .await
                    .expect("send"),
            );
        }
        producer.flush().await.expect("flush");
        if let Some(d) = last {
            d.await.expect("delivery");
        }
        producer.close().await.expect("close");
    });
}

/// Produces `n` records to `topic` and reads each back; returns how many
/// round trips succeeded (all of them, or it panics).
fn healthy_round_trips(broker: &Broker, topic: &str, n: u64) -> u64 {
    let pcfg = broker.producer_config();
    let ccfg = broker.consumer_config();
    let topic = topic.to_string();
    run_client(move || async move {
        let producer = Producer::connect(pcfg).await.expect("healthy producer");
        let mut consumer = Consumer::connect(ccfg).await.expect("healthy consumer");
        consumer
            .assign(&topic, &[0], SeekTo::Latest)
            .await
            .expect("assign");
        let start = consumer.position(&topic, 0).expect("position");
        for i in 0..n {
            let value = format!("healthy-{i}");
            let d = producer
                .send(record(&topic, Some(0), None, &value))
                .await
                .expect("healthy send");
            let md = try_within(Duration::from_secs(30), d)
                .await
                .expect("healthy delivery timed out")
                .expect("healthy delivery");
            assert_eq!(md.offset, start + i, "healthy offsets are contiguous");
            let mut got = None;
            for _ in 0..200 {
                if let Some(r) = consumer.poll().await.expect("healthy poll").pop() {
                    got = Some(r);
                    break;
                }
            }
            let r = got.expect("healthy record read back");
            assert_eq!((r.offset, value_str(&r)), (start + i, value));
        }
        let _ = producer.close().await;
        n
    })
}

/// True if the connection is still open (a short read times out).
fn still_open(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut b = [0u8; 1];
    let open = match s.read(&mut b) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    };
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    open
}

/// Reads until EOF or a reset (bounded by the read timeout and `max_bytes`);
/// returns the bytes read before the close. Panics if the connection stays
/// open.
fn read_until_closed(s: &mut TcpStream, what: &str, max_bytes: usize) -> usize {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0usize;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => {
                total += n;
                assert!(
                    total <= max_bytes,
                    "{what}: read {total} bytes, never closed"
                );
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                return total
            }
            Err(e) => panic!("{what}: the broker did not close the connection ({e})"),
        }
    }
}

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_tables: 1_000_000,
        max_depth: 64,
        max_apparent_size_bytes: 256 << 20,
    }
}

/// Reads `n` responses in full and checks each fetch returned data.
fn read_fetch_responses(s: &mut TcpStream, n: u32) {
    for i in 0..n {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).expect("response length");
        let size = u32::from_le_bytes(len) as usize;
        assert!(size <= 64 << 20, "response frame of {size} bytes");
        let mut payload = vec![0u8; size];
        s.read_exact(&mut payload).expect("response payload");
        let r = decode_response(&Bytes::from(payload), &limits()).expect("decodes");
        assert!(r.error.is_none(), "response {i}: {:?}", r.error);
        match r.body {
            Some(ResponseBody::Fetch(f)) => {
                let p = &f.topics[0].partitions[0];
                assert!(p.error.is_none(), "fetch {i}: {:?}", p.error);
                assert!(!p.records.is_empty(), "fetch {i} returned no records");
            }
            other => panic!("response {i}: not a fetch: {other:?}"),
        }
    }
}

#[test]
fn stalled_clients_do_not_stall_the_shard() {
    // Timeouts long enough that nothing is cut during the test.
    let broker = Broker::start_with(BrokerOptions {
        shards: 1,
        config_toml: Some(
            "[limits]\nconnection_idle_timeout_ms = 600000\nframe_read_timeout_ms = 600000\n"
                .into(),
        ),
        ..BrokerOptions::default()
    });
    broker.create_topic("big", 1);
    broker.create_topic("healthy", 1);
    fill(&broker, "big", 2 << 20);
    let mut bad = start_bad_clients(broker.addr(), "big");

    let n = healthy_round_trips(&broker, "healthy", 100);
    assert_eq!(n, 100);

    assert!(
        still_open(&mut bad.half_frame),
        "half-frame client was closed"
    );
    assert!(still_open(&mut bad.silent), "silent client was closed");
    // The never-reading client's responses were held back for it alone; they
    // all arrive intact once it reads.
    read_fetch_responses(&mut bad.never_reads, FETCHES);
    eprintln!("healthy client: {n} round trips while 3 stalled clients were connected");
}

#[test]
fn stalled_clients_are_cut_off_after_the_timeouts() {
    let broker = Broker::start_with(BrokerOptions {
        shards: 1,
        config_toml: Some(
            "[limits]\nconnection_idle_timeout_ms = 1000\nframe_read_timeout_ms = 500\n".into(),
        ),
        ..BrokerOptions::default()
    });
    broker.create_topic("big", 1);
    broker.create_topic("healthy", 1);
    fill(&broker, "big", 2 << 20);
    let before = broker
        .stderr_since_start()
        .matches("closing connection:")
        .count();
    let mut bad = start_bad_clients(broker.addr(), "big");

    // Wait (bounded) until the broker logged closing all three; reading the
    // never-reading client before that would count as progress.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = broker.stderr_since_start();
        let closes = log.matches("closing connection:").count() - before;
        let frame = log.matches("frame was started but not finished").count();
        if closes >= 3 && frame >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broker closed {closes} of 3 stalled connections within 120 s\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    read_until_closed(&mut bad.half_frame, "half-frame client", 0);
    read_until_closed(&mut bad.silent, "silent client", 0);
    let got = read_until_closed(
        &mut bad.never_reads,
        "never-reading client",
        (FETCHES as usize + 1) * (FETCH_BYTES as usize + 4096),
    );
    eprintln!("never-reading client got {got} bytes before the broker closed it");

    let n = healthy_round_trips(&broker, "healthy", 20);
    assert_eq!(n, 20);
}
