//! taskherd against what people write by hand, in one process: time per task, allocations per
//! task, and memory after a million one-off groups.
//!
//! Every contender spawns 200,000 trivial tasks on a 2-worker multi-thread runtime (from inside a
//! task, as a server would) and awaits them all; each is warmed up, then run several times, and
//! the median is reported with its ratio to a bare `tokio::spawn` (the floor) and to the
//! hand-rolled per-key semaphores.
//!
//! - `bare tokio::spawn`: the floor.
//! - `hand-rolled try, 3 keys`: a global `Semaphore` plus per-key semaphores in a
//!   `Mutex<HashMap>`, `try_acquire_owned` on each of the task's groups, permits moved into the
//!   task.
//! - `hand-rolled wait, 3 keys, tight`: the same with `acquire_owned().await`, keys taken in
//!   sorted order (the usual way to avoid deadlock), under tight limits.
//! - `taskherd try_spawn, 0 / 3 groups`: limits present but never reached.
//! - `taskherd spawn().await, 3 groups, tight`: the same tight limits as the hand-rolled wait.
//!
//! Groups are 3 keys out of 1,000. Run with:
//! `cargo run --release -p taskherd --example compare`
//! (`TASKHERD_COMPARE_TASKS` and `TASKHERD_COMPARE_REPS` change the sizes;
//! `TASKHERD_COMPARE_ONLY=<index>` runs one contender, and with
//! `TASKHERD_COMPARE_CURRENT_THREAD=1` on a current-thread runtime, for a profiler:
//! `TASKHERD_COMPARE_ONLY=4 TASKHERD_COMPARE_CURRENT_THREAD=1 TASKHERD_COMPARE_TASKS=20000
//! TASKHERD_COMPARE_REPS=1 valgrind --tool=callgrind target/release/examples/compare`.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskherd::TaskPool;
use tokio::runtime::Runtime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

const KEYS: u32 = 1_000;
const GROUPS: usize = 3;
/// Limits that exist but are never reached: the try paths are measured admitting.
const LOOSE: usize = 1 << 24;
/// Tight limits for the waiting contenders.
const TIGHT_TOTAL: usize = 64;
const TIGHT_PER_KEY: usize = 2;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `GROUPS` distinct keys of task `i`, spread over `KEYS`.
fn keys(i: usize) -> [u32; GROUPS] {
    let base = (i as u32).wrapping_mul(2_654_435_761) % KEYS;
    [base, (base + 331) % KEYS, (base + 662) % KEYS]
}

/// The hand-rolled composition: a global semaphore and a map of per-key semaphores.
struct HandRolled {
    global: Arc<Semaphore>,
    per_key: Mutex<HashMap<u32, Arc<Semaphore>>>,
    per_key_limit: usize,
}

impl HandRolled {
    fn new(total: usize, per_key_limit: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(total)),
            per_key: Mutex::new(HashMap::new()),
            per_key_limit,
        }
    }

    fn semaphore(&self, key: u32) -> Arc<Semaphore> {
        let mut map = self.per_key.lock().unwrap();
        Arc::clone(
            map.entry(key)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_key_limit))),
        )
    }

    fn try_permits(&self, keys: [u32; GROUPS]) -> Option<Vec<OwnedSemaphorePermit>> {
        let mut permits = Vec::with_capacity(GROUPS + 1);
        permits.push(Arc::clone(&self.global).try_acquire_owned().ok()?);
        for key in keys {
            permits.push(self.semaphore(key).try_acquire_owned().ok()?);
        }
        Some(permits)
    }

    async fn permits(&self, mut keys: [u32; GROUPS]) -> Vec<OwnedSemaphorePermit> {
        keys.sort_unstable();
        let mut permits = Vec::with_capacity(GROUPS + 1);
        permits.push(Arc::clone(&self.global).acquire_owned().await.unwrap());
        for key in keys {
            permits.push(self.semaphore(key).acquire_owned().await.unwrap());
        }
        permits
    }
}

#[derive(Clone, Copy)]
enum Contender {
    Bare,
    HandRolledTry,
    HandRolledWait,
    TaskherdTry(usize),
    TaskherdWait,
}

impl Contender {
    fn name(self) -> String {
        match self {
            Contender::Bare => "bare tokio::spawn".into(),
            Contender::HandRolledTry => "hand-rolled try, 3 keys".into(),
            Contender::HandRolledWait => "hand-rolled wait, 3 keys, tight".into(),
            Contender::TaskherdTry(n) => format!("taskherd try_spawn, {n} groups"),
            Contender::TaskherdWait => "taskherd spawn().await, 3 groups, tight".into(),
        }
    }

