//! Spawning through the pool versus bare tokio, and what the `abort_group` registry costs.
//!
//! Each iteration spawns a batch of trivial tasks and awaits them all, on a current-thread and
//! on a 2-worker multi-thread runtime:
//! - `bare`: `tokio::spawn`, the floor;
//! - `permit`: `try_acquire` + `tokio::spawn` with the permit moved in: the pool's admission and
//!   release, without the task registry, the attached abort handle or the span;
//! - `try_spawn`: the full path (admission, registry record, abort handle, span, release).
//!
//! `try_spawn - permit` is the per-spawn cost of the tracking `abort_group`/`abort_all` need.
//!
//! Run with: `cargo bench -p taskherd --bench spawn`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use taskherd::TaskPool;
use tokio::runtime::{Builder, Runtime};

const BATCH: usize = 1_000;

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

/// Group sets of 0 and 3 keys out of 1,000 existing-or-not keys.
fn groups(n: usize, i: usize) -> impl Iterator<Item = u32> {
    (0..n).map(move |g| ((i * 7 + g * 331) % 1_000) as u32)
}

fn spawn(c: &mut Criterion) {
    for (name, rt) in runtimes() {
        let mut group = c.benchmark_group(format!("spawn/{name}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        for n in [0, 3] {
            let pool = TaskPool::<u32>::new();
            group.bench_function(BenchmarkId::new("bare", n), |b| {
                b.to_async(&rt).iter(|| async {
                    let mut handles = Vec::with_capacity(BATCH);
                    for i in 0..BATCH {
                        handles.push(tokio::spawn(async move { black_box(i) }));
                    }
                    for handle in handles {
                        black_box(handle.await.unwrap());
                    }
                });
            });
            group.bench_function(BenchmarkId::new("permit", n), |b| {
                b.to_async(&rt).iter(|| async {
                    let mut handles = Vec::with_capacity(BATCH);
                    for i in 0..BATCH {
                        let permit = pool.try_acquire(groups(n, i)).ok().unwrap();
                        handles.push(tokio::spawn(async move {
                            let _permit = permit;
                            black_box(i)
                        }));
                    }
                    for handle in handles {
                        black_box(handle.await.unwrap());
                    }
                });
            });
            group.bench_function(BenchmarkId::new("try_spawn", n), |b| {
                b.to_async(&rt).iter(|| async {
                    let mut handles = Vec::with_capacity(BATCH);
                    for i in 0..BATCH {
                        let task = async move { black_box(i) };
                        handles.push(pool.try_spawn(groups(n, i), task).ok().unwrap());
                    }
                    for handle in handles {
                        black_box(handle.await.unwrap());
                    }
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, spawn);
criterion_main!(benches);
