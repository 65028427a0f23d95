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
