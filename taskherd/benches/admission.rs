//! What admission costs: by number of groups, when refused, when waiting, and with a large table.
//!
//! Keys are `u32`; group sets spread over 1,000 keys as in `benches/spawn.rs`, and every other
//! key used here lies outside that range. Batches report time per element (`Throughput`); the
//! single-call benches report time per call. Runtimes are a current-thread one and a 2-worker
//! multi-thread one.
//!
//! - `try_spawn_groups/{runtime}/{0,1,3,8}`: batches of 1,000 `try_spawn`s of trivial tasks in
//!   0, 1, 3 or 8 groups (8 spills the group set to the heap), then awaiting them all, from
//!   criterion's `block_on` as in `spawn.rs`. The full path, in one group so the report shows
//!   how it scales with the number of groups (`spawn.rs` compares 0 and 3 groups against bare
//!   `tokio::spawn`).
//! - `refused/{try_spawn,try_acquire}/{1,3}`: one call into a group at its limit (4 permits
//!   held, limit 4), named last after 0 or 2 groups with room, so every group is looked at.
//!   `try_spawn` includes getting the future back with `into_inner`. No runtime work happens.
//! - `spawn_contended/{runtime}/{taskherd,semaphore}/{producer,waiters}`: 1,000 tasks that
//!   yield once (so they hold their slot a while) through one group limited to 4.
//!   `producer`: one task looping on `spawn(..).await` (backpressure: it waits whenever 4 tasks
//!   run), then awaiting them. `waiters`: each `spawn(..)` future awaited in a task of its own,
//!   so up to 996 wait in the queue at once. `semaphore` is the same with a
//!   `tokio::sync::Semaphore` permit moved into a bare `tokio::spawn`: the floor.
//! - `permit_uncontended/try_acquire/{0,1,3}`: `try_acquire` + drop, one call, in a pool without
//!   limits (each named group is created and reclaimed). Needs no runtime.
//! - `permit_contended/{runtime}/{taskherd,semaphore}`: 8 tasks doing 125 `acquire().await` each
//!   on one group limited to 2, holding the permit across a `yield_now` so that the others wait
//!   (tokio's `benches/sync_semaphore.rs` shape); `semaphore` is a `tokio::sync::Semaphore` of 2.
//! - `table_size/{fresh_keys,resident_keys}/{1,10000}`: `try_acquire` + drop on 3 groups in a
//!   pool already holding 1 or 10,000 other groups with explicit limits (so they stay in the
//!   table). `fresh_keys`: the 3 groups spread over 1,000 keys without an entry (created and
//!   reclaimed each call); `resident_keys`: 3 fixed groups with explicit limits. The cost should
//!   not grow with the table: compare the two sizes of each.
//! - `wide/{try_acquire,try_spawn}/{1000,10000}`: one call naming 1,000 or 10,000 groups
//!   that have no entry yet (created, then reclaimed as the permit or task ends), reported per
//!   group: the time per group should not grow with the number of groups (invariant 7), for
//!   permits (whose keys are cloned outside the lock) as for tasks (whose keys move in).
//!   `try_spawn` on a current-thread runtime, the task awaited.
//!
//! Every bench checks that it measures what it claims: admissions admitted, refusals refused,
//! waits that waited (counted per batch), limits reached, nothing left counted afterwards.
//!
//! Run with: `cargo bench -p taskherd --bench admission`, one group with e.g.
//! `cargo bench -p taskherd --bench admission -- table_size`; a quicker pass:
//! `cargo bench -p taskherd --bench admission -- --warm-up-time 1 --measurement-time 2`.

use std::future::{Future, poll_fn};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use taskherd::{Group, TaskPool};
use tokio::runtime::{Builder, Runtime};
use tokio::sync::Semaphore;

/// Elements per batch.
const BATCH: usize = 1_000;
/// Group sets are spread over keys `0..KEYS`.
const KEYS: usize = 1_000;
/// The group at its limit in `refused`.
const FULL: u32 = 1_000_001;
/// The one tightly limited group of the contended benches.
const HOT: u32 = 1_000_002;
/// The measured groups of `table_size/resident_keys`.
const RESIDENT: [u32; 3] = [1_000_010, 1_000_011, 1_000_012];
/// First key of the groups pre-populated in `table_size`.
const BACKGROUND: u32 = 2_000_000;

