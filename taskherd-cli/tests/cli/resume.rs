//! `--resume REPORT` and `--resume-failed REPORT`: jobs append their number to the file `ran`,
//! so each test sees exactly which jobs ran.

use crate::support::{Scratch, raw_report, report, send_signal, statuses, wait_for_files};

/// The job numbers in `ran`, sorted (empty if no job ran).
fn ran(scratch: &Scratch) -> Vec<u32> {
    if !scratch.exists("ran") {
        return Vec::new();
    }
    let mut ran: Vec<u32> = scratch
        .read("ran")
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    ran.sort_unstable();
    ran
}

fn forget_ran(scratch: &Scratch) {
    std::fs::remove_file(scratch.path("ran")).unwrap();
}

/// `(line, status)` pairs from a list of `(line, status)` string slices.
fn expect(pairs: &[(u64, &str)]) -> Vec<(u64, String)> {
    pairs.iter().map(|&(l, s)| (l, s.to_owned())).collect()
}

/// Job 2 fails until the file `fixed` exists; with `-j 1 --halt-on-error`, job 3 never starts.
const HALTING_JOBS: &str = "a :: echo 1 >> ran\n\
                            a :: echo 2 >> ran; test -e fixed\n\
                            echo 3 >> ran\n";

/// Runs [`HALTING_JOBS`] with the report `report`: job 1 succeeds, 2 fails, 3 never starts.
/// Then forgets which jobs ran.
fn halted_run(report_name: &str) -> Scratch {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", HALTING_JOBS);
    let args = ["run", "-j", "1", "--halt-on-error", "--report", report_name];
    scratch
        .run(&[&args[..], &["jobs.txt"]].concat())
        .assert_code(1);
    assert_eq!(ran(&scratch), [1, 2]);
    assert_eq!(
        statuses(&report(&scratch, report_name)),
        expect(&[(1, "succeeded"), (2, "failed"), (3, "not_started")])
    );
    forget_ran(&scratch);
    scratch
}

#[test]
fn resume_skips_exactly_the_jobs_that_succeeded() {
    let scratch = halted_run("r1.jsonl");
    scratch.write("fixed", "");
    let run = scratch.run(&[
        "run", "--resume", "r1.jsonl", "--report", "r2.jsonl", "jobs.txt",
    ]);
    run.assert_code(0)
        .assert_stderr_contains("2 jobs in ")
        .assert_stderr_contains(": 2 succeeded; 1 more skipped (--resume)\n")
        .assert_stderr_contains("\n[total]     2          2");
    assert_eq!(
        ran(&scratch),
        [2, 3],
        "the failed and the unstarted job ran"
    );
    let records = report(&scratch, "r2.jsonl");
    assert_eq!(
        statuses(&records),
        expect(&[(1, "skipped"), (2, "succeeded"), (3, "succeeded")])
    );
    let skipped = &records[0];
    assert_eq!(skipped["ran"], false);
    assert_eq!(skipped["reason"], "resumed");
    assert_eq!(skipped["command"], "echo 1 >> ran");
    assert_eq!(skipped["groups"], serde_json::json!(["a"]));
    assert!(skipped["start"].is_null() && skipped["exit_code"].is_null());

    // The new report is complete: resuming from it skips everything, `skipped` included.
    forget_ran(&scratch);
    scratch
        .run(&["run", "--resume", "r2.jsonl", "jobs.txt"])
        .assert_code(0)
        .assert_stderr_contains("0 jobs in ")
        .assert_stderr_contains("; 3 more skipped (--resume)\n");
    assert_eq!(ran(&scratch), [] as [u32; 0]);
}

