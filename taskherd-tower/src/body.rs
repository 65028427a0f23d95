//! The response body that holds the request's admission.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sync_wrapper::SyncWrapper;

use crate::Lost;
use crate::hand_off::Held;

/// The error type of [`LimitedBody`]: the service's body's own error, or [`AdmissionLost`].
/// What hyper, axum and tonic take as a body error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error a [`LimitedBody`] ends with when its request's admission was lost while it
/// streamed ([`Admit::lost`](crate::Admit::lost): a fleet's lease that Redis no longer
/// holds). The server then resets the stream (HTTP/2) or closes the connection (HTTP/1.1), so
/// that the client sees an incomplete response.
///
/// # Examples
///
/// ```
/// use taskherd_tower::{AdmissionLost, BoxError};
///
/// let error: BoxError = AdmissionLost.into();
/// assert!(error.is::<AdmissionLost>());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdmissionLost;

impl fmt::Display for AdmissionLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the response was stopped: its admission was lost while it streamed")
    }
}

impl std::error::Error for AdmissionLost {}

pin_project! {
    /// The body of a response from [`LimitService`](crate::LimitService): the service's own
    /// body, holding the request's admission, or the short body of a refusal.
    ///
    /// The admission is released when the body has sent its last frame (or reports the end
    /// of the stream, or fails), or when it is dropped: when the client went away mid-stream,
    /// the server drops the body. So a streaming response or a server-sent event stream counts
    /// against its groups for as long as it streams, not just while the handler runs. A
    /// frame larger than 64 KiB (a whole file or a large `Vec<u8>` answered in one piece) is
    /// passed on in pieces of 64 KiB, which the server takes as its connection drains: such a
    /// response too counts until all of it but what the server buffers (some hundreds of KiB
    /// with hyper) has gone out, not from the moment the server has it.
    ///
    /// The body of a `101 Switching Protocols` (an upgrade to a WebSocket, say) is empty: the
    /// admission ends as it is sent, and the upgraded connection is not counted, unless the
    /// handler took the admission over (see [Upgraded connections](crate#upgraded-connections)).
    ///
    /// If the pool can lose an admission before its permit is dropped
    /// ([`Admit::lost`](crate::Admit::lost), a fleet's lease that Redis lost), the service's
    /// body is dropped at the first poll after that happens (the server polls the body as the
    /// client takes the data) and the stream ends with an [`AdmissionLost`] error.
    ///
    /// It has the same `Data` type as the service's body; its `Error` is a [`BoxError`] (the
    /// service's body's error, boxed, or [`AdmissionLost`]), which axum, hyper and tonic take.
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
        permit: Option<Held<P>>,
        // Resolves if the admission is lost while the body streams; dropped with the permit.
        // Only ever polled through `&mut`, so the wrapper makes the body `Sync`.
        lost: Option<SyncWrapper<Lost>>,
    }
}

/// The largest piece of data passed on at once (see [`LimitedBody`]).
const PIECE: usize = 64 << 10;

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // `rest`: what is left of a frame larger than `PIECE`, passed on before the next.
        Inner { #[pin] body: B, rest: Option<Bytes> },
        Refusal { data: Option<Bytes> },
        // The admission was lost: the service's body has been dropped, the error sent.
        Stopped,
    }
}

impl<B, P> LimitedBody<B, P> {
    /// The service's body, holding `permit` until it ends or is dropped, and stopped if
    /// `lost` resolves first.
    pub(crate) fn admitted(body: B, permit: Held<P>, lost: Option<Lost>) -> Self {
        Self {
            kind: Kind::Inner { body, rest: None },
            permit: Some(permit),
            lost: lost.map(SyncWrapper::new),
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
            lost: None,
        }
    }

    /// `true` while the body holds its request's admission: until the end of the stream, and
    /// never for a refusal (nor once the handler has taken the admission over, see
    /// [`HandOff`](crate::HandOff)).
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
        self.permit.as_ref().is_some_and(Held::is_held)
    }
}

impl<B, P> Body for LimitedBody<B, P>
where
    B: Body,
    B::Data: From<Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        match this.kind.as_mut().project() {
            KindProj::Inner { mut body, rest } => {
                // The admission first: a body that always has a frame ready must not stream
                // on uncounted.
                if let Some(lost) = this.lost.as_mut()
                    && lost.get_mut().as_mut().poll(cx).is_ready()
                {
                    // The service's body goes first (it may be what holds the work), then
                    // the permit (whose admission is gone; dropping it tells the pool).
                    this.kind.set(Kind::Stopped);
                    drop(this.permit.take());
                    *this.lost = None;
                    return Poll::Ready(Some(Err(AdmissionLost.into())));
                }
                // A large piece of data goes out in pieces: the rest waits for the next poll,
                // which the server makes once it has room for more.
                let frame = match rest.take() {
                    Some(data) => Some(Ok(piece_of(data, rest))),
                    None => match std::task::ready!(body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => Some(Ok(match frame.into_data() {
                            // Without a copy when the data is `Bytes` (as with axum, tonic).
                            Ok(mut data) if data.remaining() > PIECE => {
                                piece_of(data.copy_to_bytes(data.remaining()), rest)
                            }
                            Ok(data) => Frame::data(data),
                            Err(frame) => frame,
                        })),
                        other => other,
                    },
                };
                // The last frame, an error or the end: the response is done with its slot.
                if !matches!(frame, Some(Ok(_))) || (rest.is_none() && body.is_end_stream()) {
                    drop(this.permit.take());
                    *this.lost = None;
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            KindProj::Refusal { data } => {
                Poll::Ready(data.take().map(|data| Ok(Frame::data(data.into()))))
            }
            KindProj::Stopped => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, rest } => rest.is_none() && body.is_end_stream(),
            Kind::Refusal { data } => data.is_none(),
            Kind::Stopped => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, rest } => {
                let rest = rest.as_ref().map_or(0, |rest| rest.remaining() as u64);
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(rest));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(rest));
                }
                hint
            }
            Kind::Refusal { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
            Kind::Stopped => SizeHint::with_exact(0),
        }
    }
}

/// The first [`PIECE`] of `data` as a frame; what is left in `rest`.
fn piece_of<D: From<Bytes>>(mut data: Bytes, rest: &mut Option<Bytes>) -> Frame<D> {
    if data.len() > PIECE {
        *rest = Some(data.split_off(PIECE));
    }
    Frame::data(D::from(data))
}

impl<B, P> fmt::Debug for LimitedBody<B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "service",
            Kind::Refusal { .. } => "refusal",
            Kind::Stopped => "stopped",
        };
        f.debug_struct("LimitedBody")
            .field("kind", &kind)
            .field("admitted", &self.is_admitted())
            .finish()
    }
}
