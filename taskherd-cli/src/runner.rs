//! Runs the jobs: admission in file order through the pool, one process per job, and exactly
//! one [`Outcome`] per job.
//!
//! # How jobs are admitted
//!
//! One submitting loop asks the pool for a permit for every job, in file order. It polls each
//! `acquire` future once itself, which puts the job in the pool's queues right then, so arrival
//! order is file order; then it moves the future into the job's own task, which waits for the
//! permit and runs the command. A job thus starts as soon as every group it names has room, FIFO
//! within each group. A job waiting for one group keeps the slots it was promised in its other
//! named groups, but not a slot of the total, which it takes last (the library's fairness
//! rules). At most [`MAX_QUEUED`] jobs wait in the pool at once ([`MAX_QUEUED_FLEET`] with
//! `--redis`); further jobs are queued when earlier ones start.
//!
//! With `--redis` the pool is shared with other runs (`fleet`): the first poll sends the job's
//! admission call to Redis, and the calls reach Redis in the order they were sent, so file
//! order holds there too (see [`queue`]). A job that cannot be admitted because Redis is
//! unreachable waits and asks again (`fleet_acquire`); a job whose lease Redis lost while it
//! runs is terminated, with reason `lease-lost`.
//!
//! The jobs come checked ([`Input::Checked`]) or, from a job file that is a pipe, as their
//! lines arrive ([`Input::Streaming`], read by `stream.rs`); the submitting loop treats both
//! alike, and tells the collector how many jobs there were once the input ends.
//!
//! # Timeouts and retries
//!
//! A job's task runs its attempts one after the other. An attempt past its timeout gets
//! SIGTERM to its process group, then SIGKILL after the grace period. A failed, killed or
//! timed-out attempt with retries left gives its permit back, waits its backoff (cut short if
//! the run stops) and queues again with a new `acquire`: a job waiting to retry holds no slot.
//!
//! # Every job is accounted for
//!
//! Every job ends in exactly one outcome sent to the collector, carrying the job itself (so no
//! list of every job is kept, and a streamed run's memory stays bounded): from its task (ran,
//! failed, could not start, or given up because the pool closed), from the submitting loop
//! (never submitted because the run was stopping), or, should a job task ever panic, from the
//! guard it owns. The collector returns only when it has counted one outcome per job, and the
//! submitting loop has said how many jobs there were.
//!
//! # Stopping
//!
//! `--halt-on-error`, Ctrl-C and a bad line in streamed input *stop* the run: the stop reason
//! is set under a write lock and the pool is closed, which fails every waiting `acquire`. A job checks the stop reason and
//! registers its process group (for the signals sent on a second Ctrl-C) under the read lock,
//! so it either started before the stop, and is registered by the time the stop is complete,
//! or never starts.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use taskherd::AcquireError;
use taskherd_redis::{RedisPermit, UnavailableError};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::sleep_until;

use crate::cli::{Halt, OutputMode};
use crate::fleet::{self, Admission, Fleet, Pool};
use crate::jobfile::{Group, Job};
use crate::joblog::Joblog;
use crate::members::Members;
use crate::outcome::{Attempt, Outcome, Reason, Status, Times};
use crate::output::{self, Drain, Msg, Spool, Stream};
use crate::progress::Progress;
use crate::record_writer::{self, Backlog};
use crate::report::Report;
use crate::resume::{Skipped, Streamed};
use crate::signals::{Event, Groups, LINGER_CHECK, LINGER_CHECK_MAX};
use crate::table;
use crate::tally::{Snapshot, Tally};

/// The most jobs waiting for admission in the pool at once (about 1 KB each).
pub const MAX_QUEUED: usize = 100_000;

/// The same with `--redis`: each waiting job is a waiter in Redis too, renewed every third of
/// a lease and polled every second with the run's others, and costs about 3.4 KB in taskherd:
/// 100,000 of them kept a shared Redis busy for 30% of a core, and blocked it for up to 0.6 s
/// at a time (found by a review).
pub const MAX_QUEUED_FLEET: usize = 10_000;

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub output: OutputMode,
    pub halt_on_error: Option<Halt>,
    /// Time between SIGTERM and SIGKILL when terminating jobs.
    pub kill_grace: Duration,
    /// The shell that runs each command as `SHELL -c COMMAND`.
    pub shell: PathBuf,
    /// `--timeout`: how long a job may run before it is terminated (a job line's `timeout=`
    /// overrides it).
    pub timeout: Option<Duration>,
    /// `--retries`: how many times a failed or timed-out job runs again (a job line's
    /// `retries=` overrides it).
    pub retries: u32,
    /// The wait before a job's first retry; doubled for each one after.
    pub retry_delay: Duration,
}

/// The helper that ends the jobs if taskherd dies, if it could be started.
pub type MaybeReaper = Option<crate::reaper::Reaper>;

/// What a finished run tells the caller.
#[derive(Debug)]
pub struct Finished {
    pub counts: Snapshot,
    /// Why the run stopped early, if it did.
    pub stopped: Option<Reason>,
    /// Termination was asked for (a second Ctrl-C, SIGTERM or SIGHUP).
    pub terminated: bool,
    /// The first error writing the report, if any was found during the run.
    pub report_error: Option<std::io::Error>,
    /// The report, its last records maybe still being written (see [`Report::finish`]).
    pub report: Option<Report>,
    /// A line of streamed input was bad (or could not be read): the run stopped there.
    pub bad_input: bool,
    /// Streamed input was not read to its end (the run stopped first): jobs may be missing
    /// from the counts.
    pub unread: bool,
    /// Jobs of streamed input that `--resume` skipped.
    pub skipped: usize,
}

/// The jobs to run.
#[derive(Debug)]
pub enum Input {
    /// Every job, read and checked before the run.
    Checked(Vec<Job>),
    /// Jobs checked as their lines arrive (a job file that is a pipe), with the earlier report
    /// of `--resume` or `--resume-failed`, whose records of jobs done are carried into the
    /// new report if the run stops before the input's end.
    Streaming {
        arrivals: mpsc::Receiver<Arrival>,
        resumed: Option<Streamed>,
    },
}

/// The channel of notes to the run's collector, made before the run so that the reader of a
/// streamed job file can write a line's report record as it matches the line
/// ([`EarlyRecords`]), ahead of anything of the job.
#[derive(Debug)]
pub struct Notes {
    sender: mpsc::UnboundedSender<Note>,
    receiver: mpsc::UnboundedReceiver<Note>,
}

impl Notes {
    pub fn new() -> Notes {
        let (sender, receiver) = mpsc::unbounded_channel();
        Notes { sender, receiver }
    }

    /// For the reader of a streamed job file.
    pub fn early(&self) -> EarlyRecords {
        EarlyRecords(self.sender.clone())
    }
}

/// The report records of a streamed job file's lines that `--resume` or `--resume-failed`
/// matched, sent by the reader as it matches each line: a line it has read has its record
/// (`skipped`, or a failure run again's provisional `pending` one), however many lines wait
/// for the run to take them, so that a run killed then (`kill -9`) leaves them in its report.
/// Through the collector's own channel, so that such a record always comes before any other
/// of the job.
#[derive(Debug, Clone)]
pub struct EarlyRecords(mpsc::UnboundedSender<Note>);

impl EarlyRecords {
    /// The record of a line `--resume` or `--resume-failed` skips.
    pub fn skipped(&self, skipped: Skipped) {
        let _ = self.0.send(Note::Skipped(skipped));
    }

