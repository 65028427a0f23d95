//! The response future: admission, then the inner service's call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::hand_off::Held;
use crate::response::Config;
use crate::{Admit, Groups, LimitedBody, Lost, Refusal, Refused};

pin_project! {
    /// The future returned by [`LimitService`](crate::LimitService): the inner service's call
    /// with the request's admission, or a refusal, or, while the pool has not decided yet
    /// (waiting for room, or a pool that asks a store), the admission in progress.
    ///
    /// Dropping it (the client went away) before the request is admitted gives up its place in
    /// the queues at once; after, it drops the inner service's future and releases the
    /// admission. If the pool loses the admission while the inner service runs
    /// ([`Admit::lost`]), or by the time it answers, the inner service's future (or its
    /// answer) is dropped and the request is answered as [`Refusal::Stopped`]; if it was lost
    /// before the inner service was called, the service is not called and the request is
    /// answered as [`Refusal::Unavailable`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: whatever it holds or has reserved is given back when it is dropped.
    ///
    /// # Examples
    ///
    /// See [`LimitService`](crate::LimitService).
    pub struct ResponseFuture<S, B, A, K>
    where
        S: Service<Request<B>>,
        A: Admit<K>,
    {
        #[pin]
        state: State<S::Future, A::Permit, Pin<Box<Admitting<S, B, A, K>>>>,
        config: Arc<Config>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, P, D> {
        // Admitted: the inner service runs.
        Calling { #[pin] future: F, permit: Option<Held<P>>, lost: Option<Lost> },
        // Not decided when `call` returned. Boxed, so that the usual case (decided at once)
        // moves a small future around.
        Admitting { admitting: D },
        Refused { refusal: Option<Refusal> },
    }
}

pin_project! {
    /// An admission the pool did not decide in `call`.
    struct Admitting<S, B, A, K>
    where
        S: Service<Request<B>>,
        A: Admit<K>,
    {
        #[pin]
        decision: Decision<A::TryAdmit, A::Admit>,
        // The readied inner service and the request, until admitted.
        call: Option<(S, Request<B>)>,
        // Asked for the last try in wait mode, and whether the admission can be lost.
        pool: A,
        // In wait mode, until the maximum wait is over: what the last try needs.
        retry: Option<Groups<K>>,
        // How long the last try may take.
        last_try: std::time::Duration,
    }
}

pin_project! {
    #[project = DecisionProj]
    enum Decision<T, W> {
        Trying { #[pin] admit: T },
        Waiting { #[pin] admit: W, #[pin] deadline: Sleep },
        // Between the end of the wait and the last try: the waiting future has been dropped.
        GaveUp,
        // The try after the wait, which has the layer's `last_try` to answer.
        LastTry { #[pin] admit: T, #[pin] deadline: Sleep },
    }
}

/// How long the try after a maximum wait may take by default
/// ([`LimitLayer::last_try`](crate::LimitLayer::last_try)): an in-process pool answers at
/// once, a fleet's pool in one round trip to Redis; a store slower than this (stalled, or
/// unreachable until its client's timeout) must not stretch the maximum wait, and the
/// request is answered as [`Refusal::Unavailable`].
pub(crate) const LAST_TRY: std::time::Duration = std::time::Duration::from_millis(100);

/// What `call` knew when it returned.
pub(crate) enum Start<F, A: Admit<K>, K> {
    /// Admitted at once: the inner service's future, the admission, and whether it can be lost.
    Calling(F, Held<A::Permit>, Option<Lost>),
    /// Refused at once (or unclassified).
    Refused(Refusal),
    /// A try the pool has not decided yet, and its pool.
    Trying(A::TryAdmit, A),
    /// A wait that did not end at once, with its deadline and what the last try needs.
    Waiting(A::Admit, Sleep, A, Groups<K>),
}

impl<S, B, A, K> ResponseFuture<S, B, A, K>
where
    S: Service<Request<B>>,
    A: Admit<K>,
{
    /// Admitted or refused in `call`: `start` is `Calling` or `Refused`, `pending` is unused.
    /// Otherwise `pending` is the readied service and the request, called once admitted.
    pub(crate) fn new(
        start: Start<S::Future, A, K>,
        pending: Option<(S, Request<B>)>,
        config: Arc<Config>,
    ) -> Self {
        let last_try = config.last_try;
        let admitting = |decision, pool, retry| State::Admitting {
            admitting: Box::pin(Admitting {
                decision,
                call: pending,
                pool,
                retry,
                last_try,
            }),
        };
        let state = match start {
            Start::Calling(future, permit, lost) => State::Calling {
                future,
                permit: Some(permit),
                lost,
            },
            Start::Refused(refusal) => State::Refused {
                refusal: Some(refusal),
            },
            Start::Trying(admit, pool) => admitting(Decision::Trying { admit }, pool, None),
            Start::Waiting(admit, deadline, pool, groups) => {
                admitting(Decision::Waiting { admit, deadline }, pool, Some(groups))
            }
        };
        Self { state, config }
    }
}

impl<S, B, A, K> Admitting<S, B, A, K>
where
    S: Service<Request<B>>,
    A: Admit<K>,
{
    fn poll_decision(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<A::Permit, Refused<K>>> {
        let mut this = self.project();
        loop {
            match this.decision.as_mut().project() {
                DecisionProj::Trying { admit } => return admit.poll(cx),
                DecisionProj::Waiting { admit, deadline } => {
                    // The deadline first, then the admission, so that the admission is polled
                    // once more after the deadline passed: slots granted to this request until
                    // then are used, not thrown away.
                    let expired = deadline.poll(cx).is_ready();
                    if let Poll::Ready(decided) = admit.poll(cx) {
                        return Poll::Ready(decided);
                    }
                    if !expired {
                        return Poll::Pending;
                    }
                    // Waited long enough: give the place up first (dropping the waiting future
                    // releases whatever was reserved or granted for it), then try once more, so
                    // that the refusal names the limit that is still full (429 or 503), or the
                    // request is served after all if room appeared at the last moment.
                    let groups = this
                        .retry
                        .take()
                        .expect("the wait deadline passes only once");
                    this.decision.set(Decision::GaveUp);
                    this.decision.set(Decision::LastTry {
                        admit: this.pool.try_admit(groups),
                        deadline: tokio::time::sleep(*this.last_try),
                    });
                }
                DecisionProj::LastTry { admit, deadline } => {
                    // The try first: an answer that is there is used, even late.
                    if let Poll::Ready(decided) = admit.poll(cx) {
                        return Poll::Ready(decided);
                    }
                    ready!(deadline.poll(cx));
                    // Dropping the try (with this future) gives back any slot it took.
                    return Poll::Ready(Err(Refused::Unavailable));
                }
                // Only if the pool's `try_admit` panicked and the future is polled again:
                // nothing is held, and the request is not admitted.
                DecisionProj::GaveUp => return Poll::Ready(Err(Refused::Unavailable)),
            }
        }
    }
}

impl<S, B, A, K, ResB> Future for ResponseFuture<S, B, A, K>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    A: Admit<K>,
{
    type Output = Result<Response<LimitedBody<ResB, A::Permit>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling {
                    future,
                    permit,
                    lost,
                } => {
                    // The admission first: once its loss is known, the service's future is
                    // not polled again (one more step of its work would count nowhere).
                    let mut stopped = is_lost(lost, cx);
                    let answered = if stopped {
                        Poll::Pending
                    } else {
                        future.poll(cx)
                    };
                    // Also when the service has just answered: its response, not sent yet,
                    // would otherwise be a `200` whose body fails at once.
                    stopped = stopped || (answered.is_ready() && is_lost(lost, cx));
                    if stopped {
                        // Nothing counts the request any more: drop the service's future (or
                        // its answer), then the permit (which tells the pool); answer 503.
                        drop(answered);
                        this.state.set(State::Refused {
                            refusal: Some(Refusal::Stopped),
                        });
                        continue;
                    }
                    let Poll::Ready(result) = answered else {
                        return Poll::Pending;
                    };
                    let permit = permit
                        .take()
                        .expect("ResponseFuture polled after it completed");
                    let lost = lost.take();
                    // On an error the permit is dropped here: nothing will stream.
                    return Poll::Ready(result.map(|response| {
                        response.map(|body| LimitedBody::admitted(body, permit, lost))
                    }));
                }
                StateProj::Refused { refusal } => {
                    let refusal = refusal
                        .take()
                        .expect("ResponseFuture polled after it completed");
                    let response = this.config.response(refusal);
                    return Poll::Ready(Ok(response.map(LimitedBody::refusal)));
                }
                StateProj::Admitting { admitting } => {
                    let decided = ready!(admitting.as_mut().poll_decision(cx));
                    let call = admitting.as_mut().project().call.take();
                    let next = match decided {
                        Ok(permit) => {
                            let (mut service, request) =
                                call.expect("a request is admitted only once");
                            // Lost already: the readied service is dropped uncalled.
                            match call_unless_lost(
                                &admitting.pool,
                                permit,
                                &mut service,
                                request,
                                this.config.hand_off,
                                cx,
                            ) {
                                Ok((future, permit, lost)) => State::Calling {
                                    future,
                                    permit: Some(permit),
                                    lost,
                                },
                                Err(refusal) => State::Refused {
                                    refusal: Some(refusal),
                                },
                            }
                        }
                        Err(refused) => State::Refused {
                            refusal: Some(Refusal::from(&refused)),
                        },
                    };
                    this.state.set(next);
                }
            }
        }
    }
}

impl<S, B, A, K> fmt::Debug for ResponseFuture<S, B, A, K>
where
    S: Service<Request<B>>,
    A: Admit<K>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "calling",
            State::Admitting { admitting } => match admitting.decision {
                Decision::Trying { .. } => "trying",
                Decision::Waiting { .. } => "waiting",
                Decision::GaveUp | Decision::LastTry { .. } => "trying",
            },
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// What [`call_unless_lost`] returns: the service's future, the admission and the loss to
/// watch, or the refusal.
type Called<F, P> = Result<(F, Held<P>, Option<Lost>), Refusal>;

/// Calls `service` with `request` under `permit`, unless the admission is lost already (a
/// fleet's grant read after its lease could have run out): then nothing is called, since its
/// work would count nowhere, and the request is refused as [`Refusal::Unavailable`], not
/// `Stopped` (nothing started); the permit is dropped, which tells the pool. Registers `cx`
/// with the loss if it is not known yet. With `hand_off`, the admission is lent to the
/// handler ([`HandOff`](crate::HandOff) in the request's extensions), with a loss of its own
/// to watch.
pub(crate) fn call_unless_lost<S, B, A, K>(
    pool: &A,
    permit: A::Permit,
    service: &mut S,
    mut request: Request<B>,
    hand_off: bool,
    cx: &mut Context<'_>,
) -> Called<S::Future, A::Permit>
where
    S: Service<Request<B>>,
    A: Admit<K>,
{
    let mut lost = pool.lost(&permit);
    if is_lost(&mut lost, cx) {
        return Err(Refusal::Unavailable);
    }
    let held = if hand_off {
        let handlers = pool.lost(&permit);
        Held::lend(permit, handlers, &mut request)
    } else {
        Held::Own(permit)
    };
    Ok((service.call(request), held, lost))
}

/// Whether the admission's loss, if it can be lost, is known (registers `cx` if not).
fn is_lost(lost: &mut Option<Lost>, cx: &mut Context<'_>) -> bool {
    lost.as_mut()
        .is_some_and(|watch| watch.as_mut().poll(cx).is_ready())
}
