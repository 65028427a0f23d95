//! How long the pool's one lock is held per admission and release, measured from outside the
//! library (issue #13, "Beyond this machine"), with 0, 1, 3 and 8 groups.
//!
//! The library is not instrumented, so the hold time is not read off the lock; it is estimated
//! from outside in three ways, none exact:
//!
//! 1. Subtraction, one thread, no contention (table 1). `try_acquire` + drop of the permit in a
//!    tight loop on a pool whose groups have explicit (never reached) limits, so their entries
//!    stay in the table and every cycle takes the lock exactly twice (admission, release;
//!    nothing to create or reclaim). From the time per cycle we subtract the parts that run
//!    outside the lock, each timed alone in the same run: building the group set (hashing
//!    every key with the pool's default `RandomState`, pairwise de-duplication into a small
//!    vector of `(hash, serial, key)`, as `GroupSet::new` does; 8 groups spill it to the heap),
//!    two uncontended lock + unlock pairs of a `parking_lot::Mutex` (the lock operations
//!    themselves: on the critical path under contention, but not "holding"), and one `Arc`
//!    clone + drop (the permit's handle on the pool). What remains estimates the work done
//!    while holding the lock per admission + release. The replicas are not the library's code
//!    (inlining and cache state differ), and everything not replicated (the permit's moves,
//!    `Result` plumbing, the deferred-work buffer) is counted as held, so it leans high; on a
//!    shared machine it is also noisy.
//! 2. Instruction counts (not printed here: run the loop alone under callgrind with
//!    `LOCK_HOLD_ONLY=<groups>`). `State::try_admit` and `State::release` are exactly the
//!    work under the lock of an admission and a release (their inclusive counts), against the
//!    instructions of the whole cycle. Their share of the cycle, times the cycle's time, is an
//!    estimate of the hold time that assumes the same speed inside and outside the lock.
//! 3. Throughput, 1 and 2 threads (table 2). Each thread runs the same loop on its own keys;
//!    either all threads share one pool (one lock, one total) or each has a pool of its own.
//!    If the lock were free, sharing would cost nothing; the shared/separate ratio shows what
//!    the one lock (and the cache line it lives on) costs with 2 threads. This machine has
//!    2 cores, shared with other work: the 2-thread figures are noisy, and they say nothing
//!    direct about 32 or 64 cores, where moving the lock's cache line between cores (and
//!    sockets) adds to every hand-over of the lock.
//!
//! `try_spawn` takes the lock three times per task (admission + task record, attaching the
//! abort handle, release); this measures the two a permit takes, which do the counting.
//!
//! Run with: `cargo run --release -p taskherd --example lock_hold`
//! (`LOCK_HOLD_CYCLES` cycles per measurement, default 1,000,000; `LOCK_HOLD_REPS` runs, median
//! reported, default 5; `LOCK_HOLD_ONLY=<groups>` runs only the single-thread pool loop with
//! that many groups, e.g. `LOCK_HOLD_ONLY=3 LOCK_HOLD_CYCLES=100000 LOCK_HOLD_REPS=1 valgrind
//! --tool=callgrind target/release/examples/lock_hold`.) About 30 seconds on a 2-core machine.

use std::hash::{BuildHasher, RandomState};
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use smallvec::SmallVec;
use taskherd::TaskPool;

/// Group counts measured.
const GROUP_COUNTS: [usize; 4] = [0, 1, 3, 8];
/// Limits that exist but are never reached.
const LOOSE: usize = 1 << 24;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The keys thread `thread` names: `groups` keys of its own.
fn thread_keys(thread: usize, groups: usize) -> Vec<u64> {
    (0..groups).map(|g| (thread * 100 + g) as u64).collect()
}

/// A pool with an explicit loose limit on every key of `threads` threads, so their entries stay.
fn pool(threads: usize, groups: usize) -> TaskPool<u64> {
    let mut builder = TaskPool::builder().max_tasks(LOOSE);
    for thread in 0..threads {
        for key in thread_keys(thread, groups) {
            builder = builder.limit(key, LOOSE);
        }
    }
    builder.build()
}

/// `cycles` admissions and releases of a permit in `keys`.
fn admit_release(pool: &TaskPool<u64>, keys: &[u64], cycles: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..cycles {
        let permit = pool
            .try_acquire(keys.iter().copied())
            .expect("loose limits");
        black_box(&permit);
        drop(permit);
    }
    start.elapsed()
}

/// What `GroupSet::new` does outside the lock, replicated: hash each key, de-duplicate
/// pairwise, push `(hash, serial, key)` into a vector of 4 inline items; then drop it.
fn group_set(hasher: &RandomState, keys: &[u64], cycles: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..cycles {
        let mut items: SmallVec<[(u64, u64, Option<u64>); 4]> = SmallVec::new();
        for &key in black_box(keys) {
            let hash = hasher.hash_one(key);
            if items.iter().any(|i| i.0 == hash && i.2 == Some(key)) {
                continue;
            }
            items.push((hash, 0, Some(key)));
        }
        black_box(&items);
    }
    start.elapsed()
}

