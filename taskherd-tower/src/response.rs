//! Refusal responses.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::Refused;

/// Why the layer answered a request itself instead of calling the service; given to a custom
/// response function (see [`LimitLayer::refusal_response`](crate::LimitLayer::refusal_response)).
///
/// # Examples
///
/// ```
/// use http::StatusCode;
/// use taskherd_tower::Refusal;
///
/// assert_eq!(Refusal::GroupFull.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(Refusal::TotalFull.status(), StatusCode::SERVICE_UNAVAILABLE);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// A group of the request's own (its client, its tenant) is at its limit.
    GroupFull,
    /// The server's total limit is reached.
    TotalFull,
    /// The pool cannot admit anything (closed, or its store unreachable), or the admission it
    /// handed out was lost before the inner service was called ([`Admit::lost`](crate::Admit::lost)).
    Unavailable,
    /// The classifier could not tell which groups the request belongs to.
    Unclassified,
    /// The request was admitted, but its admission was lost before the service answered (a
    /// fleet's lease that Redis lost, [`Admit::lost`](crate::Admit::lost)): the layer dropped
    /// the service's future. Unlike the other refusals, the service had started on the
    /// request, so it may have done part of its work: a client that retries (`503` and gRPC
    /// `UNAVAILABLE` invite it) may repeat that part, which matters for requests that are not
    /// idempotent.
    Stopped,
}

impl Refusal {
    /// The default status: `429` for [`GroupFull`](Self::GroupFull), `503` for
    /// [`TotalFull`](Self::TotalFull), [`Unavailable`](Self::Unavailable) and
    /// [`Stopped`](Self::Stopped), `400` for [`Unclassified`](Self::Unclassified).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd_tower::Refusal;
    ///
    /// assert_eq!(Refusal::Unclassified.status().as_u16(), 400);
    /// ```
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::GroupFull => StatusCode::TOO_MANY_REQUESTS,
            Refusal::TotalFull | Refusal::Unavailable | Refusal::Stopped => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Unclassified => StatusCode::BAD_REQUEST,
        }
    }

    /// The default response: [`status`](Self::status), a one-line plain-text body that names
    /// no group or key, and for every refusal but `Unclassified` a `Retry-After` header of
    /// `retry_after` seconds.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd_tower::Refusal;
    ///
    /// let response = Refusal::GroupFull.default_response(2);
    /// assert_eq!(response.status().as_u16(), 429);
    /// assert_eq!(response.headers()["retry-after"], "2");
    /// assert_eq!(response.body().as_ref(), b"too many requests in flight for this client\n");
    /// ```
    #[must_use]
    pub fn default_response(self, retry_after: u32) -> Response<Bytes> {
        let body: &'static str = match self {
            Refusal::GroupFull => "too many requests in flight for this client\n",
            Refusal::TotalFull => "server busy\n",
            Refusal::Unavailable => "service unavailable\n",
            Refusal::Unclassified => "request not understood\n",
            Refusal::Stopped => "request stopped: its admission was lost\n",
        };
        let mut response = Response::new(Bytes::from_static(body.as_bytes()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self != Refusal::Unclassified {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

impl Refusal {
    /// A refusal for a gRPC client (use it with
    /// [`refusal_response`](crate::LimitLayer::refusal_response) in front of a tonic server):
    /// a "trailers-only" gRPC response, HTTP `200` with `grpc-status` `RESOURCE_EXHAUSTED` (8)
    /// for [`GroupFull`](Self::GroupFull), `UNAVAILABLE` (14) for
    /// [`TotalFull`](Self::TotalFull), [`Unavailable`](Self::Unavailable) and
    /// [`Stopped`](Self::Stopped), `INVALID_ARGUMENT` (3) for
    /// [`Unclassified`](Self::Unclassified), and a short `grpc-message`. A gRPC client shows
    /// a plain HTTP `429` or `503` as a less precise error (`UNAVAILABLE`, or `INTERNAL` when the
    /// body is not gRPC).
    ///
    /// The layer sends a refusal with an empty body as a body that has already ended, so over
    /// HTTP/2 hyper sends this response as a single HEADERS frame that ends the stream, as
    /// "trailers-only" requires.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd_tower::Refusal;
    ///
    /// let response = Refusal::GroupFull.grpc_response();
    /// assert_eq!(response.status().as_u16(), 200);
    /// assert_eq!(response.headers()["grpc-status"], "8");
    /// assert!(response.body().is_empty());
    /// ```
    #[must_use]
    pub fn grpc_response(self) -> Response<Bytes> {
        let (code, message) = match self {
            Refusal::GroupFull => ("8", "too many requests in flight for this client"),
            Refusal::TotalFull => ("14", "server busy"),
            Refusal::Unavailable => ("14", "service unavailable"),
            Refusal::Unclassified => ("3", "request not understood"),
            Refusal::Stopped => ("14", "request stopped: its admission was lost"),
        };
        let mut response = Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from_static(code));
        headers.insert("grpc-message", HeaderValue::from_static(message));
        response
    }
}

impl<K> From<&Refused<K>> for Refusal {
    fn from(refused: &Refused<K>) -> Self {
        match refused {
            Refused::Group(_) => Refusal::GroupFull,
            Refused::Total => Refusal::TotalFull,
            Refused::Unavailable => Refusal::Unavailable,
        }
    }
}

/// A user function making refusal responses.
pub(crate) type Respond = Arc<dyn Fn(Refusal) -> Response<Bytes> + Send + Sync>;

/// The layer's settings, shared by every clone of its services.
#[derive(Clone)]
pub(crate) struct Config {
    /// `None`: refuse at once; `Some(max)`: wait at most `max`.
    pub(crate) wait: Option<std::time::Duration>,
    /// How long the try after the maximum wait may take.
    pub(crate) last_try: std::time::Duration,
    pub(crate) retry_after: u32,
    pub(crate) respond: Option<Respond>,
    /// Lend each admission to the handler ([`HandOff`](crate::HandOff)).
    pub(crate) hand_off: bool,
}

impl Config {
    pub(crate) fn new() -> Self {
        Self {
            wait: None,
            last_try: crate::future::LAST_TRY,
            retry_after: 1,
            respond: None,
            hand_off: false,
        }
    }

    pub(crate) fn response(&self, refusal: Refusal) -> Response<Bytes> {
        match &self.respond {
            Some(respond) => respond(refusal),
            None => refusal.default_response(self.retry_after),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("wait", &self.wait)
            .field("last_try", &self.last_try)
            .field("retry_after", &self.retry_after)
            .field("custom_response", &self.respond.is_some())
            .field("hand_off", &self.hand_off)
            .finish()
    }
}
