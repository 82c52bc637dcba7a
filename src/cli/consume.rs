//! `corelog consume TOPIC`: prints records as text (value per line, optionally
//! preceded by partition, offset and key, as kcat's `-f`) or JSON lines
//! {"partition","offset","timestamp","key","value"}.
//!
//! With `--group G` it is a member of consumer group G (`Consumer::subscribe`):
//! partitions come from the group, each starts at the group's committed
//! offset (or, with none, where `--auto-offset-reset` says: earliest by
//! default), and it commits what it printed: after each poll's records are
//! written and flushed, and on exit (`--count` reached, Ctrl-C/SIGTERM,
//! stdout closed), then leaves the group (`Consumer::close`).
//!
//! Invariants: default start is the latest offset (alone) or the committed
//! offset (in a group); `--count N` prints exactly N records then exits 0,
//! and in a group commits exactly the offsets past those N (never past a
//! record it did not print); a committed offset is always past records that
//! were written to stdout, so a crash delivers the uncommitted tail again
//! and never skips one; without `--count` the command follows until
//! interrupted; a closed stdout ends the command quietly with exit 0.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde_json::json;

use super::{CliError, CliResult, Format};
use crate::client::{
    Admin, ClientConfig, ClientError, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig,
    OffsetReset, RebalanceEvent, SeekTo,
};
use crate::protocol::{ErrorCode, TopicPartition};

#[derive(Debug, clap::Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    pub(crate) client: super::ClientArgs,
    /// Topic to read.
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long, value_name = "N", conflicts_with = "group")]
    partition: Option<u32>,
    /// Start at the earliest retained record. With --group: where a
    /// partition with no committed offset starts (the default there).
    #[arg(long, conflicts_with_all = ["offset", "from_timestamp"])]
    from_beginning: bool,
    /// Start at this offset of the partition given by --partition (required:
    /// offsets of different partitions are unrelated).
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "from_timestamp",
        requires = "partition",
        value_parser = super::offset_parser()
    )]
    offset: Option<u64>,
    /// Start at the first record with timestamp >= MS (ms since the epoch).
    #[arg(long, value_name = "MS", conflicts_with = "group")]
    from_timestamp: Option<i64>,
    /// Exit after this many records (in a group: once they are committed).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Consume as a member of this consumer group: the group assigns the
    /// partitions, each starts at the group's committed offset, and what is
    /// printed is committed (after each poll's output, and on exit), so the
    /// next member continues after it. A partition with no committed offset
    /// starts at the earliest record unless --auto-offset-reset says
    /// otherwise.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// With --group: where a partition with no committed offset starts:
    /// earliest (the default), latest, or none (an error).
    #[arg(
        long,
        value_enum,
        value_name = "WHERE",
        requires = "group",
        conflicts_with = "from_beginning"
    )]
    auto_offset_reset: Option<ResetArg>,
    /// With --group: static membership. A member that comes back with the
    /// same id within its session timeout gets its partitions back without
    /// a rebalance; on exit it does not leave the group (the group keeps
    /// its partitions for it until the session timeout passes).
    #[arg(long, value_name = "ID", requires = "group")]
    group_instance_id: Option<String>,
    /// With --group: the coordinator drops this member when it has not
    /// heard from it for this long, in ms (within the broker's
    /// groups.min/max_session_timeout_ms) [default: 45000].
    #[arg(long, value_name = "MS", requires = "group")]
    session_timeout_ms: Option<u32>,
    /// Output format: text (one value per line) or json (one object per line).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Text format: print each record's key before its value (an absent key
    /// prints as nothing).
    #[arg(long)]
    print_key: bool,
    /// Text format: print each record's partition and offset first.
    #[arg(long)]
    print_offset: bool,
    /// Text format: what separates the fields --print-key and --print-offset
    /// add (default: a tab).
    #[arg(
        long,
        value_name = "SEP",
        default_value = "\t",
        hide_default_value = true
    )]
    separator: String,
    /// Longest one fetch waits for data on the broker, in ms.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    max_wait_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ResetArg {
    Earliest,
    Latest,
    None,
}

impl ConsumeArgs {
    /// Is this a consumer-group member (`--group`)?
    pub(crate) fn in_group(&self) -> bool {
        self.group.is_some()
    }
}

