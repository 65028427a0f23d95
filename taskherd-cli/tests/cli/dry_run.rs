//! `--dry-run`: the plan, and nothing run.

use crate::support::Scratch;

#[test]
fn prints_jobs_per_group_and_runs_nothing() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "# backups\nweb1 db :: touch ran1\nweb1 :: touch ran2\nweb2 db :: touch ran3\ntouch ran4\n",
    );
    let run = scratch.run(&[
        "run",
        "--dry-run",
        "-j",
        "3",
        "-d",
        "2",
        "-l",
        "db=1",
        "-l",
        "web9=4",
        "--report",
        "report.jsonl",
        "jobs.txt",
    ]);
    run.assert_code(0);
    assert_eq!(
        run.stdout,
        "jobs.txt: 4 jobs in 3 groups; dry run, nothing was run\n\
         group       jobs        limit\n\
         [total]        4            3\n\
         db             2            1\n\
         web1           2  2 (default)\n\
         web2           1  2 (default)\n\
         (no group)     1\n"
    );
    run.assert_stderr_contains(
        "taskherd: warning: --limit web9=4: no job in jobs.txt names group web9",
    );
    for name in ["ran1", "ran2", "ran3", "ran4", "report.jsonl"] {
        assert!(!scratch.exists(name), "{name} exists after a dry run");
    }
}

#[test]
fn reads_standard_input_and_applies_the_limits_file() {
    let scratch = Scratch::new();
    scratch.write("limits.txt", "[total]=5\ndb = 2\n");
    let mut child = scratch
        .command(&["run", "--dry-run", "--limits-file", "limits.txt", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"db :: true\ndb :: true\n")
        .unwrap();
    let run = crate::support::Finished::from(child.wait_with_output().unwrap());
    run.assert_code(0)
        .assert_stdout_contains("<stdin>: 2 jobs in 1 group; dry run")
        .assert_stdout_contains("[total]     2      5\ndb          2      2\n");
}

#[test]
fn the_shipped_demo_is_valid() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.jobs");
    let scratch = Scratch::new();
    let run = scratch.run(&["run", "--dry-run", "-j", "4", "-d", "2", "-l", "db=1", demo]);
    run.assert_code(0)
        .assert_stdout_contains("20 jobs in 4 groups; dry run, nothing was run")
        .assert_stdout_contains("\ndb             6            1\n");
    assert_eq!(run.stderr, "", "the demo's limits name groups that exist");
}

#[test]
fn checks_the_report_path_and_creates_nothing() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "touch ran\n");
    scratch
        .run(&[
            "run",
            "--dry-run",
            "--report",
            "missing/r.jsonl",
            "jobs.txt",
        ])
        .assert_code(2)
        .assert_stderr_contains("cannot create report file missing/r.jsonl");
    assert!(!scratch.exists("ran"));
    assert!(!scratch.exists("missing"));
}

#[test]
fn a_bad_report_path_leaves_no_output_directory_behind() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "touch ran\n");
    scratch
        .run(&[
            "run",
            "--output",
            "dir:out",
            "--report",
            "missing/r.jsonl",
            "jobs.txt",
        ])
        .assert_code(2)
        .assert_stderr_contains("cannot create report file");
    assert!(!scratch.exists("ran"));
    assert!(
        !scratch.exists("out"),
        "the output directory was created anyway"
    );
}

/// A group limited twice on the command line takes the last limit, with a warning (issue 11,
/// item 8), and a limits-file value too large to use is reported as such.
#[test]
fn a_group_limited_twice_warns_and_takes_the_last() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "a :: true\n");
    let run = scratch.run(&["run", "--dry-run", "-l", "a=1", "-l", "a=3", "jobs.txt"]);
    run.assert_code(0)
        .assert_stderr_contains(
            "taskherd: warning: --limit a=3 replaces --limit a=1 given before it",
        )
        .assert_stdout_contains("a           1      3\n");
    scratch.write("limits.txt", "a=123456789012345678901234567890\n");
    scratch
        .run(&[
            "run",
            "--dry-run",
            "--limits-file",
            "limits.txt",
            "jobs.txt",
        ])
        .assert_code(2)
        .assert_stderr_contains(
            "limits.txt:1: limit of a: \"123456789012345678901234567890\" is too large",
        );
}

/// A typo for ` :: ` (`web1:: cmd`, `web1 db: cmd`) is warned about at check time (issue 11,
/// item 9); the line still runs as written, and `:: cmd` says "no group" on purpose.
#[test]
fn a_group_list_glued_to_its_separator_is_warned_about() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "web1:: touch one\nweb1 db: touch two\n:: echo note: fine\necho a::b\n",
    );
    let run = scratch.run(&["run", "--no-summary", "-j", "1", "jobs.txt"]);
    // The two typos run as commands named `web1::` and `web1`, which fail.
    run.assert_code(1)
        .assert_stderr_contains(
            "taskherd: warning: jobs.txt:1: \"web1::\" looks like a group list's end",
        )
        .assert_stderr_contains(
            "taskherd: warning: jobs.txt:2: \"db:\" looks like a group list's end",
        )
        .assert_stdout_contains("[3] note: fine\n[4] a::b\n");
    assert_eq!(
        run.stderr.matches("looks like a group list's end").count(),
        2,
        "{run:#?}"
    );
}

/// The bound: a dry run of a 100,000-line job file stays under 25 MB of resident
/// memory (it counts the jobs as it reads them instead of keeping them).
#[cfg(target_os = "linux")]
#[test]
fn a_dry_run_of_a_large_file_stays_small() {
    use std::fmt::Write as _;
    let scratch = Scratch::new();
    let mut text = String::new();
    for i in 0..100_000 {
        writeln!(
            text,
            "host{} db{} tenant-{} :: ./process-item.sh --input /data/batch/{i:06}.json \
             --output /data/out/{i:06}.json",
            i % 50,
            i % 7,
            i % 1000
        )
        .unwrap();
    }
    scratch.write("jobs.txt", &text);
    // Waited for with `wait4`, which also gives its peak memory.
    #[allow(clippy::zombie_processes)]
    let child = scratch
        .command(&["run", "--dry-run", "jobs.txt"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (code, max_rss_kib) = wait_with_max_rss(child.id());
    assert_eq!(code, 0);
    assert!(
        max_rss_kib < 25 * 1000,
        "the dry run's peak resident memory was {max_rss_kib} KiB"
    );
}

/// Waits for process `pid`; returns its exit code and its peak resident memory in KiB.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn wait_with_max_rss(pid: u32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid for writes; `pid` is our own child, not yet
    // waited for.
    let waited = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid as libc::pid_t, "wait4 failed");
    assert!(libc::WIFEXITED(status));
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// A plan whose reader stops early (`| head -1`) is not an error (it panicked, exit status
/// 101); a plan that cannot be written at all (a full disk) is said, exit status 1.
#[test]
fn a_plan_whose_reader_stops_early_is_no_error() {
    let scratch = Scratch::new();
    let jobs: String = (0..20_000).map(|i| format!("g{i} :: true\n")).collect();
    scratch.write("jobs.txt", &jobs);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader); // closed before anything is written
    let mut child = scratch
        .command(&["run", "--dry-run", "jobs.txt"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    if std::path::Path::new("/dev/full").exists() {
        let full = std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let run = scratch
            .command(&["run", "--dry-run", "jobs.txt"])
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains("cannot write the plan"), "{stderr}");
    }
}
