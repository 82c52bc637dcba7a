//! Topic administration: create, delete, list, describe, alter config,
//! delete records, list offsets.
//!
//! Invariant: a per-topic error in a metadata answer is returned as
//! `ClientError::Broker`, never as an empty description.

use super::connection::{Connection, ReconnectingConnection};
use super::{ClientConfig, ClientError};
use crate::protocol::messages::{
    AlterTopicConfigRequest, ConfigEntry, CreateTopicRequest, DeleteRecordsRequest,
    DeleteTopicRequest, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
    MetadataRequest, MetadataResponse, OffsetSpec, RequestBody, ResponseBody, TopicInfo,
};
use crate::protocol::Offset;
use crate::protocol::{ErrorCode, WireError};

/// Administrative client over one connection.
pub struct Admin {
    pub(super) conn: ReconnectingConnection,
}

impl Admin {
    pub async fn connect(config: ClientConfig) -> Result<Admin, ClientError> {
        Ok(Admin {
            conn: ReconnectingConnection::connect(&config).await?,
        })
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        let partitions = i32::try_from(partitions)
            .map_err(|_| ClientError::Config(format!("{partitions} partitions is too many")))?;
        let body = RequestBody::CreateTopic(CreateTopicRequest {
            name: name.to_string(),
            partitions,
            configs: configs
                .iter()
                .map(|(k, v)| ConfigEntry {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        });
        match self.conn.get().await?.request(body).await? {
            ResponseBody::CreateTopic(_) => Ok(()),
            other => Err(unexpected("CreateTopic", &other)),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let body = RequestBody::DeleteTopic(DeleteTopicRequest {
            name: name.to_string(),
        });
        match self.conn.get().await?.request(body).await? {
            ResponseBody::DeleteTopic(_) => Ok(()),
            other => Err(unexpected("DeleteTopic", &other)),
        }
    }

    /// Advances `topic`/`partition`'s log start to `before` (records below it
    /// are no longer served) and returns the new log start.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        before: Offset,
    ) -> Result<Offset, ClientError> {
        let body = RequestBody::DeleteRecords(DeleteRecordsRequest {
            topic: topic.to_string(),
            partition,
            before_offset: before,
        });
        match self.conn.get().await?.request(body).await? {
            ResponseBody::DeleteRecords(r) => Ok(r.log_start_offset),
            other => Err(unexpected("DeleteRecords", &other)),
        }
    }

    /// Changes settings of a live topic; returns its full config afterwards.
    pub async fn alter_topic_config(
        &self,
        topic: &str,
        configs: &[(String, String)],
    ) -> Result<Vec<(String, String)>, ClientError> {
        let body = RequestBody::AlterTopicConfig(AlterTopicConfigRequest {
            name: topic.to_string(),
            configs: configs
                .iter()
                .map(|(k, v)| ConfigEntry {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        });
        match self.conn.get().await?.request(body).await? {
            ResponseBody::AlterTopicConfig(r) => {
                Ok(r.configs.into_iter().map(|c| (c.key, c.value)).collect())
            }
            other => Err(unexpected("AlterTopicConfig", &other)),
        }
    }

    /// Every topic name, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>, ClientError> {
        let md = metadata(&*self.conn.get().await?, &[]).await?;
        let mut names: Vec<String> = md.topics.into_iter().map(|t| t.name).collect();
        names.sort();
        Ok(names)
    }

    /// One topic's partitions and config.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        describe(&*self.conn.get().await?, name).await
    }

    /// The raw metadata answer (empty `topics` = every topic).
    pub async fn metadata(&self, topics: &[String]) -> Result<MetadataResponse, ClientError> {
        metadata(&*self.conn.get().await?, topics).await
    }

    /// ListOffsets for `partitions` of `topic`, in the order asked: the log
    /// start (Earliest), the high watermark (Latest), or the first offset
    /// whose record timestamp is >= the one given (the high watermark if
    /// there is none).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[u32],
        spec: OffsetSpec,
    ) -> Result<Vec<Offset>, ClientError> {
        list_offsets(&*self.conn.get().await?, topic, partitions, spec).await
    }
}

/// ListOffsets for `partitions` of `topic` over `conn`, one offset per
/// partition in the order asked (shared by `Admin` and `Consumer`).
pub(crate) async fn list_offsets(
    conn: &Connection,
    topic: &str,
    partitions: &[u32],
    spec: OffsetSpec,
) -> Result<Vec<Offset>, ClientError> {
    let body = RequestBody::ListOffsets(ListOffsetsRequest {
        topics: vec![ListOffsetsTopic {
            name: topic.to_string(),
            partitions: partitions
                .iter()
                .map(|&partition| ListOffsetsPartition { partition, spec })
                .collect(),
        }],
    });
    let resp = match conn.request(body).await? {
        ResponseBody::ListOffsets(r) => r,
        other => return Err(unexpected("ListOffsets", &other)),
    };
    let results: Vec<_> = resp
        .topics
        .into_iter()
        .filter(|t| t.name == topic)
        .flat_map(|t| t.partitions)
        .collect();
    partitions
        .iter()
        .map(|p| {
            let r = results.iter().find(|r| r.partition == *p).ok_or_else(|| {
                ClientError::Protocol(format!(
                    "list offsets response has no result for {topic}/{p}"
                ))
            })?;
            match &r.result {
                Ok((offset, _ts)) => Ok(*offset),
                Err(e) => Err(ClientError::Broker(e.clone())),
            }
        })
        .collect()
}

pub(crate) fn unexpected(wanted: &str, got: &ResponseBody) -> ClientError {
    let kind = match got {
        ResponseBody::ApiVersions(_) => "ApiVersions",
        ResponseBody::CreateTopic(_) => "CreateTopic",
        ResponseBody::DeleteTopic(_) => "DeleteTopic",
        ResponseBody::Metadata(_) => "Metadata",
        ResponseBody::Produce(_) => "Produce",
        ResponseBody::Fetch(_) => "Fetch",
        ResponseBody::ListOffsets(_) => "ListOffsets",
        ResponseBody::DeleteRecords(_) => "DeleteRecords",
        ResponseBody::AlterTopicConfig(_) => "AlterTopicConfig",
        ResponseBody::InitProducerId(_) => "InitProducerId",
        ResponseBody::FindCoordinator(_) => "FindCoordinator",
        ResponseBody::JoinGroup(_) => "JoinGroup",
        ResponseBody::SyncGroup(_) => "SyncGroup",
        ResponseBody::Heartbeat(_) => "Heartbeat",
        ResponseBody::LeaveGroup(_) => "LeaveGroup",
        ResponseBody::OffsetCommit(_) => "OffsetCommit",
        ResponseBody::OffsetFetch(_) => "OffsetFetch",
        ResponseBody::ListGroups(_) => "ListGroups",
        ResponseBody::DescribeGroups(_) => "DescribeGroups",
        ResponseBody::DeleteGroups(_) => "DeleteGroups",
    };
    ClientError::Protocol(format!("expected a {wanted} response, got {kind}"))
}

pub(crate) async fn metadata(
    conn: &Connection,
    topics: &[String],
) -> Result<MetadataResponse, ClientError> {
    let body = RequestBody::Metadata(MetadataRequest {
        topics: topics.to_vec(),
    });
    match conn.request(body).await? {
        ResponseBody::Metadata(m) => Ok(m),
        other => Err(unexpected("Metadata", &other)),
    }
}

/// Describes one topic; an unknown topic is `Broker(UnknownTopicOrPartition)`.
pub(crate) async fn describe(conn: &Connection, name: &str) -> Result<TopicInfo, ClientError> {
    let md = metadata(conn, &[name.to_string()]).await?;
    let topic = md
        .topics
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| {
            ClientError::Broker(WireError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            ))
        })?;
    if let Some(e) = topic.error {
        return Err(ClientError::Broker(e));
    }
    Ok(topic)
}
