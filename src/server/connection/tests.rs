//! The connection loop over the in-memory transport (no socket, no shard):
//! pipelined and in-order responses, an undecodable frame answered and the
//! connection kept, an oversized frame answered then closed, and a peer
//! that goes away in the middle of a large response; the idle deadline on
//! a simulated clock (closed when the clock passes it, not by real time);
//! the shard's request budget stopping reads across connections.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use glommio::LocalExecutorBuilder;

use super::{serve, Conn, ConnLimits};
use crate::net::frame_io::read_frame;
use crate::net::memory::{duplex, MemoryStream};
use crate::net::split::{split, ReadHalf, WriteHalf};
use crate::net::write_frame;
use crate::protocol::codec::{decode_response, encode_request, DecodeLimits};
use crate::protocol::frame::ByteOrder;
use crate::protocol::messages::*;
use crate::protocol::ErrorCode;
use crate::server::codec::{Codec, FlatBuffers, Handler};
use crate::shard::ops::LocalBoxFuture;

/// Answers Metadata for topic "slow" after a delay, "big" with a 1 MiB fetch
/// response, anything else at once with an empty metadata response.
struct Stub;

impl Handler<Request, Response> for Stub {
    fn start(
        &self,
        req: Request,
        _peer: &str,
    ) -> LocalBoxFuture<'_, LocalBoxFuture<'static, Response>> {
        #[allow(clippy::async_yields_async)]
        Box::pin(async move {
            let cid = req.correlation_id;
            let topic = match &req.body {
                RequestBody::Metadata(m) => m.topics.first().cloned().unwrap_or_default(),
                _ => String::new(),
            };
            Box::pin(async move {
                match topic.as_str() {
                    "slow" => {
                        crate::timer::sleep_once(Duration::from_millis(50)).await;
                    }
                    "big" => {
                        return Response::ok(
                            cid,
                            ResponseBody::Fetch(FetchResponse {
                                topics: vec![FetchTopicResult {
                                    name: "big".into(),
                                    partitions: vec![FetchPartitionResult {
                                        partition: 0,
                                        error: None,
                                        high_watermark: Some(1),
                                        log_start_offset: Some(0),
                                        log_end_offset: Some(1),
                                        records: Bytes::from(vec![7u8; 1 << 20]).into(),
                                    }],
                                }],
                            }),
                        )
                    }
                    _ => {}
                }
                empty_metadata(cid)
            }) as LocalBoxFuture<'static, Response>
        })
    }
}

/// An empty metadata response (what the stub handlers answer).
fn empty_metadata(cid: u32) -> Response {
    Response::ok(
        cid,
        ResponseBody::Metadata(MetadataResponse {
            brokers: vec![],
            topics: vec![],
        }),
    )
}

/// FlatBuffers framing with Kafka's rule: responses leave in request order.
struct InOrder(FlatBuffers);

impl Codec for InOrder {
    type Request = Request;
    type Response = Response;
    fn byte_order(&self) -> ByteOrder {
        self.0.byte_order()
    }
    fn decode(&self, frame: Bytes) -> Result<Request, Response> {
        self.0.decode(frame)
    }
    fn encode(&self, resp: &Response) -> Vec<Bytes> {
        self.0.encode(resp)
    }
    fn frame_too_large(&self, declared: u64, max: u32) -> Option<Response> {
        self.0.frame_too_large(declared, max)
    }
    fn empty_frame(&self) -> Option<Response> {
        self.0.empty_frame()
    }
    fn responses_in_order(&self) -> bool {
        true
    }
}

fn limits() -> ConnLimits {
    ConnLimits {
        max_frame_bytes: 64 * 1024,
        max_in_flight: 4,
        idle: Duration::from_secs(30),
        frame: Duration::from_secs(30),
    }
}

fn conn<C: Codec>(codec: C) -> Conn<C, Stub> {
    Conn {
        codec: Rc::new(codec),
        handler: Rc::new(Stub),
        limits: limits(),
        shard: 0,
        clock: crate::io::Clock::Real,
        budget: crate::server::budget::RequestBudget::new(1 << 30, 1 << 30),
    }
}

fn flatbuffers() -> FlatBuffers {
    FlatBuffers {
        limits: DecodeLimits::default(),
    }
}

