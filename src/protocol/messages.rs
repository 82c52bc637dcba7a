//! Typed requests and responses: the Rust face of flatbuffers/corelog.fbs.
//!
//! Server handlers and the client speak these types; `protocol::codec` maps
//! them to and from FlatBuffers. Record batches are `Bytes` that point into the
//! received frame (decode copies no record data) and are copied once into the
//! FlatBuffer builder on encode, never re-encoded per record.

use bytes::Bytes;

use super::error::{ErrorCode, WireError};
use super::ids::{CorrelationId, NodeId, Offset, PartitionId, ShardId};
use super::records::Records;

/// Protocol version this build speaks for every API.
pub const PROTOCOL_VERSION: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Answered as soon as the request is parsed; nothing is promised.
    None,
    /// Answered once the leader has it as its topic's flush policy says.
    Leader,
    /// Answered once every in-sync replica has it (single node: as `Leader`).
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub key: String,
    pub value: String,
}

// ------------------------------------------------------------------ requests

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub correlation_id: CorrelationId,
    pub api_version: u16,
    pub client_id: Option<String>,
    pub body: RequestBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    ApiVersions(ApiVersionsRequest),
    CreateTopic(CreateTopicRequest),
    DeleteTopic(DeleteTopicRequest),
    Metadata(MetadataRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    DeleteRecords(DeleteRecordsRequest),
    AlterTopicConfig(AlterTopicConfigRequest),
    InitProducerId(InitProducerIdRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    ListGroups(ListGroupsRequest),
    DescribeGroups(DescribeGroupsRequest),
    DeleteGroups(DeleteGroupsRequest),
}

/// A producer's identity for idempotent produce: an id unique across broker
/// restarts and an epoch that fences older instances using the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// Asks for a producer id. `current: None` asks for a new id (epoch 0);
/// `Some(identity)` asks for the same id with its epoch bumped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InitProducerIdRequest {
    pub current: Option<ProducerIdentity>,
}

/// Advance one partition's log start to `before_offset` (durably).
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteRecordsRequest {
    pub topic: String,
    pub partition: PartitionId,
    pub before_offset: Offset,
}

