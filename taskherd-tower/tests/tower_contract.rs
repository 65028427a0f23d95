//! Poll-by-poll checks with tower-test: readiness is the inner service's and takes no permit;
//! admission happens in the response future; clones share the pool; a dropped waiting future
//! gives its place up; the admission moves into the body; a future or body dropped at any step
//! gives its slot back without calling the service; the maximum wait runs from `call`;
//! reserving (`ConcurrencyLimit`) and buffering (`Buffer`) services inside work as documented.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use taskherd::TaskPool;
use taskherd_tower::{Admit, Groups, Header, LimitLayer, Refused};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower_test::mock;

type Mock = mock::Mock<Request<()>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<()>, Response<Full<Bytes>>>;

fn request(tenant: &str) -> Request<()> {
    Request::builder()
        .header("x-tenant", tenant)
        .body(())
        .unwrap()
}

fn limited(
    pool: &TaskPool<String>,
    wait: Option<Duration>,
) -> (
    mock::Spawn<taskherd_tower::LimitService<Mock, TaskPool<String>, Header>>,
    Handle,
) {
    let mut layer = LimitLayer::new(pool.clone(), Header::new("x-tenant"));
    if let Some(wait) = wait {
        layer = layer.wait(wait);
    }
    mock::spawn_layer(layer)
}

#[tokio::test]
async fn poll_ready_is_the_inner_services_and_takes_no_permit() {
    let pool = TaskPool::<String>::builder().default_limit(1).build();
    let (mut service, mut handle) = limited(&pool, None);

    handle.allow(0);
    assert_pending!(service.poll_ready());
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    assert_eq!(pool.total_stats().running, 0, "readiness takes no permit");

    // Admission happens in `call`, with the request in hand (for this pool, at once).
    let mut response = task::spawn(service.call(request("a")));
    assert_eq!(pool.task_count(&"a".to_owned()), 1);
    assert_pending!(response.poll());

    let (seen, reply) = handle.next_request().await.unwrap();
    assert_eq!(seen.headers()["x-tenant"], "a");
    reply.send_response(Response::new(Full::new(Bytes::from("body"))));
    let response = assert_ready_ok!(response.poll());
    assert!(response.body().is_admitted());
    assert_eq!(pool.task_count(&"a".to_owned()), 1, "held by the body");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "body");
    assert_eq!(pool.total_stats().running, 0);
}