fn runtimes() -> [(&'static str, Runtime); 2] {
    [
        (
            "current_thread",
            Builder::new_current_thread().build().expect("runtime"),
        ),
        (
            "multi_thread_2",
            Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .expect("runtime"),
        ),
    ]
}

/// The `i`-th set of `n` distinct keys out of `0..KEYS` (as in `spawn.rs`).
fn groups(n: usize, i: usize) -> impl Iterator<Item = u32> {
    (0..n).map(move |g| ((i * 7 + g * 331) % KEYS) as u32)
}

/// Checks, outside any timing, that every `groups(n, _)` names `n` distinct groups and that an
/// admission counts once in each of them.
fn check_group_sets(pool: &TaskPool<u32>, n: usize) {
    for i in 0..KEYS {
        let permit = pool.try_acquire(groups(n, i)).expect("admitted");
        assert_eq!(permit.groups().len(), n, "groups({n}, {i}) has duplicates");
        for key in groups(n, i) {
            assert_eq!(pool.task_count(&key), 1);
        }
    }
    assert!(pool.is_empty());
}

/// Awaits `future` and tells whether it returned `Pending` at least once, i.e. had to wait.
async fn waited<F: Future>(future: F) -> (F::Output, bool) {
    let mut future = pin!(future);
    let mut pending = false;
    let output = poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        pending |= poll.is_pending();
        poll
    })
    .await;
    (output, pending)
}

/// The task of the contended benches: it yields once, holding its slot across a scheduling
/// point as a task doing I/O would (a task done at its first poll would free its slot before
/// the next admission on a multi-thread runtime, and nothing would wait).
async fn held_task(i: usize) -> usize {
    tokio::task::yield_now().await;
    black_box(i)
}

/// Counts, per bench, the batches run and the admissions in them that had to wait.
#[derive(Default)]
struct Waits {
    batches: AtomicUsize,
    waited: AtomicUsize,
}

impl Waits {
    fn record(&self, waited: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.waited.fetch_add(waited, Ordering::Relaxed);
    }

    /// Asserts that the bench, if it ran (it may be filtered out), was contended.
    fn check(&self, bench: &str) {
        let batches = self.batches.load(Ordering::Relaxed);
        let waited = self.waited.load(Ordering::Relaxed);
        assert!(
            batches == 0 || waited > 0,
            "{bench}: no admission waited in {batches} batches"
        );
    }
}

fn try_spawn_groups(c: &mut Criterion) {
    for (name, rt) in runtimes() {
        let mut group = c.benchmark_group(format!("try_spawn_groups/{name}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        for n in [0, 1, 3, 8] {
            let pool = TaskPool::<u32>::new();
            check_group_sets(&pool, n);
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.to_async(&rt).iter(|| async {
                    let mut handles = Vec::with_capacity(BATCH);
                    for i in 0..BATCH {
                        let task = async move { black_box(i) };
                        let Ok(handle) = pool.try_spawn(groups(n, i), task) else {
                            panic!("refused by a pool without limits");
                        };
                        handles.push(handle);
                    }
                    for handle in handles {
                        black_box(handle.await.unwrap());
                    }
                    // Released before each `JoinHandle` resolved.
                    assert!(pool.is_empty());
                });
            });
            let total = pool.total_stats();
            assert_eq!((total.running, total.rejected), (0, 0));
        }
        group.finish();
    }
}

