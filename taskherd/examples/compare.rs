//! taskherd against what people write by hand, in one process: time per task in two shapes on
//! two runtimes, refused `try_spawn`s per second, allocations per task, and memory after a
//! million one-off groups.
//!
//! Two shapes, each measured on a current-thread runtime and on a 2-worker multi-thread runtime;
//! every contender is warmed up once, then run several times, and the median is reported with
//! its ratio to a bare `tokio::spawn` (the floor) and to the hand-rolled per-key semaphores.
//!
//! - Steady flow: 200,000 trivial tasks spawned from inside a task (as a server would), then
//!   awaited. Keys are `u32`, 3 of 1,000 per task, built before the clock starts (until issue
//!   #13 they were computed in the loop: a few instructions); the waiting contenders use a
//!   total of 64 and 2 per key.
//! - Burst (issue #13): the runtime's main future (`block_on`) spawns 200,000 trivial tasks, then
//!   awaits all the handles. Keys are `String`s built before the clock starts and moved into
//!   `try_spawn` (3 of 1,000 keys, limits so high nothing is refused); the waiting contenders
//!   name 3 of 32 keys with a limit of 4 per key and `max_tasks(64)`.
//!
//! Contenders, with their `TASKHERD_COMPARE_ONLY` index (steady flow / burst):
//!
//! - 0 / 6 `bare tokio::spawn`: the floor.
//! - 1 / 7 `hand-rolled try, 3 keys`: a global `Semaphore` plus per-key semaphores in a
//!   `Mutex<HashMap>`, `try_acquire_owned` on each of the task's groups, permits moved into the
//!   task.
//! - 2 / 8 `hand-rolled wait, 3 keys, tight`: the same with `acquire_owned().await`, keys taken
//!   in sorted order (the usual way to avoid deadlock), under the tight limits.
//! - 3 / 9 `taskherd try_spawn, 0 groups` and 4 / 10 `taskherd try_spawn, 3 groups`: limits
//!   present but never reached.
//! - 5 / 11 `taskherd spawn().await, 3 groups, tight`: the same tight limits as the hand-rolled
//!   wait.
//! - 12, 13, 14: refused `try_spawn`s in a loop on one thread (so per core), `u32` keys, trivial
//!   future handed back each time: a pool with `max_tasks(0)` and 0 groups (12) or 3 groups
//!   (13), and a pool whose groups are all full (`default_limit(0)`, 3 groups, refused at the
//!   first) (14). Reported in millions per second.
//! - 15 / 16 `JoinSet + Semaphore, 0 groups`: what tokio offers for a pool that names no group,
//!   with the same guarantees as taskherd's 0-group `try_spawn` (a cap on the total, and
//!   every task reachable to abort): `try_acquire_owned` on a global `Semaphore`, the permit
//!   moved into a task spawned on a `JoinSet`, the tasks collected with `join_next`. (Indexed
//!   after the refusals so that the indices above keep their meaning.)
//! - 17 / 18 `hand-rolled wait, idle keys removed`: the hand-rolled wait, but giving a key's
//!   semaphore back once nothing holds it, as the pool gives back an idle group's entry
//!   (invariant 4); the plain hand-rolled map keeps a semaphore for every key it has ever
//!   seen. Each per-key permit keeps a clone of its key and, released, removes the key's
//!   semaphore if only the map still holds it.
//! - 19 / 20 `hand-rolled try, idle keys removed`: the hand-rolled try, giving idle keys back
//!   the same way.
//!
//! Run with:
//! `cargo run --release -p taskherd --example compare`
//! (`TASKHERD_COMPARE_TASKS` and `TASKHERD_COMPARE_REPS` change the sizes;
//! `TASKHERD_COMPARE_CURRENT_THREAD=1` runs on the current-thread runtime only;
//! `TASKHERD_COMPARE_ONLY=<index>` runs one contender and stops, on the multi-thread runtime
//! unless `TASKHERD_COMPARE_CURRENT_THREAD=1`. For a profiler:
//! `TASKHERD_COMPARE_ONLY=10 TASKHERD_COMPARE_CURRENT_THREAD=1 TASKHERD_COMPARE_TASKS=20000
//! TASKHERD_COMPARE_REPS=1 valgrind --tool=callgrind target/release/examples/compare`.)
//! The whole run takes about a minute on a 2-core machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hash::Hash;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskherd::TaskPool;
use tokio::runtime::Runtime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Counts allocations, to report allocations per task beyond tokio's own.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counter is a relaxed atomic.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Keys the steady flow's tasks and the burst's `try` contenders spread over.
const KEYS: u32 = 1_000;
/// Keys the burst's waiting contenders spread over.
const BURST_WAIT_KEYS: u32 = 32;
const GROUPS: usize = 3;
/// Limits that exist but are never reached: the try paths are measured admitting.
const LOOSE: usize = 1 << 24;
/// Tight limits for the waiting contenders of the steady flow.
const TIGHT_TOTAL: usize = 64;
const TIGHT_PER_KEY: usize = 2;
/// Tight limits for the waiting contenders of the burst.
const BURST_TOTAL: usize = 64;
const BURST_PER_KEY: usize = 4;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `GROUPS` distinct keys of task `i`, spread over `count` keys (`count` 32 or 1,000: the
/// offsets 331 and 662 stay distinct modulo both).
fn keys_among(i: usize, count: u32) -> [u32; GROUPS] {
    let base = (i as u32).wrapping_mul(2_654_435_761) % count;
    [base, (base + 331) % count, (base + 662) % count]
}

/// The steady flow's keys of task `i`.
fn keys(i: usize) -> [u32; GROUPS] {
    keys_among(i, KEYS)
}

/// The burst's keys, as `String`s, one set per task, built before the clock starts. Never
/// inlined, so that a profile can subtract it.
#[inline(never)]
fn string_keys(tasks: usize, count: u32) -> Vec<[String; GROUPS]> {
    let names: Vec<String> = (0..count).map(|k| format!("group-{k}")).collect();
    (0..tasks)
        .map(|i| keys_among(i, count).map(|k| names[k as usize].clone()))
        .collect()
}

/// The hand-rolled composition: a global semaphore and a map of per-key semaphores.
struct HandRolled<K> {
    global: Arc<Semaphore>,
    per_key: Mutex<HashMap<K, Arc<Semaphore>>>,
    per_key_limit: usize,
}

/// The two ways the hand-rolled contenders take a task's permits.
trait Limits<K>: Sized {
    /// What a task holds until it ends.
    type Permits: Send + 'static;

    fn new(total: usize, per_key_limit: usize) -> Self;

    fn try_permits(&self, keys: [K; GROUPS]) -> Option<Self::Permits>;

    async fn permits(&self, keys: [K; GROUPS]) -> Self::Permits;
}

impl<K: Hash + Eq> HandRolled<K> {
    /// The key's semaphore; the key is moved in (and dropped if the map has it already).
    fn semaphore(&self, key: K) -> Arc<Semaphore> {
        let mut map = self.per_key.lock().unwrap();
        Arc::clone(
            map.entry(key)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_key_limit))),
        )
    }
}

