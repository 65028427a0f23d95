//! Ctrl-C: once stops starting jobs, twice terminates the running ones; the report accounts
//! for every job either way.

use std::process::Child;

use crate::support::{
    Finished, Scratch, finish_within, make_fifo, report, send_signal, started_until_held_back,
    statuses, wait_for_files,
};

fn finish(child: Child) -> Finished {
    Finished::from(child.wait_with_output().expect("cannot wait for taskherd"))
}

#[test]
fn first_ctrl_c_waits_for_running_jobs_and_starts_no_more() {
    let scratch = Scratch::new();
    // Jobs 1 and 2 run until the test creates `go`, so they are still running when the
    // Ctrl-C arrives however slow the machine.
    scratch.write(
        "jobs.txt",
        "a :: touch started1; while [ ! -e go ]; do sleep 0.01; done; touch done1\n\
         b :: touch started2; while [ ! -e go ]; do sleep 0.01; done; touch done2\n\
         c :: touch ran3\n\
         touch ran4\n",
    );
    let child = scratch
        .command(&["run", "-j", "2", "--report", "r.jsonl", "jobs.txt"])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["started1", "started2"]);
    send_signal(child.id(), "INT");
    // Jobs 3 and 4 are given up (their records written) as the Ctrl-C is handled.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(scratch.path("r.jsonl"))
        .map_or(0, |r| r.matches("not_started").count())
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "jobs 3 and 4 were not given up"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    scratch.write("go", "");
    let run = finish(child);
    run.assert_code(1).assert_stderr_contains(
        "taskherd: interrupted: starting no more jobs, waiting for 2 running jobs to finish \
         (Ctrl-C again to terminate them)",
    );
    run.assert_stderr_contains(": 2 succeeded, 2 not started (interrupted)\n");
    assert!(scratch.exists("done1") && scratch.exists("done2"));
    assert!(!scratch.exists("ran3") && !scratch.exists("ran4"));
    let records = report(&scratch, "r.jsonl");
    assert_eq!(
        statuses(&records),
        [
            (1, "succeeded".into()),
            (2, "succeeded".into()),
            (3, "not_started".into()),
            (4, "not_started".into())
        ]
    );
    assert_eq!(records[2]["reason"], "interrupted");
}

#[test]
fn second_ctrl_c_terminates_process_groups_then_kills() {
    let scratch = Scratch::new();
    // Job 2 ignores SIGTERM (and so does its sleep): it needs the SIGKILL after the grace
    // period. Each sleep is a child of the job's shell, reached through the process group.
    let marker = unique_duration(31);
    scratch.write(
        "jobs.txt",
        &format!(
            "a :: touch s1; sleep {marker}; touch never1\n\
             b :: trap '' TERM; touch s2; sleep {marker}; touch never2\n\
             c :: touch ran3\n"
        ),
    );
    let child = scratch
        .command(&[
            "run",
            "-j",
            "2",
            "--kill-grace",
            "0.3",
            "--report",
            "r.jsonl",
            "jobs.txt",
        ])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["s1", "s2"]);
    let pid = child.id();
    send_signal(pid, "INT");
    std::thread::sleep(std::time::Duration::from_millis(100));
    send_signal(pid, "INT");
    let run = finish(child);
    run.assert_code(1)
        .assert_stderr_contains("terminating 2 running jobs (SIGTERM; SIGKILL after 0.30s")
        .assert_stderr_contains("1 job still running after the grace period: SIGKILL")
        .assert_stderr_contains(": 0 succeeded, 2 killed, 1 not started (interrupted)\n");
    let records = report(&scratch, "r.jsonl");
    assert_eq!(
        statuses(&records),
        [
            (1, "killed".into()),
            (2, "killed".into()),
            (3, "not_started".into())
        ]
    );
    assert_eq!(records[0]["signal_name"], "SIGTERM");
    assert_eq!(records[1]["signal_name"], "SIGKILL");
    for record in &records {
        assert_eq!(record["reason"], "interrupted");
    }
    assert!(!scratch.exists("never1") && !scratch.exists("never2") && !scratch.exists("ran3"));
    assert_no_process_with(&marker);
}