/// Change settings of a live topic (`key=value`, as in CreateTopic).
#[derive(Debug, Clone, PartialEq)]
pub struct AlterTopicConfigRequest {
    pub name: String,
    pub configs: Vec<ConfigEntry>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiVersionsRequest {
    pub client_software: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateTopicRequest {
    pub name: String,
    pub partitions: i32,
    pub configs: Vec<ConfigEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeleteTopicRequest {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetadataRequest {
    /// Empty asks for every topic.
    pub topics: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProduceRequest {
    pub acks: Acks,
    pub timeout_ms: u32,
    pub topics: Vec<ProduceTopic>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProduceTopic {
    pub name: String,
    pub partitions: Vec<ProducePartition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProducePartition {
    pub partition: PartitionId,
    /// One record batch (docs/record-batch.md), as received.
    pub batch: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FetchRequest {
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    pub max_bytes: u32,
    pub topics: Vec<FetchTopic>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FetchTopic {
    pub name: String,
    pub partitions: Vec<FetchPartition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FetchPartition {
    pub partition: PartitionId,
    pub fetch_offset: Offset,
    pub max_bytes: u32,
}

/// What ListOffsets asks for in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// Log start offset (wire sentinel -2).
    Earliest,
    /// Log end visible to consumers, i.e. the high watermark (wire sentinel -1).
    Latest,
    /// First offset whose record timestamp is >= this many ms since the epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    pub fn to_wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ms) => ms,
        }
    }

    /// Negative values other than -1/-2 are invalid.
    pub fn from_wire(v: i64) -> Option<Self> {
        match v {
            -2 => Some(OffsetSpec::Earliest),
            -1 => Some(OffsetSpec::Latest),
            ms if ms >= 0 => Some(OffsetSpec::Timestamp(ms)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListOffsetsRequest {
    pub topics: Vec<ListOffsetsTopic>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListOffsetsTopic {
    pub name: String,
    pub partitions: Vec<ListOffsetsPartition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListOffsetsPartition {
    pub partition: PartitionId,
    pub spec: OffsetSpec,
}

// ------------------------------------------------------------ consumer groups
//
// Kafka's group APIs field for field (docs/consumer-groups.md). Member
// metadata and assignments are opaque `Bytes` (the client's protocol, e.g.
// Kafka's ConsumerProtocol); decoded ones are slices of the frame.

/// Which broker coordinates `key` (a group id when `key_type` is
/// [`FindCoordinatorRequest::KEY_TYPE_GROUP`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FindCoordinatorRequest {
    pub key: String,
    pub key_type: i8,
}

impl FindCoordinatorRequest {
    /// `key_type` of a consumer group id.
    pub const KEY_TYPE_GROUP: i8 = 0;
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinGroupRequest {
    pub group_id: String,
    pub session_timeout_ms: i32,
    /// -1 (the wire default) when the client gave none.
    pub rebalance_timeout_ms: i32,
    /// Empty for a new member.
    pub member_id: String,
    /// Set for a static member.
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<JoinGroupProtocol>,
    pub reason: Option<String>,
}

/// One assignment protocol a joining member supports, with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinGroupProtocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncGroupRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Every member's assignment from the leader; empty from the others.
    pub assignments: Vec<SyncGroupAssignment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncGroupAssignment {
    pub member_id: String,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LeaveGroupRequest {
    pub group_id: String,
    pub members: Vec<LeaveGroupMember>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LeaveGroupMember {
    /// May be empty for a static member named by `group_instance_id`.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub reason: Option<String>,
}

/// Commits offsets for a group. `generation_id` -1 with an empty
/// `member_id` is an admin/standalone commit, accepted only while the group
/// has no members.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsetCommitRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub topics: Vec<OffsetCommitTopic>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OffsetCommitTopic {
    pub name: String,
    pub partitions: Vec<OffsetCommitPartition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OffsetCommitPartition {
    pub partition: PartitionId,
    /// The next offset the group will consume.
    pub offset: Offset,
    /// Leader epoch of the last consumed record, if known (wire -1 = None).
    pub leader_epoch: Option<i32>,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OffsetFetchRequest {
    pub group_id: String,
    /// `None` asks for every partition the group has an offset for.
    pub topics: Option<Vec<OffsetFetchTopic>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OffsetFetchTopic {
    pub name: String,
    pub partitions: Vec<PartitionId>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListGroupsRequest {
    /// Empty lists groups in every state.
    pub states_filter: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DescribeGroupsRequest {
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeleteGroupsRequest {
    pub groups: Vec<String>,
}

// ------------------------------------------------------------------ responses

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub correlation_id: CorrelationId,
    /// Request-level outcome. When it is an error, `body` is `None`.
    pub error: Option<WireError>,
    pub body: Option<ResponseBody>,
}

impl Response {
    pub fn ok(correlation_id: CorrelationId, body: ResponseBody) -> Self {
        Self {
            correlation_id,
            error: None,
            body: Some(body),
        }
    }

    pub fn error(
        correlation_id: CorrelationId,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        Self {
            correlation_id,
            error: Some(WireError::new(code, message)),
            body: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseBody {
    ApiVersions(ApiVersionsResponse),
    CreateTopic(CreateTopicResponse),
    DeleteTopic(DeleteTopicResponse),
    Metadata(MetadataResponse),
    Produce(ProduceResponse),
    Fetch(FetchResponse),
    ListOffsets(ListOffsetsResponse),
    DeleteRecords(DeleteRecordsResponse),
    AlterTopicConfig(AlterTopicConfigResponse),
    InitProducerId(InitProducerIdResponse),
    FindCoordinator(FindCoordinatorResponse),
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    LeaveGroup(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    OffsetFetch(OffsetFetchResponse),
    ListGroups(ListGroupsResponse),
    DescribeGroups(DescribeGroupsResponse),
    DeleteGroups(DeleteGroupsResponse),
}

#[derive(Debug, Clone, PartialEq)]
pub struct InitProducerIdResponse {
    pub identity: ProducerIdentity,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeleteRecordsResponse {
    pub topic: String,
    pub partition: PartitionId,
    /// The partition's log start after the request.
    pub log_start_offset: Offset,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlterTopicConfigResponse {
    pub name: String,
    /// The topic's full configuration after the change.
    pub configs: Vec<ConfigEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKey {
    ApiVersions,
    CreateTopic,
    DeleteTopic,
    Metadata,
    Produce,
    Fetch,
    ListOffsets,
    DeleteRecords,
    AlterTopicConfig,
    InitProducerId,
    FindCoordinator,
    JoinGroup,
    SyncGroup,
    Heartbeat,
    LeaveGroup,
    OffsetCommit,
    OffsetFetch,
    ListGroups,
    DescribeGroups,
    DeleteGroups,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionRange {
    pub api: ApiKey,
    pub min_version: u16,
    pub max_version: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiVersionsResponse {
    pub apis: Vec<ApiVersionRange>,
    pub broker_software: String,
    pub node_id: NodeId,
    pub shard_count: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateTopicResponse {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeleteTopicResponse {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerInfo {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionInfo {
    pub partition: PartitionId,
    pub leader_node: NodeId,
    pub leader_shard: ShardId,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
    pub high_watermark: Offset,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    pub name: String,
    /// Set when this topic could not be described (e.g. unknown).
    pub error: Option<WireError>,
    pub partitions: Vec<PartitionInfo>,
    pub configs: Vec<ConfigEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetadataResponse {
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProduceResponse {
    pub topics: Vec<ProduceTopicResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProduceTopicResult {
    pub name: String,
    pub partitions: Vec<ProducePartitionResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProducePartitionResult {
    pub partition: PartitionId,
    /// `Ok(base_offset)` of the appended batch, or why it was refused.
    pub result: Result<Offset, WireError>,
    pub log_start_offset: Option<Offset>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FetchResponse {
    pub topics: Vec<FetchTopicResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FetchTopicResult {
    pub name: String,
    pub partitions: Vec<FetchPartitionResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FetchPartitionResult {
    pub partition: PartitionId,
    pub error: Option<WireError>,
    pub high_watermark: Option<Offset>,
    pub log_start_offset: Option<Offset>,
    pub log_end_offset: Option<Offset>,
    /// Whole batches back to back, as stored (may be empty), as the pieces
    /// the partition served them in (a decoded response has one piece).
    pub records: Records,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListOffsetsResponse {
    pub topics: Vec<ListOffsetsTopicResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListOffsetsTopicResult {
    pub name: String,
    pub partitions: Vec<ListOffsetsPartitionResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListOffsetsPartitionResult {
    pub partition: PartitionId,
    /// `Ok((offset, timestamp_ms))`; timestamp is -1 when not a timestamp lookup
    /// or when no record is at or after the timestamp (offset is then the end).
    pub result: Result<(Offset, i64), WireError>,
}

// ------------------------------------------------- consumer group responses

#[derive(Debug, Clone, PartialEq)]
pub struct FindCoordinatorResponse {
    pub error: Option<WireError>,
    /// -1 when there is no coordinator (an error).
    pub node_id: NodeId,
    pub host: String,
    /// 0 when there is no coordinator (wire -1).
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinGroupResponse {
    pub error: Option<WireError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<JoinGroupMember>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinGroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncGroupResponse {
    pub error: Option<WireError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// This member's assignment.
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeartbeatResponse {
    pub error: Option<WireError>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LeaveGroupResponse {
    pub error: Option<WireError>,
    pub members: Vec<LeaveGroupMemberResult>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LeaveGroupMemberResult {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error: Option<WireError>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct OffsetCommitResponse {
    pub topics: Vec<OffsetCommitTopicResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OffsetCommitTopicResult {
    pub name: String,
    pub partitions: Vec<OffsetCommitPartitionResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OffsetCommitPartitionResult {
    pub partition: PartitionId,
    pub error: Option<WireError>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct OffsetFetchResponse {
    pub error: Option<WireError>,
    pub topics: Vec<OffsetFetchTopicResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OffsetFetchTopicResult {
    pub name: String,
    pub partitions: Vec<OffsetFetchPartitionResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OffsetFetchPartitionResult {
    pub partition: PartitionId,
    /// `None` when the group has no offset for the partition (wire -1).
    pub offset: Option<Offset>,
    pub leader_epoch: Option<i32>,
    pub metadata: Option<String>,
    pub error: Option<WireError>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListGroupsResponse {
    pub error: Option<WireError>,
    pub groups: Vec<ListedGroup>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub group_state: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DescribeGroupsResponse {
    pub groups: Vec<DescribedGroup>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DescribedGroup {
    /// Set when this group could not be described.
    pub error: Option<WireError>,
    pub group_id: String,
    pub group_state: String,
    pub protocol_type: String,
    /// The chosen assignment protocol's name.
    pub protocol_data: String,
    pub members: Vec<DescribedGroupMember>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DescribedGroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeleteGroupsResponse {
    pub results: Vec<DeletableGroupResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeletableGroupResult {
    pub group_id: String,
    pub error: Option<WireError>,
}
