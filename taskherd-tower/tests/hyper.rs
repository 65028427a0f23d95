//! The layer on a plain hyper 1.x server (no axum): the peer address is inserted as a
//! `SocketAddr` request extension, where `PeerIp` finds it.

mod support;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use taskherd::TaskPool;
use taskherd_tower::{LimitLayer, PeerIp};
use tower::ServiceBuilder;

use support::{Gate, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_hyper_server_limits_per_peer_ip() {
    let pool = TaskPool::<IpAddr>::builder().default_limit(1).build();
    let gate = Gate::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (server_pool, server_gate) = (pool.clone(), gate.clone());
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let gate = server_gate.clone();
            let service = ServiceBuilder::new()
                .map_request(move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert::<SocketAddr>(peer);
                    request
                })
                .layer(LimitLayer::new(server_pool.clone(), PeerIp::new()))
                .service_fn(move |_request: Request<Incoming>| {
                    let gate = gate.clone();
                    async move {
                        gate.pass().await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("done"))))
                    }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    let client = support::client();
    let loopback: IpAddr = [127, 0, 0, 1].into();

    let first = {
        let client = client.clone();
        tokio::spawn(async move { support::get(&client, addr, "/", &[]).await })
    };
    wait_until("the first request is admitted", || {
        pool.task_count(&loopback) == 1
    })
    .await;
    let second = support::get(&client, addr, "/", &[]).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    gate.open();
    let first = first.await.unwrap();
    assert_eq!(
        (first.status, first.body),
        (StatusCode::OK, Bytes::from("done"))
    );
    wait_until("released", || pool.task_count(&loopback) == 0).await;
}
