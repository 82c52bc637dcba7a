//! The `corelog` command line: `serve`, `topic`, `produce`, `consume`,
//! `group`.
//!
//! Invariants: every failure prints exactly one `error: <message>` line to
//! stderr and exits 1 (usage errors included); client commands run on one
//! glommio executor; a closed stdout (SIGPIPE/EPIPE) ends `consume` quietly;
//! `consume --group` blocks SIGINT/SIGTERM before its executor starts (as
//! `serve` does) and takes them from a signalfd, so it commits and leaves
//! its group before exiting.

mod consume;
mod group;
mod produce;
mod topic;

use std::future::Future;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::client::ClientConfig;
use crate::config::BrokerConfig;

#[derive(Debug, Parser)]
#[command(
    name = "corelog",
    version,
    about = "Corelog: a thread-per-core event-streaming broker"
)]
struct Cli {
    /// Broker address for client commands [default: 127.0.0.1:9700] (also
    /// accepted after the command).
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// Request timeout for client commands, in ms [default: 30000] (also
    /// accepted after the command).
    #[arg(long, value_name = "MS")]
    request_timeout_ms: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

/// The connection flags of client commands (not of `serve`). Given both
/// before and after the command, the one after it wins.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ClientArgs {
    /// Broker address [default: 127.0.0.1:9700].
    #[arg(long, global = true, value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// Request timeout, in ms [default: 30000].
    #[arg(long, global = true, value_name = "MS")]
    request_timeout_ms: Option<u64>,
}

const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9700";
const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    Serve(ServeArgs),
    /// Create, delete, list, describe and alter topics.
    Topic(TopicArgs),
    /// Send stdin lines as records.
    Produce(produce::ProduceArgs),
    /// Print records of a topic (alone, or as a member of a consumer group).
    Consume(consume::ConsumeArgs),
    /// List, describe, reset the offsets of, and delete consumer groups.
    Group(group::GroupArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML config file (on top of the embedded defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (overrides the config).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Listen address (overrides the config); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Number of shards, at most one per CPU (overrides the config; 0 = one
    /// per CPU).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct TopicArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    #[command(after_help = crate::config::topic_settings_help())]
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long, value_name = "N")]
        partitions: u32,
        /// Topic setting (see below), repeatable; unset ones take the
        /// broker's [topic_defaults].
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// List topic names.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show a topic's partitions and settings.
    Describe {
        /// Topic name.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Change settings of a live topic (persisted; survive restarts).
    #[command(after_help = crate::config::topic_settings_help())]
    Alter {
        /// Topic name.
        name: String,
        /// Topic setting to change (see below), repeatable (at least one).
        #[arg(long = "config", value_name = "KEY=VALUE", required = true)]
        configs: Vec<String>,
    },
    /// Advance a partition's log start: records below OFFSET are deleted.
    DeleteRecords {
        /// Topic name.
        name: String,
        /// The partition whose records are deleted.
        #[arg(long, value_name = "N")]
        partition: u32,
        /// New log start; must not be above the high watermark.
        #[arg(long, value_name = "OFFSET", value_parser = offset_parser())]
        before: u64,
    },
}

/// An offset flag: a u64 that the wire (int64) can carry.
pub(crate) fn offset_parser() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=i64::MAX as u64)
}

/// `1 partition`, `2 partitions`.
pub(crate) fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

/// How a command failed.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Print `error: <message>`, exit 1.
    Message(String),
    /// Exit 0 without a word (stdout closed under us).
    Quiet,
}

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::Message(e.to_string())
    }
}

pub(crate) type CliResult = Result<(), CliError>;

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a client command on one glommio executor.
fn run_client<G, F>(make: G) -> CliResult
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = CliResult> + 'static,
{
    let handle = glommio::LocalExecutorBuilder::default()
        .name("corelog-cli")
        .io_memory(512 * 1024)
        .spawn(make)
        .map_err(|e| CliError::Message(format!("cannot start the executor: {e}")))?;
    handle
        .join()
        .map_err(|e| CliError::Message(format!("executor failed: {e}")))?
}

fn serve(args: ServeArgs) -> CliResult {
    let mut config = match &args.config {
        Some(path) => BrokerConfig::from_file(path)?,
        None => BrokerConfig::embedded_default(),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.listen = listen
            .to_socket_addrs()
            .map_err(|e| format!("--listen {listen}: {e}"))?
            .next()
            .ok_or_else(|| format!("--listen {listen}: resolves to no address"))?;
    }
    if let Some(shards) = args.shards {
        config.shards = Some(shards);
    }
    config.validate()?;
    crate::server::run(config)?;
    Ok(())
}

