//! Running the binary in a scratch directory.

#![allow(dead_code)] // not every test module uses every helper

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch directory with a job file in it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("cannot create a temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` in the scratch directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("cannot write into the scratch directory");
        path
    }

    pub fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_else(|error| panic!("cannot read {name}: {error}"))
    }

    /// A `taskherd` command run in the scratch directory, with no terminal and no progress.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_taskherd"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `taskherd` to completion.
    pub fn run(&self, args: &[&str]) -> Finished {
        let output = self
            .command(args)
            .output()
            .expect("cannot run the taskherd binary");
        Finished::from(output)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A finished run of the binary.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Finished {
    fn from(output: Output) -> Self {
        Finished {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Finished {
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit status: {self:#?}");
        self
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "standard error lacks {text:?}: {self:#?}"
        );
        self
    }

    #[track_caller]
    pub fn assert_stdout_contains(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "standard output lacks {text:?}: {self:#?}"
        );
        self
    }
}

/// A job line that appends `start ID TIME` and `end ID TIME` (nanoseconds) to the file
/// `events` around a sleep of `secs` seconds.
pub fn logged_job(id: &str, groups: &str, secs: &str) -> String {
    format!(
        "{groups} :: echo start {id} $(date +%s%N) >> events; sleep {secs}; \
         echo end {id} $(date +%s%N) >> events"
    )
}

/// When a job ran, as it logged itself with [`logged_job`]: a sub-interval of the time it held
/// its slot, so overlaps seen here are never more than the overlaps taskherd allowed.
#[derive(Debug, Clone)]
pub struct Interval {
    pub start: u128,
    pub end: u128,
}

/// Reads the intervals the jobs logged, by job id; panics on a job that started but did not end.
pub fn intervals(scratch: &Scratch) -> std::collections::BTreeMap<String, Interval> {
    let mut starts = std::collections::BTreeMap::new();
    let mut intervals = std::collections::BTreeMap::new();
    for line in scratch.read("events").lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [kind, id, time] = fields[..] else {
            panic!("bad event line {line:?}");
        };
        let time: u128 = time.parse().expect("a time in nanoseconds");
        match kind {
            "start" => assert!(
                starts.insert(id.to_owned(), time).is_none(),
                "{id} started twice"
            ),
            "end" => {
                let start = starts
                    .remove(id)
                    .unwrap_or_else(|| panic!("{id} ended without starting"));
                intervals.insert(id.to_owned(), Interval { start, end: time });
            }
            _ => panic!("bad event line {line:?}"),
        }
    }
    assert!(
        starts.is_empty(),
        "jobs started but never ended: {starts:?}"
    );
    intervals
}

/// The most intervals that overlap at any moment.
pub fn max_overlap<'a>(intervals: impl IntoIterator<Item = &'a Interval>) -> usize {
    let mut events: Vec<(u128, i32)> = Vec::new();
    for interval in intervals {
        events.push((interval.start, 1));
        events.push((interval.end, -1));
    }
    // At equal times an end comes first: touching intervals do not overlap.
    events.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        max = max.max(now);
    }
    usize::try_from(max).unwrap()
}

/// The report's records that count (the last of each job, as `--resume` reads them), sorted
/// by line.
pub fn report(scratch: &Scratch, name: &str) -> Vec<serde_json::Value> {
    // The last record of a job counts (a resumed run's provisional records come first).
    let mut records: Vec<serde_json::Value> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for record in raw_report(scratch, name) {
        let key = serde_json::json!([record["line"], record["command"], record["groups"]]);
        match at.entry(key.to_string()) {
            std::collections::hash_map::Entry::Occupied(index) => records[*index.get()] = record,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(records.len());
                records.push(record);
            }
        }
    }
    records.sort_by_key(|record| record["line"].as_u64());
    records
}

/// Every record of the report `name`, in the order written.
pub fn raw_report(scratch: &Scratch, name: &str) -> Vec<serde_json::Value> {
    scratch
        .read(name)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad record {line:?}: {e}"))
        })
        .collect()
}

/// The `status` of each record, in line order.
pub fn statuses(records: &[serde_json::Value]) -> Vec<(u64, String)> {
    records
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits until every file in `names` exists in the scratch directory.
#[track_caller]
pub fn wait_for_files(scratch: &Scratch, names: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !names.iter().all(|name| scratch.exists(name)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{names:?} did not all appear"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Sends SIGKILL to process `0` when dropped (a test that failed), unless forgotten (forget
/// it once the process has been waited for: its pid may be reused).
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // No assertion here: this runs while a failed test unwinds.
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

/// Sends `signal` (a `kill` name such as `INT`) to process `pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Waits for taskherd to end; kills it and fails the test if it is still running after
/// `limit` (a run that should have ended by itself).
#[track_caller]
pub fn finish_within(mut child: std::process::Child, limit: std::time::Duration) -> Finished {
    let deadline = std::time::Instant::now() + limit;
    while child
        .try_wait()
        .expect("cannot wait for taskherd")
        .is_none()
    {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("taskherd did not end within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Finished::from(child.wait_with_output().expect("cannot wait for taskherd"))
}

/// Makes the named pipe `name` in the scratch directory; returns its path.
pub fn make_fifo(scratch: &Scratch, name: &str) -> PathBuf {
    let path = scratch.path(name);
    let made = Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("cannot run mkfifo");
    assert!(made.success(), "mkfifo {name} failed");
    path
}

/// For a run of jobs `touch one`, `touch two`, `touch three` whose `what` (`report`,
/// `joblog`) could not be written: the error was said once, every job ran, and the exit
/// status is 1.
#[track_caller]
pub fn assert_said_once_and_every_job_ran(scratch: &Scratch, run: &Finished, what: &str) {
    run.assert_code(1);
    assert_eq!(
        run.stderr
            .matches(&format!("cannot write the {what}: "))
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        ["one", "two", "three"]
            .iter()
            .all(|file| scratch.exists(file))
    );
}

/// How many jobs the run started (each appends a byte to `ran` in the scratch directory),
/// once none has started for a second, or all `jobs` have (waiting at most a minute).
pub fn started_until_held_back(scratch: &Scratch, jobs: usize) -> usize {
    let ran = || std::fs::metadata(scratch.path("ran")).map_or(0, |m| m.len() as usize);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = (usize::MAX, std::time::Instant::now());
    while ran() < jobs && std::time::Instant::now() < deadline {
        let now = ran();
        if now != last.0 {
            last = (now, std::time::Instant::now());
        } else if last.1.elapsed() > std::time::Duration::from_secs(1) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ran()
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: &str) -> bool {
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

/// Waits up to `limit` for process `pid` to end (or be a zombie); whether it did.
pub fn ended_within(pid: &str, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while alive(pid) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// Waits for file `name` and for its first line to be written whole (a job creates the file
/// before it writes into it); its text.
pub fn read_written_line(scratch: &Scratch, name: &str) -> String {
    wait_for_files(scratch, &[name]);
    loop {
        let text = scratch.read(name);
        if text.ends_with('\n') {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