#[test]
fn resume_failed_runs_exactly_the_jobs_that_failed() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "echo 1 >> ran\n\
         echo 2 >> ran; test -e fixed\n\
         echo 3 >> ran; test -e fixed || kill -TERM $$\n\
         echo 4 >> ran\n",
    );
    scratch
        .run(&["run", "-j", "1", "--report", "r1.jsonl", "jobs.txt"])
        .assert_code(1);
    assert_eq!(
        statuses(&report(&scratch, "r1.jsonl")),
        expect(&[
            (1, "succeeded"),
            (2, "failed"),
            (3, "killed"),
            (4, "succeeded")
        ])
    );

    // A job added since, not in the report, is skipped too.
    let mut jobs = scratch.read("jobs.txt");
    jobs.push_str("echo 5 >> ran\n");
    scratch.write("jobs.txt", &jobs);
    forget_ran(&scratch);
    scratch.write("fixed", "");
    scratch
        .run(&[
            "run",
            "--resume-failed",
            "r1.jsonl",
            "--report",
            "r2.jsonl",
            "jobs.txt",
        ])
        .assert_code(0)
        .assert_stderr_contains(": 2 succeeded; 3 more skipped (--resume-failed)\n");
    assert_eq!(ran(&scratch), [2, 3]);
    assert_eq!(
        statuses(&report(&scratch, "r2.jsonl")),
        expect(&[
            (1, "skipped"),
            (2, "succeeded"),
            (3, "succeeded"),
            (4, "skipped"),
            // Never ran: a later --resume must run it.
            (5, "not_started")
        ])
    );
}

#[test]
fn resume_failed_skips_jobs_that_never_started() {
    let scratch = halted_run("r1.jsonl");
    scratch
        .run(&["run", "--resume-failed", "r1.jsonl", "jobs.txt"])
        .assert_code(1);
    assert_eq!(ran(&scratch), [2], "job 3 never started: it is skipped");
}

#[test]
fn a_job_resume_failed_skipped_without_running_it_runs_on_the_next_resume() {
    let scratch = halted_run("r1.jsonl");
    scratch.write("fixed", "");
    // Runs line 2 (it failed); line 1 succeeded, line 3 never started: both skipped.
    scratch
        .run(&[
            "run",
            "--resume-failed",
            "r1.jsonl",
            "--report",
            "r2.jsonl",
            "jobs.txt",
        ])
        .assert_code(0);
    assert_eq!(ran(&scratch), [2]);
    let records = report(&scratch, "r2.jsonl");
    assert_eq!(
        statuses(&records),
        expect(&[(1, "skipped"), (2, "succeeded"), (3, "not_started")])
    );
    assert_eq!(records[2]["reason"], "resumed");
    forget_ran(&scratch);
    // From that report, --resume runs line 3, which never ran, and nothing else.
    scratch
        .run(&["run", "--resume", "r2.jsonl", "jobs.txt"])
        .assert_code(0);
    assert_eq!(ran(&scratch), [3]);
}

#[test]
fn copies_of_a_job_are_counted() {
    let scratch = Scratch::new();
    // The same command and groups three times; each copy succeeds once `fixed-LINE` exists.
    let job = "g :: echo $TASKHERD_LINE >> ran; test -e fixed-$TASKHERD_LINE\n";
    scratch.write("jobs.txt", &job.repeat(3));
    scratch.write("fixed-1", "");
    scratch
        .run(&["run", "--report", "r1.jsonl", "jobs.txt"])
        .assert_code(1);
    assert_eq!(
        statuses(&report(&scratch, "r1.jsonl")),
        expect(&[(1, "succeeded"), (2, "failed"), (3, "failed")])
    );

    // One copy succeeded, so one is skipped (the one on its line) and two run.
    forget_ran(&scratch);
    scratch.write("fixed-2", "");
    scratch
        .run(&[
            "run", "--resume", "r1.jsonl", "--report", "r2.jsonl", "jobs.txt",
        ])
        .assert_code(1)
        .assert_stderr_contains(": 1 succeeded, 1 failed; 1 more skipped (--resume)\n");
    assert_eq!(ran(&scratch), [2, 3]);

    // Now two copies are done (one skipped, one succeeded) and a fourth copy is added: two of
    // the four are skipped.
    scratch.write("jobs.txt", &job.repeat(4));
    forget_ran(&scratch);
    scratch
        .run(&["run", "--resume", "r2.jsonl", "jobs.txt"])
        .assert_code(1)
        .assert_stderr_contains("2 jobs in ")
        .assert_stderr_contains("; 2 more skipped (--resume)\n");
    // Lines 1 and 2 match their own records; 3 (failed) and the new 4 run.
    assert_eq!(ran(&scratch), [3, 4]);
}

