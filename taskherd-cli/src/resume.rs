//! `--resume REPORT` and `--resume-failed REPORT`: which jobs of the job file to run again,
//! from the JSON Lines report of an earlier run.
//!
//! # Matching
//!
//! A job matches a record by its command and groups (the record's `command`, the lossy UTF-8
//! of the command, and its `groups`, in any order), not by line number, so lines may be added
//! to or removed from the job file between runs. Copies count: a command with the same groups written twice
//! in the job file matches at most as many records as there are. Among the copies, a record
//! with the job's own line number is matched first, so an unchanged job file resumes line for
//! line.
//!
//! A report may hold several records of one job (same line, command and groups: reports
//! appended to one file); the last one counts.
//!
//! - `--resume`: a job matching a record `succeeded` or `skipped` (done before that run) is
//!   skipped; everything else runs (failures, jobs never started, jobs the report lacks).
//! - `--resume-failed`: only a job matching a failure (`failed`, `killed`, `timed_out`,
//!   `error`, or `not_started` with such a `previous_status`: a failure that an earlier
//!   run was to run again and did not start) runs; everything else is skipped, jobs never
//!   started and jobs the report lacks included.
//!
//! In both modes a job run again for a failure it matched keeps that failure as
//! `previous_status` in the new report, and so does a job of a line left out of the job file,
//! or of a pipe's line that a stopped run never read (carried over as `not_started`), so that
//! failures are not forgotten by a run that leaves them out or stops early, whichever mode the
//! next run uses (a job done on such a line is carried over as `skipped`). With `--resume-failed`, the
//! skipped jobs that were done get a
//!   `skipped` record; the others (never started, or not in the report) get a `not_started`
//!   record with reason `resumed`, so that a later `--resume` from the new report runs them.
//!   (GNU parallel's `--resume-failed` also runs the jobs not yet run: here that is
//!   `--resume`.)
//!
//! Report statuses are matched as strings, so a report may hold any status taskherd writes.
//!
//! # Errors
//!
//! A report that cannot be read, or a line that is not a record, stops the run before anything
//! runs (`FILE:LINE: why`). A last line cut short (no final newline, not valid JSON: taskherd
//! was killed while writing it) is ignored with a warning.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Deserialize;

use crate::jobfile::{Group, Job, LineError};
use crate::table;

/// Which jobs an earlier report selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--resume`: skip what succeeded.
    Resume,
    /// `--resume-failed`: run only what failed.
    ResumeFailed,
}

impl Mode {
    /// The option, as written on the command line.
    pub fn option(self) -> &'static str {
        match self {
            Mode::Resume => "--resume",
            Mode::ResumeFailed => "--resume-failed",
        }
    }

    /// The mode and report path given, if any (clap lets at most one through).
    pub fn of<'a>(
        resume: Option<&'a Path>,
        resume_failed: Option<&'a Path>,
    ) -> Option<(Mode, &'a Path)> {
        match (resume, resume_failed) {
            (Some(path), _) => Some((Mode::Resume, path)),
            (None, Some(path)) => Some((Mode::ResumeFailed, path)),
            (None, None) => None,
        }
    }

    /// Whether a record with this status is one the mode looks for: done (`--resume`) or
    /// failed (`--resume-failed`).
    fn wants(self, status: &str) -> bool {
        match self {
            Mode::Resume => matches!(status, "succeeded" | "skipped"),
            Mode::ResumeFailed => is_failure(status),
        }
    }
}

fn is_failure(status: &str) -> bool {
    matches!(status, "failed" | "killed" | "timed_out" | "error")
}

/// Every status a report record may have.
const STATUSES: &[&str] = &[
    "succeeded",
    "failed",
    "killed",
    "timed_out",
    "error",
    "not_started",
    "skipped",
];

/// `status` as the static string of [`STATUSES`], if it is one.
fn known(status: &str) -> Option<&'static str> {
    STATUSES.iter().copied().find(|known| *known == status)
}

/// What identifies a job across runs: its command (lossy UTF-8) and its groups, a set (sorted:
/// `a b :: x` is `b a :: x`, as everywhere else).
type Key = (String, Vec<String>);

