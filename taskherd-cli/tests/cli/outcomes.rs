//! Exit statuses, the report's fields, and `--halt-on-error`.

use crate::support::{Scratch, assert_said_once_and_every_job_ran, report, statuses};

#[test]
fn all_succeeded_exits_0() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "a :: true\n\n# nothing\ntrue\n");
    scratch.run(&["run", "jobs.txt"]).assert_code(0);
}

#[test]
fn empty_job_file_exits_0() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "# nothing to do\n");
    scratch
        .run(&["run", "--report", "r.jsonl", "jobs.txt"])
        .assert_code(0)
        .assert_stderr_contains("0 jobs in ");
    assert_eq!(scratch.read("r.jsonl"), "");
}

#[test]
fn report_records_exit_codes_signals_and_times() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "a b :: echo hi\nexit 3\nkill -TERM $$\nc :: test \"$TASKHERD_LINE\" = 4\n",
    );
    scratch
        .run(&["run", "--report", "r.jsonl", "jobs.txt"])
        .assert_code(1)
        .assert_stdout_contains("[1] hi\n")
        .assert_stderr_contains("4 jobs in ")
        .assert_stderr_contains(": 2 succeeded, 1 failed, 1 killed\n");
    let records = report(&scratch, "r.jsonl");
    assert_eq!(
        statuses(&records),
        [
            (1, "succeeded".into()),
            (2, "failed".into()),
            (3, "killed".into()),
            (4, "succeeded".into())
        ]
    );
    let first = &records[0];
    assert_eq!(first["groups"], serde_json::json!(["a", "b"]));
    assert_eq!(first["command"], "echo hi");
    assert_eq!(first["ran"], true);
    assert!(first["signal"].is_null() && first["reason"].is_null());
    let start = first["start"].as_str().unwrap();
    assert!(start.ends_with('Z') && start.len() == "2025-01-01T00:00:00.000000Z".len());
    assert_eq!(records[1]["exit_code"], 3);
    assert_eq!(records[2]["signal"], 15);
    assert_eq!(records[2]["signal_name"], "SIGTERM");
    assert!(records[2]["exit_code"].is_null());
    // A signal the job sent itself is not an interruption by taskherd.
    assert!(records[2]["reason"].is_null());
}

#[test]
fn halt_on_error_lets_running_jobs_finish_and_starts_no_more() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "a :: sleep 0.4; touch slow-done\n\
         b :: sleep 0.1; exit 7\n\
         c :: touch ran3\n\
         touch ran4\n",
    );
    let run = scratch.run(&[
        "run",
        "-j",
        "2",
        "--halt-on-error",
        "--report",
        "r.jsonl",
        "jobs.txt",
    ]);
    run.assert_code(1)
        .assert_stderr_contains(
            "taskherd: line 2 failed with exit status 7; --halt-on-error: starting no more \
             jobs, waiting for 1 running job to finish",
        )
        .assert_stderr_contains("4 jobs in ")
        .assert_stderr_contains(": 1 succeeded, 1 failed, 2 not started (halted after a failure)");
    assert!(
        scratch.exists("slow-done"),
        "the running job was not allowed to finish"
    );
    assert!(!scratch.exists("ran3") && !scratch.exists("ran4"));
    let records = report(&scratch, "r.jsonl");
    assert_eq!(
        statuses(&records),
        [
            (1, "succeeded".into()),
            (2, "failed".into()),
            (3, "not_started".into()),
            (4, "not_started".into())
        ]
    );
    assert_eq!(records[2]["reason"], "halt-on-error");
    assert_eq!(records[3]["ran"], false);
    assert!(records[3]["start"].is_null());
}

#[test]
fn without_halt_on_error_every_job_runs() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "false\ntouch ran2\n");
    scratch.run(&["run", "-j", "1", "jobs.txt"]).assert_code(1);
    assert!(scratch.exists("ran2"));
}

