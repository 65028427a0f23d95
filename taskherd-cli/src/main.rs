//! `taskherd`: runs shell commands in parallel under per-group limits, with live progress and a
//! report that accounts for every job.
//!
//! Modules, in the order a run uses them:
//! - `cli`: arguments;
//! - `jobfile`: the job file, checked line by line before anything runs;
//! - `limits`: `--max-jobs`, `--default-limit`, `--limit` and the limits file;
//! - `app`: reads and checks everything, then runs, or prints the plan (`plan`);
//! - `runner`: admission in file order through the pool (`fleet`: a `taskherd::TaskPool`, or
//!   with `--redis` a pool shared with other runs), one process per job, one `outcome` per job;
//! - `watch`: re-reads the limits file while jobs run;
//! - `signals`: Ctrl-C, and signals to the jobs' process groups; `reaper`: a helper process
//!   that ends the jobs if taskherd dies; `orphans`: reaps what jobs leave behind when
//!   taskherd is their parent (the first process of a container); `members`: whether a
//!   terminated job's group still has a running process (zombies do not count);
//! - `output`: job output and taskherd's messages, from one writer thread;
//! - `report`: the JSON Lines report; `joblog`: GNU parallel's joblog (both written by a
//!   thread of their own, `record_writer`); `resume`: which jobs an earlier report says to skip;
//! - `tally`, `progress` and `summary`: counts per group, live progress, and the table printed
//!   at the end; `stderr`: taskherd's own messages, which never keep it from exiting;
//! - `table`: plain-text tables.

// The only unsafe code: the calls to killpg and fcntl in `signals`, to sysconf in
// `arg_limits`, to prctl and waitpid in `orphans`, to getpgid in `members`, and to ioctl
// (FIONREAD) in `output`.
#![deny(unsafe_code)]

// taskherd's own messages go to standard error, which may be a pipe whose reader has gone
// (`taskherd run jobs.txt 2>&1 | head -1`), or one whose reader stopped reading. The standard
// macros panic when the write fails (exit 101 instead of the jobs' status); these, defined
// before the modules so that every one of them uses them, drop the message instead (it had
// nowhere to go), and at the end of a run whose output was given up, never wait for the
// reader for long (see `stderr`).
macro_rules! eprint {
    ($($arg:tt)*) => {{
        crate::stderr::write(format_args!($($arg)*));
    }};
}

macro_rules! eprintln {
    ($($arg:tt)*) => {{
        crate::stderr::write(format_args!("{}\n", format_args!($($arg)*)));
    }};
}

#[cfg(unix)]
mod app;
#[cfg(unix)]
mod arg_limits;
#[cfg(unix)]
mod cli;
#[cfg(unix)]
mod duration;
#[cfg(unix)]
mod fleet;
#[cfg(unix)]
mod jobfile;
#[cfg(unix)]
mod joblog;
#[cfg(unix)]
mod limits;
#[cfg(unix)]
mod members;
#[cfg(unix)]
mod orphans;
#[cfg(unix)]
mod outcome;
#[cfg(unix)]
mod output;
#[cfg(unix)]
mod plan;
#[cfg(unix)]
mod progress;
#[cfg(unix)]
mod reaper;
#[cfg(unix)]
mod record_writer;
#[cfg(unix)]
mod report;
#[cfg(unix)]
mod resume;
#[cfg(unix)]
mod runner;
#[cfg(unix)]
mod signals;
mod stderr;
#[cfg(unix)]
mod stream;
#[cfg(unix)]
mod summary;
#[cfg(unix)]
mod table;
#[cfg(unix)]
mod tally;
#[cfg(unix)]
mod watch;

use std::process::ExitCode;

#[cfg(unix)]
fn main() -> ExitCode {
    use clap::Parser;

    let cli = cli::Cli::parse();
    match &cli.command {
        cli::Command::Run(args) => app::main(args),
        cli::Command::Reap(args) => reaper::main(args.grace()),
    }
}

/// Jobs run in Unix process groups and are stopped with Unix signals.
#[cfg(not(unix))]
fn main() -> ExitCode {
    eprintln!("taskherd: this program runs only on Unix systems");
    ExitCode::from(2)
}