fn refused(c: &mut Criterion) {
    const LIMIT: usize = 4;
    // Refused calls spawn nothing, but `try_spawn` is documented for use inside a runtime.
    let rt = Builder::new_current_thread().build().expect("runtime");
    let _runtime = rt.enter();
    let pool = TaskPool::<u32>::builder().limit(FULL, LIMIT).build();
    let held: Vec<_> = (0..LIMIT)
        .map(|_| pool.try_acquire([FULL]).expect("room below the limit"))
        .collect();

    let mut group = c.benchmark_group("refused");
    group.throughput(Throughput::Elements(1));
    for n in [1, 3] {
        // `n - 1` groups with room first, then the full one: all of them are looked at.
        let keys = |i| groups(n - 1, i).chain([FULL]);
        for i in 0..KEYS {
            let err = pool.try_acquire(keys(i)).unwrap_err();
            assert_eq!(err.full_group(), Some(&Group::Key(FULL)));
            let err = pool.try_spawn(keys(i), async {}).unwrap_err();
            assert!(err.is_full() && err.full_group() == Some(&Group::Key(FULL)));
        }
        group.bench_function(BenchmarkId::new("try_spawn", n), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % KEYS;
                match pool.try_spawn(keys(i), async move { black_box(i) }) {
                    Ok(_) => panic!("admitted into a full group"),
                    Err(err) => black_box(err.into_inner()),
                }
            });
        });
        group.bench_function(BenchmarkId::new("try_acquire", n), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % KEYS;
                match pool.try_acquire(keys(i)) {
                    Ok(_) => panic!("admitted into a full group"),
                    Err(err) => black_box(err),
                }
            });
        });
    }
    group.finish();

    // Nothing refused was counted; the held permits are all there is.
    let stats = pool.stats(&FULL);
    assert_eq!((stats.running, stats.admitted), (LIMIT, LIMIT as u64));
    assert!(stats.rejected >= 4 * KEYS as u64);
    assert_eq!(pool.len(), LIMIT);
    drop(held);
    assert!(pool.is_empty());
}

fn spawn_contended(c: &mut Criterion) {
    const LIMIT: usize = 4;
    for (name, rt) in runtimes() {
        let mut group = c.benchmark_group(format!("spawn_contended/{name}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        let pool = TaskPool::<u32>::builder().limit(HOT, LIMIT).build();
        let semaphore = Arc::new(Semaphore::new(LIMIT));

        let waits = Waits::default();
        group.bench_function(BenchmarkId::new("taskherd", "producer"), |b| {
            b.to_async(&rt).iter(|| async {
                let pool = pool.clone();
                let producer = tokio::spawn(async move {
                    let mut handles = Vec::with_capacity(BATCH);
                    let mut waited_count = 0;
                    for i in 0..BATCH {
                        let task = held_task(i);
                        let (handle, w) = waited(pool.spawn([HOT], task)).await;
                        waited_count += usize::from(w);
                        handles.push(handle.expect("pool open"));
                    }
                    for handle in handles {
                        black_box(handle.await.unwrap());
                    }
                    waited_count
                });
                waits.record(producer.await.unwrap());
            });
        });
        waits.check("taskherd/producer");

        let waits = Waits::default();
        group.bench_function(BenchmarkId::new("semaphore", "producer"), |b| {
            b.to_async(&rt).iter(|| async {
                let semaphore = Arc::clone(&semaphore);
                let producer = tokio::spawn(async move {
                    let mut handles = Vec::with_capacity(BATCH);
                    let mut waited_count = 0;
                    for i in 0..BATCH {
                        let (permit, w) = waited(Arc::clone(&semaphore).acquire_owned()).await;
                        let permit = permit.expect("semaphore open");
                        waited_count += usize::from(w);
                        handles.push(tokio::spawn(async move {
                            let _permit = permit;
                            held_task(i).await
                        }));
                    }
                    for handle in handles {
                        black_box(handle.await.unwrap());
                    }
                    waited_count
                });
                waits.record(producer.await.unwrap());
            });
        });
        waits.check("semaphore/producer");

        let waits = Waits::default();
        group.bench_function(BenchmarkId::new("taskherd", "waiters"), |b| {
            b.to_async(&rt).iter(|| async {
                let mut admissions = Vec::with_capacity(BATCH);
                for i in 0..BATCH {
                    let task = held_task(i);
                    admissions.push(tokio::spawn(waited(pool.spawn([HOT], task))));
                }
                let mut handles = Vec::with_capacity(BATCH);
                let mut waited_count = 0;
                for admission in admissions {
                    let (handle, w) = admission.await.unwrap();
                    waited_count += usize::from(w);
                    handles.push(handle.expect("pool open"));
                }
                for handle in handles {
                    black_box(handle.await.unwrap());
                }
                waits.record(waited_count);
            });
        });
        waits.check("taskherd/waiters");

        let waits = Waits::default();
        group.bench_function(BenchmarkId::new("semaphore", "waiters"), |b| {
            b.to_async(&rt).iter(|| async {
                let mut admissions = Vec::with_capacity(BATCH);
                for i in 0..BATCH {
                    let semaphore = Arc::clone(&semaphore);
                    #[expect(
                        clippy::async_yields_async,
                        reason = "like `TaskPool::spawn`, admission hands back the task's handle"
                    )]
                    admissions.push(tokio::spawn(waited(async move {
                        let permit = semaphore.acquire_owned().await.expect("semaphore open");
                        tokio::spawn(async move {
                            let _permit = permit;
                            held_task(i).await
                        })
                    })));
                }
                let mut handles = Vec::with_capacity(BATCH);
                let mut waited_count = 0;
                for admission in admissions {
                    let (handle, w) = admission.await.unwrap();
                    waited_count += usize::from(w);
                    handles.push(handle);
                }
                for handle in handles {
                    black_box(handle.await.unwrap());
                }
                waits.record(waited_count);
            });
        });
        waits.check("semaphore/waiters");
        group.finish();

        // The limit was reached and never exceeded; everything was given back.
        let stats = pool.stats(&HOT);
        assert!(stats.admitted == 0 || stats.peak == LIMIT, "{stats:?}");
        assert_eq!((stats.running, stats.waiting), (0, 0));
        assert_eq!(semaphore.available_permits(), LIMIT);
    }
}

