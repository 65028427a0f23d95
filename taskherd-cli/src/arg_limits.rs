//! The system's limits on a program's arguments, checked before anything runs.
//!
//! A job runs as `SHELL -c COMMAND`, so its command is one argument of `execve`. Linux refuses an
//! argument longer than `MAX_ARG_STRLEN` (32 pages, 128 KiB with 4 KiB pages), and every system
//! refuses arguments and environment that together exceed `ARG_MAX` (`sysconf(_SC_ARG_MAX)`,
//! commonly 2 MiB). A job over either limit would fail only when its turn came, while other
//! jobs run; checking every line up front turns that into a `FILE:LINE` error before anything
//! starts.

use crate::jobfile::{Job, LineError};

/// The limits a job's command must fit in.
#[derive(Debug, Clone, Copy)]
pub struct ArgLimits {
    /// The most bytes one argument may have, with its terminating NUL (Linux only).
    pub per_argument: Option<usize>,
    /// The most bytes arguments and environment may have together, with their NULs and
    /// pointers, minus what the environment and the fixed arguments already take.
    pub for_the_command: Option<usize>,
}

impl ArgLimits {
    /// The limits of this system and this process's environment, for commands run by `shell`.
    pub fn of_this_system(shell: &std::path::Path) -> Self {
        let page = sysconf(libc::_SC_PAGESIZE);
        let per_argument = if cfg!(target_os = "linux") {
            page.map(|page| 32 * page)
        } else {
            None
        };
        // Each `KEY=VALUE` string with its NUL, and its pointer.
        let environment: usize = std::env::vars_os()
            .map(|(key, value)| key.len() + 1 + value.len() + 1 + size_of::<usize>())
            .sum();
        // The program's path (copied once as the file to run, once as `argv[0]`), `-c`,
        // `TASKHERD_LINE=<line>` with their NULs, and the pointers to them and to the command,
        // with both arrays' terminating NULL pointers.
        let shell = shell.as_os_str().len() + 1;
        let fixed = 2 * shell + 3 + "TASKHERD_LINE=".len() + 21 + 6 * size_of::<usize>();
        let for_the_command =
            sysconf(libc::_SC_ARG_MAX).map(|max| max.saturating_sub(environment + fixed));
        Self {
            per_argument,
            for_the_command,
        }
    }

    /// An error for every job whose command does not fit.
    pub fn check(&self, jobs: &[Job]) -> Vec<LineError> {
        jobs.iter()
            .filter_map(|job| {
                self.problem(job.command.len() + 1)
                    .map(|message| LineError {
                        line: job.line,
                        message,
                    })
            })
            .collect()
    }

    /// Why a command of `size` bytes (with its NUL) cannot be run, if it cannot.
    fn problem(&self, size: usize) -> Option<String> {
        if let Some(max) = self.per_argument
            && size > max
        {
            return Some(format!(
                "the command is {} bytes, more than the {} bytes this system accepts in \
                     one argument (put it in a script and run the script)",
                size - 1,
                max - 1
            ));
        }
        if let Some(max) = self.for_the_command
            && size > max
        {
            return Some(format!(
                "the command is {} bytes; with the environment, that is more than the \
                     system's limit on a program's arguments (ARG_MAX) allows (put it in a \
                     script and run the script)",
                size - 1
            ));
        }
        None
    }
}

/// `sysconf(name)`, or `None` if the system sets no limit or does not know it.
#[allow(unsafe_code)]
fn sysconf(name: libc::c_int) -> Option<usize> {
    // SAFETY: `sysconf` only reads a system setting; any `name` is accepted (an unknown one
    // gives -1 with `errno` set).
    let value = unsafe { libc::sysconf(name) };
    usize::try_from(value).ok().filter(|&value| value > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_and_applied() {
        let limits = ArgLimits::of_this_system(std::path::Path::new("/bin/sh"));
        assert!(limits.for_the_command.is_some_and(|max| max > 4096));
        if cfg!(target_os = "linux") {
            assert!(limits.per_argument.is_some_and(|max| max >= 32 * 4096));
        }
        assert_eq!(limits.problem(100), None);
        let huge = 64 << 20;
        let message = limits.problem(huge).unwrap();
        assert!(message.contains("put it in a script"), "{message}");
    }
}
