//! Multi-threaded stress test of waiting admission.
//!
//! Thousands of tasks (5,000 by default; set `TASKHERD_STRESS_TASKS` for more) wait with
//! `spawn().await` and `acquire().await` for crossing random group sets over six keys with small
//! limits, some of them under short `tokio::time::timeout`s that cancel them while they wait,
//! a few with `try_spawn`/`try_acquire`, while another task keeps raising and lowering limits.
//! Every admitted task or permit tracks the concurrency of each of its groups with atomics and
//! asserts that it never exceeds the largest limit that group can have. The whole run must end
//! within a generous timeout (a deadlock or a lost wake-up is a failure) and the pool must drain
//! to zero.
//!
//! `TASKHERD_STRESS_SEED` replays a run's random choices (thread timing still varies).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use taskherd::TaskPool;

const KEYS: u8 = 6;
/// Keys 0, 1 and 2 have these explicit limits for the whole run: asserted exactly.
const FIXED_LIMITS: [usize; 3] = [1, 2, 2];
/// Keys 3 and 4 get explicit limits in `0..=CHANGING_MAX` from the limit changer, or lose them
/// and fall back to the default; key 5 never has an explicit limit. The default limit moves in
/// `1..=CHANGING_MAX`. So no admission in keys 3..6 can exceed `CHANGING_MAX`.
const CHANGING_MAX: usize = 3;
/// The total's limit moves among these.
const MAX_TASKS: [usize; 3] = [4, 8, 12];
const MAX_TASKS_BOUND: usize = 12;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The most tasks a group can ever hold at once in this test.
fn bound(key: u8) -> usize {
    match FIXED_LIMITS.get(usize::from(key)) {
        Some(&limit) => limit,
        None => CHANGING_MAX,
    }
}

/// Concurrency of every group, counted from inside admitted work.
struct Tracker {
    /// The most tasks each group may ever hold at once.
    bounds: [usize; KEYS as usize],
    total_bound: usize,
    inside: [AtomicUsize; KEYS as usize],
    total: AtomicUsize,
    peak: [AtomicUsize; KEYS as usize],
    peak_total: AtomicUsize,
}

impl Tracker {
    fn new(bounds: [usize; KEYS as usize], total_bound: usize) -> Self {
        Self {
            bounds,
            total_bound,
            inside: [const { AtomicUsize::new(0) }; KEYS as usize],
            total: AtomicUsize::new(0),
            peak: [const { AtomicUsize::new(0) }; KEYS as usize],
            peak_total: AtomicUsize::new(0),
        }
    }

    /// Counts admitted work in `groups` (distinct); call right after admission, and drop the
    /// guard before the admission is released.
    fn enter(self: &Arc<Self>, groups: &[u8]) -> Inside {
        let total = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_total.fetch_max(total, Ordering::SeqCst);
        assert!(
            total <= self.total_bound,
            "{total} tasks inside, max_tasks is at most {}",
            self.total_bound
        );
        for &key in groups {
            let k = usize::from(key);
            let now = self.inside[k].fetch_add(1, Ordering::SeqCst) + 1;
            self.peak[k].fetch_max(now, Ordering::SeqCst);
            assert!(
                now <= self.bounds[k],
                "{now} tasks inside group {key}, its limit is at most {}",
                self.bounds[k]
            );
        }
        Inside {
            tracker: Arc::clone(self),
            groups: groups.to_vec(),
        }
    }
}

struct Inside {
    tracker: Arc<Tracker>,
    groups: Vec<u8>,
}

