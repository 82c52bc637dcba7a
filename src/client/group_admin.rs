//! Consumer-group administration on [`Admin`]: list, describe (members,
//! assignments, committed offsets and lag), delete, and committing offsets
//! for a group with no members (reset-offsets).
//!
//! Invariant: an admin commit uses generation -1 and no member id, which the
//! coordinator accepts only while the group has no members, so offsets are
//! never moved under a running consumer.

use std::collections::BTreeMap;

use super::admin::{unexpected, Admin};
use super::assignor::decode_assignment;
use super::group::{commit_request, commit_with, fetch_committed};
use super::ClientError;
use crate::protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, DescribedGroup, ListGroupsRequest, ListedGroup,
    RequestBody, ResponseBody,
};
use crate::protocol::TopicPartition;

/// One member of a described group, with its assignment decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberInfo {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub partitions: Vec<TopicPartition>,
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<GroupMemberInfo>,
}

impl Admin {
    /// Every group the broker knows.
    pub async fn list_groups(&self) -> Result<Vec<ListedGroup>, ClientError> {
        let req = ListGroupsRequest {
            states_filter: Vec::new(),
        };
        match self
            .conn
            .get()
            .await?
            .request(RequestBody::ListGroups(req))
            .await?
        {
            ResponseBody::ListGroups(r) => match r.error {
                Some(e) => Err(ClientError::Broker(e)),
                None => Ok(r.groups),
            },
            other => Err(unexpected("ListGroups", &other)),
        }
    }

    /// A group's state and members (a group the broker does not know is
    /// described as state "Dead" with no members, as Kafka does).
    pub async fn describe_group(&self, group: &str) -> Result<GroupInfo, ClientError> {
        let req = DescribeGroupsRequest {
            groups: vec![group.to_string()],
        };
        let d: DescribedGroup = match self
            .conn
            .get()
            .await?
            .request(RequestBody::DescribeGroups(req))
            .await?
        {
            ResponseBody::DescribeGroups(r) => {
                r.groups.into_iter().next().ok_or_else(|| {
                    ClientError::Protocol("describe groups answered no group".into())
                })?
            }
            other => return Err(unexpected("DescribeGroups", &other)),
        };
        if let Some(e) = d.error {
            return Err(ClientError::Broker(e));
        }
        let members = d
            .members
            .into_iter()
            .map(|m| GroupMemberInfo {
                partitions: if m.assignment.is_empty() {
                    Vec::new()
                } else {
                    decode_assignment(&m.assignment)
                        .map(|a| a.partitions)
                        .unwrap_or_default()
                },
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
            })
            .collect();
        Ok(GroupInfo {
            group_id: d.group_id,
            state: d.group_state,
            protocol_type: d.protocol_type,
            protocol: d.protocol_data,
            members,
        })
    }

    /// Every committed offset of a group.
    pub async fn group_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, u64>, ClientError> {
        Ok(fetch_committed(&self.conn, group, None)
            .await?
            .into_iter()
            .filter_map(|(tp, o)| o.map(|o| (tp, o)))
            .collect())
    }

    /// Commits offsets for a group with no members (refused while it has
    /// some: UnknownMemberId).
    pub async fn commit_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<(), ClientError> {
        let req = commit_request(group, "", -1, None, offsets);
        commit_with(&self.conn, req).await
    }

    /// Deletes a group and its offsets (refused while it has members).
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let req = DeleteGroupsRequest {
            groups: vec![group.to_string()],
        };
        match self
            .conn
            .get()
            .await?
            .request(RequestBody::DeleteGroups(req))
            .await?
        {
            ResponseBody::DeleteGroups(r) => match r.results.into_iter().find_map(|g| g.error) {
                Some(e) => Err(ClientError::Broker(e)),
                None => Ok(()),
            },
            other => Err(unexpected("DeleteGroups", &other)),
        }
    }
}