#[test]
fn the_report_resumed_from_may_be_the_report_written() {
    let args = [
        "run",
        "-j",
        "1",
        "--halt-on-error",
        "--report",
        "r.jsonl",
        "--resume",
        "r.jsonl",
        "jobs.txt",
    ];
    // No report yet: a run cannot resume from it.
    let scratch = Scratch::new();
    scratch.write("jobs.txt", HALTING_JOBS);
    scratch
        .run(&args)
        .assert_code(2)
        .assert_stderr_contains("cannot read --resume report r.jsonl: ");
    assert!(!scratch.exists("ran") && !scratch.exists("r.jsonl"));

    let scratch = halted_run("r.jsonl");
    let first = scratch.read("r.jsonl");
    // A run that fails to set up leaves the report it would resume from as it was; so does
    // one whose joblog cannot take its header (`/dev/full`: the report was emptied first,
    // and the history of the run lost; found by a review).
    for bad in [
        ["--joblog", "missing/jobs.log"],
        ["--output", "dir:jobs.txt"],
        ["--joblog", "/dev/full"],
    ] {
        scratch
            .run(&[&args[..8], &bad, &["jobs.txt"]].concat())
            .assert_code(2)
            .assert_stderr_contains("cannot create ");
        assert_eq!(scratch.read("r.jsonl"), first);
    }
    scratch.write("fixed", "");
    scratch.run(&args).assert_code(0);
    assert_eq!(ran(&scratch), [2, 3]);
    assert_eq!(
        statuses(&report(&scratch, "r.jsonl")),
        expect(&[(1, "skipped"), (2, "succeeded"), (3, "succeeded")])
    );
    forget_ran(&scratch);
    scratch.run(&args).assert_code(0);
    assert_eq!(ran(&scratch), [] as [u32; 0]);
    assert_eq!(
        statuses(&report(&scratch, "r.jsonl")),
        expect(&[(1, "skipped"), (2, "skipped"), (3, "skipped")])
    );
}

/// A `--resume-failed` run that writes over the report it resumes from, killed with `kill -9`
/// while it runs the first of three failures again: the report it leaves still holds all
/// three (the provisional records written as it started), so the next `--resume-failed` runs
/// them again. It held none of them, and ran nothing, before (found by a review).
#[test]
fn a_killed_run_that_replaced_its_report_keeps_the_failures() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "echo 1 >> ran; test -e fixed && touch started1 && while [ ! -e go ]; do sleep 0.01; done\n\
         echo 2 >> ran; test -e fixed\n\
         echo 3 >> ran; test -e fixed\n\
         echo 4 >> ran\n",
    );
    scratch
        .run(&["run", "-j", "1", "--report", "r.jsonl", "jobs.txt"])
        .assert_code(1);
    assert_eq!(
        statuses(&report(&scratch, "r.jsonl")),
        expect(&[
            (1, "failed"),
            (2, "failed"),
            (3, "failed"),
            (4, "succeeded")
        ])
    );
    forget_ran(&scratch);
    scratch.write("fixed", "");
    let args = [
        "run",
        "-j",
        "1",
        "--resume-failed",
        "r.jsonl",
        "--report",
        "r.jsonl",
        "jobs.txt",
    ];
    let mut child = scratch.command(&args).spawn().unwrap();
    // Killed if the test fails before it kills it (its job would run on).
    let guard = crate::support::KillOnDrop(child.id());
    wait_for_files(&scratch, &["started1"]);
    send_signal(child.id(), "KILL");
    child.wait().unwrap();
    std::mem::forget(guard);
    // The provisional records, after the skipped job's.
    let raw = raw_report(&scratch, "r.jsonl");
    assert_eq!(raw.len(), 4, "{raw:?}");
    assert_eq!(
        (raw[0]["line"].as_u64(), raw[0]["status"].as_str()),
        (Some(4), Some("skipped"))
    );
    for (record, line) in raw[1..].iter().zip(1..) {
        assert_eq!(record["line"], line);
        assert_eq!(record["status"], "not_started");
        assert_eq!(record["reason"], "pending");
        assert_eq!(record["previous_status"], "failed");
        assert_eq!(record["ran"], false);
    }
    // What the next run reads: the three failures, still to run again.
    forget_ran(&scratch);
    scratch.write("go", "");
    scratch.run(&args).assert_code(0);
    assert_eq!(ran(&scratch), [1, 2, 3]);
    let records = report(&scratch, "r.jsonl");
    assert_eq!(
        statuses(&records),
        expect(&[
            (1, "succeeded"),
            (2, "succeeded"),
            (3, "succeeded"),
            (4, "skipped")
        ])
    );
    // Each job run again: its provisional record, then its own (which counts).
    assert_eq!(raw_report(&scratch, "r.jsonl").len(), 7);
    assert!(
        records[..3]
            .iter()
            .all(|r| r["previous_status"] == "failed")
    );
}

