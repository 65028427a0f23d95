//! The JSON Lines report: one record per job (two for a failure run again), written as each
//! job's fate is known.
//!
//! Records come in the order jobs end, not in file order; `line` says which job a record is
//! for. Every job gets one record, whether it ran or not; a job that a `--resume` or
//! `--resume-failed` run runs again for an earlier failure gets two: a provisional one when the
//! run starts (see [`Report::write_pending`]), then its own, which counts (the last record of
//! a job counts). Each record is flushed as it is written, so a report stays useful if taskherd
//! itself is killed, even with `kill -9`: the failures a resumed run had still to run again
//! stay in the report that replaced the one they were read from. (Flushed, not synced: a
//! power loss may lose what the system had not written yet.)
//!
//! Fields, in this order:
//!
//! | field           | type              | meaning                                                       |
//! |-----------------|-------------------|---------------------------------------------------------------|
//! | `line`          | number            | the job's line in the job file                                |
//! | `groups`        | array of strings  | the job's groups                                              |
//! | `command`       | string            | the command                                                   |
//! | `ran`           | bool              | whether the command was started                               |
//! | `status`        | string            | `succeeded`, `failed`, `killed`, `timed_out`, `not_started` or `error` |
//! | `exit_code`     | number or null    | the exit status, if the command exited                        |
//! | `signal`        | number or null    | the signal that killed it, if one did                         |
//! | `signal_name`   | string or null    | that signal's name, such as `SIGTERM`                         |
//! | `reason`        | string or null    | why it did not start or was killed: `halt-on-error`, `interrupted`, `timeout`, `lease-lost`, `bad-input`, `resumed`, `pending` |
//! | `error`         | string or null    | for `error`: why the command could not be started             |
//! | `start`, `end`  | string or null    | wall-clock times, RFC 3339 in UTC with microseconds           |
//! | `duration_secs` | number or null    | run time measured with a monotonic clock                      |
//! | `output`        | string or null    | with `--output dir:PATH`, the file holding the job's output   |
//! | `timeout_secs`  | number or null    | for `timed_out`: the timeout the job ran past                 |
//! | `attempts`      | array of objects  | every attempt (`--retries`), the last included, each with the fields from `status` to `timeout_secs`; empty if the job never started |
//! | `previous_status` | string or null  | with `--resume` or `--resume-failed`: the earlier failure the job was run again for |
//!
//! The fields from `status` to `timeout_secs` are the last attempt's.
//!
//! A job skipped by `--resume` or `--resume-failed` gets a record too, with `reason` `resumed`
//! and `status` `skipped` if it was done before, `not_started` if it never ran (see
//! [`Report::write_skipped`]).
//!
//! Records are written by a thread of their own (see [`crate::record_writer`]), so that a report
//! nobody reads (`--report -` or a pipe, its reader stalled) holds up no part of the run:
//! signals are acted on at once. Past a bound of records waiting, no new job starts until the
//! reader reads. After a failed write nothing more is written (a later record would follow a
//! line cut in the middle).

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::jobfile::Job;
use crate::outcome::{Outcome, Reason, Status, Times};
use crate::record_writer::{Backlog, RecordWriter};

/// Writes report records to a file, or to standard output.
#[derive(Debug)]
pub struct Report {
    records: RecordWriter,
    /// The report file, to empty when the run starts (`None` for standard output).
    to_empty: Option<File>,
}

/// Empties a report or joblog file opened without truncation, once the run starts. Only a
/// regular file is emptied: a pipe (`>(...)`, a FIFO) or a device (`/dev/null`,
/// `/dev/stdout`) has nothing to empty, and cannot be truncated or rewound.
pub fn empty(file: &mut File) -> io::Result<()> {
    use std::io::Seek;
    if file.metadata()?.is_file() {
        file.set_len(0)?;
        file.rewind()?;
    }
    Ok(())
}

/// Whether a `--report` path means standard output (`-`).
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

