//! Multi-threaded stress tests: many spawners race to admit thousands of tasks with random group
//! sets while another task changes limits; every task checks, at the moment it starts, that no
//! group holds more tasks than that group's limit could ever allow. At the end every count must
//! drain to zero and every attempt must be accounted for as admitted or refused.
//!
//! The number of attempts is 20,000 by default; set `TASKHERD_STRESS_TASKS` for more, and
//! `TASKHERD_STRESS_SEED` to replay a run (the seed is printed).
//!
//! How the bounds are sound although limits change at run time: a task increments its
//! "observed" counters only after it was admitted and decrements them before it completes, so an
//! observed count never exceeds the pool's running count, and a running count never exceeds the
//! largest limit that group ever had (admission requires `running < limit` at that moment). So the
//! bound for a group whose limit changes is the largest value it is ever set to.
//!
//! The limits change in `set_limits` batches that mix the default limit with explicit ones
//! (issue 9, item 4): the default goes above key 7's bound only in a batch that gives key 7 an
//! explicit limit, and key 7 loses its explicit limit only in a batch that brings the default
//! back down, so applying a batch one setting at a time could exceed key 7's bound. A sampler
//! (`sampler/mod.rs`) keeps checking the snapshot invariants of issue 9, item 1 on `stats` and
//! `total_stats`, among them that `running` never grows above a limit that did not change.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use taskherd::{Group, LimitChanges, TaskPool};
use tokio::task::JoinHandle;

mod sampler;
use sampler::Epoch;

const KEYS: usize = 8;
/// Keys `0..FIXED_KEYS` keep the limits they start with.
const FIXED_KEYS: usize = 6;
/// Key 6 is set at run time to values in `1..=KEY6_MAX`.
const KEY6_MAX: usize = 5;
/// Key 7 is set at run time to one of these, or cleared (then the default applies, which is
/// `DEFAULT_LOW` whenever key 7 has no explicit limit).
const KEY7_VALUES: [Option<usize>; 4] = [None, Some(0), Some(1), Some(2)];
/// The default limit moves between these, in batches with key 7's limit.
const DEFAULT_LOW: usize = 2;
const DEFAULT_HIGH: usize = 6;
const DEFAULT_LIMIT: usize = DEFAULT_LOW;
/// `max_tasks` is set at run time to values in `MIN_TOTAL..=MAX_TOTAL`.
const MIN_TOTAL: usize = 4;
const MAX_TOTAL: usize = 12;
const SPAWNERS: usize = 4;
/// How many admitted tasks one spawner keeps in flight before it awaits the oldest.
const IN_FLIGHT: usize = 32;
/// How many times a refused future is retried (via `into_inner`) before it is given up.
const RETRIES: usize = 3;

/// Panic payload for the tasks that panic on purpose; the panic hook keeps them quiet.
struct IntentionalPanic;

fn quiet_intentional_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<IntentionalPanic>() {
                default_hook(info);
            }
        }));
    });
}

fn attempts_from_env() -> usize {
    match std::env::var("TASKHERD_STRESS_TASKS") {
        Ok(value) => value
            .parse()
            .expect("TASKHERD_STRESS_TASKS must be a number of tasks"),
        Err(_) => 20_000,
    }
}

fn seed_from_env() -> u64 {
    match std::env::var("TASKHERD_STRESS_SEED") {
        Ok(value) => value.parse().expect("TASKHERD_STRESS_SEED must be a u64"),
        Err(_) => rand::random(),
    }
}

#[derive(Clone, Copy)]
struct Config {
    /// Check observed concurrency against the bounds (impossible with aborts: an aborted task
    /// cannot decrement its observed counters before the pool releases it).
    check_observed: bool,
    /// Fraction of admitted tasks aborted through their `JoinHandle`.
    abort_probability: f64,
    /// Fraction of tasks that panic (after decrementing their observed counters).
    panic_probability: f64,
    /// Fraction of tasks that return an error value.
    error_probability: f64,
}

