//! Output modes: prefixed, grouped, dir:PATH.

use crate::support::{Scratch, report};

/// Two jobs whose lines interleave in time.
const INTERLEAVED: &str = "echo a1; sleep 0.3; echo a2\nsleep 0.15; echo b1; sleep 0.3; echo b2\n";

#[test]
fn prefixed_lines_come_as_they_are_written() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", INTERLEAVED);
    let run = scratch.run(&["run", "-j", "2", "jobs.txt"]);
    run.assert_code(0);
    assert_eq!(run.stdout, "[1] a1\n[2] b1\n[1] a2\n[2] b2\n");
}

#[test]
fn prefixed_stderr_goes_to_stderr() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "echo out; echo err >&2; printf partial >&2\n");
    let run = scratch.run(&["run", "--no-summary", "jobs.txt"]);
    run.assert_code(0);
    assert_eq!(run.stdout, "[1] out\n");
    assert_eq!(run.stderr, "[1] err\n[1] partial\n");
}

#[test]
fn grouped_output_comes_in_one_piece_per_job() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", INTERLEAVED);
    let run = scratch.run(&["run", "-j", "2", "--output", "grouped", "jobs.txt"]);
    run.assert_code(0);
    assert_eq!(run.stdout, "a1\na2\nb1\nb2\n");
}

#[test]
fn dir_output_writes_one_file_per_job() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "# comment\necho out; echo err >&2\nprintf 'no newline'\n",
    );
    let run = scratch.run(&[
        "run",
        "--output",
        "dir:logs/run1",
        "--report",
        "r.jsonl",
        "jobs.txt",
    ]);
    run.assert_code(0);
    assert_eq!(run.stdout, "");
    assert_eq!(scratch.read("logs/run1/2.log"), "out\nerr\n");
    assert_eq!(scratch.read("logs/run1/3.log"), "no newline");
    let records = report(&scratch, "r.jsonl");
    assert_eq!(records[0]["output"], "logs/run1/2.log");
}

/// The report and the joblog may go into the output directory the run creates (they were
/// refused: their directory did not exist yet when the paths were checked), a dry run
/// included, which creates nothing.
#[test]
fn report_and_joblog_may_go_into_the_output_directory_the_run_creates() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "echo one\necho two\n");
    let args = [
        "run",
        "--output",
        "dir:./logs/new",
        "--report",
        "logs/new/r.jsonl",
        "--joblog",
        "logs/joblog.tsv",
        "jobs.txt",
    ];
    let mut dry = args.to_vec();
    dry.insert(1, "--dry-run");
    scratch.run(&dry).assert_code(0);
    assert!(!scratch.exists("logs"), "a dry run created the directory");
    scratch.run(&args).assert_code(0);
    assert_eq!(scratch.read("logs/new/2.log"), "two\n");
    let records = report(&scratch, "logs/new/r.jsonl");
    assert_eq!(records.len(), 2);
    assert_eq!(scratch.read("logs/joblog.tsv").lines().count(), 3);
}

/// A report or joblog named like a job's output file in the output directory would be
/// overwritten by that job's output: refused before anything runs.
#[test]
fn a_report_or_joblog_named_like_a_jobs_output_file_is_refused() {
    for (option, name) in [("--report", "1.log"), ("--joblog", "2.3.log")] {
        let scratch = Scratch::new();
        scratch.write("jobs.txt", "touch ran\n");
        let path = format!("logs/{name}");
        scratch
            .run(&["run", "--output", "dir:logs", option, &path, "jobs.txt"])
            .assert_code(2)
            .assert_stderr_contains("job output files");
        assert!(!scratch.exists("ran"), "{option}");
    }
}

#[test]
fn dir_output_that_cannot_be_created_is_a_usage_error() {
    let scratch = Scratch::new();
    scratch.write("blocker", "a file where a directory should be");
    scratch.write("jobs.txt", "touch ran\n");
    scratch
        .run(&["run", "--output", "dir:blocker/logs", "jobs.txt"])
        .assert_code(2)
        .assert_stderr_contains("cannot create output directory blocker/logs");
    assert!(!scratch.exists("ran"));
}

#[test]
fn summary_can_be_turned_off() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "true\n");
    let run = scratch.run(&["run", "--no-summary", "jobs.txt"]);
    run.assert_code(0);
    assert_eq!(run.stderr, "");
}

