//! Client tests against an in-process mock broker speaking the real codec
//! over a loopback glommio socket (the real broker is tested end to end by
//! the tests in tests/).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use glommio::net::TcpListener;
use glommio::LocalExecutorBuilder;

use super::*;
use crate::net::{read_frame, split, write_frame};
use crate::protocol::batch::{set_base_offset, validate};
use crate::protocol::codec::{decode_request, encode_response, DecodeLimits};
use crate::protocol::messages::*;

const PARTITIONS: u32 = 3;
/// A one-partition topic whose produces always fail with StorageFull.
const FULL: &str = "full";
/// A one-partition topic whose produces always fail with InvalidProducerEpoch.
const FENCED: &str = "fenced";

/// The mock's idempotence state (per test thread): producer ids handed out,
/// and per (partition, producer id) the epoch and the last 5 batches'
/// (first sequence, last sequence, base offset), checked like Kafka.
/// Per (partition, producer id): epoch and the last batches' (first
/// sequence, last sequence, base offset).
type ProducerStates = HashMap<(u32, i64), (i16, Vec<(i32, i32, u64)>)>;

#[derive(Default)]
struct Idempotence {
    next_producer_id: i64,
    producers: ProducerStates,
    /// Produce requests per topic (to count retries).
    requests: HashMap<String, usize>,
}

thread_local! {
    static IDEMPOTENCE: RefCell<Idempotence> = RefCell::new(Idempotence::default());
}

/// Produce requests the mock received for `topic`.
fn produce_requests(topic: &str) -> usize {
    IDEMPOTENCE.with(|s| s.borrow().requests.get(topic).copied().unwrap_or(0))
}

/// Kafka's sequence check: Ok(Some(base)) for a duplicate, Ok(None) to
/// append, Err for a refusal.
fn check_sequence(
    partition: u32,
    h: &crate::protocol::batch::BatchHeader,
) -> Result<Option<u64>, WireError> {
    if h.producer_id < 0 {
        return Ok(None);
    }
    let last = (h.base_sequence as i64 + i64::from(h.record_count) - 1) as i32;
    IDEMPOTENCE.with(|s| {
        let s = s.borrow();
        let Some((epoch, batches)) = s.producers.get(&(partition, h.producer_id)) else {
            return if h.base_sequence == 0 {
                Ok(None)
            } else {
                Err(WireError::new(
                    ErrorCode::UnknownProducerId,
                    "unknown producer",
                ))
            };
        };
        if h.producer_epoch < *epoch {
            return Err(WireError::new(ErrorCode::InvalidProducerEpoch, "fenced"));
        }
        if h.producer_epoch > *epoch {
            return if h.base_sequence == 0 {
                Ok(None)
            } else {
                Err(WireError::new(ErrorCode::OutOfOrderSequence, "new epoch"))
            };
        }
        if let Some(b) = batches
            .iter()
            .find(|b| b.0 == h.base_sequence && b.1 == last)
        {
            return Ok(Some(b.2));
        }
        let expected = batches.last().map_or(0, |b| b.1.wrapping_add(1));
        if h.base_sequence != expected {
            return Err(WireError::new(
                ErrorCode::OutOfOrderSequence,
                format!("expected {expected}, got {}", h.base_sequence),
            ));
        }
        Ok(None)
    })
}

fn record_sequence(partition: u32, h: &crate::protocol::batch::BatchHeader, base: u64) {
    if h.producer_id < 0 {
        return;
    }
    let last = (h.base_sequence as i64 + i64::from(h.record_count) - 1) as i32;
    IDEMPOTENCE.with(|s| {
        let mut s = s.borrow_mut();
        let e = s
            .producers
            .entry((partition, h.producer_id))
            .or_insert((h.producer_epoch, Vec::new()));
        if e.0 != h.producer_epoch {
            *e = (h.producer_epoch, Vec::new());
        }
        e.1.push((h.base_sequence, last, base));
        if e.1.len() > 5 {
            e.1.remove(0);
        }
    });
}

