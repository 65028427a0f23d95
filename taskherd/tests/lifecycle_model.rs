//! Randomized, single-threaded check of the whole life cycle against what the test holds:
//! `try_acquire`, `try_spawn`, waiting `spawn`s and `acquire`s (polled at once, or first polled
//! steps later, or dropped anywhere), permits dropped, tasks finished or aborted by their handle,
//! `abort_group`, `abort_all`, `set_limit`, `set_limits` batches (total, default and group
//! limits lowered and raised together), `close` and `reopen`. `model.rs` checks waiting against
//! a full reference model, but with permits and limits only; the stress tests cover this mix
//! with threads, where a failure cannot be replayed. Here every run is one seed, replayed
//! exactly.
//!
//! After every step (the runtime settled, every waiter polled):
//!
//! - the pool counts exactly what is live: `len()` and each group's `task_count` equal the
//!   permits and unfinished tasks the test holds, in the total and in each group they name;
//! - no group (nor the total) runs more than its limit, or than what it already ran when its
//!   limit was lowered (the count may only come down to the limit from there);
//! - a group with a limit holds no reservation beyond it, and has no queue while it has room;
//!   `waiting_len()` is the total's `waiting`;
//! - `abort_group(k)` reports the live tasks naming `k`, and after it every one of them has
//!   ended (cancelled), and no other; `abort_all()` ends every task;
//! - a waiting call fails only if the pool was closed after it was made, and `close` fails
//!   every one (polled or not) while leaving tasks and permits running; refused `try_*` calls
//!   after `close` say so.
//!
//! At the end, with every limit lifted and the pool open, every waiter left is admitted,
//! everything drains to zero, and `wait` resolves after `close`.
//!
//! 300 seeds of 120 steps by default (about 2 s in a debug build); `TASKHERD_MODEL_SEEDS` runs more, and
//! `TASKHERD_MODEL_SEED` replays one.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use taskherd::{LimitChanges, Permit, TaskPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_test::task::{Spawn, spawn as mock};

type Pool = TaskPool<u8>;

/// Groups are keys `0..KEYS`.
const KEYS: u8 = 3;

/// What a waiting call ends with: an admission (a permit, or a spawned task with the sender
/// that lets it finish), or the error of a closed pool.
enum Outcome {
    Permit(Permit<u8>),
    Task(JoinHandle<()>, oneshot::Sender<()>),
    Closed,
}

type Call = Pin<Box<dyn Future<Output = Outcome> + Send>>;

struct Waiter {
    call: Spawn<Call>,
    groups: Vec<u8>,
    /// The pool was closed when the call was made: it may fail (it does if still closed at
    /// its first poll, not if reopened by then).
    closed_then: bool,
    /// The pool was closed after the call was made: it must fail, even if reopened before
    /// its first poll.
    closed_since: bool,
    /// Polled at least once (a call never polled is in no queue, and is polled only when a
    /// step picks it).
    polled: bool,
}

struct Task {
    handle: JoinHandle<()>,
    /// Dropped to let the task finish.
    finish: Option<oneshot::Sender<()>>,
    groups: Vec<u8>,
}

/// What the test holds, and the pool's history it needs.
#[derive(Default)]
struct Live {
    waiters: Vec<Waiter>,
    permits: Vec<(Permit<u8>, Vec<u8>)>,
    tasks: Vec<Task>,
    /// The groups of the admissions made during the current step.
    fresh: Vec<Vec<u8>>,
    /// Steps so far, for failure messages.
    log: Vec<String>,
}

impl Live {
    /// Files an ended waiting call's outcome.
    fn admitted(
        &mut self,
        outcome: Outcome,
        groups: Vec<u8>,
        (closed_then, closed_since): (bool, bool),
        seed: u64,
    ) {
        assert!(
            !closed_since || matches!(outcome, Outcome::Closed),
            "seed {seed}: a call made before a close was admitted\n{:#?}",
            self.log
        );
        if !matches!(outcome, Outcome::Closed) {
            self.fresh.push(groups.clone());
        }
        match outcome {
            Outcome::Permit(permit) => self.permits.push((permit, groups)),
            Outcome::Task(handle, finish) => self.tasks.push(Task {
                handle,
                finish: Some(finish),
                groups,
            }),
            Outcome::Closed => assert!(
                closed_then || closed_since,
                "seed {seed}: a waiting call failed as closed, but the pool was not closed \
                 when it was made or since\n{:#?}",
                self.log
            ),
        }
    }

