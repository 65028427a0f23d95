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
    /// for it, if it can be lost). The [`HandOff`] of an outer layer that lends its admission
    /// too is extended, not replaced: the handler takes both at once.
    pub(crate) fn lend<B>(permit: P, lost: Option<Lost>, request: &mut http::Request<B>) -> Self {
        let slot = Arc::new(Slot(Mutex::new(Some(Content {
            permit: Box::new(permit),
            lost,
        }))));
        let mut slots = request
            .extensions_mut()
            .remove::<HandOff>()
            .map(|outer| outer.slots)
            .unwrap_or_default();
        slots.push(Arc::clone(&slot));
        request.extensions_mut().insert(HandOff { slots });
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
/// Cloning it is cheap and every clone takes from the same place: the first `take` gets the
/// admission, the others `None`.
///
/// With several layers built with `hand_off` around one handler (an in-process limit per
/// client IP outside a fleet's limit per tenant, say), the request carries one `HandOff` for
/// all of them, and `take` takes every layer's admission at once, into one [`Admission`].
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
    /// One per layer that lends its admission, the outermost first.
    slots: Vec<Arc<Slot>>,
}

impl HandOff {
    /// Takes the request's admission over: from now on it is released when the returned
    /// [`Admission`] is dropped, not when the response is done.
    ///
    /// With several layers lending their admissions, takes every one still there.
    ///
    /// `None` if it was taken already (by this or a clone), or if the layer was done with it
    /// (its response sent, or the request stopped or dropped) before this call.
    #[must_use]
    pub fn take(&self) -> Option<Admission> {
        let mut permits = Vec::new();
        let mut lost = Vec::new();
        for content in self.slots.iter().filter_map(|slot| slot.take()) {
            permits.push(content.permit);
            lost.extend(content.lost);
        }
        if permits.is_empty() {
            return None;
        }
        Some(Admission {
            _permits: SyncWrapper::new(permits),
            can_be_lost: !lost.is_empty(),
            lost: SyncWrapper::new(lost),
            ended: false,
        })
    }

    /// `true` while there is an admission to take.
    #[must_use]
    pub fn is_available(&self) -> bool {
        self.slots.iter().any(|slot| slot.is_full())
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
/// slot in each of its groups and the total (of every layer that lent it), released when this
/// is dropped.
///
/// With a pool whose admissions can end before they are dropped (a fleet's lease that Redis
/// lost, see [`Admit::lost`](crate::Admit::lost)), [`lost`](Self::lost) resolves when that
/// happens: what the admission counted is no longer counted by the pool, so the work it
/// stands for (a WebSocket's connection) should stop.
pub struct Admission {
    // Held for their drop, which releases the admission; only ever used through `&mut` or
    // dropped, so the wrappers make the admission `Sync`.
    _permits: SyncWrapper<Vec<Box<dyn Send>>>,
    // The losses to watch, one per admission that can be lost.
    lost: SyncWrapper<Vec<Lost>>,
    can_be_lost: bool,
    // A loss resolved (they are not polled again).
    ended: bool,
}

impl Admission {
    /// Resolves once the pool has lost this admission without it being dropped (a fleet's
    /// lease that Redis no longer holds; with several layers, once any of their admissions is
    /// lost); never, with a pool whose admissions last until dropped (the in-process
    /// [`TaskPool`](taskherd::TaskPool)). Once resolved, resolves at once every time.
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
        self.can_be_lost
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
        let losses = admission.lost.get_mut();
        if losses
            .iter_mut()
            .any(|lost| lost.as_mut().poll(cx).is_ready())
        {
            admission.ended = true;
            losses.clear();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}