/// Partition logs of topic "t": concatenated batches, and the next offset.
type Logs = Rc<RefCell<HashMap<u32, (Vec<u8>, u64)>>>;

fn handle(logs: &Logs, req: Request) -> Option<Response> {
    let cid = req.correlation_id;
    let body = match req.body {
        RequestBody::Metadata(m) => ResponseBody::Metadata(MetadataResponse {
            brokers: vec![],
            topics: m
                .topics
                .iter()
                .map(|name| TopicInfo {
                    name: name.clone(),
                    error: (name != "t" && name != FULL && name != FENCED).then(|| {
                        WireError::new(ErrorCode::UnknownTopicOrPartition, "no such topic")
                    }),
                    partitions: if name == "t" || name == FULL || name == FENCED {
                        (0..if name == "t" { PARTITIONS } else { 1 })
                            .map(|p| PartitionInfo {
                                partition: p,
                                leader_node: 0,
                                leader_shard: 0,
                                log_start_offset: 0,
                                log_end_offset: 0,
                                high_watermark: 0,
                            })
                            .collect()
                    } else {
                        vec![]
                    },
                    configs: vec![],
                })
                .collect(),
        }),
        RequestBody::Produce(p) => {
            let mut topics = Vec::new();
            for t in p.topics {
                let mut parts = Vec::new();
                for pp in t.partitions {
                    IDEMPOTENCE
                        .with(|s| *s.borrow_mut().requests.entry(t.name.clone()).or_default() += 1);
                    let refused = match t.name.as_str() {
                        FULL => Some(WireError::new(ErrorCode::StorageFull, "disk full")),
                        FENCED => Some(WireError::new(ErrorCode::InvalidProducerEpoch, "fenced")),
                        _ => None,
                    };
                    if let Some(e) = refused {
                        parts.push(ProducePartitionResult {
                            partition: pp.partition,
                            result: Err(e),
                            log_start_offset: None,
                        });
                        continue;
                    }
                    let h = validate(&pp.batch).expect("client sends valid batches");
                    match check_sequence(pp.partition, &h) {
                        Ok(None) => {}
                        Ok(Some(base)) => {
                            parts.push(ProducePartitionResult {
                                partition: pp.partition,
                                result: Ok(base),
                                log_start_offset: Some(0),
                            });
                            continue;
                        }
                        Err(e) => {
                            parts.push(ProducePartitionResult {
                                partition: pp.partition,
                                result: Err(e),
                                log_start_offset: None,
                            });
                            continue;
                        }
                    }
                    let mut logs = logs.borrow_mut();
                    let (log, next) = logs.entry(pp.partition).or_default();
                    let base = *next;
                    record_sequence(pp.partition, &h, base);
                    let mut b = pp.batch.to_vec();
                    set_base_offset(&mut b, base);
                    log.extend_from_slice(&b);
                    *next += u64::from(h.record_count);
                    parts.push(ProducePartitionResult {
                        partition: pp.partition,
                        result: Ok(base),
                        log_start_offset: Some(0),
                    });
                }
                topics.push(ProduceTopicResult {
                    name: t.name,
                    partitions: parts,
                });
            }
            ResponseBody::Produce(ProduceResponse { topics })
        }
        RequestBody::ListOffsets(l) => ResponseBody::ListOffsets(ListOffsetsResponse {
            topics: l
                .topics
                .into_iter()
                .map(|t| ListOffsetsTopicResult {
                    name: t.name,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            let end = logs.borrow().get(&p.partition).map_or(0, |l| l.1);
                            let o = match p.spec {
                                OffsetSpec::Earliest => 0,
                                _ => end,
                            };
                            ListOffsetsPartitionResult {
                                partition: p.partition,
                                result: Ok((o, -1)),
                            }
                        })
                        .collect(),
                })
                .collect(),
        }),
        RequestBody::Fetch(f) => ResponseBody::Fetch(FetchResponse {
            topics: f
                .topics
                .into_iter()
                .map(|t| FetchTopicResult {
                    name: t.name,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            let logs = logs.borrow();
                            let (log, end) = logs.get(&p.partition).cloned().unwrap_or_default();
                            if p.fetch_offset > end {
                                return FetchPartitionResult {
                                    partition: p.partition,
                                    error: Some(WireError::new(
                                        ErrorCode::OffsetOutOfRange,
                                        "past end",
                                    )),
                                    high_watermark: Some(end),
                                    log_start_offset: Some(0),
                                    log_end_offset: Some(end),
                                    records: Bytes::new().into(),
                                };
                            }
                            // Serve from the batch containing fetch_offset, max one batch.
                            let mut records = Bytes::new();
                            for item in crate::protocol::batch::batches(&log) {
                                let (h, raw) = item.expect("valid log");
                                if h.last_offset() >= p.fetch_offset {
                                    records = Bytes::copy_from_slice(raw);
                                    break;
                                }
                            }
                            FetchPartitionResult {
                                partition: p.partition,
                                error: None,
                                high_watermark: Some(end),
                                log_start_offset: Some(0),
                                log_end_offset: Some(end),
                                records: records.into(),
                            }
                        })
                        .collect(),
                })
                .collect(),
        }),
        RequestBody::CreateTopic(c) => {
            ResponseBody::CreateTopic(CreateTopicResponse { name: c.name })
        }
        RequestBody::DeleteTopic(_) => return None, // never answered: exercises timeouts
        RequestBody::InitProducerId(_) => IDEMPOTENCE.with(|s| {
            let mut s = s.borrow_mut();
            s.next_producer_id += 1;
            ResponseBody::InitProducerId(InitProducerIdResponse {
                identity: ProducerIdentity {
                    producer_id: s.next_producer_id,
                    producer_epoch: 0,
                },
            })
        }),
        RequestBody::DeleteRecords(_)
        | RequestBody::AlterTopicConfig(_)
        | RequestBody::FindCoordinator(_)
        | RequestBody::JoinGroup(_)
        | RequestBody::SyncGroup(_)
        | RequestBody::Heartbeat(_)
        | RequestBody::LeaveGroup(_)
        | RequestBody::OffsetCommit(_)
        | RequestBody::OffsetFetch(_)
        | RequestBody::ListGroups(_)
        | RequestBody::DescribeGroups(_)
        | RequestBody::DeleteGroups(_) => return None,
        RequestBody::ApiVersions(_) => ResponseBody::ApiVersions(ApiVersionsResponse {
            apis: vec![],
            broker_software: "mock".into(),
            node_id: 0,
            shard_count: 1,
        }),
    };
    Some(Response::ok(cid, body))
}

