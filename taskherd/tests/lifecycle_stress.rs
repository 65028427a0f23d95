//! Multi-threaded stress test of the pool's life cycle under load: spawners and permit holders
//! (`try_spawn`, `spawn().await`, `try_acquire`, `acquire().await`, the waiting ones under short
//! timeouts that cancel them anywhere, a grant included) race with a task that keeps closing and
//! reopening the pool, aborting groups and everything, and changing limits. The other stress
//! tests never close the pool; here waiters are failed by `close` while others are granted, and
//! tasks are aborted before, during and after their first poll.
//!
//! Checked throughout: every admitted task or permit counts itself in each of its groups and the
//! total, and no count ever exceeds the largest limit the group can have; a waiting call that
//! fails says the pool was closed, and hands its future back. Checked at the end: after
//! `close` and `wait`, everything drains to zero (`len`, `waiting_len`, every group's and the
//! total's running, waiting and reserved), and every call was accounted for. The whole run must
//! end within a generous timeout (a deadlock or a lost wake-up is a failure).
//!
//! 2,000 operations per actor by default; `TASKHERD_STRESS_TASKS` sets the total across actors,
//! and `TASKHERD_STRESS_SEED` replays a run's random choices (thread timing still varies).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use taskherd::{LimitChanges, TaskPool};
use tokio::task::JoinHandle;

mod tracker;
use tracker::{Tracker, env_or};

const KEYS: u8 = 6;
/// Keys 0, 1 and 2 keep these explicit limits.
const FIXED_LIMITS: [usize; 3] = [1, 2, 2];
/// Key 3's explicit limit moves in `0..=KEY3_MAX`.
const KEY3_MAX: usize = 3;
/// Keys 4 and 5 follow the default limit, which stays at this.
const DEFAULT_LIMIT: usize = 2;
/// The total's limit moves among these.
const MAX_TASKS: [usize; 3] = [0, 4, 8];
const ACTORS: usize = 4;
/// Tasks one actor keeps in flight before it awaits the oldest.
const IN_FLIGHT: usize = 16;

/// The most admissions a group can ever hold at once in this test.
fn bound(key: u8) -> usize {
    match key {
        0..=2 => FIXED_LIMITS[usize::from(key)],
        3 => KEY3_MAX,
        _ => DEFAULT_LIMIT,
    }
}

