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

use crate::response::Config;
use crate::{Admit, Groups, LimitedBody, Refusal};

pin_project! {
    /// The future returned by [`LimitService`](crate::LimitService): admits the request, then
    /// calls the inner service, or answers with a refusal.
    ///
    /// Dropping it (the client went away) before the request is admitted gives up its place in
    /// the queues at once; after, it drops the inner service's future and releases the
    /// admission.
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
        state: State<S::Future, A::TryAdmit, A::Admit, A::Permit>,
        // The readied inner service and the request, until admitted.
        call: Option<(S, Request<B>)>,
        // In wait mode, until the maximum wait is over: what the last try needs.
        retry: Option<(A, Groups<K>)>,
        config: Arc<Config>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T, W, P> {
        Trying { #[pin] admit: T },
        Waiting { #[pin] admit: W, #[pin] deadline: Sleep },
        Calling { #[pin] future: F, permit: Option<P> },
        Refused { refusal: Option<Refusal> },
    }
}

impl<S, B, A, K> ResponseFuture<S, B, A, K>
where
    S: Service<Request<B>>,
    A: Admit<K>,
{
    /// Refuse mode: one attempt.
    pub(crate) fn trying(admit: A::TryAdmit, call: (S, Request<B>), config: Arc<Config>) -> Self {
        Self {
            state: State::Trying { admit },
            call: Some(call),
            retry: None,
            config,
        }
    }

    /// Wait mode: queue until `deadline`, then one last attempt with `retry`.
    pub(crate) fn waiting(
        admit: A::Admit,
        deadline: Sleep,
        retry: (A, Groups<K>),
        call: (S, Request<B>),
        config: Arc<Config>,
    ) -> Self {
        Self {
            state: State::Waiting { admit, deadline },
            call: Some(call),
            retry: Some(retry),
            config,
        }
    }

    /// The request was refused before any admission (unclassified).
    pub(crate) fn refused(refusal: Refusal, config: Arc<Config>) -> Self {
        Self {
            state: State::Refused {
                refusal: Some(refusal),
            },
            call: None,
            retry: None,
            config,
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
            let admitted =
                match this.state.as_mut().project() {
                    StateProj::Trying { admit } => ready!(admit.poll(cx)),
                    StateProj::Waiting { admit, deadline } => match admit.poll(cx) {
                        Poll::Ready(admitted) => admitted,
                        Poll::Pending => {
                            ready!(deadline.poll(cx));
                            // Waited long enough: give the place up (dropping the waiting future),
                            // then try once more, so that the refusal names the limit that is
                            // still full (429 or 503), or the request is served after all if room
                            // appeared at the last moment.
                            let (pool, groups) = this
                                .retry
                                .take()
                                .expect("the wait deadline passes only once");
                            this.state.set(State::Trying {
                                admit: pool.try_admit(groups),
                            });
                            continue;
                        }
                    },
                    StateProj::Calling { future, permit } => {
                        let result = ready!(future.poll(cx));
                        let permit = permit
                            .take()
                            .expect("ResponseFuture polled after it completed");
                        // On an error the permit is dropped here: nothing will stream.
                        return Poll::Ready(result.map(|response| {
                            response.map(|body| LimitedBody::admitted(body, permit))
                        }));
                    }
                    StateProj::Refused { refusal } => {
                        let refusal = refusal
                            .take()
                            .expect("ResponseFuture polled after it completed");
                        let response = this.config.response(refusal);
                        return Poll::Ready(Ok(response.map(LimitedBody::refusal)));
                    }
                };
            match admitted {
                Ok(permit) => {
                    let (mut service, request) =
                        this.call.take().expect("a request is admitted only once");
                    this.state.set(State::Calling {
                        future: service.call(request),
                        permit: Some(permit),
                    });
                }
                Err(refused) => {
                    // The readied service and the request are not needed any more.
                    drop(this.call.take());
                    this.state.set(State::Refused {
                        refusal: Some(Refusal::from(&refused)),
                    });
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
            State::Trying { .. } => "trying",
            State::Waiting { .. } => "waiting",
            State::Calling { .. } => "calling",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
