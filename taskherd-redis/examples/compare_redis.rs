//! One run against a local `redis-server` it starts itself (a free port, no persistence):
//! admissions + releases per second of a `RedisPool` and of a naive per-key limiter (`INCR`
//! each key, `DECR` back on refusal, `DECR` on release), with 1, 4 and 16 concurrent clients
//! (tasks on one 2-worker runtime, sharing one connection each) naming 1 and 3 groups plus the
//! total; server calls per admission and per release (`INFO commandstats`); renewal calls per
//! interval for 1,000 held leases; the server's CPU time per cycle (`INFO cpu`: what bounds
//! throughput once the server's one thread is busy, and steadier than throughput on a shared
//! machine) (the slow log, set to log every command, tells a renewal
//! carrying 1,000 ids from a reaper's call). Prints ratios; each throughput is the median of 3
//! measurements interleaved with the other limiters'.
//!
//! ```sh
//! cargo run --release -p taskherd-redis --example compare_redis [seconds per measurement, 1]
//! ```
//!
//! See `benches/common/mod.rs` for what one cycle is.

#[path = "../benches/common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{Limiter, Naive};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .map_or(1.0, |s| s.parse().expect("seconds per measurement"));
    let server = support::Server::start();
    let url = server.url();
    let mut conn = common::connection(&url).await;
    let version: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    let version = version
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .to_owned();
    println!(
        "redis-server {version} on 127.0.0.1:{}, {seconds} s per measurement, median of {ROUNDS}",
        server.port
    );

    println!(
        "\nadmissions + releases per second (cycles/s); server calls per cycle (EVALSHA and \
         BLPOP for taskherd, INCR and DECR for naive); the server's and this process's CPU time per cycle (µs)"
    );
    println!(
        "{:>6} {:>7} {:>10} {:>10} {:>10} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "groups",
        "clients",
        "taskherd",
        "as used",
        "naive",
        "ratio",
        "as used",
        "calls",
        "naive",
        "srv µs",
        "naive",
        "cli µs",
        "naive"
    );
    let pool = common::pool(&url, "compare", Duration::from_secs(15)).await;
    let naive = Naive::new(&url).await;
    for groups in [1, 3] {
        for clients in [1, 4, 16] {
            let limiters = [
                Limiter::Pool(pool.clone()),
                Limiter::PoolBackground(pool.clone()),
                Limiter::Naive(naive.clone()),
            ];
            // Rounds interleave the three, and each figure is the median of its rounds: this
            // machine's speed moves while it runs.
            let mut rounds: [Vec<(f64, f64, f64, f64)>; 3] = Default::default();
            for _ in 0..ROUNDS {
                for (limiter, figures) in limiters.iter().zip(&mut rounds) {
                    figures.push(measure(&mut conn, limiter, clients, groups, seconds).await);
                }
            }
            let [ours, used, theirs] = rounds.map(median);
            println!(
                "{groups:>6} {clients:>7} {:>10.0} {:>10.0} {:>10.0} {:>7.2}x {:>7.2}x {:>6.2} {:>6.2} {:>6.1} {:>6.1} {:>6.1} {:>6.1}",
                ours.0,
                used.0,
                theirs.0,
                ours.0 / theirs.0,
                used.0 / theirs.0,
                ours.1,
                theirs.1,
                ours.2,
                theirs.2,
                ours.3,
                theirs.3
            );
        }
    }

    println!("\nserver calls (slow log, every command), one client, 1,000 of each");
    common::log_every_command(&mut conn).await;
    for groups in [1, 3] {
        println!("  {groups} group(s) plus the total:");
        let groups = common::groups_of(0, groups);
        let n = 1000u64;
        let _ = common::logged_commands(&mut conn).await;
        let mut permits = Vec::new();
        for _ in 0..n {
            permits.push(pool.try_acquire(groups.iter().cloned()).await.unwrap());
        }
        report(
            "try-admission",
            &common::logged_commands(&mut conn).await,
            n,
        );
        for permit in permits.drain(..) {
            drop(permit);
            pool.flush().await;
        }
        report(
            "release, each flushed",
            &common::logged_commands(&mut conn).await,
            n,
        );
        for _ in 0..n {
            permits.push(pool.try_acquire(groups.iter().cloned()).await.unwrap());
        }
        let _ = common::logged_commands(&mut conn).await;
        permits.clear();
        pool.flush().await;
        report(
            "release, 1,000 dropped at once",
            &common::logged_commands(&mut conn).await,
            n,
        );
        let keys = 1 + groups.len();
        println!(
            "    naive limiter: {keys} to admit (one INCR per key), {keys} to release, up to \
             {} to refuse (at the last key)",
            2 * keys
        );
    }

    let lease = Duration::from_millis(1500);
    let interval = lease / 3;
    println!("\nrenewals: 1,000 held leases, lease {lease:?} (renewed every {interval:?})");
    let renewing = common::pool(&url, "renewal", lease).await;
    let mut held = Vec::new();
    for i in 0..1000 {
        let groups = common::groups_of(i, 1);
        held.push(renewing.try_acquire(groups).await.unwrap());
    }
    // Past the first tick, so the window holds whole intervals.
    tokio::time::sleep(interval / 2).await;
    let _ = common::logged_commands(&mut conn).await;
    common::reset_stats(&mut conn).await;
    let window = interval * 10;
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = start.elapsed();
    let calls = common::command_calls(&mut conn).await;
    let args = common::evalsha_arg_counts(&mut conn).await;
    let renewals = args.iter().filter(|&&n| n >= 1000).count();
    let intervals = elapsed.as_secs_f64() / interval.as_secs_f64();
    println!(
        "  {renewals} renewal calls (EVALSHA with >= 1,000 arguments) in {elapsed:.2?} = {:.2} \
         per interval; client calls in the window, every pool of this process: {} EVALSHA, \
         {} BLPOP",
        renewals as f64 / intervals,
        common::calls_of(&calls, "evalsha"),
        common::calls_of(&calls, "blpop"),
    );
    println!(
        "  (the other EVALSHAs are the reapers, every 500 ms per pool; BLPOP is each pool's \
         wake-up list, 1 s timeout)"
    );
    drop(held);
    renewing.flush().await;
    pool.flush().await;
}