#[test]
fn a_bad_report_runs_nothing() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "touch marker\n");
    let good = "{\"line\":1,\"groups\":[],\"command\":\"other\",\"status\":\"failed\"}\n";
    scratch.write(
        "r.jsonl",
        &format!("{good}{{\"line\":2}}\n{good}not json\n"),
    );
    let run = scratch.run(&[
        "run", "--resume", "r.jsonl", "--report", "r.jsonl", "jobs.txt",
    ]);
    run.assert_code(2)
        .assert_stderr_contains("taskherd: r.jsonl:2: not a report record: missing field")
        .assert_stderr_contains("taskherd: r.jsonl:4: not a report record: ")
        .assert_stderr_contains("2 errors in r.jsonl; nothing was run");
    assert!(!scratch.exists("marker"));
    assert!(
        scratch.read("r.jsonl").starts_with(good),
        "the report was overwritten"
    );

    scratch.write(
        "r.jsonl",
        &format!("{good}{}", good.replace("failed", "lost")),
    );
    scratch
        .run(&["run", "--resume-failed", "r.jsonl", "jobs.txt"])
        .assert_code(2)
        .assert_stderr_contains("taskherd: r.jsonl:2: unknown status \"lost\"");
    scratch
        .run(&["run", "--resume", "missing.jsonl", "jobs.txt"])
        .assert_code(2)
        .assert_stderr_contains("taskherd: cannot read --resume report missing.jsonl: ");
    scratch
        .run(&[
            "run",
            "--resume",
            "r.jsonl",
            "--resume-failed",
            "r.jsonl",
            "jobs.txt",
        ])
        .assert_code(2)
        .assert_stderr_contains("cannot be used with");
    assert!(!scratch.exists("marker"));
}

#[test]
fn a_last_record_cut_short_is_a_warning() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "echo 1 >> ran\necho 2 >> ran\n");
    scratch.write(
        "r.jsonl",
        "{\"line\":1,\"groups\":[],\"command\":\"echo 1 >> ran\",\"status\":\"succeeded\"}\n\
         {\"line\":2,\"groups\":[],\"command\":\"echo 2 >> ran\",\"sta",
    );
    scratch
        .run(&["run", "--resume", "r.jsonl", "jobs.txt"])
        .assert_code(0)
        .assert_stderr_contains(
            "taskherd: warning: r.jsonl:2: the last record is cut short (taskherd stopped \
             while writing it?); it is ignored",
        );
    assert_eq!(ran(&scratch), [2]);
}

#[test]
fn dry_run_shows_the_jobs_skipped() {
    let scratch = halted_run("r1.jsonl");
    let run = scratch.run(&[
        "run",
        "--dry-run",
        "-j",
        "1",
        "--resume",
        "r1.jsonl",
        "jobs.txt",
    ]);
    run.assert_code(0);
    assert_eq!(
        run.stdout,
        "jobs.txt: 2 jobs in 1 group; dry run, nothing was run\n\
         group       jobs  limit\n\
         [total]        2      1\n\
         a              1   none\n\
         (no group)     1\n\
         --resume r1.jsonl: 1 job skipped (line 1), 2 to run\n"
    );
    assert!(!scratch.exists("ran"));
}

