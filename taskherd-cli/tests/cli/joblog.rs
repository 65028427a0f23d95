//! `--joblog FILE`: GNU parallel's joblog, read back field by field.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::{Scratch, assert_said_once_and_every_job_ran, make_fifo};

const HEADER: &str = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand";

/// One joblog line, split into its nine fields (the command may hold tabs: it is the rest).
struct Entry {
    seq: u64,
    host: String,
    start: f64,
    runtime: f64,
    send: String,
    receive: String,
    exitval: i32,
    signal: i32,
    command: Vec<u8>,
}

/// Reads the joblog: checks the header and the form of each field, returns the entries by Seq.
fn read_joblog(scratch: &Scratch, name: &str) -> Vec<Entry> {
    let bytes = std::fs::read(scratch.path(name)).expect("the joblog exists");
    assert!(bytes.ends_with(b"\n"), "the joblog ends with a newline");
    let mut lines = bytes[..bytes.len() - 1].split(|&b| b == b'\n');
    assert_eq!(lines.next().unwrap(), HEADER.as_bytes());
    let mut entries: Vec<Entry> = lines
        .map(|line| {
            let fields: Vec<&[u8]> = line.splitn(9, |&b| b == b'\t').collect();
            assert_eq!(fields.len(), 9, "{:?}", String::from_utf8_lossy(line));
            let text = |i: usize| std::str::from_utf8(fields[i]).unwrap().to_owned();
            let decimals = |s: &str| s.split_once('.').map(|(_, d)| d.len());
            let start = text(2);
            assert_eq!(decimals(&start), Some(3), "Starttime {start:?}");
            // GNU parallel writes the run time with printf's %10.3f.
            let runtime = text(3);
            assert_eq!(runtime.len(), 10, "JobRuntime {runtime:?} is 10 wide");
            assert_eq!(decimals(runtime.trim_start()), Some(3));
            Entry {
                seq: text(0).parse().unwrap(),
                host: text(1),
                start: start.parse().unwrap(),
                runtime: runtime.trim_start().parse().unwrap(),
                send: text(4),
                receive: text(5),
                exitval: text(6).parse().unwrap(),
                signal: text(7).parse().unwrap(),
                command: fields[8].to_vec(),
            }
        })
        .collect();
    entries.sort_by_key(|entry| entry.seq);
    entries
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn one_line_per_job_that_ran_with_exit_values_and_signals() {
    let scratch = Scratch::new();
    // Line 6's command is not UTF-8 and holds a tab: the joblog keeps its bytes.
    std::fs::write(
        scratch.path("jobs.txt"),
        b"# jobs\na b :: sleep 0.3\nexit 3\nkill -TERM $$\n\ng :: printf '\xff\t'\n".as_slice(),
    )
    .unwrap();
    let before = now();
    scratch
        .run(&["run", "--joblog", "jobs.log", "jobs.txt"])
        .assert_code(1);
    let after = now();
    let entries = read_joblog(&scratch, "jobs.log");
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [2, 3, 4, 6], "Seq is the line number");
    for entry in &entries {
        assert_eq!(entry.host, ":");
        assert_eq!((entry.send.as_str(), entry.receive.as_str()), ("0", "0"));
        assert!(
            before - 0.001 <= entry.start && entry.start + entry.runtime <= after + 0.001,
            "start {} runtime {} outside [{before}, {after}]",
            entry.start,
            entry.runtime
        );
    }
    let sleep = &entries[0];
    assert!(
        sleep.runtime >= 0.3 && sleep.runtime < 5.0,
        "{}",
        sleep.runtime
    );
    assert_eq!(sleep.command, b"sleep 0.3");
    let fields = |e: &Entry| (e.exitval, e.signal);
    assert_eq!(fields(&entries[0]), (0, 0));
    assert_eq!(fields(&entries[1]), (3, 0));
    // Killed by SIGTERM: Exitval 128 + 15, as the shell's $? and GNU parallel have it.
    assert_eq!(fields(&entries[2]), (143, 15));
    assert_eq!(entries[2].command, b"kill -TERM $$");
    assert_eq!(fields(&entries[3]), (0, 0));
    assert_eq!(entries[3].command, b"printf '\xff\t'");
}

#[test]
fn jobs_that_never_started_are_not_logged() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "exit 4\ntouch ran2\ntouch ran3\n");
    scratch
        .run(&[
            "run",
            "-j",
            "1",
            "--halt-on-error",
            "--joblog",
            "jobs.log",
            "jobs.txt",
        ])
        .assert_code(1);
    assert!(!scratch.exists("ran2"));
    let entries = read_joblog(&scratch, "jobs.log");
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].seq, entries[0].exitval), (1, 4));
}

#[test]
fn an_empty_run_writes_the_header_alone() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "# nothing\n");
    scratch
        .run(&["run", "--joblog", "jobs.log", "jobs.txt"])
        .assert_code(0);
    assert_eq!(scratch.read("jobs.log"), format!("{HEADER}\n"));
}