#[tokio::test]
async fn clones_share_the_pool_and_an_inner_error_releases() {
    let pool = TaskPool::<String>::builder().default_limit(1).build();
    let (service, mut handle) = limited(&pool, None);
    let mut first = service.into_inner();
    let mut second = first.clone();
    handle.allow(2);

    tokio_test::assert_ready_ok!(
        task::spawn(()).enter(|cx, _| tower_service::Service::poll_ready(&mut first, cx))
    );
    tokio_test::assert_ready_ok!(
        task::spawn(()).enter(|cx, _| tower_service::Service::poll_ready(&mut second, cx))
    );
    let mut held = task::spawn(tower_service::Service::call(&mut first, request("a")));
    assert_pending!(held.poll());
    let mut refused = task::spawn(tower_service::Service::call(&mut second, request("a")));
    let response = assert_ready_ok!(refused.poll());
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!response.body().is_admitted());

    // The inner service fails: the error passes through and the admission is released.
    let (_request, reply) = handle.next_request().await.unwrap();
    reply.send_error("inner failure");
    let error = assert_ready!(held.poll()).unwrap_err();
    assert_eq!(error.to_string(), "inner failure");
    assert_eq!(pool.total_stats().running, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiting_future_gives_its_place_up() {
    let pool = TaskPool::<String>::builder().default_limit(1).build();
    let held = pool.try_acquire(["a".to_owned()]).unwrap();
    let (mut service, mut handle) = limited(&pool, Some(Duration::from_secs(10)));
    handle.allow(2);

    assert_ready_ok!(service.poll_ready());
    let mut waiting = task::spawn(service.call(request("a")));
    assert_pending!(waiting.poll());
    assert_eq!(pool.waiting_count(&"a".to_owned()), 1);
    drop(waiting);
    assert_eq!(pool.waiting_count(&"a".to_owned()), 0);

    // A waiter that gets the slot calls the inner service.
    assert_ready_ok!(service.poll_ready());
    let mut waiting = task::spawn(service.call(request("a")));
    assert_pending!(waiting.poll());
    drop(held);
    assert!(waiting.is_woken());
    assert_pending!(waiting.poll());
    let (_request, reply) = handle.next_request().await.unwrap();
    reply.send_response(Response::new(Full::new(Bytes::new())));
    let response = assert_ready_ok!(waiting.poll());
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    assert_eq!(pool.total_stats().running, 0);
}

/// A decision the test sends to a pending admission.
type Decide = tokio::sync::oneshot::Sender<Result<(), Refused<String>>>;

/// A pool that decides only when the test says so, as a pool asking a store would.
#[derive(Clone, Default)]
struct Remote {
    decisions: std::sync::Arc<std::sync::Mutex<Vec<Decide>>>,
}

type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Refused<String>>> + Send>>;

impl Admit<String> for Remote {
    type Permit = ();
    type TryAdmit = Pending;
    type Admit = Pending;

    fn try_admit(&self, _groups: Groups<String>) -> Pending {
        let (decide, decision) = tokio::sync::oneshot::channel();
        self.decisions.lock().unwrap().push(decide);
        Box::pin(async move { decision.await.unwrap_or(Err(Refused::Unavailable)) })
    }

    fn admit(&self, groups: Groups<String>) -> Pending {
        self.try_admit(groups)
    }
}

#[tokio::test]
async fn a_pool_that_decides_later_is_awaited_and_unavailable_is_503() {
    let remote = Remote::default();
    let layer = LimitLayer::new(remote.clone(), Header::new("x-tenant"));
    let (mut service, mut handle) =
        mock::spawn_layer::<Request<()>, Response<Full<Bytes>>, _>(layer);
    handle.allow(2);
    let decide = |result| {
        remote
            .decisions
            .lock()
            .unwrap()
            .remove(0)
            .send(result)
            .unwrap()
    };

    // Admitted later: the inner service is called only then.
    assert_ready_ok!(service.poll_ready());
    let mut admitted = task::spawn(service.call(request("a")));
    assert_pending!(admitted.poll());
    assert!(
        handle.poll_request().is_pending(),
        "not called before admission"
    );
    decide(Ok(()));
    assert!(admitted.is_woken());
    assert_pending!(admitted.poll());
    let (_request, reply) = handle.next_request().await.unwrap();
    reply.send_response(Response::new(Full::new(Bytes::new())));
    assert_eq!(assert_ready_ok!(admitted.poll()).status(), StatusCode::OK);

    // The store cannot be reached: 503, the inner service is not called.
    assert_ready_ok!(service.poll_ready());
    let mut unavailable = task::spawn(service.call(request("a")));
    assert_pending!(unavailable.poll());
    decide(Err(Refused::Unavailable));
    let response = assert_ready_ok!(unavailable.poll());
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(handle.poll_request().is_pending());
}

/// A response future dropped while the inner service's future runs (the client went away)
/// gives its slot back at once.
#[tokio::test]
async fn a_future_dropped_while_the_service_runs_gives_its_slot_back() {
    let pool = TaskPool::<String>::builder().default_limit(1).build();
    let (mut service, mut handle) = limited(&pool, None);
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let mut future = task::spawn(service.call(request("a")));
    assert_pending!(future.poll());
    let (_request, _reply) = handle.next_request().await.unwrap();
    assert_eq!(pool.total_stats().running, 1);
    drop(future);
    assert_eq!(pool.total_stats().running, 0);
}

/// In wait mode, a request granted its slot and dropped before its next poll gives the slot
/// back, leaves no waiter queued and never reaches the service.
#[tokio::test(start_paused = true)]
async fn a_future_dropped_after_its_grant_never_calls_the_service() {
    let pool = TaskPool::<String>::builder().default_limit(1).build();
    let held = pool.try_acquire(["a".to_owned()]).unwrap();
    let (mut service, mut handle) = limited(&pool, Some(Duration::from_secs(10)));
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let mut future = task::spawn(service.call(request("a")));
    assert_pending!(future.poll());
    drop(held);
    // Granted to the waiting request, which has not run since.
    assert_eq!(pool.total_stats().running, 1);
    assert_eq!(pool.waiting_len(), 0);
    drop(future);
    assert_eq!(pool.total_stats().running, 0);
    assert!(handle.poll_request().is_pending(), "the service was called");
}

/// `call` queues a waiting request at once (it tries admission there); a future never polled
/// and dropped leaves the queue.
#[tokio::test(start_paused = true)]
async fn a_waiting_future_never_polled_leaves_the_queue_when_dropped() {
    let pool = TaskPool::<String>::builder().default_limit(1).build();
    let held = pool.try_acquire(["a".to_owned()]).unwrap();
    let (mut service, mut handle) = limited(&pool, Some(Duration::from_secs(10)));
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let future = service.call(request("a"));
    assert_eq!(pool.waiting_count(&"a".to_owned()), 1);
    drop(future);
    assert_eq!(pool.waiting_count(&"a".to_owned()), 0);
    drop(held);
    assert_eq!(pool.total_stats().running, 0);
    assert!(handle.poll_request().is_pending(), "the service was called");
}

/// A large body is streamed in 64 KiB pieces under the admission; dropped mid-stream, the
/// slot comes back.
#[tokio::test]
async fn a_body_dropped_mid_stream_gives_its_slot_back() {
    let pool = TaskPool::<String>::builder().default_limit(2).build();
    let (mut service, mut handle) = limited(&pool, None);
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let mut future = task::spawn(service.call(request("a")));
    assert_pending!(future.poll());
    let (_request, reply) = handle.next_request().await.unwrap();
    reply.send_response(Response::new(Full::new(Bytes::from(vec![0u8; 200_000]))));
    let mut body = assert_ready_ok!(future.poll()).into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap().len(), 64 << 10);
    assert_eq!(pool.total_stats().running, 1);
    drop(body);
    assert_eq!(pool.total_stats().running, 0);
}

