//! The README's "Web services" example: an axum server with per-client-IP, per-API-key and
//! total limits on requests in flight. `cargo run -p taskherd-tower --example axum_quickstart`
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::{Router, extract::State, routing::get};
use taskherd::TaskPool;
use taskherd_tower::{ClassifyExt, Header, LimitLayer, PeerIp};

/// What a request is counted in: its client's IP address and, if it sends one, its API key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    ApiKey(String),
}

#[tokio::main]
async fn main() {
    // At most 8 requests in flight per IP and per API key, 256 in all; key "k-big" gets 64
    // (each request counts in its IP's group too: 64 from 8 or more addresses).
    let pool = TaskPool::<Key>::builder()
        .max_tasks(256)
        .default_limit(8)
        .limit(Key::ApiKey("k-big".into()), 64)
        .build();
    // The peer IP comes from the connection; behind a load balancer, name it with
    // `PeerIp::new().trust_proxies([...])` so that X-Forwarded-For is believed from it only.
    // (An API key should be checked by an auth layer before this one.)
    let classify = PeerIp::new()
        .map_key(Key::Ip)
        .and(Header::new("x-api-key").optional().map_key(Key::ApiKey));
    // Over a limit: wait up to 200 ms, first come first served, then 429 (the client's own
    // limit) or 503 (the total), with Retry-After.
    let limit = LimitLayer::new(pool.clone(), classify).wait(Duration::from_millis(200));

    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .layer(limit)
        // Added after the layer, so not limited: the operator's view.
        .route("/stats", get(stats))
        .with_state(pool);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    // `with_connect_info` puts the peer address where `PeerIp` finds it.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .unwrap();
}

async fn stats(State(pool): State<TaskPool<Key>>) -> String {
    let total = pool.total_stats();
    format!(
        "{} in flight, {} waiting, {} refused\n",
        total.running, total.waiting, total.rejected
    )
}
