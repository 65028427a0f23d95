//! `--retries`, `--retry-delay` and a line's `retries=`: failed and timed-out jobs run again,
//! each attempt is in the report, and a job waiting to retry holds none of its groups.

use std::time::Duration;

use crate::support::{Scratch, finish_within, report, send_signal, wait_for_files};

/// A command that fails until it has run `n` times (counting in file `name`).
fn succeeds_on_attempt(name: &str, n: u32) -> String {
    format!("c=$(cat {name} 2>/dev/null || echo 0); c=$((c+1)); echo $c > {name}; [ $c -ge {n} ]")
}

fn attempt_statuses(record: &serde_json::Value) -> Vec<String> {
    record["attempts"]
        .as_array()
        .expect("attempts is an array")
        .iter()
        .map(|a| a["status"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_failing_job_runs_again_until_it_succeeds() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        &format!("{}\n", succeeds_on_attempt("count", 3)),
    );
    let run = scratch.run(&[
        "run",
        "--retries",
        "2",
        "--retry-delay",
        "10ms",
        "--report",
        "r.jsonl",
        "jobs.txt",
    ]);
    run.assert_code(0)
        .assert_stderr_contains("taskherd: line 1 failed with exit status 1; retry 1 of 2 in 0.01s")
        .assert_stderr_contains("taskherd: line 1 failed with exit status 1; retry 2 of 2 in 0.02s")
        .assert_stderr_contains("1 job in ")
        .assert_stderr_contains(": 1 succeeded\n");
    let records = report(&scratch, "r.jsonl");
    assert_eq!(records.len(), 1, "one record per job, not per attempt");
    assert_eq!(records[0]["status"], "succeeded");
    assert_eq!(
        attempt_statuses(&records[0]),
        ["failed", "failed", "succeeded"]
    );
    let attempts = records[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["exit_code"], 1);
    assert_eq!(
        attempts[2]["start"], records[0]["start"],
        "the last attempt's fields come first"
    );
    assert!(attempts[0]["end"].as_str() <= attempts[1]["start"].as_str());
}

#[test]
fn retries_run_out() {
    let scratch = Scratch::new();
    // Line 2 says retries=0 for itself; line 3 is never retried, as it succeeds.
    scratch.write(
        "jobs.txt",
        "echo x >> runs1; false\nretries=0 :: echo x >> runs2; false\ntrue\n",
    );
    let run = scratch.run(&[
        "run",
        "--retries",
        "1",
        "--retry-delay",
        "1ms",
        "--report",
        "r.jsonl",
        "jobs.txt",
    ]);
    run.assert_code(1)
        .assert_stderr_contains(": 1 succeeded, 2 failed\n");
    assert_eq!(scratch.read("runs1"), "x\nx\n");
    assert_eq!(scratch.read("runs2"), "x\n");
    let mut records = report(&scratch, "r.jsonl");
    records.sort_by_key(|r| r["line"].as_u64());
    assert_eq!(attempt_statuses(&records[0]), ["failed", "failed"]);
    assert_eq!(attempt_statuses(&records[1]), ["failed"]);
    assert_eq!(attempt_statuses(&records[2]), ["succeeded"]);
}

#[test]
fn timed_out_jobs_are_retried_and_output_files_are_per_attempt() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "timeout=1s retries=1 :: echo attempt; sleep 30\n",
    );
    let run = scratch.run(&[
        "run",
        "--retry-delay",
        "1ms",
        "--output",
        "dir:logs",
        "--report",
        "r.jsonl",
        "jobs.txt",
    ]);
    run.assert_code(1)
        .assert_stderr_contains(": 0 succeeded, 1 timed out\n");
    let records = report(&scratch, "r.jsonl");
    assert_eq!(attempt_statuses(&records[0]), ["timed_out", "timed_out"]);
    let outputs: Vec<&str> = records[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["output"].as_str().unwrap())
        .collect();
    assert_eq!(outputs, ["logs/1.log", "logs/1.2.log"]);
    assert_eq!(scratch.read("logs/1.log"), "attempt\n");
    assert_eq!(scratch.read("logs/1.2.log"), "attempt\n");
}

#[test]
fn a_job_waiting_to_retry_holds_none_of_its_groups() {
    let scratch = Scratch::new();
    // db=1: line 2 can only run while line 1 holds nothing, and it is queued behind line 1's
    // first attempt. It must run during line 1's backoff, before line 1's second attempt.
    scratch.write(
        "jobs.txt",
        &format!(
            "db :: {}\n\
             db :: touch ran2\n",
            succeeds_on_attempt("count", 2)
        ),
    );
    let run = scratch.run(&[
        "run",
        "-l",
        "db=1",
        "--retries",
        "1",
        "--retry-delay",
        "500ms",
        "--report",
        "r.jsonl",
        "jobs.txt",
    ]);
    run.assert_code(0);
    let mut records = report(&scratch, "r.jsonl");
    records.sort_by_key(|r| r["line"].as_u64());
    let second_attempt = &records[0]["attempts"][1];
    let line2 = &records[1];
    assert!(
        line2["end"].as_str().unwrap() <= second_attempt["start"].as_str().unwrap(),
        "line 2 ran after line 1's retry: {records:?}"
    );
}

#[test]
fn ctrl_c_ends_the_wait_for_a_retry() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "touch failed; false\n");
    // An hour's delay: only the interruption can end this run.
    let child = scratch
        .command(&[
            "run",
            "--retries",
            "3",
            "--retry-delay",
            "1h",
            "--report",
            "r.jsonl",
            "jobs.txt",
        ])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["failed"]);
    wait_for_stderr_pause();
    send_signal(child.id(), "INT");
    let run = finish_within(child, Duration::from_secs(60));
    run.assert_code(1)
        .assert_stderr_contains(": 0 succeeded, 1 failed (interrupted)\n");
    let records = report(&scratch, "r.jsonl");
    assert_eq!(attempt_statuses(&records[0]), ["failed"]);
}

/// Gives taskherd a moment to move from the failed attempt to its wait; the test is correct
/// either way (a Ctrl-C before the wait stops the retry too).
fn wait_for_stderr_pause() {
    std::thread::sleep(Duration::from_millis(100));
}
