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
//! rules). At most
//! [`MAX_QUEUED`] jobs wait in the pool at once; further jobs are queued when earlier ones start.
//!
//! # Every job is accounted for
//!
//! Every job ends in exactly one outcome sent to the collector: from its task (ran, failed,
//! could not start, or given up because the pool closed), from the submitting loop (never
//! submitted because the run was stopping), or, should a job task ever panic, from the guard it
//! owns. The collector returns only when it has counted one outcome per job.
//!
//! # Stopping
//!
//! `--halt-on-error` and Ctrl-C *stop* the run: the stop reason is set under a write lock and
//! the pool is closed, which fails every waiting `acquire`. A job checks the stop reason and
//! registers its process group (for the signals sent on a second Ctrl-C) under the read lock,
//! so it either started before the stop, and is registered by the time the stop is complete,
//! or never starts.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use taskherd::{AcquireError, Permit, TaskPool};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::sleep_until;

use crate::cli::OutputMode;
use crate::jobfile::{Group, Job};
use crate::joblog::Joblog;
use crate::outcome::{Outcome, Reason, Status, Times};
use crate::output::{self, Msg, Spool, Stream};
use crate::progress::Progress;
use crate::report::Report;
use crate::signals::{Event, Groups};
use crate::table;
use crate::tally::{Snapshot, Tally};

/// The most jobs waiting for admission in the pool at once.
pub const MAX_QUEUED: usize = 10_000;

/// The shell that runs each command.
pub const SHELL: &str = "/bin/sh";

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub output: OutputMode,
    pub halt_on_error: bool,
    /// Time between SIGTERM and SIGKILL when terminating jobs.
    pub kill_grace: Duration,
}

/// What a finished run tells the caller.
#[derive(Debug)]
pub struct Finished {
    pub counts: Snapshot,
    /// Why the run stopped early, if it did.
    pub stopped: Option<Reason>,
    /// The first error writing the report, if any.
    pub report_error: Option<std::io::Error>,
}

/// State shared by the collector, the submitting loop and the job tasks.
struct Shared {
    jobs: Vec<Job>,
    pool: TaskPool<Group>,
    config: Config,
    stop: RwLock<Option<Reason>>,
    tally: Tally,
    outcomes: mpsc::UnboundedSender<Outcome>,
    output: output::Sender,
    /// The process groups of running jobs.
    groups: Groups,
    /// Set once every running job was sent SIGKILL: their output is not waited for any more.
    killed: watch::Sender<bool>,
    /// Held while one job's output is sent in `grouped` mode.
    grouped: tokio::sync::Mutex<()>,
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
        true
    }

    async fn notice(&self, text: String) {
        // Fails only once the writer is gone, at the very end.
        let _ = self.output.send(Msg::Notice(text)).await;
    }
}

