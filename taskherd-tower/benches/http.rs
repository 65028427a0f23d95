//! One request over loopback (keep-alive HTTP/1.1), sequential and 16 at a time, for every
//! contender of `examples/compare_http.rs`: no limit, tower's `ConcurrencyLimitLayer`, a
//! hand-rolled `from_fn` + per-key semaphore map, and `LimitLayer` with 1 and 3 groups.
//!
//! A third group calls each router in process (`oneshot`, no network), where the cost of the
//! limit itself is not drowned in the cost of HTTP over loopback.
//!
//! `cargo bench -p taskherd-tower --bench http`

#[path = "../examples/support/contenders.rs"]
mod contenders;
#[path = "../examples/support/load.rs"]
mod load;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;

use contenders::Contender;

fn requests(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("http");
    for contender in Contender::ALL {
        let (client, uri) = setup(&runtime, contender);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("sequential", contender.name()), |b| {
            b.to_async(&runtime)
                .iter(|| load::send(&client, &uri, "client-1"));
        });
        group.throughput(Throughput::Elements(16));
        group.bench_function(BenchmarkId::new("16 at a time", contender.name()), |b| {
            b.to_async(&runtime).iter(|| async {
                let batch: Vec<_> = (0..16)
                    .map(|i| {
                        let (client, uri) = (client.clone(), uri.clone());
                        tokio::spawn(async move {
                            load::send(&client, &uri, &format!("client-{}", i % 4)).await
                        })
                    })
                    .collect();
                for request in batch {
                    assert_eq!(request.await.unwrap(), 200);
                }
            });
        });
    }
    group.finish();
}

fn in_process(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("in process");
    for contender in Contender::ALL {
        let app = contender.app();
        group.bench_function(contender.name(), |b| {
            b.to_async(&runtime).iter(|| {
                let request = http::Request::get("/work/hello")
                    .header("x-client", "client-1")
                    .header("x-tenant", "t1")
                    .body(axum::body::Body::empty())
                    .unwrap();
                let app = app.clone();
                async move {
                    let response = tower::ServiceExt::oneshot(app, request).await.unwrap();
                    http_body_util::BodyExt::collect(response.into_body())
                        .await
                        .unwrap()
                }
            });
        });
    }
    group.finish();
}

fn setup(runtime: &Runtime, contender: Contender) -> (load::HttpClient, String) {
    runtime.block_on(async {
        let addr = load::serve(contender.app()).await;
        (load::client(), format!("http://{addr}/work/hello"))
    })
}

criterion_group!(benches, requests, in_process);
criterion_main!(benches);
