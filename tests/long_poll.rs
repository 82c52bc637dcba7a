//! Long polling: a fetch waiting on an empty partition returns as soon as a
//! record arrives, not when its max wait runs out.

mod common;

use std::time::{Duration, Instant};

use common::{record, run_client, value_str, Broker};
use corelog::client::{Consumer, ConsumerConfig, Producer, SeekTo};

#[test]
fn long_poll_returns_when_data_arrives() {
    let broker = Broker::start();
    let topic = "long-poll";
    broker.create_topic(topic, 1);

    let ccfg = ConsumerConfig {
        max_wait_ms: 20_000,
        ..broker.consumer_config()
    };
    let pcfg = broker.producer_config();
    let (records, elapsed) = run_client(move || async move {
        // Connect both sides first, so the measured poll is only the fetch.
        let producer = Producer::connect(pcfg).await.expect("producer connect");
        let mut consumer = Consumer::connect(ccfg).await.expect("consumer connect");
        consumer
            .assign(topic, &[0], SeekTo::Earliest)
            .await
            .expect("assign");
        let writer = glommio::spawn_local(async move {
            corelog::timer::sleep_once(Duration::from_millis(200)).await;
            let d = producer
                .send(record(topic, Some(0), None, "wake up"))
                .await
                .expect("send");
            d.await.expect("delivery");
            producer.close().await.expect("close");
        });
        let started = Instant::now();
        let records = consumer.poll().await.expect("poll");
        let elapsed = started.elapsed();
        writer.await;
        (records, elapsed)
    });
    assert_eq!(records.len(), 1, "the poll returned the produced record");
    assert_eq!(value_str(&records[0]), "wake up");
    assert_eq!(records[0].offset, 0);
    // Not a latency assertion: the poll must have been woken by the data
    // instead of running out its 20 s max wait.
    assert!(
        elapsed < Duration::from_secs(15),
        "the poll waited {elapsed:?}: it was not woken by the produce"
    );
}

#[test]
fn long_poll_on_an_empty_partition_returns_empty_after_max_wait() {
    let broker = Broker::start();
    let topic = "idle";
    broker.create_topic(topic, 1);
    let ccfg = ConsumerConfig {
        max_wait_ms: 300,
        ..broker.consumer_config()
    };
    let records = run_client(move || async move {
        let mut consumer = Consumer::connect(ccfg).await.expect("consumer connect");
        consumer
            .assign(topic, &[0], SeekTo::Latest)
            .await
            .expect("assign");
        consumer.poll().await.expect("poll")
    });
    assert!(records.is_empty(), "nothing was produced: {records:?}");
}
