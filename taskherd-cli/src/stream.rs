//! A job file read as it is written (a pipe): each line is checked as it arrives and its job
//! sent to the runner, which starts it as soon as its groups have room.
//!
//! A thread reads and checks, so a slow or blocking input never holds up the runtime. The
//! channel to the runner is bounded: when jobs arrive faster than they are queued, the thread
//! waits, and memory stays bounded however long the input is. The first bad line (or a read
//! error, or a last line without its newline: a cut-off input) is sent as [`Arrival::Bad`] and
//! ends the reading: the runner then starts no more jobs and exits with status 2 once the
//! running ones end.

use std::io::{BufReader, Read};

use tokio::sync::mpsc;

use crate::arg_limits::ArgLimits;
use crate::jobfile::{LineError, Reader};
use crate::resume::{Skipped, Streamed};
use crate::runner::{Arrival, EarlyRecords};

/// Jobs read ahead of the runner at most.
const READ_AHEAD: usize = 1024;

/// A job file to read as it is written.
pub struct Stream {
    /// The job file's name in messages.
    pub source: String,
    pub input: Box<dyn Read + Send>,
    pub arg_limits: ArgLimits,
    /// `--resume` or `--resume-failed`, with the earlier report (shared with the runner).
    pub resume: Option<Streamed>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// Starts reading on a thread of its own; the jobs come out of the returned channel, and
    /// the records of the lines `resume` matches go to `early` as they are read.
    ///
    /// # Errors
    ///
    /// The thread could not be started.
    pub fn start(self, early: EarlyRecords) -> std::io::Result<mpsc::Receiver<Arrival>> {
        let (sender, receiver) = mpsc::channel(READ_AHEAD);
        std::thread::Builder::new()
            .name("taskherd-input".to_owned())
            .spawn(move || self.read(&sender, &early))?;
        Ok(receiver)
    }

    fn read(self, sender: &mpsc::Sender<Arrival>, early: &EarlyRecords) {
        let source = self.source.clone();
        let mut reader = Reader::new(BufReader::new(self.input));
        while let Some(next) = reader.next_job() {
            let job = match next {
                Ok(Ok(job)) => job,
                Ok(Err(errors)) => {
                    let lines = errors.iter().map(|e| format!("{source}:{e}")).collect();
                    let _ = sender.blocking_send(Arrival::Bad(lines));
                    return;
                }
                Err(error) => {
                    let line = format!("cannot read jobs from {source}: {error}");
                    let _ = sender.blocking_send(Arrival::Bad(vec![line]));
                    return;
                }
            };
            if !reader.line_complete() {
                let line = format!("{source}:{}", LineError::cut_off(job.line));
                let _ = sender.blocking_send(Arrival::Bad(vec![line]));
                return;
            }
            let too_long = self.arg_limits.check(std::slice::from_ref(&job));
            if !too_long.is_empty() {
                let lines = too_long.iter().map(|e| format!("{source}:{e}")).collect();
                let _ = sender.blocking_send(Arrival::Bad(lines));
                return;
            }
            if let Some(warning) = job.typo_warning()
                && sender
                    .blocking_send(Arrival::Warning(format!("{source}:{warning}")))
                    .is_err()
            {
                return;
            }
            // Held until the arrival is sent (or refused): see `Streamed`'s invariant.
            let mut job = job;
            let mut records = self.resume.as_ref().map(Streamed::lock);
            let arrival = match records.as_mut() {
                Some(records) => match records.skips(&mut job) {
                    Some(done) => {
                        early.skipped(Skipped { job, done });
                        Arrival::Skipped
                    }
                    None => {
                        if job.resumed.is_some() {
                            early.pending(job.clone());
                        }
                        Arrival::Job(job)
                    }
                },
                None => Arrival::Job(job),
            };
            // An error: the runner has stopped reading (the run is stopping). The line's
            // record, if it took one, is written; a failure's provisional one is followed by
            // its last, as for a line the run did not read (still under the lock, so before
            // the runner carries the rest over and ends).
            if let Err(refused) = sender.blocking_send(arrival) {
                if let Arrival::Job(job) = refused.0
                    && job.resumed.is_some()
                {
                    early.carried_over(job);
                }
                return;
            }
            drop(records);
        }
        // The end of the input: dropping the sender says so.
    }
}