struct Shared {
    pool: TaskPool<u8>,
    config: Config,
    /// The largest limit each key can ever have during the run.
    bound: [usize; KEYS],
    observed: [AtomicUsize; KEYS],
    observed_total: AtomicUsize,
    max_observed: [AtomicUsize; KEYS],
    max_observed_total: AtomicUsize,
    /// Tasks that started running.
    ran: AtomicUsize,
    violations: AtomicUsize,
    first_violations: Mutex<Vec<String>>,
}

impl Shared {
    fn violation(&self, message: String) {
        self.violations.fetch_add(1, Ordering::SeqCst);
        let mut first = self.first_violations.lock().unwrap();
        if first.len() < 20 {
            first.push(message);
        }
    }

    /// Runs at the start of every admitted task.
    fn enter(&self, keys: &[u8]) {
        self.ran.fetch_add(1, Ordering::SeqCst);
        for &key in keys {
            let k = key as usize;
            // The pool counts this very task, and cannot count more than the bound.
            let count = self.pool.task_count(&key);
            if count == 0 || count > self.bound[k] {
                self.violation(format!(
                    "task_count({key}) = {count} inside a task in that group (bound {})",
                    self.bound[k]
                ));
            }
            if self.config.check_observed {
                let now = self.observed[k].fetch_add(1, Ordering::SeqCst) + 1;
                self.max_observed[k].fetch_max(now, Ordering::SeqCst);
                if now > self.bound[k] {
                    self.violation(format!(
                        "{now} tasks observed running in group {key} (bound {})",
                        self.bound[k]
                    ));
                }
            }
        }
        let len = self.pool.len();
        if len == 0 || len > MAX_TOTAL {
            self.violation(format!("len() = {len} inside a task (bound {MAX_TOTAL})"));
        }
        if self.config.check_observed {
            let now = self.observed_total.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_observed_total.fetch_max(now, Ordering::SeqCst);
            if now > MAX_TOTAL {
                self.violation(format!(
                    "{now} tasks observed running in total (bound {MAX_TOTAL})"
                ));
            }
        }
    }