impl<K: Hash + Eq + Ord + Send + Sync + 'static> Limits<K> for HandRolled<K> {
    type Permits = Vec<OwnedSemaphorePermit>;

    fn new(total: usize, per_key_limit: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(total)),
            per_key: Mutex::new(HashMap::new()),
            per_key_limit,
        }
    }

    fn try_permits(&self, keys: [K; GROUPS]) -> Option<Vec<OwnedSemaphorePermit>> {
        let mut permits = Vec::with_capacity(GROUPS + 1);
        permits.push(Arc::clone(&self.global).try_acquire_owned().ok()?);
        for key in keys {
            permits.push(self.semaphore(key).try_acquire_owned().ok()?);
        }
        Some(permits)
    }

    async fn permits(&self, mut keys: [K; GROUPS]) -> Vec<OwnedSemaphorePermit> {
        keys.sort_unstable();
        let mut permits = Vec::with_capacity(GROUPS + 1);
        permits.push(Arc::clone(&self.global).acquire_owned().await.unwrap());
        for key in keys {
            permits.push(self.semaphore(key).acquire_owned().await.unwrap());
        }
        permits
    }
}

/// [`HandRolled`], but giving a key's semaphore back once nothing holds it,
/// as the pool does with its groups (invariant 4): [`HandRolled`] keeps a semaphore for every
/// key it has seen, which is why a pool of one-off keys grows without bound with it. Each
/// per-key permit keeps a clone of its key; released, it drops the permit, then removes the
/// key's semaphore from the map if the map's is the only reference left (checked under the
/// map's lock, under which every other reference is made). A `permits` call dropped while
/// waiting can leave its key's semaphore behind; the comparison never drops one.
struct TidyHandRolled<K> {
    global: Arc<Semaphore>,
    per_key: Arc<Mutex<HashMap<K, Arc<Semaphore>>>>,
    per_key_limit: usize,
}

