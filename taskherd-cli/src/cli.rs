//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::duration::{parse_duration, parse_duration_or_zero};
use crate::jobfile::{Group, parse_retries};
use crate::limits::{parse_limit_arg, parse_positive};

/// Runs shell commands in parallel, each job in its own groups, each group under its own limit.
#[derive(Debug, Parser)]
#[command(name = "taskherd", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the jobs of a job file in parallel under per-group limits.
    Run(Box<RunArgs>),
    /// Internal: the helper `taskherd run` starts to end its jobs if it dies.
    #[command(hide = true)]
    Reap(ReapArgs),
}

/// The arguments of the hidden `reap` helper.
#[derive(Debug, Args)]
pub struct ReapArgs {
    /// Milliseconds between SIGTERM and SIGKILL.
    #[arg(long)]
    pub grace_ms: u64,
}

impl ReapArgs {
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }
}

const RUN_HELP: &str = "\
Job file: one job per line, `GROUP GROUP ... :: COMMAND`, run with `sh -c` (or `--shell`). A
line without a lone `::` is a command without groups; blank lines and lines starting with `#`
are skipped. Group names are letters, digits and _ - . : / @ + %. Before the `::`,
`timeout=DURATION` (or `timeout=none`) and `retries=N` override --timeout and --retries for
that job. Every line is checked before anything runs, except in a job file that is a pipe
(such as standard input from `generate | taskherd run`): that is read as it is written, each
line checked as it arrives and run at once; a bad line there stops new starts, and taskherd
exits with status 2 once the running jobs end.

    # at most 2 jobs per host, 1 on the database, 8 in all
    web1 db :: ./backup.sh web1
    web1    :: ./rotate-logs.sh web1

    taskherd run -j 8 -d 2 -l db=1 jobs.txt

Jobs start in file order as soon as every group they name has room. Ctrl-C stops starting new
jobs and waits for the running ones; a second Ctrl-C terminates them (SIGTERM to each job's
process group, SIGKILL --kill-grace later, 5 s by default). Each job runs in its own process
group with standard input from /dev/null and TASKHERD_LINE set to its line number.