    /// The provisional record of a failure the run runs again (see `Report::write_pending`).
    pub fn pending(&self, job: Job) {
        let _ = self.0.send(Note::Pending(job));
    }

    /// The last record of such a failure whose line the run stopped before taking: never
    /// started (see `Note::CarriedOver`).
    pub fn carried_over(&self, job: Job) {
        let _ = self.0.send(Note::CarriedOver(job));
    }
}

/// What the reader of a streamed job file sends.
#[derive(Debug)]
pub enum Arrival {
    /// A job to run.
    Job(Job),
    /// A line `--resume` skips: its record was written as the line was read
    /// ([`EarlyRecords`]); it does not run. Sent so that the run takes skipped lines at the
    /// pace their records are written.
    Skipped,
    /// A warning about a line.
    Warning(String),
    /// A bad line, or the input could not be read: the messages to print. Nothing more comes.
    Bad(Vec<String>),
}

/// What reaches the collector.
#[derive(Debug)]
enum Note {
    /// The fate of a job.
    Outcome(Arc<Job>, Outcome),
    /// A job skipped by `--resume` in streamed input, sent by the reader ([`EarlyRecords`];
    /// skipped jobs of a checked job file are written before the run).
    Skipped(Skipped),
    /// A streamed job that the run runs again for an earlier failure, read: its provisional
    /// record (see `Report::write_pending`), ahead of its own.
    Pending(Job),
    /// A job done before, or a failure the run was to run again, on a line of
    /// streamed input that the run stopped before reading: not a job of the run, but its record
    /// (`skipped`, or `not_started` with the failure as `previous_status`) keeps it done for
    /// a later `--resume`, or failed for a later `--resume-failed`.
    CarriedOver(Job),
    /// The submitting loop has submitted its last job: the number of jobs, whether the
    /// input ended on a bad line, and whether streamed input was left unread.
    Submitted {
        jobs: usize,
        bad_input: bool,
        unread: bool,
    },
}

/// State shared by the collector, the submitting loop and the job tasks.
struct Shared {
    pool: Pool,
    config: Config,
    stop: RwLock<Option<Reason>>,
    tally: Tally,
    outcomes: mpsc::UnboundedSender<Note>,
    output: output::Sender,
    /// Notices that must not wait for the output: from the collector (which handles the
    /// signals) and from the code that terminates jobs.
    notices: output::Notices,
    /// The process groups of running jobs.
    groups: Groups,
    /// Set once every running job was sent SIGKILL: their output is not waited for any more.
    killed: watch::Sender<bool>,
    /// Held while one job's output is sent in `grouped` mode.
    grouped: tokio::sync::Mutex<()>,
    /// Set when the run stops (after `stop` is set), for jobs waiting to retry.
    stopped: watch::Sender<bool>,
    /// Jobs that failed for good, for `--halt-on-error N`.
    failures: AtomicUsize,
    /// Notified when `--halt-on-error now` stops the run: the collector terminates the jobs.
    halt_now: Notify,
    /// What the report's and the joblog's threads have not written yet: past a bound, no new
    /// job starts (see `record_writer`).
    backlogs: Vec<Arc<Backlog>>,
    /// Set once the run said that it holds back jobs for a backlog.
    held_back: AtomicBool,
    /// Set once the run said that jobs wait for open files.
    out_of_files_said: AtomicBool,
}

impl Shared {
    fn stop_reason(&self) -> Option<Reason> {
        *self
            .stop
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops starting jobs; returns `true` if this call stopped the run.
    fn stop(&self, reason: Reason) -> bool {
        {
            let mut stop = self
                .stop
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if stop.is_some() {
                return false;
            }
            *stop = Some(reason);
        }
        // Every job waiting for admission now fails and reports itself as not started.
        self.pool.close();
        self.stopped.send_replace(true);
        true
    }

    /// Waits until the report and the joblog have room for more lines, or the run stops: past
    /// a bound of lines waiting to be written (their reader reads nothing, or more slowly than
    /// jobs end), no new job starts, so that memory stays bounded (see `record_writer`). Says so once
    /// per run.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    async fn room_for_records(&self) {
        for backlog in &self.backlogs {
            if backlog.has_room() {
                continue;
            }
            let mut stopped = self.stopped.subscribe();
            if *stopped.borrow() {
                return;
            }
            if !self.held_back.swap(true, Ordering::Relaxed) {
                let name = backlog.name();
                self.notice_now(format!(
                    "no job starts until the {name} is read: {} MiB of it wait to be written",
                    record_writer::BOUND >> 20
                ));
            }
            tokio::select! {
                () = backlog.room() => {}
                _ = stopped.wait_for(|stopped| *stopped) => return,
            }
        }
    }

    /// Shows a notice, waiting for room in the output (back-pressure on the caller).
    async fn notice(&self, text: String) {
        // Fails only once the writer is gone, at the very end.
        let _ = self.output.send(Msg::Notice(text)).await;
    }

    /// Shows a notice without waiting: for the collector's loop, which must handle signals
    /// and SIGKILL deadlines even while nobody reads taskherd's output, and for the code that
    /// terminates jobs. The notice may come late, or be dropped when the output is stalled.
    fn notice_now(&self, text: String) {
        self.notices.send(text);
    }
}

/// How long after the run starts it first looks for stopped jobs ([`watch_stopped`]); the
/// wait doubles after each look, up to [`STOPPED_CHECK_MAX`].
const STOPPED_CHECK: Duration = Duration::from_secs(2);

/// The longest wait between two looks for stopped jobs: a look reads all of `/proc` (tens of
/// milliseconds with thousands of processes on the machine).
const STOPPED_CHECK_MAX: Duration = Duration::from_secs(32);

/// Says once for each job (each attempt) found with a stopped process: it would hold its
/// slots silently until it is continued or ended. A job that uses the terminal, which belongs
/// to taskherd (a password prompt turning echo off, `stty`), is stopped so by the system
/// (SIGTTOU; see `signals::keep_jobs_off_the_terminal`); so is one sent SIGSTOP. A job said
/// stopped that is continued (by someone else: `kill -CONT`) is said to run again, and its
/// next stop is said again; while one is said stopped, the look comes every
/// [`STOPPED_CHECK`], so that its continuation is said soon. Runs until aborted at the end of
/// the run.
async fn watch_stopped(shared: Arc<Shared>) {
    let mut wait = STOPPED_CHECK;
    loop {
        tokio::time::sleep(wait).await;
        look_for_stops(&shared).await;
        wait = if shared.groups.any_said_stopped() {
            STOPPED_CHECK
        } else {
            (wait * 2).min(STOPPED_CHECK_MAX)
        };
    }
}

/// One look of [`watch_stopped`]: says the jobs newly stopped and those running again.
async fn look_for_stops(shared: &Shared) {
    let pgids = shared.groups.pgids();
    if pgids.is_empty() {
        return;
    }
    let Ok(stopped) = tokio::task::spawn_blocking(move || crate::members::stopped(&pgids)).await
    else {
        return;
    };
    let changes = shared.groups.stop_changes(&stopped);
    for line in changes.stopped {
        shared.notice_now(format!(
            "warning: line {line} has a stopped process (SIGSTOP, or it used the terminal, \
             which jobs cannot: a password prompt, stty); it holds its slots until it is \
             continued (kill -CONT) or ended (--timeout, Ctrl-C twice)"
        ));
    }
    for line in changes.continued {
        shared.notice_now(format!(
            "line {line} runs again: its stopped process was continued"
        ));
    }
}