fn permit_uncontended(c: &mut Criterion) {
    let pool = TaskPool::<u32>::new();
    let mut group = c.benchmark_group("permit_uncontended");
    group.throughput(Throughput::Elements(1));
    for n in [0, 1, 3] {
        check_group_sets(&pool, n);
        group.bench_function(BenchmarkId::new("try_acquire", n), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % KEYS;
                let Ok(permit) = pool.try_acquire(groups(n, i)) else {
                    panic!("refused by a pool without limits");
                };
                drop(black_box(permit));
            });
        });
    }
    group.finish();
    let total = pool.total_stats();
    assert_eq!((total.running, total.rejected), (0, 0));
}

fn wide(c: &mut Criterion) {
    let pool = TaskPool::<u32>::new();
    let runtime = Builder::new_current_thread().build().unwrap();
    let mut group = c.benchmark_group("wide");
    for n in [1_000u32, 10_000] {
        group.throughput(Throughput::Elements(u64::from(n)));
        // Outside the keys of the other benches; a fresh entry for each group at every call.
        let keys = move || BACKGROUND + 1_000_000..BACKGROUND + 1_000_000 + n;
        group.bench_function(BenchmarkId::new("try_acquire", n), |b| {
            b.iter(|| {
                let Ok(permit) = pool.try_acquire(keys()) else {
                    panic!("refused by a pool without limits");
                };
                drop(black_box(permit));
            });
        });
        group.bench_function(BenchmarkId::new("try_spawn", n), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let Ok(handle) = pool.try_spawn(keys(), async {}) else {
                        panic!("refused by a pool without limits");
                    };
                    handle.await.unwrap();
                });
            });
        });
        assert_eq!(pool.task_count(&(BACKGROUND + 1_000_000)), 0);
    }
    group.finish();
    let total = pool.total_stats();
    assert_eq!((total.running, total.rejected), (0, 0));
}

