//! `--redis`: runs sharing their limits through a real `redis-server`, started by each test on
//! 127.0.0.1 on a free port (the harness of taskherd-redis's tests, `redis_server`).

use std::time::{Duration, Instant};

use taskherd_redis::RedisPool;

use crate::redis_server::Server;
use crate::support::{
    Scratch, finish_within, intervals, logged_job, max_overlap, report, statuses, wait_for_files,
};

/// Reads the pool `taskherd-run` on `server` with `read`, as a library user would.
fn read_pool<T>(server: &Server, read: impl AsyncFnOnce(RedisPool<&'static str>) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        read(crate::redis_server::pool(server, "taskherd-run", Duration::from_secs(5)).await).await
    })
}

/// A server, its URL, and a scratch directory with `jobs` in `jobs.txt`.
fn server_with_jobs(jobs: &str) -> (Server, String, Scratch) {
    let server = Server::start();
    let url = server.url();
    let scratch = Scratch::new();
    scratch.write("jobs.txt", jobs);
    (server, url, scratch)
}

/// Restarts `server` on its port, without its data (as a Redis without persistence).
fn restart(server: Server) -> Server {
    restart_after(server, Duration::ZERO)
}

/// [`restart`], down for `down`.
fn restart_after(mut server: Server, down: Duration) -> Server {
    let port = server.port;
    server.stop();
    std::thread::sleep(down);
    Server::start_on(port)
}

/// A job file of `n` logged jobs with ids `{prefix}{i}`, each running 0.3 s; even ones name
/// `db` as well as `own`.
fn jobs(prefix: &str, own: &str, n: usize) -> (String, Vec<(String, String)>) {
    let mut lines = String::new();
    let mut expected = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}{i}");
        let groups = match i % 2 {
            0 => format!("db {own}"),
            _ => own.to_owned(),
        };
        lines.push_str(&logged_job(&id, &groups, "0.3"));
        lines.push('\n');
        expected.push((id, groups));
    }
    (lines, expected)
}

/// Issue #12: two runs with different job files naming an overlapping group, on one Redis,
/// share `-l db=1` and `-j 2`: across BOTH runs, no more than 1 db job and 2 jobs in all ran at
/// once (the jobs' own start and end lines say so), and each run's report has one record per
/// job.
#[test]
fn two_runs_share_their_group_limits_and_total() {
    let server = Server::start();
    let url = server.url();
    let scratch = Scratch::new();
    let (a, mut expected) = jobs("a", "web", 6);
    let (b, more) = jobs("b", "batch", 6);
    expected.extend(more);
    scratch.write("a.txt", &a);
    scratch.write("b.txt", &b);
    let args = |jobfile: &'static str, report: &'static str| {
        let mut args = vec!["run", "--redis", &url, "-l", "db=1", "-j", "2"];
        args.extend(["--report", report, jobfile]);
        args
    };
    let first = scratch.command(&args("a.txt", "a.jsonl")).spawn().unwrap();
    let second = scratch.command(&args("b.txt", "b.jsonl")).spawn().unwrap();
    let first = finish_within(first, Duration::from_secs(60));
    let second = finish_within(second, Duration::from_secs(60));
    first
        .assert_code(0)
        .assert_stderr_contains(": 6 succeeded\n");
    second
        .assert_code(0)
        .assert_stderr_contains(": 6 succeeded\n");

    let ran = intervals(&scratch);
    assert_eq!(ran.len(), 12, "every job of both runs ran once: {ran:?}");
    let db: Vec<_> = expected
        .iter()
        .filter(|(_, groups)| groups.starts_with("db "))
        .map(|(id, _)| &ran[id])
        .collect();
    assert_eq!(max_overlap(db), 1, "db jobs of both runs overlapped");
    assert_eq!(
        max_overlap(ran.values()),
        2,
        "the shared -j 2 held across both runs, and was reached"
    );
    // Each run's report is complete: one record per job, every one succeeded.
    for name in ["a.jsonl", "b.jsonl"] {
        let records = report(&scratch, name);
        let lines: Vec<(u64, String)> = (1..=6).map(|l| (l, "succeeded".to_owned())).collect();
        assert_eq!(statuses(&records), lines, "{name}");
    }
}

/// The limits a run writes stay in the pool for the next run: a run given no `-l` nor `-j`
/// runs under the limits the previous one wrote; a run's `-l` overrides them (the last write
/// wins) for the runs after it too.
#[test]
fn limits_written_by_one_run_are_seen_by_the_next_and_the_last_write_wins() {
    let server = Server::start();
    let url = server.url();
    let scratch = Scratch::new();
    let run = |id: &str, limits: &[&str]| {
        let _ = std::fs::remove_file(scratch.path("events"));
        let lines: String = (0..3)
            .map(|i| logged_job(&format!("{id}{i}"), "db", "0.3") + "\n")
            .collect();
        scratch.write("jobs.txt", &lines);
        let mut args = vec!["run", "--redis", &url];
        args.extend(limits);
        args.push("jobs.txt");
        let finished = scratch.run(&args);
        finished.assert_code(0);
        (max_overlap(intervals(&scratch).values()), finished)
    };

    let (peak, first) = run("one", &["-j", "4", "-l", "db=1"]);
    assert_eq!(peak, 1);
    first.assert_stderr_contains(
        "\ndb          3          3       0       0        0     1      1\n",
    );

    // No limit given: the pool's, written by the first run.
    let (peak, second) = run("two", &[]);
    assert_eq!(
        peak, 1,
        "the second run kept to the db=1 the first one wrote"
    );
    second
        .assert_stderr_contains(
            "\n[total]     3          3       0       0        0     1      4\n",
        )
        .assert_stderr_contains(
            "\ndb          3          3       0       0        0     1      1\n",
        );

    // -l overrides what the pool had, and holds for the run after it.
    let (peak, third) = run("three", &["-l", "db=2"]);
    assert_eq!(peak, 2, "the third run's -l db=2 replaced db=1");
    third.assert_stderr_contains(
        "\ndb          3          3       0       0        0     2      2\n",
    );
    let (peak, _) = run("four", &[]);
    assert_eq!(peak, 2, "the last write wins for the runs after it");
}

