//! Ctrl-C and friends, and signalling the jobs' process groups.
//!
//! - First Ctrl-C (SIGINT): start no more jobs; running jobs finish.
//! - Second Ctrl-C, or SIGTERM or SIGHUP at any time: SIGTERM to every running job's process
//!   group, then SIGKILL to those still running after the grace period.
//! - Third Ctrl-C: SIGKILL at once.
//!
//! Each job runs in its own process group (its shell's pid is the group id), so the terminal's
//! Ctrl-C reaches only taskherd, and a signal sent to the group reaches everything the job
//! started that stayed in its group.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::orphans::Orphans;
use crate::reaper::Reaper;

/// A signal taskherd acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGINT: Ctrl-C.
    Interrupt,
    /// SIGTERM or SIGHUP: terminate the jobs.
    Terminate,
}

/// Makes a job that reads the terminal fail at once instead of stopping: taskherd ignores
/// SIGTTIN, and the jobs inherit that. Each job runs in a process group of its own, in the
/// background of taskherd's terminal if it has one, where reading the terminal (`read x <
/// /dev/tty`, git asking for a user name) stopped the job until it was continued: silently,
/// until its timeout, or forever. With SIGTTIN ignored, the read fails (EIO) as it would
/// without a terminal. SIGTTOU is left alone: ignored, it would let a job change the
/// terminal's settings (`stty -echo`, a password prompt turning echo off) and take its
/// foreground from taskherd, and OpenSSH's prompt, which sends itself the signal it caught
/// again, spun writing its prompt, leaving the terminal without echo (found by a review).
/// Such a job stops as before, and ends on its timeout's SIGTERM (see [`end_signal`]).
/// Called once the job file has been read (a job file typed at the terminal is read whole
/// before the run, never streamed), so taskherd itself reads nothing from the terminal
/// afterwards.
#[allow(unsafe_code)]
pub fn keep_jobs_off_the_terminal() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler and touches no
    // memory; it can only fail for an invalid signal number, which this is not.
    unsafe {
        libc::signal(libc::SIGTTIN, libc::SIG_IGN);
    }
}

/// Starts listening for SIGINT, SIGTERM and SIGHUP. From now on they no longer end taskherd:
/// they arrive here.
pub fn listen() -> io::Result<mpsc::UnboundedReceiver<Event>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    for (kind, event) in [
        (SignalKind::interrupt(), Event::Interrupt),
        (SignalKind::terminate(), Event::Terminate),
        (SignalKind::hangup(), Event::Terminate),
    ] {
        let mut stream = signal(kind)?;
        let sender = sender.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if sender.send(event).is_err() {
                    return;
                }
            }
        });
    }
    Ok(receiver)
}

/// How often a job taskherd terminated is first checked for processes left in its group, once
/// its shell has ended, until the grace period is over; the interval doubles after each check,
/// up to [`LINGER_CHECK_MAX`] (a check may read `/proc`, one file per process of the machine).
pub const LINGER_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// The longest interval between two such checks.
pub const LINGER_CHECK_MAX: std::time::Duration = std::time::Duration::from_millis(400);

/// The process groups of the jobs that are running, by job index.
#[derive(Debug, Default)]
pub struct Groups {
    running: Mutex<HashMap<usize, Entry>>,
    /// Told of every group, to end them if taskherd dies.
    reaper: Option<Reaper>,
    /// The jobs' orphans, if taskherd adopts them: reaped before a group is checked or
    /// signalled, so that a group whose processes all ended counts as ended.
    orphans: Option<Orphans>,
}

/// Jobs found stopped, and jobs said stopped found running again, by line
/// ([`Groups::stop_changes`]).
#[derive(Debug, Default)]
pub struct StopChanges {
    pub stopped: Vec<usize>,
    pub continued: Vec<usize>,
}

#[derive(Debug)]
struct Entry {
    pgid: i32,
    /// The job's line in the job file.
    line: usize,
    /// The run said the job was found stopped, and not yet that it runs again
    /// ([`Groups::stop_changes`]).
    stop_said: bool,
    /// When taskherd last sent it a signal, if it did.
    signalled: Option<std::time::Instant>,
    /// When taskherd first sent it SIGTERM, if it did.
    terminated: Option<std::time::Instant>,
    /// The run sent it its first SIGTERM ([`Groups::signal_all`]): the run sends the SIGKILL
    /// too.
    by_the_run: bool,
    /// Taskherd sent it SIGKILL.
    killed: bool,
}

impl Entry {
    /// Whether `signal` is SIGKILL and the group was sent it already (by the job's own
    /// termination or the run's: one SIGKILL, one notice).
    fn already_killed(&self, signal: i32) -> bool {
        signal == libc::SIGKILL && self.killed
    }

    /// Notes that `signal` was sent to the group now.
    fn signalled(&mut self, signal: i32) {
        let now = std::time::Instant::now();
        self.signalled = Some(now);
        match signal {
            libc::SIGTERM => {
                self.terminated.get_or_insert(now);
            }
            libc::SIGKILL => self.killed = true,
            _ => {}
        }
    }
}

