//! The fleet across real processes: worker processes are this test binary re-run with
//! `TASKHERD_FLEET_WORKER=<role>` and `--exact worker_process --nocapture`, so no extra binary
//! is needed. Every test starts its own `redis-server` (see `support`).
//!
//! The shared clock of the overlap check is `SystemTime` in microseconds: `Instant`
//! (`CLOCK_MONOTONIC`) is system-wide on Linux but std gives no way to turn it into a number
//! another process can compare, while `CLOCK_REALTIME` is one clock read by every process of
//! one machine. It is sound for ordering here because a holder logs its start *after* Redis
//! admitted it and its end *before* its release is sent, so each logged interval lies inside
//! the interval Redis counted it: logged intervals that overlap prove that Redis counted them
//! at once (the check can miss an over-admission, never invent one). Ties are ordered ends
//! first for the same reason. Only a step of the wall clock during the run (an NTP jump)
//! could mislead it; the run lasts seconds.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use taskherd::LimitChanges;
use taskherd_redis::RedisPool;

use support::Server;

const ROLE: &str = "TASKHERD_FLEET_WORKER";
const URL: &str = "TASKHERD_FLEET_URL";
const POOL: &str = "TASKHERD_FLEET_POOL";
const SEED: &str = "TASKHERD_FLEET_SEED";
const LEASE_MS: &str = "TASKHERD_FLEET_LEASE_MS";
const GROUPS: &str = "TASKHERD_FLEET_GROUPS";

/// Concurrent clients (tasks) in each fleet worker, and operations each.
const CLIENTS: u64 = 4;
const OPS: u64 = 40;

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_micros()
}

/// xorshift64*: reproducible random operations without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// A worker process: this binary, running only `worker_process`, in `role`.
fn worker(role: &str, server: &Server, pool: &str, extra: &[(&str, String)]) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([
            "--exact",
            "worker_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ROLE, role)
        .env(URL, server.url())
        .env(POOL, pool)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (name, value) in extra {
        command.env(name, value);
    }
    command
}

/// Starts every worker at once (stdout captured) and waits for all of them.
async fn run_all(workers: impl Iterator<Item = Command>) -> Vec<std::process::Output> {
    let children: Vec<Child> = workers
        .map(|mut command| command.stdout(Stdio::piped()).spawn().unwrap())
        .collect();
    tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| child.wait_with_output().unwrap())
            .collect()
    })
    .await
    .unwrap()
}

/// Kills a worker when a test fails before it does.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The role a re-run of this binary plays; a no-op in an ordinary test run.
#[test]
fn worker_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let lease = std::env::var(LEASE_MS).map_or(Duration::from_secs(5), |ms| {
            Duration::from_millis(ms.parse().unwrap())
        });
        let pool: RedisPool<String> = RedisPool::builder(&env(URL), &env(POOL))
            .lease(lease)
            .build()
            .await
            .unwrap();
        match role.as_str() {
            "fleet" => fleet_role(pool).await,
            "hold" => hold_role(pool).await,
            "wait" => wait_role(pool).await,
            "cancel" => cancel_role(pool).await,
            "cross" => cross_role(pool).await,
            other => panic!("unknown role {other}"),
        }
    });
}