/// A run killed with `kill -9` has its jobs killed by its helper (SIGTERM, SIGKILL
/// `--kill-grace` later), while its slots go to other runs as their leases expire, from two
/// thirds of a lease on: with a grace longer than half the lease, another run's job could
/// start while one of the dead run's still ran (`--lease 1s` with the default grace of 5s
/// did, for 4 s; found by a review). Such a combination is refused before anything runs.
#[test]
fn a_kill_grace_longer_than_half_the_lease_is_refused() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "touch ran\n");
    let url = "redis://127.0.0.1:1/";
    scratch
        .run(&["run", "--redis", url, "--lease", "1s", "jobs.txt"])
        .assert_code(2)
        .assert_stderr_contains(
            "--kill-grace 5s is longer than half of --lease 1s: a job of a run that dies \
             could still run when its slots go to another run; give --kill-grace 0.5s or \
             less, or a longer --lease",
        );
    scratch
        .run(&["run", "--redis", url, "--kill-grace", "8s", "jobs.txt"])
        .assert_code(2)
        .assert_stderr_contains("--kill-grace 8s is longer than half of --lease 15s");
    assert!(!scratch.exists("ran"));
    // Half the lease is allowed (here Redis is unreachable, as the message says).
    scratch
        .run(&[
            "run",
            "--redis",
            url,
            "--lease",
            "2s",
            "--kill-grace",
            "1s",
            "jobs.txt",
        ])
        .assert_code(2)
        .assert_stderr_contains("cannot reach Redis");
}

/// Redis unreachable at the start: exit status 2, a message naming the server without its
/// password, and nothing run or created.
#[test]
fn redis_down_at_the_start_runs_nothing() {
    let mut server = Server::start();
    let port = server.port;
    server.stop();
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "touch ran\n");
    let url = format!("redis://someone:s3cret@127.0.0.1:{port}/");
    let finished = scratch.run(&["run", "--redis", &url, "--report", "r.jsonl", "jobs.txt"]);
    finished
        .assert_code(2)
        .assert_stderr_contains(&format!(
            "taskherd: --redis: cannot reach Redis at 127.0.0.1:{port}: "
        ))
        .assert_stderr_contains("; nothing was run\n");
    assert!(!finished.stderr.contains("s3cret"), "{finished:#?}");
    assert!(!scratch.exists("ran"), "a job ran without Redis");
    assert!(!scratch.exists("r.jsonl"), "the report was created");
}

/// A running job whose lease Redis lost (here: Redis restarted without persistence) is
/// terminated: status `killed`, reason `lease-lost`; and the run writes its limits again, which
/// the restart forgot.
#[test]
fn a_job_whose_lease_is_lost_is_terminated_and_the_limits_written_again() {
    // It ignores SIGTERM: the run lasts the grace period after the loss, for the rewrite.
    let (server, url, scratch) =
        server_with_jobs("db :: touch started; trap '' TERM; sleep 30 & wait\n");
    let args = [
        "run",
        "--redis",
        &url,
        "--lease",
        "4s",
        "--kill-grace",
        "2s",
    ];
    let child = scratch
        .command(
            &[
                &args[..],
                &["-l", "db=3", "--report", "r.jsonl", "jobs.txt"],
            ]
            .concat(),
        )
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["started"]);
    let server = restart(server);
    let finished = finish_within(child, Duration::from_secs(20));
    finished
        .assert_code(1)
        .assert_stderr_contains("line 1: Redis lost its admission (lease-lost): SIGTERM")
        .assert_stderr_contains("line 1 still running 2.00s after SIGTERM: SIGKILL")
        .assert_stderr_contains("this run's limits are written to the pool again");
    let records = report(&scratch, "r.jsonl");
    assert_eq!(records[0]["status"], "killed", "{records:?}");
    assert_eq!(records[0]["signal_name"], "SIGKILL", "{records:?}");
    assert_eq!(records[0]["reason"], "lease-lost", "{records:?}");
    let limit = read_pool(&server, async |pool| pool.limit(&"db").await.unwrap());
    assert_eq!(
        limit,
        Some(3),
        "the restarted Redis has the run's limit again"
    );
}

/// `kill -9` of a run: its jobs die with it (the reaper helper), and its slots come back to
/// the other runs after the lease, not while it holds.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_run_gives_its_slots_back_after_the_lease() {
    let server = Server::start();
    let url = server.url();
    let scratch = Scratch::new();
    scratch.write("first.txt", "db :: echo $$ > pid; exec sleep 30\n");
    scratch.write("second.txt", "db :: touch second\n");
    let lease = Duration::from_secs(2);
    let mut first = scratch
        .command(&[
            "run",
            "--redis",
            &url,
            "--lease",
            "2s",
            "--kill-grace",
            "1s",
            "-l",
            "db=1",
            "first.txt",
        ])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["pid"]);
    let killed = Instant::now();
    crate::support::send_signal(first.id(), "KILL");
    first.wait().unwrap();
    let second = scratch
        .command(&["run", "--redis", &url, "second.txt"])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["second"]);
    let waited = killed.elapsed();
    finish_within(second, Duration::from_secs(10)).assert_code(0);
    // Renewed every lease / 3: the lease had at least 2/3 of it left at the kill.
    assert!(
        waited >= lease * 2 / 3 - Duration::from_millis(100),
        "the slot came back after {waited:?}, while the lease held"
    );
    assert!(
        waited <= lease + Duration::from_secs(3),
        "the slot came back only after {waited:?}"
    );
    // The first run's job died with it.
    let pid = scratch.read("pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{}", pid.trim())).exists() {
        assert!(Instant::now() < deadline, "the killed run's job lives on");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Redis down during the run: a job waiting for admission does not run while Redis is
/// unreachable (fail closed), the run says so, and the job runs once Redis is back, without
/// restarting taskherd; the run writes its limits again, which the restart forgot.
#[test]
fn a_job_waits_while_redis_is_down_and_runs_when_it_is_back() {
    // The second job runs long enough for the run to notice that Redis is back.
    let (mut server, url, scratch) =
        server_with_jobs("touch first; sleep 0.5\ntouch second; sleep 1.5\n");
    let port = server.port;
    let child = scratch
        .command(&[
            "run", "--redis", &url, "-j", "1", "--report", "r.jsonl", "jobs.txt",
        ])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["first"]);
    server.stop();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!scratch.exists("second"), "a job ran without Redis");
    let server = Server::start_on(port);
    let finished = finish_within(child, Duration::from_secs(30));
    finished
        .assert_code(0)
        .assert_stderr_contains(
            "; jobs wait for admission (none runs without one) until it is back\n",
        )
        .assert_stderr_contains("Redis is reachable again: jobs are admitted again\n")
        .assert_stderr_contains("this run's limits are written to the pool again\n");
    assert!(scratch.exists("second"));
    let total = read_pool(&server, async |pool| pool.max_tasks().await.unwrap());
    assert_eq!(total, Some(1), "the restarted Redis has the run's -j again");
    let records = report(&scratch, "r.jsonl");
    assert_eq!(
        statuses(&records),
        [(1, "succeeded".to_owned()), (2, "succeeded".to_owned())]
    );
}