impl Report {
    /// Opens (or creates) the report file, leaving what it holds as it is until
    /// [`start`](Self::start): a run that fails before it starts loses no earlier report (maybe
    /// the one `--resume` read). `-` is standard output.
    pub fn open(path: &Path) -> io::Result<Report> {
        let (sink, to_empty): (Box<dyn io::Write + Send>, _) = if is_stdout(path) {
            (Box::new(io::stdout()), None)
        } else {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            let to_empty = file.try_clone()?;
            (Box::new(file), Some(to_empty))
        };
        Ok(Report {
            records: RecordWriter::new("report", sink),
            to_empty,
        })
    }

    /// Empties the report file and starts the thread that writes the records: the run starts.
    ///
    /// # Errors
    ///
    /// The file cannot be emptied, or the thread cannot be started.
    pub fn start(&mut self) -> io::Result<()> {
        if let Some(file) = &mut self.to_empty {
            // The clone shares the file position with the writer's file.
            empty(file)?;
        }
        self.records.start("taskherd-report")
    }

    /// The records waiting to be written, for the run to hold back new jobs.
    pub fn backlog(&self) -> Arc<Backlog> {
        self.records.backlog()
    }

    /// Queues the record of one job, written and flushed by the report's thread.
    ///
    /// # Errors
    ///
    /// An earlier record could not be written (said once; nothing is written after it).
    pub fn write(&mut self, job: &Job, outcome: &Outcome) -> io::Result<()> {
        self.send(&Record::new(job, outcome))
    }

    fn send(&mut self, record: &Record<'_>) -> io::Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        self.records.send(line)
    }

    /// Waits until every record queued is written; returns the error writing one, if it was
    /// not said yet. (Never resolves while the reader of a pipe reads nothing: the caller
    /// bounds the wait.)
    pub async fn finish(mut self) -> Option<io::Error> {
        self.records.finish().await
    }

    /// Queues the provisional record of a job that a `--resume` or `--resume-failed` run runs
    /// again for an earlier failure (as [`write`](Self::write)): `not_started`, reason
    /// `pending`, the failure as `previous_status`. Written when the run starts (when the job's
    /// line is read, for a pipe), so that a run killed before the job's own record (`kill -9`,
    /// a crash) leaves the failure in the new report, which may have replaced the report it
    /// was read from; the job's own record follows and counts.
    pub fn write_pending(&mut self, job: &Job) -> io::Result<()> {
        let outcome = Outcome::not_started(None);
        let mut record = Record::new(job, &outcome);
        record.last.reason = Some("pending");
        self.send(&record)
    }

    /// Queues the record of a job skipped by `--resume` or `--resume-failed` (as
    /// [`write`](Self::write)):
    /// status `skipped` if it was `done` before, else `not_started`; reason `resumed`;
    /// otherwise like a job that did not start (with its earlier failure as
    /// `previous_status`, for a failure the run was to run again on a line never read, or
    /// left out of the job file).
    pub fn write_skipped(&mut self, job: &Job, done: bool) -> io::Result<()> {
        let outcome = Outcome::not_started(None);
        let mut record = Record::new(job, &outcome);
        if done {
            record.last.status = "skipped";
        }
        record.last.reason = Some("resumed");
        self.send(&record)
    }
}

#[derive(Debug, Serialize)]
struct Record<'a> {
    line: usize,
    groups: Vec<&'a str>,
    /// Not UTF-8 bytes of the command show as U+FFFD (JSON text is UTF-8).
    command: std::borrow::Cow<'a, str>,
    ran: bool,
    /// The last attempt's fields.
    #[serde(flatten)]
    last: AttemptRecord<'a>,
    /// Every attempt, the last one included; empty for a job that never started.
    attempts: Vec<AttemptRecord<'a>>,
    /// With `--resume-failed`: the earlier failure this job was run again for.
    previous_status: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct AttemptRecord<'a> {
    status: &'static str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    signal_name: Option<&'static str>,
    reason: Option<&'static str>,
    error: Option<&'a str>,
    start: Option<String>,
    end: Option<String>,
    duration_secs: Option<f64>,
    output: Option<String>,
    timeout_secs: Option<f64>,
}

