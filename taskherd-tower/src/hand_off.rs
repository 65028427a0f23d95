//! Handing a request's admission over to its handler (upgraded connections).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use sync_wrapper::SyncWrapper;

use crate::Lost;

/// The admission a request's handler can take over: the permit, and its loss if the pool can
/// lose it.
struct Content {
    permit: Box<dyn Send>,
    lost: Option<Lost>,
}

/// What the layer's side ([`Lent`]) and the handler's ([`HandOff`]) share: the admission until
/// one of them takes it.
struct Slot(Mutex<Option<Content>>);

impl Slot {
    /// The admission, if neither side has taken it yet. Never panics: a panic while the lock
    /// was held (only `Option::take` runs under it) cannot leave the slot half written.
    fn take(&self) -> Option<Content> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn is_full(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

/// The layer's side of a lent admission: released (unless the handler has taken it) when
/// the response is done with it, as a permit the layer holds itself would be.
pub(crate) struct Lent(Arc<Slot>);

impl Lent {
    /// `true` until the handler takes the admission or the response is done with it.
    pub(crate) fn is_held(&self) -> bool {
        self.0.is_full()
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // Taken out first, dropped after the lock is released: the permit's drop runs the
        // pool's code.
        drop(self.0.take());
    }
}

/// A request's admission as the layer holds it: its own, or lent to the handler
/// ([`LimitLayer::hand_off`](crate::LimitLayer::hand_off)).
pub(crate) enum Held<P> {
    Own(P),
    Lent(Lent),
}

impl<P: Send + 'static> Held<P> {
    /// Lends `permit` to the handler of `request`: a [`HandOff`] in its extensions, through
    /// which the handler can take it, with `lost` (the pool's [`Admit::lost`](crate::Admit::lost)
    /// for it, if it can be lost).
    pub(crate) fn lend<B>(permit: P, lost: Option<Lost>, request: &mut http::Request<B>) -> Self {
        let slot = Arc::new(Slot(Mutex::new(Some(Content {
            permit: Box::new(permit),
            lost,
        }))));
        request.extensions_mut().insert(HandOff {
            slot: Arc::clone(&slot),
        });
        Self::Lent(Lent(slot))
    }
}

impl<P> Held<P> {
    /// `true` while the layer holds the admission (not once the handler has taken it).
    pub(crate) fn is_held(&self) -> bool {
        match self {
            Self::Own(_) => true,
            Self::Lent(lent) => lent.is_held(),
        }
    }
}

/// Found in the extensions of a request admitted by a layer built with
/// [`LimitLayer::hand_off`](crate::LimitLayer::hand_off): lets the handler take the request's
/// admission over, so that it outlives the response, e.g. for the connection a WebSocket's
/// `101 Switching Protocols` opens.
///
/// Until taken, the layer holds the admission as usual, until the response body is done. Taken
/// ([`take`](Self::take)), it is released when the [`Admission`] is dropped, whenever that is,
/// and no longer when the response is done. Once the response is done (or the request was
/// stopped or dropped), there is nothing left to take: a clone of this kept longer holds
/// nothing.
///
/// Cloning it is cheap (a reference count) and every clone takes from the same place: the
/// first `take` gets the admission, the others `None`.
///
/// # Examples
///
/// An axum handler that keeps its request's slot while its WebSocket lives (here a bare
/// upgrade with hyper; axum's `WebSocketUpgrade` is the same):
///
/// ```no_run
/// use axum::extract::Request;
/// use axum::response::Response;
/// use http::StatusCode;
/// use taskherd_tower::HandOff;
///
/// async fn websocket(mut request: Request) -> Response {
///     // Taken before answering: the slot the request counts in is the connection's now.
///     let admission = request.extensions().get::<HandOff>().and_then(HandOff::take);
///     let on_upgrade = hyper::upgrade::on(&mut request);
///     tokio::spawn(async move {
///         let _admission = admission; // released when the connection ends
///         let Ok(upgraded) = on_upgrade.await else { return };
///         serve_connection(upgraded).await;
///     });
///     Response::builder()
///         .status(StatusCode::SWITCHING_PROTOCOLS)
///         .header("connection", "upgrade")
///         .header("upgrade", "websocket")
///         .body(Default::default())
///         .unwrap()
/// }
/// # async fn serve_connection(_: hyper::upgrade::Upgraded) {}
/// ```
#[derive(Clone)]
pub struct HandOff {
    slot: Arc<Slot>,
}

impl HandOff {
    /// Takes the request's admission over: from now on it is released when the returned
    /// [`Admission`] is dropped, not when the response is done.
    ///
    /// `None` if it was taken already (by this or a clone), or if the layer was done with it
    /// (its response sent, or the request stopped or dropped) before this call.
    #[must_use]
    pub fn take(&self) -> Option<Admission> {
        self.slot.take().map(|content| Admission {
            _permit: SyncWrapper::new(content.permit),
            lost: content.lost.map(SyncWrapper::new),
            ended: false,
        })
    }

    /// `true` while there is an admission to take.
    #[must_use]
    pub fn is_available(&self) -> bool {
        self.slot.is_full()
    }
}

impl fmt::Debug for HandOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandOff")
            .field("available", &self.is_available())
            .finish()
    }
}

/// A request's admission, taken over by its handler through [`HandOff::take`]: the request's
/// slot in each of its groups and the total, released when this is dropped.
///
/// With a pool whose admissions can end before they are dropped (a fleet's lease that Redis
/// lost, see [`Admit::lost`](crate::Admit::lost)), [`lost`](Self::lost) resolves when that
/// happens: what the admission counted is no longer counted by the pool, so the work it
/// stands for (a WebSocket's connection) should stop.
pub struct Admission {
    // Held for its drop, which releases the admission; only ever used through `&mut` or
    // dropped, so the wrappers make the admission `Sync`.
    _permit: SyncWrapper<Box<dyn Send>>,
    lost: Option<SyncWrapper<Lost>>,
    // `lost` resolved once (it is not polled again).
    ended: bool,
}

impl Admission {
    /// Resolves once the pool has lost this admission without it being dropped (a fleet's
    /// lease that Redis no longer holds); never, with a pool whose admissions last until
    /// dropped (the in-process [`TaskPool`](taskherd::TaskPool)). Once resolved, resolves at
    /// once every time.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped future loses nothing, and a later call watches the same loss.
    pub fn lost(&mut self) -> impl Future<Output = ()> + Send + '_ {
        LostFuture { admission: self }
    }

    /// `true` if the pool can lose this admission before it is dropped (see
    /// [`lost`](Self::lost)).
    #[must_use]
    pub fn can_be_lost(&self) -> bool {
        self.lost.is_some() || self.ended
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("can_be_lost", &self.can_be_lost())
            .field("lost", &self.ended)
            .finish_non_exhaustive()
    }
}

/// What [`Admission::lost`] returns.
struct LostFuture<'a> {
    admission: &'a mut Admission,
}

impl Future for LostFuture<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let admission = &mut *self.admission;
        if admission.ended {
            return Poll::Ready(());
        }
        match admission.lost.as_mut() {
            None => Poll::Pending,
            Some(lost) => {
                std::task::ready!(lost.get_mut().as_mut().poll(cx));
                admission.ended = true;
                admission.lost = None;
                Poll::Ready(())
            }
        }
    }
}