/// Redis gone when the run ends: handing the slots back (and reading the fleet's limits for
/// the summary) is waited for at most `--kill-grace`, then the run says the slots come back
/// with their leases, and exits. It used to wait up to the lease (40 s here), deaf to signals.
#[test]
fn a_run_ending_while_redis_is_down_exits_after_the_grace_period() {
    let (mut server, url, scratch) = server_with_jobs(
        "touch started; sleep 1
",
    );
    let child = scratch
        .command(&[
            "run",
            "--redis",
            &url,
            "--lease",
            "40s",
            "--kill-grace",
            "1s",
            "jobs.txt",
        ])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["started"]);
    server.stop();
    // Generous: the job's second, the grace period, and a loaded machine; far below the lease.
    let finished = finish_within(child, Duration::from_secs(20));
    finished.assert_code(0).assert_stderr_contains(
        "this run's slots come back to the other runs when their leases expire",
    );
}

/// A Redis that evicts keys when it is full (`allkeys-*` with `maxmemory`), which may drop
/// the pool's limits or counts, is said at the start; the run goes on.
#[test]
fn a_redis_that_evicts_keys_is_said() {
    let server = Server::start_args(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "db :: true\n");
    scratch
        .run(&["run", "--redis", &server.url(), "-l", "db=1", "jobs.txt"])
        .assert_code(0)
        .assert_stderr_contains("evicts keys when it is full");
    let (quiet, url, scratch) = server_with_jobs("db :: true\n");
    let finished = scratch.run(&["run", "--redis", &url, "jobs.txt"]);
    finished.assert_code(0);
    assert!(!finished.stderr.contains("evicts"), "{}", finished.stderr);
    drop(quiet);
}

/// A dry run with `--redis` does not connect, and says that limits it does not give are the
/// pool's.
#[test]
fn a_dry_run_does_not_ask_redis() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "db :: true\n");
    scratch
        .run(&[
            "run",
            "--redis",
            "redis://127.0.0.1:1/",
            "-l",
            "db=2",
            "--dry-run",
            "jobs.txt",
        ])
        .assert_code(0)
        .assert_stdout_contains("\n[total]     1   none\ndb          1      2\n")
        .assert_stdout_contains("where it gives none, the pool's own apply");
}

/// Runs `jobs` on the pool at `url` with a limits file holding `limits`; it succeeds.
fn run_with_limits_file(scratch: &Scratch, url: &str, limits: &str, jobs: &str) {
    scratch.write("limits", limits);
    scratch
        .run(&["run", "--redis", url, "--limits-file", "limits", jobs])
        .assert_code(0);
}

/// A limits file's `none` settings are written to the pool at the start, as the same settings
/// edited in during a run are: the file overrides the command line and the pool's earlier
/// limits (they were left in place).
#[test]
fn a_limits_file_clears_limits_at_the_start() {
    let (server, url, scratch) = server_with_jobs("db :: true\n");
    scratch
        .run(&["run", "--redis", &url, "-j", "1", "-l", "db=1", "jobs.txt"])
        .assert_code(0);
    run_with_limits_file(&scratch, &url, "[total]=none\ndb=none\n", "jobs.txt");
    let (total, db) = read_pool(&server, async |pool| {
        (
            pool.max_tasks().await.unwrap(),
            pool.limit(&"db").await.unwrap(),
        )
    });
    assert_eq!((total, db), (None, None));
}

/// A run does not take another run's "no limit" for Redis forgetting the pool: it writes its
/// own limits again only when Redis lost its data (its count of admissions went back, or its
/// leases were lost), not when the limits it gave were removed on purpose (it used to write
/// them back within a second, undoing the other run's change).
#[test]
fn another_runs_no_limit_is_not_undone() {
    let (server, url, scratch) = server_with_jobs("touch started; sleep 4\n");
    let first = scratch
        .command(&["run", "--redis", &url, "-l", "db=1", "jobs.txt"])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["started"]);
    scratch.write("other.txt", "true\n");
    run_with_limits_file(&scratch, &url, "db=none\n", "other.txt");
    // The first run checks every second.
    std::thread::sleep(Duration::from_millis(2500));
    let db = read_pool(&server, async |pool| pool.limit(&"db").await.unwrap());
    assert_eq!(db, None, "the other run's no-limit was undone");
    let finished = finish_within(first, Duration::from_secs(30));
    finished.assert_code(0);
    assert!(
        !finished.stderr.contains("Redis forgot"),
        "{}",
        finished.stderr
    );
}