/// Runs `taskherd run --halt-on-error=1 ARGS` on a pipe whose first line is `first` (a job that
/// fails) and whose `rest` is written only once `report` holds a failure, the run having halted
/// on it: the rest is never read. Asserts the run's exit status 1.
fn halt_before_reading(scratch: &Scratch, first: &str, rest: &[&str], args: &str, report: &str) {
    let rest: String = rest.iter().map(|line| format!("echo '{line}'; ")).collect();
    let script = format!(
        "(echo '{first}'; n=0; \
         until grep -q '\"status\":\"failed\"' {report} 2>/dev/null || [ $n -ge 600 ]; do \
         sleep 0.05; n=$((n+1)); done; {rest}) | {} run --halt-on-error=1 {args}",
        env!("CARGO_BIN_EXE_taskherd")
    );
    let run = sh(scratch, &script);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
}

/// Runs `script` with `sh -c` in the scratch directory.
fn sh(scratch: &Scratch, script: &str) -> std::process::Output {
    std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(scratch.dir())
        .output()
        .unwrap()
}

/// A streamed run that stops before reading every line, writing the report it resumes from,
/// keeps the records of the jobs done on the lines it did not read: the next `--resume` from
/// that report does not run them again.
#[test]
fn stopped_streamed_resume_keeps_done_jobs_done() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "echo 1 >> ran\necho 2 >> ran\n");
    scratch
        .run(&["run", "--report", "r.jsonl", "jobs.txt"])
        .assert_code(0);
    forget_ran(&scratch);
    halt_before_reading(
        &scratch,
        "false",
        &["echo 1 >> ran", "echo 2 >> ran"],
        "--resume r.jsonl --report r.jsonl",
        "r.jsonl",
    );
    assert_eq!(
        ran(&scratch),
        [0_u32; 0],
        "no job of the first run ran again"
    );
    let records = report(&scratch, "r.jsonl");
    let mut kept: Vec<(u64, String)> = statuses(&records);
    kept.sort();
    assert_eq!(
        kept,
        expect(&[(1, "failed"), (1, "skipped"), (2, "skipped")])
    );
    let third = scratch.run(&[
        "run", "--resume", "r.jsonl", "--report", "r3.jsonl", "jobs.txt",
    ]);
    third.assert_code(0);
    assert_eq!(
        ran(&scratch),
        [0_u32; 0],
        "jobs done in the first run ran again"
    );
}

/// Jobs 1 and 2 fail until the file `fixed` exists; job 3 succeeds.
const TWO_FAILURES: &str = "echo 1 >> ran; test -e fixed\n\
                            echo 2 >> ran; test -e fixed\n\
                            echo 3 >> ran\n";

/// Runs [`TWO_FAILURES`] once, one job at a time, with the report `r1.jsonl`: 1 and 2 fail.
/// Then forgets which jobs ran.
fn two_failures() -> Scratch {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", TWO_FAILURES);
    scratch
        .run(&["run", "-j", "1", "--report", "r1.jsonl", "jobs.txt"])
        .assert_code(1);
    forget_ran(&scratch);
    scratch
}

/// The `previous_status` of each record of `name`, by line.
fn previous_statuses(scratch: &Scratch, name: &str) -> Vec<(u64, Option<String>)> {
    let mut previous: Vec<(u64, Option<String>)> = report(scratch, name)
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["previous_status"].as_str().map(str::to_owned),
            )
        })
        .collect();
    previous.sort();
    previous
}

/// A `--resume-failed` run that halts before starting every failure it was to run again does
/// not forget them: their `not_started` records keep the failure as `previous_status`, and the
/// next `--resume-failed` from that report runs them.
#[test]
fn resume_failed_remembers_the_failures_a_halted_run_did_not_start() {
    halt_after_job_1("--resume-failed");
}

