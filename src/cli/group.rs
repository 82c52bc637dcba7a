//! `corelog group list|describe|reset-offsets|delete`: consumer-group
//! administration over `Admin` (`client::group_admin`).
//!
//! Invariants:
//! - `describe` lists every partition the group has a committed offset for
//!   or a member is assigned, each with its committed offset, the high
//!   watermark (the log end a consumer can read to) and the lag, high
//!   watermark minus committed offset (absent when either is unknown);
//!   `--format json` prints exactly {"group","state","protocol_type",
//!   "protocol","members":[{"member_id","group_instance_id","client_id",
//!   "client_host","partitions":[{"topic","partition"}]}],"partitions":
//!   [{"topic","partition","committed_offset","high_watermark","lag",
//!   "member_id"}]}.
//! - `reset-offsets` changes nothing without `--execute`; with it, it
//!   commits only while the group has no members (checked here for a clear
//!   message, and by the coordinator, which refuses an admin commit to a
//!   group with members). Every new offset lies in [log start, high
//!   watermark].
//! - `delete` is refused while the group has members.
//! - A group call the coordinator answers with "loading" or "not available"
//!   (after a restart, or just after `__consumer_offsets` was created) is
//!   tried again for at most 10 s before it is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{CliError, CliResult, Format};
use crate::client::{Admin, ClientConfig, ClientError, GroupInfo};
use crate::protocol::messages::{OffsetSpec, TopicInfo};
use crate::protocol::{ErrorCode, TopicPartition};

/// How long a group call is retried while the coordinator is not ready
/// (loading its state after a restart, or its internal topic just made).
const NOT_READY_RETRY: Duration = Duration::from_secs(10);
const NOT_READY_BACKOFF: Duration = Duration::from_millis(200);