/// Runs every job; returns when each has an outcome, written to `report`.
///
/// `signals` delivers Ctrl-C and termination requests (see `signals::listen`). Each job that
/// ran gets a line in `joblog`, which stays the caller's (to see whether a write failed).
#[allow(clippy::too_many_arguments)] // each is a distinct part of the run set up by `app`
pub async fn run(
    jobs: Vec<Job>,
    pool: TaskPool<Group>,
    config: Config,
    output: output::Sender,
    mut report: Option<Report>,
    mut signals: mpsc::UnboundedReceiver<Event>,
    progress: &Progress,
    mut joblog: Option<&mut Joblog>,
) -> Finished {
    let (outcomes, mut received) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        tally: Tally::new(&jobs),
        jobs,
        pool,
        config,
        stop: RwLock::new(None),
        outcomes,
        output,
        groups: Groups::default(),
        killed: watch::Sender::new(false),
        grouped: tokio::sync::Mutex::new(()),
    });
    let submitter = tokio::spawn(submit(Arc::clone(&shared)));

    let mut report_error = None;
    let mut accounted = 0;
    let mut interrupts = Interrupts::default();
    let mut ticks = progress.period().map(|period| {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticks
    });
    while accounted < shared.jobs.len() {
        let outcome = tokio::select! {
            outcome = received.recv() => outcome,
            _ = async { ticks.as_mut().expect("checked by the guard").tick().await }, if ticks.is_some() => {
                let counts = shared.tally.snapshot();
                if let Some(line) = progress.update(&counts, |group| shared.pool.effective_limit(group)) {
                    shared.notice(line).await;
                }
                continue;
            }
            Some(event) = signals.recv() => {
                interrupts.on(event, &shared).await;
                continue;
            }
            () = sleep_until(interrupts.kill_at.unwrap_or_else(far_future)), if interrupts.kill_at.is_some() => {
                interrupts.kill_at = None;
                kill_all(&shared, "still running after the grace period").await;
                continue;
            }
        };
        let outcome = outcome.expect("the shared state holds a sender until the run ends");
        accounted += 1;
        if let Some(report) = &mut report {
            if let Err(error) = report.write(&shared.jobs[outcome.index], &outcome) {
                if report_error.is_none() {
                    shared
                        .notice(format!("error: cannot write the report: {error}"))
                        .await;
                    report_error = Some(error);
                }
            }
        }
        if let Some(joblog) = joblog.as_deref_mut() {
            // Only the first error is returned; the caller sees `joblog.failed()`.
            if let Some(error) = joblog.write(&shared.jobs[outcome.index], &outcome) {
                shared
                    .notice(format!("error: cannot write the joblog: {error}"))
                    .await;
            }
        }
    }
    // Every outcome is in, so the submitting loop has ended; a panic there is a bug to surface.
    if let Err(error) = submitter.await {
        std::panic::resume_unwind(error.into_panic());
    }
    Finished {
        counts: shared.tally.snapshot(),
        stopped: shared.stop_reason(),
        report_error,
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
    async fn on(&mut self, event: Event, shared: &Shared) {
        // SIGTERM and SIGHUP go straight to terminating the jobs.
        self.level = match event {
            Event::Interrupt => self.level + 1,
            Event::Terminate => self.level.max(2),
        };
        let running = shared.groups.len();
        match self.level {
            1 => {
                shared.stop(Reason::Interrupted);
                shared
                    .notice(format!(
                        "interrupted: starting no more jobs, waiting for {} to finish \
                         (Ctrl-C again to terminate them)",
                        table::count(running, "running job")
                    ))
                    .await;
            }
            2 => {
                shared.stop(Reason::Interrupted);
                if self.kill_at.is_some() {
                    return; // already terminating
                }
                let signalled = shared.groups.signal_all(libc::SIGTERM);
                let grace = shared.config.kill_grace;
                self.kill_at = Some(tokio::time::Instant::now() + grace);
                shared
                    .notice(format!(
                        "terminating {} (SIGTERM; SIGKILL after {}; Ctrl-C again to kill now)",
                        table::count(signalled, "running job"),
                        table::duration(grace),
                    ))
                    .await;
            }
            _ => {
                self.kill_at = None;
                kill_all(shared, "killed at once").await;
            }
        }
    }
}

