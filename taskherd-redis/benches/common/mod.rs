//! Shared by `benches/redis.rs` and `examples/compare_redis.rs`: the workloads, the naive
//! per-key limiter they are compared with, and reading the server's call counts.
//!
//! One *cycle* is a try-admission that succeeds followed by its release having reached Redis:
//! for the pool, `try_acquire` + drop + `flush` (the release is sent in the background, so the
//! cycle waits for it); for the naive limiter, its `INCR`s then its `DECR`s. The pool *as
//! used* (`PoolBackground`) does not wait: `try_acquire` + drop, the releases batched by the
//! pool's releaser, all of them flushed before the run's time is taken. Limits never bind
//! (total 100,000, every group 10,000): the figures are the cost of admitting and releasing.
//! Client `c` names groups `g<c % 8>`, `g<(c + 1) % 8>`…, plus the total for both limiters.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use taskherd::LimitChanges;
use taskherd_redis::RedisPool;

pub const TOTAL_LIMIT: i64 = 100_000;
pub const GROUP_LIMIT: i64 = 10_000;

/// The groups client `client` names when each admission names `groups` of them.
pub fn groups_of(client: usize, groups: usize) -> Vec<String> {
    (0..groups)
        .map(|i| format!("g{}", (client + i) % 8))
        .collect()
}

pub async fn connection(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A pool named `name` with the non-binding limits.
pub async fn pool(url: &str, name: &str, lease: Duration) -> RedisPool<String> {
    let pool = RedisPool::builder(url, name)
        .lease(lease)
        .build()
        .await
        .unwrap();
    pool.set_limits(
        LimitChanges::new()
            .max_tasks(TOTAL_LIMIT as usize)
            .default_limit(GROUP_LIMIT as usize),
    )
    .await
    .unwrap();
    pool
}

/// The contender: one counter per key (`naive:t` and `naive:g:<group>`), `INCR` each key in
/// turn and `DECR` back the ones taken when one is over its limit; `DECR` each on release. No
/// lease, no queue, not atomic (a crash between the calls leaks slots for ever).
#[derive(Clone)]
pub struct Naive {
    conn: MultiplexedConnection,
}

impl Naive {
    pub async fn new(url: &str) -> Self {
        Self {
            conn: connection(url).await,
        }
    }

    fn keys(groups: &[String]) -> impl Iterator<Item = (String, i64)> + '_ {
        std::iter::once(("naive:t".to_owned(), TOTAL_LIMIT)).chain(
            groups
                .iter()
                .map(|group| (format!("naive:g:{group}"), GROUP_LIMIT)),
        )
    }

    /// Takes a slot in the total and every group, or none; `true` if admitted.
    pub async fn try_admit(&self, groups: &[String]) -> bool {
        let mut conn = self.conn.clone();
        let mut taken = Vec::new();
        for (key, limit) in Self::keys(groups) {
            let count: i64 = redis::cmd("INCR")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            taken.push(key);
            if count > limit {
                for key in taken {
                    let _: i64 = redis::cmd("DECR")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
                return false;
            }
        }
        true
    }

    pub async fn release(&self, groups: &[String]) {
        let mut conn = self.conn.clone();
        for (key, _) in Self::keys(groups) {
            let _: i64 = redis::cmd("DECR")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// Which limiter a workload drives.
#[derive(Clone)]
pub enum Limiter {
    Pool(RedisPool<String>),
    PoolBackground(RedisPool<String>),
    Naive(Naive),
}

impl Limiter {
    /// One cycle: admitted, then released (the release has reached Redis when it returns).
    pub async fn cycle(&self, groups: &[String]) {
        match self {
            Self::Pool(pool) => {
                let permit = pool.try_acquire(groups.iter().cloned()).await.unwrap();
                drop(permit);
                pool.flush().await;
            }
            Self::PoolBackground(pool) => {
                drop(pool.try_acquire(groups.iter().cloned()).await.unwrap());
            }
            Self::Naive(naive) => {
                assert!(naive.try_admit(groups).await, "limits never bind here");
                naive.release(groups).await;
            }
        }
    }
}

/// `cycles` cycles spread over `clients` tasks on the current runtime; the time they took.
pub async fn run_cycles(limiter: &Limiter, clients: usize, groups: usize, cycles: u64) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let limiter = limiter.clone();
        let share = cycles / clients as u64 + u64::from((client as u64) < cycles % clients as u64);
        let groups = Arc::new(groups_of(client, groups));
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                limiter.cycle(&groups).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    if let Limiter::PoolBackground(pool) = limiter {
        pool.flush().await;
    }
    start.elapsed()
}

/// Calls per command since the last `CONFIG RESETSTAT`, from `INFO commandstats`
/// (`cmdstat_evalsha:calls=…`), without the `INFO` and `CONFIG` calls of the measurement.
pub async fn command_calls(conn: &mut MultiplexedConnection) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let mut calls = Vec::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, stats)) = rest.split_once(':') else {
            continue;
        };
        if name == "info" || name.starts_with("config") {
            continue;
        }
        let n = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        calls.push((name.to_owned(), n));
    }
    calls.sort();
    calls
}