/// How often the run checks whether it is held back by limits of 0 ([`HeldBack`]).
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Says when the run has stalled on limits of 0: nothing ran from one check to the next (no
/// job running at either, none ended in between) while jobs wait, and some of them wait in
/// groups (or a total) held at 0. Without a progress display, the run would sit there
/// silently. Once for each new set of such groups until a job ends again. (One check alone
/// would also catch the instant between two jobs of a busy group.)
#[derive(Default)]
struct HeldBack {
    /// Jobs done and waiting at the last check, if nothing ran then.
    idle_at: Option<(usize, usize)>,
    /// Jobs done when the groups below were named.
    done: usize,
    /// The groups named last.
    noticed: Vec<String>,
}

impl HeldBack {
    /// Whether the run has stalled since the last check, given the total's counts now.
    fn stalled(&mut self, total: &crate::tally::Counts, stopping: bool) -> bool {
        if total.done() != self.done {
            self.done = total.done();
            self.noticed.clear();
        }
        let idle = !stopping && total.running == 0 && total.pending > 0;
        let now = (total.done(), total.pending);
        let stalled = idle && self.idle_at == Some(now);
        self.idle_at = idle.then_some(now);
        stalled
    }

    fn check(&mut self, shared: &Shared) {
        let counts = shared.tally.snapshot();
        let total = &counts.total;
        if !self.stalled(total, shared.stop_reason().is_some()) {
            return;
        }
        let mut held: Vec<String> = Vec::new();
        if shared.pool.max_tasks() == Some(0) {
            held.push(format!("[total]: {} waiting", total.pending));
        }
        for (group, group_counts) in &counts.groups {
            if group_counts.pending > 0 && shared.pool.effective_limit(group) == Some(0) {
                held.push(format!("{group}: {} waiting", group_counts.pending));
            }
        }
        if held.is_empty() || held == self.noticed {
            return;
        }
        shared.notice_now(format!(
            "nothing runs: jobs wait in groups held back by a limit of 0 ({}); raise it to let \
             them run",
            held.join(", ")
        ));
        self.noticed = held;
    }
}

/// Writes a record with `write`, if there is a report; the first error writing one is said
/// at once and kept in `error` (the run's exit status says it at the end).
fn record(
    shared: &Shared,
    report: &mut Option<Report>,
    error: &mut Option<std::io::Error>,
    write: impl FnOnce(&mut Report) -> std::io::Result<()>,
) {
    if let Some(report) = report
        && let Err(failed) = write(report)
        && error.is_none()
    {
        shared.notice_now(format!("error: cannot write the report: {failed}"));
        *error = Some(failed);
    }
}

/// Runs every job; returns when each has an outcome, written to `report`.
///
/// `signals` delivers Ctrl-C and termination requests (see `signals::listen`); they are acted
/// on at once, even while the output waits for a slow reader (notices about them go through
/// `notices`, which never waits, and is closed when the run ends). Each job that ran gets a
/// line in `joblog`, which stays the caller's (to see whether a write failed).
#[allow(clippy::too_many_arguments)] // each is a distinct part of the run set up by `app`
pub async fn run(
    input: Input,
    pool: Pool,
    config: Config,
    output: output::Sender,
    notices: output::Notices,
    mut report: Option<Report>,
    signals: &mut mpsc::UnboundedReceiver<Event>,
    progress: &Progress,
    mut joblog: Option<&mut Joblog>,
    reaper: MaybeReaper,
    notes: Notes,
) -> Finished {
    let Notes {
        sender: outcomes,
        receiver: mut received,
    } = notes;
    let tally = match &input {
        Input::Checked(jobs) => Tally::new(jobs),
        // Counted as they arrive.
        Input::Streaming { .. } => Tally::new(&[]),
    };
    let shared = Arc::new(Shared {
        tally,
        pool,
        config,
        stop: RwLock::new(None),
        outcomes,
        output,
        notices,
        groups: Groups::new(reaper),
        killed: watch::Sender::new(false),
        grouped: tokio::sync::Mutex::new(()),
        stopped: watch::Sender::new(false),
        failures: AtomicUsize::new(0),
        halt_now: Notify::new(),
        backlogs: report
            .iter()
            .map(Report::backlog)
            .chain(joblog.iter().map(|joblog| joblog.backlog()))
            .collect(),
        held_back: AtomicBool::new(false),
        out_of_files_said: AtomicBool::new(false),
    });
    // Reaps what the jobs leave behind, if taskherd adopts orphans (see `orphans`).
    let sweeper = shared
        .groups
        .orphans()
        .map(|orphans| tokio::spawn(orphans.sweep()));
    let stopped_watch = tokio::spawn(watch_stopped(Arc::clone(&shared)));
    let mut submitter = tokio::spawn(submit(Arc::clone(&shared), input));
    let mut submitted = false;

    let mut report_error = None;
    let mut accounted = 0;
    // How many jobs there are, once the submitting loop knows.
    let mut jobs: Option<usize> = None;
    let mut bad_input = false;
    let mut unread = false;
    let mut skipped = 0;
    let mut interrupts = Interrupts::default();
    // With --redis, progress shows the fleet's limits, read back every so often.
    let mut refreshed = tokio::time::Instant::now();
    let mut ticks = progress.period().map(|period| {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticks
    });
    let mut stall_checks =
        tokio::time::interval_at(tokio::time::Instant::now() + STALL_CHECK, STALL_CHECK);
    stall_checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut held_back = HeldBack::default();
    while jobs.is_none_or(|jobs| accounted < jobs) {
        let note = tokio::select! {
            note = received.recv() => note,
            _ = async { ticks.as_mut().expect("checked by the guard").tick().await }, if ticks.is_some() => {
                let counts = shared.tally.snapshot();
                if let Pool::Fleet(fleet) = &shared.pool
                    && refreshed.elapsed() >= fleet::REFRESH
                {
                    refreshed = tokio::time::Instant::now();
                    let groups = counts.groups.iter().map(|(group, _)| group.clone());
                    fleet.refresh_in_background(groups.collect());
                }
                if let Some(line) = progress.update(&counts, |group| shared.pool.effective_limit(group)) {
                    // Never waits: when the output is full, this status line is dropped (the
                    // next one comes 2 s later).
                    let _ = shared.output.try_send(Msg::Notice(line));
                }
                continue;
            }
            _ = stall_checks.tick() => {
                held_back.check(&shared);
                continue;
            }
            Some(event) = signals.recv() => {
                interrupts.on(event, &shared);
                continue;
            }
            // A panic in the submitting loop is a bug: surface it rather than wait for ever for
            // the jobs it would have submitted.
            ended = &mut submitter, if !submitted => {
                submitted = true;
                if let Err(error) = ended {
                    std::panic::resume_unwind(error.into_panic());
                }
                continue;
            }
            () = shared.halt_now.notified() => {
                // As a second Ctrl-C would: the run is stopped already, with its reason.
                interrupts.on(Event::Terminate, &shared);
                continue;
            }
            () = sleep_until(interrupts.kill_at.unwrap_or_else(far_future)), if interrupts.kill_at.is_some() => {
                interrupts.kill_at = None;
                kill_all(&shared, "still running after the grace period");
                continue;
            }
        };
        let (job, outcome) = match note.expect("the shared state holds a sender until the run ends")
        {
            Note::Outcome(job, outcome) => (job, outcome),
            Note::Skipped(job) => {
                skipped += 1;
                record(&shared, &mut report, &mut report_error, |report| {
                    report.write_skipped(&job.job, job.done)
                });
                continue;
            }
            Note::Pending(job) => {
                record(&shared, &mut report, &mut report_error, |report| {
                    report.write_pending(&job)
                });
                continue;
            }
            Note::CarriedOver(job) => {
                let done = job.resumed.is_none();
                record(&shared, &mut report, &mut report_error, |report| {
                    report.write_skipped(&job, done)
                });
                continue;
            }
            Note::Submitted {
                jobs: n,
                bad_input: bad,
                unread: left,
            } => {
                jobs = Some(n);
                bad_input = bad;
                unread = left;
                continue;
            }
        };
        accounted += 1;
        record(&shared, &mut report, &mut report_error, |report| {
            report.write(&job, &outcome)
        });
        if let Some(joblog) = joblog.as_deref_mut() {
            // Only the first error is returned; the caller sees `joblog.failed()`.
            if let Some(error) = joblog.write(&job, &outcome) {
                shared.notice_now(format!("error: cannot write the joblog: {error}"));
            }
        }
    }
    // Every outcome is in, so the submitting loop has ended; a panic there is a bug to surface.
    if !submitted && let Err(error) = submitter.await {
        std::panic::resume_unwind(error.into_panic());
    }
    // Every job has ended.
    shared.groups.finish();
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    stopped_watch.abort();
    shared.notices.close();
    Finished {
        counts: shared.tally.snapshot(),
        stopped: shared.stop_reason(),
        terminated: interrupts.level >= 2,
        report_error,
        report,
        bad_input,
        unread,
        skipped,
    }
}

/// What the Ctrl-Cs so far have done.
#[derive(Debug, Default)]
struct Interrupts {
    /// Ctrl-Cs and termination requests received.
    level: u32,
    /// When to send SIGKILL to the jobs sent SIGTERM.
    kill_at: Option<tokio::time::Instant>,
}

impl Interrupts {
    /// Acts on `event`. Never waits: signals are sent first, then the notice saying so.
    fn on(&mut self, event: Event, shared: &Shared) {
        // SIGTERM and SIGHUP go straight to terminating the jobs.
        self.level = match event {
            Event::Interrupt => self.level + 1,
            Event::Terminate => self.level.max(2),
        };
        // Stopped first: a job's process spawned before is in `groups` once the stop has
        // waited for the spawns in progress (counted before, a job just spawned was left out:
        // "waiting for 1 running job" with 2 running).
        shared.stop(Reason::Interrupted);
        let running = shared.groups.len();
        match self.level {
            1 => {
                shared.notice_now(format!(
                    "interrupted: starting no more jobs, {}",
                    waiting_for(running, " (Ctrl-C again to terminate them)")
                ));
            }
            2 => {
                if self.kill_at.is_some() {
                    return; // already terminating
                }
                let signalled = shared.groups.signal_all(libc::SIGTERM);
                let grace = shared.config.kill_grace;
                self.kill_at = Some(tokio::time::Instant::now() + grace);
                // Jobs whose processes all ended count as running while their output is
                // passed on (a daemon they left may hold it): nothing to signal, but said, as
                // the first Ctrl-C counted them.
                let ended = match running.saturating_sub(signalled) {
                    0 => String::new(),
                    1 => "; 1 job has ended, its output still being passed on".to_owned(),
                    n => format!("; {n} jobs have ended, their output still being passed on"),
                };
                shared.notice_now(format!(
                    "terminating {} (SIGTERM; SIGKILL after {}; Ctrl-C again to kill now){ended}",
                    table::count(signalled, "running job"),
                    table::duration(grace),
                ));
            }
            _ => {
                self.kill_at = None;
                kill_all(shared, "killed at once");
            }
        }
    }
}

/// Sends SIGKILL to every running job.
fn kill_all(shared: &Shared, why: &str) {
    let signalled = shared.groups.signal_all(libc::SIGKILL);
    shared.killed.send_replace(true);
    // Output that cannot be written (nobody reads taskherd's standard output) no longer holds
    // anything up: the jobs' ends and their outcomes, the notices, taskherd's exit.
    shared.output.abandon();
    if signalled > 0 {
        shared.notice_now(format!("{} {why}: SIGKILL", table::count(signalled, "job")));
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// The submitting loop: queues every job in file order, then tells the collector how many
/// there were.
async fn submit(shared: Arc<Shared>, input: Input) {
    let window = Arc::new(Semaphore::new(match &shared.pool {
        Pool::Local(_) => MAX_QUEUED,
        Pool::Fleet(_) => MAX_QUEUED_FLEET,
    }));
    let mut submitted = 0;
    let mut bad_input = false;
    let (mut checked, mut streaming, resumed) = match input {
        Input::Checked(jobs) => (Some(jobs.into_iter()), None, None),
        Input::Streaming { arrivals, resumed } => (None, Some(arrivals), resumed),
    };
    // The streamed input was read to its end.
    let mut input_ended = false;
    loop {
        let slot = Arc::clone(&window)
            .acquire_owned()
            .await
            .expect("the window semaphore is never closed");
        let job = match (&mut checked, &mut streaming) {
            (Some(jobs), _) => match jobs.next() {
                Some(job) => job,
                None => break,
            },
            (_, Some(arrivals)) => match next_arrival(&shared, arrivals, &mut input_ended).await {
                Some(job) => {
                    shared.tally.add(&job);
                    job
                }
                None => break,
            },
            (None, None) => unreachable!("one input or the other"),
        };
        let index = submitted;
        submitted += 1;
        let account = Account::new(&shared, Arc::new(job), index);
        if let Some(reason) = shared.stop_reason() {
            // Stopping: the rest of the jobs will never start. (Streamed lines not read yet
            // are never read.)
            account.not_started(Some(reason));
            for job in checked.iter_mut().flatten() {
                let index = submitted;
                submitted += 1;
                Account::new(&shared, Arc::new(job), index).not_started(Some(reason));
            }
            break;
        }
        let groups = account.job().groups.clone();
        match &shared.pool {
            Pool::Local(pool) => queue(pool.acquire(groups), Admission::Local, account, slot).await,
            Pool::Fleet(fleet) => {
                fleet.learn(&groups);
                let acquire = fleet_acquire(Arc::clone(&shared), Arc::clone(fleet), groups);
                queue(acquire, Admission::Fleet, account, slot).await;
            }
        }
    }
    if let Some(arrivals) = &mut streaming {
        bad_input = shared.stop_reason() == Some(Reason::BadInput);
        // Nothing more is read: the reader stops at its next line.
        arrivals.close();
        // The records of jobs done (and of failures to run again) that no line read took are
        // carried over, whether the run stopped before the end of the input or the lines were
        // not in it (the channel is closed first: see `Streamed`). The lines read but not
        // taken by the run have their records already, written as they were read; a failure among them, whose record is the
        // provisional `pending` one, is carried over too (its last record says it never
        // started, as for an unread line).
        if let Some(resumed) = &resumed {
            // `recv`, not `try_recv`: after `close`, it also waits for a send that reserved
            // its place before the close and has not pushed yet.
            while let Some(arrival) = arrivals.recv().await {
                if let Arrival::Job(job) = arrival
                    && job.resumed.is_some()
                {
                    let _ = shared.outcomes.send(Note::CarriedOver(job));
                }
            }
            for job in resumed.carry_over() {
                let _ = shared.outcomes.send(Note::CarriedOver(job));
            }
        }
    }
    let _ = shared.outcomes.send(Note::Submitted {
        jobs: submitted,
        bad_input,
        unread: streaming.is_some() && !input_ended,
    });
}

/// Queues a job: polls its `acquire` once, here in the submitting loop, then moves it into the
/// job's own task, which waits for the admission and runs the job.
///
/// The first poll is what puts the job in the queues, in file order: for an in-process pool
/// it enqueues the job; for a fleet's pool it sends the job's admission call, and calls leave
/// on the one connection to Redis in the order they were sent, so Redis queues them in file
/// order too (see the README: a call retried after Redis was unreachable queues anew).
async fn queue<F, P>(
    acquire: F,
    admission: fn(P) -> Admission,
    account: Account,
    slot: tokio::sync::OwnedSemaphorePermit,
) where
    F: Future<Output = Result<P, AcquireError>> + Send + 'static,
    P: Send + 'static,
{
    let mut acquire = Box::pin(acquire);
    let first = std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await;
    tokio::spawn(async move {
        let admitted = match first {
            Poll::Ready(admitted) => admitted,
            Poll::Pending => acquire.await,
        };
        drop(slot);
        // Boxed: a waiting job's task holds its admission only, not a running job's state.
        Box::pin(run_job(account, admitted.map(admission))).await;
    });
}

/// Waits for an admission in a fleet's pool. While Redis is unreachable, asks again every
/// [`fleet::RETRY`] until the run stops: no job runs without an admission. Says so once per
/// outage (as `Fleet::guard` does when no admission call fails), and again when Redis is back.
async fn fleet_acquire(
    shared: Arc<Shared>,
    fleet: Arc<Fleet>,
    groups: Vec<Group>,
) -> Result<RedisPermit<Group>, AcquireError> {
    loop {
        match fleet.pool.acquire(groups.iter().cloned()).await {
            Ok(permit) => {
                if let Some(text) = fleet.came_back() {
                    shared.notice(text).await;
                }
                return Ok(permit);
            }
            Err(error) if error.is_unavailable() && shared.stop_reason().is_none() => {
                let source = std::error::Error::source(&error);
                let forgotten = source
                    .and_then(|source| source.downcast_ref::<UnavailableError>())
                    .is_some_and(UnavailableError::is_forgotten);
                if forgotten {
                    // Redis lost the pool's limits: the guard writes them again, and says so.
                    fleet.saw_forgotten();
                } else {
                    let source = source.map_or_else(|| error.to_string(), ToString::to_string);
                    if let Some(text) = fleet.went_down(&source) {
                        shared.notice(text).await;
                    }
                }
                let mut stopped = shared.stopped.subscribe();
                tokio::select! {
                    () = tokio::time::sleep(fleet::RETRY) => {}
                    // An error means the shared state is gone, which cannot happen here.
                    _ = stopped.wait_for(|stopped| *stopped) => {}
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// Waits for a job's next admission (a retry, or one lost before the job started), in either
/// kind of pool.
async fn admit(shared: &Arc<Shared>, groups: Vec<Group>) -> Result<Admission, AcquireError> {
    match &shared.pool {
        Pool::Local(pool) => pool.acquire(groups).await.map(Admission::Local),
        Pool::Fleet(fleet) => fleet_acquire(Arc::clone(shared), Arc::clone(fleet), groups)
            .await
            .map(Admission::Fleet),
    }
}

/// The next job of streamed input, after passing on warnings and skipped jobs; `None` at the
/// end of the input (setting `ended`), after a bad line (which stops the run), or once the run
/// stops.
async fn next_arrival(
    shared: &Shared,
    arrivals: &mut mpsc::Receiver<Arrival>,
    ended: &mut bool,
) -> Option<Job> {
    let mut stopped = shared.stopped.subscribe();
    loop {
        // Skipped lines have records too.
        shared.room_for_records().await;
        let arrival = tokio::select! {
            arrival = arrivals.recv() => match arrival {
                Some(arrival) => arrival,
                None => {
                    *ended = true;
                    return None;
                }
            },
            // Stopping: lines not read yet are never read.
            _ = stopped.wait_for(|stopped| *stopped) => return None,
        };
        match arrival {
            Arrival::Job(job) => return Some(job),
            // Its record is written (see `EarlyRecords`).
            Arrival::Skipped => {}
            Arrival::Warning(warning) => shared.notice(format!("warning: {warning}")).await,
            Arrival::Bad(lines) => {
                for line in lines {
                    shared.notice(line).await;
                }
                if shared.stop(Reason::BadInput) {
                    let running = shared.tally.total().running;
                    shared
                        .notice(format!(
                            "starting no more jobs, {}",
                            waiting_for(running, "")
                        ))
                        .await;
                }
                return None;
            }
        }
    }
}

/// Owns the duty to send a job's outcome; sends an error outcome if dropped without one (a
/// panic in the job's task), so that the collector never waits forever.
struct Account {
    shared: Arc<Shared>,
    job: Arc<Job>,
    /// The job's number in the run, from 0: its key among the running process groups.
    index: usize,
    sent: bool,
}

impl Account {
    fn new(shared: &Arc<Shared>, job: Arc<Job>, index: usize) -> Account {
        Account {
            shared: Arc::clone(shared),
            job,
            index,
            sent: false,
        }
    }

    fn job(&self) -> &Job {
        &self.job
    }

    fn send(mut self, outcome: Outcome) {
        self.sent = true;
        // The collector holds the receiver until every job has an outcome.
        let _ = self
            .shared
            .outcomes
            .send(Note::Outcome(Arc::clone(&self.job), outcome));
    }

    fn not_started(self, reason: Option<Reason>) {
        self.shared
            .tally
            .end(self.job(), &Status::NotStarted, false);
        let outcome = Outcome::not_started(reason);
        self.send(outcome);
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        if !self.sent {
            let outcome = Outcome {
                status: Status::Error {
                    message: "internal error: the job's task ended without an outcome".to_owned(),
                },
                reason: None,
                times: None,
                output: None,
                attempts: Vec::new(),
            };
            let _ = self
                .shared
                .outcomes
                .send(Note::Outcome(Arc::clone(&self.job), outcome));
        }
    }
}

/// A job's process, just spawned.
struct Started {
    child: Child,
    start: SystemTime,
    started: Instant,
    output: Option<PathBuf>,
}

/// Runs one admitted job (or accounts for one that was not admitted), retrying it as allowed.
async fn run_job(account: Account, admitted: Result<Admission, AcquireError>) {
    let shared = Arc::clone(&account.shared);
    let index = account.index;
    let job = Arc::clone(&account.job);
    let job = &*job;
    let Ok(mut permit) = admitted else {
        // The pool closes only when the run stops.
        return account.not_started(shared.stop_reason());
    };
    // Admitted: starts once the report and the joblog have room for its lines. An admission
    // whose lease Redis lost meanwhile (restarted without its data) is made again, behind the
    // jobs queued since: started on it, the job would be terminated at once (`lease-lost`),
    // and the fleet may have admitted another in its place.
    loop {
        shared.room_for_records().await;
        if !permit.is_lost() {
            break;
        }
        drop(permit);
        permit = match admit(&shared, job.groups.clone()).await {
            Ok(admitted) => admitted,
            // The pool closes only when the run stops.
            Err(_) => return account.not_started(shared.stop_reason()),
        };
    }
    let retries = job.retries.unwrap_or(shared.config.retries);
    // The attempts before the current one.
    let mut earlier: Vec<Attempt> = Vec::new();
    loop {
        let number = earlier.len() + 1;
        let attempt = match start_when_files_free(&shared, job, index, number).await {
            Ok(started) => finish_attempt(&shared, job, index, started, &permit).await,
            Err(NotRun::Stopped(reason)) => {
                drop(permit);
                return match earlier.pop() {
                    None => account.not_started(Some(reason)),
                    // Stopped between two attempts: the job's fate is its last attempt's.
                    Some(last) => give_up(account, last, earlier).await,
                };
            }
            Err(NotRun::Error(message) | NotRun::OutOfFiles(message)) => {
                let status = Status::Error { message };
                shared.tally.end(job, &status, false);
                fail(&shared, job, &status).await;
                drop(permit);
                return account.send(Outcome {
                    status,
                    reason: None,
                    times: None,
                    output: None,
                    attempts: earlier,
                });
            }
        };
        if !(attempt.status.is_retryable() && attempt.reason.is_none())
            || earlier.len() >= retries as usize
            || shared.stop_reason().is_some()
        {
            // Counted out before the permit goes, so the tally never shows more than the
            // limits allow.
            shared.tally.end(job, &attempt.status, true);
            if attempt.status.is_failure() {
                fail(&shared, job, &attempt.status).await;
            }
            drop(permit);
            return account.send(Outcome {
                status: attempt.status,
                reason: attempt.reason,
                times: attempt.times,
                output: attempt.output,
                attempts: earlier,
            });
        }

        // Retry: wait without holding the job's groups, then queue again.
        shared.tally.retry(job);
        drop(permit);
        let delay = retry_delay(shared.config.retry_delay, number);
        shared
            .notice(format!(
                "line {} {}; retry {number} of {retries} in {}",
                job.line,
                describe(&attempt.status),
                table::duration(delay)
            ))
            .await;
        earlier.push(attempt);
        let mut stopped = shared.stopped.subscribe();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            // An error means the shared state is gone, which cannot happen while a job runs.
            _ = stopped.wait_for(|stopped| *stopped) => {}
        }
        permit = match admit(&shared, job.groups.clone()).await {
            Ok(permit) => permit,
            Err(_closed) => {
                let last = earlier.pop().expect("an attempt was just pushed");
                return give_up(account, last, earlier).await;
            }
        };
    }
}

/// Ends a job with the status of its `last` attempt, when the run stopped before its retry
/// (the tally counts it as waiting).
async fn give_up(account: Account, last: Attempt, earlier: Vec<Attempt>) {
    let shared = Arc::clone(&account.shared);
    let job = account.job();
    shared.tally.end(job, &last.status, false);
    fail(&shared, job, &last.status).await;
    account.send(Outcome {
        status: last.status,
        reason: last.reason,
        times: last.times,
        output: last.output,
        attempts: earlier,
    });
}

/// The wait before retry `number` (from 1): `first`, doubled for each retry after the first,
/// capped at [`MAX_RETRY_DELAY`] unless `first` is longer.
pub fn retry_delay(first: Duration, number: usize) -> Duration {
    let doublings = u32::try_from(number.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(31);
    let delay = first.saturating_mul(1 << doublings);
    delay.min(MAX_RETRY_DELAY.max(first))
}

/// The longest wait between two attempts of a job, unless `--retry-delay` is longer.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Waits for a started attempt to end and says how it went.
async fn finish_attempt(
    shared: &Shared,
    job: &Job,
    index: usize,
    started: Started,
    admission: &Admission,
) -> Attempt {
    let Started {
        child,
        start,
        started,
        output,
    } = started;
    let timeout = job.timeout.unwrap_or(shared.config.timeout);
    let exited_at = std::sync::OnceLock::new();
    let (exit, timed_out, lease_lost) = wait(
        child, job.line, index, timeout, admission, shared, &exited_at,
    )
    .await;
    let status = match exit {
        Ok(exit) if timed_out => Status::timed_out(timeout.unwrap_or_default(), exit),
        Ok(exit) => Status::of(exit),
        Err(error) => Status::Error {
            message: format!("cannot wait for the command: {error}"),
        },
    };
    kill_leftovers(shared, index, job.line).await;
    let signalled_at = shared.groups.remove(index);
    let signalled = signalled_at.is_some();
    // A job that ended by itself: until its process exited, not until its output was passed
    // on (which a slow reader of taskherd's output can make much later). One that taskherd
    // ended (its timeout, a lost lease, the run stopping): until it was ended, processes it
    // left behind included.
    let ended_by_itself = !timed_out && !lease_lost && !signalled;
    let ended = match (exited_at.get(), signalled_at) {
        (Some(&exited), _) if ended_by_itself => Some(exited),
        // Ended by taskherd: its shell's exit, or the last signal sent to what it left running,
        // whichever came later.
        (Some(&exited), Some(signal)) => Some(exited.max(signal)),
        (exited, signal) => exited.copied().or(signal),
    };
    let duration = ended.map_or_else(|| started.elapsed(), |ended| ended.duration_since(started));
    let times = Times {
        start,
        end: start + duration,
        duration,
    };
    // Terminated by taskherd, other than for its own timeout: because its lease was lost, or
    // because the run is stopping.
    let reason = if lease_lost && !timed_out {
        Some(Reason::LeaseLost)
    } else {
        (signalled && status.is_failure() && !timed_out)
            .then(|| shared.stop_reason().unwrap_or(Reason::Interrupted))
    };
    Attempt {
        status,
        reason,
        times: Some(times),
        output,
    }
}

/// Why [`start`] did not start a job.
enum NotRun {
    /// The run is stopping.
    Stopped(Reason),
    /// The process could not be started.
    Error(String),
    /// Not now: taskherd (or the system) is out of open files (`EMFILE`, `ENFILE`), which
    /// running jobs give back as they end.
    OutOfFiles(String),
}

impl NotRun {
    /// `message` about `error`: out of files, or another error.
    fn from_io(message: String, error: &std::io::Error) -> NotRun {
        match error.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => NotRun::OutOfFiles(message),
            _ => NotRun::Error(message),
        }
    }
}

/// [`start`], waiting while taskherd is out of open files and other jobs run: each takes about
/// three (its output pipes, or files), and gives them back when it ends, so a `-j` above what
/// `ulimit -n` allows makes jobs wait, not fail. Says so once per run. Out of files with no
/// other job running (nothing will give files back), the job fails as if it could not start.
async fn start_when_files_free(
    shared: &Shared,
    job: &Job,
    index: usize,
    number: usize,
) -> Result<Started, NotRun> {
    let mut pause = Duration::from_millis(5);
    let mut alone = false;
    loop {
        let message = match start(shared, job, index, number) {
            Err(NotRun::OutOfFiles(message)) => message,
            other => return other,
        };
        if shared.groups.len() == 0 {
            // Once more at once: the last other job may have ended since the failure.
            if alone {
                return Err(NotRun::Error(message));
            }
            alone = true;
            continue;
        }
        alone = false;
        if !shared.out_of_files_said.swap(true, Ordering::Relaxed) {
            shared
                .notice(format!(
                    "warning: line {}: {message}; jobs wait to start until running ones end and \
                     give their open files back (raise the limit on open files, `ulimit -n`, or \
                     lower -j)",
                    job.line
                ))
                .await;
        }
        let mut stopped = shared.stopped.subscribe();
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            // Then `start` says the run is stopping.
            _ = stopped.wait_for(|stopped| *stopped) => {}
        }
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Spawns attempt `number` (from 1) of a job's process unless the run is stopping.
fn start(shared: &Shared, job: &Job, index: usize, number: usize) -> Result<Started, NotRun> {
    // Held while spawning: a stop waits for the spawns in progress (see the module docs).
    let stop = shared
        .stop
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(reason) = *stop {
        return Err(NotRun::Stopped(reason));
    }
    let shell = &shared.config.shell;
    let mut command = Command::new(shell);
    command
        .arg("-c")
        .arg(std::ffi::OsStr::from_bytes(&job.command))
        .env("TASKHERD_LINE", job.line.to_string())
        .stdin(Stdio::null())
        // Its own process group, so that signals reach everything the job starts, and the
        // terminal's Ctrl-C reaches only taskherd.
        .process_group(0);
    let output = match &shared.config.output {
        OutputMode::Prefixed | OutputMode::Grouped => {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        }
        OutputMode::Dir(dir) => {
            let path = output_file(dir, job.line, number);
            let file = std::fs::File::create(&path)
                .and_then(|file| Ok((file.try_clone()?, file)))
                .map_err(|error| {
                    NotRun::from_io(format!("cannot create {}: {error}", path.display()), &error)
                })?;
            command.stdout(file.0).stderr(file.1);
            Some(path)
        }
    };
    let start = SystemTime::now();
    let started = Instant::now();
    let child = command.spawn().map_err(|error| {
        NotRun::from_io(format!("cannot start {}: {error}", shell.display()), &error)
    })?;
    match child.id() {
        Some(pid) => shared.groups.insert(index, job.line, pid),
        None => debug_assert!(false, "a child just spawned has no pid"),
    }
    // Counted running before the stop's lock is let go, like the process group above: a
    // stop made meanwhile counts it (`--halt-on-error`'s and bad input's notices read the
    // tally once stopped).
    shared.tally.start(job);
    drop(stop);
    Ok(Started {
        child,
        start,
        started,
        output,
    })
}

/// The file that holds the output of attempt `number` (from 1) of a job with
/// `--output dir:PATH`: `LINE.log` for the first, `LINE.N.log` for a retry.
pub fn output_file(dir: &Path, line: usize, number: usize) -> PathBuf {
    match number {
        1 => dir.join(format!("{line}.log")),
        _ => dir.join(format!("{line}.{number}.log")),
    }
}

/// Waits for a job's process to exit and its output to be read to the end; returns its exit
/// status, whether it ran past `timeout`, and whether its `admission`'s lease was lost.
///
/// A job still running after `timeout`, or when Redis lost its admission's lease, gets SIGTERM
/// to its process group, then SIGKILL after the grace period. Once its group was sent SIGKILL, or every job's (a third Ctrl-C), output
/// still open (held by a process that left the job's process group) is no longer waited for.
async fn wait(
    mut child: Child,
    line: usize,
    index: usize,
    timeout: Option<Duration>,
    admission: &Admission,
    shared: &Shared,
    exited_at: &std::sync::OnceLock<Instant>,
) -> (std::io::Result<std::process::ExitStatus>, bool, bool) {
    // Set and read by this task only; atomic only because the future must be `Send`.
    let timed_out = AtomicBool::new(false);
    let lease_lost = AtomicBool::new(false);
    let job_killed = Notify::new();
    // Set when the job's processes turn out to have ended while its output is still being
    // read: what is in the pipes is passed on, a pipe held open by something that left the
    // job's process group (a daemon) is not waited for.
    let drain = watch::Sender::new(false);
    // The job runs only while it is counted: once its lease is lost, it is terminated.
    let lease = async {
        admission.lost().await;
        if !shared.groups.alive(index) {
            // It has ended; only its output is still being passed on.
            drain_after_grace(shared, &drain).await;
            return std::future::pending().await;
        }
        lease_lost.store(true, Ordering::Relaxed);
        let why = format!("line {line}: Redis lost its admission (lease-lost)");
        terminate(shared, index, line, why).await;
        job_killed.notify_one();
        std::future::pending().await
    };
    let timer = async {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        tokio::time::sleep(timeout).await;
        if !shared.groups.alive(index) {
            // It ended in time; only its output is still being passed on (to a slow reader,
            // or held open by a daemon it started: not read past the grace period).
            drain_after_grace(shared, &drain).await;
            return std::future::pending().await;
        }
        timed_out.store(true, Ordering::Relaxed);
        let why = format!("line {line} timed out after {}", table::duration(timeout));
        terminate(shared, index, line, why).await;
        job_killed.notify_one();
        std::future::pending().await
    };
    let mut killed = shared.killed.subscribe();
    let given_up = async {
        tokio::select! {
            // An error means the shared state is gone, which cannot happen while a job runs.
            _ = killed.wait_for(|killed| *killed) => {}
            () = job_killed.notified() => {}
        }
    };
    let exit = async {
        match (child.stdout.take(), child.stderr.take()) {
            (Some(stdout), Some(stderr)) => {
                let drains = (Drain::new(&drain), Drain::new(&drain));
                let pipes = (stdout, stderr);
                read_output(&mut child, pipes, line, given_up, shared, exited_at, drains).await
            }
            // Output goes to a file.
            _ => {
                let exit = child.wait().await;
                let _ = exited_at.set(Instant::now());
                exit
            }
        }
    };
    // The timer and the lease never end by themselves: the job's exit decides.
    let exit = tokio::select! {
        exit = exit => exit,
        () = timer => unreachable!("the timer ends pending"),
        () = lease => unreachable!("the lease watch ends pending"),
    };
    (
        exit,
        timed_out.load(Ordering::Relaxed),
        lease_lost.load(Ordering::Relaxed),
    )
}

/// Once the shell of job `index` (of line `line`) has ended: if taskherd sent its process
/// group SIGTERM (its timeout, a lost lease, the run terminating) and not SIGKILL yet, what
/// the job left in the group that ignores SIGTERM gets SIGKILL at the end of the grace period,
/// as the README promises, even though no pipe of the job's holds it to the job. Returns at
/// once for a job taskherd did not terminate, and as soon as the group has no live process
/// (processes that ended and wait to be reaped by another parent do not count) or was sent
/// SIGKILL. When the run terminated the job, the run sends the SIGKILL (and counts it in its
/// notice); this only waits for it, with a second of slack before sending it itself. Before
/// this, such processes ran on after taskherd exited.
async fn kill_leftovers(shared: &Shared, index: usize, line: usize) {
    let grace = shared.config.kill_grace;
    let Some(pgid) = shared.groups.pgid(index) else {
        return;
    };
    let mut members = Some(Members::new(pgid));
    let mut killed = shared.killed.subscribe();
    let mut check = LINGER_CHECK;
    // How long after the first SIGTERM the SIGKILL goes.
    let after = loop {
        let Some((terminated, by_the_run)) = shared.groups.terminating(index) else {
            return;
        };
        // Empty (orphans taskherd adopted reaped first), or only zombies left.
        if !shared.groups.alive(index) {
            return;
        }
        if let Some(mut looking) = members.take() {
            // Blocking reads of `/proc`: off the runtime's threads.
            let looked = tokio::task::spawn_blocking(move || (looking.any_live(), looking)).await;
            if let Ok((live, looked)) = looked {
                if live == Some(false) {
                    return;
                }
                // No answer from `/proc`: `killpg` alone from now on.
                members = live.map(|_| looked);
            }
        }
        let after = if by_the_run {
            grace.saturating_add(Duration::from_secs(1))
        } else {
            grace
        };
        let left = after.saturating_sub(terminated.elapsed());
        if left.is_zero() {
            break after;
        }
        // The run's SIGKILL ends the wait at once.
        tokio::select! {
            () = tokio::time::sleep(left.min(check)) => {}
            _ = killed.wait_for(|killed| *killed), if !*killed.borrow() => {}
        }
        check = (check * 2).min(LINGER_CHECK_MAX);
    };
    // Its notice is not waited for, so a retry notice may come before it.
    kill(shared, index, line, after);
}

/// After the grace period, stops the reading of a job's pipes (see [`Drain`]).
async fn drain_after_grace(shared: &Shared, drain: &watch::Sender<bool>) {
    tokio::time::sleep(shared.config.kill_grace).await;
    drain.send_replace(true);
}

/// Terminates job `index` (of line `line`): SIGTERM to its process group, saying `why`, then
/// SIGKILL after the grace period if it is still running. The notices never hold the signals
/// up.
async fn terminate(shared: &Shared, index: usize, line: usize, why: String) {
    if shared.groups.signal(index, libc::SIGTERM) {
        shared.notice_now(format!("{why}: SIGTERM"));
    }
    let grace = shared.config.kill_grace;
    tokio::time::sleep(grace).await;
    kill(shared, index, line, grace);
}

/// SIGKILL to job `index`'s process group (of line `line`), `after` its first SIGTERM, unless
/// it was sent one already; says so without waiting for the output (the code that terminates
/// jobs never waits for it: a stalled reader would keep the job's slot).
fn kill(shared: &Shared, index: usize, line: usize, after: Duration) {
    if shared.groups.signal(index, libc::SIGKILL) {
        shared.notice_now(format!(
            "line {line} still running {} after SIGTERM: SIGKILL",
            table::duration(after)
        ));
    }
}

/// Waits for a job's process to exit while its output is forwarded, until the end of the
/// output or until `given_up`.
async fn read_output(
    child: &mut Child,
    (stdout, stderr): (ChildStdout, ChildStderr),
    line: usize,
    given_up: impl Future<Output = ()>,
    shared: &Shared,
    exited_at: &std::sync::OnceLock<Instant>,
    (drain_out, drain_err): (Drain, Drain),
) -> std::io::Result<std::process::ExitStatus> {
    let sender = &shared.output;
    // The process's exit, noted when it comes (its output may take longer).
    let exited = async {
        let exit = child.wait().await;
        let _ = exited_at.set(Instant::now());
        exit
    };
    match shared.config.output {
        OutputMode::Grouped => {
            let (mut out, mut err) = (Spool::default(), Spool::default());
            let read =
                async { tokio::join!(out.fill(stdout, drain_out), err.fill(stderr, drain_err)) };
            let (exit, ()) = tokio::join!(exited, async {
                tokio::select! {
                    _ = read => {}
                    () = given_up => {}
                }
            });
            // One job's output in one piece: no other job's output between its pieces.
            let _turn = shared.grouped.lock().await;
            out.send(Stream::Stdout, sender).await;
            err.send(Stream::Stderr, sender).await;
            exit
        }
        _ => {
            let prefix = format!("[{line}] ");
            let forward = async {
                tokio::join!(
                    output::forward_lines(
                        stdout,
                        Stream::Stdout,
                        prefix.as_bytes(),
                        sender,
                        drain_out
                    ),
                    output::forward_lines(
                        stderr,
                        Stream::Stderr,
                        prefix.as_bytes(),
                        sender,
                        drain_err
                    )
                )
            };
            let (exit, ()) = tokio::join!(exited, async {
                tokio::select! {
                    _ = forward => {}
                    () = given_up => {}
                }
            });
            exit
        }
    }
}

/// A job failed for good: say so if that halts the run.
async fn fail(shared: &Shared, job: &Job, status: &Status) {
    // A job that could not even start has no output of its own to explain it: say why here,
    // not only in the report.
    if matches!(status, Status::Error { .. }) {
        shared
            .notice(format!("line {} {}", job.line, describe(status)))
            .await;
    }
    // Relaxed: only the count matters, and the stop that may follow has its own lock.
    let failures = shared.failures.fetch_add(1, Ordering::Relaxed) + 1;
    let halt = match shared.config.halt_on_error {
        Some(Halt::After(n)) if failures >= n => Halt::After(n),
        Some(Halt::Now) => Halt::Now,
        _ => return,
    };
    if !shared.stop(Reason::HaltOnError) {
        return;
    }
    let running = shared.tally.total().running;
    let after = match halt {
        Halt::After(1) | Halt::Now => format!("line {} {}", job.line, describe(status)),
        Halt::After(n) => format!(
            "{n} jobs failed, the last: line {} {}",
            job.line,
            describe(status)
        ),
    };
    let then = match halt {
        Halt::Now => "terminating the running jobs".to_owned(),
        Halt::After(_) => waiting_for(running, ""),
    };
    // Not waiting for the output: `now` must terminate the jobs even while it is stalled.
    shared.notice_now(format!(
        "{after}; --halt-on-error: starting no more jobs, {then}"
    ));
    if halt == Halt::Now {
        shared.halt_now.notify_one();
    }
}

/// `waiting for 3 running jobs to finish` followed by `then`, or `no job is running` when none
/// is.
fn waiting_for(running: usize, then: &str) -> String {
    match running {
        0 => "no job is running".to_owned(),
        _ => format!(
            "waiting for {} to finish{then}",
            table::count(running, "running job")
        ),
    }
}

/// `SIGTERM`, or `signal 64` for a signal without a name.
fn signal_text(signal: i32) -> String {
    match crate::report::signal_name(signal) {
        Some(name) => name.to_owned(),
        None => format!("signal {signal}"),
    }
}

/// Says how a job ended, as in "line 3 failed with exit status 2".
pub fn describe(status: &Status) -> String {
    match status {
        Status::Succeeded => "succeeded".to_owned(),
        Status::Failed { code } => format!("failed with exit status {code}"),
        Status::Killed { signal } => format!("was killed by {}", signal_text(*signal)),
        Status::TimedOut { after, .. } => format!("timed out after {}", table::duration(*after)),
        Status::NotStarted => "did not start".to_owned(),
        Status::Error { message } => format!("could not start: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stall is nothing running at two checks in a row with no job ended in between: the
    /// instant between two jobs of a busy group, seen by one check, is none (found by a
    /// review: a notice came in such a run). A notice is given again only after a job ended.
    #[test]
    fn held_back_needs_two_idle_checks_without_progress() {
        let counts = |done: usize, running: usize, pending: usize| crate::tally::Counts {
            jobs: done + running + pending,
            pending,
            running,
            succeeded: done,
            ..Default::default()
        };
        let mut held = HeldBack::default();
        assert!(!held.stalled(&counts(5, 0, 3), false), "one idle check");
        assert!(
            !held.stalled(&counts(6, 0, 2), false),
            "a job ended in between"
        );
        assert!(!held.stalled(&counts(6, 1, 1), false), "running");
        assert!(!held.stalled(&counts(7, 0, 1), false));
        assert!(
            held.stalled(&counts(7, 0, 1), false),
            "nothing moved for a whole interval"
        );
        assert!(held.stalled(&counts(7, 0, 1), false), "still");
        assert!(!held.stalled(&counts(7, 0, 1), true), "stopping");
        assert!(!held.stalled(&counts(7, 0, 0), false), "nothing waits");
        held.noticed = vec!["paused: 1 waiting".to_owned()];
        assert!(!held.stalled(&counts(8, 0, 1), false));
        assert!(
            held.noticed.is_empty(),
            "a job ended: a later stall is said again"
        );
    }
}