/// Serves one connection at a time; closes it when request `max_requests + 1`
/// arrives (unanswered), or right after answering request `max_requests`
/// if `close_when_done`.
fn spawn_broker(listener: TcpListener, logs: Logs, max_requests: usize, close_when_done: bool) {
    glommio::spawn_local(async move {
        loop {
            let Ok(s) = listener.accept().await else {
                return;
            };
            let (mut r, mut w) = split(s);
            let mut served = 0;
            while let Ok(Some(frame)) = read_frame(&mut r, 64 << 20).await {
                let req = decode_request(&frame, &DecodeLimits::default()).expect("valid request");
                // The connection handshake is not one of the counted requests.
                let handshake = matches!(req.body, RequestBody::ApiVersions(_));
                if !handshake && served == max_requests {
                    break;
                }
                served += usize::from(!handshake);
                if let Some(resp) = handle(&logs, req) {
                    write_frame(&mut w, &encode_response(&resp))
                        .await
                        .expect("write");
                }
                if close_when_done && served == max_requests {
                    break;
                }
            }
            let _ = w.shutdown_both();
        }
    })
    .detach();
}

type TestFn = Box<
    dyn FnOnce(ClientConfig) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send,
>;

fn run(
    test: impl FnOnce(ClientConfig) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
        + Send
        + 'static,
    max_requests: usize,
) {
    run_with(Box::new(test), max_requests, false)
}

