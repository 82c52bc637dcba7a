//! The FlatBuffers front end's consumer-group requests: each maps one to one
//! onto a `Service` group call (`service::groups`), whose answers are
//! already the wire's shapes.
//!
//! Owns: routing FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups and
//! DeleteGroups, and the caller facts a join records (client id, host).
//!
//! Invariants: group errors travel inside the response bodies (as Kafka's
//! do), never as a failed request; nothing here is ordered with the
//! connection's other requests (the whole call runs in the returned future).
//!
//! Must not know: frames, sockets, shards, coordinators.

use crate::group::ClientInfo;
use crate::protocol::messages::*;
use crate::service::Service;
use crate::shard::ops::LocalBoxFuture;

/// The response future of a group request, or the request back if it is
/// not one.
// The request goes back by value to the other handler: boxing it would
// allocate for every request that is not a group request.
#[allow(clippy::result_large_err)]
pub fn start(
    service: &Service,
    req: Request,
    peer: &str,
) -> Result<LocalBoxFuture<'static, Response>, Request> {
    let s = service.clone();
    let cid = req.correlation_id;
    let client = ClientInfo {
        client_id: req.client_id.clone().unwrap_or_default(),
        client_host: host_of(peer),
    };
    let ok = move |body| Response::ok(cid, body);
    Ok(match req.body {
        RequestBody::FindCoordinator(r) => Box::pin(async move {
            let addr = s.listen_addr();
            let resp = match s.find_coordinator(&r.key).await {
                Ok(node_id) => FindCoordinatorResponse {
                    error: None,
                    node_id,
                    host: addr.ip().to_string(),
                    port: addr.port(),
                },
                Err(e) => FindCoordinatorResponse {
                    error: Some(e),
                    node_id: -1,
                    host: String::new(),
                    port: 0,
                },
            };
            ok(ResponseBody::FindCoordinator(resp))
        }),
        RequestBody::JoinGroup(r) => {
            Box::pin(async move { ok(ResponseBody::JoinGroup(s.join_group(r, client).await)) })
        }
        RequestBody::SyncGroup(r) => {
            Box::pin(async move { ok(ResponseBody::SyncGroup(s.sync_group(r).await)) })
        }
        RequestBody::Heartbeat(r) => {
            Box::pin(async move { ok(ResponseBody::Heartbeat(s.heartbeat(r).await)) })
        }
        RequestBody::LeaveGroup(r) => {
            Box::pin(async move { ok(ResponseBody::LeaveGroup(s.leave_group(r).await)) })
        }
        RequestBody::OffsetCommit(r) => {
            Box::pin(async move { ok(ResponseBody::OffsetCommit(s.offset_commit(r).await)) })
        }
        RequestBody::OffsetFetch(r) => {
            Box::pin(async move { ok(ResponseBody::OffsetFetch(s.offset_fetch(r).await)) })
        }
        RequestBody::ListGroups(r) => Box::pin(async move {
            ok(ResponseBody::ListGroups(
                s.list_groups(r.states_filter).await,
            ))
        }),
        RequestBody::DescribeGroups(r) => Box::pin(async move {
            ok(ResponseBody::DescribeGroups(
                s.describe_groups(r.groups).await,
            ))
        }),
        RequestBody::DeleteGroups(r) => {
            Box::pin(async move { ok(ResponseBody::DeleteGroups(s.delete_groups(r.groups).await)) })
        }
        body => {
            return Err(Request { body, ..req });
        }
    })
}

/// The host part of `host:port` (the whole string if it has no port).
fn host_of(peer: &str) -> String {
    match peer.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        _ => peer.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_strips_the_port() {
        assert_eq!(super::host_of("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(super::host_of("[::1]:5000"), "::1");
        assert_eq!(super::host_of("memory"), "memory");
    }
}
