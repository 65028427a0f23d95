//! The processes a job leaves behind, once taskherd is their parent.
//!
//! When a job's shell exits before something it started, that process is an orphan: the
//! kernel gives it to the nearest ancestor that adopts orphans (a child subreaper), or to the
//! first process of the PID namespace. Usually that is an init system, which reaps it when it
//! ends. But taskherd may be the one: the first process of a container (`docker run image
//! taskherd run ...`), or started by a supervisor that made it a subreaper. Without reaping
//! them, each orphan would stay a zombie until taskherd exits: a long run would fill the
//! process table, and a job whose only processes left are zombies would count as running
//! (its process group still has members), so its timeout would terminate a job that had
//! ended.
//!
//! So on Linux, when taskherd adopts orphans, it reaps them: on every `SIGCHLD` (at most ten
//! times a second), and right before it checks or signals a job's process group. It reaps
//! only zombie children that are not process group leaders: every process taskherd starts (a
//! job's shell, the helper that ends jobs if taskherd dies) leads its own group and is waited
//! for by the code that started it, which must get its exit status. An orphan that made itself
//! a group leader (a daemon, with `setsid`) and ended stays a zombie until taskherd exits.
//! Elsewhere, and when taskherd adopts no orphans, this does nothing.

use std::time::Duration;

/// The shortest time between two sweeps for `SIGCHLD`.
const SPACING: Duration = Duration::from_millis(100);

/// Reaps the orphans this process adopted.
#[derive(Debug, Clone, Copy)]
pub struct Orphans {
    /// This process's pid.
    me: i32,
}

impl Orphans {
    /// `Some` if this process adopts orphans: it is the first process of its PID namespace,
    /// or a child subreaper (Linux only).
    pub fn adopted() -> Option<Orphans> {
        imp::adopts().then(|| Orphans {
            me: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        })
    }

    /// Reaps every child of this process that has ended and is not a process group leader;
    /// returns how many.
    pub fn reap(self) -> usize {
        imp::reap(self.me)
    }

    /// Reaps the orphans whenever a child ends (`SIGCHLD`), until dropped; at most once per
    /// [`SPACING`].
    pub async fn sweep(self) {
        let Ok(mut children) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        else {
            // No signal handler: the checks before signalling still reap.
            return;
        };
        while children.recv().await.is_some() {
            self.reap();
            tokio::time::sleep(SPACING).await;
        }
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod imp {
    /// Whether this process is the first of its PID namespace or a child subreaper.
    pub fn adopts() -> bool {
        if std::process::id() == 1 {
            return true;
        }
        let mut subreaper: libc::c_int = 0;
        // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer, which points to a
        // live local.
        let result = unsafe {
            libc::prctl(
                libc::PR_GET_CHILD_SUBREAPER,
                &raw mut subreaper as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        result == 0 && subreaper != 0
    }

    /// Reaps the zombie children of `me` that lead no process group (found in `/proc`).
    pub fn reap(me: i32) -> usize {
        // One sweep at a time: between one sweep's reading of a zombie's state and its
        // `waitpid`, another sweep could reap that zombie, and its pid be reused by a new
        // child that another part of taskherd waits for.
        static SWEEP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _sweep = SWEEP
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut reaped = 0;
        for pid in children().unwrap_or_else(every_process) {
            // Gone already, or not readable: not ours to reap.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if orphan_zombie(&stat, me) {
                let mut status = 0;
                // SAFETY: waitpid writes the status through a pointer to a live local. It
                // reaps only this pid: a child of ours, a zombie, and no group's leader, so no
                // code of taskherd waits for it.
                if unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) } == pid {
                    reaped += 1;
                }
            }
        }
        reaped
    }

    /// This process's children, from each of its threads' `children` file (a child is listed
    /// under the thread that is its parent); `None` if the kernel has no such files.
    pub fn children() -> Option<Vec<i32>> {
        let mut children = Vec::new();
        for thread in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            match std::fs::read_to_string(thread.path().join("children")) {
                Ok(text) => children.extend(
                    text.split_whitespace()
                        .filter_map(|pid| pid.parse::<i32>().ok()),
                ),
                // The thread is there, its `children` file is not: a kernel built without
                // them.
                Err(error)
                    if error.kind() == std::io::ErrorKind::NotFound && thread.path().exists() =>
                {
                    return None;
                }
                // A thread that ended meanwhile (its children went to another thread).
                Err(_) => {}
            }
        }
        Some(children)
    }

    /// Every process (slower than [`children`]: read only without `children` files).
    pub fn every_process() -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Whether `/proc/PID/stat` text `stat` is that of a zombie child of `me` that leads no
    /// process group.
    pub fn orphan_zombie(stat: &str, me: i32) -> bool {
        // `pid (command) state ppid pgrp ...`; the command may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            return false;
        };
        let Some(pid) = head
            .split_once(" (")
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            return false;
        };
        let mut fields = rest.split(' ');
        let state = fields.next();
        let parent = fields.next().and_then(|field| field.parse::<i32>().ok());
        let group = fields.next().and_then(|field| field.parse::<i32>().ok());
        state == Some("Z") && parent == Some(me) && group.is_some_and(|group| group != pid)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn adopts() -> bool {
        false
    }

    pub fn reap(_me: i32) -> usize {
        0
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::imp::{children, every_process, orphan_zombie, reap};

    /// A child in this process's group (not a leader) that ended is found both ways and
    /// reaped; a child leading its own group (as a job's shell) is left to its waiter.
    #[test]
    fn a_zombie_child_that_leads_no_group_is_reaped_and_a_leader_is_not() {
        use std::os::unix::process::CommandExt;
        let me = i32::try_from(std::process::id()).unwrap();
        let mut plain = std::process::Command::new("true").spawn().unwrap();
        let mut leader = std::process::Command::new("true")
            .process_group(0)
            .spawn()
            .unwrap();
        let pids = [plain.id(), leader.id()].map(|pid| i32::try_from(pid).unwrap());
        let zombie = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !pids.iter().all(|&pid| zombie(pid)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the children never ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for pid in pids {
            assert!(children().unwrap().contains(&pid));
            assert!(every_process().contains(&pid));
        }
        assert!(reap(me) >= 1);
        // Reaped here: its own waiter finds no child left.
        assert!(plain.try_wait().is_err());
        assert!(leader.wait().unwrap().success());
    }

    #[test]
    fn only_zombie_children_that_lead_no_group_are_orphans_to_reap() {
        assert!(orphan_zombie("42 (sleep) Z 7 40 3 0", 7));
        // Running, another's child, or a group leader (a job's shell, a daemon).
        assert!(!orphan_zombie("42 (sleep) S 7 40 3 0", 7));
        assert!(!orphan_zombie("42 (sleep) Z 8 40 3 0", 7));
        assert!(!orphan_zombie("42 (sleep) Z 7 42 3 0", 7));
        // A command with spaces and parentheses.
        assert!(orphan_zombie("42 (a) b (c) Z 7 40 3 0", 7));
        assert!(!orphan_zombie("42 (a) b (c) Z 7 42 3 0", 7));
        // Not a stat line.
        assert!(!orphan_zombie("", 7));
        assert!(!orphan_zombie("42 sleep Z 7 40", 7));
    }
}
