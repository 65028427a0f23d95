//! Counts of jobs per state, for the total and for every group: what progress and the summary
//! show. Kept by taskherd itself, from the moment a job's process starts to the moment it ends,
//! so `peak` is the highest number of processes that really ran at once.
//!
//! It also knows which jobs are running and since when, to name the one that has run longest,
//! and the mean time of the jobs that ran and ended: starts and ends cost O(log n) in the
//! number of jobs running (they come at thousands per second), a snapshot the same.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::jobfile::{Group, Job};
use crate::outcome::Status;

/// Job counts of one group (or the total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Jobs naming the group.
    pub jobs: usize,
    /// Jobs not started and not given up on yet.
    pub pending: usize,
    /// Jobs running now.
    pub running: usize,
    /// The highest `running` so far.
    pub peak: usize,
    pub succeeded: usize,
    /// Exited with a status other than 0, or could not be started.
    pub failed: usize,
    pub killed: usize,
    /// Terminated after running past their timeout.
    pub timed_out: usize,
    /// Never started.
    pub not_run: usize,
}

impl Counts {
    /// Jobs whose fate is known.
    pub fn done(&self) -> usize {
        self.succeeded + self.failed + self.killed + self.timed_out + self.not_run
    }

    fn start(&mut self) {
        self.pending -= 1;
        self.running += 1;
        self.peak = self.peak.max(self.running);
    }

    fn retry(&mut self) {
        self.running -= 1;
        self.pending += 1;
    }

    fn end(&mut self, status: &Status, started: bool) {
        if started {
            self.running -= 1;
        } else {
            self.pending -= 1;
        }
        match status {
            Status::Succeeded => self.succeeded += 1,
            Status::Failed { .. } | Status::Error { .. } => self.failed += 1,
            Status::Killed { .. } => self.killed += 1,
            Status::TimedOut { .. } => self.timed_out += 1,
            Status::NotStarted => self.not_run += 1,
        }
    }
}

impl Inner {
    fn add(&mut self, job: &Job) {
        let add = |counts: &mut Counts| {
            counts.jobs += 1;
            counts.pending += 1;
        };
        add(&mut self.total);
        each_group(&mut self.groups, job, add);
    }
}

/// The counts of the total and of every group, shared by the job tasks.
#[derive(Debug)]
pub struct Tally {
    inner: Mutex<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    total: Counts,
    groups: HashMap<Group, Counts>,
    /// The running jobs by start, oldest first: `(started, line)`.
    running: BTreeSet<(Instant, usize)>,
    /// When each running job started, by line (a line is one job).
    started: HashMap<usize, Instant>,
    /// Jobs that ran and ended.
    finished: usize,
    /// Their run times, summed.
    finished_time: Duration,
}

/// A job running now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// Its line in the job file.
    pub line: usize,
    /// When its process started.
    pub started: Instant,
}

/// A consistent copy of the counts.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub total: Counts,
    /// Every group, sorted by name.
    pub groups: Vec<(Group, Counts)>,
    /// The job running longest, if any runs.
    pub longest: Option<Running>,
    /// The mean run time of the jobs that ran and ended; `None` before the first ends.
    pub mean: Option<Duration>,
}

impl Tally {
    /// Counts every job as pending.
    pub fn new(jobs: &[Job]) -> Tally {
        let mut inner = Inner {
            total: Counts::default(),
            groups: HashMap::new(),
            running: BTreeSet::new(),
            started: HashMap::new(),
            finished: 0,
            finished_time: Duration::ZERO,
        };
        for job in jobs {
            inner.add(job);
        }
        Tally {
            inner: Mutex::new(inner),
        }
    }

    /// Counts one more job, waiting to start (a job of a streamed job file, as it arrives).
    pub fn add(&self, job: &Job) {
        self.lock().add(job);
    }

    /// A job's process started.
    pub fn start(&self, job: &Job) {
        self.start_at(job, Instant::now());
    }

