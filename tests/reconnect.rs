//! Clients survive the broker closing their idle connections: after
//! `connection_idle_timeout_ms` the broker cuts a Producer's, a Consumer's
//! and an Admin's connection; their next requests reconnect by themselves
//! and succeed, with nothing lost or repeated.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{record, value_str, Broker, BrokerOptions};
use corelog::client::{Admin, Consumer, Producer, SeekTo};

const IDLE_CLOSE_LINE: &str = "closing connection: idle";

#[test]
fn clients_reconnect_after_the_broker_closes_idle_connections() {
    let broker = Broker::start_with(BrokerOptions {
        shards: 1,
        config_toml: Some(
            "[limits]\nconnection_idle_timeout_ms = 300\nframe_read_timeout_ms = 300\n".into(),
        ),
        ..BrokerOptions::default()
    });
    broker.create_topic("idle", 1);
    let before = broker.stderr_since_start().matches(IDLE_CLOSE_LINE).count();

    let (client_cfg, producer_cfg, mut consumer_cfg) = (
        broker.client_config(),
        broker.producer_config(),
        broker.consumer_config(),
    );
    consumer_cfg.max_wait_ms = 100;
    let (round1_done_tx, round1_done_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();

    let clients = glommio::LocalExecutorBuilder::default()
        .name("reconnect-test")
        .spawn(move || async move {
            let admin = Admin::connect(client_cfg).await.expect("admin");
            let producer = Producer::connect(producer_cfg).await.expect("producer");
            let mut consumer = Consumer::connect(consumer_cfg).await.expect("consumer");
            consumer
                .assign("idle", &[0], SeekTo::Earliest)
                .await
                .expect("assign");

            // Round 1 on the first connections.
            let first = producer
                .send(record("idle", Some(0), None, "a"))
                .await
                .expect("send a")
                .await
                .expect("ack a");
            assert_eq!(first.offset, 0);
            let mut got = Vec::new();
            for _ in 0..50 {
                got.extend(consumer.poll().await.expect("poll round 1"));
                if !got.is_empty() {
                    break;
                }
            }
            assert_eq!(got.iter().map(value_str).collect::<Vec<_>>(), ["a"]);
            assert!(admin
                .list_topics()
                .await
                .expect("list")
                .contains(&"idle".to_string()));
            round1_done_tx.send(()).expect("signal round 1");

            // Wait (bounded) while the broker closes the idle connections.
            let mut told = false;
            for _ in 0..6000 {
                if go_rx.try_recv().is_ok() {
                    told = true;
                    break;
                }
                corelog::timer::sleep_once(Duration::from_millis(20)).await;
            }
            assert!(told, "the test thread never said go");

            // Round 2: every client must reconnect by itself.
            let second = producer
                .send(record("idle", Some(0), None, "b"))
                .await
                .expect("send b after the broker closed the connection")
                .await
                .expect("ack b");
            assert_eq!(second.offset, 1, "b follows a: nothing lost or repeated");
            let mut got = Vec::new();
            for _ in 0..50 {
                got.extend(consumer.poll().await.expect("poll after reconnect"));
                if !got.is_empty() {
                    break;
                }
            }
            assert_eq!(got.iter().map(value_str).collect::<Vec<_>>(), ["b"]);
            assert_eq!(got[0].offset, 1);
            let info = admin
                .describe_topic("idle")
                .await
                .expect("describe after reconnect");
            assert_eq!(info.partitions[0].high_watermark, 2);
            producer.close().await.expect("close producer");
        })
        .expect("spawn client executor");

    round1_done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("round 1 finished");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = broker.stderr_since_start();
        let closed = log.matches(IDLE_CLOSE_LINE).count() - before;
        if closed >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broker closed {closed} of 3 idle client connections within 120 s\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    go_tx.send(()).expect("say go");
    clients.join().expect("client executor");
}