/// A per-key permit of [`TidyHandRolled`].
struct TidyPermit<K: Hash + Eq> {
    permit: Option<OwnedSemaphorePermit>,
    key: K,
    map: Arc<Mutex<HashMap<K, Arc<Semaphore>>>>,
}

/// What [`TidyHandRolled`]'s calls return: the global permit and one per key.
type TidyPermits<K> = (OwnedSemaphorePermit, Vec<TidyPermit<K>>);

/// Removes `key`'s semaphore if only the map holds it.
fn remove_if_idle<K: Hash + Eq>(map: &Mutex<HashMap<K, Arc<Semaphore>>>, key: &K) {
    let mut map = map.lock().unwrap();
    if map
        .get(key)
        .is_some_and(|semaphore| Arc::strong_count(semaphore) == 1)
    {
        map.remove(key);
    }
}

impl<K: Hash + Eq> Drop for TidyPermit<K> {
    fn drop(&mut self) {
        drop(self.permit.take());
        remove_if_idle(&self.map, &self.key);
    }
}

impl<K: Hash + Eq + Ord + Clone> TidyHandRolled<K> {
    /// The key's semaphore (made if the map has none); the key is kept by the caller, so the
    /// map gets a clone of it (dropped if it has the key already).
    fn semaphore(&self, key: &K) -> Arc<Semaphore> {
        let mut map = self.per_key.lock().unwrap();
        Arc::clone(
            map.entry(key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_key_limit))),
        )
    }

    fn tidy(&self, key: K, permit: OwnedSemaphorePermit) -> TidyPermit<K> {
        TidyPermit {
            permit: Some(permit),
            key,
            map: Arc::clone(&self.per_key),
        }
    }
}