/// CPU seconds the server has used so far, user and system, all its threads (`INFO cpu`).
pub async fn server_cpu(conn: &mut MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            line.strip_prefix("used_cpu_user:")
                .or_else(|| line.strip_prefix("used_cpu_sys:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// CPU seconds this process has used so far, user and system (`/proc/self/stat`, in clock
/// ticks of 10 ms: measure over a second or more); NaN where that file does not exist.
pub fn own_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // The fields after the command name (which is in parentheses and may hold spaces):
    // utime and stime are the 14th and 15th fields of the line.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

pub async fn reset_stats(conn: &mut MultiplexedConnection) {
    run(conn, &["CONFIG", "RESETSTAT"]).await;
}

/// Sends one command whose reply does not matter (but must not be an error).
async fn run(conn: &mut MultiplexedConnection, args: &[&str]) {
    let _: redis::Value = redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(conn)
        .await
        .unwrap();
}

/// The calls of `command` in `calls`.
pub fn calls_of(calls: &[(String, u64)], command: &str) -> u64 {
    calls
        .iter()
        .find(|(name, _)| name == command)
        .map_or(0, |(_, n)| *n)
}

/// The calls a client sent (`INFO commandstats` also counts the commands scripts run): the
/// only ones the pool and the naive limiter send are these.
pub fn client_calls(calls: &[(String, u64)]) -> u64 {
    ["evalsha", "blpop", "incr", "decr"]
        .iter()
        .map(|command| calls_of(calls, command))
        .sum()
}

/// The commands clients sent since [`log_every_command`] (the slow log keeps top-level
/// commands only, not those a script runs), by name, without `SLOWLOG`, `INFO`, `CONFIG`.
pub async fn logged_commands(conn: &mut MultiplexedConnection) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = Vec::new();
    for args in slowlog(conn).await {
        let name = args.first().cloned().unwrap_or_default().to_lowercase();
        if ["slowlog", "info", "config"].contains(&name.as_str()) {
            continue;
        }
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    counts.sort();
    counts
}

/// The slow log's entries, oldest first, and clears it: each entry's arguments (at most 32:
/// the last then says how many more there were).
async fn slowlog(conn: &mut MultiplexedConnection) -> Vec<Vec<String>> {
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap();
    run(conn, &["SLOWLOG", "RESET"]).await;
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    entries
        .iter()
        .rev()
        .filter_map(|entry| match entry {
            redis::Value::Array(fields) => match fields.get(3) {
                Some(redis::Value::Array(args)) => Some(args.iter().map(text).collect()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Logs every command in the slow log from now on (for [`evalsha_arg_counts`]).
pub async fn log_every_command(conn: &mut MultiplexedConnection) {
    for (name, value) in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "100000"),
    ] {
        run(conn, &["CONFIG", "SET", name, value]).await;
    }
    run(conn, &["SLOWLOG", "RESET"]).await;
}

/// The number of arguments of each `EVALSHA` in the slow log, oldest first (tells a renewal
/// carrying 1,000 ids from a reaper's call), and clears it.
pub async fn evalsha_arg_counts(conn: &mut MultiplexedConnection) -> Vec<usize> {
    let mut counts = Vec::new();
    for args in slowlog(conn).await {
        if !args
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case("evalsha"))
        {
            continue;
        }
        let more = args
            .last()
            .and_then(|last| last.strip_prefix("... ("))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok());
        counts.push(match more {
            Some(more) => args.len() - 1 + more,
            None => args.len(),
        });
    }
    counts
}
