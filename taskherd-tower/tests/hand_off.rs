//! `LimitLayer::hand_off`: what the handler can take from its request, when, and what the
//! layer still releases itself. Through tower's `Service` calls, polled step by step; the
//! same over a real upgraded connection is in `upgrade.rs`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use taskherd::TaskPool;
use taskherd_tower::{Admission, HandOff, Header, LimitLayer};
use tokio_test::{assert_pending, task};
use tower::{Layer, Service, ServiceExt};

fn request() -> Request<()> {
    Request::builder().header("x-tenant", "a").body(()).unwrap()
}

fn count(pool: &TaskPool<String>) -> usize {
    pool.task_count(&"a".to_owned())
}

type Seen = Arc<Mutex<Option<HandOff>>>;
type Taken = Arc<Mutex<Option<Admission>>>;
type Answer = Response<taskherd_tower::LimitedBody<Full<Bytes>, taskherd::Permit<String>>>;

/// A service answering `hi` that keeps the `HandOff` it finds (a clone) for the test, and
/// takes the admission over if `take` is set, keeping it for the test too; behind a layer
/// with `hand_off` if `hand_off` is set.
fn service(
    pool: &TaskPool<String>,
    hand_off: bool,
    take: bool,
) -> (
    impl Service<Request<()>, Response = Answer, Error = Infallible> + Clone,
    Seen,
    Taken,
) {
    let seen: Seen = Arc::default();
    let taken: Taken = Arc::default();
    let (seen_by_handler, taken_by_handler) = (Arc::clone(&seen), Arc::clone(&taken));
    let layer = LimitLayer::new(pool.clone(), Header::new("x-tenant"));
    let layer = if hand_off { layer.hand_off() } else { layer };
    let service = layer.layer(tower::service_fn(move |request: Request<()>| {
        let hand_off = request.extensions().get::<HandOff>().cloned();
        if take {
            *taken_by_handler.lock().unwrap() = hand_off.as_ref().and_then(HandOff::take);
        }
        *seen_by_handler.lock().unwrap() = hand_off;
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi")))) }
    }));
    (service, seen, taken)
}

/// Not taken, the admission is the layer's as without `hand_off`: held until the response
/// body is done, then released, and nothing is left to take (a clone of the `HandOff` kept
/// past the response holds nothing).
#[tokio::test(flavor = "current_thread")]
async fn an_admission_not_taken_is_released_with_the_response() {
    let pool = TaskPool::<String>::builder().limit("a".into(), 1).build();
    let (service, seen, _) = service(&pool, true, false);
    let response = service.oneshot(request()).await.unwrap();
    let hand_off = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the request carries a HandOff");
    assert!(hand_off.is_available());
    assert!(response.body().is_admitted());
    assert_eq!(count(&pool), 1);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hi");
    assert_eq!(count(&pool), 0, "released as the body ended");
    assert!(!hand_off.is_available());
    assert!(
        hand_off.take().is_none(),
        "too late: the layer was done with it"
    );
}

/// Taken, the admission outlives the response and is released when the `Admission` is
/// dropped; the body no longer counts as holding it, and there is nothing left to take.
#[tokio::test(flavor = "current_thread")]
async fn an_admission_taken_is_released_when_the_handler_drops_it() {
    let pool = TaskPool::<String>::builder().limit("a".into(), 1).build();
    let (service, seen, taken) = service(&pool, true, true);
    let response = service.clone().oneshot(request()).await.unwrap();
    assert!(!response.body().is_admitted(), "the handler holds it");
    let hand_off = seen.lock().unwrap().clone().unwrap();
    assert!(!hand_off.is_available());
    assert!(hand_off.take().is_none(), "taken once only");
    response.into_body().collect().await.unwrap();
    assert_eq!(
        count(&pool),
        1,
        "the response is done, the admission lives on"
    );
    // The slot is still taken: the next request is refused.
    let refused = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(refused.status(), http::StatusCode::TOO_MANY_REQUESTS);
    let mut admission = taken.lock().unwrap().take().expect("the handler took it");
    assert!(
        !admission.can_be_lost(),
        "an in-process pool's admission is never lost"
    );
    let mut lost = task::spawn(admission.lost());
    assert_pending!(lost.poll());
    drop(lost);
    drop(admission);
    assert_eq!(count(&pool), 0);
    let admitted = service.oneshot(request()).await.unwrap();
    assert_eq!(admitted.status(), http::StatusCode::OK);
}