/// Measurements of each figure; the median is printed.
const ROUNDS: usize = 3;

/// The measurement with the median rate.
fn median(mut figures: Vec<(f64, f64, f64, f64)>) -> (f64, f64, f64, f64) {
    figures.sort_by(|a, b| a.0.total_cmp(&b.0));
    figures[figures.len() / 2]
}

/// Cycles per second over about `seconds`, server calls per cycle, and the server's and this
/// process's CPU time per cycle in microseconds.
async fn measure(
    conn: &mut redis::aio::MultiplexedConnection,
    limiter: &Limiter,
    clients: usize,
    groups: usize,
    seconds: f64,
) -> (f64, f64, f64, f64) {
    // Warm up, and size the run from it.
    let warm = common::run_cycles(limiter, clients, groups, 200).await;
    let cycles = ((seconds / warm.as_secs_f64()) * 200.0).max(200.0) as u64;
    common::reset_stats(conn).await;
    let cpu = common::server_cpu(conn).await;
    let own = common::own_cpu();
    let took = common::run_cycles(limiter, clients, groups, cycles).await;
    let own = common::own_cpu() - own;
    let cpu = common::server_cpu(conn).await - cpu;
    let calls = common::client_calls(&common::command_calls(conn).await);
    (
        cycles as f64 / took.as_secs_f64(),
        calls as f64 / cycles as f64,
        cpu * 1e6 / cycles as f64,
        own * 1e6 / cycles as f64,
    )
}

/// The slow log also lists the commands scripts run: every command but `EVALSHA` here is one.
fn report(what: &str, calls: &[(String, u64)], n: u64) {
    let all: u64 = calls.iter().map(|(_, n)| n).sum();
    let evalsha = common::calls_of(calls, "evalsha");
    println!(
        "    {what}: {:.3} server calls (EVALSHA) per call; the scripts ran {:.1} commands \
         inside per call",
        evalsha as f64 / n as f64,
        (all - evalsha) as f64 / n as f64,
    );
}
