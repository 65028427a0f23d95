//! Admissions + releases per second against a local `redis-server` this bench starts (a free
//! port, no persistence): a `RedisPool` (`taskherd`) and a naive per-key limiter (`naive`:
//! `INCR` each key, `DECR` back on refusal, `DECR` on release), with 1, 4 and 16 concurrent
//! clients (tasks on one 2-worker runtime) naming 1 or 3 groups plus the total. One element is
//! one cycle: admitted, then released, the release having reached Redis (see
//! `benches/common/mod.rs`). Server calls per admission and renewal calls are printed by
//! `examples/compare_redis.rs`, which runs the same workloads once.
//!
//! `admit_release/{taskherd,naive}/{1,3}g/{1,4,16}`.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::Duration;

use common::{Limiter, Naive};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn admit_release(c: &mut Criterion) {
    let server = support::Server::start();
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (pool, naive) = runtime.block_on(async {
        (
            common::pool(&url, "bench", Duration::from_secs(15)).await,
            Naive::new(&url).await,
        )
    });
    let limiters = [
        ("taskherd", Limiter::Pool(pool)),
        ("naive", Limiter::Naive(naive)),
    ];
    let mut group = c.benchmark_group("admit_release");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .measurement_time(Duration::from_secs(2));
    for groups in [1, 3] {
        for clients in [1, 4, 16] {
            for (name, limiter) in &limiters {
                group.bench_function(
                    BenchmarkId::new(format!("{name}/{groups}g"), clients),
                    |b| {
                        b.to_async(&runtime).iter_custom(|iters| {
                            common::run_cycles(limiter, clients, groups, iters)
                        })
                    },
                );
            }
        }
    }
    group.finish();
    drop(server);
}

criterion_group!(benches, admit_release);
criterion_main!(benches);
