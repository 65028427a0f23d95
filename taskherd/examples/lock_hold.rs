//! How long the pool's one lock is held per admission and release (issue #13, "Beyond this
//! machine"), with 0, 1, 3 and 8 groups, and what one lock means for throughput.
//!
//! Two measurements:
//!
//! 1. Hold times, read off the lock (tables 1a-1c). Built with
//!    `RUSTFLAGS="--cfg taskherd_lock_hold"`, the library's mutex reads the CPU's time-stamp
//!    counter when the lock is taken and again just before it is released, and logs the
//!    difference per call site of `lock()` (a normal build has none of this). This example
//!    runs one kind of work at a time on one thread, tells the critical sections apart by
//!    their call site (in the order the sites first appear: an admission comes before its
//!    release), converts ticks to nanoseconds against `Instant`, and subtracts what an empty
//!    section of the same timed mutex holds (the two counter reads). Each figure is the mean of
//!    the fastest 99% of the sections: a section interrupted by the machine's other work
//!    hardly moves it, and unlike a median it is not stuck on the counter's steps (26 ticks,
//!    10 ns, on this project's virtual machines). The work measured:
//!    a permit's `try_acquire` + drop (two sections); a `try_spawn`ed task (three: admission
//!    with its task record, attaching the abort handle, release), in batches of 1,000 on a
//!    current-thread runtime; both with entries that stay (explicit limits, never reached)
//!    and, for tasks, with a fresh key per group per task (each admission makes its entries,
//!    each release removes them, as with one-off peers); the longest sections of a burst of
//!    tasks, and of 100,000 waiting spawns draining.
//! 2. Throughput with 1 and 2 threads (table 2). Each thread runs the permit loop on its own
//!    keys; either all threads share one pool (one lock, one total) or each has a pool of its
//!    own. If the lock were free, sharing would cost nothing; the shared/separate ratio shows
//!    what the one lock (and the cache line it lives on) costs with 2 threads. This machine has
//!    2 cores, shared with other work: the 2-thread figures are noisy, and they say nothing
//!    direct about 32 or 64 cores, where moving the lock's cache line between cores (and
//!    sockets) adds to every hand-over of the lock.
//!
//! Run with:
//!
//! ```sh
//! RUSTFLAGS="--cfg taskherd_lock_hold" cargo run --release -p taskherd --example lock_hold \
//!     --target-dir target/lock_hold
//! ```
//!
//! (its own target directory, so the normal build is not rebuilt). Without the `cfg`, only
//! table 2 is printed. `LOCK_HOLD_CYCLES` cycles per measurement (default 1,000,000),
//! `LOCK_HOLD_REPS` runs of table 2, median reported (default 5). About a minute on a 2-core
//! machine.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

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

#[cfg(taskherd_lock_hold)]
mod hold {
    //! Table 1: hold times read off the instrumented lock.

    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use taskherd::TaskPool;
    use taskherd::lock_hold::{empty_section, take, ticks, typical};

    use super::{GROUP_COUNTS, pool, thread_keys};

    /// Time-stamp counter ticks per nanosecond, against `Instant` over 200 ms.
    fn ticks_per_ns() -> f64 {
        let (t0, i0) = (ticks(), Instant::now());
        while i0.elapsed() < Duration::from_millis(200) {
            std::hint::spin_loop();
        }
        let (t1, elapsed) = (ticks(), i0.elapsed());
        (t1 - t0) as f64 / elapsed.as_nanos() as f64
    }

    /// One call site's critical sections.
    struct Site {
        name: String,
        count: usize,
        /// Mean of the fastest 99% (see `typical`), in ticks.
        typical: f64,
        /// The longest, in ticks.
        longest: u64,
    }

    /// This thread's log by call site, in the order the sites first appear.
    fn sections() -> Vec<Site> {
        let mut sites: Vec<(&'static std::panic::Location<'static>, Vec<u64>)> = Vec::new();
        for (site, held) in take() {
            match sites.iter_mut().find(|(s, _)| *s == site) {
                Some((_, all)) => all.push(held),
                None => sites.push((site, vec![held])),
            }
        }
        sites
            .into_iter()
            .map(|(site, mut all)| Site {
                name: format!("{}:{}", site.file(), site.line()),
                count: all.len(),
                typical: typical(&mut all),
                longest: all.last().copied().unwrap_or(0),
            })
            .collect()
    }

    /// Held per section at one call site, in nanoseconds, the measurement's cost subtracted.
    #[derive(Clone, Copy)]
    struct Held {
        typical: f64,
        longest: f64,
    }