#[test]
fn jobs_from_standard_input() {
    use std::io::Write;
    let scratch = Scratch::new();
    let mut child = scratch
        .command(&["run", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"g :: touch from-stdin\n")
        .unwrap();
    let run = crate::support::Finished::from(child.wait_with_output().unwrap());
    run.assert_code(0);
    assert!(scratch.exists("from-stdin"));
}

#[test]
fn jobs_read_no_input() {
    let scratch = Scratch::new();
    // With standard input from /dev/null, `cat` ends at once instead of waiting.
    scratch.write("jobs.txt", "cat > got\n");
    scratch.run(&["run", "jobs.txt"]).assert_code(0);
    assert_eq!(scratch.read("got"), "");
}

#[test]
fn a_job_that_cannot_start_says_why_on_standard_error() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "g :: echo hi\n");
    // So few file descriptors that the job's pipes cannot be made: `sh` cannot be started.
    // (A command too long for exec is refused up front instead: see `errors.rs`.)
    let output = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 12 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_taskherd"))
        .args(["run", "--report", "r.jsonl", "jobs.txt"])
        .current_dir(scratch.dir())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cannot run the taskherd binary");
    crate::support::Finished::from(output)
        .assert_code(1)
        .assert_stderr_contains("line 1 could not start: ");
    let records = report(&scratch, "r.jsonl");
    assert_eq!(statuses(&records), [(1, "error".into())]);
    // As the README says: not run, its one attempt listed with the error.
    assert_eq!(records[0]["ran"], false);
    let attempts = records[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["status"], "error");
    assert!(attempts[0]["error"].is_string(), "{attempts:?}");
}

#[test]
fn halt_on_error_after_n_failures() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "false\ntrue\nexit 3\ntouch ran4\n");
    let run = scratch.run(&[
        "run",
        "-j",
        "1",
        "--halt-on-error",
        "2",
        "--report",
        "r.jsonl",
        "jobs.txt",
    ]);
    run.assert_code(1)
        .assert_stderr_contains(
            "taskherd: 2 jobs failed, the last: line 3 failed with exit status 3; \
             --halt-on-error: starting no more jobs, no job is running",
        )
        .assert_stderr_contains(": 1 succeeded, 2 failed, 1 not started (halted after a failure)");
    assert!(!scratch.exists("ran4"));
}

#[test]
fn halt_on_error_now_terminates_running_jobs() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "touch started1; sleep 30; touch never1\n\
         while [ ! -e started1 ]; do sleep 0.01; done; exit 5\n\
         touch ran3\n",
    );
    let run = scratch.run(&[
        "run",
        "-j",
        "2",
        "--halt-on-error",
        "now",
        "--report",
        "r.jsonl",
        "jobs.txt",
    ]);
    run.assert_code(1)
        .assert_stderr_contains(
            "taskherd: line 2 failed with exit status 5; --halt-on-error: starting no more jobs, \
             terminating the running jobs",
        )
        .assert_stderr_contains(
            ": 0 succeeded, 1 failed, 1 killed, 1 not started (halted after a failure)",
        );
    assert!(!scratch.exists("never1") && !scratch.exists("ran3"));
    let records = report(&scratch, "r.jsonl");
    let line1 = records.iter().find(|r| r["line"] == 1).unwrap();
    assert_eq!(line1["status"], "killed");
    assert_eq!(line1["signal_name"], "SIGTERM");
    assert_eq!(line1["reason"], "halt-on-error");
}

#[test]
fn a_failure_that_a_retry_repairs_does_not_halt() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "[ -e tried ] || { touch tried; false; }\ntouch ran2\n",
    );
    scratch
        .run(&[
            "run",
            "-j",
            "1",
            "--halt-on-error",
            "--retries",
            "1",
            "--retry-delay",
            "1ms",
            "jobs.txt",
        ])
        .assert_code(0);
    assert!(scratch.exists("ran2"));
}

/// A report that cannot be written (a full disk: `/dev/full`) is said once, the jobs still
/// run, and the exit status is 1.
#[cfg(target_os = "linux")]
#[test]
fn a_report_that_cannot_be_written_is_said_once_and_fails_the_run() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "touch one\ntouch two\ntouch three\n");
    let run = scratch.run(&["run", "-j", "1", "--report", "/dev/full", "jobs.txt"]);
    assert_said_once_and_every_job_ran(&scratch, &run, "report");
}

/// `taskherd run jobs.txt 2>&1 | head -1`: standard error is a pipe whose reader has gone.
/// taskherd's own messages (the summary, a warning) are lost, but the run ends as it would
/// have, with its jobs' exit status; it panicked (exit 101) writing the summary. Found by a
/// review.
#[test]
fn a_closed_standard_error_changes_nothing_but_the_messages() {
    let scratch = Scratch::new();
    for (jobs, code) in [("true\n", 0), ("true\nfalse\n", 1)] {
        scratch.write("jobs.txt", jobs);
        // A warning too (a limit for a group no job names), written before anything runs.
        for args in [
            &["run", "jobs.txt"][..],
            &["run", "-l", "nobody=1", "jobs.txt"],
        ] {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            let status = scratch.command(args).stderr(writer).status().unwrap();
            assert_eq!(status.code(), Some(code), "{args:?} {jobs:?}: {status}");
        }
    }
}