#[test]
fn forced_progress_without_a_terminal_prints_status_lines() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "db :: sleep 2.4\ndb :: true\n");
    let run = scratch.run(&[
        "run",
        "--progress",
        "-l",
        "db=1",
        "--no-summary",
        "jobs.txt",
    ]);
    run.assert_code(0)
        .assert_stderr_contains("] 0/2 done, 1 running, 1 waiting | db 1/1 +1");
    assert!(run.stderr.starts_with("taskherd: ["), "{}", run.stderr);
}

/// Issue 11, item 7: every other job done at once, one running on. The status line names it
/// and does not promise a tiny ETA; no line passes 100 columns, long group names are cut.
#[test]
fn status_lines_name_the_job_holding_the_run_up() {
    let scratch = Scratch::new();
    let long = "a-group-name-much-longer-than-a-status-line-has-room-for-at-all";
    let mut jobs = format!("{long} :: sleep 4.8\n");
    for _ in 0..100 {
        jobs.push_str(&format!("{long}-too :: true\n"));
    }
    scratch.write("jobs.txt", &jobs);
    let run = scratch.run(&["run", "--progress", "--no-summary", "jobs.txt"]);
    run.assert_code(0)
        .assert_stderr_contains("] 100/101 done, 1 running, 0 waiting | ")
        .assert_stderr_contains(" | longest: line 1 (")
        .assert_stderr_contains(" | ETA ?\n");
    for line in run.stderr.lines() {
        assert!(line.chars().count() <= 100, "{line:?}");
    }
}

#[test]
fn no_progress_without_a_terminal_by_default() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "sleep 2.2\n");
    let run = scratch.run(&["run", "--no-summary", "jobs.txt"]);
    run.assert_code(0);
    assert_eq!(run.stderr, "");
}

/// `--report -` writes the report to standard output, and keeps the jobs' output apart, on
/// standard error (issue 11, item 6); no file named `-` is made.
#[test]
fn report_to_standard_output_keeps_job_output_apart() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "echo hello\ng :: echo two; exit 3\n");
    let run = scratch.run(&["run", "--report", "-", "--no-summary", "jobs.txt"]);
    run.assert_code(1)
        .assert_stderr_contains("[1] hello\n")
        .assert_stderr_contains("[2] two\n");
    let records: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    let mut lines: Vec<(u64, &str)> = records
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, [(1, "succeeded"), (2, "failed")]);
    assert!(!scratch.exists("-"), "no file named '-'");
    scratch
        .run(&["run", "--dry-run", "--report", "-", "jobs.txt"])
        .assert_code(0);
}

/// `grouped` mode: a job's output larger than what is kept in memory (spilled to a temporary
/// file) still comes out in one piece, not mixed with another job's, and output without a
/// final newline gets one, so the next job's output starts on its own line (issue 11, item 3).
#[test]
fn grouped_output_comes_whole_with_a_final_newline_however_large() {
    let scratch = Scratch::new();
    // 3 MB of 'a' with no newline, written slowly enough that the other job ends meanwhile.
    scratch.write(
        "jobs.txt",
        "head -c 1500000 /dev/zero | tr '\\0' a; sleep 0.3; head -c 1500000 /dev/zero | tr '\\0' a\n\
         printf 'short\\n'; printf 'no newline'\n",
    );
    let run = scratch.run(&["run", "--output", "grouped", "--no-summary", "jobs.txt"]);
    run.assert_code(0);
    let big = "a".repeat(3_000_000);
    let outputs: Vec<&str> = run.stdout.split_inclusive('\n').collect();
    assert_eq!(
        outputs,
        ["short\n", "no newline\n", &format!("{big}\n")[..]],
        "{} bytes on standard output",
        run.stdout.len()
    );
    // Nothing is left in the temporary directory.
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".spool"))
        .count();
    assert_eq!(leftovers, 0);
}

/// A line of exactly 64 KiB is not over 64 KiB: it comes as one prefixed line, and a blank
/// line after it stays one blank line. (Its newline, one byte past the longest piece, was
/// taken for a blank line of its own.)
#[test]
fn a_line_of_exactly_64_kib_comes_whole() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "head -c 65536 /dev/zero | tr '\\000' x; echo; echo; echo y\n",
    );
    let run = scratch.run(&["run", "--no-summary", "jobs.txt"]);
    run.assert_code(0);
    let lengths: Vec<usize> = run.stdout.lines().map(str::len).collect();
    assert_eq!(lengths, ["[1] ".len() + 65536, "[1] ".len(), "[1] y".len()]);
}