Limits file (--limits-file): lines `GROUP=N`, `[total]=N`, `[default]=N`, N a number (0 holds
the group's jobs back) or `none` (for a group: no limit of its own, the default applies). It
overrides the command line and is re-read whenever it changes; a bad file is reported and the
limits in force are kept.

Sharing limits between runs (--redis URL): the run's pool lives in Redis, under the name
--pool (default taskherd-run), so every run using the same Redis and pool name, on this
machine or another, with any job file, shares the limits of every group and of the total (-j).
At the start, and on each change of the limits file, a run writes the limits it was given
(-j, -d, -l, the limits file) to the pool as one batch: for each setting the last write wins,
whichever run made it; what a run was not given it leaves as it is (without -j it writes no
total). Every admission holds a lease (--lease, 15s by default), renewed while the run lives;
if taskherd is killed (even by kill -9) its jobs are ended and its slots come back within the
lease. A running job whose lease Redis lost (a Redis restart, a failover, a pause longer than
the lease), or that could not be renewed for 90% of the lease (Redis unreachable that long),
is terminated (SIGTERM, SIGKILL after --kill-grace), status killed, reason lease-lost. Redis
unreachable at the start: exit status 2, nothing runs. Later, a job that cannot be admitted
because Redis is unreachable waits and asks again every second; no job runs without an
admission.

Exit status: 0 every job succeeded; 1 a job failed, was killed, timed out or did not start;
2 bad arguments or job file, or Redis unreachable at the start (nothing was run), or a bad
line in a job file that is a pipe.";

#[derive(Debug, Args)]
#[command(after_long_help = RUN_HELP)]
pub struct RunArgs {
    /// The job file; `-` or nothing reads standard input. A pipe is read as it is written.
    #[arg(value_name = "JOBFILE")]
    pub jobfile: Option<PathBuf>,

    /// Total limit: jobs running at once [default: number of CPUs; with --redis, jobs running at
    /// once in every run of the pool, and no default: the pool's total is left as it is].
    #[arg(short = 'j', long, value_name = "N", value_parser = parse_positive)]
    pub max_jobs: Option<usize>,

    /// Limit for one group (repeatable).
    // A group name may start with `-` (`-l -cache=2`).
    #[arg(
        short = 'l',
        long = "limit",
        value_name = "GROUP=N",
        value_parser = parse_limit_arg,
        allow_hyphen_values = true
    )]
    pub limits: Vec<(Group, usize)>,

    /// Limit for every group without its own --limit.
    #[arg(short = 'd', long, value_name = "N", value_parser = parse_positive)]
    pub default_limit: Option<usize>,

    /// Stop after failures: `N` (alone, 1) starts no new job after N jobs failed, running
    /// jobs finish; `now` also terminates the running jobs after the first failure (SIGTERM,
    /// SIGKILL after the grace period). A job counts once its retries are used up. Without a
    /// value, write the job file before it (or `--halt-on-error=1`).
    #[arg(
        long,
        value_name = "N|now",
        num_args = 0..=1,
        default_missing_value = "1",
        value_parser = parse_halt
    )]
    pub halt_on_error: Option<Halt>,

    /// Run a failed, killed or timed-out job again, up to N more times (a job line's `retries=N`
    /// overrides it). Each retry waits --retry-delay, doubled each time (at most 1 minute, or
    /// --retry-delay if longer), without holding its groups, then queues again.
    #[arg(long, value_name = "N", default_value = "0", value_parser = parse_retries)]
    pub retries: u32,

    /// The wait before a job's first retry (see --retries); 0 retries at once.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration_or_zero)]
    pub retry_delay: Duration,

    /// Job output: `prefixed` (each line as it comes, prefixed with the job's line number; a
    /// line over 64 KiB is cut into pieces, each prefixed), `grouped` (each job's output in one
    /// piece when it ends; past 1 MiB it waits in a temporary file) or `dir:PATH`
    /// (PATH/LINE.log). In prefixed and grouped mode, output without a final newline gets
    /// one.
    #[arg(long, value_name = "MODE", default_value = "prefixed", value_parser = parse_output)]
    pub output: OutputMode,

    /// Write a JSON Lines report to FILE: one record per job, for every job (and a provisional
    /// one before for a job --resume or --resume-failed runs again; the last counts). `-` writes it to
    /// standard output, and the jobs' output goes to standard error instead.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Show live progress on standard error [default: when it is a terminal].
    #[arg(long, overrides_with = "no_progress")]
    pub progress: bool,

    /// Show no progress.
    #[arg(long, overrides_with = "progress")]
    pub no_progress: bool,

    /// Do not print the summary table at the end.
    #[arg(long)]
    pub no_summary: bool,

    /// Re-read limits from FILE whenever it changes (see below).
    #[arg(long, value_name = "FILE")]
    pub limits_file: Option<PathBuf>,

    /// Check the job file and limits, print the plan, run nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Terminate a job still running after DURATION (`90`, `1.5s`, `500ms`, `10m`, `2h`):
    /// SIGTERM to its process group, SIGKILL after the grace period; its status is
    /// `timed_out`. A job line's `timeout=DURATION` or `timeout=none` overrides it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Time between SIGTERM and SIGKILL when taskherd terminates jobs (a timeout, a lost
    /// lease, --halt-on-error now, a second Ctrl-C, SIGTERM or SIGHUP); what a terminated job
    /// left in its process group gets the SIGKILL too. With --redis, at most half of --lease.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub kill_grace: Duration,

    /// The shell that runs each command, as `SHELL -c COMMAND` (for example /bin/bash, for
    /// bash-only syntax).
    #[arg(long, value_name = "PATH", default_value = "/bin/sh")]
    pub shell: PathBuf,

    /// Write a joblog in GNU parallel's format to FILE: a header, then a line per job that ran
    /// (Seq is the job's line number), written as each job ends.
    #[arg(long, value_name = "FILE")]
    pub joblog: Option<PathBuf>,

    /// Read the --report of an earlier run and skip the jobs that succeeded there (matched by
    /// command and groups); run the rest. Skipped jobs get a `skipped` record. REPORT may be
    /// the file --report writes.
    #[arg(long, value_name = "REPORT", conflicts_with = "resume_failed")]
    pub resume: Option<PathBuf>,

    /// Like --resume, but run only the jobs that failed, were killed, timed out or could not
    /// start in REPORT; skip the rest (jobs never started or not in REPORT included).
    #[arg(long, value_name = "REPORT")]
    pub resume_failed: Option<PathBuf>,

    /// Share limits with other runs through the Redis at URL (`redis://[USER:PASSWORD@]HOST
    /// [:PORT][/DB]`, `rediss://` for TLS): see "Sharing limits between runs" below.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// With a `rediss://` URL: the certificates (PEM) the server's certificate must chain to,
    /// instead of the system's root certificates (a private certificate authority).
    #[arg(long, value_name = "FILE", requires = "redis")]
    pub redis_ca: Option<PathBuf>,

    /// With a `rediss://` URL: this client's certificate chain (PEM), for a Redis that
    /// authenticates clients by certificate (`tls-auth-clients`); with --redis-key.
    #[arg(long, value_name = "FILE", requires_all = ["redis", "redis_key"])]
    pub redis_cert: Option<PathBuf>,

    /// With --redis-cert: the client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "redis_cert")]
    pub redis_key: Option<PathBuf>,

    /// With --redis: the name of the shared pool; runs with the same name share their limits.
    /// [default: taskherd-run]
    #[arg(long, value_name = "NAME", requires = "redis")]
    pub pool: Option<String>,

    /// With --redis: how long a killed run's slots stay taken (its admissions' lease, renewed
    /// every third of it while the run lives); at least 1s, and at least twice --kill-grace
    /// (a killed run's jobs are killed --kill-grace after SIGTERM, and its slots may go to
    /// other runs from two thirds of a lease on). [default: 15s]
    #[arg(long, value_name = "DURATION", requires = "redis", value_parser = parse_lease)]
    pub lease: Option<Duration>,
}

fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = parse_duration(text)?;
    if lease < Duration::from_secs(1) {
        return Err("a lease must be at least 1s".to_owned());
    }
    Ok(lease)
}

/// When `--halt-on-error` stops the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// After this many failed jobs, start no new job; running jobs finish.
    After(usize),
    /// After the first failed job, start no new job and terminate the running ones.
    Now,
}

fn parse_halt(text: &str) -> Result<Halt, String> {
    if text == "now" {
        return Ok(Halt::Now);
    }
    match text.parse::<usize>() {
        Ok(0) => Err("a number of failures must be at least 1".to_owned()),
        Ok(n) => Ok(Halt::After(n)),
        Err(_) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("{text} is too large (at most {})", usize::MAX))
        }
        Err(_) => Err(format!(
            "expected `now` or a number of failures, found {text:?} (to give --halt-on-error \
             no value, write the job file before it, or write --halt-on-error=1)"
        )),
    }
}

/// Where job output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputMode {
    /// Each line as it comes, prefixed with the job's line number.
    Prefixed,
    /// Each job's output in one piece when it ends.
    Grouped,
    /// One file per job in a directory.
    Dir(PathBuf),
}

fn parse_output(text: &str) -> Result<OutputMode, String> {
    match text {
        "prefixed" => Ok(OutputMode::Prefixed),
        "grouped" => Ok(OutputMode::Grouped),
        _ => match text.strip_prefix("dir:") {
            Some("") => Err("dir: needs a directory, as in dir:logs".to_owned()),
            Some(path) => Ok(OutputMode::Dir(PathBuf::from(path))),
            None => Err(format!(
                "expected prefixed, grouped or dir:PATH, found {text:?}"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn output_modes() {
        assert_eq!(parse_output("prefixed"), Ok(OutputMode::Prefixed));
        assert_eq!(parse_output("grouped"), Ok(OutputMode::Grouped));
        assert_eq!(
            parse_output("dir:out/logs"),
            Ok(OutputMode::Dir("out/logs".into()))
        );
        assert!(parse_output("dir:").is_err());
        assert!(parse_output("files").is_err());
    }

    #[test]
    fn halt_on_error_values() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
            let Command::Run(run) = cli.command else {
                unreachable!("parsed a run")
            };
            Ok::<_, String>((run.halt_on_error, run.jobfile))
        };
        assert_eq!(
            parse(&["t", "run", "jobs"]),
            Ok((None, Some("jobs".into())))
        );
        assert_eq!(
            parse(&["t", "run", "jobs", "--halt-on-error"]),
            Ok((Some(Halt::After(1)), Some("jobs".into())))
        );
        assert_eq!(
            parse(&["t", "run", "--halt-on-error", "3", "jobs"]),
            Ok((Some(Halt::After(3)), Some("jobs".into())))
        );
        assert_eq!(
            parse(&["t", "run", "--halt-on-error=now", "jobs"]),
            Ok((Some(Halt::Now), Some("jobs".into())))
        );
        let error = parse(&["t", "run", "--halt-on-error", "jobs.txt"]).unwrap_err();
        assert!(error.contains("write the job file before it"), "{error}");
        assert!(parse(&["t", "run", "--halt-on-error", "0"]).is_err());
    }

    #[test]
    fn progress_flags_override_each_other() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Run(run) = cli.command else {
                unreachable!("parsed a run")
            };
            (run.progress, run.no_progress)
        };
        assert_eq!(parse(&["taskherd", "run"]), (false, false));
        assert_eq!(
            parse(&["taskherd", "run", "--progress", "--no-progress"]),
            (false, true)
        );
        assert_eq!(
            parse(&["taskherd", "run", "--no-progress", "--progress"]),
            (true, false)
        );
    }
}