impl Drop for Inside {
    fn drop(&mut self) {
        for &key in &self.groups {
            self.tracker.inside[usize::from(key)].fetch_sub(1, Ordering::SeqCst);
        }
        self.tracker.total.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Random groups: one to three keys in random order, sometimes repeated, rarely none.
fn random_groups(rng: &mut SmallRng) -> Vec<u8> {
    if rng.random_ratio(1, 50) {
        return Vec::new();
    }
    let n = rng.random_range(1..=3);
    (0..n).map(|_| rng.random_range(0..KEYS)).collect()
}

fn distinct(groups: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &key in groups {
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// Holds an admission for a little while: a few yields, sometimes a short sleep.
async fn hold(yields: u32, sleep: Option<Duration>) {
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
    if let Some(sleep) = sleep {
        tokio::time::sleep(sleep).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ran,
    TimedOut,
    Refused,
}

async fn client(pool: TaskPool<u8>, tracker: Arc<Tracker>, seed: u64) -> Outcome {
    let mut rng = SmallRng::seed_from_u64(seed);
    let groups = random_groups(&mut rng);
    let names = distinct(&groups);
    let yields = rng.random_range(0..4);
    let sleep = rng
        .random_ratio(1, 10)
        .then(|| Duration::from_micros(rng.random_range(0..500)));
    let deadline = rng
        .random_ratio(1, 4)
        .then(|| Duration::from_micros(rng.random_range(0..2_000)));
    match rng.random_range(0..20) {
        // Waiting spawn.
        0..=8 => {
            let started = Arc::new(AtomicBool::new(false));
            let task = {
                let (started, tracker, names) =
                    (Arc::clone(&started), Arc::clone(&tracker), names.clone());
                async move {
                    started.store(true, Ordering::SeqCst);
                    let _inside = tracker.enter(&names);
                    hold(yields, sleep).await;
                }
            };
            let spawned = match deadline {
                None => Some(pool.spawn(groups, task).await),
                Some(deadline) => tokio::time::timeout(deadline, pool.spawn(groups, task))
                    .await
                    .ok(),
            };
            match spawned {
                Some(handle) => {
                    handle.expect("the pool is never closed").await.unwrap();
                    assert!(started.load(Ordering::SeqCst));
                    Outcome::Ran
                }
                None => {
                    assert!(
                        !started.load(Ordering::SeqCst),
                        "a cancelled spawn polled its task"
                    );
                    Outcome::TimedOut
                }
            }
        }
        // Waiting acquire.
        9..=17 => {
            let permit = match deadline {
                None => Some(pool.acquire(groups).await),
                Some(deadline) => tokio::time::timeout(deadline, pool.acquire(groups))
                    .await
                    .ok(),
            };
            match permit {
                Some(permit) => {
                    let permit = permit.expect("the pool is never closed");
                    assert_eq!(permit.groups().copied().collect::<Vec<_>>(), names);
                    let inside = tracker.enter(&names);
                    hold(yields, sleep).await;
                    drop(inside);
                    drop(permit);
                    Outcome::Ran
                }
                None => Outcome::TimedOut,
            }
        }
        // Non-waiting calls in the same groups.
        18 => match pool.try_acquire(groups) {
            Ok(permit) => {
                let inside = tracker.enter(&names);
                hold(yields, sleep).await;
                drop(inside);
                drop(permit);
                Outcome::Ran
            }
            Err(err) => {
                assert!(err.is_full());
                Outcome::Refused
            }
        },
        _ => {
            let task = {
                let tracker = Arc::clone(&tracker);
                let names = names.clone();
                async move {
                    let _inside = tracker.enter(&names);
                    hold(yields, sleep).await;
                }
            };
            match pool.try_spawn(groups, task) {
                Ok(handle) => {
                    handle.await.unwrap();
                    Outcome::Ran
                }
                Err(err) => {
                    assert!(err.is_full());
                    Outcome::Refused
                }
            }
        }
    }
}

/// Keeps changing the limits of keys 3 and 4, the default limit and `max_tasks` until `stop`.
async fn change_limits(pool: TaskPool<u8>, stop: Arc<AtomicBool>, seed: u64) -> usize {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut changes = 0;
    while !stop.load(Ordering::SeqCst) {
        match rng.random_range(0..8) {
            0..=2 => {
                let key = rng.random_range(3..5);
                // Now and then a limit of 0 stalls the key until a later change.
                let limit = if rng.random_ratio(1, 10) {
                    0
                } else {
                    rng.random_range(1..=CHANGING_MAX)
                };
                pool.set_limit(key, limit);
            }
            3 => pool.clear_limit(&rng.random_range(3..5)),
            4 | 5 => pool.set_default_limit(rng.random_range(1..=CHANGING_MAX)),
            _ => pool.set_max_tasks(MAX_TASKS[rng.random_range(0..MAX_TASKS.len())]),
        }
        changes += 1;
        // The pool's own counts respect the same bounds (granted waiters included).
        assert!(pool.len() <= MAX_TASKS_BOUND);
        for key in 0..KEYS {
            assert!(pool.task_count(&key) <= bound(key));
        }
        if rng.random_bool(0.5) {
            tokio::time::sleep(Duration::from_micros(rng.random_range(50..1_000))).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    changes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_crossing_waiters_with_cancellation_and_changing_limits() {
    let tasks: u64 = env_or("TASKHERD_STRESS_TASKS", 5_000);
    let seed: u64 = env_or("TASKHERD_STRESS_SEED", rand::random());
    eprintln!("TASKHERD_STRESS_SEED={seed} TASKHERD_STRESS_TASKS={tasks}");

    let mut builder = TaskPool::<u8>::builder()
        .max_tasks(MAX_TASKS_BOUND)
        .default_limit(2);
    for (key, limit) in (0u8..).zip(FIXED_LIMITS) {
        builder = builder.limit(key, limit);
    }
    let pool = builder.limit(3, 2).limit(4, CHANGING_MAX).build();
    let tracker = Arc::new(Tracker::new(
        std::array::from_fn(|k| bound(u8::try_from(k).unwrap())),
        MAX_TASKS_BOUND,
    ));
    let stop = Arc::new(AtomicBool::new(false));

    let changer = tokio::spawn(change_limits(pool.clone(), Arc::clone(&stop), seed));
    let clients: Vec<_> = (0..tasks)
        .map(|i| {
            tokio::spawn(client(
                pool.clone(),
                Arc::clone(&tracker),
                seed.wrapping_add(1 + i),
            ))
        })
        .collect();

    let outcomes = tokio::time::timeout(Duration::from_secs(300), async {
        let mut outcomes = Vec::with_capacity(clients.len());
        for client in clients {
            outcomes.push(client.await.expect("a client panicked"));
        }
        outcomes
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "not finished after 300 s (deadlock or lost wake-up; seed {seed}): {pool:?}, \
             waiting {}",
            pool.waiting_len()
        )
    });
    stop.store(true, Ordering::SeqCst);
    let changes = tokio::time::timeout(Duration::from_secs(60), changer)
        .await
        .expect("the limit changer did not stop")
        .expect("the limit changer panicked");

    let count = |outcome| outcomes.iter().filter(|&&o| o == outcome).count();
    let (ran, timed_out, refused) = (
        count(Outcome::Ran),
        count(Outcome::TimedOut),
        count(Outcome::Refused),
    );
    let peaks: Vec<_> = tracker
        .peak
        .iter()
        .map(|p| p.load(Ordering::SeqCst))
        .collect();
    eprintln!(
        "ran {ran}, timed out {timed_out}, refused {refused}, limit changes {changes}, \
         peaks per key {peaks:?}, peak total {}",
        tracker.peak_total.load(Ordering::SeqCst)
    );
    assert_eq!(ran + timed_out + refused, outcomes.len());
    assert!(ran > 0);

    // Drained: nothing running, nothing waiting, nothing counted.
    assert_eq!(pool.len(), 0, "{pool:?}");
    assert!(pool.is_empty());
    assert_eq!(pool.waiting_len(), 0, "{pool:?}");
    for key in 0..KEYS {
        assert_eq!(pool.task_count(&key), 0, "task_count({key})");
        assert_eq!(pool.waiting_count(&key), 0, "waiting_count({key})");
        assert_eq!(tracker.inside[usize::from(key)].load(Ordering::SeqCst), 0);
    }
    // Nothing leaked: with room in every group, the widest admission fits at once.
    pool.set_max_tasks(None);
    for key in 0..KEYS {
        pool.set_limit(key, 1);
    }
    let permit = pool.try_acquire(0..KEYS).expect("a slot leaked");
    drop(permit);
    assert!(pool.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_cancelled_in_bulk_hand_their_slots_on() {
    // Many waiters on crossing pairs of one-slot groups; most give up after a short time. The
    // patient ones must all be served, and nothing may be left reserved.
    let tasks: u64 = env_or("TASKHERD_STRESS_TASKS", 5_000) / 2;
    let pool = TaskPool::<u8>::builder().default_limit(1).build();
    let tracker = Arc::new(Tracker::new([1; KEYS as usize], usize::MAX));
    let clients: Vec<_> = (0..tasks)
        .map(|i| {
            let pool = pool.clone();
            let tracker = Arc::clone(&tracker);
            tokio::spawn(async move {
                let a = u8::try_from(i % 4).unwrap();
                let b = u8::try_from((i / 4 + 1 + i % 4) % 4).unwrap();
                let groups = if a == b { vec![a] } else { vec![a, b] };
                let names = distinct(&groups);
                let acquire = pool.acquire(groups);
                let permit = if i % 3 == 0 {
                    Some(acquire.await.unwrap())
                } else {
                    tokio::time::timeout(Duration::from_micros(100 * (i % 7)), acquire)
                        .await
                        .ok()
                        .map(Result::unwrap)
                };
                if let Some(permit) = permit {
                    let inside = tracker.enter(&names);
                    for key in &names {
                        assert!(pool.task_count(key) <= 1);
                    }
                    tokio::task::yield_now().await;
                    drop(inside);
                    drop(permit);
                }
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(300), async {
        for client in clients {
            client.await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not finished after 300 s: {pool:?}"));
    assert_eq!(pool.len(), 0, "{pool:?}");
    assert_eq!(pool.waiting_len(), 0, "{pool:?}");
    for key in 0..4 {
        assert_eq!(pool.task_count(&key), 0);
        assert_eq!(pool.waiting_count(&key), 0);
    }
    let permit = pool.try_acquire(0..4).expect("a slot leaked");
    drop(permit);
}