fn run_with(test: TestFn, max_requests: usize, close_when_done: bool) {
    LocalExecutorBuilder::default()
        .io_memory(512 * 1024)
        .spawn(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            spawn_broker(
                listener,
                Rc::new(RefCell::new(HashMap::new())),
                max_requests,
                close_when_done,
            );
            let config = ClientConfig {
                bootstrap: addr.to_string(),
                request_timeout_ms: 2_000,
                ..ClientConfig::default()
            };
            test(config).await;
        })
        .expect("executor")
        .join()
        .expect("join");
}

#[test]
fn produce_then_consume_in_order() {
    run(
        |client| {
            Box::pin(async move {
                let producer = Producer::connect(ProducerConfig {
                    client: client.clone(),
                    batch_bytes: 2048,
                    linger_ms: 1,
                    ..ProducerConfig::default()
                })
                .await
                .expect("connect");
                let mut futs = Vec::new();
                for i in 0..600u32 {
                    let rec =
                        ProducerRecord::new("t", format!("v{i}")).with_key(format!("k{}", i % 17));
                    futs.push((i, producer.send(rec).await.expect("send")));
                }
                producer.flush().await.expect("flush");
                let mut last: HashMap<u32, u64> = HashMap::new();
                for (i, f) in futs {
                    let md = f.await.expect("delivered");
                    assert_eq!(
                        md.partition,
                        partition_for_key(format!("k{}", i % 17).as_bytes(), PARTITIONS)
                    );
                    if let Some(prev) = last.insert(md.partition, md.offset) {
                        assert_eq!(md.offset, prev + 1, "offsets follow send order");
                    } else {
                        assert_eq!(md.offset, 0);
                    }
                }
                let e = producer
                    .send(ProducerRecord::new("nope", "x"))
                    .await
                    .err()
                    .expect("unknown topic");
                assert_eq!(e.wire_code(), Some(ErrorCode::UnknownTopicOrPartition));
                producer.close().await.expect("close");

                let mut consumer = Consumer::connect(ConsumerConfig {
                    client,
                    max_wait_ms: 10,
                    ..ConsumerConfig::default()
                })
                .await
                .expect("connect");
                consumer
                    .assign("t", &[], SeekTo::Earliest)
                    .await
                    .expect("assign");
                let mut got: HashMap<u32, Vec<String>> = HashMap::new();
                let mut n = 0;
                for _ in 0..10_000 {
                    if n == 600 {
                        break;
                    }
                    for r in consumer.poll().await.expect("poll") {
                        n += 1;
                        got.entry(r.partition).or_default().push(
                            String::from_utf8_lossy(r.value.as_deref().expect("v")).into_owned(),
                        );
                    }
                }
                assert_eq!(n, 600);
                for (p, values) in got {
                    let expected: Vec<String> = (0..600u32)
                        .filter(|i| {
                            partition_for_key(format!("k{}", i % 17).as_bytes(), PARTITIONS) == p
                        })
                        .map(|i| format!("v{i}"))
                        .collect();
                    assert_eq!(values, expected);
                    assert_eq!(consumer.position("t", p), Some(expected.len() as u64));
                }
                // Seeking: latest, an explicit offset, and past the end.
                assert_eq!(
                    consumer
                        .seek("t", 0, SeekTo::Offset(1))
                        .await
                        .expect("seek"),
                    1
                );
                let end = consumer.seek("t", 1, SeekTo::Latest).await.expect("seek");
                assert_eq!(consumer.position("t", 1), Some(end));
                consumer
                    .seek("t", 2, SeekTo::Offset(1_000_000))
                    .await
                    .expect("seek");
                let e = consumer.poll().await.expect_err("out of range");
                assert_eq!(e.wire_code(), Some(ErrorCode::OffsetOutOfRange));
                assert_eq!(
                    consumer.position("t", 0),
                    Some(1),
                    "failed poll moves nothing"
                );
                let e = consumer
                    .assign("nope", &[], SeekTo::Earliest)
                    .await
                    .expect_err("unknown");
                assert_eq!(e.wire_code(), Some(ErrorCode::UnknownTopicOrPartition));
            })
        },
        usize::MAX,
    );
}