/// Two uncontended lock + unlock pairs per cycle, as an admission and its release take.
fn lock_pairs(cycles: usize) -> Duration {
    let lock = Mutex::new(0u64);
    let start = Instant::now();
    for _ in 0..cycles {
        *black_box(&lock).lock() += 1;
        *black_box(&lock).lock() += 1;
    }
    black_box(lock.into_inner());
    start.elapsed()
}

/// One `Arc` clone + drop per cycle.
fn arc_clone(cycles: usize) -> Duration {
    let shared = Arc::new(0u64);
    let start = Instant::now();
    for _ in 0..cycles {
        drop(black_box(Arc::clone(&shared)));
    }
    start.elapsed()
}

/// Median of `reps` runs of `once` after a warm-up, in nanoseconds per cycle.
fn median_ns(reps: usize, cycles: usize, mut once: impl FnMut() -> Duration) -> f64 {
    once();
    let mut times: Vec<Duration> = (0..reps).map(|_| once()).collect();
    times.sort();
    times[reps / 2].as_secs_f64() * 1e9 / cycles as f64
}

/// Admissions + releases per second with `threads` threads running `cycles` each, on one shared
/// pool or on a pool each. Median of `reps` runs after a warm-up.
fn throughput(threads: usize, groups: usize, shared: bool, cycles: usize, reps: usize) -> f64 {
    let once = || {
        let pools: Vec<TaskPool<u64>> = if shared {
            let one = pool(threads, groups);
            (0..threads).map(|_| one.clone()).collect()
        } else {
            (0..threads).map(|_| pool(threads, groups)).collect()
        };
        let start = Arc::new(Barrier::new(threads + 1));
        let workers: Vec<_> = pools
            .iter()
            .cloned()
            .enumerate()
            .map(|(thread, pool)| {
                let start = Arc::clone(&start);
                let keys = thread_keys(thread, groups);
                thread::spawn(move || {
                    start.wait();
                    admit_release(&pool, &keys, cycles);
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        for worker in workers {
            worker.join().expect("worker panicked");
        }
        let elapsed = began.elapsed();
        assert!(
            pools.iter().all(TaskPool::is_empty),
            "every permit was released"
        );
        elapsed
    };
    let ns = median_ns(reps, cycles, once);
    threads as f64 / ns * 1e9
}

fn main() {
    let cycles = env_usize("LOCK_HOLD_CYCLES", 1_000_000);
    let reps = env_usize("LOCK_HOLD_REPS", 5).max(1);
    if let Some(groups) = std::env::var("LOCK_HOLD_ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let pool = pool(1, groups);
        let keys = thread_keys(0, groups);
        let ns = median_ns(reps, cycles, || admit_release(&pool, &keys, cycles));
        println!("{groups} groups: {ns:.1} ns per try_acquire + drop");
        return;
    }

    println!(
        "1. One thread, no contention: ns per admission + release (try_acquire + drop), {cycles} cycles, median of {reps} after a warm-up; wall clock, shared 2-core machine"
    );
    println!(
        "| groups | try_acquire + drop | group set (outside) | 2 lock+unlock pairs | Arc clone+drop | left: held, estimate | ceiling, one lock |"
    );
    println!("|---|---|---|---|---|---|---|");
    let hasher = RandomState::new();
    for groups in GROUP_COUNTS {
        let pool = pool(1, groups);
        let keys = thread_keys(0, groups);
        // Each run times the cycle and every part back to back, so that the subtraction is made
        // within one run (this machine switches speeds from one second to the next); the
        // medians of the parts and of the per-run differences are reported.
        let once = || {
            let per = |time: Duration| time.as_secs_f64() * 1e9 / cycles as f64;
            let cycle = per(admit_release(&pool, &keys, cycles));
            let set = per(group_set(&hasher, &keys, cycles));
            let locks = per(lock_pairs(cycles));
            let arc = per(arc_clone(cycles));
            [cycle, set, locks, arc, cycle - set - locks - arc]
        };
        once();
        let runs: Vec<[f64; 5]> = (0..reps).map(|_| once()).collect();
        assert!(pool.is_empty(), "every permit was released");
        let [cycle, set, locks, arc, held] = [0, 1, 2, 3, 4].map(|column| {
            let mut values: Vec<f64> = runs.iter().map(|run| run[column]).collect();
            values.sort_by(f64::total_cmp);
            values[reps / 2]
        });
        println!(
            "| {groups} | {cycle:.1} | {set:.1} | {locks:.1} | {arc:.1} | {held:.1} | {:.1} M/s |",
            1e3 / held
        );
    }
    println!();

    let contended_cycles = cycles / 2;
    println!(
        "2. Throughput, million admissions + releases per second (all threads together), {contended_cycles} cycles per thread, median of {reps}; each thread names its own keys"
    );
    println!(
        "| groups | 1 thread | 2 threads, one shared pool | 2 threads, a pool each | shared / separate |"
    );
    println!("|---|---|---|---|---|");
    for groups in GROUP_COUNTS {
        let one = throughput(1, groups, true, contended_cycles, reps);
        let shared = throughput(2, groups, true, contended_cycles, reps);
        let separate = throughput(2, groups, false, contended_cycles, reps);
        println!(
            "| {groups} | {:.1} | {:.1} | {:.1} | {:.2} |",
            one / 1e6,
            shared / 1e6,
            separate / 1e6,
            shared / separate
        );
    }
}