/// `groups` as in a [`Key`]: sorted, each once.
fn group_set(mut groups: Vec<String>) -> Vec<String> {
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// The fields of a report record that resuming reads; the others are ignored.
#[derive(Debug, Deserialize)]
struct Record {
    line: usize,
    groups: Vec<String>,
    command: String,
    status: String,
    /// Absent from reports written before it was added.
    #[serde(default)]
    previous_status: Option<String>,
}

/// A record a job can take: its line, and for a record `--resume-failed` wants, its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Taken {
    line: usize,
    failure: Option<&'static str>,
}

/// Records by command and groups.
type Records = HashMap<Key, Vec<Taken>>;

/// The records of a report that the mode looks for.
#[derive(Debug, Default)]
pub struct Previous {
    /// The wanted records: jobs done (`--resume` skips them), or failures (`--resume-failed`
    /// runs them again).
    wanted: Records,
    /// The records the mode does not want but must not forget. `--resume`: the failures, so
    /// that a job it runs again keeps its failure as `previous_status`. `--resume-failed`: the
    /// jobs done (`succeeded`, or `skipped` as done before), so that it knows which of the
    /// jobs it skips were done (the others never ran).
    kept: Records,
    /// A warning about a last line cut short.
    pub warning: Option<String>,
}

/// Why a report could not be used.
#[derive(Debug)]
pub enum LoadError {
    Read(std::io::Error),
    Lines(Vec<LineError>),
}

/// Reads the report at `path`; errors and the warning name it as it is written.
pub fn load(path: &Path, mode: Mode) -> Result<Previous, LoadError> {
    let text = std::fs::read(path).map_err(LoadError::Read)?;
    parse(&text, mode, &path.display().to_string()).map_err(LoadError::Lines)
}