impl Groups {
    /// Running groups, which `reaper` ends if taskherd dies.
    pub fn new(reaper: Option<Reaper>) -> Groups {
        Groups {
            running: Mutex::default(),
            reaper,
            orphans: Orphans::adopted(),
        }
    }

    /// The jobs' orphans, if taskherd adopts them (see [`Orphans`]).
    pub fn orphans(&self) -> Option<Orphans> {
        self.orphans
    }

    /// The process groups of the running jobs.
    pub fn pgids(&self) -> Vec<i32> {
        self.lock().values().map(|entry| entry.pgid).collect()
    }

    /// What changed since the last look, given the groups found `stopped` (see
    /// [`members::stopped`](crate::members::stopped)): the lines of the jobs newly found
    /// stopped (not said yet, and not being ended by taskherd: a group it sent SIGTERM to is
    /// continued, to act on it), each said once until it runs again; and the lines of the jobs
    /// said stopped that run again (continued by someone), each said once, after which a new
    /// stop is said again.
    pub fn stop_changes(&self, stopped: &[i32]) -> StopChanges {
        let mut changes = StopChanges::default();
        for entry in self.lock().values_mut() {
            if entry.terminated.is_some() {
                continue;
            }
            let is_stopped = stopped.contains(&entry.pgid);
            if is_stopped != entry.stop_said {
                entry.stop_said = is_stopped;
                if is_stopped {
                    changes.stopped.push(entry.line);
                } else {
                    changes.continued.push(entry.line);
                }
            }
        }
        changes.stopped.sort_unstable();
        changes.continued.sort_unstable();
        changes
    }

    /// Whether a job said stopped still runs (its continuation is then looked for often).
    pub fn any_said_stopped(&self) -> bool {
        self.lock()
            .values()
            .any(|entry| entry.stop_said && entry.terminated.is_none())
    }

    /// Reaps the orphans that ended, if taskherd adopts them.
    fn reap_orphans(&self) {
        if let Some(orphans) = self.orphans {
            orphans.reap();
        }
    }

    /// A job's process (of line `line`) started as the leader of process group `pgid`.
    pub fn insert(&self, index: usize, line: usize, pgid: u32) {
        let Ok(pgid) = i32::try_from(pgid) else {
            debug_assert!(false, "a pid that does not fit a pid_t: {pgid}");
            return;
        };
        self.lock().insert(
            index,
            Entry {
                pgid,
                line,
                stop_said: false,
                signalled: None,
                terminated: None,
                by_the_run: false,
                killed: false,
            },
        );
        if let Some(reaper) = &self.reaper {
            reaper.started(pgid);
        }
    }

    /// A job ended; returns when taskherd last signalled it, if it did.
    pub fn remove(&self, index: usize) -> Option<std::time::Instant> {
        let entry = self.lock().remove(&index);
        if let (Some(entry), Some(reaper)) = (&entry, &self.reaper) {
            reaper.ended(entry.pgid);
        }
        entry.and_then(|entry| entry.signalled)
    }

    /// Sends `signal` (then SIGCONT, see [`end_signal`]) to every running job's process
    /// group; returns how many were signalled. SIGKILL goes to each group once.
    ///
    /// A job stays here until its process has exited and its output pipes are closed: until
    /// then its process group id cannot have been reused, as either the leader is unreaped or
    /// the group still has members holding the pipes (Linux reuses no pid that is still a
    /// process group id). A job whose output goes to a file leaves right after its shell is
    /// reaped, a moment in which a pid could only be reused by a process of a fresh group. A
    /// job taskherd sent SIGTERM to stays, once its shell has ended, until its group is found
    /// with no live process (checked at intervals growing from [`LINGER_CHECK`] to
    /// [`LINGER_CHECK_MAX`]) or has been sent SIGKILL at the end of the grace period: its group
    /// id could be reused in between only if the group's last process ended and was reaped,
    /// and a new process made itself the leader of a group with that very id (the kernel's pid
    /// counter come round to it), all before the next check; the window is longer if taskherd
    /// itself is paused then (SIGSTOP, a frozen VM), a risk the helper that ends the jobs of a
    /// dead taskherd takes too during its grace period.
    pub fn signal_all(&self, signal: i32) -> usize {
        self.reap_orphans();
        let mut running = self.lock();
        let mut signalled = 0;
        for entry in running.values_mut() {
            if entry.already_killed(signal) {
                continue;
            }
            // A group that is gone already (ESRCH: its processes ended, its output is still
            // being passed on) needs nothing more, and is not counted: it was not killed.
            if end_signal(entry.pgid, signal).is_ok() {
                // The run's SIGTERM is the first (the job's own termination has not begun).
                entry.by_the_run |= signal == libc::SIGTERM && entry.terminated.is_none();
                entry.signalled(signal);
                signalled += 1;
            }
        }
        signalled
    }

