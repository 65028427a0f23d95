//! Whether a process group still has a running process, read from `/proc` (Linux).
//!
//! `killpg(pgid, 0)` succeeds as long as the group has a member, and a process that has ended
//! but waits to be reaped by its parent (a zombie) is still one: under an init or a child
//! subreaper that reaps late or never, a group of zombies would look alive for ever. So the
//! wait for what a terminated job left behind (see `runner::kill_leftovers`) asks here, after
//! `killpg` found the group.
//!
//! A member counts as live unless it is a zombie (or dead) whose threads have all ended (a
//! thread-group leader that exited while its other threads run reads as a zombie, but its
//! threads still run). The pids found live are read again first; the whole of `/proc` (one
//! file per process of the machine: milliseconds with thousands of processes) is read only
//! when none of them is live any more. `/proc` must be this process's own PID namespace's
//! (its `self` is this process): otherwise, and elsewhere than on Linux, there is no answer and
//! the caller goes by `killpg` alone.

/// The live members of one process group, as last seen.
#[derive(Debug)]
pub struct Members {
    pgid: i32,
    /// Pids found live at the last look.
    known: Vec<i32>,
}

impl Members {
    pub fn new(pgid: i32) -> Members {
        Members {
            pgid,
            known: Vec::new(),
        }
    }

    /// Whether the group has a live member; `None` when `/proc` cannot tell. Blocking file
    /// reads: call it off the async runtime's threads.
    pub fn any_live(&mut self) -> Option<bool> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        let pgid = self.pgid;
        self.known.retain(|&pid| look(pid, pgid).unwrap_or(true));
        if !self.known.is_empty() {
            return Some(true);
        }
        if !own_namespace() {
            return None;
        }
        for pid in pids()? {
            // Unreadable for another reason than its end: counted, to be safe.
            if look(pid, pgid).unwrap_or(true) {
                self.known.push(pid);
            }
        }
        Some(!self.known.is_empty())
    }
}

/// The process groups among `pgids` that have a stopped member (state `T`: stopped by
/// SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU; not `t`, stopped by a debugger), read from `/proc` in
/// one pass; none when `/proc` cannot tell (not Linux, another PID namespace; a process hidden
/// by `hidepid` is not seen). Blocking file reads (milliseconds per thousand processes of the
/// machine): call it off the async runtime's threads, and not too often.
pub fn stopped(pgids: &[i32]) -> Vec<i32> {
    let mut found = Vec::new();
    if !cfg!(target_os = "linux") || pgids.is_empty() || !own_namespace() {
        return found;
    }
    let Some(pids) = pids() else {
        return found;
    };
    for pid in pids {
        let process = std::path::PathBuf::from(format!("/proc/{pid}"));
        let Ok(stat) = std::fs::read(process.join("stat")) else {
            continue;
        };
        let Some((state, pgrp, threads)) = parse(&stat) else {
            continue;
        };
        if !pgids.contains(&pgrp) || found.contains(&pgrp) {
            continue;
        }
        // A leader that exited while its other threads run reads as a zombie: its threads
        // tell (see `look`).
        let is_stopped = match state {
            b'T' => true,
            b'Z' if threads > 1 => any_thread_stopped(&process),
            _ => false,
        };
        if is_stopped {
            found.push(pgrp);
        }
    }
    found
}

/// The pids in `/proc`, or `None` if it cannot be read.
fn pids() -> Option<impl Iterator<Item = i32>> {
    let processes = std::fs::read_dir("/proc").ok()?;
    Some(processes.flatten().filter_map(|process| {
        process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            .filter(|&pid| pid > 0)
    }))
}

/// Whether a thread of the process at `/proc/PID` is stopped.
fn any_thread_stopped(process: &std::path::Path) -> bool {
    let Ok(threads) = std::fs::read_dir(process.join("task")) else {
        return false;
    };
    threads.flatten().any(|thread| {
        std::fs::read(thread.path().join("stat"))
            .ok()
            .and_then(|stat| parse(&stat))
            .is_some_and(|(state, ..)| state == b'T')
    })
}

/// Whether `/proc` shows this process's PID namespace.
fn own_namespace() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|link| link.to_str().and_then(|pid| pid.parse::<u32>().ok()))
        == Some(std::process::id())
}

/// Whether process `pid` is a live member of group `pgid`: `Some(false)` if it has ended (or
/// is in another group), `None` if that cannot be told.
fn look(pid: i32, pgid: i32) -> Option<bool> {
    let stat = match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(error)
            if error.kind() == std::io::ErrorKind::NotFound
                || error.raw_os_error() == Some(libc::ESRCH) =>
        {
            return Some(false);
        }
        // Another user's process under `hidepid=1`: its group, at least, can be asked (its
        // state cannot: a member counts as live).
        Err(_) => {
            return match group_of(pid) {
                Ok(group) => Some(group == pgid),
                Err(error) if error.raw_os_error() == Some(libc::ESRCH) => Some(false),
                Err(_) => None,
            };
        }
    };
    Some(parse(&stat).is_some_and(|(state, pgrp, threads)| {
        pgrp == pgid && (!matches!(state, b'Z' | b'X' | b'x') || threads > 1)
    }))
}