#[test]
fn timeout_broker_error_and_connection_loss() {
    run(
        |client| {
            Box::pin(async move {
                let admin = Admin::connect(client).await.expect("connect");
                // DeleteTopic is never answered by the mock.
                let e = admin.delete_topic("t").await.expect_err("timeout");
                assert!(matches!(e, ClientError::Timeout(_)), "{e}");
                admin.create_topic("x", 1, &[]).await.expect("create");
                let info = admin.describe_topic("t").await.expect("describe");
                assert_eq!(info.partitions.len(), PARTITIONS as usize);
                // The mock closes after 3 requests: the 4th, in flight on the
                // lost connection, fails and is not resent...
                let e = admin.list_topics().await.expect_err("closed");
                assert!(matches!(e, ClientError::Closed | ClientError::Io(_)), "{e}");
                // ...and the next request reconnects by itself.
                let info = admin.describe_topic("t").await.expect("reconnected");
                assert_eq!(info.partitions.len(), PARTITIONS as usize);
            })
        },
        3,
    );
}

#[test]
fn linger_zero_still_batches_records_sent_together() {
    run(
        |client| {
            Box::pin(async move {
                let producer = Producer::connect(ProducerConfig {
                    client: client.clone(),
                    linger_ms: 0,
                    ..ProducerConfig::default()
                })
                .await
                .expect("connect");
                let mut futs = Vec::new();
                for i in 0..100u32 {
                    let rec = ProducerRecord::new("t", format!("v{i}")).with_partition(0);
                    futs.push(producer.send(rec).await.expect("send"));
                }
                for (i, f) in futs.into_iter().enumerate() {
                    assert_eq!(f.await.expect("delivered").offset, i as u64);
                }
                producer.close().await.expect("close"); // the mock serves one connection at a time
                let mut consumer = Consumer::connect(ConsumerConfig {
                    client,
                    max_wait_ms: 10,
                    ..ConsumerConfig::default()
                })
                .await
                .expect("connect");
                consumer
                    .assign("t", &[0], SeekTo::Earliest)
                    .await
                    .expect("assign");
                // The mock serves one batch per fetch: all 100 records in one.
                assert_eq!(consumer.poll().await.expect("poll").len(), 100);
            })
        },
        usize::MAX,
    );
}

#[test]
fn flush_reports_failures_since_the_last_flush_not_an_idle_close() {
    run_with(
        Box::new(|client| {
            Box::pin(async move {
                // Without idempotence a refused batch fails at once (with it,
                // StorageFull is retried: see delivery_timeout_expiry_...).
                let producer = Producer::connect(ProducerConfig {
                    client,
                    linger_ms: 0,
                    idempotence: false,
                    ..ProducerConfig::default()
                })
                .await
                .expect("connect");
                // Request 1: metadata; request 2: produce, acknowledged, after
                // which the mock closes the connection (as an idle timeout would).
                let f = producer
                    .send(ProducerRecord::new("t", "a").with_partition(0))
                    .await
                    .expect("send");
                assert_eq!(f.await.expect("acked").offset, 0);
                producer
                    .flush()
                    .await
                    .expect("everything acknowledged: a later close is not a failure");
                // On a new connection: a batch the broker refuses fails its
                // record and the next flush, and only that flush.
                let f = producer
                    .send(ProducerRecord::new(FULL, "b"))
                    .await
                    .expect("send");
                let e = producer.flush().await.expect_err("refused batch");
                assert_eq!(e.wire_code(), Some(ErrorCode::StorageFull), "{e}");
                let e = f.await.expect_err("record failed");
                assert_eq!(e.wire_code(), Some(ErrorCode::StorageFull), "{e}");
                producer.flush().await.expect("nothing failed since");
            })
        }),
        2,
        true,
    );
}

/// Produce requests in flight per partition, as the mock broker sees them:
/// (now, most ever).
type InFlight = Rc<RefCell<HashMap<u32, (usize, usize)>>>;