    /// Runs `work`, then returns what was held per section, per call site, checking that
    /// exactly `expected` sites took the lock `cycles` times each.
    fn measure(
        what: &str,
        expected: usize,
        cycles: usize,
        scale: (f64, f64),
        work: impl FnOnce(),
    ) -> Vec<Held> {
        let (per_ns, empty) = scale;
        let _ = take();
        work();
        let sites = sections();
        let held: Vec<Held> = sites
            .iter()
            .map(|site| Held {
                typical: (site.typical - empty).max(0.0) / per_ns,
                longest: (site.longest as f64 - empty).max(0.0) / per_ns,
            })
            .collect();
        let detail: Vec<String> = sites
            .iter()
            .zip(&held)
            .map(|(site, held)| {
                format!(
                    "{} x{}: {:.1} ns, longest {:.0} ns",
                    site.name, site.count, held.typical, held.longest
                )
            })
            .collect();
        eprintln!("  {what}: {}", detail.join("; "));
        assert_eq!(sites.len(), expected, "{what}: sections {detail:?}");
        assert!(
            sites.iter().all(|site| site.count == cycles),
            "{what}: every section once per cycle: {detail:?}"
        );
        held
    }

    fn permits(groups: usize, cycles: usize, scale: (f64, f64)) -> Vec<Held> {
        let pool = pool(1, groups);
        let keys = thread_keys(0, groups);
        super::admit_release(&pool, &keys, cycles / 10); // warm-up
        measure(
            &format!("permit, {groups} groups"),
            2,
            cycles,
            scale,
            || {
                super::admit_release(&pool, &keys, cycles);
            },
        )
    }

