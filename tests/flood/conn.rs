//! Connections for tests/flood.rs: a write half plus a reader task that
//! decodes every response and checks the tracked ones against what they
//! must be answered with.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use corelog::net::frame_io::{read_frame, write_frame};
use corelog::net::split::{split, WriteHalf};
use corelog::protocol::codec::{decode_response, DecodeLimits};
use corelog::protocol::messages::*;
use corelog::protocol::ErrorCode;
use futures_lite::AsyncWriteExt;

use crate::common::{try_within, within};

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

/// What a tracked request must be answered with.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// A request-level error with this code.
    Request(ErrorCode),
    /// Every produce partition result is this error.
    Produce(ErrorCode),
    /// Every fetch partition has this error.
    Fetch(ErrorCode),
    /// A fetch without request or partition errors.
    FetchOk,
    /// Any successful response of this API.
    Ok(ApiKey),
}

pub fn api_of(b: &ResponseBody) -> ApiKey {
    match b {
        ResponseBody::ApiVersions(_) => ApiKey::ApiVersions,
        ResponseBody::CreateTopic(_) => ApiKey::CreateTopic,
        ResponseBody::DeleteTopic(_) => ApiKey::DeleteTopic,
        ResponseBody::Metadata(_) => ApiKey::Metadata,
        ResponseBody::Produce(_) => ApiKey::Produce,
        ResponseBody::Fetch(_) => ApiKey::Fetch,
        ResponseBody::ListOffsets(_) => ApiKey::ListOffsets,
        ResponseBody::DeleteRecords(_) => ApiKey::DeleteRecords,
        ResponseBody::AlterTopicConfig(_) => ApiKey::AlterTopicConfig,
        ResponseBody::InitProducerId(_) => ApiKey::InitProducerId,
        ResponseBody::FindCoordinator(_) => ApiKey::FindCoordinator,
        ResponseBody::JoinGroup(_) => ApiKey::JoinGroup,
        ResponseBody::SyncGroup(_) => ApiKey::SyncGroup,
        ResponseBody::Heartbeat(_) => ApiKey::Heartbeat,
        ResponseBody::LeaveGroup(_) => ApiKey::LeaveGroup,
        ResponseBody::OffsetCommit(_) => ApiKey::OffsetCommit,
        ResponseBody::OffsetFetch(_) => ApiKey::OffsetFetch,
        ResponseBody::ListGroups(_) => ApiKey::ListGroups,
        ResponseBody::DescribeGroups(_) => ApiKey::DescribeGroups,
        ResponseBody::DeleteGroups(_) => ApiKey::DeleteGroups,
    }
}

/// Checks a response against its expectation; `Err` describes a mismatch.
pub fn check(expect: Expect, r: &Response) -> Result<(), String> {
    let req_err = r.error.as_ref().map(|e| e.code);
    let ok = match (expect, &r.body) {
        (Expect::Request(code), _) => req_err == Some(code),
        (Expect::Produce(code), Some(ResponseBody::Produce(p))) => {
            req_err.is_none()
                && p.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .all(|x| matches!(&x.result, Err(e) if e.code == code))
        }
        (Expect::Fetch(code), Some(ResponseBody::Fetch(f))) => {
            req_err.is_none()
                && f.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .all(|x| x.error.as_ref().map(|e| e.code) == Some(code))
        }
        (Expect::FetchOk, Some(ResponseBody::Fetch(f))) => {
            req_err.is_none()
                && f.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .all(|x| x.error.is_none())
        }
        (Expect::Ok(api), Some(b)) => req_err.is_none() && api_of(b) == api,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("expected {expect:?}, got {r:?}"))
    }
}

// ------------------------------------------------------------ connections

/// Totals of one round, across all threads.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub frames_sent: u64,
    pub responses: u64,
    pub tracked_checked: u64,
    pub connections: u64,
    pub unknown_topic_produces: u64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Self) {
        self.frames_sent += o.frames_sent;
        self.responses += o.responses;
        self.tracked_checked += o.tracked_checked;
        self.connections += o.connections;
        self.unknown_topic_produces += o.unknown_topic_produces;
    }
}

/// State one connection's reader shares with its writer.
#[derive(Default)]
pub struct Shared {
    pub expect: RefCell<HashMap<u32, Expect>>,
    pub responses: Cell<u64>,
    pub checked: Cell<u64>,
    pub mismatch: RefCell<Option<String>>,
    /// The reader saw EOF or an error.
    pub closed: Cell<bool>,
}

