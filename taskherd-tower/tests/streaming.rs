//! The admission lives as long as the response body: a streaming response holds its slot
//! until its last chunk; a client that disconnects mid-stream, or while waiting for admission,
//! frees its slot or its place.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::{Router, routing::get};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use taskherd::TaskPool;
use taskherd_tower::{Header, LimitLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use support::{Chunks, Gate, Streams, wait_until};

async fn streaming_server(
    pool: TaskPool<String>,
    wait: Option<Duration>,
) -> (std::net::SocketAddr, Streams, Gate) {
    let streams = Streams::default();
    let gate = Gate::new();
    let (started, held) = (Arc::clone(&streams), gate.clone());
    let mut layer = LimitLayer::new(pool, Header::new("x-tenant"));
    if let Some(wait) = wait {
        layer = layer.wait(wait);
    }
    let app = Router::new()
        .route(
            "/stream",
            get(move || async move {
                let (sender, receiver) = mpsc::channel(4);
                started.lock().unwrap().push(sender);
                Body::new(Chunks(receiver))
            }),
        )
        .route(
            "/held",
            get(move || async move {
                held.pass().await;
                "done"
            }),
        )
        .layer(layer);
    (support::serve(app).await, streams, gate)
}

fn sender(streams: &Streams, index: usize) -> mpsc::Sender<Bytes> {
    streams.lock().unwrap()[index].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_holds_its_slot_until_the_last_chunk() {
    let pool = TaskPool::<String>::builder()
        .limit("a".to_owned(), 1)
        .build();
    let (addr, streams, _gate) = streaming_server(pool.clone(), None).await;
    let client = support::client();
    let a = "a".to_owned();

    let response = support::open(&client, addr, "/stream", "a").await;
    assert_eq!(response.status(), StatusCode::OK);
    // The handler has returned; the body streams on and holds the slot.
    assert_eq!(pool.task_count(&a), 1);
    let mut body = response.into_body();
    let stream = sender(&streams, 0);
    stream.send(Bytes::from("first")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");
    assert_eq!(pool.task_count(&a), 1);
    let second = support::get(&client, addr, "/stream", &[("x-tenant", "a")]).await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the stream still counts"
    );

    stream.send(Bytes::from("last")).await.unwrap();
    drop(stream);
    streams.lock().unwrap().clear();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "last");
    wait_until("the slot is released at the end of the stream", || {
        pool.task_count(&a) == 0
    })
    .await;
    assert_eq!(pool.stats(&a).admitted, 1);
}

/// Sends a raw HTTP/1.1 GET for tenant a, so the test controls when the connection closes.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nx-tenant: a\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_stream_frees_its_slot() {
    let pool = TaskPool::<String>::builder()
        .limit("a".to_owned(), 1)
        .build();
    let (addr, streams, _gate) = streaming_server(pool.clone(), None).await;
    let a = "a".to_owned();

    let mut socket = raw_get(addr, "/stream").await;
    wait_until("the stream started", || streams.lock().unwrap().len() == 1).await;
    let stream = sender(&streams, 0);
    stream.send(Bytes::from("first")).await.unwrap();
    let mut status_line = [0u8; 12];
    socket.read_exact(&mut status_line).await.unwrap();
    assert_eq!(&status_line, b"HTTP/1.1 200");
    assert_eq!(pool.task_count(&a), 1);

    drop(socket);
    // The server learns that the client is gone when it next writes (or reads): keep the
    // stream going until it drops the body.
    wait_until("the slot is released when the client is gone", || {
        let _ = stream.try_send(Bytes::from("more"));
        pool.task_count(&a) == 0
    })
    .await;
    assert!(stream.is_closed(), "the server dropped the body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_waiting_gives_its_place_up() {
    let pool = TaskPool::<String>::builder()
        .limit("a".to_owned(), 1)
        .build();
    let (addr, _streams, gate) =
        streaming_server(pool.clone(), Some(Duration::from_secs(60))).await;
    let a = "a".to_owned();

    let held = raw_get(addr, "/held").await;
    wait_until("the first request is admitted", || pool.task_count(&a) == 1).await;
    let waiting = raw_get(addr, "/held").await;
    wait_until("the second request waits", || pool.waiting_count(&a) == 1).await;

    drop(waiting);
    wait_until("the place is given up", || pool.waiting_count(&a) == 0).await;
    assert_eq!(pool.task_count(&a), 1);
    assert_eq!(
        pool.stats(&a).admitted,
        1,
        "the gone client was never admitted"
    );

    gate.open();
    drop(held);
    wait_until("everything is released", || pool.total_stats().running == 0).await;
    assert_eq!(pool.stats(&a).admitted, 1);
}

/// A large response sent as one piece (a `Vec<u8>`, a `String`) holds its slot while it goes
/// out, as a streamed one does: not only until the server takes it from the handler. Here 64
/// MiB that the client has not read: the slot is still taken, a second request of the tenant
/// is refused; once the client read it all, the slot is free. (The whole body was one frame,
/// and its slot was given back as soon as the server had it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_in_one_piece_holds_its_slot_until_it_is_sent() {
    const SIZE: usize = 64 << 20;
    let pool = TaskPool::<String>::builder()
        .limit("a".to_owned(), 1)
        .build();
    let app = Router::new()
        .route("/big", get(|| async { vec![b'x'; SIZE] }))
        .layer(LimitLayer::new(pool.clone(), Header::new("x-tenant")));
    let addr = support::serve(app).await;
    let client = support::client();
    let first = support::open(&client, addr, "/big", "a").await;
    assert_eq!(first.status(), StatusCode::OK);
    // Time for the server to send what the connection takes while nobody reads.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = "a".to_owned();
    assert_eq!(
        pool.task_count(&a),
        1,
        "the slot was given back before the body was sent"
    );
    let second = support::open(&client, addr, "/big", "a").await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), SIZE);
    wait_until("the slot is given back", || pool.task_count(&a) == 0).await;
}

/// Frame by frame: a body answered in one piece of 200 KiB and a byte goes out in pieces of
/// 64 KiB; the slot is held until the server takes the last one, and the size hint counts
/// what is left.
#[tokio::test]
async fn a_large_frame_goes_out_in_pieces_holding_the_slot_until_the_last() {
    use http_body::Body as _;
    use tower::{Layer, ServiceExt, service_fn};
    const SIZE: usize = (200 << 10) + 1;
    let pool = TaskPool::<String>::builder().build();
    let service = LimitLayer::new(pool.clone(), Header::new("x-tenant")).layer(service_fn(
        |_request: http::Request<()>| async {
            let body = http_body_util::Full::new(Bytes::from(vec![b'x'; SIZE]));
            Ok::<_, std::convert::Infallible>(http::Response::new(body))
        },
    ));
    let request = http::Request::builder()
        .header("x-tenant", "a")
        .body(())
        .unwrap();
    let mut body = service.oneshot(request).await.unwrap().into_body();
    let a = "a".to_owned();
    let mut pieces = Vec::new();
    let mut left = SIZE;
    while let Some(frame) = body.frame().await {
        let piece = frame.unwrap().into_data().unwrap().len();
        left -= piece;
        pieces.push((piece, pool.task_count(&a)));
        assert_eq!(body.size_hint().exact(), Some(left as u64));
        assert_eq!(body.is_end_stream(), left == 0);
    }
    let k = 64 << 10;
    assert_eq!(pieces, [(k, 1), (k, 1), (k, 1), ((8 << 10) + 1, 0)]);
}