/// How text lines are laid out.
#[derive(Debug, Clone, Default)]
struct TextFields {
    key: bool,
    offset: bool,
    separator: String,
}

fn render(r: &ConsumerRecord, format: Format, fields: &TextFields, out: &mut Vec<u8>) {
    match format {
        Format::Text => {
            let sep = fields.separator.as_bytes();
            if fields.offset {
                out.extend_from_slice(format!("{}", r.partition).as_bytes());
                out.extend_from_slice(sep);
                out.extend_from_slice(format!("{}", r.offset).as_bytes());
                out.extend_from_slice(sep);
            }
            if fields.key {
                if let Some(k) = &r.key {
                    out.extend_from_slice(k);
                }
                out.extend_from_slice(sep);
            }
            if let Some(v) = &r.value {
                out.extend_from_slice(v);
            }
            out.push(b'\n');
        }
        Format::Json => {
            let lossy = |b: &Option<bytes::Bytes>| {
                b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
            };
            let v = json!({
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": r.timestamp_ms,
                "key": lossy(&r.key),
                "value": lossy(&r.value),
            });
            out.extend_from_slice(v.to_string().as_bytes());
            out.push(b'\n');
        }
    }
}

fn write_out(buf: &[u8]) -> CliResult {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    match lock.write_all(buf).and_then(|_| lock.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::Quiet),
        Err(e) => Err(CliError::Message(format!("cannot write to stdout: {e}"))),
    }
}

/// Whether stdout is a pipe or socket whose reader has gone away (so a
/// follower idling on an empty topic still notices `| head` exiting).
fn stdout_closed() -> bool {
    let mut fds = [libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, zero timeout; poll only writes `revents`.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    n > 0 && fds[0].revents & (libc::POLLERR | libc::POLLHUP) != 0
}

pub(crate) async fn run(client: ClientConfig, args: ConsumeArgs) -> CliResult {
    if args.in_group() {
        return run_group(client, args).await;
    }
    let start = if args.from_beginning {
        SeekTo::Earliest
    } else if let Some(o) = args.offset {
        SeekTo::Offset(o)
    } else if let Some(ts) = args.from_timestamp {
        if ts < 0 {
            return Err(CliError::Message(format!(
                "--from-timestamp {ts} is negative"
            )));
        }
        SeekTo::Timestamp(ts)
    } else {
        SeekTo::Latest
    };
    let mut consumer = Consumer::connect(ConsumerConfig {
        client,
        max_wait_ms: args.max_wait_ms,
        ..ConsumerConfig::default()
    })
    .await?;
    let partitions: Vec<u32> = args.partition.into_iter().collect();
    consumer.assign(&args.topic, &partitions, start).await?;
    if args.count == Some(0) {
        return Ok(());
    }
    let fields = TextFields {
        key: args.print_key,
        offset: args.print_offset,
        separator: args.separator.clone(),
    };
    let mut printed: u64 = 0;
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let records = consumer.poll().await?;
        buf.clear();
        for r in &records {
            render(r, args.format, &fields, &mut buf);
            printed += 1;
            if args.count == Some(printed) {
                break;
            }
        }
        if !buf.is_empty() {
            write_out(&buf)?;
        } else if stdout_closed() {
            return Err(CliError::Quiet);
        }
        if args.count.is_some_and(|c| printed >= c) {
            return Ok(());
        }
    }
}

/// How long the final commit waits out a rebalance in progress, in ms.
const FINAL_COMMIT_RETRY_MS: u64 = 10_000;
/// Pause between tries of the final commit, in ms.
const COMMIT_RETRY_BACKOFF_MS: u64 = 100;

/// The group settings of `consume --group`.
fn group_config(args: &ConsumeArgs) -> GroupConfig {
    let mut g = GroupConfig::new(args.group.clone().unwrap_or_default());
    g.group_instance_id = args.group_instance_id.clone();
    if let Some(ms) = args.session_timeout_ms {
        g.session_timeout_ms = ms;
        // Kafka's rule of thumb: heartbeat at most every third of the session.
        g.heartbeat_interval_ms = g.heartbeat_interval_ms.min(ms / 3).max(1);
    }
    // The command commits what it printed itself, never bare positions.
    g.enable_auto_commit = false;
    g.auto_offset_reset = match args.auto_offset_reset {
        Some(ResetArg::Latest) => OffsetReset::Latest,
        Some(ResetArg::None) => OffsetReset::None,
        Some(ResetArg::Earliest) | None => OffsetReset::Earliest,
    };
    g
}

