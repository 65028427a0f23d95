//! Counts of jobs per state, for the total and for every group: what progress and the summary
//! show. Kept by taskherd itself, from the moment a job's process starts to the moment it ends,
//! so `peak` is the highest number of processes that really ran at once.

use std::collections::HashMap;
use std::sync::Mutex;

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

/// The counts of the total and of every group, shared by the job tasks.
#[derive(Debug)]
pub struct Tally {
    inner: Mutex<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    total: Counts,
    groups: HashMap<Group, Counts>,
}

/// A consistent copy of the counts.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub total: Counts,
    /// Every group, sorted by name.
    pub groups: Vec<(Group, Counts)>,
}

impl Tally {
    /// Counts every job as pending.
    pub fn new(jobs: &[Job]) -> Tally {
        let mut inner = Inner {
            total: Counts::default(),
            groups: HashMap::new(),
        };
        for job in jobs {
            let add = |counts: &mut Counts| {
                counts.jobs += 1;
                counts.pending += 1;
            };
            add(&mut inner.total);
            each_group(&mut inner.groups, job, add);
        }
        Tally {
            inner: Mutex::new(inner),
        }
    }

    /// A job's process started.
    pub fn start(&self, job: &Job) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.total.start();
        each_group(&mut inner.groups, job, Counts::start);
    }

    /// A job's fate is known; `started` says whether [`start`](Self::start) was called for it.
    pub fn end(&self, job: &Job, status: &Status, started: bool) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.total.end(status, started);
        each_group(&mut inner.groups, job, |counts| counts.end(status, started));
    }

    /// The counts of the total.
    pub fn total(&self) -> Counts {
        self.lock().total
    }

    /// A job's attempt ended and it will run again (`--retries`): it waits once more.
    pub fn retry(&self, job: &Job) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.total.retry();
        each_group(&mut inner.groups, job, Counts::retry);
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
        Snapshot {
            total: inner.total,
            groups,
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
}