    /// Runs at the end of every admitted task that was not aborted.
    fn exit(&self, keys: &[u8]) {
        if self.config.check_observed {
            for &key in keys {
                self.observed[key as usize].fetch_sub(1, Ordering::SeqCst);
            }
            self.observed_total.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[derive(Default)]
struct Tally {
    attempts: usize,
    admitted: usize,
    refused: usize,
    refused_by_total: usize,
    completed: usize,
    failed: usize,
    panicked: usize,
    cancelled: usize,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.attempts += other.attempts;
        self.admitted += other.admitted;
        self.refused += other.refused;
        self.refused_by_total += other.refused_by_total;
        self.completed += other.completed;
        self.failed += other.failed;
        self.panicked += other.panicked;
        self.cancelled += other.cancelled;
    }
}

type TaskOutput = Result<(), ()>;

async fn settle(handle: JoinHandle<TaskOutput>, tally: &mut Tally) {
    match handle.await {
        Ok(Ok(())) => tally.completed += 1,
        Ok(Err(())) => tally.failed += 1,
        Err(error) if error.is_cancelled() => tally.cancelled += 1,
        Err(error) if error.is_panic() => {
            let payload = error.into_panic();
            assert!(
                payload.is::<IntentionalPanic>(),
                "a task panicked unexpectedly"
            );
            tally.panicked += 1;
        }
        Err(error) => panic!("unexpected join error: {error}"),
    }
}

fn random_groups(rng: &mut StdRng) -> Vec<u8> {
    let mut keys: Vec<u8> = (0..KEYS as u8).filter(|_| rng.random_bool(0.3)).collect();
    if !keys.is_empty() && rng.random_bool(0.1) {
        // Name one key twice: it must count once.
        let duplicate = *keys.choose(rng).unwrap();
        keys.push(duplicate);
    }
    keys.shuffle(rng);
    keys
}

async fn spawner(shared: Arc<Shared>, attempts_wanted: usize, seed: u64) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut in_flight: VecDeque<JoinHandle<TaskOutput>> = VecDeque::new();
    let config = shared.config;

    while tally.attempts < attempts_wanted {
        let groups = random_groups(&mut rng);
        let mut distinct = groups.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let yields = rng.random_range(0..8);
        let outcome: u8 = if rng.random_bool(config.panic_probability) {
            2
        } else if rng.random_bool(config.error_probability) {
            1
        } else {
            0
        };
        let task_shared = Arc::clone(&shared);
        let task_keys = distinct.clone();
        let mut future = Box::pin(async move {
            task_shared.enter(&task_keys);
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            task_shared.exit(&task_keys);
            match outcome {
                0 => Ok(()),
                1 => Err(()),
                _ => std::panic::panic_any(IntentionalPanic),
            }
        });

        let mut tries = 0;
        loop {
            tally.attempts += 1;
            tries += 1;
            match shared.pool.try_spawn(groups.iter().copied(), future) {
                Ok(handle) => {
                    tally.admitted += 1;
                    if rng.random_bool(config.abort_probability) {
                        if rng.random_bool(0.5) {
                            tokio::task::yield_now().await;
                        }
                        handle.abort();
                    }
                    in_flight.push_back(handle);
                    break;
                }
                Err(error) => {
                    tally.refused += 1;
                    assert!(error.is_full());
                    assert!(!error.is_closed());
                    match error.full_group() {
                        Some(Group::Total) => tally.refused_by_total += 1,
                        Some(Group::Key(key)) => assert!(
                            distinct.contains(key),
                            "refused by group {key}, which the task did not name ({groups:?})"
                        ),
                        None => panic!("a refusal because the pool is full names no group"),
                    }
                    if tries > RETRIES || tally.attempts >= attempts_wanted {
                        // Given up: the future is dropped unpolled.
                        break;
                    }
                    future = error.into_inner();
                    tokio::task::yield_now().await;
                }
            }
        }

        while in_flight.len() > IN_FLIGHT {
            let oldest = in_flight.pop_front().unwrap();
            settle(oldest, &mut tally).await;
        }
    }
    for handle in in_flight {
        settle(handle, &mut tally).await;
    }
    tally
}

async fn limit_changer(
    shared: Arc<Shared>,
    epoch: Arc<Epoch>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let pool = &shared.pool;
    let mut changes = 0;
    while !stop.load(Ordering::SeqCst) {
        // One batch: key 6, key 7 with the default (high only while key 7 has an explicit
        // limit), `max_tasks`, and a key no task ever names (entries come and go without
        // affecting anyone), in random order, sometimes a key twice (the last one wins).
        let key7 = *KEY7_VALUES.choose(&mut rng).unwrap();
        let default = if key7.is_some() && rng.random_bool(0.5) {
            DEFAULT_HIGH
        } else {
            DEFAULT_LOW
        };
        type Change = Box<dyn FnOnce(LimitChanges<u8>) -> LimitChanges<u8> + Send>;
        let key6 = rng.random_range(1..=KEY6_MAX);
        let max_tasks = rng.random_range(MIN_TOTAL..=MAX_TOTAL);
        let key200 = rng.random_bool(0.5).then(|| rng.random_range(0..3usize));
        let mut batch: Vec<Change> = vec![
            Box::new(move |c| c.limit(6, key6)),
            Box::new(move |c| c.limit(7, key7)),
            Box::new(move |c| c.default_limit(default)),
            Box::new(move |c| c.max_tasks(max_tasks)),
            Box::new(move |c| c.limit(200, key200)),
        ];
        batch.shuffle(&mut rng);
        if rng.random_bool(0.2) {
            // Key 7 again, far above its bound, then once more as chosen: the last one wins.
            let at = rng.random_range(0..=batch.len());
            batch.insert(at, Box::new(|c| c.limit(7, MAX_TOTAL)));
            batch.push(Box::new(move |c| c.limit(7, key7)));
        }
        let changes_value = batch
            .into_iter()
            .fold(LimitChanges::new(), |changes, change| change(changes));
        epoch.change(|| pool.set_limits(changes_value));
        // Now and then a single change that keeps the bounds on its own.
        if rng.random_bool(0.3) {
            let max_tasks = rng.random_range(MIN_TOTAL..=MAX_TOTAL);
            epoch.change(|| pool.set_max_tasks(max_tasks));
        }
        changes += 1;
        tokio::task::yield_now().await;
    }
    changes
}

async fn run_stress(config: Config) {
    quiet_intentional_panics();
    let attempts = attempts_from_env();
    let seed = seed_from_env();
    println!("stress: {attempts} attempts, seed {seed} (set TASKHERD_STRESS_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);

    let pool = TaskPool::<u8>::builder()
        .max_tasks(MAX_TOTAL)
        .default_limit(DEFAULT_LIMIT)
        .build();
    let mut bound = [0; KEYS];
    for (key, slot) in bound.iter_mut().enumerate().take(FIXED_KEYS) {
        let limit = rng.random_range(1..=4);
        pool.set_limit(key as u8, limit);
        *slot = limit;
    }
    pool.set_limit(6, KEY6_MAX);
    bound[6] = KEY6_MAX;
    bound[7] = DEFAULT_LOW.max(KEY7_VALUES.iter().flatten().copied().max().unwrap());

    let shared = Arc::new(Shared {
        pool: pool.clone(),
        config,
        bound,
        observed: std::array::from_fn(|_| AtomicUsize::new(0)),
        observed_total: AtomicUsize::new(0),
        max_observed: std::array::from_fn(|_| AtomicUsize::new(0)),
        max_observed_total: AtomicUsize::new(0),
        ran: AtomicUsize::new(0),
        violations: AtomicUsize::new(0),
        first_violations: Mutex::new(Vec::new()),
    });

    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Arc::new(Epoch::default());
    let sampler = tokio::spawn(sampler::sample(
        pool.clone(),
        (0..KEYS as u8).chain([200]).collect(),
        Arc::clone(&epoch),
        Arc::clone(&stop),
    ));
    let changer = tokio::spawn(limit_changer(
        Arc::clone(&shared),
        Arc::clone(&epoch),
        Arc::clone(&stop),
        rng.random(),
    ));
    let spawners: Vec<_> = (0..SPAWNERS)
        .map(|i| {
            let share = attempts / SPAWNERS + usize::from(i < attempts % SPAWNERS);
            tokio::spawn(spawner(Arc::clone(&shared), share, rng.random()))
        })
        .collect();

    let mut tally = Tally::default();
    for handle in spawners {
        let part = handle.await.expect("a spawner failed");
        tally.add(&part);
    }
    stop.store(true, Ordering::SeqCst);
    let changes = changer.await.expect("the limit changer failed");
    let report = sampler
        .await
        .unwrap_or_else(|e| panic!("the sampler found a violation (seed {seed}): {e}"));
    println!("stress: sampler {report:?}");
    assert!(report.rounds > 0, "the sampler never ran");

    println!(
        "stress: attempts {} admitted {} refused {} (by total {}), completed {} failed {} \
         panicked {} cancelled {}, {changes} rounds of limit changes",
        tally.attempts,
        tally.admitted,
        tally.refused,
        tally.refused_by_total,
        tally.completed,
        tally.failed,
        tally.panicked,
        tally.cancelled,
    );
    if config.check_observed {
        for (key, (max_observed, bound)) in shared.max_observed.iter().zip(bound).enumerate() {
            println!(
                "stress: group {key}: max observed {} of bound {bound}",
                max_observed.load(Ordering::SeqCst),
            );
        }
        println!(
            "stress: total: max observed {} of bound {MAX_TOTAL}",
            shared.max_observed_total.load(Ordering::SeqCst)
        );
    }

    let violations = shared.violations.load(Ordering::SeqCst);
    assert_eq!(
        violations,
        0,
        "limit violations, first ones: {:#?}",
        shared.first_violations.lock().unwrap()
    );
    assert_eq!(tally.attempts, attempts);
    assert_eq!(tally.admitted + tally.refused, tally.attempts);
    assert_eq!(
        tally.completed + tally.failed + tally.panicked + tally.cancelled,
        tally.admitted,
        "every admitted task was awaited exactly once"
    );
    assert!(tally.admitted > 0, "no task was ever admitted");
    assert!(
        tally.refused > 0,
        "no task was ever refused: the limits were never reached"
    );
    let ran = shared.ran.load(Ordering::SeqCst);
    if config.abort_probability == 0.0 {
        assert_eq!(ran, tally.admitted, "every admitted task ran exactly once");
    } else {
        assert!(
            ran <= tally.admitted,
            "a refused task ran: {ran} ran, {} admitted",
            tally.admitted
        );
    }

    // Everything was awaited, so everything must already be released.
    assert_eq!(
        pool.len(),
        0,
        "tasks still counted in the total after all finished"
    );
    assert!(pool.is_empty());
    for key in 0..KEYS as u8 {
        assert_eq!(
            pool.task_count(&key),
            0,
            "tasks still counted in group {key}"
        );
    }
    assert_eq!(pool.task_count(&200), 0);
    if config.check_observed {
        for key in 0..KEYS {
            assert_eq!(shared.observed[key].load(Ordering::SeqCst), 0);
        }
        assert_eq!(shared.observed_total.load(Ordering::SeqCst), 0);
    }

    // The pool still works after the storm.
    pool.set_max_tasks(None);
    let handle = match pool.try_spawn([0, 1, 2, 3, 4, 5, 6], async { 1 }) {
        Ok(handle) => handle,
        Err(_) => panic!("an empty pool refused a task in groups whose limits are all at least 1"),
    };
    assert_eq!(handle.await.unwrap(), 1);
    assert!(pool.is_empty());
}

const TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_never_exceeds_limits_under_contention() {
    let config = Config {
        check_observed: true,
        abort_probability: 0.0,
        panic_probability: 0.01,
        error_probability: 0.05,
    };
    tokio::time::timeout(TIMEOUT, run_stress(config))
        .await
        .expect("the stress test hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_drain_to_zero_with_aborts_panics_errors_and_limit_changes() {
    let config = Config {
        check_observed: false,
        abort_probability: 0.2,
        panic_probability: 0.05,
        error_probability: 0.1,
    };
    tokio::time::timeout(TIMEOUT, run_stress(config))
        .await
        .expect("the stress test hung");
}

#[test]
fn counts_drain_to_zero_when_a_busy_multi_thread_runtime_is_dropped() {
    let pool = TaskPool::<u8>::builder()
        .default_limit(8)
        .max_tasks(64)
        .build();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let spawned = Arc::new(AtomicUsize::new(0));
    let feeder = {
        let pool = pool.clone();
        let spawned = Arc::clone(&spawned);
        rt.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed_from_env());
            loop {
                let groups = random_groups(&mut rng);
                let yields = rng.random_range(0..20);
                let spin = async move {
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                    std::future::pending::<()>().await;
                };
                if pool.try_spawn(groups, spin).is_ok() {
                    spawned.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    // The spawned tasks never finish, so the pool fills up to `max_tasks` while the feeder keeps
    // trying (and failing) to spawn more. The deadline only turns a hang into a failure.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while spawned.load(Ordering::SeqCst) < 64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool never filled up"
        );
        std::thread::yield_now();
    }
    assert_eq!(pool.len(), 64);
    drop(feeder);
    drop(rt);
    assert_eq!(pool.len(), 0);
    for key in 0..KEYS as u8 {
        assert_eq!(pool.task_count(&key), 0, "group {key}");
    }
}