    /// Polls waiter `i`; files it if it ended. Whether it ended.
    fn poll_waiter(&mut self, i: usize, seed: u64) -> bool {
        self.waiters[i].polled = true;
        match self.waiters[i].call.poll() {
            Poll::Pending => false,
            Poll::Ready(outcome) => {
                let waiter = self.waiters.remove(i);
                self.admitted(
                    outcome,
                    waiter.groups,
                    (waiter.closed_then, waiter.closed_since),
                    seed,
                );
                true
            }
        }
    }

    /// Polls every waiter polled before once; files those that ended.
    fn poll_waiters(&mut self, seed: u64) {
        let mut i = 0;
        while i < self.waiters.len() {
            if !self.waiters[i].polled || !self.poll_waiter(i, seed) {
                i += 1;
            }
        }
    }

    /// Three times: polls the waiters, lets the runtime run the tasks, forgets the tasks that
    /// ended; then polls the waiters once more, so that the grants made by the last releases
    /// are collected in this step.
    async fn settle(&mut self, seed: u64) {
        for _ in 0..3 {
            self.poll_waiters(seed);
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            self.tasks.retain(|task| !task.handle.is_finished());
        }
        self.poll_waiters(seed);
    }

    /// Live admissions in the total (index 0) and in each group `k` (index `k + 1`).
    fn expected_running(&self) -> Vec<usize> {
        let mut running = vec![0; usize::from(KEYS) + 1];
        let permits = self.permits.iter().map(|(_, groups)| groups);
        for groups in permits.chain(self.tasks.iter().map(|task| &task.groups)) {
            running[0] += 1;
            for &key in groups {
                running[usize::from(key) + 1] += 1;
            }
        }
        running
    }
}

/// The limits of the total (index 0) and of each group.
fn limits(pool: &Pool) -> Vec<Option<usize>> {
    let groups = (0..KEYS).map(|key| pool.effective_limit(&key));
    std::iter::once(pool.max_tasks()).chain(groups).collect()
}

/// The running counts of the total (index 0) and of each group.
fn running(pool: &Pool) -> Vec<usize> {
    let groups = (0..KEYS).map(|key| pool.task_count(&key));
    std::iter::once(pool.len()).chain(groups).collect()
}

/// A limit to set: none a quarter of the time, else 0, 1 or 2.
fn some_limit(rng: &mut SmallRng) -> Option<usize> {
    (!rng.random_ratio(1, 4)).then(|| rng.random_range(0..3))
}