/// Random admissions of 1-3 of 8 groups: try or wait, permit or task. Each holder prints
/// `FLEETLOG <start µs> <end µs> <groups>`.
async fn fleet_role(pool: RedisPool<String>) {
    let seed: u64 = env(SEED).parse().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let pool = pool.clone();
        let refused = Arc::clone(&refused);
        clients.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed * 1000 + client);
            for _ in 0..OPS {
                let mut groups: Vec<String> = Vec::new();
                let n = 1 + rng.below(3);
                while (groups.len() as u64) < n {
                    let group = format!("g{}", rng.below(8));
                    if !groups.contains(&group) {
                        groups.push(group);
                    }
                }
                let hold = Duration::from_micros(rng.below(4000));
                let line = groups.join(",");
                let job = async move {
                    let start = now_us();
                    tokio::time::sleep(hold).await;
                    let end = now_us();
                    println!("FLEETLOG {start} {end} {line}");
                };
                match rng.below(4) {
                    0 => match pool.try_acquire(groups).await {
                        Ok(permit) => {
                            job.await;
                            drop(permit);
                        }
                        Err(error) => {
                            assert!(error.is_full(), "{error:?}");
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    1 => match pool.try_spawn(groups, job).await {
                        Ok(task) => task.await.unwrap(),
                        Err(error) => {
                            assert!(error.is_full(), "{error:?}");
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    2 => {
                        let permit = pool.acquire(groups).await.unwrap();
                        job.await;
                        drop(permit);
                    }
                    _ => pool.spawn(groups, job).await.unwrap().await.unwrap(),
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    pool.flush().await;
    println!("FLEETDONE refused {}", refused.load(Ordering::Relaxed));
}

/// Takes both slots of `db` and queues a waiter for a third, then sleeps (to be killed).
async fn hold_role(pool: RedisPool<String>) {
    let one = pool.try_acquire(["db".to_owned()]).await.unwrap();
    let two = pool.try_acquire(["db".to_owned()]).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(["db".to_owned()]).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop((one, two, waiter));
}

/// Waits for `db`, appends its seed to the list `order` once granted, holds it 200 ms.
async fn wait_role(pool: RedisPool<String>) {
    let permit = pool.acquire(["db".to_owned()]).await.unwrap();
    push_order(&env(SEED)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(permit);
    pool.flush().await;
}

/// Waits for `db` until a line arrives on stdin, then drops the wait and stays alive (so its
/// process renews whatever it still held: nothing, if cancelling worked).
async fn cancel_role(pool: RedisPool<String>) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(());
    });
    tokio::select! {
        permit = pool.acquire(["db".to_owned()]) => {
            drop(permit);
            push_order("cancel-was-granted").await;
        }
        _ = rx => println!("CANCELLED"),
    }
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

/// 30 rounds of waiting for the groups in `TASKHERD_FLEET_GROUPS` (comma separated).
async fn cross_role(pool: RedisPool<String>) {
    let groups: Vec<String> = env(GROUPS).split(',').map(str::to_owned).collect();
    for _ in 0..30 {
        let task = pool
            .spawn(groups.clone(), tokio::time::sleep(Duration::from_millis(2)))
            .await
            .unwrap();
        task.await.unwrap();
    }
    pool.flush().await;
    println!("CROSSDONE");
}

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn push_order(name: &str) {
    let mut conn = connection(&env(URL)).await;
    let _: i64 = redis::cmd("RPUSH")
        .arg("order")
        .arg(name)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// The keys of pool `name` that hold a holder, a waiter, a count or a queue (the keys that
/// must be gone once nothing runs and nothing waits).
async fn live_keys(server: &Server, name: &str) -> Vec<String> {
    let prefix = format!("taskherd:{{{name}}}:");
    let mut conn = connection(&server.url()).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.into_iter()
        .filter(|key| {
            let suffix = &key[prefix.len()..];
            ["h", "hg", "wl", "run", "res", "qt", "qg"].contains(&suffix)
                || suffix.starts_with("w:")
                || suffix.starts_with("q:")
        })
        .collect()
}

/// The largest number of logged intervals that share an instant; ends sort before starts at
/// equal times (see the module docs).
fn max_overlap(mut events: Vec<(u128, i32)>) -> i32 {
    events.sort_unstable();
    let (mut now, mut max) = (0, 0);
    for (_, delta) in events {
        now += delta;
        max = max.max(now);
    }
    assert_eq!(now, 0);
    max
}

async fn until<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    for _ in 0..1000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

/// Issue #12: 4 worker processes, random admissions of 1-3 of 8 groups plus the total, try and
/// waiting mixed; the overlap per group computed from their logs never exceeds its limit, and
/// Redis holds no holder, waiter, count or queue after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_worker_processes_never_exceed_a_limit() {
    let server = Server::start();
    let pool = support::pool(&server, "fleet", Duration::from_secs(5)).await;
    pool.set_limits(
        LimitChanges::new()
            .max_tasks(6)
            .default_limit(2)
            .limit("g0", 1),
    )
    .await
    .unwrap();
    let seeds = (0..4u64).map(|seed| [(SEED, seed.to_string())]);
    let outputs = run_all(seeds.map(|env| worker("fleet", &server, "fleet", &env))).await;

    let mut events: HashMap<String, Vec<(u128, i32)>> = HashMap::new();
    let (mut holders, mut refused) = (0, 0);
    for output in &outputs {
        assert!(output.status.success(), "a worker failed: {output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("FLEETDONE"), "{stdout}");
        for line in stdout.lines() {
            // The first line printed follows libtest's `test worker_process ... `.
            let at = line.find("FLEET").unwrap_or(line.len());
            let mut words = line[at..].split_whitespace();
            match words.next() {
                Some("FLEETLOG") => {
                    let start: u128 = words.next().unwrap().parse().unwrap();
                    let end: u128 = words.next().unwrap().parse().unwrap();
                    let groups = words.next().unwrap().split(',').chain(["total"]);
                    for group in groups {
                        let list = events.entry(group.to_owned()).or_default();
                        list.push((start, 1));
                        list.push((end, -1));
                    }
                    holders += 1;
                }
                Some("FLEETDONE") => refused += words.nth(1).unwrap().parse::<usize>().unwrap(),
                _ => {}
            }
        }
    }
    let limit = |group: &str| match group {
        "total" => 6,
        "g0" => 1,
        _ => 2,
    };
    let mut maxima: Vec<(String, i32)> = events
        .into_iter()
        .map(|(group, events)| (group, max_overlap(events)))
        .collect();
    maxima.sort();
    println!("{holders} holders, {refused} refused; maximum overlap per group: {maxima:?}");
    for (group, max) in &maxima {
        assert!(*max <= limit(group), "{group}: {max} at once");
    }
    // 16 clients over 4 processes and 8 groups contend: the total was shared.
    assert!(maxima.iter().any(|(g, max)| g == "total" && *max >= 2));
    assert_eq!(holders + refused, 4 * CLIENTS as usize * OPS as usize);
    assert_eq!(live_keys(&server, "fleet").await, Vec::<String>::new());
    let total = pool.total_stats().await.unwrap();
    assert_eq!((total.running, total.waiting), (0, 0));
}

/// Issue #12, semantics 2: a worker holding both slots of `db` (and queued for a third) is
/// killed with `kill -9`. Its live lease kept the slots for 1.5 leases before; at half the
/// lease after the kill they are still taken; within the lease plus slack they come back, and
/// its waiter does not keep them for another lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_gives_its_slots_back_after_its_lease_and_not_before() {
    let lease = Duration::from_secs(2);
    // The reaper runs every 500 ms, and this loop tries every 20 ms.
    let slack = Duration::from_secs(1);
    let server = Server::start();
    let pool = support::pool(&server, "kill", lease).await;
    pool.set_limit("db", 2).await.unwrap();
    let mut child = Worker(
        worker(
            "hold",
            &server,
            "kill",
            &[(LEASE_MS, lease.as_millis().to_string())],
        )
        .spawn()
        .unwrap(),
    );
    until("the worker holds 2 and waits for 1", async || {
        let stats = pool.stats(&"db").await.unwrap();
        (stats.running, stats.waiting) == (2, 1)
    })
    .await;
    // Alive, its renewals keep the slots past the lease.
    tokio::time::sleep(lease * 3 / 2).await;
    assert!(pool.try_acquire(["db"]).await.unwrap_err().is_full());

    child.0.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    child.0.wait().unwrap();
    // Its last renewal was at most lease / 3 before the kill: the leases run until at least
    // 2/3 of a lease after it.
    tokio::time::sleep(lease / 2).await;
    let early = pool.try_acquire(["db"]).await.unwrap_err();
    assert!(early.is_full() && !early.is_unavailable(), "{early:?}");

    let mut permits = Vec::new();
    while permits.len() < 2 {
        match pool.try_acquire(["db"]).await {
            Ok(permit) => permits.push(permit),
            Err(error) => assert!(error.is_full(), "{error:?}"),
        }
        assert!(
            killed.elapsed() < lease + slack,
            "the slots did not come back within lease + slack"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = killed.elapsed();
    println!("slots back {back:?} after kill -9 (lease {lease:?})");
    assert!(back >= lease / 2);
    let stats = pool.stats(&"db").await.unwrap();
    assert_eq!((stats.running, stats.waiting), (2, 0));
    drop(permits);
    pool.flush().await;
    assert_eq!(live_keys(&server, "kill").await, Vec::<String>::new());
}

/// Issue #12, semantics 4 and 6: Redis stops and a new one (no persistence) starts on the same
/// port. While down, admissions are *unavailable* (not full) with the work handed back, and
/// once no renewal has been confirmed for 90% of a lease the leases are presumed lost (fail
/// closed: permits' `lost()`, `lost_leases()`, tasks aborted), whether or not Redis comes back;
/// the same pools admit again once the limits are written again, and the holders with live
/// leases never exceed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_reports_lost_leases_and_the_same_pools_recover() {
    let lease = Duration::from_millis(1500);
    let mut server = Server::start();
    let port = server.port;
    let one = support::pool(&server, "restart", lease).await;
    let two = support::pool(&server, "restart", lease).await;
    let limits = || LimitChanges::new().max_tasks(4).limit("db", 2);
    one.set_limits(limits()).await.unwrap();
    let held_one = one.try_acquire(["db"]).await.unwrap();
    let held_two = two.try_acquire(["db"]).await.unwrap();
    let task = one
        .try_spawn(["job"], std::future::pending::<()>())
        .await
        .unwrap();

    server.stop();
    let error = one.try_acquire(["db"]).await.unwrap_err();
    assert!(error.is_unavailable() && !error.is_full(), "{error:?}");
    let error = two.try_spawn(["db"], async { 7 }).await.unwrap_err();
    assert!(error.is_unavailable() && !error.is_full(), "{error:?}");
    assert_eq!(error.into_inner().await, 7, "the work is handed back");
    let error = two.acquire(["db"]).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(one.stats(&"db").await.is_err());

    // Redis cannot renew the leases: before they could have expired there, every process
    // presumes them lost and stops the work they guard.
    let noticed = async {
        held_one.lost().await;
        held_two.lost().await;
    };
    tokio::time::timeout(lease, noticed)
        .await
        .expect("a lease was not presumed lost within the lease while Redis was down");
    let aborted = tokio::time::timeout(lease, task)
        .await
        .expect("the task of a lease presumed lost kept running");
    assert!(aborted.unwrap_err().is_cancelled());
    assert_eq!((one.lost_leases(), two.lost_leases()), (2, 1));

    let server = Server::start_on(port);
    // The new server knows no limits: whoever configures the fleet writes them again.
    until("the pool reconnects", async || {
        two.set_limits(limits()).await.is_ok()
    })
    .await;
    // Each lease was counted lost once.
    tokio::time::sleep(lease / 2).await;
    assert_eq!((one.lost_leases(), two.lost_leases()), (2, 1));

    // The same pools admit again; holders with live leases never exceed the limit of `db`.
    let live = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..6 {
        let pool = if i % 2 == 0 { one.clone() } else { two.clone() };
        let (live, peak) = (Arc::clone(&live), Arc::clone(&peak));
        clients.push(tokio::spawn(async move {
            for _ in 0..10 {
                let permit = pool.acquire(["db"]).await.unwrap();
                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(3)).await;
                live.fetch_sub(1, Ordering::SeqCst);
                assert!(!permit.is_lost());
                drop(permit);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    drop((held_one, held_two));
    one.flush().await;
    two.flush().await;
    assert_eq!(live_keys(&server, "restart").await, Vec::<String>::new());
}

/// Redis restarts without its data while a waiter queues behind a full group: the limits are
/// gone with the data. A process that saw them set admits nothing into the pool without them
/// (`is_forgotten()`), its waiter included, which would otherwise queue again into the
/// unlimited pool and be admitted at once (a whole fleet's queue did: peaks of 27 against a
/// limit of 1, found by a review of `taskherd run --redis`); once any process sets the limits
/// again, admissions go on under them. A process that started after the loss and never saw the
/// limits set cannot know them: it admits, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_limits_redis_lost_admits_nothing_until_they_are_set_again() {
    let lease = Duration::from_millis(1500);
    let mut server = Server::start();
    let port = server.port;
    let one = support::pool(&server, "forgotten", lease).await;
    let two = support::pool(&server, "forgotten", lease).await;
    one.set_limit("db", 1).await.unwrap();
    let held = one.try_acquire(["db"]).await.unwrap();
    let waiting = tokio::spawn({
        let two = two.clone();
        async move { two.acquire(["db"]).await }
    });
    until("the waiter queues", async || {
        one.waiting_len().await.unwrap() == 1
    })
    .await;

    server.stop();
    let _server = Server::start_on(port);
    let forgotten = |error: &dyn std::error::Error| {
        error
            .source()
            .and_then(|source| source.downcast_ref::<taskherd_redis::UnavailableError>())
            .is_some_and(taskherd_redis::UnavailableError::is_forgotten)
    };
    // The waiter's place is gone with the data; it fails rather than being admitted.
    let outcome = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiter neither failed nor was admitted")
        .unwrap();
    let error = match outcome {
        Ok(_) => panic!("a waiter was admitted into a pool whose limits Redis had lost"),
        Err(error) => error,
    };
    assert!(error.is_unavailable() && forgotten(&error), "{error}");
    assert!(
        error.to_string().contains("lost this pool's data"),
        "{error}"
    );
    // Once reconnected, every admission of the processes that saw the limits is refused so.
    until("the pool reconnects", async || {
        one.try_acquire(["db"])
            .await
            .is_err_and(|error| forgotten(&error))
    })
    .await;
    let error = two.try_spawn(["other"], async { 7 }).await.unwrap_err();
    assert!(forgotten(&error), "{error}");
    assert_eq!(error.into_inner().await, 7, "the work is handed back");
    assert_eq!(two.len().await.unwrap(), 0);
    // A process that never saw the limits set has nothing to hold on to.
    let newcomer = support::pool(&_server, "forgotten", lease).await;
    drop(newcomer.try_acquire(["db"]).await.unwrap());
    newcomer.flush().await;

    // The limits set again (by any process): admissions go on under them.
    two.set_limit("db", 1).await.unwrap();
    let first = one.try_acquire(["db"]).await.unwrap();
    let error = two.try_acquire(["db"]).await.unwrap_err();
    assert!(error.is_full(), "{error}");
    drop((first, held));
}

/// `restore_limits`: written when the pool is built into a Redis that has none, left alone
/// while Redis keeps the limits (a change made at run time stays), and written again by the
/// first admission that finds them lost, which then goes on under them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_limits_are_written_into_a_pool_without_limits_and_admit_under_them() {
    let lease = Duration::from_millis(1500);
    let mut server = Server::start();
    let port = server.port;
    let restoring = async |server: &Server| {
        taskherd_redis::RedisPool::<&'static str>::builder(&server.url(), "restore")
            .lease(lease)
            .restore_limits(LimitChanges::new().max_tasks(5).limit("db", 1))
            .build()
            .await
            .unwrap()
    };
    let one = restoring(&server).await;
    let other = support::pool(&server, "restore", lease).await;
    assert_eq!(other.limit(&"db").await.unwrap(), Some(1));
    assert_eq!(other.max_tasks().await.unwrap(), Some(5));
    // Changed at run time: a process built now leaves it as it is.
    other.set_limit("db", 2).await.unwrap();
    let two = restoring(&server).await;
    assert_eq!(other.limit(&"db").await.unwrap(), Some(2));
    other.set_limit("db", 1).await.unwrap();

    server.stop();
    let server = Server::start_on(port);
    // The first admission after the loss writes the limits again and is admitted under them.
    let held = loop {
        match one.try_acquire(["db"]).await {
            Ok(permit) => break permit,
            Err(error) => {
                assert!(error.is_unavailable(), "{error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    for pool in [&other, &two] {
        until("the pool reconnects", async || pool.len().await.is_ok()).await;
    }
    assert_eq!(other.limit(&"db").await.unwrap(), Some(1));
    assert_eq!(other.max_tasks().await.unwrap(), Some(5));
    assert!(two.try_acquire(["db"]).await.unwrap_err().is_full());
    assert!(other.try_acquire(["db"]).await.unwrap_err().is_full());
    drop(held);
    one.flush().await;
    drop(two.try_acquire(["db"]).await.unwrap());
    two.flush().await;
    assert_eq!(live_keys(&server, "restore").await, Vec::<String>::new());
}

/// `restore_limits` writes, at build, only into a pool without limits, checked in the same
/// script call as the write: not over limits a release that did not mark `cfg` wrote (`lim` alone), nor into
/// a pool whose limits were all cleared on purpose (`cfg` alone). Its first version checked in
/// one call and wrote in another, and took `lim` alone for "no limits" (found by a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_limits_never_overwrite_limits_that_are_there() {
    let server = Server::start();
    let restoring = async |name: &str| {
        taskherd_redis::RedisPool::<&'static str>::builder(&server.url(), name)
            .restore_limits(LimitChanges::new().limit("db", 1))
            .build()
            .await
            .unwrap()
    };
    // What an earlier release's `set_limit("db", 3)` left: `lim` only.
    server
        .cmd(&["HSET", "taskherd:{old}:lim", "g:db", "3"])
        .unwrap();
    let _restored = restoring("old").await;
    let plain = support::pool(&server, "old", Duration::from_secs(3)).await;
    assert_eq!(plain.limit(&"db").await.unwrap(), Some(3));
    // Every limit cleared on purpose: the pool stays without.
    let cleared = support::pool(&server, "cleared", Duration::from_secs(3)).await;
    cleared.set_limit("db", 2).await.unwrap();
    cleared.clear_limit(&"db").await.unwrap();
    let _restored = restoring("cleared").await;
    assert_eq!(cleared.limit(&"db").await.unwrap(), None);
    // The same by hand: written into a pool without limits only, the first writer wins.
    let fresh = support::pool(&server, "fresh", Duration::from_secs(3)).await;
    let restore = |limit| fresh.restore_limits(LimitChanges::new().limit("db", limit));
    assert!(restore(1).await.unwrap());
    assert!(!restore(2).await.unwrap());
    assert_eq!(fresh.limit(&"db").await.unwrap(), Some(1));
    // `fill_limits`: each limit only where the pool has none.
    fresh
        .fill_limits(
            LimitChanges::new()
                .max_tasks(5)
                .limit("db", 2)
                .limit("web", 3),
        )
        .await
        .unwrap();
    assert_eq!(fresh.limit(&"db").await.unwrap(), Some(1));
    assert_eq!(fresh.limit(&"web").await.unwrap(), Some(3));
    assert_eq!(fresh.max_tasks().await.unwrap(), Some(5));
}

/// After a loss of Redis's data, a process that knows only some of the limits writes them
/// (here one built after the loss). The pool's "limits set" mark was one bit: a process built
/// with `restore_limits` that saw the old limits then found limits set, wrote nothing, and
/// admitted twice into `db` (limit 1) while only `web`'s limit was back. The limits carry a
/// generation now: it finds another than the one it saw, writes its own where the pool has
/// none (`web`'s, written after the loss, stays), then admits. A process with nothing to
/// restore goes on under what is there, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_limits_are_filled_in_after_another_process_wrote_some_after_the_loss() {
    let server = Server::start();
    let lease = Duration::from_secs(10);
    let restoring = RedisPool::<&'static str>::builder(&server.url(), "generation")
        .lease(lease)
        .restore_limits(LimitChanges::new().limit("db", 1).limit("web", 1))
        .build()
        .await
        .unwrap();
    let plain = support::pool(&server, "generation", lease).await;
    assert_eq!(plain.limit(&"db").await.unwrap(), Some(1));
    assert!(server.cmd(&["FLUSHALL"]).unwrap().starts_with("+OK"));
    let newcomer = support::pool(&server, "generation", lease).await;
    newcomer.set_limit("web", 3).await.unwrap();

    let held = restoring.try_acquire(["db"]).await.unwrap();
    let error = restoring.try_acquire(["db"]).await.unwrap_err();
    assert!(error.is_full(), "{error}");
    assert!(plain.try_acquire(["db"]).await.unwrap_err().is_full());
    assert_eq!(
        (restoring.limits_restored(), plain.limits_restored()),
        (1, 0)
    );
    assert_eq!(newcomer.limit(&"db").await.unwrap(), Some(1));
    assert_eq!(newcomer.limit(&"web").await.unwrap(), Some(3));
    drop(held);

    // The same when the process that saw the limits is the one writing some after the loss,
    // and when its first call after it is a read: the rest is written before it answers.
    assert!(server.cmd(&["FLUSHALL"]).unwrap().starts_with("+OK"));
    restoring.set_limit("web", 2).await.unwrap();
    assert_eq!(newcomer.limit(&"db").await.unwrap(), Some(1));
    assert_eq!(newcomer.limit(&"web").await.unwrap(), Some(2));
    assert!(server.cmd(&["FLUSHALL"]).unwrap().starts_with("+OK"));
    newcomer.set_limit("web", 3).await.unwrap();
    assert_eq!(restoring.limit(&"db").await.unwrap(), Some(1));
    assert_eq!(restoring.stats(&"web").await.unwrap().limit, Some(3));
    assert_eq!(restoring.limits_restored(), 3);
    restoring.flush().await;
}

/// Found by a review of the generations: a process with limits to restore whose own first
/// write after a loss is a "no limit" keeps it (the write started the new generation, and
/// the limits to restore, filled in after it, put the limit back); a statistics read that
/// catches up reads again and names the limit filled in; and a pool whose `cfg` an earlier
/// version wrote (`1`, which such a version writes again after a loss) gets a generation of
/// its own at the first write, so that a loss after it is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_after_a_loss_catch_up_first() {
    let server = Server::start();
    let lease = Duration::from_secs(10);
    let restoring = async |name: &str| {
        RedisPool::<&'static str>::builder(&server.url(), name)
            .lease(lease)
            .restore_limits(LimitChanges::new().limit("db", 1).limit("web", 1))
            .build()
            .await
            .unwrap()
    };
    let pool = restoring("catch-up").await;
    let other = support::pool(&server, "catch-up", lease).await;
    assert!(server.cmd(&["FLUSHALL"]).unwrap().starts_with("+OK"));
    pool.clear_limit(&"db").await.unwrap();
    assert_eq!(other.limit(&"db").await.unwrap(), None);
    assert_eq!(other.limit(&"web").await.unwrap(), Some(1));
    assert_eq!(pool.limits_restored(), 1);

    assert!(server.cmd(&["FLUSHALL"]).unwrap().starts_with("+OK"));
    other.set_limit("db", 3).await.unwrap();
    assert_eq!(pool.stats(&"web").await.unwrap().limit, Some(1));
    assert_eq!(pool.limit(&"db").await.unwrap(), Some(3));

    // `cfg` as an earlier version wrote it.
    assert!(
        server
            .cmd(&["SET", "taskherd:{legacy}:cfg", "1"])
            .unwrap()
            .starts_with("+OK")
    );
    let legacy = restoring("legacy").await;
    legacy.set_limit("web", 1).await.unwrap();
    assert!(server.cmd(&["FLUSHALL"]).unwrap().starts_with("+OK"));
    // What an earlier version writes back after the loss: `web` alone, `cfg` 1.
    server
        .cmd(&["HSET", "taskherd:{legacy}:lim", "g:web", "3"])
        .unwrap();
    server.cmd(&["SET", "taskherd:{legacy}:cfg", "1"]).unwrap();
    let held = legacy.try_acquire(["db"]).await.unwrap();
    assert!(legacy.try_acquire(["db"]).await.unwrap_err().is_full());
    drop(held);
    // A `cfg` that is no generation (written by something else: not a whole number, too
    // large for a Lua number to hold exactly) reads as generation 1, which a write replaces:
    // no endless catching up, no reply the client cannot read.
    for odd in ["2.5", "1e300", "0", "-3", "x"] {
        assert!(
            server
                .cmd(&["SET", "taskherd:{legacy}:cfg", odd])
                .unwrap()
                .starts_with("+OK")
        );
        legacy.set_limit("db", 1).await.unwrap();
        assert_eq!(legacy.limit(&"web").await.unwrap(), Some(3), "cfg {odd}");
        drop(legacy.try_acquire(["db"]).await.unwrap());
    }
    for pool in [&pool, &legacy] {
        pool.flush().await;
    }
}

/// `restore_limits_with`: the limits written back after a loss are those its function gives
/// then (changed since the pool was built); a panic in it fails the call that needed them, as
/// unavailable, and the pool goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_limits_with_writes_what_its_function_gives_at_the_loss() {
    let server = Server::start();
    let limit = Arc::new(AtomicUsize::new(1));
    let panics = Arc::new(AtomicUsize::new(0));
    let pool = RedisPool::<&'static str>::builder(&server.url(), "restore-with")
        .restore_limits_with({
            let (limit, panics) = (Arc::clone(&limit), Arc::clone(&panics));
            move || {
                if panics.load(Ordering::Relaxed) > 0 {
                    panics.fetch_sub(1, Ordering::Relaxed);
                    panic!("restore_limits_with test panic");
                }
                LimitChanges::new().limit("db", limit.load(Ordering::Relaxed))
            }
        })
        .build()
        .await
        .unwrap();
    let other = support::pool(&server, "restore-with", Duration::from_secs(10)).await;
    assert_eq!(other.limit(&"db").await.unwrap(), Some(1));
    limit.store(2, Ordering::Relaxed);
    pool.set_limit("db", 2).await.unwrap();

    assert!(server.cmd(&["FLUSHALL"]).unwrap().starts_with("+OK"));
    panics.store(1, Ordering::Relaxed);
    let error = pool.try_spawn(["db"], async { 7 }).await.unwrap_err();
    assert!(error.is_unavailable() && !error.is_full(), "{error}");
    assert_eq!(error.into_inner().await, 7, "the work is handed back");
    let first = pool.try_acquire(["db"]).await.unwrap();
    let second = pool.try_acquire(["db"]).await.unwrap();
    assert!(pool.try_acquire(["db"]).await.unwrap_err().is_full());
    assert_eq!(other.limit(&"db").await.unwrap(), Some(2));
    drop((first, second));
    pool.flush().await;
}

/// A pool whose limits an earlier release wrote back after the loss (`lim` without `cfg`) has
/// its limits: the processes that saw them set admit again (they refused everything, as
/// forgotten, in the first version; found by a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_written_back_by_an_earlier_release_end_the_refusals() {
    let mut server = Server::start();
    let port = server.port;
    let pool = support::pool(&server, "mixed", Duration::from_secs(3)).await;
    pool.set_limit("db", 1).await.unwrap();
    server.stop();
    let server = Server::start_on(port);
    server
        .cmd(&["HSET", "taskherd:{mixed}:lim", "g:db", "1"])
        .unwrap();
    let held = loop {
        match pool.try_acquire(["db"]).await {
            Ok(permit) => break permit,
            Err(error) => {
                assert!(
                    error.is_unavailable() && !error.to_string().contains("lost this pool's"),
                    "{error}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert!(pool.try_acquire(["db"]).await.unwrap_err().is_full());
    drop(held);
}

/// A process that has only read the limits (built before they were set, no admission since)
/// has seen them set: after the loss its reads and admissions fail as forgotten instead of
/// reading "no limit" and admitting twice into `db` (limit 1; found by a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_read_the_limits_fails_closed_after_the_loss() {
    let mut server = Server::start();
    let port = server.port;
    let reader = support::pool(&server, "read", Duration::from_secs(3)).await;
    let admin = support::pool(&server, "read", Duration::from_secs(3)).await;
    admin.set_limit("db", 1).await.unwrap();
    assert_eq!(reader.limit(&"db").await.unwrap(), Some(1));
    server.stop();
    let _server = Server::start_on(port);
    until("the limit read fails as forgotten", async || {
        reader
            .limit(&"db")
            .await
            .is_err_and(|error| error.is_forgotten())
    })
    .await;
    let error = reader.try_acquire(["db"]).await.unwrap_err();
    assert!(
        error.to_string().contains("lost this pool's data"),
        "{error}"
    );
}

/// Statistics name the limit in force, so after the loss they fail as forgotten like the
/// limit reads, instead of showing a pool without limits (`effective_limit` said `Ok(None)`,
/// `stats` and `total_stats` a `limit` of `None`; found by a review), and a process that has
/// only read statistics has seen the limits set. Reads of counts alone (`len`, `task_count`)
/// go on. Once the limits are written again, they read as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_fail_as_forgotten_after_the_loss() {
    let server = Server::start();
    let admin = support::pool(&server, "stats-lost", Duration::from_secs(10)).await;
    let reader = support::pool(&server, "stats-lost", Duration::from_secs(10)).await;
    let limits = || {
        LimitChanges::new()
            .max_tasks(3)
            .default_limit(2)
            .limit("a", 1)
    };
    admin.set_limits(limits()).await.unwrap();
    assert_eq!(reader.stats(&"a").await.unwrap().limit, Some(1));
    assert_eq!(admin.effective_limit(&"b").await.unwrap(), Some(2));
    assert_eq!(admin.total_stats().await.unwrap().limit, Some(3));
    assert!(server.cmd(&["FLUSHALL"]).unwrap().starts_with("+OK"));
    for pool in [&admin, &reader] {
        let forgotten = |error: taskherd_redis::UnavailableError| error.is_forgotten();
        assert!(pool.effective_limit(&"a").await.is_err_and(forgotten));
        assert!(pool.stats(&"a").await.is_err_and(forgotten));
        assert!(pool.total_stats().await.is_err_and(forgotten));
        // Counts alone are true: nothing runs.
        assert_eq!(pool.len().await.unwrap(), 0);
        assert_eq!(pool.task_count(&"a").await.unwrap(), 0);
    }
    admin.set_limits(limits()).await.unwrap();
    assert_eq!(reader.effective_limit(&"a").await.unwrap(), Some(1));
    assert_eq!(reader.total_stats().await.unwrap().limit, Some(3));
}

/// The list `order` on the server.
async fn order(server: &Server) -> Vec<String> {
    let mut conn = connection(&server.url()).await;
    redis::cmd("LRANGE")
        .arg("order")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Issue #12, semantics 5: a waiter of process A queued before one of process B is granted
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_two_processes_are_granted_in_queue_order() {
    let server = Server::start();
    let pool = support::pool(&server, "fifo", Duration::from_secs(5)).await;
    pool.set_limit("db", 1).await.unwrap();
    let held = pool.try_acquire(["db"]).await.unwrap();
    let mut children = Vec::new();
    // B before A in spawn order of the names, so that the order is not the names' order.
    for (n, name) in ["b-first", "a-second", "c-third"].into_iter().enumerate() {
        children.push(Worker(
            worker("wait", &server, "fifo", &[(SEED, name.to_owned())])
                .spawn()
                .unwrap(),
        ));
        until("the worker queued", async || {
            pool.stats(&"db").await.unwrap().waiting == n + 1
        })
        .await;
    }
    drop(held);
    for mut child in children {
        let status = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success());
    }
    assert_eq!(order(&server).await, ["b-first", "a-second", "c-third"]);
    assert_eq!(live_keys(&server, "fifo").await, Vec::<String>::new());
}

/// Issue #12, semantics 5: a process that drops its wait leaves the queue at once (its process
/// stays alive with a long lease, so no expiry explains it): the waiter of another process
/// queued behind it gets the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_cancelled_in_one_process_lets_another_process_through() {
    let lease = Duration::from_secs(30);
    let server = Server::start();
    let pool = support::pool(&server, "cancel", lease).await;
    pool.set_limit("db", 1).await.unwrap();
    let held = pool.try_acquire(["db"]).await.unwrap();
    let lease_ms = (LEASE_MS, lease.as_millis().to_string());
    let mut cancelling = Worker(
        worker("cancel", &server, "cancel", std::slice::from_ref(&lease_ms))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    until("the first worker queued", async || {
        pool.stats(&"db").await.unwrap().waiting == 1
    })
    .await;
    let mut waiting = Worker(
        worker(
            "wait",
            &server,
            "cancel",
            &[lease_ms, (SEED, "second".into())],
        )
        .spawn()
        .unwrap(),
    );
    until("the second worker queued", async || {
        pool.stats(&"db").await.unwrap().waiting == 2
    })
    .await;

    let mut stdin = cancelling.0.stdin.take().unwrap();
    let stdout = cancelling.0.stdout.take().unwrap();
    let cancelled = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        writeln!(stdin, "cancel").unwrap();
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.ends_with("CANCELLED"))
    });
    let cancelled = tokio::time::timeout(Duration::from_secs(30), cancelled).await;
    assert!(cancelled.expect("the worker never cancelled").unwrap());
    until("the cancelled waiter left the queue", async || {
        pool.stats(&"db").await.unwrap().waiting == 1
    })
    .await;
    drop(held);
    let status = tokio::task::spawn_blocking(move || waiting.0.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(order(&server).await, ["second"]);
    assert!(cancelling.0.try_wait().unwrap().is_none(), "still alive");
    assert_eq!(live_keys(&server, "cancel").await, Vec::<String>::new());
}

/// Issue #12, semantics 5: three processes waiting on crossing group sets ({a, b}, {b, a},
/// {b, c, a}) with every limit 1 all finish: no deadlock across processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_group_sets_in_three_processes_all_finish() {
    let server = Server::start();
    let pool = support::pool(&server, "cross", Duration::from_secs(5)).await;
    pool.set_limits(LimitChanges::new().default_limit(1))
        .await
        .unwrap();
    let sets = ["a,b", "b,a", "b,c,a"].map(|groups| [(GROUPS, groups.to_owned())]);
    let workers = sets
        .iter()
        .map(|env| worker("cross", &server, "cross", env));
    let outputs = tokio::time::timeout(Duration::from_secs(120), run_all(workers))
        .await
        .expect("crossing waiters deadlocked");
    for output in outputs {
        assert!(output.status.success());
        assert!(String::from_utf8_lossy(&output.stdout).contains("CROSSDONE"));
    }
    let total = pool.total_stats().await.unwrap();
    assert_eq!((total.running, total.waiting, total.admitted), (0, 0, 90));
    assert_eq!(live_keys(&server, "cross").await, Vec::<String>::new());
}