fn metadata(cid: u32, topic: &str) -> bytes::Bytes {
    encode_request(&Request {
        correlation_id: cid,
        api_version: PROTOCOL_VERSION,
        client_id: None,
        body: RequestBody::Metadata(MetadataRequest {
            topics: vec![topic.to_string()],
        }),
    })
}

async fn response(r: &mut ReadHalf<MemoryStream>) -> Option<Response> {
    let frame = read_frame(r, 4 << 20).await.expect("read")?;
    Some(decode_response(&frame, &DecodeLimits::default()).expect("decodes"))
}

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::default()
        .spawn(move || async move { f().await })
        .expect("executor")
        .join()
        .expect("join");
}

type Client = (ReadHalf<MemoryStream>, WriteHalf<MemoryStream>);

/// Serves `codec` on one end of a duplex of `capacity_bytes`; the client
/// end, and the serving task.
fn connect<C: Codec<Request = Request, Response = Response>>(
    codec: C,
    capacity_bytes: usize,
) -> (Client, glommio::Task<()>) {
    let (server, client) = duplex(capacity_bytes);
    let served = glommio::spawn_local(serve(conn(codec), server));
    (split(client), served)
}

/// Sends Metadata requests for (correlation id, topic), pipelined.
async fn send_all(w: &mut WriteHalf<MemoryStream>, reqs: &[(u32, &str)]) {
    for (cid, topic) in reqs {
        write_frame(w, &metadata(*cid, topic)).await.expect("write");
    }
}

#[test]
fn pipelined_errors_and_oversize_over_memory() {
    run(|| async {
        let ((mut r, mut w), served) = connect(flatbuffers(), 16 * 1024);
        // Pipelined: the slow request's answer is overtaken by the fast one.
        send_all(&mut w, &[(1, "slow"), (2, "fast")]).await;
        assert_eq!(response(&mut r).await.map(|x| x.correlation_id), Some(2));
        assert_eq!(response(&mut r).await.map(|x| x.correlation_id), Some(1));
        // Undecodable: answered, connection kept.
        write_frame(&mut w, b"not a flatbuffer")
            .await
            .expect("write");
        let bad = response(&mut r).await.expect("answer");
        assert_eq!(bad.error.map(|e| e.code), Some(ErrorCode::InvalidRequest));
        write_frame(&mut w, &metadata(3, "fast"))
            .await
            .expect("write");
        assert_eq!(response(&mut r).await.map(|x| x.correlation_id), Some(3));
        // Oversized: MessageTooLarge with correlation id 0, then EOF.
        w.write_all(&(1u32 << 20).to_le_bytes())
            .await
            .expect("write");
        let big = response(&mut r).await.expect("answer");
        assert_eq!(big.correlation_id, 0);
        assert_eq!(big.error.map(|e| e.code), Some(ErrorCode::MessageTooLarge));
        drop(w);
        assert!(response(&mut r).await.is_none(), "closed after the error");
        served.await;
    });
}

#[test]
fn in_order_codec_keeps_request_order() {
    run(|| async {
        let ((mut r, mut w), served) = connect(InOrder(flatbuffers()), 16 * 1024);
        send_all(&mut w, &[(1, "slow"), (2, "fast"), (3, "fast")]).await;
        for cid in 1..=3 {
            assert_eq!(response(&mut r).await.map(|x| x.correlation_id), Some(cid));
        }
        drop(w);
        assert!(response(&mut r).await.is_none());
        served.await;
    });
}

#[test]
fn a_peer_gone_mid_response_ends_the_connection() {
    run(|| async {
        // 4 KiB of buffer: the 1 MiB response cannot be written at once.
        let ((mut r, mut w), served) = connect(flatbuffers(), 4 * 1024);
        send_all(&mut w, &[(1, "big")]).await;
        // Read a little of the response, then go away.
        let mut some = [0u8; 1024];
        futures_lite::AsyncReadExt::read_exact(&mut r, &mut some)
            .await
            .expect("start of the response");
        drop((r, w));
        // The writer fails (broken pipe) and the reader sees EOF: serve ends.
        served.await;
    });
}

