//! A tonic gRPC service (tonic-health, no code generation) behind the layer: a streaming call
//! holds its slot while it streams, a refused call reaches the client as a gRPC status, sent
//! "trailers-only" (one HEADERS frame that ends the stream).

mod support;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::Full;
use taskherd::TaskPool;
use taskherd_tower::{Groups, Header, LimitLayer, Refusal, Unclassified};
use tonic::Code;
use tonic::transport::{Channel, Server, server::TcpIncoming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, ServiceExt, service_fn};

use support::wait_until;

/// Serves tonic-health behind `$layer` on a free loopback port; the server's address, and the
/// health reporter (kept for as long as the server should report).
macro_rules! serve_health {
    ($layer:expr) => {{
        let (reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::builder()
            .layer($layer)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener));
        tokio::spawn(async move { server.await.unwrap() });
        (addr, reporter)
    }};
}

/// A health client of the server at `addr`.
async fn health_client(addr: std::net::SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_stream_holds_its_slot_and_a_refusal_is_an_error_status() {
    // Every call counts in group "grpc", limited to 1.
    let pool = TaskPool::<&'static str>::builder().limit("grpc", 1).build();
    let classify =
        |_request: &Request<tonic::body::Body>| Ok::<_, Unclassified>(Groups::one("grpc"));
    let (addr, _reporter) = serve_health!(
        LimitLayer::new(pool.clone(), classify).refusal_response(Refusal::grpc_response)
    );
    let mut client = health_client(addr).await;
    let check = HealthCheckRequest {
        service: String::new(),
    };

    client.check(check.clone()).await.unwrap();
    wait_until("the unary call's slot is released", || {
        pool.task_count(&"grpc") == 0
    })
    .await;

    // A server-streaming call: its response body is the stream, so it holds the slot.
    let mut watch = client.watch(check.clone()).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, 1, "SERVING");
    assert_eq!(pool.task_count(&"grpc"), 1);

    let refused = client.check(check.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        refused.message(),
        "too many requests in flight for this client"
    );

    drop(watch);
    wait_until("the stream's slot is released", || {
        pool.task_count(&"grpc") == 0
    })
    .await;
    client.check(check).await.unwrap();
    assert_eq!(pool.stats(&"grpc").admitted, 3);
}

/// A refusal whose body is empty (a gRPC one) is at the end of its stream from the start, so
/// that hyper can send it as a "trailers-only" response.
#[tokio::test]
async fn an_empty_refusal_body_is_at_the_end_of_its_stream() {
    let pool = TaskPool::<String>::builder()
        .limit("c".to_owned(), 0)
        .build();
    let service = LimitLayer::new(pool, Header::new("x-client"))
        .refusal_response(Refusal::grpc_response)
        .layer(service_fn(|_request: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
        }));
    let request = Request::builder().header("x-client", "c").body(()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "8");
    assert!(response.body().is_end_stream());
    assert_eq!(response.body().size_hint().exact(), Some(0));
}

/// On the wire, to a tonic server: what a strict gRPC client (grpc-go, grpc-java) sees is one
/// HEADERS frame carrying `grpc-status` and END_STREAM, no DATA frame and no trailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_refusal_is_trailers_only_on_the_wire() {
    let pool = TaskPool::<&'static str>::builder().limit("grpc", 0).build();
    let classify =
        |_request: &Request<tonic::body::Body>| Ok::<_, Unclassified>(Groups::one("grpc"));
    let (addr, _reporter) =
        serve_health!(LimitLayer::new(pool, classify).refusal_response(Refusal::grpc_response));

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    // No request message: the layer refuses before the body is read, and the server may end
    // the stream before a body could be sent (sending it would then fail, depending on timing).
    let (response, _send) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "8");
    assert!(!response.headers().contains_key("content-length"));
    let mut body = response.into_body();
    // h2 reports END_STREAM on the HEADERS frame as a body already at its end.
    assert!(body.is_end_stream(), "HEADERS did not end the stream");
    assert!(body.data().await.is_none(), "a DATA frame followed HEADERS");
    assert!(body.trailers().await.unwrap().is_none());
}

/// With the `tonic` feature, `PeerIp` reads a tonic server's peer address (`TcpConnectInfo`):
/// calls are counted per client IP (every call was unclassified, `INVALID_ARGUMENT`).
#[cfg(feature = "tonic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_ip_classifies_calls_on_a_tonic_server() {
    use std::net::IpAddr;
    use taskherd_tower::PeerIp;

    let local = IpAddr::from([127, 0, 0, 1]);
    // An explicit limit keeps the group's statistics while it is idle.
    let pool = TaskPool::<IpAddr>::builder().limit(local, 4).build();
    let (addr, _reporter) = serve_health!(
        LimitLayer::new(pool.clone(), PeerIp::new()).refusal_response(Refusal::grpc_response)
    );
    let mut client = health_client(addr).await;
    let check = HealthCheckRequest {
        service: String::new(),
    };
    client.check(check).await.unwrap();
    assert_eq!(pool.stats(&local).admitted, 1);
}
