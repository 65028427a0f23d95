//! Helpers shared by the integration tests (`mod support;` in each test file): a real axum
//! server on 127.0.0.1, a real HTTP client, and a gate that holds handlers.
#![allow(dead_code)]

// The redis-server helper of taskherd-redis's tests, shared rather than copied (its `pool`
// function needs taskherd-redis, a dependency of the feature `redis` only).
#[cfg(feature = "redis")]
#[path = "../../../taskherd-redis/tests/support/mod.rs"]
pub mod redis_server;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, watch};

/// Serves `app` on a free port of 127.0.0.1, with the peer address in `ConnectInfo`.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A client speaking HTTP/2 only (h2c, prior knowledge), for what HTTP/2 does differently.
pub fn http2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A finished response: status, headers and the whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// `GET http://addr{path}` with `headers`, read to the end.
pub async fn get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// `GET http://addr{path}` as tenant `tenant`, the response's head received and its body not
/// read (a stream to follow frame by frame).
pub async fn open(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    tenant: &str,
) -> http::Response<hyper::body::Incoming> {
    let request = Request::get(format!("http://{addr}{path}"))
        .header("x-tenant", tenant)
        .body(Empty::new())
        .unwrap();
    client.request(request).await.unwrap()
}

/// Polls `condition` until it holds. Not a timing assertion: the bound only stops a test that
/// would otherwise hang, with a message saying what never happened.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    eventually(what, || std::future::ready(condition())).await;
}

/// Polls the async `condition` until it holds; the bound only stops a test that would hang.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut condition: impl FnMut() -> F,
) {
    for _ in 0..2000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}

/// A response body fed chunk by chunk by the test; ends when the sender is dropped.
pub struct Chunks(pub mpsc::Receiver<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// Senders of the streams a handler started, for the test to feed.
pub type Streams = Arc<Mutex<Vec<mpsc::Sender<Bytes>>>>;

/// Holds handlers until opened.
#[derive(Clone, Default)]
pub struct Gate {
    open: watch::Sender<bool>,
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Gate {
    pub async fn pass(&self) {
        let mut open = self.open.subscribe();
        open.wait_for(|open| *open).await.unwrap();
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}