/// A request dropped before the handler took the admission (the client went away) releases
/// it, as without `hand_off`, and leaves nothing to take.
#[tokio::test(flavor = "current_thread")]
async fn a_dropped_request_leaves_nothing_to_take() {
    let pool = TaskPool::<String>::builder().limit("a".into(), 1).build();
    let seen: Seen = Arc::default();
    let by_handler = Arc::clone(&seen);
    let mut service = LimitLayer::new(pool.clone(), Header::new("x-tenant"))
        .hand_off()
        .layer(tower::service_fn(move |request: Request<()>| {
            *by_handler.lock().unwrap() = request.extensions().get::<HandOff>().cloned();
            std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
        }));
    let mut response = task::spawn(service.call(request()));
    assert_pending!(response.poll());
    let hand_off = seen.lock().unwrap().clone().unwrap();
    assert!(hand_off.is_available());
    assert_eq!(count(&pool), 1);
    drop(response);
    assert_eq!(count(&pool), 0);
    assert!(hand_off.take().is_none());
}

/// Without `hand_off`, requests carry no `HandOff`: nothing changes for layers that do not
/// ask for it.
#[tokio::test(flavor = "current_thread")]
async fn without_hand_off_there_is_nothing_to_take() {
    let pool = TaskPool::<String>::builder().limit("a".into(), 1).build();
    let (service, seen, _) = service(&pool, false, false);
    let response = service.oneshot(request()).await.unwrap();
    assert!(seen.lock().unwrap().is_none());
    response.into_body().collect().await.unwrap();
    assert_eq!(count(&pool), 0);
}

/// A refused request's handler is never called, and a refusal holds nothing.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_request_lends_nothing() {
    let pool = TaskPool::<String>::builder().limit("a".into(), 0).build();
    let (service, seen, _) = service(&pool, true, true);
    let response = service.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
    assert!(seen.lock().unwrap().is_none(), "the handler was not called");
}

/// `HandOff` and `Admission` can be kept in shared state (axum's `Extension` extractor needs
/// `Clone + Send + Sync` of the former).
#[test]
fn hand_off_and_admission_are_send_and_sync() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<HandOff>();
    shareable::<Admission>();
}

/// Two `hand_off` layers around one handler (a limit per client IP outside a limit per
/// tenant): the handler takes both admissions at once, and both slots outlive the response
/// until the `Admission` is dropped (found by a review: the inner layer's `HandOff` replaced
/// the outer one's, whose slot went with the response).
#[tokio::test(flavor = "current_thread")]
async fn nested_layers_hand_off_every_admission_at_once() {
    let outer = TaskPool::<String>::builder().limit("ip".into(), 1).build();
    let inner = TaskPool::<String>::builder().limit("a".into(), 1).build();
    let taken: Taken = Arc::default();
    let by_handler = Arc::clone(&taken);
    let handler = tower::service_fn(move |request: Request<()>| {
        let hand_off = request.extensions().get::<HandOff>().expect("lent");
        assert!(hand_off.is_available());
        *by_handler.lock().unwrap() = hand_off.take();
        assert!(!hand_off.is_available(), "both taken");
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi")))) }
    });
    let service = LimitLayer::new(outer.clone(), Header::new("x-ip"))
        .hand_off()
        .layer(
            LimitLayer::new(inner.clone(), Header::new("x-tenant"))
                .hand_off()
                .layer(handler),
        );
    let request = || {
        Request::builder()
            .header("x-ip", "ip")
            .header("x-tenant", "a")
            .body(())
            .unwrap()
    };
    let response = service.clone().oneshot(request()).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(outer.task_count(&"ip".to_owned()), 1);
    assert_eq!(inner.task_count(&"a".to_owned()), 1);
    let refused = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(refused.status(), http::StatusCode::TOO_MANY_REQUESTS);
    let admission = taken.lock().unwrap().take().expect("taken");
    assert!(!admission.can_be_lost());
    drop(admission);
    assert_eq!(outer.task_count(&"ip".to_owned()), 0);
    assert_eq!(inner.task_count(&"a".to_owned()), 0);
}