/// State, process group and number of threads from a `/proc/PID/stat` line. The command name,
/// in parentheses, may hold any byte but NUL (spaces, parentheses, newlines, bytes that are
/// not UTF-8): the fields are read after its last `") "`.
fn parse(stat: &[u8]) -> Option<(u8, i32, u32)> {
    let end = stat.windows(2).rposition(|pair| pair == b") ")?;
    let mut fields = stat[end + 2..]
        .split(|&b| b == b' ')
        .filter(|field| !field.is_empty());
    // Fields 3 (state), 5 (process group) and 20 (threads), counted from 1 with the pid.
    let state = *fields.next()?.first()?;
    let pgrp = number(fields.nth(1)?)?;
    let threads = number(fields.nth(14)?)?;
    Some((state, pgrp, threads))
}

/// The process group of process `pid` (`getpgid`).
#[allow(unsafe_code)]
fn group_of(pid: i32) -> std::io::Result<i32> {
    // SAFETY: getpgid has no memory-safety preconditions; it only reads a process's group.
    let group = unsafe { libc::getpgid(pid) };
    if group < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(group)
    }
}

fn number<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_after_the_last_parenthesis() {
        let line = b"4242 (a ) (b\n\xff) S 1 777 777 0 -1 4194560 90 0 0 0 0 0 0 0 20 0 3 0 1 \
                     2 3 4\n";
        assert_eq!(parse(line), Some((b'S', 777, 3)));
        let zombie = b"9 (sleep) Z 1 12 12 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse(zombie), Some((b'Z', 12, 1)));
        assert_eq!(parse(b"9 (sleep"), None);
        assert_eq!(parse(b"9 (x) S 1"), None);
    }

    /// A thread-group leader that has exited while another of its threads runs reads as a
    /// zombie in `/proc`, but the process runs: a live member. (Made with python3, on the test
    /// machines: its `ctypes` calls `pthread_exit` in the main thread.)
    #[cfg(target_os = "linux")]
    #[test]
    fn a_zombie_leader_with_running_threads_is_a_live_member() {
        use std::os::unix::process::CommandExt;
        const SCRIPT: &str = "import ctypes, threading, time\n\
                              threading.Thread(target=time.sleep, args=(30,)).start()\n\
                              ctypes.CDLL(None).pthread_exit(None)\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", SCRIPT])
            .process_group(0)
            .spawn()
            .expect("python3 runs (it is on the test machines)");
        let pgid = i32::try_from(child.id()).unwrap();
        let stat = format!("/proc/{pgid}/stat");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while parse(&std::fs::read(&stat).unwrap()).map(|(state, ..)| state) != Some(b'Z') {
            assert!(
                std::time::Instant::now() < deadline,
                "the main thread never exited"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let live = Members::new(pgid).any_live();
        // Stopped, its threads tell (its own stat line still reads `Z`; found by a review).
        let not_stopped = stopped(&[pgid]);
        crate::signals::killpg(pgid, libc::SIGSTOP).unwrap();
        while stopped(&[pgid]).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let found_stopped = stopped(&[pgid]);
        crate::signals::killpg(pgid, libc::SIGKILL).unwrap();
        child.wait().unwrap();
        assert_eq!(
            live,
            Some(true),
            "a process whose threads run counted as ended"
        );
        assert_eq!(not_stopped, Vec::<i32>::new());
        assert_eq!(found_stopped, [pgid], "a stopped thread was not found");
    }

    /// A group whose only process has ended but is not reaped (a zombie) has no live
    /// member, though `killpg(0)` still finds it; a running one has. A command name with a
    /// space, parentheses and bytes that are not UTF-8, as `/proc/PID/stat` shows it, too.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_zombie_is_not_a_live_member() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let dir = std::env::temp_dir().join(format!("taskherd-zombie-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let odd = dir.join(std::ffi::OsStr::from_bytes(
            b"a (b) \xc3\xa9\xc3\xa9\xc3\xa9\xc3",
        ));
        std::os::unix::fs::symlink("/bin/sleep", &odd).unwrap();
        let mut child = std::process::Command::new(&odd)
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = i32::try_from(child.id()).unwrap();
        let mut members = Members::new(pgid);
        assert_eq!(members.any_live(), Some(true));
        crate::signals::killpg(pgid, libc::SIGKILL).unwrap();
        // Not reaped: a zombie, still a member of its group.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while look(pgid, pgid) != Some(false) {
            assert!(
                std::time::Instant::now() < deadline,
                "SIGKILL never ended it"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            crate::signals::killpg(pgid, 0).is_ok(),
            "killpg(0) still finds the zombie"
        );
        assert_eq!(members.any_live(), Some(false), "a zombie counted as live");
        child.wait().unwrap();
        assert_eq!(members.any_live(), Some(false));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A group with a stopped member is found stopped, and no longer once it is continued;
    /// groups not asked about are not.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_stopped_group_is_found() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = i32::try_from(child.id()).unwrap();
        let until = |stopped: bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while super::stopped(&[pgid, 1]) != if stopped { vec![pgid] } else { vec![] } {
                assert!(std::time::Instant::now() < deadline, "stopped: {stopped}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        until(false);
        crate::signals::killpg(pgid, libc::SIGSTOP).unwrap();
        until(true);
        assert_eq!(super::stopped(&[]), Vec::<i32>::new());
        crate::signals::killpg(pgid, libc::SIGCONT).unwrap();
        until(false);
        crate::signals::killpg(pgid, libc::SIGKILL).unwrap();
        child.wait().unwrap();
    }
}
