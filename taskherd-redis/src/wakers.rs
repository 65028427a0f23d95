//! Wakers are user code: one may panic when woken (or dropped). The pool must not let such a
//! panic end one of its background tasks, come out of an unrelated call, or keep other
//! callers from being woken.
//!
//! - Where the pool wakes one caller's waker itself (a reply to an admission call, a waiter's
//!   `Notify`, a lost lease's signal, a flush), it does so through [`woken`], which catches the
//!   panic and logs it.
//! - Where many callers wait on one signal through tokio (a lease's `lost()` futures on its
//!   watch channel, `wait()` futures on the pool's idle channel), one panicking waker inside
//!   tokio's wake loop would leave the others of its batch unwoken: tokio drops the rest of the
//!   batch as the panic unwinds. So those futures register a [`Catching`] waker in their place
//!   ([`CatchingWaker`]), whose `wake` catches the caller's panic: tokio's loop never sees one.
//!   So does a waiter's retry timer (tokio's time driver wakes a batch of timers the same way,
//!   and on a multi-thread runtime a panic there aborts the process), and so do the calls to
//!   Redis made from the caller's task (statistics, limits, a waiter's poll: [`caught`]),
//!   whose answers the Redis client's connection task hands over.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Runs `wake`, which wakes (or drops) other callers' wakers, catching a panic of theirs: the
/// panic hook has reported it, and it is logged as an `ERROR` event naming what was being
/// told. Returns whether it panicked.
pub(crate) fn woken(what: &'static str, wake: impl FnOnce()) -> bool {
    let panicked = catch_unwind(AssertUnwindSafe(wake)).is_err();
    if panicked {
        tracing::error!("a waker panicked when woken ({what}); the pool carries on");
    }
    panicked
}

/// Runs `call` (one call to Redis made from the caller's task) with a [`CatchingWaker`]: the
/// Redis client's connection task, which reads every answer of the connection, wakes it; with
/// the caller's waker as it is, a panic of that waker would end the connection task and fail
/// every other call in flight on the connection.
pub(crate) async fn caught<F: Future>(call: F) -> F::Output {
    let mut call = std::pin::pin!(call);
    let mut catching = CatchingWaker::default();
    std::future::poll_fn(|cx| catching.poll(call.as_mut(), cx)).await
}

/// Polls futures with a [`Catching`] waker standing in for the caller's, kept between polls
/// and made again only when the caller's waker changes (`will_wake`): no allocation per poll,
/// and tokio keeps the waker it registered.
#[derive(Default)]
pub(crate) struct CatchingWaker(Option<(Arc<Catching>, Waker)>);

impl CatchingWaker {
    /// Polls `future` with the catching waker for `cx`'s.
    pub(crate) fn poll<F: Future + ?Sized>(
        &mut self,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        let same = self.0.as_ref().is_some_and(|(catching, _)| {
            catching
                .0
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
        });
        if !same {
            let catching = Arc::new(Catching(Some(cx.waker().clone())));
            let waker = Waker::from(Arc::clone(&catching));
            // The previous caller's waker is dropped here, through `Catching::drop`.
            self.0 = Some((catching, waker));
        }
        match &self.0 {
            Some((_, waker)) => future.poll(&mut Context::from_waker(waker)),
            None => unreachable!("set above"),
        }
    }
}

/// Wakes the waker it holds, catching a panic of its `wake` (and of its `drop`).
struct Catching(Option<Waker>);

impl Wake for Catching {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(waker) = &self.0 {
            woken("a watcher of a lost lease or of the pool's end", || {
                waker.wake_by_ref();
            });
        }
    }
}

impl Drop for Catching {
    fn drop(&mut self) {
        if let Some(waker) = self.0.take() {
            woken("a watcher's waker, as it was dropped", || drop(waker));
        }
    }
}
