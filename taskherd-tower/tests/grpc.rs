//! A tonic gRPC service (tonic-health, no code generation) behind the layer: a streaming call
//! holds its slot while it streams, a refused call reaches the client as a gRPC status.

mod support;

use http::Request;
use taskherd::TaskPool;
use taskherd_tower::{Groups, LimitLayer, Refusal, Unclassified};
use tonic::Code;
use tonic::transport::{Channel, Server, server::TcpIncoming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use support::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_stream_holds_its_slot_and_a_refusal_is_an_error_status() {
    // Every call counts in group "grpc", limited to 1.
    let pool = TaskPool::<&'static str>::builder().limit("grpc", 1).build();
    let classify =
        |_request: &Request<tonic::body::Body>| Ok::<_, Unclassified>(Groups::one("grpc"));
    let (_reporter, health) = tonic_health::server::health_reporter();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .layer(LimitLayer::new(pool.clone(), classify).refusal_response(Refusal::grpc_response))
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(async move { server.await.unwrap() });

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
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
