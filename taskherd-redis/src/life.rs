//! This process's side of a pool's life: closed or open, and what it holds (tasks running and
//! permits held) — what [`RedisPool::wait`](crate::RedisPool::wait) waits for.
//!
//! # Invariant
//!
//! No [`Hold`] is made while the pool is closed, nor for an admission call that a `close`
//! happened during: every call notes the [`generation`](Life::generation) (the closes so far)
//! when it is made, and [`Life::hold`] checks the flag and that count and counts the hold under
//! one lock, under which [`Life::close`] sets the flag and counts the close. So once `wait` has
//! seen the pool closed with nothing held, nothing is held here until it is reopened; and an
//! admission that Redis granted after `close` (a call in flight, a waiter granted meanwhile)
//! gives its slot back instead of becoming a task or a permit, even if the pool was reopened
//! since (as in the in-process pool).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

pub(crate) struct Life {
    /// Tasks running and permits held, in this process.
    held: Mutex<usize>,
    /// Written only under `held`'s lock (so that a hold and a close are ordered), read
    /// without it.
    closed: AtomicBool,
    /// How many times the pool was closed; written only under `held`'s lock, with `closed`.
    closes: AtomicU64,
    /// `shutdown` was called (and `reopen` not since): a task spawned now is aborted.
    shutting_down: AtomicBool,
    /// Counts the moments the pool became closed with nothing held; `wait` waits for a change.
    idle: watch::Sender<u64>,
}

impl Default for Life {
    fn default() -> Self {
        Self {
            held: Mutex::new(0),
            closed: AtomicBool::new(false),
            closes: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            idle: watch::Sender::new(0),
        }
    }
}

impl Life {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Closes; `false` if it was closed already.
    pub(crate) fn close(&self) -> bool {
        let idle = {
            let held = self.held.lock();
            if self.closed.swap(true, Ordering::SeqCst) {
                return false;
            }
            self.closes.fetch_add(1, Ordering::SeqCst);
            *held == 0
        };
        if idle {
            self.became_idle();
        }
        true
    }

    /// Reopens; `false` if it was open.
    pub(crate) fn reopen(&self) -> bool {
        let _held = self.held.lock();
        self.shutting_down.store(false, Ordering::SeqCst);
        self.closed.swap(false, Ordering::SeqCst)
    }

    /// `shutdown` begins, in one step a `reopen` cannot cut into: closes (the first value:
    /// whether this closed it), marks the shutdown (tasks spawned from now on, admitted before
    /// the pool closed, are aborted as soon as they are registered; SeqCst, with the check
    /// after registering: the shutdown's `abort_all` sees the task, or the task sees the
    /// mark), and takes the moment to wait for (the third value: resolves once nothing is
    /// held, at once if nothing is now, as [`wait`](Self::wait) would have just after this).
    /// The second value is [`generation`](Self::generation) after the close.
    ///
    /// Done in three steps, a `reopen` between them left the reopened pool marked (aborting
    /// every task it spawned), or the wait found the pool open and waited for a later close.
    pub(crate) fn begin_shutdown(
        self: &Arc<Self>,
    ) -> (bool, u64, impl Future<Output = ()> + Send + 'static + use<>) {
        let mut idle = self.idle.subscribe();
        let (closed, generation, now) = {
            let held = self.held.lock();
            let closed = !self.closed.swap(true, Ordering::SeqCst);
            if closed {
                self.closes.fetch_add(1, Ordering::SeqCst);
            }
            self.shutting_down.store(true, Ordering::SeqCst);
            (closed, self.closes.load(Ordering::SeqCst), *held == 0)
        };
        if closed && now {
            self.became_idle();
        }
        let life = Arc::clone(self);
        let wait = async move {
            if !now {
                changed(&mut idle).await;
            }
            drop(life);
        };
        (closed, generation, wait)
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// The closes so far: an admission call notes it when it is made, and fails if it
    /// changed before the call returns ([`closed_since`](Self::closed_since)).
    pub(crate) fn generation(&self) -> u64 {
        self.closes.load(Ordering::SeqCst)
    }

    /// Whether the pool is closed, or was closed (and maybe reopened) since `generation`.
    pub(crate) fn closed_since(&self, generation: u64) -> bool {
        // SeqCst: a waiter that checks after its wake-up by `close` must see it.
        self.closed.load(Ordering::SeqCst) || self.closes.load(Ordering::SeqCst) != generation
    }

    /// Counts one task or permit until the hold is dropped, for an admission call made at
    /// `generation`; `None` if the pool is closed or was closed since.
    pub(crate) fn hold(self: &Arc<Self>, generation: u64) -> Option<Hold> {
        let mut held = self.held.lock();
        if self.closed_since(generation) {
            return None;
        }
        *held += 1;
        Some(Hold {
            life: Arc::clone(self),
        })
    }

    pub(crate) fn held(&self) -> usize {
        *self.held.lock()
    }

    /// Resolves once the pool is closed with nothing held, at some moment after this call.
    pub(crate) fn wait(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static + use<> {
        // Subscribed before the state is read: a moment after the read is seen as a change.
        let mut idle = self.idle.subscribe();
        let now = {
            let held = self.held.lock();
            self.closed.load(Ordering::SeqCst) && *held == 0
        };
        let life = Arc::clone(self);
        async move {
            if !now {
                // The sender lives in `life`, kept alive here: `changed` returns no error.
                changed(&mut idle).await;
            }
            drop(life);
        }
    }

    /// Tells the `wait`s; called after unlocking (waking runs wakers, whose panic is caught:
    /// it would otherwise come out of `close`, `shutdown` or the drop of a permit).
    fn became_idle(&self) {
        crate::wakers::woken("a wait(), as the pool became idle", || {
            self.idle
                .send_modify(|moments| *moments = moments.wrapping_add(1));
        });
    }
}

/// One task running or permit held in this process; see [`Life::hold`].
pub(crate) struct Hold {
    life: Arc<Life>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let idle = {
            let mut held = self.life.held.lock();
            *held -= 1;
            self.life.closed.load(Ordering::SeqCst) && *held == 0
        };
        if idle {
            self.life.became_idle();
        }
    }
}

/// Waits for the next change of `idle`, with a waker that catches the caller's panic (see
/// [`wakers`](crate::wakers)): every `wait()` is woken even if one of them panics. The sender
/// lives as long as the `Life` its callers keep alive, so an error cannot come.
async fn changed(idle: &mut tokio::sync::watch::Receiver<u64>) {
    let mut changed = std::pin::pin!(idle.changed());
    let mut catching = crate::wakers::CatchingWaker::default();
    let _ = std::future::poll_fn(|cx| catching.poll(changed.as_mut(), cx)).await;
}