#[test]
fn sigterm_terminates_the_jobs_at_once() {
    let scratch = Scratch::new();
    let marker = unique_duration(32);
    scratch.write(
        "jobs.txt",
        &format!("touch s1; sleep {marker}\ntouch ran2\n"),
    );
    let child = scratch
        .command(&["run", "-j", "1", "--report", "r.jsonl", "jobs.txt"])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["s1"]);
    send_signal(child.id(), "TERM");
    finish(child)
        .assert_code(1)
        .assert_stderr_contains("terminating 1 running job (SIGTERM");
    let records = report(&scratch, "r.jsonl");
    assert_eq!(
        statuses(&records),
        [(1, "killed".into()), (2, "not_started".into())]
    );
    assert_no_process_with(&marker);
}

/// A sleep duration of about `secs` seconds that no other test process uses, to find the
/// sleeps a test started with `pgrep`.
fn unique_duration(secs: u32) -> String {
    format!("{secs}.{}", std::process::id())
}

/// Checks that no process runs `sleep MARKER` any more.
#[track_caller]
fn assert_no_process_with(marker: &str) {
    let output = std::process::Command::new("pgrep")
        .args(["-f", &format!("sleep {marker}")])
        .output()
        .expect("cannot run pgrep");
    assert!(
        output.stdout.is_empty(),
        "processes left running: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Ctrl-C, Ctrl-C and SIGTERM still end the jobs, and taskherd, while nobody reads taskherd's
/// standard output (its output queue is full): signals never wait for the output.
#[test]
fn terminating_works_when_stdout_is_stalled() {
    let scratch = Scratch::new();
    let marker = unique_duration(33);
    scratch.write(
        "jobs.txt",
        &format!(
            "touch s1; yes | head -c 20000000\n\
             touch s2; sleep {marker}; touch slept\n"
        ),
    );
    let (reader, writer) = std::io::pipe().unwrap(); // never read
    let mut child = scratch
        .command(&["run", "--no-progress", "--kill-grace", "500ms", "jobs.txt"])
        .stdout(writer)
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["s1", "s2"]);
    // Job 1 fills the pipe and taskherd's output queue in far less than this.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let pid = child.id();
    for signal in ["INT", "INT", "TERM"] {
        send_signal(pid, signal);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Generous: only a hang fails this.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let exited = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    if !exited {
        // Its helper then ends the jobs.
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(reader);
    assert!(
        exited,
        "taskherd still running 30 s after Ctrl-C, Ctrl-C, SIGTERM"
    );
    assert!(!scratch.exists("slept"));
    assert_no_process_with(&marker);
}

/// Runs `taskherd run ARGS jobs.txt` (`jobs`) with its standard output a pipe nobody reads,
/// sends SIGTERM once `wait` has passed and the files `started` exist, and asserts that
/// taskherd ends by itself (a generous bound: only a hang fails), with a record for every job.
fn sigterm_ends_a_run_whose_output_is_stalled(
    args: &[&str],
    jobs: &str,
    started: &[&str],
    wait: std::time::Duration,
) {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", jobs);
    let mut all = vec!["run", "--no-progress", "--kill-grace", "500ms"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--report", "r.jsonl", "jobs.txt"]);
    let (reader, writer) = std::io::pipe().unwrap(); // never read
    let child = scratch.command(&all).stdout(writer).spawn().unwrap();
    wait_for_files(&scratch, started);
    std::thread::sleep(wait);
    send_signal(child.id(), "TERM");
    let finished = finish_within(child, std::time::Duration::from_secs(30));
    drop(reader);
    // Whatever the jobs made of it: 0 if every job succeeded, else 1.
    assert!(matches!(finished.code, Some(0 | 1)), "{finished:?}");
    let records = report(&scratch, "r.jsonl");
    assert_eq!(records.len(), jobs.lines().count(), "{records:?}");
}

/// With standard error the same unread pipe as standard output (`2>&1 | a-stalled-reader`),
/// taskherd's last messages (that the output is given up, the summary) cannot be written
/// either once the pipe is full: it exits all the same, `--kill-grace` after giving the
/// output up. It waited in that write for as long as the reader lived. Found by a review.
#[test]
fn sigterm_ends_a_run_whose_output_and_messages_share_a_stalled_pipe() {
    sigterm_ends_a_run_sharing_a_stalled_pipe(
        "touch s1; yes line | head -c 20000000\nsleep 60\n",
        Some(1),
    );
}

/// The same when every job has ended by itself, its output still queued for the pipe: the
/// signal gives the output up, and the last messages are waited for only as long as after a
/// termination. It waited for them until a second signal. Found by a review.
#[test]
fn sigterm_ends_a_run_whose_jobs_ended_and_whose_output_is_stalled() {
    sigterm_ends_a_run_sharing_a_stalled_pipe(
        "head -c 300000 /dev/zero | tr '\\0' x; echo; touch s1\n",
        // Every job succeeded; what was dropped is output nobody read.
        Some(0),
    );
}

/// The same when the job output fits in the pipe (so it is not given up) and the summary
/// that follows does not: it was written directly, and waited for as long as the reader
/// lived, whatever signal came. Found by a review.
#[test]
fn sigterm_ends_a_run_whose_summary_meets_a_stalled_pipe() {
    sigterm_ends_a_run_sharing_a_stalled_pipe(
        "touch s1; head -c 65378 /dev/zero | tr '\\0' x; echo\nsleep 60\n",
        Some(1),
    );
}

/// Runs `jobs` (one of which touches `s1`) with standard output and standard error one pipe
/// nobody reads, sends SIGTERM a second after `s1` appears, and asserts that taskherd ends by
/// itself (a generous bound: only a hang fails) with exit status `code`, with a record for
/// every job.
fn sigterm_ends_a_run_sharing_a_stalled_pipe(jobs: &str, code: Option<i32>) {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", jobs);
    let (reader, writer) = std::io::pipe().unwrap(); // never read
    let child = scratch
        .command(&[
            "run",
            "-j",
            "2",
            "--no-progress",
            "--kill-grace",
            "500ms",
            "--report",
            "r.jsonl",
            "jobs.txt",
        ])
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["s1"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    send_signal(child.id(), "TERM");
    let finished = finish_within(child, std::time::Duration::from_secs(20));
    drop(reader);
    assert_eq!(finished.code, code, "{finished:?}");
    assert_eq!(report(&scratch, "r.jsonl").len(), jobs.lines().count());
}

/// A job's `grouped` output waiting for room in the output queue when SIGTERM comes is dropped
/// once the jobs are killed (`--kill-grace` later): it used to hold the job's end, and
/// taskherd, for as long as nobody read its output.
#[test]
fn sigterm_ends_a_grouped_run_whose_output_is_stalled() {
    sigterm_ends_a_run_whose_output_is_stalled(
        &["--output", "grouped"],
        // More than the output queue holds (1,024 pieces of 64 KiB).
        "touch s1; head -c 100000000 /dev/zero\n",
        &["s1"],
        std::time::Duration::from_secs(2),
    );
}

/// The same for a notice that waits for room (here: a retry's), which held the job's end.
#[test]
fn sigterm_ends_a_run_whose_retry_notice_waits_for_the_output() {
    sigterm_ends_a_run_whose_output_is_stalled(
        &["--retries", "1", "--retry-delay", "0"],
        "touch s1; yes | head -c 20000000\n\
         touch s2; sleep 0.5; false\n",
        &["s1", "s2"],
        std::time::Duration::from_millis(1500),
    );
}

/// Starts a run of `jobs.txt` with `args` and `--report -`, its standard output a pipe that
/// nothing reads until the test reads the returned end.
fn reporting_to_an_unread_pipe(scratch: &Scratch, args: &[&str]) -> (Child, std::io::PipeReader) {
    let (unread, stdout) = std::io::pipe().unwrap();
    let child = scratch
        .command(&[&["run"], args, &["--report", "-", "jobs.txt"]].concat())
        .stdout(stdout)
        .spawn()
        .unwrap();
    (child, unread)
}

/// Signals are acted on while nobody reads the report on standard output (`--report -`): the
/// records that do not fit in the pipe wait, the run does not. (The report was written by the
/// loop that also acts on signals, which then waited for the reader: SIGTERM reached the jobs
/// only once someone read the report.)
#[test]
fn sigterm_is_acted_on_while_the_report_on_standard_output_is_not_read() {
    let scratch = Scratch::new();
    // 400 records fill the pipe (about 200 KiB).
    scratch.write("jobs.txt", &fill_then_trap("true\n"));
    let (child, unread) = reporting_to_an_unread_pipe(&scratch, &["-j", "4", "--kill-grace", "1s"]);
    let report = terminate_while_unread(&scratch, child, unread, "report");
    assert_eq!(report.lines().count(), 401, "one record per job");
}

/// 400 jobs `line`, then one that touches `started`, and `terminated` when it is.
fn fill_then_trap(line: &str) -> String {
    let mut jobs = line.repeat(400);
    jobs.push_str("trap 'touch terminated; exit 1' TERM; touch started; sleep 60 & wait\n");
    jobs
}

/// Sends SIGTERM to the run `child` of [`fill_then_trap`]'s jobs once its last job started,
/// and asserts that the job is terminated before anything reads `unread` (the run's `what`),
/// then that the run fails (exit status 1); returns what was read from `unread`.
#[track_caller]
fn terminate_while_unread(
    scratch: &Scratch,
    child: Child,
    unread: impl std::io::Read + Send + 'static,
    what: &str,
) -> String {
    wait_for_files(scratch, &["started"]);
    send_signal(child.id(), "TERM");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !scratch.exists("terminated") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let terminated = scratch.exists("terminated");
    // Read now: the run ends either way.
    let reader = std::thread::spawn(move || std::io::read_to_string(unread).unwrap());
    let finished = finish_within(child, std::time::Duration::from_secs(30));
    let read = reader.join().unwrap();
    assert!(
        terminated,
        "the job was not terminated while the {what} was not read"
    );
    finished.assert_code(1);
    read
}

/// A run whose report nobody reads waits at its end for the records still queued; a signal
/// then gives them up, and the run fails (exit status 1), though every job succeeded: the
/// report misses records, which `--resume` would miss too.
#[test]
fn a_report_given_up_at_the_end_fails_the_run() {
    let scratch = Scratch::new();
    let mut jobs = "true\n".repeat(400);
    jobs.push_str("touch done\n");
    scratch.write("jobs.txt", &jobs);
    let (child, unread) = reporting_to_an_unread_pipe(&scratch, &["-j", "1"]);
    wait_for_files(&scratch, &["done"]);
    send_signal(child.id(), "TERM");
    let finished = finish_within(child, std::time::Duration::from_secs(30));
    drop(unread);
    finished.assert_code(1).assert_stderr_contains(
        "the report is not being read: its records still queued are dropped",
    );
}

/// Makes the FIFO `name` and opens its reading end once taskherd opens the other (in a thread:
/// opening blocks until both ends are open); the test then reads nothing from it.
fn unread_fifo(scratch: &Scratch, name: &str) -> std::thread::JoinHandle<std::fs::File> {
    let path = make_fifo(scratch, name);
    std::thread::spawn(move || std::fs::File::open(path).unwrap())
}

/// Signals are acted on while nobody reads the joblog (a FIFO, or `>(...)`, whose reader
/// stalled), as while nobody reads the report: the joblog was written by the loop that also
/// acts on signals, which then waited for the reader.
#[test]
fn sigterm_is_acted_on_while_the_joblog_is_not_read() {
    let scratch = Scratch::new();
    // 400 lines of about 270 bytes fill the pipe.
    scratch.write(
        "jobs.txt",
        &fill_then_trap(&format!("true {}\n", "x".repeat(200))),
    );
    let opened = unread_fifo(&scratch, "log.fifo");
    let child = scratch
        .command(&[
            "run",
            "-j",
            "4",
            "--kill-grace",
            "1s",
            "--joblog",
            "log.fifo",
            "jobs.txt",
        ])
        .spawn()
        .unwrap();
    let log = terminate_while_unread(&scratch, child, opened.join().unwrap(), "joblog");
    assert_eq!(log.lines().count(), 402, "the header, and a line per job");
}

/// While nobody reads the report, records wait in memory only up to a bound: then no new job
/// starts until the reader reads (as a job's output waits for standard output). Every job
/// runs and has its record once it does.
#[test]
fn no_job_starts_while_the_report_waits_for_its_reader() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", &padded_jobs());
    let (child, unread) = reporting_to_an_unread_pipe(&scratch, &["-j", "8"]);
    let report = held_back_until_read(&scratch, child, unread, "report");
    assert_eq!(report.lines().count(), PADDED_JOBS, "one record per job");
}

/// The same for the joblog.
#[test]
fn no_job_starts_while_the_joblog_waits_for_its_reader() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", &padded_jobs());
    let opened = unread_fifo(&scratch, "log.fifo");
    let child = scratch
        .command(&["run", "-j", "8", "--joblog", "log.fifo", "jobs.txt"])
        .spawn()
        .unwrap();
    let log = held_back_until_read(&scratch, child, opened.join().unwrap(), "joblog");
    assert_eq!(
        log.lines().count(),
        PADDED_JOBS + 1,
        "the header, and a line per job"
    );
}

const PADDED_JOBS: usize = 3_000;

/// [`PADDED_JOBS`] jobs that each append a byte to `ran`, with commands of about 1,000
/// bytes: records and joblog lines of every job come to 3 to 4 MB, far more than the bound.
fn padded_jobs() -> String {
    format!("printf x >> ran # {}\n", "x".repeat(1_000)).repeat(PADDED_JOBS)
}

/// Waits until the run `child` of [`padded_jobs`] starts no job for a second, asserts that
/// fewer than half of them started, then reads `unread` (the run's `what`): every job runs
/// and the run succeeds, having said that it held jobs back. Returns what was read.
#[track_caller]
fn held_back_until_read(
    scratch: &Scratch,
    child: Child,
    unread: impl std::io::Read + Send + 'static,
    what: &str,
) -> String {
    // Every job ran: the bug.
    let held_back = started_until_held_back(scratch, PADDED_JOBS);
    let reader = std::thread::spawn(move || std::io::read_to_string(unread).unwrap());
    let finished = finish_within(child, std::time::Duration::from_secs(120));
    let read = reader.join().unwrap();
    assert!(
        held_back < PADDED_JOBS / 2,
        "{held_back} of {PADDED_JOBS} jobs started while nobody read the {what}"
    );
    finished
        .assert_code(0)
        .assert_stderr_contains(&format!("no job starts until the {what} is read"));
    assert_eq!(started_until_held_back(scratch, PADDED_JOBS), PADDED_JOBS);
    read
}

/// A second Ctrl-C while a job that has ended still has its output passed on (a daemon it
/// left holds its pipe): no job is running to terminate, and the notice says why the first
/// one counted it (found by a review: "waiting for 1 running job", then "terminating 0
/// running jobs", and nothing more).
#[test]
fn a_second_ctrl_c_says_which_jobs_only_have_output_left() {
    let scratch = Scratch::new();
    scratch.write(
        "jobs.txt",
        "setsid sh -c 'echo $$ > daemon.pid; exec sleep 600' & touch started\n",
    );
    let child = scratch
        .command(&["run", "--kill-grace", "0.5", "jobs.txt"])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["started", "daemon.pid"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id();
    send_signal(pid, "INT");
    std::thread::sleep(std::time::Duration::from_millis(200));
    send_signal(pid, "INT");
    let run = finish_within(child, std::time::Duration::from_secs(30));
    let daemon = scratch.read("daemon.pid");
    send_signal(daemon.trim().parse().unwrap(), "KILL");
    run.assert_stderr_contains("waiting for 1 running job")
        .assert_stderr_contains(
            "terminating 0 running jobs (SIGTERM; SIGKILL after 0.50s; Ctrl-C again to kill \
             now); 1 job has ended, its output still being passed on",
        );
}
