//! The service: classify, admit, then call the inner service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::future::{Start, call_unless_lost};
use crate::response::Config;
use crate::{Admit, Classify, LimitedBody, Refusal, Refused, ResponseFuture};

/// Admits each request through a pool before calling the inner service; made by
/// [`LimitLayer`](crate::LimitLayer).
///
/// For each request, in [`call`](Service::call):
///
/// 1. the classifier names the request's groups (unclassifiable: `400`, configurable);
/// 2. the pool admits it in those groups and the total, at once or after waiting (see
///    [`LimitLayer::wait`](crate::LimitLayer::wait)); refused: `429` if one of the request's
///    groups is full, `503` if the total is, both with `Retry-After`;
/// 3. the inner service is called, and the admission moves into the response body
///    ([`LimitedBody`]), released when the body ends or is dropped, unless the handler took
///    it over first ([`LimitLayer::hand_off`](crate::LimitLayer::hand_off)). A connection
///    upgraded to another protocol (a WebSocket's `101`) is not followed by the layer itself:
///    see [Upgraded connections](crate#upgraded-connections).
///
/// Refusals are ordinary responses (`Ok`), so the service's error type is the inner
/// service's: axum needs no `HandleErrorLayer`.
///
/// # Readiness
///
/// [`poll_ready`](Service::poll_ready) forwards the inner service's readiness and takes no
/// permit: admission needs the request, which `poll_ready` cannot see. `call` classifies the
/// request and asks the pool once. If the pool decides at once (the in-process
/// [`TaskPool`](taskherd::TaskPool) always does in refuse mode, and in wait mode when there is
/// room), the service made ready by `poll_ready` is called right away, or not at all for a
/// refusal. If not, that service moves into the response future, to be called once the
/// request is admitted, and a clone stays in its place (the usual tower idiom for a service
/// called after an `await`, hence the `Clone` bound). While a request's admission is not
/// decided, the readied inner service waits with it: an inner service that reserves something
/// in `poll_ready` (tower's `ConcurrencyLimit`) holds it meanwhile. In wait mode that is for
/// the whole wait; with a pool that decides later, a fleet's
/// `taskherd_redis::RedisPool` included, it is also in refuse mode, for a round
/// trip to the store (up to its response timeout when the store stalls, about twice that
/// when another admission call is stalled ahead of it). Put such layers
/// inside this one only with an in-process pool in refuse mode; otherwise put them outside it.
///
/// # Examples
///
/// With tower's `ServiceExt::oneshot`, as a server would call it:
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use taskherd::TaskPool;
/// use taskherd_tower::{Header, LimitLayer};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = TaskPool::builder().limit("c".to_owned(), 0).build();
/// let service = LimitLayer::new(pool, Header::new("x-client")).layer(service_fn(
///     |_request: Request<()>| async { Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::new()))) },
/// ));
/// let request = Request::builder().header("x-client", "c").body(()).unwrap();
/// let response = service.clone().oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
/// let unclassified = service.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(unclassified.status(), StatusCode::BAD_REQUEST);
/// # }
/// ```
pub struct LimitService<S, A, C> {
    inner: S,
    pool: A,
    classify: Arc<C>,
    config: Arc<Config>,
}

impl<S, A, C> LimitService<S, A, C> {
    pub(crate) fn new(inner: S, pool: A, classify: Arc<C>, config: Arc<Config>) -> Self {
        Self {
            inner,
            pool,
            classify,
            config,
        }
    }

    /// The pool requests are admitted through.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    /// use taskherd_tower::{LimitLayer, PeerIp};
    /// use tower::Layer;
    ///
    /// let service = LimitLayer::new(TaskPool::<std::net::IpAddr>::new(), PeerIp::new()).layer(tower::service_fn(
    ///     |_request: http::Request<()>| async { Ok::<_, std::convert::Infallible>(http::Response::new(())) },
    /// ));
    /// assert_eq!(service.pool().len(), 0);
    /// ```
    #[must_use]
    pub fn pool(&self) -> &A {
        &self.pool
    }

    /// The inner service.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    /// use taskherd_tower::{LimitLayer, PeerIp};
    /// use tower::Layer;
    ///
    /// let service = LimitLayer::new(TaskPool::<std::net::IpAddr>::new(), PeerIp::new()).layer(7);
    /// assert_eq!(*service.get_ref(), 7);
    /// ```
    #[must_use]
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, A, C, B, ResB> Service<Request<B>> for LimitService<S, A, C>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    C: Classify<B>,
    A: Admit<C::Key> + Clone,
    C::Key: Clone,
    ResB: Body,
    ResB::Data: From<Bytes>,
{
    type Response = Response<LimitedBody<ResB, A::Permit>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B, A, C::Key>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let config = Arc::clone(&self.config);
        let groups = match self.classify.classify(&request) {
            Ok(groups) => groups,
            Err(_unclassified) => {
                return ResponseFuture::new(Start::Refused(Refusal::Unclassified), None, config);
            }
        };
        // Ask the pool once here: the in-process pool decides at once, and then the readied
        // service is called right away (or not at all), with nothing boxed or cloned.
        let mut cx = Context::from_waker(Waker::noop());
        let start = match config.wait {
            None => {
                let mut admit = self.pool.try_admit(groups);
                match Pin::new(&mut admit).poll(&mut cx) {
                    Poll::Ready(decided) => return self.decided(decided, request, config),
                    Poll::Pending => Start::Trying(admit, self.pool.clone()),
                }
            }
            Some(max) => {
                let mut admit = self.pool.admit(groups.clone());
                match Pin::new(&mut admit).poll(&mut cx) {
                    Poll::Ready(decided) => return self.decided(decided, request, config),
                    // The future is polled again, with the caller's waker, by the response
                    // future.
                    Poll::Pending => {
                        Start::Waiting(admit, tokio::time::sleep(max), self.pool.clone(), groups)
                    }
                }
            }
        };
        // Not decided yet: the service made ready by `poll_ready` goes with the request, to be
        // called once admitted; its clone stays.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(start, Some((ready, request)), config)
    }
}

impl<S, A, C> LimitService<S, A, C> {
    /// The pool decided in `call`: call the readied service now, or refuse.
    fn decided<B, K>(
        &mut self,
        decided: Result<A::Permit, Refused<K>>,
        request: Request<B>,
        config: Arc<Config>,
    ) -> ResponseFuture<S, B, A, K>
    where
        S: Service<Request<B>>,
        A: Admit<K>,
    {
        let start = match decided {
            // Lost already: the service is not called, and stays ready for the next request.
            Ok(permit) => {
                let mut cx = Context::from_waker(Waker::noop());
                let hand_off = config.hand_off;
                match call_unless_lost(
                    &self.pool,
                    permit,
                    &mut self.inner,
                    request,
                    hand_off,
                    &mut cx,
                ) {
                    Ok((future, permit, lost)) => Start::Calling(future, permit, lost),
                    Err(refusal) => Start::Refused(refusal),
                }
            }
            Err(refused) => Start::Refused(Refusal::from(&refused)),
        };
        ResponseFuture::new(start, None, config)
    }
}

impl<S: Clone, A: Clone, C> Clone for LimitService<S, A, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            pool: self.pool.clone(),
            classify: Arc::clone(&self.classify),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, A: fmt::Debug, C> fmt::Debug for LimitService<S, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitService")
            .field("inner", &self.inner)
            .field("pool", &self.pool)
            .field("classify", &std::any::type_name::<C>())
            .field("config", &self.config)
            .finish()
    }
}