/// Like `spawn_broker`, but reads requests while earlier ones are pending
/// and answers each produce `delay_ms` after it arrived, counting the
/// produce requests in flight per partition of topic "t".
fn spawn_slow_broker(listener: TcpListener, logs: Logs, in_flight: InFlight, delay_ms: u64) {
    glommio::spawn_local(async move {
        let Ok(s) = listener.accept().await else {
            return;
        };
        let (mut r, mut w) = split(s);
        let (tx, rx) = glommio::channels::local_channel::new_unbounded::<Vec<u8>>();
        let tx = Rc::new(tx);
        glommio::spawn_local(async move {
            while let Some(frame) = rx.recv().await {
                if write_frame(&mut w, &frame).await.is_err() {
                    return;
                }
            }
        })
        .detach();
        while let Ok(Some(frame)) = read_frame(&mut r, 64 << 20).await {
            let req = decode_request(&frame, &DecodeLimits::default()).expect("valid request");
            let parts: Vec<u32> = match &req.body {
                RequestBody::Produce(p) => p
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|pp| pp.partition))
                    .collect(),
                _ => vec![],
            };
            for p in &parts {
                let mut f = in_flight.borrow_mut();
                let e = f.entry(*p).or_default();
                e.0 += 1;
                e.1 = e.1.max(e.0);
            }
            // Logged (offsets assigned) in arrival order, answered later.
            let Some(resp) = handle(&logs, req) else {
                continue;
            };
            let (tx, in_flight) = (tx.clone(), in_flight.clone());
            let delay_ms = if parts.is_empty() { 0 } else { delay_ms };
            glommio::spawn_local(async move {
                crate::timer::sleep_once(std::time::Duration::from_millis(delay_ms)).await;
                for p in parts {
                    if let Some(e) = in_flight.borrow_mut().get_mut(&p) {
                        e.0 -= 1;
                    }
                }
                let _ = tx.send(encode_response(&resp).to_vec()).await;
            })
            .detach();
        }
    })
    .detach();
}

/// Sends 2,000 records to 2 partitions of "t" at once through a broker that
/// takes 5 ms per produce; returns the most produce requests the broker ever
/// had in flight per partition.
fn most_in_flight(window: usize) -> HashMap<u32, usize> {
    LocalExecutorBuilder::default()
        .io_memory(512 * 1024)
        .spawn(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let in_flight = InFlight::default();
            spawn_slow_broker(listener, Logs::default(), in_flight.clone(), 5);
            let producer = Producer::connect(ProducerConfig {
                client: ClientConfig {
                    bootstrap: addr.to_string(),
                    request_timeout_ms: 10_000,
                    ..ClientConfig::default()
                },
                linger_ms: 0,
                batch_bytes: 1024,
                max_in_flight_per_partition: window,
                ..ProducerConfig::default()
            })
            .await
            .expect("connect");
            let mut futs = Vec::new();
            for i in 0..2_000u32 {
                let rec = ProducerRecord::new("t", format!("value {i:>20}")).with_partition(i % 2);
                futs.push((i, producer.send(rec).await.expect("send")));
            }
            producer.flush().await.expect("flush");
            let mut next = [0u64; 2];
            for (i, f) in futs {
                let md = f.await.expect("delivered");
                assert_eq!(md.partition, i % 2);
                let slot = &mut next[(i % 2) as usize];
                assert_eq!(md.offset, *slot, "offsets follow send order");
                *slot += 1;
            }
            producer.close().await.expect("close");
            let most: HashMap<u32, usize> = in_flight
                .borrow()
                .iter()
                .map(|(p, (now, most))| {
                    assert_eq!(*now, 0, "every produce answered");
                    (*p, *most)
                })
                .collect();
            most
        })
        .expect("executor")
        .join()
        .expect("join")
}

#[test]
fn producer_never_exceeds_its_request_window_per_partition() {
    for window in [1, 2, 4] {
        let most = most_in_flight(window);
        assert_eq!(most.len(), 2, "both partitions produced to: {most:?}");
        for (p, n) in most {
            // 2,000 records of ~50 bytes in 1 KiB batches, 5 ms per produce:
            // far more batches than the window, so it fills, and never overflows.
            assert_eq!(n, window, "window {window}, partition {p}");
        }
    }
}

