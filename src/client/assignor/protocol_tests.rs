//! Tests of the consumer-protocol codec: Kafka's bytes written out by hand
//! from the schemas (so the format is pinned independently of the encoder),
//! round trips, older and newer versions, and hostile input (truncated,
//! negative or oversized lengths and counts, random bytes) as errors.

use bytes::Bytes;

use super::protocol::*;
use crate::protocol::TopicPartition;

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

/// v0 as written by a pre-2.4 Java client: topics ["t0", "t1"], no user data.
const SUB_V0: &[u8] = &[
    0x00, 0x00, // version 0
    0x00, 0x00, 0x00, 0x02, // 2 topics
    0x00, 0x02, b't', b'0', // "t0"
    0x00, 0x02, b't', b'1', // "t1"
    0xff, 0xff, 0xff, 0xff, // user data: null
];

/// v3: topics ["orders"], user data = i32 5 (the cooperative-sticky
/// generation), owned orders/[0, 2], generation 5, rack "r1".
const SUB_V3: &[u8] = &[
    0x00, 0x03, // version 3
    0x00, 0x00, 0x00, 0x01, // 1 topic
    0x00, 0x06, b'o', b'r', b'd', b'e', b'r', b's', // "orders"
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x05, // user data: 4 bytes
    0x00, 0x00, 0x00, 0x01, // owned: 1 topic
    0x00, 0x06, b'o', b'r', b'd', b'e', b'r', b's', // "orders"
    0x00, 0x00, 0x00, 0x02, // 2 partitions
    0x00, 0x00, 0x00, 0x00, // 0
    0x00, 0x00, 0x00, 0x02, // 2
    0x00, 0x00, 0x00, 0x05, // generation 5
    0x00, 0x02, b'r', b'1', // rack "r1"
];

/// v1: topics ["a"], user data empty (not null), owned a/[1].
const SUB_V1: &[u8] = &[
    0x00, 0x01, // version 1
    0x00, 0x00, 0x00, 0x01, // 1 topic
    0x00, 0x01, b'a', // "a"
    0x00, 0x00, 0x00, 0x00, // user data: empty
    0x00, 0x00, 0x00, 0x01, // owned: 1 topic
    0x00, 0x01, b'a', // "a"
    0x00, 0x00, 0x00, 0x01, // 1 partition
    0x00, 0x00, 0x00, 0x01, // 1
];

/// v3 assignment: a/[0, 1], b/[3], no user data.
const ASSIGN_V3: &[u8] = &[
    0x00, 0x03, // version 3
    0x00, 0x00, 0x00, 0x02, // 2 topics
    0x00, 0x01, b'a', // "a"
    0x00, 0x00, 0x00, 0x02, // 2 partitions
    0x00, 0x00, 0x00, 0x00, // 0
    0x00, 0x00, 0x00, 0x01, // 1
    0x00, 0x01, b'b', // "b"
    0x00, 0x00, 0x00, 0x01, // 1 partition
    0x00, 0x00, 0x00, 0x03, // 3
    0xff, 0xff, 0xff, 0xff, // user data: null
];

fn sub_v3() -> Subscription {
    Subscription {
        topics: vec!["orders".into()],
        user_data: Some(Bytes::from_static(&[0, 0, 0, 5])),
        owned_partitions: vec![tp("orders", 0), tp("orders", 2)],
        generation_id: 5,
        rack_id: Some("r1".into()),
    }
}

#[test]
fn decodes_kafka_bytes() {
    assert_eq!(
        decode_subscription(SUB_V0).unwrap(),
        Subscription {
            topics: vec!["t0".into(), "t1".into()],
            ..Subscription::default()
        }
    );
    assert_eq!(decode_subscription(SUB_V3).unwrap(), sub_v3());
    assert_eq!(
        decode_subscription(SUB_V1).unwrap(),
        Subscription {
            topics: vec!["a".into()],
            user_data: Some(Bytes::new()),
            owned_partitions: vec![tp("a", 1)],
            ..Subscription::default()
        }
    );
    assert_eq!(
        decode_assignment(ASSIGN_V3).unwrap(),
        Assignment {
            partitions: vec![tp("a", 0), tp("a", 1), tp("b", 3)],
            user_data: None,
        }
    );
}

#[test]
fn encodes_kafka_bytes() {
    assert_eq!(&encode_subscription(&sub_v3())[..], SUB_V3);
    // Grouped by topic and sorted whatever the input order.
    let assignment = Assignment {
        partitions: vec![tp("b", 3), tp("a", 1), tp("a", 0)],
        user_data: None,
    };
    assert_eq!(&encode_assignment(&assignment)[..], ASSIGN_V3);
}

#[test]
fn round_trips() {
    let subs = [
        Subscription::default(),
        sub_v3(),
        Subscription {
            topics: vec!["x".into(), "y".into()],
            user_data: Some(Bytes::new()),
            owned_partitions: vec![tp("x", 0), tp("x", 7), tp("y", 1)],
            generation_id: i32::MAX,
            rack_id: Some(String::new()),
        },
    ];
    for sub in subs {
        assert_eq!(
            decode_subscription(&encode_subscription(&sub)).unwrap(),
            sub
        );
    }
    let assignments = [
        Assignment::default(),
        Assignment {
            partitions: vec![tp("a", 0), tp("a", 9), tp("b", 1)],
            user_data: Some(Bytes::from_static(b"hello")),
        },
    ];
    for a in assignments {
        assert_eq!(decode_assignment(&encode_assignment(&a)).unwrap(), a);
    }
}