    /// Sends `signal` (then SIGCONT, see [`end_signal`]) to the process group of job `index`,
    /// if it is running; returns whether
    /// it was (see [`signal_all`](Self::signal_all) for why its group id is still its own, and
    /// why a group whose processes are all gone does not count).
    pub fn signal(&self, index: usize, signal: i32) -> bool {
        self.reap_orphans();
        match self.lock().get_mut(&index) {
            Some(entry)
                if !entry.already_killed(signal) && end_signal(entry.pgid, signal).is_ok() =>
            {
                entry.signalled(signal);
                true
            }
            _ => false,
        }
    }

    /// When taskherd first sent job `index`'s process group SIGTERM, if it did and has not sent
    /// it SIGKILL since, and whether the run did (and so sends the SIGKILL itself): what the
    /// job left in its group that ignores SIGTERM is to get SIGKILL at the end of the grace
    /// period, even once the job's shell has ended.
    pub fn terminating(&self, index: usize) -> Option<(std::time::Instant, bool)> {
        self.lock()
            .get(&index)
            .filter(|entry| !entry.killed)
            .and_then(|entry| entry.terminated.map(|at| (at, entry.by_the_run)))
    }

    /// Job `index`'s process group id, while it is listed.
    pub fn pgid(&self, index: usize) -> Option<i32> {
        self.lock().get(&index).map(|entry| entry.pgid)
    }

    /// Whether job `index`'s process group still has a process (its shell, or anything it
    /// left running): a job whose processes have all ended may still have output to pass on,
    /// but is not running any more.
    pub fn alive(&self, index: usize) -> bool {
        self.reap_orphans();
        self.lock()
            .get(&index)
            .is_some_and(|entry| killpg(entry.pgid, 0).is_ok())
    }

    /// The run is over: the helper that ends jobs if taskherd dies exits.
    pub fn finish(&self) {
        if let Some(reaper) = &self.reaper {
            reaper.finish();
        }
    }

    /// How many jobs are running.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Entry>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sends `signal` to the processes of job group `pgid` to end them, then SIGCONT (as
/// coreutils' `timeout` does): a stopped process (`kill -STOP`, or SIGTTOU from changing the
/// settings of the terminal, which a job's own process group does not own) acts on no signal
/// but SIGKILL until it is continued, and would wait for the SIGKILL a whole grace period
/// later. The SIGCONT is
/// sent only if `signal` was (the group still has a member).
pub fn end_signal(pgid: i32, signal: i32) -> io::Result<()> {
    killpg(pgid, signal)?;
    if signal != libc::SIGKILL {
        // A group gone in between needs nothing.
        let _ = killpg(pgid, libc::SIGCONT);
    }
    Ok(())
}

/// Sends `signal` to process group `pgid`.
#[allow(unsafe_code)]
pub fn killpg(pgid: i32, signal: i32) -> io::Result<()> {
    debug_assert!(
        pgid > 1,
        "signalling process group {pgid} would hit more than a job"
    );
    if pgid <= 1 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: killpg has no memory-safety preconditions; it only sends a signal.
    let result = unsafe { libc::killpg(pgid, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes writes to `file` (a pipe) return `WouldBlock` instead of waiting when it is full.
#[allow(unsafe_code)]
pub fn set_nonblocking(file: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl with F_GETFL/F_SETFL on a descriptor the caller owns (borrowed for the
    // call) reads and sets its status flags; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job whose processes have all ended (its output still being passed on) is neither
    /// counted as signalled nor marked as killed by taskherd; a running one is.
    #[test]
    fn only_groups_with_a_process_count_as_signalled() {
        use std::os::unix::process::CommandExt;
        let spawn = |command: &str| {
            std::process::Command::new("sh")
                .args(["-c", command])
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let mut ended = spawn("true");
        ended.wait().unwrap();
        let mut running = spawn("sleep 30");
        let groups = Groups::new(None);
        groups.insert(0, 1, ended.id());
        groups.insert(1, 2, running.id());
        assert_eq!(groups.signal_all(libc::SIGKILL), 1);
        assert!(!groups.signal(0, libc::SIGKILL));
        running.wait().unwrap();
        assert!(groups.remove(0).is_none(), "not killed by taskherd");
        assert!(groups.remove(1).is_some(), "killed by taskherd");
    }

    #[test]
    fn a_full_nonblocking_pipe_refuses_instead_of_waiting() {
        use std::io::Write;
        let (reader, mut writer) = std::io::pipe().unwrap();
        set_nonblocking(&writer).unwrap();
        let chunk = [b'+'; 1024];
        let mut written = 0;
        let error = loop {
            match writer.write(&chunk) {
                Ok(n) => written += n,
                Err(error) => break error,
            }
            assert!(written < 64 << 20, "a pipe buffer is not this large");
        };
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        assert!(written >= 4096, "a pipe holds at least a page: {written}");
        drop(reader);
    }

    #[test]
    fn signals_reach_the_whole_process_group() {
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let groups = Groups::default();
        groups.insert(7, 8, child.id());
        assert_eq!(groups.len(), 1);
        assert_eq!(groups.signal_all(libc::SIGKILL), 1);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(groups.remove(7).is_some(), "the job was signalled");
        assert_eq!(groups.len(), 0);
        assert!(groups.remove(7).is_none());
    }
}
