//! Upgraded connections (a WebSocket's `101 Switching Protocols`): the layer holds a request's
//! admission until its response is sent, and never sees the connection that lives on after it.
//! What the docs say to do instead — take a permit in the task that serves the upgraded
//! connection, once the upgrade is done — limits open connections, over a real HTTP/1.1
//! connection upgraded by hyper; and so does a layer built with `hand_off`, whose handler
//! takes the request's admission over for the connection, with no moment free between them.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::routing::get;
use http::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use taskherd::TaskPool;
use taskherd_tower::{HandOff, Header, LimitLayer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Echoes what it reads until the other side closes.
async fn echo(mut io: impl AsyncRead + AsyncWrite + Unpin) {
    let mut buffer = [0u8; 64];
    while let Ok(n @ 1..) = io.read(&mut buffer).await {
        if io.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
}

/// Answers `101` and serves the upgraded connection; with a pool in the state, the task
/// serving it first takes a permit in the tenant's group, as the docs recommend.
async fn upgrade(
    State(pool): State<Option<TaskPool<String>>>,
    mut request: Request,
) -> Response<Body> {
    let tenant = request.headers()["x-tenant"].to_str().unwrap().to_owned();
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = on_upgrade.await.expect("upgraded");
        let _permit = match &pool {
            Some(pool) => Some(pool.acquire([tenant]).await.expect("the pool stays open")),
            None => None,
        };
        echo(TokioIo::new(upgraded)).await;
    });
    switching_protocols()
}

/// Answers `101` and serves the upgraded connection, holding the request's admission, taken
/// over before answering, while the connection lives.
async fn upgrade_keeping_the_admission(mut request: Request) -> Response<Body> {
    let admission = request
        .extensions()
        .get::<HandOff>()
        .expect("the layer lends its admissions")
        .take()
        .expect("nobody took it before");
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let _admission = admission;
        let upgraded = on_upgrade.await.expect("upgraded");
        echo(TokioIo::new(upgraded)).await;
    });
    switching_protocols()
}

fn switching_protocols() -> Response<Body> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Body::empty())
        .unwrap()
}

/// Serves `/ws` behind a layer on `pool` keyed by `x-tenant`; `in_task` is the pool the
/// upgraded connections' tasks take their permits from, if any.
async fn serve(pool: &TaskPool<String>, in_task: Option<TaskPool<String>>) -> SocketAddr {
    let app = Router::new()
        .route("/ws", get(upgrade))
        .with_state(in_task)
        .layer(LimitLayer::new(pool.clone(), Header::new("x-tenant")));
    support::serve(app).await
}

/// Opens a connection upgraded as tenant `a`: the socket and the response's status line.
async fn open_upgraded(addr: SocketAddr) -> (TcpStream, String) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: test\r\nconnection: upgrade\r\nupgrade: echo\r\n\
              x-tenant: a\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        socket.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let status = String::from_utf8(head)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    (socket, status)
}

/// Sends `ping` and reads the echo, within `within`; `false` if none came.
async fn echoes(socket: &mut TcpStream, within: Duration) -> bool {
    socket.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    match tokio::time::timeout(within, socket.read_exact(&mut echo)).await {
        Ok(read) => {
            read.unwrap();
            assert_eq!(&echo, b"ping");
            true
        }
        Err(_) => false,
    }
}

/// What the docs say: the request's admission ends with its `101`; the upgraded connection
/// is not counted, so a second one is upgraded too over a limit of 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_is_not_counted_once_its_response_is_sent() {
    let pool = TaskPool::<String>::builder().limit("a".into(), 1).build();
    let addr = serve(&pool, None).await;
    let (mut first, status) = open_upgraded(addr).await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    assert!(echoes(&mut first, Duration::from_secs(10)).await);
    assert_eq!(pool.task_count(&"a".into()), 0);
    let (mut second, status) = open_upgraded(addr).await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    assert!(echoes(&mut second, Duration::from_secs(10)).await);
}

/// The docs' recipe: a permit taken in the task serving the upgraded connection, after the
/// upgrade (the request's admission is released by then, so the same pool and limit serve
/// both), counts the connection while it is open: the layer refuses the tenant's next
/// request until the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_taken_in_the_upgraded_task_counts_the_open_connection() {
    let pool = TaskPool::<String>::builder().limit("a".into(), 1).build();
    let addr = serve(&pool, Some(pool.clone())).await;
    let (mut first, status) = open_upgraded(addr).await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    assert!(echoes(&mut first, Duration::from_secs(10)).await);
    assert_eq!(
        pool.task_count(&"a".into()),
        1,
        "the open connection's permit"
    );
    let (_, status) = open_upgraded(addr).await;
    assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
    drop(first);
    // The first connection's task sees it closed and drops its permit.
    until_released(&pool).await;
    let (mut third, status) = open_upgraded(addr).await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    assert!(echoes(&mut third, Duration::from_secs(10)).await);
}

/// Waits until `pool` counts nothing in tenant `a`'s group.
async fn until_released(pool: &TaskPool<String>) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while pool.task_count(&"a".into()) != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the closed connection's admission was not released");
}

/// `LimitLayer::hand_off`: the handler takes the request's admission over and keeps it in the
/// task serving the upgraded connection. The slot is the connection's from the `101` on, with
/// no moment free between the request and the connection (the recipe above has one): the
/// tenant's next request is refused as soon as the first has its `101`, and admitted once the
/// connection has closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_taken_over_by_the_handler_counts_the_open_connection() {
    let pool = TaskPool::<String>::builder().limit("a".into(), 1).build();
    let app = Router::new()
        .route("/ws", get(upgrade_keeping_the_admission))
        .layer(LimitLayer::new(pool.clone(), Header::new("x-tenant")).hand_off());
    let addr = support::serve(app).await;
    let (mut first, status) = open_upgraded(addr).await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    // At once: the response is done, and its admission lives on with the connection.
    assert_eq!(pool.task_count(&"a".into()), 1, "the open connection");
    let (_, status) = open_upgraded(addr).await;
    assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
    assert!(echoes(&mut first, Duration::from_secs(10)).await);
    assert_eq!(pool.task_count(&"a".into()), 1);
    drop(first);
    until_released(&pool).await;
    let (mut second, status) = open_upgraded(addr).await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    assert!(echoes(&mut second, Duration::from_secs(10)).await);
}