/// The same for a `--resume` run: it runs the failures (and what never ran) and keeps each
/// failure as `previous_status`, so a halt does not turn a failure it did not start into a job
/// that merely never ran, which the next `--resume-failed` would skip.
#[test]
fn resume_remembers_the_failures_a_halted_run_did_not_start() {
    halt_after_job_1("--resume");
}

/// After [`two_failures`], a run with `option` from `r1.jsonl` that halts on job 1's failure.
fn halt_after_job_1(option: &str) {
    let scratch = two_failures();
    let args = format!("run -j 1 --halt-on-error {option} r1.jsonl --report r2.jsonl jobs.txt");
    scratch
        .run(&args.split(' ').collect::<Vec<_>>())
        .assert_code(1);
    assert_failure_kept_and_run_again(&scratch);
}

/// After [`two_failures`] and a `--resume-failed` (or `--resume`) run from `r1.jsonl` that ran
/// job 1 (which failed again) and stopped before job 2: `r2.jsonl` keeps job 2's failure, and
/// the next `--resume-failed` from it, with `fixed` written, runs both failures and only them.
fn assert_failure_kept_and_run_again(scratch: &Scratch) {
    assert_eq!(ran(scratch), [1], "stopped after job 1's failure");
    let mut second = statuses(&report(scratch, "r2.jsonl"));
    second.sort();
    assert_eq!(
        second,
        expect(&[(1, "failed"), (2, "not_started"), (3, "skipped")])
    );
    let failed = || Some("failed".to_owned());
    assert_eq!(
        previous_statuses(scratch, "r2.jsonl"),
        [(1, failed()), (2, failed()), (3, None)]
    );
    forget_ran(scratch);

    scratch.write("fixed", "");
    let args = "run --resume-failed r2.jsonl --report r3.jsonl jobs.txt";
    scratch
        .run(&args.split(' ').collect::<Vec<_>>())
        .assert_code(0);
    assert_eq!(
        ran(scratch),
        [1, 2],
        "both failures ran again, the success did not"
    );
}

/// A streamed `--resume-failed` run that stops before reading every line carries the failures
/// of the lines it did not read into its report (`not_started`, with the failure as
/// `previous_status`), so that the next `--resume-failed` still runs them.
#[test]
fn stopped_streamed_resume_failed_keeps_unread_failures() {
    let scratch = two_failures();
    halt_before_reading(
        &scratch,
        "echo 1 >> ran; test -e fixed",
        &["echo 2 >> ran; test -e fixed", "echo 3 >> ran"],
        "--resume-failed r1.jsonl --report r2.jsonl",
        "r2.jsonl",
    );
    assert_failure_kept_and_run_again(&scratch);
}

/// The same for a streamed `--resume` run.
#[test]
fn stopped_streamed_resume_keeps_unread_failures() {
    let scratch = two_failures();
    halt_before_reading(
        &scratch,
        "echo 1 >> ran; test -e fixed",
        &["echo 2 >> ran; test -e fixed", "echo 3 >> ran"],
        "--resume r1.jsonl --report r2.jsonl",
        "r2.jsonl",
    );
    assert_failure_kept_and_run_again(&scratch);
}

/// A run that fails in its setup (here: creating `--output dir:PATH`) runs nothing and leaves
/// the report it resumes from, and the joblog, as they were.
#[test]
fn failed_setup_keeps_the_resumed_report() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "echo 1 >> ran\nfalse\n");
    scratch
        .run(&[
            "run", "--report", "r.jsonl", "--joblog", "j.log", "jobs.txt",
        ])
        .assert_code(1);
    forget_ran(&scratch);
    let (report_before, joblog_before) = (scratch.read("r.jsonl"), scratch.read("j.log"));
    scratch.write("not-a-dir", "");
    let second = scratch.run(&[
        "run",
        "--resume",
        "r.jsonl",
        "--report",
        "r.jsonl",
        "--joblog",
        "j.log",
        "--output",
        "dir:not-a-dir/out",
        "jobs.txt",
    ]);
    second
        .assert_code(2)
        .assert_stderr_contains("cannot create output directory not-a-dir/out");
    assert_eq!(ran(&scratch), [0_u32; 0]);
    assert_eq!(
        scratch.read("r.jsonl"),
        report_before,
        "the report was emptied"
    );
    assert_eq!(
        scratch.read("j.log"),
        joblog_before,
        "the joblog was emptied"
    );
}

