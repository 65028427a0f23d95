//! `taskherd`: runs shell commands in parallel under per-group limits, with live progress and a
//! report that accounts for every job.
//!
//! Modules, in the order a run uses them:
//! - `cli`: arguments;
//! - `jobfile`: the job file, checked line by line before anything runs;
//! - `limits`: `--max-jobs`, `--default-limit`, `--limit` and the limits file;
//! - `app`: reads and checks everything, then runs, or prints the plan (`plan`);
//! - `table`: plain-text tables.

#![forbid(unsafe_code)]

mod app;
mod cli;
mod jobfile;
mod limits;
mod plan;
mod table;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match &cli.command {
        cli::Command::Run(args) => app::main(args),
    }
}
