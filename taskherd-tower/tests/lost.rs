//! A pool that can lose an admission before its permit is dropped (`Admit::lost`, a fleet's
//! lease that Redis lost): the layer stops the request, poll by poll. Before the service has
//! answered, its future is dropped and the client gets `503`; while the body streams, the body
//! is dropped and the stream ends with `AdmissionLost`. The pool here is a small in-process
//! one whose admissions the test revokes; `tests/redis.rs` does the same over HTTP with a real
//! `redis-server`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http_body_util::BodyExt;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use taskherd_tower::{
    Admission, AdmissionLost, Admit, BoxError, Groups, HandOff, Header, LimitLayer, LimitedBody,
    Lost, Refused,
};
use tokio::sync::{mpsc, watch};
use tokio_test::task;
use tokio_test::{assert_pending, assert_ready};
use tower::{Layer, Service};

/// Admits everything; every admission is lost when the test says so. Counts its live permits.
#[derive(Clone, Debug)]
struct Revocable {
    revoke: Arc<watch::Sender<bool>>,
    live: Arc<AtomicUsize>,
    /// `admit` resolves only when this is polled a second time (the layer's response future
    /// polls it then), to take the path where the pool decides after `call`.
    late: bool,
}

#[derive(Debug)]
struct RevocablePermit {
    revoked: watch::Receiver<bool>,
    live: Arc<AtomicUsize>,
}

impl Drop for RevocablePermit {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Revocable {
    fn new(late: bool) -> Self {
        Self {
            revoke: Arc::new(watch::Sender::new(false)),
            live: Arc::new(AtomicUsize::new(0)),
            late,
        }
    }

    fn permit(&self) -> RevocablePermit {
        self.live.fetch_add(1, Ordering::SeqCst);
        RevocablePermit {
            revoked: self.revoke.subscribe(),
            live: Arc::clone(&self.live),
        }
    }

    fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    fn revoke(&self) {
        self.revoke.send_replace(true);
    }

    /// The layer on this pool, per `x-tenant`: waiting (so admitting after `call`) if `late`.
    fn layer(&self) -> LimitLayer<Revocable, Header> {
        let layer = LimitLayer::new(self.clone(), Header::new("x-tenant"));
        if self.late {
            layer.wait(std::time::Duration::from_secs(60))
        } else {
            layer
        }
    }
}

type Decided = Result<RevocablePermit, Refused<String>>;

/// Pending at its first poll (waking itself), ready at the next.
struct Late(Option<Decided>, bool);

impl Future for Late {
    type Output = Decided;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decided> {
        if !self.1 {
            self.1 = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.0.take().expect("polled after it resolved"))
    }
}

impl Admit<String> for Revocable {
    type Permit = RevocablePermit;
    type TryAdmit = Ready<Decided>;
    type Admit = Late;

    fn try_admit(&self, _groups: Groups<String>) -> Self::TryAdmit {
        ready(Ok(self.permit()))
    }

    fn admit(&self, _groups: Groups<String>) -> Self::Admit {
        Late(Some(Ok(self.permit())), !self.late)
    }

    fn lost(&self, permit: &RevocablePermit) -> Option<Lost> {
        let mut revoked = permit.revoked.clone();
        Some(Box::pin(async move {
            if revoked.wait_for(|revoked| *revoked).await.is_err() {
                std::future::pending::<()>().await;
            }
        }))
    }
}

/// Counts the drops of what the service made (its future, its body), and how many of the
/// pool's permits were live at the last one: the layer drops the service's work before the
/// permit, which tells the pool the admission is over.
#[derive(Clone)]
struct Drops {
    count: Arc<AtomicUsize>,
    pool_live: Arc<AtomicUsize>,
    live_at_drop: Arc<AtomicUsize>,
}

impl Drops {
    fn new(pool: &Revocable) -> Self {
        Self {
            count: Arc::new(AtomicUsize::new(0)),
            pool_live: Arc::clone(&pool.live),
            live_at_drop: Arc::new(AtomicUsize::new(usize::MAX)),
        }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Asserts that the service's work was dropped once, while its permit was still live.
    fn assert_dropped_before_the_permit(&self) {
        assert_eq!(self.count(), 1, "the service's work was dropped");
        assert_eq!(
            self.live_at_drop.load(Ordering::SeqCst),
            1,
            "the service's work is dropped before the permit"
        );
    }
}

struct Tracked<T>(T, Drops);

impl<T> Drop for Tracked<T> {
    fn drop(&mut self) {
        let drops = &self.1;
        let live = drops.pool_live.load(Ordering::SeqCst);
        drops.live_at_drop.store(live, Ordering::SeqCst);
        drops.count.fetch_add(1, Ordering::SeqCst);
    }
}

/// A streaming body: the frames the test sends, then the end when the sender is dropped; an
/// `Err` sent is the body's own error.
struct Stream(Tracked<mpsc::Receiver<Result<Bytes, std::io::Error>>>);

impl Body for Stream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .0
            .poll_recv(cx)
            .map(|item| item.map(|item| item.map(Frame::data)))
    }
}