/// 0 to 3 distinct groups.
fn random_groups(rng: &mut SmallRng) -> Vec<u8> {
    let mut groups: Vec<u8> = (0..rng.random_range(0..=3))
        .map(|_| rng.random_range(0..KEYS))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// The work of a task: counts itself while it runs, yielding `yields` times, then sleeping
/// 200 µs if `yields` is odd.
async fn work(tracker: Arc<Tracker>, groups: Vec<u8>, yields: u32) {
    let _inside = tracker.enter(&groups);
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
    if yields % 2 == 1 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

#[derive(Default, Debug)]
struct Tally {
    spawned: usize,
    refused: usize,
    failed_closed: usize,
    timed_out: usize,
    permits: usize,
    aborted: usize,
}

/// What a refused client does before its next call: wait a little (else most calls would
/// land while the pool is closed or full).
async fn back_off() {
    tokio::time::sleep(Duration::from_micros(100)).await;
}

fn wait_for() -> Duration {
    Duration::from_micros(rand::rng().random_range(0..2_000))
}

async fn actor(pool: TaskPool<u8>, tracker: Arc<Tracker>, ops: usize, seed: u64) -> Tally {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut handles: VecDeque<JoinHandle<()>> = VecDeque::new();
    for _ in 0..ops {
        let groups = random_groups(&mut rng);
        let yields = rng.random_range(0..6);
        match rng.random_range(0..10) {
            0..=2 => {
                let future = work(Arc::clone(&tracker), groups.clone(), yields);
                match pool.try_spawn(groups, future) {
                    Ok(handle) => {
                        tally.spawned += 1;
                        handles.push_back(handle);
                    }
                    Err(error) => {
                        assert!(error.is_full() || error.is_closed(), "{error}");
                        tally.refused += 1;
                        // Handed back untouched: it runs (and counts) nowhere.
                        drop(error.into_inner());
                        back_off().await;
                    }
                }
            }
            3..=5 => {
                let future = work(Arc::clone(&tracker), groups.clone(), yields);
                match tokio::time::timeout(wait_for(), pool.spawn(groups, future)).await {
                    Ok(Ok(handle)) => {
                        tally.spawned += 1;
                        handles.push_back(handle);
                    }
                    Ok(Err(error)) => {
                        assert!(error.is_closed(), "{error}");
                        tally.failed_closed += 1;
                        drop(error.into_inner());
                        back_off().await;
                    }
                    Err(_) => tally.timed_out += 1,
                }
            }
            6 => match pool.try_acquire(groups.clone()) {
                Ok(permit) => {
                    let inside = tracker.enter(&groups);
                    tokio::task::yield_now().await;
                    drop(inside);
                    drop(permit);
                    tally.permits += 1;
                }
                Err(error) => {
                    assert!(error.is_full() || error.is_closed(), "{error}");
                    tally.refused += 1;
                    back_off().await;
                }
            },
            7 => match tokio::time::timeout(wait_for(), pool.acquire(groups.clone())).await {
                Ok(Ok(permit)) => {
                    let inside = tracker.enter(&groups);
                    tokio::task::yield_now().await;
                    drop(inside);
                    drop(permit);
                    tally.permits += 1;
                }
                Ok(Err(error)) => {
                    assert!(error.is_closed(), "{error}");
                    tally.failed_closed += 1;
                    back_off().await;
                }
                Err(_) => tally.timed_out += 1,
            },
            8 => {
                // Aborted wherever it is: not started yet, between yields, or finished.
                if let Some(handle) = handles.pop_front() {
                    handle.abort();
                    match handle.await {
                        Ok(()) => {}
                        Err(error) => {
                            assert!(error.is_cancelled(), "{error}");
                            tally.aborted += 1;
                        }
                    }
                }
            }
            _ => tokio::task::yield_now().await,
        }
        while handles.len() > IN_FLIGHT {
            let outcome = handles.pop_front().unwrap().await;
            if let Err(error) = outcome {
                assert!(error.is_cancelled(), "{error}");
                tally.aborted += 1;
            }
        }
    }
    for handle in handles {
        if let Err(error) = handle.await {
            assert!(error.is_cancelled(), "{error}");
            tally.aborted += 1;
        }
    }
    tally
}

/// Closes and reopens the pool, aborts groups and everything, changes limits, and checks the
/// statistics' bounds, until `done`.
async fn disturber(pool: TaskPool<u8>, done: Arc<AtomicBool>, seed: u64) -> usize {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut rounds = 0;
    while !done.load(Ordering::SeqCst) {
        rounds += 1;
        match rng.random_range(0..10) {
            0 => {
                assert!(pool.close(), "only this task closes the pool");
                tokio::time::sleep(Duration::from_micros(rng.random_range(0..300))).await;
                assert!(pool.reopen());
            }
            3 => {
                pool.abort_group(&rng.random_range(0..KEYS));
            }
            4 if rng.random_bool(0.2) => {
                pool.abort_all();
            }
            1..=2 | 5..=6 => pool.set_limit(3, rng.random_range(0..=KEY3_MAX)),
            7 => pool.set_limits(
                LimitChanges::new()
                    .max_tasks(MAX_TASKS[rng.random_range(0..MAX_TASKS.len())])
                    .limit(3, rng.random_range(0..=KEY3_MAX)),
            ),
            _ => {}
        }
        for key in 0..KEYS {
            let stats = pool.stats(&key);
            assert!(stats.running <= bound(key), "group {key}: {stats:?}");
            assert!(stats.reserved <= stats.waiting, "group {key}: {stats:?}");
        }
        let total = pool.total_stats();
        assert!(total.reserved <= total.waiting, "total: {total:?}");
        tokio::time::sleep(Duration::from_micros(rng.random_range(100..1_000))).await;
    }
    // Left with room for everything, so that the actors' last waits can end.
    pool.set_limits(LimitChanges::new().max_tasks(8).limit(3, KEY3_MAX));
    rounds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reopen_and_aborts_under_load_keep_the_limits_and_drain_to_zero() {
    let ops = env_or("TASKHERD_STRESS_TASKS", 2_000 * ACTORS) / ACTORS;
    let seed = env_or("TASKHERD_STRESS_SEED", rand::rng().random::<u64>());
    eprintln!("TASKHERD_STRESS_SEED={seed}");
    let mut builder = TaskPool::<u8>::builder()
        .max_tasks(8)
        .default_limit(DEFAULT_LIMIT)
        .limit(3, KEY3_MAX);
    for (key, &limit) in FIXED_LIMITS.iter().enumerate() {
        builder = builder.limit(u8::try_from(key).unwrap(), limit);
    }
    let pool = builder.build();
    let bounds: Vec<usize> = (0..KEYS).map(bound).collect();
    let tracker = Arc::new(Tracker::new(&bounds, *MAX_TASKS.iter().max().unwrap()));
    let done = Arc::new(AtomicBool::new(false));

    let run = async {
        let disturbing = tokio::spawn(disturber(pool.clone(), Arc::clone(&done), seed));
        let actors: Vec<_> = (0..ACTORS as u64)
            .map(|i| {
                tokio::spawn(actor(
                    pool.clone(),
                    Arc::clone(&tracker),
                    ops,
                    seed ^ (i + 1),
                ))
            })
            .collect();
        let mut tally = Tally::default();
        for actor in actors {
            let one = actor.await.expect("an actor failed");
            tally.spawned += one.spawned;
            tally.refused += one.refused;
            tally.failed_closed += one.failed_closed;
            tally.timed_out += one.timed_out;
            tally.permits += one.permits;
            tally.aborted += one.aborted;
        }
        done.store(true, Ordering::SeqCst);
        let rounds = disturbing.await.expect("the disturber failed");
        (tally, rounds)
    };
    let (tally, rounds) = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the run did not end: a deadlock or a lost wake-up");
    eprintln!("{tally:?}, {rounds} disturbances");
    // Something of each kind happened (or the test tests less than it says).
    assert!(
        tally.spawned > 0 && tally.permits > 0 && tally.refused > 0 && tally.failed_closed > 0,
        "{tally:?}"
    );
    assert!(rounds > 10, "{rounds} disturbances");

    pool.close();
    tokio::time::timeout(Duration::from_secs(30), pool.wait())
        .await
        .expect("wait() did not end");
    for (key, inside) in tracker.inside.iter().enumerate() {
        assert_eq!(
            inside.load(Ordering::SeqCst),
            0,
            "group {key} still counted"
        );
    }
    assert_eq!(tracker.total.load(Ordering::SeqCst), 0);
    assert_eq!(pool.len(), 0);
    assert_eq!(pool.waiting_len(), 0);
    for key in 0..KEYS {
        let stats = pool.stats(&key);
        assert_eq!(
            (stats.running, stats.waiting, stats.reserved),
            (0, 0, 0),
            "group {key}"
        );
    }
    let total = pool.total_stats();
    assert_eq!((total.running, total.waiting, total.reserved), (0, 0, 0));
}