/// `call()`, tried again (bounded) while the coordinator answers that it is
/// loading or not available yet.
async fn ready<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + NOT_READY_RETRY;
    loop {
        match call().await {
            Err(e)
                if matches!(
                    e.wire_code(),
                    Some(
                        ErrorCode::CoordinatorLoadInProgress
                            | ErrorCode::CoordinatorNotAvailable
                            | ErrorCode::NotCoordinator
                    )
                ) && Instant::now() < deadline =>
            {
                crate::timer::sleep_once(NOT_READY_BACKOFF).await;
            }
            r => return r,
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct GroupArgs {
    #[command(flatten)]
    pub(crate) client: super::ClientArgs,
    #[command(subcommand)]
    pub(crate) command: GroupCommand,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum GroupCommand {
    /// List consumer groups with their state.
    List {
        /// Output format: text (a group id and its state per line) or json.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show a group's state, members and their partitions, and per
    /// partition the committed offset, high watermark and lag.
    Describe {
        /// Group id.
        group: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Move a group's committed offsets for one topic. Prints the plan and
    /// changes nothing unless --execute is given; refused while the group
    /// has members. New offsets are kept within [log start, high watermark].
    ResetOffsets {
        /// Group id.
        group: String,
        /// The topic whose partitions' offsets are reset (every partition).
        #[arg(long, value_name = "TOPIC")]
        topic: String,
        #[command(flatten)]
        to: ResetTo,
        /// Commit the new offsets (without it: a dry run).
        #[arg(long)]
        execute: bool,
        /// Output format of the plan.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Delete a group and its committed offsets (refused while it has members).
    Delete {
        /// Group id.
        group: String,
    },
}

/// Where reset-offsets moves each partition (exactly one).
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub(crate) struct ResetTo {
    /// To the log start.
    #[arg(long)]
    to_earliest: bool,
    /// To the high watermark (skip everything not consumed yet).
    #[arg(long)]
    to_latest: bool,
    /// To this offset, in every partition of the topic.
    #[arg(long, value_name = "OFFSET", value_parser = super::offset_parser())]
    to_offset: Option<u64>,
    /// To the first record with timestamp >= MS (ms since the epoch); the
    /// high watermark where there is none.
    #[arg(long, value_name = "MS")]
    to_timestamp: Option<i64>,
    /// By N records from the committed offset (negative: back).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
}

pub(crate) async fn run(client: ClientConfig, cmd: GroupCommand) -> CliResult {
    if let GroupCommand::ResetOffsets {
        to: ResetTo {
            to_timestamp: Some(ms),
            ..
        },
        ..
    } = &cmd
    {
        if *ms < 0 {
            return Err(CliError::Message(format!(
                "--to-timestamp {ms} is negative"
            )));
        }
    }
    let admin = Admin::connect(client).await?;
    match cmd {
        GroupCommand::List { format } => {
            let groups = ready(|| admin.list_groups()).await?;
            match format {
                Format::Text => {
                    for g in groups {
                        println!("{}\t{}", g.group_id, g.group_state);
                    }
                }
                Format::Json => {
                    let v: Vec<_> = groups
                        .iter()
                        .map(|g| {
                            json!({
                                "group": g.group_id,
                                "state": g.group_state,
                                "protocol_type": g.protocol_type,
                            })
                        })
                        .collect();
                    println!("{}", json!(v));
                }
            }
        }
        GroupCommand::Describe { group, format } => {
            let d = describe(&admin, &group).await?;
            match format {
                Format::Json => println!("{}", describe_json(&d)),
                Format::Text => print!("{}", describe_text(&d)),
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to,
            execute,
            format,
        } => reset_offsets(&admin, &group, &topic, &to, execute, format).await?,
        GroupCommand::Delete { group } => {
            refuse_if_members(&ready(|| admin.describe_group(&group)).await?)?;
            ready(|| admin.delete_group(&group)).await?;
            eprintln!("deleted group {group}");
        }
    }
    Ok(())
}

/// One partition of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionLag {
    tp: TopicPartition,
    committed: Option<u64>,
    /// `None`: the topic is gone (or could not be described).
    high_watermark: Option<u64>,
    member: Option<String>,
}

impl PartitionLag {
    fn lag(&self) -> Option<u64> {
        Some(self.high_watermark?.saturating_sub(self.committed?))
    }
}

#[derive(Debug, Clone)]
struct Described {
    info: GroupInfo,
    partitions: Vec<PartitionLag>,
}

async fn describe(admin: &Admin, group: &str) -> Result<Described, CliError> {
    let info = ready(|| admin.describe_group(group)).await?;
    let committed = ready(|| admin.group_offsets(group)).await?;
    let mut owner: BTreeMap<TopicPartition, String> = BTreeMap::new();
    for m in &info.members {
        for tp in &m.partitions {
            owner.insert(tp.clone(), m.member_id.clone());
        }
    }
    let all: BTreeSet<TopicPartition> = committed.keys().chain(owner.keys()).cloned().collect();
    let topics: BTreeSet<&str> = all.iter().map(|tp| tp.topic.as_str()).collect();
    let mut hws: BTreeMap<TopicPartition, u64> = BTreeMap::new();
    for t in topics {
        // A topic deleted since its offsets were committed has no high
        // watermark: shown as unknown, not an error.
        if let Ok(ti) = admin.describe_topic(t).await {
            for p in ti.partitions {
                hws.insert(TopicPartition::new(t, p.partition), p.high_watermark);
            }
        }
    }
    let partitions = all
        .into_iter()
        .map(|tp| PartitionLag {
            committed: committed.get(&tp).copied(),
            high_watermark: hws.get(&tp).copied(),
            member: owner.get(&tp).cloned(),
            tp,
        })
        .collect();
    Ok(Described { info, partitions })
}

fn describe_json(d: &Described) -> serde_json::Value {
    let members: Vec<_> = d
        .info
        .members
        .iter()
        .map(|m| {
            let parts: Vec<_> = m
                .partitions
                .iter()
                .map(|tp| json!({"topic": tp.topic, "partition": tp.partition}))
                .collect();
            json!({
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "partitions": parts,
            })
        })
        .collect();
    let partitions: Vec<_> = d
        .partitions
        .iter()
        .map(|p| {
            json!({
                "topic": p.tp.topic,
                "partition": p.tp.partition,
                "committed_offset": p.committed,
                "high_watermark": p.high_watermark,
                "lag": p.lag(),
                "member_id": p.member,
            })
        })
        .collect();
    json!({
        "group": d.info.group_id,
        "state": d.info.state,
        "protocol_type": d.info.protocol_type,
        "protocol": d.info.protocol,
        "members": members,
        "partitions": partitions,
    })
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn describe_text(d: &Described) -> String {
    let i = &d.info;
    let protocol = match (i.protocol_type.as_str(), i.protocol.as_str()) {
        ("", "") => "-".to_string(),
        (t, "") => t.to_string(),
        (t, p) => format!("{t}/{p}"),
    };
    let mut s = format!(
        "group: {}\nstate: {}\nprotocol: {protocol}\nmembers: {}\n",
        i.group_id,
        i.state,
        i.members.len()
    );
    for m in &i.members {
        let parts: Vec<String> = m.partitions.iter().map(|tp| tp.to_string()).collect();
        s.push_str(&format!(
            "member {}: client_id={} host={} instance_id={} partitions={}\n",
            m.member_id,
            m.client_id,
            m.client_host,
            m.group_instance_id.as_deref().unwrap_or("-"),
            if parts.is_empty() {
                "-".to_string()
            } else {
                parts.join(",")
            }
        ));
    }
    for p in &d.partitions {
        s.push_str(&format!(
            "partition {}: committed_offset={} high_watermark={} lag={} member={}\n",
            p.tp,
            or_dash(p.committed),
            or_dash(p.high_watermark),
            or_dash(p.lag()),
            p.member.as_deref().unwrap_or("-"),
        ));
    }
    s
}

/// An error if the group has members (offsets and the group itself may
/// only change while nobody consumes).
fn refuse_if_members(info: &GroupInfo) -> CliResult {
    if info.members.is_empty() {
        return Ok(());
    }
    Err(CliError::Message(format!(
        "group {} has {}; stop them first",
        info.group_id,
        super::plural(info.members.len() as u64, "active member"),
    )))
}

/// One partition's move.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Move {
    partition: u32,
    current: Option<u64>,
    new: u64,
}

/// The new offset of each partition of `topic` (`info`), clamped to
/// [log start, high watermark]; `by_spec` holds ListOffsets answers for
/// --to-timestamp. Notes about clamped offsets go to `notes`.
fn plan(
    info: &TopicInfo,
    committed: &BTreeMap<TopicPartition, u64>,
    to: &ResetTo,
    by_spec: &[u64],
    notes: &mut Vec<String>,
) -> Result<Vec<Move>, CliError> {
    let mut out = Vec::with_capacity(info.partitions.len());
    for (i, p) in info.partitions.iter().enumerate() {
        let tp = TopicPartition::new(info.name.as_str(), p.partition);
        let current = committed.get(&tp).copied();
        let (start, hw) = (p.log_start_offset, p.high_watermark);
        let wanted: i128 = if to.to_earliest {
            i128::from(start)
        } else if to.to_latest {
            i128::from(hw)
        } else if let Some(o) = to.to_offset {
            i128::from(o)
        } else if to.to_timestamp.is_some() {
            i128::from(by_spec.get(i).copied().unwrap_or(hw))
        } else if let Some(n) = to.shift_by {
            let Some(c) = current else {
                return Err(CliError::Message(format!(
                    "cannot shift {tp}: the group has no committed offset for it \
                     (use --to-earliest, --to-latest or --to-offset)"
                )));
            };
            i128::from(c) + i128::from(n)
        } else {
            return Err(CliError::Message(
                "say where to: --to-earliest, --to-latest, --to-offset, --to-timestamp or --shift-by"
                    .into(),
            ));
        };
        let new = if wanted < i128::from(start) {
            notes.push(format!(
                "{tp}: {wanted} is below the log start {start}; using {start}"
            ));
            start
        } else if wanted > i128::from(hw) {
            notes.push(format!(
                "{tp}: {wanted} is past the high watermark {hw}; using {hw}"
            ));
            hw
        } else {
            wanted as u64
        };
        out.push(Move {
            partition: p.partition,
            current,
            new,
        });
    }
    Ok(out)
}

fn plan_text(moves: &[Move]) -> String {
    let rows: Vec<[String; 3]> = moves
        .iter()
        .map(|m| {
            [
                m.partition.to_string(),
                or_dash(m.current),
                m.new.to_string(),
            ]
        })
        .collect();
    let head = ["PARTITION", "CURRENT", "NEW"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    let mut s = format!("{:<w0$}  {:<w1$}  {}\n", head[0], head[1], head[2]);
    for r in &rows {
        s.push_str(&format!("{:<w0$}  {:<w1$}  {}\n", r[0], r[1], r[2]));
    }
    s
}

async fn reset_offsets(
    admin: &Admin,
    group: &str,
    topic: &str,
    to: &ResetTo,
    execute: bool,
    format: Format,
) -> CliResult {
    let info = admin.describe_topic(topic).await?;
    if execute {
        refuse_if_members(&ready(|| admin.describe_group(group)).await?)?;
    }
    let committed = ready(|| admin.group_offsets(group)).await?;
    let by_spec = match to.to_timestamp {
        Some(ms) => {
            let partitions: Vec<u32> = info.partitions.iter().map(|p| p.partition).collect();
            admin
                .list_offsets(topic, &partitions, OffsetSpec::Timestamp(ms))
                .await?
        }
        None => Vec::new(),
    };
    let mut notes = Vec::new();
    let moves = plan(&info, &committed, to, &by_spec, &mut notes)?;
    for n in &notes {
        eprintln!("note: {n}");
    }
    match format {
        Format::Text => print!("{}", plan_text(&moves)),
        Format::Json => {
            let parts: Vec<_> = moves
                .iter()
                .map(|m| {
                    json!({
                        "partition": m.partition,
                        "current_offset": m.current,
                        "new_offset": m.new,
                    })
                })
                .collect();
            println!(
                "{}",
                json!({"group": group, "topic": topic, "partitions": parts})
            );
        }
    }
    if !execute {
        eprintln!("dry run: nothing changed (add --execute)");
        return Ok(());
    }
    let offsets: Vec<(TopicPartition, u64)> = moves
        .iter()
        .map(|m| (TopicPartition::new(topic, m.partition), m.new))
        .collect();
    ready(|| admin.commit_group_offsets(group, &offsets)).await?;
    eprintln!(
        "group {group}: offsets of {} of {topic} reset",
        super::plural(moves.len() as u64, "partition")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::GroupMemberInfo;
    use crate::protocol::messages::PartitionInfo;

    fn topic(parts: &[(u64, u64)]) -> TopicInfo {
        TopicInfo {
            name: "t".into(),
            error: None,
            partitions: parts
                .iter()
                .enumerate()
                .map(|(i, &(start, hw))| PartitionInfo {
                    partition: i as u32,
                    leader_node: 0,
                    leader_shard: 0,
                    log_start_offset: start,
                    log_end_offset: hw,
                    high_watermark: hw,
                })
                .collect(),
            configs: vec![],
        }
    }

    fn to() -> ResetTo {
        ResetTo {
            to_earliest: false,
            to_latest: false,
            to_offset: None,
            to_timestamp: None,
            shift_by: None,
        }
    }

    #[test]
    fn plans_are_clamped_to_the_log() {
        let info = topic(&[(2, 10), (0, 4)]);
        let committed: BTreeMap<TopicPartition, u64> = [
            (TopicPartition::new("t", 0), 3),
            (TopicPartition::new("t", 1), 4),
        ]
        .into();
        let mut notes = Vec::new();
        let shift = ResetTo {
            shift_by: Some(-2),
            ..to()
        };
        let m = plan(&info, &committed, &shift, &[], &mut notes).expect("plan");
        assert_eq!(
            m.iter().map(|m| (m.current, m.new)).collect::<Vec<_>>(),
            vec![(Some(3), 2), (Some(4), 2)],
            "3-2 = 1 is below the log start 2"
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        let far = ResetTo {
            to_offset: Some(7),
            ..to()
        };
        let m = plan(&info, &committed, &far, &[], &mut notes).expect("plan");
        assert_eq!(m.iter().map(|m| m.new).collect::<Vec<_>>(), vec![7, 4]);
        let earliest = ResetTo {
            to_earliest: true,
            ..to()
        };
        let m = plan(&info, &BTreeMap::new(), &earliest, &[], &mut notes).expect("plan");
        assert_eq!(m.iter().map(|m| m.new).collect::<Vec<_>>(), vec![2, 0]);
        assert_eq!(m[0].current, None);
        let ts = ResetTo {
            to_timestamp: Some(5),
            ..to()
        };
        let m = plan(&info, &committed, &ts, &[6, 4], &mut notes).expect("plan");
        assert_eq!(m.iter().map(|m| m.new).collect::<Vec<_>>(), vec![6, 4]);
        // Shifting a partition without a committed offset is refused.
        assert!(plan(&info, &BTreeMap::new(), &shift, &[], &mut notes).is_err());
        let text = plan_text(&m);
        assert_eq!(
            text,
            "PARTITION  CURRENT  NEW\n0          3        6\n1          4        4\n"
        );
    }

    #[test]
    fn describe_shapes() {
        let d = Described {
            info: GroupInfo {
                group_id: "g".into(),
                state: "Stable".into(),
                protocol_type: "consumer".into(),
                protocol: "range".into(),
                members: vec![GroupMemberInfo {
                    member_id: "m1".into(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "127.0.0.1".into(),
                    partitions: vec![TopicPartition::new("t", 0)],
                }],
            },
            partitions: vec![
                PartitionLag {
                    tp: TopicPartition::new("t", 0),
                    committed: Some(3),
                    high_watermark: Some(5),
                    member: Some("m1".into()),
                },
                PartitionLag {
                    tp: TopicPartition::new("t", 1),
                    committed: None,
                    high_watermark: Some(5),
                    member: None,
                },
            ],
        };
        let v = describe_json(&d);
        assert_eq!(v["state"], "Stable");
        assert_eq!(v["members"][0]["partitions"][0]["topic"], "t");
        assert_eq!(v["partitions"][0]["lag"], 2);
        assert!(v["partitions"][1]["lag"].is_null());
        assert!(v["partitions"][1]["member_id"].is_null());
        let text = describe_text(&d);
        assert!(text.contains("protocol: consumer/range\n"), "{text}");
        assert!(
            text.contains("partition t/0: committed_offset=3 high_watermark=5 lag=2 member=m1\n"),
            "{text}"
        );
        assert!(
            text.contains("partition t/1: committed_offset=- high_watermark=5 lag=- member=-\n"),
            "{text}"
        );
        assert!(refuse_if_members(&d.info)
            .err()
            .is_some_and(|e| matches!(e, CliError::Message(m) if m == "group g has 1 active member; stop them first")));
    }
}
