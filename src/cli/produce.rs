//! `corelog produce TOPIC`: one record per stdin line.
//!
//! Invariants: lines are sent in input order; the command exits 0 only after
//! every line was acknowledged by the broker; any refusal, or a line without
//! the key separator (named by its 1-based line number), fails the command.

use std::collections::VecDeque;
use std::io::Read;

use bytes::Bytes;

use super::{CliError, CliResult};
use crate::client::{
    ClientConfig, Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord,
};
use crate::protocol::messages::Acks;

#[derive(Debug, clap::Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    pub(crate) client: super::ClientArgs,
    /// Topic to write to.
    topic: String,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// When the broker acknowledges: none (fire and forget), leader (after
    /// the write, durable per the topic's flush setting), all (every in-sync
    /// replica; the leader on a single node).
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    acks: AcksArg,
    /// Send every record to this partition.
    #[arg(long, value_name = "N")]
    partition: Option<u32>,
    /// How long a batch waits for more records before it is sent, in ms.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    linger_ms: u64,
    /// A batch is sent once it holds this many bytes.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    batch_bytes: usize,
    /// Produce requests in flight per partition (1-5 with idempotence; 0 =
    /// no limit, only with --no-idempotence).
    #[arg(long, default_value_t = crate::client::DEFAULT_MAX_IN_FLIGHT_PER_PARTITION, value_name = "N")]
    max_in_flight_per_partition: usize,
    /// Turn the idempotent producer off: no producer id, and a batch whose
    /// request may have reached the broker is never resent (at most once
    /// per attempt; a lost connection fails its lines).
    #[arg(long)]
    no_idempotence: bool,
    /// How long a line may take to be acknowledged, retries included, in ms.
    #[arg(long, default_value_t = crate::client::DEFAULT_DELIVERY_TIMEOUT_MS, value_name = "MS")]
    delivery_timeout_ms: u64,
    /// Compress each batch's records: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value_t = Compression::None, value_name = "CODEC")]
    compression: Compression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AcksArg {
    None,
    Leader,
    All,
}

/// Deliveries awaited before reading more input (bounds memory, applies
/// backpressure).
const MAX_UNACKED_RECORDS: usize = 100_000;
/// Bytes read from stdin per blocking read.
const STDIN_READ_BYTES: usize = 1024 * 1024;

/// One `read` of stdin into `buf` (runs on the blocking pool): returns as
/// soon as any input is available, so a slow writer's lines go out promptly.
/// An empty result is EOF.
fn read_stdin(mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
    buf.resize(STDIN_READ_BYTES, 0);
    loop {
        match std::io::stdin().lock().read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Strips one trailing "\r" (the "\n" is already gone).
fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn split_key(line: &[u8], sep: &[u8]) -> Option<(Bytes, Bytes)> {
    if sep.is_empty() {
        return None;
    }
    let at = line.windows(sep.len()).position(|w| w == sep)?;
    Some((
        Bytes::copy_from_slice(&line[..at]),
        Bytes::copy_from_slice(&line[at + sep.len()..]),
    ))
}

async fn settle(pending: &mut VecDeque<(u64, DeliveryFuture)>, acked: &mut u64) -> CliResult {
    if let Some((line_no, fut)) = pending.pop_front() {
        fut.await
            .map_err(|e| CliError::Message(format!("line {line_no} was not acknowledged: {e}")))?;
        *acked += 1;
    }
    Ok(())
}

pub(crate) async fn run(client: ClientConfig, args: ProduceArgs) -> CliResult {
    if args.key_separator.as_deref() == Some("") {
        return Err(CliError::Message(
            "--key-separator must not be empty".into(),
        ));
    }
    let producer = Producer::connect(ProducerConfig {
        client,
        acks: match args.acks {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        },
        linger_ms: args.linger_ms,
        batch_bytes: args.batch_bytes,
        max_in_flight_per_partition: args.max_in_flight_per_partition,
        idempotence: !args.no_idempotence,
        delivery_timeout_ms: args.delivery_timeout_ms,
        compression: args.compression,
        ..ProducerConfig::default()
    })
    .await?;
    // Fail fast on an unknown topic, before reading stdin.
    producer.partition_count(&args.topic).await?;

    let mut pending: VecDeque<(u64, DeliveryFuture)> = VecDeque::new();
    let mut line_no: u64 = 0;
    let mut acked: u64 = 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let data = glommio::executor()
            .spawn_blocking(move || read_stdin(buf))
            .await
            .map_err(|e| CliError::Message(format!("cannot read stdin: {e}")))?;
        let eof = data.is_empty();
        carry.extend_from_slice(&data);
        buf = data;
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut consumed = 0;
        while let Some(nl) = carry[consumed..].iter().position(|&b| b == b'\n') {
            lines.push(trim_cr(&carry[consumed..consumed + nl]));
            consumed += nl + 1;
        }
        if eof && consumed < carry.len() {
            lines.push(trim_cr(&carry[consumed..]));
            consumed = carry.len();
        }
        for line in lines {
            line_no += 1;
            let mut record = match &args.key_separator {
                Some(sep) => {
                    let (key, value) = split_key(line, sep.as_bytes()).ok_or_else(|| {
                        CliError::Message(format!("line {line_no} has no key separator '{sep}'"))
                    })?;
                    ProducerRecord::new(args.topic.clone(), value).with_key(key)
                }
                None => ProducerRecord::new(args.topic.clone(), Bytes::copy_from_slice(line)),
            };
            if let Some(p) = args.partition {
                record = record.with_partition(p);
            }
            let fut = producer.send(record).await?;
            pending.push_back((line_no, fut));
            while pending.len() > MAX_UNACKED_RECORDS {
                settle(&mut pending, &mut acked).await?;
            }
        }
        carry.drain(..consumed);
        if eof {
            break;
        }
    }
    producer.flush().await?;
    while !pending.is_empty() {
        settle(&mut pending, &mut acked).await?;
    }
    producer.close().await?;
    eprintln!("produced {}", super::plural(acked, "record"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_split_at_first_separator() {
        let (k, v) = split_key(b"a:b:c", b":").expect("split");
        assert_eq!((&k[..], &v[..]), (&b"a"[..], &b"b:c"[..]));
        let (k, v) = split_key(b"::x", b"::").expect("split");
        assert_eq!((&k[..], &v[..]), (&b""[..], &b"x"[..]));
        assert!(split_key(b"abc", b":").is_none());
    }
}