#[test]
fn older_versions_default_newer_fields() {
    let v2 = {
        let mut b = SUB_V3[..SUB_V3.len() - 4].to_vec(); // drop rack
        b[1] = 2;
        b
    };
    let sub = decode_subscription(&v2).unwrap();
    assert_eq!(sub.generation_id, 5);
    assert_eq!(sub.rack_id, None);
    // v0 and v1 have no generation: unknown.
    assert_eq!(decode_subscription(SUB_V1).unwrap().generation_id, -1);
    // Assignment v0 has the same fields as v3.
    let mut v0 = ASSIGN_V3.to_vec();
    v0[1] = 0;
    assert_eq!(decode_assignment(&v0).unwrap().partitions.len(), 3);
}

#[test]
fn newer_versions_read_as_v3_and_ignore_the_rest() {
    let mut v4 = SUB_V3.to_vec();
    v4[1] = 4;
    v4.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x01]);
    assert_eq!(decode_subscription(&v4).unwrap(), sub_v3());
    let mut a = ASSIGN_V3.to_vec();
    a[0] = 0x7f;
    a.extend_from_slice(b"future field");
    assert_eq!(decode_assignment(&a).unwrap().partitions.len(), 3);
}

#[test]
fn empty_assignment_bytes_are_an_empty_assignment() {
    assert_eq!(decode_assignment(&[]).unwrap(), Assignment::default());
    assert!(decode_subscription(&[]).is_err());
}

#[test]
fn every_truncation_is_an_error() {
    for len in 0..SUB_V3.len() {
        assert!(decode_subscription(&SUB_V3[..len]).is_err(), "len {len}");
    }
    for len in 1..ASSIGN_V3.len() {
        assert!(decode_assignment(&ASSIGN_V3[..len]).is_err(), "len {len}");
    }
}

#[test]
fn hostile_input_is_an_error() {
    // Negative version.
    assert!(matches!(
        decode_subscription(&[0xff, 0xfe, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        Err(AssignorError::UnsupportedVersion { version: -2, .. })
    ));
    // Topic count far beyond the buffer: refused before reserving.
    assert!(matches!(
        decode_subscription(&[0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 1, b'a']),
        Err(AssignorError::CountTooLarge { .. })
    ));
    // Null (-1) and negative topic arrays.
    assert!(matches!(
        decode_subscription(&[0, 0, 0xff, 0xff, 0xff, 0xff]),
        Err(AssignorError::InvalidLength { len: -1, .. })
    ));
    assert!(decode_subscription(&[0, 0, 0x80, 0, 0, 0]).is_err());
    // Null topic string.
    assert!(decode_subscription(&[0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    // User data longer than the buffer, and below -1.
    assert!(matches!(
        decode_subscription(&[0, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 1, 2]),
        Err(AssignorError::Truncated { .. })
    ));
    assert!(decode_subscription(&[0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe]).is_err());
    // Invalid UTF-8 topic.
    assert!(matches!(
        decode_subscription(&[0, 0, 0, 0, 0, 1, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Err(AssignorError::InvalidUtf8 { .. })
    ));
    // Partition count beyond the buffer and a negative partition.
    let mut a = vec![0, 3, 0, 0, 0, 1, 0, 1, b'a', 0x10, 0, 0, 0, 0, 0, 0, 1];
    assert!(matches!(
        decode_assignment(&a),
        Err(AssignorError::CountTooLarge { .. })
    ));
    a[9] = 0;
    a[12] = 1; // one partition: -1
    a[13..17].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    a.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // user data: null
    assert!(matches!(
        decode_assignment(&a),
        Err(AssignorError::NegativePartition { partition: -1, .. })
    ));
    // Owned-partition topic count beyond the buffer.
    let mut s = SUB_V1[..13].to_vec(); // up to the owned-partitions count
    s.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    assert!(matches!(
        decode_subscription(&s),
        Err(AssignorError::CountTooLarge { .. })
    ));
}

#[test]
fn random_bytes_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..5_000 {
        let len = rng.gen_range(0..64);
        let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if rng.gen_bool(0.5) && b.len() >= 2 {
            b[0] = 0;
            b[1] = rng.gen_range(0..5);
        }
        let _ = decode_subscription(&b);
        let _ = decode_assignment(&b);
    }
    // Mutations of valid messages.
    for _ in 0..5_000 {
        let mut b = SUB_V3.to_vec();
        let i = rng.gen_range(0..b.len());
        b[i] = rng.gen();
        let _ = decode_subscription(&b);
        let mut a = ASSIGN_V3.to_vec();
        let i = rng.gen_range(0..a.len());
        a[i] = rng.gen();
        let _ = decode_assignment(&a);
    }
}
