//! How jobs are run: the shell (`--shell`) and jobs dying with taskherd.

use std::time::{Duration, Instant};

use crate::support::{Scratch, send_signal, wait_for_files};

#[test]
fn shell_runs_each_command() {
    let scratch = Scratch::new();
    // `[[ ]]` is bash syntax that a POSIX sh need not know.
    scratch.write("jobs.txt", "[[ x == x ]] && echo \"$0\" > shell.txt\n");
    scratch
        .run(&["run", "--shell", "/bin/bash", "jobs.txt"])
        .assert_code(0);
    assert_eq!(scratch.read("shell.txt"), "/bin/bash\n");

    // The default is /bin/sh.
    scratch.write("jobs.txt", "echo \"$0\" > shell.txt\n");
    scratch.run(&["run", "jobs.txt"]).assert_code(0);
    assert_eq!(scratch.read("shell.txt"), "/bin/sh\n");
}

#[test]
fn a_shell_that_cannot_run_is_refused_before_anything_runs() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "touch ran\n");
    scratch.write("not-executable", "#!/bin/sh\n");
    for (shell, why) in [
        ("/no/such/shell", "No such file or directory"),
        ("/tmp", "not a file"),
        ("not-executable", "not executable"),
    ] {
        scratch
            .run(&["run", "--shell", shell, "jobs.txt"])
            .assert_code(2)
            .assert_stderr_contains(&format!("taskherd: --shell {shell}: {why}"));
        assert!(!scratch.exists("ran"));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn jobs_die_when_taskherd_is_killed() {
    let scratch = Scratch::new();
    // Each job's process group leader is `sleep` itself (the shell execs it), and writes its pid.
    let marker = format!("32.{}", std::process::id());
    scratch.write(
        "jobs.txt",
        &format!(
            "echo $$ > pid1; exec sleep {marker}\n\
             echo $$ > pid2; exec sleep {marker}\n"
        ),
    );
    let mut child = scratch
        .command(&["run", "-j", "2", "jobs.txt"])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["pid1", "pid2"]);
    let pids: Vec<String> = ["pid1", "pid2"]
        .iter()
        .map(|name| {
            // The file is created before the pid is written into it.
            loop {
                let text = scratch.read(name);
                if text.ends_with('\n') {
                    break text.trim().to_owned();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .collect();
    for pid in &pids {
        assert!(alive(pid), "job {pid} is running before taskherd dies");
    }
    send_signal(child.id(), "KILL");
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|pid| alive(pid)) {
        assert!(Instant::now() < deadline, "jobs {pids:?} outlived taskherd");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: `Z` is a zombie, `X` dead.
        Ok(stat) => !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}
