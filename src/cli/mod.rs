//! The `corelog` command line: `serve`, `topic`, `produce`, `consume`.
//!
//! Invariants: every failure prints exactly one `error: <message>` line to
//! stderr and exits 1 (usage errors included); client commands run on one
//! glommio executor; a closed stdout (SIGPIPE/EPIPE) ends `consume` quietly.

mod consume;
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
    /// Broker address for client commands.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9700",
        value_name = "HOST:PORT"
    )]
    bootstrap: String,
    /// Request timeout for client commands, in ms.
    #[arg(long, global = true, default_value_t = 30_000, value_name = "MS")]
    request_timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    Serve(ServeArgs),
    /// Create, delete, list and describe topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Send stdin lines as records.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
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
    /// Number of shards (overrides the config; 0 = one per CPU).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, value_name = "P")]
        partitions: u32,
        /// Topic setting override, repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete { name: String },
    /// List topic names.
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show a topic's partitions and settings.
    Describe {
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Change settings of a live topic (persisted; survive restarts).
    Alter {
        name: String,
        /// Topic setting to change, repeatable (at least one).
        #[arg(long = "config", value_name = "KEY=VALUE", required = true)]
        configs: Vec<String>,
    },
    /// Advance a partition's log start: records below OFFSET are deleted.
    DeleteRecords {
        name: String,
        #[arg(long, value_name = "N")]
        partition: u32,
        /// New log start; must not be above the high watermark.
        #[arg(long, value_name = "OFFSET")]
        before: u64,
    },
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
    let client = ClientConfig {
        bootstrap: cli.bootstrap.clone(),
        client_id: "corelog-cli".into(),
        request_timeout_ms: cli.request_timeout_ms,
        ..ClientConfig::default()
    };
    let result = match cli.command {
        Command::Serve(args) => {
            init_tracing("info");
            serve(args)
        }
        Command::Topic(cmd) => {
            init_tracing("warn");
            run_client(move || topic::run(client, cmd))
        }
        Command::Produce(args) => {
            init_tracing("warn");
            run_client(move || produce::run(client, args))
        }
        Command::Consume(args) => {
            init_tracing("warn");
            run_client(move || consume::run(client, args))
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
        assert_eq!(c.bootstrap, "127.0.0.1:1");
        assert!(
            matches!(c.command, Command::Topic(TopicCommand::Create { partitions: 3, ref configs, .. }) if configs.len() == 2)
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