impl<K: Hash + Eq + Ord + Clone + Send + Sync + 'static> Limits<K> for TidyHandRolled<K> {
    type Permits = TidyPermits<K>;

    fn new(total: usize, per_key_limit: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(total)),
            per_key: Arc::new(Mutex::new(HashMap::new())),
            per_key_limit,
        }
    }

    fn try_permits(&self, keys: [K; GROUPS]) -> Option<TidyPermits<K>> {
        let global = Arc::clone(&self.global).try_acquire_owned().ok()?;
        let mut permits = Vec::with_capacity(GROUPS);
        for key in keys {
            let permit = match self.semaphore(&key).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    // Made for nothing, perhaps: tidied like a released key.
                    remove_if_idle(&self.per_key, &key);
                    return None;
                }
            };
            permits.push(self.tidy(key, permit));
        }
        Some((global, permits))
    }

    async fn permits(&self, mut keys: [K; GROUPS]) -> TidyPermits<K> {
        keys.sort_unstable();
        let global = Arc::clone(&self.global).acquire_owned().await.unwrap();
        let mut permits = Vec::with_capacity(GROUPS);
        for key in keys {
            let permit = self.semaphore(&key).acquire_owned().await.unwrap();
            permits.push(self.tidy(key, permit));
        }
        (global, permits)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Spawned from inside a task, `u32` keys.
    Steady,
    /// Spawned from `block_on`'s own future, `String` keys moved in.
    Burst,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Steady => "steady flow (spawned from a task, u32 keys, 3 of 1,000)",
            Shape::Burst => {
                "burst (spawned from block_on, String keys moved in, 3 of 1,000; waiting: 3 of 32)"
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Contender {
    Bare,
    HandRolledTry,
    HandRolledWait,
    TaskherdTry(usize),
    TaskherdWait,
    JoinSetSemaphore,
    TidyHandRolledWait,
    TidyHandRolledTry,
}

/// The contenders of one shape, in `TASKHERD_COMPARE_ONLY` order (then
/// [`EXTRA_CONTENDERS`], from 15).
/// Like-for-like references added after the goal was set, indexed after the refusals (15 / 16,
/// 17 / 18, 19 / 20) so that the indices above keep their meaning.
const EXTRA_CONTENDERS: [Contender; 3] = [
    Contender::JoinSetSemaphore,
    Contender::TidyHandRolledWait,
    Contender::TidyHandRolledTry,
];

const CONTENDERS: [Contender; 6] = [
    Contender::Bare,
    Contender::HandRolledTry,
    Contender::HandRolledWait,
    Contender::TaskherdTry(0),
    Contender::TaskherdTry(3),
    Contender::TaskherdWait,
];

impl Contender {
    fn name(self) -> String {
        match self {
            Contender::Bare => "bare tokio::spawn".into(),
            Contender::HandRolledTry => "hand-rolled try, 3 keys".into(),
            Contender::HandRolledWait => "hand-rolled wait, 3 keys, tight".into(),
            Contender::TaskherdTry(n) => format!("taskherd try_spawn, {n} groups"),
            Contender::TaskherdWait => "taskherd spawn().await, 3 groups, tight".into(),
            Contender::JoinSetSemaphore => "JoinSet + Semaphore, 0 groups".into(),
            Contender::TidyHandRolledWait => "hand-rolled wait, idle keys removed".into(),
            Contender::TidyHandRolledTry => "hand-rolled try, idle keys removed".into(),
        }
    }

    /// Whether the contender names groups (its burst needs `String` keys).
    fn names_groups(self) -> bool {
        !matches!(
            self,
            Contender::Bare | Contender::TaskherdTry(0) | Contender::JoinSetSemaphore
        )
    }

    fn waits(self) -> bool {
        matches!(
            self,
            Contender::HandRolledWait | Contender::TaskherdWait | Contender::TidyHandRolledWait
        )
    }

    /// Spawns `tasks` trivial tasks from the caller's future, moving `keys[i]` into task `i`'s
    /// admission, and awaits them all; returns the elapsed time. `keys` (built before the clock
    /// starts) is empty for contenders that name no group; the waiting contenders use a total
    /// of `tight.0` and `tight.1` per key.
    async fn run<K>(self, tasks: usize, keys: Vec<[K; GROUPS]>, tight: (usize, usize)) -> Duration
    where
        K: Hash + Eq + Ord + Clone + Send + Sync + 'static,
    {
        let mut handles = Vec::with_capacity(tasks);
        let start = Instant::now();
        match self {
            Contender::Bare => {
                for i in 0..tasks {
                    handles.push(tokio::spawn(async move { black_box(i) }));
                }
            }
            Contender::HandRolledTry | Contender::HandRolledWait => {
                hand_rolled::<K, HandRolled<K>>(self.waits(), keys, tight, &mut handles).await;
            }
            Contender::TidyHandRolledTry | Contender::TidyHandRolledWait => {
                hand_rolled::<K, TidyHandRolled<K>>(self.waits(), keys, tight, &mut handles).await;
            }
            Contender::JoinSetSemaphore => {
                let total = Arc::new(Semaphore::new(LOOSE));
                let mut set = JoinSet::new();
                for i in 0..tasks {
                    let Ok(permit) = Arc::clone(&total).try_acquire_owned() else {
                        panic!("a loose limit refused a task")
                    };
                    set.spawn(async move {
                        let _permit = permit;
                        black_box(i)
                    });
                }
                while let Some(output) = set.join_next().await {
                    black_box(output.expect("task panicked"));
                }
            }
            Contender::TaskherdTry(0) => {
                let pool = TaskPool::<K>::builder()
                    .max_tasks(LOOSE)
                    .default_limit(LOOSE)
                    .build();
                for i in 0..tasks {
                    let task = async move { black_box(i) };
                    let Ok(handle) = pool.try_spawn([], task) else {
                        panic!("loose limits refused a task")
                    };
                    handles.push(handle);
                }
            }
            Contender::TaskherdTry(_) => {
                let pool = TaskPool::builder()
                    .max_tasks(LOOSE)
                    .default_limit(LOOSE)
                    .build();
                for (i, keys) in keys.into_iter().enumerate() {
                    let task = async move { black_box(i) };
                    let Ok(handle) = pool.try_spawn(keys, task) else {
                        panic!("loose limits refused a task")
                    };
                    handles.push(handle);
                }
            }
            Contender::TaskherdWait => {
                let pool = TaskPool::builder()
                    .max_tasks(tight.0)
                    .default_limit(tight.1)
                    .build();
                for (i, keys) in keys.into_iter().enumerate() {
                    let task = async move { black_box(i) };
                    let Ok(handle) = pool.spawn(keys, task).await else {
                        panic!("the pool is never closed")
                    };
                    handles.push(handle);
                }
            }
        }
        for handle in handles {
            black_box(handle.await.expect("task panicked"));
        }
        start.elapsed()
    }
}

/// Spawns a task per set of `keys` under the hand-rolled limits `L`, waiting for its permits
/// (under the tight limits) or taking them at once (under loose ones), the permits moved into
/// the task.
async fn hand_rolled<K, L: Limits<K>>(
    waits: bool,
    keys: Vec<[K; GROUPS]>,
    tight: (usize, usize),
    handles: &mut Vec<tokio::task::JoinHandle<usize>>,
) {
    let limits = if waits {
        L::new(tight.0, tight.1)
    } else {
        L::new(LOOSE, LOOSE)
    };
    for (i, keys) in keys.into_iter().enumerate() {
        let permits = if waits {
            limits.permits(keys).await
        } else {
            limits.try_permits(keys).expect("loose limits")
        };
        handles.push(tokio::spawn(async move {
            let _permits = permits;
            black_box(i)
        }));
    }
}

/// A pool that refuses every `try_spawn`, and the groups named in the loop.
#[derive(Clone, Copy)]
enum Refusing {
    /// `max_tasks(0)`, naming 0 or 3 groups.
    TotalZero(usize),
    /// `default_limit(0)`: every group is full; 3 groups named, refused at the first.
    GroupsFull,
}

/// The refusal loops, in `TASKHERD_COMPARE_ONLY` order (from 12).
const REFUSING: [Refusing; 3] = [
    Refusing::TotalZero(0),
    Refusing::TotalZero(3),
    Refusing::GroupsFull,
];

impl Refusing {
    fn name(self) -> String {
        match self {
            Refusing::TotalZero(n) => format!("total 0, {n} groups"),
            Refusing::GroupsFull => "groups full, 3 groups".into(),
        }
    }

    /// `attempts` refused `try_spawn`s in a loop on this thread; returns the elapsed time.
    fn run(self, attempts: usize) -> Duration {
        let (pool, groups) = match self {
            Refusing::TotalZero(n) => (TaskPool::<u32>::builder().max_tasks(0).build(), n),
            Refusing::GroupsFull => (TaskPool::<u32>::builder().default_limit(0).build(), 3),
        };
        let start = Instant::now();
        for i in 0..attempts {
            let keys = keys(i);
            let refused = pool.try_spawn(keys[..groups].iter().copied(), async move {
                black_box(i);
            });
            let Err(refused) = refused else {
                panic!("a refusing pool admitted a task")
            };
            drop(black_box(refused.into_inner()));
        }
        start.elapsed()
    }
}

fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a 2-worker runtime")
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

/// Median of `reps` runs of `once` after one warm-up.
fn median(reps: usize, mut once: impl FnMut() -> Duration) -> Duration {
    once();
    let mut times: Vec<Duration> = (0..reps).map(|_| once()).collect();
    times.sort();
    times[reps / 2]
}

/// The steady flow's `u32` keys, one set per task (none if `contender` names no group). Never
/// inlined, so that a profile can subtract it.
#[inline(never)]
fn steady_keys(contender: Contender, tasks: usize) -> Vec<[u32; GROUPS]> {
    if contender.names_groups() {
        (0..tasks).map(keys).collect()
    } else {
        Vec::new()
    }
}

/// Median of `reps` runs after one warm-up: the steady flow from a task on the runtime, the
/// burst from `block_on` itself; keys are built before each run, outside the clock.
fn measure(
    rt: &Runtime,
    shape: Shape,
    contender: Contender,
    tasks: usize,
    reps: usize,
) -> Duration {
    median(reps, || match shape {
        Shape::Steady => {
            let keys = steady_keys(contender, tasks);
            let tight = (TIGHT_TOTAL, TIGHT_PER_KEY);
            rt.block_on(async move { tokio::spawn(contender.run(tasks, keys, tight)).await })
                .expect("contender panicked")
        }
        Shape::Burst => {
            let keys = match (contender.names_groups(), contender.waits()) {
                (false, _) => Vec::new(),
                (true, false) => string_keys(tasks, KEYS),
                (true, true) => string_keys(tasks, BURST_WAIT_KEYS),
            };
            rt.block_on(contender.run(tasks, keys, (BURST_TOTAL, BURST_PER_KEY)))
        }
    })
}

/// Refused `try_spawn`s per second on one thread of `rt` (median of `reps` after a warm-up).
fn refusals_per_second(rt: &Runtime, refusing: Refusing, attempts: usize, reps: usize) -> f64 {
    let time = median(reps, || rt.block_on(async move { refusing.run(attempts) }));
    attempts as f64 / time.as_secs_f64()
}

/// Allocations per task on a current-thread runtime, where nothing else allocates.
fn allocations_per_task(contender: Contender, tasks: usize) -> f64 {
    let rt = current_thread();
    let tight = (TIGHT_TOTAL, TIGHT_PER_KEY);
    // Warm-up: grows the run queue and the pool's tables.
    rt.block_on(contender.run(tasks, steady_keys(contender, tasks), tight));
    let keys = steady_keys(contender, tasks);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    rt.block_on(contender.run(tasks, keys, tight));
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    (after - before) as f64 / tasks as f64
}

/// Resident set size in bytes, from /proc/self/statm (Linux).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Runs a million tasks, each in a group of its own, in batches of 10,000 live at once.
fn one_off_groups(rt: &Runtime) {
    rt.block_on(async {
        let pool = TaskPool::<u64>::builder().default_limit(1).build();
        for batch in 0..100u64 {
            let mut handles = Vec::with_capacity(10_000);
            for i in 0..10_000u64 {
                let key = batch * 10_000 + i;
                let Ok(handle) = pool.try_spawn([key], async {}) else {
                    panic!("a fresh group refused a task")
                };
                handles.push(handle);
            }
            for handle in handles {
                handle.await.expect("task panicked");
            }
        }
        assert!(pool.is_empty());
    });
}

/// The ratios issue #13's goal names, for one shape on one runtime.
struct Ratios {
    runtime: &'static str,
    shape: Shape,
    zero_vs_bare: f64,
    three_vs_bare: f64,
    three_vs_hand: f64,
    wait_vs_hand: f64,
    /// Not one of the goal's ratios: 0 groups against tokio's own way to cap and abort.
    zero_vs_join_set: f64,
    /// Not one of the goal's ratios: waiting against a hand-rolled wait that, like the pool,
    /// gives back what it keeps for a key once the key is idle.
    wait_vs_tidy: f64,
    /// Not one of the goal's ratios: 3 groups against a hand-rolled try that gives back idle
    /// keys.
    three_vs_tidy: f64,
}

/// Measures every contender of `shape` on `rt`, prints its table, returns the goal's ratios.
fn shape_table(
    rt: &Runtime,
    runtime: &'static str,
    shape: Shape,
    tasks: usize,
    reps: usize,
) -> Ratios {
    let times: Vec<(Contender, f64)> = CONTENDERS
        .iter()
        .chain(&EXTRA_CONTENDERS)
        .map(|&c| (c, measure(rt, shape, c, tasks, reps).as_secs_f64()))
        .collect();
    let [
        floor,
        hand_try,
        hand_wait,
        zero,
        three,
        wait,
        join_set,
        tidy_wait,
        tidy_try,
    ] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(|i| times[i].1);
    println!("{}, {runtime}:", shape.name());
    println!(
        "{:<42} {:>10} {:>9} {:>9} {:>13}",
        "contender", "ms", "ns/task", "x floor", "x hand-rolled"
    );
    for &(contender, secs) in &times {
        let versus = if contender.waits() {
            secs / hand_wait
        } else {
            secs / hand_try
        };
        println!(
            "{:<42} {:>10.1} {:>9.0} {:>9.2} {:>13.2}",
            contender.name(),
            secs * 1e3,
            secs * 1e9 / tasks as f64,
            secs / floor,
            versus
        );
    }
    println!();
    Ratios {
        runtime,
        shape,
        zero_vs_bare: zero / floor,
        three_vs_bare: three / floor,
        three_vs_hand: three / hand_try,
        wait_vs_hand: wait / hand_wait,
        zero_vs_join_set: zero / join_set,
        wait_vs_tidy: wait / tidy_wait,
        three_vs_tidy: three / tidy_try,
    }
}

fn main() {
    let tasks = env_usize("TASKHERD_COMPARE_TASKS", 200_000);
    let reps = env_usize("TASKHERD_COMPARE_REPS", 5).max(1);
    let current_only = std::env::var_os("TASKHERD_COMPARE_CURRENT_THREAD").is_some();
    let attempts = tasks * 10;
    // `TASKHERD_COMPARE_ONLY=<index>` runs one contender alone (for a profiler) and stops. With
    // `TASKHERD_COMPARE_CURRENT_THREAD=1`, on a current-thread runtime: deterministic, so
    // instruction counts (`valgrind --tool=callgrind`) repeat exactly.
    if let Some(only) = std::env::var("TASKHERD_COMPARE_ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let rt = if current_only {
            current_thread()
        } else {
            multi_thread()
        };
        let n = CONTENDERS.len();
        let extra = 2 * n + REFUSING.len();
        if only < 2 * n || (extra..extra + 2 * EXTRA_CONTENDERS.len()).contains(&only) {
            let (shape, contender) = match only {
                i if i < n => (Shape::Steady, CONTENDERS[i]),
                i if i < 2 * n => (Shape::Burst, CONTENDERS[i - n]),
                i => {
                    let shape = if (i - extra).is_multiple_of(2) {
                        Shape::Steady
                    } else {
                        Shape::Burst
                    };
                    (shape, EXTRA_CONTENDERS[(i - extra) / 2])
                }
            };
            let time = measure(&rt, shape, contender, tasks, reps);
            println!(
                "{} ({}): {:.1} ms",
                contender.name(),
                shape.name(),
                time.as_secs_f64() * 1e3
            );
        } else {
            let refusing = REFUSING[(only - 2 * n).min(REFUSING.len() - 1)];
            let rate = refusals_per_second(&rt, refusing, attempts, reps);
            println!(
                "refused try_spawn, {}: {:.1} million/s",
                refusing.name(),
                rate / 1e6
            );
        }
        return;
    }

    let multi = multi_thread();
    let mut runtimes: Vec<(&'static str, Runtime)> = vec![("current_thread", current_thread())];
    if !current_only {
        runtimes.push(("multi_thread, 2 workers", multi_thread()));
    }
    println!("{tasks} tasks per run, median of {reps} runs after a warm-up; times are wall clock");
    println!();
    let mut ratios = Vec::new();
    let mut refusals = Vec::new();
    for (runtime, rt) in &runtimes {
        for shape in [Shape::Steady, Shape::Burst] {
            ratios.push(shape_table(rt, runtime, shape, tasks, reps));
        }
        let rates: Vec<f64> = REFUSING
            .iter()
            .map(|&r| refusals_per_second(rt, r, attempts, reps))
            .collect();
        print!("refused try_spawn on one thread of {runtime}, {attempts} in a loop:");
        for (refusing, rate) in REFUSING.iter().zip(&rates) {
            print!(" {}: {:.1} M/s;", refusing.name(), rate / 1e6);
        }
        println!();
        println!();
        refusals.push((*runtime, rates));
    }

    println!(
        "Issue #13's ratios (goal: <= 1.15, <= 1.35, <= 0.8 burst / 1.0 steady, <= 0.9; the last three columns are not goals):"
    );
    println!(
        "| runtime | shape | 0 groups / bare spawn | 3 groups / bare spawn | 3 groups / hand-rolled try | waiting / hand-rolled wait | 0 groups / JoinSet + Semaphore | 3 groups / hand-rolled try, idle keys removed | waiting / hand-rolled wait, idle keys removed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &ratios {
        let shape = match r.shape {
            Shape::Steady => "steady",
            Shape::Burst => "burst",
        };
        println!(
            "| {} | {shape} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.runtime,
            r.zero_vs_bare,
            r.three_vs_bare,
            r.three_vs_hand,
            r.wait_vs_hand,
            r.zero_vs_join_set,
            r.three_vs_tidy,
            r.wait_vs_tidy
        );
    }
    println!();
    println!("Refused try_spawn, millions per second on one core (goal: > 10):");
    println!(
        "| runtime | {} |",
        REFUSING
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---|---|---|");
    for (runtime, rates) in &refusals {
        println!(
            "| {runtime} | {} |",
            rates
                .iter()
                .map(|r| format!("{:.1}", r / 1e6))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }

    println!();
    let alloc_tasks = tasks.min(50_000);
    let bare = allocations_per_task(Contender::Bare, alloc_tasks);
    for contender in [Contender::TaskherdTry(0), Contender::TaskherdTry(3)] {
        let allocs = allocations_per_task(contender, alloc_tasks);
        println!(
            "{:<42} {:.3} allocations per task beyond bare tokio::spawn ({allocs:.3} vs {bare:.3}; steady flow)",
            contender.name(),
            allocs - bare
        );
    }

    println!();
    match rss() {
        Some(before) => {
            one_off_groups(&multi);
            let after = rss().unwrap_or(before);
            println!(
                "RSS before 1,000,000 tasks in one-off groups: {:.1} MB, after: {:.1} MB, growth {:.1} MB",
                before as f64 / 1e6,
                after as f64 / 1e6,
                (after as f64 - before as f64) / 1e6
            );
        }
        None => println!("RSS: /proc/self/statm not available on this system"),
    }
}
