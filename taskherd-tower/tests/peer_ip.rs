//! The client IP comes from the connection: forwarding headers from a peer that is not a
//! trusted proxy do not change the group; from a trusted proxy they do.

mod support;

use std::net::IpAddr;

use axum::{Router, routing::get};
use http::StatusCode;
use taskherd::TaskPool;
use taskherd_tower::{LimitLayer, PeerIp};

use support::{Gate, wait_until};

async fn server(pool: &TaskPool<IpAddr>, classify: PeerIp) -> (std::net::SocketAddr, Gate) {
    let gate = Gate::new();
    let held = gate.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || async move {
                held.pass().await;
                "done"
            }),
        )
        .layer(LimitLayer::new(pool.clone(), classify));
    (support::serve(app).await, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_header_from_an_untrusted_peer_does_not_change_the_group() {
    let pool = TaskPool::<IpAddr>::builder().default_limit(1).build();
    // Only 10.0.0.0/8 is a proxy; the test connects from 127.0.0.1.
    let classify = PeerIp::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]);
    let (addr, gate) = server(&pool, classify).await;
    let client = support::client();
    let loopback: IpAddr = [127, 0, 0, 1].into();

    let first = {
        let client = client.clone();
        tokio::spawn(async move {
            support::get(&client, addr, "/", &[("x-forwarded-for", "198.51.100.1")]).await
        })
    };
    wait_until("the first request is admitted", || {
        pool.task_count(&loopback) == 1
    })
    .await;

    // Another made-up address, in both headers: still 127.0.0.1, which is full.
    let spoofed = support::get(
        &client,
        addr,
        "/",
        &[
            ("x-forwarded-for", "198.51.100.2"),
            ("forwarded", "for=198.51.100.3"),
        ],
    )
    .await;
    assert_eq!(spoofed.status, StatusCode::TOO_MANY_REQUESTS);
    for made_up in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        assert_eq!(pool.stats(&made_up.parse().unwrap()).admitted, 0);
    }

    gate.open();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_a_trusted_proxy_name_the_client() {
    let pool = TaskPool::<IpAddr>::builder().default_limit(1).build();
    // The test's connection from 127.0.0.1 plays the trusted proxy.
    let classify = PeerIp::new().trust_proxies(["127.0.0.1".parse().unwrap()]);
    let (addr, gate) = server(&pool, classify).await;
    let client = support::client();

    let requests: Vec<_> = ["198.51.100.1", "198.51.100.2"]
        .into_iter()
        .map(|client_ip| {
            let client = client.clone();
            tokio::spawn(async move {
                // A client-supplied entry on the left is not what counts: the proxy's append is.
                let chain = format!("203.0.113.66, {client_ip}");
                support::get(&client, addr, "/", &[("x-forwarded-for", &chain)]).await
            })
        })
        .collect();
    for client_ip in ["198.51.100.1", "198.51.100.2"] {
        let ip: IpAddr = client_ip.parse().unwrap();
        wait_until("each client is admitted in its own group", || {
            pool.task_count(&ip) == 1
        })
        .await;
    }
    assert_eq!(pool.task_count(&[127, 0, 0, 1].into()), 0);
    gate.open();
    for request in requests {
        assert_eq!(request.await.unwrap().status, StatusCode::OK);
    }
}
