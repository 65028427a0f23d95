//! What became of a job.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

/// How a job ended, or why it did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Exited with status 0.
    Succeeded,
    /// Exited with a status other than 0.
    Failed { code: i32 },
    /// Killed by a signal.
    Killed { signal: i32 },
    /// Ran past its timeout and was terminated: how it ended then (an exit status if it
    /// exited on SIGTERM, else the signal that killed it).
    TimedOut {
        after: Duration,
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Never started (`--halt-on-error` or Ctrl-C).
    NotStarted,
    /// Could not be started: the shell could not be spawned, or its output file created.
    Error { message: String },
}

impl Status {
    /// The status of an exited command.
    pub fn of(exit: ExitStatus) -> Status {
        use std::os::unix::process::ExitStatusExt;
        match (exit.code(), exit.signal()) {
            (Some(0), _) => Status::Succeeded,
            (Some(code), _) => Status::Failed { code },
            (None, Some(signal)) => Status::Killed { signal },
            // Neither exited nor signalled: only stopped or continued processes, which `wait`
            // does not report.
            (None, None) => Status::Error {
                message: format!("unexpected wait status {exit}"),
            },
        }
    }

    /// The name used in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed { .. } => "failed",
            Status::Killed { .. } => "killed",
            Status::TimedOut { .. } => "timed_out",
            Status::NotStarted => "not_started",
            Status::Error { .. } => "error",
        }
    }

    /// Whether the command was started.
    pub fn ran(&self) -> bool {
        matches!(
            self,
            Status::Succeeded
                | Status::Failed { .. }
                | Status::Killed { .. }
                | Status::TimedOut { .. }
        )
    }

    /// The status of a command that ran past its timeout `after` and then ended with `exit`.
    pub fn timed_out(after: Duration, exit: ExitStatus) -> Status {
        use std::os::unix::process::ExitStatusExt;
        Status::TimedOut {
            after,
            code: exit.code(),
            signal: exit.signal(),
        }
    }

    /// Whether `--retries` runs a job again after this: it failed, was killed (by someone else
    /// than taskherd: see [`Attempt::reason`]) or timed out. A job that could not start is
    /// not retried.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Status::Failed { .. } | Status::Killed { .. } | Status::TimedOut { .. }
        )
    }

    /// Whether this counts as a failure for the exit status and `--halt-on-error`.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Status::Succeeded)
    }
}

/// Why taskherd did not start a job, or stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `--halt-on-error` after a failure.
    HaltOnError,
    /// Ctrl-C, SIGTERM or SIGHUP.
    Interrupted,
    /// A bad line in a job file read as it is written (a pipe).
    BadInput,
    /// With `--redis`: Redis lost the lease of the job's admission while it ran, so it was
    /// terminated (never a reason to stop the run).
    LeaseLost,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::HaltOnError => "halt-on-error",
            Reason::Interrupted => "interrupted",
            Reason::BadInput => "bad-input",
            Reason::LeaseLost => "lease-lost",
        }
    }
}

/// When a job ran.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub start: SystemTime,
    pub end: SystemTime,
    /// Measured with a monotonic clock.
    pub duration: Duration,
}

/// One run of a job's command.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: Status,
    /// Why taskherd terminated it, if it did (other than for its timeout).
    pub reason: Option<Reason>,
    pub times: Option<Times>,
    /// With `--output dir:PATH`, the file holding its output.
    pub output: Option<PathBuf>,
}

/// The fate of one job.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    /// Why it did not start, or why it was killed (when taskherd signalled it).
    pub reason: Option<Reason>,
    pub times: Option<Times>,
    /// With `--output dir:PATH`, the file holding its output.
    pub output: Option<PathBuf>,
    /// The attempts before the last one (`--retries`), oldest first; the fields above are
    /// the last attempt's.
    pub attempts: Vec<Attempt>,
}

impl Outcome {
    /// A job that never started.
    pub fn not_started(reason: Option<Reason>) -> Outcome {
        Outcome {
            status: Status::NotStarted,
            reason,
            times: None,
            output: None,
            attempts: Vec::new(),
        }
    }
}