    /// A job's process started at `at`.
    pub(crate) fn start_at(&self, job: &Job, at: Instant) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.total.start();
        each_group(&mut inner.groups, job, Counts::start);
        if let Some(before) = inner.started.insert(job.line, at) {
            // Not expected (a job starts once), but the set must not keep a stale entry.
            inner.running.remove(&(before, job.line));
        }
        inner.running.insert((at, job.line));
    }

    /// A job's fate is known; `started` says whether [`start`](Self::start) was called for it.
    pub fn end(&self, job: &Job, status: &Status, started: bool) {
        self.end_at(job, status, started, Instant::now());
    }

    /// A job's fate is known since `at`.
    pub(crate) fn end_at(&self, job: &Job, status: &Status, started: bool, at: Instant) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.total.end(status, started);
        each_group(&mut inner.groups, job, |counts| counts.end(status, started));
        if started && let Some(began) = inner.started.remove(&job.line) {
            inner.running.remove(&(began, job.line));
            inner.finished += 1;
            inner.finished_time += at.saturating_duration_since(began);
        }
    }

    /// The counts of the total.
    pub fn total(&self) -> Counts {
        self.lock().total
    }

    /// A job's attempt ended and it will run again (`--retries`): it waits once more. The
    /// attempt's run time counts in the mean.
    pub fn retry(&self, job: &Job) {
        let at = Instant::now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.total.retry();
        each_group(&mut inner.groups, job, Counts::retry);
        if let Some(began) = inner.started.remove(&job.line) {
            inner.running.remove(&(began, job.line));
            inner.finished += 1;
            inner.finished_time += at.saturating_duration_since(began);
        }
    }

    /// All counts.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let mut groups: Vec<(Group, Counts)> = inner
            .groups
            .iter()
            .map(|(group, counts)| (group.clone(), *counts))
            .collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let longest = inner
            .running
            .first()
            .map(|&(started, line)| Running { line, started });
        let mean = u32::try_from(inner.finished)
            .ok()
            .filter(|&n| n > 0)
            .map(|n| inner.finished_time / n);
        Snapshot {
            total: inner.total,
            groups,
            longest,
            mean,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The counts are plain numbers updated in place: a panic elsewhere cannot leave them
        // half-written, so a poisoned lock is still good to read.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Applies `update` to the counts of every group of `job` (each named once in `job.groups`).
fn each_group(groups: &mut HashMap<Group, Counts>, job: &Job, mut update: impl FnMut(&mut Counts)) {
    for group in &job.groups {
        update(groups.entry(group.clone()).or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobfile::parse;

    #[test]
    fn counts_follow_jobs_through_their_states() {
        let jobs = parse(b"a b :: x\na :: y\nz\n").unwrap();
        let tally = Tally::new(&jobs);
        tally.start(&jobs[0]);
        tally.start(&jobs[1]);
        let snapshot = tally.snapshot();
        assert_eq!((snapshot.total.running, snapshot.total.pending), (2, 1));
        assert_eq!(snapshot.groups[0].0.as_ref(), "a");
        assert_eq!(
            (snapshot.groups[0].1.running, snapshot.groups[0].1.peak),
            (2, 2)
        );
        tally.end(&jobs[0], &Status::Succeeded, true);
        tally.end(&jobs[1], &Status::Killed { signal: 9 }, true);
        tally.end(
            &jobs[2],
            &Status::Error {
                message: "no".into(),
            },
            false,
        );
        let snapshot = tally.snapshot();
        let a = snapshot.groups[0].1;
        assert_eq!(
            (a.jobs, a.pending, a.running, a.peak, a.succeeded, a.killed),
            (2, 0, 0, 2, 1, 1)
        );
        let total = snapshot.total;
        assert_eq!((total.succeeded, total.failed, total.peak), (1, 1, 2));
    }

    #[test]
    fn knows_the_longest_running_job_and_the_mean_run_time() {
        let jobs = parse(b"a\nb\nc\nd\n").unwrap();
        let tally = Tally::new(&jobs);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(tally.snapshot().longest, None);
        assert_eq!(tally.snapshot().mean, None);
        tally.start_at(&jobs[1], at(0));
        tally.start_at(&jobs[0], at(1));
        tally.start_at(&jobs[2], at(1));
        let longest = |tally: &Tally| tally.snapshot().longest.map(|r| (r.line, r.started));
        assert_eq!(longest(&tally), Some((2, at(0))));
        tally.end_at(&jobs[1], &Status::Succeeded, true, at(4));
        // Two started at the same instant: the lower line comes first.
        assert_eq!(longest(&tally), Some((1, at(1))));
        tally.end_at(&jobs[0], &Status::Failed { code: 1 }, true, at(3));
        assert_eq!(longest(&tally), Some((3, at(1))));
        // A job that never started counts in neither.
        tally.end_at(&jobs[3], &Status::NotStarted, false, at(5));
        let snapshot = tally.snapshot();
        assert_eq!(snapshot.mean, Some(Duration::from_secs(3)));
        tally.end_at(&jobs[2], &Status::Succeeded, true, at(7));
        let snapshot = tally.snapshot();
        assert_eq!(snapshot.longest, None);
        assert_eq!(snapshot.mean, Some(Duration::from_secs(4)));
    }

    #[test]
    fn a_job_waiting_to_retry_is_not_running() {
        let jobs = parse(b"g :: a\n").unwrap();
        let tally = Tally::new(&jobs);
        tally.start(&jobs[0]);
        tally.retry(&jobs[0]);
        let snapshot = tally.snapshot();
        assert_eq!(snapshot.longest, None);
        assert_eq!((snapshot.total.running, snapshot.total.pending), (0, 1));
        assert!(
            snapshot.mean.is_some(),
            "the attempt's time counts in the mean"
        );
        tally.start(&jobs[0]);
        tally.end(&jobs[0], &Status::Succeeded, true);
        let total = tally.snapshot().total;
        assert_eq!(
            (total.running, total.pending, total.succeeded, total.peak),
            (0, 0, 1, 1)
        );
    }
}
