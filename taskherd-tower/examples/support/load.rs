//! Shared by the examples and the benchmark: a server on a free loopback port, an HTTP client,
//! and latency percentiles.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Serves `app` on 127.0.0.1 (a free port) until the runtime ends.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.unwrap();
    });
    addr
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A keep-alive HTTP/1.1 client (one connection per request in flight).
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// Sends `GET uri` with an `x-client` header (and `x-tenant`), reads the body, returns the status.
pub async fn send(client: &HttpClient, uri: &str, who: &str) -> u16 {
    let request = http::Request::get(uri)
        .header("x-client", who)
        .header("x-tenant", "t1")
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

/// The `p`-th percentile (0.0..=1.0) of `latencies`, which it sorts.
pub fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let rank = ((latencies.len() - 1) as f64 * p).round() as usize;
    latencies[rank]
}

/// Milliseconds with one decimal, for tables.
pub fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}