impl<'a> AttemptRecord<'a> {
    fn new(
        status: &'a Status,
        reason: Option<Reason>,
        times: Option<&Times>,
        output: Option<&Path>,
    ) -> Self {
        let (exit_code, signal, error) = match status {
            Status::Succeeded => (Some(0), None, None),
            Status::Failed { code } => (Some(*code), None, None),
            Status::Killed { signal } => (None, Some(*signal), None),
            Status::TimedOut { code, signal, .. } => (*code, *signal, None),
            Status::NotStarted => (None, None, None),
            Status::Error { message } => (None, None, Some(message.as_str())),
        };
        AttemptRecord {
            status: status.name(),
            exit_code,
            signal,
            signal_name: signal.and_then(signal_name),
            reason: match status {
                Status::TimedOut { .. } => Some("timeout"),
                _ => reason.map(Reason::name),
            },
            error,
            start: times.map(|t| rfc3339(t.start)),
            end: times.map(|t| rfc3339(t.end)),
            duration_secs: times.map(|t| round_micros(t.duration)),
            output: output.map(|path| path.display().to_string()),
            timeout_secs: match status {
                Status::TimedOut { after, .. } => Some(round_micros(*after)),
                _ => None,
            },
        }
    }
}

impl<'a> Record<'a> {
    fn new(job: &'a Job, outcome: &'a Outcome) -> Self {
        let last = || {
            AttemptRecord::new(
                &outcome.status,
                outcome.reason,
                outcome.times.as_ref(),
                outcome.output.as_deref(),
            )
        };
        let mut attempts: Vec<AttemptRecord<'a>> = outcome
            .attempts
            .iter()
            .map(|a| AttemptRecord::new(&a.status, a.reason, a.times.as_ref(), a.output.as_deref()))
            .collect();
        if outcome.status != Status::NotStarted {
            attempts.push(last());
        }
        Record {
            line: job.line,
            groups: job.groups.iter().map(|group| &**group).collect(),
            command: String::from_utf8_lossy(&job.command),
            ran: outcome.status.ran() || !outcome.attempts.is_empty(),
            last: last(),
            attempts,
            previous_status: job.resumed,
        }
    }
}

fn round_micros(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e6
}

/// The name of a signal, for the common ones.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return None,
    })
}

/// Formats a time as RFC 3339 in UTC with microseconds: `2025-11-25T20:35:01.123456Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let (year, month, day) = civil_from_days(days);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since_epoch.subsec_micros()
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // month is in [1, 12] and day in [1, 31] by construction.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let time = UNIX_EPOCH + Duration::new(951_782_400 + 3_723, 4_000);
        assert_eq!(rfc3339(time), "2000-02-29T01:02:03.000004Z");
        let time = UNIX_EPOCH + Duration::from_secs(1_764_102_896);
        assert_eq!(rfc3339(time), "2025-11-25T20:34:56.000000Z");
        let time = UNIX_EPOCH + Duration::from_secs(4_107_542_399);
        assert_eq!(rfc3339(time), "2100-02-28T23:59:59.000000Z");
    }

    #[test]
    fn civil_dates_round_trip_over_centuries() {
        // Walk day by day from 1970 to 2400 and check the calendar advances by one day.
        let mut previous = civil_from_days(0);
        assert_eq!(previous, (1970, 1, 1));
        for days in 1..157_000 {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let next_day = y == py && m == pm && d == pd + 1;
            let next_month = y == py && m == pm + 1 && d == 1;
            let next_year = y == py + 1 && m == 1 && d == 1 && pm == 12 && pd == 31;
            assert!(
                next_day || next_month || next_year,
                "{previous:?} -> {y}-{m}-{d}"
            );
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            if m == 2 && d == 29 {
                assert!(leap, "{y} is not a leap year");
            }
            previous = (y, m, d);
        }
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGTERM), Some("SIGTERM"));
        assert_eq!(signal_name(libc::SIGKILL), Some("SIGKILL"));
        assert_eq!(signal_name(1000), None);
    }
}
