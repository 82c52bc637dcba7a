//! The stored bytes are Kafka's RecordBatch v2 (docs/record-batch.md): a
//! batch produced through the real broker is read back from the segment file
//! in its data dir and checked field by field against Kafka's layout
//! (DefaultRecordBatch), with the records encoded independently here and the
//! CRC32C computed here over [21, end).
//!
//! Bounded: the harness's waits only. No timing assertions.

mod common;

use common::{read_file, run_client, Broker};
use corelog::client::{Producer, ProducerConfig, ProducerRecord};

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Kafka's zigzag varint/varlong (ByteUtils.writeVarlong).
fn varlong(out: &mut Vec<u8>, v: i64) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

/// One record as Kafka's DefaultRecord.writeTo writes it.
fn kafka_record(
    ts_delta: i64,
    offset_delta: i64,
    key: &[u8],
    value: &[u8],
    header: (&str, &[u8]),
) -> Vec<u8> {
    let mut body = vec![0u8]; // attributes
    varlong(&mut body, ts_delta);
    varlong(&mut body, offset_delta);
    varlong(&mut body, key.len() as i64);
    body.extend_from_slice(key);
    varlong(&mut body, value.len() as i64);
    body.extend_from_slice(value);
    varlong(&mut body, 1);
    varlong(&mut body, header.0.len() as i64);
    body.extend_from_slice(header.0.as_bytes());
    varlong(&mut body, header.1.len() as i64);
    body.extend_from_slice(header.1);
    let mut out = Vec::new();
    varlong(&mut out, body.len() as i64);
    out.extend_from_slice(&body);
    out
}

const BASE_TS: i64 = 1_700_000_000_000;
const TS_DELTAS: [i64; 3] = [0, 7, -3];

#[test]
fn stored_segment_starts_with_a_kafka_v2_batch() {
    let mut broker = Broker::start();
    let topic = "layout";
    broker.create_topic(topic, 1);
    let pcfg = ProducerConfig {
        linger_ms: 200,
        ..broker.producer_config()
    };
    let t = topic.to_string();
    let identity = run_client(move || async move {
        let p = Producer::connect(pcfg).await.expect("connect");
        let identity = p.identity().expect("idempotent by default");
        let mut acks = Vec::new();
        for (i, d) in TS_DELTAS.iter().enumerate() {
            let rec = ProducerRecord {
                topic: t.clone(),
                partition: Some(0),
                key: Some(format!("key-{i}").into()),
                value: Some(format!("value-{i}").into()),
                timestamp_ms: Some(BASE_TS + d),
                headers: vec![("h".to_string(), Some(bytes::Bytes::from_static(b"x")))],
            };
            acks.push(p.send(rec).await.expect("send"));
        }
        for a in acks {
            a.await.expect("ack");
        }
        p.close().await.expect("close");
        identity
    });
    broker.stop();

    let seg = common::active_segment(&broker.partition_dir(topic, 0));
    let data = read_file(&seg);
    assert!(data.len() >= 61, "segment holds a batch");
    // baseOffset (i64 BE) and batchLength (i32 BE, bytes after the field).
    assert_eq!(be_i64(&data, 0), 0, "first batch's baseOffset");
    let batch_length = be_i32(&data, 8);
    assert!(batch_length >= 49, "batchLength {batch_length}");
    let total = batch_length as usize + 12;
    assert!(total <= data.len(), "batch of {total} bytes fits the file");
    let b = &data[..total];
    assert!(
        be_i32(b, 12) >= 0,
        "partitionLeaderEpoch stamped by the broker"
    );
    assert_eq!(b[16], 2, "magic");
    let crc = u32::from_be_bytes(b[17..21].try_into().expect("4"));
    assert_eq!(crc, crc32c::crc32c(&b[21..]), "CRC32C (BE) over [21, end)");
    assert_eq!(be_i16(b, 21), 0, "attributes: no codec, CreateTime, plain");
    let count = be_i32(b, 57);
    assert!((1..=3).contains(&count), "records count {count}");
    assert_eq!(be_i32(b, 23), count - 1, "lastOffsetDelta");
    assert_eq!(be_i64(b, 27), BASE_TS, "baseTimestamp");
    let max = TS_DELTAS[..count as usize].iter().max().expect("one");
    assert_eq!(be_i64(b, 35), BASE_TS + max, "maxTimestamp");
    // The producer is idempotent by default: its id and epoch, and the
    // first batch of the partition starts at sequence 0.
    assert_eq!(be_i64(b, 43), identity.producer_id, "producerId");
    assert_eq!(be_i16(b, 51), identity.producer_epoch, "producerEpoch");
    assert_eq!(be_i32(b, 53), 0, "baseSequence");
    let mut expected = Vec::new();
    for (i, d) in TS_DELTAS[..count as usize].iter().enumerate() {
        expected.extend(kafka_record(
            *d,
            i as i64,
            format!("key-{i}").as_bytes(),
            format!("value-{i}").as_bytes(),
            ("h", b"x"),
        ));
    }
    assert_eq!(&b[61..], &expected[..], "records in Kafka's encoding");
}
