//! The response body that holds the request's admission.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response from [`LimitService`](crate::LimitService): the service's own
    /// body, holding the request's admission, or the short body of a refusal.
    ///
    /// The admission is released when the body has sent its last frame (or reports the end
    /// of the stream, or fails), or when it is dropped: when the client went away mid-stream,
    /// the server drops the body. So a streaming response or a server-sent event stream counts
    /// against its groups for as long as it streams, not just while the handler runs.
    ///
    /// It has the same `Data` and `Error` types as the service's body, so axum, hyper and
    /// tonic serve it as they would the original.
    ///
    /// # Examples
    ///
    /// ```
    /// use http_body_util::BodyExt;
    /// use taskherd::TaskPool;
    /// use taskherd_tower::{Header, LimitLayer};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::builder().default_limit(1).build();
    /// let service = LimitLayer::new(pool.clone(), Header::new("x-client")).layer(service_fn(
    ///     |_request: http::Request<()>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("hi"))))
    ///     },
    /// ));
    /// let request = http::Request::builder().header("x-client", "c").body(()).unwrap();
    /// let response = service.oneshot(request).await.unwrap();
    /// assert_eq!(pool.task_count(&"c".to_owned()), 1); // the body has not been sent yet
    /// let body = response.into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(body, "hi");
    /// assert_eq!(pool.task_count(&"c".to_owned()), 0);
    /// # }
    /// ```
    pub struct LimitedBody<B, P> {
        #[pin]
        kind: Kind<B>,
        permit: Option<P>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Refusal { data: Option<Bytes> },
    }
}

impl<B, P> LimitedBody<B, P> {
    /// The service's body, holding `permit` until it ends or is dropped.
    pub(crate) fn admitted(body: B, permit: P) -> Self {
        Self {
            kind: Kind::Inner { body },
            permit: Some(permit),
        }
    }

    /// A refusal's body. An empty one is at its end from the start: a gRPC refusal is
    /// "trailers-only", which hyper sends as one HTTP/2 HEADERS frame with END_STREAM only if
    /// the body says it has ended (else HEADERS, `content-length: 0` and an empty DATA frame,
    /// which strict gRPC clients report as `INTERNAL`).
    pub(crate) fn refusal(data: Bytes) -> Self {
        Self {
            kind: Kind::Refusal {
                data: (!data.is_empty()).then_some(data),
            },
            permit: None,
        }
    }

    /// `true` while the body holds its request's admission: until the end of the stream, and
    /// never for a refusal.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::{Request, Response};
    /// use taskherd::TaskPool;
    /// use taskherd_tower::{Header, LimitLayer};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::builder().limit("full".to_owned(), 0).build();
    /// let service = LimitLayer::new(pool, Header::new("x-client")).layer(service_fn(
    ///     |_request: Request<()>| async { Ok::<_, std::convert::Infallible>(Response::new(String::from("hi"))) },
    /// ));
    /// let ok = Request::builder().header("x-client", "a").body(()).unwrap();
    /// assert!(service.clone().oneshot(ok).await.unwrap().body().is_admitted());
    /// let refused = Request::builder().header("x-client", "full").body(()).unwrap();
    /// assert!(!service.oneshot(refused).await.unwrap().body().is_admitted());
    /// # }
    /// ```
    #[must_use]
    pub fn is_admitted(&self) -> bool {
        self.permit.is_some()
    }
}

impl<B, P> Body for LimitedBody<B, P>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Inner { mut body } => {
                let frame = std::task::ready!(body.as_mut().poll_frame(cx));
                // The last frame, an error or the end: the response is done with its slot.
                if !matches!(frame, Some(Ok(_))) || body.is_end_stream() {
                    drop(this.permit.take());
                }
                Poll::Ready(frame)
            }
            KindProj::Refusal { data } => {
                Poll::Ready(data.take().map(|data| Ok(Frame::data(data.into()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Refusal { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Refusal { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
        }
    }
}

impl<B, P> fmt::Debug for LimitedBody<B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "service",
            Kind::Refusal { .. } => "refusal",
        };
        f.debug_struct("LimitedBody")
            .field("kind", &kind)
            .field("admitted", &self.is_admitted())
            .finish()
    }
}
