//! Jobs die with taskherd: a small helper process ends every running job's process group when
//! taskherd dies, even by `kill -9`.
//!
//! At the start of a run, taskherd starts itself again as `taskherd reap` (a hidden
//! subcommand), in a process group of its own, with a pipe to its standard input. taskherd
//! writes `+PGID` to the pipe when a job starts, `-PGID` when it has ended, and `=0` when the run
//! is over (the helper then exits and ends nothing). When taskherd
//! dies, however it dies, the kernel closes its end of the pipe; the helper reads the end of
//! its input, sends SIGTERM to every process group still listed, waits the grace period, sends
//! SIGKILL to those still there, and exits. When a run ends normally the list is empty and the
//! helper just exits.
//!
//! This works on every Unix system and reaches the whole process group, not only its leader;
//! it costs one small write per job start and end, and no change to how jobs are spawned (a
//! parent-death signal set up between `fork` and `exec` would make every spawn fork the whole
//! taskherd process, which measured more than twice as slow per job).
//!
//! What escapes: a process that left its job's process group (a daemon, `setsid`); a job that
//! started in the instant before taskherd died, before its `+PGID` was written; and everything,
//! if the helper itself was killed (taskherd warns once when it finds the helper gone).

use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::process::{ChildStdin, Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::signals;

/// The running side: tells the helper which process groups are running.
///
/// Each message is written to the pipe at once, by the thread that started or reaped the job,
/// so the helper's list is up to date by the time `started` returns (when a thread wrote them
/// instead, a job could run, and taskherd be killed, while its `+PGID` still waited for that
/// thread: on a loaded machine the job then outlived taskherd). The pipe is non-blocking, so a
/// job's start or end never blocks on it: a helper that stopped reading (say, stopped with
/// SIGSTOP) fills the pipe's buffer (thousands of messages), and taskherd then warns and stops
/// telling it.
#[derive(Debug)]
pub struct Reaper {
    /// `None` once the run is over or the helper can no longer be told.
    pipe: Mutex<Option<ChildStdin>>,
}

impl Reaper {
    /// Starts the helper; `grace` is its time between SIGTERM and SIGKILL.
    ///
    /// # Errors
    ///
    /// The helper could not be started (taskherd's own executable cannot be found or run).
    pub fn start(grace: Duration) -> io::Result<Reaper> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("reap")
            .arg("--grace-ms")
            .arg(grace.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Its own process group: the terminal's Ctrl-C does not reach it.
            .process_group(0)
            .spawn()?;
        // Our end of the pipe is close-on-exec, so no job holds it open after taskherd dies.
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("the helper has no standard input"))?;
        signals::set_nonblocking(&pipe)?;
        // The helper is not waited for: it outlives taskherd on purpose, and its exit status
        // says nothing. Dropping `Child` does not kill it.
        drop(child);
        Ok(Reaper {
            pipe: Mutex::new(Some(pipe)),
        })
    }

    /// The run is over and every job has ended: tells the helper to exit without ending
    /// anything. Without this, the helper would signal the process groups of jobs that have
    /// ended (whose ids may be reused) when taskherd exits.
    pub fn finish(&self) {
        let pipe = self
            .pipe
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        // A full pipe: the helper is stuck; it gets the end of its input when taskherd exits.
        if let Some(mut pipe) = pipe {
            let _ = pipe.write_all(b"=0\n");
        }
    }

    /// A job started as the leader of process group `pgid`.
    pub fn started(&self, pgid: i32) {
        self.send('+', pgid);
    }

    /// The job of process group `pgid` has ended.
    pub fn ended(&self, pgid: i32) {
        self.send('-', pgid);
    }

    fn send(&self, sign: char, pgid: i32) {
        let mut pipe = self
            .pipe
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(writer) = pipe.as_mut() else {
            return;
        };
        let message = format!("{sign}{pgid}\n");
        // A write to a pipe of at most `PIPE_BUF` bytes is atomic: all of it or nothing.
        let why = match writer.write(message.as_bytes()) {
            Ok(n) if n == message.len() => return,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => "it stopped reading",
            Ok(_) | Err(_) => "it is gone",
        };
        eprintln!(
            "taskherd: warning: the helper that ends the jobs if taskherd dies is not told of \
             them any more ({why}); jobs would outlive a killed taskherd"
        );
        *pipe = None;
    }
}

/// `taskherd reap`: the helper's side. Reads `+PGID` and `-PGID` lines until the end of its
/// input, then ends the process groups still listed.
pub fn main(grace: Duration) -> ExitCode {
    let mut running: HashSet<i32> = HashSet::new();
    let mut line = String::new();
    let mut stdin = io::stdin().lock();
    loop {
        line.clear();
        match stdin.read_line(&mut line) {
            // The end of the input, or an error reading it: taskherd is gone either way.
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = line.trim_end();
        let (sign, pgid) = text.split_at(text.len().min(1));
        match (sign, pgid.parse::<i32>()) {
            ("+", Ok(pgid)) if pgid > 1 => {
                running.insert(pgid);
            }
            ("-", Ok(pgid)) => {
                running.remove(&pgid);
            }
            // taskherd ended normally: nothing is left to end.
            ("=", _) => return ExitCode::SUCCESS,
            _ => {}
        }
    }
    end_groups(&running, grace);
    ExitCode::SUCCESS
}

/// SIGTERM to every group, then SIGKILL after `grace` to the groups that still exist.
fn end_groups(groups: &HashSet<i32>, grace: Duration) {
    let mut left: Vec<i32> = groups
        .iter()
        .copied()
        .filter(|&pgid| signals::end_signal(pgid, libc::SIGTERM).is_ok())
        .collect();
    let deadline = Instant::now() + grace;
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        // Signal 0 only checks that the group still has a member.
        left.retain(|&pgid| signals::killpg(pgid, 0).is_ok());
    }
    for pgid in left {
        let _ = signals::killpg(pgid, libc::SIGKILL);
    }
}
