//! `--joblog FILE`: GNU parallel's joblog, so that scripts written for `parallel --joblog` can
//! read taskherd's.
//!
//! A header line, then one line per job that ran, in the order jobs end, each flushed as it is
//! written; fields are separated by a TAB:
//!
//! | field        | taskherd writes                                                          |
//! |--------------|--------------------------------------------------------------------------|
//! | `Seq`        | the job's line number in the job file (GNU parallel: the job's number)   |
//! | `Host`       | `:` (GNU parallel's name for the local machine)                          |
//! | `Starttime`  | wall-clock start, seconds since the epoch with 3 decimals                |
//! | `JobRuntime` | run time in seconds, 3 decimals, right-aligned in 10 characters (`%10.3f`) |
//! | `Send`       | `0` (nothing is transferred)                                             |
//! | `Receive`    | `0`                                                                      |
//! | `Exitval`    | the exit status; for a job killed by a signal, 128 + the signal, as the shell's `$?` and GNU parallel (since 20221122) give it |
//! | `Signal`     | the signal that killed the job, else `0`                                 |
//! | `Command`    | the command, its bytes as they are (not necessarily UTF-8)               |
//!
//! Jobs that never ran (not started, or could not be started) get no line, as in GNU parallel.
//! The run time is cut to whole milliseconds, as GNU parallel does; it comes from a monotonic
//! clock.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::jobfile::Job;
use crate::outcome::{Outcome, Status};
use crate::record_writer::{Backlog, RecordWriter};

/// The header line, as GNU parallel writes it.
pub const HEADER: &str =
    "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n";

/// Writes joblog lines to a file, from a thread of its own once the run started (as the
/// report: a joblog nobody reads, a FIFO or `>(...)` whose reader stalled, holds up no part of
/// the run; see [`crate::record_writer`]).
#[derive(Debug)]
pub struct Joblog {
    lines: RecordWriter,
    /// The file, to empty when the run starts.
    to_empty: std::fs::File,
}

/// Whether a `--joblog` path is one taskherd refuses: `-` (standard output is not supported).
pub fn check_path(path: &Path) -> Result<(), String> {
    if path.as_os_str() == "-" {
        return Err(
            "--joblog -: the joblog cannot go to standard output; give a file name".to_owned(),
        );
    }
    Ok(())
}

impl Joblog {
    /// Opens (or creates) the file, leaving what it holds as it is until [`start`](Self::start):
    /// a run that fails before it starts loses no earlier joblog.
    pub fn open(path: &Path) -> io::Result<Joblog> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let to_empty = file.try_clone()?;
        Ok(Joblog {
            lines: RecordWriter::new("joblog", Box::new(file)),
            to_empty,
        })
    }

    /// Empties the file, writes the header and starts the thread that writes the lines: the
    /// run starts.
    ///
    /// # Errors
    ///
    /// The file cannot be emptied or written, or the thread cannot be started.
    pub fn start(&mut self) -> io::Result<()> {
        // The clone shares the file position with the writer's file.
        crate::report::empty(&mut self.to_empty)?;
        if let Some(file) = self.lines.file() {
            file.write_all(HEADER.as_bytes())?;
            file.flush()?;
        }
        self.lines.start("taskherd-joblog")
    }

    /// The lines waiting to be written, for the run to hold back new jobs.
    pub fn backlog(&self) -> Arc<Backlog> {
        self.lines.backlog()
    }

    /// Queues the line of a job that ran, written and flushed by the joblog's thread; does
    /// nothing for a job that did not.
    ///
    /// Returns the error of the first write that failed, once; after it nothing more is
    /// written and `None` is returned, so the caller reports one error.
    pub fn write(&mut self, job: &Job, outcome: &Outcome) -> Option<io::Error> {
        self.lines.send(line(job, outcome)?).err()
    }

    /// Waits until every line queued is written; returns the error writing one, if it was
    /// not said yet. (Never resolves while the reader of a pipe reads nothing: the caller
    /// bounds the wait.)
    pub async fn finish(&mut self) -> Option<io::Error> {
        self.lines.finish().await
    }

    /// Whether a write failed.
    pub fn failed(&self) -> bool {
        self.lines.failed()
    }
}