    /// Spawns `tasks` trivial tasks and awaits them all; returns the elapsed time.
    async fn run(self, tasks: usize) -> Duration {
        let mut handles = Vec::with_capacity(tasks);
        let start = Instant::now();
        match self {
            Contender::Bare => {
                for i in 0..tasks {
                    handles.push(tokio::spawn(async move { black_box(i) }));
                }
            }
            Contender::HandRolledTry => {
                let limits = HandRolled::new(LOOSE, LOOSE);
                for i in 0..tasks {
                    let permits = limits.try_permits(keys(i)).expect("loose limits");
                    handles.push(tokio::spawn(async move {
                        let _permits = permits;
                        black_box(i)
                    }));
                }
            }
            Contender::HandRolledWait => {
                let limits = HandRolled::new(TIGHT_TOTAL, TIGHT_PER_KEY);
                for i in 0..tasks {
                    let permits = limits.permits(keys(i)).await;
                    handles.push(tokio::spawn(async move {
                        let _permits = permits;
                        black_box(i)
                    }));
                }
            }
            Contender::TaskherdTry(groups) => {
                let pool = TaskPool::builder()
                    .max_tasks(LOOSE)
                    .default_limit(LOOSE)
                    .build();
                for i in 0..tasks {
                    let task = async move { black_box(i) };
                    let keys = keys(i);
                    let handle = pool.try_spawn(keys[..groups].iter().copied(), task);
                    let Ok(handle) = handle else {
                        panic!("loose limits refused a task")
                    };
                    handles.push(handle);
                }
            }
            Contender::TaskherdWait => {
                let pool = TaskPool::builder()
                    .max_tasks(TIGHT_TOTAL)
                    .default_limit(TIGHT_PER_KEY)
                    .build();
                for i in 0..tasks {
                    let task = async move { black_box(i) };
                    let handle = pool.spawn(keys(i), task).await;
                    let Ok(handle) = handle else {
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

fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a 2-worker runtime")
}

/// Median of `reps` runs after one warm-up, each driven from a task on the runtime.
fn measure(rt: &Runtime, contender: Contender, tasks: usize, reps: usize) -> Duration {
    let once = || {
        rt.block_on(async move { tokio::spawn(contender.run(tasks)).await })
            .expect("contender panicked")
    };
    once();
    let mut times: Vec<Duration> = (0..reps).map(|_| once()).collect();
    times.sort();
    times[reps / 2]
}

/// Allocations per task on a current-thread runtime, where nothing else allocates.
fn allocations_per_task(contender: Contender, tasks: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    rt.block_on(contender.run(tasks)); // warm-up: grows the run queue and the pool's tables
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    rt.block_on(contender.run(tasks));
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

fn main() {
    let tasks = env_usize("TASKHERD_COMPARE_TASKS", 200_000);
    let reps = env_usize("TASKHERD_COMPARE_REPS", 5).max(1);
    let rt = multi_thread();
    let contenders = [
        Contender::Bare,
        Contender::HandRolledTry,
        Contender::HandRolledWait,
        Contender::TaskherdTry(0),
        Contender::TaskherdTry(3),
        Contender::TaskherdWait,
    ];
    // `TASKHERD_COMPARE_ONLY=<index>` runs one contender alone (for a profiler) and stops.
    if let Some(only) = std::env::var("TASKHERD_COMPARE_ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let contender = contenders[only.min(contenders.len() - 1)];
        // With `TASKHERD_COMPARE_CURRENT_THREAD=1`, on a current-thread runtime: deterministic,
        // so instruction counts (`valgrind --tool=callgrind`) repeat exactly.
        let time = if std::env::var_os("TASKHERD_COMPARE_CURRENT_THREAD").is_some() {
            let current = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime");
            measure(&current, contender, tasks, reps)
        } else {
            measure(&rt, contender, tasks, reps)
        };
        println!("{}: {:.1} ms", contender.name(), time.as_secs_f64() * 1e3);
        return;
    }
    let times: Vec<(Contender, Duration)> = contenders
        .iter()
        .map(|&c| (c, measure(&rt, c, tasks, reps)))
        .collect();
    let floor = times[0].1.as_secs_f64();
    let hand_try = times[1].1.as_secs_f64();
    let hand_wait = times[2].1.as_secs_f64();

    println!(
        "{tasks} tasks, 2-worker runtime, median of {reps} runs after a warm-up; {GROUPS} groups out of {KEYS} keys"
    );
    println!(
        "{:<42} {:>10} {:>9} {:>9} {:>13}",
        "contender", "ms", "ns/task", "x floor", "x hand-rolled"
    );
    for (contender, time) in &times {
        let secs = time.as_secs_f64();
        let versus = match contender {
            Contender::HandRolledWait | Contender::TaskherdWait => secs / hand_wait,
            _ => secs / hand_try,
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
    let alloc_tasks = tasks.min(50_000);
    let bare = allocations_per_task(Contender::Bare, alloc_tasks);
    for contender in [Contender::TaskherdTry(0), Contender::TaskherdTry(3)] {
        let allocs = allocations_per_task(contender, alloc_tasks);
        println!(
            "{:<42} {:.3} allocations per task beyond bare tokio::spawn ({allocs:.3} vs {bare:.3})",
            contender.name(),
            allocs - bare
        );
    }

    println!();
    match rss() {
        Some(before) => {
            one_off_groups(&rt);
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