/// Up to 2 distinct groups, in random order.
fn some_groups(rng: &mut SmallRng) -> Vec<u8> {
    let mut groups = Vec::new();
    for _ in 0..rng.random_range(0..3) {
        let key = rng.random_range(0..KEYS);
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    groups
}

/// A task that runs until its sender is dropped.
fn held_task() -> (
    impl Future<Output = ()> + Send + 'static,
    oneshot::Sender<()>,
) {
    let (finish, finished) = oneshot::channel::<()>();
    (
        async move {
            let _ = finished.await;
        },
        finish,
    )
}

/// Checks that every task of `aborted` ends, cancelled, once the runtime has run them (a task
/// left running would hold its sender's task for ever: not awaited).
async fn cancelled(aborted: Vec<Task>, seed: u64, step: usize, log: &[String]) {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    for task in aborted {
        assert!(
            task.handle.is_finished(),
            "seed {seed} step {step}: an aborted task still runs\n{log:#?}"
        );
        let ended = task.handle.await;
        assert!(
            ended.as_ref().is_err_and(|error| error.is_cancelled()),
            "seed {seed} step {step}: an aborted task was not cancelled: {ended:?}\n{log:#?}"
        );
    }
}

async fn run(seed: u64, steps: usize) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let pool = Pool::builder().max_tasks(3).default_limit(1).build();
    let mut live = Live::default();
    for step in 0..steps {
        let before = running(&pool);
        live.fresh.clear();
        let groups = some_groups(&mut rng);
        match rng.random_range(0..15) {
            0 => {
                live.log.push(format!("try_acquire {groups:?}"));
                match pool.try_acquire(groups.clone()) {
                    Ok(permit) => {
                        live.fresh.push(groups.clone());
                        live.permits.push((permit, groups));
                    }
                    Err(error) => assert_eq!(error.is_closed(), pool.is_closed()),
                }
            }
            1 => {
                live.log.push(format!("try_spawn {groups:?}"));
                let (task, finish) = held_task();
                match pool.try_spawn(groups.clone(), task) {
                    Ok(handle) => {
                        live.fresh.push(groups.clone());
                        live.tasks.push(Task {
                            handle,
                            finish: Some(finish),
                            groups,
                        });
                    }
                    Err(error) => assert_eq!(error.is_closed(), pool.is_closed()),
                }
            }
            2 | 3 => {
                let spawn = rng.random_bool(0.5);
                let now = rng.random_bool(0.5);
                live.log.push(format!(
                    "{} {groups:?}{}",
                    if spawn { "spawn" } else { "acquire" },
                    if now { ", polled" } else { "" }
                ));
                let call: Call = if spawn {
                    let (task, finish) = held_task();
                    let spawning = pool.spawn(groups.clone(), task);
                    Box::pin(async move {
                        match spawning.await {
                            Ok(handle) => Outcome::Task(handle, finish),
                            Err(error) => {
                                assert!(error.is_closed());
                                Outcome::Closed
                            }
                        }
                    })
                } else {
                    let acquiring = pool.acquire(groups.clone());
                    Box::pin(async move {
                        match acquiring.await {
                            Ok(permit) => Outcome::Permit(permit),
                            Err(error) => {
                                assert!(error.is_closed());
                                Outcome::Closed
                            }
                        }
                    })
                };
                live.waiters.push(Waiter {
                    call: mock(call),
                    groups,
                    closed_since: false,
                    closed_then: pool.is_closed(),
                    polled: false,
                });
                if now {
                    live.poll_waiter(live.waiters.len() - 1, seed);
                }
            }
            4 if !live.waiters.is_empty() => {
                let i = rng.random_range(0..live.waiters.len());
                live.log.push(format!("drop waiter {i}"));
                live.waiters.remove(i);
            }
            5 if !live.permits.is_empty() => {
                let i = rng.random_range(0..live.permits.len());
                live.log.push(format!("drop permit {i}"));
                drop(live.permits.remove(i));
            }
            6 if !live.tasks.is_empty() => {
                let i = rng.random_range(0..live.tasks.len());
                live.log.push(format!("finish task {i}"));
                live.tasks[i].finish.take();
            }
            7 if !live.tasks.is_empty() => {
                let i = rng.random_range(0..live.tasks.len());
                live.log.push(format!("abort task {i}"));
                live.tasks[i].handle.abort();
            }
            8 => {
                let key = rng.random_range(0..KEYS);
                live.log.push(format!("abort_group {key}"));
                let named = |task: &Task| task.groups.contains(&key);
                let expected = live.tasks.iter().filter(|task| named(task)).count();
                assert_eq!(
                    pool.abort_group(&key),
                    expected,
                    "seed {seed} step {step}: tasks aborted\n{:#?}",
                    live.log
                );
                let (aborted, others): (Vec<Task>, Vec<Task>) =
                    std::mem::take(&mut live.tasks).into_iter().partition(named);
                live.tasks = others;
                cancelled(aborted, seed, step, &live.log).await;
            }
            9 => {
                live.log.push("abort_all".into());
                assert_eq!(
                    pool.abort_all(),
                    live.tasks.len(),
                    "seed {seed} step {step}"
                );
                cancelled(std::mem::take(&mut live.tasks), seed, step, &live.log).await;
            }
            10 => {
                let key = rng.random_range(0..KEYS);
                let limit = some_limit(&mut rng);
                live.log.push(format!("set_limit {key} {limit:?}"));
                pool.set_limit(key, limit);
            }
            11 => {
                let mut changes = LimitChanges::new();
                let mut said = Vec::new();
                for _ in 0..rng.random_range(1..4) {
                    let limit = some_limit(&mut rng);
                    match rng.random_range(0..3) {
                        0 => {
                            said.push(format!("max_tasks {limit:?}"));
                            changes = changes.max_tasks(limit);
                        }
                        1 => {
                            said.push(format!("default {limit:?}"));
                            changes = changes.default_limit(limit);
                        }
                        _ => {
                            let key = rng.random_range(0..KEYS);
                            said.push(format!("limit {key} {limit:?}"));
                            changes = changes.limit(key, limit);
                        }
                    }
                }
                live.log.push(format!("set_limits {said:?}"));
                pool.set_limits(changes);
            }
            12 => {
                live.log.push("close".into());
                // A close of a closed pool does nothing (returns `false`).
                if pool.close() {
                    for waiter in &mut live.waiters {
                        waiter.closed_since = true;
                    }
                }
                // Every waiting call fails at its next poll, polled before or not (even once
                // reopened: see step 13); admitted work runs on.
                if rng.random_bool(0.5) {
                    for waiter in &mut live.waiters {
                        assert!(
                            matches!(waiter.call.poll(), Poll::Ready(Outcome::Closed)),
                            "seed {seed} step {step}: a waiting call outlived close\n{:#?}",
                            live.log
                        );
                    }
                    live.waiters.clear();
                } else {
                    live.log.push("(waiters left to fail later)".into());
                }
            }
            13 => {
                live.log.push("reopen".into());
                pool.reopen();
            }
            _ => match live.waiters.iter().position(|waiter| !waiter.polled) {
                Some(i) => {
                    live.log.push(format!("first poll of waiter {i}"));
                    live.poll_waiter(i, seed);
                }
                None => live.log.push("settle".into()),
            },
        }
        live.settle(seed).await;

        let now = running(&pool);
        assert_eq!(
            now,
            live.expected_running(),
            "seed {seed} step {step}: running counts (total, then each group)\n{:#?}",
            live.log
        );
        // Over its limit (a limit lowered under running work), a count may only come down,
        // and an admission made in this step lands only where there is room.
        let limits_now = limits(&pool);
        let name = |i: usize| match i {
            0 => "the total".to_owned(),
            _ => format!("group {}", i - 1),
        };
        for (i, limit) in limits_now.iter().enumerate() {
            if let Some(limit) = *limit {
                assert!(
                    now[i] <= limit.max(before[i]),
                    "seed {seed} step {step}: {} rose from {} to {} over its limit {limit}\n{:#?}",
                    name(i),
                    before[i],
                    now[i],
                    live.log
                );
            }
        }
        for groups in &live.fresh {
            let entered = std::iter::once(0).chain(groups.iter().map(|&key| usize::from(key) + 1));
            for i in entered {
                assert!(
                    limits_now[i].is_none_or(|limit| now[i] <= limit),
                    "seed {seed} step {step}: an admission in {groups:?} left {} at {} over its \
                     limit {:?}\n{:#?}",
                    name(i),
                    now[i],
                    limits_now[i],
                    live.log
                );
            }
        }
        for key in 0..KEYS {
            let stats = pool.stats(&key);
            let Some(limit) = stats.limit else { continue };
            assert!(
                stats.reserved == 0 || stats.running + stats.reserved <= limit,
                "seed {seed} step {step}: group {key} reserves over its limit: {stats:?}\n{:#?}",
                live.log
            );
            assert!(
                stats.waiting == stats.reserved || stats.running + stats.reserved >= limit,
                "seed {seed} step {step}: group {key} has a queue and room: {stats:?}\n{:#?}",
                live.log
            );
        }
        assert_eq!(pool.waiting_len(), pool.total_stats().waiting);
    }

    // Every limit lifted, the pool open: every waiter left is admitted.
    pool.reopen();
    let mut changes = LimitChanges::new().max_tasks(None).default_limit(None);
    for key in 0..KEYS {
        changes = changes.clear_limit(key);
    }
    pool.set_limits(changes);
    for waiter in &mut live.waiters {
        waiter.polled = true;
    }
    live.settle(seed).await;
    assert!(
        live.waiters.is_empty(),
        "seed {seed}: {} waiters were not admitted with no limits\n{:#?}",
        live.waiters.len(),
        live.log
    );
    live.permits.clear();
    for task in std::mem::take(&mut live.tasks) {
        drop(task.finish);
        task.handle.await.unwrap();
    }
    assert_eq!((pool.len(), pool.waiting_len()), (0, 0), "seed {seed}");
    pool.close();
    tokio::time::timeout(std::time::Duration::from_secs(10), pool.wait())
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: wait did not resolve\n{:#?}", live.log));
}

#[tokio::test(flavor = "current_thread")]
async fn the_life_cycle_keeps_counts_limits_and_queues_right() {
    if let Ok(seed) = std::env::var("TASKHERD_MODEL_SEED") {
        let seed = seed.parse().expect("TASKHERD_MODEL_SEED must be a u64");
        run(seed, 120).await;
        return;
    }
    let seeds = std::env::var("TASKHERD_MODEL_SEEDS").map_or(300, |seeds| {
        seeds
            .parse()
            .expect("TASKHERD_MODEL_SEEDS must be a number of seeds")
    });
    for seed in 0..seeds {
        run(seed, 120).await;
    }
}