#[test]
fn idle_timeout_follows_the_connection_clock() {
    run(|| async {
        let clock = crate::io::Clock::sim(0);
        let (server, client) = duplex(16 * 1024);
        let (mut r, mut w) = split(client);
        let c = Conn {
            clock: clock.clone(),
            ..conn(flatbuffers())
        };
        let closed = Rc::new(std::cell::Cell::new(false));
        let served = {
            let closed = closed.clone();
            glommio::spawn_local(async move {
                serve(c, server).await;
                closed.set(true);
            })
        };
        send_all(&mut w, &[(1, "fast")]).await;
        assert_eq!(response(&mut r).await.map(|x| x.correlation_id), Some(1));
        let settle = || async {
            for _ in 0..100 {
                futures_lite::future::yield_now().await;
            }
        };
        settle().await;
        assert!(
            !closed.get(),
            "open while not idle for connection_idle_timeout_ms"
        );
        clock.advance(limits().idle - Duration::from_millis(1));
        settle().await;
        assert!(!closed.get(), "1 ms before the idle deadline");
        clock.advance(Duration::from_millis(1));
        served.await;
        assert!(closed.get());
        assert!(response(&mut r).await.is_none(), "closed when idle");
    });
}

/// Counts the requests it was handed and answers each only once the test
/// hands out a permit of `gate`.
struct Gated {
    started: Rc<std::cell::Cell<usize>>,
    gate: Rc<glommio::sync::Semaphore>,
}

impl Handler<Request, Response> for Gated {
    fn start(
        &self,
        req: Request,
        _peer: &str,
    ) -> LocalBoxFuture<'_, LocalBoxFuture<'static, Response>> {
        self.started.set(self.started.get() + 1);
        let gate = self.gate.clone();
        #[allow(clippy::async_yields_async)]
        Box::pin(async move {
            let cid = req.correlation_id;
            Box::pin(async move {
                let _ = gate.acquire(1).await;
                empty_metadata(cid)
            }) as LocalBoxFuture<'static, Response>
        })
    }
}

#[test]
fn the_shard_budget_stops_reading_across_connections_until_requests_complete() {
    run(|| async {
        let frame_bytes = metadata(1, "held").len();
        // Room for two frames and a half: the third waits, on either
        // connection.
        let budget = crate::server::budget::RequestBudget::new(
            (2 * frame_bytes + frame_bytes / 2) as u64,
            64 * 1024,
        );
        let started = Rc::new(std::cell::Cell::new(0));
        let gate = Rc::new(glommio::sync::Semaphore::new(0));
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..2 {
            let (server, client) = duplex(64 * 1024);
            let c = Conn {
                codec: Rc::new(flatbuffers()),
                handler: Rc::new(Gated {
                    started: started.clone(),
                    gate: gate.clone(),
                }),
                limits: limits(),
                shard: 0,
                clock: crate::io::Clock::Real,
                budget: budget.clone(),
            };
            served.push(glommio::spawn_local(serve(c, server)));
            clients.push(split(client));
        }
        // Three requests on the first connection, two on the second (all
        // within each connection's window of 4).
        send_all(&mut clients[0].1, &[(1, "held"), (2, "held"), (3, "held")]).await;
        send_all(&mut clients[1].1, &[(4, "held"), (5, "held")]).await;
        for _ in 0..1_000 {
            if started.get() == 2 && budget.waits() >= 1 {
                break;
            }
            futures_lite::future::yield_now().await;
        }
        for _ in 0..1_000 {
            futures_lite::future::yield_now().await;
        }
        assert_eq!(started.get(), 2, "only what the budget holds is read");
        assert!(budget.waits() >= 1, "a reader waits for the budget");
        assert_eq!(budget.reserved_bytes(), 2 * frame_bytes as u64);
        // Completing requests frees room: every request is read and
        // answered, and the budget is whole again.
        gate.signal(5);
        let mut cids = Vec::new();
        for (r, _) in clients.iter_mut() {
            let n = if cids.is_empty() { 3 } else { 2 };
            for _ in 0..n {
                cids.push(response(r).await.expect("a response").correlation_id);
            }
        }
        cids.sort_unstable();
        assert_eq!(cids, [1, 2, 3, 4, 5]);
        assert_eq!(started.get(), 5);
        assert!(budget.peak_bytes() <= budget.capacity_bytes());
        drop(clients);
        for s in served {
            s.await;
        }
        assert_eq!(budget.reserved_bytes(), 0, "every reservation returned");
    });
}