fn permit_contended(c: &mut Criterion) {
    const LIMIT: usize = 2;
    const CONTENDERS: usize = 8;
    const _: () = assert!(BATCH.is_multiple_of(CONTENDERS));
    for (name, rt) in runtimes() {
        let mut group = c.benchmark_group(format!("permit_contended/{name}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        let pool = TaskPool::<u32>::builder().limit(HOT, LIMIT).build();
        let semaphore = Arc::new(Semaphore::new(LIMIT));

        let waits = Waits::default();
        group.bench_function("taskherd", |b| {
            b.to_async(&rt).iter(|| async {
                let contenders: Vec<_> = (0..CONTENDERS)
                    .map(|_| {
                        let pool = pool.clone();
                        tokio::spawn(async move {
                            let mut waited_count = 0;
                            for _ in 0..BATCH / CONTENDERS {
                                let (permit, w) = waited(pool.acquire([HOT])).await;
                                let permit = permit.expect("pool open");
                                waited_count += usize::from(w);
                                // Held across a scheduling point, so that others find no room.
                                tokio::task::yield_now().await;
                                drop(permit);
                            }
                            waited_count
                        })
                    })
                    .collect();
                let mut waited_count = 0;
                for contender in contenders {
                    waited_count += contender.await.unwrap();
                }
                waits.record(waited_count);
            });
        });
        waits.check("permit_contended/taskherd");

        let waits = Waits::default();
        group.bench_function("semaphore", |b| {
            b.to_async(&rt).iter(|| async {
                let contenders: Vec<_> = (0..CONTENDERS)
                    .map(|_| {
                        let semaphore = Arc::clone(&semaphore);
                        tokio::spawn(async move {
                            let mut waited_count = 0;
                            for _ in 0..BATCH / CONTENDERS {
                                let (permit, w) = waited(semaphore.acquire()).await;
                                let permit = permit.expect("semaphore open");
                                waited_count += usize::from(w);
                                tokio::task::yield_now().await;
                                drop(permit);
                            }
                            waited_count
                        })
                    })
                    .collect();
                let mut waited_count = 0;
                for contender in contenders {
                    waited_count += contender.await.unwrap();
                }
                waits.record(waited_count);
            });
        });
        waits.check("permit_contended/semaphore");
        group.finish();

        let stats = pool.stats(&HOT);
        assert!(stats.admitted == 0 || stats.peak == LIMIT, "{stats:?}");
        assert_eq!((stats.running, stats.waiting), (0, 0));
        assert_eq!(semaphore.available_permits(), LIMIT);
    }
}

fn table_size(c: &mut Criterion) {
    let mut group = c.benchmark_group("table_size");
    group.throughput(Throughput::Elements(1));
    for background in [1, 10_000] {
        let pool = TaskPool::<u32>::new();
        let background_keys = || (0..background).map(|j| BACKGROUND + j);
        for key in background_keys() {
            pool.set_limit(key, 1);
        }
        for key in RESIDENT {
            pool.set_limit(key, usize::MAX);
        }
        // The groups exist, with their limits, before and after measuring.
        let check_table = || {
            for key in background_keys() {
                assert_eq!(pool.stats(&key).limit, Some(1), "group {key} missing");
            }
            for key in RESIDENT {
                assert_eq!(
                    pool.stats(&key).limit,
                    Some(usize::MAX),
                    "group {key} missing"
                );
            }
            assert!(pool.is_empty());
        };
        check_table();
        check_group_sets(&pool, 3);

        group.bench_function(BenchmarkId::new("fresh_keys", background), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % KEYS;
                let Ok(permit) = pool.try_acquire(groups(3, i)) else {
                    panic!("refused in groups without limits");
                };
                drop(black_box(permit));
            });
        });
        group.bench_function(BenchmarkId::new("resident_keys", background), |b| {
            b.iter(|| {
                let Ok(permit) = pool.try_acquire(RESIDENT) else {
                    panic!("refused below the limit");
                };
                drop(black_box(permit));
            });
        });
        check_table();
        assert_eq!(pool.total_stats().rejected, 0);
    }
    group.finish();
}

criterion_group!(
    benches,
    try_spawn_groups,
    refused,
    spawn_contended,
    permit_uncontended,
    permit_contended,
    table_size,
    wide
);
criterion_main!(benches);