/// Redis losing its data while every job of the run waits (none runs, so no lease of a job is
/// found lost) is still seen: the waiting jobs' places are lost, and the run writes its limits
/// again. (Detected only by the pool's count of admissions going back, it was missed when the
/// jobs admitted at once in the empty pool pushed the count past its old value.)
#[test]
fn a_loss_of_redis_data_while_jobs_wait_is_seen() {
    let (server, url, scratch) = server_with_jobs(&"db :: sleep 3\n".repeat(4));
    scratch.write("limits", "db=0\n");
    let child = scratch
        .command(&[
            "run",
            "--redis",
            &url,
            "--limits-file",
            "limits",
            "-j",
            "1",
            "--lease",
            "1s",
            "--kill-grace",
            "500ms",
            "jobs.txt",
        ])
        .spawn()
        .unwrap();
    // The jobs wait (db=0).
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_pool(&server, async |pool| pool.waiting_len().await.unwrap()) < 4 {
        assert!(Instant::now() < deadline, "the jobs never queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.cmd(&["FLUSHALL"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (total, db) = read_pool(&server, async |pool| {
            (
                pool.max_tasks().await.unwrap(),
                pool.limit(&"db").await.unwrap(),
            )
        });
        if (total, db) == (Some(1), Some(0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the limits were not written again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The jobs queueing again wrote them (the pool's `restore_limits_with`); the run's check,
    // every second, says so.
    std::thread::sleep(Duration::from_millis(1500));
    // Ctrl-C twice: the jobs that waited, or ran meanwhile, end.
    crate::support::send_signal(child.id(), "INT");
    crate::support::send_signal(child.id(), "INT");
    let finished = finish_within(child, Duration::from_secs(30));
    assert!(
        finished.stderr.contains("Redis forgot"),
        "{}",
        finished.stderr
    );
}

/// After a loss in a pool that had admitted jobs, the run writes its limits again once, and
/// says so once: the first check finds the loss (the pool's statistics fail as forgotten),
/// and the count of admissions it compares with starts again from the pool's. (It kept the
/// count from before the loss: the next check found the count gone down and wrote the limits
/// a second time, which could undo a change another run made in between; found by a review.)
#[test]
fn a_loss_of_redis_data_is_said_and_mended_once() {
    let jobs = format!("{}{}", "a :: true\n".repeat(6), "a :: sleep 2\n".repeat(3));
    loss_after_admissions_is_said_once(&jobs, ("3s", "1s"), 7);
}

/// Runs `jobs` (`-j 1 -l a=1`, leases and grace `lease`) until the pool has counted
/// `admitted` admissions, makes Redis lose its data, and checks that the run says so once.
fn loss_after_admissions_is_said_once(jobs: &str, lease: (&str, &str), admitted: u64) {
    let (server, url, scratch) = server_with_jobs(jobs);
    let child = leased_run(&scratch, &url, lease, &["-j", "1", "-l", "a=1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_pool(&server, async |pool| {
        pool.total_stats().await.unwrap().admitted
    }) < admitted
    {
        assert!(Instant::now() < deadline, "the jobs did not run");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The run's check (every second) has seen the count before the loss: the count it
    // compares with is then one the pool has lost. (Without this wait the test mostly
    // passed with the fix undone; found by a review.)
    std::thread::sleep(Duration::from_millis(1500));
    server.cmd(&["FLUSHALL"]).unwrap();
    let finished = finish_within(child, Duration::from_secs(60));
    assert_eq!(
        finished.stderr.matches("Redis forgot").count(),
        1,
        "{}",
        finished.stderr
    );
}

/// After Redis lost its data, another process writes back only some limits (here a library
/// user: `web`, and admissions that bring the pool's count back) before this run's waiting
/// jobs queue again. They were then admitted under those alone, all at once (the run's `db=1`
/// and `-j 1` missing), before the run's check noticed the loss (a second later, from the
/// waiting places it lost). Their admission now finds the limits written again in another
/// generation and writes the run's own where the pool has none first: they run one at a
/// time, and the run says it wrote its limits again.
#[test]
fn jobs_queued_again_after_a_loss_run_under_the_runs_limits_though_another_wrote_some_first() {
    let mut jobs = String::new();
    for i in 0..3 {
        jobs.push_str(&logged_job(&format!("j{i}"), "db", "0.4"));
        jobs.push('\n');
    }
    let (server, url, scratch) = server_with_jobs(&jobs);
    scratch.write(
        "hold.txt",
        "db :: touch started; while [ ! -e go ]; do sleep 0.05; done\n",
    );
    read_pool(&server, async |pool| {
        pool.set_limit("db", Some(1)).await.unwrap();
    });
    // Another run, given no limit (so it writes none back), holds `db`; this one's jobs wait.
    let holder = scratch
        .command(&["run", "--redis", &url, "hold.txt"])
        .spawn()
        .unwrap();
    // Killed if the test fails before it ends (its job waits for `go`), as is the run below.
    let holder_guard = crate::support::KillOnDrop(holder.id());
    wait_for_files(&scratch, &["started"]);
    let child = leased_run(&scratch, &url, ("6s", "3s"), &["-j", "1", "-l", "db=1"]);
    let child_guard = crate::support::KillOnDrop(child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_pool(&server, async |pool| pool.waiting_len().await.unwrap()) < 3 {
        assert!(Instant::now() < deadline, "the jobs never queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    crate::support::send_signal(child.id(), "STOP");
    let before = read_pool(&server, async |pool| {
        pool.total_stats().await.unwrap().admitted
    });
    server.cmd(&["FLUSHALL"]).unwrap();
    read_pool(&server, async |pool| {
        pool.set_limit("web", Some(3)).await.unwrap();
        for _ in 0..=before {
            drop(pool.try_acquire(["other"]).await.unwrap());
        }
        pool.flush().await;
    });
    scratch.write("go", "");
    crate::support::send_signal(child.id(), "CONT");
    let finished = finish_within(child, Duration::from_secs(60));
    std::mem::forget(child_guard);
    finish_within(holder, Duration::from_secs(30));
    std::mem::forget(holder_guard);
    let ran = intervals(&scratch);
    assert_eq!(ran.len(), 3, "every job ran once: {ran:?}");
    assert_eq!(
        max_overlap(ran.values()),
        1,
        "jobs ran together over the run's db=1 and -j 1: {ran:?}"
    );
    finished.assert_stderr_contains("this run's limits are written to the pool again");
    let (total, db, web) = read_pool(&server, async |pool| {
        (
            pool.max_tasks().await.unwrap(),
            pool.limit(&"db").await.unwrap(),
            pool.limit(&"web").await.unwrap(),
        )
    });
    assert_eq!((total, db, web), (Some(1), Some(1), Some(3)));
}

/// The same with no job waiting: the run's own check is the first call to find the loss (its
/// statistics read writes the limits back, through the pool's `restore_limits_with`, and
/// finds the count gone back), and it says so once, not again at the next check for the
/// pool's own write.
#[test]
fn a_loss_found_by_the_runs_check_is_said_once() {
    // The last job ignores SIGTERM: the run lasts the grace period after its lease is found
    // lost, several checks.
    let jobs = "a :: true\na :: true\na :: trap '' TERM; sleep 6 & wait\n";
    loss_after_admissions_is_said_once(jobs, ("9s", "4s"), 3);
}

/// Starts a run of `jobs.txt` on the pool at `url` with leases of `lease`, `--kill-grace`
/// `grace` (at most half the lease), and `args`.
fn leased_run(
    scratch: &Scratch,
    url: &str,
    (lease, grace): (&str, &str),
    args: &[&str],
) -> std::process::Child {
    let leased = [
        "run",
        "--redis",
        url,
        "--lease",
        lease,
        "--kill-grace",
        grace,
    ];
    scratch
        .command(&[&leased[..], args, &["jobs.txt"]].concat())
        .spawn()
        .unwrap()
}

/// A run paused longer than its lease (SIGSTOP, a debugger, a VM frozen) finds its leases lost,
/// running and waiting, when it resumes, but Redis forgot nothing: the limit another run (here a
/// library user) changed meanwhile is not overwritten with this run's own. (Lost leases alone
/// used to make the run write its limits again.)
#[test]
fn a_run_paused_past_its_lease_does_not_undo_limits_changed_meanwhile() {
    // Line 2 waits for line 1 (db=1): one lease of a running job, one of a waiting one.
    let (server, url, scratch) =
        server_with_jobs("db :: touch started; sleep 4\ndb :: touch second\n");
    let child = leased_run(&scratch, &url, ("1s", "500ms"), &["-l", "db=1"]);
    wait_for_files(&scratch, &["started"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_pool(&server, async |pool| pool.waiting_len().await.unwrap()) < 1 {
        assert!(Instant::now() < deadline, "line 2 never queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    crate::support::send_signal(child.id(), "STOP");
    // Well past the lease.
    std::thread::sleep(Duration::from_millis(2500));
    read_pool(&server, async |pool| {
        pool.set_limit("db", Some(5)).await.unwrap();
    });
    crate::support::send_signal(child.id(), "CONT");
    // The run renews (every third of the lease) and checks Redis (every second).
    std::thread::sleep(Duration::from_millis(3000));
    let db = read_pool(&server, async |pool| pool.limit(&"db").await.unwrap());
    assert_eq!(
        db,
        Some(5),
        "the limit changed while the run was paused was undone"
    );
    let finished = finish_within(child, Duration::from_secs(30));
    assert!(
        !finished.stderr.contains("Redis forgot"),
        "{}",
        finished.stderr
    );
    assert!(scratch.exists("second"), "line 2 did not run");
}

/// After Redis lost its data, another run may write its limits back first: a run that finds
/// its leases lost and one of its own limits missing writes its limits again, though another
/// of them is there (here `db`, written back by a library user before the run noticed).
#[test]
fn a_loss_of_redis_data_is_seen_when_another_run_wrote_some_limits_back_first() {
    // It ignores SIGTERM: the run lasts the grace period after the loss, for the rewrite.
    let (server, url, scratch) =
        server_with_jobs("db :: touch started; trap '' TERM; sleep 30 & wait\n");
    let child = leased_run(&scratch, &url, ("6s", "3s"), &["-j", "2", "-l", "db=1"]);
    wait_for_files(&scratch, &["started"]);
    // While the run is stopped, so that it checks only once all is done: the loss, `db`
    // written back, and one admission, which brings the pool's count of admissions back to
    // where the run saw it (the count going back is the run's other sign of a loss).
    crate::support::send_signal(child.id(), "STOP");
    let before = read_pool(&server, async |pool| {
        pool.total_stats().await.unwrap().admitted
    });
    server.cmd(&["FLUSHALL"]).unwrap();
    read_pool(&server, async |pool| {
        pool.set_limit("db", Some(7)).await.unwrap();
        for _ in 0..before {
            drop(pool.try_acquire(["other"]).await.unwrap());
        }
        pool.flush().await;
        assert_eq!(pool.total_stats().await.unwrap().admitted, before);
    });
    crate::support::send_signal(child.id(), "CONT");
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_pool(&server, async |pool| pool.max_tasks().await.unwrap()) != Some(2) {
        assert!(
            Instant::now() < deadline,
            "the run's total was not written again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let finished = finish_within(child, Duration::from_secs(30));
    finished
        .assert_code(1)
        .assert_stderr_contains("this run's limits are written to the pool again");
}

/// `rediss://`: a run over TLS, with the server's certificate authority (`--redis-ca`) and a
/// client certificate (`--redis-cert`, `--redis-key`), runs its jobs under the fleet's limits;
/// without the client certificate Redis refuses it, and nothing runs (exit status 2).
#[test]
fn a_run_over_tls_with_certificates() {
    let certs = crate::certs::Certs::new();
    let (_server, port) = Server::start_tls(
        &certs.path("server.pem"),
        &certs.path("server.key"),
        &certs.path("ca.pem"),
    );
    let url = format!("rediss://127.0.0.1:{port}/");
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "db :: touch one\ndb :: touch two\n");
    let paths = ["ca.pem", "client.pem", "client.key"]
        .map(|name| certs.path(name).to_str().unwrap().to_owned());
    let tls = [
        "--redis-ca",
        &paths[0],
        "--redis-cert",
        &paths[1],
        "--redis-key",
        &paths[2],
    ];
    let run = |tls: &[&str]| {
        scratch.run(&[&["run", "--redis", &url, "-l", "db=1"], tls, &["jobs.txt"]].concat())
    };
    run(&tls[..2])
        .assert_code(2)
        .assert_stderr_contains("--redis: cannot reach Redis at 127.0.0.1:");
    assert!(!scratch.exists("one"));
    run(&tls).assert_code(0);
    assert!(scratch.exists("one") && scratch.exists("two"));
    // Certificates with a URL that is not TLS: refused before anything runs.
    scratch
        .run(&[
            "run",
            "--redis",
            "redis://127.0.0.1:1/",
            "--redis-ca",
            &paths[0],
            "--dry-run",
            "jobs.txt",
        ])
        .assert_code(2)
        .assert_stderr_contains("--redis-ca and --redis-cert need a rediss:// URL");
    // A certificate file that cannot be read: said before anything runs, in a dry run too.
    scratch
        .run(&[
            "run",
            "--redis",
            &url,
            "--redis-ca",
            "missing.pem",
            "--dry-run",
            "jobs.txt",
        ])
        .assert_code(2)
        .assert_stderr_contains("--redis-ca missing.pem: cannot read it");
}

/// A malformed `--redis` URL is refused before anything runs, by a dry run as by a run, and
/// the message does not repeat the URL (it may hold a password).
#[test]
fn a_malformed_redis_url_is_refused_by_a_dry_run_too() {
    let scratch = Scratch::new();
    scratch.write("jobs.txt", "touch ran\n");
    for dry_run in [&["--dry-run"][..], &[]] {
        let run = scratch.run(
            &[
                &["run", "--redis", "http://user:secret@host/"][..],
                dry_run,
                &["jobs.txt"],
            ]
            .concat(),
        );
        run.assert_code(2)
            .assert_stderr_contains("--redis: not a Redis URL");
        assert!(!run.stderr.contains("secret"), "{}", run.stderr);
        assert!(!scratch.exists("ran"));
    }
}

/// A job admitted while nobody reads the report waits to start (see "Report" in the README);
/// if Redis loses its lease meanwhile (a restart without persistence), it is admitted again
/// before it starts, rather than started on a lease already lost and terminated at once
/// (`lease-lost`) while the fleet admits others in its place (`-j 4` then ran 8 jobs).
#[test]
fn a_job_that_lost_its_lease_while_waiting_to_start_is_admitted_again() {
    const JOBS: usize = 200;
    let job = format!("printf x >> ran; sleep 0.1 # {}\n", "x".repeat(10_000));
    let (server, url, scratch) = server_with_jobs(&job.repeat(JOBS));
    let fifo = crate::support::make_fifo(&scratch, "r.fifo");
    let opened = std::thread::spawn(move || std::fs::File::open(fifo).unwrap());
    let child = scratch
        .command(&[
            "run",
            "--redis",
            &url,
            "--lease",
            "1s",
            "--kill-grace",
            "500ms",
            "-j",
            "4",
            "--report",
            "r.fifo",
            "jobs.txt",
        ])
        .spawn()
        .unwrap();
    let unread = opened.join().unwrap();
    // The run waits for the report's reader.
    let held_back = crate::support::started_until_held_back(&scratch, JOBS);
    assert!(held_back < JOBS, "no job was held back");
    // The leases of the jobs waiting to start are lost with Redis's data.
    let _server = restart(server);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let reader = std::thread::spawn(move || std::io::read_to_string(unread).unwrap());
    let finished = finish_within(child, std::time::Duration::from_secs(120));
    let report = reader.join().unwrap();
    let lost: Vec<&str> = report
        .lines()
        .filter(|line| line.contains("lease-lost"))
        .map(|line| &line[..line.len().min(120)])
        .collect();
    assert!(
        lost.is_empty(),
        "held back at {held_back}: {lost:?}\nstderr: {}",
        finished.stderr
    );
    finished.assert_code(0);
    assert_eq!(
        crate::support::started_until_held_back(&scratch, JOBS),
        JOBS
    );
    assert_eq!(report.lines().count(), JOBS);
}

/// Runs a short first job then `n` logged `db` jobs of a second each with `args` (after `run
/// --redis URL`, before the job file), restarting `server` without its data (down 1.5 s)
/// once the first has run; asserts that all ran and never two at once, and returns the new
/// server and how the run finished.
fn db_jobs_through_a_restart(
    server: Server,
    url: &str,
    scratch: &Scratch,
    n: usize,
    args: &[&str],
) -> (Server, crate::support::Finished) {
    scratch.write("jobs.txt", &first_then_db_jobs(n));
    let child = scratch
        .command(&[&["run", "--redis", url][..], args, &["jobs.txt"]].concat())
        .spawn()
        .unwrap();
    wait_for_files(scratch, &["first"]);
    let server = restart_after(server, Duration::from_millis(1500));
    let finished = finish_within(child, Duration::from_secs(60));
    let ran = intervals(scratch);
    assert_eq!(ran.len(), n, "{}", finished.stderr);
    assert_eq!(
        max_overlap(ran.values()),
        1,
        "the limit of 1 was exceeded after the restart:\n{}",
        finished.stderr
    );
    (server, finished)
}

/// Redis restarts without its data while jobs wait for admission: the limits are gone with the
/// data, and the waiting jobs must not all start at once in a pool without them (they did:
/// 8 jobs of `-j 1 -l db=1` overlapped, peaks of 27 against a limit of 1 across two runs;
/// found by a review). The pool admits nothing for the run until it has written its limits
/// again, and then only under them.
#[test]
fn waiting_jobs_do_not_all_start_when_redis_restarts_without_its_limits() {
    let (server, url, scratch) = server_with_jobs("");
    let args = [
        "-j",
        "1",
        "-l",
        "db=1",
        "--lease",
        "3s",
        "--kill-grace",
        "1s",
    ];
    let (server, finished) = db_jobs_through_a_restart(server, &url, &scratch, 8, &args);
    finished
        .assert_code(0)
        .assert_stderr_contains("this run's limits are written to the pool again");
    let limit = read_pool(&server, async |pool| pool.limit(&"db").await.unwrap());
    assert_eq!(limit, Some(1));
}

/// A run given no limit of its own runs under those another run wrote (`db=1` here). When
/// Redis restarts without its data, it writes back the fleet's limits as it last read them,
/// not just its own (none): its first version wrote an empty batch, and the waiting jobs all
/// started, in a pool without limits from then on (found by a review).
#[test]
fn a_run_given_no_limits_restores_the_limits_it_ran_under() {
    let (server, url, scratch) = server_with_jobs("true\n");
    // The run that configures the pool; it ends.
    scratch
        .run(&["run", "--redis", &url, "-l", "db=1", "jobs.txt"])
        .assert_code(0);
    let args = ["--lease", "3s", "--kill-grace", "1s"];
    let (server, _) = db_jobs_through_a_restart(server, &url, &scratch, 6, &args);
    let limit = read_pool(&server, async |pool| pool.limit(&"db").await.unwrap());
    assert_eq!(limit, Some(1));
}

/// As `a_run_given_no_limits_restores_the_limits_it_ran_under`, with the job file streamed
/// from a pipe: the run given no limit must restore `db=1` it ran under, and never run two
/// `db` jobs at once. (It wrote an empty batch: its job file's groups were not known at the
/// start; found by a review.)
#[test]
fn a_streamed_run_given_no_limits_restores_the_limits_it_ran_under() {
    use std::io::Write;
    let (server, url, scratch) = server_with_jobs("true\n");
    scratch
        .run(&["run", "--redis", &url, "-l", "db=1", "jobs.txt"])
        .assert_code(0);
    let jobs = first_then_db_jobs(6);
    let mut child = scratch
        .command(&[
            "run",
            "--redis",
            &url,
            "--lease",
            "3s",
            "--kill-grace",
            "1s",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(jobs.as_bytes()).unwrap();
    drop(stdin);
    wait_for_files(&scratch, &["first"]);
    let server = restart_after(server, Duration::from_millis(1500));
    let finished = finish_within(child, Duration::from_secs(60));
    six_db_jobs_ran_one_at_a_time_under_db_1(&server, &scratch, &finished);
}

/// A run whose limits file removed `db`'s limit (`db=1` then `db=none`): after Redis loses
/// its data, the run writes back what it was given and what it read, not the limit it
/// removed itself (it wrote back `db=1`, as read at its start; found by a review).
#[test]
fn a_limit_the_run_removed_is_not_written_back_after_a_loss() {
    let mut jobs = String::new();
    for i in 0..8 {
        jobs.push_str(&logged_job(&format!("j{i}"), "db", "1"));
        jobs.push('\n');
    }
    let (server, url, scratch) = server_with_jobs(&jobs);
    scratch.write("limits", "db=1\n");
    let child = scratch
        .command(&[
            "run",
            "--redis",
            &url,
            "--limits-file",
            "limits",
            "-j",
            "2",
            "--lease",
            "3s",
            "--kill-grace",
            "1s",
            "jobs.txt",
        ])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["events"]);
    scratch.write("limits", "db=none\n");
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_pool(&server, async |pool| pool.limit(&"db").await.unwrap()).is_some() {
        assert!(
            Instant::now() < deadline,
            "the limits file's change was not written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let server = restart(server);
    let finished = finish_within(child, Duration::from_secs(60));
    assert!(
        finished.stderr.contains("Redis forgot"),
        "{}",
        finished.stderr
    );
    let limit = read_pool(&server, async |pool| pool.limit(&"db").await.unwrap());
    assert_eq!(
        limit, None,
        "db's limit, removed by the run, came back:\n{}",
        finished.stderr
    );
}

/// A run given no limit reads `db=1` at its start; the operator changes it to 3 while it runs.
/// Redis then loses its data, and the operator's process (built with `restore_limits`)
/// writes `db=3` back first. The run's guard must not replace it with the stale `db=1` it
/// read at its start (a limit it was never given; it did, found by a review).
#[test]
fn a_run_does_not_overwrite_limits_restored_by_another_process_with_stale_ones() {
    // 30 quick jobs first: the pool's count of admissions is well above what it is soon
    // after the loss, so that the run's guard finds the loss certain (the count went back).
    let mut jobs = "db :: true\n".repeat(30);
    for i in 0..12 {
        jobs.push_str(&logged_job(&format!("j{i}"), "db", "1"));
        jobs.push('\n');
    }
    let (server, url, scratch) = server_with_jobs(&jobs);
    read_pool(&server, async |pool| pool.set_limit("db", 1).await.unwrap());
    let child = scratch
        .command(&[
            "run",
            "--redis",
            &url,
            "--lease",
            "3s",
            "--kill-grace",
            "1s",
            "jobs.txt",
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !scratch.exists("events") || scratch.read("events").matches("start").count() < 2 {
        assert!(Instant::now() < deadline, "the logged jobs did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    read_pool(&server, async |pool| pool.set_limit("db", 3).await.unwrap());
    let server = restart(server);
    // The operator's process, built at once after the loss: writes db=3 into the empty pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _operator = RedisPool::<&'static str>::builder(&server.url(), "taskherd-run")
            .restore_limits(taskherd::LimitChanges::new().limit("db", 3))
            .build()
            .await
            .unwrap();
    });
    assert_eq!(
        read_pool(&server, async |pool| pool.limit(&"db").await.unwrap()),
        Some(3)
    );
    let finished = finish_within(child, Duration::from_secs(60));
    let limit = read_pool(&server, async |pool| pool.limit(&"db").await.unwrap());
    assert_eq!(
        limit,
        Some(3),
        "the restored db=3 was overwritten:\n{}",
        finished.stderr
    );
}

/// A job file: a first job (which touches `first`), then `n` logged `db` jobs of 1 s.
fn first_then_db_jobs(n: usize) -> String {
    let mut jobs = String::from("touch first; sleep 0.3\n");
    for i in 0..n {
        jobs.push_str(&logged_job(&format!("j{i}"), "db", "1"));
        jobs.push('\n');
    }
    jobs
}

/// Run A, given `web=2` by its limits file, runs `db` jobs under the fleet's `db=1` (written
/// by a run that ended). The file changes (`web=3`) while Redis is down; Redis restarts
/// without its data. The watcher retries the change every 250 ms and writes it before the
/// guard's next check: it writes the fleet's limits as A knows them first (into the pool
/// without limits), so `db=1` holds throughout. (Written alone, it re-opened the pool with
/// `web=3` only and `db=1` was never restored: 5 jobs at once; found by a review.)
#[test]
fn a_limits_file_change_written_after_a_loss_restores_the_fleets_limits_first() {
    let (mut server, url, scratch) = server_with_jobs("true\n");
    scratch
        .run(&["run", "--redis", &url, "-l", "db=1", "jobs.txt"])
        .assert_code(0);
    scratch.write("a.txt", &first_then_db_jobs(6));
    scratch.write("limits", "web=2\n");
    let child = scratch
        .command(&[
            "run",
            "--redis",
            &url,
            "--limits-file",
            "limits",
            "--lease",
            "6s",
            "--kill-grace",
            "1s",
            "a.txt",
        ])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["first"]);
    let port = server.port;
    server.stop();
    scratch.write("limits", "web=3\n");
    std::thread::sleep(Duration::from_millis(1500));
    let server = Server::start_on(port);
    let finished = finish_within(child, Duration::from_secs(60));
    six_db_jobs_ran_one_at_a_time_under_db_1(&server, &scratch, &finished);
}

/// Run A, given no limit and showing no progress (not a terminal), starts under the fleet's
/// `db=3`; another run then tightens it to `db=1` (and ends), and A's jobs run one at a time.
/// Redis restarts without its data: A writes back `db=1`, as its guard read it since (every
/// second). (It wrote back `db=3`, as read at its start, and its remaining jobs ran 3 at once;
/// found by a review.)
#[test]
fn a_run_without_progress_restores_a_limit_tightened_during_the_run_as_it_is_now() {
    let (mut server, url, scratch) = server_with_jobs("true\n");
    scratch
        .run(&["run", "--redis", &url, "-l", "db=3", "jobs.txt"])
        .assert_code(0);
    let mut jobs = String::new();
    for i in 0..9 {
        jobs.push_str(&logged_job(&format!("j{i}"), "db", "1"));
        jobs.push('\n');
    }
    scratch.write("a.txt", &jobs);
    let child = scratch
        .command(&[
            "run",
            "--redis",
            &url,
            "--lease",
            "6s",
            "--kill-grace",
            "1s",
            "a.txt",
        ])
        .spawn()
        .unwrap();
    wait_for_files(&scratch, &["events"]);
    scratch
        .run(&["run", "--redis", &url, "-l", "db=1", "jobs.txt"])
        .assert_code(0);
    // The first 3 end; one more starts under db=1.
    std::thread::sleep(Duration::from_millis(1500));
    let port = server.port;
    server.stop();
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::thread::sleep(Duration::from_millis(1500));
    let server = Server::start_on(port);
    let finished = finish_within(child, Duration::from_secs(60));
    let ran = intervals(&scratch);
    assert_eq!(ran.len(), 9, "{}", finished.stderr);
    let after: Vec<_> = ran
        .values()
        .filter(|i| i.start > restarted)
        .cloned()
        .collect();
    let limit = read_pool(&server, async |pool| pool.limit(&"db").await.unwrap());
    assert_eq!(
        (max_overlap(after.iter()), limit),
        (1, Some(1)),
        "(overlap of the jobs started after the restart, db limit after the run):\n{}",
        finished.stderr
    );
}

/// After a run of 6 logged `db` jobs through a loss of Redis's data: all ran, never two at
/// once, and the pool's limit of `db` is 1 again.
fn six_db_jobs_ran_one_at_a_time_under_db_1(
    server: &Server,
    scratch: &Scratch,
    finished: &crate::support::Finished,
) {
    let ran = intervals(scratch);
    assert_eq!(ran.len(), 6, "{}", finished.stderr);
    let limit = read_pool(server, async |pool| pool.limit(&"db").await.unwrap());
    assert_eq!(
        (max_overlap(ran.values()), limit),
        (1, Some(1)),
        "(overlap, db limit after the run):\n{}",
        finished.stderr
    );
}

/// On each change of its limits file a run writes every limit it was given to the fleet's
/// pool, not only those whose value changed for it (README: "for each setting, the last write
/// wins, whichever run made it"). Run A (`-l db=1`, an empty limits file) runs; another
/// process sets `db=3`; A's limits file is written `db=1`, the same as A's own: the pool's
/// `db` is 1 again. So is it when the line is removed again (A's `-l db=1` back) after another
/// write of 3. (A wrote nothing, its own limits unchanged, and said nothing: the fleet ran 3 db
/// jobs at once after the operator's `db=1`; found by a review.)
#[test]
fn a_limits_file_change_writes_every_limit_the_run_was_given() {
    let (server, url, scratch) = server_with_jobs("db :: sleep 60\n");
    scratch.write("limits", "");
    let stderr = std::fs::File::create(scratch.path("stderr.txt")).unwrap();
    let child = scratch
        .command(&[
            "run",
            "--redis",
            &url,
            "-l",
            "db=1",
            "--limits-file",
            "limits",
            "jobs.txt",
        ])
        .stderr(stderr)
        .spawn()
        .unwrap();
    let guard = crate::support::KillOnDrop(child.id());
    let db = || read_pool(&server, async |pool| pool.limit(&"db").await.unwrap());
    let until_db = |limit: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while db() != Some(limit) {
            assert!(Instant::now() < deadline, "{what}: db is {:?}", db());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until_db(1, "the run's limits at its start");
    for (text, what) in [("db=1\n", "db=1 written"), ("", "the line removed")] {
        read_pool(&server, async |pool| pool.set_limit("db", 3).await.unwrap());
        scratch.write("limits", text);
        until_db(1, what);
    }
    crate::support::send_signal(child.id(), "TERM");
    finish_within(child, Duration::from_secs(30));
    std::mem::forget(guard);
    let said = scratch.read("stderr.txt");
    assert_eq!(
        said.matches("limits file limits changed").count(),
        2,
        "each change is said: {said}"
    );
}