#[test]
fn a_bad_joblog_path_runs_nothing_and_dry_run_checks_it() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "touch ran\n");
    for dry_run in [true, false] {
        let mut args = vec!["run", "--joblog", "missing/jobs.log", "jobs.txt"];
        if dry_run {
            args.insert(1, "--dry-run");
        }
        scratch
            .run(&args)
            .assert_code(2)
            .assert_stderr_contains("cannot create joblog missing/jobs.log");
    }
    scratch
        .run(&["run", "--joblog", "-", "jobs.txt"])
        .assert_code(2)
        .assert_stderr_contains("--joblog -: the joblog cannot go to standard output");
    assert!(!scratch.exists("ran") && !scratch.exists("missing") && !scratch.exists("-"));
    // A dry run with a good path creates nothing either.
    scratch
        .run(&["run", "--dry-run", "--joblog", "jobs.log", "jobs.txt"])
        .assert_code(0);
    assert!(!scratch.exists("jobs.log"));
}

#[test]
fn a_timed_out_job_is_logged_as_gnu_parallel_logs_one() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "sleep 30\n");
    scratch
        .run(&[
            "run",
            "--timeout",
            "100ms",
            "--joblog",
            "log.tsv",
            "jobs.txt",
        ])
        .assert_code(1);
    let log = scratch.read("log.tsv");
    let fields: Vec<&str> = log
        .lines()
        .nth(1)
        .expect("a line for the job")
        .split('\t')
        .collect();
    assert_eq!((fields[6], fields[7]), ("-1", "15"), "{log}");
}

#[test]
fn the_joblog_may_not_be_the_report_or_the_report_resumed_from() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "touch ran\n");
    scratch
        .run(&["run", "--report", "x", "--joblog", "./x", "jobs.txt"])
        .assert_code(2)
        .assert_stderr_contains("taskherd: --report x and --joblog ./x are the same file");
    scratch
        .run(&["run", "--report", "r.jsonl", "jobs.txt"])
        .assert_code(0);
    let before = scratch.read("r.jsonl");
    std::fs::remove_file(scratch.path("ran")).unwrap();
    scratch
        .run(&[
            "run", "--joblog", "r.jsonl", "--resume", "r.jsonl", "jobs.txt",
        ])
        .assert_code(2)
        .assert_stderr_contains("--joblog r.jsonl and --resume r.jsonl are the same file");
    assert_eq!(
        scratch.read("r.jsonl"),
        before,
        "the report resumed from is intact"
    );
    assert!(!scratch.exists("ran") && !scratch.exists("x"));
}

/// The joblog and the report may be pipes (a FIFO, `>(...)`) or devices (`/dev/null`): only a
/// regular file is emptied when the run starts (truncating the others fails, and made the run
/// refuse them with exit status 2).
#[test]
fn the_joblog_and_the_report_may_be_pipes_or_devices() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "true\n");
    let fifos = ["log.fifo", "report.fifo"].map(|name| {
        let path = make_fifo(&scratch, name);
        // The reader opens its end first (opening blocks until both ends are open).
        std::thread::spawn(move || std::fs::read_to_string(path).unwrap())
    });
    scratch
        .run(&[
            "run",
            "--joblog",
            "log.fifo",
            "--report",
            "report.fifo",
            "jobs.txt",
        ])
        .assert_code(0);
    let [log, report] = fifos.map(|reader| reader.join().unwrap());
    assert!(log.starts_with(HEADER), "{log}");
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(report.contains("\"status\":\"succeeded\""), "{report}");
    scratch
        .run(&["run", "--report", "/dev/null", "jobs.txt"])
        .assert_code(0);
    scratch
        .run(&["run", "--joblog", "/dev/null", "jobs.txt"])
        .assert_code(0);
}

/// A joblog line that cannot be written (its reader went away) is said once, the jobs still
/// run, and the exit status is 1, whether the failure is found while jobs run or at the end.
#[test]
fn a_joblog_that_cannot_be_written_is_said_once_and_fails_the_run() {
    use std::io::BufRead;
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "sleep 0.5; touch one\ntouch two\ntouch three\n");
    let path = make_fifo(&scratch, "log.fifo");
    // Reads the header, then closes its end before the first job ends.
    let reader = std::thread::spawn(move || {
        let mut header = String::new();
        std::io::BufReader::new(std::fs::File::open(path).unwrap())
            .read_line(&mut header)
            .unwrap();
        header
    });
    let run = scratch.run(&["run", "-j", "1", "--joblog", "log.fifo", "jobs.txt"]);
    assert_eq!(reader.join().unwrap(), format!("{HEADER}\n"));
    assert_said_once_and_every_job_ran(&scratch, &run, "joblog");
}