/// `fut`, unless SIGINT/SIGTERM arrives first (then `None`; `fut` is dropped).
async fn unless_signalled<T>(
    signals: &glommio::signal::Signals,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        if signals.recv().await.is_err() {
            // The signalfd failed: never end the command because of that.
            std::future::pending::<()>().await;
        }
        None
    })
    .await
}

/// Commits `uncommitted` (the next offset per partition, past printed
/// records), revoked partitions included, and empties it once the
/// coordinator took them. A partition lost (the generation was gone) is its
/// new owner's: what was printed of it and not committed is delivered again
/// there.
async fn commit_printed(
    consumer: &mut Consumer,
    uncommitted: &mut BTreeMap<TopicPartition, u64>,
) -> Result<(), ClientError> {
    // A revoked partition's printed records are still committed (the
    // member's generation is current until its next poll rejoins); a lost
    // one is no longer this member's to commit.
    for e in consumer.take_rebalance_events() {
        if let RebalanceEvent::Lost(lost) = e {
            for tp in lost {
                uncommitted.remove(&tp);
            }
        }
    }
    if uncommitted.is_empty() {
        return Ok(());
    }
    let offsets: Vec<(TopicPartition, u64)> =
        uncommitted.iter().map(|(tp, o)| (tp.clone(), *o)).collect();
    consumer.commit_offsets(&offsets).await?;
    uncommitted.clear();
    Ok(())
}

/// [`commit_printed`] on exit: waits out (bounded) a rebalance or a
/// coordinator that is loading.
async fn commit_final(
    consumer: &mut Consumer,
    uncommitted: &mut BTreeMap<TopicPartition, u64>,
) -> Result<(), ClientError> {
    let deadline = std::time::Instant::now() + Duration::from_millis(FINAL_COMMIT_RETRY_MS);
    loop {
        match commit_printed(consumer, uncommitted).await {
            Err(e)
                if matches!(
                    e.wire_code(),
                    Some(
                        ErrorCode::RebalanceInProgress
                            | ErrorCode::CoordinatorLoadInProgress
                            | ErrorCode::CoordinatorNotAvailable
                            | ErrorCode::NotCoordinator
                    )
                ) && std::time::Instant::now() < deadline =>
            {
                crate::timer::sleep_once(Duration::from_millis(COMMIT_RETRY_BACKOFF_MS)).await;
            }
            r => return r,
        }
    }
}