/// The joblog line of a job, or `None` for a job that did not run. A job whose last attempt
/// did not run (a retry that could not start) is logged with its last attempt that did.
pub fn line(job: &Job, outcome: &Outcome) -> Option<Vec<u8>> {
    let (status, times) = std::iter::once((&outcome.status, &outcome.times))
        .chain(outcome.attempts.iter().rev().map(|a| (&a.status, &a.times)))
        .find_map(|(status, times)| Some((status, times.as_ref()?)))?;
    let (exitval, signal) = match status {
        Status::Succeeded => (0, 0),
        Status::Failed { code } => (*code, 0),
        Status::Killed { signal } => (128 + *signal, *signal),
        // GNU parallel writes -1 for a job it killed for running past `--timeout`, with the
        // signal that ended it.
        Status::TimedOut { signal, .. } => (-1, signal.unwrap_or(0)),
        // Neither has times: returned above.
        Status::NotStarted | Status::Error { .. } => return None,
    };
    let mut line = format!(
        "{}\t:\t{}\t{:>10}\t0\t0\t{exitval}\t{signal}\t",
        job.line,
        epoch_millis(times.start),
        millis(times.duration, false),
    )
    .into_bytes();
    line.extend_from_slice(&job.command);
    line.push(b'\n');
    Some(line)
}

/// Seconds since the epoch with 3 decimals, rounded to the nearest millisecond.
fn epoch_millis(time: SystemTime) -> String {
    millis(time.duration_since(UNIX_EPOCH).unwrap_or_default(), true)
}

/// A duration as seconds with 3 decimals: rounded, or cut (`round` false).
fn millis(duration: Duration, round: bool) -> String {
    let nanos = duration.as_nanos() + if round { 500_000 } else { 0 };
    let ms = nanos / 1_000_000;
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobfile::parse;
    use crate::outcome::Times;

    fn ran(status: Status, start_ns: u64, duration_ns: u64) -> Outcome {
        let start = UNIX_EPOCH + Duration::from_nanos(start_ns);
        Outcome {
            status,
            reason: None,
            times: Some(Times {
                start,
                end: start + Duration::from_nanos(duration_ns),
                duration: Duration::from_nanos(duration_ns),
            }),
            output: None,
            attempts: Vec::new(),
        }
    }

    #[test]
    fn lines_match_gnu_parallels_format() {
        let jobs = parse(b"\na b :: echo \xff\tx\n").unwrap();
        let job = &jobs[0];
        let outcome = ran(Status::Succeeded, 1_764_102_896_123_600_000, 1_234_999_999);
        assert_eq!(
            line(job, &outcome).unwrap(),
            b"2\t:\t1764102896.124\t     1.234\t0\t0\t0\t0\techo \xff\tx\n"
        );
        let outcome = ran(Status::Failed { code: 3 }, 5_000_000, 12_345_678_000_000);
        assert_eq!(
            line(job, &outcome).unwrap(),
            b"2\t:\t0.005\t 12345.678\t0\t0\t3\t0\techo \xff\tx\n"
        );
        let outcome = ran(Status::Killed { signal: 15 }, 0, 0);
        assert_eq!(
            line(job, &outcome).unwrap(),
            b"2\t:\t0.000\t     0.000\t0\t0\t143\t15\techo \xff\tx\n"
        );
    }

    #[test]
    fn jobs_that_did_not_run_have_no_line() {
        let jobs = parse(b"true\n").unwrap();
        assert!(line(&jobs[0], &Outcome::not_started(None)).is_none());
        let error = Outcome {
            status: Status::Error {
                message: "no".into(),
            },
            ..Outcome::not_started(None)
        };
        assert!(line(&jobs[0], &error).is_none());
    }

    /// A job whose retry could not start ran once: the attempt that ran is logged.
    #[test]
    fn a_retry_that_could_not_start_logs_the_attempt_that_ran() {
        let jobs = parse(b"true\n").unwrap();
        let error = Outcome {
            status: Status::Error {
                message: "no".into(),
            },
            ..Outcome::not_started(None)
        };
        let earlier = ran(Status::Failed { code: 4 }, 1_000_000_000, 2_000_000);
        let retried = Outcome {
            attempts: vec![crate::outcome::Attempt {
                status: earlier.status,
                reason: None,
                times: earlier.times,
                output: None,
            }],
            ..error
        };
        assert_eq!(
            line(&jobs[0], &retried).unwrap(),
            b"1\t:\t1.000\t     0.002\t0\t0\t4\t0\ttrue\n"
        );
    }

    #[test]
    fn standard_output_is_refused() {
        assert!(check_path(Path::new("-")).is_err());
        assert!(check_path(Path::new("./-")).is_ok());
    }
}