/// Sends SIGKILL to every running job.
async fn kill_all(shared: &Shared, why: &str) {
    let signalled = shared.groups.signal_all(libc::SIGKILL);
    shared.killed.send_replace(true);
    if signalled > 0 {
        shared
            .notice(format!("{} {why}: SIGKILL", table::count(signalled, "job")))
            .await;
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// The submitting loop: queues every job in file order.
async fn submit(shared: Arc<Shared>) {
    let window = Arc::new(Semaphore::new(MAX_QUEUED));
    for index in 0..shared.jobs.len() {
        let slot = Arc::clone(&window)
            .acquire_owned()
            .await
            .expect("the window semaphore is never closed");
        if let Some(reason) = shared.stop_reason() {
            // Stopping: the rest of the jobs will never start.
            for index in index..shared.jobs.len() {
                let account = Account::new(&shared, index);
                account.not_started(Some(reason));
            }
            return;
        }
        let job = &shared.jobs[index];
        let mut acquire = Box::pin(shared.pool.acquire(job.groups.clone()));
        // The first poll puts the job in the pool's queues: do it here, in file order.
        let first = std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await;
        let account = Account::new(&shared, index);
        tokio::spawn(async move {
            let admitted = match first {
                Poll::Ready(admitted) => admitted,
                Poll::Pending => acquire.await,
            };
            drop(slot);
            run_job(account, admitted).await;
        });
    }
}

/// Owns the duty to send a job's outcome; sends an error outcome if dropped without one (a
/// panic in the job's task), so that the collector never waits forever.
struct Account {
    shared: Arc<Shared>,
    index: usize,
    sent: bool,
}

impl Account {
    fn new(shared: &Arc<Shared>, index: usize) -> Account {
        Account {
            shared: Arc::clone(shared),
            index,
            sent: false,
        }
    }

    fn job(&self) -> &Job {
        &self.shared.jobs[self.index]
    }

    fn send(mut self, outcome: Outcome) {
        self.sent = true;
        // The collector holds the receiver until every job has an outcome.
        let _ = self.shared.outcomes.send(outcome);
    }

    fn not_started(self, reason: Option<Reason>) {
        self.shared
            .tally
            .end(self.job(), &Status::NotStarted, false);
        let outcome = Outcome::not_started(self.index, reason);
        self.send(outcome);
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        if !self.sent {
            let _ = self.shared.outcomes.send(Outcome {
                index: self.index,
                status: Status::Error {
                    message: "internal error: the job's task ended without an outcome".to_owned(),
                },
                reason: None,
                times: None,
                output: None,
            });
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

/// Runs one admitted job (or accounts for one that was not admitted).
async fn run_job(account: Account, admitted: Result<Permit<Group>, AcquireError>) {
    let shared = Arc::clone(&account.shared);
    let index = account.index;
    let job = &shared.jobs[index];
    let Ok(permit) = admitted else {
        // The pool closes only when the run stops.
        return account.not_started(shared.stop_reason());
    };
    let started = match start(&shared, index) {
        Ok(started) => started,
        Err(NotRun::Stopped(reason)) => {
            drop(permit);
            return account.not_started(Some(reason));
        }
        Err(NotRun::Error(message)) => {
            let status = Status::Error { message };
            shared.tally.end(job, &status, false);
            fail(&shared, job, &status).await;
            drop(permit);
            return account.send(Outcome {
                index,
                status,
                reason: None,
                times: None,
                output: None,
            });
        }
    };
    shared.tally.start(job);

    let Started {
        child,
        start,
        started,
        output,
    } = started;
    let status = match wait(child, job.line, &shared).await {
        Ok(exit) => Status::of(exit),
        Err(error) => Status::Error {
            message: format!("cannot wait for the command: {error}"),
        },
    };
    let signalled = shared.groups.remove(index);
    let times = Times {
        start,
        end: SystemTime::now(),
        duration: started.elapsed(),
    };
    // Counted out before the permit goes, so the tally never shows more than the limits allow.
    shared.tally.end(job, &status, true);
    if status.is_failure() {
        fail(&shared, job, &status).await;
    }
    drop(permit);
    let reason = (signalled && status.is_failure()).then_some(Reason::Interrupted);
    account.send(Outcome {
        index,
        status,
        reason,
        times: Some(times),
        output,
    });
}

/// Why [`start`] did not start a job.
enum NotRun {
    /// The run is stopping.
    Stopped(Reason),
    /// The process could not be started.
    Error(String),
}

/// Spawns a job's process unless the run is stopping.
fn start(shared: &Shared, index: usize) -> Result<Started, NotRun> {
    let job = &shared.jobs[index];
    // Held while spawning: a stop waits for the spawns in progress (see the module docs).
    let stop = shared
        .stop
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(reason) = *stop {
        return Err(NotRun::Stopped(reason));
    }
    let mut command = Command::new(SHELL);
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
            let path = output_file(dir, job.line);
            let file = std::fs::File::create(&path)
                .and_then(|file| Ok((file.try_clone()?, file)))
                .map_err(|error| {
                    NotRun::Error(format!("cannot create {}: {error}", path.display()))
                })?;
            command.stdout(file.0).stderr(file.1);
            Some(path)
        }
    };
    let start = SystemTime::now();
    let started = Instant::now();
    let child = command
        .spawn()
        .map_err(|error| NotRun::Error(format!("cannot start {SHELL}: {error}")))?;
    match child.id() {
        Some(pid) => shared.groups.insert(index, pid),
        None => debug_assert!(false, "a child just spawned has no pid"),
    }
    drop(stop);
    Ok(Started {
        child,
        start,
        started,
        output,
    })
}

/// The file that holds a job's output with `--output dir:PATH`.
pub fn output_file(dir: &Path, line: usize) -> PathBuf {
    dir.join(format!("{line}.log"))
}

/// Waits for a job's process to exit and its output to be read to the end.
///
/// Once every job was sent SIGKILL, output still open (held by a process that left the job's
/// process group) is no longer waited for.
async fn wait(
    mut child: Child,
    line: usize,
    shared: &Shared,
) -> std::io::Result<std::process::ExitStatus> {
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        // Output goes to a file.
        return child.wait().await;
    };
    let mut killed = shared.killed.subscribe();
    let killed = async move {
        // An error means the shared state is gone, which cannot happen while a job runs.
        let _ = killed.wait_for(|killed| *killed).await;
    };
    let sender = &shared.output;
    match shared.config.output {
        OutputMode::Grouped => {
            let (mut out, mut err) = (Spool::default(), Spool::default());
            let read = async { tokio::join!(out.fill(stdout), err.fill(stderr)) };
            let (exit, ()) = tokio::join!(child.wait(), async {
                tokio::select! {
                    _ = read => {}
                    () = killed => {}
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
                    output::forward_lines(stdout, Stream::Stdout, prefix.as_bytes(), sender),
                    output::forward_lines(stderr, Stream::Stderr, prefix.as_bytes(), sender)
                )
            };
            let (exit, ()) = tokio::join!(child.wait(), async {
                tokio::select! {
                    _ = forward => {}
                    () = killed => {}
                }
            });
            exit
        }
    }
}

/// A job failed: say so if that halts the run.
async fn fail(shared: &Shared, job: &Job, status: &Status) {
    // A job that could not even start has no output of its own to explain it: say why here,
    // not only in the report.
    if matches!(status, Status::Error { .. }) {
        shared
            .notice(format!("line {} {}", job.line, describe(status)))
            .await;
    }
    if shared.config.halt_on_error && shared.stop(Reason::HaltOnError) {
        let running = shared.tally.total().running;
        shared
            .notice(format!(
                "line {} {}; --halt-on-error: starting no more jobs, waiting for {} to finish",
                job.line,
                describe(status),
                table::count(running, "running job"),
            ))
            .await;
    }
}

/// Says how a job ended, as in "line 3 failed with exit status 2".
pub fn describe(status: &Status) -> String {
    match status {
        Status::Succeeded => "succeeded".to_owned(),
        Status::Failed { code } => format!("failed with exit status {code}"),
        Status::Killed { signal } => match crate::report::signal_name(*signal) {
            Some(name) => format!("was killed by {name}"),
            None => format!("was killed by signal {signal}"),
        },
        Status::NotStarted => "did not start".to_owned(),
        Status::Error { message } => format!("could not start: {message}"),
    }
}