/// `consume --group`: see the module header.
async fn run_group(client: ClientConfig, args: ConsumeArgs) -> CliResult {
    // cli::main blocked SIGINT/SIGTERM: they arrive here instead of ending
    // the process, so the member commits and leaves first.
    let signals = glommio::signal::Signals::new(&[libc::SIGINT, libc::SIGTERM])
        .map_err(|e| CliError::Message(format!("cannot watch SIGINT/SIGTERM: {e}")))?;
    let config = ConsumerConfig {
        client: client.clone(),
        max_wait_ms: args.max_wait_ms,
        group: Some(group_config(&args)),
        ..ConsumerConfig::default()
    };
    let setup = async {
        // An unknown topic is an error, as without --group (the group
        // would just assign nothing from it).
        Admin::connect(client)
            .await?
            .describe_topic(&args.topic)
            .await?;
        if args.count == Some(0) {
            return Ok(None);
        }
        let mut consumer = Consumer::connect(config).await?;
        consumer.subscribe(&[args.topic.as_str()]).await?;
        Ok::<_, ClientError>(Some(consumer))
    };
    let mut consumer = match unless_signalled(&signals, setup).await {
        None | Some(Ok(None)) => return Ok(()),
        Some(Err(e)) => return Err(e.into()),
        Some(Ok(Some(c))) => c,
    };
    let fields = TextFields {
        key: args.print_key,
        offset: args.print_offset,
        separator: args.separator.clone(),
    };
    let mut printed: u64 = 0;
    // Next offset per partition past what was printed and not yet committed.
    let mut uncommitted: BTreeMap<TopicPartition, u64> = BTreeMap::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let outcome: CliResult = loop {
        if args.count.is_some_and(|c| printed >= c) {
            break Ok(());
        }
        let records = match unless_signalled(&signals, consumer.poll()).await {
            None => break Ok(()),
            Some(Err(e)) => break Err(e.into()),
            Some(Ok(r)) => r,
        };
        buf.clear();
        let mut next: BTreeMap<TopicPartition, u64> = BTreeMap::new();
        let mut last_returned: BTreeMap<(&str, u32), u64> = BTreeMap::new();
        for r in &records {
            last_returned.insert((r.topic.as_str(), r.partition), r.offset);
        }
        for r in &records {
            if args.count.is_some_and(|c| printed >= c) {
                break;
            }
            render(r, args.format, &fields, &mut buf);
            printed += 1;
            next.insert(
                TopicPartition::new(r.topic.as_str(), r.partition),
                r.offset.saturating_add(1),
            );
        }
        if !buf.is_empty() {
            // On the blocking pool: a stdout that does not drain (a paused
            // pager) stalls neither the heartbeats nor the signals.
            let out = std::mem::take(&mut buf);
            let write = glommio::executor().spawn_blocking(move || {
                let r = write_out(&out);
                (out, r)
            });
            let Some((out, written)) = unless_signalled(&signals, write).await else {
                // Interrupted mid-write: none of it counts as printed.
                break Ok(());
            };
            buf = out;
            if let Err(e) = written {
                // Not (all) written: none of it counts as printed.
                break Err(e);
            }
            for (tp, n) in next {
                // Every record of the partition printed: continue at its
                // position (past the whole last batch); cut short by
                // --count: at the record after the last one printed.
                let whole = last_returned
                    .get(&(tp.topic.as_str(), tp.partition))
                    .is_some_and(|last| *last < n);
                let at = if whole {
                    consumer
                        .position(&tp.topic, tp.partition)
                        .map_or(n, |p| p.max(n))
                } else {
                    n
                };
                uncommitted.insert(tp, at);
            }
        } else if stdout_closed() {
            break Err(CliError::Quiet);
        }
        if !uncommitted.is_empty() {
            if let Err(e) = commit_printed(&mut consumer, &mut uncommitted).await {
                eprintln!("warning: commit failed (tried again after the next poll): {e}");
            }
        }
    };
    // Exit: commit what was printed and not committed yet, then leave the
    // group. A second signal gives up waiting.
    let finish = async move {
        let committed = commit_final(&mut consumer, &mut uncommitted)
            .await
            .map_err(|e| {
                CliError::Message(format!(
                    "cannot commit the records printed (they will be delivered again): {e}"
                ))
            });
        let left = consumer.close().await.map_err(CliError::from);
        committed.and(left)
    };
    let finished = unless_signalled(&signals, finish).await.unwrap_or_else(|| {
        Err(CliError::Message(
            "interrupted again: exited before committing and leaving the group".into(),
        ))
    });
    match (outcome, finished) {
        (Err(CliError::Message(m)), _) => Err(CliError::Message(m)),
        (_, Err(e)) => Err(e),
        (outcome, Ok(())) => outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn json_line_shape() {
        let r = ConsumerRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            timestamp_ms: 1000,
            key: None,
            value: Some(Bytes::from_static(b"hi")),
            headers: vec![],
        };
        let mut out = Vec::new();
        let plain = TextFields::default();
        render(&r, Format::Json, &plain, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["partition"], 2);
        assert_eq!(v["offset"], 7);
        assert_eq!(v["timestamp"], 1000);
        assert!(v["key"].is_null());
        assert_eq!(v["value"], "hi");
        out.clear();
        render(&r, Format::Text, &plain, &mut out);
        assert_eq!(out, b"hi\n");
        let all = TextFields {
            key: true,
            offset: true,
            separator: "\t".into(),
        };
        out.clear();
        render(&r, Format::Text, &all, &mut out);
        assert_eq!(out, b"2\t7\t\thi\n", "absent key prints as nothing");
        let keyed = ConsumerRecord {
            key: Some(Bytes::from_static(b"k1")),
            ..r
        };
        out.clear();
        render(
            &keyed,
            Format::Text,
            &TextFields {
                key: true,
                offset: false,
                separator: ":".into(),
            },
            &mut out,
        );
        assert_eq!(out, b"k1:hi\n");
    }
}
