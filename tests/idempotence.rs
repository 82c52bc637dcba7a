//! Idempotent produce against the real binary, with hand-built batches over
//! one low-level connection (docs/idempotence.md): InitProducerId hands out
//! ids unique across a restart; a fenced (older epoch) producer and an
//! out-of-order sequence are refused; after SIGKILL and a restart a retry
//! of the last acknowledged batch of each producer is answered as a
//! duplicate with its original offset and not written twice.

mod common;

use bytes::Bytes;
use common::{high_watermarks, run_client, Broker};
use corelog::client::{ClientConfig, ClientError, Connection};
use corelog::protocol::batch::BatchBuilder;
use corelog::protocol::messages::{
    Acks, InitProducerIdRequest, ProducePartition, ProduceRequest, ProduceTopic, ProducerIdentity,
    RequestBody, ResponseBody,
};
use corelog::protocol::ErrorCode;

const TOPIC: &str = "idem";
/// Records per batch.
const N: u32 = 3;

fn batch(p: ProducerIdentity, seq: i32) -> Bytes {
    let mut b = BatchBuilder::new();
    b.set_producer(p.producer_id, p.producer_epoch, seq);
    for i in 0..N {
        let v = format!("{}:{}:{}", p.producer_id, p.producer_epoch, seq + i as i32);
        b.push(1_000, None, Some(v.as_bytes()), &[]);
    }
    b.finish()
}

async fn init(
    conn: &Connection,
    current: Option<ProducerIdentity>,
) -> Result<ProducerIdentity, ClientError> {
    let body = RequestBody::InitProducerId(InitProducerIdRequest { current });
    match conn.request(body).await? {
        ResponseBody::InitProducerId(r) => Ok(r.identity),
        other => panic!("InitProducerId answered {other:?}"),
    }
}

/// Produces one batch to partition 0: its base offset or the error code.
async fn produce(conn: &Connection, b: Bytes) -> Result<u64, ErrorCode> {
    let body = RequestBody::Produce(ProduceRequest {
        acks: Acks::Leader,
        timeout_ms: 30_000,
        topics: vec![ProduceTopic {
            name: TOPIC.into(),
            partitions: vec![ProducePartition {
                partition: 0,
                batch: b,
            }],
        }],
    });
    match conn.request(body).await.expect("produce request") {
        ResponseBody::Produce(r) => r.topics[0].partitions[0].result.clone().map_err(|e| e.code),
        other => panic!("Produce answered {other:?}"),
    }
}

async fn connect(cfg: ClientConfig) -> Connection {
    Connection::connect(&cfg).await.expect("connect")
}

#[test]
fn idempotent_produce_fences_refuses_gaps_and_survives_kill_9() {
    let mut broker = Broker::start();
    broker.create_topic(TOPIC, 1);
    let cfg = broker.client_config();
    let (a, a1, b) = run_client(move || async move {
        let conn = connect(cfg).await;
        let a = init(&conn, None).await.expect("init a");
        let b = init(&conn, None).await.expect("init b");
        assert_ne!(a.producer_id, b.producer_id);
        for i in 0..10 {
            assert_eq!(produce(&conn, batch(a, 3 * i)).await, Ok(3 * i as u64));
        }
        // A retry of an acknowledged batch: its original offset, no write.
        assert_eq!(produce(&conn, batch(a, 27)).await, Ok(27));
        assert_eq!(produce(&conn, batch(a, 24)).await, Ok(24));
        // A gap.
        assert_eq!(
            produce(&conn, batch(a, 40)).await,
            Err(ErrorCode::OutOfOrderSequence)
        );
        // A bumped epoch starts at 0 and fences the old one.
        let a1 = init(&conn, Some(a)).await.expect("bump");
        assert_eq!(
            (a1.producer_id, a1.producer_epoch),
            (a.producer_id, a.producer_epoch + 1)
        );
        assert_eq!(produce(&conn, batch(a1, 0)).await, Ok(30));
        assert_eq!(
            produce(&conn, batch(a, 30)).await,
            Err(ErrorCode::InvalidProducerEpoch)
        );
        let stale = init(&conn, Some(a)).await.expect_err("stale bump");
        assert_eq!(stale.wire_code(), Some(ErrorCode::InvalidProducerEpoch));
        // An unknown producer must start at 0.
        let never = ProducerIdentity {
            producer_id: b.producer_id,
            producer_epoch: 0,
        };
        assert_eq!(
            produce(&conn, batch(never, 3)).await,
            Err(ErrorCode::UnknownProducerId)
        );
        assert_eq!(produce(&conn, batch(b, 0)).await, Ok(33));
        (a, a1, b)
    });

    broker.kill9();
    broker.start_again();
    let cfg = broker.client_config();
    run_client(move || async move {
        let conn = connect(cfg.clone()).await;
        let c = init(&conn, None).await.expect("init after restart");
        assert!(
            ![a.producer_id, b.producer_id].contains(&c.producer_id),
            "{c:?} handed out twice"
        );
        // The last acknowledged batch of each producer is a duplicate.
        assert_eq!(produce(&conn, batch(a1, 0)).await, Ok(30));
        assert_eq!(produce(&conn, batch(b, 0)).await, Ok(33));
        assert_eq!(
            produce(&conn, batch(a, 27)).await,
            Err(ErrorCode::InvalidProducerEpoch),
            "still fenced after the restart"
        );
        assert_eq!(
            high_watermarks(cfg.clone(), TOPIC).await.get(&0),
            Some(&36),
            "nothing written twice"
        );
        assert_eq!(produce(&conn, batch(a1, 3)).await, Ok(36));
        assert_eq!(
            produce(&conn, batch(b, 9)).await,
            Err(ErrorCode::OutOfOrderSequence)
        );
    });
    broker.stop();
}