/// Serves one connection at a time, answering like `handle`, except that
/// produce request `n` (counted from 1 over all connections) with `cut(n)`
/// is written to the log and then the connection is closed before the
/// answer (what a crash or a cut cable does after the write).
fn spawn_cutting_broker(listener: TcpListener, logs: Logs, cut: fn(usize) -> bool) {
    glommio::spawn_local(async move {
        let mut produces = 0usize;
        loop {
            let Ok(s) = listener.accept().await else {
                return;
            };
            let (mut r, mut w) = split(s);
            while let Ok(Some(frame)) = read_frame(&mut r, 64 << 20).await {
                let req = decode_request(&frame, &DecodeLimits::default()).expect("valid request");
                let is_produce = matches!(req.body, RequestBody::Produce(_));
                let resp = handle(&logs, req);
                if is_produce {
                    produces += 1;
                    if cut(produces) {
                        break;
                    }
                }
                if let Some(resp) = resp {
                    if write_frame(&mut w, &encode_response(&resp)).await.is_err() {
                        break;
                    }
                }
            }
            let _ = w.shutdown_both();
        }
    })
    .detach();
}

type CutTestFn = Box<
    dyn FnOnce(ClientConfig, Logs) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
        + Send,
>;

fn run_cutting(test: CutTestFn, cut: fn(usize) -> bool) {
    LocalExecutorBuilder::default()
        .io_memory(512 * 1024)
        .spawn(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let logs = Logs::default();
            spawn_cutting_broker(listener, logs.clone(), cut);
            let config = ClientConfig {
                bootstrap: addr.to_string(),
                request_timeout_ms: 2_000,
                ..ClientConfig::default()
            };
            test(config, logs).await;
        })
        .expect("executor")
        .join()
        .expect("join");
}

