//! `taskherd run`: reads and checks everything, then runs the jobs (or prints the plan).

use std::collections::BTreeSet;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskherd::TaskPool;

use crate::arg_limits::ArgLimits;
use crate::cli::{OutputMode, RunArgs};
use crate::fleet::{self, Fleet, Pool};
use crate::jobfile::{Group, Job, LineError, Reader};
use crate::joblog::{self, Joblog};
use crate::limits::{self, Limits, Settings, Target};
use crate::output::{Notices, Writer};
use crate::plan;
use crate::progress::{self, Progress};
use crate::reaper::Reaper;
use crate::report::{self, Report};
use crate::resume;
use crate::runner;
use crate::signals;
use crate::stream::Stream;
use crate::summary;
use crate::watch::{Fingerprint, Watcher};

/// Exit status: every job succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit status: a job failed, was killed or never started.
pub const EXIT_JOB_FAILED: u8 = 1;

/// Exit status: bad arguments, job file or limits file; nothing was run.
pub const EXIT_USAGE: u8 = 2;

/// At most this many line errors are printed; the count of the rest follows.
const MAX_ERRORS_SHOWN: usize = 20;

/// A problem found before anything ran: every line is printed, then the run stops with status 2.
#[derive(Debug)]
pub struct Fatal(pub Vec<String>);

impl Fatal {
    fn one(message: impl Into<String>) -> Self {
        Fatal(vec![message.into()])
    }

    fn lines(source: &str, errors: &[LineError]) -> Self {
        let mut lines: Vec<String> = errors
            .iter()
            .take(MAX_ERRORS_SHOWN)
            .map(|error| format!("{source}:{error}"))
            .collect();
        if errors.len() > MAX_ERRORS_SHOWN {
            lines.push(format!(
                "... and {} more errors",
                errors.len() - MAX_ERRORS_SHOWN
            ));
        }
        let noun = if errors.len() == 1 { "error" } else { "errors" };
        lines.push(format!(
            "{} {noun} in {source}; nothing was run",
            errors.len()
        ));
        Fatal(lines)
    }
}

/// Everything checked and ready to run.
#[derive(Debug)]
pub struct Prepared {
    /// The job file's name as shown in messages (`<stdin>` for standard input).
    pub source: String,
    /// The jobs to run; empty for a dry run that needs only their counts.
    pub jobs: Vec<Job>,
    /// The jobs of the job file (before `--resume`), counted.
    pub counts: plan::Counts,
    /// The jobs `--resume` or `--resume-failed` skip, in file order.
    pub skipped: Vec<resume::Skipped>,
    /// The records of the `--resume`/`--resume-failed` report that no line of a job file read
    /// whole took: carried into the new report (see `resume::Selected::carried`).
    pub carried: Vec<Job>,
    /// A job file read as it is written (a pipe): `jobs` and `skipped` are empty, and lines
    /// are read and checked as the run goes.
    pub stream: Option<Stream>,
    /// Limits from the command line.
    pub base_limits: Limits,
    /// The limits file, its settings when it was first read, and its fingerprint taken just
    /// before.
    pub limits_file: Option<(PathBuf, Settings, Option<Fingerprint>)>,
    /// Warnings to show before running.
    pub warnings: Vec<String>,
}

impl Prepared {
    /// The limits in force at the start: the command line overlaid with the limits file.
    pub fn initial_limits(&self) -> Limits {
        match &self.limits_file {
            Some((_, settings, _)) => self.base_limits.overlay(settings),
            None => self.base_limits.clone(),
        }
    }
}