/// Entry point of the `corelog` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let client = |sub: &ClientArgs| ClientConfig {
        bootstrap: sub
            .bootstrap
            .clone()
            .or_else(|| cli.bootstrap.clone())
            .unwrap_or_else(|| DEFAULT_BOOTSTRAP.into()),
        client_id: "corelog-cli".into(),
        request_timeout_ms: sub
            .request_timeout_ms
            .or(cli.request_timeout_ms)
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
        ..ClientConfig::default()
    };
    let result = match cli.command {
        Command::Serve(_) if cli.bootstrap.is_some() || cli.request_timeout_ms.is_some() => {
            Err(CliError::Message(
                "--bootstrap and --request-timeout-ms are for client commands, not serve".into(),
            ))
        }
        Command::Serve(args) => {
            // SAFETY: no thread has been started yet (arguments are parsed,
            // nothing else ran); the broker's shards start inside `serve`.
            unsafe { crate::malloc_policy::apply() };
            // glommio logs a failed buffer registration (a low
            // RLIMIT_MEMLOCK) as a multi-line dump; shard::startup says it
            // in one line instead.
            init_tracing("info,glommio_ng::sys::uring=error");
            serve(args)
        }
        Command::Topic(args) => {
            init_tracing("warn");
            let client = client(&args.client);
            run_client(move || topic::run(client, args.command))
        }
        Command::Produce(args) => {
            init_tracing("warn");
            let client = client(&args.client);
            run_client(move || produce::run(client, args))
        }
        Command::Consume(args) => {
            init_tracing("warn");
            let client = client(&args.client);
            if args.in_group() {
                // Before the executor's thread exists, so it inherits the
                // mask: a group member commits and leaves on Ctrl-C/SIGTERM
                // instead of dying at once.
                if let Err(e) = crate::shard::startup::block_signals() {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            }
            run_client(move || consume::run(client, args))
        }
        Command::Group(args) => {
            init_tracing("warn");
            let client = client(&args.client);
            run_client(move || group::run(client, args.command))
        }
    };
    match result {
        Ok(()) | Err(CliError::Quiet) => ExitCode::SUCCESS,
        Err(CliError::Message(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_help_and_serve_has_no_client_flags() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some() || arg.get_long_help().is_some(),
                    "{path} {id} has no help"
                );
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        let mut cli = Cli::command();
        cli.build();
        walk(&cli, "corelog");
        let serve = cli.find_subcommand("serve").expect("serve");
        for a in serve.get_arguments() {
            assert!(
                !matches!(a.get_id().as_str(), "bootstrap" | "request_timeout_ms"),
                "serve has client flag {}",
                a.get_id()
            );
        }
    }

    #[test]
    fn offsets_and_partitions() {
        assert!(Cli::try_parse_from(["corelog", "consume", "t", "--offset", "3"]).is_err());
        assert!(Cli::try_parse_from([
            "corelog",
            "consume",
            "t",
            "--partition",
            "0",
            "--offset",
            "18446744073709551615"
        ])
        .is_err());
        assert_eq!(plural(1, "record"), "1 record");
        assert_eq!(plural(0, "record"), "0 records");
        assert_eq!(plural(2, "partition"), "2 partitions");
    }

    #[test]
    fn parses_contract_examples() {
        let c = Cli::try_parse_from([
            "corelog",
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "flush=always",
            "--config",
            "segment_bytes=1048576",
            "--bootstrap",
            "127.0.0.1:1",
        ])
        .expect("parse");
        let Command::Topic(ref t) = c.command else {
            panic!("topic command expected");
        };
        assert_eq!(t.client.bootstrap.as_deref(), Some("127.0.0.1:1"));
        assert!(
            matches!(t.command, TopicCommand::Create { partitions: 3, ref configs, .. } if configs.len() == 2)
        );
        assert!(Cli::try_parse_from([
            "corelog",
            "consume",
            "t",
            "--from-beginning",
            "--offset",
            "3"
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "corelog",
            "produce",
            "t",
            "--key-separator",
            ":",
            "--acks",
            "all",
            "--partition",
            "1",
            "--linger-ms",
            "0",
            "--batch-bytes",
            "1000"
        ])
        .is_ok());
        // Consumer groups: a negative shift, exactly one target, group-only
        // flags need --group, and the group assigns partitions.
        assert!(Cli::try_parse_from([
            "corelog",
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--shift-by",
            "-2"
        ])
        .is_ok());
        for bad in [
            &["corelog", "group", "reset-offsets", "g", "--topic", "t"][..],
            &[
                "corelog",
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-earliest",
                "--to-offset",
                "1",
            ],
            &["corelog", "consume", "t", "--auto-offset-reset", "latest"],
            &[
                "corelog",
                "consume",
                "t",
                "--group",
                "g",
                "--partition",
                "0",
            ],
            &[
                "corelog",
                "consume",
                "t",
                "--group",
                "g",
                "--from-timestamp",
                "1",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        assert!(Cli::try_parse_from([
            "corelog",
            "consume",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--group-instance-id",
            "i",
            "--session-timeout-ms",
            "10000"
        ])
        .is_ok());
        assert!(Cli::try_parse_from([
            "corelog",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2"
        ])
        .is_ok());
    }
}
