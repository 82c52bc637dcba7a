//! `corelog-bench`: the Corelog load generator and benchmark harness.
//!
//! Subcommands: `produce`, `consume`, `e2e` (load against a broker through
//! the real `corelog::client`), `limits` (what the disk and loopback allow),
//! `plot` (SVG of result files). Modules: `cli` (flags), `workload`
//! (resolution and validation), `runner` (executors, aggregation, progress),
//! `producer_load` / `consumer_load` (the clients' loops), `stats`
//! (histograms, intervals), `report` (JSON and the table), `machine`
//! (/proc), `cpu` (CPU use of broker and generator), `limits`, `plot`.
//!
//! Invariant: bad flags are clap errors (exit 2); every other failure is a
//! `BenchError` printed on stderr (exit 1); results go to stdout.

mod cli;
mod consumer_load;
mod cpu;
mod error;
mod limits;
mod machine;
mod plot;
mod producer_load;
mod report;
mod runner;
mod stats;
mod workload;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LoadArgs};
use crate::error::BenchError;
use crate::limits::LimitsResult;
use crate::machine::MachineInfo;
use crate::report::{read_json, write_json, BenchResult};
use crate::workload::{Mode, Workload};

fn main() -> ExitCode {
    // No `corelog::malloc_policy` here: the load generator stands for a
    // client application, which runs with glibc's defaults (its consumers'
    // 8+ MiB fetch responses would otherwise be mapped and faulted in one
    // by one: 30% of its profile).
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corelog-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), BenchError> {
    match cli.command {
        Command::Produce(a) => load(Mode::Produce, &a),
        Command::Consume(a) => load(Mode::Consume, &a),
        Command::E2e(a) => load(Mode::E2e, &a),
        Command::Limits(a) => {
            let r = limits::run(&a)?;
            print!("{}", r.table());
            if let Some(path) = &a.json {
                write_json(path, &r)?;
            }
            Ok(())
        }
        Command::Plot(a) => {
            plot::plot_files(&a.out, a.title.as_deref(), &a.results)?;
            println!("wrote {}", a.out.display());
            Ok(())
        }
    }
}

fn load(mode: Mode, args: &LoadArgs) -> Result<(), BenchError> {
    let w = Workload::resolve(mode, args)?;
    // Read the limits first: a bad file should fail before a long run.
    let limits: Option<LimitsResult> = match &w.limits {
        Some(p) => Some(read_json(p)?),
        None => None,
    };
    if !w.quiet {
        eprintln!("corelog-bench {}", w.summary());
    }
    let outcome = runner::run(w.clone())?;
    let result = BenchResult::build(w.clone(), outcome, MachineInfo::read(), limits.as_ref());
    print!("{}", result.table());
    if let Some(path) = &w.json {
        write_json(path, &result)?;
    }
    if let Some(path) = &w.plot {
        let name = result.name(path);
        plot::plot_runs(path, None, &[(name, result.clone())])?;
    }
    if let Some(a) = &result.aborted {
        return Err(BenchError::Executor(a.clone()));
    }
    Ok(())
}