/// A body that always has a frame ready.
struct Endless {
    _tracked: Tracked<()>,
}

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"more")))))
    }
}

fn request() -> Request<()> {
    Request::builder().header("x-tenant", "a").body(()).unwrap()
}

/// One poll of a body's next frame.
type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

/// Polls bodies with a waker that records whether it was woken.
struct Poller(task::Spawn<()>);

impl Poller {
    fn new() -> Self {
        Self(task::spawn(()))
    }

    fn poll<B: Body + Unpin>(&mut self, body: &mut B) -> Polled<B> {
        self.0.enter(|cx, _| Pin::new(body).poll_frame(cx))
    }

    fn is_woken(&self) -> bool {
        self.0.is_woken()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_admission_lost_while_the_service_runs_is_answered_unavailable() {
    for late in [false, true] {
        let pool = Revocable::new(late);
        let drops = Drops::new(&pool);
        let handler = drops.clone();
        let mut service = pool
            .layer()
            .layer(tower::service_fn(move |_request: Request<()>| {
                let guard = Tracked((), handler.clone());
                async move {
                    let _guard = guard;
                    std::future::pending::<Result<Response<String>, Infallible>>().await
                }
            }));
        let mut response = task::spawn(service.call(request()));
        // Late: the poll in `call` left the admission pending; this one admits it and calls
        // the service.
        assert_pending!(response.poll());
        assert_eq!(pool.live(), 1, "admitted (late: {late})");
        assert_eq!(drops.count(), 0, "the service runs");

        pool.revoke();
        assert!(response.is_woken(), "the loss wakes the response future");
        let response = assert_ready!(response.poll()).unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!response.body().is_admitted());
        drops.assert_dropped_before_the_permit();
        assert_eq!(pool.live(), 0, "the permit was dropped");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "request stopped: its admission was lost\n");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_loss_seen_as_the_service_answers_is_answered_unavailable() {
    // The answer is not sent yet: served, it would be a `200` whose body fails at once.
    let pool = Revocable::new(false);
    let (tx, rx) = mpsc::channel(1);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut service = pool
        .layer()
        .layer(tower::service_fn(move |_request: Request<()>| {
            let rx = Arc::clone(&rx);
            async move {
                rx.lock().await.recv().await;
                Ok::<_, Infallible>(Response::new(String::from("done")))
            }
        }));
    let mut response = task::spawn(service.call(request()));
    assert_pending!(response.poll());
    tx.send(()).await.unwrap();
    pool.revoke();
    let response = assert_ready!(response.poll()).unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(pool.live(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn an_answer_before_the_loss_is_served_whole() {
    let pool = Revocable::new(false);
    let mut service = pool
        .layer()
        .layer(tower::service_fn(|_request: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::from("done")))
        }));
    let response = service.call(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut poller = Poller::new();
    let frame = assert_ready!(poller.poll(&mut body)).unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "done");
    assert_eq!(pool.live(), 0, "released with the last frame");
    pool.revoke();
    assert!(assert_ready!(poller.poll(&mut body)).is_none());
}

/// A streaming response admitted by `pool`, its sender, and the body's drop counter.
async fn streaming(
    pool: &Revocable,
) -> (
    LimitedBody<Stream, RevocablePermit>,
    mpsc::Sender<Result<Bytes, std::io::Error>>,
    Drops,
) {
    let drops = Drops::new(pool);
    let (tx, rx) = mpsc::channel(4);
    let body = Arc::new(std::sync::Mutex::new(Some(Stream(Tracked(
        rx,
        drops.clone(),
    )))));
    let mut service = pool
        .layer()
        .layer(tower::service_fn(move |_request: Request<()>| {
            let body = body.lock().unwrap().take().expect("one request");
            async move { Ok::<_, Infallible>(Response::new(body)) }
        }));
    let response = service.call(request()).await.unwrap();
    (response.into_body(), tx, drops)
}

#[tokio::test(flavor = "current_thread")]
async fn a_body_whose_admission_is_lost_ends_with_an_error() {
    let pool = Revocable::new(false);
    let (mut body, tx, drops) = streaming(&pool).await;
    let mut poller = Poller::new();
    tx.send(Ok(Bytes::from("first"))).await.unwrap();
    let frame = assert_ready!(poller.poll(&mut body)).unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");
    assert!(body.is_admitted());
    assert_pending!(poller.poll(&mut body));

    pool.revoke();
    assert!(
        poller.is_woken(),
        "the loss wakes a body waiting for its next frame"
    );
    // A frame already queued is not sent: the loss comes first.
    tx.send(Ok(Bytes::from("uncounted"))).await.unwrap();
    let error: BoxError = assert_ready!(poller.poll(&mut body)).unwrap().unwrap_err();
    assert!(error.is::<AdmissionLost>(), "{error}");
    drops.assert_dropped_before_the_permit();
    assert_eq!(pool.live(), 0, "the permit was dropped");
    assert!(!body.is_admitted());
    assert!(body.is_end_stream());
    assert!(
        assert_ready!(poller.poll(&mut body)).is_none(),
        "then the end"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_body_that_is_always_ready_is_stopped_too() {
    let pool = Revocable::new(false);
    let drops = Drops::new(&pool);
    let made = drops.clone();
    let mut service = pool
        .layer()
        .layer(tower::service_fn(move |_request: Request<()>| {
            let body = Endless {
                _tracked: Tracked((), made.clone()),
            };
            async move { Ok::<_, Infallible>(Response::new(body)) }
        }));
    let mut body = service.call(request()).await.unwrap().into_body();
    let mut poller = Poller::new();
    for _ in 0..3 {
        assert!(assert_ready!(poller.poll(&mut body)).unwrap().is_ok());
    }
    pool.revoke();
    let error = assert_ready!(poller.poll(&mut body)).unwrap().unwrap_err();
    assert!(error.is::<AdmissionLost>());
    drops.assert_dropped_before_the_permit();
    assert_eq!(pool.live(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_loss_after_the_end_of_the_stream_changes_nothing() {
    let pool = Revocable::new(false);
    let (mut body, tx, drops) = streaming(&pool).await;
    let mut poller = Poller::new();
    tx.send(Ok(Bytes::from("all"))).await.unwrap();
    drop(tx);
    assert!(assert_ready!(poller.poll(&mut body)).unwrap().is_ok());
    assert!(assert_ready!(poller.poll(&mut body)).is_none());
    assert_eq!(pool.live(), 0, "released at the end");
    pool.revoke();
    assert!(assert_ready!(poller.poll(&mut body)).is_none());
    assert_eq!(drops.count(), 0, "the body is its owner's to drop");
}

#[tokio::test(flavor = "current_thread")]
async fn the_bodys_own_error_is_passed_on_boxed() {
    let pool = Revocable::new(false);
    let (mut body, tx, _drops) = streaming(&pool).await;
    tx.send(Err(std::io::Error::other("disk gone")))
        .await
        .unwrap();
    let error = assert_ready!(Poller::new().poll(&mut body))
        .unwrap()
        .unwrap_err();
    let own = error
        .downcast_ref::<std::io::Error>()
        .expect("the body's own error");
    assert_eq!(own.to_string(), "disk gone");
    assert_eq!(pool.live(), 0, "an error ends the stream and releases");
}

#[test]
fn a_pool_that_cannot_lose_admissions_says_so() {
    let pool = taskherd::TaskPool::<String>::new();
    let permit = pool.try_acquire(["a".to_owned()]).unwrap();
    assert!(Admit::lost(&pool, &permit).is_none());
}

/// Once the loss is known, the service's future is dropped without being polled again: it
/// would otherwise do one more step of work that no limit counts (the body, likewise, checks
/// the loss before it polls the service's body). Found by a review.
#[tokio::test(flavor = "current_thread")]
async fn a_service_future_is_not_polled_after_its_admission_is_lost() {
    let pool = Revocable::new(false);
    let polls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&polls);
    let mut service = pool
        .layer()
        .layer(tower::service_fn(move |_request: Request<()>| {
            let counted = Arc::clone(&counted);
            std::future::poll_fn(move |_cx| {
                counted.fetch_add(1, Ordering::SeqCst);
                Poll::<Result<Response<String>, Infallible>>::Pending
            })
        }));
    let mut response = task::spawn(service.call(request()));
    assert_pending!(response.poll());
    assert_eq!(polls.load(Ordering::SeqCst), 1);
    pool.revoke();
    let response = assert_ready!(response.poll()).unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        polls.load(Ordering::SeqCst),
        1,
        "the service's future was polled after its admission was lost"
    );
}

/// An admission already lost when the pool hands it out (a fleet's grant read after its lease
/// could have expired) does not call the service at all: its synchronous part would run work
/// that no limit counts. The request is answered unavailable, not "stopped": nothing started.
/// Found by a review.
#[tokio::test(flavor = "current_thread")]
async fn an_admission_lost_before_the_call_does_not_call_the_service() {
    for late in [false, true] {
        let pool = Revocable::new(late);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let mut service = pool
            .layer()
            .layer(tower::service_fn(move |_request: Request<()>| {
                counted.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Ok::<_, Infallible>(Response::new(String::from("done"))))
            }));
        pool.revoke();
        let response = service.call(request()).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "the service was called with a lost admission (late: {late})"
        );
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(pool.live(), 0, "the permit was dropped (late: {late})");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "service unavailable\n", "late: {late}");
    }
}

/// `LimitLayer::hand_off` with a pool whose admissions can be lost: the admission the handler
/// takes over has a loss of its own to watch, which resolves when the pool loses it, after the
/// response is long done (both when the pool decides in `call` and after it).
#[tokio::test(flavor = "current_thread")]
async fn an_admission_taken_over_tells_its_handler_when_it_is_lost() {
    for late in [false, true] {
        let pool = Revocable::new(late);
        let taken: Arc<std::sync::Mutex<Option<Admission>>> = Arc::default();
        let by_handler = Arc::clone(&taken);
        let mut service =
            pool.layer()
                .hand_off()
                .layer(tower::service_fn(move |request: Request<()>| {
                    let hand_off = request.extensions().get::<HandOff>().expect("lent");
                    *by_handler.lock().unwrap() = hand_off.take();
                    async { Ok::<_, Infallible>(Response::new(String::from("hi"))) }
                }));
        let mut response = task::spawn(service.call(request()));
        let response = match response.poll() {
            Poll::Ready(response) => response,
            Poll::Pending => assert_ready!(response.poll()),
        }
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "late: {late}");
        assert!(!response.body().is_admitted(), "the handler holds it");
        drop(response);
        assert_eq!(pool.live(), 1, "the admission outlives the response");
        let mut admission = taken.lock().unwrap().take().expect("taken");
        assert!(admission.can_be_lost());
        {
            let mut lost = task::spawn(admission.lost());
            assert_pending!(lost.poll());
            pool.revoke();
            assert!(lost.is_woken(), "the loss wakes its watcher");
            assert_ready!(lost.poll());
        }
        // Resolved once, at once ever after.
        assert_ready!(task::spawn(admission.lost()).poll());
        assert_eq!(
            pool.live(),
            1,
            "lost, but the permit is the handler's to drop"
        );
        drop(admission);
        assert_eq!(pool.live(), 0);
    }
}