/// One flood connection: the write half and a reader task that decodes
/// every response and checks tracked ones.
pub struct Conn {
    pub w: WriteHalf,
    pub reader: glommio::task::JoinHandle<()>,
    pub shared: Rc<Shared>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let s = within(
            Duration::from_secs(20),
            "connect",
            glommio::net::TcpStream::connect(addr),
        )
        .await
        .expect("connect to the broker");
        let _ = s.set_nodelay(true);
        let (mut r, w) = split(s);
        let shared = Rc::new(Shared::default());
        let sh = shared.clone();
        let reader = glommio::spawn_local(async move {
            while let Ok(Some(frame)) = read_frame(&mut r, 64 << 20).await {
                let resp = match decode_response(&frame, &limits()) {
                    Ok(r) => r,
                    Err(e) => {
                        sh.mismatch
                            .borrow_mut()
                            .get_or_insert(format!("undecodable response: {e}"));
                        continue;
                    }
                };
                sh.responses.set(sh.responses.get() + 1);
                let expect = sh.expect.borrow().get(&resp.correlation_id).copied();
                if let Some(expect) = expect {
                    match check(expect, &resp) {
                        Ok(()) => {
                            sh.expect.borrow_mut().remove(&resp.correlation_id);
                            sh.checked.set(sh.checked.get() + 1);
                        }
                        // A garbage frame can carry any correlation id; its
                        // InvalidRequest answer is not the tracked one.
                        Err(_)
                            if resp
                                .error
                                .as_ref()
                                .is_some_and(|e| e.code == ErrorCode::InvalidRequest)
                                && resp.body.is_none() => {}
                        Err(m) => {
                            sh.mismatch.borrow_mut().get_or_insert(m);
                        }
                    }
                }
            }
            sh.closed.set(true);
        })
        .detach();
        Conn { w, reader, shared }
    }

    /// Sends raw bytes; false if the broker closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        matches!(
            try_within(Duration::from_secs(30), self.w.write_all(bytes)).await,
            Some(Ok(()))
        )
    }

    pub async fn send_frame(&mut self, payload: &[u8]) -> bool {
        matches!(
            try_within(Duration::from_secs(30), write_frame(&mut self.w, payload)).await,
            Some(Ok(()))
        )
    }

    /// Sends a request whose answer is checked.
    pub async fn tracked(&mut self, cid: u32, payload: &[u8], expect: Expect) -> bool {
        self.shared.expect.borrow_mut().insert(cid, expect);
        self.send_frame(payload).await
    }

    /// Closes the write side and waits (bounded) until the broker has
    /// answered everything and closed; then every tracked request must have
    /// been answered as expected.
    pub async fn finish(mut self, totals: &mut Totals, limit: Duration) {
        let _ = try_within(Duration::from_secs(10), self.w.close()).await;
        let done = try_within(limit, &mut self.reader).await;
        assert!(
            done.is_some(),
            "broker did not answer and close a finished connection within {limit:?}"
        );
        self.account(totals);
        let left = self.shared.expect.borrow();
        assert!(
            left.is_empty(),
            "{} tracked requests unanswered, e.g. {:?}",
            left.len(),
            left.iter().next()
        );
    }

    /// Waits (bounded) until every tracked request sent so far is answered.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.shared.expect.borrow().is_empty()
            && Instant::now() < deadline
            && !self.shared.closed.get()
        {
            corelog::timer::sleep_once(Duration::from_millis(2)).await;
        }
        let left = self.shared.expect.borrow();
        assert!(
            left.is_empty(),
            "{} tracked requests unanswered, e.g. {:?}",
            left.len(),
            left.iter().next()
        );
    }

    /// Drops the connection abruptly (after `settle`, nothing tracked is
    /// pending).
    pub fn abandon(self, totals: &mut Totals) {
        self.account(totals);
        self.reader.cancel();
    }

    pub fn account(&self, totals: &mut Totals) {
        totals.responses += self.shared.responses.get();
        totals.tracked_checked += self.shared.checked.get();
        if let Some(m) = self.shared.mismatch.borrow().as_ref() {
            panic!("broker answered wrongly: {m}");
        }
    }
}