/// A group named only by jobs `--resume` skips is still one the job file names: the limits
/// file may set it without a warning, when the run starts and when the file changes during
/// the run (the second warned that no job names it).
#[test]
fn a_limits_file_may_name_a_group_only_skipped_jobs_name() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "skipme :: true\n\
         test -e fixed && printf 'skipme=2\\n' > limits.new && mv limits.new limits.txt \
         && sleep 0.9\n",
    );
    scratch.write("limits.txt", "skipme=1\n");
    scratch
        .run(&["run", "--report", "r1.jsonl", "jobs.txt"])
        .assert_code(1);
    scratch.write("fixed", "");
    let run = scratch.run(&[
        "run",
        "--resume",
        "r1.jsonl",
        "--limits-file",
        "limits.txt",
        "jobs.txt",
    ]);
    run.assert_code(0)
        .assert_stderr_contains("limits file limits.txt changed: skipme 1 -> 2");
    assert!(
        !run.stderr.contains("no job names group skipme"),
        "{}",
        run.stderr
    );
}

/// Found by a review: resuming into the report it resumes from (the README's pattern) dropped
/// the records of jobs whose lines were not in the job file that time (commented out for one
/// run): restored later, a job that had succeeded ran again, and a failure was forgotten by
/// `--resume-failed`. Their records are carried into the new report, from a job file read
/// whole and from a pipe.
#[test]
fn records_of_lines_left_out_for_a_run_are_kept() {
    for piped in [false, true] {
        let scratch = Scratch::new();
        let jobs = "echo 1 >> ran\necho 2 >> ran; false\necho 3 >> ran\n";
        scratch.write("jobs.txt", jobs);
        scratch
            .run(&["run", "--report", "r.jsonl", "jobs.txt"])
            .assert_code(1);
        forget_ran(&scratch);
        // Lines 1 and 2 left out for a run (the done one and the failure).
        scratch.write(
            "jobs.txt",
            "# echo 1 >> ran\n# echo 2 >> ran; false\necho 3 >> ran\n",
        );
        let resume = ["run", "--resume", "r.jsonl", "--report", "r.jsonl"];
        if piped {
            let script = format!(
                "cat jobs.txt | {} run --resume r.jsonl --report r.jsonl",
                env!("CARGO_BIN_EXE_taskherd")
            );
            let run = sh(&scratch, &script);
            assert_eq!(run.status.code(), Some(0), "{run:?}");
        } else {
            scratch
                .run(&[&resume[..], &["jobs.txt"]].concat())
                .assert_code(0);
        }
        assert_eq!(ran(&scratch), [0_u32; 0], "piped: {piped}");
        // Restored: the done job is still done, the failure still a failure.
        scratch.write("jobs.txt", jobs);
        scratch
            .run(&[&resume[..], &["jobs.txt"]].concat())
            .assert_code(1);
        assert_eq!(ran(&scratch), [2], "piped: {piped}");
        forget_ran(&scratch);
        scratch.write(
            "jobs.txt",
            "# echo 1 >> ran\n# echo 2 >> ran; false\necho 3 >> ran\n",
        );
        scratch
            .run(&[
                "run", "--resume", "r.jsonl", "--report", "r.jsonl", "jobs.txt",
            ])
            .assert_code(0);
        scratch.write("jobs.txt", jobs);
        scratch
            .run(&[
                "run",
                "--resume-failed",
                "r.jsonl",
                "--report",
                "r2.jsonl",
                "jobs.txt",
            ])
            .assert_code(1);
        assert_eq!(ran(&scratch), [2], "the failure was kept; piped: {piped}");
    }
}