/// Runs `taskherd run`.
pub fn main(args: &RunArgs) -> ExitCode {
    let prepared = match prepare(args) {
        Ok(prepared) => prepared,
        Err(Fatal(lines)) => {
            for line in lines {
                eprintln!("taskherd: {line}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    for warning in &prepared.warnings {
        eprintln!("taskherd: warning: {warning}");
    }
    if args.dry_run {
        // Check, without creating anything, what a real run would create first.
        if let Err(Fatal(lines)) = Setup::check(args) {
            for line in lines {
                eprintln!("taskherd: {line}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
        // Counted as they were read, unless `--resume` chose some.
        let counts = match resume_of(args) {
            None => &prepared.counts,
            Some(_) => &plan::Counts::of(&prepared.jobs),
        };
        let mut plan = plan::render(&prepared.source, counts, &prepared.initial_limits());
        if let Some((mode, path)) = resume_of(args) {
            let run = prepared.jobs.len();
            let carried = prepared.carried.len();
            plan.push_str(&resume::plan_line(
                mode,
                path,
                &prepared.skipped,
                run,
                carried,
            ));
        }
        if args.redis.is_some() {
            plan.push_str(
                "--redis: the limits above are those this run would write to the pool; where \
                 it gives none, the pool's own apply (Redis is not asked in a dry run)\n",
            );
        }
        return write_plan(&plan);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("taskherd: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // The pool before the files: with --redis, Redis unreachable stops the run before
    // anything (the report file included) is created; but after their checks, so that a bad
    // path stops it before it writes its limits to the pool.
    let limits = prepared.initial_limits();
    let pool = Setup::check(args).and_then(|()| match &args.redis {
        None => Ok(Pool::Local(build_pool(&limits))),
        Some(url) => runtime
            .block_on(join_fleet(url, args, &limits, &prepared))
            .map(Pool::Fleet),
    });
    let setup = pool.and_then(|pool| Ok((pool, Setup::create(args)?)));
    let (pool, setup) = match setup {
        Ok(both) => both,
        Err(Fatal(lines)) => {
            for line in lines {
                eprintln!("taskherd: {line}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let code = runtime.block_on(execute(args, prepared, setup, pool));
    // Job tasks have all ended; nothing is left to wait for.
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// What must exist before the first job starts: the report file, the joblog and the output
/// directory.
struct Setup {
    report: Option<Report>,
    joblog: Option<Joblog>,
}

impl Setup {
    /// Creates the output directory, then opens (or creates) the joblog and the report file,
    /// emptying neither: that waits for [`start`](Self::start), once nothing else can fail
    /// before the run, so that a failed setup loses no earlier report (maybe the one
    /// `--resume` just read) or joblog. The checks of a dry run come first: a path that cannot
    /// work fails before anything is created.
    fn create(args: &RunArgs) -> Result<Setup, Fatal> {
        Self::check(args)?;
        if let OutputMode::Dir(dir) = &args.output {
            std::fs::create_dir_all(dir).map_err(|error| {
                Fatal::one(format!(
                    "cannot create output directory {}: {error}",
                    dir.display()
                ))
            })?;
        }
        let joblog = match &args.joblog {
            None => None,
            Some(path) => Some(Joblog::open(path).map_err(|error| {
                Fatal::one(format!("cannot create joblog {}: {error}", path.display()))
            })?),
        };
        let report = match &args.report {
            None => None,
            Some(path) => Some(Report::open(path).map_err(|error| {
                Fatal::one(format!(
                    "cannot create report file {}: {error}",
                    path.display()
                ))
            })?),
        };
        Ok(Setup { report, joblog })
    }

    /// The run starts: empties the joblog (writing its header) and the report file. The
    /// report comes last: it may be the history `--resume` read, and writing the joblog's
    /// header can fail (a full disk, `/dev/full`, a pipe whose reader left), which must leave
    /// it as it was. (The joblog is replaced by every run anyway.)
    fn start(&mut self, args: &RunArgs) -> Result<(), Fatal> {
        if let (Some(joblog), Some(path)) = (&mut self.joblog, &args.joblog) {
            joblog.start().map_err(|error| {
                Fatal::one(format!("cannot create joblog {}: {error}", path.display()))
            })?;
        }
        if let (Some(report), Some(path)) = (&mut self.report, &args.report) {
            report.start().map_err(|error| {
                Fatal::one(format!(
                    "cannot create report file {}: {error}",
                    path.display()
                ))
            })?;
        }
        Ok(())
    }

    /// For `--dry-run`: the checks `create` would fail, without creating anything.
    fn check(args: &RunArgs) -> Result<(), Fatal> {
        let report = args
            .report
            .as_deref()
            .filter(|path| !report::is_stdout(path));
        let output_dir = match &args.output {
            OutputMode::Dir(dir) => Some(dir.as_path()),
            _ => None,
        };
        for (what, path) in [("report file", report), ("joblog", args.joblog.as_deref())] {
            let Some(path) = path else { continue };
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            // The output directory and its parents are created before the file is.
            let made_by_run = |dir: &Path| output_dir.is_some_and(|out| made_by_run(dir, out));
            if parent.is_some_and(|dir| !dir.is_dir() && !made_by_run(dir)) || path.is_dir() {
                return Err(Fatal::one(format!(
                    "cannot create {what} {}: its directory does not exist or it is a directory",
                    path.display()
                )));
            }
            if let Some(out) = output_dir
                && same_dir(dir_of(path), out)
                && path.file_name().is_some_and(is_output_file_name)
            {
                return Err(Fatal::one(format!(
                    "cannot use {} as the {what}: job output files in {} are named LINE.log \
                     and LINE.N.log, and one would overwrite it",
                    path.display(),
                    out.display()
                )));
            }
        }
        // The run's inputs: a job's output file must not replace them either.
        let jobfile = args
            .jobfile
            .as_deref()
            .filter(|path| path.as_os_str() != "-");
        let inputs = [
            ("the job file", jobfile),
            ("--limits-file", args.limits_file.as_deref()),
        ];
        if let Some(out) = output_dir {
            for (what, path) in inputs {
                let Some(path) = path else { continue };
                if same_dir(dir_of(path), out) && path.file_name().is_some_and(is_output_file_name)
                {
                    return Err(Fatal::one(format!(
                        "cannot write job output into {}: {what} {} is there, and job output \
                         files are named LINE.log and LINE.N.log, so one would overwrite it",
                        out.display(),
                        path.display()
                    )));
                }
            }
        }
        if let OutputMode::Dir(dir) = &args.output
            && dir.exists()
            && !dir.is_dir()
        {
            return Err(Fatal::one(format!(
                "cannot create output directory {}: it exists and is not a directory",
                dir.display()
            )));
        }
        // Two writers of one file would garble it, and writing over an input (the report
        // being resumed from as a joblog, the job file, the limits file) would destroy it. (The
        // report may be the one resumed from: it is read whole first.)
        let resumed = resume_of(args).map(|(_, path)| path);
        let mut clashes = vec![
            ("--report", report, "--joblog", args.joblog.as_deref()),
            ("--joblog", args.joblog.as_deref(), "--resume", resumed),
        ];
        for (what, path) in [("--report", report), ("--joblog", args.joblog.as_deref())] {
            clashes.extend(inputs.map(|(input, input_path)| (what, path, input, input_path)));
        }
        for (one, first, other, second) in clashes {
            if let (Some(first), Some(second)) = (first, second)
                && same_file(first, second)
            {
                return Err(Fatal::one(format!(
                    "{one} {} and {other} {} are the same file",
                    first.display(),
                    second.display()
                )));
            }
        }
        Ok(())
    }
}

/// The directory `path` is in (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `path` without its `.` components: `./logs/new` and `logs/new` are one place.
fn plain(path: &Path) -> PathBuf {
    path.components()
        .filter(|part| !matches!(part, std::path::Component::CurDir))
        .collect()
}

/// Whether `dir` exists once the run has created its output directory `out`: it is `out` or
/// one of the directories above it (named the same way: `..` and links are not resolved).
fn made_by_run(dir: &Path, out: &Path) -> bool {
    plain(out).starts_with(plain(dir))
}

/// Whether two directories are one: the same device and inode if both exist, else the same
/// path (without `.` components).
fn same_dir(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => plain(a) == plain(b),
    }
}

/// Whether `name` is one [`output_file`](crate::runner::output_file) can give a job's output: `LINE.log` or
/// `LINE.N.log`.
fn is_output_file_name(name: &std::ffi::OsStr) -> bool {
    let Some(stem) = name.to_str().and_then(|name| name.strip_suffix(".log")) else {
        return false;
    };
    let number = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match stem.split_once('.') {
        None => number(stem),
        Some((line, attempt)) => number(line) && number(attempt),
    }
}

/// Whether two paths name the same file: the same device and inode if both exist, else the
/// same name in the same directory.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        return a.dev() == b.dev() && a.ino() == b.ino();
    }
    let place = |path: &Path| {
        (
            std::fs::canonicalize(dir_of(path)).ok(),
            path.file_name().map(ToOwned::to_owned),
        )
    };
    let (a, b) = (place(a), place(b));
    a.0.is_some() && a == b
}

/// What taskherd's last messages are given at least, once termination was asked for.
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the jobs; returns the exit status.
async fn execute(args: &RunArgs, prepared: Prepared, mut setup: Setup, pool: Pool) -> u8 {
    let began = Instant::now();
    let limits = prepared.initial_limits();
    // The groups the job file names, those of the jobs `--resume` skips included (as when
    // the limits file was first read): not known yet for a streamed job file.
    let named: Option<BTreeSet<Group>> = prepared
        .stream
        .is_none()
        .then(|| prepared.counts.per_group.keys().cloned().collect());
    let flag = match (args.progress, args.no_progress) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let progress = Progress::start(progress::Mode::choose(flag), prepared.jobs.len());
    let report_to_stdout = args.report.as_deref().is_some_and(report::is_stdout);
    let writer = match Writer::start(progress.suspend_hook(), report_to_stdout) {
        Ok(writer) => writer,
        Err(error) => {
            eprintln!("taskherd: cannot start the output thread: {error}");
            return EXIT_USAGE;
        }
    };
    signals::keep_jobs_off_the_terminal();
    let mut signals = match signals::listen() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("taskherd: cannot listen for signals: {error}");
            return EXIT_USAGE;
        }
    };
    let watcher = prepared.limits_file.as_ref().map(|(path, _, fingerprint)| {
        let watcher = Watcher::new(
            path.clone(),
            *fingerprint,
            prepared.base_limits.clone(),
            limits.clone(),
            named,
        );
        tokio::spawn(watcher.run(pool.clone(), writer.sender()))
    });
    let guard = match &pool {
        Pool::Local(_) => None,
        Pool::Fleet(fleet) => {
            let output = writer.sender();
            let notice = async move |text: String| {
                let _ = output.send(crate::output::Msg::Notice(text)).await;
            };
            Some(tokio::spawn(Arc::clone(fleet).guard(notice)))
        }
    };
    let config = runner::Config {
        output: args.output.clone(),
        halt_on_error: args.halt_on_error,
        kill_grace: args.kill_grace,
        shell: args.shell.clone(),
        timeout: args.timeout,
        retries: args.retries,
        retry_delay: args.retry_delay,
    };
    // Without the helper, jobs would outlive a killed taskherd: say so, and run anyway.
    let reaper = match Reaper::start(args.kill_grace) {
        Ok(reaper) => Some(reaper),
        Err(error) => {
            eprintln!(
                "taskherd: warning: cannot start the helper that ends the jobs if taskherd \
                 dies ({error}); jobs would outlive a killed taskherd"
            );
            None
        }
    };
    // Jobs run again for an earlier failure: provisional records, written with the skipped.
    let pending: Vec<crate::jobfile::Job> = prepared
        .jobs
        .iter()
        .filter(|job| job.resumed.is_some())
        .cloned()
        .collect();
    // Made before the reader starts, which writes the records of the lines it matches.
    let notes = runner::Notes::new();
    let input = match prepared.stream {
        None => runner::Input::Checked(prepared.jobs),
        Some(stream) => {
            let resumed = stream.resume.clone();
            match stream.start(notes.early()) {
                Ok(arrivals) => runner::Input::Streaming { arrivals, resumed },
                Err(error) => {
                    eprintln!("taskherd: cannot start reading the jobs: {error}");
                    return EXIT_USAGE;
                }
            }
        }
    };
    let (notices, relay) = Notices::start(writer.sender());
    // Nothing can fail before the run any more: the report and the joblog are emptied now.
    if let Err(Fatal(lines)) = setup.start(args) {
        for line in lines {
            eprintln!("taskherd: {line}");
        }
        return EXIT_USAGE;
    }
    // Skipped jobs are known before anything runs: their records come first, then the
    // provisional records of the failures run again (see `Report::write_pending`).
    let mut skipped_error = false;
    if let Some(report) = &mut setup.report {
        let written = (|| -> std::io::Result<()> {
            for skipped in &prepared.skipped {
                report.write_skipped(&skipped.job, skipped.done)?;
            }
            for job in &prepared.carried {
                report.write_skipped(job, job.resumed.is_none())?;
            }
            for job in &pending {
                report.write_pending(job)?;
            }
            Ok(())
        })();
        if let Err(error) = written {
            eprintln!("taskherd: error: cannot write the report: {error}");
            skipped_error = true;
        }
    }
    let finished = runner::run(
        input,
        pool.clone(),
        config,
        writer.sender(),
        notices,
        setup.report,
        &mut signals,
        &progress,
        setup.joblog.as_mut(),
        reaper,
        notes,
    )
    .await;
    for task in [watcher, guard].into_iter().flatten() {
        task.abort();
    }
    // taskherd's last messages (the summary, ...) may meet a standard error that is the same
    // stalled pipe as the output (`2>&1`): written by a thread from now on, and waited for at
    // the end only as long as the run may wait (see `stderr`).
    crate::stderr::bound();
    // The output, the report records and the joblog lines still queued are written, however
    // slow their readers (each on its own: one stalled reader holds up none of the others);
    // but once termination was asked for, only for the grace period, and another signal
    // gives up at once.
    let mut finished = finished;
    let report = finished.report.take();
    let mut report_error = None;
    let mut report_written = report.is_none();
    let mut output_written = false;
    let mut joblog_error = None;
    let mut joblog_written = setup.joblog.is_none();
    let joblog = setup.joblog.as_mut();
    let notices_dropped = relay.dropped();
    let written = async {
        let output = async {
            relay.finish().await;
            writer.finish().await;
            output_written = true;
        };
        let report = async {
            if let Some(report) = report {
                report_error = report.finish().await;
                report_written = true;
            }
        };
        let joblog = async {
            if let Some(joblog) = joblog {
                joblog_error = joblog.finish().await;
                joblog_written = true;
            }
        };
        tokio::join!(output, report, joblog);
    };
    let patience = async {
        match finished.terminated {
            true => tokio::time::sleep(args.kill_grace).await,
            false => std::future::pending().await,
        }
    };
    let gave_up = tokio::select! {
        () = written => false,
        () = patience => true,
        Some(_) = signals.recv() => true,
    };
    progress.finish();
    if gave_up {
        // Whose readers stopped reading.
        if !output_written {
            // Relaxed: only the count matters.
            let earlier = match notices_dropped.load(std::sync::atomic::Ordering::Relaxed) {
                0 => String::new(),
                n => format!(" ({n} more dropped earlier)"),
            };
            eprintln!(
                "taskherd: standard output is not being read: the job output still queued for \
                 it is dropped, and so are taskherd's messages queued behind it{earlier}"
            );
        }
        // A report missing records fails the run, as one that could not be written.
        if !report_written {
            eprintln!(
                "taskherd: the report is not being read: its records still queued are dropped"
            );
            if report_error.is_none() {
                report_error = Some(std::io::Error::other("records still queued were dropped"));
            }
        }
        if !joblog_written {
            eprintln!("taskherd: the joblog is not being read: its lines still queued are dropped");
            if joblog_error.is_none() {
                joblog_error = Some(std::io::Error::other("lines still queued were dropped"));
            }
        }
    }
    if let Some(error) = &joblog_error {
        eprintln!("taskherd: error: cannot write the joblog: {error}");
    }
    if let Some(error) = report_error
        && finished.report_error.is_none()
    {
        eprintln!("taskherd: error: cannot write the report: {error}");
        finished.report_error = Some(error);
    }
    if let Pool::Fleet(fleet) = &pool {
        // The other runs get this run's slots back now, not when their leases expire; and
        // the summary shows the fleet's limits as they are now. With Redis unreachable,
        // neither can be done: waited for at most --kill-grace (or until a signal), after
        // which the slots come back as their leases expire.
        let goodbye = async {
            fleet.pool.flush().await;
            if !args.no_summary {
                let groups = finished
                    .counts
                    .groups
                    .iter()
                    .map(|(group, _)| group.clone());
                fleet.refresh(groups.collect::<Vec<_>>()).await;
            }
        };
        let done = tokio::select! {
            () = goodbye => true,
            () = tokio::time::sleep(args.kill_grace) => false,
            Some(_) = signals.recv() => false,
        };
        if !done {
            eprintln!(
                "taskherd: Redis did not answer: this run's slots come back to the other runs \
                 when their leases expire"
            );
        }
    }

    if !args.no_summary {
        let mut text = summary::render(
            &finished.counts,
            finished.stopped,
            began.elapsed(),
            |group| match group {
                None => pool.max_tasks(),
                Some(group) => pool.effective_limit(&Group::from(group)),
            },
        );
        if let Some((mode, _)) = resume_of(args) {
            let skipped = prepared.skipped.len() + finished.skipped;
            text = resume::summary_with_skipped(&text, mode, skipped);
        }
        eprint!("{text}");
    }
    // The last messages: once termination was asked for, or a signal (or that) made the run
    // give its output up, waited for at most --kill-grace (at least a second: time enough for
    // a standard error that is read), else until written; another signal gives them up at
    // once.
    if let Some(written) = crate::stderr::close() {
        let patience = async {
            match finished.terminated || gave_up {
                true => tokio::time::sleep(args.kill_grace.max(LAST_WORDS)).await,
                false => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = written => {}
            () = patience => {}
            Some(_) = signals.recv() => {}
        }
    }
    if finished.bad_input {
        return EXIT_USAGE;
    }
    // A streamed job file was not read to its end: jobs may be missing from the counts.
    let unread = finished.unread;
    let total = finished.counts.total;
    let joblog_failed = joblog_error.is_some() || setup.joblog.as_ref().is_some_and(Joblog::failed);
    if total.succeeded == total.jobs
        && finished.report_error.is_none()
        && !skipped_error
        && !joblog_failed
        && !unread
    {
        EXIT_OK
    } else {
        EXIT_JOB_FAILED
    }
}

/// Writes a dry run's plan to standard output. A reader that closed it early (`| head`) wanted
/// no more: not an error. Any other write error is said, and the exit status is 1.
fn write_plan(plan: &str) -> ExitCode {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(plan.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(EXIT_OK),
        Err(error) => {
            eprintln!("taskherd: cannot write the plan to standard output: {error}");
            ExitCode::from(EXIT_JOB_FAILED)
        }
    }
}

/// With `--redis`: connects to the shared pool and writes this run's `limits` to it, as one
/// batch (for each setting, the last write wins).
async fn join_fleet(
    url: &str,
    args: &RunArgs,
    limits: &Limits,
    prepared: &Prepared,
) -> Result<Arc<Fleet>, Fatal> {
    let name = args.pool.as_deref().unwrap_or(fleet::DEFAULT_POOL);
    let fleet = Fleet::connect(url, name, args.lease, redis_tls(args)?)
        .await
        .map_err(|message| Fatal::one(format!("--redis: {message}; nothing was run")))?;
    if fleet.pool.redis_evicts_keys() {
        eprintln!(
            "taskherd: warning: --redis: Redis at {} evicts keys when it is full (an allkeys-* \
             maxmemory-policy): it may drop the pool's limits or counts, and runs may then \
             exceed them; set maxmemory-policy to noeviction (or a volatile-* policy)",
            fleet::redacted(url)
        );
    }
    // A limits file's `none` settings are written too, as a change of the file would be.
    let settings = match &prepared.limits_file {
        Some((_, settings, _)) => settings.clone(),
        None => Vec::new(),
    };
    fleet
        .write_clearing(limits, &settings)
        .await
        .map_err(|error| {
            Fatal::one(format!(
                "--redis: cannot write the limits to pool {name} at {}: {error}; nothing was run",
                fleet::redacted(url)
            ))
        })?;
    // Loads the admission script on the server now (an admission of no group, dropped at
    // once), so that the first jobs' admission calls are not sent twice, out of file order.
    drop(fleet.pool.try_acquire(std::iter::empty()).await);
    let named = prepared
        .jobs
        .iter()
        .flat_map(|job| job.groups.iter().cloned())
        .collect::<BTreeSet<Group>>();
    fleet.refresh(named).await;
    Ok(Arc::new(fleet))
}

/// A pool enforcing `limits`.
fn build_pool(limits: &Limits) -> TaskPool<Group> {
    let pool = TaskPool::builder().build();
    pool.set_limits(limits.batch());
    pool
}

/// The certificates of a `rediss://` connection, read from the files named.
fn redis_tls(args: &RunArgs) -> Result<fleet::Tls, Fatal> {
    fleet::Tls::read(
        args.redis_ca.as_deref(),
        args.redis_cert.as_deref(),
        args.redis_key.as_deref(),
    )
    .map_err(Fatal::one)
}

/// With `--redis`: a run that dies (`kill -9`) has its jobs killed by its helper, SIGKILL
/// `--kill-grace` after SIGTERM, while its slots go to other runs as their leases expire, from
/// two thirds of a lease after its last renewal: a grace of at most half the lease leaves a
/// sixth of it for the helper to notice and the kernel to end the jobs.
fn check_grace(args: &RunArgs) -> Result<(), Fatal> {
    let lease = args.lease.unwrap_or(fleet::DEFAULT_LEASE);
    if args.kill_grace * 2 <= lease {
        return Ok(());
    }
    let seconds = |duration: Duration| format!("{}s", duration.as_secs_f64());
    Err(Fatal::one(format!(
        "--kill-grace {} is longer than half of --lease {}: a job of a run that dies could still \
         run when its slots go to another run; give --kill-grace {} or less, or a longer --lease",
        seconds(args.kill_grace),
        seconds(lease),
        seconds(lease / 2),
    )))
}

/// Reads and checks the job file, the limits and the limits file.
pub fn prepare(args: &RunArgs) -> Result<Prepared, Fatal> {
    let shell = check_shell(&args.shell)?;
    if let Some(path) = &args.joblog {
        joblog::check_path(path).map_err(Fatal::one)?;
    }
    if let Some(url) = &args.redis {
        // Checked without connecting, so that a dry run says so too.
        fleet::check_url(url).map_err(Fatal::one)?;
        let tls = [&args.redis_ca, &args.redis_cert]
            .iter()
            .any(|path| path.is_some());
        if tls && !fleet::is_tls(url) {
            return Err(Fatal::one(
                "--redis-ca and --redis-cert need a rediss:// URL (TLS)".to_owned(),
            ));
        }
        redis_tls(args)?;
        check_grace(args)?;
    }
    let (source, input, pipe) = open_jobs(args.jobfile.as_deref())?;
    let arg_limits = ArgLimits::of_this_system(&shell);
    // A pipe is read as it is written, and its lines checked as they come; a dry run reads
    // it to the end, as a file.
    // A dry run needs the jobs themselves only to choose those `--resume` skips: without
    // it, counting them keeps its memory small however long the file.
    let keep = !args.dry_run || resume_of(args).is_some();
    let (jobs, counts, mut warnings, streamed) = if pipe && !args.dry_run {
        (Vec::new(), plan::Counts::default(), Vec::new(), Some(input))
    } else {
        let (jobs, counts, warnings) = read_jobs(&source, input, pipe, &arg_limits, keep)?;
        (jobs, counts, warnings, None)
    };

    let named: BTreeSet<&Group> = counts.per_group.keys().collect();
    let mut base_limits = Limits {
        // With --redis, the total is the fleet's: no default from this machine's CPUs.
        total: match args.redis {
            None => Some(args.max_jobs.unwrap_or_else(cpus)),
            Some(_) => args.max_jobs,
        },
        default: args.default_limit,
        groups: Default::default(),
    };
    for (group, limit) in &args.limits {
        // (Groups of a streamed job file are not known yet.)
        if streamed.is_none() && !named.contains(group) {
            warnings.push(format!(
                "--limit {group}={limit}: no job in {source} names group {group}"
            ));
        }
        if let Some(earlier) = base_limits.groups.insert(group.clone(), *limit) {
            warnings.push(format!(
                "--limit {group}={limit} replaces --limit {group}={earlier} given before it"
            ));
        }
    }

    let limits_file = match &args.limits_file {
        None => None,
        Some(path) => {
            // Before reading: a change made after this is seen by the watcher and applied.
            let fingerprint = Fingerprint::of_path(path);
            let text = std::fs::read(path).map_err(|error| {
                Fatal::one(format!(
                    "cannot read limits file {}: {error}",
                    path.display()
                ))
            })?;
            let settings = limits::parse_limits_file(&text)
                .map_err(|errors| Fatal::lines(&path.display().to_string(), &errors))?;
            if streamed.is_none() {
                warnings.extend(unknown_groups(path, &settings, &named));
            }
            Some((path.clone(), settings, fingerprint))
        }
    };

    // Read fully here, before the report (possibly the same file) is created.
    let mut resume = None;
    let (jobs, skipped, carried) = match resume_of(args) {
        None => (jobs, Vec::new(), Vec::new()),
        Some((mode, path)) => {
            let previous = resume::load(path, mode).map_err(|error| match error {
                resume::LoadError::Read(error) => Fatal::one(format!(
                    "cannot read {} report {}: {error}",
                    mode.option(),
                    path.display()
                )),
                resume::LoadError::Lines(errors) => {
                    Fatal::lines(&path.display().to_string(), &errors)
                }
            })?;
            warnings.extend(previous.warning.clone());
            match streamed {
                None => {
                    let selected = resume::select(jobs, previous, mode);
                    (selected.run, selected.skipped, selected.carried)
                }
                Some(_) => {
                    resume = Some(resume::Streamed::new(mode, previous));
                    (jobs, Vec::new(), Vec::new())
                }
            }
        }
    };
    let stream = streamed.map(|input| Stream {
        source: source.clone(),
        input,
        arg_limits,
        resume,
    });

    Ok(Prepared {
        source,
        jobs,
        counts,
        skipped,
        carried,
        stream,
        base_limits,
        limits_file,
        warnings,
    })
}

/// Checks that `--shell` names a file this user may execute.
///
/// A name without `/` is looked up in `PATH`, as it will be when jobs are spawned; returns the
/// file found.
fn check_shell(shell: &Path) -> Result<PathBuf, Fatal> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let problem = |path: &Path| match std::fs::metadata(path) {
        Err(error) => Some(error.to_string()),
        Ok(meta) if !meta.is_file() => Some("not a file".to_owned()),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Some("not executable".to_owned()),
        Ok(_) => None,
    };
    let fail = |problem: String| Fatal::one(format!("--shell {}: {problem}", shell.display()));
    if shell.as_os_str().as_bytes().contains(&b'/') {
        return match problem(shell) {
            Some(why) => Err(fail(why)),
            None => Ok(shell.to_path_buf()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(shell))
        .find(|candidate| problem(candidate).is_none())
        .ok_or_else(|| fail("not found in PATH (or give its full path)".to_owned()))
}

/// Warnings for limits-file settings naming a group that no job names.
pub fn unknown_groups(path: &Path, settings: &Settings, named: &BTreeSet<&Group>) -> Vec<String> {
    settings
        .iter()
        .filter_map(|(target, _)| match target {
            Target::Group(group) if !named.contains(group) => Some(format!(
                "limits file {}: no job names group {group}",
                path.display()
            )),
            _ => None,
        })
        .collect()
}

/// Opens the job file (standard input for `-` or none); returns its name for messages, the
/// input, and whether it is a pipe (or socket), to be read as it is written.
fn open_jobs(path: Option<&Path>) -> Result<(String, Box<dyn Read + Send>, bool), Fatal> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    let is_pipe = |meta: std::io::Result<std::fs::Metadata>| {
        meta.is_ok_and(|meta| meta.file_type().is_fifo() || meta.file_type().is_socket())
    };
    match path {
        Some(path) if path.as_os_str() != "-" => {
            let source = path.display().to_string();
            let file = std::fs::File::open(path)
                .map_err(|error| Fatal::one(format!("cannot read job file {source}: {error}")))?;
            let pipe = is_pipe(file.metadata());
            Ok((source, Box::new(file), pipe))
        }
        _ => {
            let stdin = std::io::stdin();
            let pipe = is_pipe(
                stdin
                    .as_fd()
                    .try_clone_to_owned()
                    .and_then(|fd| std::fs::File::from(fd).metadata()),
            );
            if stdin.is_terminal() {
                eprintln!("taskherd: reading jobs from the terminal; end with Ctrl-D");
            }
            Ok(("<stdin>".to_owned(), Box::new(stdin), pipe))
        }
    }
}

/// Reads and checks a whole job file, line by line (it is never in memory whole): every bad
/// line is reported, and nothing runs if there is one. Returns the jobs (none unless `keep`),
/// their counts, and the warnings about lines. From a `pipe`, a last job line without its
/// newline is an error (as when a run reads it).
fn read_jobs(
    source: &str,
    input: Box<dyn Read + Send>,
    pipe: bool,
    arg_limits: &ArgLimits,
    keep: bool,
) -> Result<(Vec<Job>, plan::Counts, Vec<String>), Fatal> {
    let mut reader = Reader::new(std::io::BufReader::new(input));
    let mut jobs = Vec::new();
    let mut counts = plan::Counts::default();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    while let Some(next) = reader.next_job() {
        match next {
            Ok(Ok(job)) => {
                // As when the pipe is read while the jobs run (a dry run reads it whole).
                if pipe && !reader.line_complete() {
                    errors.push(LineError::cut_off(job.line));
                }
                // A command the system would refuse to pass to the shell fails now, not when
                // its turn comes.
                errors.extend(arg_limits.check(std::slice::from_ref(&job)));
                if let Some(warning) = job.typo_warning() {
                    warnings.push(format!("{source}:{warning}"));
                }
                counts.add(&job);
                if keep {
                    jobs.push(job);
                }
            }
            Ok(Err(mut line_errors)) => errors.append(&mut line_errors),
            Err(error) => {
                return Err(Fatal::one(format!(
                    "cannot read job file {source}: {error}"
                )));
            }
        }
    }
    if errors.is_empty() {
        jobs.shrink_to_fit();
        Ok((jobs, counts, warnings))
    } else {
        Err(Fatal::lines(source, &errors))
    }
}

/// `--resume` or `--resume-failed`, with the report path.
fn resume_of(args: &RunArgs) -> Option<(resume::Mode, &Path)> {
    resume::Mode::of(args.resume.as_deref(), args.resume_failed.as_deref())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_file_names_are_recognised() {
        for name in ["1.log", "12.log", "3.2.log", "10.15.log"] {
            assert!(is_output_file_name(name.as_ref()), "{name}");
        }
        for name in [
            "r.jsonl",
            "a.log",
            ".log",
            "1.",
            "1..log",
            ".1.log",
            "1.2.3.log",
            "1.x.log",
            "1.log.1",
        ] {
            assert!(!is_output_file_name(name.as_ref()), "{name}");
        }
    }

    #[test]
    fn a_directory_above_the_output_directory_is_made_by_the_run() {
        let out = Path::new("./logs/new");
        for dir in ["logs", "./logs", "logs/new", "logs/./new"] {
            assert!(made_by_run(Path::new(dir), out), "{dir}");
        }
        for dir in ["logs/new/sub", "log", "other", "/logs"] {
            assert!(!made_by_run(Path::new(dir), out), "{dir}");
        }
    }
}