/// Parses a report's text; `source` names it in the warning.
pub fn parse(text: &[u8], mode: Mode, source: &str) -> Result<Previous, Vec<LineError>> {
    let mut errors = Vec::new();
    let mut warning = None;
    // The last record of each job (line, command, groups): its status, and its failure for
    // `--resume-failed` (its status, or the failure a `not_started` record keeps).
    let mut last: HashMap<(usize, Key), (&'static str, Option<&'static str>)> = HashMap::new();
    let pieces: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    // A final '\n' ends the last line: the empty piece after it is no line.
    let count = pieces.len() - usize::from(text.ends_with(b"\n") || text.is_empty());
    for (index, piece) in pieces.iter().take(count).enumerate() {
        let line = index + 1;
        let record = match serde_json::from_slice::<Record>(piece) {
            Ok(record) => record,
            Err(error) => {
                // Cut short: the last line, without its newline, whose text ended before it
                // could be read (the end of the input, or a number ended by the cut, as `0.`).
                let at_end = error.is_eof() || (error.line() == 1 && error.column() >= piece.len());
                let cut_short = line == count && !text.ends_with(b"\n") && at_end;
                if cut_short {
                    warning = Some(format!(
                        "{source}:{line}: the last record is cut short (taskherd stopped while \
                         writing it?); it is ignored"
                    ));
                } else {
                    errors.push(LineError {
                        line,
                        message: format!("not a report record: {error}"),
                    });
                }
                continue;
            }
        };
        let Some(status) = known(&record.status) else {
            errors.push(LineError {
                line,
                message: format!("unknown status {:?}", record.status),
            });
            continue;
        };
        let previous = match record.previous_status.as_deref().map(known) {
            None => None,
            Some(Some(previous)) => Some(previous),
            Some(None) => {
                errors.push(LineError {
                    line,
                    message: format!(
                        "unknown previous_status {:?}",
                        record.previous_status.unwrap_or_default()
                    ),
                });
                continue;
            }
        };
        let failure = if is_failure(status) {
            Some(status)
        } else if status == "not_started" {
            previous.filter(|previous| is_failure(previous))
        } else {
            None
        };
        last.insert(
            (record.line, (record.command, group_set(record.groups))),
            (status, failure),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut wanted = Records::new();
    let mut kept = Records::new();
    for ((line, key), (status, failure)) in last {
        let done = Mode::Resume.wants(status);
        let records = match (mode, failure) {
            (Mode::Resume, _) if done => &mut wanted,
            (Mode::Resume, Some(_)) => &mut kept,
            (Mode::ResumeFailed, Some(_)) => &mut wanted,
            (Mode::ResumeFailed, None) if done => &mut kept,
            _ => continue,
        };
        records
            .entry(key)
            .or_default()
            .push(Taken { line, failure });
    }
    Ok(Previous {
        wanted,
        kept,
        warning,
    })
}

/// A job that `--resume` or `--resume-failed` does not run.
#[derive(Debug)]
pub struct Skipped {
    pub job: Job,
    /// It was done before (succeeded, or skipped as done): its record says `skipped`. A job
    /// `--resume-failed` skips that never ran is not done: its record says `not_started`, so a
    /// later `--resume` runs it.
    pub done: bool,
}

/// What [`select`] made of a job file and a report.
#[derive(Debug)]
pub struct Selected {
    /// The jobs to run, in file order.
    pub run: Vec<Job>,
    /// The jobs skipped, in file order.
    pub skipped: Vec<Skipped>,
    /// The jobs of the report that no line took (lines removed or commented out since), done
    /// or failed, in line order: not jobs of the run, but carried into its report (see
    /// [`leftovers`]).
    pub carried: Vec<Job>,
}

/// Splits `jobs` into those to run and those skipped, and the report's records no job took.
pub fn select(jobs: Vec<Job>, mut previous: Previous, mode: Mode) -> Selected {
    let keys: Vec<Key> = jobs.iter().map(key).collect();
    let matched = match_records(&jobs, &keys, &mut previous);
    let (mut run, mut skipped) = (Vec::new(), Vec::new());
    for (mut job, matched) in jobs.into_iter().zip(matched) {
        match decide(mode, &mut job, matched) {
            None => run.push(job),
            Some(done) => skipped.push(Skipped { job, done }),
        }
    }
    Selected {
        run,
        skipped,
        carried: leftovers(previous),
    }
}

/// Which record a job took: a wanted one, or one kept.
enum Match {
    Wanted(Taken),
    Kept(Taken),
}

/// What the record a job took (if any) means for it: `None` if it runs (its
/// [`resumed`](Job::resumed) failure set if it matched one); else whether it was done (see
/// [`Skipped::done`]).
fn decide(mode: Mode, job: &mut Job, matched: Option<Match>) -> Option<bool> {
    match (mode, matched) {
        // --resume skips what matched a success; a job run again for a failure keeps it
        // (`previous_status`).
        (Mode::Resume, Some(Match::Wanted(_))) => Some(true),
        (Mode::Resume, Some(Match::Kept(taken))) => {
            job.resumed = taken.failure;
            None
        }
        (Mode::Resume, None) => None,
        // --resume-failed runs what matched a failure, and skips the rest: done before, or
        // never run.
        (Mode::ResumeFailed, Some(Match::Wanted(taken))) => {
            job.resumed = taken.failure;
            None
        }
        (Mode::ResumeFailed, Some(Match::Kept(_))) => Some(true),
        (Mode::ResumeFailed, None) => Some(false),
    }
}

/// The record each of `jobs` (with their `keys`) takes, each record used once: first the
/// records with a job's own line, wanted or kept, then any other copy, wanted ones first.
fn match_records(jobs: &[Job], keys: &[Key], previous: &mut Previous) -> Vec<Option<Match>> {
    let mut matched: Vec<Option<Match>> = jobs
        .iter()
        .zip(keys)
        .map(|(job, key)| take_own(previous, key, job.line))
        .collect();
    for (index, key) in keys.iter().enumerate() {
        if matched[index].is_none() {
            matched[index] = take_any(previous, key);
        }
    }
    matched
}

/// The record of `key` with line `line`, wanted or kept, taken.
fn take_own(previous: &mut Previous, key: &Key, line: usize) -> Option<Match> {
    let take = |records: &mut Records| {
        let taken = records.get_mut(key)?;
        let at = taken.iter().position(|taken| taken.line == line)?;
        Some(taken.swap_remove(at))
    };
    take(&mut previous.wanted)
        .map(Match::Wanted)
        .or_else(|| take(&mut previous.kept).map(Match::Kept))
}

/// Any record of `key` left, a wanted one first, taken.
fn take_any(previous: &mut Previous, key: &Key) -> Option<Match> {
    let take = |records: &mut Records| records.get_mut(key)?.pop();
    take(&mut previous.wanted)
        .map(Match::Wanted)
        .or_else(|| take(&mut previous.kept).map(Match::Kept))
}

/// For a job file read as it is written: `None` if `job`, just read, runs (its
/// [`resumed`](Job::resumed) failure set if it matched one); else whether it was done
/// (see [`Skipped::done`]). A record with the job's own line is used if there is one, else any
/// copy: lines read later cannot be waited for, so among identical lines (same command and
/// groups) which copy runs may differ from a job file read whole.
pub fn skips(previous: &mut Previous, job: &mut Job, mode: Mode) -> Option<bool> {
    let key = key(job);
    let matched = take_own(previous, &key, job.line).or_else(|| take_any(previous, &key));
    decide(mode, job, matched)
}

/// The earlier report of a job file read as it is written, shared by the thread that reads
/// it (which takes the records its lines match) and the runner.
///
/// When the run stops before the input's end, or the input lacked some of the report's lines,
/// those lines are not jobs of the run, but the records of jobs done among them must not be
/// lost, nor those of the failures it was
/// to run again: [`carry_over`](Self::carry_over) returns them,
/// to be written as `skipped` (done) or as `not_started` keeping the failure as
/// `previous_status`, so that a later `--resume` still skips the jobs done and a later
/// `--resume-failed` still runs the failures.
///
/// # Invariant
///
/// Such a record is either taken by a line read, which gets its record at once (the reader
/// sends it, see `runner::EarlyRecords`, while it holds the lock), or returned by
/// `carry_over`, never both: once `carry_over` has taken the records, no line matches any.
/// The runner closes the channel of arrivals before, so the reader stops at its next line.
/// The reader holds the lock until the line's arrival is sent or refused (a failure's line
/// refused gets its last record then), so every record the reader sends comes before the
/// runner's last message: `carry_over` waits for the lock.
#[derive(Debug, Clone)]
pub struct Streamed {
    state: Arc<Mutex<StreamedState>>,
}

/// See [`Streamed`].
#[derive(Debug)]
pub struct StreamedState {
    mode: Mode,
    /// `None` once carried over.
    previous: Option<Previous>,
}

impl Streamed {
    pub fn new(mode: Mode, previous: Previous) -> Streamed {
        let state = StreamedState {
            mode,
            previous: Some(previous),
        };
        Streamed {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The records, locked: hold the guard until the decision about the line is sent.
    pub fn lock(&self) -> MutexGuard<'_, StreamedState> {
        // Every change under the lock leaves the state whole; a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The jobs done, and the failures to run again, that no line read took, in line order: a
    /// job with a [`resumed`](Job::resumed) failure is one of the failures, the others were
    /// done. The records are gone afterwards. Close the channel of arrivals first (see the
    /// invariant).
    pub fn carry_over(&self) -> Vec<Job> {
        self.lock()
            .previous
            .take()
            .map(leftovers)
            .unwrap_or_default()
    }
}

/// The jobs done and the failures to run again that `previous` still holds (no line took
/// them), in line order: a job with a [`resumed`](Job::resumed) failure is one of the
/// failures, the others were done. Their records in the new report (`skipped`, or
/// `not_started` with the failure as `previous_status`) keep them done for a later
/// `--resume`, or failed for a later `--resume-failed`, should their lines come back.
fn leftovers(previous: Previous) -> Vec<Job> {
    let mut jobs = Vec::new();
    // The jobs done and the failures, wanted or kept: a record's failure tells them apart.
    for ((command, groups), taken) in [previous.wanted, previous.kept].into_iter().flatten() {
        for Taken { line, failure } in taken {
            jobs.push(Job {
                line,
                groups: groups
                    .iter()
                    .map(|group| Group::from(group.as_str()))
                    .collect(),
                command: command.clone().into_bytes(),
                separated: !groups.is_empty(),
                timeout: None,
                retries: None,
                resumed: failure,
            });
        }
    }
    jobs.sort_by(|a, b| (a.line, &a.command).cmp(&(b.line, &b.command)));
    jobs
}

impl StreamedState {
    /// As [`skips`]; `None` too once the records were carried over (the run has stopped).
    pub fn skips(&mut self, job: &mut Job) -> Option<bool> {
        let mode = self.mode;
        skips(self.previous.as_mut()?, job, mode)
    }
}

fn key(job: &Job) -> Key {
    (
        String::from_utf8_lossy(&job.command).into_owned(),
        group_set(job.groups.iter().map(|group| group.to_string()).collect()),
    )
}

/// The plan's line for `--dry-run`: `--resume r.jsonl: 3 jobs skipped (lines 1-2, 4), 2 to run`.
pub fn plan_line(
    mode: Mode,
    path: &Path,
    skipped: &[Skipped],
    run: usize,
    carried: usize,
) -> String {
    let mut out = format!(
        "{} {}: {} skipped",
        mode.option(),
        path.display(),
        table::count(skipped.len(), "job")
    );
    if !skipped.is_empty() {
        let lines: Vec<usize> = skipped.iter().map(|skipped| skipped.job.line).collect();
        let noun = if lines.len() == 1 { "line" } else { "lines" };
        out.push_str(&format!(" ({noun} {})", ranges(&lines)));
    }
    out.push_str(&format!(", {run} to run"));
    if carried > 0 {
        // Records of lines left out of the job file, kept (see `Selected::carried`).
        out.push_str(&format!(
            "; {} of lines not in the job file kept",
            table::count(carried, "record")
        ));
    }
    out.push('\n');
    out
}

/// At most this many ranges of line numbers are listed.
const MAX_RANGES: usize = 20;

/// Ascending line numbers as ranges: `1-3, 5, 7-8`; past [`MAX_RANGES`], `...`.
fn ranges(lines: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &line in lines {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == line => *end = line,
            _ => ranges.push((line, line)),
        }
    }
    let mut parts: Vec<String> = ranges
        .iter()
        .take(MAX_RANGES)
        .map(|&(start, end)| {
            if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            }
        })
        .collect();
    if ranges.len() > MAX_RANGES {
        parts.push("...".to_owned());
    }
    parts.join(", ")
}

/// Adds the skipped jobs to the first line of the summary: `...: 2 succeeded; 3 more skipped
/// (--resume)`; nothing if none was skipped.
pub fn summary_with_skipped(summary: &str, mode: Mode, skipped: usize) -> String {
    if skipped == 0 {
        return summary.to_owned();
    }
    let note = format!("; {skipped} more skipped ({})", mode.option());
    match summary.find('\n') {
        Some(end) => format!("{}{note}{}", &summary[..end], &summary[end..]),
        None => format!("{summary}{note}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobfile;

    fn record(line: usize, groups: &str, command: &str, status: &str) -> String {
        format!(
            "{{\"line\":{line},\"groups\":{groups},\"command\":{command:?},\"ran\":true,\
             \"status\":\"{status}\",\"exit_code\":null}}\n"
        )
    }

    fn lines(jobs: &[Job]) -> Vec<usize> {
        jobs.iter().map(|job| job.line).collect()
    }

    fn skipped_lines(skipped: &[Skipped]) -> Vec<(usize, bool)> {
        skipped.iter().map(|s| (s.job.line, s.done)).collect()
    }

    /// However a last record without its newline was cut (taskherd killed while writing it),
    /// it is ignored with a warning, never an error: cut at every byte of a record holding
    /// every kind of value (a cut right after a number's decimal point, `0.`, was an error:
    /// `serde_json` calls it an invalid number, not the end of the input).
    #[test]
    fn a_last_record_cut_anywhere_is_ignored_with_a_warning() {
        let first = record(1, "[]", "x", "succeeded");
        let last = r#"{"line":2,"groups":["db","h\u00e9"],"command":"echo \"\u00fc\" ü","ran":true,"status":"failed","exit_code":1,"signal":null,"duration_secs":0.25,"retry":-1.5e-3,"attempts":[{"n":false}]}"#;
        let whole = format!("{first}{last}\n");
        assert!(parse(whole.as_bytes(), Mode::Resume, "r").is_ok_and(|p| p.warning.is_none()));
        for cut in (1..last.len()).filter(|&cut| last.is_char_boundary(cut)) {
            let text = format!("{first}{}", &last[..cut]);
            match parse(text.as_bytes(), Mode::Resume, "r") {
                Ok(previous) => assert!(
                    previous.warning.is_some(),
                    "no warning, cut after {:?}",
                    &last[..cut]
                ),
                Err(errors) => panic!("cut after {:?}: {errors:?}", &last[..cut]),
            }
        }
    }

    #[test]
    fn resume_skips_successes_counting_copies() {
        let jobs = jobfile::parse(b"a :: x\na :: x\nb :: x\ny\nz\n").unwrap();
        let report = [
            record(2, "[\"a\"]", "x", "succeeded"),
            record(3, "[\"b\"]", "x", "failed"),
            record(4, "[]", "y", "skipped"),
            record(5, "[]", "z", "not_started"),
        ]
        .concat();
        let previous = parse(report.as_bytes(), Mode::Resume, "r").unwrap();
        let Selected { run, skipped, .. } = select(jobs, previous, Mode::Resume);
        // One copy of `a :: x` succeeded, on line 2: that one is skipped, line 1 runs.
        assert_eq!(skipped_lines(&skipped), [(2, true), (4, true)]);
        assert_eq!(lines(&run), [1, 3, 5]);
    }

    #[test]
    fn a_failure_kept_as_previous_status_is_still_a_failure() {
        let jobs = jobfile::parse(b"x\ny\nz\nw\n").unwrap();
        let kept = |line: usize, command: &str, previous: &str| {
            format!(
                "{{\"line\":{line},\"groups\":[],\"command\":{command:?},\"ran\":false,\
                 \"status\":\"not_started\",\"previous_status\":{previous}}}\n"
            )
        };
        let report = [
            kept(1, "x", "\"timed_out\""),
            // Never run, and no failure before: not wanted.
            kept(2, "y", "null"),
            record(3, "[]", "z", "killed"),
            // Run again for a failure, and succeeded: done.
            "{\"line\":4,\"groups\":[],\"command\":\"w\",\"ran\":true,\
             \"status\":\"succeeded\",\"previous_status\":\"failed\"}\n"
                .to_owned(),
        ]
        .concat();
        let previous = parse(report.as_bytes(), Mode::ResumeFailed, "r").unwrap();
        let Selected { run, skipped, .. } = select(jobs.clone(), previous, Mode::ResumeFailed);
        assert_eq!(lines(&run), [1, 3]);
        let resumed: Vec<_> = run.iter().map(|job| job.resumed).collect();
        assert_eq!(resumed, [Some("timed_out"), Some("killed")]);
        assert_eq!(skipped_lines(&skipped), [(2, false), (4, true)]);
        // To `--resume`, a job kept failed is not done: it runs, and keeps its failure as
        // `--resume-failed` does.
        let previous = parse(report.as_bytes(), Mode::Resume, "r").unwrap();
        let Selected { run, skipped, .. } = select(jobs, previous, Mode::Resume);
        assert_eq!(lines(&run), [1, 2, 3]);
        let resumed: Vec<_> = run.iter().map(|job| job.resumed).collect();
        assert_eq!(resumed, [Some("timed_out"), None, Some("killed")]);
        assert_eq!(skipped_lines(&skipped), [(4, true)]);
        // A status taskherd never writes is an error, as for `status`.
        let bad = kept(1, "x", "\"flaky\"");
        let errors = parse(bad.as_bytes(), Mode::ResumeFailed, "r").unwrap_err();
        assert!(
            errors[0].message.contains("unknown previous_status"),
            "{errors:?}"
        );
    }

    #[test]
    fn copies_match_other_lines_when_the_file_changed() {
        let jobs = jobfile::parse(b"new\nx\nx\nx\n").unwrap();
        let report = [
            record(1, "[]", "x", "succeeded"),
            record(2, "[]", "x", "succeeded"),
        ]
        .concat();
        let previous = parse(report.as_bytes(), Mode::Resume, "r").unwrap();
        let Selected { run, skipped, .. } = select(jobs, previous, Mode::Resume);
        // Line 2 matches its own line; line 3 takes the other record.
        assert_eq!(skipped_lines(&skipped), [(2, true), (3, true)]);
        assert_eq!(lines(&run), [1, 4]);
    }

    /// Among copies, a job takes the record with its own line first whatever its status: a
    /// job whose own record failed took another line's success (and was skipped) while the
    /// copy whose own line succeeded ran, with the failure as its `previous_status`. Found by
    /// a review.
    #[test]
    fn a_job_takes_its_own_line_first_whatever_its_status() {
        let jobs = jobfile::parse(b"other\nx\nx\n").unwrap();
        let report = [
            record(1, "[]", "x", "succeeded"),
            record(2, "[]", "x", "failed"),
        ]
        .concat();
        for mode in [Mode::Resume, Mode::ResumeFailed] {
            let previous = parse(report.as_bytes(), mode, "r").unwrap();
            let Selected { run, skipped, .. } = select(jobs.clone(), previous, mode);
            // Line 2 has its own record, the failure: `--resume` and `--resume-failed` run it;
            // line 3 takes the success (line 1's record) and is skipped as done.
            let resumed: Vec<_> = run.iter().map(|job| (job.line, job.resumed)).collect();
            match mode {
                Mode::Resume => {
                    assert_eq!(resumed, [(1, None), (2, Some("failed"))]);
                    assert_eq!(skipped_lines(&skipped), [(3, true)]);
                }
                Mode::ResumeFailed => {
                    assert_eq!(resumed, [(2, Some("failed"))]);
                    assert_eq!(skipped_lines(&skipped), [(1, false), (3, true)]);
                }
            }
            // A job file that is a pipe: the same, line by line.
            let mut previous = parse(report.as_bytes(), mode, "r").unwrap();
            let mut streamed = Vec::new();
            for mut job in jobs.clone() {
                let skip = skips(&mut previous, &mut job, mode);
                streamed.push((job.line, skip, job.resumed));
            }
            let other = match mode {
                Mode::Resume => None,
                Mode::ResumeFailed => Some(false),
            };
            assert_eq!(
                streamed,
                [
                    (1, other, None),
                    (2, None, Some("failed")),
                    (3, Some(true), None)
                ],
                "{mode:?}"
            );
        }
    }

    #[test]
    fn resume_failed_runs_only_failures_and_the_last_record_wins() {
        let jobs = jobfile::parse(b"a\nb\nc\nd\ne\nf\ng\n").unwrap();
        let report = [
            record(1, "[]", "a", "failed"),
            record(2, "[]", "b", "killed"),
            record(3, "[]", "c", "timed_out"),
            record(4, "[]", "d", "error"),
            record(5, "[]", "e", "not_started"),
            record(6, "[]", "f", "failed"),
            // An appended second run: f succeeded after all.
            record(6, "[]", "f", "succeeded"),
        ]
        .concat();
        let previous = parse(report.as_bytes(), Mode::ResumeFailed, "r").unwrap();
        let Selected { run, skipped, .. } = select(jobs, previous, Mode::ResumeFailed);
        assert_eq!(lines(&run), [1, 2, 3, 4]);
        // 5 never started and 7 is not in the report: not done. 6 succeeded at last: done.
        assert_eq!(skipped_lines(&skipped), [(5, false), (6, true), (7, false)]);
    }

    #[test]
    fn groups_are_part_of_the_match() {
        let jobs = jobfile::parse(b"a :: x\nb c :: x\n").unwrap();
        let report = record(2, "[\"a\",\"b\"]", "x", "succeeded");
        let previous = parse(report.as_bytes(), Mode::Resume, "r").unwrap();
        let Selected { run, skipped, .. } = select(jobs, previous, Mode::Resume);
        assert_eq!((lines(&run), skipped_lines(&skipped)), (vec![1, 2], vec![]));
    }

    /// Groups are a set in the match, as everywhere else: `b a :: x` is the job that ran as
    /// `a b :: x` (it ran again, found by a review).
    #[test]
    fn the_order_of_the_groups_does_not_matter() {
        let jobs = jobfile::parse(b"b a :: x\n").unwrap();
        let report = record(1, "[\"a\",\"b\"]", "x", "succeeded");
        let previous = parse(report.as_bytes(), Mode::Resume, "r").unwrap();
        let Selected { run, skipped, .. } = select(jobs, previous, Mode::Resume);
        assert_eq!(
            (lines(&run), skipped_lines(&skipped)),
            (vec![], vec![(1, true)])
        );
    }

    #[test]
    fn bad_lines_are_errors_but_a_cut_last_line_is_a_warning() {
        let good = record(1, "[]", "x", "succeeded");
        let cut = format!("{good}{{\"line\":2,\"gro");
        let previous = parse(cut.as_bytes(), Mode::Resume, "r.jsonl").unwrap();
        assert_eq!(
            previous.warning.as_deref(),
            Some(
                "r.jsonl:2: the last record is cut short (taskherd stopped while writing it?); \
                 it is ignored"
            )
        );
        assert_eq!(previous.wanted.len(), 1);
        // The same cut line followed by a newline, or in the middle, is an error.
        let errors = parse(format!("{cut}\n").as_bytes(), Mode::Resume, "r").unwrap_err();
        assert_eq!(errors[0].line, 2);
        assert!(errors[0].message.starts_with("not a report record: "));
        let text = format!("{good}not json\n{}", record(3, "[]", "y", "bogus"));
        let errors = parse(text.as_bytes(), Mode::Resume, "r").unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].line, 2);
        assert!(errors[0].message.starts_with("not a report record: "));
        assert_eq!(errors[1].to_string(), "3: unknown status \"bogus\"");
        let errors = parse(b"{\"line\":1}\n", Mode::Resume, "r").unwrap_err();
        assert!(errors[0].message.contains("missing field"), "{errors:?}");
        assert!(parse(b"", Mode::Resume, "r").unwrap().wanted.is_empty());
    }

    #[test]
    fn plan_line_and_summary_note() {
        let jobs = jobfile::parse(b"a\nb\nc\nd\ne\n").unwrap();
        let skipped: Vec<Skipped> = [0, 1, 2, 4]
            .iter()
            .map(|&i| Skipped {
                job: jobs[i].clone(),
                done: true,
            })
            .collect();
        assert_eq!(
            plan_line(Mode::Resume, Path::new("r.jsonl"), &skipped, 1, 0),
            "--resume r.jsonl: 4 jobs skipped (lines 1-3, 5), 1 to run\n"
        );
        assert_eq!(
            plan_line(Mode::ResumeFailed, Path::new("r"), &[], 5, 0),
            "--resume-failed r: 0 jobs skipped, 5 to run\n"
        );
        assert_eq!(
            plan_line(Mode::Resume, Path::new("r"), &[], 0, 2),
            "--resume r: 0 jobs skipped, 0 to run; 2 records of lines not in the job file kept\n"
        );
        let many: Vec<usize> = (1..=50).map(|n| n * 2).collect();
        assert!(ranges(&many).ends_with(", 40, ..."));
        assert_eq!(
            summary_with_skipped("2 jobs in 1s: 2 succeeded\ntable\n", Mode::Resume, 3),
            "2 jobs in 1s: 2 succeeded; 3 more skipped (--resume)\ntable\n"
        );
        assert_eq!(
            summary_with_skipped("2 jobs in 1s: 2 succeeded\ntable\n", Mode::Resume, 0),
            "2 jobs in 1s: 2 succeeded\ntable\n",
            "no \"0 more skipped\""
        );
    }
}