/// The values in partition `p`'s mock log, in log order.
fn log_values(logs: &Logs, p: u32) -> Vec<String> {
    let logs = logs.borrow();
    let Some((log, _)) = logs.get(&p) else {
        return Vec::new();
    };
    crate::protocol::batch::batches(log)
        .flat_map(|item| {
            let (_, raw) = item.expect("valid log");
            crate::protocol::batch::records(raw)
                .expect("records")
                .map(|r| String::from_utf8_lossy(r.expect("record").value.expect("v")).into_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every 7th produce request is written and then its connection cut, with
/// up to 5 requests in flight per partition: every record is acknowledged,
/// written exactly once, in send order per partition.
#[test]
fn retry_after_a_dropped_connection_keeps_order_and_writes_once() {
    const N: u32 = 3_000;
    run_cutting(
        Box::new(|client, logs| {
            Box::pin(async move {
                let producer = Producer::connect(ProducerConfig {
                    client,
                    linger_ms: 0,
                    batch_bytes: 512,
                    retry_backoff_ms: 5,
                    retry_backoff_max_ms: 20,
                    ..ProducerConfig::default()
                })
                .await
                .expect("connect");
                assert!(producer.identity().is_some(), "idempotent by default");
                let mut futs = Vec::new();
                for i in 0..N {
                    let rec = ProducerRecord::new("t", format!("v{i:05}")).with_partition(i % 3);
                    futs.push((i, producer.send(rec).await.expect("send")));
                }
                producer
                    .flush()
                    .await
                    .expect("flush: every batch acknowledged");
                let mut next = [0u64; 3];
                for (i, f) in futs {
                    let md = f.await.expect("delivered");
                    let slot = &mut next[(i % 3) as usize];
                    assert_eq!(md.offset, *slot, "offsets follow send order");
                    *slot += 1;
                }
                assert!(produce_requests("t") > 30, "cuts forced retries");
                for p in 0..3u32 {
                    let expected: Vec<String> = (0..N)
                        .filter(|i| i % 3 == p)
                        .map(|i| format!("v{i:05}"))
                        .collect();
                    assert_eq!(
                        log_values(&logs, p),
                        expected,
                        "partition {p}: once, in order"
                    );
                }
            })
        }),
        |n| n % 7 == 0,
    );
}

/// Without idempotence a produce that may have been written is not resent:
/// its record fails (it is in the log once), the next ones go on a new
/// connection.
#[test]
fn idempotence_off_does_not_resend_a_produce_that_may_have_been_written() {
    run_cutting(
        Box::new(|client, logs| {
            Box::pin(async move {
                let producer = Producer::connect(ProducerConfig {
                    client,
                    linger_ms: 0,
                    idempotence: false,
                    max_in_flight_per_partition: 8,
                    ..ProducerConfig::default()
                })
                .await
                .expect("connect");
                assert!(producer.identity().is_none());
                let send =
                    |v: &'static str| producer.send(ProducerRecord::new("t", v).with_partition(0));
                let a = send("a").await.expect("send");
                assert_eq!(a.await.expect("a acked").offset, 0);
                let b = send("b").await.expect("send");
                let e = b.await.expect_err("b's connection was cut after the write");
                assert!(matches!(e, ClientError::Closed | ClientError::Io(_)), "{e}");
                assert!(producer.flush().await.is_err(), "flush reports b");
                let c = send("c").await.expect("send");
                assert_eq!(c.await.expect("c acked").offset, 2);
                assert_eq!(produce_requests("t"), 3, "b was not resent");
                assert_eq!(log_values(&logs, 0), vec!["a", "b", "c"]);
            })
        }),
        |n| n == 2,
    );
}

/// A fenced producer (InvalidProducerEpoch for its current epoch) fails its
/// sends with that error, sends nothing again, and refuses new sends.
#[test]
fn a_fenced_producer_fails_its_sends_and_does_not_retry() {
    run(
        |client| {
            Box::pin(async move {
                let producer = Producer::connect(ProducerConfig {
                    client,
                    linger_ms: 0,
                    retry_backoff_ms: 1,
                    ..ProducerConfig::default()
                })
                .await
                .expect("connect");
                let f = producer
                    .send(ProducerRecord::new(FENCED, "x"))
                    .await
                    .expect("send");
                let e = f.await.expect_err("fenced");
                assert_eq!(e.wire_code(), Some(ErrorCode::InvalidProducerEpoch), "{e}");
                let e = producer.flush().await.expect_err("flush reports it");
                assert_eq!(e.wire_code(), Some(ErrorCode::InvalidProducerEpoch), "{e}");
                let e = producer
                    .send(ProducerRecord::new("t", "y"))
                    .await
                    .err()
                    .expect("a fenced producer refuses new sends");
                assert_eq!(e.wire_code(), Some(ErrorCode::InvalidProducerEpoch), "{e}");
                assert_eq!(produce_requests(FENCED), 1, "never retried");
                assert_eq!(produce_requests("t"), 0);
            })
        },
        usize::MAX,
    );
}

/// A retriable refusal (StorageFull) is retried with backoff until the
/// delivery timeout, then the record fails with a timeout naming the cause.
#[test]
fn delivery_timeout_expiry_reports_an_error() {
    run(
        |client| {
            Box::pin(async move {
                let producer = Producer::connect(ProducerConfig {
                    client,
                    linger_ms: 0,
                    delivery_timeout_ms: 300,
                    retry_backoff_ms: 10,
                    retry_backoff_max_ms: 40,
                    ..ProducerConfig::default()
                })
                .await
                .expect("connect");
                let f = producer
                    .send(ProducerRecord::new(FULL, "x"))
                    .await
                    .expect("send");
                let e = f.await.expect_err("expired");
                assert!(matches!(e, ClientError::Timeout(_)), "{e}");
                let msg = e.to_string();
                assert!(msg.contains("delivery timeout"), "{msg}");
                assert!(msg.contains("storage full"), "names the last error: {msg}");
                assert!(produce_requests(FULL) > 1, "retried before expiring");
                assert!(producer.flush().await.is_err());
                // The producer still works for other partitions.
                let f = producer
                    .send(ProducerRecord::new("t", "ok").with_partition(0))
                    .await
                    .expect("send");
                assert_eq!(f.await.expect("acked").offset, 0);
            })
        },
        usize::MAX,
    );
}