    /// `cycles` tasks spawned with `try_spawn` in batches of `batch`, each batch awaited;
    /// `keys(i)` names task `i`'s groups. After a warm-up of a tenth as many tasks if `warm`.
    fn tasks(
        what: &str,
        pool: &TaskPool<u64>,
        (cycles, batch, warm): (usize, usize, bool),
        scale: (f64, f64),
        keys: impl Fn(usize) -> Vec<u64>,
    ) -> Vec<Held> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
        let run = |range: std::ops::Range<usize>| {
            rt.block_on(async {
                let mut handles = Vec::with_capacity(batch);
                for chunk in range.collect::<Vec<_>>().chunks(batch) {
                    for &i in chunk {
                        let handle = pool
                            .try_spawn(keys(i), async move { black_box(i) })
                            .unwrap_or_else(|_| panic!("loose limits refused a task"));
                        handles.push(handle);
                    }
                    for handle in handles.drain(..) {
                        black_box(handle.await.expect("task panicked"));
                    }
                }
            })
        };
        if warm {
            run(0..cycles / 10);
        }
        let held = measure(what, 3, cycles, scale, || run(cycles..2 * cycles));
        assert!(pool.is_empty(), "every task was released");
        held
    }

    /// One row of tables 1b and 1c.
    fn task_row(groups: usize, held: &[Held]) {
        let sum: f64 = held.iter().map(|h| h.typical).sum();
        println!(
            "| {groups} | {:.1} | {:.1} | {:.1} | {sum:.1} | {:.1} M/s |",
            held[0].typical,
            held[1].typical,
            held[2].typical,
            1e3 / sum
        );
    }

    /// `n` waiting spawns on one group of limit 1, queued behind a permit, then drained one
    /// by one; returns what the sites held, in the order they first appear after the permit
    /// is dropped (the permit's release, then the waiters' polls and the tasks' releases).
    fn drain_waiters(n: usize, scale: (f64, f64)) -> Vec<(String, Held)> {
        let (per_ns, empty) = scale;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
        rt.block_on(async {
            let pool = TaskPool::<u64>::builder().limit(7, 1).build();
            let holder = pool.try_acquire([7]).expect("an empty group");
            let mut waiting = Vec::with_capacity(n);
            for i in 0..n {
                let pool = pool.clone();
                waiting.push(tokio::spawn(async move {
                    let task = pool.spawn([7], async move { black_box(i) }).await;
                    task.expect("never closed").await.expect("task panicked")
                }));
            }
            while pool.waiting_len() < n {
                tokio::task::yield_now().await;
            }
            let _ = take();
            drop(holder);
            for task in waiting {
                black_box(task.await.expect("waiter panicked"));
            }
            sections()
                .into_iter()
                .map(|site| {
                    let held = Held {
                        typical: (site.typical - empty).max(0.0) / per_ns,
                        longest: (site.longest as f64 - empty).max(0.0) / per_ns,
                    };
                    (site.name, held)
                })
                .collect()
        })
    }

    pub(super) fn tables(cycles: usize) {
        let per_ns = ticks_per_ns();
        let empty = empty_section(1_000_000);
        let scale = (per_ns, empty);
        println!(
            "1. Lock hold time read off the lock (--cfg taskherd_lock_hold), ns per critical section, {cycles} cycles each; one thread; the counter runs at {per_ns:.3} ticks/ns, an empty section reads {empty:.1} ticks (subtracted); mean of the fastest 99%"
        );
        println!();
        println!("1a. Permit (try_acquire + drop), entries kept (explicit limits):");
        println!("| groups | admission | release | held per permit | ceiling, one lock |");
        println!("|---|---|---|---|---|");
        for groups in GROUP_COUNTS {
            let held = permits(groups, cycles, scale);
            let sum = held[0].typical + held[1].typical;
            println!(
                "| {groups} | {:.1} | {:.1} | {sum:.1} | {:.1} M/s |",
                held[0].typical,
                held[1].typical,
                1e3 / sum
            );
        }
        println!();
        let task_header = || {
            println!(
                "| groups | admission + task record | attach abort handle | release | held per task | ceiling, one lock |"
            );
            println!("|---|---|---|---|---|---|");
        };
        println!("1b. try_spawn, entries kept (explicit limits), batches of 1,000 tasks:");
        task_header();
        for groups in GROUP_COUNTS {
            let pool = pool(1, groups);
            let keys = thread_keys(0, groups);
            let what = format!("task, {groups} groups");
            let held = tasks(&what, &pool, (cycles, 1_000, true), scale, |_| keys.clone());
            task_row(groups, &held);
        }
        println!();
        println!(
            "1c. try_spawn, a fresh key per group per task (entries made at admission, removed at release), batches of 1,000:"
        );
        task_header();
        for groups in GROUP_COUNTS.into_iter().filter(|&g| g > 0) {
            let pool = TaskPool::<u64>::new();
            let what = format!("task, {groups} fresh groups");
            let held = tasks(&what, &pool, (cycles, 1_000, true), scale, |i| {
                (0..groups).map(|g| (i * groups + g) as u64).collect()
            });
            task_row(groups, &held);
        }
        println!();
        let burst = cycles / 5;
        println!(
            "1d. One burst of {burst} try_spawns on a new pool, then every task awaited: the longest critical sections, microseconds (tables grow during the burst and shrink after it)"
        );
        println!(
            "| groups | entries | admission: typical ns | longest admission | longest release |"
        );
        println!("|---|---|---|---|---|");
        for groups in [0, 3] {
            for fresh in [false, true] {
                if groups == 0 && fresh {
                    continue;
                }
                let pool = if fresh {
                    TaskPool::<u64>::new()
                } else {
                    pool(1, groups)
                };
                let keys = thread_keys(0, groups);
                let what = format!("burst, {groups} groups, fresh {fresh}");
                let held = tasks(&what, &pool, (burst, burst, false), scale, |i| {
                    if fresh {
                        (0..groups).map(|g| (i * groups + g) as u64).collect()
                    } else {
                        keys.clone()
                    }
                });
                println!(
                    "| {groups} | {} | {:.1} | {:.1} | {:.1} |",
                    if fresh { "fresh" } else { "kept" },
                    held[0].typical,
                    held[0].longest / 1e3,
                    held[2].longest / 1e3
                );
            }
        }
        println!();
        let waiters = cycles / 10;
        println!(
            "1e. {waiters} waiting spawns on one group of limit 1, drained one by one (waiter records shrink as they go): per call site, typical ns and the longest section in microseconds"
        );
        println!("| call site | typical ns | longest |");
        println!("|---|---|---|");
        for (site, held) in drain_waiters(waiters, scale) {
            println!(
                "| {site} | {:.1} | {:.1} |",
                held.typical,
                held.longest / 1e3
            );
        }
        println!();
    }
}

fn main() {
    let cycles = env_usize("LOCK_HOLD_CYCLES", 1_000_000);
    let reps = env_usize("LOCK_HOLD_REPS", 5).max(1);

    #[cfg(taskherd_lock_hold)]
    hold::tables(cycles);
    #[cfg(not(taskherd_lock_hold))]
    println!(
        "(Hold times: build with RUSTFLAGS=\"--cfg taskherd_lock_hold\", see this example's documentation.)\n"
    );

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
