//! `corelog consume TOPIC`: prints records as text (value per line, optionally
//! preceded by partition, offset and key, as kcat's `-f`) or JSON lines
//! {"partition","offset","timestamp","key","value"}.
//!
//! Invariants: default start is the latest offset; `--count N` prints exactly
//! N records then exits 0; without it the command follows until interrupted;
//! a closed stdout ends the command quietly with exit 0.

use std::io::Write;

use serde_json::json;

use super::{CliError, CliResult, Format};
use crate::client::{ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, SeekTo};

#[derive(Debug, clap::Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    pub(crate) client: super::ClientArgs,
    /// Topic to read.
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long, value_name = "N")]
    partition: Option<u32>,
    /// Start at the earliest retained record.
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
    #[arg(long, value_name = "MS")]
    from_timestamp: Option<i64>,
    /// Exit after this many records.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
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