/// The maximum wait runs from `call`, not from the first poll.
#[tokio::test(start_paused = true)]
async fn the_maximum_wait_runs_from_call() {
    let pool = TaskPool::<String>::builder().default_limit(1).build();
    let _held = pool.try_acquire(["a".to_owned()]).unwrap();
    let (mut service, mut handle) = limited(&pool, Some(Duration::from_secs(10)));
    handle.allow(1);
    assert_ready_ok!(service.poll_ready());
    let future = service.call(request("a"));
    tokio::time::advance(Duration::from_secs(6)).await;
    let mut future = task::spawn(future);
    assert_pending!(future.poll());
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(future.is_woken());
    let response = assert_ready_ok!(future.poll());
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A reserving layer inside (tower's `ConcurrencyLimit`) keeps its reservation while the
/// request waits, and gets it back when the request is refused.
#[tokio::test(start_paused = true)]
async fn an_inner_reservation_comes_back_with_a_refused_request() {
    use tower::{Layer, Service, ServiceExt};
    let pool = TaskPool::<String>::builder().default_limit(1).build();
    let held = pool.try_acquire(["a".to_owned()]).unwrap();
    let inner = tower::limit::ConcurrencyLimitLayer::new(1).layer(tower::service_fn(
        |_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
        },
    ));
    let mut service = LimitLayer::new(pool.clone(), Header::new("x-tenant"))
        .wait(Duration::from_millis(50))
        .layer(inner);
    let future = service.ready().await.unwrap().call(request("a"));
    let mut other = service.clone();
    let mut ready = task::spawn(async move { other.ready().await.map(|_| ()) });
    assert_pending!(
        ready.poll(),
        "the waiting request holds the inner reservation"
    );
    assert_eq!(
        future.await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert!(ready.is_woken());
    assert_ready!(ready.poll()).unwrap();
    drop(held);
}

/// A `Buffer` inside: the readied buffer moves into the waiting future and is called once the
/// request is admitted; the slot comes back with the response.
#[tokio::test]
async fn a_buffered_service_is_called_once_admitted() {
    use tower::{Layer, Service, ServiceExt};
    let pool = TaskPool::<String>::builder().default_limit(1).build();
    let held = pool.try_acquire(["a".to_owned()]).unwrap();
    let inner =
        tower::buffer::BufferLayer::new(1).layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, tower::BoxError>(Response::new(Full::new(Bytes::new())))
        }));
    let mut service = LimitLayer::new(pool.clone(), Header::new("x-tenant"))
        .wait(Duration::from_secs(5))
        .layer(inner);
    let future = service.ready().await.unwrap().call(request("a"));
    let answer = tokio::spawn(future);
    tokio::task::yield_now().await;
    assert_eq!(pool.waiting_count(&"a".to_owned()), 1);
    drop(held);
    let response = answer.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    assert_eq!(pool.total_stats().running, 0);
}
